//! The README's demo, end to end, from a clean state: the real `deployer` binary, the real
//! Docker engine, the local emulator started in the background by `deploy` itself.
//!
//! 1. `deploy hello` creates the service (first deploy);
//! 2. `deploy hello` again: a guarded rollout with synthetic traffic, promoted (exit 0);
//! 3. `deploy hello --env FAIL_RATE=0.3`: the canary fails its analysis and is rolled back
//!    (exit 4), the report carries the numbers.
//!
//! Preflight is skipped here (`--skip-preflight`): the checklist refuses a dirty working tree,
//! which a developer running the suite often has; it is tested on its own in
//! `tests/preflight_cli.rs` and `src/preflight/`.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

struct Demo {
    state: tempfile::TempDir,
}

impl Demo {
    fn new() -> Self {
        Self {
            state: tempfile::tempdir().expect("temporary state directory"),
        }
    }

    fn emulator_dir(&self) -> PathBuf {
        self.state.path().join("emulator")
    }

    fn deployer(&self, arguments: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_deployer"))
            .args(arguments)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("DEPLOYER_EMULATOR_DATA_DIR", self.emulator_dir())
            .env("DEPLOYER_EMULATOR_PORT", "0")
            .env("DEPLOYER_STATE_DIR", self.state.path().join("journal"))
            .env("CI", "true")
            .env("NO_COLOR", "1")
            .env_remove("DEPLOYER_EMULATOR_ENDPOINT")
            .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT")
            .output()
            .expect("run deployer")
    }

    fn status_json(&self) -> serde_json::Value {
        let output = self.deployer(&["status", "hello", "--format", "json"]);
        assert!(output.status.success(), "{}", text(&output));
        serde_json::from_slice(&output.stdout).expect("status JSON")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Stop the background emulator (its containers go with it).
        let _ = Command::new(env!("CARGO_BIN_EXE_deployer"))
            .args(["emulator", "stop", "--data-dir"])
            .arg(self.emulator_dir())
            .output();
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn head_commit() -> String {
    let repository = git2::Repository::discover(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    let commit = repository.head().unwrap().peel_to_commit().unwrap();
    commit.id().to_string()
}

/// (revision, percent) of the serving split.
fn serving(status: &serde_json::Value) -> Vec<(String, u64)> {
    status["service"]["traffic_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["percent"].as_u64().unwrap_or(0) > 0)
        .map(|entry| {
            (
                entry["revision"].as_str().unwrap().to_string(),
                entry["percent"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_readme_demo_promotes_a_healthy_revision_and_rolls_back_a_faulty_one() {
    let demo = Demo::new();
    let commit = head_commit();

    let first = demo.deployer(&["deploy", "hello", "--skip-preflight", "--non-interactive"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("started the local Cloud Run emulator"),
        "{}",
        text(&first)
    );

    let healthy = demo.deployer(&["deploy", "hello", "--skip-preflight", "--non-interactive"]);
    assert_eq!(healthy.status.code(), Some(0), "{}", text(&healthy));
    let stdout = String::from_utf8_lossy(&healthy.stdout);
    let stderr = String::from_utf8_lossy(&healthy.stderr);
    assert!(stdout.contains("PROMOTED"), "{}", text(&healthy));
    assert!(stderr.contains("identity verified"), "{}", text(&healthy));
    assert!(stderr.contains("traffic: canary 10%"), "{}", text(&healthy));
    let status = demo.status_json();
    let promoted = status["service"]["latest_ready_revision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(serving(&status), [(promoted.clone(), 100)]);
    let revision = status["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|revision| revision["name"] == promoted.as_str())
        .unwrap()
        .clone();
    assert_eq!(revision["labels"]["deployer-commit"], commit.as_str());
    assert!(
        revision["image"].as_str().unwrap().contains("sha256:"),
        "deployed by digest: {revision}"
    );

    let faulty = demo.deployer(&[
        "deploy",
        "hello",
        "--skip-preflight",
        "--non-interactive",
        "--env",
        "FAIL_RATE=0.3",
    ]);
    assert_eq!(
        faulty.status.code(),
        Some(4),
        "rolled back: {}",
        text(&faulty)
    );
    let stdout = String::from_utf8_lossy(&faulty.stdout);
    assert!(stdout.contains("ROLLED BACK"), "{}", text(&faulty));
    assert!(
        stdout.contains("% errors ("),
        "the numbers that decided it: {}",
        text(&faulty)
    );
    let status = demo.status_json();
    assert_eq!(
        serving(&status),
        [(promoted, 100)],
        "back on the healthy revision"
    );
    assert_eq!(status["rollout"]["phase"], "rolled-back");
    assert!(status["lock"].is_null(), "lock released: {status}");
}
