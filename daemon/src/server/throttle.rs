//! Daemon-wide throttling of passphrase attempts (unlock, passphrase change).
//!
//! Attempts are serialized through one async lock, and each waits until the delay earned by
//! the failures before it has passed: 0.5 s after the first failure, doubling up to 30 s.
//! So a brute force gets the same few attempts a minute over one connection or a thousand,
//! while a person who mistyped once waits half a second. A success resets the count.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Delay after the first failure.
pub const BASE_DELAY: Duration = Duration::from_millis(500);
/// Longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct State {
    failures: u32,
    next_allowed: Instant,
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

/// What an attempt came to.
pub enum Outcome<T> {
    /// The passphrase was right (or the attempt failed for another reason, which does not
    /// count as a failure).
    Done(T),
    /// The passphrase was wrong; the next attempt waits this long.
    Failed(Duration),
}

impl Throttle {
    /// Runs one attempt in turn. `attempt` returns `Err(true)`-like classification through
    /// `is_bad_passphrase`, which tells whether its error counts as a failure.
    pub async fn attempt<T, E, F, Fut>(
        &self,
        attempt: F,
        is_bad_passphrase: impl Fn(&E) -> bool,
    ) -> Result<T, (E, Duration)>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut st = self.state.lock().await;
        tokio::time::sleep_until(st.next_allowed).await;
        match attempt().await {
            Ok(v) => {
                st.failures = 0;
                Ok(v)
            }
            Err(e) if is_bad_passphrase(&e) => {
                st.failures = st.failures.saturating_add(1);
                let delay = delay_after(st.failures);
                st.next_allowed = Instant::now() + delay;
                Err((e, delay))
            }
            Err(e) => Err((e, Duration::ZERO)),
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[tokio::test(start_paused = true)]
    async fn failures_space_out_later_attempts_and_success_resets() {
        let t = Throttle::default();
        let start = Instant::now();
        let bad = |_: &()| true;
        for _ in 0..3 {
            let r = t.attempt(|| async { Err::<(), ()>(()) }, bad).await;
            assert!(r.is_err());
        }
        // Waited 0.5 s before the 2nd and 1 s before the 3rd attempt.
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        let r = t.attempt(|| async { Ok::<u8, ()>(7) }, bad).await;
        assert!(matches!(r, Ok(7)));
        // The success came after the 2 s earned by the third failure, and reset the count.
        assert_eq!(start.elapsed(), Duration::from_millis(3500));
        let before = Instant::now();
        let r = t.attempt(|| async { Ok::<u8, ()>(8) }, bad).await;
        assert!(matches!(r, Ok(8)));
        assert_eq!(before.elapsed(), Duration::ZERO);
    }
}
