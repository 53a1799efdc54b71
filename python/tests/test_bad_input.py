"""Bad input: each a clear exception, never a hang (every call has a timeout)."""

import os
import socket
import struct
import subprocess
import sys
import threading
import time
import textwrap

import msgpack
import pytest

import session_vault as sv
from session_vault.connection import Connection
from session_vault.link import SessionLink


def frame(obj):
    payload = msgpack.packb(obj)
    return struct.pack(">I", len(payload)) + payload


class FakeServer:
    """A Unix socket that answers each connection with `handler(conn)`."""

    def __init__(self, path, handler):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.handler = handler
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        try:
            self.handler(c)
        except OSError:
            pass

    def close(self):
        self.sock.close()
        os.unlink(self.path)


def read_frame(c):
    (n,) = struct.unpack(">I", c.recv(4, socket.MSG_WAITALL))
    return msgpack.unpackb(c.recv(n, socket.MSG_WAITALL))


def welcome(c):
    f = read_frame(c)
    c.sendall(frame({"id": f["id"], "response": {"welcome": {
        "protocol_major": 1, "protocol_minor": 1, "server": "fake", "vault_state": "unlocked"}}}))


def timed(fn, limit):
    t = time.monotonic()
    try:
        fn()
    finally:
        assert time.monotonic() - t < limit, "took too long"


def test_wrong_socket(tmpdir_short):
    with pytest.raises(sv.DaemonUnavailable):
        timed(lambda: SessionLink("x", socket=str(tmpdir_short / "nothing.sock")), 5)


def test_not_a_socket(tmpdir_short):
    p = tmpdir_short / "file"
    p.write_text("hi")
    with pytest.raises(sv.DaemonUnavailable):
        Connection(str(p))


def test_locked_vault_and_wait_for_unlock(daemon):
    daemon.lock()
    with pytest.raises(sv.VaultLocked):
        timed(lambda: SessionLink("x", socket=daemon.socket), 5)
    threading.Timer(0.5, daemon.unlock).start()
    link = SessionLink("x", socket=daemon.socket, wait_for_unlock=20)
    # Locked under an open handle: a call waits for the unlock too.
    daemon.lock()
    threading.Timer(0.5, daemon.unlock).start()
    assert link.call("get_home_dc") == {"home_dc": 2}
    link.close()


def test_no_such_session(daemon):
    with pytest.raises(sv.NoSuchSession):
        SessionLink("missing", socket=daemon.socket, create_if_missing=False)


