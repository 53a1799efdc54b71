//! Windows: the security pieces of the named-pipe transport and the data directory, in Win32
//! calls (`windows-sys`).
//!
//! - The pipe is created with a security descriptor whose DACL (protected: nothing is
//!   inherited) admits only vaultd's own user, `SYSTEM`, the Administrators group and the
//!   groups named in `SESSION_VAULT_PIPE_GROUPS` (comma-separated SIDs) — the counterpart of
//!   the Unix socket's mode 0660 and group. `interprocess` creates the first instance with
//!   `FILE_FLAG_FIRST_PIPE_INSTANCE`, so a pipe of that name made by someone else first makes
//!   vaultd refuse to start instead of sharing the name (pipe squatting).
//! - A client's identity comes from the kernel: `GetNamedPipeClientProcessId` (through
//!   `interprocess`) → `OpenProcess` → `OpenProcessToken` → the token's user SID, primary
//!   group and enabled groups, mapped to numeric ids by [`session_vault_proto::sid`]. A client
//!   whose token cannot be read, or whose user SID has no id, is refused.
//! - A process id names the process only while it lives: one that connected and exited at
//!   once could leave its id to another process before vaultd opened it. So once the client
//!   has written its first frame, vaultd also takes the identity from the pipe itself
//!   ([`pipe_client_identity`]: `ImpersonateNamedPipeClient` → `OpenThreadToken` →
//!   `RevertToSelf`, the token the client wrote with) and serves the connection only if both
//!   agree. A client that connects anonymously (`SECURITY_ANONYMOUS`) has no token to read and
//!   is refused.
//! - The data directory is created with a protected DACL granting full control to vaultd's
//!   user only, inherited by the files created in it (the vault, its WAL, the lock file); an
//!   existing one must grant access to nobody but vaultd's user, `SYSTEM` and Administrators
//!   ([`check_private_dir`]).
//!
//! Memory locking uses `VirtualLock` ([`crate::vault::crypto::lock_in_memory`]); there is no
//! per-process crash-dump exclusion on Windows (Windows Error Reporting's settings are
//! machine-wide), see the README's "On Windows".

use std::ffi::c_void;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::path::Path;

use session_vault_proto::sid;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::RevertToSelf;
use windows_sys::Win32::Security::{
    GetTokenInformation, PSID, SECURITY_ATTRIBUTES, TOKEN_GROUPS, TOKEN_INFORMATION_CLASS,
    TOKEN_PRIMARY_GROUP, TOKEN_QUERY, TOKEN_USER, TokenGroups, TokenPrimaryGroup, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::CreateDirectoryW;
use windows_sys::Win32::System::Pipes::ImpersonateNamedPipeClient;
use windows_sys::Win32::System::SystemServices::{SE_GROUP_ENABLED, SE_GROUP_USE_FOR_DENY_ONLY};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentThread, OpenProcess, OpenProcessToken, OpenThreadToken,
    PROCESS_QUERY_LIMITED_INFORMATION,
};

/// Environment variable naming the groups (SIDs, comma-separated) admitted to the pipe
/// besides vaultd's user, `SYSTEM` and Administrators.
pub const PIPE_GROUPS_ENV: &str = "SESSION_VAULT_PIPE_GROUPS";

/// A process's identity as its access token tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user SID, as a string (`S-1-5-…`).
    pub user_sid: String,
    /// The user SID's id (see [`sid`]), `None` where it has none.
    pub uid: Option<u32>,
    /// The primary group's id, `None` where it has none.
    pub gid: Option<u32>,
    /// The ids of the token's enabled groups (deny-only ones left out), where they have one.
    pub groups: Vec<u32>,
}

/// An owned handle, closed on drop.
struct Handle(HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was returned open by the call that made it and is closed once.
        unsafe { CloseHandle(self.0) };
    }
}

/// A UTF-16, NUL-terminated copy of `s`.
fn wide(s: impl AsRef<std::ffi::OsStr>) -> Vec<u16> {
    s.as_ref().encode_wide().chain(Some(0)).collect()
}

