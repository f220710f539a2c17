#!/usr/bin/env bash
# Benchmark of `deployer drift` on a large history: one service on the preflight
# benchmark's generated repository (100 000 commits), deployed 600 commits behind `main` (the
# seeds saw 598). Times drift through the library (in-memory platform, `origin/main` as last
# fetched, paths `src/module30/**`, schema paths `schemas/**`) and the git CLI gathering the same
# facts in one run, and prints both and their ratio. Targets: median <= 100 ms, <= 2x git.
#
# Usage: bench/drift.sh [COMMITS] [BEHIND]      (defaults 100000 600)
#        PROFILE=release bench/drift.sh          (default: dev, unoptimised: an upper bound)
# The repository is the one bench/preflight.sh generates under target/bench-preflight (it is run
# once to generate it when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
commits=${1:-100000}
behind=${2:-600}
runs=11
dir=target/bench-preflight/repo-$commits
if [ ! -d "$dir/.git" ]; then
  echo "== generating the repository with bench/preflight.sh"
  bench/preflight.sh "$commits" "$behind" >/dev/null
fi
main=$(git -C "$dir" rev-parse origin/main)
deployed=$(git -C "$dir" rev-parse "origin/main~$behind")
echo "== repository: $(git -C "$dir" rev-list --count "$main") commits; deployed ${deployed:0:7} is $behind behind origin/main ${main:0:7}"

profile=${PROFILE:-dev}
mkdir -p target/bench-drift
echo "== deployer drift (library, $profile profile)"
cargo bench --quiet --profile "$profile" --bench drift -- "$dir" "$deployed" "$runs" | tee target/bench-drift/deployer.txt
deployer_ms=$(sed -n 's/^median_ms=//p' target/bench-drift/deployer.txt)
relevant=$(sed -n 's/^relevant=//p' target/bench-drift/deployer.txt)

echo "== git CLI: the same facts (main, ahead/behind, commits touching the paths with subjects, schema files)"
git_facts() {
  git -C "$dir" rev-parse origin/main >/dev/null
  git -C "$dir" rev-list --left-right --count "$deployed...origin/main" >/dev/null
  git -C "$dir" log --format='%H %an %ct %s' "$deployed..origin/main" -- 'src/module30/' >"target/bench-drift/git-log.txt"
  git -C "$dir" diff --name-only "$deployed" origin/main -- 'schemas/' >/dev/null
}
git_facts # warm the page cache like the deployer warm-up run
git_relevant=$(wc -l <target/bench-drift/git-log.txt)
if [ "$git_relevant" -ne "$relevant" ]; then
  echo "error: git finds $git_relevant commits touching src/module30/, deployer $relevant" >&2
  exit 1
fi
times=()
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  git_facts
  times+=($(( ($(date +%s%N) - start) / 1000 )))
done
git_us=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
git_ms=$(echo "scale=1; $git_us / 1000" | bc)
echo "git CLI: median ${git_ms} ms over $runs runs ($git_relevant commits touching src/module30/)"
echo "== ratio deployer / git CLI: $(echo "scale=2; $deployer_ms / $git_ms" | bc)"
