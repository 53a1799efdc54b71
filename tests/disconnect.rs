//! `vaultctl disconnect`: an admin ends the connections of a session's clients, or of a
//! process; their leases are free at once, the clients' next requests fail.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use session_vault_client::Connection;
use session_vault_proto::message::{ErrorCode, Request, Response};

use crate::util::child::{As, ChildClient};
use crate::util::*;

fn open_req(name: &str, exclusive: bool) -> Request {
    Request::OpenSession {
        name: name.into(),
        exclusive,
        create_if_missing: false,
    }
}

fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {:?} stderr {:?}",
        stdout(out),
        stderr(out)
    );
}

/// The lease holder's pid `list` reports for `name`.
async fn holder_pid(c: &Connection, name: &str) -> Option<u32> {
    match c.call(Request::ListSessions).await {
        Ok(Response::Sessions(list)) => {
            list.into_iter()
                .find(|s| s.summary.name == name)
                .unwrap_or_else(|| panic!("{name} not listed"))
                .lease_holder_pid
        }
        other => panic!("list: {other:?}"),
    }
}

#[tokio::test]
async fn disconnect_by_name_ends_the_client_and_frees_its_lease() {
    let env = Env::new();
    let (d, admin) = env.start_initialized(&[]).await;
    let idle = open_session(&admin, "idle", false).await;
    admin
        .call(Request::CloseSession { handle: idle })
        .await
        .unwrap();
    let holder = env.connect().await;
    let h = open_session(&holder, "bot", true).await;
    // A shared handle of another connection on another session is left alone.
    let bystander = env.connect().await;
    let b = open_session(&bystander, "other", false).await;
    let busy = ErrorCode::SessionBusy {
        holder_pid: Some(std::process::id()),
    };
    let second = env.connect().await;
    assert_eq!(err_code(second.call(open_req("bot", true)).await), busy);

    let out = env.ctl(&["disconnect", "bot"]);
    assert_success(&out, "disconnect bot");
    assert_eq!(
        stdout(&out).trim(),
        "Disconnected 1 client(s) of session \"bot\"."
    );
    // The lease was given back before the answer: a second client takes it at once.
    assert_eq!(holder_pid(&admin, "bot").await, None);
    let h2 = opened(second.call(open_req("bot", true)).await);
    // The disconnected client's next request fails: its handle ended, or its connection is
    // closed already.
    let r = holder.call(Request::GetHomeDc { handle: h }).await;
    assert!(r.is_err(), "a request after disconnect: {r:?}");
    let t = Instant::now();
    while !holder.is_closed() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the connection is still open 5 s after disconnect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Others go on.
    let r = bystander.call(Request::GetHomeDc { handle: b }).await;
    assert!(matches!(r, Ok(Response::HomeDc(_))), "{r:?}");
    let r = second.call(Request::GetHomeDc { handle: h2 }).await;
    assert!(matches!(r, Ok(Response::HomeDc(_))), "{r:?}");

    // The daemon's log names the admin, the target and the count.
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("clients disconnected"))
        .unwrap_or_else(|| panic!("no disconnect line in the log:\n{log}"));
    for part in ["uid=0", "session=bot", "connections=1"] {
        assert!(line.contains(part), "{part} not in {line:?}");
    }

    // Nobody connected to a session: exit 1, saying so.
    let out = env.ctl(&["disconnect", "idle"]);
    assert_exit(&out, 1, "disconnect idle");
    assert!(
        stderr(&out).contains("no client of session \"idle\" is connected"),
        "{}",
        stderr(&out)
    );
    // An unknown session is an error too.
    assert_exit(&env.ctl(&["disconnect", "ghost"]), 1, "disconnect ghost");
    // No target is a usage error.
    assert_exit(&env.ctl(&["disconnect"]), 2, "disconnect without target");
    env.assert_serving().await;
}

