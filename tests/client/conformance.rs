//! Differential conformance: `VaultSession` against grammers' `MemorySession`.
//!
//! Random sequences of every `Session` operation run on both; after every step the answers
//! must be equal. Two vault clients watch one session: the exclusive one (which answers
//! repeat reads from its cache) makes every call, and a non-exclusive one (no cache: every
//! read goes to the daemon) repeats the reads, so that the cache and the daemon are both
//! checked. Some cases end with a daemon restart (SIGTERM, start, unlock) and compare again:
//! the exclusive client after it reconnected, and a fresh client.
//!
//! The reference is `MemorySession` plus one thing it does not do: it never answers
//! `PeerId::self_user()`. The reference answers it as grammers' `SqliteSession` and the
//! vault do: the user last cached with a merged `is_self == Some(true)`, while its cached
//! info still says so.

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use grammers_session::Session;
use grammers_session::storages::MemorySession;
use grammers_session::types::{
    ChannelKind, ChannelState, DcOption, PeerAuth, PeerId, PeerInfo, UpdateState, UpdatesState,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use session_vault_client::VaultSession;

use super::{builder, restart, runtime, unlocked};

/// An `UpdateState` (which is not `Clone`) as data.
#[derive(Clone, Debug)]
enum Change {
    All(UpdatesState),
    Primary { pts: i32, date: i32, seq: i32 },
    Secondary { qts: i32 },
    Channel { id: i64, pts: i32 },
}

impl Change {
    fn to_grammers(&self) -> UpdateState {
        match self {
            Change::All(s) => UpdateState::All(s.clone()),
            &Change::Primary { pts, date, seq } => UpdateState::Primary { pts, date, seq },
            &Change::Secondary { qts } => UpdateState::Secondary { qts },
            &Change::Channel { id, pts } => UpdateState::Channel { id, pts },
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    CachePeer(PeerInfo),
    CachePeers(Vec<PeerInfo>),
    SetUpdateState(Change),
    SetDcOption(Box<DcOption>),
    SetHomeDc(i32),
    Peer(PeerId),
    UpdatesState,
    HomeDc,
    DcOption(i32),
}

// Small id pools, so that operations collide on the same peers and channels. The extremes of
// each of grammers' id ranges are in.
const USER_IDS: [i64; 4] = [1, 2, 777_000, 0xff_ffff_ffff];
const CHAT_IDS: [i64; 3] = [1, 2, 999_999_999_999];
const CHANNEL_IDS: [i64; 4] = [1, 997_852_516_352, 1_002_147_483_649, 3_000_000_000_000];
const STATE_CHANNELS: [i64; 5] = [1, 2, 3, 1_000_000_007, 3_000_000_000_000];

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 2 => s.prop_map(Some)].boxed()
}

fn auth() -> BoxedStrategy<Option<PeerAuth>> {
    opt(prop_oneof![Just(0i64), any::<i64>()].prop_map(PeerAuth::from_hash))
}

fn peer_info() -> impl Strategy<Value = PeerInfo> {
    let user = (
        prop::sample::select(&USER_IDS[..]),
        auth(),
        opt(any::<bool>()),
        // is_self mostly unknown, as grammers caches users.
        prop_oneof![4 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))],
    )
        .prop_map(|(id, auth, bot, is_self)| PeerInfo::User {
            id,
            auth,
            bot,
            is_self,
        });
    let chat = prop::sample::select(&CHAT_IDS[..]).prop_map(|id| PeerInfo::Chat { id });
    let kind = opt(prop::sample::select(
        &[
            ChannelKind::Broadcast,
            ChannelKind::Megagroup,
            ChannelKind::Gigagroup,
            ChannelKind::Community,
        ][..],
    ));
    let channel = (prop::sample::select(&CHANNEL_IDS[..]), auth(), kind)
        .prop_map(|(id, auth, kind)| PeerInfo::Channel { id, auth, kind });
    prop_oneof![3 => user, 1 => chat, 2 => channel]
}

