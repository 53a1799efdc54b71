#!/usr/bin/env bash
# Checks the unit files: `systemd-analyze verify` on every unit (system and user), and the
# service's `systemd-analyze security` exposure against the target (<= 1.5).
# Usage: systemd/check.sh PATH-TO-VAULTD (vaultctl is expected beside it)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
vaultd="$(realpath "$1")"
vaultctl="$(dirname "$vaultd")/vaultctl"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/system" "$tmp/user" "$tmp/runtime"
cp "$here"/session-vault.service "$here"/session-vault.socket \
    "$here"/session-vault-backup.service "$here"/session-vault-backup.timer "$tmp/system/"
cp "$here"/user/session-vault.service "$here"/user/session-vault.socket "$tmp/user/"
# The units name the installed binary; point them at the one just built.
sed -i "s#/usr/bin/vaultd#$vaultd#" "$tmp/system/session-vault.service"
sed -i "s#%h/.cargo/bin/vaultd#$vaultd#" "$tmp/user/session-vault.service"
sed -i "s#/usr/bin/vaultctl#$vaultctl#" "$tmp/system/session-vault-backup.service"
systemd-analyze verify "$tmp/system/session-vault.service" "$tmp/system/session-vault.socket" \
    "$tmp/system/session-vault-backup.service" "$tmp/system/session-vault-backup.timer"
# The service with both drop-ins (PostgreSQL store, unattended unlock), as installed together.
mkdir -p "$tmp/dropins/session-vault.service.d"
cp "$tmp/system/session-vault.service" "$tmp/system/session-vault.socket" "$tmp/dropins/"
sed "s#DB.HOST.IP#192.0.2.10#g" "$here/postgres-store.conf" \
    >"$tmp/dropins/session-vault.service.d/postgres-store.conf"
sed "s#/usr/bin/vaultd#$vaultd#" "$here/unattended-unlock.conf" \
    >"$tmp/dropins/session-vault.service.d/unattended-unlock.conf"
# verify only warns about a bad line in a drop-in: any word about one fails the check.
out="$(systemd-analyze verify "$tmp/dropins/session-vault.service" \
    "$tmp/dropins/session-vault.socket" 2>&1)"
if grep -q "session-vault.service.d" <<<"$out"; then
    echo "$out" >&2
    echo "a drop-in does not verify" >&2
    exit 1
fi
XDG_RUNTIME_DIR="$tmp/runtime" systemd-analyze --user verify \
    "$tmp/user/session-vault.service" "$tmp/user/session-vault.socket"
exposure="$(systemd-analyze security --offline=true "$here/session-vault.service" \
    | sed -n 's/.*Overall exposure level for session-vault.service: \([0-9.]*\).*/\1/p')"
echo "systemd units verified; session-vault.service exposure: $exposure (target <= 1.5)"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 1.5) }'
