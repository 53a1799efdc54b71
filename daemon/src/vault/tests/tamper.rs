//! Tampering with the SQLite file directly: every damaged, moved or swapped ciphertext reads
//! as `Corrupt` (never as data), and an edited keyslot makes `unlock` fail with `Corrupt`.
//!
//! Each case edits a fresh copy of one pristine vault (closed, so that its storage thread has
//! closed the file and removed its WAL), then reopens it through [`Vault`]. Which
//! operation surfaces the damage:
//! - `sessions.record`: `session_record`, `export`, `list_sessions`, `self_peer`, and writes
//!   that merge into the record (`set_home_dc`); `unlock` itself still succeeds;
//! - `dc_options.v`: `dc_options`, `export`;
//! - `peers.v`: `peer` (that peer only), `peer_by_username`/`_phone`, `export`;
//! - `state.v`: `updates_state`, `export`, and partial updates (`Primary`);
//! - `channels.v`: `updates_state`, `export`;
//! - `sent_files.v`: `sent_file`, `export`;
//! - `keyslots` (KDF parameters, salt, wrapped key, kind, slot number) and `meta.vault_id`:
//!   `unlock` and `change_passphrase`.
//!
//! The other session of the vault stays readable in every case: damage is reported where it
//! is, not spread. Keyslot tampering is in [`keyslots`].

use crate::vault::IfExists;
use rusqlite::{Connection, params};
use session_vault_proto::model::{SessionAcl, SessionData, UpdateStateChange};

use super::support::*;
use crate::vault::{EngineError, SessionId, Vault};

mod keyslots;

/// A closed vault with two full sessions, copied afresh for every case.
struct Fixture {
    pristine: TestDir,
    alpha: SessionData,
    beta: SessionData,
    alpha_id: i64,
    beta_id: i64,
}

impl Fixture {
    async fn new() -> Fixture {
        let pristine = TestDir::new();
        let vault = create(&pristine).await;
        let (alpha, beta) = (full_session(1), full_session(2));
        for (name, data) in [("alpha", &alpha), ("beta", &beta)] {
            vault
                .import(name, data.clone(), IfExists::Refuse, SessionAcl::default())
                .await
                .expect("import");
        }
        close(vault).await;
        let c = raw(&pristine.db());
        let id = |name: &str| -> i64 {
            c.query_row("SELECT id FROM sessions WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .expect("session id")
        };
        let (alpha_id, beta_id) = (id("alpha"), id("beta"));
        drop(c);
        Fixture {
            pristine,
            alpha,
            beta,
            alpha_id,
            beta_id,
        }
    }

    /// A fresh copy of the pristine vault, edited by `edit`, reopened and unlocked.
    async fn tampered(&self, edit: impl FnOnce(&Connection, &Fixture)) -> (TestDir, Vault) {
        let t = crash_image(&self.pristine);
        {
            let c = raw(&t.db());
            edit(&c, self);
        }
        let vault = open(&t);
        vault
            .unlock(PASS)
            .await
            .expect("record tampering does not affect unlock");
        (t, vault)
    }
}

/// Where a ciphertext lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// `sessions.record`.
    SessionRecord,
    /// Column `v` of a per-session table.
    Table(&'static str),
}

const PLACES: [Place; 6] = [
    Place::SessionRecord,
    Place::Table("dc_options"),
    Place::Table("peers"),
    Place::Table("state"),
    Place::Table("channels"),
    Place::Table("sent_files"),
];

/// The row of `place` damaged by default: the auth-key DC option (dc 4, the home DC), the
/// peer with every field set, the first of everything else.
fn default_nth(place: Place) -> usize {
    match place {
        Place::Table("dc_options") => 3,
        Place::Table("peers") => 1,
        _ => 0,
    }
}

/// `(row id, ciphertext)` of the `nth` row (in insertion order) of `session` at `place`.
fn read_value(c: &Connection, place: Place, session: i64, nth: usize) -> (i64, Vec<u8>) {
    let r = match place {
        Place::SessionRecord => c.query_row(
            "SELECT id, record FROM sessions WHERE id = ?1",
            [session],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ),
        Place::Table(t) => c.query_row(
            &format!(
                "SELECT rowid, v FROM {t} WHERE session = ?1 ORDER BY rowid LIMIT 1 OFFSET ?2"
            ),
            params![session, nth as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        ),
    };
    r.unwrap_or_else(|e| panic!("read {place:?} row {nth} of session {session}: {e}"))
}

fn write_value(c: &Connection, place: Place, rowid: i64, value: &[u8]) {
    let sql = match place {
        Place::SessionRecord => "UPDATE sessions SET record = ?2 WHERE id = ?1".to_owned(),
        Place::Table(t) => format!("UPDATE {t} SET v = ?2 WHERE rowid = ?1"),
    };
    let n = c.execute(&sql, params![rowid, value]).expect("write value");
    assert_eq!(n, 1, "exactly one row edited at {place:?}");
}

/// Ways of damaging one ciphertext.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// One bit of the format version byte.
    VersionByte,
    /// One bit of the nonce.
    Nonce,
    /// One bit in the middle of the ciphertext.
    Middle,
    /// One bit of the tag (last byte).
    Tag,
    /// Cut to 20 bytes.
    Truncated,
    /// Emptied.
    Empty,
}

const DAMAGES: [Damage; 6] = [
    Damage::VersionByte,
    Damage::Nonce,
    Damage::Middle,
    Damage::Tag,
    Damage::Truncated,
    Damage::Empty,
];

fn damaged(v: &[u8], d: Damage) -> Vec<u8> {
    let mut v = v.to_vec();
    let flip = |v: &mut Vec<u8>, i: usize| v[i] ^= 0x01;
    match d {
        Damage::VersionByte => flip(&mut v, 0),
        Damage::Nonce => flip(&mut v, 5),
        Damage::Middle => {
            let i = v.len() / 2;
            flip(&mut v, i)
        }
        Damage::Tag => {
            let i = v.len() - 1;
            flip(&mut v, i)
        }
        Damage::Truncated => v.truncate(20),
        Damage::Empty => v.clear(),
    }
    v
}

/// What a lookup gave compared with what was written.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Same,
    Corrupt,
    /// Anything else (a wrong value, `None`, another error): never acceptable here.
    Other(String),
}

