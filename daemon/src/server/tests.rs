//! In-process tests of the server: a real listener and [`Daemon`] on a temp dir, driven by the
//! client library, where the test needs to reach inside the process (here: its log writer).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use session_vault_client::Connection;
use session_vault_proto::message::{ErrorCode, KdfSpec, Passphrase, Request, Response, VaultState};
use tokio::sync::broadcast;

use super::config::{Config, Overrides};
use super::{Daemon, datadir, serve, transport};

/// A log stream that fails like tracing-subscriber's `eprintln!` fallback does once stderr
/// is closed: it panics in whichever task logged. Healthy until `broken` is set.
#[derive(Clone)]
struct BreakableLog {
    broken: Arc<AtomicBool>,
}

impl io::Write for BreakableLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.broken.load(Ordering::Relaxed) {
            panic!("failed printing to stderr: Broken pipe (os error 32)");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_handler_that_panics_is_answered_internal_and_the_daemon_keeps_serving() {
    let broken = Arc::new(AtomicBool::new(false));
    let log = BreakableLog {
        broken: Arc::clone(&broken),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || log.clone())
        .finish();
    // This thread's default: the current-thread runtime below runs every connection task
    // here, so a handler's `tracing::info!` goes through the breakable log.
    let _log = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("v.sock");
    let config = Config::resolve(Overrides {
        socket: Some(socket.clone()),
        data_dir: Some(dir.path().join("data")),
        // The tests initialize with the cheap KDF.
        insecure_allow_weak_kdf: true,
        ..Overrides::default()
    })
    .expect("config");
    std::fs::create_dir(&config.data_dir).expect("data dir");
    rt.block_on(async {
        let lock = datadir::DataDirLock::acquire(&config.data_dir).expect("data dir lock");
        let listener = transport::bind(&config.socket).expect("bind");
        let daemon = Daemon::open(config, lock).expect("open the daemon");
        let (stop, stop_rx) = broadcast::channel(1);
        let server = tokio::spawn(serve(daemon, listener, stop_rx));
        let within = Duration::from_secs(10);
        let c = Connection::connect(&socket, "panic-test")
            .await
            .expect("connect");

        // `init` logs "vault initialized" once the vault exists: the log write panics inside
        // the handler, after the request took effect.
        broken.store(true, Ordering::Relaxed);
        let r = tokio::time::timeout(
            within,
            c.request(Request::Init {
                passphrase: Passphrase::new(b"correct horse".to_vec()),
                kdf: Some(KdfSpec {
                    m_cost_kib: 64,
                    t_cost: 1,
                    p_cost: 1,
                }),
            }),
        )
        .await
        .expect("init answered although its handler panicked");
        let Ok(Response::Error(e)) = r else {
            panic!("init whose handler panicked: {r:?}")
        };
        assert_eq!(e.code, ErrorCode::Internal, "{e}");
        assert!(!e.message.contains("Broken pipe"), "the panic leaks: {e}");
        broken.store(false, Ordering::Relaxed);

        // The same connection goes on, and saw the request take effect; so does the daemon.
        let status = |conn: &Connection| {
            let conn = conn.clone();
            async move {
                match tokio::time::timeout(within, conn.call(Request::Status)).await {
                    Ok(Ok(Response::Status(s))) => s.state,
                    other => panic!("status: {other:?}"),
                }
            }
        };
        assert_eq!(status(&c).await, VaultState::Unlocked);
        let r = tokio::time::timeout(within, c.call(Request::Lock))
            .await
            .expect("lock answered");
        assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
        let other = Connection::connect(&socket, "after")
            .await
            .expect("connect");
        assert_eq!(status(&other).await, VaultState::Locked);

        let _ = stop.send(());
        tokio::time::timeout(within, server)
            .await
            .expect("shutdown within 10 s")
            .expect("server task")
            .expect("clean shutdown");
    });
}
