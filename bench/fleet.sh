#!/usr/bin/env bash
# Fleet deploy wall time on the emulator with real containers (the hello image): six healthy
# services deployed one `deployer deploy NAME` after another, against one
# `deployer deploy --all` with `--parallel 1` and `--parallel 3`; for the team's pipeline shape
# (a chain of five and one independent service) and for six independent services. Each deploy
# uses the test rollout policy (50% → 100%, 1 s looks, 4 s monitor) and 50 req/s of synthetic
# traffic. Needs Docker. Results are recorded in docs/BENCHMARKS.md ("Fleet deploy").
#
# Usage: bench/fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run --test fleet_deploy --run-ignored only --no-capture \
    fleet_wall_time_against_the_sum_of_single_deploys 2>&1 | grep -E "^(pipeline|6 independent)|PASS|FAIL"
