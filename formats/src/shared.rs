//! Helpers shared by the formats: marked ("Bot API") peer ids, and DC tables and options.

use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};

use session_vault_proto::model::{DcOption, PeerKind, SessionData, known_dc_options};

use super::{Format, FormatError};

/// A marked ("Bot API") id to its kind and bare id, as Telethon's `resolve_id` and grammers'
/// `PeerId::kind` read it; `None` for 0 and the empty-chat id.
pub(crate) fn unmark(marked: i64) -> Option<(PeerKind, i64)> {
    const CHANNEL_BASE: i64 = 1_000_000_000_000;
    if marked > 0 {
        Some((PeerKind::User, marked))
    } else if (-999_999_999_999..=-1).contains(&marked) {
        Some((PeerKind::Chat, -marked))
    } else if marked < -CHANNEL_BASE {
        marked
            .checked_neg()
            .map(|m| (PeerKind::Channel, m - CHANNEL_BASE))
    } else {
        None
    }
}

/// A kind and bare id to the marked ("Bot API") id.
pub(crate) fn mark(kind: PeerKind, id: i64) -> i64 {
    match kind {
        PeerKind::User => id,
        PeerKind::Chat => -id,
        PeerKind::Channel => -(1_000_000_000_000 + id),
    }
}

/// Telegram's production DC table, with the home DC's entry set to `home` (its address and
/// key), sorted by id.
pub(crate) fn dc_table_with(home: DcOption) -> Vec<DcOption> {
    let mut dcs: Vec<DcOption> = known_dc_options()
        .into_iter()
        .filter(|d| d.id != home.id)
        .collect();
    dcs.push(home);
    dcs.sort_by_key(|d| d.id);
    dcs
}

/// A DC option for one address (the other family left unknown).
pub(crate) fn dc_at(id: i32, ip: IpAddr, port: u16) -> DcOption {
    let (ipv4, ipv6) = match ip {
        IpAddr::V4(a) => (Some(SocketAddrV4::new(a, port)), None),
        IpAddr::V6(a) => (None, Some(SocketAddrV6::new(a, port, 0, 0))),
    };
    DcOption {
        id,
        ipv4,
        ipv6,
        auth_key: None,
    }
}

/// The known production address of DC `id`, if it is one of the five.
pub(crate) fn known_dc(id: i32) -> Option<DcOption> {
    known_dc_options().into_iter().find(|d| d.id == id)
}

/// The home DC's option of `data`, with its auth key, or the error of a session without one.
pub(crate) fn home_option(data: &SessionData, format: Format) -> Result<&DcOption, FormatError> {
    data.dc_options
        .iter()
        .find(|d| d.id == data.home_dc && d.auth_key.is_some())
        .ok_or_else(|| {
            FormatError::no_auth_key(
                format,
                format!(
                    "the session holds no auth key for its home DC {}: there is nothing to export",
                    data.home_dc
                ),
            )
        })
}
