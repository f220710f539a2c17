# A static deployer binary for its own FROM scratch image (deploy/build-image.sh, run by
# tests/health_image.rs) links glibc statically: libc.a comes with libc6-dev. Installed if
# missing; the run stops when it cannot be.
if [ ! -e /usr/lib/x86_64-linux-gnu/libc.a ]; then
    echo "installing libc6-dev (apt): glibc's static libraries" >&2
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libc6-dev >&2; }; then
        echo "error: cannot install the Debian package libc6-dev (static glibc for deploy/build-image.sh)" >&2
        exit 1
    fi
fi
if [ ! -e /usr/lib/x86_64-linux-gnu/libc.a ]; then
    echo "error: /usr/lib/x86_64-linux-gnu/libc.a is missing after installing libc6-dev" >&2
    exit 1
fi
echo "static glibc /usr/lib/x86_64-linux-gnu/libc.a" >&2
