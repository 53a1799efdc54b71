"""Open, hold, save, delete: the session's life through the adapters."""

import asyncio
import os

import pytest

import session_vault as sv
from session_vault.connection import Connection


def names(daemon):
    c = Connection(daemon.socket)
    try:
        return [s["summary"]["name"] for s in c.call("list_sessions")["sessions"]]
    finally:
        c.close()


def test_telethon_exclusive_save_delete(daemon):
    pytest.importorskip("telethon")
    from telethon.crypto import AuthKey

    from session_vault.telethon import VaultSession

    s = VaultSession("life", socket=daemon.socket)
    with pytest.raises(sv.SessionBusy) as e:
        VaultSession("life", socket=daemon.socket)
    assert e.value.holder_pid == os.getpid()
    s.set_dc(2, "149.154.167.51", 443)
    s.auth_key = AuthKey(os.urandom(256))
    s.save()
    assert VaultSession.list_sessions(socket=daemon.socket) == ["life"]
    assert s.delete() is True  # root is an admin: the session is gone
    assert names(daemon) == []


def test_pyrogram_exclusive_and_delete(daemon):
    pytest.importorskip("pyrogram")
    from session_vault.pyrogram import VaultStorage

    async def run():
        st = VaultStorage("plife", socket=daemon.socket)
        await st.open()
        other = VaultStorage("plife", socket=daemon.socket)
        with pytest.raises(sv.SessionBusy):
            await other.open()
        await st.auth_key(os.urandom(256))
        await st.save()
        assert names(daemon) == ["plife"]
        await st.delete()
        assert names(daemon) == []

    asyncio.run(run())
