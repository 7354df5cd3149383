#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every test of the
# workspace (unit, integration, end-to-end against real etcd and the real kubectl).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads="${ATREST_TEST_THREADS:-2}"
