#!/usr/bin/env bash
# Builds deployer's own image from the repository's `Dockerfile` (FROM scratch): the static
# binary, then `target/image/` (the binary and the CA bundle, all that the `.dockerignore` lets
# into the context besides services/ and runbooks/), then `docker build`. The commands are the
# ones the Dockerfile's header lists. Cargo's cache under target/ and the engine's layer cache
# make a second run with nothing changed take seconds.
#
# Usage: deploy/build-image.sh [TAG]        (default `deployer:local`; prints the image id)
# DEPLOYER_IMAGE_PROFILE=dev builds the binary without optimisations (the test suite's image:
# same Dockerfile, minutes less to compile); the default `release` is the image to ship.
# Needs: cargo, docker, glibc's static libraries (libc6-dev: tests/env/05-static-build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-deployer:local}"
profile="${DEPLOYER_IMAGE_PROFILE:-release}"
case "$profile" in
release) profile_dir=release ;;
dev) profile_dir=debug ;;
*)
    echo "error: DEPLOYER_IMAGE_PROFILE must be \`release\` or \`dev\`, not \`$profile\`" >&2
    exit 2
    ;;
esac
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
ca_bundle="${DEPLOYER_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if [ ! -e /usr/lib/x86_64-linux-gnu/libc.a ]; then
    echo "error: glibc's static library (libc.a) is missing: apt-get install -y libc6-dev" >&2
    exit 1
fi
if [ ! -r "$ca_bundle" ]; then
    echo "error: no CA bundle at $ca_bundle (apt-get install -y ca-certificates, or set DEPLOYER_CA_BUNDLE)" >&2
    exit 1
fi

# The explicit `--target` keeps `+crt-static` away from build scripts and proc macros.
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --profile "$profile" --quiet --bin deployer --target x86_64-unknown-linux-gnu \
    --target-dir "$target_dir"
binary="$target_dir/x86_64-unknown-linux-gnu/$profile_dir/deployer"
# A dynamically linked binary would build an image that cannot start (no loader in scratch).
if command -v file >/dev/null 2>&1 && ! file -L "$binary" | grep -Eq 'statically linked|static-pie linked'; then
    echo "error: $binary is not statically linked: a FROM scratch image cannot run it" >&2
    exit 1
fi

mkdir -p target/image
# cp only when changed: an unchanged file keeps the engine's layer cache.
cmp -s "$binary" target/image/deployer || cp "$binary" target/image/deployer
cmp -s "$ca_bundle" target/image/ca-certificates.crt || cp "$ca_bundle" target/image/ca-certificates.crt

docker build --quiet --tag "$tag" .
