//! Idle auto-lock (`vaultd --auto-lock-after DURATION`): the vault is locked once no request
//! has arrived for that long, as `vaultctl lock` would (keys wiped, `locked` event pushed),
//! and stays locked until an admin unlocks it.
//!
//! What counts as activity: every request but `hello` and `status`, so that a monitor
//! polling `vaultctl status` does not keep the keys in memory. A bot that holds a session
//! open but sends nothing is idle too: its next request answers `locked`.

use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_vault_proto::message::{Event, Request, VaultState};

use super::Daemon;

/// When the last request that counts arrived.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Milliseconds from `origin`.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Notes `request` as activity, unless it is a `hello` or `status`.
    pub fn note(&self, request: &Request) {
        if !matches!(request, Request::Hello { .. } | Request::Status) {
            self.touch();
        }
    }

    /// Notes activity now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long ago the last activity was.
    pub fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// Locks the vault whenever it has been idle for `after`. Holds the daemon weakly: it ends
/// once the daemon is gone.
pub async fn run(daemon: Weak<Daemon>, after: Duration) {
    loop {
        let idle = match daemon.upgrade() {
            Some(d) => d.activity.idle(),
            None => return,
        };
        if idle < after {
            tokio::time::sleep(after - idle).await;
            continue;
        }
        let Some(d) = daemon.upgrade() else { return };
        let unlocked = matches!(
            d.vault.status().await.map(|s| s.state),
            Ok(VaultState::Unlocked)
        );
        // A request may have come in meanwhile.
        if unlocked && d.activity.idle() >= after {
            match d.vault.lock().await {
                Ok(()) => {
                    tracing::info!(
                        idle = %humantime::format_duration(Duration::from_secs(idle.as_secs())),
                        "vault locked: no request for --auto-lock-after"
                    );
                    d.publish(Event::Locked);
                }
                Err(e) => tracing::error!("auto-lock failed: {e}"),
            }
        }
        drop(d);
        // Wait a whole period again (activity, or an unlock, starts it anew).
        tokio::time::sleep(after).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_hello_are_not_activity() {
        let a = Activity::default();
        std::thread::sleep(Duration::from_millis(30));
        a.note(&Request::Status);
        assert!(a.idle() >= Duration::from_millis(30));
        a.note(&Request::Lock);
        assert!(a.idle() < Duration::from_millis(30));
    }
}
