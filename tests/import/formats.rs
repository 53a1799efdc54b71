//! Each format imported through `vaultctl import` and read back over the protocol.

use serde_json::Value;
use session_vault_proto::message::{PeerQuery, Request, Response};

use super::{
    assert_peers, expected, fixture, import_ok, import_stdin, key_hex, read_back, started,
};
use crate::util::{assert_success, stderr, stdout};

fn i(v: &Value) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{v} is not an integer"))
}

#[tokio::test]
async fn telethon_sqlite_v8_and_v7() {
    let (env, _d) = started();
    for (json, key, name) in [
        ("telethon-pyrogram.json", "telethon-v8", "t8"),
        ("telethon-1.40.json", "telethon-v7-ipv6", "t7"),
    ] {
        let e = expected(json, key);
        let path = fixture(e["file"].as_str().unwrap());
        let out = import_ok(&env, path.to_str().unwrap(), name, &[]);
        assert!(out.contains("telethon-sqlite"), "{out}");
        assert!(
            out.contains(&format!("schema v{}", e["schema_version"])),
            "{out}"
        );
        assert!(out.contains("not mapped:"), "{out}");
        assert!(out.contains("peers:        6"), "{out}");

        let c = env.connect().await;
        let (handle, data) = read_back(&c, name).await;
        let home = i(&e["home_dc"]) as i32;
        assert_eq!(data.home_dc, home);
        assert_eq!(key_hex(&data, home).as_deref(), e["auth_key"].as_str());
        let dc = data.dc_options.iter().find(|d| d.id == home).unwrap();
        let addr = dc
            .ipv4
            .map(|a| a.ip().to_string())
            .or(dc.ipv6.map(|a| a.ip().to_string()));
        assert_eq!(addr.as_deref(), e["address"].as_str());
        assert_eq!(data.extras.takeout_id, e["takeout_id"].as_i64());
        assert_eq!(
            data.extras
                .tmp_auth_key
                .as_ref()
                .map(|t| super::hex(t.key.as_bytes())),
            e["tmp_auth_key"].as_str().map(str::to_owned)
        );
        assert_eq!(data.self_user.map(|u| u.id), Some(i(&e["self_id"])));
        assert_peers(&data, &e["peers"]);
        let st = &e["state"];
        assert_eq!(
            (
                data.updates_state.pts,
                data.updates_state.qts,
                data.updates_state.seq
            ),
            (
                i(&st["pts"]) as i32,
                i(&st["qts"]) as i32,
                i(&st["seq"]) as i32
            )
        );
        assert_eq!(data.updates_state.date, i(&st["date"]) as i32);
        let ch = &st["channels"][0];
        assert_eq!(data.updates_state.channels[0].id, i(&ch[0]));
        assert_eq!(data.updates_state.channels[0].pts, i(&ch[1]) as i32);
        assert_eq!(data.sent_files.len(), 2);

        // Usernames match case-insensitively, phones by digits; the self user is known.
        let by_name = c
            .call(Request::GetPeer {
                handle,
                query: PeerQuery::Username("@AliceExample".into()),
            })
            .await;
        let Ok(Response::Peer(Some(alice))) = by_name else {
            panic!("GetPeer by username: {by_name:?}")
        };
        assert_eq!(alice.access_hash, Some(5_555_555_555));
        let me = c
            .call(Request::GetPeer {
                handle,
                query: PeerQuery::SelfUser,
            })
            .await;
        assert!(
            matches!(&me, Ok(Response::Peer(Some(p))) if p.id == 777_000_111),
            "{me:?}"
        );
    }
}

#[tokio::test]
async fn telethon_strings_ipv4_ipv6_and_unpadded() {
    let (env, _d) = started();
    for key in ["telethon-ipv4", "telethon-ipv6"] {
        let e = expected("telethon-pyrogram.json", key);
        let text = std::fs::read_to_string(fixture(e["file"].as_str().unwrap())).unwrap();
        assert_eq!(text.trim().len() as i64, i(&e["length"]));
        // From standard input, with the padding a copy often loses.
        let bare = text.trim().trim_end_matches('=');
        let out = import_stdin(&env, bare.as_bytes(), key, &["--self-id", "4242"]);
        assert_success(&out, "import telethon string");
        let shown = stdout(&out);
        assert!(shown.contains("telethon-string"), "{shown}");
        assert!(shown.contains("user id:      4242"), "{shown}");
        let c = env.connect().await;
        let (_, data) = read_back(&c, key).await;
        let home = i(&e["home_dc"]) as i32;
        assert_eq!(data.home_dc, home);
        assert_eq!(key_hex(&data, home).as_deref(), e["auth_key"].as_str());
        let dc = data.dc_options.iter().find(|d| d.id == home).unwrap();
        let addr = if key.ends_with("ipv6") {
            dc.ipv6.map(|a| a.ip().to_string())
        } else {
            dc.ipv4.map(|a| a.ip().to_string())
        };
        assert_eq!(addr.as_deref(), e["address"].as_str());
        assert_eq!(data.self_user.map(|u| u.id), Some(4242));
    }
}

