# The BigQuery emulator (PyPI `bqemulator` 1.4.0, DuckDB-backed) on 127.0.0.1:9050, for the
# BigQuery provider and the shipped checks. Installed in a venv cached under
# ~/.cache/deployer/bqemulator-venv (~580 MB, so it is kept between runs); the DuckDB spatial
# extension is copied where DuckDB looks for it, because the emulator otherwise tries to
# download it and crashes offline. Reused when something already answers on the port.
# Exports DEPLOYER_TEST_BIGQUERY (the REST endpoint, without `/bigquery/v2`).
bigquery_address=127.0.0.1:9050
bigquery_project=nba-props-platform
bigquery_venv="${DEPLOYER_BQEMULATOR_VENV:-$HOME/.cache/deployer/bqemulator-venv}"

bigquery_answers() {
    curl -fsS -o /dev/null --max-time 2 \
        "http://$bigquery_address/bigquery/v2/projects/$bigquery_project/datasets" 2>/dev/null
}

if ! bigquery_answers; then
    if [ ! -x "$bigquery_venv/bin/bqemulator" ]; then
        echo "installing bqemulator into $bigquery_venv (pip)" >&2
        if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
            if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2; }; then
                echo "error: cannot install python3-venv (apt) for the BigQuery emulator" >&2
                exit 1
            fi
        fi
        rm -rf "$bigquery_venv"
        mkdir -p "$(dirname "$bigquery_venv")"
        if ! { python3 -m venv "$bigquery_venv" &&
            "$bigquery_venv/bin/pip" install --quiet --disable-pip-version-check \
                bqemulator==1.4.0 duckdb==1.5.5 duckdb-extension-spatial==1.5.5 numpy >&2; }; then
            echo "error: cannot install bqemulator==1.4.0 into $bigquery_venv" >&2
            rm -rf "$bigquery_venv"
            exit 1
        fi
    fi
    # DuckDB loads the spatial extension from ~/.duckdb; the wheel ships the file.
    spatial_source=$(find "$bigquery_venv" -path '*duckdb_extension_spatial*' \
        -name spatial.duckdb_extension -print -quit 2>/dev/null || true)
    if [ -z "$spatial_source" ]; then
        echo "error: spatial.duckdb_extension not found in $bigquery_venv" >&2
        exit 1
    fi
    mkdir -p "$HOME/.duckdb/extensions/v1.5.5/linux_amd64"
    cp -f "$spatial_source" "$HOME/.duckdb/extensions/v1.5.5/linux_amd64/spatial.duckdb_extension"
    bigquery_dir="$DEPLOYER_TEST_STATE/bigquery"
    mkdir -p "$bigquery_dir"
    # setsid: the emulator outlives this script and is reused by later runs.
    BQEMU_ENABLE_FORMAT_EXTENSIONS=false setsid "$bigquery_venv/bin/bqemulator" start \
        --rest-host 127.0.0.1 --rest-port "${bigquery_address##*:}" --grpc-port 0 \
        --project "$bigquery_project" >"$bigquery_dir/bqemulator.log" 2>&1 </dev/null &
    for _ in $(seq 1 150); do
        bigquery_answers && break
        sleep 0.2
    done
    if ! bigquery_answers; then
        echo "error: the BigQuery emulator did not answer on http://$bigquery_address; log:" >&2
        tail -20 "$bigquery_dir/bqemulator.log" >&2
        exit 1
    fi
fi
echo "bigquery http://$bigquery_address (project $bigquery_project)" >&2
export DEPLOYER_TEST_BIGQUERY="http://$bigquery_address"
