#!/usr/bin/env bash
# The Windows build and its tests under Wine (issue 19), on this Linux machine.
#
#   .ci/windows.sh          lint the workspace for Windows with clippy, build vaultd.exe,
#                           vaultctl.exe and the pipe_smoke example, then run the checks below
#                           under wine64
#   .ci/windows.sh build    build only
#   .ci/windows.sh clippy   lint only: clippy -D warnings on what builds for Windows (see clippy())
#
# Build and lint: Debian's Rust and clippy (.ci/windows-toolchain.sh, beside the rustup
# toolchain) with RUSTC_BOOTSTRAP=1 and -Zbuild-std for x86_64-win7-windows-gnu (the x86_64-pc-windows-gnu
# std needs bcryptprimitives.dll, which Wine 8 lacks), linked by MinGW-w64, into
# target/windows so that the Unix build's target/ is untouched. The linker is set in the
# environment, not in a .cargo/config that the Unix build would read.
#
# Checks, each failing the script with a message naming it: vaultd starts on a throwaway
# data dir and pipe, `vaultctl init` (cheap test KDF), `status`, `lock`, `unlock` with a wrong
# passphrase refused (exit 1), `unlock`, a VaultSession round trip of every request kind over
# the pipe with its lease (client/examples/pipe_smoke.rs), `list` shows the session,
# `grant --group-sid`, a second vaultd on the same data dir is refused, an existing data dir
# open to others (mode 0777: Everyone in its DACL) is refused, and a daemon whose
# admin is another uid refuses this user's `init`, naming the uid its SID maps to. What Wine cannot show (another user refused
# by the pipe's DACL, FILE_FLAG_FIRST_PIPE_INSTANCE against a squatter) is checked only by
# compiling: see README "On Windows".
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-win7-windows-gnu
OUT=target/windows/$TARGET/debug
WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver

say() { echo "windows: $*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}

# `cargo <command> <args>` of Debian's Rust for $TARGET, into target/windows. No debug info: the
# executables are for the checks, and linking 100-200 MB debug executables with MinGW's ld was
# a large share of the build.
rust=""
wcargo() {
    local tool=cargo command=$1
    shift
    [ -n "$rust" ] || rust=$(.ci/windows-toolchain.sh)
    # Clippy through its own wrapper, not `cargo clippy`: see .ci/windows-toolchain.sh.
    [ "$command" = clippy ] && tool=cargo-clippy
    RUSTC_BOOTSTRAP=1 \
        CARGO_PROFILE_DEV_DEBUG=0 \
        CARGO_TARGET_DIR=target/windows \
        CARGO_TARGET_X86_64_WIN7_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
        "$rust/bin/$tool" "$command" --locked --quiet \
        -Zbuild-std=std,panic_abort --target "$TARGET" "$@"
}

build() {
    local t=$SECONDS
    wcargo build -p session-vault-daemon -p vaultctl -p session-vault-client \
        --bins --example pipe_smoke
    say "build: $((SECONDS - t)) s"
}

# Clippy on the Windows build, -D warnings, as CI lints the Unix one: the cfg(windows) code (the
# named-pipe transport and server, the SID mapping, the client's pipe, vaultctl's) is linted
# only here. Every target of every package except the daemon's integration tests (tests/,
# which drive vaultd over Unix sockets: Unix-only, they do not compile for Windows); its unit
# tests are linted too, though they do not run there (the PostgreSQL test cluster skips).
clippy() {
    local t=$SECONDS
    wcargo clippy --workspace --exclude session-vault-daemon --all-targets -- -D warnings
    wcargo clippy -p session-vault-daemon --lib --bins --bench engine -- -D warnings
    # The daemon's unit tests (`--lib` built as a test: `cfg(test)`).
    wcargo clippy -p session-vault-daemon --lib --profile test -- -D warnings
    say "clippy: $((SECONDS - t)) s"
}

# A Unix path as Wine's Z: drive names it.
winpath() { printf 'Z:%s' "${1//\//\\}"; }

# The checks' temp dir (Wine prefix, data dir) and the daemon: the EXIT trap ends and removes
# them.
tmp=""
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ]; then
        kill "$daemon_pid" 2>/dev/null || true
    fi
    if [ -n "$tmp" ]; then
        "$WINESERVER" -k 2>/dev/null || true
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT

