"""A session opened in the vault: the handle, its lease, and the reconnect that keeps them.

`SessionLink` is what `VaultSession` (Telethon) and `VaultStorage` (Pyrogram) share. It
opens the session (exclusively by default, like the Rust client: a second holder gets
`SessionBusy` with the first one's pid), sends requests on its handle, and when the
connection is lost (the daemon restarted) connects again, re-opens the session, sends again
the posted writes that were not answered yet, and tells its owner (`on_reopen`) so that it
can reload what it caches. An admin's disconnect (`vaultctl disconnect`) is final instead: the
link raises `DisconnectedByAdmin` and never reconnects. A restarted daemon comes back locked:
with `wait_for_unlock` (seconds) the link waits that long for an admin's unlock, else it
raises `VaultLocked`.

A reconnect tries for `reconnect_timeout` seconds (default 30): to connect, and to open the
session again while its lease is still held (`SessionBusy`: the old connection's lease not
freed yet, or on PostgreSQL a restarted daemon's predecessor's until it expires, 15 s by
default), as the Rust client does; then it raises the last error. The first open raises
`SessionBusy` at once. `close()` ends the session (`close_session`: its lease is free when
close() returns) after sending what is not stored yet, and raises if that fails.
"""

import os
import time

from .connection import (
    DEFAULT_TIMEOUT,
    Connection,
    ConnectionLost,
    unwrap,
)
from .errors import (
    DaemonUnavailable,
    DisconnectedByAdmin,
    SessionBusy,
    StorageFailed,
    VaultError,
    VaultLocked,
)

DEFAULT_RECONNECT_TIMEOUT = 30.0
# A posted write refused with one of these is sent again at the next flush.
RETRYABLE = (VaultLocked, StorageFailed)
POLL = 0.05
PAGED_EXPORT_MINOR = 7  # `export` with `without_peers`
COMPACT_PEERS_MINOR = 8  # a peer of `cache_peers` as the array of its fields
PEER_PAGE = 1000  # the daemon's largest `list_peers` page


