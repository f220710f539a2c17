//! `deployer deploy` whose new revision fails to start, end to end: the real binary against the
//! local Cloud Run emulator told (through its faults) to fail every new revision of the service.
//! The deploy must say so, exit 3 ("stopped before any traffic moved") promptly, and leave the
//! service's traffic where it was — with and without the synthetic traffic a local target gets.
//!
//! Each run is bounded: a deploy still running after [`EXIT_DEADLINE`] is killed and the test
//! fails (the defect this guards against: the process printed its report, then kept polling
//! the Cloud Run API in a tight loop and never exited).

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    path::Path,
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use deployer::{emulator::faults::FaultConfig, rollout::lock::LOCK_ANNOTATION};
use google_cloud_run_v2::model::TrafficTargetAllocationType;

/// How long a deploy may run before the test kills it and fails.
const EXIT_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `command` to its end, killing it (and failing) after [`EXIT_DEADLINE`]; returns its
/// status and its output, stdout then stderr (written to files, so a chatty child never blocks
/// on a full pipe).
fn run_bounded(mut command: Command, output: &Path) -> (ExitStatus, String) {
    let mut child = command
        .stdout(std::fs::File::create(output.with_extension("stdout")).unwrap())
        .stderr(std::fs::File::create(output.with_extension("stderr")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > EXIT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the deploy did not exit within {EXIT_DEADLINE:?}:\n{}",
                read_output(output)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, read_output(output))
}

fn read_output(output: &Path) -> String {
    let read = |extension| std::fs::read_to_string(output.with_extension(extension));
    format!(
        "stdout:\n{}\nstderr:\n{}",
        read("stdout").unwrap_or_default(),
        read("stderr").unwrap_or_default()
    )
}

/// Who serves the service: (revision, percent) of every target with traffic, a target that
/// follows "latest" resolved to the latest ready revision.
async fn serving(
    services: &google_cloud_run_v2::client::Services,
    name: &str,
) -> Vec<(String, i32)> {
    let service = support::get_service(services, name).await;
    service
        .traffic
        .iter()
        .filter(|target| target.percent > 0)
        .map(|target| {
            let revision = if target.r#type == TrafficTargetAllocationType::Latest {
                &service.latest_ready_revision
            } else {
                &target.revision
            };
            (support::short(revision), target.percent)
        })
        .collect()
}

/// Deploys `svc` (its new revision told to fail its start) with `extra` flags, and checks the
/// deploy exits 3 promptly with the reason, leaving the traffic unchanged.
async fn deploy_with_failing_start(extra: &[&str]) {
    let state = tempfile::tempdir().unwrap();
    let emulator = support::start_emulator(state.path()).await;
    let endpoint = emulator.endpoint().to_string();
    let (services, _) = support::clients(&endpoint).await;
    support::create_service(
        &services,
        "projects/local/locations/local",
        "svc",
        support::echo_service(&[]),
    )
    .await;
    let name = "projects/local/locations/local/services/svc";
    let before = serving(&services, name).await;
    assert_eq!(
        before.len(),
        1,
        "one revision serves before the deploy: {before:?}"
    );

    emulator
        .set_faults(FaultConfig {
            fail_revision_start: vec!["svc".into()],
            ..FaultConfig::default()
        })
        .unwrap();
    let repository = tempfile::tempdir().unwrap();
    let services_dir = support::local_repository(repository.path(), "svc", "");
    let deployer_state = tempfile::tempdir().unwrap();
    let mut command = support::deployer_command(&services_dir, deployer_state.path());
    command
        .current_dir(repository.path())
        .args(["-v", "deploy", "svc", "--skip-preflight"])
        .args([
            "--image",
            support::echo_image(),
            "--commit",
            &"a".repeat(40),
        ])
        .args(["--endpoint", &endpoint])
        .args(extra)
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .env("HOME", repository.path())
        .env_remove("SLACK_WEBHOOK_URL");
    let output = repository.path().join("deploy");
    let (status, text) = tokio::task::spawn_blocking(move || run_bounded(command, &output))
        .await
        .unwrap();

    assert_eq!(status.code(), Some(3), "{text}");
    assert!(
        text.contains("rollout finished: stopped before any traffic moved"),
        "{text}"
    );
    assert!(text.contains("failed to start"), "{text}");
    assert_eq!(serving(&services, name).await, before, "{text}");
    // Nothing is left behind: the lock is released (the next deploy need not wait an hour).
    assert!(!text.contains("could not release the lock"), "{text}");
    let service = support::get_service(&services, name).await;
    assert!(
        !service.annotations.contains_key(LOCK_ANNOTATION),
        "{:?}\n{text}",
        service.annotations
    );
    drop(emulator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_revision_fails_to_start_exits_without_synthetic_traffic() {
    deploy_with_failing_start(&["--traffic", "0"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_revision_fails_to_start_exits_with_synthetic_traffic() {
    deploy_with_failing_start(&[]).await;
}