/// The identity of the process `pid` (a pipe client's, from `GetNamedPipeClientProcessId`).
pub fn identity_of_pid(pid: u32) -> io::Result<Identity> {
    // SAFETY: OpenProcess takes no pointers; a null return is checked.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        return Err(io::Error::last_os_error());
    }
    let process = Handle(process);
    identity_of_process(process.0)
}

/// vaultd's own identity.
pub fn own_identity() -> io::Result<Identity> {
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing.
    identity_of_process(unsafe { GetCurrentProcess() })
}

fn identity_of_process(process: HANDLE) -> io::Result<Identity> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `token` is a valid out pointer; the handle it receives is closed by `Handle`.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    identity_of_token(&Handle(token))
}

/// The identity of the client of the pipe `pipe` as the pipe itself tells it: the token the
/// client wrote with, read by impersonating it for the length of one `OpenThreadToken` call
/// on this thread. Windows captures that token when the client writes, so this must be
/// called after a frame from the client was read (else `ERROR_CANNOT_IMPERSONATE`).
///
/// Nothing else runs on this thread while it impersonates (no await, no callback between
/// the calls); if `RevertToSelf` ever failed the thread would go on as the client, so the
/// process aborts instead.
pub fn pipe_client_identity(
    pipe: std::os::windows::io::BorrowedHandle<'_>,
) -> io::Result<Identity> {
    use std::os::windows::io::AsRawHandle;
    // SAFETY: the pipe handle is valid for the borrow.
    if unsafe { ImpersonateNamedPipeClient(pipe.as_raw_handle()) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `token` is a valid out pointer; OpenAsSelf = TRUE checks access to the thread
    // as vaultd, not as the client being impersonated.
    let opened = unsafe { OpenThreadToken(GetCurrentThread(), TOKEN_QUERY, 1, &mut token) };
    let open_error = io::Error::last_os_error();
    // SAFETY: takes no arguments; ends the impersonation ImpersonateNamedPipeClient began.
    if unsafe { RevertToSelf() } == 0 {
        tracing::error!(error = %io::Error::last_os_error(), "RevertToSelf failed after reading a pipe client's token; aborting");
        std::process::abort();
    }
    if opened == 0 {
        return Err(open_error);
    }
    identity_of_token(&Handle(token))
}

fn identity_of_token(token: &Handle) -> io::Result<Identity> {
    let user = token_info(token, TokenUser)?;
    // SAFETY: GetTokenInformation(TokenUser) filled the buffer with a TOKEN_USER (and the SID
    // it points to); the buffer is u64-aligned and outlives the reads.
    let user_sid = unsafe { sid_string((*user.as_ptr().cast::<TOKEN_USER>()).User.Sid)? };
    let primary = token_info(token, TokenPrimaryGroup)?;
    // SAFETY: as above, a TOKEN_PRIMARY_GROUP.
    let primary_sid =
        unsafe { sid_string((*primary.as_ptr().cast::<TOKEN_PRIMARY_GROUP>()).PrimaryGroup)? };
    let groups_buf = token_info(token, TokenGroups)?;
    let mut groups = Vec::new();
    // SAFETY: as above, a TOKEN_GROUPS whose `Groups` array holds `GroupCount` entries
    // (declared with length 1, laid out with all of them).
    unsafe {
        let tg = groups_buf.as_ptr().cast::<TOKEN_GROUPS>();
        let count = (*tg).GroupCount as usize;
        let first = std::ptr::addr_of!((*tg).Groups)
            .cast::<windows_sys::Win32::Security::SID_AND_ATTRIBUTES>();
        for i in 0..count {
            let g = &*first.add(i);
            let enabled = g.Attributes & (SE_GROUP_ENABLED as u32) != 0;
            let deny_only = g.Attributes & (SE_GROUP_USE_FOR_DENY_ONLY as u32) != 0;
            if enabled && !deny_only {
                if let Some(id) = sid::id_of(&sid_string(g.Sid)?) {
                    groups.push(id);
                }
            }
        }
    }
    Ok(Identity {
        uid: sid::id_of(&user_sid),
        gid: sid::id_of(&primary_sid),
        user_sid,
        groups,
    })
}

/// One `GetTokenInformation` answer, in a u64-aligned buffer.
fn token_info(token: &Handle, class: TOKEN_INFORMATION_CLASS) -> io::Result<Vec<u64>> {
    let mut needed = 0u32;
    // SAFETY: a size query: no buffer, `needed` receives the size.
    unsafe { GetTokenInformation(token.0, class, std::ptr::null_mut(), 0, &mut needed) };
    if needed == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u64; (needed as usize).div_ceil(8)];
    let len = u32::try_from(buf.len() * 8).map_err(io::Error::other)?;
    // SAFETY: `buf` holds `len` writable bytes.
    let ok = unsafe {
        GetTokenInformation(
            token.0,
            class,
            buf.as_mut_ptr().cast::<c_void>(),
            len,
            &mut needed,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf)
}

/// The string form (`S-1-…`) of a SID.
///
/// # Safety
/// `sid` must point to a valid SID.
unsafe fn sid_string(sid: PSID) -> io::Result<String> {
    let mut out: *mut u16 = std::ptr::null_mut();
    // SAFETY: the caller vouches for `sid`; `out` receives a LocalAlloc'd string freed below.
    if unsafe { ConvertSidToStringSidW(sid, &mut out) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `out` is a NUL-terminated UTF-16 string.
    let s = unsafe {
        let len = (0..).take_while(|&i| *out.add(i) != 0).count();
        String::from_utf16_lossy(std::slice::from_raw_parts(out, len))
    };
    // SAFETY: allocated by ConvertSidToStringSidW with LocalAlloc, freed once.
    unsafe { LocalFree(out.cast()) };
    Ok(s)
}

/// Whether `s` looks like a SID string (`S-1-` and digits), so that it is safe in SDDL.
fn is_sid_string(s: &str) -> bool {
    s.strip_prefix("S-1-")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
}

/// The pipe's security descriptor, in SDDL: full access for vaultd's user, `SYSTEM` and
/// Administrators, read/write for each group of [`PIPE_GROUPS_ENV`]; nothing inherited.
pub fn pipe_sddl(own_sid: &str) -> io::Result<String> {
    let mut sddl = format!("D:P(A;;GA;;;{own_sid})(A;;GA;;;SY)(A;;GA;;;BA)");
    if let Ok(groups) = std::env::var(PIPE_GROUPS_ENV) {
        for g in groups.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            if !is_sid_string(g) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{PIPE_GROUPS_ENV}: {g:?} is not a SID (S-1-…)"),
                ));
            }
            sddl.push_str(&format!("(A;;GRGW;;;{g})"));
        }
    }
    Ok(sddl)
}

