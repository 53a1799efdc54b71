"""`close()` after a reconnect failed (the daemon away longer than `reconnect_timeout`): the
changes not stored yet (an auth key among them) are sent if the daemon is back, else close()
raises `DaemonUnavailable` saying how many were not stored; it never returns quietly."""

import asyncio
import datetime
import os
import re

import pytest

import session_vault as sv


def _state(pts):
    from telethon.tl import types

    return types.updates.State(
        pts=pts, qts=0, date=datetime.datetime.fromtimestamp(1_700_000_000, tz=datetime.timezone.utc),
        seq=1, unread_count=0,
    )


def _telethon_save_fails(daemon, name):
    """A Telethon session whose last save() failed: the daemon was killed and stayed away."""
    pytest.importorskip("telethon")
    from telethon.crypto import AuthKey

    from session_vault.telethon import VaultSession

    s = VaultSession(name, socket=daemon.socket, reconnect_timeout=0.5)
    s.set_dc(2, "149.154.167.51", 443)
    s.auth_key = AuthKey(os.urandom(256))
    s.save()
    daemon.kill()
    s.set_update_state(0, _state(100))
    with pytest.raises(sv.DaemonUnavailable):
        s.save()
    return s


def test_telethon_close_raises_when_changes_cannot_be_stored(daemon):
    s = _telethon_save_fails(daemon, "lost")
    with pytest.raises(sv.DaemonUnavailable) as e:
        s.close()  # was: returned quietly, the update state dropped
    assert re.search(r"\b\d+ changes? .*not stored", str(e.value)), str(e.value)
    assert e.value.details["not_stored"] >= 1


def test_telethon_close_stores_changes_once_the_daemon_is_back(daemon):
    from session_vault.telethon import VaultSession

    s = _telethon_save_fails(daemon, "back")
    daemon.start()
    daemon.unlock()
    s.close()  # was: returned quietly, the update state dropped
    again = VaultSession("back", socket=daemon.socket)
    try:
        got = again.get_update_state(0)
        assert got is not None and got.pts == 100, f"update state lost: {got}"
    finally:
        again.close()


def test_pyrogram_close_after_a_failed_reconnect(daemon):
    """The auth key set while the daemon was away: close() raises while it is still away (the
    key is kept), and a later close() stores it once the daemon is back."""
    pytest.importorskip("pyrogram")
    from session_vault.pyrogram import VaultStorage

    key = os.urandom(256)

    async def run():
        st = VaultStorage("pclose", socket=daemon.socket, reconnect_timeout=0.5)
        await st.open()
        await st.dc_id(2)
        await st.save()
        daemon.kill()
        await st.auth_key(key)
        with pytest.raises(sv.DaemonUnavailable):
            await st.save()
        with pytest.raises(sv.DaemonUnavailable) as e:
            await st.close()  # was: returned quietly, the auth key dropped
        message = str(e.value)
        assert key.hex() not in message and "not stored" in message, message
        daemon.start()
        daemon.unlock()
        await st.close()
        again = VaultStorage("pclose", socket=daemon.socket)
        await again.open()
        try:
            stored = await again.auth_key() == key
            assert stored, "the auth key was not stored at close()"
        finally:
            await again.close()

    asyncio.run(run())
