//! Engine benchmark: the encrypted vault beside a plain, unencrypted rusqlite table.
//!
//! Every vault operation is measured next to the same operation on a plain SQLite database
//! written in this file, in the same run, on the same disk, with the same pragmas as the
//! vault's store (WAL, `synchronous=FULL`, `locking_mode=EXCLUSIVE`, `secure_delete=ON`):
//!
//! - peer upsert, single (`cache_peers` with 1 peer) and batch (`cache_peers` with 100);
//! - peer lookup by id and by username in a session of 100k cached peers;
//! - DC option write with a 256-byte auth key (durable class: answered after fsync);
//! - update-state write (`set_update_state(Channel{..})`, cache class).
//!
//! Cache-class writes (peers, update state) are answered by the vault as soon as they are
//! applied and committed by the storage thread within `VaultConfig::flush_interval` (100 ms);
//! the fsync of that group commit is paid inside the measured loop, amortized. They are shown
//! against two plain baselines: the same group commit (a transaction held open and committed
//! every 100 ms, i.e. the same durability) and autocommit (one fsynced transaction per call,
//! what a bot writing its session file directly does).
//!
//! A breakdown group measures the pieces (`Vault::status`, which runs inline when the storage
//! thread is idle and so shows the cost of the inline path, HMAC blind index, AEAD seal/open,
//! OS RNG, and the engine called directly without the `Vault` handle).
//!
//! At the end a markdown table of medians and ratios (encrypted / plain) is printed. The medians
//! are computed here, from the per-iteration time of every criterion sample (`iter_custom`).
//!
//! `SESSION_VAULT_BENCH_QUICK=1` runs a smoke version (1k peers, 10 short samples) for CI.
//! `SESSION_VAULT_BENCH_DIR` picks the directory for the databases (default: the temp dir;
//! it should be on a real disk, not tmpfs, or the fsync figures mean nothing).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use rusqlite::params;
use session_vault_daemon::vault::crypto::{Keys, PAD_SMALL, RecordPlace, SecretKey, fill_random};
use session_vault_daemon::vault::engine::Engine;
use session_vault_daemon::vault::sqlite::SqliteStore;
use session_vault_daemon::vault::store::Store;
use session_vault_daemon::vault::{KdfParams, SessionId, Vault, VaultConfig};
use session_vault_proto::model::{
    AuthKey, DcOption, Peer, PeerKey, PeerKind, SessionAcl, UpdateStateChange,
};
use tokio::runtime::Runtime;

// Submodules of a bench target's root live beside it; `engine/` keeps cargo from taking them
// for bench targets of their own.
#[path = "engine/breakdown.rs"]
mod breakdown;
#[path = "engine/plain.rs"]
mod plain;
#[path = "engine/summary.rs"]
mod summary;

use breakdown::bench_breakdown;
use plain::Plain;
use summary::{SAMPLE_SIZE, bench, print_summary};

const PASS: &[u8] = b"bench passphrase";
const FLUSH: Duration = Duration::from_millis(100);
/// First bare id of the generated peers.
const ID_BASE: i64 = 1_000_000;

// ---- sizes and criterion settings -----------------------------------------------------------

#[derive(Clone, Copy)]
struct Sizes {
    quick: bool,
    /// Peers in the lookup session.
    lookup_peers: i64,
    /// Peers the upsert benches rotate over (pre-populated, so every upsert is an update).
    rotation: i64,
}

impl Sizes {
    fn from_env() -> Sizes {
        let quick = std::env::var("SESSION_VAULT_BENCH_QUICK").is_ok_and(|v| v == "1");
        if quick {
            Sizes {
                quick,
                lookup_peers: 1_000,
                rotation: 500,
            }
        } else {
            Sizes {
                quick,
                lookup_peers: 100_000,
                rotation: 10_000,
            }
        }
    }
}

/// How long a group samples: fast (µs) operations or slow (fsync) ones.
#[derive(Clone, Copy, PartialEq)]
enum Speed {
    Fast,
    Fsync,
}

fn group<'a>(
    c: &'a mut Criterion,
    sizes: Sizes,
    name: &str,
    speed: Speed,
    elements: u64,
) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    let (n, measure, warm) = match (sizes.quick, speed) {
        (true, _) => (10, Duration::from_millis(200), Duration::from_millis(50)),
        (false, Speed::Fast) => (50, Duration::from_secs(4), Duration::from_secs(1)),
        (false, Speed::Fsync) => (30, Duration::from_secs(4), Duration::from_secs(1)),
    };
    g.sample_size(n)
        .measurement_time(measure)
        .warm_up_time(warm)
        .throughput(Throughput::Elements(elements));
    SAMPLE_SIZE.lock().unwrap().insert(name.to_owned(), n);
    g
}

