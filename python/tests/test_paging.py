"""A big session loads in frames of bounded size: `export` without peers, then `list_peers`."""

import pytest

from session_vault import connection
from session_vault.connection import unwrap
from session_vault.errors import ProtocolError

PEERS = 6000
SMALL_FRAME = 200 << 10  # above one page of 1000 peers, far below the whole session


def fill(daemon, name):
    from session_vault.telethon import VaultSession

    s = VaultSession(name, socket=daemon.socket)
    for start in range(0, PEERS, 500):
        peers = [
            {"kind": "user", "id": 10_000_000 + i, "access_hash": 7 * i + 1,
             "username": f"paged_user_{i}", "name": f"Paged User {i}"}
            for i in range(start, start + 500)
        ]
        unwrap(s._link.call("cache_peers", {"peers": peers}), "ok")
    whole = unwrap(s._link.call("export"), "session_data")
    s.close()
    return whole


def test_an_exclusive_load_reads_the_peers_in_pages(daemon, monkeypatch):
    pytest.importorskip("telethon")
    from session_vault.telethon import VaultSession

    whole = fill(daemon, "big")
    assert len(whole["peers"]) == PEERS
    monkeypatch.setattr(connection, "MAX_FRAME", SMALL_FRAME)

    s = VaultSession("big", socket=daemon.socket)
    try:
        paged = s._link.export()
        assert paged["peers"] == whole["peers"]  # every peer, in export's order
        assert {k: v for k, v in paged.items() if k != "peers"} == {
            k: v for k, v in whole.items() if k != "peers"
        }
        for i in (0, 999, 1000, PEERS - 1):
            entity = s.get_input_entity(f"paged_user_{i}")
            assert (entity.user_id, entity.access_hash) == (10_000_000 + i, 7 * i + 1)
    finally:
        s.close()


def test_a_shared_load_still_takes_one_frame(daemon, monkeypatch):
    """The limit above is real: without the lease (no `list_peers`) the one-frame export of
    the same session does not fit in it."""
    pytest.importorskip("telethon")
    from session_vault.telethon import VaultSession

    fill(daemon, "big")
    monkeypatch.setattr(connection, "MAX_FRAME", SMALL_FRAME)
    with pytest.raises(ProtocolError):
        VaultSession("big", socket=daemon.socket, exclusive=False)


def test_pyrogram_loads_a_big_session_in_pages(daemon, monkeypatch):
    pytest.importorskip("pyrogram")
    pytest.importorskip("telethon")
    import asyncio

    from session_vault.pyrogram import VaultStorage

    fill(daemon, "big")
    monkeypatch.setattr(connection, "MAX_FRAME", SMALL_FRAME)

    async def main():
        st = VaultStorage("big", socket=daemon.socket)
        await st.open()
        try:
            peer = await st.get_peer_by_username("paged_user_4321")
            assert (peer.user_id, peer.access_hash) == (10_004_321, 7 * 4321 + 1)
        finally:
            await st.close()

    asyncio.run(main())
