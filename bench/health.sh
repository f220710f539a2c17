#!/usr/bin/env bash
# Benchmark of `deployer health`: 50 services x 6 `health` checks, each an `http`
# check against a local provider stand-in that answers every request after its own delay
# between 0.5 s and 2 s (spread evenly over the 300 checks; the slowest waits 2.0 s). Measures,
# through the real binary (the static release build of deploy/build-image.sh, the one the
# scheduled job's image runs), the run's wall time and peak memory (/usr/bin/time -v), and
# compares the wall time with that of the slowest single check run alone (`--service` of the
# service holding it: the same process start, config load and drift, one check of 2.0 s and 5
# faster ones) and with the 2.0 s delay itself.
# Target: wall <= 1.2 x the slowest single check.
#
# The drift check of each service runs too, against an endpoint that is no Cloud Run (the
# stand-in answers 404): it fails fast as ERROR, so the figure is the checks' concurrency.
#
# Usage: bench/health.sh [RUNS]          (default 5; needs python3, /usr/bin/time, git)
#        DEPLOYER=path/to/deployer bench/health.sh    (another binary)
#        TASKS=10 SERVICES=500 bench/health.sh [RUNS]
#            the scheduled job's sharded run: 500 services x 6 checks (3,000; delays 0.5-2.0 s)
#            over 10 tasks started at once as separate processes (CLOUD_RUN_TASK_INDEX/COUNT,
#            one CLOUD_RUN_EXECUTION, one shared DEPLOYER_STATE_DIR): the wall time from the
#            first start to the last exit against the slowest check, the provider requests per
#            run (each check exactly once), and the Logging/BigQuery requests per run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs=${1:-5}
services=${SERVICES:-50}
tasks=${TASKS:-1}
checks=6
dir="$root/target/bench-health"

[ -x /usr/bin/time ] || { echo "error: /usr/bin/time is missing: apt-get install -y time" >&2; exit 1; }
command -v python3 >/dev/null || { echo "error: python3 is missing" >&2; exit 1; }

if [ -z "${DEPLOYER:-}" ]; then
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --quiet --bin deployer --target x86_64-unknown-linux-gnu
    DEPLOYER="$root/target/x86_64-unknown-linux-gnu/release/deployer"
fi

# The provider stand-in: GET /value?delay=SECONDS answers {"value": 1} after SECONDS. Threads,
# and a listen backlog for every connection at once — 300 for one task, 3,000 for 500 services
# over 10 tasks (the default of 5, or any backlog below the connections in flight, makes the
# kernel drop connections and the client retry them 1, 3, 7 s later: the wall time then
# measures TCP's retransmission timer, not deployer). Capped by net.core.somaxconn.
rm -rf "$dir"
mkdir -p "$dir/repo/services" "$dir/repo/runbooks"
cat >"$dir/provider.py" <<'PY'
import json, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        if "delay" in query:
            time.sleep(float(query["delay"][0]))
            body, status = json.dumps({"value": 1}).encode(), 200
        else:
            body, status = b'{"error": "not found"}', 404
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, format, *args):
        if self.path.startswith("/value"):
            sys.stderr.write(f"GET {self.path}\n")
            sys.stderr.flush()

class Server(ThreadingHTTPServer):
    request_queue_size = 8192
    daemon_threads = True

server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
python3 "$dir/provider.py" >"$dir/port" 2>"$dir/provider.log" &
provider=$!
trap 'kill $provider 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do [ -s "$dir/port" ] && break; sleep 0.1; done
port=$(head -1 "$dir/port")
[ -n "$port" ] || { echo "error: the provider stand-in did not start" >&2; cat "$dir/provider.log" >&2; exit 1; }
provider_url="http://127.0.0.1:$port"

