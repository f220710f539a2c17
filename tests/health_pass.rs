//! `deployer health` PASS end to end (exit 0): a repository with one local service whose
//! serving revision, on the local Cloud Run emulator, runs `main`'s commit (drift PASS), and
//! whose `health` check reads the BigQuery emulator seeded healthy.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "support/git_repo.rs"]
mod git_repo;
#[path = "support/github.rs"]
mod github;
#[path = "fixtures/bigquery/seed.rs"]
mod seed;
mod support;

use std::{collections::BTreeMap, process::Command};

use deployer::platform::{cloud_run::revision_labels, Platform, RevisionSpec};
use git_repo::Repo;
use github::{GitHubStandIn, TOKEN};
use seed::Level;
use support::{emulator_platform, hello_image, service_id::local_service_id, start_emulator};

const RUNBOOK: &str = "# svc\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n";

/// Where `health` runs: in the checkout (drift from git), or as the scheduled job does, with
/// the service files but no checkout (drift from the GitHub API).
#[derive(PartialEq)]
enum Where {
    Checkout,
    NoCheckout,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_fleet_with_no_drift_passes_with_exit_0() {
    healthy_fleet_passes(Where::Checkout).await;
}

/// The job's case: no repository at hand, so drift reads `compare` from the GitHub API (the
/// stand-in serves it from the same repository) and still finds no drift.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_checkout_drift_reads_the_github_api_and_the_fleet_passes() {
    healthy_fleet_passes(Where::NoCheckout).await;
}

async fn healthy_fleet_passes(place: Where) {
    // A project of its own per test: the tests run concurrently on one emulator.
    let project = match place {
        Where::Checkout => "health-pass",
        Where::NoCheckout => "health-pass-github",
    };
    let bigquery = seed::endpoint();
    seed::seed(&bigquery, project, Level::Healthy).await;
    let repo = Repo::new();
    let service_file = format!(
        "name = \"svc\"\nrunbook = \"runbooks/svc.md\"\n[target]\nkind = \"local\"\n\
         [image]\nrepository = \"127.0.0.1:5000/svc\"\n[preflight]\npaths = [\"api/**\"]\n\
         [notifications]\ngithub_repository = \"o/r\"\n\
         [[checks]]\nname = \"Recent Predictions\"\nprovider = \"bigquery\"\n\
         query = \"SELECT COUNT(*) FROM `{project}.nba_predictions.player_prop_predictions`\"\n\
         comparison = \">\"\nwarn = 100\ncritical = 10\nunit = \"count\"\ngates = [\"health\"]\n"
    );
    repo.write("runbooks/svc.md", RUNBOOK);
    repo.write("Dockerfile", "FROM scratch\n");
    repo.write("services/svc.toml", &service_file);
    let head = repo.commit(
        &["runbooks/svc.md", "Dockerfile", "services/svc.toml"],
        "first",
        2,
    );
    repo.push();
    let state = tempfile::tempdir().unwrap();
    let emulator = start_emulator(state.path()).await;
    let endpoint = emulator.endpoint().to_string();
    let platform = emulator_platform(&emulator).await;
    let id = local_service_id("svc");
    platform
        .create(
            &id,
            &RevisionSpec {
                name: "svc-00001".into(),
                image: hello_image().to_string(),
                labels: revision_labels(&head),
                base: None,
                settings: deployer::platform::RevisionSettings {
                    env: BTreeMap::from([("SERVICE_NAME".to_string(), "svc".to_string())]),
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
    let health_state = tempfile::tempdir().unwrap();
    // The job's image: the service files and runbooks, no `.git`.
    let job = tempfile::tempdir().unwrap();
    let github = GitHubStandIn::start();
    github.lock().git = Some(repo.path().to_path_buf());
    for file in ["runbooks/svc.md", "Dockerfile", "services/svc.toml"] {
        let to = job.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo.path().join(file), to).unwrap();
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployer"));
    match place {
        Where::Checkout => command
            .current_dir(repo.path())
            .env_remove("DEPLOYER_SERVICES_DIR"),
        Where::NoCheckout => command
            .current_dir(job.path())
            .env("DEPLOYER_SERVICES_DIR", job.path().join("services")),
    };
    let output = command
        .args([
            "health",
            "--endpoint",
            &endpoint,
            "--no-fetch",
            "--format",
            "json",
        ])
        .env("DEPLOYER_BIGQUERY_ENDPOINT", &bigquery)
        .env("DEPLOYER_STATE_DIR", health_state.path())
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .env("GITHUB_API_URL", &github.url)
        .env("GITHUB_TOKEN", TOKEN)
        .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT")
        .env_remove("SLACK_WEBHOOK_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let document: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}\n{stderr}"));
    let checks = document["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{stdout}");
    assert_eq!(checks[0]["check"], "Recent Predictions");
    assert_eq!(checks[0]["status"], "PASS", "{stdout}");
    assert_eq!(checks[1]["check"], "Deployment Drift");
    assert_eq!(checks[1]["status"], "PASS", "{stdout}");
    assert_eq!(checks[1]["value"], 0.0);
    assert_eq!(document["score"]["percent"], 100.0);
    assert_eq!(document["score"]["verdict"], "PASS");
    // The delivery metrics of each service, from its release history on the platform (the
    // service was created outside deployer: nothing recorded yet).
    let delivery = &document["delivery"][0];
    assert_eq!(delivery["service"], "svc", "{stdout}");
    assert_eq!(delivery["rollouts"], 0, "{stdout}");
    assert!(delivery["change_failure_rate"].is_null(), "{stdout}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let compares = github
        .lock()
        .requests
        .iter()
        .filter(|request| request.path.contains("/compare/"))
        .count();
    match place {
        Where::Checkout => assert_eq!(compares, 0, "drift read git: {stderr}"),
        Where::NoCheckout => {
            assert_eq!(compares, 1, "drift read the GitHub API: {stderr}");
            assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
        }
    }
}