/// A security descriptor built from SDDL, freed on drop.
struct Descriptor(*mut c_void);

impl Descriptor {
    fn from_sddl(sddl: &str) -> io::Result<Descriptor> {
        let w = wide(sddl);
        let mut sd: *mut c_void = std::ptr::null_mut();
        // SAFETY: `w` is NUL-terminated; `sd` receives a LocalAlloc'd descriptor.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                w.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Descriptor(sd))
    }
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW, freed once.
        unsafe { LocalFree(self.0) };
    }
}

/// Creates directory `path` (and missing parents) with a protected DACL giving vaultd's
/// user alone full control, inherited by what is created inside. An existing directory is
/// used as it is (its ACL is the owner's business; see the README).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return check_private_dir(path);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let me = own_identity()?;
    let sd = Descriptor::from_sddl(&format!("D:P(A;OICI;FA;;;{})", me.user_sid))?;
    let sa = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.0,
        bInheritHandle: 0,
    };
    let w = wide(path);
    // SAFETY: `w` is NUL-terminated, `sa` and the descriptor it points to outlive the call.
    if unsafe { CreateDirectoryW(w.as_ptr(), &sa) } == 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    Ok(())
}

/// SIDs an existing data directory may grant access to besides vaultd's user: `SYSTEM`,
/// Administrators, and `CREATOR OWNER` (an inheritable entry that becomes the creator of each
/// file, vaultd).
const TRUSTED_SIDS: [&str; 3] = ["S-1-5-18", "S-1-5-32-544", "S-1-3-0"];

