//! How long PostgreSQL lets a transaction of this `vaultd` sit idle: its
//! `idle_in_transaction_session_timeout`, set on each connection the store opens.
//!
//! Why: a `vaultd` stopped (SIGSTOP, a frozen VM, a host cut off) in the middle of a group
//! commit keeps its transaction open, and with it the share locks it took: the lease rows it
//! checked (`FOR SHARE`, see [`super::lease`]) and the data-key lock (shared, from `BEGIN`).
//! Another host's takeover of those sessions (its lease `UPDATE` waits for the row lock) and a
//! `rekey` anywhere (its exclusive lock, and every `BEGIN` queued behind it) would wait until
//! the paused host resumes. With the timeout, PostgreSQL ends the paused host's session once
//! it has been idle that long: its locks go, its transaction is rolled back, and when it
//! resumes it finds the connection gone, reconnects, and its writes meet the fencing check
//! (refused if its leases lapsed meanwhile). Nothing acknowledged as durable is lost: durable
//! writes are answered only after `COMMIT`.
//!
//! What it trades: a healthy transaction of this `vaultd` left idle longer than the timeout is
//! ended too (its durable writers get a `storage` error; its acknowledged cache-class writes
//! are applied again in a new transaction, see `worker`). A group commit stays open for up to
//! the flush interval, idle between operations, and a read inside it may decrypt a whole
//! table between two statements; so the default, [`default_for`], is a few flush intervals and
//! never less than [`FLOOR`]. The copy of `migrate-store`, whose source snapshot waits while
//! the target is written (which grows with the largest session), runs without it
//! ([`NO_TIMEOUT_LOCAL`]); `rekey` sends a statement per row and keeps it.
//!
//! The operator's word wins: a value set on the role, the database or the server (or with
//! `options=-c …` in the connection string) is kept when `vaultd` was not given one
//! explicitly ([`IdleTimeout::Default`]); `--store-idle-transaction-timeout` sets it whatever
//! the database says ([`IdleTimeout::Set`]; `0s` turns it off).

use std::time::Duration;

use super::errors::pg_error;
use crate::vault::error::Result;

/// The default's lower bound: well above any pause between two statements of a healthy
/// transaction of this `vaultd` on a loaded host.
pub const FLOOR: Duration = Duration::from_secs(5);

/// How many flush intervals the default allows a group commit (open for one) to sit idle.
const FLUSH_INTERVALS: u32 = 4;

/// Appended to a `BEGIN` whose transaction must not be ended for sitting idle (the copy of
/// `migrate-store`): lasts until the transaction ends.
pub const NO_TIMEOUT_LOCAL: &str = "SET LOCAL idle_in_transaction_session_timeout = 0";

/// The setting's name.
const SETTING: &str = "idle_in_transaction_session_timeout";

/// What the store does with `idle_in_transaction_session_timeout` on each connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdleTimeout {
    /// Leave the database's setting (tools, tests, `migrate-store`'s target).
    #[default]
    Unset,
    /// This value, unless the role, database, server or connection string already sets one
    /// (not zero): `vaultd`'s default.
    Default(Duration),
    /// This value, whatever the database says; zero turns the timeout off.
    Set(Duration),
}

/// The default for a `vaultd` whose group commits stay open for `flush_interval`: four of
/// them, at least [`FLOOR`].
pub fn default_for(flush_interval: Duration) -> Duration {
    flush_interval.saturating_mul(FLUSH_INTERVALS).max(FLOOR)
}

/// Checks a timeout given explicitly (`--store-idle-transaction-timeout`): zero (off), or
/// long enough not to end this daemon's own healthy group commits, which stay open up to a
/// flush interval: at least [`EXPLICIT_MIN`] and two flush intervals. (A shorter value
/// would also round to whole milliseconds, or to zero: off.)
pub fn check_explicit(t: Duration, flush_interval: Duration) -> std::result::Result<(), String> {
    let least = flush_interval.saturating_mul(2).max(EXPLICIT_MIN);
    if t.is_zero() || t >= least {
        return Ok(());
    }
    Err(format!(
        "--store-idle-transaction-timeout {} is shorter than {} (at least {} and two flush \
         intervals): PostgreSQL would end this vaultd's own group commits; give 0s to turn \
         it off",
        humantime::format_duration(t),
        humantime::format_duration(least),
        humantime::format_duration(EXPLICIT_MIN),
    ))
}

/// The shortest timeout [`check_explicit`] takes (other than zero).
pub const EXPLICIT_MIN: Duration = Duration::from_secs(1);

/// The timeout in force on a connection, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InForce {
    /// Zero: none.
    pub timeout: Duration,
    /// PostgreSQL's name for where the value came from (`session` when this store set it;
    /// `user`, `database`, `configuration file`, `client`, `default` otherwise).
    pub source: String,
}

/// Applies `policy` to a new connection; returns the timeout in force.
pub(super) fn apply(client: &mut postgres::Client, policy: IdleTimeout) -> Result<InForce> {
    let set = match policy {
        IdleTimeout::Unset => None,
        IdleTimeout::Set(t) => Some(t),
        IdleTimeout::Default(t) => {
            let now = current(client)?;
            if !now.timeout.is_zero() {
                return Ok(now);
            }
            Some(t)
        }
    };
    if let Some(t) = set {
        let ms = i64::try_from(t.as_millis()).unwrap_or(i64::from(i32::MAX));
        // PostgreSQL's maximum for the setting (ms, an int).
        let ms = ms.min(i64::from(i32::MAX)).to_string();
        client
            .execute("SELECT set_config($1, $2, false)", &[&SETTING, &ms])
            .map_err(pg_error)?;
    }
    current(client)
}

/// The setting as the connection has it.
fn current(client: &mut postgres::Client) -> Result<InForce> {
    let row = client
        .query_one(
            "SELECT setting::bigint, source FROM pg_settings WHERE name = $1",
            &[&SETTING],
        )
        .map_err(pg_error)?;
    let ms: i64 = row.get(0);
    Ok(InForce {
        timeout: Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
        source: row.get(1),
    })
}

#[cfg(test)]
mod cluster_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_timeout_is_off_or_outlasts_two_flush_intervals() {
        let flush = Duration::from_millis(100);
        assert_eq!(check_explicit(Duration::ZERO, flush), Ok(()));
        assert_eq!(check_explicit(Duration::from_secs(1), flush), Ok(()));
        for short in [Duration::from_micros(500), Duration::from_millis(999)] {
            let err = check_explicit(short, flush).unwrap_err();
            assert!(err.contains("shorter than 1s"), "{err}");
        }
        let flush = Duration::from_secs(2);
        assert!(check_explicit(Duration::from_secs(3), flush).is_err());
        assert_eq!(check_explicit(Duration::from_secs(4), flush), Ok(()));
    }

    #[test]
    fn the_default_is_four_flush_intervals_and_at_least_the_floor() {
        assert_eq!(default_for(Duration::from_millis(100)), FLOOR);
        assert_eq!(default_for(Duration::from_secs(2)), Duration::from_secs(8));
        assert_eq!(default_for(Duration::MAX), Duration::MAX);
    }
}
