"""An admin's `vaultctl disconnect` is final (README, PROTOCOL.md section 12): the session's
requests fail with `DisconnectedByAdmin` and it does not reconnect, so it does not take the
lease back."""

import pytest

import session_vault as sv
from session_vault.link import SessionLink


def test_an_admin_disconnect_is_final(daemon):
    link = SessionLink("kicked", socket=daemon.socket, reconnect_timeout=5)
    link.call("set_home_dc", {"dc_id": 4})
    out = daemon.ctl("disconnect", "kicked")
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    for _ in range(2):  # and stays so
        with pytest.raises(sv.DisconnectedByAdmin):
            link.call("get_home_dc")  # was: reconnected quietly, the lease taken back
    assert link.reconnects == 0
    # The lease stays free: another client opens the session exclusively.
    SessionLink("kicked", socket=daemon.socket).close()
    link.close()  # nothing unsent: closes quietly


def test_telethon_session_after_an_admin_disconnect(daemon):
    pytest.importorskip("telethon")
    import datetime

    from telethon.tl import types

    from session_vault.telethon import VaultSession

    s = VaultSession("tkicked", socket=daemon.socket)
    s.set_dc(2, "149.154.167.51", 443)
    s.save()
    assert daemon.ctl("disconnect", "tkicked").returncode == 0
    date = datetime.datetime.fromtimestamp(1_700_000_000, tz=datetime.timezone.utc)
    s.set_update_state(0, types.updates.State(pts=5, qts=0, date=date, seq=1, unread_count=0))
    with pytest.raises(sv.DisconnectedByAdmin):
        s.save()
    with pytest.raises(sv.DisconnectedByAdmin):
        s.close()  # the change was not stored, and is not sent behind the admin's back
    assert s._link.reconnects == 0
    again = VaultSession("tkicked", socket=daemon.socket)  # the lease is free
    try:
        assert again.get_update_state(0) is None
    finally:
        again.close()
