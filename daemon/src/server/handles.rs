//! Open session handles of every connection, in one daemon-wide table, so that an admin act
//! on a session ends the handles others hold on it at once: `revoke` those of connections no
//! longer allowed, `delete_session --force` and `import_session --replace --force` all of
//! them. An ended handle's lease is given back with it, and the next request on it gets
//! `no_such_session` saying why.
//!
//! Opening and ending race: a connection may check a session's ACL, then an admin revokes,
//! then the connection registers its handle under the old decision. To close that window every
//! act that ends handles bumps an epoch; `open_session` reads the epoch before it reads the
//! ACL and registers only if it has not moved since ([`Handles::add`]), else it looks again.
//!
//! Lock order: this table's lock, then the lease table's; the lease table never calls back.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use super::leases::Leases;
use super::transport::PeerInfo;
use crate::vault::SessionId;

/// A session handle's number on its connection: the wire's `handle` (a `u32`), wrapped
/// where a request enters the server ([`crate::server::cmd`]) and unwrapped in `opened`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandleId(pub u32);

impl fmt::Display for HandleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a handle stands for: a session opened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandleEntry {
    /// The session.
    pub sid: SessionId,
    /// Whether it holds the lease.
    pub exclusive: bool,
}

/// Why the daemon ended a handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The connection's access to the session was revoked.
    Revoked,
    /// The session was deleted.
    Deleted,
    /// The session was replaced by an import.
    Replaced,
    /// The whole vault was replaced by a backup (`restore_commit`).
    Restored,
    /// An admin ended the connection (`disconnect`).
    Disconnected,
    /// The session's lease across hosts lapsed while this daemon held it (it was paused or
    /// cut off longer than the lease expiry): another host may have taken the session over.
    LeaseLost,
}

impl Ended {
    /// For the error message of the next request on the handle.
    pub fn reason(self) -> &'static str {
        match self {
            Ended::Revoked => "access to its session was revoked",
            Ended::Deleted => "its session was deleted",
            Ended::Replaced => "its session was replaced by an import",
            Ended::Restored => "the vault was restored from a backup",
            Ended::Disconnected => "an admin disconnected this client",
            Ended::LeaseLost => {
                "its lease lapsed while this vaultd was paused or cut off from the database \
                 (another host may have taken the session over); open it again"
            }
        }
    }
}

/// What a connection knows of one of its handle numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Open.
    Open(HandleEntry),
    /// Ended by the daemon; the client has not closed it yet.
    Ended(Ended),
    /// Never opened on this connection, or closed.
    Unknown,
}

struct ConnHandles {
    peer: PeerInfo,
    next: u32,
    open: HashMap<HandleId, HandleEntry>,
    /// Handles the daemon ended, until the client closes them or disconnects: bounded by the
    /// handles it opened.
    ended: HashMap<HandleId, Ended>,
}

#[derive(Default)]
struct Table {
    epoch: u64,
    conns: HashMap<u64, ConnHandles>,
}

/// The daemon-wide handle table.
#[derive(Default)]
pub struct Handles {
    table: Mutex<Table>,
}

impl Handles {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Only map operations (and the lease table's, which cannot panic) run under this
        // lock.
        self.table
            .lock()
            .expect("handle table lock is never poisoned")
    }

    /// The current epoch, to pass to [`Handles::add`]: read it before the ACL check.
    pub fn epoch(&self) -> u64 {
        self.table().epoch
    }

    /// Registers a handle of connection `conn` (of `peer`) and returns its number (from 1),
    /// or `None` if handles were ended since `epoch` was read: the caller's ACL decision may
    /// be stale, so it gives back what it took (the lease) and decides again.
    pub fn add(
        &self,
        conn: u64,
        peer: PeerInfo,
        handle: HandleEntry,
        epoch: u64,
    ) -> Option<HandleId> {
        let mut t = self.table();
        if t.epoch != epoch {
            return None;
        }
        let c = t.conns.entry(conn).or_insert_with(|| ConnHandles {
            peer,
            next: 1,
            open: HashMap::new(),
            ended: HashMap::new(),
        });
        let h = HandleId(c.next);
        c.next = c.next.wrapping_add(1).max(1);
        c.open.insert(h, handle);
        Some(h)
    }

