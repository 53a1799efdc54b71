"""How the client writes the peers of `cache_peers`: as the arrays of their nine fields to a
daemon of protocol minor 8 or later (PROTOCOL.md section 4), as maps to an older one, which
reads nothing else; built anew for each send, so the fields kept for a re-send stay maps.
(Every test against the real vaultd, of minor 8, writes its peers as arrays.)"""

import msgpack

from session_vault.link import SessionLink


class Conn:
    def __init__(self, minor):
        self.server_minor = minor


def link(minor):
    # The request building alone: no daemon, no socket.
    l = object.__new__(SessionLink)
    l.conn = Conn(minor)
    l.handle = 3
    return l


PEER = {"kind": "user", "id": 7, "access_hash": 70, "bot": True, "username": "ann"}


def test_peers_go_as_arrays_to_a_daemon_of_minor_8_and_as_maps_to_an_older_one():
    fields = {"peers": [PEER, {"kind": "channel", "id": 9, "channel_kind": "megagroup"}]}
    old = link(7)._request("cache_peers", fields)
    assert old == {"cache_peers": {"handle": 3, "peers": fields["peers"]}}
    new = link(8)._request("cache_peers", fields)
    assert new == {"cache_peers": {"handle": 3, "peers": [
        ["user", 7, 70, True, None, None, "ann", None, None],
        ["channel", 9, None, None, None, "megagroup", None, None, None],
    ]}}
    # The fields kept for a re-send are untouched.
    assert fields["peers"][0] is PEER and PEER["kind"] == "user"
    # Under half the bytes of the map form with every field.
    assert 2 * len(msgpack.packb(new)) < len(msgpack.packb({"cache_peers": {"peers": [
        {f: p.get(f) for f in ("kind", "id", "access_hash", "bot", "is_self", "channel_kind",
                               "username", "phone", "name")} for p in fields["peers"]]}}))
    # Other requests are as they were.
    assert link(8)._request("get_peer", {"query": "self_user"}) == {
        "get_peer": {"handle": 3, "query": "self_user"}}
