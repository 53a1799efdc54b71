//! Daemon-wide limits that keep one local user (a member of the socket's group) from taking
//! the daemon down for the others: connections, memory held by requests, and the storage
//! thread's time.
//!
//! - **Connections.** At most [`Settings::max_connections_per_uid`] per uid and
//!   [`Settings::max_connections`] in all. Admin uids are held to neither: on top of the
//!   total they have [`Settings::admin_reserved_connections`] of their own, so that
//!   `vaultctl unlock` or `status` gets in when everyone else is at the cap. The total is
//!   also derived from the file-descriptor limit: at start the soft `RLIMIT_NOFILE` is raised
//!   as far as the connection caps need (never above the hard limit), and what the daemon
//!   cannot open is taken off the total, after [`reserved_fds`] for its own files. A refused
//!   connection is answered `permission_denied` to its `hello` (see [`crate::server::conn::refuse`]), then closed.
//! - **Memory.** A request takes its weight ([`weight`]: what decoding its frame can make the
//!   daemon hold) from the daemon-wide budget of [`Settings::request_memory`] bytes, and first
//!   from its uid's share of it ([`Settings::request_memory_per_uid`]), before its payload is
//!   even allocated: the frame's length is in its header. It gives the weight back once its
//!   answer is built. A request heavier than its uid's share weighs the whole share, so it
//!   runs alone for that uid rather than never.
//! - **The storage thread**, which serves jobs first come first served: a uid has at most
//!   [`Settings::requests_running_per_uid`] requests running at once, and one heavy request
//!   (a whole session in or out, see [`crate::server::cmd::Weight`]). What a flooding uid
//!   sends beyond that waits in its own connections (the reader stops reading, the kernel
//!   pushes back on the sender), not in the shared storage queue ahead of other uids' writes.
//!
//! How long one request can hold the storage thread is the business of the handlers (a large
//! batch of peers is applied in slices, see [`crate::server::cmd::data`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default [`Settings::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// Default [`Settings::max_connections_per_uid`].
pub const DEFAULT_MAX_CONNECTIONS_PER_UID: u32 = 256;
/// Default [`Settings::admin_reserved_connections`].
pub const DEFAULT_ADMIN_RESERVED_CONNECTIONS: u32 = 32;
/// Default [`Settings::idle_timeout`], in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default [`Settings::request_memory`], in MiB.
pub const DEFAULT_REQUEST_MEMORY_MIB: u32 = 64;
/// Default [`Settings::request_memory_per_uid`], in MiB.
pub const DEFAULT_REQUEST_MEMORY_PER_UID_MIB: u32 = 16;
/// Default [`Settings::requests_running_per_uid`]: one connection's worth
/// ([`crate::server::conn::MAX_IN_FLIGHT`]), so a single connection is never held back by it.
pub const DEFAULT_REQUESTS_RUNNING_PER_UID: u32 = 64;

/// Bytes a request's decoded form and its decoding can hold, per byte of its frame: measured
/// with a counting allocator on the worst case found, a `cache_peers` whose peers are
/// MessagePack arrays of nine fields, nil where optional (10 bytes each, 168 once decoded,
/// and up to 1.5 times that while the list grows: 25x), plus the payload buffer itself.
/// A realistic batch of peers decodes to 1.1 times its frame.
pub const DECODED_PER_BYTE: u64 = 26;
/// What any request weighs besides its frame: its task, its decoded request, its answer.
pub const REQUEST_BASE_WEIGHT: u64 = 4096;

/// Heavy requests one uid has running at once (a whole session in or out, the session list).
pub const HEAVY_PER_UID: usize = 1;
/// Refused connections being answered at once; beyond that, a refused connection is closed
/// at once, without an answer, so that refusing holds few descriptors.
pub const REFUSALS_AT_ONCE: usize = 16;
/// How long a refused connection has to send its `hello` before it is closed unanswered.
pub const REFUSAL_HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `hello` frame a refused connection may send (a real one is under 100 bytes).
pub const REFUSAL_MAX_FRAME: u32 = 4096;

