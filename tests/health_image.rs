//! The scheduled job's image end to end: the repository's `Dockerfile` built through the Docker
//! Engine (`deploy/build-image.sh`: the static binary, unoptimised here, `FROM scratch`), then `deployer
//! health` run in a container as the Cloud Run Job runs it — no checkout, the services baked
//! in, configuration from the environment (`deploy/health-job.yaml`'s variables) — against the
//! local parts: the BigQuery emulator seeded at the team's degraded levels and the Slack
//! stand-in, reached over the host's network. The container exits 2 (CRITICAL) and Slack gets
//! the digest; the run history and the lifecycle are kept in a BigQuery table, so a second,
//! equally stateless container sends no duplicate alert.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "fixtures/bigquery/seed.rs"]
mod seed;
#[path = "support/slack.rs"]
mod slack;

use std::{path::Path, process::Command};

use seed::Level;
use serde_json::{json, Value};

const IMAGE: &str = "deployer-health-test:latest";
const PROJECT: &str = "health-image";
const BASE_HOOK: &str = "T000/B000/s3cr3timagebase";
const CRITICAL_HOOK: &str = "T000/B001/s3cr3timagecrit";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds the image with the repository's own script (cargo's and the engine's caches make a
/// rebuild with nothing changed take seconds).
fn build_image() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("bash")
        .arg(root.join("deploy/build-image.sh"))
        .arg(IMAGE)
        // The Dockerfile as shipped, with an unoptimised binary: minutes less to compile.
        .env("DEPLOYER_IMAGE_PROFILE", "dev")
        .current_dir(root)
        .output()
        .expect("run deploy/build-image.sh");
    assert!(
        output.status.success(),
        "deploy/build-image.sh failed:\n{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

async fn fresh_dataset(bigquery: &str, project: &str, dataset: &str) {
    let base = format!(
        "{}/bigquery/v2/projects/{project}/datasets",
        bigquery.trim_end_matches('/')
    );
    let client = reqwest::Client::new();
    let _ = client
        .delete(format!("{base}/{dataset}?deleteContents=true"))
        .send()
        .await;
    let response = client
        .post(&base)
        .json(&json!({"datasetReference": {"projectId": project, "datasetId": dataset}}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
}

/// `docker run` of the image, on the host's network (the emulator and the stand-in listen on
/// 127.0.0.1), with `env` and `args` after the entry point.
fn run_container(env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    let mut command = Command::new("docker");
    command.args(["run", "--rm", "--network", "host"]);
    for (name, value) in env {
        command.arg("--env").arg(format!("{name}={value}"));
    }
    command.arg(IMAGE).args(args);
    command.output().expect("run docker")
}

fn texts(message: &Value) -> String {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|block| block["text"]["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jobs_image_runs_health_in_a_container_and_alerts_slack() {
    build_image();
    let bigquery = seed::endpoint();
    seed::seed(&bigquery, PROJECT, Level::Degraded).await;
    fresh_dataset(&bigquery, PROJECT, "image_ops").await;
    let slack = slack::SlackStandIn::start(&[BASE_HOOK, CRITICAL_HOOK]);
    let env = vec![
        ("DEPLOYER_BIGQUERY_ENDPOINT", bigquery.clone()),
        ("SLACK_WEBHOOK_URL", slack.hook_url(BASE_HOOK)),
        ("SLACK_WEBHOOK_URL_CRITICAL", slack.hook_url(CRITICAL_HOOK)),
        // As deploy/health-job.yaml sets them.
        ("GITHUB_REPOSITORY", "nba-props/platform".into()),
        (
            "DEPLOYER_HEALTH_HISTORY",
            format!("bigquery:{PROJECT}.image_ops.health_history"),
        ),
        ("DEPLOYER_HEALTH_EVERY", "6h".into()),
        ("NO_COLOR", "1".into()),
    ];
    // The Cloud Run endpoint is a server that is no Cloud Run (the emulator's): the drift
    // cannot be read, an ERROR, never a pass.
    let args = [
        "health",
        "--service",
        "phase4-processors",
        "--service",
        "grading-service",
        "--project",
        PROJECT,
        "--no-architecture",
        "--endpoint",
        bigquery.as_str(),
    ];
    let output = run_container(&env, &args);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "Vegas Line Coverage ...................... CRITICAL\n      44.2% (threshold: ≥90%)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("41.7% (threshold: ≥90%)"),
        "grading: {stdout}"
    );
    // No checkout in the image: drift takes the GitHub path.
    assert!(
        stderr
            .contains("no git repository at `/workspace`: reading the history from the GitHub API"),
        "{stderr}"
    );
    assert!(stdout.contains("Next Check: "), "{stdout}");
    assert!(
        !stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"),
        "the webhook URL shows: {stdout}\n{stderr}"
    );
    let critical = slack.messages(CRITICAL_HOOK);
    assert_eq!(critical.len(), 1, "{stderr}");
    assert!(critical[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("deployer health: CRITICAL"));
    let body = texts(&critical[0]);
    assert!(
        body.contains("*CRITICAL (new)* `phase4-processors` · *Vegas Line Coverage*: 44.2%"),
        "{body}"
    );
    assert!(
        body.contains("<https://github.com/nba-props/platform/blob/main/runbooks/phase4-processors.md#troubleshoot|runbook>"),
        "{body}"
    );
    assert_eq!(slack.messages(BASE_HOOK).len(), 1, "the drift ERROR warns");

    // A second execution, as stateless as the first: the lifecycle comes from the table,
    // nothing is sent again, and the previous check is shown.
    let output = run_container(&env, &args);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    assert_eq!(slack.messages(CRITICAL_HOOK).len(), 1, "{stderr}");
    assert_eq!(slack.messages(BASE_HOOK).len(), 1, "{stderr}");
    assert!(stdout.contains(" · previous "), "{stdout}");
}
