#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (not committed).

Frames: hand-built MessagePack frames of the protocol (proto/PROTOCOL.md), one per message
kind. Importers: the committed fixtures of tests/fixtures (decoded to their binary payload
for the string targets, which encode it themselves). Needs the `msgpack` Python package.
"""

import base64
import os
import struct
import sys

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")


def frame(value):
    payload = msgpack.packb(value, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


KEY = bytes(range(256))
PEER = {"kind": "user", "id": 5, "access_hash": 7, "bot": False, "is_self": None,
        "channel_kind": None, "username": "someone", "phone": "123", "name": "Some One"}
CHANNEL = dict(PEER, kind="channel", bot=None, channel_kind="megagroup")
DATA = {
    "home_dc": 2,
    "dc_options": [{"id": 2, "ipv4": None, "ipv6": None, "auth_key": KEY}],
    "self_user": {"id": 5, "bot": False},
    "peers": [PEER, CHANNEL],
    "updates_state": {"pts": 1, "qts": 2, "date": 3, "seq": 4,
                      "channels": [{"id": 9, "pts": 10}]},
    "sent_files": [{"md5_digest": b"0123456789abcdef", "file_size": 5, "file_type": 0,
                    "id": 1, "hash": 2}],
    "extras": {"takeout_id": None, "tmp_auth_key": {"dc_id": 2, "key": KEY, "expires_at": 9},
               "api_id": 5, "test_mode": False},
}

REQUESTS = {
    "hello": {"hello": {"protocol_major": 1, "protocol_minor": 0, "client": "seed"}},
    "status": "status",
    "init": {"init": {"passphrase": b"pw", "kdf": {"m_cost_kib": 64, "t_cost": 1, "p_cost": 1}}},
    "unlock": {"unlock": {"passphrase": b"pw"}},
    "lock": "lock",
    "passwd": {"change_passphrase": {"old": b"a", "new": b"b", "kdf": None}},
    "list": "list_sessions",
    "rename": {"rename_session": {"old": "a", "new": "b"}},
    "grant": {"grant": {"name": "a", "uid": 5, "gid": None}},
    "import_session": {"import_session": {"name": "x", "data": DATA, "replace": False,
                                          "owner_uid": None}},
    "open": {"open_session": {"name": "bot", "exclusive": True, "create_if_missing": True}},
    "dc": {"set_dc_option": {"handle": 1, "option": {"id": 2, "ipv4": None, "ipv6": None,
                                                     "auth_key": KEY}}},
    "peers": {"cache_peers": {"handle": 1, "peers": [PEER, CHANNEL]}},
    "get_peer": {"get_peer": {"handle": 1, "query": {"username": "someone"}}},
    "state": {"set_update_state": {"handle": 1, "change": {"channel": {"id": 5, "pts": 3}}}},
    "state_all": {"set_update_state": {"handle": 1, "change": {"all": DATA["updates_state"]}}},
    "sent_file": {"put_sent_file": {"handle": 1, "file": DATA["sent_files"][0]}},
    "import": {"import": {"handle": 1, "data": DATA}},
}
for name, req in REQUESTS.items():
    write("frame_client", name, frame({"id": 2, "request": req}))
write("frame_client", "pipeline",
      b"".join(frame({"id": i, "request": r}) for i, r in enumerate(REQUESTS.values(), 1)))

RESPONSES = {
    "welcome": {"welcome": {"protocol_major": 1, "protocol_minor": 0, "server": "vaultd",
                            "vault_state": "locked"}},
    "ok": "ok",
    "status": {"status": {"state": "unlocked", "vault_path": "/v", "sessions": 3,
                          "uptime_secs": 5, "version": "0.1.0", "pid": 9, "connections": 2}},
    "opened": {"opened": {"handle": 1, "created": True, "home_dc": 2,
                          "dc_options": DATA["dc_options"]}},
    "data": {"session_data": DATA},
    "peer": {"peer": PEER},
    "error": {"error": {"code": {"bad_passphrase": {"retry_after_ms": 500}}, "message": "no"}},
    "locked": {"error": {"code": "locked", "message": "locked"}},
    "event": {"event": "shutting_down"},
    "sessions": {"sessions": [{"summary": {"name": "a", "created_at": 1, "updated_at": 2,
                                           "home_dc": 2, "has_auth_key": True, "user_id": 5,
                                           "peer_count": 3, "owner_uid": 0},
                               "lease_holder_pid": 7}]},
}
for name, resp in RESPONSES.items():
    write("frame_server", name, frame({"id": 2, "response": resp}))

for name in sorted(os.listdir(FIXTURES)):
    path = os.path.join(FIXTURES, name)
    if not os.path.isfile(path):
        continue
    data = open(path, "rb").read()
    if name.endswith((".session", ".sqlite", ".string")):
        write("import_bytes", name, data)
        write("import_file", name, data)
    if name.startswith("grammers-0") and name.endswith(".session"):
        write("import_grammers_tl", name, data)
    if name.endswith(".string"):
        text = data.decode().strip()
        if name.startswith("telethon"):
            write("import_telethon_string", name, base64.urlsafe_b64decode(text[1:]))
        else:
            write("import_pyrogram_string", name,
                  base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
print("seeds written under", os.path.join(HERE, "corpus"), file=sys.stderr)
