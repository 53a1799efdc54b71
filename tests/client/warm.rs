//! Warm start: an exclusive session loads its peers into its cache at open, so that a
//! restarted bot answers them in-process. What reached the daemon is counted with the
//! session's hidden request counter (`VaultSession::daemon_requests`).
//!
//! - a fresh client answers every peer of the session, and a peer the session does not
//!   have, without a request, once its warm start is complete;
//! - writes made while the load runs win over the loaded rows;
//! - a cache smaller than the session holds the most recently added peers;
//! - `list_peers` is for the lease holder only;
//! - a daemon of protocol minor 4 (no `list_peers`), or one refusing it, leaves the session
//!   working as without a warm start (a fake daemon plays them).

use std::path::PathBuf;
use std::time::Duration;

use grammers_session::Session;
use grammers_session::types::{PeerAuth, PeerId, PeerInfo};
use session_vault_client::{ClientError, VaultError, VaultSession};
use session_vault_proto::codec::{self, DEFAULT_MAX_FRAME};
use session_vault_proto::message::{
    ClientFrame, ErrorCode, Request, Response, ServerFrame, VaultState, WireError,
};
use session_vault_proto::model::{Peer, PeerKind};
use tokio::net::{UnixListener, UnixStream};

use super::{builder, runtime, unlocked, user_id};
use crate::util::Env;

/// A user with every field grammers reads but `is_self` (so not answered from a cache that
/// only saw it written), or with it.
fn user(id: i64, hash: i64, is_self: Option<bool>) -> PeerInfo {
    PeerInfo::User {
        id,
        auth: Some(PeerAuth::from_hash(hash)),
        bot: Some(id % 2 == 0),
        is_self,
    }
}

/// Caches users `ids` with access hash `hash` through a shared session (no lease, no cache):
/// what an earlier process left.
async fn fill(env: &Env, ids: std::ops::Range<i64>, hash: i64) {
    let earlier = builder(&env.socket(), "bot")
        .exclusive(false)
        .connect()
        .await
        .unwrap();
    let peers: Vec<PeerInfo> = ids.map(|id| user(id, hash, None)).collect();
    for batch in peers.chunks(1000) {
        earlier.cache_peers(batch.to_vec()).await.unwrap();
    }
}

#[test]
fn a_restarted_client_answers_from_memory_once_warm() {
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        fill(&env, 1..2501, 7).await;
        // A chat too: every kind comes back.
        let earlier = builder(&env.socket(), "bot")
            .exclusive(false)
            .connect()
            .await
            .unwrap();
        let chat = PeerInfo::Chat { id: 9 };
        earlier.cache_peer(chat.clone()).await.unwrap();
        drop(earlier);

        let s = builder(&env.socket(), "bot").connect().await.unwrap();
        let warm = s.warm_start().await;
        assert_eq!(warm.failed, None);
        assert_eq!(warm.peers, 2501);
        assert!(warm.complete, "{warm:?}");
        let before = s.daemon_requests();
        for id in 1..2501 {
            // is_self unknown: without the warm start this would be a request each.
            assert_eq!(s.peer(user_id(id)).await.unwrap(), Some(user(id, 7, None)));
        }
        assert_eq!(s.peer(PeerId::chat(9).unwrap()).await.unwrap(), Some(chat));
        // Not in the session: "not found" without asking, as the load was complete.
        assert_eq!(s.peer(user_id(99_999)).await.unwrap(), None);
        assert_eq!(
            s.daemon_requests(),
            before,
            "every lookup answered in-process"
        );

        // A new peer cached now is answered in-process too, all its fields as written.
        s.cache_peer(user(5000, 3, None)).await.unwrap();
        let after_write = s.daemon_requests();
        assert_eq!(
            s.peer(user_id(5000)).await.unwrap(),
            Some(user(5000, 3, None))
        );
        assert_eq!(s.daemon_requests(), after_write);

        // Turned off: the same lookups go to the daemon.
        drop(s);
        // The daemon gives the lease back once it sees the connection closed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let cold = loop {
            match builder(&env.socket(), "bot")
                .warm_start(false)
                .connect()
                .await
            {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    assert!(matches!(e, VaultError::SessionBusy { .. }), "{e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the lease stays taken: {e}"),
            }
        };
        assert_eq!(cold.warm_start().await.peers, 0);
        assert_eq!(cold.peer(user_id(1)).await.unwrap(), Some(user(1, 7, None)));
        assert_eq!(cold.peer(user_id(99_999)).await.unwrap(), None);
        assert_eq!(cold.daemon_requests(), 2);
    });
}

