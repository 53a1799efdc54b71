"""Session Vault for Python: Telethon and Pyrogram sessions kept encrypted in `vaultd`.

- `session_vault.telethon.VaultSession`: a `telethon.sessions.Session`;
- `session_vault.pyrogram.VaultStorage`: a `pyrogram.storage.Storage`;
- `session_vault.connection.Connection`: the protocol itself (proto/PROTOCOL.md);
- the exceptions, one per error code (`VaultLocked`, `SessionBusy`, ...).

Only `msgpack` is needed at run time; the adapters import their library when used.
"""

from .connection import Connection, ConnectionLost, default_socket_path
from .errors import (
    AlreadyInitialized,
    BadPassphrase,
    Corrupt,
    DaemonUnavailable,
    DisconnectedByAdmin,
    FrameTooLarge,
    InternalError,
    InvalidRequest,
    NameTaken,
    NoSuchSession,
    PermissionDenied,
    ProtocolError,
    ProtocolMismatch,
    SessionBusy,
    ShuttingDown,
    StorageFailed,
    Unsupported,
    VaultError,
    VaultLocked,
    VaultUninitialized,
    WeakPassphrase,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyInitialized",
    "BadPassphrase",
    "Connection",
    "ConnectionLost",
    "Corrupt",
    "DaemonUnavailable",
    "DisconnectedByAdmin",
    "FrameTooLarge",
    "InternalError",
    "InvalidRequest",
    "NameTaken",
    "NoSuchSession",
    "PermissionDenied",
    "ProtocolError",
    "ProtocolMismatch",
    "SessionBusy",
    "ShuttingDown",
    "StorageFailed",
    "Unsupported",
    "VaultError",
    "VaultLocked",
    "VaultUninitialized",
    "WeakPassphrase",
    "default_socket_path",
]
