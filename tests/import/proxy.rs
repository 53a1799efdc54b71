//! A man in the middle between `vaultctl` and `vaultd`, for races that must happen at one
//! exact moment: it forwards frames both ways and, just before it hands `vaultctl` the
//! daemon's first answer after the handshake (the answer to the import), runs a hook once.
//! The hook runs while `vaultctl` has parsed its source and waits, and before it shreds:
//! the attack window of a path swapped between parse and shred, hit every time without a
//! sleep.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use session_vault_proto::codec;
use session_vault_proto::message::{Response, ServerFrame};

type Hook = Box<dyn FnOnce() + Send>;

/// Listens on `listen` and forwards every connection to the daemon at `upstream`; `hook`
/// runs once, before the first non-`Welcome` frame from the daemon is passed on.
///
/// The listening thread is left running: it ends with the test process.
pub fn start(listen: &Path, upstream: PathBuf, hook: impl FnOnce() + Send + 'static) {
    let listener = UnixListener::bind(listen)
        .unwrap_or_else(|e| panic!("bind the proxy at {}: {e}", listen.display()));
    let hook: Arc<Mutex<Option<Hook>>> = Arc::new(Mutex::new(Some(Box::new(hook))));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let daemon = UnixStream::connect(&upstream).expect("proxy: connect to vaultd");
            let hook = Arc::clone(&hook);
            std::thread::spawn(move || forward(client, daemon, hook));
        }
    });
}

fn forward(client: UnixStream, daemon: UnixStream, hook: Arc<Mutex<Option<Hook>>>) {
    let mut to_daemon = daemon.try_clone().expect("clone the daemon stream");
    let mut from_client = client.try_clone().expect("clone the client stream");
    std::thread::spawn(move || {
        // Requests pass unchanged; either side closing ends the copy.
        let _ = std::io::copy(&mut from_client, &mut to_daemon);
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
    });
    let (mut from_daemon, mut to_client) = (daemon, client);
    loop {
        let mut len = [0u8; 4];
        if from_daemon.read_exact(&mut len).is_err() {
            break;
        }
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        if from_daemon.read_exact(&mut payload).is_err() {
            break;
        }
        let welcome = matches!(
            codec::decode_payload::<ServerFrame>(&payload),
            Ok(ServerFrame {
                response: Response::Welcome { .. },
                ..
            })
        );
        if !welcome {
            // Taken out of the lock first: the hook may take long, and must run once.
            let once = hook.lock().expect("hook lock").take();
            if let Some(run) = once {
                run();
            }
        }
        if to_client.write_all(&len).is_err() || to_client.write_all(&payload).is_err() {
            break;
        }
    }
    let _ = to_client.shutdown(std::net::Shutdown::Write);
}
