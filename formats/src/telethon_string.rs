//! Telethon's `StringSession`: `'1'` + URL-safe base64 of `>B{4|16}sH256s` (DC id, packed
//! IP, port, key), 353 characters for IPv4 and 369 for IPv6 with the padding Telethon keeps
//! (copies often lose it: both are read). Checked against `telethon/sessions/string.py` of
//! Telethon 1.40 and 1.45.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use session_vault_proto::model::{DcOption, SessionData, SessionExtras, UpdatesState};
use zeroize::Zeroizing;

use super::telethon::auth_key_from;
use super::{
    ErrorKind, Format, FormatError, Imported, dc_at, dc_table_with, home_option, known_dc,
};

/// Lengths of a Telethon string without its `=` padding (`'1'` included).
pub(crate) const STRING_LENGTHS: [usize; 2] = [352, 368];

const FS: Format = Format::TelethonString;

/// URL-safe base64 that accepts the string with or without its padding.
fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    )
}

pub(crate) fn parse_string(s: &str) -> Result<Imported, FormatError> {
    let Some(body) = s.strip_prefix('1') else {
        return Err(FormatError::new(
            FS,
            ErrorKind::NotThisFormat,
            "a Telethon string starts with its version, 1",
        ));
    };
    let bare = body.trim_end_matches('=');
    if !STRING_LENGTHS.contains(&(bare.len() + 1)) {
        return Err(FormatError::malformed(
            FS,
            format!(
                "the string has {} characters; a Telethon string has 353 (IPv4) or 369 (IPv6), \
                 or 352 or 368 without its padding",
                s.len()
            ),
        ));
    }
    let raw = Zeroizing::new(
        b64()
            .decode(bare)
            .map_err(|e| FormatError::malformed(FS, format!("not valid URL-safe base64: {e}")))?,
    );
    let ip_len = raw.len() - 1 - 2 - 256;
    let dc = i32::from(raw[0]);
    if dc == 0 {
        return Err(FormatError::malformed(FS, "DC id 0 is not valid"));
    }
    let ip: IpAddr = match ip_len {
        4 => Ipv4Addr::from(<[u8; 4]>::try_from(&raw[1..5]).expect("4 bytes")).into(),
        16 => Ipv6Addr::from(<[u8; 16]>::try_from(&raw[1..17]).expect("16 bytes")).into(),
        n => {
            return Err(FormatError::malformed(
                FS,
                format!("an address of {n} bytes"),
            ));
        }
    };
    let port = u16::from_be_bytes([raw[1 + ip_len], raw[2 + ip_len]]);
    let key = &raw[3 + ip_len..];
    let mut home = dc_at(dc, ip, port);
    home.auth_key = Some(auth_key_from(key, FS)?);
    let padded = body.len() != bare.len();
    Ok(Imported {
        data: SessionData {
            home_dc: dc,
            dc_options: dc_table_with(home),
            self_user: None,
            peers: Vec::new(),
            updates_state: UpdatesState::default(),
            sent_files: Vec::new(),
            extras: SessionExtras::default(),
        },
        format: FS,
        version: Some(format!(
            "version 1, {}{}",
            if ip_len == 4 { "IPv4" } else { "IPv6" },
            if padded { "" } else { ", padding missing" }
        )),
        notes: vec![
            "a Telethon string holds no user id (pass --self-id to record it), peers or \
             update state"
                .into(),
        ],
    })
}

/// The address Telethon should connect to: the IPv4 one when known, else the IPv6 one, else
/// Telegram's known address for the DC.
pub(crate) fn home_address(dc: &DcOption, format: Format) -> Result<(IpAddr, u16), FormatError> {
    if let Some(a) = dc.ipv4 {
        return Ok(((*a.ip()).into(), a.port()));
    }
    if let Some(a) = dc.ipv6 {
        return Ok(((*a.ip()).into(), a.port()));
    }
    known_dc(dc.id)
        .and_then(|k| k.ipv4)
        .map(|a| ((*a.ip()).into(), a.port()))
        .ok_or_else(|| FormatError::malformed(format, format!("DC {} has no address", dc.id)))
}

pub(crate) fn export_string(
    data: &SessionData,
) -> Result<(Zeroizing<String>, Vec<String>), FormatError> {
    let home = home_option(data, FS)?;
    let dc = u8::try_from(home.id).map_err(|_| {
        FormatError::malformed(FS, format!("DC id {} does not fit a byte", home.id))
    })?;
    let (ip, port) = home_address(home, FS)?;
    let mut raw = Zeroizing::new(Vec::with_capacity(275));
    raw.push(dc);
    match ip {
        IpAddr::V4(a) => raw.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => raw.extend_from_slice(&a.octets()),
    }
    raw.extend_from_slice(&port.to_be_bytes());
    raw.extend_from_slice(
        home.auth_key
            .as_ref()
            .expect("home_option has a key")
            .as_bytes(),
    );
    let mut out = Zeroizing::new(String::with_capacity(369));
    out.push('1');
    base64::engine::general_purpose::URL_SAFE.encode_string(&raw[..], &mut out);
    Ok((out, lost_by_strings(data)))
}

/// What a session string cannot carry.
pub(crate) fn lost_by_strings(data: &SessionData) -> Vec<String> {
    let mut lost = Vec::new();
    if !data.peers.is_empty() {
        lost.push(format!("{} cached peers", data.peers.len()));
    }
    if data.updates_state != UpdatesState::default() {
        lost.push("the update state".into());
    }
    if !data.sent_files.is_empty() {
        lost.push(format!("{} sent-file cache entries", data.sent_files.len()));
    }
    let other_keys = data
        .dc_options
        .iter()
        .filter(|d| d.id != data.home_dc && d.auth_key.is_some())
        .count();
    if other_keys > 0 {
        lost.push(format!("the auth keys of {other_keys} other DCs"));
    }
    lost
}
