//! Section 1: the latency of every `Session` method, one call at a time, on the three
//! storages side by side: Session Vault (`VaultSession` → `vaultd`), grammers'
//! `MemorySession` and grammers' `SqliteSession` (libsql, on a file on the same disk).

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;

use anyhow::Result;
use grammers_session::Session;
use grammers_session::storages::{MemorySession, SqliteSession};
use grammers_session::types::UpdateState;

use crate::stats::{Count, Rng, Summary, time_async, time_sync};
use crate::workload::{dc_option, fill, full_state, ok, open_vault, peer, peer_id};

/// Which storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Backend {
    /// Session Vault.
    Vault,
    /// grammers' `MemorySession`.
    Memory,
    /// grammers' `SqliteSession`.
    Sqlite,
}

/// The operations, in table order.
pub const HOME: &str = "home_dc_id";
/// `dc_option`.
pub const DC: &str = "dc_option";
/// `peer` of a peer read before.
pub const PEER_HOT: &str = "peer — read before";
/// `peer` of a peer this client cached but never read.
pub const PEER_WRITTEN: &str = "peer — cached by this client, not read since";
/// `peer` from a fresh connection.
pub const PEER_COLD: &str = "peer — cold (fresh connection / reopened file)";
/// `cache_peer`.
pub const CACHE_PEER: &str = "cache_peer (new peer)";
/// `cache_peers` of 100.
pub const CACHE_PEERS: &str = "cache_peers ×100 (new peers)";
/// `set_update_state(All)`.
pub const SET_ALL: &str = "set_update_state All (10 channels)";
/// `set_update_state(Primary)`.
pub const SET_PRIMARY: &str = "set_update_state Primary";
/// `set_update_state(Secondary)`.
pub const SET_SECONDARY: &str = "set_update_state Secondary";
/// `set_update_state(Channel)`.
pub const SET_CHANNEL: &str = "set_update_state Channel";
/// `updates_state`.
pub const STATE: &str = "updates_state";
/// `set_dc_option`.
pub const SET_DC: &str = "set_dc_option (256-byte auth key)";
/// `set_home_dc_id`.
pub const SET_HOME: &str = "set_home_dc_id";

/// Table order, with each operation's durability class in the vault.
pub const ORDER: [(&str, &str); 14] = [
    (PEER_HOT, "read"),
    (PEER_WRITTEN, "read"),
    (PEER_COLD, "read"),
    (CACHE_PEER, "cache"),
    (CACHE_PEERS, "cache"),
    (SET_ALL, "cache"),
    (SET_PRIMARY, "cache"),
    (SET_SECONDARY, "cache"),
    (SET_CHANNEL, "cache"),
    (STATE, "read"),
    (SET_DC, "durable"),
    (SET_HOME, "durable"),
    (HOME, "sync read"),
    (DC, "sync read"),
];

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// In-process operations (sub-µs to a few µs).
    pub fast: usize,
    /// One socket round trip, or a SQLite read.
    pub rt: usize,
    /// One fsync or more.
    pub disk: usize,
    /// `cache_peers` of 100 (each adds 100 peers).
    pub batch: usize,
    /// Peers stored before the reads.
    pub peers: u64,
    /// Of which read before ("hot").
    pub hot: u64,
}

impl Plan {
    /// The full run.
    pub fn full() -> Plan {
        Plan {
            fast: 20_000,
            rt: 5_000,
            disk: 300,
            batch: 2_000,
            peers: 20_000,
            hot: 1_000,
        }
    }

    /// `--quick`.
    pub fn quick() -> Plan {
        Plan {
            fast: 1_000,
            rt: 200,
            disk: 20,
            batch: 50,
            peers: 1_000,
            hot: 100,
        }
    }

    fn count(&self, b: Backend, op: &str) -> Count {
        use Backend::*;
        let n = match (b, op) {
            (_, HOME | DC) => self.fast,
            (_, PEER_COLD) => self.rt,
            (_, CACHE_PEERS) => match b {
                Sqlite => self.disk,
                _ => self.batch,
            },
            (Memory, _) => self.fast,
            (Vault, PEER_HOT | STATE) => self.fast,
            (Vault, SET_DC | SET_HOME) => self.disk,
            (Vault, _) => self.rt,
            (Sqlite, PEER_HOT | PEER_WRITTEN | STATE) => self.rt,
            (Sqlite, _) => self.disk,
        };
        Count::new(n)
    }
}

/// Id ranges, so that every write adds new peers.
const WRITTEN_BASE: u64 = 10_000_000;
const CACHE_PEER_BASE: u64 = 20_000_000;
const CACHE_PEERS_BASE: u64 = 30_000_000;

