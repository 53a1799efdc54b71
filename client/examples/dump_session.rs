//! Prints a vault session as the Rust client reads it, as JSON: for the Python package's
//! interop test (a session written by `session_vault` in Python must read the same here).
//!
//! ```sh
//! dump_session SOCKET NAME [PEER_ID…]
//! ```
//!
//! The session is opened through [`VaultSession`] without its lease (it only reads). The dump
//! holds the home DC and each DC option (address, and the SHA-256 of the auth key, never the
//! key), the update state, every cached peer of the export (grammers' view: id, access hash,
//! bot, self, channel kind) and, for each `PEER_ID` given (a marked, "Bot API" id), what the
//! grammers `Session::peer` lookup answers.

use grammers_session::types::{PeerId, PeerInfo};
use grammers_session::{Session, types::DcOption};
use serde_json::{Value, json};
use session_vault_client::VaultSession;
use sha2::{Digest, Sha256};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn dc(o: &DcOption) -> Value {
    json!({
        "id": o.id,
        "ipv4": o.ipv4.to_string(),
        "ipv6": o.ipv6.to_string(),
        "auth_key_sha256": o.auth_key.as_ref().map(|k| hex(&Sha256::digest(k))),
    })
}

fn peer(p: &PeerInfo) -> Value {
    match p {
        PeerInfo::User {
            id,
            auth,
            bot,
            is_self,
        } => json!({
            "kind": "user", "id": id, "access_hash": auth.map(|a| a.hash()),
            "bot": bot, "is_self": is_self,
        }),
        PeerInfo::Chat { id } => json!({ "kind": "chat", "id": id }),
        PeerInfo::Channel { id, auth, kind } => json!({
            "kind": "channel", "id": id, "access_hash": auth.map(|a| a.hash()),
            "channel_kind": kind.map(|k| format!("{k:?}").to_lowercase()),
        }),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result {
    let mut args = std::env::args().skip(1);
    let (Some(socket), Some(name)) = (args.next(), args.next()) else {
        return Err("usage: dump_session SOCKET NAME [PEER_ID…]".into());
    };
    let session = VaultSession::builder(name)
        .socket(socket)
        .exclusive(false)
        .connect()
        .await?;
    let home = session.home_dc_id()?;
    let data = session.export().await?;
    let mut dcs: Vec<_> = data.dc_options.values().collect();
    dcs.sort_by_key(|o| o.id);
    let mut peers: Vec<Value> = data.peer_infos.values().map(peer).collect();
    peers.sort_by_key(|p| (p["kind"].to_string(), p["id"].as_i64()));
    let state = session.updates_state().await?;
    let mut lookups = serde_json::Map::new();
    for arg in args {
        let marked: i64 = arg.parse()?;
        let id = PeerId::from_bot_api_dialog_id(marked).ok_or("not a peer id")?;
        let found = session.peer(id).await?;
        lookups.insert(arg, found.as_ref().map(peer).unwrap_or(Value::Null));
    }
    let out = json!({
        "home_dc": home,
        "home_option": session.dc_option(home)?.as_ref().map(dc),
        "dc_options": dcs.into_iter().map(dc).collect::<Vec<_>>(),
        "peers": peers,
        "updates_state": {
            "pts": state.pts, "qts": state.qts, "date": state.date, "seq": state.seq,
            "channels": state.channels.iter().map(|c| json!({"id": c.id, "pts": c.pts})).collect::<Vec<_>>(),
        },
        "lookups": lookups,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
