//! Connections refused at the handshake because the kernel cannot say who the peer is.
//!
//! A peer reported as the overflow uid or gid ([`Unmapped`]) comes from outside vaultd's user
//! namespace (systemd's `PrivateUsers=`, a container): every such peer shares that one id, so
//! serving it would let any of them open what any other created. The daemon fails closed: one
//! warning names the pid and the likely cause, the client's `hello` is answered
//! `permission_denied` with the reason, and the connection is closed (by
//! [`super::conn::refuse`], within the same bound on refusals in progress as connections over
//! a limit).

use super::transport::Unmapped;

/// Logs the refusal of `who` and returns the message its `hello` is answered with. On
/// Windows: a client whose process token could not be read, or whose user SID maps to no id
/// ([`session_vault_proto::sid`]); the reason was logged when it connected.
#[cfg(windows)]
pub fn unmapped(who: &Unmapped) -> String {
    let pid = who
        .pid
        .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    tracing::warn!(pid = %pid, "refused a pipe client whose identity vaultd cannot read");
    "vaultd cannot tell who you are: your process token could not be read or your user SID \
     has no id (see session_vault_proto::sid); refused"
        .to_owned()
}

/// Logs the refusal of `who` and returns the message its `hello` is answered with.
#[cfg(not(windows))]
pub fn unmapped(who: &Unmapped) -> String {
    let pid = who
        .pid
        .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    tracing::warn!(
        pid = %pid,
        uid = who.uid,
        gid = who.gid,
        "refused a client reported as the overflow uid/gid: its ids are not mapped into \
         vaultd's user namespace (likely systemd's PrivateUsers= or a container); run vaultd \
         where its clients' ids are mapped"
    );
    format!(
        "vaultd cannot tell who you are: the kernel reports your uid/gid as the overflow id \
         {}/{}, because vaultd runs in a user namespace that does not map your ids (e.g. \
         systemd's PrivateUsers=); refused",
        who.uid, who.gid
    )
}
