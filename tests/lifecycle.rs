//! The full lifecycle: uninitialized → init → unlocked → lock → locked → wrong unlock →
//! unlock → restart → locked → unlock → data intact.

use crate::util::*;

#[test]
fn full_lifecycle() {
    let env = Env::new();
    let d = env.start();
    let status = |env: &Env| {
        let out = env.ctl(&["status", "--json"]);
        assert_success(&out, "status");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("status --json is JSON")
    };
    assert_eq!(status(&env)["state"], "uninitialized");
    env.init();
    assert_eq!(status(&env)["state"], "unlocked");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use session_vault_proto::message::{Request, Response};
        let c = env.connect().await;
        let r = c
            .call(Request::OpenSession {
                name: "bot".into(),
                exclusive: true,
                create_if_missing: true,
            })
            .await
            .unwrap();
        let Response::Opened {
            handle,
            created,
            home_dc,
            dc_options,
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert!(created);
        assert_eq!(home_dc, 2);
        assert_eq!(dc_options.len(), 5);
        c.call(Request::SetHomeDc { handle, dc_id: 4 })
            .await
            .unwrap();
    });
    assert_success(&env.ctl(&["lock"]), "lock");
    assert_eq!(status(&env)["state"], "locked");
    let bad = env.unlock("wrong passphrase");
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).to_lowercase().contains("wrong passphrase"),
        "{}",
        stderr(&bad)
    );
    assert!(!stderr(&bad).contains("wrong passphrase\n\n"));
    assert_eq!(status(&env)["state"], "locked");
    assert_success(&env.unlock(PASS), "unlock");
    assert_eq!(status(&env)["state"], "unlocked");
    assert!(d.terminate().success());

    let _d = env.start();
    assert_eq!(status(&env)["state"], "locked");
    assert_success(&env.unlock(PASS), "unlock after restart");
    let list = env.ctl(&["list", "--json"]);
    assert_success(&list, "list");
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["name"], "bot");
    assert_eq!(v[0]["home_dc"], 4);
}
