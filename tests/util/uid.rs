//! Running as another uid (`setpriv`), for the tests of the daemon's authorization.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::*;

/// Whether `setpriv` (util-linux) is there to run a command as another uid, and we are root.
pub fn can_switch_uid() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Prefixes `cmd` so that it runs as [`OTHER_UID`] with no supplementary groups.
pub fn as_other_uid(program: &Path) -> Command {
    as_uid(program, OTHER_UID, OTHER_UID, &[])
}

/// Prefixes `cmd` so that it runs as `uid`, primary group `gid` and exactly the supplementary
/// `groups` (none when empty), through `setpriv`, which takes numeric ids without accounts.
pub fn as_uid(program: &Path, uid: u32, gid: u32, groups: &[u32]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()]);
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        c.args(["--groups", &list.join(",")]);
    }
    c.arg(program);
    c
}

/// A path to `program` that [`OTHER_UID`] can execute: the program itself when every
/// directory above it is searchable by others, else a copy in `env`'s temp dir (made 0755).
pub fn executable_by_others(env: &Env, program: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 the temp dir");
    let reachable = program.ancestors().skip(1).all(|dir| {
        dir.as_os_str().is_empty()
            || std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    });
    let runnable =
        std::fs::metadata(program).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
    if reachable && runnable {
        return program.to_owned();
    }
    let copy = env
        .path()
        .join(program.file_name().expect("program has a file name"));
    if !copy.exists() {
        std::fs::copy(program, &copy).expect("copy program for another uid");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .expect("chmod program copy");
    }
    copy
}
