"""Differential: random sequences of Pyrogram storage calls applied to `VaultStorage` and to
Pyrogram's own `FileStorage` give the same answers after every step, across reconnects and
daemon restarts. After a re-open (a new storage object) the values the vault's model does
not hold (`date`; `test_mode`, `user_id`, `is_bot` set back to None) are the documented
exceptions."""

import asyncio
import os
import random

import pytest

pytest.importorskip("pyrogram")

from pyrogram.storage import FileStorage  # noqa: E402

from session_vault.pyrogram import VaultStorage  # noqa: E402

class RefStorage(FileStorage):
    """Pyrogram's FileStorage, with each accessor naming its column instead of finding it with
    `inspect.stack()` (about 90 ms a call under pytest). The SQL is Pyrogram's own."""

    def _acc(self, attr, value):
        if value == object:
            return self.conn.execute(f"SELECT {attr} FROM sessions").fetchone()[0]
        with self.conn:
            self.conn.execute(f"UPDATE sessions SET {attr} = ?", (value,))

    async def dc_id(self, value=object):
        return self._acc("dc_id", value)

    async def api_id(self, value=object):
        return self._acc("api_id", value)

    async def test_mode(self, value=object):
        return self._acc("test_mode", value)

    async def auth_key(self, value=object):
        return self._acc("auth_key", value)

    async def date(self, value=object):
        return self._acc("date", value)

    async def user_id(self, value=object):
        return self._acc("user_id", value)

    async def is_bot(self, value=object):
        return self._acc("is_bot", value)


USERNAMES = ["alice", "bob", "news", "shop", None, None]
USERS = [11, 12, 13, 777000]
GROUPS = [-21, -22, -13]
CHANNELS = [-1000000000031, -1000000000032, -1000000000011]


def rand_row(rng):
    k = rng.random()
    if k < 0.5:
        pid = rng.choice(USERS)
        return (pid, rng.randrange(-(2**63), 2**63), rng.choice(["user", "bot"]),
                rng.choice(USERNAMES), rng.choice([None, f"1555{pid}", "15550000"]))
    if k < 0.7:
        return (rng.choice(GROUPS), 0, "group", None, None)
    return (rng.choice(CHANNELS), rng.randrange(-(2**63), 2**63),
            rng.choice(["channel", "supergroup"]), rng.choice(USERNAMES), None)


async def answer(coro):
    try:
        return str(await coro)
    except KeyError as e:
        return f"KeyError {e}"
    except Exception as e:  # export_session_string with None values: struct.error
        return type(e).__name__


async def snapshot(s):
    out = {}
    for name in ("dc_id", "api_id", "test_mode", "auth_key", "date", "user_id", "is_bot"):
        out[name] = await getattr(s, name)()
    out["string"] = await answer(s.export_session_string())
    for pid in USERS + GROUPS + CHANNELS + [99]:
        out[f"id {pid}"] = await answer(s.get_peer_by_id(pid))
    for u in ["alice", "bob", "news", "shop", "nobody"]:
        out[f"@{u}"] = await answer(s.get_peer_by_username(u))
    for p in ["15550000", "155511", "155512", "0"]:
        out[f"+{p}"] = await answer(s.get_peer_by_phone_number(p))
    return out


async def step(rng, sessions, vault, daemon):
    r = rng.random()
    if r < 0.45:
        rows = [rand_row(rng) for _ in range(rng.randrange(1, 6))]
        # one peer per username per batch, and no two batches in the same second: ties
        # between peers of one username are decided by Pyrogram's clock (see README)
        seen, batch = set(), []
        for row in rows:
            if row[3] is None or row[3] not in seen:
                seen.add(row[3])
                batch.append(row)
        for s in sessions:
            await s.update_peers(batch)
        return "update_peers"
    if r < 0.75:
        name = rng.choice(["dc_id", "api_id", "test_mode", "auth_key", "date", "user_id", "is_bot"])
        value = {
            "dc_id": lambda: rng.choice([1, 2, 4]),
            "api_id": lambda: rng.choice([None, 12345, 2**31 - 1]),
            "test_mode": lambda: rng.choice([None, False, True]),
            "auth_key": lambda: rng.choice([None, os.urandom(256)]),
            "date": lambda: rng.randrange(0, 2**31),
            "user_id": lambda: rng.choice([None, 11, 777000]),
            "is_bot": lambda: rng.choice([None, False, True]),
        }[name]()
        for s in sessions:
            await getattr(s, name)(value)
        return f"{name}={value!r:.20}"
    if r < 0.85:
        for s in sessions:
            if isinstance(s, FileStorage):
                s.conn.commit()  # FileStorage.save() would also set date: do that separately
            else:
                s._writer.flush()
        return "flush"
    if r < 0.95:
        vault._link.conn.close()
        return "reconnect"
    daemon.restart()
    return "daemon restart"


@pytest.mark.parametrize("seed", range(1, 1 + int(os.environ.get("SV_DIFF_SEEDS", "3"))))
def test_differential_against_file_storage(daemon, tmpdir_short, seed):
    async def run():
        rng = random.Random(seed)
        ref = RefStorage("ref", tmpdir_short)
        await ref.open()
        vault = VaultStorage("pdiff", socket=daemon.socket)
        await vault.open()
        assert await snapshot(vault) == await snapshot(ref)
        history = []
        for _ in range(100):
            history.append(await step(rng, [ref, vault], vault, daemon))
            a, b = await snapshot(ref), await snapshot(vault)
            for k in a:
                assert b[k] == a[k], f"{k} differs after {history[-6:]}"
        assert vault._link.reconnects > 0
        await vault.save()
        await ref.save()
        await vault.close()
        await ref.close()
        ref = RefStorage("ref", tmpdir_short)
        await ref.open()
        again = VaultStorage("pdiff", socket=daemon.socket)
        await again.open()
        a, b = await snapshot(ref), await snapshot(again)
        # What the vault's model does not hold (see the module doc and the README): `date`;
        # `test_mode`, `user_id` and `is_bot` set back to None; an is_bot that contradicts the
        # self user's own peer row (the vault derives its self user from that peer); and,
        # among several holders of one username, which one was seen last.
        exceptions = {"date", "string"}
        if a["test_mode"] is None:
            exceptions.add("test_mode")
        if a["user_id"] is None or a["is_bot"] is None:
            exceptions |= {"user_id", "is_bot"}
        else:
            row = ref.conn.execute("SELECT type FROM peers WHERE id = ?", (a["user_id"],)).fetchone()
            if row and (row[0] == "bot") != bool(a["is_bot"]):
                exceptions.add("is_bot")
        for (u, n) in ref.conn.execute(
                "SELECT username, count(*) FROM peers WHERE username IS NOT NULL GROUP BY username"):
            if n > 1:
                exceptions.add(f"@{u}")
        for k in a:
            if k not in exceptions:
                assert b[k] == a[k], f"{k} differs after a re-open"
        await again.close()
        await ref.close()

    asyncio.run(run())
