//! How often a non-admin uid's refused requests and session opens are recorded in the audit
//! log ([`Sampler`]), and the entries that count those left out when their uid went quiet
//! ([`flush_left_out`]). Split from `audit.rs` along this seam.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use session_vault_proto::audit::AuditEntry;

use super::{EXE_MAX, capped, now_secs, store};
use crate::server::Daemon;
use crate::server::context::Conn;

/// How often a non-admin uid's refused requests are recorded: the first of each period;
/// the entry after it says how many were left out. A uid with no access would otherwise
/// grow the vault (and the journal) by an entry for every frame it sends.
pub const REFUSED_PERIOD: Duration = Duration::from_secs(1);

/// How many session opens of one non-admin uid are recorded one by one before they are
/// sampled (a host starting its bots opens many sessions at once).
pub const OPENS_BURST: u32 = 32;

/// Past [`OPENS_BURST`], one open of a non-admin uid recorded per period: any uid may open
/// its own sessions as often as it likes, and every entry is sealed and stored (430 bytes):
/// 20,000 opens of one session once grew the vault by 8.6 MB.
pub const OPENS_PERIOD: Duration = Duration::from_secs(1);

/// Per uid (and, for opens of sessions outside its own namespace, per uid and session), a
/// token bucket of entries: `burst` recorded at once, then one per `period`; the next entry
/// recorded says how many were left out since the last. Refused requests and session opens
/// each have one ([`Sampler::refusals`], [`Sampler::opens`]).
pub struct Sampler {
    burst: u32,
    period: Duration,
    uids: Mutex<HashMap<(u32, Option<String>), Bucket>>,
}

struct Bucket {
    /// Entries it may record now (refilled one per period, up to the burst).
    tokens: u32,
    /// When the last token was counted in.
    refilled: Instant,
    /// Entries left out since the last recorded one, if any.
    left: Option<Left>,
}

/// Entries a bucket left out since its last recorded one.
struct Left {
    count: u64,
    /// When the last of them was left out, and who sent it.
    at: Instant,
    sender: Sender,
}

/// Who sent a request: what an entry says of them besides the uid.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Sender {
    pub(super) gid: u32,
    pub(super) pid: Option<u32>,
    /// Cut at [`EXE_MAX`].
    pub(super) exe: String,
    pub(super) unit: Option<String>,
}

impl Sender {
    pub(super) fn of(conn: &Conn) -> Sender {
        Sender {
            gid: conn.peer.gid,
            pid: conn.peer.pid,
            exe: capped(&conn.process.exe, EXE_MAX),
            unit: conn.process.unit.clone(),
        }
    }
}

/// Entries a [`Sampler`] left out that no later entry of their uid counted ([`Sampler::quiet`]).
#[derive(Debug, PartialEq)]
struct LeftOut {
    uid: u32,
    session: Option<String>,
    count: u64,
    /// Who sent the last of them.
    sender: Sender,
}

impl Sampler {
    /// A non-admin uid's refused requests: the first of each [`REFUSED_PERIOD`].
    pub fn refusals() -> Sampler {
        Sampler::new(1, REFUSED_PERIOD)
    }

    /// A non-admin uid's session opens: [`OPENS_BURST`], then one per [`OPENS_PERIOD`].
    pub fn opens() -> Sampler {
        Sampler::new(OPENS_BURST, OPENS_PERIOD)
    }

    fn new(burst: u32, period: Duration) -> Sampler {
        Sampler {
            burst,
            period,
            uids: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to record an entry of `uid` now: `Some(left out since the last)`. `session`
    /// names a bucket of its own (see [`record`]); `None`: the uid's. `sender` is asked only
    /// when the entry is left out.
    pub(super) fn admit(
        &self,
        uid: u32,
        session: Option<&str>,
        sender: impl FnOnce() -> Sender,
    ) -> Option<u64> {
        let mut t = self.uids.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let full = |b: &Bucket| {
            b.left.is_none() && now.duration_since(b.refilled) >= self.period * self.burst
        };
        // Bounded by the uids with connections: forget those whose bucket is full again
        // with nothing left out (they are as new).
        if t.len() > 1024 {
            t.retain(|_, b| !full(b));
        }
        let b = t
            .entry((uid, session.map(str::to_owned)))
            .or_insert(Bucket {
                tokens: self.burst,
                refilled: now,
                left: None,
            });
        let earned = now.duration_since(b.refilled).as_nanos() / self.period.as_nanos().max(1);
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            b.tokens = b.tokens.saturating_add(earned).min(self.burst);
            b.refilled = if b.tokens == self.burst {
                now
            } else {
                b.refilled + self.period * earned
            };
        }
        if b.tokens == 0 {
            let count = b.left.as_ref().map_or(0, |l| l.count) + 1;
            b.left = Some(Left {
                count,
                at: now,
                sender: sender(),
            });
            return None;
        }
        b.tokens -= 1;
        Some(b.left.take().map_or(0, |l| l.count))
    }

    /// The counts of the buckets that left entries out and have left none out for a period
    /// (their uid went quiet, so no entry of it may come to count them), or with `all` of
    /// every bucket that left some out (the daemon stopping), taken: an entry recorded later
    /// counts from zero.
    fn take_left_out(&self, all: bool) -> Vec<LeftOut> {
        let mut t = self.uids.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut out = Vec::new();
        for ((uid, session), b) in t.iter_mut() {
            let Some(left) = b
                .left
                .take_if(|l| all || now.duration_since(l.at) >= self.period)
            else {
                continue;
            };
            out.push(LeftOut {
                uid: *uid,
                session: session.clone(),
                count: left.count,
                sender: left.sender,
            });
        }
        out
    }
}

/// Once a period, an entry (action `left_out`, result `ok`) for each uid whose refused
/// requests or session opens were left out of the log and that has sent none since: its
/// next entry would have counted them, and without one the count would be lost (a uid could
/// send a burst and go quiet). Runs while the daemon does; an entry that cannot be stored
/// (the vault locked) is in the journal.
pub async fn flush_left_out(daemon: Weak<Daemon>) {
    let mut tick = tokio::time::interval(REFUSED_PERIOD.min(OPENS_PERIOD));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        write_left_out(&daemon, false).await;
    }
}

