//! grammers-session's binary TL session file (0.4–0.8); see [`super::grammers`] for the
//! format's definitions and the byte-order story of its addresses.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use session_vault_proto::model::{
    ChannelState, DcOption, SelfUser, SessionData, SessionExtras, UpdatesState,
};
use zeroize::Zeroizing;

use super::grammers::{key_from, merge_known, no_home_key};
use super::{ErrorKind, Format, FormatError, Imported, known_dc};

const FT: Format = Format::GrammersTl;

/// Constructor id of `session` (the first four bytes of a TL session file, little-endian).
pub(crate) const TL_SESSION_ID: u32 = 0xa73e_b8ce;
const TL_DATA_CENTER: u32 = 0x756d_16b6;
const TL_DATA_CENTER_WS: u32 = 0x7249_0a88;
const TL_USER: u32 = 0x672f_428d;
const TL_UPDATE_STATE: u32 = 0xd0ca_dcc1;
const TL_CHANNEL_STATE: u32 = 0xc2b0_f8cd;
const TL_VECTOR: u32 = 0x1cb5_c415;
const TL_BOOL_TRUE: u32 = 0x9972_75b5;
const TL_BOOL_FALSE: u32 = 0xbc79_9737;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                FormatError::malformed(
                    FT,
                    format!(
                        "the file ends early (truncated?) at byte {}",
                        self.buf.len()
                    ),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn expect(&mut self, id: u32, what: &str) -> Result<(), FormatError> {
        let got = self.u32()?;
        if got == id {
            Ok(())
        } else {
            Err(FormatError::malformed(
                FT,
                format!(
                    "expected {what} (#{id:08x}) at byte {}, found #{got:08x}",
                    self.pos - 4
                ),
            ))
        }
    }
    /// TL `bytes`/`string`: a 1-byte length (or 254 and a 3-byte length), data, padding to 4.
    fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let first = self.take(1)?[0];
        let (len, header) = if first == 254 {
            let l = self.take(3)?;
            let len = usize::from(l[0]) | usize::from(l[1]) << 8 | usize::from(l[2]) << 16;
            (len, 4)
        } else {
            (usize::from(first), 1)
        };
        let data = self.take(len)?;
        let pad = (4 - (header + len) % 4) % 4;
        self.take(pad)?;
        Ok(data)
    }
    fn vector_len(&mut self) -> Result<usize, FormatError> {
        self.expect(TL_VECTOR, "a vector")?;
        let n = self.i32()?;
        // Each element takes at least 4 bytes: a larger count is a damaged file.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= (self.buf.len() - self.pos) / 4)
            .ok_or_else(|| FormatError::malformed(FT, format!("a vector of {n} elements")))
    }
}

/// One `DataCenter` as stored: the raw address fields, decoded later by writer generation.
struct RawDc {
    id: i32,
    ipv4: Option<i32>,
    ipv6: Option<[u8; 16]>,
    port: i32,
    auth: Option<Zeroizing<Vec<u8>>>,
    ws_url: Option<String>,
}

