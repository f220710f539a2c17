//! `deployer health --history bigquery:PROJECT.DATASET.TABLE` against the real BigQuery emulator
//! (`tests/env/20-bigquery.sh`): the table is created when missing, each run is appended and
//! read back by `health history`, and the alert lifecycle lives in the table, so that a new
//! process with no state directory of its own (a new execution of a stateless job) sends no
//! duplicate alert, and the resolved message when things recover. The dashboard shows the
//! previous check from the table and the next one from `--every`.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "fixtures/bigquery/seed.rs"]
mod seed;
#[path = "support/slack.rs"]
mod slack;

use std::process::{Command, Output};

use seed::Level;
use serde_json::{json, Value};

/// The project of the history table (not the checks' own).
const HISTORY_PROJECT: &str = "health-history";
const HOOK: &str = "T000/B000/s3cr3thistory";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `deployer health ARGS` in a fresh state directory of its own: nothing is shared between
/// two calls but the BigQuery table.
fn health(args: &[&str], bigquery: &str, slack_url: &str) -> Output {
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_deployer"))
        .arg("health")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DEPLOYER_BIGQUERY_ENDPOINT", bigquery)
        .env("DEPLOYER_STATE_DIR", state.path())
        .env("SLACK_WEBHOOK_URL", slack_url)
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .env_remove("SLACK_WEBHOOK_URL_CRITICAL")
        .env_remove("SLACK_WEBHOOK_URL_WARNING")
        .env_remove("DEPLOYER_HEALTH_HISTORY")
        .env_remove("DEPLOYER_HEALTH_EVERY")
        .env_remove("DEPLOYER_LOGGING_ENDPOINT")
        .env_remove("DEPLOYER_MONITORING_ENDPOINT")
        .env_remove("DEPLOYER_PROMETHEUS_URL")
        .env_remove("DEPLOYER_SERVICES_DIR")
        .output()
        .expect("run deployer");
    // The run's own state directory is empty afterwards but for the history file it may
    // not write: the lifecycle must not be kept there.
    assert!(
        !state.path().join("health/alerts.json").exists(),
        "the lifecycle went to the state directory, not to BigQuery"
    );
    output
}

/// Runs a query on the emulator's REST API directly (not through deployer).
async fn query(bigquery: &str, sql: &str) -> Vec<Vec<Value>> {
    let url = format!(
        "{}/bigquery/v2/projects/{HISTORY_PROJECT}/queries",
        bigquery.trim_end_matches('/')
    );
    let answer: Value = reqwest::Client::new()
        .post(&url)
        .json(&json!({"query": sql, "useLegacySql": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["errors"].is_null(), "{sql}: {answer}");
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row["f"]
                .as_array()
                .unwrap()
                .iter()
                .map(|cell| cell["v"].clone())
                .collect()
        })
        .collect()
}

