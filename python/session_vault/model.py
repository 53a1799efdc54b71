"""The vault's data model (PROTOCOL.md section 15) as plain dicts, and the bits of it both
library adapters need: marked ids, IP addresses, an empty session, a dirty-set writer.

Marked ("Bot API") ids: users positive, chats ``-id``, channels ``-(10**12 + id)``; the vault
stores bare ids with a kind.
"""

import ipaddress
import time

CHANNEL_BASE = 1_000_000_000_000
# A cache write is sent at the latest this long after it was made (checked at every call),
# and at save() / close(); the daemon then makes it durable within its flush interval.
FLUSH_AFTER = 0.1
PEERS_PER_REQUEST = 500


def unmark(marked):
    """Marked id -> (kind, bare id), or None for an id that names no peer."""
    if marked > 0:
        return "user", marked
    if -CHANNEL_BASE < marked < 0:
        return "chat", -marked
    if marked < -CHANNEL_BASE:
        return "channel", -marked - CHANNEL_BASE
    return None


def mark(kind, bare):
    if kind == "user":
        return bare
    if kind == "chat":
        return -bare
    return -(CHANNEL_BASE + bare)


def address_of(option):
    """(host, port) of a DcOption: its IPv4 address if it has one, else its IPv6 one."""
    if option is None:
        return None, None
    for family in ("ipv4", "ipv6"):
        sa = option.get(family)
        if sa:
            octets, port = sa
            return str(ipaddress.ip_address(bytes(octets))), port
    return None, None


def with_address(option, host, port):
    """A copy of `option` (a DcOption) at `host`:`port`; the other family is cleared so that
    reading the address back gives this one. A host that is not an IP address keeps the
    stored addresses."""
    out = dict(option)
    try:
        ip = ipaddress.ip_address(host)
    except (TypeError, ValueError):
        return out
    sa = [list(ip.packed), int(port or 443)]
    if ip.version == 4:
        out["ipv4"], out["ipv6"] = sa, None
    else:
        out["ipv4"], out["ipv6"] = None, sa
    return out


def empty_extras():
    return {"takeout_id": None, "tmp_auth_key": None, "api_id": None, "test_mode": False}


def empty_state():
    return {"pts": 0, "qts": 0, "date": 0, "seq": 0, "channels": []}


def peer(kind, bare, **fields):
    p = {
        "kind": kind,
        "id": bare,
        "access_hash": None,
        "bot": None,
        "is_self": None,
        "channel_kind": None,
        "username": None,
        "phone": None,
        "name": None,
    }
    p.update(fields)
    return p


def text(value):
    """A stored optional text: "" (how this package clears a field) reads as None."""
    return value or None