def test_session_held_by_another_process(daemon):
    code = textwrap.dedent(f"""
        import sys, time
        from session_vault.link import SessionLink
        link = SessionLink("held", socket={daemon.socket!r})
        print("ready", flush=True)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(sv.SessionBusy) as e:
            SessionLink("held", socket=daemon.socket)
        assert e.value.holder_pid == child.pid
        assert str(child.pid) in str(e.value) or e.value.holder_pid == child.pid
    finally:
        child.kill()
        child.wait()
    # The lease dies with its holder: now it opens.
    SessionLink("held", socket=daemon.socket).close()


def test_daemon_killed_mid_session(daemon):
    link = SessionLink("k", socket=daemon.socket, reconnect_timeout=1.0)
    daemon.kill()
    with pytest.raises(sv.DaemonUnavailable):
        timed(lambda: link.call("get_home_dc"), 10)


def test_daemon_dies_mid_call(tmpdir_short):
    """The fake daemon reads the request and closes without answering, then is gone."""
    path = str(tmpdir_short / "f.sock")

    def handler(c):
        welcome(c)
        f = read_frame(c)
        if "open_session" in f["request"]:
            c.sendall(frame({"id": f["id"], "response": {"opened": {
                "handle": 1, "created": False, "home_dc": 2, "dc_options": [], "name": "x"}}}))
            read_frame(c)
        server.close()
        c.close()

    server = FakeServer(path, handler)
    link = SessionLink("x", socket=path, reconnect_timeout=1.0)
    with pytest.raises(sv.DaemonUnavailable):
        timed(lambda: link.call("get_home_dc"), 10)


@pytest.mark.parametrize(
    "reply",
    [
        b"\x00\x00\x00\x03\xc1\xc1\xc1",  # not MessagePack
        b"\x00\x00\x00\x00",  # empty payload
        b"\xff\xff\xff\xff",  # a 4 GiB frame
        frame([1, 2, 3]),  # not a ServerFrame
        frame({"id": 1}),  # no response
        frame({"id": 1, "response": {"a": 1, "b": 2}}),  # not an enumeration value
        frame({"id": 1, "response": {"error": {"nope": 1}}}),  # an error without a code
        frame({"id": 0, "response": "ok"}),  # id 0 that is no event
    ],
)
def test_malformed_frames_from_a_fake_server(tmpdir_short, reply):
    path = str(tmpdir_short / "f.sock")

    def handler(c):
        read_frame(c)
        c.sendall(reply)
        time.sleep(2)

    server = FakeServer(path, handler)
    try:
        with pytest.raises(sv.VaultError) as e:
            timed(lambda: Connection(path, timeout=1), 5)
        assert isinstance(e.value, (sv.ProtocolError, sv.DaemonUnavailable))
    finally:
        server.close()


def test_silent_server_times_out(tmpdir_short):
    path = str(tmpdir_short / "f.sock")
    server = FakeServer(path, lambda c: time.sleep(5))
    try:
        with pytest.raises(sv.DaemonUnavailable):
            timed(lambda: Connection(path, timeout=0.5), 3)
    finally:
        server.close()


def test_truncated_answer(tmpdir_short):
    path = str(tmpdir_short / "f.sock")

    def handler(c):
        read_frame(c)
        c.sendall(frame({"id": 1, "response": "ok"})[:6])
        c.close()

    server = FakeServer(path, handler)
    try:
        with pytest.raises(sv.DaemonUnavailable):
            timed(lambda: Connection(path, timeout=2), 5)
    finally:
        server.close()


@pytest.mark.parametrize(
    "code,cls",
    [
        ("locked", sv.VaultLocked),
        ({"session_busy": {"holder_pid": 4242}}, sv.SessionBusy),
        ("permission_denied", sv.PermissionDenied),
        ("no_such_session", sv.NoSuchSession),
        ({"protocol_mismatch": {"server_major": 2}}, sv.ProtocolMismatch),
        ("corrupt", sv.Corrupt),
        ("storage", sv.StorageFailed),
        ("something_new", sv.VaultError),
    ],
)
def test_every_error_code_is_a_class(tmpdir_short, code, cls):
    path = str(tmpdir_short / "f.sock")

    def handler(c):
        welcome(c)
        f = read_frame(c)
        c.sendall(frame({"id": f["id"], "response": {"error": {"code": code, "message": "m"}}}))
        time.sleep(1)

    server = FakeServer(path, handler)
    try:
        with pytest.raises(cls) as e:
            SessionLink("x", socket=path)
        assert type(e.value) is cls
        if cls is sv.SessionBusy:
            assert e.value.holder_pid == 4242
    finally:
        server.close()


def test_events_and_interleaved_answers_are_read(tmpdir_short):
    """An event pushed (id 0) before the answer is kept aside, not taken for the answer."""
    path = str(tmpdir_short / "f.sock")

    def handler(c):
        welcome(c)
        f = read_frame(c)
        c.sendall(frame({"id": 0, "response": {"event": "locked"}}))
        c.sendall(frame({"id": f["id"], "response": {"home_dc": 4}}))
        time.sleep(1)

    server = FakeServer(path, handler)
    try:
        conn = Connection(path, timeout=2)
        assert conn.call({"get_home_dc": {"handle": 1}}) == {"home_dc": 4}
        assert conn.events == ["locked"]
    finally:
        server.close()


def test_daemon_restart_reconnects_and_reopens(daemon):
    link = SessionLink("r", socket=daemon.socket, wait_for_unlock=20)
    link.call("set_home_dc", {"dc_id": 4})
    daemon.stop()
    daemon.start()  # comes back locked
    threading.Timer(1.0, daemon.unlock).start()
    assert link.call("get_home_dc") == {"home_dc": 4}
    assert link.reconnects == 1
    link.close()



def test_a_flood_of_events_and_stray_answers_keeps_nothing_unbounded(tmpdir_short):
    """A daemon (or something at its socket) pushing events and answers to ids never sent:
    the call still gets its own answer, the stray answers are dropped and only the newest
    events are kept."""
    from session_vault.connection import MAX_EVENTS

    path = str(tmpdir_short / "f.sock")

    def handler(c):
        welcome(c)
        f = read_frame(c)
        for i in range(500):
            c.sendall(frame({"id": 0, "response": {"event": "locked" if i % 2 else "unlocked"}}))
            c.sendall(frame({"id": 10_000 + i, "response": {"home_dc": 9}}))
        c.sendall(frame({"id": f["id"], "response": {"home_dc": 4}}))
        time.sleep(1)

    server = FakeServer(path, handler)
    try:
        conn = Connection(path, timeout=5)
        assert conn.call({"get_home_dc": {"handle": 1}}) == {"home_dc": 4}
        assert len(conn.events) == MAX_EVENTS and conn.events[-1] == "locked"
        assert conn._answers == {}
    finally:
        server.close()
