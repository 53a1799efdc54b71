"""Pyrogram's storage calls are coroutines on the bot's event loop: while one waits (for an
admin's unlock, for a reconnect) the loop's other tasks keep running."""

import asyncio
import threading

import pytest

from conftest import PASS


def _unlock_later(daemon, seconds):
    def unlock():
        out = daemon.ctl("unlock", "--passphrase-fd", "0", stdin=PASS + b"\n")
        assert out.returncode == 0, out.stderr.decode(errors="replace")

    t = threading.Timer(seconds, unlock)
    t.start()
    return t


def _ticking():
    """A task counting ticks of 10 ms, and a function giving the count."""
    ticks = [0]

    async def tick():
        while True:
            await asyncio.sleep(0.01)
            ticks[0] += 1

    return asyncio.ensure_future(tick()), lambda: ticks[0]


@pytest.mark.parametrize("call", ["save", "open"])
def test_a_wait_for_unlock_leaves_the_event_loop_running(daemon, call):
    pytest.importorskip("pyrogram")
    from session_vault.pyrogram import VaultStorage

    async def run():
        st = VaultStorage("ploop", socket=daemon.socket, wait_for_unlock=30)
        if call == "save":
            await st.open()
            await st.dc_id(2)
            await st.save()
            await st.api_id(12345)
        daemon.lock()
        ticker, ticks = _ticking()
        timer = _unlock_later(daemon, 1.0)
        before = ticks()
        try:
            await (st.save() if call == "save" else st.open())  # waits for the unlock
        finally:
            timer.join()
        during = ticks() - before
        ticker.cancel()
        # About 100 ticks in the second the call waited; none at all when it blocks the loop.
        assert during >= 10, f"the event loop was blocked: {during} ticks while {call}() waited"
        assert await st.api_id() == (12345 if call == "save" else None)
        await st.close()
        again = VaultStorage("ploop", socket=daemon.socket)
        await again.open()
        try:
            assert await again.api_id() == (12345 if call == "save" else None)
        finally:
            await again.close()

    asyncio.run(run())


def test_a_cancelled_wait_keeps_the_storage_until_its_call_ends(daemon):
    """The caller of a waiting save() is cancelled: the save goes on in its thread, holding the
    connection, and the storage's next call waits for it instead of using the connection
    beside it; the change is stored once the vault is unlocked."""
    pytest.importorskip("pyrogram")
    from session_vault.pyrogram import VaultStorage

    async def run():
        st = VaultStorage("pcancel", socket=daemon.socket, wait_for_unlock=30)
        await st.open()
        await st.dc_id(2)
        await st.save()
        await st.api_id(777)
        daemon.lock()
        save = asyncio.ensure_future(st.save())
        await asyncio.sleep(0.3)
        save.cancel()
        with pytest.raises(asyncio.CancelledError):
            await save
        assert st._busy(), "the save's thread still runs: the storage is not free"
        timer = _unlock_later(daemon, 0.5)
        try:
            await st.dc_id(4)  # waits for the save to end, then changes the DC
        finally:
            timer.join()
        assert not st._busy()
        await st.close()
        again = VaultStorage("pcancel", socket=daemon.socket)
        await again.open()
        try:
            assert (await again.api_id(), await again.dc_id()) == (777, 4)
        finally:
            await again.close()

    asyncio.run(run())
