"""Exceptions: one class per protocol error code (PROTOCOL.md section 11), plus the client's own.

Every exception the package raises is a `VaultError`. `code` is the wire error code (or a
client-side name such as ``"daemon_unavailable"``), `message` the daemon's text, `details`
the code's fields, if any.
"""


class VaultError(Exception):
    """Base class: an error from the daemon or from talking to it."""

    code = "vault_error"

    def __init__(self, message, details=None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class DaemonUnavailable(VaultError):
    """No daemon answers at the socket, the connection broke, or a call timed out."""

    code = "daemon_unavailable"


class ProtocolError(VaultError):
    """The daemon sent something this client cannot read (a malformed or unexpected frame)."""

    code = "protocol_error"


class VaultLocked(VaultError):
    """The vault is locked: an admin must run `vaultctl unlock`."""

    code = "locked"


class VaultUninitialized(VaultError):
    """The vault has no passphrase yet: an admin must run `vaultctl init`."""

    code = "uninitialized"


class AlreadyInitialized(VaultError):
    code = "already_initialized"


class NoSuchSession(VaultError):
    """No session by that name that this uid may use (or the handle was ended)."""

    code = "no_such_session"


class NameTaken(VaultError):
    code = "name_taken"


class SessionBusy(VaultError):
    """Another process holds the session's lease; `holder_pid` is its pid where known."""

    code = "session_busy"

    @property
    def holder_pid(self):
        return self.details.get("holder_pid")


class PermissionDenied(VaultError):
    """This uid may not do that (an admin request, another uid's session, a limit)."""

    code = "permission_denied"


class DisconnectedByAdmin(PermissionDenied):
    """An admin ended this client's connection (`vaultctl disconnect`; the daemon's
    `disconnected_by_admin` event, protocol 1.4). Final: the session does not reconnect."""

    code = "permission_denied"


class BadPassphrase(VaultError):
    code = "bad_passphrase"

    @property
    def retry_after_ms(self):
        return self.details.get("retry_after_ms")


class WeakPassphrase(VaultError):
    code = "weak_passphrase"


class InvalidRequest(VaultError):
    code = "invalid_request"


class FrameTooLarge(VaultError):
    code = "frame_too_large"


class ProtocolMismatch(VaultError):
    code = "protocol_mismatch"


class Corrupt(VaultError):
    """Stored data failed authentication (tampered with or damaged)."""

    code = "corrupt"


class StorageFailed(VaultError):
    """The daemon's storage failed (disk full, I/O error); the write was not made."""

    code = "storage"


class Unsupported(VaultError):
    code = "unsupported"


class ShuttingDown(VaultError):
    code = "shutting_down"


class InternalError(VaultError):
    code = "internal"


ERRORS = {
    cls.code: cls
    for cls in (
        VaultLocked,
        VaultUninitialized,
        AlreadyInitialized,
        NoSuchSession,
        NameTaken,
        SessionBusy,
        PermissionDenied,
        BadPassphrase,
        WeakPassphrase,
        InvalidRequest,
        FrameTooLarge,
        ProtocolMismatch,
        Corrupt,
        StorageFailed,
        Unsupported,
        ShuttingDown,
        InternalError,
    )
}


def from_wire(error):
    """The exception for a `WireError` map; an unknown code is a plain `VaultError`."""
    if not isinstance(error, dict) or "code" not in error:
        return ProtocolError(f"malformed error response: {error!r}")
    code = error["code"]
    details = None
    if isinstance(code, dict) and len(code) == 1:
        ((code, details),) = code.items()
    message = str(error.get("message", ""))
    cls = ERRORS.get(code)
    if cls is None:
        exc = VaultError(f"{code}: {message}", details if isinstance(details, dict) else None)
        exc.code = str(code)
        return exc
    return cls(message, details if isinstance(details, dict) else None)
