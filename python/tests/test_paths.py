"""The socket is found where the Rust client looks (proto/src/paths.rs)."""

import os

from session_vault.connection import default_socket_path


def test_env_then_user_then_system(monkeypatch, tmpdir_short):
    monkeypatch.setenv("SESSION_VAULT_SOCKET", "/x/y.sock")
    assert default_socket_path() == "/x/y.sock"
    monkeypatch.setenv("SESSION_VAULT_SOCKET", "")  # empty counts as unset
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmpdir_short))
    user = os.path.join(str(tmpdir_short), "session-vault", "vault.sock")
    if not os.path.exists("/run/session-vault/vault.sock"):
        # neither exists: the per-user path, since XDG_RUNTIME_DIR is set
        assert default_socket_path() == user
    os.makedirs(os.path.dirname(user))
    open(user, "w").close()
    assert default_socket_path() == user  # it exists: preferred to the system one
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.delenv("SESSION_VAULT_SOCKET")
    assert default_socket_path() == "/run/session-vault/vault.sock"
