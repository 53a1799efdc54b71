//! Conversions between grammers' session types and the vault's wire model.
//!
//! - `PeerId` ↔ [`PeerKey`]: the kind and the bare id (`PeerId::self_user()` has no key: it
//!   is asked for with `PeerQuery::SelfUser`);
//! - `PeerInfo` ↔ [`Peer`]: users keep auth (as the access hash), bot and is_self; chats their
//!   id; channels auth and kind. Username, phone and name (which grammers does not carry) stay
//!   `None` on the way in, so the daemon's merge keeps what it knew;
//! - `DcOption`: the wire's addresses are optional (Telethon sessions store one address);
//!   grammers needs both, so an absent one falls back to the statically known address of that
//!   DC, else is derived from the other (IPv4-mapped IPv6), else is the unspecified address;
//! - `UpdatesState`/`UpdateState` and whole `SessionData` values.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6};
use std::sync::OnceLock;

use grammers_session::SessionData as GSessionData;
use grammers_session::types::{
    ChannelKind as GChannelKind, ChannelState as GChannelState, DcOption as GDcOption, PeerAuth,
    PeerId, PeerInfo, PeerKind as GPeerKind, UpdateState, UpdatesState as GUpdatesState,
};
use session_vault_proto::model::{
    AuthKey, ChannelKind, ChannelState, DcOption, Peer, PeerKey, PeerKind, SelfUser, SessionData,
    SessionExtras, UpdateStateChange, UpdatesState, known_dc_options,
};

/// The vault's key for a grammers peer id; `None` for `PeerId::self_user()`.
pub(crate) fn peer_key(id: PeerId) -> Option<PeerKey> {
    let bare = id.bare_id()?;
    let kind = match id.kind() {
        GPeerKind::User => PeerKind::User,
        GPeerKind::Chat => PeerKind::Chat,
        GPeerKind::Channel => PeerKind::Channel,
    };
    Some(PeerKey { kind, id: bare })
}

fn channel_kind_to_wire(k: GChannelKind) -> ChannelKind {
    match k {
        GChannelKind::Broadcast => ChannelKind::Broadcast,
        GChannelKind::Megagroup => ChannelKind::Megagroup,
        GChannelKind::Gigagroup => ChannelKind::Gigagroup,
        GChannelKind::Community => ChannelKind::Community,
    }
}

fn channel_kind_from_wire(k: ChannelKind) -> GChannelKind {
    match k {
        ChannelKind::Broadcast => GChannelKind::Broadcast,
        ChannelKind::Megagroup => GChannelKind::Megagroup,
        ChannelKind::Gigagroup => GChannelKind::Gigagroup,
        ChannelKind::Community => GChannelKind::Community,
    }
}

/// A grammers peer as the vault stores it.
pub(crate) fn peer_to_wire(info: &PeerInfo) -> Peer {
    match *info {
        PeerInfo::User {
            id,
            auth,
            bot,
            is_self,
        } => Peer {
            access_hash: auth.map(PeerAuth::hash),
            bot,
            is_self,
            ..Peer::new(PeerKind::User, id)
        },
        PeerInfo::Chat { id } => Peer::new(PeerKind::Chat, id),
        PeerInfo::Channel { id, auth, kind } => Peer {
            access_hash: auth.map(PeerAuth::hash),
            channel_kind: kind.map(channel_kind_to_wire),
            ..Peer::new(PeerKind::Channel, id)
        },
    }
}

/// A vault peer as grammers sees it; `None` when its id is outside grammers' valid ranges
/// (grammers' `PeerInfo::id` would panic on it).
pub(crate) fn peer_from_wire(p: &Peer) -> Option<PeerInfo> {
    Some(match p.kind {
        PeerKind::User => {
            PeerId::user(p.id)?;
            PeerInfo::User {
                id: p.id,
                auth: p.access_hash.map(PeerAuth::from_hash),
                bot: p.bot,
                is_self: p.is_self,
            }
        }
        PeerKind::Chat => {
            PeerId::chat(p.id)?;
            PeerInfo::Chat { id: p.id }
        }
        PeerKind::Channel => {
            PeerId::channel(p.id)?;
            PeerInfo::Channel {
                id: p.id,
                auth: p.access_hash.map(PeerAuth::from_hash),
                kind: p.channel_kind.map(channel_kind_from_wire),
            }
        }
    })
}

