"""Telethon: `VaultSession`, a `telethon.sessions.Session` kept in the vault.

    client = TelegramClient(VaultSession("mybot"), api_id, api_hash)

Semantics are `SQLiteSession`'s (Telethon 1.34 to 1.45), checked by a differential test:

- the session row (`dc_id`, `server_address`, `port`, `auth_key`, `takeout_id`,
  `tmp_auth_key`) is the vault's home DC, its DC option (address and permanent key) and the
  session's extras. As in `SQLiteSession`, `set_dc` keeps the current auth key (Telethon sets
  a new one itself after a DC switch) and the temporary key is stored only with
  ``store_tmp_auth_key_on_disk=True`` (Telethon >= 1.43);
- entities are the vault's cached peers (marked ids, access hashes, lower-case usernames,
  phones, display names; chats with hash 0), replaced row by row as `process_entities` sees
  them (a username Telegram no longer reports is cleared). The self user, which Telethon
  stores as entity 0 whose hash is its id, is the vault's self user;
- update state 0 is the account's (pts, qts, date, seq); other ids are channels, of which the
  vault keeps the pts only: `get_update_state(channel)` answers qts 0, seq 0 and the date
  1970-01-01, which is what Telethon itself writes and reads (it uses the pts);
- the sent-file cache is the vault's.

Everything is loaded at open and served from memory (the session's lease makes this process
its only writer). Changes are written behind: sent at `save()` (which Telethon calls after
every change of DC or key) and `close()`, and at the latest 0.1 s after they were made
(checked at each call); `save()` returns once the daemon has them, the DC and keys on disk.
That is `SQLiteSession`'s durability (its changes wait for `save()`'s commit) or better.

Telethon calls its session synchronously (as it does `SQLiteSession`'s file I/O), so the
waits happen in the calling thread, which is the event loop's: a wait for an admin's unlock
(`wait_for_unlock`) or a reconnect (up to `reconnect_timeout`, 30 s by default) holds up the
bot's other tasks meanwhile. Nothing else in the session waits (it is served from memory and
a local daemon answers in microseconds). Pyrogram's storage is a coroutine API, and
`VaultStorage` waits in a worker thread instead.

Differences from `SQLiteSession`, all documented in the README: a new session reads DC 0
with no address until `set_dc` only in the process that created it (a re-opened empty vault
session reads Telegram's default DC 2 address, which `TelegramClient` would set anyway);
the vault does not keep Telethon's per-entity `date` column, so among entities that share a
username the newest wins within a process and the one written last wins after a re-open;
`clone()` gives a `MemorySession` (Telethon uses it for CDN connections, which must not
write the bot's session); `list_sessions()` and `delete()` are admin requests, and
`delete()` by a non-admin wipes the session's contents instead.
"""

import datetime
import os

from telethon import utils
from telethon.crypto import AuthKey
from telethon.sessions import MemorySession
from telethon.tl import types

from .connection import unwrap
from .errors import PermissionDenied, VaultError
from .link import DEFAULT_RECONNECT_TIMEOUT, SessionLink
from .model import Writer, address_of, empty_extras, empty_state, mark, peer, text, unmark
from .transfer import importer

EPOCH = datetime.datetime.fromtimestamp(0, tz=datetime.timezone.utc)
DOCUMENT, PHOTO = 0, 1


def _file_type(cls):
    if cls == types.InputDocument:
        return DOCUMENT
    if cls == types.InputPhoto:
        return PHOTO
    raise ValueError("The cls must be either InputDocument/InputPhoto")


def _state(pts, qts, ts, seq):
    date = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    return types.updates.State(pts=pts, qts=qts, date=date, seq=seq, unread_count=0)


def _channel_kind(e):
    if isinstance(e, (types.Channel, types.ChannelForbidden)):
        if getattr(e, "gigagroup", False):
            return "gigagroup"
        if getattr(e, "megagroup", False):
            return "megagroup"
        if getattr(e, "broadcast", False):
            return "broadcast"
    return None


