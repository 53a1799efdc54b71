//! Answers the client's cache holds, given at once: grammers boxes the future of each
//! `Session` call, and the whole lookup's `async` state machine (a daemon round trip's
//! included) is large, so a hit boxes only its answer (`std::future::ready`, in
//! `grammers.rs`).

use grammers_session::types::UpdatesState as GUpdatesState;
use grammers_session::types::{PeerId, PeerInfo};

use super::{VaultSession, lock};
use crate::cache::Lookup;
use crate::convert;
use crate::error::VaultError;

impl VaultSession {
    /// [`Self::peer_info`] when the cache answers it, at once: `None` when the daemon must be
    /// asked.
    pub(crate) fn peer_info_now(&self, id: PeerId) -> Option<Result<Option<PeerInfo>, VaultError>> {
        if let Err(e) = self.still_open() {
            return Some(Err(e));
        }
        let cache = self.cache.as_ref()?;
        let mut c = lock(cache);
        let hit = match convert::peer_key(id) {
            Some(key) => c.peer_with(key, |p| p.and_then(convert::peer_from_wire)),
            None => match c.self_peer() {
                // As `peer_info`: the self user only while its info still says so.
                Lookup::Hit(p) => Lookup::Hit(
                    p.filter(|p| p.is_self == Some(true))
                        .as_ref()
                        .and_then(convert::peer_from_wire),
                ),
                Lookup::Miss => Lookup::Miss,
            },
        };
        match hit {
            Lookup::Hit(info) => Some(Ok(info)),
            Lookup::Miss => None,
        }
    }

    /// [`Self::updates_state_now`] when the cache holds the state, at once (as
    /// [`Self::peer_info_now`]).
    pub(crate) fn updates_state_cached(&self) -> Option<Result<GUpdatesState, VaultError>> {
        if let Err(e) = self.still_open() {
            return Some(Err(e));
        }
        match lock(self.cache.as_ref()?).state() {
            Lookup::Hit(s) => Some(Ok(convert::state_from_wire(&s))),
            Lookup::Miss => None,
        }
    }
}
