//! `deployer drift` end to end: the real binary, a temporary repository with a bare remote, and
//! revisions on the local Cloud Run emulator (real containers, Google's official client)
//! labelled with older commits — behind counts, relevant vs irrelevant paths, a split between two
//! revisions, a deployed commit off `main`, an unknown commit; then `--github-issue` against the
//! GitHub stand-in and the GitHub Actions outputs.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "support/git_repo.rs"]
mod git_repo;
#[path = "support/github.rs"]
mod github;
mod support;

use std::{collections::BTreeMap, process::Command};

use deployer::platform::{
    cloud_run::revision_labels, Platform, RevisionSpec, ServiceId, ServiceUpdate, TrafficTarget,
};
use git_repo::Repo;
use support::{emulator_platform, hello_image, service_id::local_service_id, start_emulator};

const RUNBOOK: &str = "# svc\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n";

/// A repository with `services/svc.toml` (local target, `api/**` its paths) committed 100 h ago
/// and pushed; returns it and that first commit.
fn repository() -> (Repo, String) {
    let repo = Repo::new();
    repo.write("runbooks/svc.md", RUNBOOK);
    repo.write("Dockerfile", "FROM scratch\n");
    repo.write(
        "services/svc.toml",
        "name = \"svc\"\nrunbook = \"runbooks/svc.md\"\n[target]\nkind = \"local\"\n\
         [image]\nrepository = \"127.0.0.1:5000/svc\"\n[preflight]\npaths = [\"api/**\"]\n\
         [notifications]\ngithub_repository = \"o/r\"\ngithub_token_env = \"DRIFT_TEST_TOKEN\"\n",
    );
    let first = repo.commit(
        &["runbooks/svc.md", "Dockerfile", "services/svc.toml"],
        "first",
        100,
    );
    repo.push();
    (repo, first)
}

fn id() -> ServiceId {
    local_service_id("svc")
}

/// Serves `commit` from a new revision `revision` taking 100% of the traffic.
async fn serve(platform: &dyn Platform, revision: &str, commit: &str) {
    split(
        platform,
        revision,
        commit,
        vec![TrafficTarget::to_revision(revision, 100)],
    )
    .await;
}

/// Creates revision `revision` at `commit` and sets the split to `traffic`.
async fn split(platform: &dyn Platform, revision: &str, commit: &str, traffic: Vec<TrafficTarget>) {
    let snapshot = platform.service(&id()).await.unwrap().unwrap();
    platform
        .update(
            &id(),
            &snapshot.etag,
            &ServiceUpdate {
                template: Some(spec(revision, commit)),
                traffic: Some(traffic),
                ..ServiceUpdate::default()
            },
        )
        .await
        .unwrap();
}

fn spec(revision: &str, commit: &str) -> RevisionSpec {
    RevisionSpec {
        name: revision.into(),
        image: hello_image().to_string(),
        labels: revision_labels(commit),
        base: None,
        settings: deployer::platform::RevisionSettings {
            env: BTreeMap::from([
                ("SERVICE_NAME".to_string(), "svc".to_string()),
                ("BUILD_COMMIT".to_string(), commit.to_string()),
            ]),
            ..Default::default()
        },
    }
}

