//! The data rows of a session: DC options, peers and Telethon's sent-file cache (the update
//! state is in `state.rs`). Same `Engine` as `mod.rs`, split along this seam to keep files
//! small; every write here goes through the sealed-row helpers of `rows.rs`.

use session_vault_proto::model::{DcOption, Peer, PeerKey, PeerKind, SelfUser, SentFile};

use session_vault_proto::message::PEER_PAGE_MAX;

use super::rows::{open_in, par_map, seal_in};
use super::{Engine, SessionId, kind_byte, normalize_phone, normalize_username};
use crate::vault::crypto::records::Blinder;
use crate::vault::error::{EngineError, Result};
use crate::vault::store::{Index, Row, Store, Table};

/// How [`Engine::cache_peers`] writes: from the share of new peers among the peers of recent
/// calls (counts that halve at each call, so a call weighs by its peers and older calls fade),
/// engine-wide. Insert-first saves a new peer's read and costs a peer that was there a seal
/// and a refused insert, so it is chosen while that share is at least a half.
#[derive(Debug, Default)]
pub struct PeerWrites {
    /// Decayed count of new peers.
    new: f32,
    /// Decayed count of all peers.
    all: f32,
}

impl PeerWrites {
    fn insert_first(&self) -> bool {
        #[cfg(test)]
        match FORCED_PEER_WRITES.load(std::sync::atomic::Ordering::SeqCst) {
            1 => return false,
            2 => return true,
            _ => {}
        }
        self.all > 0.0 && self.new >= 0.5 * self.all
    }

    fn record(&mut self, new: usize, of: usize) {
        self.new = 0.5 * self.new + new as f32;
        self.all = 0.5 * self.all + of as f32;
    }
}

/// The fewest peers of a [`Engine::cache_peers`] call whose crypto calls leave the stack to
/// one scrub at the end ([`crate::vault::crypto::scrubbed_once`]): below it, the per-call
/// scrubs cost less than the one larger scrub.
const SCRUB_ONCE_MIN: usize = 4;

/// The most DC options a session keeps. Telegram has five data centers (with test and media
/// addresses of them, a dozen or so options); the bound keeps `dc_options`, one read of them
/// all, small whatever a client sends.
pub const DC_OPTIONS_MAX: u64 = 64;

/// The self user a peer as kept names, if it is one (`is_self == Some(true)`).
fn self_user(p: &Peer) -> Option<SelfUser> {
    (p.kind == PeerKind::User && p.is_self == Some(true)).then(|| SelfUser {
        id: p.id,
        bot: p.bot.unwrap_or(false),
    })
}

/// No key is given twice.
fn all_distinct(keys: &[[u8; 16]]) -> bool {
    if keys.len() < 2 {
        return true;
    }
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.iter().all(|k| seen.insert(k))
}

/// Forces [`PeerWrites`]' choice in tests: 0 its own, 1 read first, 2 insert first (tests
/// run one per process under nextest).
#[cfg(test)]
pub(crate) static FORCED_PEER_WRITES: std::sync::atomic::AtomicU8 =
    std::sync::atomic::AtomicU8::new(0);

/// The fewest rows of a [`Engine::peers_page`] worth opening on two threads (about 2 µs of
/// AEAD and decoding per row).
pub const PARALLEL_OPEN_MIN: usize = 512;

/// The fewest new peers of a [`Engine::cache_peers`] call worth blinding and sealing on two
/// threads: about 0.9 µs of HMAC and AEAD per peer against a wake-up of the kept helper thread
/// and the wait for it (a 100-peer call measured 13% faster so, where a thread started for
/// each call made it no faster).
pub const PARALLEL_SEAL_MIN: usize = 32;

impl<S: Store> Engine<S> {
    // ---- DC options ---------------------------------------------------------------------------

    /// Every DC option, by id.
    pub fn dc_options(&mut self, sid: SessionId) -> Result<Vec<DcOption>> {
        let mut v: Vec<DcOption> = self.scan_rows(sid, Table::DcOptions)?;
        v.sort_by_key(|d| d.id);
        Ok(v)
    }

    /// One DC option.
    pub fn dc_option(&mut self, sid: SessionId, dc_id: i32) -> Result<Option<DcOption>> {
        self.get_row(sid, Table::DcOptions, &dc_id.to_be_bytes())
    }

