//! Many idle connections (some after hello, some silent, some mid-frame) do not slow a new
//! client's `status`.

use std::time::{Duration, Instant};

use session_vault_client::Connection;
use session_vault_proto::message::{Request, Response};

use crate::util::raw::Raw;
use crate::util::*;

const IDLE: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_idle_connections_do_not_slow_a_new_client() {
    let env = Env::new();
    let (_d, _c) = env.start_initialized(&[]).await;
    let (_, baseline) = env.assert_serving().await;

    let socket = env.socket();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let r = match i % 3 {
            0 => Raw::connect_hello(&socket).await,
            1 => Raw::connect(&socket).await,
            _ => {
                let mut r = Raw::connect_hello(&socket).await;
                r.send_bytes(&[0, 0, 0, 40, 0x82]).await;
                r
            }
        };
        idle.push(r);
    }

    let mut times = Vec::new();
    for _ in 0..5 {
        let (status, took) = env.assert_serving().await;
        assert!(status.connections as usize > IDLE, "{status:?}");
        times.push(took);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "status (connect + hello + status): {baseline:?} alone, median {median:?} (max {:?}) with {IDLE} idle connections",
        times.last().unwrap()
    );
    assert!(
        median < Duration::from_millis(500),
        "status took {median:?} with {IDLE} idle connections"
    );

    // The idle connections that said hello are still served.
    let t = Instant::now();
    let r = idle[0]
        .call(7, session_vault_proto::message::Request::Status)
        .await;
    assert!(matches!(
        r,
        session_vault_proto::message::Response::Status(_)
    ));
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// Status requests pipelined by the flooding client.
const FLOOD: u32 = 5000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pipelining_thousands_of_requests_gets_every_answer_and_stalls_nobody() {
    use session_vault_proto::codec;
    use session_vault_proto::message::{ClientFrame, Request, Response, ServerFrame};
    use tokio::io::AsyncWriteExt;

    let env = Env::new();
    let (_d, _c) = env.start_initialized(&[]).await;
    let mut frames = Vec::new();
    for id in 2..FLOOD + 2 {
        frames.extend_from_slice(
            &codec::encode_frame(&ClientFrame {
                id,
                request: Request::Status,
            })
            .unwrap(),
        );
    }
    let flood = Raw::connect_hello(&env.socket()).await;
    let (mut rd, mut wr) = flood.stream.into_split();
    // The writes block once the daemon stops reading (64 in flight, nobody reading answers).
    let writer = tokio::spawn(async move {
        wr.write_all(&frames).await.expect("flood write");
        wr
    });
    // Wait until the flooder is stalled: the daemon has answered all it will before we read.
    let (_, took) = env.assert_serving().await;
    println!("status while a client has {FLOOD} requests pipelined and reads none: {took:?}");
    assert!(took < Duration::from_secs(1), "status took {took:?}");

    let t = Instant::now();
    let mut seen = vec![false; (FLOOD + 2) as usize];
    for _ in 0..FLOOD {
        let f: ServerFrame = tokio::time::timeout(
            Duration::from_secs(30),
            codec::read_message(&mut rd, codec::DEFAULT_MAX_FRAME),
        )
        .await
        .expect("answers keep coming")
        .expect("a frame")
        .expect("not EOF");
        assert!(
            matches!(f.response, Response::Status(_)),
            "{:?}",
            f.response
        );
        assert!(!seen[f.id as usize], "id {} answered twice", f.id);
        seen[f.id as usize] = true;
    }
    println!("{FLOOD} pipelined answers read in {:?}", t.elapsed());
    let _wr = writer.await.unwrap();
    assert!(seen[2..].iter().all(|s| *s));
}

/// Opens more connections than vaultd has file descriptors (limit 64), so that accept
/// fails with EMFILE while they stay; returns them.
fn exhaust_fds(env: &Env, d: &Daemon) -> Vec<std::os::unix::net::UnixStream> {
    let conns: Vec<_> = (0..100)
        .map(|_| std::os::unix::net::UnixStream::connect(env.socket()).expect("connect"))
        .collect();
    poll_until(Duration::from_secs(10), "vaultd to run out of fds", || {
        d.log().contains("accept failed")
    });
    conns
}

#[tokio::test]
async fn running_out_of_file_descriptors_is_survived() {
    let env = Env::new();
    let d = Daemon::start_with_fd_limit(&env, 64);
    let c = env.connect().await;
    env.init_proto(&c).await;
    let conns = exhaust_fds(&env, &d);
    // A connection made before still works.
    let r = c.call(session_vault_proto::message::Request::Status).await;
    assert!(r.is_ok(), "{r:?}");
    drop(conns);
    // The shortage ends only as vaultd sees the dropped connections' EOFs; until then a new
    // connection may be one it accepts and closes at once (by design). It must serve again
    // within a few seconds, without a restart.
    let t = std::time::Instant::now();
    let status = loop {
        let attempt = async {
            let c = Connection::connect(&env.socket(), "integration-test")
                .await
                .ok()?;
            match c.call(Request::Status).await {
                Ok(Response::Status(s)) => Some(s),
                _ => None,
            }
        };
        if let Ok(Some(s)) = tokio::time::timeout(Duration::from_secs(10), attempt).await {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "vaultd did not serve again within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("status after the fd shortage: {:?}", t.elapsed());
    assert_eq!(status.pid, d.pid());
}

#[tokio::test]
async fn running_out_of_file_descriptors_does_not_spin_or_flood_the_log() {
    let env = Env::new();
    let d = Daemon::start_with_fd_limit(&env, 64);
    let _conns = exhaust_fds(&env, &d);
    // Measure over a window while the shortage lasts.
    let lines_before = d.log().matches("accept failed").count();
    let cpu_before = cpu_time(d.pid());
    let window = Duration::from_millis(500);
    tokio::time::sleep(window).await;
    let lines = d.log().matches("accept failed").count() - lines_before;
    let cpu = cpu_time(d.pid()) - cpu_before;
    println!("during a {window:?} fd shortage: {lines} `accept failed` lines, {cpu:?} of CPU");
    assert!(lines <= 20, "{lines} `accept failed` lines in {window:?}");
    assert!(
        cpu <= window / 5,
        "vaultd used {cpu:?} of CPU in {window:?}"
    );
}
