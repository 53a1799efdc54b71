//! Crash consistency with a real SIGKILL.
//!
//! The parent test re-executes this test binary (`current_exe()`, run through libtest with
//! `--exact <path of child_entry> --ignored`) as a child process that opens the vault and
//! streams writes from several concurrent tasks, so that the storage thread group-commits
//! them. Before each request the child prints `SEND <stream> <value>`, after its answer
//! `ACK <stream> <value>` (each flushed). The parent kills the child with SIGKILL after a
//! random number of acknowledgments, reopens the vault and checks:
//! - every acknowledged durable write is there (sessions, DC options with their auth keys,
//!   home DC, whole imported sessions), across all rounds so far;
//! - a write that was sent but not acknowledged is either wholly there or wholly absent;
//! - nothing that was never sent is there, every session exports (nothing `Corrupt`);
//! - cache-class writes that survived form a prefix of the order they were sent in.
//!
//! A second test kills the child after it went idle for a few flush intervals: every
//! acknowledged cache-class write must then be on disk.
//!
//! The child entry is `#[ignore]`d and does nothing without its environment variables, so
//! `cargo test -- --ignored` by hand is harmless. Works under libtest and nextest alike
//! (both run the same libtest harness in the test binary).

use crate::vault::IfExists;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use session_vault_proto::model::{DcOption, Peer, PeerKind, SessionAcl, UpdateStateChange};

use super::support::*;
use crate::vault::{SessionId, Vault};

const PATH_ENV: &str = "SESSION_VAULT_TEST_CRASH_DB";
const MODE_ENV: &str = "SESSION_VAULT_TEST_CRASH_MODE";
const ROUND_ENV: &str = "SESSION_VAULT_TEST_CRASH_ROUND";
/// Marks the child's protocol lines (libtest may print on the same line before them).
const MARK: &str = "@@crash ";
/// The child's flush interval.
const CHILD_FLUSH_MS: u64 = 50;
/// How long the child keeps writing if nobody kills it.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);

/// The value of a DC option's auth key, derived from its id.
fn dc_key_seed(n: u64) -> u64 {
    0xdc00_0000 ^ n
}

/// Base id of the peers the cache stream writes in `round`.
fn cache_peer_id(round: u64, n: u64) -> i64 {
    5_000_000_000 + (round * 1_000_000 + n) as i64
}

/// The seed of the `i`th imported session of a round.
fn import_seed(i: u64) -> u8 {
    (i % 200) as u8 + 1
}

// ---- child ----------------------------------------------------------------------------------

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A failed write means the parent is gone: stop at once.
    writeln!(out, "{MARK}{line}").expect("parent gone");
    out.flush().expect("parent gone");
}

#[tokio::test]
#[ignore = "child process of the crash tests; started by them, does nothing on its own"]
async fn child_entry() {
    let Ok(path) = std::env::var(PATH_ENV) else {
        return;
    };
    let mode = std::env::var(MODE_ENV).expect("mode");
    let round: u64 = std::env::var(ROUND_ENV)
        .expect("round")
        .parse()
        .expect("round number");
    let vault = open_path(Path::new(&path), flush_every(CHILD_FLUSH_MS)).expect("child: open");
    vault.unlock(PASS).await.expect("child: unlock");
    let main = vault.open_session("main").await.expect("main session");
    let home = vault.open_session("home").await.expect("home session");
    say("READY");
    let deadline = Instant::now() + CHILD_LIFETIME;
    match mode.as_str() {
        "durable" => {
            tokio::join!(
                sessions_stream(&vault, round, deadline),
                dc_stream(&vault, main, round, deadline),
                home_stream(&vault, home, round, deadline),
                import_stream(&vault, round, deadline),
                cache_stream(&vault, main, round, 0, deadline),
            );
        }
        "cache" => {
            for n in 0..20 {
                cache_one(&vault, main, round, n).await;
            }
            // Idle for ten flush intervals (room for a slow fsync): the timer alone must
            // commit.
            tokio::time::sleep(Duration::from_millis(10 * CHILD_FLUSH_MS)).await;
            say("FLUSHED 20");
            cache_stream(&vault, main, round, 20, deadline).await;
        }
        other => panic!("unknown crash mode {other}"),
    }
}

async fn sessions_stream(vault: &Vault, round: u64, deadline: Instant) {
    for i in 0.. {
        if Instant::now() > deadline {
            break;
        }
        let name = format!("r{round}-s{i}");
        say(&format!("SEND session {name}"));
        vault
            .create_session(&name, SessionAcl::default())
            .await
            .expect("create");
        say(&format!("ACK session {name}"));
    }
}

