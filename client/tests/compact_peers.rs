//! How the client writes the peers of `cache_peers`: as arrays of their fields to a daemon of
//! protocol minor 8 or later (`PROTOCOL.md` §4), as maps of named fields to an older one,
//! which reads nothing else. A fake daemon of each minor records the raw request.

#![cfg(unix)]

use grammers_session::Session;
use grammers_session::types::{PeerAuth, PeerInfo};
use session_vault_proto::codec::{self, DEFAULT_MAX_FRAME};
use session_vault_proto::message::{ClientFrame, Request, Response};
use session_vault_proto::model::{Peer, PeerKind};
use tokio::net::UnixListener;

mod fake;
use fake::{accept_and_open_at, connect, remove, send, socket_path};

/// Serves one `cache_peers` as a daemon of `minor`; answers its raw payload and decoded peers.
async fn recording_daemon(listener: UnixListener, minor: u16) -> (Vec<u8>, Vec<Peer>) {
    let mut s = accept_and_open_at(&listener, minor).await;
    let payload = codec::read_frame(&mut s, DEFAULT_MAX_FRAME)
        .await
        .expect("reads")
        .expect("a request before the client closes");
    let frame: ClientFrame = codec::decode_payload(&payload).expect("decodes");
    let Request::CachePeers { peers, .. } = frame.request else {
        panic!("unexpected request {:?}", frame.request);
    };
    send(&mut s, frame.id, Response::Ok).await;
    (payload.to_vec(), peers.peers)
}

async fn cache_two_users(minor: u16) -> (Vec<u8>, Vec<Peer>) {
    let path = socket_path("cp");
    let listener = UnixListener::bind(&path).expect("binds");
    let daemon = tokio::spawn(recording_daemon(listener, minor));
    let session = connect(&path).await;
    let users = [(7, 70), (8, 80)].map(|(id, hash)| PeerInfo::User {
        id,
        auth: Some(PeerAuth::from_hash(hash)),
        bot: Some(true),
        is_self: Some(false),
    });
    session.cache_peers(users.to_vec()).await.expect("cached");
    let seen = daemon.await.expect("fake daemon ran");
    drop(session);
    remove(&path);
    seen
}

#[tokio::test]
async fn peers_go_as_arrays_to_a_daemon_of_minor_8_and_as_maps_to_an_older_one() {
    for minor in [7, 8] {
        let (payload, peers) = cache_two_users(minor).await;
        // Either way the daemon reads the same peers.
        assert_eq!(peers.len(), 2);
        for (p, (id, hash)) in peers.iter().zip([(7, 70), (8, 80)]) {
            assert_eq!(
                (p.kind, p.id, p.access_hash),
                (PeerKind::User, id, Some(hash))
            );
            assert_eq!((p.bot, p.is_self), (Some(true), Some(false)));
        }
        let named = payload.windows(11).any(|w| w == b"access_hash");
        // A 9-element array (0x99) starting with the kind "user" (0xa4 "user").
        let arrays = payload.windows(6).filter(|w| w == b"\x99\xa4user").count();
        if minor >= 8 {
            assert!(!named && arrays == 2, "minor {minor}: {payload:02x?}");
        } else {
            assert!(named && arrays == 0, "minor {minor}: {payload:02x?}");
        }
    }
}
