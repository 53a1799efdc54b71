//! The session data model: what the vault stores for one Telegram session.
//!
//! A superset of grammers' `SessionData` and of Telethon's and Pyrogram's session tables, so
//! that each maps in and out without loss. These types travel on the wire (MessagePack, named
//! fields) and are what the daemon's vault engine encrypts at rest.
//!
//! At rest, records are positional (MessagePack arrays, no field names): the order of the
//! fields of the stored types is part of the on-disk format. Never reorder, remove or retype
//! a field; add new ones at the end, with `#[serde(default)]` (the daemon's
//! `vault::engine::record` pins the layout in a test).
//!
//! Secrets (auth keys) are [`AuthKey`]: zeroized on drop, and redacted in `Debug`.

use std::fmt;
use std::net::{SocketAddrV4, SocketAddrV6};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of an MTProto authorization key in bytes.
pub const AUTH_KEY_LEN: usize = 256;

/// A 256-byte MTProto authorization key. Zeroized on drop; `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct AuthKey(Box<[u8; AUTH_KEY_LEN]>);

impl AuthKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; AUTH_KEY_LEN]) -> Self {
        let mut key = AuthKey(Box::new([0u8; AUTH_KEY_LEN]));
        key.0.copy_from_slice(&bytes);
        key
    }

    /// Builds a key from a slice, which must be exactly [`AUTH_KEY_LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != AUTH_KEY_LEN {
            return None;
        }
        let mut key = AuthKey(Box::new([0u8; AUTH_KEY_LEN]));
        key.0.copy_from_slice(bytes);
        Some(key)
    }

    /// Lends the key bytes.
    pub fn as_bytes(&self) -> &[u8; AUTH_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(<redacted>)")
    }
}

impl Serialize for AuthKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0[..])
    }
}

impl<'de> Deserialize<'de> for AuthKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AuthKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{AUTH_KEY_LEN} bytes of auth key")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<AuthKey, E> {
                AuthKey::from_slice(v).ok_or_else(|| E::invalid_length(v.len(), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AuthKey, A::Error> {
                let mut key = AuthKey(Box::new([0u8; AUTH_KEY_LEN]));
                for i in 0..AUTH_KEY_LEN {
                    key.0[i] = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(AUTH_KEY_LEN + 1, &self));
                }
                Ok(key)
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// A datacenter option: addresses and, once a key was generated, the permanent auth key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcOption {
    /// Datacenter id (1..=5 for production DCs).
    pub id: i32,
    /// IPv4 address and port, where known.
    pub ipv4: Option<SocketAddrV4>,
    /// IPv6 address and port, where known.
    pub ipv6: Option<SocketAddrV6>,
    /// Permanent authorization key for this DC, if one was generated.
    pub auth_key: Option<AuthKey>,
}

/// What kind of peer an id names. Ordered as declared (users, chats, channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerKind {
    /// A user or bot account.
    User,
    /// A small group chat.
    Chat,
    /// A broadcast channel, megagroup, gigagroup or monoforum.
    Channel,
}

/// The kind of a channel (grammers' `ChannelKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A broadcast channel.
    Broadcast,
    /// A megagroup (supergroup).
    Megagroup,
    /// A gigagroup (broadcast group).
    Gigagroup,
    /// A community.
    Community,
}

/// The identity of a peer: its kind and its bare (unmarked, positive) Telegram id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerKey {
    /// Kind of the peer.
    pub kind: PeerKind,
    /// Bare id as used by MTProto.
    pub id: i64,
}

/// A cached peer.
///
/// Optional fields are "unknown" when `None`: caching merges like grammers'
/// `PeerInfo::extend_info` — a newly known field wins, an unknown one keeps the old value.
///
/// `Debug` hides the access hash (with the account's auth key it grants API access to the
/// peer) and the phone number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Kind of the peer.
    pub kind: PeerKind,
    /// Bare id as used by MTProto.
    pub id: i64,
    /// Access hash, where known.
    pub access_hash: Option<i64>,
    /// Users: whether this is a bot.
    pub bot: Option<bool>,
    /// Users: whether this is the logged-in user.
    pub is_self: Option<bool>,
    /// Channels: the channel kind.
    pub channel_kind: Option<ChannelKind>,
    /// Username without `@`, as Telegram spells it.
    pub username: Option<String>,
    /// Phone number, digits only.
    pub phone: Option<String>,
    /// Display name.
    pub name: Option<String>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |known: bool| if known { Some("<redacted>") } else { None };
        f.debug_struct("Peer")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("access_hash", &hidden(self.access_hash.is_some()))
            .field("bot", &self.bot)
            .field("is_self", &self.is_self)
            .field("channel_kind", &self.channel_kind)
            .field("username", &self.username)
            .field("phone", &hidden(self.phone.is_some()))
            .field("name", &self.name)
            .finish()
    }
}

