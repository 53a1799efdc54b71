//! Load: many clients at once, checked against an exact model, through lock/unlock cycles;
//! a thousand idle or half-open connections.
//!
//! - [`sixty_four_clients_on_sixteen_sessions_through_lock_cycles`]: 16 writer clients (one
//!   per session, holding its lease, so that the model of each session is exact) and 48
//!   reader clients (3 per session) run a fixed number of operations each — cache-class and
//!   durable writes, reads of every kind — while `vaultctl lock` / `vaultctl unlock` cycles
//!   run in the middle. A writer's read must equal its model; a reader's must be a value the
//!   writer wrote, never older than one it saw before; every error must be `locked` and fall
//!   inside a locked window (a refused write is retried after the unlock). At the end every
//!   session exports exactly its model, before and after a SIGKILL and restart.
//! - [`connections::a_thousand_idle_or_half_open_connections_do_not_stop_new_clients`]:
//!   1,000 connections that say nothing, stop after hello, stop mid-frame or half-close, and
//!   new clients still open sessions, write and read. (`tests/load.rs` covers 200 idle
//!   connections, a pipelining flood and running out of file descriptors.)
//! - [`listing_sessions_while_others_are_deleted`]: `list_sessions` during deletes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_vault_client::{ClientError, Connection};
use session_vault_proto::message::{ErrorCode, PeerQuery, Request, Response};
use session_vault_proto::model::{
    AuthKey, ChannelState, DcOption, Peer, PeerKey, PeerKind, SessionData, UpdateStateChange,
    UpdatesState,
};
use tokio::sync::Mutex;

use super::{Rng, figure, long, mono_ns, percentile};
use crate::util::*;

pub mod connections;

const SESSIONS: usize = 16;
const READERS_PER_SESSION: usize = 3;
/// Peer ids per session: overwritten again and again.
const PEER_IDS: i64 = 200;
/// Channel ids per session (update state).
const CHANNELS: i64 = 8;

/// The exact contents of one session, as its one writer made them.
#[derive(Clone, Default)]
struct SessionModel {
    home_dc: Option<i32>,
    dcs: HashMap<i32, u64>,
    peers: HashMap<i64, i64>,
    state: UpdatesState,
}

impl SessionModel {
    fn apply(&mut self, w: &Write) {
        match w {
            Write::Peers(ids, hash) => {
                for id in ids {
                    self.peers.insert(*id, *hash);
                }
            }
            Write::State(UpdateStateChange::Primary { pts, date, seq }) => {
                (self.state.pts, self.state.date, self.state.seq) = (*pts, *date, *seq);
            }
            Write::State(UpdateStateChange::Secondary { qts }) => self.state.qts = *qts,
            Write::State(UpdateStateChange::Channel { id, pts }) => {
                self.state.channels.retain(|c| c.id != *id);
                self.state
                    .channels
                    .push(ChannelState { id: *id, pts: *pts });
            }
            Write::State(UpdateStateChange::All(s)) => self.state = s.clone(),
            Write::Dc(id, n) => {
                self.dcs.insert(*id, *n);
            }
            Write::Home(dc) => self.home_dc = Some(*dc),
        }
    }

    /// Compares an export with the model: exact.
    fn check(&self, data: &SessionData) -> Result<(), String> {
        if let Some(h) = self.home_dc {
            if data.home_dc != h {
                return Err(format!("home DC {} (model {h})", data.home_dc));
            }
        }
        for (id, n) in &self.dcs {
            let o = data.dc_options.iter().find(|o| o.id == *id);
            if o.and_then(|o| o.auth_key.as_ref()) != Some(&key(*n)) {
                return Err(format!("DC {id}: not the key of write {n}"));
            }
        }
        if data.peers.len() != self.peers.len() {
            return Err(format!(
                "{} peers (model {})",
                data.peers.len(),
                self.peers.len()
            ));
        }
        for p in &data.peers {
            if self.peers.get(&p.id) != p.access_hash.as_ref() {
                return Err(format!("peer {}: {:?}", p.id, p.access_hash));
            }
        }
        if data.updates_state != self.state {
            return Err(format!(
                "update state {:?} (model {:?})",
                data.updates_state, self.state
            ));
        }
        Ok(())
    }
}

/// A write of the workload.
#[derive(Clone, Debug)]
enum Write {
    /// Peers (ids), all with this access hash (cache class).
    Peers(Vec<i64>, i64),
    /// An update-state change (cache class).
    State(UpdateStateChange),
    /// DC option `id` with the key of write `n` (durable).
    Dc(i32, u64),
    /// Home DC (durable).
    Home(i32),
}

