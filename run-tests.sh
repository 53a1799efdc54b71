#!/usr/bin/env bash
# README's test command: every test of the project, Rust and Python alike.
# Builds the workspace once (the integration tests run the real vaultd and vaultctl, which are
# two crates' binaries, and the Python tests run them and client/examples/dump_session), then
# runs the Rust tests in parallel and the Python package's tests against the same binaries.
# Arguments go to nextest.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --workspace --all-targets
status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=1
python/run-tests.sh || status=1
exit $status