/// Largest `hello` frame any connection may send: it is read before the request-memory
/// budget ([`Limits`]) weighs anything, so it is kept small (a real one is under 100 bytes;
/// the client's name is free text, so there is room for a long one).
pub const HELLO_MAX_FRAME: u32 = 4096;
/// At most one log line per this period about refused connections.
pub const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// The limits as configured (see [`crate::server::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Connections of non-admin uids, in all (further capped by the descriptor limit).
    pub max_connections: u32,
    /// Connections of one non-admin uid.
    pub max_connections_per_uid: u32,
    /// Connections kept for admin uids beyond `max_connections`.
    pub admin_reserved_connections: u32,
    /// A connection of a non-admin uid that holds no session handle and sends nothing for
    /// this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Daemon-wide budget of request weight in flight, in bytes.
    pub request_memory: u32,
    /// One uid's share of `request_memory`, in bytes.
    pub request_memory_per_uid: u32,
    /// Requests of one uid running at once.
    pub requests_running_per_uid: u32,
    /// Bytes kept free on the vault's disk: under it, non-admin cache writes that grow a
    /// session are refused (see [`super::disk`]); 0: no reserve.
    pub min_free_disk: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_uid: DEFAULT_MAX_CONNECTIONS_PER_UID,
            admin_reserved_connections: DEFAULT_ADMIN_RESERVED_CONNECTIONS,
            idle_timeout: Some(Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS)),
            request_memory: DEFAULT_REQUEST_MEMORY_MIB << 20,
            request_memory_per_uid: DEFAULT_REQUEST_MEMORY_PER_UID_MIB << 20,
            requests_running_per_uid: DEFAULT_REQUESTS_RUNNING_PER_UID,
            min_free_disk: super::disk::DEFAULT_MIN_FREE_DISK_MIB << 20,
        }
    }
}

/// Descriptors kept for the daemon's own use out of a limit of `fd_limit`: its database
/// files, the listener, the runtime's, the spare one the accept loop closes when out of
/// descriptors, and [`REFUSALS_AT_ONCE`] connections being refused. 64, or a quarter of a
/// small limit.
pub fn reserved_fds(fd_limit: u64) -> u64 {
    64.min(fd_limit / 4)
}

/// The weight of a request whose frame is `len` bytes, at most `cap`.
pub fn weight(len: u32, cap: u32) -> u32 {
    let w = u64::from(len)
        .saturating_mul(DECODED_PER_BYTE)
        .saturating_add(REQUEST_BASE_WEIGHT);
    // The min is at most `cap`, a u32.
    u32::try_from(w.min(u64::from(cap))).unwrap_or(cap)
}

/// The soft `RLIMIT_NOFILE`, first raised to `want` if it is lower (never above the hard
/// limit). Best effort: a sandbox may forbid `setrlimit` (systemd's
/// `SystemCallFilter=~@resources`); the limit in force is returned either way.
// `rlim_t` is `u64` on Linux but not everywhere: the casts are kept on purpose.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit(want: u64) -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the rlimit we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return 1024;
        }
        let soft = lim.rlim_cur as u64;
        let hard = lim.rlim_max as u64;
        if soft >= want || soft >= hard {
            return soft;
        }
        let raised = libc::rlimit {
            rlim_cur: want.min(hard) as libc::rlim_t,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the rlimit we pass by reference, nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                soft,
                "cannot raise the open-file limit; connection caps derived from it"
            );
            return soft;
        }
        raised.rlim_cur as u64
    }
    #[cfg(not(unix))]
    {
        want
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its uid has `limit` connections open.
    PerUid {
        /// The per-uid cap.
        limit: usize,
    },
    /// The daemon has `limit` connections open (for this kind of uid).
    Total {
        /// The cap in force.
        limit: usize,
    },
}

impl Refusal {
    /// The message sent with `permission_denied`.
    pub fn message(&self, uid: u32) -> String {
        match self {
            Refusal::PerUid { limit } => format!(
                "too many connections: uid {uid} has {limit} open, its limit \
                 (max_connections_per_uid); close some and try again"
            ),
            Refusal::Total { limit } => format!(
                "too many connections: the daemon has {limit} open, its limit \
                 (max_connections); try again later"
            ),
        }
    }
}

/// What one uid's requests share.
struct UidShare {
    memory: Arc<Semaphore>,
    running: Arc<Semaphore>,
    heavy: Arc<Semaphore>,
}

