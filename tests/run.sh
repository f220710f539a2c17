#!/usr/bin/env bash
# The whole test suite, on a fresh machine: starts every local part the tests talk to (Docker
# check, registry, emulators), then runs all tests. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tests/env/start.sh
source tests/env/start.sh

# Doc tests first, so that the run closes on nextest's summary of every test.
cargo test --workspace --doc --quiet
cargo nextest run --workspace --no-fail-fast "$@"
