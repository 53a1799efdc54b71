//! Denial of service by a socket-group member (security issue 13, item 3): a flood of large
//! `cache_peers` frames from one uid while another bot writes, and (in [`connections`])
//! idle connections up to the file-descriptor limit, one uid beyond its connection cap, and
//! idle connections without a session handle.
//!
//! A flooding uid is a process of its own ([`Flooder`]: the test binary re-executed through
//! `setpriv` as one of the uids from [`FLOOD_UID`] on, which need no account), since the
//! daemon's limits are per uid; the other bot and the admin are this process (root, an admin
//! uid). Without root and `setpriv` these tests print `SKIPPED` and pass.

pub mod connections;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_vault_client::Connection;
use session_vault_proto::codec;
use session_vault_proto::message::{ClientFrame, Request, Response, ServerFrame};
use session_vault_proto::model::{AuthKey, DcOption, Peer, PeerKind};
use tokio::io::AsyncWriteExt;

use super::{figure, percentile, rss_kib};
use crate::util::raw::Raw;
use crate::util::*;

/// The first uid the flooders run as (no account needed; not the overflow uid 65534).
pub const FLOOD_UID: u32 = 61000;

const SOCKET_VAR: &str = "SV_FLOOD_SOCKET";
const MODE_VAR: &str = "SV_FLOOD_MODE";
const PREFIX: &str = "SVFLOOD ";

/// A flooding process running as another uid; killed on drop.
pub struct Flooder(UidProcess);

impl Flooder {
    /// Starts the test binary as `uid` (and gid `uid`, no supplementary groups) in flood
    /// `mode` (see [`flood_entry`]) against `env`'s daemon; `None` (with a `SKIPPED` figure)
    /// where uids cannot be switched.
    pub fn spawn(env: &Env, test: &str, uid: u32, mode: &str) -> Option<Flooder> {
        if !can_switch_uid() {
            figure(
                test,
                "SKIPPED: needs root and setpriv to flood as another uid",
            );
            return None;
        }
        let socket = env.socket();
        Some(Flooder(UidProcess::spawn(
            env,
            uid,
            "reliability::dos::flood_entry",
            PREFIX,
            &[
                (SOCKET_VAR, socket.as_os_str()),
                (MODE_VAR, std::ffi::OsStr::new(mode)),
            ],
            Duration::from_secs(60),
        )))
    }
}

impl std::ops::Deref for Flooder {
    type Target = UidProcess;
    fn deref(&self) -> &UidProcess {
        &self.0
    }
}

/// Prints one line for the parent to read (see [`UidProcess::wait_for`]).
pub fn say(line: &str) {
    say_to_parent(PREFIX, line);
}

/// The flooder's side: does nothing unless started by [`Flooder::spawn`]. Modes:
/// - `peers:N`: N connections, each with a session open, each writing ~1 MiB `cache_peers`
///   frames (of ~8,000 realistic peers) as fast as the daemon reads them while reading the
///   answers; prints `ready BYTES PEERS`, then `answers A errors E` every 500 ms;
/// - `compact:N`: the same with the most compact peers MessagePack allows (10 bytes each,
///   ~100,000 per frame), which decode to the most memory per byte;
/// - `idle:N`: opens N connections, each sending `hello` without waiting for the answer;
///   prints `opened K failed F` and holds them until killed;
/// - `hello:1`, `idle-check:SECS`: see [`connections::hello_child`] and
///   [`connections::idle_check_child`].
#[test]
#[ignore = "entry point of flooding processes started by other tests"]
fn flood_entry() {
    let Some(socket) = std::env::var_os(SOCKET_VAR).map(PathBuf::from) else {
        return;
    };
    let mode = std::env::var(MODE_VAR).expect("flood mode in the environment");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        match mode.split_once(':') {
            Some(("peers", n)) => {
                peers_flood(&socket, n.parse().expect("connections"), big_cache_peers).await
            }
            Some(("compact", n)) => {
                peers_flood(
                    &socket,
                    n.parse().expect("connections"),
                    compact_cache_peers,
                )
                .await
            }
            Some(("idle", n)) => idle_flood(&socket, n.parse().expect("connections")).await,
            Some(("hello", _)) => connections::hello_child(&socket).await,
            Some(("idle-check", secs)) => {
                connections::idle_check_child(&socket, secs.parse().expect("seconds")).await
            }
            _ => panic!("unknown flood mode {mode}"),
        }
    });
}

/// Largest payload the daemon accepts by default.
const MAX_PAYLOAD: usize = codec::DEFAULT_MAX_FRAME as usize;

/// A `cache_peers` request on `handle` whose frame is just under the default frame limit.
fn big_cache_peers(handle: u32) -> (Vec<u8>, usize) {
    let peers_of = |n: i64| -> Vec<Peer> {
        (0..n)
            .map(|i| {
                let mut p = Peer::new(PeerKind::User, 1_000_000 + i);
                p.access_hash = Some(i * 7919);
                p.username = Some(format!("flood_user_{i}"));
                p.name = Some(format!("Flood Display Name {i}"));
                p
            })
            .collect()
    };
    let encode = |n| {
        codec::encode_frame(&ClientFrame {
            id: 2,
            request: Request::CachePeers {
                handle,
                peers: peers_of(n).into(),
            },
        })
        .expect("encode")
    };
    let per_peer = encode(1000).len() / 1000;
    let mut n = (MAX_PAYLOAD / per_peer) as i64;
    loop {
        let f = encode(n);
        if f.len() - 4 <= MAX_PAYLOAD {
            return (f.to_vec(), n as usize);
        }
        n -= n / 100 + 1;
    }
}

