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
    let d = env.start_with(&["--auto-lock-after", "3s"]);
    env.init();
    assert_eq!(state(&env), "unlocked");

    // Requests every 300 ms for 4 s (longer than the period): it stays unlocked. The period
    // leaves a loaded machine 2.7 s to start the next vaultctl.
    let busy_until = Instant::now() + Duration::from_secs(4);
    let mut last_request = Instant::now();
    while Instant::now() < busy_until {
        last_request = Instant::now();
        assert_success(&env.ctl(&["list"]), "list");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(state(&env), "unlocked", "locked while in use");

    // Then only `status` polls, which do not count: it locks within the period (and a
    // little scheduling slack). The daemon saw the last `list` after it was started, so the
    // lock cannot come sooner than a period after that start.
    while state(&env) == "unlocked" {
        assert!(
            last_request.elapsed() < Duration::from_secs(20),
            "not locked after 20 s idle"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        last_request.elapsed() >= Duration::from_secs(3),
        "locked {:?} after the last request, before the period",
        last_request.elapsed()
    );
    // The daemon logs why after it has locked: the line may trail the state a little.
    poll_until(Duration::from_secs(10), "the auto-lock's log line", || {
        d.log().contains("no request for --auto-lock-after")
    });
    // An unlock works as usual, and the clock starts again.
    assert_success(&env.unlock(PASS), "unlock");
    assert_eq!(state(&env), "unlocked");
}
