//! The hostile uid's side of [`super`]'s tests: the test binary re-run as another uid
//! ([`super::Hostile`]), doing one of the modes below against the daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_vault_proto::codec;
use session_vault_proto::message::{ErrorCode, Request, Response};
use tokio::io::AsyncWriteExt;

use super::{MODE_VAR, SOCKET_VAR, say};
use crate::util::raw::Raw;

/// The hostile side; does nothing unless started by [`Hostile::spawn`]. Modes:
/// - `audit:N:BYTES`: one connection; N refused `rename_session` requests whose two names
///   are BYTES long each; prints `done REFUSED`;
/// - `channels:CONNS:N`: gives its own session `~/chan` N channel states in one
///   `set_update_state` (prints `built MS`, what one `get_updates_state` then takes), then
///   sends `get_updates_state` on CONNS connections as fast as the daemon reads them;
///   prints `ready`, then `answers A` every 500 ms;
/// - `poke:SECS`: one connection; for SECS seconds, a refused `lock` every 500 ms; prints
///   `done REFUSED`;
/// - `straddle:NAME`: opens session NAME (granted to it) and sends one `cache_peers` frame
///   of as many distinct peers as fit (MessagePack arrays); prints `sent PEERS`, then
///   `answer ok|error` when it is answered;
/// - `stall`: one connection; after the handshake, the header of a 1 MiB frame and 100 bytes
///   of its payload, then nothing; prints `ready` and holds it until killed;
/// - `opens:N`: one connection; opens (creating it the first time) and closes its own
///   session `~/mine` N times; prints `done N`, waits 1.1 s, opens it once more and prints
///   `last`;
/// - `handles:CONNS:PER`: opens its own session `~/held` (shared) PER times on each of CONNS
///   connections at once, pipelined 64 at a time, never closing; prints `done OPENED REFUSED`
///   (refused: `permission_denied`), then holds them until killed;
/// - `hello:N`: N connections, each sending the header of a 1 MiB first frame and all of its
///   payload but the last byte; prints `ready N`, then holds them until killed.
#[test]
#[ignore = "entry point of the hostile processes started by other tests"]
fn hostile_entry() {
    let Some(socket) = std::env::var_os(SOCKET_VAR).map(PathBuf::from) else {
        return;
    };
    let mode = std::env::var(MODE_VAR).expect("mode in the environment");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let parts: Vec<&str> = mode.split(':').collect();
        match parts.as_slice() {
            ["audit", n, bytes] => {
                audit_flood(&socket, n.parse().unwrap(), bytes.parse().unwrap()).await
            }
            ["hello", n] => hello_hold(&socket, n.parse().unwrap()).await,
            ["poke", secs] => poke(&socket, secs.parse().unwrap()).await,
            ["straddle", name] => straddle(&socket, name).await,
            ["stall"] => stall(&socket).await,
            ["opens", n] => opens(&socket, n.parse().unwrap()).await,
            ["handles", conns, per] => {
                handles(&socket, conns.parse().unwrap(), per.parse().unwrap()).await
            }
            ["probe", a, b, n] => probe(&socket, a, b, n.parse().unwrap()).await,
            ["channels", conns, n] => {
                channels_flood(&socket, conns.parse().unwrap(), n.parse().unwrap()).await
            }
            _ => panic!("unknown mode {mode}"),
        }
    });
}

async fn audit_flood(socket: &Path, n: u32, bytes: usize) {
    let mut r = Raw::connect_hello(socket).await;
    let mut refused = 0;
    for i in 0..n {
        let resp = r
            .call(
                i + 2,
                Request::RenameSession {
                    old: "o".repeat(bytes),
                    new: "n".repeat(bytes),
                },
            )
            .await;
        if let Response::Error(e) = resp {
            if e.code == ErrorCode::PermissionDenied {
                refused += 1;
            }
        }
    }
    say(&format!("done {refused}"));
}