    /// Inserts or replaces a DC option (auth key included). Durable.
    pub fn set_dc_option(&mut self, sid: SessionId, dc: &DcOption) -> Result<()> {
        let k = self.row_key(sid, Table::DcOptions, &dc.id.to_be_bytes())?;
        // Counted first (one small read), looked for only at the bound: a kept one may change.
        if self.store.count(Table::DcOptions, sid.0)? >= DC_OPTIONS_MAX
            && self.store.get(Table::DcOptions, sid.0, &k)?.is_none()
        {
            return Err(EngineError::Invalid(format!(
                "a session keeps at most {DC_OPTIONS_MAX} DC options and this one has that \
                 many; DC {} is not added",
                dc.id
            )));
        }
        let row = self.seal_row(sid, Table::DcOptions, &k, dc)?;
        self.store
            .put(Table::DcOptions, sid.0, &row, [None, None])?;
        self.touch(sid)
    }

    // ---- peers --------------------------------------------------------------------------------

    pub(super) fn peer_key_bytes(key: PeerKey) -> [u8; 9] {
        let mut b = [0u8; 9];
        b[0] = kind_byte(key.kind);
        b[1..].copy_from_slice(&key.id.to_be_bytes());
        b
    }

    /// A cached peer by identity.
    /// Prepares the store for look-ups of `sid`'s peers ([`Store::prepare_peers`]).
    pub fn prepare_peers(&mut self, sid: SessionId) -> Result<()> {
        self.live(sid)?;
        self.store.prepare_peers(sid.0)
    }

    pub fn peer(&mut self, sid: SessionId, key: PeerKey) -> Result<Option<Peer>> {
        self.get_row(sid, Table::Peers, &Self::peer_key_bytes(key))
    }

    /// The logged-in user's cached peer (grammers' `PeerId::self_user()`).
    pub fn self_peer(&mut self, sid: SessionId) -> Result<Option<Peer>> {
        match self.self_user(sid)? {
            None => Ok(None),
            Some(me) => self.peer(
                sid,
                PeerKey {
                    kind: PeerKind::User,
                    id: me.id,
                },
            ),
        }
    }

    fn find_peer(
        &mut self,
        sid: SessionId,
        index: Index,
        field: &str,
        value: &str,
    ) -> Result<Option<Peer>> {
        // Locked/unknown-session errors come before any shortcut.
        self.live(sid)?;
        if value.is_empty() {
            return Ok(None);
        }
        let blind = self
            .live(sid)?
            .keys
            .blind("peers", sid.0, field, value.as_bytes());
        let Some(row) = self.store.find(Table::Peers, sid.0, index, &blind)? else {
            return Ok(None);
        };
        let peer: Peer = self.open_row(sid, Table::Peers, &row)?;
        // The index columns are not covered by the record's AEAD: a value moved or swapped
        // between rows would hand out another peer. The record itself must name the value.
        let [username, phone] = Self::peer_index_values(&peer);
        let named = match index {
            Index::Username => username,
            Index::Phone => phone,
        };
        if named.as_deref() != Some(value) {
            return Err(EngineError::Corrupt {
                table: "peers",
                session_id: sid.0,
                row: String::new(),
                reason: "index value does not match the record it points to (moved or swapped)",
            });
        }
        Ok(Some(peer))
    }

    /// A peer's normalized username and phone, where set and not empty: the values its index
    /// columns blind.
    pub(super) fn peer_index_values(peer: &Peer) -> [Option<String>; 2] {
        [
            peer.username
                .as_deref()
                .map(normalize_username)
                .filter(|s| !s.is_empty()),
            peer.phone
                .as_deref()
                .map(normalize_phone)
                .filter(|s| !s.is_empty()),
        ]
    }

    /// A cached peer by username, case-insensitively (a leading `@` is ignored).
    pub fn peer_by_username(&mut self, sid: SessionId, username: &str) -> Result<Option<Peer>> {
        self.find_peer(
            sid,
            Index::Username,
            "username",
            &normalize_username(username),
        )
    }

    /// A cached peer by phone number (only its digits count).
    pub fn peer_by_phone(&mut self, sid: SessionId, phone: &str) -> Result<Option<Peer>> {
        self.find_peer(sid, Index::Phone, "phone", &normalize_phone(phone))
    }

    /// Every cached peer, oldest first.
    pub fn peers(&mut self, sid: SessionId) -> Result<Vec<Peer>> {
        self.scan_rows(sid, Table::Peers)
    }

    /// A page of cached peers for a client's warm start, most recently added first: up to
    /// `limit` (at most [`PEER_PAGE_MAX`]; 0 means that many) below cursor `before`, and the
    /// cursor of the next page (`None` after the last). A page of at least
    /// `PARALLEL_OPEN_MIN` rows is opened (AEAD, MessagePack) on two threads.
    pub fn peers_page(
        &mut self,
        sid: SessionId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<Peer>, Option<i64>)> {
        self.live(sid)?;
        let limit = if limit == 0 {
            PEER_PAGE_MAX
        } else {
            limit.min(PEER_PAGE_MAX)
        };
        let rows = self.store.scan_page(Table::Peers, sid.0, before, limit)?;
        let next = if rows.len() == limit as usize {
            rows.last().map(|(pos, _)| *pos)
        } else {
            None
        };
        let u = self.live(sid)?;
        let peers = par_map(&rows, PARALLEL_OPEN_MIN, |(_, r)| {
            open_in(u, sid, Table::Peers, &r.key, &r.value)
        })?;
        Ok((peers, next))
    }