/// Whether `p` knows every field grammers reads of its kind (users: access hash, bot,
/// is_self; channels: access hash, kind; chats: nothing but the id). The daemon's merge of
/// such a peer into whatever it held (a newly known field wins) then equals `p` in all of
/// them, so that a client can tell what grammers will read back without asking.
pub(crate) fn grammers_complete(p: &Peer) -> bool {
    match p.kind {
        PeerKind::User => p.access_hash.is_some() && p.bot.is_some() && p.is_self.is_some(),
        PeerKind::Chat => true,
        PeerKind::Channel => p.access_hash.is_some() && p.channel_kind.is_some(),
    }
}

fn known() -> &'static [DcOption] {
    static KNOWN: OnceLock<Vec<DcOption>> = OnceLock::new();
    KNOWN.get_or_init(known_dc_options)
}

/// grammers' statically known option for `dc_id` (production DCs 1..=5).
pub(crate) fn known_dc_option(dc_id: i32) -> Option<GDcOption> {
    known()
        .iter()
        .find(|d| d.id == dc_id)
        .map(dc_option_from_wire)
}

/// A vault DC option as grammers needs it: both addresses always present.
pub(crate) fn dc_option_from_wire(o: &DcOption) -> GDcOption {
    let known = known().iter().find(|d| d.id == o.id);
    let ipv4 = o
        .ipv4
        .or(known.and_then(|k| k.ipv4))
        .or_else(|| {
            o.ipv6.and_then(|a| {
                a.ip()
                    .to_ipv4_mapped()
                    .map(|ip| SocketAddrV4::new(ip, a.port()))
            })
        })
        .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    let ipv6 = o
        .ipv6
        .or(known.and_then(|k| k.ipv6))
        .unwrap_or_else(|| SocketAddrV6::new(ipv4.ip().to_ipv6_mapped(), ipv4.port(), 0, 0));
    GDcOption {
        id: o.id,
        ipv4,
        ipv6,
        auth_key: o.auth_key.as_ref().map(|k| *k.as_bytes()),
    }
}

/// A grammers DC option as the vault stores it.
pub(crate) fn dc_option_to_wire(o: &GDcOption) -> DcOption {
    DcOption {
        id: o.id,
        ipv4: Some(o.ipv4),
        ipv6: Some(o.ipv6),
        auth_key: o.auth_key.map(AuthKey::new),
    }
}

/// grammers' update state from the vault's.
pub(crate) fn state_from_wire(s: &UpdatesState) -> GUpdatesState {
    GUpdatesState {
        pts: s.pts,
        qts: s.qts,
        date: s.date,
        seq: s.seq,
        channels: s
            .channels
            .iter()
            .map(|c| GChannelState {
                id: c.id,
                pts: c.pts,
            })
            .collect(),
    }
}

/// The vault's update state from grammers'.
pub(crate) fn state_to_wire(s: &GUpdatesState) -> UpdatesState {
    UpdatesState {
        pts: s.pts,
        qts: s.qts,
        date: s.date,
        seq: s.seq,
        channels: s
            .channels
            .iter()
            .map(|c| ChannelState {
                id: c.id,
                pts: c.pts,
            })
            .collect(),
    }
}

/// grammers' update-state change as the wire names it.
pub(crate) fn change_to_wire(u: &UpdateState) -> UpdateStateChange {
    match u {
        UpdateState::All(s) => UpdateStateChange::All(state_to_wire(s)),
        &UpdateState::Primary { pts, date, seq } => UpdateStateChange::Primary { pts, date, seq },
        &UpdateState::Secondary { qts } => UpdateStateChange::Secondary { qts },
        &UpdateState::Channel { id, pts } => UpdateStateChange::Channel { id, pts },
    }
}

/// Applies a change to a state exactly as the daemon does (which is grammers'
/// `MemorySession`, except that `All` with a channel listed twice keeps its last entry, at
/// the place of that entry: the daemon stores one row per channel).
pub(crate) fn apply_change(state: &mut UpdatesState, change: &UpdateStateChange) {
    fn put_channel(channels: &mut Vec<ChannelState>, c: ChannelState) {
        channels.retain(|old| old.id != c.id);
        channels.push(c);
    }
    match change {
        UpdateStateChange::All(all) => {
            *state = UpdatesState {
                channels: Vec::with_capacity(all.channels.len()),
                ..*all
            };
            for c in &all.channels {
                put_channel(&mut state.channels, *c);
            }
        }
        &UpdateStateChange::Primary { pts, date, seq } => {
            (state.pts, state.date, state.seq) = (pts, date, seq);
        }
        &UpdateStateChange::Secondary { qts } => state.qts = qts,
        &UpdateStateChange::Channel { id, pts } => {
            put_channel(&mut state.channels, ChannelState { id, pts });
        }
    }
}

