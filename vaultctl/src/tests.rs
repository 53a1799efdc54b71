//! Unit tests of the command line and of the daemon link.

use std::path::Path;

use clap::CommandFactory;
use session_vault_client::ClientError;
use session_vault_proto::message::{ErrorCode, WireError};

use super::link::unchecked_wait;
use super::*;

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("vaultctl").chain(args.iter().copied()))
}

#[test]
fn sids_map_to_uids_and_gids() {
    let grantee = |args: &[&str]| match parse(args).unwrap().command {
        Command::Grant(g) => g.who,
        _ => unreachable!("a grant was parsed"),
    };
    let who = grantee(&["grant", "bot", "--sid", "S-1-5-21-1-2-3-1001"]);
    assert_eq!((who.uid(), who.gid()), (Some(0x30000 + 1001), None));
    assert_eq!(who.to_string(), "SID S-1-5-21-1-2-3-1001 (uid 197609)");
    let who = grantee(&["grant", "bot", "--group-sid", "S-1-5-32-545"]);
    assert_eq!((who.uid(), who.gid()), (None, Some(545)));
}

#[test]
fn usage_errors_are_clap_errors_with_exit_2() {
    for bad in [
        &["grant", "bot"][..],
        &["grant", "bot", "--uid", "1", "--gid", "2"],
        &["grant", "bot", "--sid", "S-1-5-32-544", "--uid", "1"],
        &["grant", "bot", "--sid", "S-1-1-0"],
        &["grant", "bot", "--group-sid", "WD"],
        &["revoke", "bot"],
        &["init", "--kdf-memory-kib", "65536"],
        &["unlock", "--passphrase-file", "a", "--passphrase-fd", "3"],
        &[
            "passwd",
            "--new-passphrase-file",
            "a",
            "--new-passphrase-fd",
            "3",
        ],
        &["unlock", "--passphrase", "hunter2"],
        &["rm"],
        &["disconnect"],
        &["disconnect", "--pid", "x"],
        &["bogus"],
    ] {
        let err = parse(bad).expect_err(&format!("{bad:?} should not parse"));
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn kdf_flags_go_together() {
    let cli = parse(&[
        "init",
        "--kdf-memory-kib",
        "8192",
        "--kdf-iterations",
        "2",
        "--kdf-parallelism",
        "1",
    ])
    .unwrap();
    let Command::Init(args) = cli.command else {
        panic!("parsed as {:?}", cli.command)
    };
    assert_eq!(
        args.kdf.spec(),
        Some(KdfSpec {
            m_cost_kib: 8192,
            t_cost: 2,
            p_cost: 1
        })
    );
    let cli = parse(&["init"]).unwrap();
    let Command::Init(args) = cli.command else {
        panic!("parsed as {:?}", cli.command)
    };
    assert_eq!(args.kdf.spec(), None);
}

#[test]
fn socket_is_global() {
    let cli = parse(&["status", "--socket", "/tmp/x.sock"]).unwrap();
    assert_eq!(cli.socket.as_deref(), Some(Path::new("/tmp/x.sock")));
    let cli = parse(&["--socket", "/tmp/y.sock", "lock"]).unwrap();
    assert_eq!(cli.socket.as_deref(), Some(Path::new("/tmp/y.sock")));
}

#[test]
fn only_an_unchecked_passphrase_is_sent_again() {
    let e = super::error::tests::daemon(
        ErrorCode::BadPassphrase {
            retry_after_ms: 400,
            unchecked: true,
        },
        "passphrase not checked: attempts are held back; after 400 ms",
    );
    assert_eq!(
        unchecked_wait(&e),
        Some(std::time::Duration::from_millis(400))
    );
    // A wrong passphrase: sending it again would only earn a longer delay, whatever the
    // message says.
    let e = super::error::tests::daemon(
        ErrorCode::BadPassphrase {
            retry_after_ms: 500,
            unchecked: false,
        },
        "passphrase not checked",
    );
    assert_eq!(unchecked_wait(&e), None);
    let e = super::error::tests::daemon(ErrorCode::Locked, "passphrase not checked");
    assert_eq!(unchecked_wait(&e), None);
}

#[test]
fn the_daemons_refusal_is_recognized() {
    // What vaultd's throttle answers (the server's `errors::not_judged`): the flag, not
    // the wording, is what vaultctl reads.
    let wire = WireError {
        code: ErrorCode::BadPassphrase {
            retry_after_ms: 1,
            unchecked: true,
        },
        message: "attempts are held back".into(),
    };
    let e = CtlError::client(Path::new("/run/v.sock"), ClientError::Daemon(wire));
    assert_eq!(
        unchecked_wait(&e),
        Some(std::time::Duration::from_millis(1))
    );
}

#[test]
fn unreachable_daemon_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let cli = parse(&["--socket", socket.to_str().unwrap(), "status"]).unwrap();
    let err = run(cli, &mut Vec::new()).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
    assert!(err.to_string().contains("none.sock"), "{err}");
}
