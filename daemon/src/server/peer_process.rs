//! What the kernel tells about a connecting process beyond its credentials: its executable
//! and its systemd unit, read once when it connects, for the audit log ([`super::cmd::audit`]).
//!
//! Both come from `/proc/PID` (Linux): the executable is the `exe` link's target, the unit
//! the deepest `*.service` or `*.scope` component of the process's cgroup path
//! (`/proc/PID/cgroup`, the unified hierarchy's line, else systemd's named one). Reading
//! them can fail (another uid's process when the daemon is not root, a process already
//! gone, another OS): the executable is then `unknown` and the unit absent. The strings are
//! the kernel's, but a process chooses its own path and a unit's name is chosen by whoever
//! started it: they are escaped wherever they are shown.

/// A process's executable and systemd unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessIdent {
    /// `/proc/PID/exe`'s target, or `unknown`.
    pub exe: String,
    /// The systemd unit, where the process is in one.
    pub unit: Option<String>,
}

impl ProcessIdent {
    /// What an unknown process is recorded as.
    pub fn unknown() -> ProcessIdent {
        ProcessIdent {
            exe: "unknown".into(),
            unit: None,
        }
    }

    /// Reads process `pid`'s executable and unit (cheap: two reads of `/proc`).
    pub fn of(pid: Option<u32>) -> ProcessIdent {
        let Some(pid) = pid.filter(|&p| p > 0) else {
            return ProcessIdent::unknown();
        };
        let base = std::path::PathBuf::from(format!("/proc/{pid}"));
        let exe = std::fs::read_link(base.join("exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let unit = std::fs::read_to_string(base.join("cgroup"))
            .ok()
            .and_then(|text| unit_of_cgroup(&text));
        ProcessIdent { exe, unit }
    }
}

/// The systemd unit of a `/proc/PID/cgroup` text: the deepest `.service` or `.scope`
/// component of the unified hierarchy's path (`0::/…`), else of systemd's named hierarchy
/// (`N:name=systemd:/…`).
pub fn unit_of_cgroup(text: &str) -> Option<String> {
    let path_of = |want: &dyn Fn(&str, &str) -> bool| {
        text.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            want(id, controllers).then_some(path)
        })
    };
    let path = path_of(&|id, c| id == "0" && c.is_empty())
        .or_else(|| path_of(&|_, c| c == "name=systemd"))?;
    path.rsplit('/')
        .find(|c| c.len() > 8 && (c.ends_with(".service") || c.ends_with(".scope")))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_service_or_scope_is_the_unit() {
        assert_eq!(
            unit_of_cgroup("0::/system.slice/session-vault.service\n").as_deref(),
            Some("session-vault.service")
        );
        assert_eq!(
            unit_of_cgroup(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/bot.service\n"
            )
            .as_deref(),
            Some("bot.service")
        );
        assert_eq!(
            unit_of_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(
            unit_of_cgroup("12:cpu:/x\n1:name=systemd:/system.slice/cron.service\n").as_deref(),
            Some("cron.service")
        );
        assert_eq!(unit_of_cgroup("0::/\n"), None);
        assert_eq!(unit_of_cgroup("garbage"), None);
    }

    #[test]
    fn this_process_has_an_executable() {
        let me = ProcessIdent::of(Some(std::process::id()));
        if cfg!(target_os = "linux") {
            assert_ne!(me.exe, "unknown");
        }
        assert_eq!(ProcessIdent::of(None), ProcessIdent::unknown());
    }
}