    /// Whether connection `conn` has a session open (a bot's connection: never idle).
    pub fn has_open(&self, conn: u64) -> bool {
        self.table()
            .conns
            .get(&conn)
            .is_some_and(|c| !c.open.is_empty())
    }

    /// How many handles connection `conn` has: open, or ended and not yet closed.
    pub fn count(&self, conn: u64) -> usize {
        self.table()
            .conns
            .get(&conn)
            .map_or(0, |c| c.open.len() + c.ended.len())
    }

    /// How many handles the connections of `uid` have, together (as [`Handles::count`]).
    pub fn count_uid(&self, uid: u32) -> usize {
        self.table()
            .conns
            .values()
            .filter(|c| c.peer.uid == uid)
            .map(|c| c.open.len() + c.ended.len())
            .sum()
    }

    /// What handle number `h` of connection `conn` stands for.
    pub fn get(&self, conn: u64, h: HandleId) -> Lookup {
        let t = self.table();
        let Some(c) = t.conns.get(&conn) else {
            return Lookup::Unknown;
        };
        match (c.open.get(&h), c.ended.get(&h)) {
            (Some(handle), _) => Lookup::Open(*handle),
            (None, Some(why)) => Lookup::Ended(*why),
            (None, None) => Lookup::Unknown,
        }
    }

    /// Closes handle `h` of `conn` (an ended one is forgotten) and gives back its lease.
    pub fn close(&self, conn: u64, h: HandleId, leases: &Leases) -> Lookup {
        let mut t = self.table();
        let Some(c) = t.conns.get_mut(&conn) else {
            return Lookup::Unknown;
        };
        if let Some(handle) = c.open.remove(&h) {
            if handle.exclusive {
                leases.release(handle.sid, conn);
            }
            return Lookup::Open(handle);
        }
        c.ended.remove(&h).map_or(Lookup::Unknown, Lookup::Ended)
    }

    /// Ends the handles on `sid` of every connection whose peer `keep` refuses, and gives
    /// back their leases. Returns how many handles were ended.
    pub fn end_session(
        &self,
        sid: SessionId,
        why: Ended,
        leases: &Leases,
        keep: impl Fn(&PeerInfo) -> bool,
    ) -> usize {
        let mut t = self.table();
        t.epoch += 1;
        let mut n = 0;
        for (&conn, c) in t.conns.iter_mut() {
            if keep(&c.peer) {
                continue;
            }
            let gone: Vec<HandleId> = c
                .open
                .iter()
                .filter(|(_, handle)| handle.sid == sid)
                .map(|(&h, _)| h)
                .collect();
            for h in gone {
                if let Some(handle) = c.open.remove(&h) {
                    if handle.exclusive {
                        leases.release(sid, conn);
                    }
                    c.ended.insert(h, why);
                    n += 1;
                }
            }
        }
        n
    }

    /// Ends the exclusive handles on `sid` (its lease is lost) and gives back their leases.
    /// Returns how many handles were ended.
    pub fn end_exclusive(&self, sid: SessionId, why: Ended, leases: &Leases) -> usize {
        let mut t = self.table();
        t.epoch += 1;
        let mut n = 0;
        for (&conn, c) in t.conns.iter_mut() {
            let gone: Vec<HandleId> = c
                .open
                .iter()
                .filter(|(_, handle)| handle.sid == sid && handle.exclusive)
                .map(|(&h, _)| h)
                .collect();
            for h in gone {
                c.open.remove(&h);
                leases.release(sid, conn);
                c.ended.insert(h, why);
                n += 1;
            }
        }
        n
    }

    /// Another daemon changed the vault (coherence): an ACL decision taken before is stale,
    /// so an open that made one registers only after deciding again ([`Handles::add`]).
    pub fn bump_epoch(&self) {
        self.table().epoch += 1;
    }

    /// Ends every open handle of every connection (a restore replaced the vault: session ids
    /// of the old file mean nothing in the new one), and gives back their leases.
    pub fn end_all(&self, why: Ended, leases: &Leases) -> usize {
        let mut t = self.table();
        t.epoch += 1;
        let mut n = 0;
        for (&conn, c) in t.conns.iter_mut() {
            for (h, handle) in c.open.drain() {
                if handle.exclusive {
                    leases.release(handle.sid, conn);
                }
                c.ended.insert(h, why);
                n += 1;
            }
        }
        n
    }

