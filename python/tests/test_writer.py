"""The write-behind's ordering rule: two writes of one key are never in flight together (the
daemon runs a connection's requests concurrently), yet new keys never wait for the daemon."""

from session_vault.model import Writer


class FakeLink:
    """Records posts and waits; answers nothing until `flush`."""

    wait_for_unlock = None

    def __init__(self):
        self.log = []
        self.inflight = set()

    refused = ()

    def _raise_deferred(self):
        pass

    def take_refused(self):
        refused, self.refused = list(self.refused), ()
        return refused

    def in_flight(self, keys):
        return any(k in self.inflight for k in keys)

    def post(self, name, fields, keys=()):
        assert not (set(keys) & self.inflight), f"{keys} posted while in flight"
        self.inflight |= set(keys)
        self.log.append(("post", name, tuple(keys)))

    def flush(self):
        self.inflight.clear()
        self.log.append(("wait",))


def test_new_keys_do_not_wait_and_a_key_in_flight_does():
    link = FakeLink()
    w = Writer(link)
    w.put_peer(1, {"kind": "user", "id": 1})
    w.put_peer(2, {"kind": "user", "id": 2})
    w.flush(wait=False)
    w.put_peer(3, {"kind": "user", "id": 3})
    w.flush(wait=False)
    assert ("wait",) not in link.log, link.log  # new peers: sent without waiting
    w.put_peer(1, {"kind": "user", "id": 1, "username": "x"})
    w.put("state", "set_update_state", {"state": {}})
    w.flush(wait=False)
    # peer 1 was in flight: its earlier answer is awaited before it is sent again.
    assert link.log[-3:] == [
        ("wait",),
        ("post", "set_update_state", ("state",)),
        ("post", "cache_peers", (("peer", 1),)),
    ], link.log


def test_a_waiting_flush_ends_with_every_answer():
    link = FakeLink()
    w = Writer(link)
    w.put("home", "set_home_dc", {"dc_id": 2}, durable=True)
    w.flush()
    assert link.log == [("post", "set_home_dc", ("home",)), ("wait",)]
    assert not link.inflight


def test_a_refused_posted_write_is_sent_again_unless_written_since():
    link = FakeLink()
    w = Writer(link)
    w.put("home", "set_home_dc", {"dc_id": 2}, durable=True)
    w.put("state", "set_update_state", {"change": {"secondary": {"qts": 1}}})
    w.put_peer(1, {"kind": "user", "id": 1})
    w.flush()
    # The daemon refused all three for now (the vault locked); the state was written again.
    link.refused = [
        ("set_home_dc", {"dc_id": 2}, ("home",)),
        ("set_update_state", {"change": {"secondary": {"qts": 1}}}, ("state",)),
        ("cache_peers", {"peers": [{"kind": "user", "id": 1}]}, (("peer", 1),)),
    ]
    w.put("state", "set_update_state", {"change": {"secondary": {"qts": 2}}})
    link.log.clear()
    w.flush()
    posted = [entry[1:] for entry in link.log if entry[0] == "post"]
    assert ("set_home_dc", ("home",)) in posted
    assert ("cache_peers", (("peer", 1),)) in posted
    assert posted.count(("set_update_state", ("state",))) == 1
    assert w.durable == {} and w.cache == {} and w.peers == {}
