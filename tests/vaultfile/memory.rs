//! Key material in the daemon's memory after `lock` (issue 13, item 8). The test computes
//! what a running, unlocked `vaultd` holds (the DEK from the keyslot in `vault.db`, the HKDF
//! subkeys, the HMAC ipad/opad midstates of the index key and of HKDF's PRK), makes the
//! daemon use them on its storage thread and on runtime threads (inline reads and small
//! writes), and scans every readable mapping of the daemon (`/proc/PID/maps` and
//! `/proc/PID/mem`, as root: the daemon is not dumpable). Before `lock` the keys must be found
//! (the scan works); after it, none of them. The code before the fix kept the index key's
//! HMAC state (its midstates) and more after `lock`.

use hkdf::Hkdf;
use session_vault_daemon::vault::crypto::{KdfParams, Keyslot};
use session_vault_proto::message::{PeerQuery, Request, Response};
use session_vault_proto::model::{Peer, PeerKind};
use sha2::Sha256;
use sha2::digest::generic_array::GenericArray;

use super::*;

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// The SHA-256 state after compressing HMAC's `key ⊕ pad` block, as it sits in memory.
fn midstate(key: &[u8], pad: u8) -> Vec<u8> {
    let mut block = [pad; 64];
    for (b, k) in block.iter_mut().zip(key) {
        *b ^= k;
    }
    let mut state = SHA256_IV;
    sha2::compress256(&mut state, &[GenericArray::clone_from_slice(&block)]);
    state.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// Everything secret the unlocked daemon derives from the keyslot, by name.
fn secrets(env: &Env) -> Vec<(&'static str, Vec<u8>)> {
    let db = rusqlite::Connection::open(env.vault_db()).expect("open vault.db");
    let vault_id: Vec<u8> = db
        .query_row("SELECT v FROM meta WHERE k = 'vault_id'", [], |r| r.get(0))
        .expect("vault id");
    let slot = db
        .query_row(
            "SELECT slot, kind, m_cost, t_cost, p_cost, salt, wrapped, check_sum FROM keyslots",
            [],
            |r| {
                Ok(Keyslot {
                    slot: r.get(0)?,
                    kind: r.get(1)?,
                    kdf: KdfParams {
                        m_cost_kib: r.get(2)?,
                        t_cost: r.get(3)?,
                        p_cost: r.get(4)?,
                    },
                    salt: r.get(5)?,
                    wrapped: r.get(6)?,
                    check: r.get(7)?,
                })
            },
        )
        .expect("keyslot");
    let dek = slot
        .open(&vault_id, PASS.as_bytes())
        .expect("open the keyslot");
    let dek = dek.expose().to_vec();
    let (prk, hk) = Hkdf::<Sha256>::extract(Some(&vault_id), &dek);
    let mut record = [0u8; 32];
    let mut index = [0u8; 32];
    hk.expand(b"session-vault records v1", &mut record).unwrap();
    hk.expand(b"session-vault blind index v1", &mut index)
        .unwrap();
    vec![
        ("DEK", dek),
        ("record subkey", record.to_vec()),
        ("index subkey", index.to_vec()),
        ("index HMAC ipad midstate", midstate(&index, 0x36)),
        ("index HMAC opad midstate", midstate(&index, 0x5c)),
        ("HKDF PRK ipad midstate", midstate(&prk, 0x36)),
        ("HKDF PRK opad midstate", midstate(&prk, 0x5c)),
    ]
}

/// The names of the `secrets` found in the readable memory of process `pid`.
fn scan(pid: u32, secrets: &[(&'static str, Vec<u8>)]) -> Vec<&'static str> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let finders: Vec<_> = secrets
        .iter()
        .map(|(name, bytes)| (*name, memchr::memmem::Finder::new(bytes)))
        .collect();
    let mut found = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        if !perms.starts_with('r') || line.contains("[vvar") || line.contains("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        for (name, finder) in &finders {
            if !found.contains(name) && finder.find(&buf).is_some() {
                found.push(*name);
            }
        }
    }
    found
}

fn peer(i: i64) -> Peer {
    Peer {
        access_hash: Some(i),
        username: Some(format!("name{i}")),
        phone: Some(format!("+1555{i:04}")),
        ..Peer::new(PeerKind::User, 500 + i)
    }
}

/// Requests that run the record and index keys on both paths: small reads and writes inline
/// on runtime threads, batches and durable writes on the storage thread.
async fn work(c: &Connection) {
    let h = handle(c, "bot").await;
    ok(
        c,
        Request::SetDcOption {
            handle: h,
            option: dc(2, Some(4)),
        },
        "set dc",
    )
    .await;
    ok(
        c,
        Request::CachePeers {
            handle: h,
            peers: (0..100).map(peer).collect(),
        },
        "batch",
    )
    .await;
    for i in 100..120 {
        ok(
            c,
            Request::CachePeers {
                handle: h,
                peers: vec![peer(i)].into(),
            },
            "one peer",
        )
        .await;
    }
    for i in [3, 50, 110] {
        let r = c
            .call(Request::GetPeer {
                handle: h,
                query: PeerQuery::Username(format!("name{i}")),
            })
            .await;
        assert!(matches!(r, Ok(Response::Peer(Some(_)))), "{r:?}");
        let r = c.call(Request::GetDcOptions { handle: h }).await;
        assert!(matches!(r, Ok(Response::DcOptions(_))), "{r:?}");
    }
    let r = c.call(Request::ExportSession { name: "bot".into() }).await;
    assert!(matches!(r, Ok(Response::SessionData(_))), "{r:?}");
}

#[tokio::test]
async fn no_key_material_stays_in_memory_after_lock() {
    if !can_switch_uid() {
        eprintln!("skipped: reading another process's memory needs root");
        return;
    }
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    work(&c).await;
    drop(c);
    stop(d);
    let secrets = secrets(&env);

    let d = env.start();
    let c = env.connect().await;
    assert!(matches!(unlock_with(&c, PASS).await, Ok(Response::Ok)));
    work(&c).await;
    let before = scan(d.pid(), &secrets);
    eprintln!("found while unlocked: {before:?}");
    for name in ["DEK", "record subkey"] {
        assert!(
            before.contains(&name),
            "the scan must find the {name} while unlocked"
        );
    }
    // The index key is held as bytes now; builds before held only its HMAC state.
    assert!(
        before.contains(&"index subkey") || before.contains(&"index HMAC ipad midstate"),
        "the scan must find the index key (or its midstate) while unlocked"
    );

    ok(&c, Request::Lock, "lock").await;
    // A request after the lock, so that every runtime thread that served one moved on.
    let r = c.call(Request::Status).await;
    assert!(matches!(r, Ok(Response::Status(_))), "{r:?}");
    let after = scan(d.pid(), &secrets);
    assert!(
        after.is_empty(),
        "key material left in memory after lock: {after:?}"
    );
}
