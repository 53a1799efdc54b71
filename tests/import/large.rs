//! A Telethon session with 100,000 entities: built by copying the fixture's schema (the
//! fixture file written by Telethon 1.45) and inserting rows with rusqlite, then imported
//! through `vaultctl` in one request. Timed (printed, not asserted).

use std::time::Instant;

use super::{fixture, read_back};
use crate::util::{Env, assert_success, stderr, stdout};

const ENTITIES: i64 = 100_000;

fn big_file(env: &Env) -> std::path::PathBuf {
    let path = env.path().join("big.session");
    std::fs::copy(fixture("telethon-v8.session"), &path).unwrap();
    let mut c = rusqlite::Connection::open(&path).unwrap();
    let tx = c.transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO entities VALUES (?1, ?2, ?3, ?4, ?5, 1700000000)")
            .unwrap();
        for i in 0..ENTITIES {
            // Users, chats and channels in turn, with usernames, phones and names.
            let (id, hash) = match i % 3 {
                0 => (1_000_000 + i, i * 7919),
                1 => (-(2_000_000 + i), 0),
                _ => (-(1_000_000_000_000 + 3_000_000 + i), -i * 104_729),
            };
            ins.execute(rusqlite::params![
                id,
                hash,
                format!("user_{i}"),
                (i % 3 == 0).then(|| format!("1555{i:07}")),
                format!("Name {i}")
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    path
}

#[tokio::test]
async fn a_telethon_file_with_100k_entities() {
    let env = Env::new();
    let path = big_file(&env);
    let src = path.to_str().unwrap();

    // With the default 1 MiB frame limit the daemon cannot take it: said plainly.
    {
        let _d = env.start_and_init();
        let out = env.ctl(&["import", src, "--name", "big"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("--max-frame-bytes"), "{err}");
        assert!(err.contains("Nothing was imported"), "{err}");
        let list = env.ctl(&["list", "--json"]);
        assert_eq!(stdout(&list).trim(), "[]");
    }

    // With a larger limit it goes through, in one transaction.
    let _d = env.start_with(&["--max-frame-bytes", "67108864"]);
    let unlock = env.unlock(crate::util::PASS);
    assert_success(&unlock, "unlock");
    let t = Instant::now();
    let out = env.ctl(&["import", src, "--name", "big"]);
    let elapsed = t.elapsed();
    assert_success(&out, "import 100k entities");
    assert!(stdout(&out).contains(&format!("peers:        {}", ENTITIES + 6)));
    eprintln!(
        "import of a Telethon file with {ENTITIES} entities ({} KiB): {elapsed:.2?}",
        std::fs::metadata(&path).unwrap().len() / 1024
    );
    let c = env.connect().await;
    let (_, data) = read_back(&c, "big").await;
    assert_eq!(data.peers.len() as i64, ENTITIES + 6);
}
