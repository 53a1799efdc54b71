//! Hostile local users: a brute force of the passphrase, and a client that pipelines large
//! answers it never reads.
//!
//! Covered elsewhere, and cited rather than repeated: oversized and malformed frames, wrong
//! protocol versions, silent and half-frame clients (`tests/bad_input.rs`); another uid's
//! admin requests and its reach into others' sessions (`tests/auth.rs`); the unlock
//! throttle's schedule (`tests/errors.rs`, `server/throttle.rs` unit tests); a pipelining
//! flood of small requests (`tests/load.rs`); decoding arbitrary bytes (the codec proptests in
//! `proto/tests/proto`, and the cargo-fuzz targets in `fuzz/`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_vault_client::ClientError;
use session_vault_daemon::server::conn::WRITE_GRACE;
use session_vault_proto::codec;
use session_vault_proto::message::{ClientFrame, ErrorCode, Request, Response};
use session_vault_proto::model::{Peer, PeerKind};
use tokio::io::AsyncWriteExt;

use super::{figure, rss_kib};
use crate::util::raw::Raw;
use crate::util::*;

/// Parallel connections of the brute force.
const ATTACKERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brute_force_of_unlock_gets_a_handful_of_attempts() {
    const TEST: &str = "hostile/brute-force";
    let window = Duration::from_secs(5);
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    assert!(matches!(c.call(Request::Lock).await, Ok(Response::Ok)));

    let started = Instant::now();
    let judged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let unchecked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for a in 0..ATTACKERS {
        let c = env.connect().await;
        let judged = Arc::clone(&judged);
        let unchecked = Arc::clone(&unchecked);
        // Each sends its next guess as soon as the last is answered, ignoring retry_after_ms.
        tasks.push(tokio::spawn(async move {
            let mut guess = 0u64;
            loop {
                guess += 1;
                let r = unlock_with(&c, &format!("guess {a} {guess}")).await;
                match r {
                    Err(ClientError::Daemon(e)) => match e.code {
                        ErrorCode::BadPassphrase {
                            unchecked: true, ..
                        } => {
                            unchecked.fetch_add(1, Ordering::Relaxed);
                        }
                        ErrorCode::BadPassphrase { .. } => {
                            judged.lock().unwrap().push(started.elapsed())
                        }
                        other => panic!("brute force attempt: {other:?}"),
                    },
                    other => panic!("brute force attempt: {other:?}"),
                }
            }
        }));
    }
    // Others are served meanwhile.
    tokio::time::sleep(window / 2).await;
    let (_, status_took) = env.assert_serving().await;
    tokio::time::sleep(window - window / 2).await;
    let judged = std::mem::take(&mut *judged.lock().unwrap());
    for t in &tasks {
        t.abort();
    }
    let unchecked = unchecked.load(Ordering::Relaxed);
    let per_minute = judged.len() as f64 * 60.0 / window.as_secs_f64();
    figure(
        TEST,
        &format!(
            "{ATTACKERS} connections guessing for {window:?}, each as fast as it is answered: \
             {} wrong passphrases judged ({per_minute:.0}/min at this rate; the throttle's \
             doubling delay caps a sustained attack at 2/min after the 7th failure), {unchecked} \
             attempts refused unchecked at once; a new client's status took {status_took:.0?} \
             meanwhile; non-admin uids are refused before any check (tests/auth.rs)",
            judged.len(),
        ),
    );
    // 0 s, 0.5 s, 1.5 s, 3.5 s: four attempts fit in five seconds.
    assert!(
        (1..=5).contains(&judged.len()),
        "{} attempts judged in {window:?}",
        judged.len()
    );
    assert!(
        status_took < Duration::from_secs(1),
        "status took {status_took:?} during the brute force"
    );
}

/// Length of each peer's name in the large session.
const NAME_LEN: usize = 200;