struct UidEntry {
    conns: usize,
    share: Arc<UidShare>,
}

#[derive(Default)]
struct Open {
    total: usize,
    uids: HashMap<u32, UidEntry>,
}

struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

/// The limits in force, shared by the accept loop and every connection.
pub struct Limits {
    max_connections: usize,
    per_uid: usize,
    admin_reserve: usize,
    idle_timeout: Option<Duration>,
    memory: Arc<Semaphore>,
    memory_total: u32,
    memory_per_uid: u32,
    running_per_uid: usize,
    open: Mutex<Open>,
    refusing: Arc<Semaphore>,
    refusal_log: Mutex<RefusalLog>,
}

impl Limits {
    /// The limits of `settings` under a descriptor limit of `fd_limit` (see the module docs).
    pub fn new(settings: &Settings, fd_limit: u64) -> Limits {
        let usable = fd_limit.saturating_sub(reserved_fds(fd_limit));
        let usable = usize::try_from(usable).unwrap_or(usize::MAX);
        let admin_reserve = (settings.admin_reserved_connections as usize).min(usable / 2);
        let max_connections = (settings.max_connections as usize).min(usable - admin_reserve);
        let memory = settings.request_memory.max(1);
        Limits {
            max_connections,
            per_uid: settings.max_connections_per_uid as usize,
            admin_reserve,
            idle_timeout: settings.idle_timeout,
            memory: Arc::new(Semaphore::new(memory as usize)),
            memory_total: memory,
            memory_per_uid: settings.request_memory_per_uid.clamp(1, memory),
            running_per_uid: (settings.requests_running_per_uid as usize).max(1),
            open: Mutex::new(Open::default()),
            refusing: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
            refusal_log: Mutex::new(RefusalLog {
                last: None,
                unlogged: 0,
            }),
        }
    }

    /// Connections of non-admin uids the daemon accepts in all.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Connections kept for admin uids beyond [`Limits::max_connections`].
    pub fn admin_reserve(&self) -> usize {
        self.admin_reserve
    }

    /// Connections of one non-admin uid.
    pub fn max_connections_per_uid(&self) -> usize {
        self.per_uid
    }

    /// The idle timeout of connections without handles, if any.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        // Only counters and map entries change under this lock; a poisoned one is consistent.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection of `uid`, or says why not.
    pub fn admit(self: &Arc<Self>, uid: u32, standing: Standing) -> Result<Admitted, Refusal> {
        let mut open = self.open();
        let of_uid = open.uids.get(&uid).map_or(0, |e| e.conns);
        if standing == Standing::Admin {
            let limit = self.max_connections + self.admin_reserve;
            if open.total >= limit {
                return Err(Refusal::Total { limit });
            }
        } else {
            if of_uid >= self.per_uid {
                return Err(Refusal::PerUid {
                    limit: self.per_uid,
                });
            }
            if open.total >= self.max_connections {
                return Err(Refusal::Total {
                    limit: self.max_connections,
                });
            }
        }
        open.total += 1;
        let entry = open.uids.entry(uid).or_insert_with(|| UidEntry {
            conns: 0,
            share: Arc::new(UidShare {
                memory: Arc::new(Semaphore::new(self.memory_per_uid as usize)),
                running: Arc::new(Semaphore::new(self.running_per_uid)),
                heavy: Arc::new(Semaphore::new(HEAVY_PER_UID)),
            }),
        });
        entry.conns += 1;
        Ok(Admitted {
            limits: Arc::clone(self),
            uid,
            share: Arc::clone(&entry.share),
            admin: standing == Standing::Admin,
        })
    }

