#!/usr/bin/env bash
# Benchmark of the preflight checklist on a large history: a generated repository of
# 100 000 commits whose deployed commit is 600 commits behind HEAD (the team saw 598). Times the
# whole checklist minus tests and network (`--no-fetch`, no test command; the platform is the
# in-memory one, `/health` a server on 127.0.0.1) through the library, and the same facts gathered
# by the git CLI, and prints both and their ratio.
#
# Usage: bench/preflight.sh [COMMITS] [BEHIND]      (defaults 100000 600)
#        PROFILE=release bench/preflight.sh          (default: the dev profile, unoptimised: an
#                                                     upper bound, and no long release build)
# The repository is generated with `git fast-import` (the benchmark may use git; deployer never
# does) under target/bench-preflight and reused when it already has the right size.
set -euo pipefail
cd "$(dirname "$0")/.."
commits=${1:-100000}
behind=${2:-600}
runs=7
dir=target/bench-preflight/repo-$commits
mkdir -p target/bench-preflight

if [ ! -d "$dir/.git" ]; then
  echo "== generating $commits commits in $dir"
  rm -rf "$dir.tmp" && git init -q -b main "$dir.tmp"
  started=$(date +%s.%N)
  python3 - "$commits" <<'PY' | git -C "$dir.tmp" fast-import --quiet
import sys
commits = int(sys.argv[1])
out = sys.stdout.buffer
authors = [f"Author {n:02d}" for n in range(20)]
files = [f"src/module{d:02d}/file{f:03d}.py" for d in range(40) for f in range(50)]  # 2000 files
def data(text):
    raw = text.encode()
    out.write(b"data %d\n" % len(raw) + raw + b"\n")
for n in range(1, commits + 1):
    author = authors[n % len(authors)]
    out.write(b"commit refs/heads/main\nmark :%d\n" % n)
    out.write(f"author {author} <a{n % 20}@example.com> {1_600_000_000 + n * 60} +0000\n".encode())
    out.write(f"committer {author} <a{n % 20}@example.com> {1_600_000_000 + n * 60} +0000\n".encode())
    data(f"Change {n}: adjust {files[n % len(files)]}\n")
    if n > 1:
        out.write(b"from :%d\n" % (n - 1))
    if n == 1:
        for path in files:
            out.write(f"M 100644 inline {path}\n".encode())
            data(f"# {path}\n")
        out.write(b"M 100644 inline schemas/predictions.json\n")
        data("{}\n")
    else:
        out.write(f"M 100644 inline {files[n % len(files)]}\n".encode())
        data(f"# {files[n % len(files)]} revision {n}\n")
        if n % 997 == 0:
            out.write(b"M 100644 inline schemas/predictions.json\n")
            data('{"revision": %d}\n' % n)
PY
  git -C "$dir.tmp" checkout -q -f main
  git -C "$dir.tmp" remote add origin "$PWD/$dir.tmp/.git"
  git -C "$dir.tmp" update-ref refs/remotes/origin/main HEAD
  mv "$dir.tmp" "$dir"
  echo "   generated in $(echo "$(date +%s.%N) - $started" | bc) s"
fi
head=$(git -C "$dir" rev-parse HEAD)
deployed=$(git -C "$dir" rev-parse "HEAD~$behind")
echo "== repository: $(git -C "$dir" rev-list --count HEAD) commits, $(git -C "$dir" ls-files | wc -l) files; deployed ${deployed:0:7} is $behind behind HEAD ${head:0:7}"

profile=${PROFILE:-dev}
echo "== deployer (library, $profile profile): the whole checklist, --no-fetch, no test command"
cargo bench --quiet --profile "$profile" --bench preflight -- "$dir" "$deployed" "$runs" | tee target/bench-preflight/deployer.txt
deployer_ms=$(sed -n 's/^median_ms=//p' target/bench-preflight/deployer.txt)

echo "== git CLI: the same facts (status, branch, ahead/behind, count, log, changed paths)"
git_facts() {
  git -C "$dir" status --porcelain >/dev/null
  git -C "$dir" rev-parse --abbrev-ref HEAD >/dev/null
  git -C "$dir" rev-list --left-right --count HEAD...origin/main >/dev/null
  git -C "$dir" rev-list --count "$deployed..HEAD" >/dev/null
  git -C "$dir" log --format='%h %an %s' "$deployed..HEAD" >/dev/null
  git -C "$dir" diff --name-only "$deployed" HEAD >/dev/null
}
git_facts # warm the page cache like the deployer warm-up run
times=()
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  git_facts
  times+=($(( ($(date +%s%N) - start) / 1000 )))
done
git_us=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
git_ms=$(echo "scale=1; $git_us / 1000" | bc)
echo "git CLI: median ${git_ms} ms over $runs runs"
echo "== ratio deployer / git CLI: $(echo "scale=2; $deployer_ms / $git_ms" | bc)"