async fn opens(socket: &Path, n: u32) {
    let mut r = Raw::connect_hello(socket).await;
    for i in 0..n {
        open_close(&mut r, 2 + 2 * i).await;
    }
    say(&format!("done {n}"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    open_close(&mut r, 2 + 2 * n).await;
    say("last");
}

async fn handles(socket: &Path, conns: usize, per: u32) {
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let socket = socket.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut r = Raw::connect_hello(&socket).await;
            let (mut opened, mut refused) = (0u32, 0u32);
            let mut next = 2u32;
            while opened + refused < per {
                let batch = (per - opened - refused).min(64);
                for _ in 0..batch {
                    let open = Request::OpenSession {
                        name: "~/held".to_owned(),
                        exclusive: false,
                        create_if_missing: true,
                    };
                    r.send_request(next, open).await;
                    next += 1;
                }
                for _ in 0..batch {
                    match r.recv().await.expect("an answer").response {
                        Response::Opened { .. } => opened += 1,
                        Response::Error(e) if e.code == ErrorCode::PermissionDenied => refused += 1,
                        other => panic!("open: {other:?}"),
                    }
                }
            }
            (opened, refused, r)
        }));
    }
    let (mut opened, mut refused, mut held) = (0, 0, Vec::new());
    for t in tasks {
        let (o, f, r) = t.await.expect("connection task");
        opened += o;
        refused += f;
        held.push(r);
    }
    say(&format!("done {opened} {refused}"));
    std::future::pending::<()>().await;
}

/// Opens `~/mine` (request `id`) and closes it (request `id + 1`).
async fn open_close(r: &mut Raw, id: u32) {
    let open = Request::OpenSession {
        name: "~/mine".to_owned(),
        exclusive: false,
        create_if_missing: true,
    };
    let handle = match r.call(id, open).await {
        Response::Opened { handle, .. } => handle,
        other => panic!("open: {other:?}"),
    };
    let resp = r.call(id + 1, Request::CloseSession { handle }).await;
    assert!(matches!(resp, Response::Ok), "close: {resp:?}");
}

/// Times `open_session` of names `a` and `b` (neither available to this uid), `n` of each,
/// interleaved; prints `medians A_NS B_NS` and `means A_NS B_NS` (trimmed: the lower 90%).
async fn probe(socket: &Path, a: &str, b: &str, n: usize) {
    let mut r = Raw::connect_hello(socket).await;
    let (mut ta, mut tb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (id, i) in (2u32..).zip(0..2 * n) {
        let (name, times) = if i % 2 == 0 {
            (a, &mut ta)
        } else {
            (b, &mut tb)
        };
        let t = Instant::now();
        let resp = r
            .call(
                id,
                Request::OpenSession {
                    name: name.to_owned(),
                    exclusive: false,
                    create_if_missing: false,
                },
            )
            .await;
        times.push(t.elapsed().as_nanos() as u64);
        assert!(matches!(resp, Response::Error(_)), "{resp:?}");
    }
    ta.sort_unstable();
    tb.sort_unstable();
    let trimmed = |v: &[u64]| {
        let k = v.len() * 9 / 10;
        v[..k].iter().sum::<u64>() / k as u64
    };
    say(&format!("medians {} {}", ta[n / 2], tb[n / 2]));
    say(&format!("means {} {}", trimmed(&ta), trimmed(&tb)));
}

async fn straddle(socket: &Path, name: &str) {
    let mut r = Raw::connect_hello(socket).await;
    let handle = match r
        .call(
            2,
            Request::OpenSession {
                name: name.to_owned(),
                exclusive: false,
                create_if_missing: false,
            },
        )
        .await
    {
        Response::Opened { handle, .. } => handle,
        other => panic!("open: {other:?}"),
    };
    let max = codec::DEFAULT_MAX_FRAME as usize;
    let n = (max - 64) / 14;
    let mut p = crate::reliability::dos::cache_peers_head(3, handle, n);
    for i in 0..n {
        // [kind user, id, then seven nils]
        p.extend_from_slice(&[0x99, 0x00, 0xce]);
        p.extend_from_slice(&(1_000_000 + i as u32).to_be_bytes());
        p.extend_from_slice(&[0xc0; 7]);
    }
    assert!(p.len() <= max);
    r.send_payload(&p).await;
    say(&format!("sent {n}"));
    let answer = slow_recv(&mut r).await;
    say(&format!(
        "answer {}",
        if matches!(answer, Response::Ok) {
            "ok".to_owned()
        } else {
            format!("{answer:?}")
        }
    ));
}

async fn stall(socket: &Path) {
    let mut r = Raw::connect_hello(socket).await;
    let mut frame = codec::DEFAULT_MAX_FRAME.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x90; 100]);
    r.send_bytes(&frame).await;
    say("ready");
    std::future::pending::<()>().await;
}

