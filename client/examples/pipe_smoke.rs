//! A round trip of every kind of request a grammers bot makes through [`VaultSession`]: what
//! `.ci/windows.sh` runs under Wine against `vaultd` on a named pipe (it runs the same on a
//! Unix socket).
//!
//! ```sh
//! pipe_smoke SOCKET_OR_PIPE NAME
//! ```
//!
//! Creates session NAME (which must not exist), writes the home DC, a DC option with an auth
//! key, a user and a channel peer and each kind of update state, reads them back, checks that
//! a second exclusive open is refused while the lease is held (`session_busy`), closes the
//! session, opens it again on a new connection and checks that everything persisted (also
//! through an export). Prints `pipe_smoke: ok` and exits 0, or names the first mismatch and
//! exits 1. The auth key is a fixed test pattern, never printed.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use grammers_session::Session;
use grammers_session::types::{
    ChannelKind, ChannelState, DcOption, PeerAuth, PeerId, PeerInfo, UpdateState, UpdatesState,
};
use session_vault_client::{VaultError, VaultSession};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const USER: i64 = 777_000_123;
const CHANNEL: i64 = 1_234_567_890;

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}").into())
    }
}

fn option() -> DcOption {
    DcOption {
        id: 2,
        ipv4: SocketAddrV4::new(Ipv4Addr::new(149, 154, 167, 51), 443),
        ipv6: SocketAddrV6::new(Ipv6Addr::LOCALHOST, 443, 0, 0),
        auth_key: Some(std::array::from_fn(|i| (i * 7 + 3) as u8)),
    }
}

fn peers() -> [PeerInfo; 2] {
    [
        PeerInfo::User {
            id: USER,
            auth: Some(PeerAuth::from_hash(-42)),
            bot: Some(true),
            is_self: Some(false),
        },
        PeerInfo::Channel {
            id: CHANNEL,
            auth: Some(PeerAuth::from_hash(4_242_424_242)),
            kind: Some(ChannelKind::Megagroup),
        },
    ]
}

fn state() -> UpdatesState {
    UpdatesState {
        pts: 11,
        qts: 22,
        date: 1_700_000_000,
        seq: 33,
        channels: vec![ChannelState {
            id: CHANNEL,
            pts: 44,
        }],
    }
}

/// Checks everything written, `when` naming the pass.
async fn verify(s: &VaultSession, when: &str) -> Result {
    check(&format!("{when}: home dc"), s.home_dc_id()?, 2)?;
    check(
        &format!("{when}: dc option"),
        s.dc_option(2)?,
        Some(option()),
    )?;
    for p in peers() {
        check(
            &format!("{when}: peer {}", p.id()),
            s.peer(p.id()).await?,
            Some(p),
        )?;
    }
    check(
        &format!("{when}: unknown peer"),
        s.peer(PeerId::user(5).ok_or("peer id")?).await?,
        None,
    )?;
    let got = s.updates_state().await?;
    let want = state();
    check(
        &format!("{when}: updates state"),
        (got.pts, got.qts, got.date, got.seq),
        (want.pts, want.qts, want.date, want.seq),
    )?;
    check(
        &format!("{when}: channel states"),
        got.channels
            .iter()
            .map(|c| (c.id, c.pts))
            .collect::<Vec<_>>(),
        vec![(CHANNEL, 44)],
    )?;
    Ok(())
}

async fn run(socket: String, name: String) -> Result {
    let s = VaultSession::builder(name.clone())
        .socket(socket.clone())
        .create_if_missing(true)
        .exclusive(true)
        .client_name("pipe_smoke")
        .connect()
        .await?;
    s.set_home_dc_id(2).await?;
    s.set_dc_option(&option()).await?;
    let [user, channel] = peers();
    s.cache_peer(user).await?;
    s.cache_peers(vec![channel]).await?;
    // Each kind of update state, ending where state() says.
    s.set_update_state(UpdateState::All(UpdatesState {
        channels: vec![],
        ..state()
    }))
    .await?;
    s.set_update_state(UpdateState::Primary {
        pts: 11,
        date: 1_700_000_000,
        seq: 33,
    })
    .await?;
    s.set_update_state(UpdateState::Secondary { qts: 22 })
        .await?;
    s.set_update_state(UpdateState::Channel {
        id: CHANNEL,
        pts: 44,
    })
    .await?;
    verify(&s, "same connection").await?;
    // The lease: while this connection holds the session, another exclusive open is refused.
    match VaultSession::builder(name.clone())
        .socket(socket.clone())
        .exclusive(true)
        .connect()
        .await
    {
        Err(VaultError::SessionBusy { .. }) => {}
        Err(e) => {
            return Err(format!("lease: a second exclusive open failed otherwise: {e}").into());
        }
        Ok(_) => return Err("lease: a second exclusive open succeeded while it was held".into()),
    }
    // Close (the lease ends with the connection), then open again on a new connection: what
    // was written is the daemon's, not this process's cache. The daemon sees the close
    // asynchronously: until it has, the lease may still be held (bounded retry).
    drop(s);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let s = loop {
        match VaultSession::builder(name.clone())
            .socket(socket.clone())
            .exclusive(true)
            .client_name("pipe_smoke")
            .connect()
            .await
        {
            Err(VaultError::SessionBusy { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => break other?,
        }
    };
    verify(&s, "reopened").await?;
    let data = s.export().await?;
    // The export also holds grammers' default options of the other DCs.
    check(
        "export: dc option",
        data.dc_options.get(&2),
        Some(&option()),
    )?;
    check(
        "export: peers",
        data.peer_infos
            .values()
            .filter(|p| peers().contains(p))
            .count(),
        2,
    )?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(socket), Some(name)) = (args.next(), args.next()) else {
        eprintln!("usage: pipe_smoke SOCKET_OR_PIPE NAME");
        std::process::exit(2);
    };
    match run(socket, name).await {
        Ok(()) => println!("pipe_smoke: ok"),
        Err(e) => {
            eprintln!("pipe_smoke: FAILED: {e}");
            std::process::exit(1);
        }
    }
}