/// Makes session `name` of `peers` peers with long names; returns the size of its export.
async fn big_session(c: &session_vault_client::Connection, name: &str, peers: i64) -> usize {
    let h = open_session(c, name, false).await;
    for first in (0..peers).step_by(1000) {
        let batch = (first..(first + 1000).min(peers))
            .map(|id| {
                let mut p = Peer::new(PeerKind::User, 1 + id);
                p.access_hash = Some(id);
                p.name = Some("n".repeat(NAME_LEN));
                p
            })
            .collect();
        let r = c
            .call(Request::CachePeers {
                handle: h,
                peers: batch,
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
    }
    match c.call(Request::ExportSession { name: name.into() }).await {
        Ok(r) => codec::encode_frame(&r).unwrap().len(),
        Err(e) => panic!("export: {e}"),
    }
}

/// Connects a client that pipelines `count` exports of `name` and never reads an answer.
async fn non_reader(env: &Env, name: &str, count: u32) -> tokio::task::JoinHandle<()> {
    let mut frames = Vec::new();
    for id in 2..count + 2 {
        frames.extend_from_slice(
            &codec::encode_frame(&ClientFrame {
                id,
                request: Request::ExportSession { name: name.into() },
            })
            .unwrap(),
        );
    }
    let hostile = Raw::connect_hello(&env.socket()).await;
    tokio::spawn(async move {
        let (_rd, mut wr) = hostile.stream.into_split();
        // Blocks once the daemon stops reading: that is the point. Aborting the task closes
        // the connection.
        let _ = wr.write_all(&frames).await;
        std::future::pending::<()>().await;
    })
}

/// The time a new client's `status` takes (at most `limit`; `None` past it).
async fn status_time(env: &Env, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let r = tokio::time::timeout(limit, async {
        let c = env.connect().await;
        c.call(Request::Status).await
    })
    .await;
    match r {
        Ok(Ok(_)) => Some(t.elapsed()),
        Ok(Err(e)) => panic!("status: {e}"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_large_answers_holds_bounded_memory() {
    const TEST: &str = "hostile/non-reader";
    let (peers, exports) = if super::long() {
        (3_000, 400)
    } else {
        (200, 300)
    };
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let export_len = big_session(&c, "big", peers).await;
    let rss_before = rss_kib(d.pid());
    // The connection keeps at most HEAVY_PER_CONN exports between their start and the write
    // of their answer; each may need a few times its size while it is built (rows, the
    // session, its encoding). Plus slack for the allocator and the runtime.
    let heavy = session_vault_daemon::server::conn::answers::HEAVY_PER_CONN;
    let held_bound = 4 * heavy * export_len;
    let bound_kib = (held_bound / 1024) as u64 + 16 * 1024;

    let mut peaks = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut stall_took = Vec::new();
    for _round in 0..2 {
        let t = Instant::now();
        let hostile = non_reader(&env, "big", exports).await;
        // The daemon works through what it lets in flight, then stops reading the client:
        // from then on others are served at once.
        let mut peak = rss_kib(d.pid());
        loop {
            let took = status_time(&env, Duration::from_secs(600))
                .await
                .expect("status within 600 s");
            slowest = slowest.max(took);
            peak = peak.max(rss_kib(d.pid()));
            if took < Duration::from_millis(200) && t.elapsed() > Duration::from_millis(500) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(600), "never settled");
        }
        stall_took.push(t.elapsed());
        let other = env.connect().await;
        let oh = open_session(&other, "other", false).await;
        let r = other
            .call(Request::SetHomeDc {
                handle: oh,
                dc_id: 3,
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
        peaks.push(peak.max(rss_kib(d.pid())));
        hostile.abort();
        // Its answers are dropped after the daemon's write grace period.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let rss_after = rss_kib(d.pid());
    figure(
        TEST,
        &format!(
            "a client pipelining {exports} exports of a {} KiB session and reading none, twice: \
             vaultd RSS {rss_before} KiB before, peaks {peaks:?} KiB, {rss_after} KiB after \
             (bound: {bound_kib} KiB over the start: {heavy} export running or held per \
             connection, at 4x its size, + 16 MiB); meanwhile a new client's status took up \
             to {slowest:.1?}, and under 200 ms from {stall_took:.1?} on (the test looks for \
             0.5 s at least; see `a_client_that_never_reads_stalls_nobody`)",
            export_len / 1024,
        ),
    );
    for p in &peaks {
        assert!(
            p - rss_before <= bound_kib,
            "vaultd grew by {} KiB (bound {bound_kib} KiB)",
            p - rss_before
        );
    }
    // The second round reuses the first's memory: nothing is leaked.
    assert!(
        peaks[1] <= peaks[0] + bound_kib / 4,
        "RSS kept growing: {peaks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_stalls_nobody() {
    const TEST: &str = "hostile/non-reader-stalls-nobody";
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let export_len = big_session(&c, "big", 2_000).await;
    // What one export costs here, for scale.
    let t = Instant::now();
    let r = c.call(Request::ExportSession { name: "big".into() }).await;
    assert!(matches!(r, Ok(Response::SessionData(_))), "export");
    let one_export = t.elapsed();
    let hostile = non_reader(&env, "big", 300).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(status_time(&env, Duration::from_secs(2)).await);
    }
    hostile.abort();
    // Once its connection is gone, the exports it queued are not run for nobody: after the
    // write grace period, vaultd is idle.
    tokio::time::sleep(WRITE_GRACE + Duration::from_millis(500)).await;
    let window = Duration::from_secs(1);
    let cpu_before = cpu_time(d.pid());
    tokio::time::sleep(window).await;
    let cpu_after_close = cpu_time(d.pid()) - cpu_before;
    figure(
        TEST,
        &format!(
            "while a client pipelined 300 exports of a {} KiB session (one export: \
             {one_export:.0?}) and read none, a new client's connect + status took {times:.0?}; \
             once it closed, vaultd used {cpu_after_close:?} of CPU in {window:?}",
            export_len / 1024
        ),
    );
    assert!(
        times.iter().all(|t| t.is_some()),
        "status while a client pipelines exports it never reads: {times:?} (None: over 2 s)"
    );
    assert!(
        cpu_after_close <= window / 5,
        "vaultd used {cpu_after_close:?} of CPU in {window:?} after the client closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_unlock_attempts_do_not_lock_the_admin_out() {
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    assert!(matches!(c.call(Request::Lock).await, Ok(Response::Ok)));
    // Eight wrong attempts, each from a client that gives up at once (a script with a
    // timeout, retrying): their connections close before they are answered.
    for i in 0..ATTACKERS {
        let mut r = Raw::connect_hello(&env.socket()).await;
        r.send_request(2, unlock_request(&format!("wrong {i}")))
            .await;
        drop(r);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // At most the first was judged (and earned 0.5 s). The right passphrase, sent again after
    // the wait it is told (as vaultctl does), must not wait for the abandoned ones
    // (0.5 + 1 + 2 + … + 30 s).
    let t = Instant::now();
    let mut waits = Vec::new();
    let r = loop {
        let r = tokio::time::timeout(Duration::from_secs(5), c.call(unlock_request(PASS))).await;
        match &r {
            Ok(Err(ClientError::Daemon(e))) if waits.len() < 3 => match e.code {
                ErrorCode::BadPassphrase { retry_after_ms, .. } => {
                    waits.push(retry_after_ms);
                    tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
                }
                _ => break r,
            },
            _ => break r,
        }
    };
    assert!(
        matches!(r, Ok(Ok(Response::Ok))),
        "the right passphrase was not accepted ({:?}, told to wait {waits:?} ms): {r:?}",
        t.elapsed()
    );
    assert!(
        waits.iter().sum::<u64>() <= 500,
        "the abandoned attempts extended the lockout: told to wait {waits:?} ms"
    );
}