#[test]
fn writes_made_during_the_warm_start_win() {
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        // 12 pages: the oldest peers come in the last one.
        fill(&env, 1..12_001, 1).await;
        let s = builder(&env.socket(), "bot").connect().await.unwrap();
        // At once, while the load is (most likely) still running: new hashes for old peers,
        // complete ones (kept by the cache) and one with is_self unknown (not kept).
        let complete: Vec<PeerInfo> = (1..50).map(|id| user(id, 2, Some(false))).collect();
        s.cache_peers(complete.clone()).await.unwrap();
        s.cache_peer(user(60, 2, None)).await.unwrap();
        let warm = s.warm_start().await;
        assert_eq!(warm.failed, None);
        for p in &complete {
            assert_eq!(s.peer(p.id()).await.unwrap().as_ref(), Some(p));
        }
        assert_eq!(s.peer(user_id(60)).await.unwrap(), Some(user(60, 2, None)));
        assert_eq!(s.peer(user_id(61)).await.unwrap(), Some(user(61, 1, None)));
        assert_eq!(
            s.peer(user_id(12_000)).await.unwrap(),
            Some(user(12_000, 1, None))
        );
        // A client reading everything from the daemon agrees.
        let direct = builder(&env.socket(), "bot")
            .exclusive(false)
            .connect()
            .await
            .unwrap();
        for id in [1, 49, 60, 61, 12_000] {
            assert_eq!(
                direct.peer(user_id(id)).await.unwrap(),
                s.peer(user_id(id)).await.unwrap()
            );
        }
    });
}

#[test]
fn a_cache_smaller_than_the_session_holds_the_most_recent_peers() {
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        fill(&env, 1..3001, 4).await;
        let s = builder(&env.socket(), "bot")
            .peer_cache_capacity(1000)
            .connect()
            .await
            .unwrap();
        let warm = s.warm_start().await;
        assert_eq!(warm.failed, None);
        assert_eq!(warm.peers, 1000);
        assert!(!warm.complete, "{warm:?}");
        let before = s.daemon_requests();
        for id in 2001..3001 {
            assert_eq!(s.peer(user_id(id)).await.unwrap(), Some(user(id, 4, None)));
        }
        assert_eq!(s.daemon_requests(), before, "the newest 1000 are cached");
        // An older one, and one the session does not have: the cache cannot know.
        assert_eq!(s.peer(user_id(1)).await.unwrap(), Some(user(1, 4, None)));
        assert_eq!(s.peer(user_id(99_999)).await.unwrap(), None);
        assert_eq!(s.daemon_requests(), before + 2);
    });
}

#[test]
fn a_session_that_fits_exactly_is_complete() {
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        fill(&env, 1..1001, 4).await;
        let s = builder(&env.socket(), "bot")
            .peer_cache_capacity(1000)
            .connect()
            .await
            .unwrap();
        let warm = s.warm_start().await;
        assert_eq!((warm.peers, warm.complete), (1000, true), "{warm:?}");
    });
}

