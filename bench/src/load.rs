//! The hidden `load` subcommand: one workload against a daemon someone else started (under
//! `perf` or `valgrind`, say). Initializes the vault with the cheap KDF if it is new,
//! unlocks it if it is locked, stores the peers, runs for a while, prints what it did.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use session_vault_client::Connection;
use session_vault_proto::message::{Passphrase, Request, VaultState};

use crate::daemon::{CHEAP_KDF, PASS};
use crate::stats::{Reservoir, Rng, fmt_ns, summarize_weighted};
use crate::workload::{fill, open_vault, peer_id};

/// What to run.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Workload {
    /// `peer` with the client cache off: every lookup is a daemon round trip.
    ColdPeer,
    /// The section-2 mix, client cache on.
    Mix,
    /// The section-2 mix, client cache off.
    MixNocache,
    /// `cache_peers` of 100 new peers at a time, as section 1 measures it (one task: the
    /// session grows by 100 peers per call, after `--peers` stored first).
    CachePeers,
    /// As `cache-peers`, but each peer carries a name, a username and (one in three) a phone,
    /// as Telethon's and Pyrogram's clients send them (grammers' peers carry none); sent
    /// straight as `cache_peers` requests on a handle of the session.
    CachePeersNamed,
    /// `export` of the whole session (its peers included) in a loop, as one non-admin
    /// request each: what a large session's export costs the other sessions' requests.
    Export,
    /// `import` of an empty session over the stored peers, then the peers stored again, in a
    /// loop: what replacing a large session costs the other sessions' requests (the imports
    /// are timed).
    Replace,
    /// `set_update_state` of a whole state following `--peers` channels, in a loop: what the
    /// largest update state a frame carries costs the other sessions' requests.
    StateAll,
}

/// Arguments of `load`.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The daemon's socket.
    #[arg(long)]
    socket: PathBuf,
    /// The workload.
    #[arg(long, value_enum)]
    workload: Workload,
    /// How long to run, seconds.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Peers stored in the session (the mix's working set).
    #[arg(long, default_value_t = 1_000)]
    peers: u64,
    /// Concurrent tasks on the one session.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// The peers are already stored (by an earlier run): do not store them again.
    #[arg(long)]
    skip_fill: bool,
    /// The session the workload runs on (several `load`s on several sessions: one large
    /// session's map read while another's requests are measured).
    #[arg(long, default_value = "load")]
    session: String,
}