impl Peer {
    /// A peer with only its identity known.
    pub fn new(kind: PeerKind, id: i64) -> Self {
        Peer {
            kind,
            id,
            access_hash: None,
            bot: None,
            is_self: None,
            channel_kind: None,
            username: None,
            phone: None,
            name: None,
        }
    }

    /// The peer's identity.
    pub fn key(&self) -> PeerKey {
        PeerKey {
            kind: self.kind,
            id: self.id,
        }
    }

    /// Merges `newer` into `self` by grammers' `extend_info` rules: every field `newer` knows
    /// replaces the old value, every field it leaves `None` keeps it. Returns `false` (and
    /// changes nothing) when the two name different peers.
    pub fn merge_from(&mut self, newer: &Peer) -> bool {
        if self.key() != newer.key() {
            return false;
        }
        fn take<T: Clone>(old: &mut Option<T>, new: &Option<T>) {
            if new.is_some() {
                old.clone_from(new);
            }
        }
        take(&mut self.access_hash, &newer.access_hash);
        take(&mut self.bot, &newer.bot);
        take(&mut self.is_self, &newer.is_self);
        take(&mut self.channel_kind, &newer.channel_kind);
        take(&mut self.username, &newer.username);
        take(&mut self.phone, &newer.phone);
        take(&mut self.name, &newer.name);
        true
    }
}

/// The peers of a `cache_peers` request (`PROTOCOL.md` §9): each one a map of [`Peer`]'s
/// fields, or, from minor 8, an array of exactly those nine fields in their declaration order
/// (`kind, id, access_hash, bot, is_self, channel_kind, username, phone, name`). The array
/// form ([`PeerBatch::compact`]) is a quarter of the bytes and decodes in half the time,
/// because no field name is written or matched; the daemon reads either form, per peer.
///
/// `compact` is only how the batch is written: decoding leaves it `false`, and equality
/// compares the peers alone.
#[derive(Clone, Default)]
pub struct PeerBatch {
    /// The peers, in call order.
    pub peers: Vec<Peer>,
    /// Write each peer as an array of its fields (for a daemon of minor 8 or later).
    pub compact: bool,
}

impl PeerBatch {
    /// `peers`, written as arrays if `compact`.
    pub fn new(peers: Vec<Peer>, compact: bool) -> Self {
        PeerBatch { peers, compact }
    }
}

impl From<Vec<Peer>> for PeerBatch {
    /// Peers written as maps (every daemon reads those).
    fn from(peers: Vec<Peer>) -> Self {
        PeerBatch::new(peers, false)
    }
}