class SessionLink:
    def __init__(
        self,
        name,
        socket=None,
        exclusive=True,
        create_if_missing=True,
        wait_for_unlock=None,
        reconnect_timeout=DEFAULT_RECONNECT_TIMEOUT,
        timeout=DEFAULT_TIMEOUT,
        client_name=None,
    ):
        self.name = name
        self.socket = socket
        self.exclusive = exclusive
        self.create_if_missing = create_if_missing
        self.wait_for_unlock = wait_for_unlock
        self.reconnect_timeout = reconnect_timeout
        self.timeout = timeout
        self.client_name = client_name or f"session-vault-python pid {os.getpid()}"
        self.on_reopen = None  # callback(opened) after a reconnect
        self.conn = None
        self.handle = None
        self.opened = None
        self._unacked = {}  # posted key -> (name, fields, keys), until answered
        self._inflight = {}  # writer key -> posted writes carrying it, not answered yet
        self._next_key = 0
        self._deferred = None  # the first error of a posted request, raised at the next call
        # Posted writes the daemon refused, (name, fields, keys) in the order sent: the
        # writer takes them back (`take_refused`) so that they are not lost.
        self._refused = []
        self.reconnects = 0
        self._kicked = False  # an admin disconnected this link: final, no reconnect
        self._connect(first=True)

    # ---- connecting ----------------------------------------------------------------------

    def _connect(self, first):
        deadline_unlock = time.monotonic() + (self.wait_for_unlock or 0)
        deadline_connect = time.monotonic() + (0 if first else self.reconnect_timeout)
        while True:
            try:
                conn = Connection(self.socket, self.client_name, self.timeout)
            except DaemonUnavailable:
                if time.monotonic() >= deadline_connect:
                    raise
                time.sleep(POLL)
                continue
            try:
                opened = unwrap(
                    conn.call(
                        {
                            "open_session": {
                                "name": self.name,
                                "exclusive": self.exclusive,
                                # Only the first open may create: a reconnect must not
                                # bring back a session an admin deleted meanwhile (as the
                                # Rust client, which never creates at a reconnect).
                                "create_if_missing": self.create_if_missing and first,
                            }
                        }
                    ),
                    "opened",
                )
            except VaultLocked:
                conn.close()
                if time.monotonic() >= deadline_unlock:
                    raise
                time.sleep(POLL * 4)
                continue
            except ConnectionLost:
                if time.monotonic() >= deadline_connect:
                    raise
                time.sleep(POLL)
                continue
            except SessionBusy:
                # A reconnect may find the lease still held a moment: our old connection's,
                # not freed yet, or (PostgreSQL) the old daemon's until it expires. The first
                # open raises at once: a second holder is told so.
                conn.close()
                if first or time.monotonic() >= deadline_connect:
                    raise
                time.sleep(POLL * 4)
                continue
            except BaseException:
                conn.close()
                raise
            self.conn, self.opened, self.handle = conn, opened, opened["handle"]
            if opened.get("name"):
                self.name = opened["name"]
            return

    def _reconnect(self):
        if self.conn is not None:
            self._kicked = self._kicked or self.conn.disconnected_by_admin
            self.conn.close()
        self.conn = None
        if self._kicked:
            # Final, as the Rust client's: reconnecting would take the lease back.
            raise DisconnectedByAdmin(
                "an admin disconnected this client (vaultctl disconnect); it does not "
                "reconnect: open the session anew"
            )
        self._connect(first=False)
        self.reconnects += 1
        pending = sorted(self._unacked.items())
        self._unacked.clear()
        for key, (name, fields, keys) in pending:
            self._post(name, fields, keys, key)
        if self.on_reopen is not None:
            self.on_reopen(self.opened)

    def _wait_unlocked(self):
        deadline = time.monotonic() + self.wait_for_unlock
        while time.monotonic() < deadline:
            time.sleep(POLL * 4)
            try:
                status = unwrap(self.conn.call("status"), "status")
            except ConnectionLost:
                self._reconnect()
                return
            if status.get("state") == "unlocked":
                return
        raise VaultLocked(f"the vault stayed locked for {self.wait_for_unlock}s")

    # ---- requests ------------------------------------------------------------------------

    def _raise_deferred(self):
        if self._deferred is not None:
            e, self._deferred = self._deferred, None
            raise e

    def call(self, name, fields=None):
        """Sends a request on the session's handle and returns its response."""
        locked_waits = 0
        while True:
            if self.conn is None:
                self._reconnect()
            try:
                resp = self.conn.call(self._request(name, fields))
            except ConnectionLost:
                self._reconnect()
                continue
            except VaultLocked:
                if self.wait_for_unlock and locked_waits == 0:
                    locked_waits += 1
                    self._wait_unlocked()
                    continue
                raise
            self._raise_deferred()
            return resp

    def export(self):
        """Everything the session holds, peers oldest first (as `export` gives them).

        A daemon of minor 7 or later sends an exclusive holder the peers in pages of at most
        1000 (`export` with `without_peers`, then `list_peers` until its cursor ends), so that
        no frame grows with the session; otherwise one `export` carries them all. Only the
        lease holder writes the session, and its writes are flushed before a load, so the
        pages and the rest agree.
        """
        if not (self.exclusive and self._server_minor() >= PAGED_EXPORT_MINOR):
            return unwrap(self.call("export"), "session_data")
        data = unwrap(self.call("export", {"without_peers": True}), "session_data")
        pages, before = [], None
        while True:
            page = unwrap(
                self.call("list_peers", {"before": before, "limit": PEER_PAGE}), "peer_page"
            )
            pages.append(page["peers"])
            before = page.get("next")
            if before is None:
                break
        data["peers"] = [p for page in reversed(pages) for p in reversed(page)]
        return data

    def _server_minor(self):
        if self.conn is None:
            self._reconnect()
        return self.conn.server_minor

    def call_plain(self, request):
        """A request that names no handle (status, admin requests), on this connection."""
        if self.conn is None:
            self._reconnect()
        try:
            return self.conn.call(request)
        except ConnectionLost:
            self._reconnect()
            return self.conn.call(request)

    def _post(self, name, fields, keys=(), key=None):
        if key is None:  # a new write (a re-sent one keeps its key and its count)
            key = self._next_key
            self._next_key += 1
            for k in keys:
                self._inflight[k] = self._inflight.get(k, 0) + 1
        self._unacked[key] = (name, fields, keys)

        def answered(response, key=key):
            done = self._unacked.pop(key, None)
            if done is not None:
                for k in done[2]:
                    left = self._inflight.pop(k) - 1
                    if left:
                        self._inflight[k] = left
            if isinstance(response, dict) and "error" in response:
                from .errors import from_wire

                error = from_wire(response["error"])
                # Refused for now (the vault locked, a storage error): kept to be sent again.
                # A write refused for itself, or on a handle the daemon ended, is not.
                if done is not None and isinstance(error, RETRYABLE):
                    self._refused.append(done)
                if self._deferred is None:
                    self._deferred = error

        self.conn.post(self._request(name, fields), answered)

    def _request(self, name, fields):
        """The request `name` with `fields` on the session's handle, as the connection's daemon
        reads it best: from minor 8 a `cache_peers` carries each peer as the array of its nine
        fields (PROTOCOL.md section 4), a third of the bytes, packed and decoded faster. Built
        anew for each send, so a request sent again after a reconnect suits the new daemon."""
        req = dict(fields or {}, handle=self.handle)
        if name == "cache_peers" and self.conn.server_minor >= COMPACT_PEERS_MINOR:
            req["peers"] = [_peer_array(p) for p in req["peers"]]
        return {name: req}

    def take_refused(self):
        """The posted writes the daemon refused since the last call, oldest first."""
        refused, self._refused = self._refused, []
        return refused

    def post(self, name, fields, keys=()):
        """A cache-class write sent without waiting for its answer (see the module doc).
        `keys` name what it writes, for `in_flight`."""
        while True:
            if self.conn is None:
                self._reconnect()
            try:
                self._post(name, fields, keys)
                return
            except ConnectionLost:
                self._reconnect()  # re-sends what was unanswered, this one included
                return

    def in_flight(self, keys):
        """Whether a posted write of any of `keys` is still unanswered, after reading the
        answers that have arrived (without waiting for more)."""
        if self._inflight and self.conn is not None:
            try:
                self.conn.poll()
            except ConnectionLost:
                self._reconnect()
        inflight = self._inflight
        return bool(inflight) and any(k in inflight for k in keys)

    def flush(self):
        """Waits until every posted write is answered; raises the first error among them."""
        while True:
            if self.conn is None:
                self._reconnect()
            try:
                self.conn.drain(0)
                break
            except ConnectionLost:
                self._reconnect()
        self._raise_deferred()

    def _holds_unsent(self, writer=None):
        return bool(self._unacked or self._refused or (writer is not None and writer.pending()))

    def not_stored(self, writer=None):
        """How many changes the daemon has not stored: posted writes not answered, refused
        writes not taken back, and with `writer` (a `model.Writer`) the changes it holds; one
        per key (a peer, the update state, a DC option...), counted once."""
        keys = set()
        for key, (_, _, ks) in self._unacked.items():
            keys.update(ks or [("posted", key)])
        for i, (_, _, ks) in enumerate(self._refused):
            keys.update(ks or [("refused", i)])
        if writer is not None:
            keys.update(writer.keys())
        return len(keys)

    def close(self, writer=None):
        """Sends what is not stored yet, then closes the session (`close_session`: the lease
        is free when this returns) and the connection.

        Not stored yet: the posted writes not answered, and with `writer` (the adapter's
        `model.Writer`) its changes and the refused writes it takes back. If the connection
        is gone (a reconnect failed earlier) they are sent after a reconnect, tried for
        `reconnect_timeout`; if that fails too, `DaemonUnavailable` says how many changes
        were not stored, and they stay held (a later close() tries again). Otherwise the
        first error among them is raised, as `flush` does. With nothing to send and no
        connection, nothing happens.
        """
        try:
            if self.conn is None and not self._holds_unsent(writer):
                return
            try:
                if writer is not None:
                    writer.flush()
                else:
                    self.flush()
            except DaemonUnavailable as e:
                n = self.not_stored(writer)
                if not n:
                    raise
                raise DaemonUnavailable(
                    f"{n} change{'s' if n != 1 else ''} to session {self.name!r} not stored "
                    f"(reconnect_timeout {self.reconnect_timeout}s): {e.message}",
                    {"not_stored": n},
                ) from None
        finally:
            if self.conn is not None:
                if not self.conn.closed and self.handle is not None:
                    # The lease is given back now, not when the daemon sees the socket
                    # close a moment later (another process opening it next is not busy).
                    try:
                        self.conn.call({"close_session": {"handle": self.handle}})
                    except VaultError:
                        pass  # the connection ends next anyway, which frees it too
                self.conn.close()
            self.conn = None


def _peer_array(p):
    """A peer (a dict of its fields) as the array of its nine fields, in PROTOCOL.md's order;
    a field it lacks is nil (unknown), as it would be in the map form."""
    g = p.get
    return [
        g("kind"), g("id"), g("access_hash"), g("bot"), g("is_self"),
        g("channel_kind"), g("username"), g("phone"), g("name"),
    ]
