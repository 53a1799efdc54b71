//! The no-plaintext scan: after writing many sessions through the [`Vault`] API, the raw
//! bytes of `vault.db`, `vault.db-wal`, `vault.db-shm` and `vault.db-journal` (whichever
//! exist) hold none of the secrets written — auth keys (whole and in 16-byte windows), ids
//! and access hashes (little- and big-endian, SQLite's minimal big-endian, decimal text),
//! usernames, phones and names (as given and normalized) — while the vault is open (after a
//! commit, and after a timer flush) and after it is closed. The scan is shown to work by
//! finding what is plaintext by design (a session name, the application id).
//!
//! Also: deleted and overwritten ciphertext does not linger in the file after close
//! (`secure_delete=ON`).

use crate::vault::IfExists;
use std::collections::HashMap;
use std::time::Duration;

use rusqlite::params;
use session_vault_proto::model::{
    AuthKey, ChannelKind, DcOption, Peer, PeerKind, SentFile, SessionAcl, SessionData,
    SessionExtras, TmpAuthKey, UpdateStateChange,
};

use super::support::*;
use crate::vault::Vault;

/// One byte pattern that must not be on disk, with a label that names it without showing it.
struct Needle {
    label: String,
    bytes: Vec<u8>,
    /// Decimal text: found only as a whole number, not inside a longer run of digits (a
    /// PostgreSQL dump is full of timestamps and counters in which a 7-digit id occurs by
    /// chance; a leaked id would be written as a number of its own).
    whole_number: bool,
}

impl Needle {
    fn new(label: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Needle {
            label: label.into(),
            bytes: bytes.into(),
            whole_number: false,
        }
    }

    fn decimal(label: impl Into<String>, v: i64) -> Self {
        Needle {
            whole_number: true,
            ..Needle::new(label, v.to_string())
        }
    }
}

#[derive(Default)]
struct Secrets(Vec<Needle>);

impl Secrets {
    fn push(&mut self, label: String, bytes: Vec<u8>) {
        assert!(
            bytes.len() >= 4,
            "needle {label} too short to be distinctive"
        );
        self.0.push(Needle::new(label, bytes));
    }

    /// An integer in every binary and text form a leak could take. Forms that would be
    /// short runs of zeros or `ff`s (small numbers) are skipped: those occur by chance.
    fn number(&mut self, label: &str, v: i64) {
        let be = v.to_be_bytes();
        let pad = if v < 0 { 0xff } else { 0x00 };
        let significant = 8 - be.iter().take_while(|&&b| b == pad).count();
        if significant >= 3 {
            self.push(format!("{label} (i64 LE)"), v.to_le_bytes().to_vec());
            self.push(format!("{label} (i64 BE)"), be.to_vec());
        }
        if (4..8).contains(&significant) {
            // SQLite and MessagePack store integers big-endian in their minimal width.
            self.push(
                format!("{label} (minimal BE)"),
                be[8 - significant..].to_vec(),
            );
        }
        if v.unsigned_abs() >= 100_000 {
            self.0
                .push(Needle::decimal(format!("{label} (decimal)"), v));
        }
    }

    fn text(&mut self, label: &str, s: &str) {
        self.push(format!("{label} (text)"), s.as_bytes().to_vec());
        let lower = s.to_lowercase();
        if lower != s {
            self.push(format!("{label} (lower-case)"), lower.into_bytes());
        }
    }

    fn auth_key(&mut self, label: &str, key: &AuthKey) {
        let k = key.as_bytes();
        self.push(format!("{label} (256 bytes)"), k.to_vec());
        for at in [0, 120, 240] {
            self.push(
                format!("{label} (bytes {at}..+16)"),
                k[at..at + 16].to_vec(),
            );
        }
    }

    fn peer(&mut self, label: &str, p: &Peer) {
        self.number(&format!("{label} id"), p.id);
        if let Some(h) = p.access_hash {
            self.number(&format!("{label} access hash"), h);
        }
        if let Some(u) = &p.username {
            self.text(&format!("{label} username"), u);
        }
        if let Some(phone) = &p.phone {
            self.text(&format!("{label} phone"), phone);
            let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
            self.text(&format!("{label} phone digits"), &digits);
        }
        if let Some(n) = &p.name {
            self.text(&format!("{label} name"), n);
        }
    }