# 50 service files, 6 checks each; delays 0.5 s .. 2.0 s in equal steps over the 300 checks.
python3 - "$dir/repo" "$provider_url" "$services" "$checks" <<'PY'
import sys
repo, url, services, checks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
total = services * checks
for s in range(services):
    name = f"svc-{s:03d}" if services > 100 else f"svc-{s:02d}"
    with open(f"{repo}/runbooks/{name}.md", "w") as f:
        f.write(f"# {name}\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n")
    lines = [
        f'name = "{name}"', f'runbook = "runbooks/{name}.md"',
        '[target]', 'kind = "local"',
        '[image]', f'repository = "127.0.0.1:5000/{name}"',
    ]
    for c in range(checks):
        index = s * checks + c
        delay = 0.5 + 1.5 * index / (total - 1)
        lines += [
            '[[checks]]', f'name = "Check {c + 1}"', 'provider = "http"',
            f'url = "{url}/value?delay={delay:.4f}"', 'field = "value"',
            'comparison = ">="', 'warn = 1', 'critical = 0', 'unit = "count"',
            'timeout = "10s"', 'gates = ["health"]',
        ]
    with open(f"{repo}/services/{name}.toml", "w") as f:
        f.write("\n".join(lines) + "\n")
PY
printf 'FROM scratch\n' >"$dir/repo/Dockerfile"
git -C "$dir/repo" init -q -b main
git -C "$dir/repo" add -A
git -C "$dir/repo" -c user.name=bench -c user.email=bench@localhost commit -qm services

if [ "$tasks" -gt 1 ]; then
    echo "== $services services x $checks checks over $tasks tasks (concurrent processes), provider delays 0.5-2.0 s; $runs runs of:"
    echo "   CLOUD_RUN_TASK_INDEX=i CLOUD_RUN_TASK_COUNT=$tasks CLOUD_RUN_EXECUTION=bench-N $DEPLOYER health --endpoint $provider_url --no-fetch --no-alerts --format json"
    : >"$dir/sharded.txt"
    for run in $(seq 1 "$runs"); do
        state=$(mktemp -d)
        before=$(grep -ac '^GET /value' "$dir/provider.log" || true)
        started=$(date +%s.%N)
        pids=()
        for index in $(seq 0 $((tasks - 1))); do
            (cd "$dir/repo" && CLOUD_RUN_TASK_INDEX=$index CLOUD_RUN_TASK_COUNT=$tasks \
                CLOUD_RUN_EXECUTION="bench-$run" DEPLOYER_STATE_DIR="$state" NO_COLOR=1 CI=true \
                "$DEPLOYER" health --endpoint "$provider_url" --no-fetch --no-alerts --format json \
                >"$dir/task-$index.json" 2>"$dir/task-$index.err") &
            pids+=($!)
        done
        for pid in "${pids[@]}"; do wait "$pid" || true; done
        finished=$(date +%s.%N)
        python3 - "$dir" "$tasks" "$started" "$finished" "$((services * checks))" "$state" "$before" >>"$dir/sharded.txt" <<'PY'
import json, os, sys
directory, tasks, started, finished, expected, state, before = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
documents = [json.load(open(f"{directory}/task-{i}.json")) for i in range(tasks)]
measured = [c for d in documents for c in d["checks"] if c["provider"] == "http"]
keys = [(c["service"], c["check"]) for c in measured]
if len(keys) != expected or len(set(keys)) != expected:
    sys.exit(f"expected {expected} distinct http checks, got {len(set(keys))} of {len(keys)}")
senders = [d for d in documents if d["task"]["digest"]]
if len(senders) != 1:
    sys.exit(f"expected one task to complete the run, got {len(senders)}")
runs = open(f"{state}/health/history.jsonl").read().splitlines()
slowest = max(c["elapsed_ms"] for c in measured) / 1000
requests = sum(1 for line in open(f"{directory}/provider.log") if line.startswith("GET /value")) - before
print(f"{finished - started:.3f} {slowest:.3f} {requests} {len(runs)}")
PY
        rm -rf "$state"
        tail -1 "$dir/sharded.txt" | awk -v run="$run" \
            '{printf "run %s: wall %.3f s (first start to last exit), slowest check %.3f s, %d provider requests, %d run recorded\n", run, $1, $2, $3, $4}'
    done
    python3 - "$dir/sharded.txt" "$services" "$checks" "$tasks" <<'PY'
