"""What the adapters do with a write the daemon refused after it was posted (sent behind, its
answer read later), with a session deleted while they were away, and with a session another
process holds exclusively (found by a review of the clients)."""

import datetime
import os
import time

import pytest

import session_vault as sv


def _state(pts):
    from telethon.tl import types

    return types.updates.State(
        pts=pts, qts=0, date=datetime.datetime.fromtimestamp(1_700_000_000, tz=datetime.timezone.utc),
        seq=1, unread_count=0,
    )


def test_telethon_posted_write_refused_while_locked_is_written_after_unlock(daemon):
    pytest.importorskip("telethon")
    from telethon.crypto import AuthKey

    from session_vault.telethon import VaultSession

    s = VaultSession("posted", socket=daemon.socket)
    s.set_dc(2, "149.154.167.51", 443)
    s.auth_key = AuthKey(os.urandom(256))
    s.save()

    daemon.lock()
    s.set_update_state(0, _state(100))
    time.sleep(0.15)
    s.set_update_state(0, _state(100))  # the timed flush: posted, answered `locked` later
    daemon.unlock()
    # The refusal is reported at the next save (once); a bot retries.
    for _ in range(3):
        try:
            s.save()
            break
        except sv.VaultLocked:
            continue
    s.close()

    again = VaultSession("posted", socket=daemon.socket)
    try:
        got = again.get_update_state(0)
        assert got is not None and got.pts == 100, f"update state lost: {got}"
    finally:
        again.close()


def test_pyrogram_auth_key_refused_after_posting_is_not_lost(daemon):
    pytest.importorskip("pyrogram")
    import asyncio

    from session_vault.pyrogram import VaultStorage

    key = os.urandom(256)

    async def run():
        st = VaultStorage("pkey", socket=daemon.socket)
        await st.open()
        await st.dc_id(2)
        await st.save()
        await st.api_id(12345)  # queued; the timed flush is due 0.1 s from now
        time.sleep(0.15)
        daemon.lock()
        await st.auth_key(key)  # the timed flush posts both; the daemon answers `locked`
        time.sleep(0.1)  # the daemon answers while still locked
        daemon.unlock()
        for _ in range(3):
            try:
                await st.save()
                break
            except sv.VaultLocked:
                continue
        believed = await st.auth_key() == key
        assert believed  # this process believes it is stored (no key bytes in the output)
        await st.close()

        again = VaultStorage("pkey", socket=daemon.socket)
        await again.open()
        try:
            got = await again.auth_key()
            stored = got == key
            assert stored, "the auth key was never written" if got is None else "another key"
        finally:
            await again.close()

    asyncio.run(run())


def _names(daemon):
    c = daemon.admin()
    try:
        return [s["summary"]["name"] for s in c.call("list_sessions")["sessions"]]
    finally:
        c.close()


def test_telethon_reconnect_does_not_recreate_a_deleted_session(daemon):
    pytest.importorskip("telethon")
    from telethon.crypto import AuthKey

    from session_vault.telethon import VaultSession

    s = VaultSession("gone", socket=daemon.socket)
    s.set_dc(2, "149.154.167.51", 443)
    s.auth_key = AuthKey(os.urandom(256))
    s.save()
    c = daemon.admin()
    try:
        c.call({"delete_session": {"name": "gone", "force": True}})
    finally:
        c.close()
    assert _names(daemon) == []
    daemon.restart()
    s.set_update_state(0, _state(7))
    try:
        s.save()
    except sv.VaultError:
        pass  # refusing is right: the session was deleted on purpose
    try:
        s.close()
    except sv.VaultError:
        pass
    assert _names(daemon) == [], "the deleted session was recreated by the reconnect"


def test_a_shared_handle_cannot_write_a_session_held_exclusively(daemon):
    """The lease holder is promised it is the session's only writer (its copy answers reads):
    a shared handle's write is refused with SessionBusy while the lease is held, and goes
    through once it is given back."""
    pytest.importorskip("telethon")
    from session_vault.telethon import VaultSession

    holder = VaultSession("leased", socket=daemon.socket)
    holder.set_update_state(0, _state(10))
    holder.save()
    shared = VaultSession("leased", socket=daemon.socket, exclusive=False)
    shared.set_update_state(0, _state(50))
    with pytest.raises(sv.SessionBusy):
        shared.save()
    assert holder.get_update_state(0).pts == 10
    holder.close()
    # Given back: a shared handle writes again.
    shared.set_update_state(0, _state(60))
    shared.save()
    shared.close()
    again = VaultSession("leased", socket=daemon.socket)
    try:
        assert again.get_update_state(0).pts == 60
    finally:
        again.close()