    /// Caches peers, merging each into what is cached by `PeerInfo::extend_info` rules.
    /// A peer with `is_self == Some(true)` becomes the session's self user. Cache class.
    ///
    /// Two ways to the same result (`PeerWrites` chooses): read every row first and write the
    /// peers that are new or changed; or, while recent calls brought mostly new peers (a
    /// fill, a bot meeting new users), seal every peer and insert it where its row is
    /// absent, reading and merging only the rows that were there
    /// ([`Store::insert_absent`]): a new peer then costs one index seek instead of two.
    /// Insert-first applies the writes out of call order (every insert, then the rewrites of
    /// the rows that were there), so it is taken only where order cannot matter: no key given
    /// twice, and no peer bringing a username or phone, whose blind index goes to the last
    /// peer written with it (grammers' peers carry neither; Telethon's and Pyrogram's often do).
    pub fn cache_peers(&mut self, sid: SessionId, peers: &[Peer]) -> Result<()> {
        if peers.len() >= SCRUB_ONCE_MIN {
            crate::vault::crypto::scrubbed_once(|| self.cache_peers_in(sid, peers))
        } else {
            self.cache_peers_in(sid, peers)
        }
    }

    fn cache_peers_in(&mut self, sid: SessionId, peers: &[Peer]) -> Result<()> {
        // The row keys' HMACs are computed once, for the read and for the write; the rows
        // are read in one go (one round trip on PostgreSQL).
        let insert_first = self.peer_writes.insert_first()
            && peers
                .iter()
                .all(|p| p.username.is_none() && p.phone.is_none());
        let u = self.live(sid)?;
        let blind = |b: &Blinder, p: &Peer| b.blind(&Self::peer_key_bytes(p.key()));
        let (keys, rows) = u
            .keys
            .with_blinder(Table::Peers.name(), sid.0, "key", |b| {
                if insert_first {
                    // Blinded and sealed in one pass (on two threads for a large batch).
                    let sealed = par_map(peers, PARALLEL_SEAL_MIN, |p| {
                        let k = blind(b, p);
                        Ok((k, seal_in(u, sid, Table::Peers, &k, p)?))
                    })?;
                    let (keys, rows): (Vec<_>, Vec<_>) = sealed.into_iter().unzip();
                    Ok::<_, EngineError>((keys, Some(rows)))
                } else {
                    Ok((peers.iter().map(|p| blind(b, p)).collect(), None))
                }
            })?;
        let (new_self, new) = match rows {
            Some(rows) if all_distinct(&keys) => {
                self.insert_peers_first(sid, peers, &keys, rows)?
            }
            _ => self.read_peers_first(sid, peers, &keys)?,
        };
        self.peer_writes.record(new, peers.len());
        if let Some(me) = new_self {
            self.update_record(sid, |r| r.self_user = Some(me))?;
        }
        self.touch(sid)
    }

