"""The wire: one Unix-socket connection to `vaultd` (proto/PROTOCOL.md), synchronous.

Telethon reads its session synchronously and Pyrogram's accessors are coroutines that do
no I/O of their own, so one blocking connection serves both: a request to a local daemon
takes tens of microseconds. Every read and write has a timeout, so a daemon that hangs is
a `DaemonUnavailable`, never a hung bot.

Writes of the cache class (peers, update state, sent files) may be *posted*: sent without
waiting for the answer, which is read later (at the next call, or when too many are
unanswered). Their errors are raised by the next `call` or `flush`; `SessionLink` keeps the
posted requests until they are answered so that it can send them again after a reconnect.
"""

import os
import select
import socket
import struct
import threading
import time

import msgpack

from . import errors
from .errors import DaemonUnavailable, ProtocolError

PROTOCOL_MAJOR, PROTOCOL_MINOR = 1, 8
DEFAULT_TIMEOUT = 10.0
MAX_FRAME = 256 << 20  # what we accept from the daemon (a big export)
MAX_REQUEST = 1 << 20  # the daemon's default frame limit
MAX_POSTED = 32  # unanswered posted requests before we read some answers
MAX_EVENTS = 64  # events kept in `Connection.events`


class ConnectionLost(DaemonUnavailable):
    """The connection ended (the daemon stopped or closed it); a reconnect may help."""


def default_socket_path():
    """Where the Rust client looks (session_vault_proto::paths::default_socket_path)."""
    path = os.environ.get("SESSION_VAULT_SOCKET")
    if path:
        return path
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    user = os.path.join(runtime, "session-vault", "vault.sock") if runtime else None
    system = "/run/session-vault/vault.sock"
    if user and os.path.exists(user):
        return user
    if os.path.exists(system):
        return system
    return user or system


