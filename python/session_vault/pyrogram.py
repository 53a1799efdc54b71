"""Pyrogram: `VaultStorage`, a `pyrogram.storage.Storage` kept in the vault (Pyrogram 2.0.106).

    client = Client("mybot", api_id, api_hash, bot_token=...)
    client.storage = VaultStorage("mybot")          # before start()

Semantics are `FileStorage`'s, checked by a differential test:

- `dc_id` is the vault's home DC and `auth_key` that DC's permanent key (a new `dc_id` keeps
  the current key, as Pyrogram's single `sessions` row does); `api_id` and `test_mode` are
  the session's extras; `user_id` and `is_bot` its self user;
- peers are the vault's cached peers: `update_peers` replaces each row (a username no longer
  given is cleared), `get_peer_by_id` / `_by_username` / `_by_phone_number` return the
  `InputPeer*` or raise `KeyError` with Pyrogram's messages, usernames expire after 8 hours
  as in Pyrogram (counted from when this process last saw the row, or opened the session).

`None` is a real value: a session this process created reads `None` for `test_mode`,
`auth_key`, `user_id`, `is_bot` and `api_id`, as a new `FileStorage` does, so Pyrogram goes
through its first-start path. The vault's model has no place for a few of Pyrogram's values,
which are then kept for the life of the storage object only: `date` (Pyrogram's last-save
time; a re-opened session reads 0), `test_mode` set back to `None` (stored as False), and
`user_id` / `is_bot` set back to `None` after a login (the vault keeps the old self user).

Everything is loaded at `open()` and served from memory (the lease makes this process the
session's only writer); changes are sent at `save()` / `close()` and at the latest 0.1 s
after they were made; `save()` returns once the daemon has them.

The event loop is never blocked by a wait: what may wait for the daemon (`open`, `save`,
`close`, `delete`, `import_from`, and the timed flush when it is due) runs in a worker thread
(the loop's default executor) while the calling coroutine awaits it, so the bot's other tasks
keep running through a wait for an admin's unlock (`wait_for_unlock`) or a reconnect (up to
`reconnect_timeout`). Such calls run one at a time (an `asyncio.Lock`), so the connection is
never used from two threads at once, and any call made meanwhile waits for the one in
progress (it would otherwise read peers half reloaded by a reconnect). What is served from
memory runs on the loop itself: no thread, and no lock taken when no call is in progress.
(Telethon calls its session synchronously, so `VaultSession` waits in the calling thread:
see its module doc.)
"""

import asyncio
import functools
import os
import time

from pyrogram import raw, utils
from pyrogram.storage import Storage

from .errors import PermissionDenied, VaultError
from .link import DEFAULT_RECONNECT_TIMEOUT, SessionLink
from .model import Writer, empty_extras, empty_state, mark, peer, text, unmark
from .transfer import importer

USERNAME_TTL = 8 * 60 * 60
_UNSET = object


def peer_from_row(row):
    """A vault Peer from Pyrogram's (id, access_hash, type, username, phone_number)."""
    marked, access_hash, ptype, username, phone = row
    r = unmark(marked)
    if r is None:
        return None
    kind, bare = r
    fields = {
        "access_hash": access_hash if kind != "chat" else None,
        "username": username or None,
        "phone": str(phone) if phone else None,
    }
    if kind == "user":
        fields["bot"] = ptype == "bot"
    elif kind == "channel":
        fields["channel_kind"] = "broadcast" if ptype == "channel" else "megagroup"
    return peer(kind, bare, **fields)


def _ptype(p):
    if p["kind"] == "user":
        return "bot" if p.get("bot") else "user"
    if p["kind"] == "chat":
        return "group"
    return "channel" if p.get("channel_kind") in (None, "broadcast") else "supergroup"


def _input_peer(peer_id, access_hash, peer_type):
    if peer_type in ("user", "bot"):
        return raw.types.InputPeerUser(user_id=peer_id, access_hash=access_hash)
    if peer_type == "group":
        return raw.types.InputPeerChat(chat_id=-peer_id)
    if peer_type in ("channel", "supergroup"):
        return raw.types.InputPeerChannel(
            channel_id=utils.get_channel_id(peer_id), access_hash=access_hash
        )
    raise ValueError(f"Invalid peer type: {peer_type}")


