//! Which thread runs a job, and how: which writes are small enough to run inline on a
//! caller's thread ([`inline_peers`], [`INLINE_STATE_ROWS`]), and the flags a store reads
//! ([`running_inline`], [`replaying`]) to refuse unbounded work where it would hold others up,
//! or to do it anyway where refusing would lose an acknowledged write.

use session_vault_proto::model::Peer;

/// How much a `cache_peers` may weigh and still run inline on the caller's thread, counted by
/// [`inline_peers`]: a new peer without username or phone costs about 1.5 µs of engine work
/// since the map of peer keys and the sealing helper (issue 17, BENCHMARKS-session.md
/// optimisations 20–22 and 29), one with either about twice that, so a batch within this
/// bound holds a runtime thread 0.1–0.3 ms, no longer than its queued job would hold the
/// storage thread, and saves the two thread wake-ups of the hop. Heavier batches are queued.
pub const INLINE_PEERS: usize = 128;

/// Bytes of a peer's name, username and phone that weigh as much as one more peer in
/// [`inline_peers`]: sealing, blinding and storing text costs by the byte, so a batch of few
/// peers with long names (a frame may carry a MiB of them) is queued like a large one.
pub const INLINE_TEXT_PER_PEER: usize = 256;

/// Whether a `cache_peers` of `peers` is light enough to run inline ([`INLINE_PEERS`]): each
/// peer weighs 1, one more if it brings a username or phone (their map entries and
/// hand-overs), and one more per [`INLINE_TEXT_PER_PEER`] bytes of its text.
pub fn inline_peers(peers: &[Peer]) -> bool {
    let mut weight = 0;
    for p in peers {
        let text = [&p.name, &p.username, &p.phone]
            .iter()
            .map(|t| t.as_ref().map_or(0, String::len))
            .sum::<usize>();
        let named = usize::from(p.username.is_some() || p.phone.is_some());
        weight += 1 + named + text / INLINE_TEXT_PER_PEER;
        if weight > INLINE_PEERS {
            return false;
        }
    }
    true
}

/// The most rows (1 + channels) a `set_update_state` may write and still run inline: each is
/// a small sealed row (2–3 µs).
pub const INLINE_STATE_ROWS: usize = 32;

/// How the current thread runs jobs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// The storage thread, running a job as queued.
    Queued,
    /// A caller's (runtime) thread, running a job inline.
    Inline,
    /// Re-applying acknowledged writes after their transaction was lost.
    Replay,
}

thread_local! {
    /// How this thread runs jobs ([`running_inline`], [`replaying`]).
    // Already `const`: clippy 1.96 says otherwise on targets whose thread-locals are the OS's
    // (x86_64-win7-windows-gnu), rust-clippy#17566.
    #[cfg_attr(windows, allow(clippy::missing_const_for_thread_local, reason = "rust-clippy#17566"))]
    static MODE: std::cell::Cell<Mode> = const { std::cell::Cell::new(Mode::Queued) };
}

/// Runs `f` as an inline job: [`running_inline`] says so until it returns (or unwinds).
pub(super) fn inline<T>(f: impl FnOnce() -> T) -> T {
    with_mode(Mode::Inline, f)
}

/// Runs `f` in `mode`, then restores the mode before it.
pub(super) fn with_mode<T>(mode: Mode, f: impl FnOnce() -> T) -> T {
    struct Reset(Mode);
    impl Drop for Reset {
        fn drop(&mut self) {
            MODE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(MODE.with(|c| c.replace(mode)));
    f()
}

/// Whether the current thread runs a job inline (a runtime thread, for a caller) rather than
/// on the storage thread: a store that would have to do unbounded work for it (SQLite reading
/// a whole session's peer keys) answers [`crate::vault::EngineError::NotInline`] instead,
/// before it changes anything, and the job is queued for the storage thread.
pub fn running_inline() -> bool {
    MODE.with(std::cell::Cell::get) == Mode::Inline
}

/// Whether the current thread re-applies acknowledged writes (their transaction was lost): a
/// store does what they need here, however long, rather than ask for it to be done elsewhere
/// first ([`crate::vault::EngineError::KeysNeeded`]), which would drop them.
pub fn replaying() -> bool {
    MODE.with(std::cell::Cell::get) == Mode::Replay
}

#[cfg(test)]
mod tests {
    use super::{INLINE_PEERS, INLINE_TEXT_PER_PEER, inline_peers};
    use session_vault_proto::model::{Peer, PeerKind};

    fn peers(n: usize, f: impl Fn(&mut Peer)) -> Vec<Peer> {
        (0..n)
            .map(|i| {
                let mut p = Peer::new(PeerKind::User, i64::try_from(i).unwrap() + 1);
                f(&mut p);
                p
            })
            .collect()
    }

    #[test]
    fn batches_run_inline_by_weight_not_by_count_alone() {
        // grammers' peers: no text.
        assert!(inline_peers(&peers(INLINE_PEERS, |_| {})));
        assert!(!inline_peers(&peers(INLINE_PEERS + 1, |_| {})));
        // A short name weighs nothing more; a username or phone doubles a peer.
        assert!(inline_peers(
            &peers(INLINE_PEERS, |p| p.name = Some("Ann".into()))
        ));
        let named = |p: &mut Peer| p.username = Some("ann".into());
        assert!(inline_peers(&peers(INLINE_PEERS / 2, named)));
        assert!(!inline_peers(&peers(INLINE_PEERS / 2 + 1, named)));
        // Long text is weighed by the byte: one peer with a frame's worth of name is queued.
        assert!(!inline_peers(
            &peers(1, |p| p.name = Some("n".repeat(64 << 10)))
        ));
        let long = |p: &mut Peer| p.name = Some("n".repeat(INLINE_TEXT_PER_PEER));
        assert!(inline_peers(&peers(INLINE_PEERS / 2, long)));
        assert!(!inline_peers(&peers(INLINE_PEERS / 2 + 1, long)));
        assert!(inline_peers(&[]));
    }
}
