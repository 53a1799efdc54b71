//! A session's update state: the scalars (one row) and each channel's state (a row per
//! channel, in write order), as grammers' `MemorySession` keeps them. Same `Engine` as
//! `mod.rs`, split along this seam to keep files small.

use session_vault_proto::model::{ChannelState, UpdateStateChange, UpdatesState};

use super::{Engine, STATE_UPDATES, ScalarState, SessionId};
use crate::vault::error::{EngineError, Result};

/// The most old channel states a whole update state deletes in its own job; more are deleted
/// in slices first (`Vault::set_update_state_while`, [`EngineError::ClearFirst`]).
pub const CLEAR_HERE_MAX: u32 = 4096;
use crate::vault::store::{Store, Table};

impl<S: Store> Engine<S> {
    /// The full update state, channels in write order.
    pub fn updates_state(&mut self, sid: SessionId) -> Result<UpdatesState> {
        let s: ScalarState = self
            .get_row(sid, Table::State, STATE_UPDATES)?
            .unwrap_or_default();
        Ok(UpdatesState {
            pts: s.pts,
            qts: s.qts,
            date: s.date,
            seq: s.seq,
            channels: self.scan_rows(sid, Table::Channels)?,
        })
    }

    /// [`Engine::updates_state`] read in pages, one call each: with `after == None` the
    /// scalars and the first page, then the page after `after` (the scalars as the first
    /// call read them are not read again). Channels come in key order, each with its
    /// position; the caller sorts them back into write order. Pages of separate calls are
    /// not one snapshot: a channel written in between is read at one of its values, and one
    /// added or dropped by a whole-state write in between may be missed or kept, which costs
    /// a client at most a channel difference fetched again. For sessions too large to read
    /// in one job without holding every other request up (see `Vault::updates_state`).
    #[allow(clippy::type_complexity)]
    pub fn updates_state_page(
        &mut self,
        sid: SessionId,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<(
        Option<UpdatesState>,
        Vec<(i64, ChannelState)>,
        Option<Vec<u8>>,
    )> {
        let scalars = match after {
            None => {
                let s: ScalarState = self
                    .get_row(sid, Table::State, STATE_UPDATES)?
                    .unwrap_or_default();
                Some(UpdatesState {
                    pts: s.pts,
                    qts: s.qts,
                    date: s.date,
                    seq: s.seq,
                    channels: Vec::new(),
                })
            }
            Some(_) => {
                self.live(sid)?;
                None
            }
        };
        let (channels, next) = self.rows_page(sid, Table::Channels, after, limit)?;
        Ok((scalars, channels, next))
    }

    fn put_scalar(&mut self, sid: SessionId, s: &ScalarState) -> Result<()> {
        let k = self.row_key(sid, Table::State, STATE_UPDATES)?;
        let row = self.seal_row(sid, Table::State, &k, s)?;
        self.store.put(Table::State, sid.0, &row, [None, None])
    }

    /// Appends channel states after those the session holds, in order, as the rest of a
    /// whole state written in several jobs (`Vault::set_update_state`): each as
    /// [`UpdateStateChange::Channel`] writes it. Cache class.
    pub fn append_channels(&mut self, sid: SessionId, channels: &[ChannelState]) -> Result<()> {
        self.live(sid)?;
        for c in channels {
            self.put_channel(sid, c)?;
        }
        self.touch(sid)
    }

    fn put_channel(&mut self, sid: SessionId, c: &ChannelState) -> Result<()> {
        let k = self.row_key(sid, Table::Channels, &c.id.to_be_bytes())?;
        let row = self.seal_row(sid, Table::Channels, &k, c)?;
        self.store.put_last(Table::Channels, sid.0, &row)
    }

    /// Whether `change` would add rows to the session's update state: a channel it does not
    /// hold, or a whole state of more channels than it holds (the free-space reserve lets
    /// the others through).
    pub fn update_state_grows(
        &mut self,
        sid: SessionId,
        change: &UpdateStateChange,
    ) -> Result<bool> {
        self.live(sid)?;
        Ok(match change {
            UpdateStateChange::All(all) => {
                // Counted only as far as the answer needs (a session may hold millions).
                let n = u32::try_from(all.channels.len()).unwrap_or(u32::MAX - 1);
                u64::from(n) > self.store.count_up_to(Table::Channels, sid.0, n + 1)?
            }
            &UpdateStateChange::Channel { id, .. } => {
                let k = self.row_key(sid, Table::Channels, &id.to_be_bytes())?;
                self.store.get(Table::Channels, sid.0, &k)?.is_none()
            }
            UpdateStateChange::Primary { .. } | UpdateStateChange::Secondary { .. } => false,
        })
    }

    /// Applies an update-state change exactly as grammers' `MemorySession` does. Cache class.
    pub fn set_update_state(&mut self, sid: SessionId, change: &UpdateStateChange) -> Result<()> {
        match change {
            UpdateStateChange::All(all) => {
                // More old channels than one job deletes: refused before anything is written,
                // to be deleted in slices first (never while acknowledged writes are re-applied).
                if self.store.clears_in_slices()
                    && !crate::vault::worker::replaying()
                    && self
                        .store
                        .count_up_to(Table::Channels, sid.0, CLEAR_HERE_MAX + 1)?
                        > u64::from(CLEAR_HERE_MAX)
                {
                    return Err(EngineError::ClearFirst);
                }
                let s = ScalarState {
                    pts: all.pts,
                    qts: all.qts,
                    date: all.date,
                    seq: all.seq,
                };
                self.put_scalar(sid, &s)?;
                self.store.clear(Table::Channels, sid.0)?;
                for c in &all.channels {
                    self.put_channel(sid, c)?;
                }
            }
            &UpdateStateChange::Primary { pts, date, seq } => {
                let mut s: ScalarState = self
                    .get_row(sid, Table::State, STATE_UPDATES)?
                    .unwrap_or_default();
                (s.pts, s.date, s.seq) = (pts, date, seq);
                self.put_scalar(sid, &s)?;
            }
            &UpdateStateChange::Secondary { qts } => {
                let mut s: ScalarState = self
                    .get_row(sid, Table::State, STATE_UPDATES)?
                    .unwrap_or_default();
                s.qts = qts;
                self.put_scalar(sid, &s)?;
            }
            &UpdateStateChange::Channel { id, pts } => {
                self.put_channel(sid, &ChannelState { id, pts })?;
            }
        }
        self.touch(sid)
    }
}
