//! Crash harness: SIGKILL at random moments of a stream of acknowledged writes.
//!
//! A writer process (the test binary re-executed, [`writer`]) streams through `VaultSession`
//! a mix of durable writes (DC options whose auth keys derive from a counter, the home DC,
//! session create and delete) and cache-class writes (peers, update state), printing each
//! acknowledgment with its send and answer times. The harness:
//!
//! - [`sigkill_of_vaultd_loses_no_acknowledged_write`]: kills `vaultd` with SIGKILL at
//!   seeded random moments while the writer runs (20–200 ms of writing after the writer
//!   resumed), restarts it, unlocks, and checks the [`model`]: every acknowledged durable
//!   write is there, cache-class writes acknowledged more than one flush interval (plus
//!   margin) before the kill are there, every session exports (nothing `Corrupt`);
//! - [`sigkill_of_the_writer_loses_no_acknowledged_write`]: kills the writer instead, starts
//!   a new one (which must get the leases back), and checks the same with nothing allowed
//!   lost (the daemon lives), then restarts the daemon once more and checks again.
//!
//! 50 daemon kill points and 20 writer kill points per run; 2,000 and 200 with
//! `SESSION_VAULT_LONG=1`. The engine-level crash test (`daemon/src/vault/tests/crash.rs`)
//! kills a process running the engine in-process; this one kills the real daemon under a
//! real client, reconnects and retries included.

mod model;
mod writer;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use grammers_session::types::{DcOption as GDcOption, PeerAuth, PeerInfo};
use session_vault_client::Connection;
use session_vault_proto::message::{Request, Response};

use super::{Rng, figure, long, mono_ns};
use crate::util::{Daemon, Env};
use model::{Ack, Line, Model, Snapshot};

/// Streams (one session each) in the writer.
pub const TASKS: u32 = 4;
/// Distinct peer ids per stream: values are overwritten, so exports stay small.
const PEER_IDS: u64 = 64;
/// The daemon's flush interval in these tests.
const FLUSH_MS: u64 = 20;
/// Slack on top of the flush interval before a cache-class write is owed across a kill:
/// the commit's own fsync and scheduling on a loaded 2-core machine.
const MARGIN_MS: u64 = 80;
const MARK: &str = "SVREL ";
const SOCKET_VAR: &str = "SV_RELIABILITY_CRASH_SOCKET";
const BASE_VAR: &str = "SV_RELIABILITY_CRASH_BASE";
/// A cache-class write lost although acknowledged this long before the kill fails the test
/// even in a model that tolerates late flushes.
const HARD_MS: u64 = 3_000;
/// Longest wait for a writer line before the test fails.
const LINE_LIMIT: Duration = Duration::from_secs(60);

// ---- the workload: every value derives from (stream, counter) --------------------------------

/// What counter `n` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A DC option with its auth key (durable).
    Dc,
    /// The home DC, set to `n` (durable).
    Home,
    /// A peer whose access hash is `n` (cache class).
    Peer,
    /// The update state, pts = date = seq = `n` (cache class).
    State,
}

impl Op {
    fn letter(self) -> char {
        match self {
            Op::Dc => 'D',
            Op::Home => 'H',
            Op::Peer => 'P',
            Op::State => 'S',
        }
    }
}

/// The operation of counter `n`.
pub fn op_of(n: u64) -> Op {
    match n % 4 {
        0 => Op::Dc,
        1 => Op::Home,
        2 => Op::Peer,
        _ => Op::State,
    }
}

/// The DC id a DC write of counter `n` sets.
pub fn dc_of(n: u64) -> i32 {
    1 + (n / 4 % 5) as i32
}

/// The peer id a peer write of counter `n` sets.
pub fn peer_of(n: u64) -> i64 {
    1 + (n / 4 % PEER_IDS) as i64
}

/// The session of stream `task`.
pub fn session_name(task: u32) -> String {
    format!("w{task}")
}

