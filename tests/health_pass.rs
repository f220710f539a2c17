//! `deployer health` PASS end to end (exit 0): a repository with one local service whose
//! serving revision, on the local Cloud Run emulator, runs `main`'s commit (drift PASS), and
//! whose `health` check reads the BigQuery emulator seeded healthy.

#[path = "support/git_repo.rs"]
mod git_repo;
#[path = "fixtures/bigquery/seed.rs"]
mod seed;
mod support;

use std::{collections::BTreeMap, process::Command, time::Duration};

use deployer::platform::{
    cloud_run::{revision_labels, CloudRunPlatform, Endpoint},
    Platform, RevisionSpec, ServiceId,
};
use git_repo::Repo;
use seed::Level;
use support::{hello_image, start_emulator};

const RUNBOOK: &str = "# svc\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_fleet_with_no_drift_passes_with_exit_0() {
    let bigquery = seed::endpoint();
    seed::seed(&bigquery, "health-pass", Level::Healthy).await;
    let repo = Repo::new();
    repo.write("runbooks/svc.md", RUNBOOK);
    repo.write("Dockerfile", "FROM scratch\n");
    repo.write(
        "services/svc.toml",
        "name = \"svc\"\nrunbook = \"runbooks/svc.md\"\n[target]\nkind = \"local\"\n\
         [image]\nrepository = \"127.0.0.1:5000/svc\"\n[preflight]\npaths = [\"api/**\"]\n\
         [[checks]]\nname = \"Recent Predictions\"\nprovider = \"bigquery\"\n\
         query = \"SELECT COUNT(*) FROM `health-pass.nba_predictions.player_prop_predictions`\"\n\
         comparison = \">\"\nwarn = 100\ncritical = 10\nunit = \"count\"\ngates = [\"health\"]\n",
    );
    let head = repo.commit(
        &["runbooks/svc.md", "Dockerfile", "services/svc.toml"],
        "first",
        2,
    );
    repo.push();
    let state = tempfile::tempdir().unwrap();
    let emulator = start_emulator(state.path()).await;
    let endpoint = emulator.endpoint().to_string();
    let platform =
        CloudRunPlatform::connect(&Endpoint::Custom(endpoint.clone()), Duration::from_secs(60))
            .await
            .unwrap();
    let id = ServiceId {
        project: "local".into(),
        region: "local".into(),
        name: "svc".into(),
    };
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
    let output = Command::new(env!("CARGO_BIN_EXE_deployer"))
        .current_dir(repo.path())
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
        .env_remove("DEPLOYER_SERVICES_DIR")
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
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}
