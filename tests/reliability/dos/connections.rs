//! Connection floods: idle connections of several uids up to the descriptor limit while root
//! unlocks; one uid beyond its connection cap; idle connections without a session handle; one
//! connection opening handle after handle.

use std::path::Path;
use std::time::{Duration, Instant};

use session_vault_proto::codec;
use session_vault_proto::message::{ErrorCode, Request, Response, ServerFrame};

use super::super::load::connections::raise_fd_limit;
use super::super::{figure, percentile, rss_kib};
use super::{FLOOD_UID, Flooder, durable_writes, ms, rss_sampler, say};
use crate::util::raw::Raw;
use crate::util::*;

/// Connections one flooding uid opens in [`idle_connections_up_to_the_fd_limit_do_not_lock_the_admin_out`]:
/// under the default per-uid cap (256), so that together they reach the total cap.
const PER_FLOODER: usize = 250;
/// Flooding uids: 5 × 250 = 1,250 connections, more than a daemon with 1,024 descriptors
/// can hold.
const FLOODERS: u32 = 5;

/// The child side of mode `hello`: connects, says hello, prints what came back
/// (`answer welcome`, `answer error CODE MESSAGE`, `answer closed` or `answer failed E`).
/// A refusal is answered where the daemon has room ([`REFUSALS_AT_ONCE`] at once): during a
/// burst of refusals a connection may be closed unanswered, so a closed or reset connection
/// is tried again, up to 40 times, 50 ms apart.
///
/// [`REFUSALS_AT_ONCE`]: session_vault_daemon::server::limits::REFUSALS_AT_ONCE
pub async fn hello_child(socket: &Path) {
    let mut answer = String::new();
    for _ in 0..40 {
        answer = hello_once(socket).await;
        if !answer.starts_with("closed") && !answer.starts_with("failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say(&format!("answer {answer}"));
}

async fn hello_once(socket: &Path) -> String {
    let Ok(stream) = tokio::net::UnixStream::connect(socket).await else {
        return "failed to connect".into();
    };
    let mut r = Raw { stream };
    r.send_request(
        1,
        crate::util::raw::hello(session_vault_proto::message::PROTOCOL_MAJOR),
    )
    .await;
    let read = codec::read_message::<_, ServerFrame>(&mut r.stream, u32::MAX);
    let Ok(answer) = tokio::time::timeout(Duration::from_secs(5), read).await else {
        return "none within 5 s".into();
    };
    match answer.map(|f| f.map(|f| f.response)) {
        Ok(Some(Response::Welcome { .. })) => "welcome".into(),
        Ok(Some(Response::Error(e))) => format!("error {:?} {}", e.code, e.message),
        Ok(Some(other)) => format!("other {other:?}"),
        Ok(None) => "closed".into(),
        Err(e) => format!("failed {e}"),
    }
}

/// Reads one frame or EOF from `r`, for at most `limit`: `Some(None)` is EOF (or a reset).
async fn frame_or_eof(r: &mut Raw, limit: Duration) -> Option<Option<ServerFrame>> {
    let read = codec::read_message::<_, ServerFrame>(&mut r.stream, u32::MAX);
    // A reset counts as closed, like an EOF.
    tokio::time::timeout(limit, read)
        .await
        .ok()
        .map(|r| r.ok().flatten())
}

/// The child side of mode `idle-check:SECS` (run as a non-admin uid against a daemon whose
/// idle timeout is SECS): opens a connection that says only hello, one that opens a session
/// and then says nothing, and one that asks `status` every SECS / 3; after 2.5 × SECS it
/// prints `idle closed-after MS|open`, `handle open|closed`, `busy open|closed`.
pub async fn idle_check_child(socket: &Path, secs: u64) {
    let timeout = Duration::from_secs(secs);
    let started = Instant::now();
    let mut idle = Raw::connect_hello(socket).await;
    let mut bot = Raw::connect_hello(socket).await;
    let opened = bot
        .call(
            2,
            Request::OpenSession {
                name: "~/idle-bot".into(),
                exclusive: true,
                create_if_missing: true,
            },
        )
        .await;
    assert!(matches!(opened, Response::Opened { .. }), "{opened:?}");
    let mut busy = Raw::connect_hello(socket).await;
    let busy_task = tokio::spawn(async move {
        let mut id = 2;
        let end = Instant::now() + timeout * 5 / 2;
        while Instant::now() < end {
            tokio::time::sleep(timeout / 3).await;
            id += 1;
            busy.send_request(id, Request::Status).await;
            match busy.recv().await {
                Some(f) if matches!(f.response, Response::Status(_)) => {}
                _ => return "closed",
            }
        }
        "open"
    });
    let idle_closed = match frame_or_eof(&mut idle, timeout * 5 / 2).await {
        Some(None) => format!("closed-after {}", started.elapsed().as_millis()),
        Some(Some(f)) => format!("answered {:?}", f.response),
        None => "open".to_owned(),
    };
    say(&format!("idle {idle_closed}"));
    let busy = busy_task.await.expect("busy task");
    let bot = match bot.call(9, Request::Status).await {
        Response::Status(_) => "open",
        _ => "closed",
    };
    say(&format!("handle {bot}"));
    say(&format!("busy {busy}"));
}

/// Runs `vaultctl args` as root and returns whether it succeeded, its output and its time.
fn timed_ctl(env: &Env, args: &[&str]) -> (bool, String, Duration) {
    let t = Instant::now();
    let out = env.ctl(args);
    let text = format!("{}{}", stdout(&out), stderr(&out))
        .trim()
        .to_owned();
    (out.status.success(), text, t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_up_to_the_fd_limit_do_not_lock_the_admin_out() {
    const TEST: &str = "dos/fd-exhaustion";
    raise_fd_limit(2048);
    let env = Env::new();
    let d = Daemon::start_with_fd_limit(&env, 1024);
    let c = env.connect().await;
    env.init_proto(&c).await;
    // A bot connected before the flood, with its session open.
    let bot = open_session(&c, "bot", true).await;
    assert!(matches!(c.call(Request::Lock).await, Ok(Response::Ok)));
    let rss_start = rss_kib(d.pid());
    let (sampler_stop, sampler) = rss_sampler(d.pid());
    let t = Instant::now();
    let mut flooders = Vec::new();
    for i in 0..FLOODERS {
        let Some(f) = Flooder::spawn(
            &env,
            TEST,
            FLOOD_UID + 100 + i,
            &format!("idle:{PER_FLOODER}"),
        ) else {
            return;
        };
        flooders.push(f);
    }
    let opened: Vec<String> = flooders.iter().map(|f| f.wait_for("opened")).collect();
    let flood_took = t.elapsed();
    let (status_ok, status_out, status_took) = timed_ctl(&env, &["status"]);
    let pf = env.secret_file("unlock-pass", PASS);
    let (unlock_ok, unlock_out, unlock_took) =
        timed_ctl(&env, &["unlock", "--passphrase-file", pf.to_str().unwrap()]);
    // Another non-admin uid is refused, with a reason.
    let late = Flooder::spawn(&env, TEST, FLOOD_UID + 199, "hello:1").expect("flooder");
    let late_answer = late.wait_for("answer");
    // The bot's durable writes, with the flood still there.
    let writes = durable_writes(&c, bot, Duration::from_secs(1)).await;
    sampler_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.expect("RSS sampler");
    let refused_lines = d.log().matches("connection refused").count();
    figure(
        TEST,
        &format!(
            "vaultd with RLIMIT_NOFILE 1024; {FLOODERS} uids each opened {PER_FLOODER} \
             connections saying hello and reading nothing, in {flood_took:.1?} (opened/failed \
             per uid: {opened:?}); then another uid's hello: {late_answer:?}; root's `vaultctl \
             status`: {} in {status_took:.0?}; `vaultctl unlock`: {} in {unlock_took:.0?}; \
             {refused_lines} `connection refused` log lines; vaultd RSS {rss_start} KiB before, \
             peak {peak} KiB; then a bot connected before the flood made {} durable writes: \
             p50 {} / p99 {}",
            if status_ok { "ok" } else { "FAILED" },
            if unlock_ok { "ok" } else { "FAILED" },
            writes.len(),
            ms(percentile(&writes, 50)),
            ms(percentile(&writes, 99)),
        ),
    );
    assert!(status_ok, "vaultctl status failed: {status_out}");
    assert!(unlock_ok, "vaultctl unlock failed: {unlock_out}");
    assert!(
        status_took < Duration::from_secs(5),
        "status took {status_took:?}"
    );
    assert!(
        unlock_took < Duration::from_secs(5),
        "unlock took {unlock_took:?}"
    );
    assert!(
        late_answer.starts_with("error PermissionDenied too many connections"),
        "a non-admin uid past the total cap got {late_answer:?}"
    );
    assert!(
        (1..=10).contains(&refused_lines),
        "{refused_lines} refusal lines: not rate-limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_beyond_its_connection_cap_is_refused_while_another_uid_connects() {
    const TEST: &str = "dos/per-uid-cap";
    let cap = session_vault_daemon::server::limits::DEFAULT_MAX_CONNECTIONS_PER_UID as usize;
    let env = Env::new();
    // Root is not an admin here, so that this process is an ordinary uid at its cap.
    let _d = env.start_with(&["--admin-uid", "4242"]);
    let socket = env.socket();
    let mut mine = Vec::new();
    for _ in 0..cap {
        mine.push(Raw::connect_hello(&socket).await);
    }
    let mut refused = Vec::new();
    for _ in 0..10 {
        let mut r = Raw::connect(&socket).await;
        r.send_request(
            7,
            crate::util::raw::hello(session_vault_proto::message::PROTOCOL_MAJOR),
        )
        .await;
        let f = r.recv().await.expect("an answer to hello");
        match f.response {
            Response::Error(e) => {
                assert_eq!((f.id, e.code), (7, ErrorCode::PermissionDenied));
                refused.push(e.message);
            }
            other => panic!(
                "connection {} of one uid: {other:?}",
                cap + refused.len() + 1
            ),
        }
        r.expect_closed().await;
    }
    // The refused ones are closed; the admitted ones still work.
    let r = mine[0].call(9, Request::Status).await;
    assert!(matches!(r, Response::Status(_)), "{r:?}");
    // Another uid connects.
    let other = match Flooder::spawn(&env, TEST, FLOOD_UID + 200, "hello:1") {
        Some(f) => f.wait_for("answer"),
        None => "SKIPPED".to_owned(),
    };
    // A connection closed gives its place back.
    drop(mine.pop());
    let back = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut r = Raw::connect(&socket).await;
            r.send_request(
                1,
                crate::util::raw::hello(session_vault_proto::message::PROTOCOL_MAJOR),
            )
            .await;
            if let Some(f) = r.recv().await {
                if matches!(f.response, Response::Welcome { .. }) {
                    return r;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    figure(
        TEST,
        &format!(
            "one uid opened {cap} connections (its cap); 10 more got permission_denied to \
             their hello ({:?}) and were closed; another uid meanwhile: {other:?}; after one \
             of the {cap} closed, a new one got in: {}",
            refused[0],
            back.is_ok()
        ),
    );
    assert!(
        other == "welcome" || other == "SKIPPED",
        "another uid: {other}"
    );
    assert!(
        back.is_ok(),
        "the place of a closed connection did not come back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_without_a_session_are_closed_after_the_timeout() {
    const TEST: &str = "dos/idle-timeout";
    let env = Env::new();
    let (_d, c) = env.start_initialized(&["--idle-timeout-secs", "1"]).await;
    // An admin's (root's) connection is never timed out: it may sit at a prompt.
    let mut admin = Raw::connect_hello(&env.socket()).await;
    let Some(child) = Flooder::spawn(&env, TEST, FLOOD_UID + 300, "idle-check:1") else {
        return;
    };
    let idle = child.wait_for("idle");
    let handle = child.wait_for("handle");
    let busy = child.wait_for("busy");
    let admin_alive = matches!(admin.call(5, Request::Status).await, Response::Status(_));
    drop(c);
    figure(
        TEST,
        &format!(
            "idle timeout 1 s; a non-admin connection that said only hello: {idle} ms; one \
             with a session open, silent for 2.5 s: {handle}; one asking status every 0.33 s: \
             {busy}; root's connection, silent: {}",
            if admin_alive { "open" } else { "closed" }
        ),
    );
    let after: u64 = idle
        .strip_prefix("closed-after ")
        .unwrap_or_else(|| panic!("the idle connection was not closed: {idle}"))
        .parse()
        .expect("ms");
    assert!(after >= 900, "closed after {after} ms, before the timeout");
    assert_eq!(handle, "open", "a connection holding a session was closed");
    assert_eq!(busy, "open", "a connection sending requests was closed");
    assert!(admin_alive, "an admin's idle connection was closed");
}

/// A client opening a session again and again on one connection (any uid may, its own) grew
/// the daemon's handle table for the life of the connection. One connection holds at most
/// `MAX_HANDLES_PER_CONNECTION` handles: the next open is refused with `permission_denied`
/// until one is closed.
#[tokio::test]
async fn one_connection_holds_a_bounded_number_of_handles() {
    use futures_util::future::join_all;
    use session_vault_daemon::server::cmd::open::MAX_HANDLES_PER_CONNECTION;
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let open = || {
        c.call(Request::OpenSession {
            name: "many".into(),
            exclusive: false,
            create_if_missing: true,
        })
    };
    let mut handles = vec![opened(open().await)];
    while handles.len() < MAX_HANDLES_PER_CONNECTION {
        let n = (MAX_HANDLES_PER_CONNECTION - handles.len()).min(64);
        for r in join_all((0..n).map(|_| open())).await {
            handles.push(opened(r));
        }
    }
    assert_eq!(err_code(open().await), ErrorCode::PermissionDenied);
    let r = c.call(Request::CloseSession { handle: handles[0] }).await;
    assert!(matches!(r, Ok(Response::Ok)), "close: {r:?}");
    opened(open().await);
    // Another connection has its own bound.
    let other = env.connect().await;
    opened(
        other
            .call(Request::OpenSession {
                name: "many".into(),
                exclusive: false,
                create_if_missing: false,
            })
            .await,
    );
}
