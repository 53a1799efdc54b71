#!/usr/bin/env bash
# Tools for the Windows build and its tests under Wine (issue 19), installed beside the rustup
# toolchain so that they never shadow it:
# - Debian's Rust (rustc-web, cargo-web, rust-web-src: a rustc with the standard library's
#   source, which -Zbuild-std needs for the x86_64-win7-windows-gnu target; rust-web-clippy, for
#   `.ci/windows.sh clippy`), unpacked with `dpkg-deb -x` under
#   /var/cache/session-vault/rust-<version>/ and reached through wrapper scripts in its bin/
#   (never on PATH). Clippy is run as `$PREFIX/bin/cargo-clippy clippy ...`, not as
#   `$PREFIX/bin/cargo clippy`: cargo looks for its subcommands in ~/.cargo/bin first, where
#   rustup's cargo-clippy would run rustup's clippy-driver, built for another rustc;
# - the MinGW-w64 linker (gcc-mingw-w64-x86-64) and Wine (wine64, in /usr/lib/wine/), installed
#   with apt-get.
# Idempotent; run as root. Prints the Rust prefix on stdout.
set -euo pipefail

RUST_VERSION=1.96
# The LLVM that Debian's rustc-web $RUST_VERSION links to (libstd-rust-web-$RUST_VERSION depends on it).
LLVM_VERSION=22
PREFIX=/var/cache/session-vault/rust-$RUST_VERSION
export DEBIAN_FRONTEND=noninteractive

updated=0
apt_update() {
    if [ "$updated" = 0 ]; then
        apt-get update -qq
        updated=1
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

# MinGW linker, Wine, and the shared libraries that Debian's rustc and cargo link to (LLVM,
# libgit2): plain runtime libraries, which shadow nothing.
need=()
for p in gcc-mingw-w64-x86-64 wine64 libgit2-1.5 "libllvm${LLVM_VERSION}"; do
    installed "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt_update
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# One installer at a time (CI and a person's build may start together).
mkdir -p "$(dirname "$PREFIX")"
exec 9>"$PREFIX.lock"
flock 9

# The wrappers in $1/bin for the toolchain unpacked in $PREFIX/root (where $1 is moved to, if it
# is a staging dir). rustc, rustdoc and clippy-driver find their sysroot from their own path
# (root/usr), their shared libraries (librustc_driver, libstd) through LD_LIBRARY_PATH; cargo
# runs that rustc; cargo-clippy runs $CARGO (that cargo) with the clippy-driver beside it, which
# inherits LD_LIBRARY_PATH.
wrappers() {
    local bin=$1/bin root=$PREFIX/root tool
    mkdir -p "$bin"
    # Each written beside and renamed into place: a build running meanwhile never reads half a
    # wrapper.
    put() {
        cat >"$bin/$1.new"
        chmod +x "$bin/$1.new"
        mv -f "$bin/$1.new" "$bin/$1"
    }
    for tool in rustc rustdoc clippy-driver; do
        put "$tool" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$root/usr/bin/$tool" "\$@"
WRAP
    done
    put cargo <<WRAP
#!/bin/sh
RUSTC="$PREFIX/bin/rustc" RUSTDOC="$PREFIX/bin/rustdoc" exec "$root/usr/bin/cargo" "\$@"
WRAP
    # Written last: its presence says the prefix is complete.
    put cargo-clippy <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" CARGO="$PREFIX/bin/cargo" exec "$root/usr/bin/cargo-clippy" "\$@"
WRAP
}

# A prefix unpacked before clippy was part of it: add the rust-web-clippy of exactly its
# rustc's version (clippy-driver links to that librustc_driver), unpacked into the same root.
# If the archive no longer has that version, the whole toolchain is installed afresh below.
if [ -x "$PREFIX/bin/cargo" ] && [ ! -x "$PREFIX/bin/cargo-clippy" ]; then
    version=$(zcat "$PREFIX/root/usr/share/doc/rustc-web/changelog.Debian.gz" \
        | sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p')
    apt_update
    if [ -n "$version" ] && (cd "$tmp" && apt-get download -qq "rust-web-clippy=$version" 2>/dev/null); then
        dpkg-deb -x "$tmp"/rust-web-clippy_*.deb "$PREFIX/root"
        rm -f "$tmp"/*.deb
        wrappers "$PREFIX"
    else
        echo "windows-toolchain: rust-web-clippy ${version:-?} (the unpacked rustc's version)" \
            "cannot be downloaded: installing the whole toolchain afresh" >&2
    fi
fi

if [ ! -x "$PREFIX/bin/cargo" ] || [ ! -x "$PREFIX/bin/cargo-clippy" ]; then
    apt_update
    (
        cd "$tmp"
        # The compiler, cargo, clippy, the standard library's source, and the host standard
        # library (build scripts and proc macros run on Linux).
        apt-get download -qq rustc-web cargo-web rust-web-clippy rust-web-src \
            libstd-rust-web-dev "libstd-rust-web-$RUST_VERSION" 2>/dev/null
    )
    # All of one build of Debian's rustc-web source package: clippy-driver and cargo load the
    # librustc_driver and libstd beside them.
    first=""
    for deb in "$tmp"/*.deb; do
        case $(basename "$deb") in
            *"_$RUST_VERSION".*) ;;
            *) echo "windows-toolchain: $(basename "$deb") is not Rust $RUST_VERSION" >&2; exit 1 ;;
        esac
        v=$(dpkg-deb -f "$deb" Version)
        [ -n "$first" ] || first=$v
        if [ "$v" != "$first" ]; then
            echo "windows-toolchain: $(basename "$deb") is $v, not $first like the others" >&2
            exit 1
        fi
    done
    stage=$PREFIX.partial
    rm -rf "$stage"
    mkdir -p "$stage/root"
    for deb in "$tmp"/*.deb; do
        dpkg-deb -x "$deb" "$stage/root"
    done
    wrappers "$stage"
    rm -rf "$PREFIX"
    mv "$stage" "$PREFIX"
fi

"$PREFIX/bin/rustc" --version >&2
"$PREFIX/bin/cargo" --version >&2
"$PREFIX/bin/clippy-driver" --version >&2
echo "$PREFIX"
