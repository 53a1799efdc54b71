//! Daemon-wide throttling of passphrase attempts (unlock, passphrase change).
//!
//! After a wrong passphrase, no attempt is judged until a delay has passed: 0.5 s after the
//! first failure, doubling with each further one up to 30 s; a right one resets the count.
//! Attempts are never queued. One that arrives before the delay has passed, or while another
//! attempt is being judged, is refused at once, unjudged and without running Argon2, with the
//! time to wait ([`Refusal::NotJudged`], on the wire `bad_passphrase { retry_after_ms }`); it
//! does not count as a failure. So a brute force gets the same few judged attempts a minute
//! over one connection or a thousand, an attempt whose client gave up is never judged later,
//! and a person who mistyped waits half a second.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Delay after the first failure.
pub const BASE_DELAY: Duration = Duration::from_millis(500);
/// Longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Opens the message of a `bad_passphrase` answer to an attempt the throttle refused without
/// judging it. The code's `retry_after_ms` and `unchecked` fields are the contract; this
/// wording is for people.
pub const NOT_CHECKED: &str = "passphrase not checked";

#[derive(Debug)]
struct State {
    failures: u32,
    next_allowed: Instant,
    judging: bool,
}

/// The throttle. One per daemon.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<State>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            state: Mutex::new(State {
                failures: 0,
                next_allowed: Instant::now(),
                judging: false,
            }),
        }
    }
}

/// The delay earned by `failures` consecutive failures.
pub fn delay_after(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    BASE_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

/// Why an attempt did not succeed.
#[derive(Debug)]
pub enum Refusal<E> {
    /// Judged: the attempt ran and failed. After a wrong passphrase, `retry_after` is the
    /// delay it earned; after any other error (which does not count), zero.
    Failed {
        /// The attempt's error.
        error: E,
        /// How long until the next attempt is judged.
        retry_after: Duration,
    },
    /// Not judged: it came before the delay earned by the last failure had passed, or while
    /// another attempt was being judged. Its passphrase was not looked at.
    NotJudged {
        /// How long until an attempt may be judged: the rest of the delay, or while another
        /// is judged, the delay it would earn by failing (never zero).
        retry_after: Duration,
    },
}

/// Marks the one attempt being judged; clears the mark however the attempt ends (an error,
/// a panic in the handler, or its future dropped).
struct Judging<'a>(&'a Throttle);

impl Drop for Judging<'_> {
    fn drop(&mut self) {
        self.0.state().judging = false;
    }
}

impl Throttle {
    fn state(&self) -> MutexGuard<'_, State> {
        // Only plain assignments happen under the lock; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `attempt` if an attempt may be judged now, else refuses it at once.
    /// `is_bad_passphrase` tells whether an error of the attempt counts as a failure.
    pub async fn attempt<T, E, F, Fut>(
        &self,
        attempt: F,
        is_bad_passphrase: impl Fn(&E) -> bool,
    ) -> Result<T, Refusal<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let _judging = {
            let mut st = self.state();
            let now = Instant::now();
            if st.judging {
                return Err(Refusal::NotJudged {
                    retry_after: delay_after(st.failures.saturating_add(1)),
                });
            }
            if now < st.next_allowed {
                return Err(Refusal::NotJudged {
                    retry_after: st.next_allowed - now,
                });
            }
            st.judging = true;
            Judging(self)
        };
        let result = attempt().await;
        let mut st = self.state();
        match result {
            Ok(v) => {
                st.failures = 0;
                Ok(v)
            }
            Err(error) if is_bad_passphrase(&error) => {
                st.failures = st.failures.saturating_add(1);
                let retry_after = delay_after(st.failures);
                st.next_allowed = Instant::now() + retry_after;
                Err(Refusal::Failed { error, retry_after })
            }
            Err(error) => Err(Refusal::Failed {
                error,
                retry_after: Duration::ZERO,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn delay_grows_and_caps() {
        assert_eq!(delay_after(0), Duration::ZERO);
        assert_eq!(delay_after(1), Duration::from_millis(500));
        assert_eq!(delay_after(2), Duration::from_secs(1));
        assert_eq!(delay_after(4), Duration::from_secs(4));
        assert_eq!(delay_after(7), MAX_DELAY);
        assert_eq!(delay_after(1000), MAX_DELAY);
    }

    /// What an attempt came to: `Ok`, judged and failed after earning a delay, or not judged
    /// with the time to wait.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Ok,
        Failed(Duration),
        NotJudged(Duration),
    }

    /// One attempt, counting the ones that ran in `judged`.
    async fn attempt(t: &Throttle, judged: &AtomicU32, right: bool) -> Seen {
        let r = t
            .attempt(
                || async {
                    judged.fetch_add(1, Ordering::Relaxed);
                    if right { Ok(()) } else { Err(()) }
                },
                |_| true,
            )
            .await;
        match r {
            Ok(()) => Seen::Ok,
            Err(Refusal::Failed { retry_after, .. }) => Seen::Failed(retry_after),
            Err(Refusal::NotJudged { retry_after }) => Seen::NotJudged(retry_after),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn early_attempts_are_refused_unjudged_and_do_not_count() {
        let t = Throttle::default();
        let judged = AtomicU32::new(0);
        assert_eq!(attempt(&t, &judged, false).await, Seen::Failed(ms(500)));
        // Early, even with the right passphrase: refused at once, with the time left.
        for _ in 0..10 {
            assert_eq!(attempt(&t, &judged, true).await, Seen::NotJudged(ms(500)));
        }
        tokio::time::advance(ms(400)).await;
        assert_eq!(attempt(&t, &judged, false).await, Seen::NotJudged(ms(100)));
        assert_eq!(judged.load(Ordering::Relaxed), 1, "an early attempt ran");
        // Once the delay has passed, the next is judged; the refused ones did not count: the
        // second failure earns 1 s, not more.
        tokio::time::advance(ms(100)).await;
        assert_eq!(attempt(&t, &judged, false).await, Seen::Failed(ms(1000)));
        tokio::time::advance(ms(1000)).await;
        assert_eq!(attempt(&t, &judged, true).await, Seen::Ok);
        // A success resets the count: the next attempt is judged at once.
        assert_eq!(attempt(&t, &judged, false).await, Seen::Failed(ms(500)));
        assert_eq!(judged.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn one_attempt_is_judged_at_a_time() {
        let t = Throttle::default();
        let judged = AtomicU32::new(0);
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let slow = t.attempt(
            || async {
                let _ = wait.await;
                Err::<(), ()>(())
            },
            |_| true,
        );
        tokio::pin!(slow);
        // Started, now waiting inside the attempt (as Argon2 would run).
        assert!(slow.as_mut().now_or_never().is_none());
        // Meanwhile another is refused at once, with the delay a failure would earn.
        assert_eq!(attempt(&t, &judged, true).await, Seen::NotJudged(ms(500)));
        assert_eq!(judged.load(Ordering::Relaxed), 0);
        release.send(()).expect("the attempt waits");
        assert!(matches!(
            slow.await,
            Err(Refusal::Failed { retry_after, .. }) if retry_after == ms(500)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_dropped_midway_frees_the_throttle() {
        let t = Throttle::default();
        let judged = AtomicU32::new(0);
        {
            let never = t.attempt(std::future::pending::<Result<(), ()>>, |_| true);
            tokio::pin!(never);
            assert!(never.as_mut().now_or_never().is_none());
        }
        assert_eq!(attempt(&t, &judged, true).await, Seen::Ok);
    }
}