#[test]
fn only_the_lease_holder_may_list_peers() {
    let rt = runtime();
    let (env, _d) = unlocked();
    rt.block_on(async {
        fill(&env, 1..11, 4).await;
        let conn = env.connect().await;
        let open = |exclusive| Request::OpenSession {
            name: "bot".into(),
            exclusive,
            create_if_missing: false,
        };
        let Response::Opened { handle, .. } = conn.call(open(false)).await.unwrap() else {
            panic!("opened")
        };
        let list = |handle| Request::ListPeers {
            handle,
            before: None,
            limit: 0,
        };
        match conn.call(list(handle)).await {
            Err(ClientError::Daemon(e)) => assert_eq!(e.code, ErrorCode::PermissionDenied),
            other => panic!("expected permission_denied, got {other:?}"),
        }
        // The holder: pages newest first, cursors chaining them.
        let holder = env.connect().await;
        let Response::Opened { handle: h, .. } = holder.call(open(true)).await.unwrap() else {
            panic!("opened")
        };
        let page = |before| Request::ListPeers {
            handle: h,
            before,
            limit: 6,
        };
        let Response::PeerPage { peers, next } = holder.call(page(None)).await.unwrap() else {
            panic!("peer_page")
        };
        let ids: Vec<i64> = peers.iter().map(|p| p.id).collect();
        assert_eq!(ids, [10, 9, 8, 7, 6, 5]);
        assert!(next.is_some());
        let Response::PeerPage { peers, next } = holder.call(page(next)).await.unwrap() else {
            panic!("peer_page")
        };
        let ids: Vec<i64> = peers.iter().map(|p| p.id).collect();
        assert_eq!(ids, [4, 3, 2, 1]);
        assert_eq!(next, None);
        // Another connection cannot use the holder's handle.
        match conn.call(list(h)).await {
            Err(ClientError::Daemon(e)) => assert_ne!(e.code, ErrorCode::Internal),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A shared VaultSession does not try.
        let shared = builder(&env.socket(), "bot")
            .exclusive(false)
            .connect()
            .await
            .unwrap();
        assert_eq!(shared.warm_start().await.peers, 0);
    });
}

/// A socket path of its own, short enough for `sun_path`.
fn fake_socket(env: &Env) -> PathBuf {
    env.path().join("fake.sock")
}

async fn send(s: &mut UnixStream, id: u32, response: Response) {
    codec::write_message(s, &ServerFrame { id, response })
        .await
        .expect("fake daemon writes");
}

/// A fake daemon of protocol `minor`: answers the handshake, `open_session`, `get_peer` (user
/// 1 exists), and `list_peers` with `refusal`, counting the `list_peers` it got.
async fn fake_daemon(listener: UnixListener, minor: u16, refusal: ErrorCode) -> u32 {
    let (mut s, _) = listener.accept().await.expect("accepts");
    let mut listed = 0;
    loop {
        let frame: Option<ClientFrame> = codec::read_message(&mut s, DEFAULT_MAX_FRAME)
            .await
            .expect("fake daemon reads");
        let Some(frame) = frame else {
            return listed;
        };
        let response = match frame.request {
            Request::Hello { .. } => Response::Welcome {
                protocol_major: 1,
                protocol_minor: minor,
                server: format!("vaultd (fake, minor {minor})"),
                vault_state: VaultState::Unlocked,
            },
            Request::OpenSession { .. } => Response::Opened {
                handle: 1,
                created: false,
                home_dc: 2,
                dc_options: Vec::new(),
                name: Some("bot".into()),
            },
            Request::GetPeer { .. } => Response::Peer(Some(Peer {
                access_hash: Some(5),
                ..Peer::new(PeerKind::User, 1)
            })),
            Request::ListPeers { .. } => {
                listed += 1;
                Response::Error(WireError {
                    code: refusal.clone(),
                    message: "refused".into(),
                })
            }
            other => panic!("the fake daemon got {other:?}"),
        };
        send(&mut s, frame.id, response).await;
    }
}

fn falls_back(minor: u16, refusal: ErrorCode, expect_listed: u32) {
    let rt = runtime();
    let env = Env::new();
    let path = fake_socket(&env);
    rt.block_on(async {
        let listener = UnixListener::bind(&path).expect("binds");
        let daemon = tokio::spawn(fake_daemon(listener, minor, refusal));
        let s = VaultSession::builder("bot")
            .socket(&path)
            .connect()
            .await
            .unwrap();
        let warm = s.warm_start().await;
        assert!(warm.failed.is_some(), "{warm:?}");
        assert_eq!((warm.peers, warm.complete), (0, false));
        // Lookups go to the daemon, as without a warm start.
        let p = s.peer(user_id(1)).await.unwrap().expect("user 1");
        assert_eq!(p.auth(), Some(PeerAuth::from_hash(5)));
        assert_eq!(s.daemon_requests(), 1);
        drop(s);
        assert_eq!(daemon.await.unwrap(), expect_listed);
    });
}

#[test]
fn a_daemon_of_minor_4_is_served_without_warm_start() {
    falls_back(4, ErrorCode::InvalidRequest, 0);
}

#[test]
fn a_refused_list_peers_leaves_the_session_as_without_warm_start() {
    falls_back(5, ErrorCode::PermissionDenied, 1);
}