#[tokio::test]
async fn disconnect_by_pid_ends_that_process_s_connections() {
    let env = Env::new();
    let (_d, admin) = env.start_initialized(&[]).await;
    for name in ["bot", "spare"] {
        let h = open_session(&admin, name, false).await;
        admin
            .call(Request::CloseSession { handle: h })
            .await
            .unwrap();
    }

    let holder = ChildClient::spawn(&env, As::Me, &[open_req("bot", true)], true);
    assert!(
        matches!(holder.response(), Response::Opened { .. }),
        "child open"
    );
    holder.wait_ready();
    let pid = holder.pid();
    assert_eq!(holder_pid(&admin, "bot").await, Some(pid));

    // A pid and a session that do not go together match nobody.
    let pid_arg = pid.to_string();
    let out = env.ctl(&["disconnect", "--pid", &pid_arg, "spare"]);
    assert_exit(
        &out,
        1,
        "disconnect --pid on a session the pid does not hold",
    );
    assert!(
        stderr(&out).contains(&format!(
            "no client of session \"spare\" is connected from pid {pid}"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(holder_pid(&admin, "bot").await, Some(pid));

    let out = env.ctl(&["disconnect", "--pid", &pid_arg]);
    assert_success(&out, "disconnect --pid");
    assert_eq!(
        stdout(&out).trim(),
        format!("Disconnected 1 client(s) of pid {pid}.")
    );
    assert_eq!(holder_pid(&admin, "bot").await, None);
    opened(admin.call(open_req("bot", true)).await);
    assert_eq!(holder_pid(&admin, "bot").await, Some(std::process::id()));

    let out = env.ctl(&["disconnect", "--pid", &pid_arg]);
    assert_exit(&out, 1, "disconnect --pid again");
    assert!(
        stderr(&out).contains(&format!("no client with pid {pid} is connected")),
        "{}",
        stderr(&out)
    );
    drop(holder);
    env.assert_serving().await;
}

#[tokio::test]
async fn a_non_admin_may_not_disconnect() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, admin) = env.start_initialized(&[]).await;
    env.open_socket_to_everyone();
    let h = open_session(&admin, "bot", true).await;
    let out = crate::cli::ctl_as_other(&env, &["disconnect", "bot"], Stdio::null());
    assert_exit(&out, 1, "disconnect as another uid");
    assert!(
        stderr(&out).contains("disconnect is an admin request"),
        "{}",
        stderr(&out)
    );
    // The holder is untouched.
    let r = admin.call(Request::GetHomeDc { handle: h }).await;
    assert!(matches!(r, Ok(Response::HomeDc(_))), "{r:?}");
    assert_eq!(holder_pid(&admin, "bot").await, Some(std::process::id()));
}

/// The Rust client takes an admin's disconnect as final: the daemon's `disconnected_by_admin`
/// event (protocol 1.4) makes its session fail with `DisconnectedByAdmin`, now and on every
/// later request, without reconnecting (so without taking the lease back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_does_not_reconnect_after_a_disconnect() {
    use session_vault_client::{VaultError, VaultSession};
    let env = Env::new();
    let (_d, admin) = env.start_initialized(&[]).await;
    let s = VaultSession::builder("bot")
        .socket(env.socket())
        .create_if_missing(true)
        .reconnect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    s.export().await.unwrap();
    assert_eq!(holder_pid(&admin, "bot").await, Some(std::process::id()));

    // Blocks this worker for the command; the other runs the client's reader.
    let out = env.ctl(&["disconnect", "bot"]);
    assert_success(&out, "disconnect bot");
    // Fails at once (not after the 30 s reconnect window) with the distinct error.
    let t = Instant::now();
    match s.export().await {
        Err(VaultError::DisconnectedByAdmin) => {}
        Err(e) => panic!("expected DisconnectedByAdmin, got {e:?}"),
        Ok(_) => panic!("expected DisconnectedByAdmin, got an export"),
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // And stays so; the lease stays free.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        s.export().await,
        Err(VaultError::DisconnectedByAdmin)
    ));
    assert_eq!(holder_pid(&admin, "bot").await, None);
    let other = env.connect().await;
    opened(other.call(open_req("bot", true)).await);
}

/// vaultctl reads the daemon's minor from `welcome` and refuses, before sending it, a
/// request the daemon is too old for: a fake daemon of protocol 1.2 and `disconnect` (1.3).
#[test]
fn vaultctl_names_the_protocol_version_a_request_needs() {
    use session_vault_proto::codec;
    use session_vault_proto::message::{ServerFrame, VaultState};
    use std::io::{Read, Write};
    let env = Env::new();
    std::fs::create_dir_all(env.socket().parent().unwrap()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(env.socket()).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut hello = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut hello).unwrap();
        let welcome = ServerFrame {
            id: 1,
            response: Response::Welcome {
                protocol_major: 1,
                protocol_minor: 2,
                server: "vaultd 0.0.9".into(),
                vault_state: VaultState::Unlocked,
            },
        };
        s.write_all(&codec::encode_frame(&welcome).unwrap())
            .unwrap();
        // Whatever comes next (nothing, if vaultctl checks first) until it closes.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        rest
    });
    let out = env.ctl(&["disconnect", "bot"]);
    assert_exit(&out, 1, "disconnect against a 1.2 daemon");
    assert!(
        stderr(&out)
            .contains("vaultd speaks protocol 1.2; `disconnect` needs 1.3 — upgrade vaultd"),
        "{}",
        stderr(&out)
    );
    assert!(server.join().unwrap().is_empty(), "the request was sent");
}
