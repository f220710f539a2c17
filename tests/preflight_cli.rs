//! `deployer preflight` end to end: the real binary, a git repository made in the test, and the
//! official Cloud Run client talking to a local HTTP endpoint that knows no service (a first
//! deploy). Steps are tested one by one in the library (`src/preflight/`); this pins the wiring:
//! flags, exit codes, the non-interactive rules, the text and JSON reports.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

use std::{path::Path, process::Command};

use git2::{Repository, RepositoryInitOptions, Signature, Time};

const RUNBOOK: &str = "# svc\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n";

/// A repository with `services/svc.toml` (local target, a test command), committed on `main`.
fn repository(test_command: &str) -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let mut options = RepositoryInitOptions::new();
    options.initial_head("main");
    let repository = Repository::init_opts(root, &options).unwrap();
    std::fs::create_dir_all(root.join("services")).unwrap();
    std::fs::create_dir_all(root.join("runbooks")).unwrap();
    std::fs::write(root.join("runbooks/svc.md"), RUNBOOK).unwrap();
    std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(
        root.join("services/svc.toml"),
        format!(
            "name = \"svc\"\nrunbook = \"runbooks/svc.md\"\n[target]\nkind = \"local\"\n\
             [image]\nrepository = \"127.0.0.1:5000/svc\"\n[preflight]\ntest_command = {test_command:?}\n"
        ),
    )
    .unwrap();
    let mut index = repository.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repository.find_tree(index.write_tree().unwrap()).unwrap();
    let signature = Signature::new("Ada", "ada@example.com", &Time::new(1_700_000_000, 0)).unwrap();
    repository
        .commit(Some("HEAD"), &signature, &signature, "first", &tree, &[])
        .unwrap();
    directory
}

/// A Cloud Run Admin API endpoint on 127.0.0.1 that answers NOT_FOUND to everything.
fn empty_platform() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(|| async {
                (
                    axum::http::StatusCode::NOT_FOUND,
                    [("content-type", "application/json")],
                    r#"{"error":{"code":404,"message":"service not found","status":"NOT_FOUND"}}"#,
                )
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{address}")
}

/// `deployer preflight svc` as CI runs it (outside GitHub Actions unless the test says so).
fn command(root: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployer"));
    command
        .current_dir(root)
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .env_remove("DEPLOYER_SERVICES_DIR")
        .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .args(["preflight", "svc", "--endpoint", endpoint])
        .args(args);
    command
}

fn deployer(root: &Path, endpoint: &str, args: &[&str]) -> std::process::Output {
    command(root, endpoint, args).output().unwrap()
}

fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\b[0-9a-f]{40}\b", "[commit]");
    settings.add_filter(r"\b[0-9a-f]{7}\b", "[short]");
    settings.add_filter(r"in \d+\.\ds", "in [seconds]s");
    settings
}

#[test]
fn first_deploy_in_ci_warnings_need_the_flag() {
    let repository = repository("echo unit tests passed");
    let endpoint = empty_platform();

    let output = deployer(repository.path(), &endpoint, &[]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("      | unit tests passed"),
        "test output is streamed to stderr: {stderr}"
    );
    settings().bind(|| insta::assert_snapshot!(stdout));

    let output = deployer(repository.path(), &endpoint, &["--accept-warnings"]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.ends_with("Safe to deploy (step 3 accepted by --accept-warnings).\n"),
        "{stdout}"
    );
}

#[test]
fn json_report_for_ci() {
    let repository = repository("exit 4");
    let endpoint = empty_platform();
    let output = deployer(
        repository.path(),
        &endpoint,
        &["--no-fetch", "--accept-warnings", "--format", "json"],
    );
    assert_eq!(output.status.code(), Some(1), "the tests fail");
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["safe_to_deploy"], false);
    assert_eq!(document["service"], "svc");
    assert_eq!(document["head"]["name"], "main");
    let statuses: Vec<&str> = document["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| check["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["PASS", "PASS", "WARN", "PASS", "PASS", "FAIL", "PASS", "PASS"]
    );
    assert_eq!(
        document["checks"][5]["reason"]
            .as_str()
            .unwrap()
            .split(" after ")
            .next(),
        Some("`exit 4` failed (exit status 4)")
    );
    assert_eq!(document["summary"]["failed"], 1);
    assert_eq!(document["decisions"][5]["outcome"], "failed");
}

