#!/bin/sh
# Pre-build hook of services/hello.toml (run by `deployer build hello` from the repository root):
# compiles the demo service as a static binary for its `FROM scratch` image and copies it to
# examples/hello/dist/hello, where the Dockerfile picks it up.
#
# The explicit `--target` keeps `+crt-static` away from build scripts and proc macros, which must
# stay dynamically linked to run on the build host.
set -eu
cd "${DEPLOYER_REPOSITORY_ROOT:-$(dirname "$0")/../..}"
RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --quiet -p hello --target x86_64-unknown-linux-gnu
mkdir -p examples/hello/dist
cp target/x86_64-unknown-linux-gnu/release/hello examples/hello/dist/hello
echo "built examples/hello/dist/hello for ${DEPLOYER_SERVICE:-hello} at ${DEPLOYER_COMMIT:-unknown commit}"
