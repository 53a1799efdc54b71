//! Several processes on one daemon.
//!
//! The children are this test binary run again on one `#[ignore]`d entry test
//! (`--exact <name> --ignored --nocapture`) with its orders in environment variables; run
//! without them, the entry tests do nothing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use grammers_session::Session;
use grammers_session::storages::MemorySession;
use grammers_session::types::{DcOption, PeerAuth, PeerInfo, UpdateState};
use session_vault_client::VaultError;

use super::{builder, eventually, runtime, unlocked, user_id};

const SOCKET_VAR: &str = "SV_CLIENT_TEST_SOCKET";
const SESSION_VAR: &str = "SV_CLIENT_TEST_SESSION";
const WORKERS: usize = 8;
const WORK_FOR: Duration = Duration::from_secs(2);

fn child(entry: &str, socket: &std::path::Path, session: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("test binary path"));
    c.args([
        "--exact",
        entry,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(SOCKET_VAR, socket)
    .env(SESSION_VAR, session)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    c
}

/// Waits for a child with a time limit (killing it past the limit); its status and stdout.
fn finish(mut c: Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let mut out = c.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = c.try_wait().expect("wait for child") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("child {} still running after {limit:?}; killed", c.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("stdout reader"))
}

fn child_orders() -> Option<(std::path::PathBuf, String)> {
    Some((
        std::env::var_os(SOCKET_VAR)?.into(),
        std::env::var(SESSION_VAR).ok()?,
    ))
}

/// The `k`-th peer worker `seed` writes: ids and hashes distinct per worker.
fn worker_peer(seed: i64, k: i64) -> PeerInfo {
    PeerInfo::User {
        id: seed * 1_000_000 + k + 1,
        auth: Some(PeerAuth::from_hash(
            (seed * 0x9E37_79B9 + k).wrapping_mul(0x5851_F42D_4C95_7F2D),
        )),
        bot: Some(k % 2 == 0),
        is_self: None,
    }
}

fn worker_dc(seed: i64) -> DcOption {
    DcOption {
        id: 2,
        ipv4: std::net::SocketAddrV4::new([10, 0, 0, seed as u8].into(), 443),
        ipv6: std::net::SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, 443, 0, 0),
        auth_key: Some([seed as u8 + 1; 256]),
    }
}

/// The writes worker `seed` makes, in order: step `k`.
async fn write_step<S: Session>(s: &S, seed: i64, k: i64) -> Result<(), S::Error> {
    s.cache_peer(worker_peer(seed, k)).await?;
    s.set_update_state(UpdateState::Channel {
        id: k % 7 + 1,
        pts: k as i32,
    })
    .await?;
    if k % 5 == 0 {
        s.set_update_state(UpdateState::Primary {
            pts: k as i32,
            date: seed as i32,
            seq: 1,
        })
        .await?;
    }
    Ok(())
}

