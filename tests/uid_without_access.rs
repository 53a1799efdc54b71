//! What another uid on the socket (a socket-group member, with no session but those it may
//! create under its own namespace, or one it was granted) can do to the daemon: grow the
//! vault through the audit log (refusals, opens) or hide its opens in it, hold memory with
//! stalled frames or handles, keep the vault unlocked, learn which names exist from timings,
//! keep a batch writing past a revoke, stall other bots with whole-state reads, fill the
//! disk ([`disk`]). Found by adversarial reviews; each test holds the bound the fix set.
//!
//! The hostile uid is a process of its own ([`Hostile`]: the test binary re-executed through
//! `setpriv` as [`OTHER_UID`], running [`hostile_entry`]), since the daemon's limits and its
//! role checks are per uid; the admin is this process (root). Without root and `setpriv`
//! these tests print `skipped` and pass.

use std::time::{Duration, Instant};

use session_vault_client::Connection;
use session_vault_proto::audit::AuditEntry;
use session_vault_proto::message::{Request, Response};

use crate::reliability::rss_kib;
use crate::util::*;

mod disk;
mod hostile;
mod left_out;

use left_out::left_out_in;

const SOCKET_VAR: &str = "SV_HOSTILE_SOCKET";
const MODE_VAR: &str = "SV_HOSTILE_MODE";
const PREFIX: &str = "SVHOSTILE ";

/// A process of [`OTHER_UID`] doing `mode` (see [`hostile::hostile_entry`]); killed on drop.
struct Hostile(UidProcess);

impl Hostile {
    fn spawn(env: &Env, mode: &str) -> Hostile {
        Hostile::spawn_as(env, OTHER_UID, mode)
    }

    /// [`Hostile::spawn`] as `uid` (and gid `uid`).
    fn spawn_as(env: &Env, uid: u32, mode: &str) -> Hostile {
        let socket = env.socket();
        Hostile(UidProcess::spawn(
            env,
            uid,
            "uid_without_access::hostile::hostile_entry",
            PREFIX,
            &[
                (SOCKET_VAR, socket.as_os_str()),
                (MODE_VAR, std::ffi::OsStr::new(mode)),
            ],
            Duration::from_secs(120),
        ))
    }
}

impl std::ops::Deref for Hostile {
    type Target = UidProcess;
    fn deref(&self) -> &UidProcess {
        &self.0
    }
}

fn say(line: &str) {
    say_to_parent(PREFIX, line);
}