// ---- workload ---------------------------------------------------------------------------------

/// A user peer as a bot sees one: id, access hash, username and display name.
fn make_peer(i: i64, generation: u64) -> Peer {
    let id = ID_BASE + i;
    let mut p = Peer::new(PeerKind::User, id);
    p.access_hash = Some(id.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64) ^ generation as i64);
    p.bot = Some(false);
    p.username = Some(format!("User_{id}"));
    p.name = Some(format!("Some User {id} #{generation}"));
    p
}

fn peer_key(i: i64) -> PeerKey {
    PeerKey {
        kind: PeerKind::User,
        id: ID_BASE + i,
    }
}

/// A fixed pseudo-random walk over `0..n` (the same for the vault and the plain table).
fn lookup_order(n: i64, len: usize) -> Vec<i64> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as i64
        })
        .collect()
}

fn dc_option(id: i32) -> DcOption {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    DcOption {
        id,
        ipv4: Some(SocketAddrV4::new(Ipv4Addr::new(149, 154, 167, 41), 443)),
        ipv6: Some(SocketAddrV6::new(
            Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xa),
            443,
            0,
            0,
        )),
        auth_key: Some(AuthKey::new([0xA5; 256])),
    }
}

// ---- fixtures -----------------------------------------------------------------------------

const PLAIN_UPSERT: i64 = 1;
const PLAIN_LOOKUP: i64 = 2;
const PLAIN_DC: i64 = 3;
const PLAIN_STATE: i64 = 4;
/// Channels the update-state benches rotate over.
const CHANNELS: i64 = 64;

struct Fixture {
    rt: Runtime,
    vault: Vault,
    plain: Plain,
    upsert: SessionId,
    lookup: SessionId,
    dc: SessionId,
    state: SessionId,
    /// (label, encrypted peers/s, plain peers/s) of the populate phase.
    populate: Vec<(String, f64, f64)>,
}

fn populate_vault(rt: &Runtime, vault: &Vault, sid: SessionId, n: i64) -> f64 {
    let start = Instant::now();
    rt.block_on(async {
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let peers = chunk.iter().map(|&i| make_peer(i, 0)).collect();
            vault.cache_peers(sid, peers).await.unwrap();
        }
    });
    n as f64 / start.elapsed().as_secs_f64()
}

fn populate_plain(plain: &mut Plain, session: i64, n: i64) -> f64 {
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let peers: Vec<Peer> = chunk.iter().map(|&i| make_peer(i, 0)).collect();
        plain.cache_write(|c| Plain::upsert_peers(c, session, &peers));
    }
    plain.flush();
    n as f64 / start.elapsed().as_secs_f64()
}

fn setup(dir: &Path, sizes: Sizes) -> Fixture {
    let rt = Runtime::new().unwrap();
    let vault = rt
        .block_on(Vault::create(
            &dir.join("vault.db"),
            PASS,
            KdfParams::insecure_fast_for_tests(),
            VaultConfig::default(),
        ))
        .unwrap();
    let mut plain = Plain::open(&dir.join("plain.db"));
    let (upsert, lookup, dc, state) = rt.block_on(async {
        let acl = SessionAcl::default;
        (
            vault.create_session("upsert", acl()).await.unwrap(),
            vault.create_session("lookup", acl()).await.unwrap(),
            vault.create_session("dc", acl()).await.unwrap(),
            vault.create_session("state", acl()).await.unwrap(),
        )
    });

    let mut populate = Vec::new();
    let e = populate_vault(&rt, &vault, lookup, sizes.lookup_peers);
    let p = populate_plain(&mut plain, PLAIN_LOOKUP, sizes.lookup_peers);
    populate.push((
        format!(
            "populate {} peers (new rows, batches of 1000)",
            sizes.lookup_peers
        ),
        e,
        p,
    ));
    let e = populate_vault(&rt, &vault, upsert, sizes.rotation);
    let p = populate_plain(&mut plain, PLAIN_UPSERT, sizes.rotation);
    populate.push((
        format!(
            "populate {} peers (new rows, upsert session)",
            sizes.rotation
        ),
        e,
        p,
    ));

    rt.block_on(async {
        for id in 0..CHANNELS {
            let change = UpdateStateChange::Channel {
                id: ID_BASE + id,
                pts: 1,
            };
            vault.set_update_state(state, change).await.unwrap();
        }
    });
    for id in 0..CHANNELS {
        plain
            .conn
            .execute(
                "INSERT INTO channel_state (session, id, pts) VALUES (?1, ?2, 1)",
                params![PLAIN_STATE, ID_BASE + id],
            )
            .unwrap();
    }
    Fixture {
        rt,
        vault,
        plain,
        upsert,
        lookup,
        dc,
        state,
        populate,
    }
}