/// The MessagePack of `{"id": id, "request": {"cache_peers": {"handle": handle, "peers": [`
/// up to the array header of `n` peers, which the caller appends (each a 9-element array).
pub fn cache_peers_head(id: u8, handle: u32, n: usize) -> Vec<u8> {
    assert!(id < 0x80, "a positive fixint id");
    let mut p = Vec::with_capacity(MAX_PAYLOAD);
    p.extend_from_slice(&[0x82, 0xa2, b'i', b'd', id, 0xa7]);
    p.extend_from_slice(b"request");
    p.extend_from_slice(&[0x81, 0xab]);
    p.extend_from_slice(b"cache_peers");
    p.extend_from_slice(&[0x82, 0xa6]);
    p.extend_from_slice(b"handle");
    p.push(0xce);
    p.extend_from_slice(&handle.to_be_bytes());
    p.push(0xa5);
    p.extend_from_slice(b"peers");
    p.push(0xdd);
    p.extend_from_slice(&(n as u32).to_be_bytes());
    p
}

/// A `cache_peers` request on `handle` whose ~1 MiB frame holds as many peers as MessagePack
/// can encode: each an array of its nine fields (`[0, id, nil × 7]`, 10 bytes; kind 0 is
/// `user`), which decodes to ~17 times its size.
fn compact_cache_peers(handle: u32) -> (Vec<u8>, usize) {
    let n = (MAX_PAYLOAD - 64) / 10;
    let mut p = cache_peers_head(2, handle, n);
    for i in 0..n {
        p.extend_from_slice(&[0x99, 0x00, (i % 128) as u8]);
        p.extend_from_slice(&[0xc0; 7]);
    }
    let mut frame = (p.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&p);
    assert!(p.len() <= MAX_PAYLOAD);
    (frame, n)
}

async fn peers_flood(socket: &std::path::Path, conns: usize, make: fn(u32) -> (Vec<u8>, usize)) {
    let answers = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut sizes = None;
    // Every session open first: once the flood runs, the old daemon answered nobody.
    let mut opened = Vec::new();
    for i in 0..conns {
        let mut r = Raw::connect_hello(socket).await;
        let handle = match r
            .call(
                2,
                Request::OpenSession {
                    name: format!("~/flood{i}"),
                    exclusive: false,
                    create_if_missing: true,
                },
            )
            .await
        {
            Response::Opened { handle, .. } => handle,
            other => panic!("flooder open_session: {other:?}"),
        };
        opened.push((r, handle));
    }
    for (r, handle) in opened {
        let (frame, peers) = make(handle);
        sizes = Some((frame.len(), peers));
        let (mut rd, mut wr) = r.stream.into_split();
        tasks.push(tokio::spawn(async move {
            // Blocks whenever the daemon stops reading: that is its back-pressure.
            loop {
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
        }));
        let (answers, errors) = (Arc::clone(&answers), Arc::clone(&errors));
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(f)) = codec::read_message::<_, ServerFrame>(&mut rd, u32::MAX).await {
                if matches!(f.response, Response::Ok) {
                    answers.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let (bytes, peers) = sizes.expect("at least one connection");
    say(&format!("ready {bytes} {peers}"));
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        say(&format!(
            "answers {} errors {}",
            answers.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed)
        ));
    }
}

async fn idle_flood(socket: &std::path::Path, conns: usize) {
    let hello = codec::encode_frame(&ClientFrame {
        id: 1,
        request: crate::util::raw::hello(session_vault_proto::message::PROTOCOL_MAJOR),
    })
    .expect("encode hello");
    let mut held = Vec::with_capacity(conns);
    let mut failed = 0;
    for _ in 0..conns {
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::UnixStream::connect(socket),
        )
        .await
        {
            Ok(Ok(mut s)) => {
                // Hello, and never a read: a connection parked after (or before) its welcome.
                let _ = s.write_all(&hello).await;
                held.push(s);
            }
            _ => failed += 1,
        }
    }
    say(&format!("opened {} failed {failed}", held.len()));
    std::future::pending::<()>().await;
}

/// A durable write (`set_dc_option`) of the victim bot; `n` varies the key.
fn durable_write(handle: u32, n: u64) -> Request {
    let mut key = [0u8; 256];
    key[..8].copy_from_slice(&n.to_le_bytes());
    Request::SetDcOption {
        handle,
        option: DcOption {
            id: 2,
            ipv4: None,
            ipv6: None,
            auth_key: Some(AuthKey::new(key)),
        },
    }
}

/// What one write may take before the test counts it as this long and moves on.
const WRITE_LIMIT: Duration = Duration::from_secs(10);

