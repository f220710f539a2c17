#!/usr/bin/env bash
# Chaos benchmark: the fault matrix of tests/faults.rs, larger, driving the real
# `deployer` binary against the project's Cloud Run emulator (real containers of the demo
# service `examples/hello`). Four families, RUNS runs each (default 12):
#
#   api       Admin API faults × canary health: 30% of writes answer 429, 30% of reads answer
#             503, or 300 ms on every Google API call; × a healthy canary (must be promoted,
#             exit 0) or one failing half its requests (`FAIL_RATE=0.5`, must be rolled back,
#             exit 4). Cycles through the 6 combinations.
#   rollback  `kill -9` of a deploy once its journal shows `verifying`, `canary` or `monitoring`
#             (cycling), then `deployer rollback` (must exit 0, the stable revision serving).
#   deploy    the same kills, then a new `deployer deploy` of another commit (must exit 0, say
#             it recovered the interrupted rollout, and promote its own revision).
#   race      two deploys of one service at once (exactly one exits 0, the other 3 naming the
#             lock's holder).
#   transient issue #19's fault mix: 30% of every `/v2` call (Cloud Run Admin API reads and
#             writes, and Cloud Logging `entries.list`) answers 503 or 429, and every one takes
#             200 ms more; with its short policy (10% → 100%, `hold` 30 s, looks every 5 s,
#             monitor 15 s every 5 s). Alternates a healthy canary (must be promoted, exit 0)
#             and one failing half its requests (must be rolled back, exit 4).
#
# Every run gets a fresh emulator, service and state directory. The kill is timed on the local
# journal (`$DEPLOYER_STATE_DIR/rollouts/*.json`, written after each journalled write landed),
# polled every 5 ms, never on a fixed sleep; for `verifying` (a window of a few milliseconds)
# the emulator adds 300 ms to Admin API reads until the kill. After the kill the service's own
# journal must still show the targeted phase.
#
# "Right outcome": the exit codes (and messages) above. "Consistent end state", read from the
# emulator's REST API, not from deployer: exactly one revision serves 100% (the expected one),
# the split names no other revision with traffic, the journal is finished, and no lock is left.
#
# Usage: bench/chaos.sh [RUNS]               (default 12 per family)
#        PROFILE=release bench/chaos.sh      (default: debug; the binary is built first)
#        FAMILIES="api race" bench/chaos.sh  (a subset; `transient` is not in the default set:
#                                            FAMILIES=transient bench/chaos.sh 24 → 12 + 12)
# Prints one line per run, then the table recorded in docs/BENCHMARKS.md; per-run logs are kept
# in target/bench-chaos/. Exits 1 unless every run had the right outcome and end state.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-12}
profile=${PROFILE:-debug}
families=${FAMILIES:-api rollback deploy race}
deployer="$PWD/target/$profile/deployer"
if [ "$profile" = release ]; then
  cargo build --release --quiet --bin deployer
else
  cargo build --quiet --bin deployer
fi

work=$PWD/target/bench-chaos
rm -rf "$work" && mkdir -p "$work/repo/services" "$work/repo/runbooks"
printf 'FROM scratch\n' >"$work/repo/Dockerfile"
export DEPLOYER_SERVICES_DIR=$work/repo/services
unset DEPLOYER_CLOUD_RUN_ENDPOINT DEPLOYER_EMULATOR_ENDPOINT DEPLOYER_MONITORING_ENDPOINT \
  DEPLOYER_LOGGING_ENDPOINT

# The demo service's image, FROM scratch, built the way `deployer build hello` builds it.
image=deployer-bench/hello:latest
examples/hello/build.sh >/dev/null
docker build --quiet --tag "$image" examples/hello >/dev/null

stable_commit=5ab1e00000000000000000000000000000000001
first_commit=c0ffee0000000000000000000000000000000002
second_commit=bead000000000000000000000000000000000003

endpoint=""
data_dir=""
stop_emulator() {
  if [ -n "$data_dir" ]; then
    "$deployer" emulator stop --data-dir "$data_dir" >/dev/null 2>&1 || true
  fi
  data_dir=""
}
trap stop_emulator EXIT

