//! Graceful shutdown: SIGTERM in the middle of a stream of durable writes loses none that
//! was acknowledged; the daemon exits 0, tells its clients, and removes its socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use session_vault_client::Connection;
use session_vault_proto::message::{Event, Request, Response};
use session_vault_proto::model::{AuthKey, DcOption};

use crate::util::*;

/// Writers on the connection, each with its own range of DC ids.
const WRITERS: i32 = 4;
/// Acknowledged writes to wait for before SIGTERM.
const BEFORE_TERM: usize = 40;

/// The auth key written for DC `id`: distinct per id.
fn key_for(id: i32) -> AuthKey {
    let mut k = [0u8; 256];
    for (i, b) in k.iter_mut().enumerate() {
        *b = (id as u32)
            .wrapping_mul(2_654_435_761)
            .wrapping_add(i as u32)
            .to_le_bytes()[i % 4];
    }
    k[..4].copy_from_slice(&id.to_be_bytes());
    AuthKey::new(k)
}

/// Writes DC options `first, first + WRITERS, …` until a write fails; returns the ids that
/// were acknowledged.
async fn writer(c: Connection, handle: u32, first: i32, acked: Arc<AtomicUsize>) -> Vec<i32> {
    let mut done = Vec::new();
    let mut id = first;
    loop {
        let r = c
            .call(Request::SetDcOption {
                handle,
                option: DcOption {
                    id,
                    ipv4: None,
                    ipv6: None,
                    auth_key: Some(key_for(id)),
                },
            })
            .await;
        match r {
            Ok(Response::Ok) => {
                done.push(id);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => panic!("set_dc_option: {other:?}"),
            Err(_) => return done,
        }
        id += WRITERS;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_durable_writes_loses_no_acknowledged_write() {
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let handle = open_session(&c, "bot", true).await;
    let mut events = c.events();
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(c.clone(), handle, 100 + w, Arc::clone(&acked))))
        .collect();

    // SIGTERM once some writes were acknowledged, while the writers keep going.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked.load(Ordering::Relaxed) < BEFORE_TERM {
        assert!(tokio::time::Instant::now() < deadline, "writes too slow");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let pid = d.pid();
    let status = tokio::task::spawn_blocking(move || d.terminate())
        .await
        .unwrap();
    assert!(status.success(), "vaultd exit after SIGTERM: {status:?}");
    let mut written = Vec::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    println!(
        "{} durable writes acknowledged ({} before SIGTERM)",
        written.len(),
        BEFORE_TERM
    );
    assert!(written.len() >= BEFORE_TERM);
    // The clients were told, and the socket is gone.
    let mut told = false;
    while let Ok(ev) = events.try_recv() {
        told |= ev == Event::ShuttingDown;
    }
    assert!(told, "no shutting_down event before the connection closed");
    assert!(!env.socket().exists(), "socket left after a clean shutdown");

    // Restart, unlock: every acknowledged write is there, with its own key.
    let d = env.start();
    assert_ne!(d.pid(), pid);
    let c = env.connect_unlocked().await;
    let h = open_session(&c, "bot", true).await;
    let Ok(Response::DcOptions(options)) = c.call(Request::GetDcOptions { handle: h }).await else {
        panic!("get_dc_options")
    };
    for id in &written {
        let o = options
            .iter()
            .find(|o| o.id == *id)
            .unwrap_or_else(|| panic!("acknowledged DC option {id} lost"));
        assert_eq!(o.auth_key.as_ref(), Some(&key_for(*id)), "DC {id} key");
    }
}

#[tokio::test]
async fn sigterm_with_idle_clients_exits_promptly_and_cleanly() {
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let _h = open_session(&c, "bot", true).await;
    let _silent = crate::util::raw::Raw::connect(&env.socket()).await;
    let t = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || d.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    // A silent client (no hello yet) must not hold shutdown for the handshake timeout.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(!env.socket().exists());
    // The database was closed, not abandoned: SQLite checkpointed and removed the WAL.
    let wal = env.data_dir().join("vault.db-wal");
    assert!(
        !wal.exists(),
        "{} left after a clean shutdown",
        wal.display()
    );
    // The vault is intact and starts locked.
    let _d = env.start();
    let (status, _) = env.assert_serving().await;
    assert_eq!(
        status.state,
        session_vault_proto::message::VaultState::Locked
    );
}

/// Sends `signal` and waits (at most 10 s) for vaultd's exit status.
fn signal_and_wait(d: &mut Daemon, signal: i32) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(d.pid() as i32, signal);
    }
    let mut status = None;
    poll_until(
        Duration::from_secs(10),
        "vaultd to exit after a signal",
        || {
            status = d.child.try_wait().expect("wait vaultd");
            status.is_some()
        },
    );
    status.unwrap()
}

#[tokio::test]
async fn sigint_is_a_clean_shutdown_too() {
    let env = Env::new();
    // Some traffic first: see the ignored test below for a signal right after readiness.
    let (mut d, c) = env.start_initialized(&[]).await;
    drop(c);
    let status = signal_and_wait(&mut d, libc::SIGINT);
    assert!(status.success(), "{status:?}");
    assert!(!env.socket().exists());
}

