"""Test harness: a real `vaultd` per test, in its own short temp dir, readiness awaited.

Binaries come from $VAULTD / $VAULTCTL / $DUMP_SESSION (run-tests.sh sets them; by default
target/debug/ of the repository). The vault is initialized through the protocol with the
cheap KDF the daemon accepts only with --insecure-allow-weak-kdf.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from session_vault.connection import Connection

try:
    # Pyrogram asks for the current event loop when imported: import it now, before a test's
    # asyncio.run() leaves the main thread without one.
    import pyrogram  # noqa: F401
except ImportError:
    pass

ROOT = Path(__file__).resolve().parents[2]
PASS = b"correct horse battery staple"
CHEAP_KDF = {"m_cost_kib": 64, "t_cost": 1, "p_cost": 1}


def binary(env, default):
    p = Path(os.environ.get(env) or ROOT / default)
    if not p.is_absolute():
        p = ROOT / p
    return p


VAULTD = binary("VAULTD", "target/debug/vaultd")
VAULTCTL = binary("VAULTCTL", "target/debug/vaultctl")
DUMP_SESSION = binary("DUMP_SESSION", "target/debug/examples/dump_session")


class Daemon:
    """A `vaultd` on `dir/v.sock` with data in `dir/data`; killed at teardown."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.socket = str(self.dir / "v.sock")
        self.data = str(self.dir / "data")
        self.proc = None
        self.log = []

    def start(self, extra=()):
        env = {"PATH": os.environ.get("PATH", ""), "VAULTD_LOG": "info"}
        self.proc = subprocess.Popen(
            [str(VAULTD), "--socket", self.socket, "--data-dir", self.data,
             "--insecure-allow-weak-kdf", *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        ready = threading.Event()
        proc, log = self.proc, self.log

        def read():
            for line in proc.stderr:
                text = line.decode(errors="replace")
                log.append(text)
                if "vaultd listening" in text:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30) or proc.poll() is not None:
            self.kill()
            raise RuntimeError("vaultd did not start:\n" + "".join(self.log))
        return self

    def admin(self):
        return Connection(self.socket, "pytest admin", timeout=20)

    def init(self):
        c = self.admin()
        try:
            c.call({"init": {"passphrase": PASS, "kdf": CHEAP_KDF}})
        finally:
            c.close()
        return self

    def unlock(self):
        c = self.admin()
        try:
            c.call({"unlock": {"passphrase": PASS}})
        finally:
            c.close()

    def lock(self):
        c = self.admin()
        try:
            c.call("lock")
        finally:
            c.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, unlock=True):
        self.stop()
        self.start()
        if unlock:
            self.unlock()

    def ctl(self, *args, stdin=None):
        return subprocess.run(
            [str(VAULTCTL), "--socket", self.socket, *args],
            input=stdin,
            capture_output=True,
            env={"PATH": os.environ.get("PATH", "")},
            timeout=60,
        )


@pytest.fixture
def tmpdir_short():
    d = tempfile.mkdtemp(prefix="svpy", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(tmpdir_short):
    d = Daemon(tmpdir_short).start().init()
    yield d
    d.kill()