pub(crate) fn parse_tl(buf: &[u8]) -> Result<Imported, FormatError> {
    let mut r = Reader { buf, pos: 0 };
    match r.u32() {
        Ok(TL_SESSION_ID) => {}
        _ => {
            return Err(FormatError::new(
                FT,
                ErrorKind::NotThisFormat,
                "the file does not start with grammers' session constructor (#a73eb8ce)",
            ));
        }
    }
    let flags = r.u32()?;
    let n = r.vector_len()?;
    let mut raw = Vec::with_capacity(n);
    for _ in 0..n {
        match r.u32()? {
            TL_DATA_CENTER => {
                let f = r.u32()?;
                let id = r.i32()?;
                let ipv4 = if f & 1 != 0 { Some(r.i32()?) } else { None };
                let ipv6 = if f & 2 != 0 {
                    Some(<[u8; 16]>::try_from(r.take(16)?).expect("16 bytes"))
                } else {
                    None
                };
                let port = r.i32()?;
                let auth = if f & 4 != 0 {
                    Some(Zeroizing::new(r.bytes()?.to_vec()))
                } else {
                    None
                };
                raw.push(RawDc {
                    id,
                    ipv4,
                    ipv6,
                    port,
                    auth,
                    ws_url: None,
                });
            }
            TL_DATA_CENTER_WS => {
                let f = r.u32()?;
                let id = r.i32()?;
                let url = String::from_utf8_lossy(r.bytes()?).into_owned();
                let auth = if f & 1 != 0 {
                    Some(Zeroizing::new(r.bytes()?.to_vec()))
                } else {
                    None
                };
                raw.push(RawDc {
                    id,
                    ipv4: None,
                    ipv6: None,
                    port: 0,
                    auth,
                    ws_url: Some(url),
                });
            }
            other => {
                return Err(FormatError::new(
                    FT,
                    ErrorKind::UnsupportedVersion,
                    format!("unknown data center constructor #{other:08x}"),
                ));
            }
        }
    }
    let user = if flags & 1 != 0 {
        r.expect(TL_USER, "a user")?;
        let id = r.i64()?;
        let dc = r.i32()?;
        let bot = match r.u32()? {
            TL_BOOL_TRUE => true,
            TL_BOOL_FALSE => false,
            x => {
                return Err(FormatError::malformed(
                    FT,
                    format!("#{x:08x} is not a Bool"),
                ));
            }
        };
        Some((id, dc, bot))
    } else {
        None
    };
    let mut updates_state = UpdatesState::default();
    if flags & 2 != 0 {
        r.expect(TL_UPDATE_STATE, "an update state")?;
        updates_state.pts = r.i32()?;
        updates_state.qts = r.i32()?;
        updates_state.date = r.i32()?;
        updates_state.seq = r.i32()?;
        for _ in 0..r.vector_len()? {
            r.expect(TL_CHANNEL_STATE, "a channel state")?;
            let id = r.i64()?;
            let pts = r.i32()?;
            updates_state.channels.push(ChannelState { id, pts });
        }
    }
    if r.pos != buf.len() {
        return Err(FormatError::malformed(
            FT,
            format!("{} bytes follow the session", buf.len() - r.pos),
        ));
    }

    // 0.8 writes both addresses of every TCP DC; 0.4–0.7 wrote exactly one.
    let written_by_08 = raw
        .iter()
        .any(|d| d.ws_url.is_some() || (d.ipv4.is_some() && d.ipv6.is_some()));
    let mut notes = Vec::new();
    let mut dcs = Vec::new();
    for d in raw {
        let port = u16::try_from(d.port)
            .map_err(|_| FormatError::malformed(FT, format!("DC {}: port {}", d.id, d.port)))?;
        let auth_key = d
            .auth
            .as_deref()
            .map(|k| key_from(FT, d.id, k))
            .transpose()?;
        if let Some(url) = d.ws_url {
            notes.push(format!(
                "DC {} is a WebSocket endpoint ({url}); Telegram's TCP address was recorded instead",
                d.id
            ));
            let mut k = known_dc(d.id).ok_or_else(|| {
                FormatError::malformed(
                    FT,
                    format!("WebSocket DC {} has no known TCP address", d.id),
                )
            })?;
            k.auth_key = auth_key;
            dcs.push(k);
            continue;
        }
        let (ipv4, ipv6) = if written_by_08 {
            (
                // 0.8 wrote `to_bits() as i32`: the same 32 bits, reinterpreted.
                d.ipv4.map(|v| Ipv4Addr::from(v.to_be_bytes())),
                d.ipv6.map(|b| Ipv6Addr::from_bits(u128::from_le_bytes(b))),
            )
        } else {
            (
                d.ipv4.map(|v| Ipv4Addr::from(v.to_le_bytes())),
                d.ipv6.map(Ipv6Addr::from),
            )
        };
        dcs.push(DcOption {
            id: d.id,
            ipv4: ipv4.map(|a| SocketAddrV4::new(a, port)),
            ipv6: ipv6.map(|a| SocketAddrV6::new(a, port, 0, 0)),
            auth_key,
        });
    }
    // The home DC: the user's; without one, the only DC holding a key.
    let home_dc = match user {
        Some((_, dc, _)) => dc,
        None => {
            let keyed: Vec<i32> = dcs
                .iter()
                .filter(|d| d.auth_key.is_some())
                .map(|d| d.id)
                .collect();
            match keyed[..] {
                [one] => one,
                _ => session_vault_proto::model::DEFAULT_HOME_DC,
            }
        }
    };
    no_home_key(FT, home_dc, &dcs)?;
    let self_user = user
        .filter(|&(id, _, _)| id > 0)
        .map(|(id, _, bot)| SelfUser { id, bot });
    Ok(Imported {
        data: SessionData {
            home_dc,
            dc_options: merge_known(dcs),
            self_user,
            peers: Vec::new(),
            updates_state,
            sent_files: Vec::new(),
            extras: SessionExtras::default(),
        },
        format: FT,
        version: Some(if written_by_08 {
            "written by grammers-session 0.8".into()
        } else {
            "written by grammers-session 0.4–0.7".into()
        }),
        notes,
    })
}
