//! Warm start: a session opened with its lease loads the session's peers into its cache in
//! the background, so that a restarted bot answers its peers in-process, as one that never
//! stopped would.
//!
//! The loader asks `list_peers` (protocol minor 5) for pages of at most
//! [`PEER_PAGE_MAX`] peers, newest first, until it has the cache's capacity or the session's
//! last peer, on the session's own connection (the daemon serves `list_peers` to the lease
//! holder only). It holds the connection only while a page is in flight: a session dropped
//! meanwhile closes its connection (and gives its lease back) as without a load. Lookups made
//! before the load is applied go to the daemon as without it; the rows are applied together
//! at the end ([`Cache::finish_load`]), so that writes made meanwhile win. A daemon older than
//! minor 5, a refused or failed page, or a reconnect meanwhile: nothing is applied and the
//! session works as without a warm start.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use session_vault_proto::message::{PEER_PAGE_MAX, Request, Response};
use tokio::sync::watch;

use crate::cache::Cache;
use crate::link::Link;

/// The protocol minor version that has `list_peers`.
pub(crate) const MINOR_LIST_PEERS: u16 = 5;

/// What a warm start did ([`VaultSession::warm_start`](crate::VaultSession::warm_start)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmStart {
    /// Peers loaded into the cache (those this client had written or read meanwhile are not
    /// counted: it kept its own copy).
    pub peers: usize,
    /// Every peer of the session was loaded: a peer the cache does not hold is answered "not
    /// found" without asking the daemon (until the cache has to drop one).
    pub complete: bool,
    /// Why no peer was loaded, when it was tried and failed: a daemon too old for warm start,
    /// a refused or failed request, a reconnect during the load. The session works as without
    /// a warm start. `None` when it succeeded or was not tried (turned off, no lease, no peer
    /// cache).
    pub failed: Option<String>,
    /// From the open to the load being applied.
    pub elapsed: Duration,
}

impl WarmStart {
    /// The answer when no warm start was tried.
    pub(crate) fn skipped() -> WarmStart {
        WarmStart {
            peers: 0,
            complete: false,
            failed: None,
            elapsed: Duration::ZERO,
        }
    }
}

/// Starts the loader for a session just opened on `link`; its outcome goes to `done`.
pub(crate) fn spawn(
    link: &Arc<Link>,
    cache: Arc<Mutex<Cache>>,
    done: watch::Sender<Option<WarmStart>>,
) {
    let link = Arc::downgrade(link);
    let started = Instant::now();
    tokio::spawn(async move {
        let outcome = load(link, &cache).await;
        let warm = match outcome {
            Ok((peers, complete)) => WarmStart {
                peers,
                complete,
                failed: None,
                elapsed: started.elapsed(),
            },
            Err(why) => {
                tracing::debug!(error = %why, "warm start failed; peers are read from the daemon");
                WarmStart {
                    failed: Some(why),
                    elapsed: started.elapsed(),
                    ..WarmStart::skipped()
                }
            }
        };
        let _ = done.send(Some(warm));
    });
}

fn lock(cache: &Mutex<Cache>) -> std::sync::MutexGuard<'_, Cache> {
    cache.lock().expect("cache lock is never poisoned")
}

/// Loads the pages and applies them: (peers added, whole session loaded).
async fn load(link: Weak<Link>, cache: &Mutex<Cache>) -> Result<(usize, bool), String> {
    let (epoch, capacity) = {
        let mut c = lock(cache);
        (c.begin_load(), c.capacity())
    };
    let result = fetch(&link, capacity).await;
    match result {
        Ok((peers, whole)) => {
            let mut c = lock(cache);
            match c.finish_load(epoch, peers, whole) {
                Some(added) => Ok((added, c.authoritative())),
                None => Err("the session reconnected during the warm start".into()),
            }
        }
        Err(e) => {
            lock(cache).abort_load(epoch);
            Err(e)
        }
    }
}

/// Up to `capacity` peers, newest first, and whether they are all of the session's.
async fn fetch(
    link: &Weak<Link>,
    capacity: usize,
) -> Result<(Vec<session_vault_proto::model::Peer>, bool), String> {
    let mut peers = Vec::new();
    let mut before = None;
    loop {
        let Some(l) = link.upgrade().filter(|l| !l.conn.is_closed()) else {
            return Err("the session's connection closed during the warm start".into());
        };
        let minor = l.conn.server_minor();
        if minor < MINOR_LIST_PEERS {
            return Err(format!(
                "the daemon speaks protocol minor {minor}, warm start needs {MINOR_LIST_PEERS}"
            ));
        }
        let want = capacity
            .saturating_sub(peers.len())
            .min(PEER_PAGE_MAX as usize);
        let limit = u32::try_from(want.max(1)).unwrap_or(PEER_PAGE_MAX);
        let request = Request::ListPeers {
            handle: l.handle,
            before,
            limit,
        };
        let answer = l.conn.call(request).await;
        drop(l);
        match answer {
            Ok(Response::PeerPage { peers: page, next }) => {
                // The daemon's cursor only goes down, page after page: one that does not (or
                // comes with an empty page) would have this task ask for ever.
                if next.is_some_and(|n| page.is_empty() || before.is_some_and(|b| n >= b)) {
                    return Err("list_peers: the daemon's cursor did not move".into());
                }
                peers.extend(page);
                if peers.len() > capacity {
                    peers.truncate(capacity);
                    return Ok((peers, false));
                }
                match next {
                    None => return Ok((peers, true)),
                    Some(_) if peers.len() == capacity => {
                        // Full: is there more? One peer tells.
                        let more = peek(link, next).await?;
                        return Ok((peers, !more));
                    }
                    Some(_) => before = next,
                }
            }
            Ok(_) => return Err("unexpected response to list_peers".into()),
            Err(e) => return Err(format!("list_peers failed: {e}")),
        }
    }
}

/// Whether the session has a peer below cursor `before`.
async fn peek(link: &Weak<Link>, before: Option<i64>) -> Result<bool, String> {
    let Some(l) = link.upgrade().filter(|l| !l.conn.is_closed()) else {
        return Err("the session's connection closed during the warm start".into());
    };
    let request = Request::ListPeers {
        handle: l.handle,
        before,
        limit: 1,
    };
    match l.conn.call(request).await {
        Ok(Response::PeerPage { peers, .. }) => Ok(!peers.is_empty()),
        Ok(_) => Err("unexpected response to list_peers".into()),
        Err(e) => Err(format!("list_peers failed: {e}")),
    }
}