/// DC ids the stream writes, again and again (a session keeps at most 64 DC options).
const DC_SLOTS: u64 = 40;

/// The DC option the stream's write `n` (unique across rounds) sets: id `100 + n % DC_SLOTS`,
/// `n` in its IPv6 address, an auth key derived from `n`.
fn dc_write(n: u64) -> DcOption {
    DcOption {
        id: (100 + n % DC_SLOTS) as i32,
        ipv4: Some("10.0.0.1:443".parse().unwrap()),
        ipv6: Some(std::net::SocketAddrV6::new(u128::from(n).into(), 443, 0, 0)),
        auth_key: Some(auth_key(dc_key_seed(n))),
    }
}

async fn dc_stream(vault: &Vault, main: SessionId, round: u64, deadline: Instant) {
    for i in 0.. {
        if Instant::now() > deadline {
            break;
        }
        let n = round * 1_000_000 + i;
        say(&format!("SEND dc {n}"));
        vault
            .set_dc_option(main, dc_write(n))
            .await
            .expect("set dc");
        say(&format!("ACK dc {n}"));
    }
}

async fn home_stream(vault: &Vault, home: SessionId, round: u64, deadline: Instant) {
    for i in 0.. {
        if Instant::now() > deadline {
            break;
        }
        // Above grammers' default home DC (2) and growing across rounds: newest is largest.
        let v = (round * 10_000 + 10 + i) as i32;
        say(&format!("SEND home {v}"));
        vault.set_home_dc(home, v).await.expect("set home");
        say(&format!("ACK home {v}"));
    }
}

async fn import_stream(vault: &Vault, round: u64, deadline: Instant) {
    for i in 0.. {
        if Instant::now() > deadline {
            break;
        }
        let name = format!("r{round}-i{i}");
        say(&format!("SEND import {name} {}", import_seed(i)));
        vault
            .import(
                &name,
                full_session(import_seed(i)),
                IfExists::Refuse,
                SessionAcl::default(),
            )
            .await
            .expect("import");
        say(&format!("ACK import {name} {}", import_seed(i)));
    }
}

async fn cache_one(vault: &Vault, main: SessionId, round: u64, n: u64) {
    let mut p = Peer::new(PeerKind::User, cache_peer_id(round, n));
    p.access_hash = Some(n as i64);
    say(&format!("SEND cache {n}"));
    vault.cache_peers(main, vec![p]).await.expect("cache");
    vault
        .set_update_state(
            main,
            UpdateStateChange::Channel {
                id: 1 + (n % 5) as i64,
                pts: n as i32,
            },
        )
        .await
        .expect("update state");
    say(&format!("ACK cache {n}"));
}

async fn cache_stream(vault: &Vault, main: SessionId, round: u64, from: u64, deadline: Instant) {
    for n in from.. {
        if Instant::now() > deadline {
            break;
        }
        cache_one(vault, main, round, n).await;
    }
}

// ---- parent ---------------------------------------------------------------------------------

