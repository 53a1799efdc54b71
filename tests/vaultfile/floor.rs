//! Floors for new keyslots, and record sizes (issue 13, item 9). The code before the fix
//! accepted a one-character passphrase and any KDF cost, and stored a DC option with an auth
//! key longer than one without.

use session_vault_proto::message::{ErrorCode, KdfSpec, Request, Response};

use super::*;

/// OWASP's Argon2id minimum, the daemon's floor.
const FLOOR_KDF: KdfSpec = KdfSpec {
    m_cost_kib: 19 * 1024,
    t_cost: 2,
    p_cost: 1,
};

/// Without `--insecure-allow-weak-kdf`, KDF parameters under the floor are `invalid_request`;
/// a passphrase under 8 characters is `weak_passphrase` for `init`, `passwd` and `rekey`.
#[tokio::test]
async fn weak_passphrases_and_kdf_parameters_are_refused() {
    let env = Env::new();
    let _d = env.start_strict();
    let c = env.connect().await;
    let weak = fails(
        &c,
        Request::Init {
            passphrase: passphrase(PASS),
            kdf: Some(CHEAP_KDF_SPEC),
        },
    );
    assert_eq!(weak.await, ErrorCode::InvalidRequest);
    let weak_t = KdfSpec {
        t_cost: 1,
        ..FLOOR_KDF
    };
    let r = fails(
        &c,
        Request::Init {
            passphrase: passphrase(PASS),
            kdf: Some(weak_t),
        },
    )
    .await;
    assert_eq!(r, ErrorCode::InvalidRequest);
    for short in ["x", "1234567", "ééééééé"] {
        let r = fails(
            &c,
            Request::Init {
                passphrase: passphrase(short),
                kdf: Some(FLOOR_KDF),
            },
        )
        .await;
        assert_eq!(r, ErrorCode::WeakPassphrase, "{short:?}");
    }
    // At the floor, with 8 characters, it works (Argon2 at 19 MiB, t = 2: a moment).
    match c
        .call(Request::Init {
            passphrase: passphrase("12345678"),
            kdf: Some(FLOOR_KDF),
        })
        .await
    {
        Ok(Response::Ok) => {}
        other => panic!("init at the floor: {other:?}"),
    }
    let r = fails(
        &c,
        Request::ChangePassphrase {
            recovery: false,
            old: passphrase("12345678"),
            new: passphrase("short"),
            kdf: Some(FLOOR_KDF),
        },
    )
    .await;
    assert_eq!(r, ErrorCode::WeakPassphrase);
    let r = fails(
        &c,
        Request::ChangePassphrase {
            recovery: false,
            old: passphrase("12345678"),
            new: passphrase(NEW_PASS),
            kdf: Some(CHEAP_KDF_SPEC),
        },
    )
    .await;
    assert_eq!(r, ErrorCode::InvalidRequest);
    let r = fails(
        &c,
        Request::Rekey {
            passphrase: passphrase("12345678"),
            kdf: Some(CHEAP_KDF_SPEC),
        },
    );
    assert_eq!(r.await, ErrorCode::InvalidRequest);
}

/// `vaultctl init` with a short passphrase fails on a normal test daemon too, even past
/// vaultctl's own strength check (`--weak-passphrase`): the daemon's length floor holds.
#[tokio::test]
async fn vaultctl_init_refuses_a_short_passphrase() {
    let env = Env::new();
    let _d = env.start();
    let pf = env.secret_file("short", "abc");
    let mut args = vec![
        "init",
        "--weak-passphrase",
        "--passphrase-file",
        pf.to_str().unwrap(),
    ];
    args.extend(CHEAP_KDF);
    let out = env.ctl(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("8 characters"), "{}", stderr(&out));
}

/// Every DC option record and every session record has one size, with or without an auth
/// key (temporary auth keys live in the session record's extras).
#[tokio::test]
async fn record_sizes_do_not_show_which_dcs_hold_auth_keys() {
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let with_key = handle(&c, "with-key").await;
    let _without = handle(&c, "without").await;
    for id in 1..=5 {
        let key = (id % 2 == 0).then_some(id as u8);
        ok(
            &c,
            Request::SetDcOption {
                handle: with_key,
                option: dc(id, key),
            },
            "set dc",
        )
        .await;
    }
    drop(c);
    stop(d);
    let db = rusqlite::Connection::open(env.vault_db()).expect("open vault.db");
    let distinct = |sql: &str| -> Vec<i64> {
        db.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        distinct("SELECT DISTINCT length(v) FROM dc_options").len(),
        1
    );
    assert_eq!(
        distinct("SELECT DISTINCT length(record) FROM sessions").len(),
        1
    );
}
