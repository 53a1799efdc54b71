"""Moving in: a Telethon or Pyrogram session, read through its library, into the vault.

`VaultSession.import_from(src)` / `await VaultStorage.import_from(src)`: called on the
class, it opens (creating) the vault session named after the source (or `name=`), replaces
its contents with the source's in one durable transaction and returns it open; called on an
open instance, it replaces that session's contents. (`vaultctl import` does the same from the
command line, reading the files itself.)
"""

import functools
import inspect
import os

from .model import (
    PEERS_PER_REQUEST,
    empty_extras,
    empty_state,
    peer,
    unmark,
    with_address,
)


class importer:
    """`import_from` that works on the class (open + import) and on an instance (import)."""

    def __init__(self, kind):
        self.kind = kind

    def __get__(self, obj, cls):
        if self.kind == "telethon":
            if obj is None:
                return functools.partial(_telethon_class_import, cls)
            return functools.partial(_telethon_import, obj)
        if obj is None:
            return functools.partial(_pyrogram_class_import, cls)
        return functools.partial(_pyrogram_import, obj)


def _replace(link, dcs, data):
    """Sends `data` as the session's whole contents (peers beyond one frame in batches)."""
    by_id = {o["id"]: o for o in dcs}
    home = by_id.get(data["home_dc"]) or {"id": data["home_dc"], "ipv4": None, "ipv6": None}
    for o in data.pop("_home_option", []):
        home = dict(home, **o)
    by_id[data["home_dc"]] = home
    data["dc_options"] = [
        dict(o, auth_key=o.get("auth_key") if o["id"] == data["home_dc"] else None)
        for _, o in sorted(by_id.items())
    ]
    peers = data["peers"]
    data["peers"] = peers[:PEERS_PER_REQUEST]
    link.call("import", {"data": data})
    for i in range(PEERS_PER_REQUEST, len(peers), PEERS_PER_REQUEST):
        link.call("cache_peers", {"peers": peers[i : i + PEERS_PER_REQUEST]})


def _row_peer(marked, h, username, phone, name):
    r = unmark(marked)
    if r is None:
        return None
    kind, bare = r
    return peer(
        kind,
        bare,
        access_hash=h if kind != "chat" else None,
        username=(username or None) and str(username).lower(),
        phone=str(phone) if phone not in (None, "") else None,
        name=name or None,
    )


def telethon_data(src):
    """The vault's SessionData of a Telethon SQLiteSession, MemorySession or StringSession."""
    rows, files = [], []
    conn = getattr(src, "_conn", None) if hasattr(src, "_cursor") else None
    if hasattr(src, "_cursor"):
        c = src._cursor()
        try:
            rows = c.execute("select id, hash, username, phone, name from entities").fetchall()
            files = c.execute("select md5_digest, file_size, type, id, hash from sent_files").fetchall()
        finally:
            c.close()
    else:
        rows = [tuple(r[:5]) for r in getattr(src, "_entities", ())]
        files = [
            (k[0], k[1], k[2].value, v[0], v[1]) for k, v in getattr(src, "_files", {}).items()
        ]
    del conn
    self_user, peers = None, []
    for marked, h, username, phone, name in rows:
        if marked == 0:
            self_user = {"id": h, "bot": False}
            continue
        p = _row_peer(marked, h, username, phone, name)
        if p:
            peers.append(p)
    if self_user:
        for p in peers:
            if p["kind"] == "user" and p["id"] == self_user["id"]:
                p["is_self"] = True
    state = empty_state()
    for entity_id, s in src.get_update_states() or ():
        if entity_id == 0:
            state.update(pts=s.pts, qts=s.qts, date=int(s.date.timestamp()), seq=s.seq)
        else:
            state["channels"].append({"id": entity_id, "pts": s.pts})
    extras = empty_extras()
    extras["takeout_id"] = src.takeout_id
    tmp = getattr(src, "tmp_auth_key", None)
    if tmp and src.dc_id:
        extras["tmp_auth_key"] = {"dc_id": src.dc_id, "key": tmp.key, "expires_at": None}
    home = with_address({"id": src.dc_id, "ipv4": None, "ipv6": None}, src.server_address, src.port)
    home["auth_key"] = src.auth_key.key if src.auth_key else None
    return {
        "home_dc": src.dc_id,
        "_home_option": [home],
        "dc_options": [],
        "self_user": self_user,
        "peers": peers,
        "updates_state": state,
        "sent_files": [
            {"md5_digest": bytes(m), "file_size": s, "file_type": t, "id": i, "hash": h}
            for m, s, t, i, h in files
        ],
        "extras": extras,
    }


def _telethon_import(vault, src):
    if not src.dc_id:
        raise ValueError("the source session has no DC (it was never connected)")
    vault._writer.flush()
    _replace(vault._link, list(vault._dcs.values()), telethon_data(src))
    vault._fresh = False
    vault._load()
    return vault


def _telethon_class_import(cls, src, name=None, **options):
    if name is None:
        filename = getattr(src, "filename", None)
        if not filename or filename == ":memory:":
            raise ValueError("give the vault session a name: import_from(src, name=...)")
        name = os.path.splitext(os.path.basename(filename))[0]
    vault = cls(name, **options)
    try:
        return _telethon_import(vault, src)
    except BaseException:
        vault.close()
        raise


# ---- Pyrogram ------------------------------------------------------------------------------


async def _maybe(value):
    return await value if inspect.isawaitable(value) else value


async def pyrogram_data(src):
    """The vault's SessionData of an open Pyrogram storage (FileStorage, or MemoryStorage,
    which is also how Pyrogram 2.0 opens a session string)."""
    from .pyrogram import peer_from_row

    dc_id = await src.dc_id()
    user_id = await src.user_id()
    is_bot = await src.is_bot()
    extras = empty_extras()
    extras["api_id"] = await src.api_id()
    extras["test_mode"] = bool(await src.test_mode())
    home = {"id": dc_id, "auth_key": await src.auth_key()}
    peers = []
    conn = getattr(src, "conn", None)
    if conn is not None:
        for row in conn.execute(
            "SELECT id, access_hash, type, username, phone_number FROM peers"
        ).fetchall():
            p = peer_from_row(row)
            if p:
                peers.append(p)
    self_user = {"id": user_id, "bot": bool(is_bot)} if user_id else None
    if self_user:
        for p in peers:
            if p["kind"] == "user" and p["id"] == user_id:
                p["is_self"] = True
    return {
        "home_dc": dc_id,
        "_home_option": [home],
        "dc_options": [],
        "self_user": self_user,
        "peers": peers,
        "updates_state": empty_state(),
        "sent_files": [],
        "extras": extras,
    }


async def _pyrogram_import(vault, src):
    data = await pyrogram_data(src)

    def replace():
        vault._writer.flush()
        _replace(vault._link, list(vault._dcs.values()), data)
        vault._forget()
        vault._load()

    await vault._run(replace)  # off the event loop, in the storage's turn
    return vault


async def _pyrogram_class_import(cls, src, name=None, **options):
    name = name or getattr(src, "name", None)
    if not name or name == ":memory:":
        raise ValueError("give the vault session a name: import_from(src, name=...)")
    vault = cls(name, **options)
    await vault.open()
    try:
        return await _pyrogram_import(vault, src)
    except BaseException:
        await vault.close()
        raise