/// Every operation but the cold `peer`, on one storage.
async fn common<S: Session>(
    s: &S,
    b: Backend,
    plan: &Plan,
) -> Result<HashMap<&'static str, Summary>>
where
    S::Error: Debug,
{
    let mut out = HashMap::new();
    fill(s, 0, plan.peers, 1_000).await?;

    out.insert(
        HOME,
        time_sync(plan.count(b, HOME), |_| {
            std::hint::black_box(s.home_dc_id().expect("home_dc_id"));
        }),
    );
    out.insert(
        DC,
        time_sync(plan.count(b, DC), |_| {
            std::hint::black_box(s.dc_option(2).expect("dc_option"));
        }),
    );

    // Hot: every one of them read once first.
    for i in 0..plan.hot {
        ok(s.peer(peer_id(i)).await)?;
    }
    let mut rng = Rng::new(1);
    let picks: Vec<u64> = (0..plan.count(b, PEER_HOT).total())
        .map(|_| rng.below(plan.hot))
        .collect();
    out.insert(
        PEER_HOT,
        time_async(plan.count(b, PEER_HOT), |i| {
            let id = peer_id(picks[i]);
            async move {
                let p = s.peer(id).await.expect("peer");
                assert!(p.is_some());
            }
        })
        .await,
    );

    // Cached by this client (in bulk, untimed), then each read once.
    let c = plan.count(b, PEER_WRITTEN);
    fill(s, WRITTEN_BASE, WRITTEN_BASE + c.total() as u64, 1_000).await?;
    out.insert(
        PEER_WRITTEN,
        time_async(c, |i| async move {
            let p = s
                .peer(peer_id(WRITTEN_BASE + i as u64))
                .await
                .expect("peer");
            assert!(p.is_some());
        })
        .await,
    );

    out.insert(
        CACHE_PEER,
        time_async(plan.count(b, CACHE_PEER), |i| async move {
            s.cache_peer(peer(CACHE_PEER_BASE + i as u64))
                .await
                .expect("cache_peer");
        })
        .await,
    );
    out.insert(
        CACHE_PEERS,
        time_async(plan.count(b, CACHE_PEERS), |i| {
            let batch = crate::workload::peers(
                CACHE_PEERS_BASE + 100 * i as u64,
                CACHE_PEERS_BASE + 100 * (i as u64 + 1),
            );
            async move {
                s.cache_peers(batch).await.expect("cache_peers");
            }
        })
        .await,
    );

    out.insert(
        SET_ALL,
        time_async(plan.count(b, SET_ALL), |i| async move {
            s.set_update_state(UpdateState::All(full_state(i as u64, 10)))
                .await
                .expect("set_update_state");
        })
        .await,
    );
    out.insert(
        SET_PRIMARY,
        time_async(plan.count(b, SET_PRIMARY), |i| async move {
            s.set_update_state(UpdateState::Primary {
                pts: 10_000 + i as i32,
                date: 1_700_000_000 + i as i32,
                seq: 100 + i as i32,
            })
            .await
            .expect("set_update_state");
        })
        .await,
    );
    out.insert(
        SET_SECONDARY,
        time_async(plan.count(b, SET_SECONDARY), |i| async move {
            s.set_update_state(UpdateState::Secondary {
                qts: 10_000 + i as i32,
            })
            .await
            .expect("set_update_state");
        })
        .await,
    );
    out.insert(
        SET_CHANNEL,
        time_async(plan.count(b, SET_CHANNEL), |i| async move {
            s.set_update_state(UpdateState::Channel {
                id: 1_000_000_009 + 10 * (i % 10) as i64,
                pts: 10_000 + i as i32,
            })
            .await
            .expect("set_update_state");
        })
        .await,
    );
    out.insert(
        STATE,
        time_async(plan.count(b, STATE), |_| async move {
            std::hint::black_box(s.updates_state().await.expect("updates_state"));
        })
        .await,
    );

    out.insert(
        SET_DC,
        time_async(plan.count(b, SET_DC), |i| async move {
            s.set_dc_option(&dc_option(i as u64))
                .await
                .expect("set_dc_option");
        })
        .await,
    );
    out.insert(
        SET_HOME,
        time_async(plan.count(b, SET_HOME), |i| async move {
            s.set_home_dc_id(1 + (i % 5) as i32)
                .await
                .expect("set_home_dc_id");
        })
        .await,
    );
    Ok(out)
}

