"""Benchmark: `VaultSession` beside Telethon's `SQLiteSession` and `MemorySession`, and
`VaultStorage` beside Pyrogram's `FileStorage`, in the same run, against a real `vaultd`.

    target/python-venv/telethon-1.45.0/bin/python bench/python/bench.py [--quick]

(after `python/run-tests.sh` made the venv; `$VAULTD` defaults to target/release/vaultd, else
target/debug/vaultd). Prints a Markdown table: microseconds per operation (median of runs)
and the ratio SQLite / vault (above 1: the vault is faster).

Each storage does exactly what the library does: SQLiteSession's changes wait for `save()`
(a commit, fsynced), VaultSession's are sent behind (at save(), or 0.1 s after they were
made), so the rows without `save` compare in-process costs, and the rows "+ save" what it
takes to have the change on disk.
"""

import asyncio
import datetime
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

from telethon.crypto import AuthKey  # noqa: E402
from telethon.sessions import MemorySession, SQLiteSession  # noqa: E402
from telethon.tl import types  # noqa: E402

from session_vault.connection import Connection  # noqa: E402
from session_vault.telethon import VaultSession  # noqa: E402

QUICK = "--quick" in sys.argv
RUNS = 3 if QUICK else 7


def vaultd():
    env = os.environ.get("VAULTD")
    if env:
        return env
    for p in ("target/release/vaultd", "target/debug/vaultd"):
        if (ROOT / p).exists():
            return str(ROOT / p)
    raise SystemExit("build vaultd first")


