//! Mirroring the writes the daemon acknowledged (and forgetting the ones it may not have
//! applied), and leaving out of a `cache_peers` batch what would change nothing there.

use std::collections::HashSet;

use session_vault_proto::model::{Peer, PeerKind, UpdateStateChange, UpdatesState};

use super::{Cache, Lookup, SelfUser, Slot};
use crate::convert::{apply_change, grammers_complete};

impl Cache {
    fn wrote(&mut self, slot: Slot) {
        if let Some(entry) = self.reads.get_mut(&slot) {
            entry.1 += 1;
        }
    }

    /// Mirrors an acknowledged `cache_peers`: each peer merges into what is known of it, in
    /// order, by `extend_info` rules; a user whose merged info says `is_self` becomes the self
    /// user (the daemon's rule). A peer the cache did not know is kept only if it knows every
    /// field grammers reads ([`grammers_complete`]): the daemon's merge with whatever it held
    /// then gives the same fields (a newly known field wins). Any other stays unknown, since
    /// the daemon's copy may fill in what it lacks.
    pub(crate) fn wrote_peers(&mut self, peers: &[Peer]) {
        for p in peers {
            let key = p.key();
            let merged = match self.get(key) {
                Lookup::Hit(Some(mut old)) => {
                    old.merge_from(p);
                    Some(old)
                }
                Lookup::Hit(None) => Some(p.clone()),
                Lookup::Miss => grammers_complete(p).then(|| p.clone()),
            };
            if p.kind == PeerKind::User {
                let is_self = merged.as_ref().map_or(p.is_self, |m| m.is_self);
                match (is_self, &merged) {
                    (Some(true), _) => self.self_user = SelfUser::Id(p.id),
                    // Unknown merge: the daemon's copy may say is_self.
                    (None, None) => self.self_user = SelfUser::Unknown,
                    _ => {}
                }
            }
            if let Some(m) = merged {
                self.insert(key, Some(m));
            }
            if let Some(w) = &mut self.load_writes {
                w.insert(key);
            }
            self.wrote(Slot::Peer(key));
        }
        self.wrote(Slot::SelfUser);
    }

    /// Leaves out of a `cache_peers` batch each peer whose merge would change nothing the
    /// daemon holds, so that re-caching known peers (which bots do all the time) costs no
    /// round trip and no daemon work. Call it holding the session's write lock: the cache has
    /// then mirrored every earlier write, and no other writer exists (the lease).
    ///
    /// A peer is left out only if it is the first of its key in the batch (a later one merges
    /// into what the earlier ones made, which the cache does not hold yet), the cache holds
    /// the peer, merging it there changes nothing, and the result is not a user marked
    /// `is_self` (caching one makes it the daemon's self user again, even unchanged). Fields
    /// the cache holds agree with the daemon's and the unknown ones take no value from an
    /// unchanged merge, so the daemon's merge would change nothing either.
    pub(crate) fn drop_unchanged(&mut self, peers: Vec<Peer>) -> Vec<Peer> {
        let mut seen = HashSet::with_capacity(peers.len());
        peers
            .into_iter()
            .filter(|p| !(seen.insert(p.key()) && self.unchanged_by(p)))
            .collect()
    }

    fn unchanged_by(&mut self, p: &Peer) -> bool {
        let Lookup::Hit(Some(old)) = self.get(p.key()) else {
            return false;
        };
        let mut merged = old.clone();
        merged.merge_from(p);
        merged == old && merged.is_self != Some(true)
    }

    /// Forgets what a write that may or may not have been applied (it failed, or its caller
    /// gave up on it) touched: those peers, the self user.
    pub(crate) fn forget_peers(&mut self, peers: &[Peer]) {
        for p in peers {
            let key = p.key();
            self.young.remove(&key);
            self.old.remove(&key);
            if let Some(w) = &mut self.load_writes {
                w.insert(key);
            }
            self.wrote(Slot::Peer(key));
        }
        self.lost();
        self.self_user = SelfUser::Unknown;
        self.wrote(Slot::SelfUser);
    }

    /// Forgets the update state (see [`Cache::forget_peers`]).
    pub(crate) fn forget_state(&mut self) {
        self.state = None;
        self.wrote(Slot::State);
    }

    /// Mirrors an acknowledged `set_update_state`.
    pub(crate) fn wrote_state(&mut self, change: &UpdateStateChange) {
        match (&mut self.state, change) {
            (Some(s), c) => apply_change(s, c),
            (None, UpdateStateChange::All(_)) => {
                let mut s = UpdatesState::default();
                apply_change(&mut s, change);
                self.state = Some(s);
            }
            (None, _) => {}
        }
        self.wrote(Slot::State);
    }
}