# The rollout policy of tests/faults.rs (50% → 100%, looks every second, 4 s of monitor).
quick_policy='steps = [50, 100]
hold = "20s"
interval = "1s"
max_error_rate = 0.2
min_requests = 20
inconclusive = "rollback"
monitor_duration = "4s"
monitor_interval = "1s"
consecutive_error_limit = 3'
# The short policy of issue #19 (the `transient` family).
short_policy='steps = [10, 100]
hold = "30s"
interval = "5s"
max_error_rate = 0.2
min_requests = 20
inconclusive = "rollback"
monitor_duration = "15s"
monitor_interval = "5s"
consecutive_error_limit = 3'

# A service file with the rollout policy $2 (default: the quick one), its runbook.
service_file() {
  local name=$1 policy=${2:-$quick_policy}
  printf '# Runbook: %s\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n`deployer rollback %s`\n' \
    "$name" "$name" >"$work/repo/runbooks/$name.md"
  cat >"$work/repo/services/$name.toml" <<EOF
name = "$name"
runbook = "runbooks/$name.md"

[target]
kind = "local"

[image]
repository = "127.0.0.1:5000/$name"

[build]
context = "."
dockerfile = "Dockerfile"

[health]
path = "/health"
timeout = "2s"

[rollout]
$policy
EOF
}

faults() {
  curl -fsS -X PUT "$endpoint/emulator/v1/faults" -H 'content-type: application/json' \
    -d "$1" >/dev/null
}

# deploy_exec NAME COMMIT LABEL [ARGS...]: becomes an unattended deploy of the hello image,
# output in $run_dir/LABEL.{out,err}. `deploy_exec ... &` makes `$!` the deployer's own pid
# (what `kill -9` must hit); `deploy` runs it to its end.
deploy_exec() {
  local name=$1 commit=$2 label=$3
  shift 3
  exec "$deployer" deploy "$name" --image "$image" --commit "$commit" \
    --env "SERVICE_NAME=$name" --env "BUILD_COMMIT=$commit" "$@" \
    --skip-preflight --non-interactive --endpoint "$endpoint" \
    >"$run_dir/$label.out" 2>"$run_dir/$label.err"
}
deploy() { (deploy_exec "$@"); }

service_json() {
  curl -fsS "$endpoint/v2/projects/local/locations/local/services/$1"
}

# The revision serving 100% (empty unless exactly one serves). A first deploy creates the
# service with Cloud Run's default split, 100% to the latest ready revision (no name).
serving() {
  service_json "$1" | python3 -c '
import json, sys
service = json.load(sys.stdin)
serving = [t for t in service.get("trafficStatuses", []) if int(t.get("percent", 0))]
latest = service.get("latestReadyRevision", "").rsplit("/", 1)[-1]
print(serving[0].get("revision") or latest if len(serving) == 1 and int(serving[0]["percent"]) == 100 else "")'
}

# check_state NAME EXPECTED: EXPECTED is a revision name, or `commit:SHA` (the journal's
# promoted canary of that commit). Prints "ok" or what is wrong.
check_state() {
  service_json "$1" | python3 -c '
import json, sys
service = json.load(sys.stdin)
expected = sys.argv[1]
annotations = service.get("annotations", {})
journal = json.loads(annotations["deployer.dev/rollout"]) if "deployer.dev/rollout" in annotations else None
problems = []
if expected.startswith("commit:"):
    if not journal or journal.get("commit") != expected[7:] or journal.get("phase") != "promoted":
        problems.append(f"journal is not the promoted rollout of {expected}: {journal}")
    expected = (journal or {}).get("canary", "?")
statuses = [(t.get("revision"), int(t.get("percent", 0))) for t in service.get("trafficStatuses", [])]
serving = [(r, p) for r, p in statuses if p]
if serving != [(expected, 100)]:
    problems.append(f"serving {serving}, expected [({expected!r}, 100)]")
others = [t for t in service.get("traffic", []) if int(t.get("percent", 0)) and t.get("revision") != expected]
if others:
    problems.append(f"split names others with traffic: {others}")
if "deployer.dev/lock" in annotations:
    problems.append("lock left: " + annotations["deployer.dev/lock"])
if journal is None or journal.get("phase") not in ("promoted", "rolled-back", "stopped", "held", "rollback-failed"):
    problems.append(f"journal unfinished: {journal}")
print("ok" if not problems else "; ".join(problems))' "$2"
}

