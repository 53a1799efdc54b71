//! Which thread runs a job: the flag a store reads ([`running_inline`]) to refuse unbounded
//! work in a job run inline on a caller's (runtime) thread.

thread_local! {
    /// Whether this thread is running a job inline, on behalf of a caller ([`running_inline`]).
    // Already `const`: clippy 1.96 says otherwise on targets whose thread-locals are the OS's
    // (x86_64-win7-windows-gnu), rust-clippy#17566.
    #[cfg_attr(windows, allow(clippy::missing_const_for_thread_local, reason = "rust-clippy#17566"))]
    static INLINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` as an inline job: [`running_inline`] says so until it returns (or unwinds).
pub(super) fn inline<T>(f: impl FnOnce() -> T) -> T {
    with_inline(true, f)
}

/// Runs `f` with [`running_inline`] saying `on`, then restores what it said.
pub(super) fn with_inline<T>(on: bool, f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            INLINE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(INLINE.with(|c| c.replace(on)));
    f()
}

/// Whether the current thread runs a job inline (a runtime thread, for a caller) rather than
/// on the storage thread: a store that would have to do unbounded work for it (SQLite reading
/// a whole session's peer keys) answers [`crate::vault::EngineError::NotInline`] instead, before it changes
/// anything, and the job is queued for the storage thread.
pub fn running_inline() -> bool {
    INLINE.with(std::cell::Cell::get)
}
