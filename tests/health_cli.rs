//! `deployer health` end to end: the shipped services' `health` checks against the BigQuery
//! emulator seeded at the team's healthy and degraded levels, with their drift; the dashboard,
//! the JSON document and the exit codes; Slack alerts through the local stand-in across runs
//! (new processes sharing a state directory): fire once, stay quiet, resolve; the webhook URL
//! never shown; and the trend of `health history`.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "fixtures/bigquery/seed.rs"]
mod seed;
#[path = "support/slack.rs"]
mod slack;

use std::process::{Command, Output};

use seed::Level;

/// The shipped services whose `health` checks read BigQuery.
const BIGQUERY_SERVICES: [&str; 4] = [
    "phase3-processors",
    "phase4-processors",
    "grading-service",
    "prediction-worker",
];

/// Runs `deployer health ARGS` with a state directory of its own (a temporary one that `env` may
/// replace with `DEPLOYER_STATE_DIR`), so that no run writes `health/history.jsonl` into the
/// user's `~/.local/state/deployer`.
fn health(args: &[&str], bigquery: &str, env: &[(&str, &str)]) -> Output {
    let state = tempfile::tempdir().expect("a temporary state directory");
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
        .env_remove("DEPLOYER_HEALTH_HISTORY")
        .env_remove("DEPLOYER_HEALTH_EVERY")
        .env("DEPLOYER_STATE_DIR", state.path());
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
        // These runs are about checks, drift and alerts; `graph_cli` tests the architecture.
        "--no-architecture".into(),
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
    let args = service_args("health-degraded", &bigquery);
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
    let args = service_args("health-healthy", &bigquery);
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

const BASE_HOOK: &str = "T000/B000/s3cr3tbase";
const CRITICAL_HOOK: &str = "T000/B001/s3cr3tcrit";

fn texts(message: &serde_json::Value) -> String {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|block| {
            block["text"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn slack_alerts_fire_once_stay_quiet_and_resolve_across_runs() {
    let bigquery = seed::endpoint();
    seed::seed(&bigquery, "health-slack-bad", Level::Degraded).await;
    seed::seed(&bigquery, "health-slack-good", Level::Healthy).await;
    let slack = slack::SlackStandIn::start(&[BASE_HOOK, CRITICAL_HOOK]);
    slack.lock().rate_limit_next = 1;
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap().to_string();
    let base = slack.hook_url(BASE_HOOK);
    let critical = slack.hook_url(CRITICAL_HOOK);
    let env = [
        ("DEPLOYER_STATE_DIR", state_dir.as_str()),
        ("SLACK_WEBHOOK_URL", base.as_str()),
        ("SLACK_WEBHOOK_URL_CRITICAL", critical.as_str()),
    ];
    // An HTTP server that is no Cloud Run: every service reads as not deployed (drift ERROR).
    let closed = bigquery.clone();
    let run = |project: &str| {
        let args = service_args(project, &closed);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = health(&args, &bigquery, &env);
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(
            !stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"),
            "the webhook URL shows: {stdout}\n{stderr}"
        );
        (output.status.code(), stdout, stderr)
    };

    // First degraded run: one digest per webhook, after waiting out a 429.
    let (code, stdout, stderr) = run("health-slack-bad");
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert_eq!(slack.lock().answers.first(), Some(&429));
    let critical_messages = slack.messages(CRITICAL_HOOK);
    assert_eq!(critical_messages.len(), 1, "{stderr}");
    let body = texts(&critical_messages[0]);
    assert!(
        body.contains("*CRITICAL (new)* `phase4-processors` · *Vegas Line Coverage*: 44.2%"),
        "{body}"
    );
    assert!(body.contains("Grading Completeness"), "{body}");
    // The runbook section, through the repository of `notifications.github_repository`.
    assert!(
        body.contains("<https://github.com/nba-props/platform/blob/main/runbooks/phase4-processors.md#troubleshoot|runbook>"),
        "{body}"
    );
    assert!(critical_messages[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("deployer health: CRITICAL (score 33/100, 3 of 9 passed)"));
    let warnings = slack.messages(BASE_HOOK);
    assert_eq!(warnings.len(), 1, "the drift that cannot be read warns");
    assert!(
        texts(&warnings[0]).contains("*WARNING (new)*"),
        "{warnings:?}"
    );
    assert!(
        stderr.contains("through the webhook in `SLACK_WEBHOOK_URL_CRITICAL`"),
        "{stderr}"
    );

    // The same state again, within the repeat interval: nothing is sent.
    let (code, _, stderr) = run("health-slack-bad");
    assert_eq!(code, Some(2));
    assert_eq!(slack.messages(CRITICAL_HOOK).len(), 1, "{stderr}");
    assert_eq!(slack.messages(BASE_HOOK).len(), 1, "{stderr}");

    // Healthy again: the resolved message, where the critical alerts went.
    let (code, _, stderr) = run("health-slack-good");
    assert_eq!(code, Some(1), "{stderr}");
    let critical_messages = slack.messages(CRITICAL_HOOK);
    assert_eq!(critical_messages.len(), 2, "{stderr}");
    let body = texts(&critical_messages[1]);
    assert!(
        body.contains("*RESOLVED* `phase4-processors` · *Vegas Line Coverage*: 92.4%"),
        "{body}"
    );
    assert!(body.contains("*RESOLVED* `grading-service`"), "{body}");
    assert_eq!(slack.messages(BASE_HOOK).len(), 1);

    // The history holds the three runs: Vegas's trend.
    let output = health(
        &[
            "history",
            "--check",
            "vegas line coverage",
            "--format",
            "json",
        ],
        &bigquery,
        &env,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["runs"], 3);
    let points = document["series"]["phase4-processors/Vegas Line Coverage"]
        .as_array()
        .unwrap();
    let values: Vec<f64> = points
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [44.2, 44.2, 92.4]);
    assert_eq!(points[2]["status"], "PASS");
    let output = health(
        &["history", "--check", "Vegas Line Coverage"],
        &bigquery,
        &env,
    );
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(
            "phase4-processors/Vegas Line Coverage  44.2 44.2 92.4  last PASS, 1/3 passed"
        ),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_failed_delivery_is_reported_and_the_alert_is_kept_for_the_next_run() {
    let bigquery = seed::endpoint();
    seed::seed(&bigquery, "health-slack-fail", Level::Degraded).await;
    let slack = slack::SlackStandIn::start(&[BASE_HOOK]);
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap().to_string();
    // A hook Slack does not know: 404 no_service.
    let gone = slack.hook_url("T000/B000/s3cr3tgone");
    let env = [
        ("DEPLOYER_STATE_DIR", state_dir.as_str()),
        ("SLACK_WEBHOOK_URL", gone.as_str()),
    ];
    // An HTTP server that is no Cloud Run: every service reads as not deployed (drift ERROR).
    let closed = bigquery.clone();
    // Trace logs on: the URL must not show in them either.
    let mut args = vec![
        "-vvv",
        "--service",
        "phase4-processors",
        "--project",
        "health-slack-fail",
        "--no-fetch",
        "--no-architecture",
        "--endpoint",
        closed.as_str(),
        "--format",
        "json",
    ];
    let output = health(&args, &bigquery, &env);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        !stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(
            "Slack refused the message sent to the webhook in `SLACK_WEBHOOK_URL`: 404 no_service"
        ),
        "{stderr}"
    );
    let document: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(document["alerts"]["deliveries"][0]["delivered"], false);
    assert_eq!(
        document["alerts"]["deliveries"][0]["variable"],
        "SLACK_WEBHOOK_URL"
    );
    assert_eq!(output.status.code(), Some(2));
    // Not delivered: the next run (with a working hook) alerts it as new.
    let good = slack.hook_url(BASE_HOOK);
    let env = [
        ("DEPLOYER_STATE_DIR", state_dir.as_str()),
        ("SLACK_WEBHOOK_URL", good.as_str()),
    ];
    args.truncate(9); // without `--format json`
    let output = health(&args, &bigquery, &env);
    assert_eq!(output.status.code(), Some(2));
    let messages = slack.messages(BASE_HOOK);
    assert_eq!(messages.len(), 1, "{}", text(&output.stderr));
    assert!(texts(&messages[0])
        .contains("*CRITICAL (new)* `phase4-processors` · *Vegas Line Coverage*"));
}

#[test]
fn the_scheduled_job_runs_deployer_health_from_the_repositorys_image() {
    use yaml_rust2::YamlLoader;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/health-job.yaml")).unwrap();
    let documents = YamlLoader::load_from_str(&text).unwrap();
    let job = &documents[0];
    assert_eq!(job["apiVersion"].as_str(), Some("run.googleapis.com/v1"));
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let task = &job["spec"]["template"]["spec"]["template"]["spec"];
    assert_eq!(
        task["maxRetries"].as_i64(),
        Some(0),
        "a verdict is not retried"
    );
    let container = &task["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|arg| arg.as_str())
        .collect();
    assert_eq!(args, ["health"]);
    assert!(container["image"].as_str().unwrap().contains("/deployer"));
    let env: Vec<&str> = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|var| var["name"].as_str())
        .collect();
    for name in [
        "SLACK_WEBHOOK_URL",
        "SLACK_WEBHOOK_URL_CRITICAL",
        "DEPLOYER_HEALTH_HISTORY",
        "DEPLOYER_HEALTH_EVERY",
        "GITHUB_REPOSITORY",
    ] {
        assert!(env.contains(&name), "{name} in {env:?}");
    }
    // A stateless job: the history and the lifecycle in a BigQuery table, the schedule's
    // interval the scheduler's (every 6 hours).
    let value = |name: &str| {
        container["env"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|var| var["name"].as_str() == Some(name))
            .and_then(|var| var["value"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        value("DEPLOYER_HEALTH_HISTORY").starts_with("bigquery:"),
        "{}",
        value("DEPLOYER_HEALTH_HISTORY")
    );
    assert_eq!(value("DEPLOYER_HEALTH_EVERY"), "6h");
    // The webhooks come from Secret Manager, never as plain values.
    for var in container["env"].as_vec().unwrap() {
        if var["name"].as_str().unwrap().starts_with("SLACK_") {
            assert!(var["value"].is_badvalue(), "{var:?}");
            assert!(!var["valueFrom"]["secretKeyRef"]["name"].is_badvalue());
        }
    }
    // The image the job runs is the repository's Dockerfile, whose entry point is deployer.
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("ENTRYPOINT [\"/deployer\"]"));
    // The README schedules it every 6 hours with OIDC.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("--schedule=\"0 */6 * * *\""),
        "README schedule"
    );
    assert!(
        readme.contains("--oidc-service-account-email"),
        "README OIDC"
    );
}

#[test]
fn bad_input_is_a_clear_usage_error() {
    let cases: [(&[&str], &str); 7] = [
        (&["history", "--since", "soon"], "`soon` is not a duration"),
        (
            &["--history", "s3://bucket"],
            "use `file` or `bigquery:PROJECT.DATASET.TABLE`",
        ),
        (
            &["history", "--history", "bigquery:p.d.t;x"],
            "is not a table name",
        ),
        (&["--every", "5h"], "`5h` does not divide a day"),
        (&["--concurrency", "0"], "0 is not in 1..=1024"),
        (
            &["--service", "no-such-service", "--no-fetch"],
            "no-such-service",
        ),
        (&["history", "--since", "999999d"], "more than 10 years"),
    ];
    for (args, expected) in cases {
        let state = tempfile::tempdir().unwrap();
        let output = health(
            args,
            "http://127.0.0.1:1",
            &[("DEPLOYER_STATE_DIR", state.path().to_str().unwrap())],
        );
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