/// A whole grammers session as the vault stores it.
///
/// The self user is the user peer marked `is_self` (the lowest id, should there be several);
/// sent files and extras (Telethon's) are empty: grammers has none.
pub(crate) fn session_to_wire(d: &GSessionData) -> SessionData {
    let mut dc_options: Vec<DcOption> = d.dc_options.values().map(dc_option_to_wire).collect();
    dc_options.sort_by_key(|o| o.id);
    let mut peers: Vec<Peer> = d.peer_infos.values().map(peer_to_wire).collect();
    peers.sort_by_key(|p| (p.kind, p.id));
    let self_user = peers
        .iter()
        .filter(|p| p.kind == PeerKind::User && p.is_self == Some(true))
        .map(|p| SelfUser {
            id: p.id,
            bot: p.bot.unwrap_or(false),
        })
        .next();
    SessionData {
        home_dc: d.home_dc,
        dc_options,
        self_user,
        peers,
        updates_state: state_to_wire(&d.updates_state),
        sent_files: Vec::new(),
        extras: SessionExtras::default(),
    }
}

/// A whole vault session as grammers' `SessionData`.
///
/// Peers whose ids grammers cannot represent are left out. A self user the vault knows but
/// holds no peer for (a Telethon import, say) becomes a user peer marked `is_self`, which is
/// how grammers tells that a session is signed in.
pub(crate) fn session_from_wire(d: &SessionData) -> GSessionData {
    let mut peer_infos: HashMap<PeerId, PeerInfo> = d
        .peers
        .iter()
        .filter_map(peer_from_wire)
        .map(|p| (p.id(), p))
        .collect();
    if let Some(me) = d.self_user {
        if let Some(id) = PeerId::user(me.id) {
            peer_infos.entry(id).or_insert(PeerInfo::User {
                id: me.id,
                auth: None,
                bot: Some(me.bot),
                is_self: Some(true),
            });
        }
    }
    GSessionData {
        home_dc: d.home_dc,
        dc_options: d
            .dc_options
            .iter()
            .map(|o| (o.id, dc_option_from_wire(o)))
            .collect(),
        peer_infos,
        updates_state: state_from_wire(&d.updates_state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_round_trip() {
        let infos = [
            PeerInfo::User {
                id: 7,
                auth: Some(PeerAuth::from_hash(-5)),
                bot: Some(true),
                is_self: None,
            },
            PeerInfo::Chat { id: 9 },
            PeerInfo::Channel {
                id: 1002147483650,
                auth: None,
                kind: Some(GChannelKind::Community),
            },
        ];
        for info in infos {
            let wire = peer_to_wire(&info);
            assert_eq!(peer_key(info.id()), Some(wire.key()));
            assert_eq!(peer_from_wire(&wire), Some(info));
        }
        assert_eq!(peer_key(PeerId::self_user()), None);
        assert_eq!(peer_from_wire(&Peer::new(PeerKind::User, 0)), None);
    }

    #[test]
    fn absent_addresses_fall_back() {
        let known2 = known_dc_option(2).unwrap();
        let o = dc_option_from_wire(&DcOption {
            id: 2,
            ipv4: None,
            ipv6: None,
            auth_key: None,
        });
        assert_eq!(o, known2);
        let v4 = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 8443);
        let o = dc_option_from_wire(&DcOption {
            id: 9,
            ipv4: Some(v4),
            ipv6: None,
            auth_key: None,
        });
        assert_eq!(o.ipv4, v4);
        assert_eq!(o.ipv6.ip().to_ipv4_mapped(), Some(*v4.ip()));
        assert_eq!(o.ipv6.port(), 8443);
    }

    #[test]
    fn all_keeps_last_entry_of_a_repeated_channel() {
        let mut s = UpdatesState::default();
        let c = |id, pts| ChannelState { id, pts };
        apply_change(
            &mut s,
            &UpdateStateChange::All(UpdatesState {
                pts: 1,
                qts: 2,
                date: 3,
                seq: 4,
                channels: vec![c(1, 1), c(2, 2), c(1, 3)],
            }),
        );
        assert_eq!(s.channels, vec![c(2, 2), c(1, 3)]);
        apply_change(&mut s, &UpdateStateChange::Channel { id: 2, pts: 9 });
        assert_eq!(s.channels, vec![c(1, 3), c(2, 9)]);
        assert_eq!((s.pts, s.qts, s.date, s.seq), (1, 2, 3, 4));
    }
}