fn seen<T: PartialEq>(r: crate::vault::Result<Option<T>>, want: &T) -> Seen {
    match r {
        Ok(Some(v)) if &v == want => Seen::Same,
        Err(EngineError::Corrupt { .. }) => Seen::Corrupt,
        Ok(Some(_)) => Seen::Other("a different value".into()),
        Ok(None) => Seen::Other("None".into()),
        Err(e) => Seen::Other(format!("{e:?}")),
    }
}

/// Each of the session's peers looked up by identity.
async fn peer_lookups(vault: &Vault, sid: SessionId, data: &SessionData) -> Vec<Seen> {
    let mut out = Vec::new();
    for p in &data.peers {
        out.push(seen(vault.peer(sid, p.key()).await, p));
    }
    out
}

/// The session reads back exactly as written.
async fn assert_intact(vault: &Vault, sid: SessionId, data: &SessionData, what: &str) {
    let got = vault.export(sid).await;
    assert!(got.is_ok(), "{what}: export failed: {}", outcome(&got));
    assert_same(
        &normalized(got.unwrap()),
        &normalized(data.clone()),
        &format!("{what}: exported data"),
    );
}

/// Asserts that the damage at `place` of session `sid` surfaces as `Corrupt` in every read
/// that touches it, and never as data.
async fn assert_damage_surfaces(vault: &Vault, sid: SessionId, data: &SessionData, place: Place) {
    let what = format!("{place:?}");
    assert_corrupt(&vault.export(sid).await, &format!("{what}: export"));
    match place {
        Place::SessionRecord => {
            assert_corrupt(&vault.session_record(sid).await, "session_record");
            assert_corrupt(&vault.list_sessions().await, "list_sessions");
            assert_corrupt(&vault.self_peer(sid).await, "self_peer");
            assert_corrupt(&vault.set_home_dc(sid, 1).await, "set_home_dc");
        }
        Place::Table("dc_options") => {
            assert_corrupt(&vault.dc_options(sid).await, "dc_options");
        }
        Place::Table("peers") => {
            let seen = peer_lookups(vault, sid, data).await;
            let corrupt = seen.iter().filter(|s| **s == Seen::Corrupt).count();
            let same = seen.iter().filter(|s| **s == Seen::Same).count();
            assert_eq!(
                (corrupt, same),
                (1, data.peers.len() - 1),
                "one peer corrupt, the others intact: {seen:?}"
            );
        }
        Place::Table("state") => {
            assert_corrupt(&vault.updates_state(sid).await, "updates_state");
            let primary = UpdateStateChange::Primary {
                pts: 1,
                date: 2,
                seq: 3,
            };
            assert_corrupt(
                &vault.set_update_state(sid, primary).await,
                "Primary on a damaged state",
            );
        }
        Place::Table("channels") => {
            assert_corrupt(&vault.updates_state(sid).await, "updates_state");
        }
        Place::Table("sent_files") => {
            let f = &data.sent_files[0];
            let r = vault
                .sent_file(sid, f.md5_digest.clone(), f.file_size, f.file_type)
                .await;
            assert_corrupt(&r, "sent_file");
        }
        Place::Table(other) => unreachable!("no checks for {other}"),
    }
}

