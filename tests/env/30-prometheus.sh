# Prometheus (Debian package `prometheus`, 2.42) on 127.0.0.1:9090, for the `prometheus`
# provider and request counts. Installed if missing (the packaged service is stopped: we run
# our own config); scrapes itself as two jobs every second (`up` is then two series, the
# provider's "more than one series" case), and whatever targets the tests write as file
# service discovery JSON into $DEPLOYER_TEST_PROMETHEUS_TARGETS (the Cloud Run emulator's
# `/metrics`, scraped every second).
# Reused when something already answers there. Exports DEPLOYER_TEST_PROMETHEUS and
# DEPLOYER_TEST_PROMETHEUS_TARGETS.
prometheus_address=127.0.0.1:9090
prometheus_dir="$DEPLOYER_TEST_STATE/prometheus"

prometheus_has_samples() {
    curl -fsS --max-time 2 "http://$prometheus_address/api/v1/query?query=up" 2>/dev/null |
        grep -q '"job":"self"'
}

# A Prometheus already listening is reused only if it reads our targets directory: one started
# for another checkout would never scrape the emulators these tests start.
prometheus_is_ours() {
    curl -fsS --max-time 2 "http://$prometheus_address/api/v1/status/config" 2>/dev/null |
        grep -qF "$prometheus_dir/targets/"
}

mkdir -p "$prometheus_dir/targets"
if curl -fsS -o /dev/null --max-time 2 "http://$prometheus_address/-/ready" 2>/dev/null && ! prometheus_is_ours; then
    echo "error: a Prometheus on http://$prometheus_address scrapes another checkout's targets (not $prometheus_dir/targets); stop it, or run the tests from that checkout" >&2
    exit 1
fi
if ! prometheus_has_samples; then
    if ! curl -fsS -o /dev/null --max-time 2 "http://$prometheus_address/-/ready" 2>/dev/null; then
        if ! command -v prometheus >/dev/null 2>&1; then
            echo "installing prometheus (apt)" >&2
            if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2; }; then
                echo "error: cannot install the Debian package prometheus" >&2
                exit 1
            fi
            if command -v systemctl >/dev/null 2>&1; then
                systemctl stop prometheus >/dev/null 2>&1 || true
            fi
            service prometheus stop >/dev/null 2>&1 || true
        fi
        cat >"$prometheus_dir/prometheus.yml" <<CONFIG
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: self
    static_configs:
      - targets: ["$prometheus_address"]
  - job_name: self-again
    static_configs:
      - targets: ["$prometheus_address"]
  - job_name: emulator
    file_sd_configs:
      - files: ["$prometheus_dir/targets/*.json"]
        refresh_interval: 1s
CONFIG
        rm -rf "$prometheus_dir/data"
        # setsid: Prometheus outlives this script and is reused by later runs.
        setsid prometheus --config.file="$prometheus_dir/prometheus.yml" \
            --storage.tsdb.path="$prometheus_dir/data" \
            --web.listen-address="$prometheus_address" >"$prometheus_dir/prometheus.log" 2>&1 </dev/null &
    fi
    # Ready in ~0.2 s, but the first samples appear seconds later.
    for _ in $(seq 1 150); do
        prometheus_has_samples && break
        sleep 0.2
    done
    if ! prometheus_has_samples; then
        echo "error: Prometheus on http://$prometheus_address has no samples of itself; log:" >&2
        tail -20 "$prometheus_dir/prometheus.log" >&2
        exit 1
    fi
fi
echo "prometheus http://$prometheus_address" >&2
export DEPLOYER_TEST_PROMETHEUS="http://$prometheus_address"
export DEPLOYER_TEST_PROMETHEUS_TARGETS="$prometheus_dir/targets"
