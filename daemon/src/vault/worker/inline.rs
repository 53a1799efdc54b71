//! Which thread runs a job, and how: the flags a store reads ([`running_inline`],
//! [`replaying`]) to refuse unbounded work where it would hold others up, or to do it anyway
//! where refusing would lose an acknowledged write.

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