/// Bytes of the vault's files (database and write-ahead log).
fn vault_bytes(env: &Env) -> u64 {
    ["vault.db", "vault.db-wal"]
        .iter()
        .map(|f| {
            std::fs::metadata(env.data_dir().join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}

/// A uid with no session and no grant sends refused admin requests with long names: the
/// vault must not grow by what it sends (each was once recorded in the audit log with its
/// names as sent, 24 requests of 300 kB names growing `vault.db` by 19 MB). Now an entry
/// keeps a name only if it is valid, and a uid's refusals are recorded once a second.
#[tokio::test]
async fn refused_requests_of_a_uid_without_access_do_not_grow_the_vault() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = vault_bytes(&env);
    let hostile = Hostile::spawn(&env, "audit:24:300000");
    let refused: u32 = hostile.wait_for("done").parse().expect("count");
    assert_eq!(refused, 24, "every rename was refused");
    // Cache-class entries are committed within the flush interval (100 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = vault_bytes(&env).saturating_sub(before);
    let stored: usize = audit_of(&c, OTHER_UID)
        .await
        .iter()
        .map(|e| e.session.as_deref().map_or(0, str::len) + e.detail.as_deref().map_or(0, str::len))
        .sum();
    println!(
        "24 refused renames of 2 x 300 kB names: vault files grew by {grown} bytes; \
         audit entries of uid {OTHER_UID} hold {stored} bytes of names"
    );
    assert!(
        grown < 2 << 20,
        "the vault grew by {grown} bytes from 24 refused requests of a uid without access"
    );
}

/// The audit log's entries of `uid`, as the admin reads them (the first 1000 of the log).
async fn audit_of(c: &Connection, uid: u32) -> Vec<AuditEntry> {
    let page = c
        .call(Request::Audit {
            after_seq: 0,
            limit: 1000,
            since: None,
            session: None,
        })
        .await;
    match page {
        Ok(Response::AuditPage(p)) => p.entries.into_iter().filter(|e| e.uid == uid).collect(),
        other => panic!("admin's audit read failed: {other:?}"),
    }
}

/// Any uid may open its own session (`~/mine`) as often as it likes, and each open was an
/// audit entry sealed and stored (430 bytes: 20,000 opens grew the vault by 8.6 MB, a disk
/// filled for every bot by one). Now a uid's opens are recorded one by one up to a burst,
/// then one a second, the next entry recorded counting those left out: every open is still
/// accounted for, and the entries stored stay few.
#[tokio::test]
async fn a_uid_opening_its_own_session_again_and_again_is_sampled_in_the_audit_log() {
    use session_vault_daemon::server::cmd::audit::{OPENS_BURST, OPENS_PERIOD};
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    const OPENS: u32 = 2000;
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = vault_bytes(&env);
    let t = Instant::now();
    let hostile = Hostile::spawn(&env, &format!("opens:{OPENS}"));
    hostile.wait_for("done");
    let flood = t.elapsed();
    hostile.wait_for("last");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = audit_of(&c, OTHER_UID).await;
    // Counted in the next open's entry, or, if the uid was quiet for a period before it, in
    // an entry of their own (`left_out`).
    let left_out: u64 = all.iter().map(|e| left_out_in(e, "session opens")).sum();
    let entries: Vec<_> = all
        .into_iter()
        .filter(|e| e.action == "open_session")
        .collect();
    println!(
        "{} opens in {flood:?}: {} entries recorded, {left_out} left out and counted; vault \
         files grew by {} bytes",
        OPENS + 1,
        entries.len(),
        vault_bytes(&env).saturating_sub(before)
    );
    assert_eq!(
        entries.len() as u64 + left_out,
        u64::from(OPENS) + 1,
        "every open is recorded or counted"
    );
    let periods = (flood.as_secs_f64() / OPENS_PERIOD.as_secs_f64()).ceil() as usize;
    assert!(
        entries.len() <= OPENS_BURST as usize + periods + 2,
        "{} entries for {} opens in {flood:?}",
        entries.len(),
        OPENS + 1
    );
    assert!(
        entries
            .iter()
            .all(|e| e.session.as_deref() == Some(&format!("{OTHER_UID}/mine"))),
        "{entries:?}"
    );
}

/// A uid granted another owner's session opens its own session past the opens' burst, then
/// the granted one: its open must be recorded by name. (A review found the sampler, per uid
/// and blind to which session, leaving it out: the admin reading the log saw "N more
/// session opens of this uid" on an entry of `~/mine`, nothing naming the granted session.
/// Opens outside the uid's namespace are now sampled per session.)
#[tokio::test]
async fn opens_of_a_granted_session_are_not_hidden_by_the_uids_own_sampled_opens() {
    use crate::util::child::{As, ChildClient};
    use session_vault_daemon::server::cmd::audit::OPENS_BURST;
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    env.open_socket_to_everyone();
    let h = open_session(&c, "victim", true).await;
    let r = c.call(Request::CloseSession { handle: h }).await;
    assert!(matches!(r, Ok(Response::Ok)), "close: {r:?}");
    let r = c
        .call(Request::Grant {
            name: "victim".into(),
            uid: Some(OTHER_UID),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "grant: {r:?}");
    let own = OPENS_BURST as usize + 8;
    let mut requests: Vec<Request> = (0..own)
        .map(|_| Request::OpenSession {
            name: "~/mine".into(),
            exclusive: false,
            create_if_missing: true,
        })
        .collect();
    requests.push(Request::OpenSession {
        name: "victim".into(),
        exclusive: false,
        create_if_missing: false,
    });
    let child = ChildClient::spawn(&env, As::Other, &requests, false);
    let answers: Vec<Response> = requests.iter().map(|_| child.response()).collect();
    child.finish();
    assert!(
        answers.iter().all(|a| matches!(a, Response::Opened { .. })),
        "{answers:?}"
    );
    // Cache-class entries are committed within the flush interval.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let entries = audit_of(&c, OTHER_UID).await;
    let opens = entries
        .iter()
        .filter(|e| e.action == "open_session")
        .count();
    let victim = entries
        .iter()
        .filter(|e| e.session.as_deref() == Some("victim"))
        .count();
    println!(
        "{} opens of uid {OTHER_UID} ({own} of its own, 1 of the granted session): {opens} \
         entries, {victim} naming the granted session",
        own + 1
    );
    assert_eq!(
        victim, 1,
        "the open of a session granted by another owner left no entry naming it"
    );
}

/// One uid's connections together hold at most `MAX_HANDLES_PER_UID` handles: each
/// connection's own bound (4096) let a uid's 256 connections hold a million between them,
/// ~370 bytes each (found by a review). Five connections ask for 20,000: the uid gets the
/// bound (give or take the opens in flight when it was reached), the rest are refused.
#[tokio::test]
async fn a_uids_connections_hold_a_bounded_number_of_handles_between_them() {
    use session_vault_daemon::server::cmd::open::MAX_HANDLES_PER_UID;
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let hostile = Hostile::spawn(&env, "handles:5:4000");
    let done = hostile.wait_for("done");
    let (opened, refused): (usize, usize) = match done.split_once(' ') {
        Some((o, r)) => (o.parse().expect("opened"), r.parse().expect("refused")),
        None => panic!("hostile said {done:?}"),
    };
    println!(
        "uid {OTHER_UID} asked for 20,000 handles on 5 connections: {opened} opened, {refused} refused"
    );
    assert_eq!(opened + refused, 20_000);
    // The bound, passed at most by the requests of the uid running at once (64).
    assert!(
        (MAX_HANDLES_PER_UID..=MAX_HANDLES_PER_UID + 64).contains(&opened),
        "{opened} handles held by one uid"
    );
    // An admin is not bound by it.
    open_session(&c, "admin-bot", false).await;
}

/// A uid's connections each send the header of a maximal first frame (the `hello`) and most
/// of its payload, then stall. The hello is read before the request-memory budget weighs
/// anything, so it must be small: 128 such connections of one uid once held 128 MiB for the
/// handshake timeout (twice the daemon's whole budget); now a hello over 4 KiB is refused at
/// its header.
#[tokio::test]
async fn stalled_hello_frames_stay_within_the_request_memory_budget() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (d, _c) = env.start_initialized(&[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss_kib(d.pid());
    let hostile = Hostile::spawn(&env, "hello:128");
    let opened: usize = hostile.wait_for("ready").parse().expect("count");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = rss_kib(d.pid()).saturating_sub(base);
    println!(
        "{opened} stalled 1 MiB hello frames: the daemon's RSS grew by {} MiB",
        held / 1024
    );
    // A hello that large is refused at its header now (`frame_too_large`, then closed), so
    // few or none of the writes complete; the daemon must not hold the frames either way.
    // The uid's share of the budget is 16 MiB; the whole budget 64 MiB.
    assert!(
        held < 48 << 10,
        "{opened} stalled hellos of one uid made the daemon hold {} MiB",
        held / 1024
    );
}

/// A uid with a session of its own (any uid may create one under `UID/`) gives it 80,000
/// channel states in one `set_update_state` frame, then sends `get_updates_state` on two
/// connections. Another bot's durable writes must not wait behind whole-state reads (each
/// was once one cheap, unsliced storage job: 5.8 s for one write); now the read goes in
/// pages of 512 channels, one job each, and weighs heavy. The bound is the one
/// `reliability::dos` holds the `cache_peers` flood to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_channel_state_reads_stalls_no_other_bot() {
    use crate::reliability::dos::{durable_writes, ms};
    use crate::reliability::percentile;
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let h = open_session(&c, "victim", true).await;
    let alone = durable_writes(&c, h, Duration::from_secs(1)).await;
    let hostile = Hostile::spawn(&env, "channels:2:80000");
    let built = hostile.wait_for("built");
    hostile.wait_for("ready");
    let during = durable_writes(&c, h, Duration::from_secs(8)).await;
    let answered = hostile.wait_for("answers");
    let (p50, p99) = (percentile(&during, 50), percentile(&during, 99));
    println!(
        "one get_updates_state of 80,000 channels took {built}; the other bot's \
         durable writes alone p50 {} / p99 {}, during the flood ({answered} answers) {} \
         writes, p50 {} / p99 {} / max {}",
        ms(percentile(&alone, 50)),
        ms(percentile(&alone, 99)),
        during.len(),
        ms(p50),
        ms(p99),
        ms(*during.last().expect("writes")),
    );
    assert!(
        p99 <= Duration::from_secs(2),
        "the other bot's durable write p99 was {p99:?} during the flood"
    );
}

/// `--auto-lock-after` locks the vault "once no request has arrived for that long". A uid
/// with no session and no grant must not keep the keys in memory with requests the daemon
/// refuses (`lock` here): only admitted requests count as activity.
#[tokio::test]
async fn refused_requests_do_not_hold_off_the_idle_auto_lock() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&["--auto-lock-after", "2s"]).await;
    drop(c);
    let hostile = Hostile::spawn(&env, "poke:8");
    let refused: u32 = hostile.wait_for("done").parse().expect("count");
    assert!(refused > 5, "only {refused} refused");
    let c = env.connect().await;
    let state = match c.call(Request::Status).await {
        Ok(Response::Status(s)) => s.state,
        other => panic!("status: {other:?}"),
    };
    println!("after 8 s of refused requests with --auto-lock-after 2s: {state:?}");
    assert_eq!(
        state,
        session_vault_proto::message::VaultState::Locked,
        "refused requests kept the vault unlocked past its idle auto-lock"
    );
}

/// Measurement, not a pass/fail check of timing: whether `open_session` of a name that exists
/// (someone else's) takes measurably longer or shorter than of a name that does not, for a
/// uid allowed neither. Prints the figures; fails only if the answers differ.
#[tokio::test]
#[ignore = "measurement: open_session timing of an existing vs a missing name, for a uid without access"]
async fn measure_open_timing_of_existing_and_missing_names() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let _h = open_session(&c, "payments-bot", false).await;
    let hostile = Hostile::spawn(&env, "probe:payments-bot:payments-bog:3000");
    let medians = hostile.wait_for("medians");
    let means = hostile.wait_for("means");
    println!(
        "open_session by a uid without access, existing vs missing name (ns): medians \
         {medians}; trimmed means {means}"
    );
}