import statistics, sys
rows = [tuple(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
services, checks, tasks = map(int, sys.argv[2:5])
wall = statistics.median(r[0] for r in rows)
slowest = statistics.median(r[1] for r in rows)
print(f"sharded ({services} services x {checks} checks over {tasks} tasks): median wall {wall:.3f} s (min {min(r[0] for r in rows):.3f}, max {max(r[0] for r in rows):.3f}); "
      f"slowest check, median {slowest:.3f} s; wall / slowest check {wall / slowest:.3f}; wall / slowest provider delay (2.0 s) {wall / 2.0:.3f}; "
      f"provider requests per run {int(statistics.median(r[2] for r in rows))}; Logging/BigQuery requests per run 0 (http checks, file store)")
PY
    exit 0
fi

slowest_service=$(printf 'svc-%02d' $((services - 1)))
echo "== $services services x $checks checks, provider delays 0.5-2.0 s; $runs runs each of:"
echo "   fleet:  $DEPLOYER health --endpoint $provider_url --no-fetch --no-alerts --format json"
echo "   single: the same with --service $slowest_service (the slowest check, 2.0 s, with its 5 siblings)"

# One measured run: wall (s), slowest http check's elapsed (s), peak RSS (KiB), to FILE.
measure() {
    local file=$1 expected=$2
    shift 2
    local state started finished code
    state=$(mktemp -d)
    started=$(date +%s.%N)
    set +e
    (cd "$dir/repo" && DEPLOYER_STATE_DIR="$state" NO_COLOR=1 CI=true \
        /usr/bin/time -v -o "$file.time" \
        "$DEPLOYER" health --endpoint "$provider_url" --no-fetch --no-alerts --format json "$@" \
        >"$file.json" 2>"$file.err")
    code=$?
    set -e
    finished=$(date +%s.%N)
    rm -rf "$state"
    python3 - "$file.json" "$started" "$finished" "$file.time" "$code" "$expected" >>"$file" <<'PY'
import json, re, sys
out, started, finished, timefile, code, expected = sys.argv[1:7]
document = json.load(open(out))
measured = [c for c in document["checks"] if c["provider"] == "http"]
passed = sum(1 for c in measured if c["status"] == "PASS")
if len(measured) != int(expected) or passed != len(measured):
    sys.exit(f"expected {expected} passing http checks, got {passed} of {len(measured)} (exit {code})")
slowest = max(c["elapsed_ms"] for c in measured) / 1000
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(timefile).read()).group(1))
print(f"{float(finished) - float(started):.3f} {slowest:.3f} {rss}")
PY
}

: >"$dir/fleet.txt"
: >"$dir/single.txt"
for run in $(seq 1 "$runs"); do
    measure "$dir/fleet.txt" $((services * checks))
    measure "$dir/single.txt" "$checks" --service "$slowest_service"
    paste -d' ' <(tail -1 "$dir/fleet.txt") <(tail -1 "$dir/single.txt") | awk -v run="$run" \
        '{printf "run %s: fleet wall %.3f s (slowest check %.3f s, peak RSS %.1f MiB); single service wall %.3f s (peak RSS %.1f MiB)\n", run, $1, $2, $3/1024, $4, $6/1024}'
done
python3 - "$dir/fleet.txt" "$dir/single.txt" <<'PY'
import statistics, sys
def rows(path):
    return [tuple(map(float, line.split())) for line in open(path) if line.strip()]
fleet, single = rows(sys.argv[1]), rows(sys.argv[2])
fleet_wall = statistics.median(r[0] for r in fleet)
single_wall = statistics.median(r[0] for r in single)
print(f"fleet (300 checks): median wall {fleet_wall:.3f} s (min {min(r[0] for r in fleet):.3f}, max {max(r[0] for r in fleet):.3f}); "
      f"slowest check's own elapsed, median {statistics.median(r[1] for r in fleet):.3f} s; peak RSS max {max(r[2] for r in fleet) / 1024:.1f} MiB")
print(f"single service (6 checks, the slowest 2.0 s): median wall {single_wall:.3f} s; peak RSS max {max(r[2] for r in single) / 1024:.1f} MiB")
print(f"ratio fleet / single-service wall: {fleet_wall / single_wall:.3f}; fleet wall / slowest provider delay (2.0 s): {fleet_wall / 2.0:.3f}   (target <= 1.2)")
PY
