//! The floor under every daemon round trip: a bare 64-byte Unix-socket echo between two
//! processes (this binary, re-run as `echo-server`).
//!
//! Three clients, all timing write 64 bytes → read 64 bytes:
//! - `blocking`: std sockets at both ends (thread per connection in the server): the kernel's
//!   cost of two socket hops and two wake-ups;
//! - `tokio`: a tokio client against a tokio server (multi-thread runtime, task per
//!   connection), as the vault client and `vaultd` are built;
//! - `tokio + reader task`: the same, with the answer read by a separate reader task and
//!   handed over through a oneshot channel, which is how `Connection` routes responses
//!   (one extra cross-task wake-up).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stats::{Count, Summary, summarize, time_async, time_sync};

/// Bytes per message.
pub const MSG: usize = 64;

/// The hidden `echo-server` subcommand: serves echoes on `socket` until killed.
pub fn serve(socket: &Path, tokio_mode: bool, spin: bool) -> Result<()> {
    let _ = std::fs::remove_file(socket);
    if spin {
        let l = std::os::unix::net::UnixListener::bind(socket)?;
        for s in l.incoming() {
            let mut s = s?;
            s.set_nonblocking(true)?;
            std::thread::spawn(move || {
                let mut buf = [0u8; MSG];
                loop {
                    if spin_read(&mut s, &mut buf).is_err() || spin_write(&mut s, &buf).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(())
    } else if tokio_mode {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let l = tokio::net::UnixListener::bind(socket)?;
            loop {
                let (mut s, _) = l.accept().await?;
                tokio::spawn(async move {
                    let mut buf = [0u8; MSG];
                    while s.read_exact(&mut buf).await.is_ok() {
                        if s.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                });
            }
        })
    } else {
        let l = std::os::unix::net::UnixListener::bind(socket)?;
        for s in l.incoming() {
            let mut s = s?;
            std::thread::spawn(move || {
                let mut buf = [0u8; MSG];
                while s.read_exact(&mut buf).is_ok() {
                    if s.write_all(&buf).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(())
    }
}

/// Reads exactly one message from a non-blocking socket, spinning instead of sleeping.
fn spin_read(s: &mut std::os::unix::net::UnixStream, buf: &mut [u8; MSG]) -> std::io::Result<()> {
    let mut got = 0;
    while got < MSG {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one message to a non-blocking socket, spinning on a full buffer.
fn spin_write(s: &mut std::os::unix::net::UnixStream, buf: &[u8; MSG]) -> std::io::Result<()> {
    let mut put = 0;
    while put < MSG {
        match s.write(&buf[put..]) {
            Ok(n) => put += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An echo server child; killed on drop.
struct Server {
    child: std::process::Child,
    socket: PathBuf,
}

impl Server {
    fn start(dir: &Path, mode: &str) -> Result<Server> {
        let socket = dir.join(format!("echo-{mode}.sock"));
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg("echo-server").arg("--socket").arg(&socket);
        match mode {
            "tokio" => {
                cmd.arg("--tokio");
            }
            "spin" => {
                cmd.arg("--spin");
            }
            _ => {}
        }
        let child = cmd
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("cannot start the echo server")?;
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("the echo server did not start");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Server { child, socket })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Round trips of the three kinds (see the module docs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct EchoResults {
    /// std ↔ std, both spinning on non-blocking sockets (no sleeping thread to wake).
    pub spinning: Summary,
    /// std ↔ std.
    pub blocking: Summary,
    /// tokio ↔ tokio.
    pub tokio: Summary,
    /// tokio ↔ tokio, answer through a reader task and a oneshot.
    pub tokio_reader_task: Summary,
    /// In one process: a tokio task sends a job to a std thread over `std::sync::mpsc` and
    /// awaits a oneshot answer: vaultd's hop to its storage thread, alone.
    pub thread_hop: Summary,
}

/// Measures the round trips, `count` each.
pub async fn measure(dir: &Path, count: Count) -> Result<EchoResults> {
    let spinning = {
        let server = Server::start(dir, "spin")?;
        let socket = server.socket.clone();
        tokio::task::spawn_blocking(move || -> Result<Summary> {
            let mut s = std::os::unix::net::UnixStream::connect(&socket)?;
            s.set_nonblocking(true)?;
            let msg = [7u8; MSG];
            let mut buf = [0u8; MSG];
            Ok(time_sync(count, |_| {
                spin_write(&mut s, &msg).expect("echo write");
                spin_read(&mut s, &mut buf).expect("echo read");
            }))
        })
        .await??
    };
    let blocking = {
        let server = Server::start(dir, "blocking")?;
        let socket = server.socket.clone();
        tokio::task::spawn_blocking(move || -> Result<Summary> {
            let mut s = std::os::unix::net::UnixStream::connect(&socket)?;
            let msg = [7u8; MSG];
            let mut buf = [0u8; MSG];
            Ok(time_sync(count, |_| {
                s.write_all(&msg).expect("echo write");
                s.read_exact(&mut buf).expect("echo read");
            }))
        })
        .await??
    };
    let server = Server::start(dir, "tokio")?;
    let tokio = {
        let mut s = tokio::net::UnixStream::connect(&server.socket).await?;
        let msg = [7u8; MSG];
        let mut buf = [0u8; MSG];
        let mut samples = Vec::with_capacity(count.measured);
        for i in 0..count.total() {
            let t = Instant::now();
            s.write_all(&msg).await?;
            s.read_exact(&mut buf).await?;
            if i >= count.warmup {
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
        summarize(samples)
    };
    let tokio_reader_task = {
        let s = tokio::net::UnixStream::connect(&server.socket).await?;
        let (mut r, w) = s.into_split();
        let w = tokio::sync::Mutex::new(w);
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<[u8; MSG]>>();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; MSG];
            while let Some(waiter) = rx.recv().await {
                if r.read_exact(&mut buf).await.is_err() {
                    break;
                }
                let _ = waiter.send(buf);
            }
        });
        let w = Arc::new(w);
        let msg = [7u8; MSG];
        let out = time_async(count, |_| {
            let w = Arc::clone(&w);
            let tx = tx.clone();
            async move {
                let (otx, orx) = tokio::sync::oneshot::channel();
                tx.send(otx).expect("reader alive");
                w.lock().await.write_all(&msg).await.expect("echo write");
                orx.await.expect("echo answer");
            }
        })
        .await;
        drop(tx);
        let _ = reader.await;
        out
    };
    drop(server);
    let thread_hop = {
        let (tx, rx) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<u64>>();
        let t = std::thread::spawn(move || {
            for answer in rx {
                let _ = answer.send(1);
            }
        });
        let tx_ref = &tx;
        let out = time_async(count, |_| async move {
            let (otx, orx) = tokio::sync::oneshot::channel();
            tx_ref.send(otx).expect("hop thread alive");
            orx.await.expect("hop answer");
        })
        .await;
        drop(tx);
        let _ = t.join();
        out
    };
    Ok(EchoResults {
        thread_hop,
        spinning,
        blocking,
        tokio,
        tokio_reader_task,
    })
}

/// Blocking and tokio echo connections kept open, so that the floor can be measured in
/// rounds interleaved with another measurement (both then see the same machine state).
pub struct Floor {
    _blocking_server: Server,
    _tokio_server: Server,
    blocking: std::os::unix::net::UnixStream,
    tokio: tokio::net::UnixStream,
    hop: std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<u64>>,
}

impl Floor {
    /// Starts both servers and connects.
    pub async fn start(dir: &Path) -> Result<Floor> {
        let b = Server::start(dir, "blocking")?;
        let t = Server::start(dir, "tokio")?;
        let blocking = std::os::unix::net::UnixStream::connect(&b.socket)?;
        let tokio = tokio::net::UnixStream::connect(&t.socket).await?;
        let (hop, rx) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<u64>>();
        // Ends when `hop` is dropped with the Floor.
        std::thread::spawn(move || {
            for answer in rx {
                let _ = answer.send(1);
            }
        });
        Ok(Floor {
            _blocking_server: b,
            _tokio_server: t,
            blocking,
            tokio,
            hop,
        })
    }

    /// `n` round trips of each kind (and `n` thread hops), appended to the sample vectors.
    pub async fn round(
        &mut self,
        n: usize,
        blocking: &mut Vec<u64>,
        tokio: &mut Vec<u64>,
        hop: &mut Vec<u64>,
    ) -> Result<()> {
        let msg = [7u8; MSG];
        let mut buf = [0u8; MSG];
        for _ in 0..n {
            // A blocking call on a runtime worker: ~10 µs, and nothing else runs meanwhile.
            let t = Instant::now();
            self.blocking.write_all(&msg)?;
            self.blocking.read_exact(&mut buf)?;
            blocking.push(t.elapsed().as_nanos() as u64);
        }
        for _ in 0..n {
            let t = Instant::now();
            self.tokio.write_all(&msg).await?;
            self.tokio.read_exact(&mut buf).await?;
            tokio.push(t.elapsed().as_nanos() as u64);
        }
        for _ in 0..n {
            let t = Instant::now();
            let (otx, orx) = tokio::sync::oneshot::channel();
            self.hop.send(otx)?;
            orx.await?;
            hop.push(t.elapsed().as_nanos() as u64);
        }
        Ok(())
    }
}
