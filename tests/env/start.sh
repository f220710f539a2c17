# Sourced by tests/run.sh: runs every `tests/env/NN-*.sh` fragment in order. Each fragment makes
# one part ready (installing it if needed, idempotently) and exports the `DEPLOYER_TEST_*`
# variables the tests read. A part that cannot be made ready stops the run with a clear error:
# tests never skip silently because something is missing.
export DEPLOYER_TEST_STATE="${DEPLOYER_TEST_STATE:-$PWD/target/test-env}"
mkdir -p "$DEPLOYER_TEST_STATE"
for fragment in tests/env/[0-9][0-9]-*.sh; do
    [ -e "$fragment" ] || continue
    echo "== test environment: ${fragment#tests/env/}" >&2
    # shellcheck source=/dev/null
    source "$fragment"
done
