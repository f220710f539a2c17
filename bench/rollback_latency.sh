#!/usr/bin/env bash
# Benchmark of the emergency rollback: how long `deployer rollback SERVICE` takes from
# process start to traffic moved — the whole CLI run, which ends once the platform acknowledged
# the write (the emulator applies a traffic-only update at once, so its operation is done in the
# PATCH answer). Target: ≤ 300 ms.
#
# Setup: a detached emulator (`deployer emulator --detach`) on a fresh data directory, a
# `kind = "local"` service file in a temporary repository, and two revisions of the demo service
# `examples/hello` deployed with `deployer deploy --image` (a one-step policy, so each deploy
# takes seconds). Then hyperfine times `deployer rollback SERVICE --to A` while its `--prepare`
# step puts 100% back on B, so every timed run really moves traffic.
#
# Usage: bench/rollback_latency.sh [RUNS]            (default 50)
#        PROFILE=debug bench/rollback_latency.sh     (default: release; built by the script)
#        BUILD=0 bench/rollback_latency.sh           (time the binary already built)
# Prints hyperfine's summary, then median / p95 / max in ms (from hyperfine's JSON export, kept
# in target/bench-rollback/rollback.json), and the CLI's own in-process figure for one run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
profile=${PROFILE:-release}
deployer="$PWD/target/$profile/deployer"
if [ "${BUILD:-1}" = 0 ]; then
  : # `BUILD=0`: time the binary already in target/ (say which commit it was built from)
elif [ "$profile" = release ]; then
  cargo build --release --quiet --bin deployer
else
  cargo build --quiet --bin deployer
fi
command -v hyperfine >/dev/null || {
  echo "error: hyperfine is missing (Debian package \`hyperfine\`: apt-get install -y hyperfine)" >&2
  exit 1
}

work=$PWD/target/bench-rollback
rm -rf "$work" && mkdir -p "$work/repo/services" "$work/repo/runbooks" "$work/state"
data_dir=$work/emulator
stop_emulator() { "$deployer" emulator stop --data-dir "$data_dir" >/dev/null 2>&1 || true; }
trap stop_emulator EXIT

# The demo service's image, FROM scratch, built the way `deployer build hello` builds it.
image=deployer-bench/hello:latest
examples/hello/build.sh >/dev/null
docker build --quiet --tag "$image" examples/hello >/dev/null

service=bench-rollback
cat >"$work/repo/runbooks/$service.md" <<EOF
# Runbook: $service
## Pre-flight
## Deploy
## Verify
## Troubleshoot
## Rollback
\`deployer rollback $service\`
EOF
printf 'FROM scratch\n' >"$work/repo/Dockerfile"
cat >"$work/repo/services/$service.toml" <<EOF
name = "$service"
runbook = "runbooks/$service.md"

[target]
kind = "local"

[image]
repository = "127.0.0.1:5000/$service"

[build]
context = "."
dockerfile = "Dockerfile"

[rollout]
steps = [100]
monitor_duration = "0s"
EOF
export DEPLOYER_SERVICES_DIR=$work/repo/services DEPLOYER_STATE_DIR=$work/state
unset DEPLOYER_CLOUD_RUN_ENDPOINT DEPLOYER_EMULATOR_ENDPOINT

endpoint=$("$deployer" emulator --detach --port 0 --data-dir "$data_dir")
echo "== emulator at $endpoint (data $data_dir)" >&2
for commit in aaaaaaa000000000000000000000000000000001 bbbbbbb000000000000000000000000000000002; do
  "$deployer" deploy "$service" --image "$image" --commit "$commit" \
    --env "SERVICE_NAME=$service" --env "BUILD_COMMIT=$commit" \
    --skip-preflight --non-interactive --endpoint "$endpoint" >/dev/null 2>"$work/deploy.log" || {
    echo "error: deploy of $commit failed:" >&2
    cat "$work/deploy.log" >&2
    exit 1
  }
done
status=$("$deployer" status "$service" --endpoint "$endpoint" --format json)
read -r revision_a revision_b < <(python3 -c '
import json, sys
status = json.load(sys.stdin)
names = sorted(r["name"] for r in status["revisions"])
a = next(n for n in names if "-aaaaaaa-" in n)
b = next(n for n in names if "-bbbbbbb-" in n)
print(a, b)' <<<"$status")
echo "== $service: revisions $revision_a (A) and $revision_b (B, serving)" >&2

# Every rollback is recorded in the release history (same write); moving back and forth marks
# each revision as rolled back from, so both directions are forced, with a reason, which is what
# on-call would type for a revision recorded bad. The history reaches its bound (100 entries)
# after the warm-up and stays there: the timed runs carry a full history.
rollback="$deployer rollback $service --non-interactive --endpoint $endpoint --force --reason bench"
hyperfine --shell=none --warmup 3 --runs "$runs" \
  --prepare "$rollback --to $revision_b" \
  --export-json "$work/rollback.json" \
  "$rollback --to $revision_a"

# Every timed run moved traffic: A serves now.
"$deployer" status "$service" --endpoint "$endpoint" --format json | python3 -c '
import json, sys
serving = [(t["revision"], t["percent"]) for t in json.load(sys.stdin)["service"]["traffic_statuses"] if t["percent"]]
assert serving == [(sys.argv[1], 100)], serving' "$revision_a"

# The release history on the platform after all those rollbacks: entries and bytes.
"$deployer" status "$service" --endpoint "$endpoint" --format json | python3 -c '
import json, sys
history = json.load(sys.stdin)["service"]["annotations"].get("deployer.dev/releases", "")
entries = len(json.loads(history)["entries"]) if history else 0
print(f"release history on the service: {entries} entries kept, {len(history)} bytes (bound 49152)")'

python3 - "$work/rollback.json" "$profile" <<'PY'
import json, statistics, sys
times = sorted(t * 1000 for t in json.load(open(sys.argv[1]))["results"][0]["times"])
p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
print(f"rollback latency ({sys.argv[2]} binary, {len(times)} runs): "
      f"median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms "
      f"(target ≤ 300 ms)")
PY
# The CLI's own figure (from its start of `main` to the acknowledged write) for one more run.
$rollback --to "$revision_b" --format json >/dev/null
$rollback --to "$revision_a" --format json | python3 -c '
import json, sys
elapsed = json.load(sys.stdin)["elapsed_ms"]
print(f"in-process elapsed of one run (from the start of the command to the acknowledged write): {elapsed} ms")'