impl FromIterator<Peer> for PeerBatch {
    fn from_iter<I: IntoIterator<Item = Peer>>(iter: I) -> Self {
        PeerBatch::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl PartialEq for PeerBatch {
    fn eq(&self, other: &Self) -> bool {
        self.peers == other.peers
    }
}

impl Eq for PeerBatch {}

impl fmt::Debug for PeerBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Peer`'s own `Debug`, which hides access hashes and phones.
        self.peers.fmt(f)
    }
}

impl Serialize for PeerBatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        if !self.compact {
            return self.peers.serialize(s);
        }
        let mut seq = s.serialize_seq(Some(self.peers.len()))?;
        for p in &self.peers {
            // Each field by its own `Serialize`, as in the map form; the order is what the
            // derived `Deserialize` reads from an array (a test checks them against each other).
            seq.serialize_element(&(
                p.kind,
                p.id,
                p.access_hash,
                p.bot,
                p.is_self,
                p.channel_kind,
                &p.username,
                &p.phone,
                &p.name,
            ))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for PeerBatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `Peer`'s derived code takes a map or an array of exactly its nine fields.
        Vec::<Peer>::deserialize(d).map(PeerBatch::from)
    }
}

/// The logged-in account of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfUser {
    /// Bare user id.
    pub id: i64,
    /// Whether the account is a bot.
    pub bot: bool,
}

/// Per-channel update state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// Bare channel id.
    pub id: i64,
    /// Persistent timestamp of the channel.
    pub pts: i32,
}

/// Full update state of the account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatesState {
    /// Primary persistent timestamp.
    pub pts: i32,
    /// Secondary persistent timestamp.
    pub qts: i32,
    /// Auxiliary date.
    pub date: i32,
    /// Auxiliary sequence number.
    pub seq: i32,
    /// Channel states, in the order they were last written (grammers' `MemorySession` order).
    pub channels: Vec<ChannelState>,
}

/// A change to the update state, as grammers' `UpdateState`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStateChange {
    /// Replace the whole state (channels included).
    All(UpdatesState),
    /// Set pts, date and seq.
    Primary {
        /// New pts.
        pts: i32,
        /// New date.
        date: i32,
        /// New seq.
        seq: i32,
    },
    /// Set qts.
    Secondary {
        /// New qts.
        qts: i32,
    },
    /// Set (or add) one channel's pts; the channel moves to the end of the list.
    Channel {
        /// Bare channel id.
        id: i64,
        /// New pts.
        pts: i32,
    },
}

/// An entry of Telethon's sent-file cache (`sent_files` table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentFile {
    /// MD5 digest of the file contents.
    pub md5_digest: Vec<u8>,
    /// File size in bytes.
    pub file_size: i64,
    /// Telethon's file type code (0 document, 1 photo).
    pub file_type: i32,
    /// Telegram file id.
    pub id: i64,
    /// Telegram file access hash.
    pub hash: i64,
}

/// Session-wide settings that are not DC options, peers or update state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionExtras {
    /// Telethon's takeout session id.
    pub takeout_id: Option<i64>,
    /// Telethon (≥ 1.40) temporary auth key, with the DC it belongs to.
    pub tmp_auth_key: Option<TmpAuthKey>,
    /// Pyrogram: the API id the session was created with.
    pub api_id: Option<i32>,
    /// Pyrogram/Telethon: whether the session is on Telegram's test servers.
    pub test_mode: bool,
}

/// A temporary auth key bound to a DC (Telethon ≥ 1.40 keeps one per session file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpAuthKey {
    /// DC the key belongs to.
    pub dc_id: i32,
    /// The key itself.
    pub key: AuthKey,
    /// Unix time the key expires at, where known.
    pub expires_at: Option<i64>,
}

/// Everything a session holds, in one value: the unit of import and export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// Home DC id.
    pub home_dc: i32,
    /// DC options, by id (sorted by id).
    pub dc_options: Vec<DcOption>,
    /// The logged-in account, where known.
    pub self_user: Option<SelfUser>,
    /// Cached peers.
    pub peers: Vec<Peer>,
    /// Update state.
    pub updates_state: UpdatesState,
    /// Telethon's sent-file cache.
    pub sent_files: Vec<SentFile>,
    /// Takeout id, temporary key, API id, test mode.
    pub extras: SessionExtras,
}

/// Grammers' default home DC for a new session.
pub const DEFAULT_HOME_DC: i32 = 2;

/// Telegram's five production DCs as grammers knows them statically (port 443).
pub fn known_dc_options() -> Vec<DcOption> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let v4 = |a, b, c, d| Some(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), 443));
    let v6 = |a, b, c, d, h| {
        Some(SocketAddrV6::new(
            Ipv6Addr::new(a, b, c, d, 0, 0, 0, h),
            443,
            0,
            0,
        ))
    };
    vec![
        DcOption {
            id: 1,
            ipv4: v4(149, 154, 175, 53),
            ipv6: v6(0x2001, 0xb28, 0xf23d, 0xf001, 0xa),
            auth_key: None,
        },
        DcOption {
            id: 2,
            ipv4: v4(149, 154, 167, 41),
            ipv6: v6(0x2001, 0x67c, 0x4e8, 0xf002, 0xa),
            auth_key: None,
        },
        DcOption {
            id: 3,
            ipv4: v4(149, 154, 175, 100),
            ipv6: v6(0x2001, 0xb28, 0xf23d, 0xf003, 0xa),
            auth_key: None,
        },
        DcOption {
            id: 4,
            ipv4: v4(149, 154, 167, 92),
            ipv6: v6(0x2001, 0x67c, 0x4e8, 0xf004, 0xa),
            auth_key: None,
        },
        DcOption {
            id: 5,
            ipv4: v4(91, 108, 56, 104),
            ipv6: v6(0x2001, 0xb28, 0xf23f, 0xf005, 0xa),
            auth_key: None,
        },
    ]
}

impl Default for SessionData {
    /// What a new session holds: grammers' `SessionData::default()` (home DC 2, the five
    /// known DC options without keys), nothing else.
    fn default() -> Self {
        SessionData {
            home_dc: DEFAULT_HOME_DC,
            dc_options: known_dc_options(),
            self_user: None,
            peers: Vec::new(),
            updates_state: UpdatesState::default(),
            sent_files: Vec::new(),
            extras: SessionExtras::default(),
        }
    }
}

/// What `list` shows of a session (no secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Session name.
    pub name: String,
    /// Unix seconds the session was created.
    pub created_at: i64,
    /// Unix seconds of the last write to the session.
    pub updated_at: i64,
    /// Home DC id.
    pub home_dc: i32,
    /// Whether the home DC holds an auth key (i.e. the session could be logged in).
    pub has_auth_key: bool,
    /// Logged-in user id, if known.
    pub user_id: Option<i64>,
    /// Number of cached peers.
    pub peer_count: u64,
    /// Owner uid (authorization), if set.
    pub owner_uid: Option<u32>,
}

/// Who may use a session besides the admins: its owner and the uids/gids granted access.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionAcl {
    /// The uid that created the session (or was made its owner).
    pub owner_uid: Option<u32>,
    /// Further uids granted access.
    pub uids: Vec<u32>,
    /// Groups whose members are granted access.
    pub gids: Vec<u32>,
}
