#!/usr/bin/env bash
# README's test command: every test of the project, Rust and Python alike.
# Builds the workspace once (the integration tests run the real vaultd and vaultctl, which are
# two crates' binaries), then runs the tests in parallel.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast "$@"
