#!/usr/bin/env bash
# Simulation benchmark of the canary analysis: 2000 simulated rollouts per scenario at 50 req/s
# (10% to the canary), each run through the product's own decision path — the driver's
# `SequentialAnalyser` and the state machine `rollout::machine::advance`, from the identity check
# to the end of the post-deploy monitor — and, on the same traffic, the old fixed-threshold rule;
# the analysis every 5 s and every 15 s (the default `rollout.interval`). Seeded: the output is
# the same on every run. Results are recorded in docs/BENCHMARKS.md ("Canary analysis").
#
# Usage: bench/analysis_simulation.sh [RUNS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-2000}"
seed="${2:-42}"
cargo build --quiet --release --example analysis_simulation
for interval in 5 15; do
    ./target/release/examples/analysis_simulation --runs "$runs" --seed "$seed" --interval "$interval"
    echo
done