/// The same for every count not yet written, quiet or not: the daemon is stopping, and its
/// vault can still seal them.
pub async fn flush_all_left_out(daemon: &Daemon) {
    write_left_out(daemon, true).await;
}

async fn write_left_out(daemon: &Daemon, all: bool) {
    for (sampler, what) in [
        (&daemon.refusals, "refused requests"),
        (&daemon.opens, "session opens"),
    ] {
        for left in sampler.take_left_out(all) {
            let entry = AuditEntry {
                seq: 0,
                time: now_secs(),
                uid: left.uid,
                gid: left.sender.gid,
                pid: left.sender.pid,
                exe: left.sender.exe,
                unit: left.sender.unit,
                action: "left_out".to_owned(),
                session: left.session,
                detail: Some(format!(
                    "{} more {what} of this uid not recorded before",
                    left.count
                )),
                result: "ok".to_owned(),
            };
            store(daemon, entry, false).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uids_refusals_are_recorded_once_a_period_with_the_count_left_out() {
        let r = Sampler::refusals();
        assert_eq!(
            r.admit(7, None, Sender::default),
            Some(0),
            "the first is recorded"
        );
        assert_eq!(r.admit(7, None, Sender::default), None);
        assert_eq!(r.admit(7, None, Sender::default), None);
        assert_eq!(
            r.admit(8, None, Sender::default),
            Some(0),
            "another uid has its own period"
        );
        std::thread::sleep(REFUSED_PERIOD);
        assert_eq!(
            r.admit(7, None, Sender::default),
            Some(2),
            "the next says how many were left out"
        );
        assert_eq!(r.admit(7, None, Sender::default), None);
    }

    #[test]
    fn a_uids_opens_are_recorded_up_to_a_burst_then_one_a_period() {
        let o = Sampler::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert_eq!(
                o.admit(7, None, Sender::default),
                Some(0),
                "the burst is recorded one by one"
            );
        }
        assert_eq!(o.admit(7, None, Sender::default), None);
        assert_eq!(o.admit(7, None, Sender::default), None);
        assert_eq!(
            o.admit(8, None, Sender::default),
            Some(0),
            "another uid has its own bucket"
        );
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(
            o.admit(7, None, Sender::default),
            Some(2),
            "one per period, counting those left out"
        );
        assert_eq!(
            o.admit(7, None, Sender::default),
            None,
            "one, not the burst again"
        );
        std::thread::sleep(Duration::from_millis(650));
        for _ in 0..3 {
            assert!(
                o.admit(7, None, Sender::default).is_some(),
                "the bucket refills up to the burst"
            );
        }
        assert_eq!(o.admit(7, None, Sender::default), None, "and no further");
        assert_eq!(
            o.admit(7, Some("1000/granted"), Sender::default),
            Some(0),
            "a session outside the uid's namespace has a bucket of its own"
        );
    }

    #[test]
    fn a_quiet_uids_left_out_count_is_taken_once_with_who_sent_the_last() {
        let s = Sampler::new(1, Duration::from_millis(100));
        let who = |pid| {
            move || Sender {
                pid: Some(pid),
                ..Sender::default()
            }
        };
        assert_eq!(s.admit(7, None, who(1)), Some(0));
        assert_eq!(s.admit(7, None, who(2)), None);
        assert_eq!(s.admit(7, None, who(3)), None);
        assert_eq!(
            s.admit(8, None, who(9)),
            Some(0),
            "nothing left out of uid 8"
        );
        assert_eq!(
            s.take_left_out(false),
            [],
            "uid 7 has not been quiet for a period yet"
        );
        std::thread::sleep(Duration::from_millis(110));
        let left = LeftOut {
            uid: 7,
            session: None,
            count: 2,
            sender: who(3)(),
        };
        assert_eq!(
            s.take_left_out(false),
            [left],
            "counted, with the sender of the last"
        );
        assert_eq!(s.take_left_out(false), [], "taken once");
        assert_eq!(
            s.admit(7, None, who(4)),
            Some(0),
            "the next entry counts from zero"
        );
    }
}
