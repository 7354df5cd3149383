#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every test of the
# workspace (unit, integration, end-to-end against real etcd and the real kubectl).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads="${ATREST_TEST_THREADS:-2}"
# Fuzzing: the committed corpora replayed, then a short coverage-guided AFL++ run of every
# target (fuzz/run.sh; RELIABILITY.md has the long runs). ATREST_SKIP_FUZZ=1 leaves it out.
if [ "${ATREST_SKIP_FUZZ:-0}" != 1 ]; then
  (cd fuzz && cargo test --locked --lib -q)
  bash fuzz/run.sh --seconds "${ATREST_FUZZ_SECONDS:-10}"
fi
