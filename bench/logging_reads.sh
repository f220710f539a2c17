#!/usr/bin/env bash
# Cloud Logging reads per look of the canary analysis, before and after the bounded reader, at
# 50, 500 and 2,000 requests per second to the canary, on the emulator's Logging (its
# `entries.list`, filter language and `sample()`; entries fed with simulated timestamps). The
# product's own readers: the previous full paging (the `cloud-logging` provider's loop over the
# request-log filter) and `CloudLoggingRequests::request_counts`. Requests are counted by the
# emulator. Deterministic: same entries, same insertIds, same sample on every run.
# Results are recorded in docs/BENCHMARKS.md ("Request counts from Cloud Logging").
#
# Usage: bench/logging_reads.sh [RATES] [INTERVAL] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
rates="${1:-50,500,2000}"
interval="${2:-15}"
duration="${3:-45}"
cargo build --quiet --example logging_reads
./target/debug/examples/logging_reads --rates "$rates" --interval "$interval" --duration "$duration"
