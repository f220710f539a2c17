#!/usr/bin/env bash
# A property-test campaign (docs/FUZZING.md): runs each named property of tests/never_panic.rs
# (module `properties`) in batches of fresh random cases until its time is up, and prints one
# Markdown row per property: cases, seconds, result. proptest stands in for `cargo fuzz`, which
# needs a nightly toolchain these machines do not have. A failing batch stops the property and
# prints proptest's shrunk input: turn it into a named regression test.
#
# Usage: bench/fuzz.sh SECONDS PROPERTY...
#   e.g. bench/fuzz.sh 600 arbitrary_bytes_as_a_service_file_never_panic_the_loader
# BATCH=N sets the cases per batch (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -lt 2 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: bench/fuzz.sh SECONDS PROPERTY..." >&2
    exit 2
fi
seconds="$1"
shift
batch="${BATCH:-1000}"
binary=$(cargo test --test never_panic --no-run --message-format json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["target"]["name"] == "never_panic":
        print(message["executable"])')
if [ -z "$binary" ]; then
    echo "error: cannot build the never_panic test binary (cargo test --test never_panic --no-run)" >&2
    exit 1
fi
echo "| property | cases | time | result |"
echo "|---|---|---|---|"
for property in "$@"; do
    # Listed into a variable: `| grep -q` under pipefail could fail on the lister's SIGPIPE.
    listed=$("$binary" --list --exact "properties::$property" 2>/dev/null || true)
    if [[ "$listed" != *": test"* ]]; then
        echo "error: no property \`properties::$property\` in tests/never_panic.rs" >&2
        exit 2
    fi
    start=$(date +%s)
    cases=0
    result=pass
    while [ $(($(date +%s) - start)) -lt "$seconds" ]; do
        if ! PROPTEST_CASES="$batch" "$binary" --exact "properties::$property" --quiet >"target/fuzz-$property.log" 2>&1; then
            result="FAIL (see target/fuzz-$property.log)"
            break
        fi
        cases=$((cases + batch))
    done
    echo "| \`$property\` | $cases | $(($(date +%s) - start)) s | $result |"
done
