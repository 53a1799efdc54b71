//! vaultd in a user namespace that does not map its clients (what systemd's `PrivateUsers=`
//! does): the kernel reports every unmapped uid and gid as the overflow id (65534), so two
//! different bots would look like one user. The daemon must refuse such peers at the
//! handshake instead of serving them as that one user, and keep serving the ids it can see.
//!
//! The daemon runs under `unshare --user --map-root-user`: root is the only mapped id, as in
//! a `PrivateUsers=yes` unit where root and the service user are.

use std::process::{Command, Stdio};

use session_vault_proto::message::{ErrorCode, Request, Response};

use crate::util::child::{As, ChildClient};
use crate::util::*;

/// Whether this host can run the test: root (to switch uids), `setpriv`, and an `unshare`
/// that may create a user namespace.
fn can_run() -> bool {
    can_switch_uid()
        && Command::new("unshare")
            .args(["--user", "--map-root-user", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn open_req(name: &str, create: bool) -> Request {
    Request::OpenSession {
        name: name.into(),
        exclusive: false,
        create_if_missing: create,
    }
}

#[tokio::test]
async fn unmapped_uids_are_refused_at_the_handshake_and_mapped_root_is_served() {
    if !can_run() {
        eprintln!("SKIPPED userns test: needs root, setpriv and `unshare --user --map-root-user`");
        return;
    }
    let env = Env::new();
    let d = Daemon::start_wrapped(&env, &["unshare", "--user", "--map-root-user"], &[]);
    // Root outside is root inside: mapped, served, and an admin.
    let c = env.connect().await;
    env.init_proto(&c).await;
    open_session(&c, "rootbot", false).await;
    env.open_socket_to_everyone();

    // Two different unprivileged uids. Before the fix both reached the daemon as 65534: the
    // first created "shared" (owned by 65534) and the second, another user, opened it.
    let a = ChildClient::spawn(
        &env,
        As::Other,
        &[open_req("shared", true), Request::Status],
        false,
    );
    let refused_a = a.handshake_error();
    let b = ChildClient::spawn(
        &env,
        As::User {
            uid: OTHER_UID_2,
            gid: OTHER_UID_2,
            groups: &[],
        },
        &[open_req("shared", false)],
        false,
    );
    let refused_b = b.handshake_error();
    for (who, e, pid) in [
        (OTHER_UID, refused_a, a.pid()),
        (OTHER_UID_2, refused_b, b.pid()),
    ] {
        assert_eq!(
            e.code,
            ErrorCode::PermissionDenied,
            "uid {who}: {}",
            e.message
        );
        assert!(
            e.message.contains("user namespace"),
            "uid {who}: the refusal does not say why: {}",
            e.message
        );
        // The refusal is sent before its log line is written: wait for the line.
        let names_pid = |log: &str| {
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(&format!("pid={pid}")))
        };
        let waited = std::time::Instant::now();
        while !names_pid(&d.log()) && waited.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let log = d.log();
        assert!(
            names_pid(&log),
            "no warning names pid {pid} (uid {who}):\n{log}"
        );
    }
    a.finish();
    b.finish();

    // Root is still served, and nothing the refused clients asked for happened.
    let (status, _) = env.assert_serving().await;
    assert_eq!(status.pid, d.pid());
    let Ok(Response::Sessions(list)) = c.call(Request::ListSessions).await else {
        panic!("list sessions as root")
    };
    let names: Vec<&str> = list.iter().map(|s| s.summary.name.as_str()).collect();
    assert_eq!(names, ["rootbot"]);
    let log = d.log();
    assert!(
        log.contains("user namespace"),
        "the warning does not name the likely cause:\n{log}"
    );
}
