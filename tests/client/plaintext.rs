//! No plaintext at rest: what a grammers bot writes through `VaultSession` (auth keys,
//! access hashes, peer ids, channel ids) appears nowhere in the daemon's files — neither as
//! raw bytes, nor as little- or big-endian integers, nor as decimal text — while the daemon
//! runs (database and WAL) and after it stopped.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::path::Path;

use grammers_session::Session;
use grammers_session::types::{ChannelKind, DcOption, PeerAuth, PeerInfo, UpdateState};

use super::{open, runtime, unlocked};

/// A deterministic, well-mixed 64-bit sequence (splitmix64).
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn patterns_of(v: i64) -> Vec<Vec<u8>> {
    vec![
        v.to_le_bytes().to_vec(),
        v.to_be_bytes().to_vec(),
        v.to_string().into_bytes(),
    ]
}

/// Asserts no secret is in any file of `dir`, and that the session's name (plaintext by
/// design) is: a positive control that the scan reads what the daemon wrote.
fn scan(dir: &Path, secrets: &[(String, Vec<u8>)], when: &str) {
    let mut scanned = 0;
    let mut control = false;
    for entry in std::fs::read_dir(dir).expect("data dir") {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += 1;
        control |= bytes.windows(NAME.len()).any(|w| w == NAME.as_bytes());
        for (what, pattern) in secrets {
            assert!(
                !bytes.windows(pattern.len()).any(|w| w == &pattern[..]),
                "{when}: {what} found in plaintext in {}",
                path.display()
            );
        }
    }
    assert!(scanned > 0, "no files in {}", dir.display());
    assert!(
        control,
        "{when}: the session name is in no file: the scan reads nothing useful"
    );
}

const NAME: &str = "secret-bot";

#[test]
fn nothing_a_bot_writes_is_on_disk_in_plaintext() {
    let rt = runtime();
    let (env, d) = unlocked();
    let mut mix = Mix(0x5EED_0F5E_C2E7);
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    let mut keys = Vec::new();
    for dc in 1..=5 {
        let mut key = [0u8; 256];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&mix.next().to_le_bytes());
        }
        secrets.push((format!("auth key of DC {dc}"), key.to_vec()));
        secrets.push((
            format!("auth key of DC {dc} (first 16 bytes)"),
            key[..16].to_vec(),
        ));
        secrets.push((
            format!("auth key of DC {dc} (last 16 bytes)"),
            key[240..].to_vec(),
        ));
        keys.push((dc, key));
    }
    // Ids well above 2^32, so that any encoding of them takes all eight bytes.
    let mut peers = Vec::new();
    for i in 0..20 {
        let id = (1i64 << 33) + (mix.next() % ((1 << 39) - (1 << 33))) as i64;
        let hash = mix.next() as i64;
        secrets.extend(
            patterns_of(id)
                .into_iter()
                .map(|p| (format!("peer id {id}"), p)),
        );
        secrets.extend(
            patterns_of(hash)
                .into_iter()
                .map(|p| (format!("access hash {hash}"), p)),
        );
        peers.push(if i % 2 == 0 {
            PeerInfo::User {
                id,
                auth: Some(PeerAuth::from_hash(hash)),
                bot: Some(false),
                is_self: Some(i == 0),
            }
        } else {
            PeerInfo::Channel {
                id,
                auth: Some(PeerAuth::from_hash(hash)),
                kind: Some(ChannelKind::Megagroup),
            }
        });
    }
    let channel_ids: Vec<i64> = peers
        .iter()
        .filter_map(|p| match p {
            PeerInfo::Channel { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    rt.block_on(async {
        let s = open(&env, NAME).await;
        for (dc, key) in &keys {
            s.set_dc_option(&DcOption {
                id: *dc,
                ipv4: SocketAddrV4::new(Ipv4Addr::new(149, 154, 167, 50), 443),
                ipv6: SocketAddrV6::new(Ipv6Addr::LOCALHOST, 443, 0, 0),
                auth_key: Some(*key),
            })
            .await
            .unwrap();
        }
        s.cache_peers(peers.clone()).await.unwrap();
        for &id in &channel_ids {
            s.set_update_state(UpdateState::Channel { id, pts: 12345 })
                .await
                .unwrap();
        }
        // Everything is there (the writes were not lost), then the files are scanned.
        for p in &peers {
            assert_eq!(s.peer(p.id()).await.unwrap().as_ref(), Some(p));
        }
        assert_eq!(s.dc_option(3).unwrap().unwrap().auth_key, Some(keys[2].1));
    });
    // Cache-class writes reach the disk within the flush interval; the durable ones (auth
    // keys) are already there. Scan while the daemon runs (WAL) …
    std::thread::sleep(std::time::Duration::from_millis(300));
    scan(&env.data_dir(), &secrets, "while running");
    // … and after a clean stop (checkpointed database).
    assert!(d.terminate().success());
    scan(&env.data_dir(), &secrets, "after stop");
}