/// `revoke` "ends at once the open handles of the processes it leaves without access". A
/// `cache_peers` batch is applied in slices of 256 peers: one running when the revoke came
/// must write nothing after the revoke has answered (it once went on to the end, and past a
/// lease given to the next holder). Each slice now checks its handle when it is applied, and
/// the revoke waits for what was queued before it.
#[tokio::test]
async fn a_revoked_clients_batch_stops_writing_when_revoke_answers() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    let _h = open_session(&c, "shared", false).await;
    let r = c
        .call(Request::Grant {
            name: "shared".into(),
            uid: Some(OTHER_UID),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "grant: {r:?}");
    let peer_count = || async {
        match c.call(Request::ListSessions).await {
            Ok(Response::Sessions(l)) => l
                .iter()
                .find(|s| s.summary.name == "shared")
                .map(|s| s.summary.peer_count)
                .expect("listed"),
            other => panic!("list: {other:?}"),
        }
    };
    let hostile = Hostile::spawn(&env, "straddle:shared");
    let sent: u64 = hostile.wait_for("sent").parse().expect("count");
    // The batch is being applied: revoke now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c
        .call(Request::Revoke {
            name: "shared".into(),
            uid: Some(OTHER_UID),
            gid: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::Ok)), "revoke: {r:?}");
    let at_revoke = peer_count().await;
    let answer = hostile.wait_for("answer");
    let after = peer_count().await;
    println!(
        "a batch of {sent} peers: {at_revoke} stored when revoke answered, {after} once \
         the batch was answered ({answer})"
    );
    assert!(
        at_revoke < sent,
        "the batch was done before the revoke: the test proves nothing"
    );
    assert_eq!(
        after, at_revoke,
        "the revoked client's batch went on writing after revoke answered"
    );
}

