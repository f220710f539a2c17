//! `deployer check` end to end: the shipped services' BigQuery checks against the BigQuery
//! emulator seeded at the team's levels, as a dashboard and as JSON (insta snapshots, times
//! filtered), and the exit codes 0 / 2 / 3 and usage errors.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "fixtures/bigquery/seed.rs"]
mod seed;

use std::process::{Command, Output};

use seed::Level;

fn deployer(args: &[&str], bigquery: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DEPLOYER_BIGQUERY_ENDPOINT", bigquery)
        .env_remove("DEPLOYER_LOGGING_ENDPOINT")
        .env_remove("DEPLOYER_MONITORING_ENDPOINT")
        .env_remove("DEPLOYER_PROMETHEUS_URL")
        .env("NO_COLOR", "1")
        .output()
        .expect("run deployer")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn with_time_filters(test: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"· \d+ ms", "· [TIME] ms");
    settings.add_filter(r#""elapsed_ms": \d+"#, r#""elapsed_ms": "[TIME]""#);
    settings.bind(test);
}

#[tokio::test]
async fn degraded_vegas_coverage_is_critical_on_the_dashboard() {
    let endpoint = seed::endpoint();
    seed::seed(&endpoint, "cli-text-degraded", Level::Degraded).await;
    let output = deployer(
        &[
            "check",
            "phase4-processors",
            "--gate",
            "health",
            "--project",
            "cli-text-degraded",
        ],
        &endpoint,
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    with_time_filters(|| insta::assert_snapshot!("text_degraded", stdout(&output)));
}

#[tokio::test]
async fn healthy_phase3_checks_pass_as_json() {
    let endpoint = seed::endpoint();
    seed::seed(&endpoint, "cli-json-healthy", Level::Healthy).await;
    let output = deployer(
        &[
            "check",
            "phase3-processors",
            "--gate",
            "health",
            "--project",
            "cli-json-healthy",
            "--format",
            "json",
        ],
        &endpoint,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["exit_code"], 0);
    assert_eq!(document["results"][0]["value"], 5.0);
    assert_eq!(document["results"][1]["value"], 100.0);
    with_time_filters(|| insta::assert_snapshot!("json_healthy", stdout(&output)));
}

#[test]
fn nothing_evaluated_exits_3_and_never_passes() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let output = deployer(&["check", "prediction-worker", "--gate", "health"], &closed);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("Recent Predictions"), "{text}");
    assert!(text.contains("ERROR"), "{text}");
    assert!(text.contains("0 passed"), "{text}");
}

#[test]
fn a_gate_without_checks_or_an_unknown_gate_is_a_usage_error() {
    let output = deployer(
        &["check", "phase3-processors", "--gate", "canary"],
        "http://127.0.0.1:1",
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no check gating `canary`"), "{stderr}");
    let output = deployer(
        &["check", "phase3-processors", "--gate", "deploy"],
        "http://127.0.0.1:1",
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`deploy` is not a gate"), "{stderr}");
}
