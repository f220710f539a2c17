#!/usr/bin/env bash
# Benchmark of `deployer graph --check` for the six shipped services against the local
# emulator: the whole CLI run — loading and validating the service files, reading every
# service's URLs from Cloud Run (the emulator's Admin API, through Google's official client),
# Pub/Sub topics and subscriptions and Cloud Scheduler jobs (through Google's official REST
# admin clients), the comparison and the diagram.
#
# Setup: a detached emulator on a fresh data directory; the five wired shipped services created
# in `nba-props-platform`/`us-west2` with a `FROM scratch` image (the test echo image, built by
# `cargo nextest run --test graph_cli`, or IMAGE=...); the live wiring seeded as declared
# (`PUT /emulator/v1/wiring`), so every run conforms (exit 0).
#
# Usage: bench/graph_check.sh [RUNS]                 (default 20)
#        PROFILE=release bench/graph_check.sh        (default: debug, as the tests build it)
# Prints each run's wall time, then median / p95 / max in ms.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
profile=${PROFILE:-debug}
deployer="$PWD/target/$profile/deployer"
if [ "$profile" = release ]; then
    cargo build --release --quiet --bin deployer
else
    cargo build --quiet --bin deployer
fi
image=${IMAGE:-$(docker images --format '{{.Repository}}:{{.Tag}}' | grep -m1 '^deployer-test-echo:' || true)}
[ -n "$image" ] || {
    echo "error: no image: run \`cargo nextest run --test graph_cli\` once (it builds the echo image) or set IMAGE" >&2
    exit 1
}

work=$PWD/target/bench-graph
rm -rf "$work" && mkdir -p "$work"
data_dir=$work/emulator
stop_emulator() { "$deployer" emulator stop --data-dir "$data_dir" >/dev/null 2>&1 || true; }
trap stop_emulator EXIT
endpoint=$("$deployer" emulator --detach --port 0 --data-dir "$data_dir" 2>/dev/null | grep -o 'http://127.0.0.1:[0-9]*' | head -1)
[ -n "$endpoint" ] || { echo "error: the emulator did not start" >&2; exit 1; }

parent=projects/nba-props-platform/locations/us-west2
url_of() { curl -fsS "$endpoint/v2/$parent/services/$1" | jq -r .uri; }
for service in phase3-processors phase4-processors prediction-coordinator prediction-worker grading-service; do
    curl -fsS -X POST "$endpoint/v2/$parent/services?serviceId=$service" \
        -H 'content-type: application/json' \
        -d "{\"template\": {\"containers\": [{\"image\": \"$image\"}]}}" >/dev/null
done
for service in phase3-processors phase4-processors prediction-coordinator prediction-worker grading-service; do
    for _ in $(seq 100); do
        [ "$(curl -fsS "$endpoint/v2/$parent/services/$service" | jq -r '.latestReadyRevision // ""')" != "" ] && break
        sleep 0.1
    done
done
project=projects/nba-props-platform
curl -fsS -X PUT "$endpoint/emulator/v1/wiring" -H 'content-type: application/json' -d @- >/dev/null <<EOF
{
  "topics": [
    {"name": "$project/topics/phase3-complete"}, {"name": "$project/topics/phase4-complete"},
    {"name": "$project/topics/prediction-requests"}, {"name": "$project/topics/predictions-ready"}
  ],
  "subscriptions": [
    {"name": "$project/subscriptions/phase4-processors-phase3-complete", "topic": "$project/topics/phase3-complete",
     "pushConfig": {"pushEndpoint": "$(url_of phase4-processors)/pubsub"}},
    {"name": "$project/subscriptions/prediction-coordinator-phase4-complete", "topic": "$project/topics/phase4-complete",
     "pushConfig": {"pushEndpoint": "$(url_of prediction-coordinator)/pubsub"}},
    {"name": "$project/subscriptions/prediction-worker-prediction-requests", "topic": "$project/topics/prediction-requests",
     "pushConfig": {"pushEndpoint": "$(url_of prediction-worker)/predict"}},
    {"name": "$project/subscriptions/grading-service-predictions-ready", "topic": "$project/topics/predictions-ready",
     "pushConfig": {"pushEndpoint": "$(url_of grading-service)/pubsub"}}
  ],
  "jobs": [
    {"name": "$project/locations/us-west2/jobs/prediction-coordinator-daily", "schedule": "0 10 * * *",
     "timeZone": "America/Los_Angeles", "httpTarget": {"uri": "$(url_of prediction-coordinator)/start"}}
  ]
}
EOF

check() {
    env -u DEPLOYER_PUBSUB_ENDPOINT -u DEPLOYER_SCHEDULER_ENDPOINT -u DEPLOYER_SERVICES_DIR \
        "$deployer" graph --check --endpoint "$endpoint" >/dev/null 2>"$work/stderr"
}
check || { cat "$work/stderr" >&2; echo "error: the seeded project does not conform" >&2; exit 1; }
tail -1 "$work/stderr"
times=()
for _ in $(seq "$runs"); do
    start=$(date +%s%N)
    check
    end=$(date +%s%N)
    times+=($(((end - start) / 1000000)))
done
printf '%s\n' "${times[@]}" | sort -n >"$work/times"
count=$(wc -l <"$work/times")
median=$(sed -n "$(((count + 1) / 2))p" "$work/times")
p95=$(sed -n "$(((count * 95 + 99) / 100))p" "$work/times")
max=$(tail -1 "$work/times")
echo "deployer graph --check (6 shipped services, $profile build, $runs runs): median ${median} ms, p95 ${p95} ms, max ${max} ms"