/// Runs `load`.
pub async fn run(a: LoadArgs) -> Result<()> {
    let c = Connection::connect(&a.socket, "session-vault-bench load").await?;
    match c.vault_state_at_connect() {
        VaultState::Uninitialized => {
            c.call(Request::Init {
                passphrase: Passphrase::new(PASS.as_bytes().to_vec()),
                kdf: Some(CHEAP_KDF),
            })
            .await?;
        }
        VaultState::Locked => {
            c.call(Request::Unlock {
                recovery: false,
                passphrase: Passphrase::new(PASS.as_bytes().to_vec()),
            })
            .await?;
        }
        VaultState::Unlocked => {}
    }
    drop(c);
    let cache = match a.workload {
        Workload::Mix => session_vault_client::DEFAULT_PEER_CACHE,
        Workload::ColdPeer
        | Workload::MixNocache
        | Workload::CachePeers
        | Workload::CachePeersNamed
        | Workload::Export
        | Workload::Replace
        | Workload::StateAll => 0,
    };
    if let Workload::CachePeersNamed = a.workload {
        return cache_peers_named(&a).await;
    }
    let s = Arc::new(open_vault(&a.socket, &a.session, cache).await?);
    if !a.skip_fill {
        fill(&*s, 0, a.peers, 1_000).await?;
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.secs);
    let mut tasks = Vec::new();
    for k in 0..a.clients {
        let s = Arc::clone(&s);
        let peers = a.peers;
        let workload = a.workload;
        tasks.push(tokio::spawn(async move {
            match workload {
                Workload::ColdPeer => {
                    let mut rng = Rng::new(k as u64);
                    let mut r = Reservoir::new(100_000, k as u64);
                    while Instant::now() < end {
                        let t = Instant::now();
                        let p = grammers_session::Session::peer(&*s, peer_id(rng.below(peers)))
                            .await
                            .expect("peer");
                        assert!(p.is_some());
                        r.push(t.elapsed().as_nanos() as u64);
                    }
                    let seen = r.seen();
                    (seen, vec![r.into_weighted()])
                }
                Workload::CachePeers => {
                    let mut r = Reservoir::new(100_000, k as u64);
                    // Beyond the stored peers, apart for each task.
                    let mut next = peers + (k as u64) * 1_000_000_000;
                    while Instant::now() < end {
                        let batch = crate::workload::peers(next, next + 100);
                        next += 100;
                        let t = Instant::now();
                        grammers_session::Session::cache_peers(&*s, batch)
                            .await
                            .expect("cache_peers");
                        r.push(t.elapsed().as_nanos() as u64);
                    }
                    let seen = r.seen();
                    (seen, vec![r.into_weighted()])
                }
                Workload::CachePeersNamed => unreachable!("run by cache_peers_named"),
                Workload::StateAll => {
                    let mut r = Reservoir::new(100_000, k as u64);
                    let mut i = 0;
                    while Instant::now() < end {
                        let state = crate::workload::full_state(i, peers as usize);
                        i += 1;
                        let t = Instant::now();
                        grammers_session::Session::set_update_state(
                            &*s,
                            grammers_session::types::UpdateState::All(state),
                        )
                        .await
                        .expect("set_update_state");
                        r.push(t.elapsed().as_nanos() as u64);
                    }
                    let seen = r.seen();
                    (seen, vec![r.into_weighted()])
                }
                Workload::Replace => {
                    let mut r = Reservoir::new(100_000, k as u64);
                    let empty = grammers_session::SessionData::default();
                    while Instant::now() < end {
                        let t = Instant::now();
                        s.import(&empty).await.expect("import");
                        r.push(t.elapsed().as_nanos() as u64);
                        fill(&*s, 0, peers, 1_000).await.expect("fill");
                    }
                    let seen = r.seen();
                    (seen, vec![r.into_weighted()])
                }
                Workload::Export => {
                    let mut r = Reservoir::new(100_000, k as u64);
                    while Instant::now() < end {
                        let t = Instant::now();
                        let data = s.export().await.expect("export");
                        assert!(data.peer_infos.len() as u64 <= peers);
                        r.push(t.elapsed().as_nanos() as u64);
                    }
                    let seen = r.seen();
                    (seen, vec![r.into_weighted()])
                }
                Workload::Mix | Workload::MixNocache => {
                    let st = crate::mix::client_loop(&*s, 1 + k as u64, peers, start, end).await;
                    (st.ops, vec![st.peer, st.cache_peers, st.set_state])
                }
            }
        }));
    }
    let mut ops = 0;
    let mut samples = Vec::new();
    for t in tasks {
        let (n, s) = t.await?;
        ops += n;
        samples.extend(s);
    }
    let s = summarize_weighted(samples);
    println!(
        "{:?}: {ops} ops in {:.1} s ({:.0} ops/s), p50 {}, p99 {}, max {}",
        a.workload,
        a.secs,
        ops as f64 / a.secs,
        fmt_ns(s.p50),
        fmt_ns(s.p99),
        fmt_ns(s.max)
    );
    Ok(())
}

/// Peer `i` as Telethon or Pyrogram would cache it: a user with a name, a username and, one in
/// three, a phone.
fn named_peer(i: u64) -> session_vault_proto::model::Peer {
    use session_vault_proto::model::{Peer, PeerKind};
    let mut p = Peer::new(PeerKind::User, 100_000 + i as i64);
    p.access_hash = Some((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1) as i64);
    p.bot = Some(false);
    p.name = Some(format!("User {i}"));
    p.username = Some(format!("user_{i}"));
    p.phone = (i % 3 == 0).then(|| format!("1555{i:07}"));
    p
}

/// The `cache-peers-named` workload: one connection, one exclusive handle, 100 new named
/// peers per `cache_peers` request.
async fn cache_peers_named(a: &LoadArgs) -> Result<()> {
    use session_vault_proto::message::Request;
    let c = Connection::connect(&a.socket, "session-vault-bench load").await?;
    let handle = match c
        .call(Request::OpenSession {
            name: "load-named".into(),
            exclusive: true,
            create_if_missing: true,
        })
        .await?
    {
        session_vault_proto::message::Response::Opened { handle, .. } => handle,
        other => anyhow::bail!("open_session answered {other:?}"),
    };
    let batch = |from: u64| (from..from + 100).map(named_peer).collect::<Vec<_>>();
    let mut next = a.peers;
    if !a.skip_fill {
        for from in (0..a.peers).step_by(1000) {
            let peers = (from..(from + 1000).min(a.peers)).map(named_peer).collect();
            c.call(Request::CachePeers { handle, peers }).await?;
        }
    }
    let mut r = Reservoir::new(100_000, 0);
    let end = Instant::now() + Duration::from_secs_f64(a.secs);
    while Instant::now() < end {
        let peers = batch(next);
        next += 100;
        let t = Instant::now();
        // As maps, as the Python clients send them.
        let peers = peers.into();
        c.call(Request::CachePeers { handle, peers }).await?;
        r.push(t.elapsed().as_nanos() as u64);
    }
    let ops = r.seen();
    let s = summarize_weighted(vec![r.into_weighted()]);
    println!(
        "CachePeersNamed: {ops} ops in {:.1} s ({:.0} ops/s), p50 {}, p99 {}",
        a.secs,
        ops as f64 / a.secs,
        fmt_ns(s.p50),
        fmt_ns(s.p99)
    );
    Ok(())
}
