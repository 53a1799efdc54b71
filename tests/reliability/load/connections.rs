//! A thousand idle or half-open connections at once do not stop new clients.

use std::time::{Duration, Instant};

use session_vault_proto::message::{PeerQuery, Request, Response};
use session_vault_proto::model::{PeerKey, PeerKind};

use super::super::{figure, rss_kib};
use super::user;
use crate::util::*;

/// Raises this process's `RLIMIT_NOFILE` soft limit to at least `want` (up to the hard
/// limit); daemons spawned afterwards inherit it. Returns the soft limit in force.
// `rlim_t` is `u64` here but not on every platform: the casts are kept on purpose.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the rlimit we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if (lim.rlim_cur as u64) < want {
            lim.rlim_cur = (want as libc::rlim_t).min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur as u64
}

const IDLE: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_or_half_open_connections_do_not_stop_new_clients() {
    use crate::util::raw::Raw;
    const TEST: &str = "load/1000-idle";
    let limit = raise_fd_limit(4 * IDLE as u64);
    assert!(
        limit as usize > 2 * IDLE + 100,
        "RLIMIT_NOFILE {limit} too low"
    );
    let env = Env::new();
    let (d, _c) = env.start_initialized(&[]).await;
    let rss_before = rss_kib(d.pid());
    let socket = env.socket();
    let t = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let r = match i % 4 {
            // Says nothing (dropped by the daemon after its handshake timeout).
            0 => Raw::connect(&socket).await,
            // Says hello, then nothing.
            1 => Raw::connect_hello(&socket).await,
            // Stops in the middle of a frame.
            2 => {
                let mut r = Raw::connect_hello(&socket).await;
                r.send_bytes(&[0, 0, 1, 0, 0x82, 0xa2]).await;
                r
            }
            // Half-closed: hello, then shuts its writing side down and never reads.
            _ => {
                let r = Raw::connect_hello(&socket).await;
                let std = r.stream.into_std().expect("std stream");
                std.shutdown(std::net::Shutdown::Write).expect("shutdown");
                Raw {
                    stream: tokio::net::UnixStream::from_std(std).expect("tokio stream"),
                }
            }
        };
        idle.push(r);
    }
    let opened_in = t.elapsed();
    let rss_idle = rss_kib(d.pid());

    // New clients still work: each opens a session, writes, reads.
    let mut times = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let c = tokio::time::timeout(Duration::from_secs(10), env.connect())
            .await
            .expect("a new client connects within 10 s");
        let h = open_session(&c, &format!("new{i}"), true).await;
        let r = c
            .call(Request::CachePeers {
                handle: h,
                peers: vec![user(7, 70 + i)].into(),
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
        let r = c
            .call(Request::SetHomeDc {
                handle: h,
                dc_id: 4,
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
        let r = c
            .call(Request::GetPeer {
                handle: h,
                query: PeerQuery::Key(PeerKey {
                    kind: PeerKind::User,
                    id: 7,
                }),
            })
            .await;
        assert!(
            matches!(&r, Ok(Response::Peer(Some(p))) if p.access_hash == Some(70 + i)),
            "{r:?}"
        );
        times.push(t.elapsed());
    }
    let (status, _) = env.assert_serving().await;
    times.sort();
    figure(
        TEST,
        &format!(
            "{IDLE} idle/half-open connections (silent, after hello, mid-frame, half-closed) \
             opened in {opened_in:.1?}; daemon reports {} connections (it closes the half-closed \
             ones at their EOF); 20 new clients each \
             connected, opened a session, wrote and read: median {:?}, max {:?}; vaultd RSS \
             {} KiB before, {} KiB with them (RLIMIT_NOFILE {limit})",
            status.connections,
            times[times.len() / 2],
            times.last().unwrap(),
            rss_before,
            rss_idle,
        ),
    );
    assert!(
        *times.last().unwrap() < Duration::from_secs(5),
        "a new client took {:?}",
        times.last().unwrap()
    );
    drop(idle);
}
