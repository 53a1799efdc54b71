#!/usr/bin/env bash
# Tools for the Windows build and its tests under Wine (issue 19), installed beside the rustup
# toolchain so that they never shadow it:
# - Debian's Rust (rustc-web, cargo-web, rust-web-src: a rustc with the standard library's
#   source, which -Zbuild-std needs for the x86_64-win7-windows-gnu target), unpacked with
#   `dpkg-deb -x` under /var/cache/session-vault/rust-<version>/ and reached through wrapper
#   scripts in its bin/ (never on PATH);
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

if [ ! -x "$PREFIX/bin/cargo" ]; then
    apt_update
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (
        cd "$tmp"
        # The compiler, cargo, the standard library's source, and the host standard library
        # (build scripts and proc macros run on Linux).
        apt-get download -qq rustc-web cargo-web rust-web-src libstd-rust-web-dev \
            "libstd-rust-web-$RUST_VERSION" 2>/dev/null
    )
    for deb in "$tmp"/*.deb; do
        case $(basename "$deb") in
            *"_$RUST_VERSION".*) ;;
            *) echo "windows-toolchain: $(basename "$deb") is not Rust $RUST_VERSION" >&2; exit 1 ;;
        esac
    done
    stage=$PREFIX.partial
    rm -rf "$stage"
    mkdir -p "$stage/root" "$stage/bin"
    for deb in "$tmp"/*.deb; do
        dpkg-deb -x "$deb" "$stage/root"
    done
    root=$PREFIX/root
    # Wrappers: rustc finds its sysroot from its own path (root/usr), its shared libraries
    # (librustc_driver, libstd) through LD_LIBRARY_PATH; cargo runs that rustc.
    cat >"$stage/bin/rustc" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$root/usr/bin/rustc" "\$@"
WRAP
    cat >"$stage/bin/rustdoc" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$root/usr/bin/rustdoc" "\$@"
WRAP
    cat >"$stage/bin/cargo" <<WRAP
#!/bin/sh
RUSTC="$PREFIX/bin/rustc" RUSTDOC="$PREFIX/bin/rustdoc" exec "$root/usr/bin/cargo" "\$@"
WRAP
    chmod +x "$stage/bin/"*
    rm -rf "$PREFIX"
    mv "$stage" "$PREFIX"
fi

"$PREFIX/bin/rustc" --version >&2
"$PREFIX/bin/cargo" --version >&2
echo "$PREFIX"