def variant(value):
    """Splits an enumeration value: "ok" -> ("ok", None), {"peer": {...}} -> ("peer", {...})."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and len(value) == 1:
        ((name, content),) = value.items()
        if isinstance(name, str):
            return name, content
    raise ProtocolError(f"not an enumeration value: {value!r:.200}")


class Connection:
    """One connection, past its handshake. Not shared between threads without `lock`."""

    def __init__(self, path=None, client="session-vault-python", timeout=DEFAULT_TIMEOUT):
        self.path = path or default_socket_path()
        self.timeout = timeout
        self.lock = threading.RLock()
        self.events = []
        self.disconnected_by_admin = False  # the daemon said so (event, protocol 1.4)
        self._next_id = 1
        self._answers = {}  # id -> response, read while waiting for another id
        self._posted = {}  # id -> callback(response) for posted requests
        self._buf = bytearray()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError, socket.timeout, OSError) as e:
            self.sock.close()
            raise DaemonUnavailable(
                f"no Session Vault daemon answers at {self.path}: {e.strerror or e}"
            ) from None
        try:
            name, welcome = variant(
                self.call(
                    {
                        "hello": {
                            "protocol_major": PROTOCOL_MAJOR,
                            "protocol_minor": PROTOCOL_MINOR,
                            "client": client,
                        }
                    }
                )
            )
            if name != "welcome" or not isinstance(welcome, dict):
                raise ProtocolError(f"expected welcome, got {name}")
        except BaseException:
            self.close()
            raise
        self.server = welcome.get("server")
        self.vault_state = welcome.get("vault_state")
        self.server_minor = welcome.get("protocol_minor", 0)

    # ---- frames --------------------------------------------------------------------------

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    @property
    def closed(self):
        return self.sock is None

    def _fail(self, what, lost=True):
        self.close()
        if self.disconnected_by_admin:
            return errors.DisconnectedByAdmin(
                "an admin disconnected this client (vaultctl disconnect)"
            )
        cls = ConnectionLost if lost else DaemonUnavailable
        return cls(f"the connection to {self.path} failed: {what}")

    def _send(self, request):
        if self.sock is None:
            raise ConnectionLost(f"the connection to {self.path} is closed")
        rid = self._next_id
        self._next_id = rid % 0xFFFFFFFF + 1
        payload = msgpack.packb({"id": rid, "request": request})
        try:
            self.sock.sendall(struct.pack(">I", len(payload)) + payload)
        except socket.timeout:
            raise self._fail(f"no progress writing a request for {self.timeout}s", lost=False) from None
        except OSError as e:
            # The daemon closed the connection: what it sent before may say why.
            self._last_words()
            raise self._fail(e.strerror or str(e)) from None
        return rid

    def _last_words(self):
        """After a failed send: reads what the daemon sent before it closed, without waiting,
        to find its `disconnected_by_admin` event (then `_fail` raises DisconnectedByAdmin).
        `_buf` starts at a frame here (frames are read whole); other frames are left."""
        try:
            while len(self._buf) <= MAX_FRAME:
                ready, _, _ = select.select([self.sock], [], [], 0)
                if not ready:
                    break
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self._buf += chunk
        except OSError:
            pass
        at = 0
        while len(self._buf) - at >= 4:
            (length,) = struct.unpack(">I", self._buf[at : at + 4])
            if length == 0 or length > MAX_FRAME or len(self._buf) - at - 4 < length:
                break
            try:
                frame = msgpack.unpackb(bytes(self._buf[at + 4 : at + 4 + length]), strict_map_key=False)
            except Exception:  # msgpack raises several types for bad data
                break
            at += 4 + length
            if (
                isinstance(frame, dict)
                and frame.get("id") == 0
                and frame.get("response") == {"event": "disconnected_by_admin"}
            ):
                self.disconnected_by_admin = True

    def _recv_exact(self, n, deadline):
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail(f"no answer within {self.timeout}s", lost=False)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(max(65536, n - len(self._buf)))
            except socket.timeout:
                raise self._fail(f"no answer within {self.timeout}s", lost=False) from None
            except OSError as e:
                raise self._fail(e.strerror or str(e)) from None
            if not chunk:
                raise self._fail("the daemon closed the connection")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _recv_frame(self, deadline):
        if self.sock is None:
            raise ConnectionLost(f"the connection to {self.path} is closed")
        (length,) = struct.unpack(">I", self._recv_exact(4, deadline))
        if length == 0 or length > MAX_FRAME:
            self.close()
            raise ProtocolError(f"the daemon sent a frame of {length} bytes")
        payload = self._recv_exact(length, deadline)
        try:
            frame = msgpack.unpackb(payload, strict_map_key=False)
        except Exception as e:  # msgpack raises several types for bad data
            self.close()
            raise ProtocolError(f"the daemon sent a malformed frame: {e}") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("id"), int):
            self.close()
            raise ProtocolError(f"the daemon sent a frame without an id: {frame!r:.200}")
        if "response" not in frame:
            self.close()
            raise ProtocolError("the daemon sent a frame without a response")
        return frame["id"], frame["response"]

    def _dispatch(self, rid, response):
        """Files one frame that is not the one being waited for."""
        if rid == 0:
            kind, content = variant(response)
            if kind == "event":
                if content == "disconnected_by_admin":
                    # Final, as the Rust client: the daemon closes next; no reconnect.
                    self.disconnected_by_admin = True
                    self.close()
                    raise errors.DisconnectedByAdmin(
                        "an admin disconnected this client (vaultctl disconnect)"
                    )
                # Kept for inspection, the newest few only (nothing here waits on them).
                if len(self.events) >= MAX_EVENTS:
                    del self.events[0]
                self.events.append(content)
                return None
            if kind == "error":  # a connection-level error: the daemon closes next
                raise errors.from_wire(content)
            raise ProtocolError(f"unexpected unprompted frame {kind}")
        callback = self._posted.pop(rid, None)
        if callback is not None:
            callback(response)
        # Else an answer to no request of ours (calls are answered in `wait`, one at a time
        # under the lock): dropped, as the Rust client does, not kept for ever.
        return None

    def wait(self, rid):
        """The response to `rid`, raising the error it carries."""
        deadline = time.monotonic() + self.timeout
        while rid not in self._answers:
            got, response = self._recv_frame(deadline)
            if got == rid:
                self._answers[rid] = response
                break
            self._dispatch(got, response)
        kind, content = variant(self._answers.pop(rid))
        if kind == "error":
            raise errors.from_wire(content)
        return {kind: content} if content is not None else kind

    # ---- requests ------------------------------------------------------------------------

    def call(self, request):
        """Sends `request` and waits for its response; returns the response value."""
        with self.lock:
            return self.wait(self._send(request))

    def post(self, request, callback):
        """Sends `request` without waiting; `callback(response)` runs when it is answered."""
        with self.lock:
            rid = self._send(request)
            self._posted[rid] = callback
            if len(self._posted) >= MAX_POSTED:
                self.drain(MAX_POSTED // 2)
            return rid

    def poll(self):
        """Reads the answers that have arrived, without waiting for more."""
        with self.lock:
            while self._posted and self.sock is not None:
                if len(self._buf) < 4 or len(self._buf) < 4 + struct.unpack(">I", self._buf[:4])[0]:
                    ready, _, _ = select.select([self.sock], [], [], 0)
                    if not ready:
                        return
                got, response = self._recv_frame(time.monotonic() + self.timeout)
                self._dispatch(got, response)

    def drain(self, keep=0):
        """Reads answers until at most `keep` posted requests are unanswered."""
        with self.lock:
            deadline = time.monotonic() + self.timeout
            while len(self._posted) > keep:
                got, response = self._recv_frame(deadline)
                self._dispatch(got, response)


def unwrap(response, expected):
    """The content of a response named `expected` (raises ProtocolError otherwise)."""
    kind, content = variant(response)
    if kind != expected:
        raise ProtocolError(f"expected a {expected} response, got {kind}")
    return content