# A fresh emulator and service NAME (rollout policy $2, default the quick one) serving its
# stable revision; sets $stable.
stage() {
  local name=$1
  stop_emulator
  data_dir=$run_dir/emulator
  endpoint=$("$deployer" emulator --detach --port 0 --data-dir "$data_dir")
  export DEPLOYER_STATE_DIR=$run_dir/state
  service_file "$name" "${2:-}"
  deploy "$name" "$stable_commit" stable || {
    echo "error: the stable deploy of $name failed:" >&2
    cat "$run_dir/stable.err" >&2
    exit 1
  }
  stable=$(serving "$name")
}

# kill_at NAME PHASE: starts a deploy of $first_commit and kill -9s it once the local journal
# shows PHASE; sets $killed_at to the phase the service's journal shows after the kill.
kill_at() {
  local name=$1 phase=$2 journal="$run_dir/state/rollouts/local--local--$1.json"
  [ "$phase" = verifying ] && faults '{"latencyMs": 300, "method": "GET", "pathPrefix": "/v2/"}'
  deploy_exec "$name" "$first_commit" killed &
  local pid=$! deadline=$((SECONDS + 60))
  until grep -q "\"phase\": \"$phase\"" "$journal" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      break
    fi
    sleep 0.005
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  faults '{}'
  killed_at=$(service_json "$name" | python3 -c '
import json, sys
journal = json.load(sys.stdin).get("annotations", {}).get("deployer.dev/rollout")
print(json.loads(journal)["phase"] if journal else "none")')
}

results=$work/results.tsv
: >"$results"
record() { # family case seconds outcome state detail
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"
  printf '%-8s %-22s %4ss  outcome %-4s state %-4s %s\n' "$@" >&2
}

phases=(verifying canary monitoring)
fault_names=(429 503 latency)
fault_configs=(
  '{"errorRate": 0.3, "errorStatus": 429, "method": "PATCH", "pathPrefix": "/v2/"}'
  '{"errorRate": 0.3, "errorStatus": 503, "method": "GET", "pathPrefix": "/v2/"}'
  '{"latencyMs": 300}'
)

for family in $families; do
  for ((index = 0; index < runs; index++)); do
    name="chaos-$family-$index"
    run_dir=$work/runs/$name
    mkdir -p "$run_dir"
    started=$SECONDS
    outcome=no state=no detail=""
    case $family in
    api)
      kind=$((index % 3)) faulty=$(((index / 3) % 2))
      case_name="${fault_names[$kind]} $([ $faulty = 1 ] && echo faulty || echo healthy)"
      stage "$name"
      faults "${fault_configs[$kind]}"
      code=0
      if [ $faulty = 1 ]; then
        deploy "$name" "$first_commit" canary --env FAIL_RATE=0.5 || code=$?
        expected_code=4 expected=$stable
      else
        deploy "$name" "$first_commit" canary || code=$?
        expected_code=0 expected=commit:$first_commit
      fi
      faults '{}'
      [ $code = $expected_code ] && outcome=ok
      detail="exit $code"
      ;;
    transient)
      faulty=$((index % 2))
      case_name="503+429 $([ $faulty = 1 ] && echo faulty || echo healthy)"
      stage "$name" "$short_policy"
      faults '{"errorRate": 0.3, "errorStatuses": [503, 429], "pathPrefix": "/v2/", "latencyMs": 200}'
      code=0
      if [ $faulty = 1 ]; then
        deploy "$name" "$first_commit" canary --env FAIL_RATE=0.5 || code=$?
        expected_code=4 expected=$stable
      else
        deploy "$name" "$first_commit" canary || code=$?
        expected_code=0 expected=commit:$first_commit
      fi
      faults '{}'
      [ $code = $expected_code ] && outcome=ok
      detail="exit $code"
      [ $code = $expected_code ] ||
        detail="$detail: $(tail -n 3 "$run_dir/canary.err" | tr '\t\n' '  ' | cut -c1-300)"
      ;;
    rollback | deploy)
      phase=${phases[$((index % 3))]}
      case_name="kill@$phase"
      stage "$name"
      kill_at "$name" "$phase"
      code=0
      if [ "$family" = rollback ]; then
        "$deployer" rollback "$name" --non-interactive --endpoint "$endpoint" \
          >"$run_dir/rollback.out" 2>"$run_dir/rollback.err" || code=$?
        [ $code = 0 ] && outcome=ok
        expected=$stable
      else
        deploy "$name" "$second_commit" next || code=$?
        [ $code = 0 ] && grep -q "interrupted rollout" "$run_dir/next.err" "$run_dir/next.out" &&
          outcome=ok
        expected=commit:$second_commit
      fi
      detail="killed at $killed_at, exit $code"
      [ "$killed_at" = "$phase" ] || { outcome=no; detail="$detail (kill missed $phase)"; }
      ;;
    race)
      case_name="two deploys"
      stage "$name"
      a=0 b=0
      deploy_exec "$name" "$first_commit" first &
      pid_a=$!
      deploy_exec "$name" "$second_commit" second &
      pid_b=$!
      wait $pid_a || a=$?
      wait $pid_b || b=$?
      detail="exits $a/$b"
      if [ $a = 0 ] && [ $b = 3 ]; then
        expected=commit:$first_commit loser=second
      elif [ $a = 3 ] && [ $b = 0 ]; then
        expected=commit:$second_commit loser=first
      else
        expected=commit:none loser=""
      fi
      [ -n "$loser" ] && grep -q "is locked by" "$run_dir/$loser.err" && outcome=ok
      ;;
    esac
    end_state=$(check_state "$name" "$expected")
    if [ "$end_state" = ok ]; then state=ok; else detail="$detail; $end_state"; fi
    stop_emulator
    record "$family" "$case_name" $((SECONDS - started)) "$outcome" "$state" "$detail"
  done
