"""One data model for every client: `vaultctl import` of a Telethon file reads the same in
`VaultSession`; what the Python client writes, the Rust client (client/examples/dump_session)
reads; `import_from` moves Telethon and Pyrogram sessions in, in code."""

import asyncio
import datetime
import hashlib
import json
import os
import subprocess

import pytest

from conftest import DUMP_SESSION

telethon = pytest.importorskip("telethon")

from telethon.crypto import AuthKey  # noqa: E402
from telethon.sessions import SQLiteSession, StringSession  # noqa: E402
from telethon.tl import types  # noqa: E402

from session_vault.telethon import VaultSession  # noqa: E402

UTC = datetime.timezone.utc


def fill(s):
    s.set_dc(4, "149.154.167.91", 443)
    s.auth_key = AuthKey(os.urandom(256))
    s.takeout_id = 987654321
    s.process_entities(types.contacts.ResolvedPeer(
        peer=types.PeerUser(42),
        users=[
            types.User(id=42, access_hash=4242, username="Alice", phone="15551234",
                       first_name="Alice", last_name="A"),
            types.User(id=43, access_hash=-4343, username="helper_bot", bot=True,
                       first_name="Helper"),
        ],
        chats=[
            types.Channel(id=77, title="News", photo=types.ChatPhotoEmpty(),
                          date=datetime.datetime(2024, 1, 1, tzinfo=UTC), access_hash=7777,
                          username="newsroom", broadcast=True),
            types.Chat(id=55, title="Team", photo=types.ChatPhotoEmpty(), participants_count=2,
                       date=datetime.datetime(2024, 1, 1, tzinfo=UTC), version=1),
        ],
    ))
    s.process_entities(types.contacts.ResolvedPeer(None, [types.InputPeerUser(0, 42)], []))
    s.set_update_state(0, types.updates.State(
        pts=1000, qts=20, date=datetime.datetime.fromtimestamp(1700000000, tz=UTC), seq=30,
        unread_count=0))
    s.set_update_state(77, types.updates.State(555, 0, datetime.datetime.now(), 0, unread_count=0))
    s.cache_file(b"\x01" * 16, 1234, types.InputDocument(11, 22, b""))
    s.save()


KEYS = [42, 43, -1000000000077, -55, 55, 0, "@alice", "helper_bot", "newsroom", "+15551234",
        "Alice A", "Team", types.PeerChannel(77), types.PeerUser(42), 99, "@nobody"]


def found_file(s, size):
    try:
        return str(s.get_file(b"\x01" * 16, size, types.InputDocument))
    except TypeError:  # Telethon's get_file finds the row, then cannot build InputDocument
        return "found"


def view(s):
    def look(k):
        try:
            return str(s.get_input_entity(k))
        except ValueError:
            return "ValueError"

    return {
        "dc": (s.dc_id, s.server_address, s.port),
        "key": s.auth_key.key,
        "takeout": s.takeout_id,
        "entities": [look(k) for k in KEYS],
        "states": [(i, st.pts) + ((st.qts, st.seq, int(st.date.timestamp())) if i == 0 else ())
                   for i, st in s.get_update_states()],
        "file": found_file(s, 1234),
        "no file": found_file(s, 999),
    }


def test_vaultctl_import_of_a_telethon_file_reads_the_same(daemon, tmpdir_short):
    path = str(tmpdir_short / "bot.session")
    src = SQLiteSession(path)
    fill(src)
    src.close()
    out = daemon.ctl("import", path, "--name", "imported")
    assert out.returncode == 0, out.stderr.decode()
    ref = SQLiteSession(path)
    vault = VaultSession("imported", socket=daemon.socket, create_if_missing=False)
    assert view(vault) == view(ref)
    vault.close()