class VaultStorage(Storage):
    """A Pyrogram storage in the vault. `name` is the session's name there (``~/x``: this
    uid's namespace); the options are those of the Rust client's builder."""

    def __init__(
        self,
        name,
        *,
        socket=None,
        exclusive=True,
        create_if_missing=True,
        wait_for_unlock=None,
        reconnect_timeout=DEFAULT_RECONNECT_TIMEOUT,
        timeout=10.0,
    ):
        super().__init__(name)
        self._options = dict(
            socket=socket,
            exclusive=exclusive,
            create_if_missing=create_if_missing,
            wait_for_unlock=wait_for_unlock,
            reconnect_timeout=reconnect_timeout,
            timeout=timeout,
        )
        self._link = None
        self._lock = None  # one call at a time (created on the loop that uses it)
        self._lock_loop = None
        self._running = None  # a worker-thread call whose caller was cancelled, still running

    # ---- one call at a time, waits off the loop ------------------------------------------

    def _turn(self):
        """`async with self._turn():` this storage's calls run one at a time."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop, self._running = asyncio.Lock(), loop, None
        return _Turn(self)

    async def _off_loop(self, fn, *args):
        """Runs `fn(*args)`, which may wait for the daemon, in a worker thread (the caller
        holds the turn). Cancelled, the caller returns at once but the call runs to its end,
        and the next call waits for it."""
        fut = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            self._running = fut
            raise

    async def _run(self, fn, *args):
        """`fn(*args)` in its turn, in a worker thread."""
        async with self._turn():
            return await self._off_loop(fn, *args)

    async def _flush_due(self):
        """The timed flush, when it is due (in the caller's turn)."""
        if self._writer.due():
            await self._off_loop(self._writer.flush, False)

    def _busy(self):
        """Whether a call of this storage is in progress (then its state may be half
        reloaded, and its connection in use): the others wait for their turn."""
        lock = self._lock
        return lock is not None and (lock.locked() or self._running is not None)

    async def _settle(self):
        """Waits for the call in progress, then runs the timed flush if due. Returning, no
        call is in progress and nothing else runs on the loop until the caller awaits: the
        memory-only accessors need no lock of their own (the fast path takes none)."""
        async with self._turn():
            await self._flush_due()

    # ---- lifetime ------------------------------------------------------------------------

    async def open(self):
        await self._run(self._open)

    def _open(self):
        self._forget()
        self._link = SessionLink(
            self.name,
            client_name=f"session-vault-python pyrogram pid {os.getpid()}",
            **self._options,
        )
        self._writer = Writer(self._link)
        fresh = bool(self._link.opened.get("created"))
        self._date = 0
        self._test_mode = None if fresh else _UNSET
        self._load()
        if fresh:
            self._user_id = self._is_bot = None
        self._link.on_reopen = self._reopened

    def _forget(self):
        """Drops what this object holds beyond the vault (after an import replaced it all)."""
        for attr in ("_user_id", "_is_bot", "_rows"):
            self.__dict__.pop(attr, None)
        self._test_mode = _UNSET

    def _reopened(self, _opened):
        self._writer.flush_then(self._load)

    def _load(self):
        self._link.flush()  # writes still in flight first: the daemon does not order requests
        data = self._link.export()
        self._dc = self._stored_home = data["home_dc"]
        self._dcs = {o["id"]: o for o in data["dc_options"]}
        self._extras = dict(empty_extras(), **(data.get("extras") or {}))
        opt = self._dcs.get(self._dc)
        self._key = bytes(opt["auth_key"]) if opt and opt.get("auth_key") else None
        me = data.get("self_user")
        if not hasattr(self, "_user_id"):
            self._user_id = me["id"] if me else None
            self._is_bot = me["bot"] if me else None
        # else (a reload after a reconnect): this object is the session's only writer, and
        # keeps the user_id / is_bot it holds, some of which the vault cannot (None, or
        # is_bot without a user_id).
        # When this object last saw each row (Pyrogram's last_update_on) is not in the vault's
        # model: a reload after a reconnect keeps what it knew, a first load says "now".
        before = getattr(self, "_rows", {})
        self._rows = {}  # marked id -> [access_hash, type, username, phone, seen_at, order]
        self._wire = {}
        self._usernames, self._phones = {}, {}
        now = time.time()
        for i, p in enumerate(data["peers"]):
            m = mark(p["kind"], p["id"])
            h = p.get("access_hash")
            if p["kind"] == "chat":
                h = 0
            elif h is None:
                continue  # e.g. the self user's entry: Pyrogram keeps no peer without a hash
            seen = before[m][4] if m in before else now
            self._set_row(m, [h, _ptype(p), text(p.get("username")), text(p.get("phone")), seen, i])
            self._wire[m] = p
        self._order = len(data["peers"])

    def _set_row(self, m, row):
        old = self._rows.get(m)
        for table, i in ((self._usernames, 2), (self._phones, 3)):
            if old is not None and old[i] is not None:
                ids = table.get(old[i])
                if ids is not None:
                    ids.discard(m)
                    if not ids:
                        del table[old[i]]
            if row[i] is not None:
                table.setdefault(row[i], set()).add(m)
        self._rows[m] = row

    async def save(self):
        await self.date(int(time.time()))
        await self._run(self._writer.flush)

    async def close(self):
        """Saves, then closes the connection (which frees the lease). Changes not stored yet
        are sent even after a failed reconnect (reconnecting again, within
        `reconnect_timeout`); if the daemon stays away, raises `DaemonUnavailable` saying how
        many changes were not stored (they are kept: calling close() again tries again)."""
        if self._link is None:
            return
        await self._run(self._link.close, self._writer)

    async def delete(self):
        """Deletes the session (an admin request); a non-admin's session is wiped instead."""
        await self._run(self._delete)

    def _delete(self):
        try:
            self._writer.durable.clear()
            self._writer.cache.clear()
            self._writer.peers.clear()
            self._link.flush()
            self._link.call(
                "import",
                {
                    "data": {
                        "home_dc": self._dc,
                        "dc_options": [dict(o, auth_key=None) for o in self._dcs.values()],
                        "self_user": None,
                        "peers": [],
                        "updates_state": empty_state(),
                        "sent_files": [],
                        "extras": empty_extras(),
                    }
                },
            )
            self._forget()
            self._load()
            try:
                self._link.call_plain({"delete_session": {"name": self._link.name, "force": True}})
                self._link.close()
            except PermissionDenied:
                pass
        except VaultError:
            raise

    # ---- peers ---------------------------------------------------------------------------

    async def update_peers(self, peers):
        if self._busy():
            await self._settle()
        self._update_peers(peers)
        if self._writer.due():
            await self._settle()

    def _update_peers(self, peers):
        now = time.time()
        for row in peers:
            marked, access_hash, ptype, username, phone = row
            p = peer_from_row(row)
            if p is None:
                continue
            old = self._rows.get(marked)
            self._order += 1
            new = [access_hash, ptype, username, phone, now, self._order]
            self._set_row(marked, new)
            if old is not None and old[:4] == new[:4]:
                continue
            # Pyrogram replaces the row: a username or phone no longer given is cleared ("").
            for key, i in (("username", 2), ("phone", 3)):
                if p[key] is None and (old is None or old[i] is not None):
                    p[key] = ""
            self._writer.put_peer(marked, p)

    async def get_peer_by_id(self, peer_id):
        if self._busy() or self._writer.due():
            await self._settle()
        r = self._rows.get(peer_id)
        if r is None:
            raise KeyError(f"ID not found: {peer_id}")
        return _input_peer(peer_id, r[0], r[1])

    async def get_peer_by_username(self, username):
        if self._busy() or self._writer.due():
            await self._settle()
        ids = self._usernames.get(username)
        if not ids:
            raise KeyError(f"Username not found: {username}")
        # FileStorage: ORDER BY last_update_on DESC (seconds), ties to the lowest id.
        m = max(ids, key=lambda i: (int(self._rows[i][4]), -i))
        r = self._rows[m]
        if abs(time.time() - r[4]) > USERNAME_TTL:
            raise KeyError(f"Username expired: {username}")
        return _input_peer(m, r[0], r[1])

    async def get_peer_by_phone_number(self, phone_number):
        if self._busy() or self._writer.due():
            await self._settle()
        ids = self._phones.get(phone_number)
        if not ids:
            raise KeyError(f"Phone number not found: {phone_number}")
        m = min(ids)  # FileStorage's index order
        r = self._rows[m]
        return _input_peer(m, r[0], r[1])

    # ---- the session row -----------------------------------------------------------------

    def _put_dc(self):
        opt = self._dcs.get(self._dc) or {"id": self._dc, "ipv4": None, "ipv6": None}
        opt = dict(opt, id=self._dc, auth_key=self._key)
        self._dcs[self._dc] = opt
        if self._dc != self._stored_home:  # one durable write fewer when it is the same
            self._stored_home = self._dc
            self._writer.put("home", "set_home_dc", {"dc_id": self._dc}, durable=True)
        self._writer.put(("dc", self._dc), "set_dc_option", {"option": opt}, durable=True)

    def _put_extras(self):
        self._writer.put("extras", "set_extras", {"extras": self._extras}, durable=True)

    def _put_self(self):
        if self._user_id is None:
            return
        bot = None if self._is_bot is None else bool(self._is_bot)
        self._writer.put_peer(("self", self._user_id), peer("user", self._user_id, is_self=True, bot=bot))

    async def dc_id(self, value=_UNSET):
        if self._busy():
            await self._settle()
        if value is _UNSET:
            return self._dc
        self._dc = value
        self._put_dc()
        if self._writer.due():
            await self._settle()

    async def api_id(self, value=_UNSET):
        if self._busy():
            await self._settle()
        if value is _UNSET:
            return self._extras.get("api_id")
        self._extras = dict(self._extras, api_id=value)
        self._put_extras()
        if self._writer.due():
            await self._settle()

    async def test_mode(self, value=_UNSET):
        if self._busy():
            await self._settle()
        if value is _UNSET:
            if self._test_mode is not _UNSET:
                return self._test_mode
            return bool(self._extras.get("test_mode"))
        self._test_mode = value if value is None else _UNSET
        self._extras = dict(self._extras, test_mode=bool(value))
        self._put_extras()
        if self._writer.due():
            await self._settle()

    async def auth_key(self, value=_UNSET):
        if self._busy():
            await self._settle()
        if value is _UNSET:
            return self._key
        self._key = bytes(value) if value is not None else None
        self._put_dc()
        if self._writer.due():
            await self._settle()

    async def date(self, value=_UNSET):
        if self._busy():
            await self._settle()
        if value is _UNSET:
            return self._date
        self._date = value

    async def user_id(self, value=_UNSET):
        if self._busy():
            await self._settle()
        if value is _UNSET:
            return self._user_id
        old, self._user_id = self._user_id, value
        if old is not None and old != value:
            # The daemon takes any peer marked is_self as the self user: unmark the old one.
            self._writer.put_peer(("self", old), peer("user", old, is_self=False))
        self._put_self()
        if self._writer.due():
            await self._settle()

    async def is_bot(self, value=_UNSET):
        if self._busy():
            await self._settle()
        if value is _UNSET:
            return self._is_bot
        self._is_bot = value
        self._put_self()
        if self._writer.due():
            await self._settle()

    import_from = importer("pyrogram")


class _Turn:
    """The storage's lock, held for one call; first waits for a worker-thread call whose
    caller was cancelled (it still uses the connection)."""

    __slots__ = ("storage", "lock")

    def __init__(self, storage):
        self.storage = storage
        self.lock = storage._lock

    async def __aenter__(self):
        await self.lock.acquire()
        try:
            running = self.storage._running
            if running is not None:
                await asyncio.wait([running])
                self.storage._running = None
                if not running.cancelled():
                    running.exception()  # its caller is gone: read, so that it is not logged
        except BaseException:
            self.lock.release()
            raise

    async def __aexit__(self, *exc):
        self.lock.release()
