#!/usr/bin/env bash
# Benchmark: packaging and building a large build context, `deployer build` versus the
# `docker build` CLI, on the same context, against the same engine.
#
# Generates (once) a git repository under $BENCH_DIR (default target/bench) whose build context
# holds ~20,000 files / ~300 MB plus ~2,600 files that its .dockerignore excludes (a
# `node_modules/` directory and `*.log` files, with one `!` exception). Then measures two
# Dockerfiles with hyperfine:
#
#   send          `FROM scratch` + `LABEL`: the context is packed, sent and unpacked by the
#                 engine, but not copied into a layer: context packaging and transfer.
#   copy          `FROM scratch` + `COPY . /ctx/`: the whole build, including the layer with the
#                 files. The Dockerfile lies inside the context.
#   copy-outside  the same with the Dockerfile outside the context directory. The CLI then adds it
#                 to the context under a random name (`.dockerfile.<random>`), which `COPY .`
#                 copies, so its layer cache never hits; deployer names it by content hash.
#
# Like with like: the engine here has no BuildKit (no buildx plugin), so the CLI runs the classic
# builder, which is the one deployer drives through the API. The CLI gets the same build
# argument and the same labels deployer adds (including a fresh `created` time on every run), so
# both do the same steps; the layer cache is warm for both after the warm-up runs.
#
# Usage: bench/build_context.sh [hyperfine options...]   (needs: docker, hyperfine, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
repository_root=$PWD
bench_dir="${BENCH_DIR:-$repository_root/target/bench}"
repo="$bench_dir/repo"

command -v hyperfine >/dev/null || {
    echo "hyperfine is missing: apt-get install -y hyperfine" >&2
    exit 1
}

cargo build --release --quiet --bin deployer
deployer="$repository_root/target/release/deployer"

if [ ! -e "$repo/.generated" ]; then
    rm -rf "$repo"
    mkdir -p "$repo/services" "$repo/runbooks" "$repo/context"
    python3 - "$repo/context" <<'EOF'
import os, random, sys
root = sys.argv[1]
random.seed(42)
# 19,800 small files (1-8 KiB) in 200 directories two levels deep, and 200 files of 1 MiB.
for index in range(19_800):
    directory = os.path.join(root, "src", f"module{index % 20:02d}", f"part{index % 200:03d}")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"file{index:05d}.dat"), "wb") as handle:
        handle.write(os.urandom(random.randint(1024, 8192)))
os.makedirs(os.path.join(root, "assets"), exist_ok=True)
for index in range(200):
    with open(os.path.join(root, "assets", f"blob{index:03d}.bin"), "wb") as handle:
        handle.write(os.urandom(1 << 20))
# Excluded by .dockerignore: a dependency directory and log files (one kept by an exception).
for index in range(2_500):
    directory = os.path.join(root, "node_modules", f"package{index % 50:02d}")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"index{index:04d}.js"), "wb") as handle:
        handle.write(os.urandom(4096))
for index in range(100):
    with open(os.path.join(root, "src", f"module{index % 20:02d}", f"debug{index:03d}.log"), "wb") as handle:
        handle.write(os.urandom(2048))
with open(os.path.join(root, "src", "module00", "keep.log"), "wb") as handle:
    handle.write(b"kept by an exception\n")
EOF
    printf 'node_modules\n**/*.log\n!src/module00/keep.log\n' >"$repo/context/.dockerignore"
    printf '# Runbook: bench\n\n## Pre-flight\n\n## Deploy\n\n## Verify\n\n## Troubleshoot\n\n## Rollback\n' \
        >"$repo/runbooks/bench.md"
    # The context is generated data: ignored by git, so the tree is clean and the tag stable.
    printf 'context/\n.generated\n' >"$repo/.gitignore"
    git -C "$repo" init -q
    git -C "$repo" add -A
    git -C "$repo" -c user.name=bench -c user.email=bench@example.com commit -qm bench
    touch "$repo/.generated"
fi

# Dockerfiles and service files (cheap: rewritten on every run).
printf 'FROM scratch\nLABEL bench=send\n' >"$repo/context/send.Dockerfile"
printf 'FROM scratch\nCOPY . /ctx/\n' >"$repo/context/copy.Dockerfile"
printf 'FROM scratch\nCOPY . /ctx/\n' >"$repo/copy-outside.Dockerfile"
for kind in send copy copy-outside; do
    case $kind in
    copy-outside) dockerfile=copy-outside.Dockerfile ;;
    *) dockerfile=context/$kind.Dockerfile ;;
    esac
    printf 'name = "bench-%s"\nrunbook = "runbooks/bench.md"\n\n[target]\nkind = "local"\n\n[image]\nrepository = "deployer-bench/%s"\n\n[build]\ncontext = "context"\ndockerfile = "%s"\n' \
        "$kind" "$kind" "$dockerfile" >"$repo/services/bench-$kind.toml"
done
git -C "$repo" add -A
git -C "$repo" -c user.name=bench -c user.email=bench@example.com commit -qm "bench files" >/dev/null || true

commit=$(git -C "$repo" rev-parse HEAD)
files=$(find "$repo/context" -type f | wc -l)
size=$(du -sh "$repo/context" | cut -f1)
echo "context: $files files, $size (before .dockerignore); engine $(docker version --format '{{.Server.Version}}')" >&2

for kind in ${BENCH_KINDS:-send copy copy-outside}; do
    case $kind in
    copy-outside) dockerfile=copy-outside.Dockerfile ;;
    *) dockerfile=context/$kind.Dockerfile ;;
    esac
    labels="--label org.opencontainers.image.revision=$commit --label dev.deployer.service=bench-$kind"
    labels="$labels --label dev.deployer.version=0.1.0"
    hyperfine --warmup 1 --runs "${BENCH_RUNS:-5}" "$@" \
        --export-markdown "$bench_dir/$kind.md" \
        --command-name "deployer build ($kind)" \
        "cd $repo && $deployer build bench-$kind" \
        --command-name "docker build CLI ($kind)" \
        "cd $repo && DOCKER_BUILDKIT=0 docker build -q -f $dockerfile -t deployer-bench/$kind:cli --build-arg BUILD_COMMIT=$commit $labels --label org.opencontainers.image.created=\$(date -u +%FT%TZ) context"
done
for kind in ${BENCH_KINDS:-send copy copy-outside}; do
    echo "### $kind"
    cat "$bench_dir/$kind.md"
done