// ---- benchmarks -------------------------------------------------------------------------------

fn bench_upsert(c: &mut Criterion, f: &mut Fixture, sizes: Sizes) {
    for batch in [1i64, 100] {
        let name = format!("peer_upsert_{batch}");
        let mut g = group(c, sizes, &name, Speed::Fast, batch as u64);
        // Every call changes the peers it writes (new access hash and name), so each is a real
        // update: read + open + merge + seal + write in the vault, one UPSERT in the plain table.
        let mut generation = 1u64;
        let mut next = 0i64;
        let mut take = move || {
            generation += 1;
            let peers: Vec<Peer> = (0..batch)
                .map(|k| make_peer((next + k) % sizes.rotation, generation))
                .collect();
            next = (next + batch) % sizes.rotation;
            peers
        };
        let (rt, vault, sid) = (&f.rt, &f.vault, f.upsert);
        bench(&mut g, &name, "encrypted", |iters| {
            let work: Vec<Vec<Peer>> = (0..iters).map(|_| take()).collect();
            rt.block_on(async {
                let start = Instant::now();
                for peers in work {
                    vault.cache_peers(sid, peers).await.unwrap();
                }
                start.elapsed()
            })
        });
        let plain = &mut f.plain;
        bench(&mut g, &name, "plain_group_commit", |iters| {
            let work: Vec<Vec<Peer>> = (0..iters).map(|_| take()).collect();
            let start = Instant::now();
            for peers in work {
                plain.cache_write(|c| Plain::upsert_peers(c, PLAIN_UPSERT, &peers));
            }
            start.elapsed()
        });
        plain.flush();
        g.finish();
        let mut g = group(
            c,
            sizes,
            &format!("{name}_autocommit"),
            Speed::Fsync,
            batch as u64,
        );
        bench(&mut g, &format!("{name}_autocommit"), "plain", |iters| {
            let work: Vec<Vec<Peer>> = (0..iters).map(|_| take()).collect();
            let start = Instant::now();
            for peers in work {
                // One fsynced transaction per call.
                let tx = plain.conn.unchecked_transaction().unwrap();
                Plain::upsert_peers(&tx, PLAIN_UPSERT, &peers);
                tx.commit().unwrap();
            }
            start.elapsed()
        });
        g.finish();
    }
}

fn bench_lookup(c: &mut Criterion, f: &mut Fixture, sizes: Sizes) {
    let order = lookup_order(sizes.lookup_peers, 1 << 16);
    let names: Vec<String> = order
        .iter()
        .map(|&i| format!("@user_{}", ID_BASE + i))
        .collect();
    let (rt, vault, sid) = (&f.rt, &f.vault, f.lookup);
    let plain = &f.plain;

    let mut g = group(c, sizes, "peer_lookup_id", Speed::Fast, 1);
    let mut pos = 0usize;
    bench(&mut g, "peer_lookup_id", "encrypted", |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                pos = (pos + 1) % order.len();
                let p = vault.peer(sid, peer_key(order[pos])).await.unwrap();
                assert!(black_box(p).is_some());
            }
            start.elapsed()
        })
    });
    // The daemon's real path: the request comes from a task on a runtime worker, not from a
    // thread parked in `block_on`.
    let shared_order = std::sync::Arc::new(order.clone());
    bench(&mut g, "peer_lookup_id", "encrypted_from_task", |iters| {
        let (v, order) = (vault.clone(), shared_order.clone());
        let start_pos = pos;
        pos = (pos + iters as usize) % order.len();
        rt.block_on(async move {
            tokio::spawn(async move {
                let start = Instant::now();
                for k in 0..iters as usize {
                    let i = order[(start_pos + k) % order.len()];
                    let p = v.peer(sid, peer_key(i)).await.unwrap();
                    assert!(black_box(p).is_some());
                }
                start.elapsed()
            })
            .await
            .unwrap()
        })
    });
    bench(&mut g, "peer_lookup_id", "plain", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            pos = (pos + 1) % order.len();
            let p = plain.peer(PLAIN_LOOKUP, peer_key(order[pos]));
            assert!(black_box(p).is_some());
        }
        start.elapsed()
    });
    g.finish();

    let mut g = group(c, sizes, "peer_lookup_username", Speed::Fast, 1);
    bench(&mut g, "peer_lookup_username", "encrypted", |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                pos = (pos + 1) % names.len();
                let p = vault.peer_by_username(sid, &names[pos]).await.unwrap();
                assert!(black_box(p).is_some());
            }
            start.elapsed()
        })
    });
    bench(&mut g, "peer_lookup_username", "plain", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            pos = (pos + 1) % names.len();
            let p = plain.peer_by_username(PLAIN_LOOKUP, &names[pos]);
            assert!(black_box(p).is_some());
        }
        start.elapsed()
    });
    g.finish();
}