/// A fresh, empty dataset `dataset` in the history project (the table is deployer's to create).
async fn fresh_dataset(bigquery: &str, dataset: &str) {
    let base = format!(
        "{}/bigquery/v2/projects/{HISTORY_PROJECT}/datasets",
        bigquery.trim_end_matches('/')
    );
    let client = reqwest::Client::new();
    let _ = client
        .delete(format!("{base}/{dataset}?deleteContents=true"))
        .send()
        .await;
    let response = client
        .post(&base)
        .json(&json!({"datasetReference": {"projectId": HISTORY_PROJECT, "datasetId": dataset}}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
}

fn run_args<'a>(project: &'a str, store: &'a str, endpoint: &'a str) -> Vec<&'a str> {
    vec![
        "--service",
        "phase4-processors",
        "--project",
        project,
        "--no-fetch",
        "--no-architecture",
        "--endpoint",
        endpoint,
        "--history",
        store,
        "--every",
        "6h",
        "--format",
        "json",
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lifecycle_and_the_history_live_in_a_bigquery_table_across_processes() {
    let bigquery = seed::endpoint();
    seed::seed(&bigquery, "health-hist-bad", Level::Degraded).await;
    seed::seed(&bigquery, "health-hist-good", Level::Healthy).await;
    fresh_dataset(&bigquery, "ops").await;
    let store = format!("bigquery:{HISTORY_PROJECT}.ops.health_history");
    let slack = slack::SlackStandIn::start(&[HOOK]);
    let hook = slack.hook_url(HOOK);
    // An HTTP server that is no Cloud Run: the drift cannot be read (ERROR, a warning).
    let not_cloud_run = bigquery.clone();

    // First run: the table does not exist yet; it is created, the run and the lifecycle
    // state are appended, one digest is sent.
    let output = health(
        &run_args("health-hist-bad", &store, &not_cloud_run),
        &bigquery,
        &hook,
    );
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    let first: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(first["schedule"]["previous_check"], Value::Null);
    assert_eq!(first["schedule"]["every"], "6h");
    assert_eq!(first["schedule"]["history"], store.as_str());
    let last =
        chrono::DateTime::parse_from_rfc3339(first["schedule"]["last_check"].as_str().unwrap())
            .unwrap();
    let next =
        chrono::DateTime::parse_from_rfc3339(first["schedule"]["next_check"].as_str().unwrap())
            .unwrap();
    assert!(
        next > last && next - last <= chrono::Duration::hours(6),
        "{last} {next}"
    );
    assert_eq!(
        next.timestamp() % (6 * 3600),
        0,
        "on the 6-hour boundary: {next}"
    );
    let messages = slack.messages(HOOK);
    assert_eq!(messages.len(), 1, "{stderr}");
    assert!(
        messages[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("deployer health: CRITICAL"),
        "{:?}",
        messages[0]
    );

    // What deployer wrote, read with plain SQL: one run (CRITICAL, its JSON) and one state.
    let rows = query(
        &bigquery,
        &format!(
            "SELECT kind, verdict, record FROM `{HISTORY_PROJECT}.ops.health_history` ORDER BY kind DESC"
        ),
    )
    .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "run");
    assert_eq!(rows[0][1], "CRITICAL");
    let run: Value = serde_json::from_str(rows[0][2].as_str().unwrap()).unwrap();
    let vegas = run["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["check"] == "Vegas Line Coverage")
        .unwrap();
    assert_eq!(vegas["value"], 44.2);
    assert_eq!(rows[1][0], "alerts");
    let state: Value = serde_json::from_str(rows[1][2].as_str().unwrap()).unwrap();
    assert_eq!(
        state["checks"]["phase4-processors/Vegas Line Coverage"]["level"],
        "CRITICAL"
    );

    // A new process, a new (empty) state directory, the same table: nothing is sent again,
    // and the dashboard shows the previous check from the table.
    let mut args = run_args("health-hist-bad", &store, &not_cloud_run);
    args.truncate(args.len() - 2);
    let output = health(&args, &bigquery, &hook);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    assert_eq!(slack.messages(HOOK).len(), 1, "a duplicate alert: {stderr}");
    assert!(
        stdout.contains(" · previous ") && stdout.contains(" (CRITICAL)\nNext Check: "),
        "{stdout}"
    );
    assert!(stdout.contains("(every 6h)"), "{stdout}");

    // Healthy again, in a third process: the resolved message.
    let output = health(
        &run_args("health-hist-good", &store, &not_cloud_run),
        &bigquery,
        &hook,
    );
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    let third: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(third["schedule"]["previous_check"]["verdict"], "CRITICAL");
    let messages = slack.messages(HOOK);
    assert_eq!(messages.len(), 2, "{stderr}");
    let resolved = messages[1]["blocks"].to_string();
    assert!(
        resolved.contains("*RESOLVED* `phase4-processors` · *Vegas Line Coverage*: 92.4%"),
        "{resolved}"
    );
    assert!(!stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"));

    // `health history` reads the three runs back from the table.
    let output = health(
        &[
            "history",
            "--history",
            &store,
            "--check",
            "Vegas Line Coverage",
            "--format",
            "json",
        ],
        &bigquery,
        &hook,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["runs"], 3, "{document}");
    let values: Vec<f64> = document["series"]["phase4-processors/Vegas Line Coverage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| point["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [44.2, 44.2, 92.4]);
    // `--since` filters in the query: nothing is older than an hour.
    let output = health(
        &[
            "history",
            "--history",
            &store,
            "--since",
            "1h",
            "--format",
            "json",
        ],
        &bigquery,
        &hook,
    );
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["runs"], 3, "{document}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_cannot_be_used_is_reported_not_silent() {
    let bigquery = seed::endpoint();
    seed::seed(&bigquery, "health-hist-nods", Level::Healthy).await;
    let slack = slack::SlackStandIn::start(&[HOOK]);
    let hook = slack.hook_url(HOOK);
    // The dataset does not exist: the table cannot be created.
    let store = format!("bigquery:{HISTORY_PROJECT}.no_such_dataset.health_history");
    let mut args = run_args("health-hist-nods", &store, &bigquery);
    args.truncate(args.len() - 2);
    let output = health(&args, &bigquery, &hook);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: the run is not recorded: cannot create `{store}`"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A malformed store is a usage error naming the flag's value.
    let output = health(&["--history", "bigquery:just-a-table"], &bigquery, &hook);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--history"), "{stderr}");
    assert!(stderr.contains("is not PROJECT.DATASET.TABLE"), "{stderr}");
}