#[test]
fn a_signal_right_after_readiness_is_a_clean_shutdown() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGTERM, libc::SIGINT] {
        let env = Env::new();
        let mut d = env.start();
        let status = signal_and_wait(&mut d, signal);
        assert!(
            status.success(),
            "signal {signal} right after readiness: {status:?}"
        );
        assert!(!env.socket().exists(), "socket left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_a_client_that_never_reads() {
    use session_vault_proto::codec;
    use session_vault_proto::message::ClientFrame;

    let env = Env::new();
    let (d, _c) = env.start_initialized(&[]).await;
    let mut frames = Vec::new();
    for id in 2..200_002 {
        frames.extend_from_slice(
            &codec::encode_frame(&ClientFrame {
                id,
                request: Request::Status,
            })
            .unwrap(),
        );
    }
    // A blocking-free writer: write until the daemon stops taking our requests (its 64
    // permits are taken and the answers fill the socket buffers, since we read none).
    let mut stuck = std::os::unix::net::UnixStream::connect(env.socket()).unwrap();
    hello_blocking(&mut stuck);
    stuck.set_nonblocking(true).unwrap();
    let mut off = 0;
    let mut quiet_since = std::time::Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(200) {
        match std::io::Write::write(&mut stuck, &frames[off..]) {
            Ok(n) => {
                off += n;
                quiet_since = std::time::Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("flood write: {e}"),
        }
        assert!(
            off < frames.len(),
            "the daemon took every request: flood more"
        );
    }
    env.assert_serving().await;
    let t = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || d.terminate())
        .await
        .unwrap();
    let took = t.elapsed();
    println!("SIGTERM with a client that never reads: exit after {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
}

/// The handshake on a blocking std socket.
fn hello_blocking(s: &mut std::os::unix::net::UnixStream) {
    use std::io::{Read, Write};
    let hello =
        session_vault_proto::codec::encode_frame(&session_vault_proto::message::ClientFrame {
            id: 1,
            request: crate::util::raw::hello(session_vault_proto::message::PROTOCOL_MAJOR),
        })
        .unwrap();
    s.write_all(&hello).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut payload).unwrap();
    let f: session_vault_proto::message::ServerFrame =
        session_vault_proto::codec::decode_payload(&payload).unwrap();
    assert!(matches!(f.response, Response::Welcome { .. }));
}

/// Writes cache-class data (update state, a peer) to session `bot` and returns the state.
async fn write_cache_class(
    c: &Connection,
    handle: u32,
) -> session_vault_proto::model::UpdatesState {
    use session_vault_proto::model::{Peer, PeerKind, UpdateStateChange, UpdatesState};
    let state = UpdatesState {
        pts: 4242,
        qts: 7,
        date: 1_700_000_000,
        seq: 99,
        channels: vec![],
    };
    let r = c
        .call(Request::SetUpdateState {
            handle,
            change: UpdateStateChange::All(state.clone()),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    let mut peer = Peer::new(PeerKind::User, 777);
    peer.access_hash = Some(-123_456_789);
    peer.username = Some("cached_user".into());
    let r = c
        .call(Request::CachePeers {
            handle,
            peers: vec![peer].into(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    state
}

/// After a restart and unlock: the cache-class writes of [`write_cache_class`] are there.
async fn assert_cache_class_kept(env: &Env, state: &session_vault_proto::model::UpdatesState) {
    use session_vault_proto::message::PeerQuery;
    let c = env.connect_unlocked().await;
    let h = open_session(&c, "bot", true).await;
    let r = c.call(Request::GetUpdatesState { handle: h }).await;
    assert!(
        matches!(&r, Ok(Response::UpdatesState(s)) if s == state),
        "update state: {r:?}"
    );
    let r = c
        .call(Request::GetPeer {
            handle: h,
            query: PeerQuery::Username("cached_user".into()),
        })
        .await;
    assert!(
        matches!(&r, Ok(Response::Peer(Some(p))) if p.id == 777 && p.access_hash == Some(-123_456_789)),
        "peer: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_cache_class_writes() {
    let env = Env::new();
    // A flush interval far longer than the test: only the shutdown can have flushed.
    let (d, c) = env
        .start_initialized(&["--flush-interval-ms", "600000"])
        .await;
    let h = open_session(&c, "bot", true).await;
    let state = write_cache_class(&c, h).await;
    let status = tokio::task::spawn_blocking(move || d.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _d = env.start();
    assert_cache_class_kept(&env, &state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_flushes_cache_class_writes_even_before_a_sigkill() {
    let env = Env::new();
    let (d, c) = env
        .start_initialized(&["--flush-interval-ms", "600000"])
        .await;
    let h = open_session(&c, "bot", true).await;
    let state = write_cache_class(&c, h).await;
    assert!(matches!(c.call(Request::Lock).await, Ok(Response::Ok)));
    d.kill();
    let _d = env.start();
    assert_cache_class_kept(&env, &state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_class_writes_are_durable_within_the_flush_interval() {
    let env = Env::new();
    let (d, c) = env.start_initialized(&["--flush-interval-ms", "50"]).await;
    let h = open_session(&c, "bot", true).await;
    let state = write_cache_class(&c, h).await;
    // Ten flush intervals: the bound under test, not a wait for readiness.
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.kill();
    let _d = env.start();
    assert_cache_class_kept(&env, &state).await;
}