    fn session(&mut self, label: &str, d: &SessionData) {
        for dc in &d.dc_options {
            if let Some(k) = &dc.auth_key {
                self.auth_key(&format!("{label} dc {} auth key", dc.id), k);
            }
        }
        if let Some(me) = d.self_user {
            self.number(&format!("{label} self user id"), me.id);
        }
        for (i, p) in d.peers.iter().enumerate() {
            self.peer(&format!("{label} peer #{i}"), p);
        }
        for c in &d.updates_state.channels {
            self.number(&format!("{label} channel state id"), c.id);
        }
        for (i, f) in d.sent_files.iter().enumerate() {
            self.push(format!("{label} sent file #{i} md5"), f.md5_digest.clone());
            self.number(&format!("{label} sent file #{i} id"), f.id);
            self.number(&format!("{label} sent file #{i} hash"), f.hash);
        }
        if let Some(t) = d.extras.takeout_id {
            self.number(&format!("{label} takeout id"), t);
        }
        if let Some(tmp) = &d.extras.tmp_auth_key {
            self.auth_key(&format!("{label} temporary auth key"), &tmp.key);
        }
    }
}

/// A file's bytes indexed by their 4-byte prefixes, so that thousands of needles are
/// searched in linear time even in a debug build.
struct Haystack<'a> {
    name: &'a str,
    bytes: &'a [u8],
    at: HashMap<[u8; 4], Vec<u32>>,
}

impl<'a> Haystack<'a> {
    fn new(name: &'a str, bytes: &'a [u8]) -> Self {
        let mut at: HashMap<[u8; 4], Vec<u32>> = HashMap::new();
        for (i, w) in bytes.windows(4).enumerate() {
            at.entry([w[0], w[1], w[2], w[3]])
                .or_default()
                .push(i as u32);
        }
        Haystack { name, bytes, at }
    }

    fn find(&self, needle: &Needle) -> bool {
        let n = &needle.bytes[..];
        let head = [n[0], n[1], n[2], n[3]];
        let digit_at = |i: Option<usize>| {
            i.and_then(|i| self.bytes.get(i))
                .is_some_and(u8::is_ascii_digit)
        };
        self.at.get(&head).is_some_and(|starts| {
            starts.iter().any(|&i| {
                let i = i as usize;
                self.bytes[i..].starts_with(n)
                    && !(needle.whole_number
                        && (digit_at(i.checked_sub(1)) || digit_at(Some(i + n.len()))))
            })
        })
    }
}

/// Scans every database file for every needle; returns the labels found, with the file.
fn scan(t: &TestDir, needles: &[Needle]) -> Vec<String> {
    let files = read_db_files(t);
    let mut found = Vec::new();
    for (name, bytes) in &files {
        let hay = Haystack::new(name, bytes);
        for n in needles {
            if hay.find(n) {
                found.push(format!("{} in {}", n.label, hay.name));
            }
        }
    }
    found
}

/// The scan finds what is plaintext by design, so an empty result above means something.
fn assert_scan_works(t: &TestDir, when: &str) {
    let controls = [
        Needle::new("session name", b"plain-acct-1"),
        // SQLite's `application_id`; PostgreSQL's schema marker row.
        Needle::new(
            "application id",
            if t.pg.is_some() {
                &b"session-vault"[..]
            } else {
                b"SVLT"
            },
        ),
    ];
    let found = scan(t, &controls);
    for c in &controls {
        assert!(
            found.iter().any(|f| f.starts_with(&c.label)),
            "{when}: the scan did not find the {} (found: {found:?})",
            c.label
        );
    }
}

#[track_caller]
fn assert_no_plaintext(t: &TestDir, secrets: &Secrets, when: &str) {
    let files: Vec<String> = read_db_files(t).into_iter().map(|(n, _)| n).collect();
    assert!(!files.is_empty(), "{when}: no database file to scan");
    let found = scan(t, &secrets.0);
    assert!(
        found.is_empty(),
        "{when}: {} secrets found in plaintext in {files:?}: {found:?}",
        found.len()
    );
    assert_scan_works(t, when);
}