async fn poke(socket: &Path, secs: u64) {
    let mut r = Raw::connect_hello(socket).await;
    let until = Instant::now() + Duration::from_secs(secs);
    let (mut id, mut refused) = (2, 0);
    while Instant::now() < until {
        r.send_request(id, Request::Lock).await;
        // Events (id 0: the vault locked itself) may come before the answer.
        let answer = loop {
            let f = r.recv().await.expect("an answer, not EOF");
            if f.id == id {
                break f.response;
            }
        };
        if let Response::Error(e) = answer {
            if e.code == ErrorCode::PermissionDenied {
                refused += 1;
            }
        }
        id += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    say(&format!("done {refused}"));
}

async fn hello_hold(socket: &Path, n: usize) {
    let len = codec::DEFAULT_MAX_FRAME;
    let mut frame = len.to_be_bytes().to_vec();
    frame.resize(4 + len as usize - 1, 0x90);
    let frame = Arc::new(frame);
    let mut tasks = Vec::new();
    for _ in 0..n {
        let frame = Arc::clone(&frame);
        let socket = socket.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::UnixStream::connect(&socket).await.ok()?;
            s.write_all(&frame).await.ok()?;
            Some(s)
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            held.push(s);
        }
    }
    say(&format!("ready {}", held.len()));
    std::future::pending::<()>().await;
}

async fn channels_flood(socket: &Path, conns: usize, n: i64) {
    use session_vault_proto::message::{ClientFrame, ServerFrame};
    use session_vault_proto::model::{ChannelState, UpdateStateChange, UpdatesState};
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut opened = Vec::new();
    for _ in 0..conns {
        let mut r = Raw::connect_hello(socket).await;
        let handle = match r
            .call(
                2,
                Request::OpenSession {
                    name: "~/chan".into(),
                    exclusive: false,
                    create_if_missing: true,
                },
            )
            .await
        {
            Response::Opened { handle, .. } => handle,
            other => panic!("open: {other:?}"),
        };
        opened.push((r, handle));
    }
    let (first, handle) = &mut opened[0];
    let state = UpdatesState {
        channels: (1..=n).map(|id| ChannelState { id, pts: 1 }).collect(),
        ..UpdatesState::default()
    };
    let set = Request::SetUpdateState {
        handle: *handle,
        change: UpdateStateChange::All(state),
    };
    let frame = codec::encode_frame(&ClientFrame {
        id: 3,
        request: set,
    })
    .expect("encode");
    let size = frame.len();
    assert!(size <= codec::DEFAULT_MAX_FRAME as usize, "{size} bytes");
    let t = Instant::now();
    first.send_bytes(&frame).await;
    let r = slow_recv(first).await;
    assert!(matches!(r, Response::Ok), "set_update_state: {r:?}");
    let set_took = t.elapsed();
    let t = Instant::now();
    first
        .send_request(4, Request::GetUpdatesState { handle: *handle })
        .await;
    let r = slow_recv(first).await;
    let took = t.elapsed();
    match r {
        Response::UpdatesState(s) => assert_eq!(s.channels.len() as i64, n),
        other => panic!("get_updates_state: {other:?}"),
    }
    say(&format!(
        "built {} ms; the set_update_state frame of {size} bytes took {} ms",
        took.as_millis(),
        set_took.as_millis()
    ));
    let answers = Arc::new(AtomicU64::new(0));
    for (r, handle) in opened {
        let frame = codec::encode_frame(&ClientFrame {
            id: 9,
            request: Request::GetUpdatesState { handle },
        })
        .expect("encode");
        let (mut rd, mut wr) = r.stream.into_split();
        tokio::spawn(async move { while wr.write_all(&frame).await.is_ok() {} });
        let answers = Arc::clone(&answers);
        tokio::spawn(async move {
            while let Ok(Some(_)) = codec::read_message::<_, ServerFrame>(&mut rd, u32::MAX).await {
                answers.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    say("ready");
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        say(&format!("answers {}", answers.load(Ordering::Relaxed)));
    }
}

/// The next answer on `r`, waiting up to two minutes (a whole-table job in a debug build).
async fn slow_recv(r: &mut Raw) -> Response {
    use session_vault_proto::message::ServerFrame;
    tokio::time::timeout(
        Duration::from_secs(120),
        codec::read_message::<_, ServerFrame>(&mut r.stream, u32::MAX),
    )
    .await
    .expect("an answer within two minutes")
    .expect("a frame")
    .expect("not EOF")
    .response
}
