# A local image registry (Debian's `docker-registry`, distribution 2.8) on 127.0.0.1:5000, for
# the build/push tests. Installed if missing; started with a minimal config of our own (the
# packaged one turns on htpasswd auth) and storage under $DEPLOYER_TEST_STATE; reused when
# something already answers /v2/ there. Exports DEPLOYER_TEST_REGISTRY.
registry_address=127.0.0.1:5000

registry_answers() {
    curl -fsS -o /dev/null --max-time 2 "http://$registry_address/v2/" 2>/dev/null
}

if ! registry_answers; then
    if ! command -v docker-registry >/dev/null 2>&1; then
        echo "installing docker-registry (apt)" >&2
        if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >&2; }; then
            echo "error: cannot install the Debian package docker-registry" >&2
            exit 1
        fi
        # The package starts its own service with the packaged (htpasswd) config on :5000;
        # stop it so ours can listen there.
        if command -v systemctl >/dev/null 2>&1; then
            systemctl stop docker-registry >/dev/null 2>&1 || true
        fi
        service docker-registry stop >/dev/null 2>&1 || true
    fi
    registry_dir="$DEPLOYER_TEST_STATE/registry"
    mkdir -p "$registry_dir/storage"
    cat >"$registry_dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $registry_dir/storage
  delete:
    enabled: true
http:
  addr: $registry_address
EOF
    # setsid: the registry outlives this script (tests/run.sh) and is reused by later runs.
    setsid docker-registry serve "$registry_dir/config.yml" >"$registry_dir/registry.log" 2>&1 </dev/null &
    for _ in $(seq 1 100); do
        registry_answers && break
        sleep 0.1
    done
    if ! registry_answers; then
        echo "error: the registry did not answer on http://$registry_address/v2/; log:" >&2
        tail -20 "$registry_dir/registry.log" >&2
        exit 1
    fi
fi
echo "registry http://$registry_address" >&2
export DEPLOYER_TEST_REGISTRY="$registry_address"