/// Durable writes one after another, 20 ms apart, for `window`; returns their latencies
/// (a write not answered within [`WRITE_LIMIT`] counts as that).
pub async fn durable_writes(c: &Connection, handle: u32, window: Duration) -> Vec<Duration> {
    let start = Instant::now();
    let mut times = Vec::new();
    let mut n = 0;
    while start.elapsed() < window {
        n += 1;
        let t = Instant::now();
        match tokio::time::timeout(WRITE_LIMIT, c.call(durable_write(handle, n))).await {
            Ok(Ok(Response::Ok)) => times.push(t.elapsed()),
            Ok(Ok(other)) => panic!("durable write: {other:?}"),
            // The daemon is gone (killed by the RSS guard), or refuses (locked): the rest
            // would fail the same way.
            Ok(Err(_)) => {
                times.push(WRITE_LIMIT);
                break;
            }
            Err(_) => times.push(WRITE_LIMIT),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times.sort();
    times
}

/// RSS at which the sampler kills the daemon, to spare the machine (the old daemon grew
/// without bound).
const RSS_KILL_KIB: u64 = 3 * 1024 * 1024;

/// Samples `pid`'s RSS every 20 ms until the returned flag is set; the task yields the peak.
/// Past [`RSS_KILL_KIB`] it SIGKILLs `pid` and stops.
pub fn rss_sampler(pid: u32) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let mut peak = 0;
        while !flag.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid));
            if peak > RSS_KILL_KIB {
                // SAFETY: kill(2) on the test's own child daemon.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    (stop, task)
}

/// A duration in whole milliseconds, for figures.
pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The flood of item 3: connections of one uid each keeping the daemon busy with ~1 MiB
/// `cache_peers` frames, while another bot makes durable writes.
const FLOOD_CONNS: usize = 3;
/// How long the other bot writes during the flood.
const FLOOD_WINDOW: Duration = Duration::from_secs(8);
/// Bound on vaultd's RSS during the flood (generous: the budget of requests in flight is
/// 64 MiB by default).
const RSS_BOUND_KIB: u64 = 400 * 1024;
/// Bound on the other bot's durable write p99 during the flood (generous: debug build, two
/// shared cores).
const P99_BOUND: Duration = Duration::from_secs(2);

/// Floods as `mode` (see [`flood_entry`]) while another bot writes; prints the figures and
/// checks the bounds.
async fn flood_while_another_bot_writes(test: &str, mode: &str) {
    let env = Env::new();
    let (d, c) = env.start_initialized(&[]).await;
    let h = open_session(&c, "victim", true).await;
    let rss_start = rss_kib(d.pid());
    let alone = durable_writes(&c, h, Duration::from_secs(1)).await;
    let Some(flood) = Flooder::spawn(&env, test, FLOOD_UID, &format!("{mode}:{FLOOD_CONNS}"))
    else {
        return;
    };
    let ready = flood.wait_for("ready");
    let (sampler_stop, sampler) = rss_sampler(d.pid());
    let during = durable_writes(&c, h, FLOOD_WINDOW).await;
    let flooded = flood.last_line().unwrap_or_default();
    sampler_stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.expect("RSS sampler");
    drop(flood);
    // What the flood left behind: how soon a new client is served once it is gone.
    let t = Instant::now();
    let after = tokio::time::timeout(Duration::from_secs(30), async {
        let c = Connection::connect(&env.socket(), "after the flood").await?;
        c.call(Request::Status).await
    })
    .await;
    let status_took = match after {
        Ok(Ok(_)) => ms(t.elapsed()),
        Ok(Err(e)) => format!("failed ({e})"),
        Err(_) => "over 30 s".to_owned(),
    };
    let (p50, p99) = (percentile(&during, 50), percentile(&during, 99));
    figure(
        test,
        &format!(
            "another uid flooding on {FLOOD_CONNS} connections with cache_peers frames of \
             {ready} (bytes, peers) as fast as vaultd reads them, for {FLOOD_WINDOW:?} \
             ({flooded}): vaultd RSS {rss_start} KiB at the start, peak {peak} KiB; the other \
             bot's durable writes: alone p50 {} / p99 {}, during the flood {} writes, p50 {} / \
             p99 {} / max {}; a new client's status after it {}",
            ms(percentile(&alone, 50)),
            ms(percentile(&alone, 99)),
            during.len(),
            ms(p50),
            ms(p99),
            ms(*during.last().expect("writes")),
            status_took,
        ),
    );
    assert!(
        peak <= RSS_BOUND_KIB,
        "vaultd RSS peaked at {peak} KiB during the flood (bound {RSS_BOUND_KIB} KiB)"
    );
    assert!(
        p99 <= P99_BOUND,
        "the other bot's durable write p99 was {p99:?} during the flood (bound {P99_BOUND:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_cache_peers_bounds_memory_and_stalls_no_other_bot() {
    flood_while_another_bot_writes("dos/cache-peers-flood", "peers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_compact_cache_peers_bounds_memory_and_stalls_no_other_bot() {
    flood_while_another_bot_writes("dos/compact-peers-flood", "compact").await;
}