/// The child process; killed on drop if a check fails first.
struct ChildProc {
    proc: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ChildProc {
    fn spawn(db: &Path, mode: &str, round: u64) -> ChildProc {
        let module = module_path!();
        let (_, in_crate) = module.split_once("::").expect("module path has a crate");
        let test = format!("{in_crate}::child_entry");
        let mut proc = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                &test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PATH_ENV, db)
            .env(MODE_ENV, mode)
            .env(ROUND_ENV, round.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child test process");
        let stdout = proc.stdout.take().expect("piped stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(MARK) {
                    if tx.send(line[at + MARK.len()..].to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        ChildProc { proc, lines }
    }

    /// The next protocol line; `None` once the child's stdout closed.
    async fn next(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(15), self.lines.recv())
            .await
            .expect("the child printed nothing for 15 s")
    }

    /// SIGKILL, reap, and return every line the child printed before it died.
    async fn kill(mut self) -> Vec<String> {
        self.proc.kill().expect("SIGKILL the child");
        self.proc.wait().expect("reap the child");
        let mut rest = Vec::new();
        while let Some(line) = self.next().await {
            rest.push(line);
        }
        rest
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// What the children said, over all rounds.
#[derive(Default)]
struct Log {
    sent: BTreeMap<String, BTreeSet<String>>,
    acked: BTreeMap<String, BTreeSet<String>>,
    /// Per stream, the last value sent and whether it was acknowledged.
    last: BTreeMap<String, (String, bool)>,
    acks: usize,
}

impl Log {
    fn record(&mut self, line: &str) {
        let mut parts = line.splitn(3, ' ');
        let (kind, stream, value) = match (parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(s), Some(v)) => (k, s.to_owned(), v.to_owned()),
            _ => return,
        };
        match kind {
            "SEND" => {
                self.sent
                    .entry(stream.clone())
                    .or_default()
                    .insert(value.clone());
                self.last.insert(stream, (value, false));
            }
            "ACK" => {
                self.acks += 1;
                self.acked
                    .entry(stream.clone())
                    .or_default()
                    .insert(value.clone());
                self.last.insert(stream, (value, true));
            }
            _ => {}
        }
    }

    fn acked(&self, stream: &str) -> impl Iterator<Item = &String> {
        self.acked.get(stream).into_iter().flatten()
    }

    fn was_sent(&self, stream: &str, value: &str) -> bool {
        self.sent.get(stream).is_some_and(|s| s.contains(value))
    }
}

/// A vault with the two sessions the child writes to, closed.
async fn prepare(t: &TestDir) {
    let vault = create(t).await;
    for name in ["main", "home"] {
        vault
            .create_session(name, SessionAcl::default())
            .await
            .unwrap();
    }
    close(vault).await;
}

/// Reopens the vault after a kill and checks everything `log` says about it. Returns the
/// home DC found (the next round's baseline).
async fn verify(db: &Path, log: &Log, home_before: i32, ctx: &str) -> i32 {
    let vault = open_path(db, flush_every(CHILD_FLUSH_MS)).expect("reopen after SIGKILL");
    vault.unlock(PASS).await.expect("unlock after SIGKILL");
    let main = vault.open_session("main").await.unwrap();
    let home = vault.open_session("home").await.unwrap();

    // Sessions: every acknowledged one exists; none that was never sent does.
    let listed = vault.list_sessions().await.expect("list after SIGKILL");
    let names: BTreeSet<String> = listed.iter().map(|s| s.name.clone()).collect();
    for name in log.acked("session") {
        assert!(
            names.contains(name),
            "{ctx}: acknowledged session {name} lost"
        );
    }
    for name in &names {
        let known = ["main", "home"].contains(&name.as_str())
            || log.was_sent("session", name)
            || log
                .sent
                .get("import")
                .is_some_and(|s| s.iter().any(|v| v.split(' ').next() == Some(name)));
        assert!(known, "{ctx}: session {name} was never created");
        // Nothing corrupt anywhere.
        let sid = vault.open_session(name).await.unwrap();
        let r = vault.export(sid).await;
        assert!(r.is_ok(), "{ctx}: export of {name}: {}", outcome(&r));
    }

    // Imports: acknowledged ones are there whole; an unacknowledged one is whole or absent.
    for value in log.sent.get("import").into_iter().flatten() {
        let (name, seed) = value.split_once(' ').expect("import value");
        let seed: u8 = seed.parse().unwrap();
        let acked = log.acked("import").any(|v| v == value);
        match vault.open_session(name).await {
            Ok(sid) => {
                let got = vault.export(sid).await.unwrap();
                assert_same(
                    &normalized(got),
                    &normalized(full_session(seed)),
                    &format!("{ctx}: imported session {name}"),
                );
            }
            Err(e) => assert!(!acked, "{ctx}: acknowledged import {name} lost: {e:?}"),
        }
    }

    // DC options: each id holds a write that was sent, whole (its own auth key), and none
    // older than the last acknowledged write of that id.
    let dcs = vault.dc_options(main).await.expect("dc options");
    let mut last_acked = std::collections::HashMap::new();
    for n in log.acked("dc") {
        let n: u64 = n.parse().unwrap();
        let id = dc_write(n).id;
        let last = last_acked.entry(id).or_insert(n);
        *last = (*last).max(n);
    }
    for (id, acked) in &last_acked {
        let dc = dcs.iter().find(|d| d.id == *id);
        assert!(dc.is_some(), "{ctx}: acknowledged dc {id} lost");
        let n = dc.unwrap().ipv6.map_or(0, |a| u128::from(*a.ip()) as u64);
        assert!(
            n >= *acked,
            "{ctx}: dc {id} holds write {n}, older than acknowledged {acked}"
        );
    }
    for dc in dcs.iter().filter(|d| d.id >= 100) {
        let n = dc.ipv6.map_or(0, |a| u128::from(*a.ip()) as u64);
        assert!(
            log.was_sent("dc", &n.to_string()),
            "{ctx}: dc {} holds write {n}, never sent",
            dc.id
        );
        assert_eq!(
            dc,
            &dc_write(n),
            "{ctx}: dc {} is not write {n} whole",
            dc.id
        );
    }

    // Home DC: the last acknowledged value, or the one in flight when the child died.
    let found = vault.session_record(home).await.unwrap().home_dc;
    let mut allowed = vec![home_before];
    if let Some((v, acked)) = log.last.get("home") {
        let v: i32 = v.parse().unwrap();
        if *acked {
            allowed = vec![v];
        } else {
            // The newest value known on disk before it: this round's last acknowledged one,
            // else what the previous verification found.
            let previous = log
                .acked("home")
                .map(|v| v.parse::<i32>().unwrap())
                .filter(|&x| x < v)
                .max()
                .unwrap_or(home_before)
                .max(home_before);
            allowed = vec![previous, v];
        }
    }
    assert!(
        allowed.contains(&found),
        "{ctx}: home dc {found}, expected one of {allowed:?}"
    );

    // Cache class: what survived is a prefix of what was sent, per round.
    let peers = vault.export(main).await.unwrap().peers;
    let mut by_round: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for p in &peers {
        let off = (p.id - 5_000_000_000) as u64;
        by_round
            .entry(off / 1_000_000)
            .or_default()
            .insert(off % 1_000_000);
    }
    for (round, ns) in &by_round {
        let max = *ns.iter().max().unwrap();
        assert_eq!(
            ns.len() as u64,
            max + 1,
            "{ctx}: cache writes of round {round} survived with holes"
        );
    }
    close(vault).await;
    found
}

/// A seed that differs from run to run (printed on failure, to replay a run).
fn run_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (std::process::id() as u64) << 32
}

#[tokio::test]
async fn acknowledged_durable_writes_survive_sigkill() {
    let t = TestDir::new();
    prepare(&t).await;
    let db: PathBuf = t.db();
    let seed = run_seed();
    let mut rng = Rng(seed);
    let mut log = Log::default();
    let mut home = 2; // grammers' default home DC
    for round in 0..5u64 {
        let ctx = format!("seed {seed:#x}, round {round}");
        let mut child = ChildProc::spawn(&db, "durable", round);
        assert_eq!(child.next().await.as_deref(), Some("READY"), "{ctx}");
        let target = log.acks + 5 + rng.below(70) as usize;
        while log.acks < target {
            match child.next().await {
                Some(line) => log.record(&line),
                None => panic!("{ctx}: the child exited early"),
            }
        }
        // Sometimes kill at once (mid-request), sometimes a moment later (mid-commit).
        let pause = rng.below(4);
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        for line in child.kill().await {
            log.record(&line);
        }
        home = verify(&db, &log, home, &ctx).await;
    }
    assert!(log.acked("session").count() > 0 && log.acked("dc").count() > 0);
}

#[tokio::test]
async fn cache_writes_survive_sigkill_after_the_flush_interval() {
    let t = TestDir::new();
    prepare(&t).await;
    let db: PathBuf = t.db();
    let seed = run_seed();
    let mut rng = Rng(seed);
    let mut log = Log::default();
    let mut home = 2;
    for round in 0..2u64 {
        let ctx = format!("seed {seed:#x}, round {round}");
        let mut child = ChildProc::spawn(&db, "cache", round);
        assert_eq!(child.next().await.as_deref(), Some("READY"), "{ctx}");
        loop {
            let line = child.next().await.expect("the child exited early");
            if line.starts_with("FLUSHED") {
                break;
            }
            log.record(&line);
        }
        // Then a few more unflushed writes, killed at a random point.
        let target = log.acks + rng.below(10) as usize;
        while log.acks < target {
            let line = child.next().await.expect("the child exited early");
            log.record(&line);
        }
        for line in child.kill().await {
            log.record(&line);
        }
        home = verify(&db, &log, home, &ctx).await;

        // Every cache write acknowledged before the idle pause is on disk.
        let vault = open_path(&db, flush_every(CHILD_FLUSH_MS)).unwrap();
        vault.unlock(PASS).await.unwrap();
        let main = vault.open_session("main").await.unwrap();
        for n in 0..20 {
            let key = Peer::new(PeerKind::User, cache_peer_id(round, n)).key();
            let p = vault.peer(main, key).await.unwrap();
            assert!(p.is_some(), "{ctx}: cache write {n} lost after the flush");
        }
        let state = vault.updates_state(main).await.unwrap();
        assert!(
            state.channels.iter().any(|c| c.pts >= 19),
            "{ctx}: update state lost after the flush"
        );
        close(vault).await;
    }
}
