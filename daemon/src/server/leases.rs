//! Exclusive session leases, tied to the connection that holds them.
//!
//! A lease lives as long as its connection holds an exclusive handle on the session: it is
//! freed when the handle is closed or when the connection ends — which the kernel guarantees
//! when the holding process dies — so there are no stale locks to clean up.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::vault::SessionId;

#[derive(Debug, Clone, Copy)]
struct Lease {
    conn: u64,
    pid: Option<u32>,
    /// Exclusive handles of this connection on the session.
    handles: u32,
}

/// The lease table.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<SessionId, Lease>>,
}

/// Another connection holds the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// The holder's pid, where known.
    pub holder_pid: Option<u32>,
}

impl Leases {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Lease>> {
        // No code panics while holding this lock (plain map operations only).
        self.held
            .lock()
            .expect("lease table lock is never poisoned")
    }

    /// Takes (or re-enters) the lease of `sid` for connection `conn`.
    pub fn acquire(&self, sid: SessionId, conn: u64, pid: Option<u32>) -> Result<(), Busy> {
        let mut t = self.table();
        match t.get_mut(&sid) {
            Some(l) if l.conn != conn => Err(Busy { holder_pid: l.pid }),
            Some(l) => {
                l.handles += 1;
                Ok(())
            }
            None => {
                t.insert(
                    sid,
                    Lease {
                        conn,
                        pid,
                        handles: 1,
                    },
                );
                Ok(())
            }
        }
    }

    /// Gives back one exclusive handle of `conn` on `sid`.
    pub fn release(&self, sid: SessionId, conn: u64) {
        let mut t = self.table();
        if let Some(l) = t.get_mut(&sid).filter(|l| l.conn == conn) {
            l.handles -= 1;
            if l.handles == 0 {
                t.remove(&sid);
            }
        }
    }

    /// Frees every lease of a connection that ended.
    pub fn release_all(&self, conn: u64) {
        self.table().retain(|_, l| l.conn != conn);
    }

    /// Every session whose lease a connection holds.
    pub fn held(&self) -> std::collections::HashSet<SessionId> {
        self.table().keys().copied().collect()
    }

    /// The pid holding `sid`'s lease, if a connection other than `conn` holds it.
    pub fn holder_other_than(&self, sid: SessionId, conn: u64) -> Option<Option<u32>> {
        self.table()
            .get(&sid)
            .filter(|l| l.conn != conn)
            .map(|l| l.pid)
    }

    /// The pid holding `sid`'s lease, if it is held.
    pub fn holder(&self, sid: SessionId) -> Option<Option<u32>> {
        self.table().get(&sid).map(|l| l.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_freed_with_the_connection() {
        let l = Leases::default();
        let s = SessionId(1);
        l.acquire(s, 10, Some(100)).unwrap();
        assert_eq!(
            l.acquire(s, 11, Some(111)),
            Err(Busy {
                holder_pid: Some(100)
            })
        );
        l.acquire(s, 10, Some(100)).unwrap();
        l.release(s, 10);
        assert_eq!(l.holder(s), Some(Some(100)));
        l.release_all(10);
        assert_eq!(l.holder(s), None);
        l.acquire(s, 11, Some(111)).unwrap();
        l.release(s, 11);
        assert_eq!(l.holder(s), None);
    }
}