/// `peer` of never-read peers (from the stored ones beyond the hot set), one each.
async fn cold<S: Session>(s: &S, b: Backend, plan: &Plan) -> Result<Summary>
where
    S::Error: Debug,
{
    let mut order: Vec<u64> = (plan.hot..plan.peers).collect();
    Rng::new(2).shuffle(&mut order);
    let c = plan.count(b, PEER_COLD);
    anyhow::ensure!(
        order.len() >= c.total(),
        "not enough stored peers for the cold reads"
    );
    Ok(time_async(c, |i| {
        let id = peer_id(order[i]);
        async move {
            let p = s.peer(id).await.expect("peer");
            assert!(p.is_some());
        }
    })
    .await)
}

/// Results of section 1: per operation, per storage.
pub type OpsResults = HashMap<&'static str, HashMap<Backend, Summary>>;

/// The round-trip floor measured in rounds interleaved with the vault's cold `peer`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Interleaved {
    /// Blocking std ↔ std.
    pub blocking: Summary,
    /// tokio ↔ tokio.
    pub tokio: Summary,
    /// tokio task → std thread → oneshot back, in this process.
    pub thread_hop: Summary,
}

/// Rounds the cold vault reads are split into, alternating with the floor.
const ROUNDS: usize = 10;

/// The vault's cold `peer` in [`ROUNDS`] rounds, each followed by as many echo round trips.
async fn cold_interleaved(
    s: &session_vault_client::VaultSession,
    plan: &Plan,
    dir: &Path,
) -> Result<(Summary, Interleaved)> {
    let mut floor = crate::echo::Floor::start(dir).await?;
    let mut order: Vec<u64> = (plan.hot..plan.peers).collect();
    Rng::new(2).shuffle(&mut order);
    let c = plan.count(Backend::Vault, PEER_COLD);
    anyhow::ensure!(
        order.len() >= c.total(),
        "not enough stored peers for the cold reads"
    );
    let (mut b, mut t, mut h) = (Vec::new(), Vec::new(), Vec::new());
    floor.round(c.warmup, &mut b, &mut t, &mut h).await?;
    b.clear();
    t.clear();
    h.clear();
    let mut ids = order.into_iter();
    for id in ids.by_ref().take(c.warmup) {
        ok(s.peer(peer_id(id)).await)?;
    }
    let per = c.measured.div_ceil(ROUNDS);
    let mut samples = Vec::with_capacity(c.measured);
    for _ in 0..ROUNDS {
        for id in ids.by_ref().take(per) {
            let t0 = std::time::Instant::now();
            let p = ok(s.peer(peer_id(id)).await)?;
            samples.push(t0.elapsed().as_nanos() as u64);
            anyhow::ensure!(p.is_some(), "a stored peer was not found");
        }
        floor.round(per, &mut b, &mut t, &mut h).await?;
    }
    Ok((
        crate::stats::summarize(samples),
        Interleaved {
            blocking: crate::stats::summarize(b),
            tokio: crate::stats::summarize(t),
            thread_hop: crate::stats::summarize(h),
        },
    ))
}

/// Runs section 1 on all three storages. `socket`: a running, unlocked `vaultd`; `dir`: where
/// the SQLite file goes.
pub async fn run(socket: &Path, dir: &Path, plan: &Plan) -> Result<(OpsResults, Interleaved)> {
    let mut out: OpsResults = HashMap::new();
    let mut put = |b: Backend, m: HashMap<&'static str, Summary>| {
        for (k, v) in m {
            out.entry(k).or_default().insert(b, v);
        }
    };

    eprintln!("  MemorySession…");
    let mem = MemorySession::default();
    let mut m = common(&mem, Backend::Memory, plan).await?;
    m.insert(PEER_COLD, cold(&mem, Backend::Memory, plan).await?);
    put(Backend::Memory, m);
    drop(mem);

    eprintln!("  SqliteSession…");
    let path = dir.join("grammers-ops.session");
    let sq = ok(SqliteSession::open(&path).await)?;
    let mut m = common(&sq, Backend::Sqlite, plan).await?;
    drop(sq);
    let sq = ok(SqliteSession::open(&path).await)?;
    m.insert(PEER_COLD, cold(&sq, Backend::Sqlite, plan).await?);
    put(Backend::Sqlite, m);
    drop(sq);

    eprintln!("  Session Vault…");
    let v = open_vault(socket, "ops", session_vault_client::DEFAULT_PEER_CACHE).await?;
    let mut m = common(&v, Backend::Vault, plan).await?;
    drop(v);
    let v = open_vault(socket, "ops", session_vault_client::DEFAULT_PEER_CACHE).await?;
    let (c, floor) = cold_interleaved(&v, plan, dir).await?;
    m.insert(PEER_COLD, c);
    put(Backend::Vault, m);
    drop(v);
    Ok((out, floor))
}
