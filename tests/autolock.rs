//! `vaultd --auto-lock-after`: the vault locks itself after that long without a request, and
//! requests (but not `status`) keep it unlocked.

use std::time::{Duration, Instant};

use crate::util::*;

fn state(env: &Env) -> String {
    let out = env.ctl(&["status", "--json"]);
    assert_success(&out, "status");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    v["state"].as_str().expect("state").to_owned()
}

#[test]
fn an_idle_vault_locks_itself_and_activity_keeps_it_open() {
    let env = Env::new();
    let d = env.start_with(&["--auto-lock-after", "2s"]);
    env.init();
    assert_eq!(state(&env), "unlocked");

    // Requests every 300 ms for 3 s (longer than the period): it stays unlocked.
    let busy_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < busy_until {
        assert_success(&env.ctl(&["list"]), "list");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(state(&env), "unlocked", "locked while in use");

    // Then only `status` polls, which do not count: it locks within the period (and a
    // little scheduling slack).
    let since = Instant::now();
    while state(&env) == "unlocked" {
        assert!(
            since.elapsed() < Duration::from_secs(15),
            "not locked after 15 s idle"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        since.elapsed() >= Duration::from_millis(1500),
        "locked after {:?}, before the period",
        since.elapsed()
    );
    assert!(
        d.log().contains("no request for --auto-lock-after"),
        "{}",
        d.log()
    );
    // An unlock works as usual, and the clock starts again.
    assert_success(&env.unlock(PASS), "unlock");
    assert_eq!(state(&env), "unlocked");
}