def test_import_from_sqlite_and_string_sessions(daemon, tmpdir_short):
    path = str(tmpdir_short / "moving.session")
    src = SQLiteSession(path)
    fill(src)
    vault = VaultSession.import_from(src, socket=daemon.socket)
    assert vault.name == "moving"
    assert view(vault) == view(src)
    vault.close()
    again = VaultSession("moving", socket=daemon.socket)
    assert view(again) == view(src)
    again.close()

    string = StringSession.save(src)
    s2 = StringSession(string)
    v2 = VaultSession.import_from(s2, name="from-string", socket=daemon.socket)
    assert (v2.dc_id, v2.server_address, v2.port) == (4, "149.154.167.91", 443)
    assert v2.auth_key.key == src.auth_key.key
    v2.close()


def test_the_rust_client_reads_what_python_wrote(daemon):
    if not DUMP_SESSION.exists():
        pytest.skip(f"{DUMP_SESSION} not built (cargo build -p session-vault-client --examples)")
    s = VaultSession("shared", socket=daemon.socket)
    fill(s)
    key = s.auth_key.key
    s.close()
    out = subprocess.run(
        [str(DUMP_SESSION), daemon.socket, "shared", "42", "43", "-1000000000077", "-55", "99"],
        capture_output=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    dump = json.loads(out.stdout)
    assert dump["home_dc"] == 4
    assert dump["home_option"]["ipv4"] == "149.154.167.91:443"
    assert dump["home_option"]["auth_key_sha256"] == hashlib.sha256(key).hexdigest()
    assert dump["updates_state"] == {
        "pts": 1000, "qts": 20, "date": 1700000000, "seq": 30,
        "channels": [{"id": 77, "pts": 555}],
    }
    lookups = dump["lookups"]
    assert lookups["42"] == {"kind": "user", "id": 42, "access_hash": 4242, "bot": False,
                             "is_self": True}
    assert lookups["43"]["access_hash"] == -4343 and lookups["43"]["bot"] is True
    assert lookups["-1000000000077"] == {"kind": "channel", "id": 77, "access_hash": 7777,
                                         "channel_kind": "broadcast"}
    assert lookups["-55"] == {"kind": "chat", "id": 55}
    assert lookups["99"] is None


def test_pyrogram_import_from_file_storage(daemon, tmpdir_short):
    pytest.importorskip("pyrogram")
    from pyrogram.storage import FileStorage

    from session_vault.pyrogram import VaultStorage

    async def run():
        src = FileStorage("pyro", tmpdir_short)
        await src.open()
        await src.dc_id(4)
        await src.api_id(12345)
        await src.test_mode(False)
        key = os.urandom(256)
        await src.auth_key(key)
        await src.user_id(42)
        await src.is_bot(True)
        await src.update_peers([(42, 4242, "bot", "mybot", None),
                                (-1000000000077, 7777, "supergroup", "chat77", None)])
        await src.save()
        vault = await VaultStorage.import_from(src, socket=daemon.socket)
        for name in ("dc_id", "api_id", "test_mode", "auth_key", "user_id", "is_bot"):
            assert await getattr(vault, name)() == await getattr(src, name)(), name
        assert await vault.get_peer_by_username("chat77") == await src.get_peer_by_username("chat77")
        assert await vault.export_session_string() == await src.export_session_string()
        await vault.close()
        again = VaultStorage("pyro", socket=daemon.socket)
        await again.open()
        assert await again.auth_key() == key and await again.user_id() == 42
        assert await again.get_peer_by_id(42) == await src.get_peer_by_id(42)
        await again.close()

        from pyrogram.storage import MemoryStorage

        string = await src.export_session_string()
        st = MemoryStorage("s", string)  # how Pyrogram 2.0 opens a session string
        await st.open()
        from_string = await VaultStorage.import_from(st, name="pyro-string", socket=daemon.socket)
        assert await from_string.auth_key() == key
        assert await from_string.export_session_string() == string
        await from_string.close()
        await src.close()

    asyncio.run(run())