/// The auth key of stream `task`'s DC write `n`: the stream and counter, then a keyed stream.
pub fn key_bytes(task: u32, n: u64) -> [u8; 256] {
    let mut k = [0u8; 256];
    k[..8].copy_from_slice(&n.to_le_bytes());
    k[8..12].copy_from_slice(&task.to_le_bytes());
    let mut r = Rng::new(n ^ (u64::from(task) << 48) ^ 0x5e55_1011);
    for chunk in k[12..].chunks_mut(8) {
        let v = r.next_u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    k
}

/// The stream and counter a key names.
pub fn split_key(k: &[u8; 256]) -> (u32, u64) {
    let n = u64::from_le_bytes(k[..8].try_into().expect("8 bytes"));
    let task = u32::from_le_bytes(k[8..12].try_into().expect("4 bytes"));
    (task, n)
}

/// The IPv4 address a DC write of counter `n` sets.
pub fn expected_ipv4(n: u64) -> SocketAddrV4 {
    let b = (n as u32).to_be_bytes();
    SocketAddrV4::new(Ipv4Addr::new(10, b[1], b[2], b[3]), 443)
}

fn grammers_dc_option(task: u32, n: u64) -> GDcOption {
    GDcOption {
        id: dc_of(n),
        ipv4: expected_ipv4(n),
        ipv6: SocketAddrV6::new(Ipv6Addr::LOCALHOST, 443, 0, 0),
        auth_key: Some(key_bytes(task, n)),
    }
}

fn grammers_peer(n: u64) -> PeerInfo {
    PeerInfo::User {
        id: peer_of(n),
        auth: Some(PeerAuth::from_hash(n as i64)),
        bot: Some(false),
        is_self: Some(false),
    }
}

// ---- the writer process, seen from the harness ------------------------------------------------

/// A running writer; killed on drop.
struct Writer {
    child: Child,
    lines: mpsc::Receiver<Line>,
}

impl Writer {
    fn spawn(env: &Env, base: u64) -> Writer {
        let me = std::env::current_exe().expect("path of the test binary");
        let mut child = Command::new(me)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(SOCKET_VAR, env.socket())
            .env(BASE_VAR, base.to_string())
            .args([
                "--exact",
                "reliability::crash::writer::writer_entry",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
                "--quiet",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(rest) = line.strip_prefix(MARK) else {
                    continue;
                };
                let parsed = parse(rest).unwrap_or_else(|| panic!("writer said {rest:?}"));
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        Writer { child, lines }
    }

    /// Feeds every line the writer printed so far to `model`.
    fn drain(&self, model: &mut Model) {
        while let Ok(l) = self.lines.try_recv() {
            model.absorb(l);
        }
    }

    /// Feeds lines to `model` until one satisfies `want`.
    fn wait_for(&self, model: &mut Model, what: &str, mut want: impl FnMut(&Line) -> bool) {
        let deadline = Instant::now() + LINE_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("writer: no {what} within {LINE_LIMIT:?}: {e}"));
            let done = want(&l);
            model.absorb(l);
            if done {
                return;
            }
        }
    }

    /// SIGKILL, reap, and feed everything it printed to `model`.
    fn kill(mut self, model: &mut Model) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends at EOF, dropping the sender.
        while let Ok(l) = self.lines.recv_timeout(LINE_LIMIT) {
            model.absorb(l);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(line: &str) -> Option<Line> {
    let f: Vec<&str> = line.split(' ').collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(match f[0] {
        "open" => Line::Open(num(1)? as u32),
        "error" => Line::Error,
        "send" => Line::DeleteSent(num(2)?),
        "ack" => match *f.get(1)? {
            "C" => Line::Created(num(3)?),
            "X" => Line::Deleted(num(3)?),
            _ => Line::Ack(Ack {
                task: num(2)? as u32,
                n: num(3)?,
                t0: num(4)?,
                t1: num(5)?,
            }),
        },
        _ => return None,
    })
}

// ---- the harness ------------------------------------------------------------------------------

fn flags() -> [&'static str; 2] {
    ["--flush-interval-ms", "20"]
}

fn window_ns() -> u64 {
    (FLUSH_MS + MARGIN_MS) * 1_000_000
}

/// Checks the live daemon behind `c` against `model`; `writer`, if running, goes on writing
/// meanwhile. Returns the number of sessions exported.
async fn check(
    model: &mut Model,
    writer: Option<&Writer>,
    c: &Connection,
    when: &str,
    logs: &[String],
) -> usize {
    if let Some(w) = writer {
        w.drain(model);
    }
    let snap = Snapshot::take(c)
        .await
        .unwrap_or_else(|e| panic!("{when}: {e}"));
    let late: Vec<Line> = writer.map_or_else(Vec::new, |w| w.lines.try_iter().collect());
    match model.check(&snap, &late) {
        Ok(late_flushes) => model.forgive(late_flushes),
        Err(e) => {
            // What the last daemons complained about, if anything.
            let said: Vec<&str> = logs
                .iter()
                .flat_map(|l| l.lines())
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            panic!("{when}: {e} (losses: 1; see the seed above); daemon warnings: {said:#?}");
        }
    }
    for l in late {
        model.absorb(l);
    }
    snap.sessions()
}

/// A fresh env with an initialized daemon (flush interval [`FLUSH_MS`]).
async fn setup() -> (Env, Daemon) {
    let env = Env::new();
    let (d, _c) = env.start_initialized(&flags()).await;
    (env, d)
}

/// SIGKILLs the daemon and tells the model; keeps its log in `logs` (the last two).
fn kill_daemon(d: Daemon, model: &mut Model, logs: &mut Vec<String>) {
    let k1 = mono_ns();
    let log = d.log();
    d.kill();
    let k2 = mono_ns();
    model.killed(k1, k2);
    logs.push(log);
    if logs.len() > 2 {
        logs.remove(0);
    }
}

fn print_counts(test: &str, model: &Model, kills: usize, took: Duration) {
    let c = model.counts;
    figure(
        test,
        &format!(
            "{kills} kill points survived in {took:.1?}; {} durable and {} cache-class writes \
             acknowledged, {} in flight at a kill; {} cache-class writes owed across a kill \
             and checked, {} inside a kill's loss window (flush {FLUSH_MS} ms + {MARGIN_MS} ms, \
             allowed lost); {} sessions created, {} deleted; {} write errors retried; losses: 0; \
             late flushes (owed cache-class writes lost, acknowledged {FLUSH_MS} + {MARGIN_MS} ms \
             to {HARD_MS} ms before the kill): {} (oldest {} ms)",
            c.durable,
            c.cache,
            c.in_flight_at_kill,
            c.cache_owed_across_kill,
            c.cache_in_window,
            c.created,
            c.deleted,
            c.errors,
            c.late_flush,
            c.late_flush_max_ms,
        ),
    );
}

/// SIGKILLs `vaultd` `kills` times under the writer and checks every time; a late flush fails
/// the test too.
async fn daemon_kills(test: &str, kills: usize) {
    let mut rng = Rng::from_env(test);
    let started = Instant::now();
    let (env, mut d) = setup().await;
    let mut model = Model::new(window_ns(), HARD_MS * 1_000_000, true);
    let mut logs = Vec::new();
    let writer = Writer::spawn(&env, 1);
    writer.wait_for(&mut model, "open", |l| matches!(l, Line::Open(_)));
    let mut sessions = 0;
    for i in 0..kills {
        // Write for a while after the writer resumed, then kill at once.
        let resumed = mono_ns();
        writer.wait_for(
            &mut model,
            "acknowledgment after the restart",
            |l| matches!(l, Line::Ack(a) if a.t0 > resumed),
        );
        tokio::time::sleep(Duration::from_millis(rng.range(20, 200))).await;
        kill_daemon(d, &mut model, &mut logs);
        writer.drain(&mut model);
        d = env.start_with(&flags());
        let c = env.connect_unlocked().await;
        let when = format!("after kill {i}");
        sessions = check(&mut model, Some(&writer), &c, &when, &logs).await;
    }
    // Finally: stop the writer, let a few flush intervals pass, and kill once more: every
    // acknowledged write (cache class included) must survive.
    writer.kill(&mut model);
    tokio::time::sleep(Duration::from_millis(5 * (FLUSH_MS + MARGIN_MS))).await;
    kill_daemon(d, &mut model, &mut logs);
    let _d = env.start_with(&flags());
    let c = env.connect_unlocked().await;
    check(&mut model, None, &c, "after the final kill", &logs).await;
    print_counts(test, &model, kills + 1, started.elapsed());
    figure(test, &format!("{sessions} sessions exported at each check"));
    assert_eq!(model.counts.errors, 0, "writes failed (and were retried)");
    assert!(
        model.counts.cache_owed_across_kill > 0,
        "no cache write checked"
    );
    assert!(
        model.counts.durable > kills as u64,
        "too few durable writes"
    );
}

/// Every acknowledged durable write survives, and so does every cache-class write acknowledged
/// more than the flush interval plus [`MARGIN_MS`] before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_vaultd_loses_no_acknowledged_write() {
    daemon_kills("crash/vaultd", if long() { 2000 } else { 50 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_writer_loses_no_acknowledged_write() {
    const TEST: &str = "crash/writer";
    let kills = if long() { 200 } else { 20 };
    let mut rng = Rng::from_env(TEST);
    let started = Instant::now();
    let (env, d) = setup().await;
    let c = env.connect_unlocked().await;
    let mut model = Model::new(window_ns(), HARD_MS * 1_000_000, true);
    let mut logs = Vec::new();
    let mut lease_waits = Vec::new();
    for i in 0..kills {
        let base = model.max_n + 1_000;
        let t = Instant::now();
        let writer = Writer::spawn(&env, base);
        // All streams open: the killed writer's leases were given back.
        let mut open = 0;
        writer.wait_for(&mut model, "open", |l| {
            open += u32::from(matches!(l, Line::Open(_)));
            open == TASKS
        });
        lease_waits.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(rng.range(20, 100))).await;
        writer.kill(&mut model);
        // The daemon lives: nothing acknowledged may be missing.
        check(&mut model, None, &c, &format!("after writer kill {i}"), &[]).await;
    }
    // And all of it on disk: kill the daemon well after the last write, restart, check.
    tokio::time::sleep(Duration::from_millis(5 * (FLUSH_MS + MARGIN_MS))).await;
    kill_daemon(d, &mut model, &mut logs);
    let _d = env.start_with(&flags());
    let c = env.connect_unlocked().await;
    check(&mut model, None, &c, "after the daemon restart", &logs).await;
    print_counts(TEST, &model, kills, started.elapsed());
    lease_waits.sort();
    figure(
        TEST,
        &format!(
            "a new writer had all {TASKS} leases back within {:?} (median {:?}) of its start",
            lease_waits.last().expect("at least one kill"),
            lease_waits[lease_waits.len() / 2]
        ),
    );
    assert_eq!(model.counts.errors, 0, "writes failed (and were retried)");
    assert!(model.counts.cache > 0 && model.counts.durable > 0);
}

/// Cache-class writers running flat out: connections (a session each), and tasks on each.
const FLOOD_WRITERS: u32 = 4;
const FLOOD_TASKS: u32 = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flush_interval_holds_under_a_steady_stream_of_writes() {
    use session_vault_proto::model::{Peer, PeerKind};
    use std::sync::atomic::{AtomicBool, Ordering};

    let (env, d) = setup().await;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for w in 0..FLOOD_WRITERS {
        let c = env.connect().await;
        let h = crate::util::open_session(&c, &format!("flood{w}"), true).await;
        for k in 0..FLOOD_TASKS {
            let stop = std::sync::Arc::clone(&stop);
            let c = c.clone();
            flood.push(tokio::spawn(async move {
                let mut n = i64::from(k) << 32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let mut p = Peer::new(PeerKind::User, 1 + n % 100);
                    p.access_hash = Some(n);
                    let r = c
                        .call(Request::CachePeers {
                            handle: h,
                            peers: vec![p].into(),
                        })
                        .await;
                    if r.is_err() {
                        // The daemon was killed.
                        break;
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The probe: one cache-class write, then one durable write, timed.
    let c = env.connect().await;
    let h = crate::util::open_session(&c, "probe", true).await;
    let mut marker = Peer::new(PeerKind::User, 424242);
    marker.access_hash = Some(7);
    let r = c
        .call(Request::CachePeers {
            handle: h,
            peers: vec![marker].into(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let t = Instant::now();
    let r = c
        .call(Request::SetHomeDc {
            handle: h,
            dc_id: 4,
        })
        .await;
    let durable = t.elapsed();
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    // Twenty-five flush intervals later (the durable write's commit aside), kill.
    let mut marker2 = Peer::new(PeerKind::User, 434343);
    marker2.access_hash = Some(8);
    let r = c
        .call(Request::CachePeers {
            handle: h,
            peers: vec![marker2].into(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    tokio::time::sleep(Duration::from_millis(25 * FLUSH_MS)).await;
    let mut logs = Vec::new();
    let mut model = Model::new(window_ns(), 0, true);
    stop.store(true, Ordering::Relaxed);
    kill_daemon(d, &mut model, &mut logs);
    for f in flood {
        let _ = f.await;
    }
    let _d = env.start_with(&flags());
    let c = env.connect_unlocked().await;
    let r = c
        .call(Request::ExportSession {
            name: "probe".into(),
        })
        .await;
    let Ok(Response::SessionData(data)) = r else {
        panic!("export: {r:?}")
    };
    let kept = data.peers.iter().any(|p| p.id == 434343);
    assert!(
        kept && durable < Duration::from_millis(500),
        "under {} flat-out cache writers: a cache-class write acknowledged \
         {} ms before the SIGKILL was {}; a durable write took {durable:?}",
        FLOOD_WRITERS * FLOOD_TASKS,
        25 * FLUSH_MS,
        if kept { "kept" } else { "lost" }
    );
}