/// Writes three sessions through every write path of the API; returns what must stay secret
/// and one random peer per session to read back.
async fn write_sessions(vault: &Vault, rng: &mut Rng, secrets: &mut Secrets) -> Vec<Peer> {
    let mut probes = Vec::new();
    for s in 0..3u8 {
        let name = format!("plain-acct-{s}");
        let label = format!("session {s}");
        let mut data = full_session(s + 1);
        for dc in &mut data.dc_options {
            dc.auth_key = Some(auth_key(rng.next_u64()));
        }
        for i in 0..30 {
            data.peers.push(random_user(rng, &format!("{s}i{i}")));
        }
        secrets.session(&label, &data);
        let sid = vault
            .import(&name, data, IfExists::Refuse, SessionAcl::default())
            .await
            .expect("import");

        // Cache-class writes.
        let mut batch: Vec<Peer> = (0..20)
            .map(|i| random_user(rng, &format!("{s}c{i}")))
            .collect();
        let mut chan = Peer::new(PeerKind::Channel, (rng.next_u64() >> 20) as i64 | 1 << 40);
        chan.access_hash = Some(rng.next_u64() as i64);
        chan.channel_kind = Some(ChannelKind::Broadcast);
        chan.username = Some(format!("ChanSecret{:08x}", rng.next_u64() as u32));
        chan.name = Some(format!("Channel Title {:06}", rng.below(1_000_000)));
        batch.push(chan);
        for (i, p) in batch.iter().enumerate() {
            secrets.peer(&format!("{label} cached peer #{i}"), p);
        }
        probes.push(batch[3].clone());
        vault.cache_peers(sid, batch).await.expect("cache peers");
        let channel_id = (rng.next_u64() >> 20) as i64 | 1 << 41;
        secrets.number(&format!("{label} channel update id"), channel_id);
        vault
            .set_update_state(
                sid,
                UpdateStateChange::Channel {
                    id: channel_id,
                    pts: 77,
                },
            )
            .await
            .expect("set update state");
        let mut md5 = vec![0u8; 16];
        rng.fill(&mut md5);
        let file = SentFile {
            md5_digest: md5,
            file_size: 4096,
            file_type: 0,
            id: rng.next_u64() as i64,
            hash: rng.next_u64() as i64,
        };
        secrets.push(
            format!("{label} put sent file md5"),
            file.md5_digest.clone(),
        );
        secrets.number(&format!("{label} put sent file id"), file.id);
        secrets.number(&format!("{label} put sent file hash"), file.hash);
        vault.put_sent_file(sid, file).await.expect("sent file");

        // Durable writes.
        let key = auth_key(rng.next_u64());
        secrets.auth_key(&format!("{label} set dc 7 auth key"), &key);
        vault
            .set_dc_option(
                sid,
                DcOption {
                    id: 7,
                    ipv4: Some("10.9.8.7:443".parse().unwrap()),
                    ipv6: None,
                    auth_key: Some(key),
                },
            )
            .await
            .expect("set dc option");
        let extras = SessionExtras {
            takeout_id: Some(rng.next_u64() as i64),
            tmp_auth_key: Some(TmpAuthKey {
                dc_id: 2,
                key: auth_key(rng.next_u64()),
                expires_at: None,
            }),
            api_id: Some(611_335),
            test_mode: false,
        };
        secrets.number(
            &format!("{label} set takeout id"),
            extras.takeout_id.unwrap(),
        );
        secrets.auth_key(
            &format!("{label} set temporary key"),
            &extras.tmp_auth_key.as_ref().unwrap().key,
        );
        vault.set_extras(sid, extras).await.expect("set extras");
    }
    probes
}