#[tokio::test]
async fn damaged_ciphertext_in_any_table_reads_as_corrupt() {
    let f = Fixture::new().await;
    // Control: an unedited copy reads back intact, so every failure below is the damage's.
    let (_t, vault) = f.tampered(|_, _| {}).await;
    let (a, b) = (SessionId(f.alpha_id), SessionId(f.beta_id));
    assert_intact(&vault, a, &f.alpha, "control alpha").await;
    assert_intact(&vault, b, &f.beta, "control beta").await;
    close(vault).await;

    for place in PLACES {
        for damage in DAMAGES {
            let (_t, vault) = f
                .tampered(|c, f| {
                    let (rowid, v) = read_value(c, place, f.alpha_id, default_nth(place));
                    write_value(c, place, rowid, &damaged(&v, damage));
                })
                .await;
            assert_damage_surfaces(&vault, a, &f.alpha, place).await;
            assert_intact(&vault, b, &f.beta, &format!("beta, {place:?} {damage:?}")).await;
            close(vault).await;
        }
    }
}

#[tokio::test]
async fn record_copied_onto_another_row_of_the_same_session_is_corrupt() {
    let f = Fixture::new().await;
    let a = SessionId(f.alpha_id);
    // Peers: the first peer's record copied over the second's row (another peer's `k`).
    let (_t, vault) = f
        .tampered(|c, f| {
            let (_, first) = read_value(c, Place::Table("peers"), f.alpha_id, 0);
            let (second, _) = read_value(c, Place::Table("peers"), f.alpha_id, 1);
            write_value(c, Place::Table("peers"), second, &first);
        })
        .await;
    let seen = peer_lookups(&vault, a, &f.alpha).await;
    assert_eq!(seen[0], Seen::Same, "the copied-from peer is intact");
    assert_eq!(seen[1], Seen::Corrupt, "the overwritten peer: {seen:?}");
    assert!(seen[2..].iter().all(|s| *s == Seen::Same), "{seen:?}");
    let friend = &f.alpha.peers[1];
    let by_name = vault
        .peer_by_username(a, friend.username.as_deref().unwrap())
        .await;
    assert_corrupt(&by_name, "peer_by_username of the overwritten peer");
    let by_phone = vault
        .peer_by_phone(a, friend.phone.as_deref().unwrap())
        .await;
    assert_corrupt(&by_phone, "peer_by_phone of the overwritten peer");
    assert_corrupt(&vault.export(a).await, "export");
    close(vault).await;

    // Two peers' records swapped: both corrupt.
    let (_t, vault) = f
        .tampered(|c, f| {
            let (r0, v0) = read_value(c, Place::Table("peers"), f.alpha_id, 0);
            let (r1, v1) = read_value(c, Place::Table("peers"), f.alpha_id, 1);
            write_value(c, Place::Table("peers"), r0, &v1);
            write_value(c, Place::Table("peers"), r1, &v0);
        })
        .await;
    let seen = peer_lookups(&vault, a, &f.alpha).await;
    assert_eq!(seen[..2], [Seen::Corrupt, Seen::Corrupt], "{seen:?}");
    close(vault).await;

    // The same within DC options (dc 4's auth-key record onto dc 5) and channels.
    for (table, from, to) in [("dc_options", 3, 4), ("channels", 0, 1)] {
        let (_t, vault) = f
            .tampered(|c, f| {
                let (_, v) = read_value(c, Place::Table(table), f.alpha_id, from);
                let (rowid, _) = read_value(c, Place::Table(table), f.alpha_id, to);
                write_value(c, Place::Table(table), rowid, &v);
            })
            .await;
        assert_corrupt(&vault.export(a).await, &format!("export, {table}"));
        if table == "dc_options" {
            assert_corrupt(&vault.dc_options(a).await, "dc_options");
        } else {
            assert_corrupt(&vault.updates_state(a).await, "updates_state");
        }
        close(vault).await;
    }
}

#[tokio::test]
async fn record_copied_into_another_session_is_corrupt() {
    let f = Fixture::new().await;
    let (a, b) = (SessionId(f.alpha_id), SessionId(f.beta_id));
    // Each ciphertext of alpha copied over the matching row of beta.
    for place in PLACES {
        let (_t, vault) = f
            .tampered(|c, f| {
                let nth = default_nth(place);
                let (_, v) = read_value(c, place, f.alpha_id, nth);
                let (rowid, _) = read_value(c, place, f.beta_id, nth);
                write_value(c, place, rowid, &v);
            })
            .await;
        assert_damage_surfaces(&vault, b, &f.beta, place).await;
        assert_intact(&vault, a, &f.alpha, &format!("alpha, {place:?}")).await;
        close(vault).await;
    }
}

