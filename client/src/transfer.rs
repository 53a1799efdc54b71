//! Whole-session transfers between the vault and grammers' own storages.
//!
//! - [`VaultSession::export`] / [`VaultSession::import`]: grammers' `SessionData`, all of it,
//!   the import in one durable transaction;
//! - [`VaultSession::import_from`]: from any other `grammers_session::Session` (a
//!   `SqliteSession` file, say), as much as its trait can read: grammers' `Session` cannot
//!   list peers, so the cached peers other than the self user and the channels of the update
//!   state stay behind (grammers caches them again as it meets them).

use grammers_session::Session;
use grammers_session::SessionData as GSessionData;
use grammers_session::types::PeerId;
use session_vault_proto::message::{Request, Response};

use crate::cache::Cache;
use crate::convert;
use crate::error::VaultError;
use crate::link::Opened;
use crate::session::{PEERS_PER_REQUEST, VaultSession, WriteGuard, unexpected};

/// Production DC ids, and the few test/media ids sessions sometimes hold.
const DC_IDS: std::ops::RangeInclusive<i32> = 1..=10;

impl VaultSession {
    /// Everything the session holds, as grammers' [`SessionData`](GSessionData): for moving a
    /// session out of the vault into one of grammers' own storages
    /// (`data.import_to(&sqlite_session)`).
    ///
    /// Peers whose ids grammers cannot represent are left out; the username, phone and name
    /// the vault may hold (from a Telethon import) have no place in grammers' types.
    pub async fn export(&self) -> Result<GSessionData, VaultError> {
        match self
            .call(|handle| Request::Export {
                handle,
                without_peers: false,
            })
            .await?
        {
            Response::SessionData(d) => Ok(convert::session_from_wire(&d)),
            _ => Err(unexpected("export")),
        }
    }

    /// Replaces everything the session holds with `data` (grammers' `SessionData`, built by
    /// hand or exported from another session; from another grammers storage, see
    /// [`import_from`](Self::import_from)), durably, in one transaction. Needs the lease
    /// ([`exclusive`](crate::VaultSessionBuilder::exclusive), the default).
    ///
    /// A very large session (over a few thousand peers) would not fit in one frame: then the
    /// transaction holds everything but the peers beyond the first batch, which follow in
    /// batches of `cache_peers` (an interruption leaves some peers uncached, nothing else).
    pub async fn import(&self, data: &GSessionData) -> Result<(), VaultError> {
        let mut wire = convert::session_to_wire(data);
        let rest = if wire.peers.len() > PEERS_PER_REQUEST {
            wire.peers.split_off(PEERS_PER_REQUEST)
        } else {
            Vec::new()
        };
        let _serial = self.serialize(true).await;
        // Whatever happens (even if the caller gives up), the cache may be stale after this.
        let guard = WriteGuard::new(self.cache.as_deref(), Cache::clear);
        self.call_ok("import", |handle| Request::Import {
            handle,
            data: wire.clone(),
        })
        .await?;
        guard.done(Cache::clear);
        self.dcs_from(&Opened {
            home_dc: wire.home_dc,
            dc_options: std::mem::take(&mut wire.dc_options),
            name: None,
        });
        for batch in rest.chunks(PEERS_PER_REQUEST) {
            let guard = WriteGuard::new(self.cache.as_deref(), |c| c.forget_peers(batch));
            self.cache_peers_now(batch).await?;
            guard.done(|c| c.wrote_peers(batch));
        }
        Ok(())
    }

    /// Replaces everything the session holds with what `other` (another grammers storage,
    /// e.g. the `SqliteSession` a bot used so far) can tell through the `Session` trait: home
    /// DC, DC options with their auth keys, the self user, the update state and the channels
    /// it names. That keeps the login and lets grammers catch up on missed updates; other
    /// peers are cached again as grammers meets them.
    ///
    /// ```no_run
    /// # async fn f(old: grammers_session::storages::MemorySession)
    /// # -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    /// // `old`: e.g. `SqliteSession::open("mybot.session").await?` (grammers' sqlite feature)
    /// let vault = session_vault_client::VaultSession::builder("mybot")
    ///     .create_if_missing(true)
    ///     .connect()
    ///     .await?;
    /// vault.import_from(&old).await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_from<S>(
        &self,
        other: &S,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>>
    where
        S: Session,
        S::Error: std::error::Error + Send + Sync + 'static,
    {
        let mut data = GSessionData {
            home_dc: other.home_dc_id()?,
            ..GSessionData::default()
        };
        data.dc_options.clear();
        for id in DC_IDS {
            if let Some(o) = other.dc_option(id)? {
                data.dc_options.insert(id, o);
            }
        }
        if let Some(me) = other.peer(PeerId::self_user()).await? {
            data.peer_infos.insert(me.id(), me);
        }
        data.updates_state = other.updates_state().await?;
        for c in &data.updates_state.channels {
            if let Some(id) = PeerId::channel(c.id) {
                if let Some(p) = other.peer(id).await? {
                    data.peer_infos.insert(id, p);
                }
            }
        }
        self.import(&data).await?;
        Ok(())
    }
}