fn key(n: u64) -> AuthKey {
    let mut k = [0u8; 256];
    let mut r = Rng::new(n);
    for chunk in k.chunks_mut(8) {
        chunk.copy_from_slice(&r.next_u64().to_le_bytes());
    }
    AuthKey::new(k)
}

fn user(id: i64, hash: i64) -> Peer {
    let mut p = Peer::new(PeerKind::User, id);
    p.access_hash = Some(hash);
    p
}

fn request(h: u32, w: &Write) -> Request {
    match w {
        Write::Peers(ids, hash) => Request::CachePeers {
            handle: h,
            peers: ids.iter().map(|id| user(*id, *hash)).collect(),
        },
        Write::State(c) => Request::SetUpdateState {
            handle: h,
            change: c.clone(),
        },
        Write::Dc(id, n) => Request::SetDcOption {
            handle: h,
            option: DcOption {
                id: *id,
                ipv4: None,
                ipv6: None,
                auth_key: Some(key(*n)),
            },
        },
        Write::Home(dc) => Request::SetHomeDc {
            handle: h,
            dc_id: *dc,
        },
    }
}

/// Locked windows so far: (lock sent, unlock answered), in monotonic ns; `u64::MAX` while
/// the last is open.
#[derive(Default)]
struct Windows(std::sync::Mutex<Vec<(u64, u64)>>);

impl Windows {
    fn open(&self) {
        self.0.lock().unwrap().push((mono_ns(), u64::MAX));
    }
    fn close(&self) {
        if let Some(w) = self.0.lock().unwrap().last_mut() {
            w.1 = mono_ns();
        }
    }
    /// Whether `[t0, t1]` overlaps a locked window.
    fn overlaps(&self, t0: u64, t1: u64) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|&(a, b)| t0 <= b && t1 >= a)
    }
}

/// What the run measured.
#[derive(Default)]
struct Tally {
    ops: u64,
    locked_errors: u64,
    reads: Vec<Duration>,
    writes: Vec<Duration>,
    /// Answered operations that overlapped a locked window (their latency includes the
    /// lock, the unlock and vaultctl's start): counted, not in the percentiles.
    across_lock: u64,
}

