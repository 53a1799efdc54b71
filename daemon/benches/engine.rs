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

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use rusqlite::{Connection, OptionalExtension, params};
use session_vault_daemon::vault::crypto::{Keys, RecordPlace, SecretKey, fill_random};
use session_vault_daemon::vault::engine::Engine;
use session_vault_daemon::vault::sqlite::SqliteStore;
use session_vault_daemon::vault::store::Store;
use session_vault_daemon::vault::{KdfParams, SessionId, Vault, VaultConfig};
use session_vault_proto::model::{
    AuthKey, ChannelKind, DcOption, Peer, PeerKey, PeerKind, SessionAcl, UpdateStateChange,
};
use tokio::runtime::Runtime;

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

// ---- our own record of criterion's samples ----------------------------------------------------

/// Per-iteration nanoseconds of every call criterion made, by "group/bench".
static SAMPLES: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());
/// Sample size of each group: the last that many calls of a bench are its measurement.
static SAMPLE_SIZE: LazyLock<Mutex<HashMap<String, usize>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Runs `routine(iters)` (which returns the time `iters` iterations took) as a criterion
/// benchmark, and remembers the per-iteration time of every sample.
fn bench(
    g: &mut BenchmarkGroup<'_, WallTime>,
    group: &str,
    id: &str,
    mut routine: impl FnMut(u64) -> Duration,
) {
    let key = format!("{group}/{id}");
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let d = routine(iters);
            SAMPLES
                .lock()
                .unwrap()
                .push((key.clone(), d.as_nanos() as f64 / iters as f64));
            d
        })
    });
}

/// Median per-iteration time (ns) of the measured samples of `key` ("group/bench").
fn median_ns(key: &str) -> Option<f64> {
    let group = key.split('/').next().unwrap_or_default();
    let n = SAMPLE_SIZE
        .lock()
        .unwrap()
        .get(group)
        .copied()
        .unwrap_or(10);
    let all = SAMPLES.lock().unwrap();
    let mut v: Vec<f64> = all
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, t)| *t)
        .collect();
    if v.is_empty() {
        return None;
    }
    let v = v.split_off(v.len().saturating_sub(n));
    let mut v = v;
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
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

// ---- the plain baseline -----------------------------------------------------------------------

/// An unencrypted session database with plain columns, as a bot's own session file would be.
struct Plain {
    conn: Connection,
    in_txn: bool,
    dirty_since: Option<Instant>,
}

const PLAIN_SCHEMA: &str = "
    CREATE TABLE peers (
        session INTEGER NOT NULL, kind INTEGER NOT NULL, id INTEGER NOT NULL,
        access_hash INTEGER, bot INTEGER, is_self INTEGER, channel_kind INTEGER,
        username TEXT, username_lc TEXT, phone TEXT, name TEXT,
        PRIMARY KEY (session, kind, id));
    CREATE INDEX peers_username ON peers (session, username_lc) WHERE username_lc IS NOT NULL;
    CREATE TABLE dc_options (
        session INTEGER NOT NULL, id INTEGER NOT NULL,
        ipv4 TEXT, ipv6 TEXT, auth_key BLOB, PRIMARY KEY (session, id));
    CREATE TABLE channel_state (
        session INTEGER NOT NULL, id INTEGER NOT NULL, pts INTEGER NOT NULL,
        PRIMARY KEY (session, id));";

fn kind_int(k: PeerKind) -> i64 {
    match k {
        PeerKind::User => 1,
        PeerKind::Chat => 2,
        PeerKind::Channel => 3,
    }
}

fn kind_of(i: i64) -> PeerKind {
    match i {
        2 => PeerKind::Chat,
        3 => PeerKind::Channel,
        _ => PeerKind::User,
    }
}

fn channel_kind_int(k: ChannelKind) -> i64 {
    match k {
        ChannelKind::Broadcast => 1,
        ChannelKind::Megagroup => 2,
        ChannelKind::Gigagroup => 3,
        ChannelKind::Community => 4,
    }
}