/// Each uid's share of the request-memory budget is a quarter of it (16 of 64 MiB), and a
/// frame's weight is taken when its header is read, held until its payload arrives (up to
/// `FRAME_TIMEOUT`, 30 s). Four uids that each send one 1 MiB frame header and stall take the
/// whole budget; an admin's `status` must still be answered (it once waited for them): an
/// admin's requests count against its own share only.
#[tokio::test]
async fn stalled_frames_of_four_uids_do_not_hold_up_an_admin() {
    if !can_switch_uid() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    let env = Env::new();
    let (_d, c) = env.start_initialized(&[]).await;
    drop(c);
    let stallers: Vec<Hostile> = (0..4)
        .map(|i| Hostile::spawn_as(&env, 61_200 + i, "stall"))
        .collect();
    for s in &stallers {
        s.wait_for("ready");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(20), async {
        let c = env.connect().await;
        c.call(Request::Status).await
    })
    .await;
    let took = t.elapsed();
    println!(
        "four uids with one stalled 1 MiB frame header each: an admin's status took \
         {took:?} ({})",
        if answered.is_ok() {
            "answered"
        } else {
            "not answered within 20 s"
        }
    );
    assert!(
        took < Duration::from_secs(2),
        "an admin's status waited {took:?} behind four stalled frames"
    );
}