/// Sends a request; a `locked` error inside a locked window is retried after a pause,
/// anything else unexpected fails the test.
async fn call(
    c: &Connection,
    windows: &Windows,
    tally: &Mutex<Tally>,
    make: impl Fn() -> Request,
    is_write: bool,
) -> Response {
    loop {
        let t0 = mono_ns();
        let start = Instant::now();
        let r = c.call(make()).await;
        let took = start.elapsed();
        let t1 = mono_ns();
        match r {
            Ok(resp) => {
                let mut t = tally.lock().await;
                t.ops += 1;
                if windows.overlaps(t0, t1) {
                    t.across_lock += 1;
                } else if is_write {
                    t.writes.push(took);
                } else {
                    t.reads.push(took);
                }
                return resp;
            }
            Err(ClientError::Daemon(e)) if e.code == ErrorCode::Locked => {
                assert!(
                    windows.overlaps(t0, t1),
                    "`locked` outside any locked window: {e:?}"
                );
                tally.lock().await.locked_errors += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("error under load (only `locked` is allowed): {e:?}"),
        }
    }
}

struct Shared {
    windows: Windows,
    tally: Mutex<Tally>,
    /// Per session: the highest counter its writer has sent (readers check against it).
    sent: Vec<AtomicU64>,
}

async fn writer(
    socket: std::path::PathBuf,
    s: usize,
    ops: u64,
    seed: u64,
    shared: Arc<Shared>,
) -> SessionModel {
    let c = Connection::connect(&socket, "load writer")
        .await
        .expect("connect");
    let h = open_session(&c, &format!("load{s}"), true).await;
    let mut model = SessionModel::default();
    let mut rng = Rng::new(seed);
    let base = 1 + s as u64 * 10_000_000;
    for i in 0..ops {
        let n = base + i;
        let write = match rng.range(0, 100) {
            0..30 => {
                let k = rng.range(1, 6) as i64;
                let first = rng.range(1, PEER_IDS as u64) as i64;
                Some(Write::Peers(
                    (first..first + k).map(|id| 1 + id % PEER_IDS).collect(),
                    n as i64,
                ))
            }
            30..40 => Some(Write::State(UpdateStateChange::Primary {
                pts: n as i32,
                date: n as i32,
                seq: n as i32,
            })),
            40..45 => Some(Write::State(UpdateStateChange::Secondary { qts: n as i32 })),
            45..52 => Some(Write::State(UpdateStateChange::Channel {
                id: 1 + rng.range(0, CHANNELS as u64) as i64,
                pts: n as i32,
            })),
            52..60 => Some(Write::Dc(1 + rng.range(0, 5) as i32, n)),
            60..63 => Some(Write::Home(n as i32)),
            _ => None,
        };
        if let Some(w) = write {
            shared.sent[s].store(n, Ordering::Release);
            let r = call(&c, &shared.windows, &shared.tally, || request(h, &w), true).await;
            assert!(matches!(r, Response::Ok), "{w:?}: {r:?}");
            model.apply(&w);
            continue;
        }
        // Reads of its own session: exact.
        let read = rng.range(0, 4);
        let make = || match read {
            0 => Request::GetPeer {
                handle: h,
                query: PeerQuery::Key(PeerKey {
                    kind: PeerKind::User,
                    id: 1 + (n as i64 % PEER_IDS),
                }),
            },
            1 => Request::GetUpdatesState { handle: h },
            2 => Request::GetDcOptions { handle: h },
            _ => Request::GetHomeDc { handle: h },
        };
        let r = call(&c, &shared.windows, &shared.tally, make, false).await;
        let ok = match r {
            Response::Peer(p) => {
                let id = 1 + (n as i64 % PEER_IDS);
                p.and_then(|p| p.access_hash) == model.peers.get(&id).copied()
            }
            Response::UpdatesState(st) => st == model.state,
            Response::DcOptions(list) => model.dcs.iter().all(|(id, n)| {
                list.iter()
                    .any(|o| o.id == *id && o.auth_key.as_ref() == Some(&key(*n)))
            }),
            Response::HomeDc(dc) => model.home_dc.is_none_or(|m| m == dc),
            other => panic!("read: {other:?}"),
        };
        assert!(
            ok,
            "session load{s}: its writer read something else than it wrote"
        );
    }
    model
}

async fn reader(socket: std::path::PathBuf, s: usize, ops: u64, seed: u64, shared: Arc<Shared>) {
    let c = Connection::connect(&socket, "load reader")
        .await
        .expect("connect");
    let h = open_session(&c, &format!("load{s}"), false).await;
    let mut rng = Rng::new(seed);
    let mut seen_peer: HashMap<i64, i64> = HashMap::new();
    let mut seen_pts = 0;
    for _ in 0..ops {
        if rng.range(0, 2) == 0 {
            let id = 1 + rng.range(0, PEER_IDS as u64) as i64;
            let make = || Request::GetPeer {
                handle: h,
                query: PeerQuery::Key(PeerKey {
                    kind: PeerKind::User,
                    id,
                }),
            };
            let Response::Peer(p) = call(&c, &shared.windows, &shared.tally, make, false).await
            else {
                panic!("get_peer");
            };
            if let Some(hash) = p.and_then(|p| p.access_hash) {
                let sent = shared.sent[s].load(Ordering::Acquire) as i64;
                let before = seen_peer.insert(id, hash).unwrap_or(0);
                assert!(
                    hash <= sent && hash >= before,
                    "session load{s} peer {id}: read {hash} after {before} (highest sent {sent})"
                );
            }
        } else {
            let make = || Request::GetUpdatesState { handle: h };
            let Response::UpdatesState(st) =
                call(&c, &shared.windows, &shared.tally, make, false).await
            else {
                panic!("get_updates_state");
            };
            let sent = shared.sent[s].load(Ordering::Acquire) as i32;
            assert!(
                st.pts >= seen_pts && st.pts <= sent,
                "session load{s}: pts {} after {seen_pts} (highest sent {sent})",
                st.pts
            );
            seen_pts = st.pts;
        }
    }
}

async fn export_all(env: &Env, models: &[SessionModel], when: &str) {
    let c = env.connect().await;
    for (s, m) in models.iter().enumerate() {
        let r = c
            .call(Request::ExportSession {
                name: format!("load{s}"),
            })
            .await;
        let Ok(Response::SessionData(d)) = r else {
            panic!("{when}: export load{s}: {r:?}")
        };
        if let Err(e) = m.check(&d) {
            panic!("{when}: session load{s}: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_on_sixteen_sessions_through_lock_cycles() {
    const TEST: &str = "load/64-clients";
    let ops: u64 = if long() { 10_000 } else { 150 };
    let cycles = if long() { 20 } else { 2 };
    let mut rng = Rng::from_env(TEST);
    let env = Env::new();
    let (d, _c) = env.start_initialized(&["--flush-interval-ms", "20"]).await;
    let shared = Arc::new(Shared {
        windows: Windows::default(),
        tally: Mutex::new(Tally::default()),
        sent: (0..SESSIONS).map(|_| AtomicU64::new(0)).collect(),
    });
    let started = Instant::now();
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for s in 0..SESSIONS {
        writers.push(tokio::spawn(writer(
            env.socket(),
            s,
            ops,
            rng.next_u64(),
            Arc::clone(&shared),
        )));
    }
    // Readers start once the sessions exist (their writers create them).
    tokio::time::sleep(Duration::from_millis(100)).await;
    for s in 0..SESSIONS * READERS_PER_SESSION {
        readers.push(tokio::spawn(reader(
            env.socket(),
            s % SESSIONS,
            ops,
            rng.next_u64(),
            Arc::clone(&shared),
        )));
    }
    // Lock and unlock with vaultctl while the clients run.
    let total = ops * (SESSIONS * (1 + READERS_PER_SESSION)) as u64;
    for k in 0..cycles {
        let at = total * (k + 1) / (cycles + 1);
        while shared.tally.lock().await.ops < at && !writers.iter().all(|w| w.is_finished()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shared.windows.open();
        let pf = env.secret_file("pass", PASS);
        let socket = env.socket();
        let (lock, unlock) = tokio::task::spawn_blocking(move || {
            let ctl = |args: &[&str]| {
                std::process::Command::new(crate::util::vaultctl_bin())
                    .arg("--socket")
                    .arg(&socket)
                    .args(args)
                    .output()
                    .expect("vaultctl")
            };
            let lock = ctl(&["lock"]);
            std::thread::sleep(Duration::from_millis(100));
            let unlock = ctl(&["unlock", "--passphrase-file", pf.to_str().unwrap()]);
            (lock, unlock)
        })
        .await
        .unwrap();
        shared.windows.close();
        assert_success(&lock, "vaultctl lock");
        assert_success(&unlock, "vaultctl unlock");
    }
    let mut models = Vec::new();
    for w in writers {
        models.push(w.await.expect("writer task"));
    }
    for r in readers {
        r.await.expect("reader task");
    }
    let took = started.elapsed();
    export_all(&env, &models, "after the run").await;
    // Everything was acknowledged long enough ago to be on disk.
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.kill();
    let (_d, _c) = env.start_unlocked(&[]).await;
    export_all(&env, &models, "after SIGKILL and restart").await;

    let mut t = shared.tally.lock().await;
    t.reads.sort();
    t.writes.sort();
    let all: u64 = t.ops;
    figure(
        TEST,
        &format!(
            "{} clients on {SESSIONS} sessions, {all} operations ({} writes, {} reads timed) in \
             {took:.1?} ({:.0} ops/s) with {cycles} vaultctl lock/unlock cycles; {} `locked` \
             answers, all inside a locked window; outside the windows ({} operations \
             overlapped one): read p50 {:?} p99 {:?} max {:?}; write p50 \
             {:?} p99 {:?} max {:?}; lost writes: 0, wrong answers: 0",
            SESSIONS * (1 + READERS_PER_SESSION),
            t.writes.len(),
            t.reads.len(),
            all as f64 / took.as_secs_f64(),
            t.locked_errors,
            t.across_lock,
            percentile(&t.reads, 50),
            percentile(&t.reads, 99),
            t.reads.last().copied().unwrap_or_default(),
            percentile(&t.writes, 50),
            percentile(&t.writes, 99),
            t.writes.last().copied().unwrap_or_default(),
        ),
    );
    assert!(t.locked_errors > 0, "the lock cycles refused nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_sessions_while_others_are_deleted() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    for i in 0..50 {
        open_session(&c, &format!("keep{i}"), false).await;
    }
    let deleter = {
        let c = env.connect().await;
        tokio::spawn(async move {
            for i in 0..300 {
                let name = format!("gone{i}");
                let h = open_session(&c, &name, false).await;
                let r = c.call(Request::CloseSession { handle: h }).await;
                assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
                let r = c.call(Request::DeleteSession { name, force: false }).await;
                assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
            }
        })
    };
    let mut failures = Vec::new();
    let mut lists = 0;
    while !deleter.is_finished() {
        lists += 1;
        if let Err(e) = c.call(Request::ListSessions).await {
            failures.push(e.to_string());
        }
    }
    deleter.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {lists} list_sessions failed during deletes, e.g. {:?}",
        failures.len(),
        failures[0]
    );
}