/// Child entry: one writer task and three reader tasks on one `VaultSession`, for
/// [`WORK_FOR`]; prints how many write steps it made.
#[test]
#[ignore = "child process of several_processes_each_with_its_own_session"]
fn worker_child() {
    let Some((socket, name)) = child_orders() else {
        return;
    };
    let seed: i64 = name.trim_start_matches("worker").parse().unwrap();
    let rt = runtime();
    let steps = rt.block_on(async {
        // Even workers keep no peer cache, so that their reads are requests in flight on the
        // connection together with the writes; odd ones answer reads from their cache.
        let cached = seed % 2 == 1;
        let capacity = if cached { 100_000 } else { 0 };
        let s = Arc::new(
            builder(&socket, &name)
                .peer_cache_capacity(capacity)
                .connect()
                .await
                .unwrap(),
        );
        s.set_dc_option(&worker_dc(seed)).await.unwrap();
        let done = Arc::new(AtomicI64::new(0));
        let readers: Vec<_> = (0..3)
            .map(|r| {
                let (s, done) = (Arc::clone(&s), Arc::clone(&done));
                tokio::spawn(async move {
                    let mut reads = 0u64;
                    let mut k = r;
                    loop {
                        let n = done.load(Ordering::Acquire);
                        if n < 0 {
                            return reads;
                        }
                        if n > 0 {
                            k = (k * 31 + 7) % n;
                            let want = worker_peer(seed, k);
                            assert_eq!(s.peer(want.id()).await.unwrap(), Some(want));
                            reads += 1;
                        }
                        // A cache hit completes without waiting on anything: pause, or the
                        // readers would keep every worker thread (and CPU) from the writers.
                        if cached || n == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                })
            })
            .collect();
        let start = Instant::now();
        let mut k = 0;
        while start.elapsed() < WORK_FOR {
            write_step(&*s, seed, k).await.unwrap();
            k += 1;
            done.store(k, Ordering::Release);
        }
        done.store(-1, Ordering::Release);
        let mut reads = 0;
        for r in readers {
            reads += r.await.unwrap();
        }
        eprintln!("worker {seed}: {k} write steps, {reads} reads");
        k
    });
    println!("STEPS {steps}");
}

#[test]
fn several_processes_each_with_its_own_session() {
    let (env, _d) = unlocked();
    let t = Instant::now();
    let children: Vec<(String, Child)> = (0..WORKERS)
        .map(|i| {
            let name = format!("worker{i}");
            let c = child("client::processes::worker_child", &env.socket(), &name)
                .spawn()
                .expect("spawn worker");
            (name, c)
        })
        .collect();
    let mut steps = Vec::new();
    for (name, c) in children {
        let (status, text) = finish(c, Duration::from_secs(60));
        assert!(status.success(), "{name} failed:\n{text}");
        let n: i64 = text
            .lines()
            // The harness prints "test … ... " before the test's own output on that line.
            .find_map(|l| l.split_once("STEPS ").map(|(_, n)| n))
            .unwrap_or_else(|| panic!("{name} reported no steps:\n{text}"))
            .trim()
            .parse()
            .unwrap();
        assert!(n > 0, "{name} made no progress");
        steps.push((name, n));
    }
    eprintln!("{WORKERS} workers ran in {:?}: {steps:?}", t.elapsed());

    // Every worker's data, as a replay of its steps on a MemorySession predicts it.
    let rt = runtime();
    rt.block_on(async {
        for (name, n) in steps {
            let seed: i64 = name.trim_start_matches("worker").parse().unwrap();
            let model = MemorySession::default();
            model.set_dc_option(&worker_dc(seed)).await.unwrap();
            for k in 0..n {
                write_step(&model, seed, k).await.unwrap();
            }
            let s = builder(&env.socket(), &name)
                .exclusive(false)
                .connect()
                .await
                .unwrap();
            for k in 0..n {
                let p = worker_peer(seed, k);
                assert_eq!(s.peer(p.id()).await.unwrap(), Some(p), "{name} peer {k}");
            }
            assert_eq!(
                s.updates_state().await.unwrap(),
                model.updates_state().await.unwrap(),
                "{name} updates state"
            );
            assert_eq!(s.dc_option(2).unwrap(), model.dc_option(2).unwrap());
            assert_eq!(s.export().await.unwrap().peer_infos.len(), n as usize);
        }
    });
}

/// A child process killed (and reaped) when the test ends, even by a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Child entry: holds a session's lease until killed.
#[test]
#[ignore = "child process of a_second_exclusive_open_is_busy_until_the_holder_dies"]
fn holder_child() {
    let Some((socket, name)) = child_orders() else {
        return;
    };
    let rt = runtime();
    rt.block_on(async {
        let s = builder(&socket, &name).connect().await.unwrap();
        s.cache_peer(super::user(5, 55)).await.unwrap();
        println!("HOLDING");
        // Killed by the parent long before; the limit only bounds an orphan's life.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(s);
    });
}

#[test]
fn a_second_exclusive_open_is_busy_until_the_holder_dies() {
    let (env, _d) = unlocked();
    let mut holder = KillOnDrop(
        child("client::processes::holder_child", &env.socket(), "shared")
            .spawn()
            .expect("spawn holder"),
    );
    let mut lines = BufReader::new(holder.0.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("HOLDING"))),
        "the holder never took the lease"
    );
    let holder_pid = holder.0.id();
    let rt = runtime();
    rt.block_on(async {
        match builder(&env.socket(), "shared").connect().await {
            Err(VaultError::SessionBusy {
                name,
                holder_pid: pid,
            }) => {
                assert_eq!(name, "shared");
                assert_eq!(pid, Some(holder_pid));
            }
            other => panic!("expected SessionBusy, got {other:?}"),
        }
        // Without the lease, sharing is allowed.
        let shared = builder(&env.socket(), "shared")
            .exclusive(false)
            .connect()
            .await
            .unwrap();
        assert_eq!(
            shared.peer(user_id(5)).await.unwrap(),
            Some(super::user(5, 55))
        );
    });
    holder.0.kill().expect("kill holder");
    holder.0.wait().expect("reap holder");
    rt.block_on(async {
        let socket = env.socket();
        eventually(Duration::from_secs(10), "lease freed", || {
            let socket = socket.clone();
            async move {
                match builder(&socket, "shared").connect().await {
                    Ok(s) => {
                        assert_eq!(s.peer(user_id(5)).await.unwrap(), Some(super::user(5, 55)));
                        true
                    }
                    Err(VaultError::SessionBusy { .. }) => false,
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .await;
    });
}