class Writer:
    """Write-behind of a session's changes, by key: the newest value of each key is sent.

    `dirty` maps a key (``("peer", marked_id)``, ``"state"``, ``("dc", id)``, …) to a
    ``(request_name, fields)``; `flush` posts them all on the link (durable ones first) and
    waits for every answer, so that two writes of one key are never in flight together (the
    daemon runs a connection's requests concurrently and does not promise their order).
    """

    def __init__(self, link):
        self.link = link
        self.durable = {}
        self.durable_names = set()  # request names put as durable (for re-queued refusals)
        self.cache = {}
        self.peers = {}
        self.since = None
        self.depth = 0  # flushes in progress (a reconnect inside a flush may flush again)
        self.after = None  # runs once the outermost flush has sent everything

    def put(self, key, name, fields, durable=False):
        (self.durable if durable else self.cache)[key] = (name, fields)
        if durable:
            self.durable_names.add(name)
        if self.since is None:
            self.since = time.monotonic()

    def put_peer(self, key, wire_peer):
        """Queues a peer for `cache_peers`; merged into one already queued under `key` by the
        daemon's own rule (a field given replaces, a nil field keeps)."""
        old = self.peers.pop(key, None)  # re-inserted last: the daemon writes in list order
        if old is not None:
            wire_peer = dict(old, **{k: v for k, v in wire_peer.items() if v is not None})
        self.peers[key] = wire_peer
        if self.since is None:
            self.since = time.monotonic()

    def pending(self):
        return bool(self.durable or self.cache or self.peers)

    def keys(self):
        """The keys of the changes not sent yet (peers as ``("peer", key)``, as posted)."""
        return [*self.durable, *self.cache, *(("peer", k) for k in self.peers)]

    def due(self):
        """Whether the timed flush is due (a change waits since FLUSH_AFTER or longer)."""
        return self.since is not None and time.monotonic() - self.since >= FLUSH_AFTER

    def maybe_flush(self):
        """The timed flush: sends what is due without waiting for the answers (the next
        flush reads them first, so no two writes of one key are ever in flight together)."""
        if self.due():
            self.flush(wait=False)

    def flush(self, wait=True):
        from .errors import VaultLocked

        self.depth += 1
        try:
            try:
                self._flush(wait)
            except VaultLocked:
                if not self.link.wait_for_unlock:
                    raise
                self.link._wait_unlocked()
                self._flush(wait)
        finally:
            self.depth -= 1
        if self.depth == 0 and self.after is not None:
            after, self.after = self.after, None
            after()

    def flush_then(self, reload):
        """After a reconnect: sends what was changed but not sent yet, then `reload`s (another
        process may have had the session meanwhile). Inside a flush, the reload waits for the
        outermost one to finish."""
        if self.depth:
            self.then(reload)
        else:
            self.flush()
            reload()

    def then(self, fn):
        """Runs `fn` now if no flush is in progress, else once the outermost one is done."""
        if self.depth:
            self.after = fn
        else:
            fn()

    def _requeue_refused(self):
        """Puts the posted writes the daemon refused back (unless written again since), so
        that the next flush sends them again: a refusal (the vault locked, a storage error)
        is reported once, at the next call, and must not lose the write."""
        for name, fields, keys in self.link.take_refused():
            if name == "cache_peers":
                for (_, k), p in zip(keys, fields["peers"]):
                    self.peers.setdefault(k, p)
            else:
                (key,) = keys
                target = self.durable if name in self.durable_names else self.cache
                if key not in self.durable and key not in self.cache:
                    target[key] = (name, fields)
            if self.since is None:
                self.since = time.monotonic()

    def _flush(self, wait):
        self._requeue_refused()
        self.link._raise_deferred()  # an earlier posted write failed: say so first
        if not self.pending():
            if wait:
                self.link.flush()
            return
        durable, cache, peers = self.durable, self.cache, self.peers
        # Two writes of one key are never in flight together: wait for the earlier answers
        # only when this flush writes a key that is still in flight (new peers never are).
        keys = [*durable, *cache, *(("peer", k) for k in peers)]
        if self.link.in_flight(keys):
            self.link.flush()
        self.durable, self.cache, self.peers, self.since = {}, {}, {}, None
        try:
            for key, (name, fields) in durable.items():
                self.link.post(name, fields, (key,))
            for key, (name, fields) in cache.items():
                self.link.post(name, fields, (key,))
            batch = list(peers.items())
            for i in range(0, len(batch), PEERS_PER_REQUEST):
                chunk = batch[i : i + PEERS_PER_REQUEST]
                self.link.post(
                    "cache_peers",
                    {"peers": [p for _, p in chunk]},
                    tuple(("peer", k) for k, _ in chunk),
                )
            if wait:
                self.link.flush()
        except BaseException:
            # Keep what failed to be written (unless written again since) for the next flush.
            for mine, theirs in ((durable, self.durable), (cache, self.cache), (peers, self.peers)):
                for k, v in mine.items():
                    theirs.setdefault(k, v)
            if self.since is None:
                self.since = time.monotonic()
            raise