done

python3 - "$results" "$runs" "$profile" <<'PY'
import collections, statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
families = collections.OrderedDict()
for family, case, seconds, outcome, state, detail in rows:
    families.setdefault(family, []).append((case, int(seconds), outcome, state, detail))
labels = {
    "api": "API faults (429 / 503 / latency) × healthy / faulty canary",
    "rollback": "kill -9 at verifying / canary / monitoring, then `rollback`",
    "deploy": "kill -9 at verifying / canary / monitoring, then `deploy`",
    "race": "two concurrent deploys of one service",
    "transient": "30% of /v2 calls (Admin API + Logging) 503/429, +200 ms; short policy",
}
print(f"\n{sys.argv[3]} binary, {sys.argv[2]} runs per family\n")
print("| family | runs | right outcome | consistent end state | seconds per run (median / max) |")
print("|---|---|---|---|---|")
total = right = consistent = 0
for family, results in families.items():
    n = len(results)
    ok_outcome = sum(1 for r in results if r[2] == "ok")
    ok_state = sum(1 for r in results if r[3] == "ok")
    times = [r[1] for r in results]
    total, right, consistent = total + n, right + ok_outcome, consistent + ok_state
    print(f"| {labels.get(family, family)} | {n} | {ok_outcome}/{n} ({100 * ok_outcome / n:.0f}%) "
          f"| {ok_state}/{n} ({100 * ok_state / n:.0f}%) | {statistics.median(times):.0f} / {max(times)} |")
print(f"| **all** | {total} | {right}/{total} | {consistent}/{total} | |")
transient = families.get("transient", [])
if transient:
    print("\n| transient: canary | runs | promoted (exit 0) | rolled back (exit 4) | consistent end state | seconds per run (median / max) |")
    print("|---|---|---|---|---|---|")
    for kind in ("healthy", "faulty"):
        runs_of = [r for r in transient if r[0].endswith(kind)]
        if not runs_of:
            continue
        n = len(runs_of)
        promoted = sum(1 for r in runs_of if r[4].startswith("exit 0"))
        rolled = sum(1 for r in runs_of if r[4].startswith("exit 4"))
        ok_state = sum(1 for r in runs_of if r[3] == "ok")
        times = [r[1] for r in runs_of]
        print(f"| {kind} | {n} | {promoted}/{n} | {rolled}/{n} | {ok_state}/{n} "
              f"| {statistics.median(times):.0f} / {max(times)} |")
failures = [(f, r) for f, results in families.items() for r in results if r[2] != "ok" or r[3] != "ok"]
for family, (case, _, outcome, state, detail) in failures:
    print(f"FAILED {family} {case}: outcome {outcome}, state {state}: {detail}")
sys.exit(1 if failures else 0)
PY
