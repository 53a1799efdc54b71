//! Every connection past its handshake, with its peer pid and a way to end it: what
//! `disconnect` ([`super::cmd::admin::disconnect`]) acts on.
//!
//! Ending a connection is a signal to its read loop ([`Kicked`]), which stops reading,
//! finishes the requests in flight and closes the connection as it does at shutdown. The
//! handles and leases of the connection are ended before that, by the request itself, so that
//! they are free by the time it is answered.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

struct Client {
    pid: Option<u32>,
    kick: watch::Sender<bool>,
}

/// The daemon-wide table of connections.
#[derive(Default)]
pub struct Clients {
    table: Mutex<HashMap<u64, Client>>,
}

/// Fires once an admin ended the connection (see [`Clients::kick`]).
pub struct Kicked(watch::Receiver<bool>);

impl Kicked {
    /// Waits until the connection is ended; forever if it never is.
    pub async fn wait(&mut self) {
        if self.0.wait_for(|kicked| *kicked).await.is_err() {
            // The table dropped its sender without kicking: never fires.
            std::future::pending::<()>().await;
        }
    }
}

impl Clients {
    fn table(&self) -> MutexGuard<'_, HashMap<u64, Client>> {
        // Only map operations run under this lock.
        self.table
            .lock()
            .expect("client table lock is never poisoned")
    }

    /// Registers connection `conn` of process `pid`; its read loop waits on the answer.
    pub fn register(&self, conn: u64, pid: Option<u32>) -> Kicked {
        let (kick, kicked) = watch::channel(false);
        self.table().insert(conn, Client { pid, kick });
        Kicked(kicked)
    }

    /// Forgets a connection that ended.
    pub fn remove(&self, conn: u64) {
        self.table().remove(&conn);
    }

    /// The connections of process `pid`.
    pub fn of_pid(&self, pid: u32) -> Vec<u64> {
        self.table()
            .iter()
            .filter(|(_, c)| c.pid == Some(pid))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Tells connection `conn` to end. Returns whether it was still registered.
    pub fn kick(&self, conn: u64) -> bool {
        match self.table().get(&conn) {
            Some(c) => {
                c.kick.send_replace(true);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kicked_connection_is_told_and_others_are_not() {
        let c = Clients::default();
        let mut a = c.register(1, Some(100));
        let mut b = c.register(2, Some(200));
        assert_eq!(c.of_pid(100), vec![1]);
        assert!(c.of_pid(300).is_empty());
        assert!(c.kick(1));
        a.wait().await;
        // Once kicked, stays kicked.
        a.wait().await;
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), b.wait()).await;
        assert!(waited.is_err(), "connection 2 was not kicked");
        c.remove(1);
        assert!(!c.kick(1));
    }
}