fn peer_id() -> impl Strategy<Value = PeerId> {
    prop_oneof![
        1 => Just(PeerId::self_user()),
        3 => prop::sample::select(&USER_IDS[..]).prop_map(|id| PeerId::user(id).unwrap()),
        1 => prop::sample::select(&CHAT_IDS[..]).prop_map(|id| PeerId::chat(id).unwrap()),
        2 => prop::sample::select(&CHANNEL_IDS[..]).prop_map(|id| PeerId::channel(id).unwrap()),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    // `All` lists each channel once (the daemon stores a row per channel; grammers never
    // produces a repeated one).
    let all = (
        any::<[i32; 4]>(),
        prop::sample::subsequence(&STATE_CHANNELS[..], 0..=STATE_CHANNELS.len()).prop_shuffle(),
        prop::collection::vec(any::<i32>(), STATE_CHANNELS.len()),
    )
        .prop_map(|([pts, qts, date, seq], ids, ptss)| {
            Change::All(UpdatesState {
                pts,
                qts,
                date,
                seq,
                channels: ids
                    .into_iter()
                    .zip(ptss)
                    .map(|(id, pts)| ChannelState { id, pts })
                    .collect(),
            })
        });
    prop_oneof![
        1 => all,
        2 => any::<(i32, i32, i32)>().prop_map(|(pts, date, seq)| Change::Primary { pts, date, seq }),
        1 => any::<i32>().prop_map(|qts| Change::Secondary { qts }),
        3 => (prop::sample::select(&STATE_CHANNELS[..]), any::<i32>())
            .prop_map(|(id, pts)| Change::Channel { id, pts }),
    ]
}

fn dc_option() -> impl Strategy<Value = DcOption> {
    (
        1..=6i32,
        any::<[u8; 4]>(),
        any::<[u16; 8]>(),
        any::<u16>(),
        opt(any::<u64>()),
    )
        .prop_map(|(id, v4, v6, port, key_seed)| DcOption {
            id,
            ipv4: SocketAddrV4::new(Ipv4Addr::from(v4), port),
            ipv6: SocketAddrV6::new(Ipv6Addr::from(v6), port, 0, 0),
            auth_key: key_seed.map(|seed| {
                let mut k = [0u8; 256];
                let mut x = seed | 1;
                for b in &mut k {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                k
            }),
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => peer_info().prop_map(Op::CachePeer),
        3 => prop::collection::vec(peer_info(), 0..6).prop_map(Op::CachePeers),
        4 => change().prop_map(Op::SetUpdateState),
        2 => dc_option().prop_map(|o| Op::SetDcOption(Box::new(o))),
        1 => (1..=6i32).prop_map(Op::SetHomeDc),
        6 => peer_id().prop_map(Op::Peer),
        2 => Just(Op::UpdatesState),
        1 => Just(Op::HomeDc),
        1 => (1..=6i32).prop_map(Op::DcOption),
    ]
}

/// `MemorySession` plus the self-user rule it lacks.
#[derive(Default)]
struct Model {
    mem: MemorySession,
    self_id: Option<i64>,
}

impl Model {
    async fn cache(&mut self, peers: &[PeerInfo]) {
        for p in peers {
            self.mem.cache_peer(p.clone()).await.unwrap();
            if let PeerInfo::User { id, .. } = *p {
                if let Some(PeerInfo::User {
                    is_self: Some(true),
                    ..
                }) = self.mem.peer(p.id()).await.unwrap()
                {
                    self.self_id = Some(id);
                }
            }
        }
    }

    async fn peer(&self, id: PeerId) -> Option<PeerInfo> {
        if id != PeerId::self_user() {
            return self.mem.peer(id).await.unwrap();
        }
        let me = PeerId::user(self.self_id?).unwrap();
        self.mem.peer(me).await.unwrap().filter(|p| {
            matches!(
                p,
                PeerInfo::User {
                    is_self: Some(true),
                    ..
                }
            )
        })
    }
}

/// Every observable answer of both vault clients equals the model's.
async fn compare_all(
    model: &Model,
    clients: &[&VaultSession],
    what: &str,
) -> Result<(), TestCaseError> {
    let mut ids = vec![PeerId::self_user()];
    ids.extend(USER_IDS.iter().map(|&i| PeerId::user(i).unwrap()));
    ids.extend(CHAT_IDS.iter().map(|&i| PeerId::chat(i).unwrap()));
    ids.extend(CHANNEL_IDS.iter().map(|&i| PeerId::channel(i).unwrap()));
    let state = model.mem.updates_state().await.unwrap();
    for (n, c) in clients.iter().enumerate() {
        for &id in &ids {
            prop_assert_eq!(
                c.peer(id).await.unwrap(),
                model.peer(id).await,
                "{}: client {} peer {}",
                what,
                n,
                id
            );
        }
        prop_assert_eq!(
            &c.updates_state().await.unwrap(),
            &state,
            "{}: client {} updates state",
            what,
            n
        );
    }
    compare_sync(model, clients[0], what)
}

/// The synchronous reads of the writing client equal the model's.
fn compare_sync(model: &Model, c: &VaultSession, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        c.home_dc_id().unwrap(),
        model.mem.home_dc_id().unwrap(),
        "{}: home DC",
        what
    );
    for dc in 1..=6 {
        prop_assert_eq!(
            c.dc_option(dc).unwrap(),
            model.mem.dc_option(dc).unwrap(),
            "{}: DC option {}",
            what,
            dc
        );
    }
    Ok(())
}

/// Runs `op` on the model and the clients (the writer makes it; the reader repeats reads).
async fn step(
    model: &mut Model,
    writer: &VaultSession,
    reader: &VaultSession,
    op: &Op,
) -> Result<(), TestCaseError> {
    match op {
        Op::CachePeer(p) => {
            model.cache(std::slice::from_ref(p)).await;
            writer.cache_peer(p.clone()).await.unwrap();
        }
        Op::CachePeers(ps) => {
            model.cache(ps).await;
            writer.cache_peers(ps.clone()).await.unwrap();
        }
        Op::SetUpdateState(c) => {
            model.mem.set_update_state(c.to_grammers()).await.unwrap();
            writer.set_update_state(c.to_grammers()).await.unwrap();
        }
        Op::SetDcOption(o) => {
            model.mem.set_dc_option(o).await.unwrap();
            writer.set_dc_option(o).await.unwrap();
        }
        &Op::SetHomeDc(dc) => {
            model.mem.set_home_dc_id(dc).await.unwrap();
            writer.set_home_dc_id(dc).await.unwrap();
        }
        &Op::Peer(id) => {
            let want = model.peer(id).await;
            prop_assert_eq!(&writer.peer(id).await.unwrap(), &want, "writer peer {}", id);
            prop_assert_eq!(&reader.peer(id).await.unwrap(), &want, "reader peer {}", id);
        }
        Op::UpdatesState => {
            let want = model.mem.updates_state().await.unwrap();
            prop_assert_eq!(&writer.updates_state().await.unwrap(), &want);
            prop_assert_eq!(&reader.updates_state().await.unwrap(), &want);
        }
        Op::HomeDc => prop_assert_eq!(
            writer.home_dc_id().unwrap(),
            model.mem.home_dc_id().unwrap()
        ),
        &Op::DcOption(dc) => prop_assert_eq!(
            writer.dc_option(dc).unwrap(),
            model.mem.dc_option(dc).unwrap()
        ),
    }
    Ok(())
}

/// Runs `ops` in order, checking the synchronous reads after each.
async fn run(
    model: &mut Model,
    writer: &VaultSession,
    reader: &VaultSession,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    for (i, op) in ops.iter().enumerate() {
        step(model, writer, reader, op)
            .await
            .map_err(|e| TestCaseError::fail(format!("step {i} ({op:?}): {e}")))?;
        compare_sync(model, writer, &format!("after step {i} ({op:?})"))?;
    }
    Ok(())
}

#[test]
fn vault_session_answers_like_memory_session() {
    let started = Instant::now();
    let rt = runtime();
    let (env, daemon) = unlocked();
    let daemon = RefCell::new(Some(daemon));
    let case = AtomicUsize::new(0);
    let restarts = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop::collection::vec(op(), 1..=40);
    let result = runner.run(&strategy, |ops| {
        let n = case.fetch_add(1, Ordering::Relaxed);
        let name = format!("conf{n}");
        // Every fourth case restarts the daemon halfway (deterministic, so that some always
        // do); every third one keeps a tiny peer cache, so that evictions happen.
        let split = if n % 4 == 3 { ops.len() / 2 } else { ops.len() };
        let capacity = if n % 3 == 1 { 3 } else { 100_000 };
        let socket = env.socket();
        let mut model = Model::default();
        let (writer, reader) = rt.block_on(async {
            let writer = builder(&socket, &name)
                .peer_cache_capacity(capacity)
                .connect()
                .await
                .unwrap();
            let reader = builder(&socket, &name)
                .exclusive(false)
                .connect()
                .await
                .unwrap();
            compare_sync(&model, &writer, "new session")?;
            run(&mut model, &writer, &reader, &ops[..split]).await?;
            compare_all(&model, &[&writer, &reader], "before restart").await?;
            Ok::<_, TestCaseError>((writer, reader))
        })?;
        if split == ops.len() {
            return Ok(());
        }
        restarts.fetch_add(1, Ordering::Relaxed);
        let d = daemon.borrow_mut().take().expect("daemon running");
        *daemon.borrow_mut() = Some(restart(&env, d));
        rt.block_on(async {
            // Both clients reconnect (the writer takes its lease again) on their next
            // request; a fresh client sees the same.
            let fresh = builder(&socket, &name)
                .exclusive(false)
                .connect()
                .await
                .unwrap();
            compare_all(&model, &[&writer, &fresh], "after restart").await?;
            run(&mut model, &writer, &reader, &ops[split..]).await?;
            compare_all(&model, &[&writer, &reader, &fresh], "end of case").await
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "conformance: {} cases ({} with a restart) in {:?}",
        case.load(Ordering::Relaxed),
        restarts.load(Ordering::Relaxed),
        started.elapsed()
    );
    assert!(
        restarts.load(Ordering::Relaxed) > 0,
        "no case restarted the daemon"
    );
}