    /// Every session some connection has a handle open on.
    pub fn open_sessions(&self) -> Vec<SessionId> {
        let mut sids: Vec<SessionId> = self
            .table()
            .conns
            .values()
            .flat_map(|c| c.open.values().map(|h| h.sid))
            .collect();
        sids.sort_unstable_by_key(|s| s.0);
        sids.dedup();
        sids
    }

    /// The connections with a handle open on `sid`.
    pub fn holding(&self, sid: SessionId) -> Vec<u64> {
        self.table()
            .conns
            .iter()
            .filter(|(_, c)| c.open.values().any(|h| h.sid == sid))
            .map(|(&conn, _)| conn)
            .collect()
    }

    /// Ends every open handle of connection `conn` and gives back its leases. Returns how
    /// many handles were ended.
    pub fn end_connection(&self, conn: u64, why: Ended, leases: &Leases) -> usize {
        let mut t = self.table();
        t.epoch += 1;
        let Some(c) = t.conns.get_mut(&conn) else {
            return 0;
        };
        let mut n = 0;
        for (h, handle) in c.open.drain() {
            if handle.exclusive {
                leases.release(handle.sid, conn);
            }
            c.ended.insert(h, why);
            n += 1;
        }
        n
    }

    /// Forgets every handle of a connection that ended, and frees its leases.
    pub fn connection_ended(&self, conn: u64, leases: &Leases) {
        let mut t = self.table();
        t.conns.remove(&conn);
        leases.release_all(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32) -> PeerInfo {
        PeerInfo {
            uid,
            gid: uid,
            groups: Vec::new(),
            pid: Some(uid),
        }
    }

    #[test]
    fn ending_a_session_ends_its_handles_and_leases_for_the_peers_refused() {
        let (h, l) = (Handles::default(), Leases::default());
        let (s, other) = (SessionId(1), SessionId(2));
        let e = h.epoch();
        l.acquire(s, 10, Some(10)).unwrap();
        let a = h
            .add(
                10,
                peer(10),
                HandleEntry {
                    sid: s,
                    exclusive: true,
                },
                e,
            )
            .unwrap();
        let b = h
            .add(
                10,
                peer(10),
                HandleEntry {
                    sid: other,
                    exclusive: false,
                },
                e,
            )
            .unwrap();
        let c = h
            .add(
                11,
                peer(11),
                HandleEntry {
                    sid: s,
                    exclusive: false,
                },
                e,
            )
            .unwrap();
        assert_eq!((a, b, c), (HandleId(1), HandleId(2), HandleId(1)));

        assert_eq!(h.end_session(s, Ended::Revoked, &l, |p| p.uid == 11), 1);
        assert_eq!(h.get(10, a), Lookup::Ended(Ended::Revoked));
        assert_eq!(l.holder(s), None, "the lease went with the handle");
        assert!(
            matches!(h.get(10, b), Lookup::Open(_)),
            "other sessions stay"
        );
        assert!(matches!(h.get(11, c), Lookup::Open(_)), "kept peers stay");

        // A decision taken before the act is refused; closing forgets the ended handle.
        assert_eq!(
            h.add(
                10,
                peer(10),
                HandleEntry {
                    sid: s,
                    exclusive: false
                },
                e
            ),
            None
        );
        assert_eq!(h.close(10, a, &l), Lookup::Ended(Ended::Revoked));
        assert_eq!(h.get(10, a), Lookup::Unknown);

        h.connection_ended(11, &l);
        assert_eq!(h.get(11, c), Lookup::Unknown);

        // Ending a connection ends all its handles and frees its leases.
        let e = h.epoch();
        l.acquire(other, 12, Some(12)).unwrap();
        let d = h
            .add(
                12,
                peer(12),
                HandleEntry {
                    sid: other,
                    exclusive: true,
                },
                e,
            )
            .unwrap();
        let mut holders = h.holding(other);
        holders.sort_unstable();
        assert_eq!(holders, vec![10, 12]);
        assert_eq!(h.end_connection(12, Ended::Disconnected, &l), 1);
        assert_eq!(h.get(12, d), Lookup::Ended(Ended::Disconnected));
        assert_eq!(l.holder(other), None);
        assert_eq!(h.holding(other), vec![10]);
        assert_eq!(h.end_connection(99, Ended::Disconnected, &l), 0);
    }
}