    /// Takes `bytes` from the daemon-wide request-memory budget for memory held between
    /// requests (a streamed import or export, see [`crate::server::cmd::stream`]), waiting
    /// for room; `None` if `bytes` is over half the budget, so that such a hold never leaves
    /// bots' requests without room.
    pub async fn hold(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes).ok()?.max(1);
        if n > self.hold_max() {
            return None;
        }
        Arc::clone(&self.memory).acquire_many_owned(n).await.ok()
    }

    /// The most bytes [`Limits::hold`] grants: half the daemon's request-memory budget.
    pub fn hold_max(&self) -> u32 {
        self.memory_total / 2
    }

    /// Room to answer one refused connection; `None` when [`REFUSALS_AT_ONCE`] are being
    /// answered already (close it at once then).
    pub fn refusing(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.refusing).try_acquire_owned().ok()
    }

    /// Logs a refusal, at most one line per [`REFUSAL_LOG_PERIOD`] (with the count since).
    pub fn log_refusal(&self, uid: u32, refusal: Refusal) {
        let mut log = self
            .refusal_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.unlogged += 1;
        let now = Instant::now();
        if log
            .last
            .is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_PERIOD)
        {
            return;
        }
        let count = std::mem::take(&mut log.unlogged);
        log.last = Some(now);
        drop(log);
        tracing::warn!(
            uid,
            refused = count,
            "connection refused: {} ({count} refused since the last such line; at most one \
             line per {REFUSAL_LOG_PERIOD:?})",
            refusal.message(uid)
        );
    }
}

/// Which connection caps apply to a uid ([`Limits::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// An admin uid: no per-uid cap, and the admin reserve beyond `max_connections`.
    Admin,
    /// Any other uid: its per-uid cap and `max_connections`.
    NonAdmin,
}

/// An admitted connection: counted until dropped, with its uid's shares.
pub struct Admitted {
    limits: Arc<Limits>,
    uid: u32,
    share: Arc<UidShare>,
    /// An admin uid's requests are weighed against its own share only, not the daemon's
    /// budget: other uids holding the whole budget (stalled frames) must not lock the admin
    /// out of `status`, `unlock` or `disconnect`.
    admin: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.limits.open();
        open.total -= 1;
        if let Some(e) = open.uids.get_mut(&self.uid) {
            e.conns -= 1;
            if e.conns == 0 {
                open.uids.remove(&self.uid);
            }
        }
    }
}

/// A request's weight, taken from its uid's share and from the daemon's budget (not for an
/// admin); given back when dropped.
pub struct MemoryPermit {
    _uid: OwnedSemaphorePermit,
    _daemon: Option<OwnedSemaphorePermit>,
}

impl Admitted {
    /// Waits until a request of a frame of `len` bytes fits in its uid's share and in the
    /// daemon's budget, and takes its weight from both (in that order: a uid waits in its
    /// own queue before it joins the daemon's). An admin's takes its uid's share only.
    pub async fn memory(&self, len: u32) -> MemoryPermit {
        let w = weight(len, self.limits.memory_per_uid);
        let uid = Arc::clone(&self.share.memory)
            .acquire_many_owned(w)
            .await
            .expect("a uid's memory semaphore is never closed");
        let daemon = if self.admin {
            None
        } else {
            Some(
                Arc::clone(&self.limits.memory)
                    .acquire_many_owned(w)
                    .await
                    .expect("the daemon's memory semaphore is never closed"),
            )
        };
        MemoryPermit {
            _uid: uid,
            _daemon: daemon,
        }
    }