#[test]
fn an_unknown_service_is_a_usage_error() {
    let repository = repository("true");
    let output = Command::new(env!("CARGO_BIN_EXE_deployer"))
        .current_dir(repository.path())
        .env("CI", "true")
        .env_remove("DEPLOYER_SERVICES_DIR")
        .args(["preflight", "sv"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("no service named `sv`"), "{stderr}");
    assert!(stderr.contains("did you mean `svc`?"), "{stderr}");
}

/// In GitHub Actions every WARN and FAIL is an annotation (on stdout, where GitHub documents
/// workflow commands; on stderr with `--format json`, so that stdout stays one document), the
/// verdict is an `::error` when it is not safe, and the steps are appended to the step summary.
#[test]
fn github_actions_annotations_and_step_summary() {
    let repository = repository("exit 4");
    let endpoint = empty_platform();
    let runner = tempfile::tempdir().unwrap();
    let summary = runner.path().join("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let output = command(repository.path(), &endpoint, &["--accept-warnings"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let annotations: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("::"))
        .collect();
    assert_eq!(annotations.len(), 3, "{stdout}");
    assert_eq!(
        annotations[0],
        "::warning title=Preflight%3A svc / [3/8] Sync with remote::cannot run: the repository has no remote `origin` \
         — hint: add it (`git remote add origin URL`) or set `preflight.remote` in the service file"
    );
    assert!(
        annotations[1].starts_with(
            "::error title=Preflight%3A svc / [6/8] Tests::`exit 4` failed (exit status 4) after "
        ),
        "{}",
        annotations[1]
    );
    assert_eq!(
        annotations[2],
        "::error title=Preflight%3A svc::Not safe to deploy: step 6 failed."
    );
    assert!(
        !stderr.contains("::error"),
        "text puts them on stdout: {stderr}"
    );
    let written = std::fs::read_to_string(&summary).unwrap();
    assert!(
        written.starts_with(
            "earlier step\n## Preflight `svc`: Not safe to deploy: step 6 failed.\n\n\
             | step | check | status | reason | decision |\n|---|---|---|---|---|\n\
             | 1/8 | Uncommitted changes | PASS | working tree clean |  |\n"
        ),
        "appended, never overwritten: {written}"
    );
    assert!(
        written.contains(
            "| 3/8 | Sync with remote | WARN | cannot run: the repository has no remote `origin` |  |"
        ),
        "{written}"
    );
    assert!(
        written.contains("| 6/8 | Tests | FAIL | `exit 4` failed (exit status 4) after "),
        "{written}"
    );

    // JSON: stdout is one document; the annotations go to stderr (the runner reads both).
    let output = command(
        repository.path(),
        &endpoint,
        &["--accept-warnings", "--format", "json"],
    )
    .env("GITHUB_ACTIONS", "true")
    .env("GITHUB_STEP_SUMMARY", &summary)
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["safe_to_deploy"], false);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.lines().any(
            |line| line == "::error title=Preflight%3A svc::Not safe to deploy: step 6 failed."
        ),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(
        written.matches("## Preflight `svc`").count(),
        2,
        "{written}"
    );

    // Safe with an accepted warning: the warning says who accepted it, and nothing is an error.
    let passing = self::repository("true");
    let output = command(passing.path(), &endpoint, &["--accept-warnings"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let annotations: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("::"))
        .collect();
    assert_eq!(annotations.len(), 1, "{stdout}");
    assert!(
        annotations[0].starts_with("::warning title=Preflight%3A svc / [3/8] Sync with remote::")
            && annotations[0].ends_with(" (accepted by --accept-warnings)"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(&summary).unwrap();
    assert!(
        written.contains(
            "## Preflight `svc`: Safe to deploy (step 3 accepted by --accept-warnings).\n"
        ),
        "{written}"
    );

    // Outside GitHub Actions: no annotation, no summary.
    let before = std::fs::read_to_string(&summary).unwrap();
    let output = deployer(passing.path(), &endpoint, &["--accept-warnings"]);
    assert!(!String::from_utf8(output.stdout).unwrap().contains("::"));
    assert_eq!(std::fs::read_to_string(&summary).unwrap(), before);
}
