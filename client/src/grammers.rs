//! `impl grammers_session::Session for VaultSession`, with grammers' semantics.
//!
//! `home_dc_id` and `dc_option` answer from the in-process copy (they are called on every
//! request); everything else is a request to the daemon, or a hit in the exclusive session's
//! cache. A new session answers what `SessionData::default()` would: the daemon creates it
//! with home DC 2 and the five known DC options.

use grammers_session::types::{DcOption, PeerId, PeerInfo, UpdateState, UpdatesState};
use grammers_session::{BoxFuture, Session};

use crate::error::VaultError;
use crate::session::VaultSession;

impl Session for VaultSession {
    type Error = VaultError;

    fn home_dc_id(&self) -> Result<i32, VaultError> {
        // Once the daemon ended the handle (a lapsed lease: another host may hold the
        // session and its auth key), grammers must not go on using the copy.
        self.still_open()?;
        Ok(self.home_dc())
    }

    fn set_home_dc_id(&self, dc_id: i32) -> BoxFuture<'_, Result<(), VaultError>> {
        Box::pin(self.set_home_dc(dc_id))
    }

    fn dc_option(&self, dc_id: i32) -> Result<Option<DcOption>, VaultError> {
        self.still_open()?;
        Ok(self.dc(dc_id))
    }

    fn set_dc_option(&self, dc_option: &DcOption) -> BoxFuture<'_, Result<(), VaultError>> {
        let dc_option = dc_option.clone();
        Box::pin(async move { self.set_dc(&dc_option).await })
    }

    fn peer(&self, peer: PeerId) -> BoxFuture<'_, Result<Option<PeerInfo>, VaultError>> {
        match self.peer_info_now(peer) {
            Some(answer) => Box::pin(std::future::ready(answer)),
            None => Box::pin(self.peer_info(peer)),
        }
    }

    fn cache_peer(&self, peer: PeerInfo) -> BoxFuture<'_, Result<(), VaultError>> {
        Box::pin(async move { self.cache_peer_infos(std::slice::from_ref(&peer)).await })
    }

    fn cache_peers(&self, peers: Vec<PeerInfo>) -> BoxFuture<'_, Result<(), VaultError>> {
        Box::pin(async move { self.cache_peer_infos(&peers).await })
    }

    fn updates_state(&self) -> BoxFuture<'_, Result<UpdatesState, VaultError>> {
        match self.updates_state_cached() {
            Some(answer) => Box::pin(std::future::ready(answer)),
            None => Box::pin(self.updates_state_now()),
        }
    }

    fn set_update_state(&self, update: UpdateState) -> BoxFuture<'_, Result<(), VaultError>> {
        Box::pin(async move { self.set_state(&update).await })
    }
}