def start_daemon(d):
    sock = str(d / "v.sock")
    proc = subprocess.Popen(
        [vaultd(), "--socket", sock, "--data-dir", str(d / "data"), "--insecure-allow-weak-kdf"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", ""), "VAULTD_LOG": "info"},
    )
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            if b"vaultd listening" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(30)
    c = Connection(sock)
    c.call({"init": {"passphrase": b"correct horse battery staple",
                     "kdf": {"m_cost_kib": 64, "t_cost": 1, "p_cost": 1}}})
    c.close()
    return proc, sock


def timeit(fn, n):
    """Median over RUNS of the mean time per call of `fn(i)` for i in range(n), in µs."""
    out = []
    for r in range(RUNS):
        t = time.perf_counter()
        for i in range(n):
            fn(r * n + i)
        out.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(out)


def users(base, count=100):
    return [types.User(id=base + i, access_hash=(base + i) * 7919, username=f"user{base + i}",
                       first_name=f"User {base + i}", phone=f"1555{base + i:07d}")
            for i in range(count)]


def state(i):
    return types.updates.State(pts=i, qts=i, date=datetime.datetime.fromtimestamp(
        1700000000 + i, tz=datetime.timezone.utc), seq=i, unread_count=0)


def bench_telethon(sock, d):
    sessions = {
        "VaultSession": VaultSession("bench", socket=sock),
        "SQLiteSession": SQLiteSession(str(d / "bench")),
        "MemorySession": MemorySession(),
    }
    rows = []
    n_ent = 2000
    for s in sessions.values():
        s.set_dc(2, "149.154.167.51", 443)
        s.auth_key = AuthKey(os.urandom(256))
        for b in range(0, n_ent, 100):
            s.process_entities(users(1000 + b))
        s.save()
    key = AuthKey(os.urandom(256))

    def pe_new(s):
        base = [10_000_000]

        def f(i):
            s.process_entities(users(base[0]))
            base[0] += 100
        return f

    def pe_new_save(s):
        base = [50_000_000]

        def f(i):
            s.process_entities(users(base[0]))
            s.save()
            base[0] += 100
        return f

    ops = [
        ("get_input_entity(id)", lambda s: lambda i: s.get_input_entity(1000 + i % n_ent), 2000),
        ("get_input_entity('@username')",
         lambda s: lambda i: s.get_input_entity(f"@user{1000 + i % n_ent}"), 2000),
        ("get_input_entity(PeerUser)",
         lambda s: lambda i: s.get_input_entity(types.PeerUser(1000 + i % n_ent)), 2000),
        ("process_entities(100 known, unchanged)",
         lambda s: lambda i: s.process_entities(users(1000 + (i % 20) * 100)), 40),
        ("process_entities(100 new)", pe_new, 20),
        ("process_entities(100 new) + save()", pe_new_save, 10),
        ("set_update_state(0, State)", lambda s: lambda i: s.set_update_state(0, state(i)), 2000),
        ("set_update_state + save()",
         lambda s: lambda i: (s.set_update_state(0, state(i)), s.save()), 30),
        ("set_dc + auth_key",
         lambda s: lambda i: (s.set_dc(2 + i % 2, "149.154.167.51", 443),
                              setattr(s, "auth_key", key)), 2000),
        ("set_dc + auth_key + save()",
         lambda s: lambda i: (s.set_dc(2 + i % 2, "149.154.167.51", 443),
                              setattr(s, "auth_key", key), s.save()), 30),
    ]
    for name, make, n in ops:
        row = {"op": name}
        for label, s in sessions.items():
            row[label] = timeit(make(s), n)
            s.save()
        rows.append(row)
    for s in sessions.values():
        s.close()
    return rows


def bench_pyrogram(sock, d):
    from pyrogram.storage import FileStorage

    from session_vault.pyrogram import VaultStorage

    async def run():
        stores = {"VaultStorage": VaultStorage("pbench", socket=sock),
                  "FileStorage": FileStorage("pbench", d)}
        for s in stores.values():
            await s.open()
            for b in range(0, 2000, 100):
                await s.update_peers([(1000 + b + i, i * 31, "user", f"user{1000 + b + i}", None)
                                      for i in range(100)])
            await s.save()
        loop_rows = []

        async def atimeit(fn, n):
            out = []
            for r in range(RUNS):
                t = time.perf_counter()
                for i in range(n):
                    await fn(r * n + i)
                out.append((time.perf_counter() - t) / n * 1e6)
            return statistics.median(out)

        def peers(base):
            return [(base + i, i * 31, "user", f"u{base + i}", None) for i in range(100)]

        key = os.urandom(256)
        ops = [
            ("get_peer_by_id", lambda s: lambda i: s.get_peer_by_id(1000 + i % 2000), 2000),
            ("get_peer_by_username",
             lambda s: lambda i: s.get_peer_by_username(f"user{1000 + i % 2000}"), 2000),
            ("update_peers(100 new)", lambda s: lambda i: s.update_peers(peers(10_000_000 + i * 100)), 20),
            ("update_peers(100 new) + save()",
             lambda s: lambda i: _chain(s.update_peers(peers(50_000_000 + i * 100)), s.save()), 10),
            ("auth_key(key) + dc_id(dc)",
             lambda s: lambda i: _chain(s.auth_key(key), s.dc_id(2 + i % 2)), 300),
            ("auth_key(key) + save()", lambda s: lambda i: _chain(s.auth_key(key), s.save()), 30),
        ]
        for name, make, n in ops:
            row = {"op": name}
            for label, s in stores.items():
                row[label] = await atimeit(make(s), n)
                await s.save()
            loop_rows.append(row)
        for s in stores.values():
            await s.close()
        return loop_rows

    return asyncio.run(run())


async def _chain(*coros):
    for c in coros:
        await c


def table(rows, cols, base, vault):
    out = ["| operation | " + " | ".join(f"{c} (µs)" for c in cols) + f" | {base} / {vault} |",
           "|---" * (len(cols) + 2) + "|"]
    for r in rows:
        out.append(f"| {r['op']} | " + " | ".join(f"{r[c]:.1f}" for c in cols)
                   + f" | {r[base] / r[vault]:.1f}× |")
    return "\n".join(out)


def main():
    d = Path(tempfile.mkdtemp(prefix="svbench", dir="/tmp"))
    proc, sock = start_daemon(d)
    try:
        t = bench_telethon(sock, d)
        p = bench_pyrogram(sock, d)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        shutil.rmtree(d, ignore_errors=True)
    import telethon
    import pyrogram

    print(f"Telethon {telethon.__version__}, Pyrogram {pyrogram.__version__}, "
          f"Python {sys.version.split()[0]}, vaultd {vaultd()}\n")
    print(table(t, ["VaultSession", "SQLiteSession", "MemorySession"], "SQLiteSession",
                "VaultSession"))
    print()
    print(table(p, ["VaultStorage", "FileStorage"], "FileStorage", "VaultStorage"))


if __name__ == "__main__":
    main()
