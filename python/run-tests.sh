#!/usr/bin/env bash
# The Python package's tests, against the workspace's real binaries and real Telethon and
# Pyrogram from PyPI, in virtual environments under target/python-venv/ (created on first
# use, reused after): one per Telethon version of the matrix (1.45, current; 1.34, older 1.x).
#
#   python/run-tests.sh [pytest args…]
#
# Binaries: $VAULTD, $VAULTCTL, $DUMP_SESSION (default target/debug/vaultd, vaultctl,
# examples/dump_session). This script builds no Rust: run `cargo build --workspace
# --all-targets` first. $PYTHON picks the interpreter (default python3, >= 3.8).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
export VAULTD="${VAULTD:-$root/target/debug/vaultd}"
export VAULTCTL="${VAULTCTL:-$root/target/debug/vaultctl}"
export DUMP_SESSION="${DUMP_SESSION:-$root/target/debug/examples/dump_session}"
for b in "$VAULTD" "$VAULTCTL" "$DUMP_SESSION"; do
  [[ -x "$b" ]] || { echo "run-tests.sh: $b is missing: cargo build --workspace --all-targets" >&2; exit 2; }
done

matrix=("1.45.0" "1.34.0")
status=0
for telethon in "${matrix[@]}"; do
  venv="$root/target/python-venv/telethon-$telethon"
  want="$(cat python/requirements-test.txt; echo "Telethon==$telethon")"
  if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.requirements" 2>/dev/null)" != "$want" ]]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r python/requirements-test.txt "Telethon==$telethon"
    printf '%s' "$want" > "$venv/.requirements"
  fi
  # The package itself, from the work tree (no build isolation: setuptools is in the venv).
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e python/ >/dev/null
  echo "== Telethon $telethon, Pyrogram 2.0.106 =="
  if [[ "$telethon" == "${matrix[0]}" ]]; then
    args=(python/tests)
  else
    # The older Telethon: what depends on Telethon's version.
    args=(python/tests/test_telethon_diff.py python/tests/test_clients_offline.py python/tests/test_interop.py)
  fi
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "${args[@]}" "$@" || status=1
done
exit $status
