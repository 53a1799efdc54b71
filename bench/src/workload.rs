//! What the benchmark stores and how it opens sessions: deterministic peers, DC options and
//! update states, and `VaultSession` opening with a retry while a just-dropped connection's
//! lease is still being released.

use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use grammers_session::Session;
use grammers_session::types::{
    ChannelKind, ChannelState, DcOption, PeerAuth, PeerId, PeerInfo, UpdateState, UpdatesState,
};
use session_vault_client::{VaultError, VaultSession};

/// Peer number `i`: nine users (one in seven a bot) for one channel, each with an access
/// hash, the way a bot's session fills up from updates.
pub fn peer(i: u64) -> PeerInfo {
    let hash = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1) as i64;
    if i % 10 == 9 {
        PeerInfo::Channel {
            id: 1_000_000_000 + i as i64,
            auth: Some(PeerAuth::from_hash(hash)),
            kind: Some(if i % 20 == 19 {
                ChannelKind::Broadcast
            } else {
                ChannelKind::Megagroup
            }),
        }
    } else {
        PeerInfo::User {
            id: 100_000 + i as i64,
            auth: Some(PeerAuth::from_hash(hash)),
            bot: Some(i % 7 == 0),
            is_self: Some(false),
        }
    }
}

/// The id of [`peer`]`(i)`.
pub fn peer_id(i: u64) -> PeerId {
    peer(i).id()
}

/// Peers `from..to`.
pub fn peers(from: u64, to: u64) -> Vec<PeerInfo> {
    (from..to).map(peer).collect()
}

/// A DC option with a 256-byte auth key that differs with `i`.
pub fn dc_option(i: u64) -> DcOption {
    let mut key = [0u8; 256];
    for (j, b) in key.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(j as u8).wrapping_mul(31);
    }
    DcOption {
        id: 2,
        ipv4: SocketAddrV4::new(Ipv4Addr::new(149, 154, 167, 51), 443),
        ipv6: SocketAddrV6::new(
            Ipv6Addr::new(0x2001, 0x67c, 0x4e8, 0xf002, 0, 0, 0, 0xa),
            443,
            0,
            0,
        ),
        auth_key: Some(key),
    }
}

/// A whole update state with `channels` channels.
pub fn full_state(i: u64, channels: usize) -> UpdatesState {
    UpdatesState {
        pts: 1_000 + i as i32,
        qts: 500 + i as i32,
        date: 1_700_000_000 + i as i32,
        seq: 10 + i as i32,
        channels: (0..channels)
            .map(|c| ChannelState {
                id: 1_000_000_009 + 10 * c as i64,
                pts: 7 + i as i32,
            })
            .collect(),
    }
}

/// The update-state change the mix writes for op `i`: mostly primary, some channel ones.
pub fn mix_state_change(i: u64) -> UpdateState {
    if i % 4 == 3 {
        UpdateState::Channel {
            id: 1_000_000_009 + 10 * (i % 50) as i64,
            pts: i as i32,
        }
    } else {
        UpdateState::Primary {
            pts: i as i32,
            date: 1_700_000_000 + i as i32,
            seq: i as i32,
        }
    }
}

/// Stores peers `from..to` through `cache_peers` in batches of `batch`.
pub async fn fill<S: Session>(s: &S, from: u64, to: u64, batch: u64) -> Result<()>
where
    S::Error: Debug,
{
    let mut i = from;
    while i < to {
        let end = (i + batch).min(to);
        ok(s.cache_peers(peers(i, end)).await)?;
        i = end;
    }
    Ok(())
}

/// A grammers result as `anyhow`.
pub fn ok<T, E: Debug>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Opens (creating if missing) an exclusive session, retrying for a while on `SessionBusy`:
/// a connection dropped just before still holds the lease until the daemon notices.
///
/// Without warm start: the sections that reopen a session measure the daemon's cold reads
/// (`peer` from a fresh connection, lookups at scale), which a warm start would answer from
/// memory once loaded. The restarted-bot section (`restart`) measures warm start itself.
pub async fn open_vault(socket: &Path, name: &str, peer_cache: usize) -> Result<VaultSession> {
    let t = Instant::now();
    loop {
        match VaultSession::builder(name)
            .socket(socket)
            .create_if_missing(true)
            .peer_cache_capacity(peer_cache)
            .warm_start(false)
            .client_name("session-vault-bench")
            .connect()
            .await
        {
            Ok(s) => return Ok(s),
            Err(VaultError::SessionBusy { .. }) if t.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => bail!("cannot open session {name}: {e}"),
        }
    }
}