class VaultSession(MemorySession):
    """A Telethon session in the vault. `name` is the session's name there (``~/x`` means
    this uid's own namespace); the other options are those of the Rust client's builder."""

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
        store_tmp_auth_key_on_disk=False,
    ):
        super().__init__()
        self.save_entities = True
        self.store_tmp_auth_key_on_disk = store_tmp_auth_key_on_disk
        self._tmp_auth_key = None
        self._link = SessionLink(
            name,
            socket=socket,
            exclusive=exclusive,
            create_if_missing=create_if_missing,
            wait_for_unlock=wait_for_unlock,
            reconnect_timeout=reconnect_timeout,
            timeout=timeout,
            client_name=f"session-vault-python telethon pid {os.getpid()}",
        )
        self._writer = Writer(self._link)
        self._fresh = bool(self._link.opened.get("created"))
        self._clock = 0
        self._load()
        self._link.on_reopen = self._reopened

    @property
    def name(self):
        """The session's full name in the vault."""
        return self._link.name

    # ---- loading -------------------------------------------------------------------------

    def _reopened(self, _opened):
        self._writer.flush_then(self._load)

    def _load(self):
        self._link.flush()  # writes still in flight first: the daemon does not order requests
        data = self._link.export()
        self._home = self._stored_home = data["home_dc"]
        self._dcs = {o["id"]: o for o in data["dc_options"]}
        self._extras = dict(empty_extras(), **(data.get("extras") or {}))
        opt = self._dcs.get(self._home)
        if self._fresh:
            self._dc_id, self._server_address, self._port = 0, None, None
        else:
            self._dc_id = self._home
            self._server_address, self._port = address_of(opt)
        key = opt.get("auth_key") if opt else None
        self._auth_key = AuthKey(data=bytes(key)) if key else None
        self._takeout_id = self._extras.get("takeout_id")
        tmp = self._extras.get("tmp_auth_key")
        if tmp and tmp.get("dc_id") == self._home:
            self._tmp_auth_key = AuthKey(data=bytes(tmp["key"]))
        elif self.store_tmp_auth_key_on_disk:
            self._tmp_auth_key = None
        # else: a temporary key that is not stored lives in this object only (as in
        # SQLiteSession), and survives a reconnect's reload.
        # entities: marked id -> [hash, username, phone, name, date]. The date (Telethon's
        # per-entity update time, which decides between holders of one username) is not in
        # the vault's model: a reload after a reconnect keeps the dates this object knew.
        before = getattr(self, "_rows", None) or {}
        self._rows = {}
        self._seen = {}  # marked id -> (bot, is_self, channel kind) as last processed
        self._wire = {}  # marked id -> the peer as last written (bot, is_self, kind)
        self._usernames, self._phones, self._names = {}, {}, {}
        for p in data["peers"]:
            kind, bare = p["kind"], p["id"]
            h = p.get("access_hash")
            if kind == "chat":
                h = 0
            elif h is None:
                continue  # Telethon keeps no entity without an access hash
            m = mark(kind, bare)
            self._clock += 1
            date = before[m][4] if m in before else self._clock
            self._set_row(
                m,
                [h, (text(p.get("username")) or "").lower() or None, text(p.get("phone")),
                 text(p.get("name")), date],
            )
            self._wire[mark(kind, bare)] = p
        me = data.get("self_user")
        if me:
            self._set_row(0, [me["id"], None, None, None, 0])
        st = data.get("updates_state") or empty_state()
        self._states = {}
        if st["pts"] or st["qts"] or st["date"] or st["seq"]:
            self._states[0] = (st["pts"], st["qts"], st["date"], st["seq"])
        for c in st["channels"]:
            self._states[c["id"]] = (c["pts"], 0, 0, 0)
        self._files = {
            (bytes(f["md5_digest"]), f["file_size"], f["file_type"]): (f["id"], f["hash"])
            for f in data["sent_files"]
        }

    def _index(self, table, value, marked, add):
        if value is None:
            return
        ids = table.get(value)
        if add:
            if ids is None:
                table[value] = ids = set()
            ids.add(marked)
        elif ids is not None:
            ids.discard(marked)
            if not ids:
                del table[value]

    def _set_row(self, marked, row):
        old = self._rows.get(marked)
        if old is not None:
            self._index(self._usernames, old[1], marked, False)
            self._index(self._phones, old[2], marked, False)
            self._index(self._names, old[3], marked, False)
        self._rows[marked] = row
        self._index(self._usernames, row[1], marked, True)
        self._index(self._phones, row[2], marked, True)
        self._index(self._names, row[3], marked, True)

    # ---- the session row -----------------------------------------------------------------

    def _touch(self):
        self._writer.maybe_flush()

    def _put_dc(self):
        """Queues the home DC and its option (address, permanent key)."""
        from .model import with_address

        if not self._dc_id or self._dc_id < 1:
            # No DC yet (a new session before set_dc): the key goes on the vault's home DC,
            # whose address stays as it is.
            opt = dict(self._dcs.get(self._home) or {"id": self._home, "ipv4": None, "ipv6": None})
            opt["auth_key"] = self._auth_key.key if self._auth_key else None
            self._dcs[self._home] = opt
            self._writer.put(("dc", self._home), "set_dc_option", {"option": opt}, durable=True)
            return
        opt = self._dcs.get(self._dc_id) or {"id": self._dc_id, "ipv4": None, "ipv6": None}
        opt = with_address(opt, self._server_address, self._port)
        opt["id"] = self._dc_id
        opt["auth_key"] = self._auth_key.key if self._auth_key else None
        self._dcs[self._dc_id] = opt
        self._home = self._dc_id
        if self._dc_id != self._stored_home:  # one durable write fewer when it is the same
            self._stored_home = self._dc_id
            self._writer.put("home", "set_home_dc", {"dc_id": self._dc_id}, durable=True)
        self._writer.put(("dc", self._dc_id), "set_dc_option", {"option": opt}, durable=True)

    def _put_extras(self):
        tmp = None
        if self.store_tmp_auth_key_on_disk and self._tmp_auth_key and self._dc_id:
            tmp = {"dc_id": self._dc_id, "key": self._tmp_auth_key.key, "expires_at": None}
        self._extras = dict(self._extras, takeout_id=self._takeout_id, tmp_auth_key=tmp)
        self._writer.put("extras", "set_extras", {"extras": self._extras}, durable=True)

    def set_dc(self, dc_id, server_address, port):
        self._fresh = False
        self._dc_id = dc_id or 0
        self._server_address = server_address
        self._port = port
        # As SQLiteSession: the row keeps the current key; what is not stored reads back None.
        if not self._auth_key:
            self._auth_key = None
        if not (self.store_tmp_auth_key_on_disk and self._tmp_auth_key):
            self._tmp_auth_key = None
        self._put_dc()
        if self.store_tmp_auth_key_on_disk:
            self._put_extras()
        self._touch()

    @MemorySession.auth_key.setter
    def auth_key(self, value):
        self._auth_key = value
        self._put_dc()
        self._touch()

    @property
    def tmp_auth_key(self):
        return self._tmp_auth_key

    @tmp_auth_key.setter
    def tmp_auth_key(self, value):
        self._tmp_auth_key = value
        if self.store_tmp_auth_key_on_disk:
            self._put_extras()
        self._touch()

    @MemorySession.takeout_id.setter
    def takeout_id(self, value):
        self._takeout_id = value
        self._put_extras()
        self._touch()

    # ---- update state --------------------------------------------------------------------

    def get_update_state(self, entity_id):
        s = self._states.get(entity_id)
        return _state(*s) if s else None

    def set_update_state(self, entity_id, state):
        ts = int(state.date.timestamp())
        if entity_id == 0:
            self._states[0] = (state.pts, state.qts, ts, state.seq)
            self._writer.put(
                "primary",
                "set_update_state",
                {"change": {"primary": {"pts": state.pts, "date": ts, "seq": state.seq}}},
            )
            self._writer.put(
                "secondary", "set_update_state", {"change": {"secondary": {"qts": state.qts}}}
            )
        else:
            self._states[entity_id] = (state.pts, 0, 0, 0)
            self._writer.put(
                ("channel", entity_id),
                "set_update_state",
                {"change": {"channel": {"id": entity_id, "pts": state.pts}}},
            )
        self._touch()

    def get_update_states(self):
        return [(k, _state(*v)) for k, v in sorted(self._states.items())]

    # ---- entities ------------------------------------------------------------------------

    def _entity_to_row(self, e):
        row = super()._entity_to_row(e)
        if not row:
            return row
        # A flag Telegram left out is False (a TL object built by hand has None there).
        bot = bool(getattr(e, "bot", False)) if isinstance(e, types.User) else None
        is_self = getattr(e, "is_self", None) if isinstance(e, types.User) else None
        return row + ((bot, is_self or None, _channel_kind(e)),)

    def process_entities(self, tlo):
        if not self.save_entities:
            return
        rows = self._entities_to_rows(tlo)
        if not rows:
            return
        self._clock += 1
        now = self._clock
        seen = self._seen
        for marked, h, username, phone, name, extra in rows:
            phone = str(phone) if phone is not None else None
            old = self._rows.get(marked)
            if (
                old is not None
                and old[0] == h
                and old[1] == username
                and old[2] == phone
                and old[3] == name
                and seen.get(marked) == extra
            ):
                old[4] = now  # the common case: an entity seen again, unchanged
                continue
            seen[marked] = extra
            bot, is_self, ckind = extra
            new = [h, username, phone, name, now]
            self._set_row(marked, new)
            if marked == 0:
                if old is None or old[0] != h:
                    if old is not None and old[0] and old[0] > 0:
                        # The daemon takes any peer marked is_self as the self user: unmark
                        # the previous one, so that caching it again does not bring it back.
                        self._writer.put_peer(old[0], peer("user", old[0], is_self=False))
                    self._writer.put_peer(h, peer("user", h, is_self=True))
                continue
            resolved = unmark(marked)
            if resolved is None:
                continue
            kind, bare = resolved
            prev = self._wire.get(marked)
            # Telethon replaces the row: a value no longer reported is cleared (""), unless
            # the vault is known to hold none.
            clear = "" if old is None or prev is None else None
            p = {
                "kind": kind,
                "id": bare,
                "access_hash": h if kind != "chat" else None,
                "bot": bot,
                "is_self": is_self,
                "channel_kind": ckind,
                "username": username if username is not None else (
                    "" if old is not None and old[1] is not None else clear),
                "phone": phone if phone is not None else (
                    "" if old is not None and old[2] is not None else clear),
                "name": name if name is not None else (
                    "" if old is not None and old[3] is not None else clear),
            }
            if prev is None:
                self._wire[marked] = p
            else:
                given = {k: v for k, v in p.items() if v is not None}
                if all(prev.get(k) == v for k, v in given.items()):
                    continue  # the vault holds exactly this already (after a reload)
                prev.update(given)
            self._writer.put_peer(marked, p)
        self._touch()

    def get_entity_rows_by_phone(self, phone):
        ids = self._phones.get(str(phone))
        if ids:
            m = min(ids)
            return m, self._rows[m][0]
        return None

    def get_entity_rows_by_username(self, username):
        ids = self._usernames.get(username)
        if not ids:
            return None
        ranked = sorted(ids, key=lambda m: (self._rows[m][4], m))
        winner = ranked[-1]
        for loser in ranked[:-1]:  # as SQLiteSession: the older holders lose the username
            row = list(self._rows[loser])
            row[1] = None
            self._set_row(loser, row)
            kind, bare = unmark(loser)
            self._writer.put_peer(loser, peer(kind, bare, username=""))
            if loser in self._wire:
                self._wire[loser] = dict(self._wire[loser], username="")
        return winner, self._rows[winner][0]

    def get_entity_rows_by_name(self, name):
        ids = self._names.get(name)
        if ids:
            m = min(ids)
            return m, self._rows[m][0]
        return None

    def get_entity_rows_by_id(self, id, exact=True):
        if exact:
            row = self._rows.get(id)
            return (id, row[0]) if row else None
        for m in (
            utils.get_peer_id(types.PeerChannel(id)),
            utils.get_peer_id(types.PeerChat(id)),
            utils.get_peer_id(types.PeerUser(id)),
        ):
            row = self._rows.get(m)
            if row:
                return m, row[0]
        return None

    def get_input_entity(self, key):
        self._touch()
        return super().get_input_entity(key)

    # ---- files ---------------------------------------------------------------------------

    def cache_file(self, md5_digest, file_size, instance):
        if not isinstance(instance, (types.InputDocument, types.InputPhoto)):
            raise TypeError("Cannot cache %s instance" % type(instance))
        ftype = _file_type(type(instance))
        key = (bytes(md5_digest), file_size, ftype)
        self._files[key] = (instance.id, instance.access_hash)
        self._writer.put(
            ("file",) + key,
            "put_sent_file",
            {
                "file": {
                    "md5_digest": key[0],
                    "file_size": file_size,
                    "file_type": ftype,
                    "id": instance.id,
                    "hash": instance.access_hash,
                }
            },
        )
        self._touch()

    def get_file(self, md5_digest, file_size, cls):
        row = self._files.get((bytes(md5_digest), file_size, _file_type(cls)))
        return cls(*row) if row else None

    # ---- lifetime ------------------------------------------------------------------------

    def save(self):
        """Sends every change and returns once the daemon has them (the DC and keys on disk)."""
        self._writer.flush()

    def close(self):
        """Saves, then closes the connection, which frees the session's lease. Changes not
        stored yet are sent even after a failed reconnect (reconnecting again, within
        `reconnect_timeout`); if the daemon stays away, raises `DaemonUnavailable` saying how
        many changes were not stored (they are kept: calling close() again tries again)."""
        self._link.close(self._writer)

    def clone(self, to_instance=None):
        cloned = to_instance or MemorySession()
        if hasattr(cloned, "save_entities"):
            cloned.save_entities = self.save_entities
        return cloned

    def delete(self):
        """Deletes the session from the vault (an admin request). Without admin rights the
        session's contents are wiped instead (keys, peers, state), and the name stays."""
        try:
            self._writer.durable.clear()
            self._writer.cache.clear()
            self._writer.peers.clear()
            self._link.flush()
            self._link.call(
                "import",
                {
                    "data": {
                        "home_dc": self._home,
                        "dc_options": [dict(o, auth_key=None) for o in self._dcs.values()],
                        "self_user": None,
                        "peers": [],
                        "updates_state": empty_state(),
                        "sent_files": [],
                        "extras": empty_extras(),
                    }
                },
            )
            self._fresh = True
            self._load()
            try:
                self._link.call_plain(
                    {"delete_session": {"name": self._link.name, "force": True}}
                )
                self._link.close()
            except PermissionDenied:
                pass
            return True
        except VaultError:
            return False

    @classmethod
    def list_sessions(cls, socket=None):
        """Names of the vault's sessions (an admin request)."""
        from .connection import Connection

        conn = Connection(socket)
        try:
            listing = unwrap(conn.call("list_sessions"), "sessions")
        finally:
            conn.close()
        return [s["summary"]["name"] for s in listing]

    import_from = importer("telethon")