fn bench_dc_option(c: &mut Criterion, f: &mut Fixture, sizes: Sizes) {
    let (rt, vault, sid) = (&f.rt, &f.vault, f.dc);
    let plain = &mut f.plain;
    plain.flush();
    let dc = dc_option(2);

    let mut g = group(c, sizes, "dc_option_write", Speed::Fsync, 1);
    bench(&mut g, "dc_option_write", "encrypted", |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                vault.set_dc_option(sid, dc.clone()).await.unwrap();
            }
            start.elapsed()
        })
    });
    bench(&mut g, "dc_option_write", "plain", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            // Autocommit: its own transaction, fsynced (synchronous=FULL) before it returns.
            Plain::set_dc_option(&plain.conn, PLAIN_DC, &dc);
        }
        start.elapsed()
    });
    g.finish();

    // Group commit at work: 8 writers at once share one fsync. The plain file has one
    // connection; 8 processes on it would get "database is locked", so it writes serially.
    const WRITERS: i32 = 8;
    let mut g = group(c, sizes, "dc_option_write_x8", Speed::Fsync, WRITERS as u64);
    bench(&mut g, "dc_option_write_x8", "encrypted", |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let tasks: Vec<_> = (1..=WRITERS)
                    .map(|id| {
                        let v = vault.clone();
                        tokio::spawn(async move { v.set_dc_option(sid, dc_option(id)).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap().unwrap();
                }
            }
            start.elapsed()
        })
    });
    bench(&mut g, "dc_option_write_x8", "plain", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            for id in 1..=WRITERS {
                Plain::set_dc_option(&plain.conn, PLAIN_DC, &dc_option(id));
            }
        }
        start.elapsed()
    });
    g.finish();
}

fn bench_update_state(c: &mut Criterion, f: &mut Fixture, sizes: Sizes) {
    let (rt, vault, sid) = (&f.rt, &f.vault, f.state);
    let plain = &mut f.plain;
    let mut pts = 1i32;
    let mut next = move || {
        pts += 1;
        (ID_BASE + (pts as i64 % CHANNELS), pts)
    };

    let mut g = group(c, sizes, "update_state_write", Speed::Fast, 1);
    bench(&mut g, "update_state_write", "encrypted", |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let (id, pts) = next();
                let change = UpdateStateChange::Channel { id, pts };
                vault.set_update_state(sid, change).await.unwrap();
            }
            start.elapsed()
        })
    });
    bench(
        &mut g,
        "update_state_write",
        "plain_group_commit",
        |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (id, pts) = next();
                plain.cache_write(|c| Plain::set_channel_pts(c, PLAIN_STATE, id, pts));
            }
            start.elapsed()
        },
    );
    plain.flush();
    g.finish();
    let mut g = group(c, sizes, "update_state_write_autocommit", Speed::Fsync, 1);
    bench(&mut g, "update_state_write_autocommit", "plain", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            let (id, pts) = next();
            Plain::set_channel_pts(&plain.conn, PLAIN_STATE, id, pts);
        }
        start.elapsed()
    });
    g.finish();
}

fn main() {
    let sizes = Sizes::from_env();
    let mut c = Criterion::default().configure_from_args();
    let base = std::env::var_os("SESSION_VAULT_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("session-vault-bench-")
        .tempdir_in(base)
        .unwrap();
    eprintln!("databases in {}", dir.path().display());

    let t0 = Instant::now();
    let mut f = setup(dir.path(), sizes);
    eprintln!("setup took {:.1} s", t0.elapsed().as_secs_f64());
    let populate = f.populate.clone();

    bench_upsert(&mut c, &mut f, sizes);
    bench_lookup(&mut c, &mut f, sizes);
    bench_dc_option(&mut c, &mut f, sizes);
    bench_update_state(&mut c, &mut f, sizes);
    bench_breakdown(&mut c, f, dir.path(), sizes);

    c.final_summary();
    print_summary(sizes, &populate);
}