run_checks() {
    local t=$SECONDS
    tmp=$(mktemp -d /tmp/sv-win.XXXXXX)
    export WINEPREFIX=$tmp/prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
    "$WINE" wineboot -i >/dev/null 2>&1 || fail "wineboot -i (a fresh WINEPREFIX)"
    say "wine prefix ready: $((SECONDS - t)) s"

    local pipe="\\\\.\\pipe\\session-vault-ci-$$"
    local data
    data=$(winpath "$tmp/data")
    printf 'correct horse battery staple\n' >"$tmp/pass"
    printf 'not the passphrase\n' >"$tmp/wrong"
    local pass wrong
    pass=$(winpath "$tmp/pass")
    wrong=$(winpath "$tmp/wrong")
    export SESSION_VAULT_SOCKET=$pipe

    ctl() { "$WINE" "$OUT/vaultctl.exe" "$@"; }
    # The vault's state as `status --json` says (captured whole: a reader that stops early
    # would make vaultctl fail on a closed stdout).
    state() {
        local out
        out=$(ctl status --json) || fail "vaultctl status"
        printf '%s' "$out" | tr -d ' \n' | sed -n 's/.*"state":"\([a-z_]*\)".*/\1/p'
    }
    expect_state() { [ "$(state)" = "$1" ] || fail "$2: the vault is $(state), not $1"; }

    "$WINE" "$OUT/vaultd.exe" --socket "$pipe" --data-dir "$data" --insecure-allow-weak-kdf \
        >"$tmp/vaultd.log" 2>&1 &
    daemon_pid=$!
    local i
    for i in $(seq 1 300); do
        if ctl status >/dev/null 2>&1; then
            break
        fi
        kill -0 "$daemon_pid" 2>/dev/null || { cat "$tmp/vaultd.log" >&2; fail "vaultd exited at start"; }
        [ "$i" = 300 ] && { cat "$tmp/vaultd.log" >&2; fail "vaultd did not answer on $pipe within 30 s"; }
        sleep 0.1
    done
    say "vaultd answers on $pipe"

    ctl init --passphrase-file "$pass" --weak-passphrase \
        --kdf-memory-kib 64 --kdf-iterations 1 --kdf-parallelism 1 >/dev/null \
        || fail "vaultctl init"
    expect_state unlocked "after init"
    ctl lock >/dev/null || fail "vaultctl lock"
    expect_state locked "after lock"
    local rc=0
    ctl unlock --passphrase-file "$wrong" >/dev/null 2>"$tmp/wrong.err" || rc=$?
    [ "$rc" = 1 ] || fail "unlock with a wrong passphrase: exit $rc, want 1 ($(cat "$tmp/wrong.err"))"
    expect_state locked "after a wrong passphrase"
    # (After a wrong passphrase the daemon holds attempts back a moment: vaultctl says so.)
    ctl unlock --passphrase-file "$pass" >/dev/null 2>"$tmp/unlock.err" \
        || fail "vaultctl unlock: $(cat "$tmp/unlock.err")"
    expect_state unlocked "after unlock"
    say "init, status, lock, wrong unlock refused (exit 1), unlock: ok"

    "$WINE" "$OUT/examples/pipe_smoke.exe" "$pipe" "~/smoke" >"$tmp/smoke.out" 2>&1 \
        || { cat "$tmp/smoke.out" >&2; fail "VaultSession round trip over the pipe (pipe_smoke)"; }
    grep -q 'pipe_smoke: ok' "$tmp/smoke.out" || fail "pipe_smoke did not say ok"
    say "VaultSession round trip over the named pipe: ok"

    ctl list --json >"$tmp/list" || fail "vaultctl list"
    local name
    name=$(grep -o '"name": *"[^"]*/smoke"' "$tmp/list" | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
    [ -n "$name" ] || fail "vaultctl list does not show the session pipe_smoke made"
    # S-1-5-32-545 (Users) is a group any Windows has: gid 545.
    ctl grant "$name" --group-sid S-1-5-32-545 >/dev/null || fail "vaultctl grant --group-sid"
    say "list, grant --group-sid: ok"

    rc=0
    "$WINE" "$OUT/vaultd.exe" --socket "$pipe-2" --data-dir "$data" >"$tmp/second.log" 2>&1 || rc=$?
    [ "$rc" != 0 ] || fail "a second vaultd on the same data dir started"
    grep -q 'another vaultd is running' "$tmp/second.log" \
        || { cat "$tmp/second.log" >&2; fail "the second vaultd did not say why it stopped"; }
    say "second vaultd refused: ok"

    # An existing data directory that others may enter is refused before anything is made in
    # it (as on Unix): one created by Unix mkdir with mode 0777, which Wine shows with an
    # access entry for Everyone.
    mkdir -m 0777 "$tmp/open-dir"
    rc=0
    "$WINE" "$OUT/vaultd.exe" --socket "$pipe-3" --data-dir "$(winpath "$tmp/open-dir")" \
        >"$tmp/open.log" 2>&1 || rc=$?
    [ "$rc" != 0 ] || fail "vaultd started on a data dir open to others"
    grep -q 'grants access to' "$tmp/open.log" \
        || { cat "$tmp/open.log" >&2; fail "vaultd did not say why the open data dir was refused"; }
    [ ! -e "$tmp/open-dir/vaultd.lock" ] || fail "vaultd wrote into the refused data dir"
    say "data dir open to others refused: ok"

    ctl status >/dev/null || fail "vaultd stopped answering"

    # Authorization by the identity the kernel gives: a daemon whose only admin is uid 1
    # refuses this user's `init`, naming the uid its SID maps to (an account: 0x30000 + RID).
    "$WINE" "$OUT/vaultd.exe" --socket "$pipe-3" --data-dir "$(winpath "$tmp/data3")" \
        --admin-uid 1 --insecure-allow-weak-kdf >"$tmp/vaultd3.log" 2>&1 &
    local other=$!
    for i in $(seq 1 300); do
        ctl --socket "$pipe-3" status >/dev/null 2>&1 && break
        [ "$i" = 300 ] && { cat "$tmp/vaultd3.log" >&2; fail "the non-admin daemon did not start"; }
        sleep 0.1
    done
    rc=0
    ctl --socket "$pipe-3" init --passphrase-file "$pass" --weak-passphrase \
        --kdf-memory-kib 64 --kdf-iterations 1 --kdf-parallelism 1 >/dev/null 2>"$tmp/denied.err" || rc=$?
    [ "$rc" = 1 ] || fail "init by a non-admin: exit $rc, want 1 ($(cat "$tmp/denied.err"))"
    local uid
    uid=$(sed -n 's/.*uid \([0-9]*\) is not an admin.*/\1/p' "$tmp/denied.err")
    [ -n "$uid" ] && [ "$uid" -ge $((0x30000)) ] \
        || fail "init by a non-admin was not refused as an account's uid: $(cat "$tmp/denied.err")"
    kill "$other" 2>/dev/null || true
    say "a non-admin (uid $uid, from its SID) refused an admin request: ok"
    say "checks under Wine: $((SECONDS - t)) s"
}

case ${1:-all} in
    build) build ;;
    clippy) clippy ;;
    all)
        clippy
        build
        run_checks
        ;;
    *)
        echo "usage: $0 [build|clippy]" >&2
        exit 2
        ;;
esac