fn drift(
    repo: &Repo,
    endpoint: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployer"));
    command
        .current_dir(repo.path())
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .env_remove("DEPLOYER_SERVICES_DIR")
        .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .env_remove("GITHUB_REPOSITORY")
        .args(["drift", "--endpoint", endpoint])
        .args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_of_revisions_on_the_emulator() {
    let state = tempfile::tempdir().unwrap();
    let emulator = start_emulator(state.path()).await;
    let endpoint = emulator.endpoint().to_string();
    let platform = emulator_platform(&emulator).await;
    let (repo, first) = repository();
    let deployed = repo.change("api/main.rs", "api v1", "api v1", 90);
    repo.change("web/index.html", "web only", "web only", 85);
    repo.push();
    platform
        .create(&id(), &spec("svc-00001", &deployed))
        .await
        .unwrap();

    // 1 commit behind, and it does not touch `api/**`: OK (exit 0).
    let (code, stdout, stderr) = drift(&repo, &endpoint, &["--format", "json"], &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report = json(&stdout);
    let service = &report["services"][0];
    assert_eq!(service["severity"], "OK");
    assert_eq!(service["revisions"][0]["facts"]["behind"], 1);
    assert_eq!(service["revisions"][0]["facts"]["relevant"], 0);
    assert_eq!(service["revisions"][0]["commit_origin"], "revision_label");

    // A relevant commit 80 h old: CRITICAL (exit 2), listed with subject and author.
    let fix = repo.change("api/main.rs", "api: the fix", "api: the fix", 80);
    repo.push();
    let (code, stdout, stderr) = drift(&repo, &endpoint, &[], &[]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "CRITICAL svc: 2 commits behind `origin/main`; 1 touches the service's paths"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("api: the fix (Ada,"), "{stdout}");
    assert!(
        stdout.contains("hint: deploy `svc` from `origin/main`: `deployer deploy svc`"),
        "{stdout}"
    );

    // `--no-fetch` compares with `origin/main` as last fetched: a push by someone else is not seen.
    let (code, stdout, _) = drift(&repo, &endpoint, &["--no-fetch", "--format", "json"], &[]);
    assert_eq!(code, 2);
    assert_eq!(
        json(&stdout)["services"][0]["revisions"][0]["facts"]["behind"],
        2
    );

    // A split: the new revision at the fix takes 50%; the old one still serves the rest.
    split(
        &platform,
        "svc-00002",
        &fix,
        vec![
            TrafficTarget::to_revision("svc-00001", 50),
            TrafficTarget::to_revision("svc-00002", 50),
        ],
    )
    .await;
    let (code, stdout, stderr) = drift(&repo, &endpoint, &["--format", "json"], &[]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    let revisions = json(&stdout)["services"][0]["revisions"].clone();
    let by_name: BTreeMap<String, serde_json::Value> = revisions
        .as_array()
        .unwrap()
        .iter()
        .map(|revision| {
            (
                revision["revision"].as_str().unwrap().to_string(),
                revision.clone(),
            )
        })
        .collect();
    assert_eq!(by_name.len(), 2, "{revisions}");
    assert_eq!(by_name["svc-00001"]["severity"], "CRITICAL");
    assert_eq!(by_name["svc-00002"]["severity"], "OK");
    assert_eq!(by_name["svc-00002"]["facts"]["behind"], 0);
    assert_eq!(by_name["svc-00002"]["percent"], 50);

    // A commit off `main` (a hotfix from a branch) serving 100%: WARN, never "0 behind".
    let head = repo.change(
        "api/main.rs",
        "hotfix from a branch",
        "hotfix from a branch",
        2,
    );
    repo.reset(&fix);
    serve(&platform, "svc-00003", &head).await;
    let (code, stdout, stderr) = drift(&repo, &endpoint, &[], &[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("is not in `origin/main`'s history"),
        "{stdout}"
    );
    assert!(stdout.contains("0 (off main)"), "{stdout}");

    // An unknown commit: drift unknown, a WARN that says why.
    serve(
        &platform,
        "svc-00004",
        "0123456789abcdef0123456789abcdef01234567",
    )
    .await;
    let (code, stdout, _) = drift(&repo, &endpoint, &[], &[]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("WARN svc: drift unknown: deployed commit `0123456789abcdef0123456789abcdef01234567` is not in this repository"),
        "{stdout}"
    );

    // Back to the first commit (90 h of relevant drift): `--github-issue` and GitHub Actions outputs.
    serve(&platform, "svc-00005", &first).await;
    let standin = github::GitHubStandIn::start();
    let summary = state.path().join("summary.md");
    let env = [
        ("GITHUB_API_URL", standin.url.as_str()),
        ("DRIFT_TEST_TOKEN", github::TOKEN),
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
    ];
    let (code, stdout, stderr) = drift(&repo, &endpoint, &["--github-issue"], &env);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stdout.contains("::error title=Drift%3A svc::"), "{stdout}");
    assert!(
        stderr.contains("issue #1 of `svc` opened: https://github.com/o/r/issues/1"),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&summary).unwrap();
    assert!(
        written.starts_with("## Deployment drift: CRITICAL"),
        "{written}"
    );
    assert!(
        written.contains("| svc | CRITICAL | svc-00005 100% |"),
        "{written}"
    );
    for text in [&stdout, &stderr, &written] {
        assert!(!text.contains(github::TOKEN), "the token never shows");
    }
    let (code, _, stderr) = drift(&repo, &endpoint, &["--github-issue"], &env);
    assert_eq!(code, 2);
    assert!(stderr.contains("issue #1 of `svc` unchanged"), "{stderr}");
    assert_eq!(standin.writes().len(), 1, "the second run writes nothing");

    // A wrong token: the drift is still reported, the error names the variable, not the token.
    let wrong = [
        ("GITHUB_API_URL", standin.url.as_str()),
        ("DRIFT_TEST_TOKEN", "ghp_not_the_token"),
    ];
    let (code, stdout, stderr) = drift(&repo, &endpoint, &["--github-issue"], &wrong);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("refused the token from `DRIFT_TEST_TOKEN` (401 Bad credentials)"),
        "{stderr}"
    );
    assert!(!stderr.contains("ghp_not_the_token"));
    drop(emulator);
}

/// A service in two emulator regions is measured in each, the canary region first: the region
/// a failed wave never reached lags `main` while the canary region is current; `--region`
/// measures one.
#[tokio::test(flavor = "multi_thread")]
async fn drift_of_a_multi_region_service_is_measured_per_region() {
    let state = tempfile::tempdir().unwrap();
    let emulator = start_emulator(state.path()).await;
    let endpoint = emulator.endpoint().to_string();
    let platform = emulator_platform(&emulator).await;
    let (repo, _) = repository();
    repo.write(
        "services/svc.toml",
        "name = \"svc\"\nrunbook = \"runbooks/svc.md\"\n[target]\nkind = \"local\"\n\
         regions = [\"us-west2\", \"us-east1\"]\n\
         [image]\nrepository = \"127.0.0.1:5000/svc\"\n[preflight]\npaths = [\"api/**\"]\n",
    );
    repo.commit(&["services/svc.toml"], "two regions", 95);
    let old = repo.change("api/main.rs", "api v1", "api v1", 90);
    let current = repo.change("api/main.rs", "api v2", "api v2", 2);
    repo.push();
    let in_region = |region: &str| ServiceId {
        region: region.into(),
        ..id()
    };
    platform
        .create(&in_region("us-west2"), &spec("svc-west", &current))
        .await
        .unwrap();
    platform
        .create(&in_region("us-east1"), &spec("svc-east", &old))
        .await
        .unwrap();

    let (_, stdout, stderr) = drift(&repo, &endpoint, &["--format", "json"], &[]);
    let report = json(&stdout);
    let rows = report["services"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{stdout}\n{stderr}");
    let revision = |row: &serde_json::Value| row["revisions"][0]["revision"].clone();
    assert_eq!(revision(&rows[0]), "svc-west", "{stdout}");
    assert_eq!(rows[0]["revisions"][0]["facts"]["relevant"], 0, "{stdout}");
    assert_eq!(revision(&rows[1]), "svc-east", "{stdout}");
    assert_eq!(rows[1]["revisions"][0]["facts"]["relevant"], 1, "{stdout}");

    let (_, stdout, stderr) = drift(
        &repo,
        &endpoint,
        &["--format", "json", "--region", "us-east1"],
        &[],
    );
    let report = json(&stdout);
    let rows = report["services"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{stdout}\n{stderr}");
    assert_eq!(revision(&rows[0]), "svc-east", "{stdout}");
    emulator.shutdown().await;
}
