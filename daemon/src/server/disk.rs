//! The vault disk's free-space reserve.
//!
//! Any uid on the socket may create sessions of its own and cache peers in them without
//! bound, and every peer is a row on the vault's disk: one bot could fill the disk under
//! every other, whose auth keys then could not be written. So while the filesystem holding
//! the vault has less than `min_free_disk_mib` available, writes that grow a session
//! (`cache_peers`, `set_update_state`, `put_sent_file`, `set_dc_option` of a new DC id) from
//! non-admin clients are refused with `storage`; auth keys of known DCs, the home DC, extras,
//! admin requests and the audit log keep the room that is left. The free space is looked up at most every
//! [`CHECK_EVERY`]. With a PostgreSQL store the vault is on the database server's disk,
//! which this daemon does not see: there is no reserve. On Windows neither (not measured
//! there yet).

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a look at the free space is trusted.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Default of `min_free_disk_mib`.
pub const DEFAULT_MIN_FREE_DISK_MIB: u64 = 256;

/// The reserve of one data directory (see the module doc).
pub struct DiskReserve {
    /// The directory whose filesystem holds the vault; `None`: no reserve.
    dir: Option<PathBuf>,
    /// Bytes to keep free; 0: no reserve.
    min_free: u64,
    /// The last look: when, and the bytes available if under the reserve.
    last: Mutex<Option<(Instant, Option<u64>)>>,
}

impl DiskReserve {
    /// A reserve of `min_free` bytes on the filesystem of `dir` (`None`: none).
    pub fn new(dir: Option<PathBuf>, min_free: u64) -> DiskReserve {
        DiskReserve {
            dir,
            min_free,
            last: Mutex::new(None),
        }
    }

    /// The reserve in bytes.
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// `Some(bytes available)` while the vault's filesystem has less than the reserve. A
    /// filesystem that cannot be looked at counts as having room (the write then fails or
    /// not on its own).
    pub fn short(&self) -> Option<u64> {
        let dir = self.dir.as_ref().filter(|_| self.min_free > 0)?;
        let was = {
            let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            match *last {
                Some((at, short)) if at.elapsed() < CHECK_EVERY => return short,
                Some((_, short)) => short,
                None => None,
            }
        };
        // Not under the lock: a filesystem slow to answer holds up only its callers.
        let short = available(dir).filter(|&a| a < self.min_free);
        match (was, short) {
            (None, Some(a)) => tracing::warn!(
                available_mib = a >> 20,
                reserve_mib = self.min_free >> 20,
                "the vault's disk is under its free-space reserve: writes of non-admin clients \
                 that grow a session are refused until space is freed"
            ),
            (Some(_), None) => {
                tracing::info!("the vault's disk has room again: every write is accepted")
            }
            _ => {}
        }
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), short));
        short
    }
}

#[cfg(unix)]
fn available(dir: &std::path::Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(not(unix))]
fn available(_dir: &std::path::Path) -> Option<u64> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_is_short_and_none_is_never() {
        let dir = std::env::temp_dir();
        let free = available(&dir).expect("statvfs of the temp dir");
        let all = DiskReserve::new(Some(dir.clone()), u64::MAX);
        assert_eq!(all.short().map(|a| a / (1 << 30)), Some(free / (1 << 30)));
        assert!(DiskReserve::new(Some(dir.clone()), 0).short().is_none());
        assert!(DiskReserve::new(None, u64::MAX).short().is_none());
        assert!(
            DiskReserve::new(Some(dir), 1).short().is_none(),
            "{free} bytes free"
        );
    }
}
