//! `deployer health` end to end: the shipped services' `health` checks against the BigQuery
//! emulator seeded at the seeds' healthy and degraded levels, with their drift; the dashboard,
//! the JSON document and the exit codes 0 / 1 / 2.

#[path = "fixtures/bigquery/seed.rs"]
mod seed;

use std::process::{Command, Output};

use seed::Level;

/// The shipped services whose `health` checks read BigQuery.
const BIGQUERY_SERVICES: [&str; 4] = [
    "phase3-processors",
    "phase4-processors",
    "grading-service",
    "prediction-worker",
];

/// A port nothing listens on: the platform cannot be read, so drift is unknown.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn health(args: &[&str], bigquery: &str, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployer"));
    command
        .arg("health")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DEPLOYER_BIGQUERY_ENDPOINT", bigquery)
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .env_remove("DEPLOYER_LOGGING_ENDPOINT")
        .env_remove("DEPLOYER_MONITORING_ENDPOINT")
        .env_remove("DEPLOYER_PROMETHEUS_URL")
        .env_remove("DEPLOYER_SERVICES_DIR")
        .env_remove("DEPLOYER_STATE_DIR");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run deployer")
}

fn service_args(project: &str, endpoint: &str) -> Vec<String> {
    let mut args = Vec::new();
    for service in BIGQUERY_SERVICES {
        args.extend(["--service".to_string(), service.to_string()]);
    }
    args.extend([
        "--project".into(),
        project.into(),
        "--no-fetch".into(),
        "--endpoint".into(),
        endpoint.into(),
    ]);
    args
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn degraded_levels_are_critical_with_vegas_at_44_2() {
    let bigquery = seed::endpoint();
    seed::seed(&bigquery, "health-degraded", Level::Degraded).await;
    let args = service_args("health-degraded", &closed_port());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = health(&args, &bigquery, &[]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("[4/9] Vegas Line Coverage ...................... CRITICAL\n      44.2% (threshold: ≥90%)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("41.7% (threshold: ≥90%)"),
        "grading: {stdout}"
    );
    assert!(
        stdout.contains("runbook: runbooks/phase4-processors.md#troubleshoot"),
        "{stdout}"
    );
    // 5 checks of 4 services, then 4 drift checks that cannot be measured: ERROR, not a pass.
    assert!(stdout.contains("[9/9] Deployment Drift"), "{stdout}");
    assert!(
        stdout.contains(
            "[3/9] Deployment Drift ......................... ERROR\n      drift unknown"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("(CRITICAL): 3 of 9 passed"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "NO_COLOR: {stdout}");
}

#[tokio::test]
async fn healthy_levels_as_json_carry_every_field() {
    let bigquery = seed::endpoint();
    seed::seed(&bigquery, "health-healthy", Level::Healthy).await;
    let args = service_args("health-healthy", &closed_port());
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--format", "json"]);
    let output = health(&args, &bigquery, &[]);
    let stdout = text(&output.stdout);
    let document: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"));
    let checks = document["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 9, "{stdout}");
    let vegas = checks
        .iter()
        .find(|check| check["check"] == "Vegas Line Coverage")
        .unwrap();
    assert_eq!(vegas["service"], "phase4-processors");
    assert_eq!(vegas["status"], "PASS");
    assert_eq!(vegas["value"], 92.4);
    assert_eq!(vegas["unit"], "percent");
    assert_eq!(vegas["thresholds"]["comparison"], ">=");
    assert_eq!(vegas["thresholds"]["warn"], 90.0);
    assert!(vegas["query"]
        .as_str()
        .unwrap()
        .contains("health-healthy.nba_predictions"));
    assert!(vegas["elapsed_ms"].is_u64());
    assert!(vegas["link"].is_string());
    assert_eq!(
        vegas["runbook"],
        "runbooks/phase4-processors.md#troubleshoot"
    );
    let passed = checks
        .iter()
        .filter(|check| check["status"] == "PASS")
        .count();
    let drift_errors = checks
        .iter()
        .filter(|check| check["check"] == "Deployment Drift" && check["status"] == "ERROR")
        .count();
    assert_eq!(drift_errors, 4, "{stdout}");
    assert_eq!(document["score"]["passed"], passed);
    // 5 of 9 pass: the drift that cannot be read keeps the run at WARNING (exit 1).
    assert_eq!(passed, 5, "{stdout}");
    assert_eq!(document["score"]["verdict"], "WARNING");
    assert_eq!(document["exit_code"], 1);
    assert_eq!(output.status.code(), Some(1));
}