fn channel_kind_of(i: i64) -> ChannelKind {
    match i {
        1 => ChannelKind::Broadcast,
        3 => ChannelKind::Gigagroup,
        4 => ChannelKind::Community,
        _ => ChannelKind::Megagroup,
    }
}

fn plain_peer(r: &rusqlite::Row<'_>) -> rusqlite::Result<Peer> {
    Ok(Peer {
        kind: kind_of(r.get(0)?),
        id: r.get(1)?,
        access_hash: r.get(2)?,
        bot: r.get(3)?,
        is_self: r.get(4)?,
        channel_kind: r.get::<_, Option<i64>>(5)?.map(channel_kind_of),
        username: r.get(6)?,
        phone: r.get(7)?,
        name: r.get(8)?,
    })
}

/// The vault's normalization (lower case, no leading `@`), so both sides do the same work.
fn normalize_username(u: &str) -> String {
    u.trim_start_matches('@').to_lowercase()
}

impl Plain {
    fn open(path: &Path) -> Plain {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA secure_delete = ON;",
        )
        .unwrap();
        conn.execute_batch(PLAIN_SCHEMA).unwrap();
        conn.set_prepared_statement_cache_capacity(64);
        Plain {
            conn,
            in_txn: false,
            dirty_since: None,
        }
    }

    /// Runs `f` like the vault runs a cache-class write: inside one open transaction that is
    /// committed (fsynced) once it has been dirty for the flush interval.
    fn cache_write(&mut self, f: impl FnOnce(&Connection)) {
        if !self.in_txn {
            self.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            self.in_txn = true;
        }
        f(&self.conn);
        let since = *self.dirty_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= FLUSH {
            self.flush();
        }
    }

    /// Commits whatever `cache_write` left open.
    fn flush(&mut self) {
        if self.in_txn {
            self.conn.execute_batch("COMMIT").unwrap();
            self.in_txn = false;
            self.dirty_since = None;
        }
    }

    /// Upserts peers, merging like the vault (a known field wins, an unknown one is kept).
    fn upsert_peers(conn: &Connection, session: i64, peers: &[Peer]) {
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO peers (session, kind, id, access_hash, bot, is_self, channel_kind,
                                    username, username_lc, phone, name)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (session, kind, id) DO UPDATE SET
                    access_hash = coalesce(excluded.access_hash, access_hash),
                    bot = coalesce(excluded.bot, bot),
                    is_self = coalesce(excluded.is_self, is_self),
                    channel_kind = coalesce(excluded.channel_kind, channel_kind),
                    username = coalesce(excluded.username, username),
                    username_lc = coalesce(excluded.username_lc, username_lc),
                    phone = coalesce(excluded.phone, phone),
                    name = coalesce(excluded.name, name)",
            )
            .unwrap();
        for p in peers {
            stmt.execute(params![
                session,
                kind_int(p.kind),
                p.id,
                p.access_hash,
                p.bot,
                p.is_self,
                p.channel_kind.map(channel_kind_int),
                p.username,
                p.username.as_deref().map(normalize_username),
                p.phone,
                p.name,
            ])
            .unwrap();
        }
    }

    fn peer(&self, session: i64, key: PeerKey) -> Option<Peer> {
        self.conn
            .prepare_cached(
                "SELECT kind, id, access_hash, bot, is_self, channel_kind, username, phone, name
                 FROM peers WHERE session = ?1 AND kind = ?2 AND id = ?3",
            )
            .unwrap()
            .query_row(params![session, kind_int(key.kind), key.id], plain_peer)
            .optional()
            .unwrap()
    }

    fn peer_by_username(&self, session: i64, username: &str) -> Option<Peer> {
        let u = normalize_username(username);
        if u.is_empty() {
            return None;
        }
        self.conn
            .prepare_cached(
                "SELECT kind, id, access_hash, bot, is_self, channel_kind, username, phone, name
                 FROM peers WHERE session = ?1 AND username_lc = ?2",
            )
            .unwrap()
            .query_row(params![session, u], plain_peer)
            .optional()
            .unwrap()
    }

    fn set_dc_option(conn: &Connection, session: i64, dc: &DcOption) {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO dc_options (session, id, ipv4, ipv6, auth_key)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .unwrap()
        .execute(params![
            session,
            dc.id,
            dc.ipv4.map(|a| a.to_string()),
            dc.ipv6.map(|a| a.to_string()),
            dc.auth_key.as_ref().map(|k| &k.as_bytes()[..]),
        ])
        .unwrap();
    }

    fn set_channel_pts(conn: &Connection, session: i64, id: i64, pts: i32) {
        conn.prepare_cached("UPDATE channel_state SET pts = ?3 WHERE session = ?1 AND id = ?2")
            .unwrap()
            .execute(params![session, id, pts])
            .unwrap();
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

/// Where the time goes: the pieces of an encrypted operation, measured alone.
fn bench_breakdown(c: &mut Criterion, f: Fixture, dir: &Path, sizes: Sizes) {
    let Fixture {
        rt, vault, lookup, ..
    } = f;
    let mut g = group(c, sizes, "breakdown", Speed::Fast, 1);
    bench(&mut g, "breakdown", "channel_hop_status", |iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(vault.status().await.unwrap());
            }
            start.elapsed()
        })
    });
    bench(
        &mut g,
        "breakdown",
        "channel_hop_status_from_task",
        |iters| {
            let v = vault.clone();
            rt.block_on(async move {
                tokio::spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(v.status().await.unwrap());
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        },
    );
    let mut vault_id = [0u8; 16];
    fill_random(&mut vault_id).unwrap();
    let keys = Keys::derive(vault_id, SecretKey::random().unwrap());
    let key_bytes = [1u8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40];
    bench(&mut g, "breakdown", "hmac_blind_index", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(keys.blind("peers", 7, "key", black_box(&key_bytes)));
        }
        start.elapsed()
    });
    bench(&mut g, "breakdown", "os_rng_24_bytes", |iters| {
        let mut nonce = [0u8; 24];
        let start = Instant::now();
        for _ in 0..iters {
            fill_random(black_box(&mut nonce)).unwrap();
        }
        start.elapsed()
    });
    // A peer record's plaintext as the engine writes it (positional MessagePack).
    let record = rmp_serde::to_vec(&make_peer(123, 4)).unwrap();
    let row = keys.blind("peers", 7, "key", &key_bytes);
    let place = RecordPlace {
        table: "peers",
        session_id: 7,
        row: &row,
    };
    bench(&mut g, "breakdown", "aead_seal_peer", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(keys.seal(&place, black_box(&record)).unwrap());
        }
        start.elapsed()
    });
    let sealed = keys.seal(&place, &record).unwrap();
    bench(&mut g, "breakdown", "aead_open_peer", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(keys.open(&place, black_box(&sealed)).unwrap());
        }
        start.elapsed()
    });
    bench(&mut g, "breakdown", "msgpack_peer_roundtrip", |iters| {
        let p = make_peer(123, 4);
        let start = Instant::now();
        for _ in 0..iters {
            let bytes = rmp_serde::to_vec(black_box(&p)).unwrap();
            black_box(rmp_serde::from_slice::<Peer>(&bytes).unwrap());
        }
        start.elapsed()
    });
    g.finish();

    // The engine called directly on the same file, without the storage thread.
    rt.block_on(vault.close()).unwrap();
    // The storage thread lets go of the file (exclusive lock) just after `close` answers.
    let mut tries = 0;
    let store = loop {
        match SqliteStore::open(&dir.join("vault.db")) {
            Ok(s) => break s,
            Err(e) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
                let _ = e;
            }
            Err(e) => panic!("cannot reopen the vault: {e}"),
        }
    };
    let mut engine = Engine::new(store).unwrap();
    let (vid, slots) = engine.keyslots().unwrap();
    let dek = slots[0].open(&vid, PASS).unwrap();
    engine.install_keys(dek).unwrap();
    assert_eq!(engine.open_session("lookup").unwrap(), lookup);
    let order = lookup_order(sizes.lookup_peers, 1 << 16);
    let mut g = group(c, sizes, "engine_direct", Speed::Fast, 1);
    let mut pos = 0usize;
    bench(&mut g, "engine_direct", "peer_lookup_id", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            pos = (pos + 1) % order.len();
            let p = engine.peer(lookup, peer_key(order[pos])).unwrap();
            assert!(black_box(p).is_some());
        }
        start.elapsed()
    });
    let names: Vec<String> = order
        .iter()
        .map(|&i| format!("@user_{}", ID_BASE + i))
        .collect();
    bench(&mut g, "engine_direct", "peer_lookup_username", |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            pos = (pos + 1) % names.len();
            let p = engine.peer_by_username(lookup, &names[pos]).unwrap();
            assert!(black_box(p).is_some());
        }
        start.elapsed()
    });
    g.finish();

    let name = "engine_direct_upsert_100";
    let mut g = group(c, sizes, name, Speed::Fast, 100);
    let upsert = engine.open_session("upsert").unwrap();
    let mut generation = 1_000_000u64;
    let mut next = 0i64;
    let mut in_txn_since: Option<Instant> = None;
    bench(&mut g, name, "cache_peers", |iters| {
        let work: Vec<Vec<Peer>> = (0..iters)
            .map(|_| {
                generation += 1;
                let v = (0..100)
                    .map(|k| make_peer((next + k) % sizes.rotation, generation))
                    .collect();
                next = (next + 100) % sizes.rotation;
                v
            })
            .collect();
        let start = Instant::now();
        for peers in work {
            // What the storage thread does around a job, minus the channel.
            if in_txn_since.is_none() {
                engine.store().begin().unwrap();
                in_txn_since = Some(Instant::now());
            }
            engine.store().savepoint().unwrap();
            engine.cache_peers(upsert, &peers).unwrap();
            engine.store().release().unwrap();
            if in_txn_since.is_some_and(|s| s.elapsed() >= FLUSH) {
                engine.store().commit().unwrap();
                in_txn_since = None;
            }
        }
        start.elapsed()
    });
    g.finish();
    if in_txn_since.is_some() {
        engine.store().commit().unwrap();
    }
}

