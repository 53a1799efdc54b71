//! Process hardening for the daemon: no core dumps, no ptrace by same-uid processes.
//!
//! `PR_SET_DUMPABLE 0` keeps keys out of core files and stops other processes of the same
//! uid from attaching a debugger or reading `/proc/PID/mem`; `RLIMIT_CORE 0` backs it up.
//! Both are best effort: a failure is logged, not fatal. Windows has no per-process
//! counterpart (Windows Error Reporting's dump settings are machine-wide): nothing is done
//! there, as README's "On Windows" says.

/// Turns core dumps off for this process.
pub fn disable_core_dumps() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes no pointers and only changes this
        // process's dumpable flag.
        let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot clear the dumpable flag");
        }
    }
    #[cfg(unix)]
    {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the rlimit struct we pass by reference, nothing else.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot set RLIMIT_CORE to 0");
        }
    }
}

/// Whether this process is currently dumpable (for tests and `status`).
pub fn is_dumpable() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_GET_DUMPABLE) takes no pointers.
        unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}