/// Checks that an existing data directory is as private as [`create_private_dir`] makes one
/// (the counterpart of the Unix check that it is vaultd's and closed to others): owned by
/// vaultd's user, `SYSTEM` or Administrators, with a DACL whose every allowing entry names
/// vaultd's user or a [`TRUSTED_SIDS`] member. A directory without a DACL (everyone has full
/// access), with an entry for anyone else (`Users`, `Everyone`, another account; inherited
/// from a parent too, since the vault's files would inherit it), or with an entry of a kind
/// vaultd does not check is refused, naming what it found.
pub fn check_private_dir(path: &Path) -> io::Result<()> {
    use windows_sys::Win32::Security::Authorization::{GetNamedSecurityInfoW, SE_FILE_OBJECT};
    use windows_sys::Win32::Security::{
        ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, ACL_SIZE_INFORMATION, AclSizeInformation,
        DACL_SECURITY_INFORMATION, GetAce, GetAclInformation, OWNER_SECURITY_INFORMATION,
        PSECURITY_DESCRIPTOR,
    };
    use windows_sys::Win32::System::SystemServices::{
        ACCESS_ALLOWED_ACE_TYPE, ACCESS_DENIED_ACE_TYPE,
    };

    let me = own_identity()?;
    let refused = |what: String| {
        io::Error::other(format!(
            "it {what}, and vaultd's user is {}: give it a DACL for that user (and SYSTEM, \
             Administrators) only, or name a directory that does not exist yet",
            me.user_sid
        ))
    };
    let w = wide(path);
    let mut owner: PSID = std::ptr::null_mut();
    let mut dacl: *mut ACL = std::ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `w` is NUL-terminated; the out pointers are valid; `owner` and `dacl` point
    // into `sd`, which is freed (LocalFree) below after their last use.
    let rc = unsafe {
        GetNamedSecurityInfoW(
            w.as_ptr(),
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            &mut dacl,
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc as i32));
    }
    let checked = (|| {
        // SAFETY: `owner` is the descriptor's owner SID, valid while `sd` lives.
        let owner_sid = unsafe { sid_string(owner)? };
        if owner_sid != me.user_sid && !TRUSTED_SIDS[..2].contains(&owner_sid.as_str()) {
            return Err(refused(format!("is owned by {owner_sid}")));
        }
        if dacl.is_null() {
            return Err(refused("has no DACL (everyone has full access)".into()));
        }
        let mut info = ACL_SIZE_INFORMATION::default();
        // SAFETY: `dacl` is the descriptor's DACL; `info` is the size the class asks for.
        if unsafe {
            GetAclInformation(
                dacl,
                (&raw mut info).cast(),
                std::mem::size_of::<ACL_SIZE_INFORMATION>() as u32,
                AclSizeInformation,
            )
        } == 0
        {
            return Err(io::Error::last_os_error());
        }
        for i in 0..info.AceCount {
            let mut ace: *mut c_void = std::ptr::null_mut();
            // SAFETY: `i` is below the DACL's entry count; `ace` receives a pointer into it.
            if unsafe { GetAce(dacl, i, &mut ace) } == 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: every entry starts with an ACE_HEADER.
            let kind = u32::from(unsafe { (*ace.cast::<ACE_HEADER>()).AceType });
            match kind {
                ACCESS_DENIED_ACE_TYPE => {}
                ACCESS_ALLOWED_ACE_TYPE => {
                    // SAFETY: an ACCESS_ALLOWED_ACE, whose SID starts at `SidStart`.
                    let sid = unsafe {
                        sid_string(
                            std::ptr::addr_of_mut!((*ace.cast::<ACCESS_ALLOWED_ACE>()).SidStart)
                                .cast(),
                        )?
                    };
                    if sid != me.user_sid && !TRUSTED_SIDS.contains(&sid.as_str()) {
                        return Err(refused(format!("grants access to {sid}")));
                    }
                }
                other => {
                    return Err(refused(format!(
                        "has an access entry of a kind vaultd does not check (type {other})"
                    )));
                }
            }
        }
        Ok(())
    })();
    // SAFETY: `sd` was allocated by GetNamedSecurityInfoW; nothing points into it after this.
    unsafe { LocalFree(sd) };
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_strings_are_checked_before_going_into_sddl() {
        assert!(is_sid_string("S-1-5-32-544"));
        assert!(!is_sid_string("S-1-5-32-544)(A;;GA;;;WD"));
        assert!(!is_sid_string("WD"));
    }
}