    /// Waits until this uid may run one more request.
    pub async fn running(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.share.running)
            .acquire_owned()
            .await
            .expect("a uid's running semaphore is never closed")
    }

    /// Waits until this uid may run one more heavy request.
    pub async fn heavy(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.share.heavy)
            .acquire_owned()
            .await
            .expect("a uid's heavy semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(settings: Settings, fds: u64) -> Arc<Limits> {
        Arc::new(Limits::new(&settings, fds))
    }

    #[test]
    fn the_total_is_derived_from_the_descriptor_limit() {
        let l = limits(Settings::default(), 1024);
        // 1024 - 64 reserved for the daemon - 32 for admins.
        assert_eq!(l.max_connections(), 928);
        assert_eq!(l.admin_reserve(), 32);
        let l = limits(Settings::default(), 1 << 20);
        assert_eq!(l.max_connections(), DEFAULT_MAX_CONNECTIONS as usize);
        // A tiny limit still leaves room for admins and others.
        let l = limits(Settings::default(), 64);
        assert_eq!((l.max_connections(), l.admin_reserve()), (24, 24));
    }

    #[test]
    fn a_uid_at_its_cap_is_refused_others_and_admins_are_not() {
        let s = Settings {
            max_connections: 5,
            max_connections_per_uid: 3,
            admin_reserved_connections: 2,
            ..Settings::default()
        };
        let l = limits(s, 1 << 20);
        let a: Vec<_> = (0..3)
            .map(|_| l.admit(1000, Standing::NonAdmin).unwrap())
            .collect();
        assert_eq!(
            l.admit(1000, Standing::NonAdmin).err(),
            Some(Refusal::PerUid { limit: 3 })
        );
        let b: Vec<_> = (0..2)
            .map(|_| l.admit(1001, Standing::NonAdmin).unwrap())
            .collect();
        // The total (5) is reached: others are refused, admins get the reserve (2).
        assert_eq!(
            l.admit(1002, Standing::NonAdmin).err(),
            Some(Refusal::Total { limit: 5 })
        );
        let root: Vec<_> = (0..2)
            .map(|_| l.admit(0, Standing::Admin).unwrap())
            .collect();
        assert_eq!(
            l.admit(0, Standing::Admin).err(),
            Some(Refusal::Total { limit: 7 })
        );
        // Admins' connections count in the total too: with theirs open, closing two of
        // uid 1000's makes room for one more (5 - 2 of 1001 - 2 of root), not two.
        drop(a);
        let again = l.admit(1000, Standing::NonAdmin).unwrap();
        assert_eq!(
            l.admit(1000, Standing::NonAdmin).err(),
            Some(Refusal::Total { limit: 5 })
        );
        drop(root);
        let more = l.admit(1002, Standing::NonAdmin).unwrap();
        drop(more);
        // An unused uid's entry goes away.
        assert!(!l.open().uids.contains_key(&1002));
        drop((b, again));
        assert_eq!(l.open().total, 0);
        assert!(l.open().uids.is_empty());
    }

    #[test]
    fn weight_grows_with_the_frame_and_is_capped_by_the_share() {
        assert_eq!(weight(0, u32::MAX), 4096);
        assert_eq!(weight(1000, u32::MAX), 4096 + 26_000);
        assert_eq!(weight(1 << 20, 16 << 20), 16 << 20);
        assert_eq!(weight(u32::MAX, 5), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn one_uid_cannot_take_the_whole_budget_and_a_heavy_request_still_runs() {
        let s = Settings {
            request_memory: 1 << 20,
            request_memory_per_uid: 256 << 10,
            ..Settings::default()
        };
        let l = limits(s, 1 << 20);
        let a = l.admit(1000, Standing::NonAdmin).unwrap();
        let b = l.admit(1001, Standing::NonAdmin).unwrap();
        // A frame heavier than the share takes the whole share, and still gets it.
        let big = a.memory(1 << 20).await;
        let small = tokio::time::timeout(Duration::from_secs(1), a.memory(10)).await;
        assert!(small.is_err(), "uid 1000 went past its share");
        // Another uid is not held back by it.
        let other = tokio::time::timeout(Duration::from_secs(1), b.memory(1 << 10)).await;
        assert!(other.is_ok(), "uid 1001 waited for uid 1000's request");
        drop(big);
        let small = tokio::time::timeout(Duration::from_secs(1), a.memory(10)).await;
        assert!(small.is_ok(), "the share came back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_uids_running_requests_are_capped() {
        let s = Settings {
            requests_running_per_uid: 2,
            ..Settings::default()
        };
        let l = limits(s, 1 << 20);
        let a = l.admit(1000, Standing::NonAdmin).unwrap();
        let a2 = l.admit(1000, Standing::NonAdmin).unwrap();
        let b = l.admit(1001, Standing::NonAdmin).unwrap();
        let _r = (a.running().await, a2.running().await);
        let third = tokio::time::timeout(Duration::from_secs(1), a.running()).await;
        assert!(third.is_err(), "a third request of uid 1000 ran");
        let other = tokio::time::timeout(Duration::from_secs(1), b.running()).await;
        assert!(other.is_ok());
        let _h = a.heavy().await;
        let heavy = tokio::time::timeout(Duration::from_secs(1), a2.heavy()).await;
        assert!(heavy.is_err(), "two heavy requests of one uid ran");
    }
}
