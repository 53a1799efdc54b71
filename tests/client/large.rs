//! A session too large for the storage thread to read its peer map itself (more than 50k
//! peers: the daemon reads that map on a thread of its own, `sqlite::key_builds`) is served
//! after a restart, when its map must be read again, alongside another session's requests;
//! and a peer written afterwards is stored once and found.

use grammers_session::Session;

use super::{builder, restart, runtime, unlocked, user, user_id};
use crate::util::assert_success;

/// Peers of the large session: past the 50k the storage thread reads itself.
const BIG: i64 = 60_000;

fn big_peer(i: i64) -> grammers_session::types::PeerInfo {
    user(10_000_000 + i, i * 7 + 1)
}

#[test]
fn a_session_too_large_to_map_on_the_storage_thread_is_served_after_a_restart() {
    let rt = runtime();
    let (env, d) = unlocked();
    let open = |name: &'static str| {
        builder(&env.socket(), name)
            .warm_start(false)
            .peer_cache_capacity(0)
            .connect()
    };
    rt.block_on(async {
        let big = open("big").await.expect("open big");
        for start in (0..BIG).step_by(1000) {
            big.cache_peers((start..start + 1000).map(big_peer).collect())
                .await
                .expect("cache a batch");
        }
        let small = open("small").await.expect("open small");
        small
            .cache_peers((0..10).map(|i| user(5_000 + i, i + 3)).collect())
            .await
            .expect("cache the small session's peers");
    });
    // The daemon restarted: no session's map is in memory.
    let _d = restart(&env, d);
    rt.block_on(async {
        let (big, small) = tokio::join!(open("big"), open("small"));
        let (big, small) = (big.expect("reopen big"), small.expect("reopen small"));
        let reads_big = async {
            for k in 0..300 {
                let i = (k * 7919) % BIG;
                let found = big.peer(user_id(10_000_000 + i)).await.expect("look up");
                assert_eq!(found, Some(big_peer(i)), "big session's peer {i}");
            }
        };
        let reads_small = async {
            for k in 0..300 {
                let i = k % 10;
                let found = small.peer(user_id(5_000 + i)).await.expect("look up");
                assert_eq!(found, Some(user(5_000 + i, i + 3)));
            }
        };
        tokio::join!(reads_big, reads_small);
        // Written after the map was read elsewhere: numbered after every stored row.
        big.cache_peers(vec![big_peer(BIG), big_peer(0)])
            .await
            .expect("cache a new and a stored peer");
        assert_eq!(
            big.peer(user_id(10_000_000 + BIG)).await.expect("look up"),
            Some(big_peer(BIG))
        );
    });
    // Counted by the daemon (rows, not distinct ids): each peer stored once.
    let out = env.ctl(&["list", "--json"]);
    assert_success(&out, "vaultctl list --json");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list is JSON");
    let big = list
        .as_array()
        .expect("an array")
        .iter()
        .find(|s| s["name"] == "big")
        .expect("big is listed");
    assert_eq!(big["peer_count"], BIG + 1, "{big}");
}
