//! `vaultctl export`: back out byte for byte (strings) or field by field (files), checked
//! with the real libraries when the fixture venv exists.

use std::process::Command;

use serde_json::Value;

use super::{fixture, fixture_python, import_ok, import_stdin, key_hex, read_back, started};
use crate::util::{assert_success, stderr, stdout};

/// Loads `path` (a string or a file of `kind`) with the real library; `None` (and a message)
/// when the fixture venv is not installed.
fn library_reads(kind: &str, path: &std::path::Path) -> Option<Value> {
    let Some(py) = fixture_python() else {
        eprintln!(
            "skipping the {kind} check with the real library: no fixture venv \
             (run tests/fixtures/make_fixtures.sh)"
        );
        return None;
    };
    let out = Command::new(py)
        .arg(fixture("make_fixtures.py"))
        .args(["read", kind])
        .arg(path)
        .output()
        .expect("run the fixture venv's python");
    assert!(
        out.status.success(),
        "{kind} not readable by the library: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("JSON from make_fixtures.py read"))
}

#[tokio::test]
async fn strings_export_byte_for_byte() {
    let (env, _d) = started();
    for (file, format, kind) in [
        ("telethon-ipv4.string", "telethon-string", "telethon-string"),
        ("telethon-ipv6.string", "telethon-string", "telethon-string"),
        ("pyrogram-362.string", "pyrogram-string", "pyrogram-string"),
    ] {
        let text = std::fs::read(fixture(file)).unwrap();
        assert_success(&import_stdin(&env, &text, file, &[]), file);
        // To standard output (not a terminal here).
        let out = env.ctl(&["export", file, "--format", format]);
        assert_success(&out, "export");
        assert_eq!(stdout(&out).as_bytes(), &text[..], "{file}");
        assert!(
            stderr(&out).contains("plaintext credential"),
            "{}",
            stderr(&out)
        );
        // To a file: mode 0600, refused when it exists.
        let path = env.path().join(format!("{file}.out"));
        let p = path.to_str().unwrap();
        assert_success(
            &env.ctl(&["export", file, "--format", format, "-o", p]),
            "export -o",
        );
        assert_eq!(std::fs::read(&path).unwrap(), text, "{file}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = env.ctl(&["export", file, "--format", format, "-o", p]);
        assert_eq!(again.status.code(), Some(2), "{again:?}");
        assert!(stderr(&again).contains("exists"));
        assert_success(
            &env.ctl(&["export", file, "--format", format, "-o", p, "--force"]),
            "export --force",
        );
        if let Some(seen) = library_reads(kind, &path) {
            let e: Value =
                serde_json::from_slice(&std::fs::read(fixture("telethon-pyrogram.json")).unwrap())
                    .unwrap();
            let want = &e[file.trim_end_matches(".string")];
            assert_eq!(seen["auth_key"], want["auth_key"], "{file}");
            assert_eq!(seen["dc_id"], want["home_dc"], "{file}");
        }
    }
}

#[tokio::test]
async fn telethon_file_exports_field_by_field() {
    let (env, _d) = started();
    let src = fixture("telethon-v8.session");
    import_ok(&env, src.to_str().unwrap(), "t", &[]);
    let out_path = env.path().join("out.session");
    let out = env.ctl(&[
        "export",
        "t",
        "--format",
        "telethon-sqlite",
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert_success(&out, "export telethon-sqlite");
    assert!(stderr(&out).contains("plaintext credential"));
    // Imported back, it holds what the original did.
    import_ok(&env, out_path.to_str().unwrap(), "t2", &[]);
    let c = env.connect().await;
    let (_, a) = read_back(&c, "t").await;
    let (_, b) = read_back(&c, "t2").await;
    assert_eq!(a.home_dc, b.home_dc);
    assert_eq!(key_hex(&a, a.home_dc), key_hex(&b, b.home_dc));
    assert_eq!(a.self_user, b.self_user);
    assert_eq!(a.updates_state, b.updates_state);
    assert_eq!(a.sent_files, b.sent_files);
    assert_eq!(a.extras, b.extras);
    let mut pa = a.peers.clone();
    let mut pb = b.peers.clone();
    pa.sort_by_key(|p| (p.id, p.kind as u8));
    pb.sort_by_key(|p| (p.id, p.kind as u8));
    assert_eq!(pa, pb);
    // Telethon itself opens it (on a copy) and finds the same.
    if let Some(seen) = library_reads("telethon-sqlite", &out_path) {
        assert_eq!(seen["dc_id"], 2);
        assert_eq!(seen["address"], "149.154.167.51");
        assert_eq!(seen["takeout_id"], 4242);
        assert_eq!(seen["self_id"], 777_000_111);
        assert_eq!(
            seen["by_username"],
            serde_json::json!([123_456_789, 5_555_555_555i64])
        );
        assert_eq!(seen["entities"].as_array().unwrap().len(), 7);
        assert_eq!(
            Some(seen["auth_key"].as_str().unwrap().to_owned()),
            key_hex(&a, 2)
        );
    }
}

#[tokio::test]
async fn grammers_file_exports_field_by_field() {
    let (env, _d) = started();
    let src = fixture("grammers-011.sqlite");
    import_ok(&env, src.to_str().unwrap(), "g", &[]);
    let out_path = env.path().join("out.sqlite");
    let p = out_path.to_str().unwrap();
    assert_success(
        &env.ctl(&["export", "g", "--format", "grammers-sqlite", "-o", p]),
        "export grammers-sqlite",
    );
    import_ok(&env, p, "g2", &[]);
    let c = env.connect().await;
    let (_, a) = read_back(&c, "g").await;
    let (_, b) = read_back(&c, "g2").await;
    assert_eq!(a.home_dc, b.home_dc);
    assert_eq!(a.dc_options, b.dc_options);
    assert_eq!(a.self_user, b.self_user);
    assert_eq!(a.updates_state, b.updates_state);
    let mut pa = a.peers.clone();
    let mut pb = b.peers.clone();
    pa.sort_by_key(|p| (p.id, p.kind as u8));
    pb.sort_by_key(|p| (p.id, p.kind as u8));
    assert_eq!(pa, pb);
}

#[tokio::test]
async fn export_refusals() {
    let (env, _d) = started();
    import_ok(
        &env,
        fixture("pyrogram.session").to_str().unwrap(),
        "p",
        &[],
    );
    // A file format needs --output.
    let out = env.ctl(&["export", "p", "--format", "grammers-sqlite"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--output"));
    // No such session.
    let out = env.ctl(&["export", "nope", "--format", "telethon-string"]);
    assert_eq!(out.status.code(), Some(1));
}