#[tokio::test]
pub(super) async fn no_secret_reaches_the_disk_in_plaintext() {
    let t = TestDir::new();
    let vault = create_with(&t, flush_every(20)).await;
    let mut rng = Rng(0x0dd5_eed5);
    let mut secrets = Secrets::default();
    let probes = write_sessions(&vault, &mut rng, &mut secrets).await;
    assert!(secrets.0.len() > 1000, "the scan covers many secrets");

    // Open, everything committed (lock commits first).
    vault.lock().await.unwrap();
    assert_no_plaintext(&t, &secrets, "open, after lock");

    // Open, cache-class writes committed by the flush timer alone.
    vault.unlock(PASS).await.unwrap();
    let sid = vault.open_session("plain-acct-2").await.unwrap();
    let late: Vec<Peer> = (0..10)
        .map(|i| random_user(&mut rng, &format!("L{i}")))
        .collect();
    for (i, p) in late.iter().enumerate() {
        secrets.peer(&format!("late peer #{i}"), p);
    }
    vault.cache_peers(sid, late.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_no_plaintext(&t, &secrets, "open, after a timer flush");

    close(vault).await;
    assert_no_plaintext(&t, &secrets, "closed");

    // The secrets scanned for really were written: they read back.
    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    for (s, probe) in probes.iter().enumerate() {
        let sid = vault
            .open_session(&format!("plain-acct-{s}"))
            .await
            .unwrap();
        let got = vault.peer(sid, probe.key()).await.unwrap();
        assert_same(&got.as_ref(), &Some(probe), "probe peer");
    }
    let got = vault.peer(sid, late[9].key()).await.unwrap();
    assert_same(&got.as_ref(), &Some(&late[9]), "late peer");
    close(vault).await;
}

#[tokio::test]
async fn deleted_and_overwritten_ciphertext_does_not_linger() {
    const DOOMED: &str = "doomed-session-zq";
    let t = TestDir::new();
    let vault = create(&t).await;
    let mut rng = Rng(0xdead_5eed);
    let mut doomed = full_session(7);
    for i in 0..10 {
        doomed.peers.push(random_user(&mut rng, &format!("d{i}")));
    }
    vault
        .import(DOOMED, doomed, IfExists::Refuse, SessionAcl::default())
        .await
        .unwrap();
    let keeper = vault
        .import(
            "keeper",
            full_session(8),
            IfExists::Refuse,
            SessionAcl::default(),
        )
        .await
        .unwrap();
    close(vault).await;

    // The ciphertexts as stored: every blob of the doomed session, and the keeper's DC rows.
    let (doomed_blobs, keeper_dcs) = {
        let c = raw(&t.db());
        let id: i64 = c
            .query_row("SELECT id FROM sessions WHERE name = ?1", [DOOMED], |r| {
                r.get(0)
            })
            .unwrap();
        let mut blobs: Vec<Vec<u8>> = vec![
            c.query_row("SELECT record FROM sessions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap(),
        ];
        for table in ["dc_options", "peers", "state", "channels", "sent_files"] {
            let mut stmt = c
                .prepare(&format!("SELECT k, v FROM {table} WHERE session = ?1"))
                .unwrap();
            let rows = stmt
                .query_map(params![id], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .unwrap();
            for row in rows {
                let (k, v) = row.unwrap();
                blobs.push(k);
                blobs.push(v);
            }
        }
        let mut stmt = c
            .prepare("SELECT v FROM dc_options WHERE session = ?1 ORDER BY rowid")
            .unwrap();
        let dcs: Vec<Vec<u8>> = stmt
            .query_map([keeper.0], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        (blobs, dcs)
    };
    assert!(doomed_blobs.len() > 30);
    assert_eq!(keeper_dcs.len(), 6);

    let vault = open(&t);
    vault.unlock(PASS).await.unwrap();
    vault.delete_session(DOOMED).await.unwrap();
    // Overwrites the keeper's dc 4 row (the fourth, in insertion order) in place.
    vault
        .set_dc_option(
            keeper,
            DcOption {
                id: 4,
                ipv4: None,
                ipv6: None,
                auth_key: Some(auth_key(99)),
            },
        )
        .await
        .unwrap();
    close(vault).await;

    let needles = |blobs: &[Vec<u8>], what: &str| -> Vec<Needle> {
        blobs
            .iter()
            .enumerate()
            .map(|(i, b)| Needle::new(format!("{what} #{i}"), b.clone()))
            .collect()
    };
    let mut lingering = scan(&t, &needles(&doomed_blobs, "deleted blob"));
    lingering.extend(scan(&t, &[Needle::new("deleted session's name", DOOMED)]));
    assert!(
        lingering.is_empty(),
        "deleted data lingers after close: {lingering:?}"
    );
    // Exactly the overwritten DC row is gone; the five others are still found, which shows
    // that the scan finds ciphertext where it is.
    let found = scan(&t, &needles(&keeper_dcs, "keeper dc"));
    let gone: Vec<usize> = (0..keeper_dcs.len())
        .filter(|i| {
            !found
                .iter()
                .any(|f| f.starts_with(&format!("keeper dc #{i} ")))
        })
        .collect();
    assert_eq!(
        gone,
        [3],
        "only dc 4's old ciphertext is gone: found {found:?}"
    );
}

#[test]
fn a_decimal_needle_matches_only_a_whole_number() {
    let needles = [
        Needle::decimal("id", 4_000_003),
        Needle::new("raw", &b"4000003"[..]),
    ];
    let found = |text: &[u8]| -> Vec<&str> {
        let hay = Haystack::new("t", text);
        needles
            .iter()
            .filter(|n| hay.find(n))
            .map(|n| n.label.as_str())
            .collect()
    };
    assert_eq!(found(b"expires 1765064000003 ms"), ["raw"]);
    assert_eq!(found(b"40000031"), ["raw"]);
    assert_eq!(found(b"(4000003,"), ["id", "raw"]);
    assert_eq!(found(b"4000003"), ["id", "raw"]);
    assert_eq!(found(b"-4000003\n"), ["id", "raw"]);
    assert!(found(b"400000 3").is_empty());
}