#[tokio::test]
async fn rows_moved_to_another_session_are_corrupt() {
    let f = Fixture::new().await;
    let b = SessionId(f.beta_id);
    // All of alpha's rows re-labelled as beta's (`session` column), beta's own rows removed.
    let (_t, vault) = f
        .tampered(|c, f| {
            for t in ["dc_options", "peers", "state", "channels", "sent_files"] {
                c.execute(&format!("DELETE FROM {t} WHERE session = ?1"), [f.beta_id])
                    .unwrap();
                let n = c
                    .execute(
                        &format!("UPDATE {t} SET session = ?2 WHERE session = ?1"),
                        [f.alpha_id, f.beta_id],
                    )
                    .unwrap();
                assert!(n > 0, "moved rows of {t}");
            }
        })
        .await;
    assert_corrupt(&vault.export(b).await, "export of the receiving session");
    assert_corrupt(&vault.dc_options(b).await, "dc_options");
    assert_corrupt(&vault.updates_state(b).await, "updates_state");
    // Lookups by key find nothing of alpha's under beta: the blind keys are per session.
    for p in &f.alpha.peers {
        let r = vault.peer(b, p.key()).await;
        assert!(
            matches!(r, Ok(None)),
            "alpha's peer under beta: {}",
            outcome(&r)
        );
    }
    let friend = &f.alpha.peers[1];
    let r = vault
        .peer_by_username(b, friend.username.as_deref().unwrap())
        .await;
    assert!(matches!(r, Ok(None)), "by username: {}", outcome(&r));
    let sf = &f.alpha.sent_files[0];
    let r = vault
        .sent_file(b, sf.md5_digest.clone(), sf.file_size, sf.file_type)
        .await;
    assert!(matches!(r, Ok(None)), "sent file: {}", outcome(&r));
    close(vault).await;

    // The two session rows swap ids (each name now points at the other's rows): every
    // record is read under an id it was not sealed for.
    let (_t, vault) = f
        .tampered(|c, f| {
            c.execute_batch(&format!(
                "UPDATE sessions SET id = -1 WHERE id = {a};
                 UPDATE sessions SET id = {a} WHERE id = {b};
                 UPDATE sessions SET id = {b} WHERE id = -1;",
                a = f.alpha_id,
                b = f.beta_id
            ))
            .unwrap();
        })
        .await;
    for name in ["alpha", "beta"] {
        let sid = vault.open_session(name).await.unwrap();
        assert_corrupt(&vault.export(sid).await, name);
        assert_corrupt(&vault.session_record(sid).await, name);
    }
    close(vault).await;
}

#[tokio::test]
async fn swapped_session_names_are_detected() {
    let f = Fixture::new().await;
    let (_t, vault) = f
        .tampered(|c, _| {
            c.execute_batch(
                "UPDATE sessions SET name = 'tmp' WHERE name = 'alpha';
                 UPDATE sessions SET name = 'alpha' WHERE name = 'beta';
                 UPDATE sessions SET name = 'beta' WHERE name = 'tmp';",
            )
            .unwrap();
        })
        .await;
    // A bot asking for "alpha" must not be handed beta's auth keys.
    let sid = vault.open_session("alpha").await.unwrap();
    let r = vault.export(sid).await;
    assert!(
        matches!(r, Err(EngineError::Corrupt { .. })),
        "session 'alpha' after a name swap: {}",
        outcome(&r)
    );
    close(vault).await;
}

#[tokio::test]
async fn peer_lookup_by_key_never_returns_another_peer() {
    // The blind key of a row is bound into its AAD: pointing peer B's key at peer A's whole
    // row (k and v swapped as a pair) is still caught.
    let f = Fixture::new().await;
    let a = SessionId(f.alpha_id);
    let (_t, vault) = f
        .tampered(|c, f| {
            let rows: Vec<(i64, Vec<u8>)> = c
                .prepare("SELECT rowid, k FROM peers WHERE session = ?1 ORDER BY rowid LIMIT 2")
                .unwrap()
                .query_map([f.alpha_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            // Swap the keys (and index columns stay): each record now sits under the other's key.
            c.execute("UPDATE peers SET k = x'00' WHERE rowid = ?1", [rows[0].0])
                .unwrap();
            c.execute(
                "UPDATE peers SET k = ?2 WHERE rowid = ?1",
                params![rows[1].0, rows[0].1],
            )
            .unwrap();
            c.execute(
                "UPDATE peers SET k = ?2 WHERE rowid = ?1",
                params![rows[0].0, rows[1].1],
            )
            .unwrap();
        })
        .await;
    let seen = peer_lookups(&vault, a, &f.alpha).await;
    assert_eq!(seen[..2], [Seen::Corrupt, Seen::Corrupt], "{seen:?}");
    assert!(seen[2..].iter().all(|s| *s == Seen::Same), "{seen:?}");
    assert_corrupt(&vault.export(a).await, "export");
    close(vault).await;
}