    /// [`Engine::cache_peers`] by reading first; answers the last self user among the peers as
    /// kept, and how many were new. A peer given twice merges into what this call wrote for it.
    fn read_peers_first(
        &mut self,
        sid: SessionId,
        peers: &[Peer],
        keys: &[[u8; 16]],
    ) -> Result<(Option<SelfUser>, usize)> {
        let key_refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let stored = self.store.get_many(Table::Peers, sid.0, &key_refs)?;
        let mut written: std::collections::HashMap<[u8; 16], Peer> = Default::default();
        let mut new_self = None;
        let mut new = 0;
        for ((peer, k), sealed) in peers.iter().zip(keys).zip(stored) {
            let old: Option<Peer> = match (written.get(k), sealed) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(v)) => Some(self.open_at(sid, Table::Peers, k, &v)?),
                (None, None) => None,
            };
            new += usize::from(old.is_none());
            let merged = match &old {
                Some(old) => {
                    let mut merged = old.clone();
                    merged.merge_from(peer);
                    merged
                }
                None => peer.clone(),
            };
            // An unchanged peer costs a read, not a write (bots re-cache the same peers often).
            if old.as_ref() != Some(&merged) {
                self.write_peer(sid, k, &merged)?;
                if peers.len() > 1 {
                    written.insert(*k, merged.clone());
                }
            }
            new_self = self_user(&merged).or(new_self);
        }
        Ok((new_self, new))
    }

    /// [`Engine::cache_peers`] by inserting first (no key given twice); answers like
    /// [`Engine::read_peers_first`].
    fn insert_peers_first(
        &mut self,
        sid: SessionId,
        peers: &[Peer],
        keys: &[[u8; 16]],
        rows: Vec<Row>,
    ) -> Result<(Option<SelfUser>, usize)> {
        // No username or phone (the caller checked): no index values.
        let rows: Vec<(Row, [Option<&[u8]>; 2])> =
            rows.into_iter().map(|row| (row, [None, None])).collect();
        let stored = self.store.insert_absent(Table::Peers, sid.0, &rows)?;
        drop(rows);
        let mut new_self = None;
        let mut new = 0;
        for ((peer, k), sealed) in peers.iter().zip(keys).zip(stored) {
            let Some(v) = sealed else {
                new += 1;
                new_self = self_user(peer).or(new_self);
                continue;
            };
            let old: Peer = self.open_at(sid, Table::Peers, k, &v)?;
            let mut merged = old.clone();
            merged.merge_from(peer);
            if merged != old {
                self.write_peer(sid, k, &merged)?;
            }
            new_self = self_user(&merged).or(new_self);
        }
        Ok((new_self, new))
    }

    /// The blind index values of a peer's username and phone.
    fn peer_index_blinds(&self, sid: SessionId, peer: &Peer) -> Result<[Option<[u8; 16]>; 2]> {
        let u = self.live(sid)?;
        let [uname, phone] = Self::peer_index_values(peer);
        Ok([
            uname.map(|s| u.keys.blind("peers", sid.0, "username", s.as_bytes())),
            phone.map(|s| u.keys.blind("peers", sid.0, "phone", s.as_bytes())),
        ])
    }

    fn write_peer(&mut self, sid: SessionId, k: &[u8; 16], peer: &Peer) -> Result<()> {
        let [uname, phone] = self.peer_index_blinds(sid, peer)?;
        let row = self.seal_row(sid, Table::Peers, k, peer)?;
        self.store.put(
            Table::Peers,
            sid.0,
            &row,
            [
                uname.as_ref().map(|b| &b[..]),
                phone.as_ref().map(|b| &b[..]),
            ],
        )
    }

    // ---- Telethon sent files ------------------------------------------------------------------

    pub(super) fn sent_file_key(md5: &[u8], size: i64, file_type: i32) -> Vec<u8> {
        let mut k = Vec::with_capacity(md5.len() + 12);
        k.extend_from_slice(&size.to_be_bytes());
        k.extend_from_slice(&file_type.to_be_bytes());
        k.extend_from_slice(md5);
        k
    }

    /// Caches a sent file (Telethon's `sent_files`). Cache class.
    pub fn put_sent_file(&mut self, sid: SessionId, f: &SentFile) -> Result<()> {
        let raw = Self::sent_file_key(&f.md5_digest, f.file_size, f.file_type);
        let k = self.row_key(sid, Table::SentFiles, &raw)?;
        let row = self.seal_row(sid, Table::SentFiles, &k, f)?;
        self.store
            .put(Table::SentFiles, sid.0, &row, [None, None])?;
        self.touch(sid)
    }

    /// A sent file by (md5, size, type).
    pub fn sent_file(
        &mut self,
        sid: SessionId,
        md5: &[u8],
        size: i64,
        file_type: i32,
    ) -> Result<Option<SentFile>> {
        let raw = Self::sent_file_key(md5, size, file_type);
        self.get_row(sid, Table::SentFiles, &raw)
    }

    /// Every cached sent file.
    pub fn sent_files(&mut self, sid: SessionId) -> Result<Vec<SentFile>> {
        self.scan_rows(sid, Table::SentFiles)
    }
}

#[cfg(test)]
mod tests {
    use super::PeerWrites;

    #[test]
    fn a_fill_turns_to_insert_first_and_re_caching_turns_it_back() {
        let mut w = PeerWrites::default();
        assert!(!w.insert_first(), "a fresh engine reads first");
        w.record(100, 100);
        assert!(w.insert_first(), "one all-new batch is enough");
        w.record(0, 1);
        assert!(w.insert_first(), "a single known peer does not end a fill");
        w.record(0, 10);
        assert!(
            w.insert_first(),
            "the 100-peer batch still outweighs 11 known peers"
        );
        w.record(0, 10);
        assert!(!w.insert_first(), "but fades: 21 known peers since end it");
        // The mix: 2 new of 10 per call keeps it reading first.
        for _ in 0..20 {
            w.record(2, 10);
        }
        assert!(!w.insert_first());
        // A fill again, one big batch.
        w.record(1000, 1000);
        assert!(w.insert_first());
        // An empty call changes nothing but the fading.
        w.record(0, 0);
        assert!(w.insert_first());
    }
}