// ---- the summary table ------------------------------------------------------------------------

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.3}×")
    } else {
        format!("{r:.2}×")
    }
}

fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0} /s")
    }
}

/// (label, encrypted bench, plain bench at the same durability, plain autocommit bench,
/// operations per iteration).
type SummaryRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    f64,
);

fn print_summary(sizes: Sizes, populate: &[(String, f64, f64)]) {
    let m = median_ns;
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => fmt_ratio(a / b),
        _ => "–".into(),
    };
    let t = |x: Option<f64>| x.map(fmt_ns).unwrap_or_else(|| "–".into());
    let rate = |x: Option<f64>, n: f64| {
        x.map(|ns| fmt_rate(n * 1e9 / ns))
            .unwrap_or_else(|| "–".into())
    };

    println!();
    println!(
        "## Engine benchmark summary ({} mode, {} peers in the lookup session)",
        if sizes.quick { "QUICK" } else { "full" },
        sizes.lookup_peers
    );
    println!();
    println!("Medians of per-iteration time over criterion's samples; ratio = encrypted / plain.");
    println!();
    println!(
        "| operation | encrypted | plain, same durability | ratio | plain, autocommit (fsync per call) | ratio | encrypted peers/s (or ops/s) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rows: [SummaryRow; 8] = [
        (
            "peer upsert, 1 peer (`cache_peers`, cache class)",
            "peer_upsert_1/encrypted",
            Some("peer_upsert_1/plain_group_commit"),
            Some("peer_upsert_1_autocommit/plain"),
            1.0,
        ),
        (
            "peer upsert, batch of 100 (`cache_peers`, cache class)",
            "peer_upsert_100/encrypted",
            Some("peer_upsert_100/plain_group_commit"),
            Some("peer_upsert_100_autocommit/plain"),
            100.0,
        ),
        (
            "peer lookup by id",
            "peer_lookup_id/encrypted",
            Some("peer_lookup_id/plain"),
            None,
            1.0,
        ),
        (
            "peer lookup by id, caller is a runtime task (daemon's path)",
            "peer_lookup_id/encrypted_from_task",
            Some("peer_lookup_id/plain"),
            None,
            1.0,
        ),
        (
            "peer lookup by username",
            "peer_lookup_username/encrypted",
            Some("peer_lookup_username/plain"),
            None,
            1.0,
        ),
        (
            "DC option write, 256-byte key (durable)",
            "dc_option_write/encrypted",
            None,
            Some("dc_option_write/plain"),
            1.0,
        ),
        (
            "DC option write, 8 concurrent writers, per write (durable)",
            "dc_option_write_x8/encrypted",
            None,
            Some("dc_option_write_x8/plain"),
            8.0,
        ),
        (
            "update-state write, `Channel` (cache class)",
            "update_state_write/encrypted",
            Some("update_state_write/plain_group_commit"),
            Some("update_state_write_autocommit/plain"),
            1.0,
        ),
    ];
    for (label, enc, same, auto, n) in rows {
        let e = m(enc);
        if e.is_none() {
            continue;
        }
        let s = same.and_then(m);
        let a = auto.and_then(m);
        // Per-element times for the rows whose iteration holds several operations.
        let per = |x: Option<f64>| x.map(|v| v / n);
        let (e1, s1, a1) = (per(e), per(s), per(a));
        let shown = |x: Option<f64>| {
            if n > 1.0 && x.is_some() {
                format!("{} ({} each)", t(x.map(|v| v * n)), t(x))
            } else {
                t(x)
            }
        };
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            shown(e1),
            shown(s1),
            ratio(e1, s1),
            shown(a1),
            ratio(e1, a1),
            rate(e1, 1.0),
        );
    }
    println!();
    println!("| populate (one-off) | encrypted | plain | time ratio (encrypted / plain) |");
    println!("|---|---|---|---|");
    for (label, e, p) in populate {
        println!(
            "| {label} | {} | {} | {} |",
            fmt_rate(*e).replace("/s", " peers/s"),
            fmt_rate(*p).replace("/s", " peers/s"),
            fmt_ratio(p / e)
        );
    }
    println!();
    println!("| breakdown (encrypted pieces) | median |");
    println!("|---|---|");
    for (label, key) in [
        (
            "`Vault::status` (no SQL; inline: no storage-thread hop)",
            "breakdown/channel_hop_status",
        ),
        (
            "`Vault::status` from a runtime task (inline)",
            "breakdown/channel_hop_status_from_task",
        ),
        (
            "HMAC-SHA256 blind index (16 B out)",
            "breakdown/hmac_blind_index",
        ),
        ("OS RNG, 24-byte nonce", "breakdown/os_rng_24_bytes"),
        (
            "AEAD seal, peer record (incl. nonce)",
            "breakdown/aead_seal_peer",
        ),
        ("AEAD open, peer record", "breakdown/aead_open_peer"),
        (
            "MessagePack encode + decode, peer",
            "breakdown/msgpack_peer_roundtrip",
        ),
        (
            "engine direct: lookup by id (no storage thread)",
            "engine_direct/peer_lookup_id",
        ),
        (
            "engine direct: lookup by username (no storage thread)",
            "engine_direct/peer_lookup_username",
        ),
        (
            "engine direct: cache_peers ×100, per call",
            "engine_direct_upsert_100/cache_peers",
        ),
    ] {
        if let Some(v) = m(key) {
            let extra = if key.contains("upsert_100") {
                format!(" ({})", fmt_rate(100.0 * 1e9 / v).replace("/s", " peers/s"))
            } else {
                String::new()
            };
            println!("| {label} | {}{extra} |", fmt_ns(v));
        }
    }
    println!();
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
