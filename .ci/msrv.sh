#!/usr/bin/env bash
# The declared minimum Rust version (`rust-version` in Cargo.toml) is checked, not assumed:
# `cargo check` of every library and binary of the workspace with that toolchain.
#
# rustup cannot fetch another toolchain on CI's machine (registries only), so the toolchain is
# Debian's: rustc-web/cargo-web, pinned to the version of the declared MSRV and installed when
# missing. They install as /usr/bin/rustc and /usr/bin/cargo, behind rustup's proxies in PATH,
# so they are called by path. A target dir of its own (target/msrv): nothing is shared with
# the stable build.
#
# Tests and benches are not checked: their dev-dependencies (grammers-client 0.11, through
# grammers-crypto's aes 0.9 and sha2 0.11) need Rust 1.89. The MSRV promises that vaultd,
# vaultctl and the libraries build; building the test suite needs a newer toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
# The Debian package of that version (bookworm's rustc-web; bump both together).
deb_version="1.85.0+dfsg3-1~deb12u3"
case "$deb_version" in
    "$msrv".*) ;;
    *) echo "msrv.sh: rust-version $msrv but the pinned Debian toolchain is $deb_version" >&2; exit 1 ;;
esac

if ! /usr/bin/rustc --version 2>/dev/null | grep -q "^rustc $msrv[. ]" \
    || ! /usr/bin/cargo --version 2>/dev/null | grep -q "^cargo $msrv[. ]"; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades \
        "rustc-web=$deb_version" "cargo-web=$deb_version" "libstd-rust-web-dev=$deb_version" \
        >/dev/null
fi

# RUSTC/RUSTDOC by path: the `rustc` first in PATH is rustup's stable one.
RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR=target/msrv \
    /usr/bin/cargo check --workspace --locked --quiet
echo "msrv: the workspace's libraries and binaries build with $(/usr/bin/rustc --version)"