#[tokio::test]
async fn pyrogram_file_and_every_string_layout() {
    let (env, _d) = started();
    let e = expected("telethon-pyrogram.json", "pyrogram-file");
    let path = fixture("pyrogram.session");
    let out = import_ok(
        &env,
        path.to_str().unwrap(),
        "pf",
        &["--format", "pyrogram-sqlite"],
    );
    assert!(out.contains("schema v3"), "{out}");
    let c = env.connect().await;
    let (_, data) = read_back(&c, "pf").await;
    assert_eq!(data.home_dc, 2);
    assert_eq!(key_hex(&data, 2).as_deref(), e["auth_key"].as_str());
    assert_eq!(data.extras.api_id, Some(123_456));
    assert!(!data.extras.test_mode);
    let me = data.self_user.unwrap();
    assert_eq!((me.id, me.bot), (777_000_222, false));
    assert_peers(&data, &e["peers"]);

    for key in ["pyrogram-351", "pyrogram-356", "pyrogram-362"] {
        let e = expected("telethon-pyrogram.json", key);
        let text = std::fs::read(fixture(e["file"].as_str().unwrap())).unwrap();
        let out = import_stdin(&env, &text, key, &[]);
        assert_success(&out, key);
        assert!(stdout(&out).contains(&format!("{} characters", e["length"])));
        let (_, data) = read_back(&c, key).await;
        let home = i(&e["home_dc"]) as i32;
        assert_eq!(data.home_dc, home, "{key}");
        assert_eq!(
            key_hex(&data, home).as_deref(),
            e["auth_key"].as_str(),
            "{key}"
        );
        let me = data.self_user.unwrap();
        assert_eq!(
            (me.id, me.bot),
            (i(&e["user_id"]), e["bot"].as_bool().unwrap())
        );
        assert_eq!(
            data.extras.api_id.map(i64::from),
            e["api_id"].as_i64(),
            "{key}"
        );
        // No address in a Pyrogram string: Telegram's known table fills it.
        let dc = data.dc_options.iter().find(|d| d.id == home).unwrap();
        assert!(dc.ipv4.is_some(), "{key}");
    }
}

#[tokio::test]
async fn grammers_sqlite_and_tl_sessions() {
    let (env, _d) = started();
    let c = env.connect().await;
    for (key, name) in [
        ("grammers-011-sqlite", "g11"),
        ("grammers-08-tl", "g08"),
        ("grammers-07", "g07"),
    ] {
        let e = expected("grammers.json", key);
        let path = fixture(e["file"].as_str().unwrap());
        import_ok(&env, path.to_str().unwrap(), name, &[]);
        let (_, data) = read_back(&c, name).await;
        let home = i(&e["home_dc"]) as i32;
        assert_eq!(data.home_dc, home, "{key}");
        for dc in e["dcs"].as_array().unwrap() {
            let id = i(&dc["id"]) as i32;
            let got = data.dc_options.iter().find(|d| d.id == id).unwrap();
            assert_eq!(
                got.ipv4.map(|a| a.to_string()).as_deref(),
                dc["ipv4"].as_str(),
                "{key} DC {id} ipv4"
            );
            if let Some(v6) = dc["ipv6"].as_str() {
                assert_eq!(got.ipv6.map(|a| a.to_string()).as_deref(), Some(v6));
            }
            assert_eq!(
                key_hex(&data, id).as_deref(),
                dc["auth_key"].as_str(),
                "{key} DC {id}"
            );
        }
        let me = data.self_user.unwrap();
        assert_eq!(
            (me.id, me.bot),
            (i(&e["self_id"]), e["self_bot"].as_bool().unwrap())
        );
        let st = &e["state"];
        assert_eq!(data.updates_state.pts, i(&st["pts"]) as i32, "{key}");
        assert_eq!(data.updates_state.date, i(&st["date"]) as i32, "{key}");
        let channels: Vec<(i64, i32)> = data
            .updates_state
            .channels
            .iter()
            .map(|c| (c.id, c.pts))
            .collect();
        let want: Vec<(i64, i32)> = st["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (i(&c[0]), i(&c[1]) as i32))
            .collect();
        assert_eq!(channels, want, "{key}");
        if let Some(peers) = e.get("peers") {
            assert_peers(&data, peers);
        }
    }
}

#[tokio::test]
async fn replace_and_shred() {
    let (env, _d) = started();
    let copy = env.path().join("copy.session");
    std::fs::copy(fixture("telethon-v8.session"), &copy).unwrap();
    let src = copy.to_str().unwrap();
    import_ok(&env, src, "bot", &[]);
    // The name is taken: refused without --replace, and the file is kept.
    let out = env.ctl(&["import", src, "--name", "bot", "--shred"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(copy.exists());
    // ... and the refusal says how to replace it.
    let err = stderr(&out);
    assert!(err.contains("nothing was imported"), "{err}");
    assert!(err.contains("--replace"), "{err}");
    // With --replace it goes through, and --shred removes the file afterwards.
    let shown = import_ok(&env, src, "bot", &["--replace", "--shred"]);
    assert!(shown.contains("Shredded"), "{shown}");
    assert!(shown.contains("best effort"), "{shown}");
    assert!(!copy.exists());
    // --shred without a file is a usage error.
    let out = import_stdin(&env, b"x", "other", &["--shred"]);
    assert_eq!(out.status.code(), Some(2));
}
