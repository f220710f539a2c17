//! A multi-region service (`target.regions`) on the emulator with real containers of
//! examples/hello: the canary region gets the full guarded rollout and the other region follows
//! only once it is promoted; a canary that fails in the first region leaves the second
//! untouched (no new revision there); a healthy one reaches both. `status`, `rollback`,
//! `--region` act per region.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use deployer::platform::{
    cloud_run::revision_labels, Platform, RevisionSettings, RevisionSpec, ServiceId,
};
use serde_json::Value;
use support::{
    service_id::service_id,
    stage::{Stage, ROLLOUT, STABLE_COMMIT},
};

const COMMIT: &str = "9e610e0000000000000000000000000000000001";
const NAME: &str = "hello";
const REGIONS: [&str; 2] = ["us-west2", "us-east1"];

/// A `local` service file for `hello` in both emulator regions, the canary region first.
fn service_file(repository: &Path) {
    std::fs::write(
        repository.join("runbooks/hello.md"),
        "# Runbook: hello\n\n## Pre-flight\n\n`deployer preflight hello`\n\n## Deploy\n\n\
         `deployer deploy hello`\n\n## Verify\n\n`deployer status hello`\n\n\
         ## Troubleshoot\n\nRead the revision's logs.\n\n## Rollback\n\n\
         `deployer rollback hello`\n",
    )
    .unwrap();
    std::fs::write(
        repository.join("services/hello.toml"),
        format!(
            r#"name = "{NAME}"
runbook = "runbooks/hello.md"

[target]
kind = "local"
regions = ["us-west2", "us-east1"]

[image]
repository = "127.0.0.1:5000/{NAME}"

[build]
context = "."
dockerfile = "Dockerfile"

[run.env]
SERVICE_NAME = "{NAME}"

[health]
path = "/health"
timeout = "2s"

[rollout]
{ROLLOUT}"#
        ),
    )
    .unwrap();
}

fn id(region: &str) -> ServiceId {
    service_id("local", region, NAME)
}

/// An emulator with `hello` created outside deployer in both regions, serving `hello-stable`.
async fn stage() -> Stage {
    let stage = Stage::empty(NAME).await;
    service_file(stage.services.parent().unwrap());
    let env = [("SERVICE_NAME", NAME), ("BUILD_COMMIT", STABLE_COMMIT)]
        .map(|(key, value)| (key.to_string(), value.to_string()));
    for region in REGIONS {
        stage
            .platform
            .create(
                &id(region),
                &RevisionSpec {
                    name: format!("{NAME}-stable"),
                    image: support::hello_image().to_string(),
                    labels: revision_labels(STABLE_COMMIT),
                    base: None,
                    settings: RevisionSettings {
                        env: env.iter().cloned().collect(),
                        ..RevisionSettings::default()
                    },
                },
            )
            .await
            .unwrap();
    }
    stage
}

/// The revisions serving `hello` in `region`, with their percent.
async fn serving(stage: &Stage, region: &str) -> Vec<(String, u8)> {
    stage
        .platform
        .service(&id(region))
        .await
        .unwrap()
        .map(|snapshot| snapshot.serving())
        .unwrap_or_default()
}

async fn revision_count(stage: &Stage, region: &str) -> usize {
    stage.platform.revisions(&id(region)).await.unwrap().len()
}

/// `deployer deploy hello --image hello --commit COMMIT`, unattended, JSON.
fn deploy(stage: &Stage, label: &str, extra: &[&str]) -> std::process::Command {
    let mut command = stage.command(
        label,
        &[
            &[
                "deploy",
                NAME,
                "--image",
                support::hello_image(),
                "--commit",
                COMMIT,
                "--skip-preflight",
                "--non-interactive",
                "--format",
                "json",
            ],
            extra,
        ]
        .concat(),
    );
    command.args(["--env", &format!("BUILD_COMMIT={COMMIT}")]);
    command
}

/// The report's line of `region`.
fn region_line(report: &Value, region: &str, printed: &str) -> Value {
    report["regions"]
        .as_array()
        .unwrap_or_else(|| panic!("no regions: {printed}"))
        .iter()
        .find(|line| line["region"] == region)
        .cloned()
        .unwrap_or_else(|| panic!("no line for {region}: {printed}"))
}

fn read_report(stage: &Stage, label: &str) -> (Value, String) {
    let printed = stage.printed(label);
    let stdout = std::fs::read_to_string(stage.output(label, "stdout")).unwrap();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{printed}"));
    (report, printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_in_the_first_region_is_rolled_back_and_leaves_the_second_untouched() {
    let stage = stage().await;
    let mut command = deploy(&stage, "failing", &[]);
    command.args(["--env", "FAIL_RATE=0.5"]);
    let status = stage.run("failing", command).await;
    let (report, printed) = read_report(&stage, "failing");
    assert_eq!(status.code(), Some(4), "{printed}");
    assert_eq!(report["exit_code"], 4, "{printed}");
    let canary = region_line(&report, "us-west2", &printed);
    assert_eq!(canary["result"], "rolled_back", "{printed}");
    let second = region_line(&report, "us-east1", &printed);
    assert_eq!(second["result"], "not_started", "{printed}");
    assert_eq!(second["detail"], "not started: us-west2 did not promote");
    assert_eq!(
        serving(&stage, "us-west2").await,
        [("hello-stable".to_string(), 100)]
    );
    // us-east1 was never written: no new revision, the same split.
    assert_eq!(revision_count(&stage, "us-east1").await, 1, "{printed}");
    assert_eq!(
        serving(&stage, "us-east1").await,
        [("hello-stable".to_string(), 100)]
    );
    assert_eq!(revision_count(&stage, "us-west2").await, 2, "{printed}");

    // The text report: a line per region, the exit code the worst region's.
    let mut command = stage.command(
        "text",
        &[
            "deploy",
            NAME,
            "--image",
            support::hello_image(),
            "--commit",
            COMMIT,
            "--skip-preflight",
            "--non-interactive",
        ],
    );
    command.args([
        "--env",
        &format!("BUILD_COMMIT={COMMIT}"),
        "--env",
        "FAIL_RATE=0.5",
    ]);
    let status = stage.run("text", command).await;
    let printed = stage.printed("text");
    let stdout = std::fs::read_to_string(stage.output("text", "stdout")).unwrap();
    assert_eq!(status.code(), Some(4), "{printed}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("SERVICE  REGION    RESULT"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("hello    us-west2  ROLLED BACK"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("hello    us-east1  NOT STARTED")
            && lines[2].ends_with("not started: us-west2 did not promote"),
        "{stdout}"
    );
    assert!(lines[3].starts_with("hello: 2 region(s) in "), "{stdout}");
    assert!(lines[3].ends_with(", exit 4"), "{stdout}");
    assert_eq!(revision_count(&stage, "us-east1").await, 1, "{printed}");

    // In a deploy of several services (`--all`), a line per region of the fleet report.
    let mut command = stage.command(
        "fleet",
        &[
            "deploy",
            "--all",
            "--image",
            support::hello_image(),
            "--commit",
            COMMIT,
            "--skip-preflight",
            "--non-interactive",
            "--format",
            "json",
        ],
    );
    command.args([
        "--env",
        &format!("BUILD_COMMIT={COMMIT}"),
        "--env",
        "FAIL_RATE=0.5",
    ]);
    let status = stage.run("fleet", command).await;
    let (fleet, printed) = read_report(&stage, "fleet");
    assert_eq!(status.code(), Some(4), "{printed}");
    let lines: Vec<(&str, &str, &str)> = fleet["services"]
        .as_array()
        .unwrap_or_else(|| panic!("{printed}"))
        .iter()
        .map(|line| {
            (
                line["service"].as_str().unwrap(),
                line["region"].as_str().unwrap(),
                line["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (NAME, "us-west2", "rolled_back"),
            (NAME, "us-east1", "not_started")
        ],
        "{printed}"
    );
    assert_eq!(revision_count(&stage, "us-east1").await, 1, "{printed}");
    stage.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_reaches_every_region_after_the_canary_region_is_promoted() {
    let stage = stage().await;
    let status = stage.run("healthy", deploy(&stage, "healthy", &[])).await;
    let (report, printed) = read_report(&stage, "healthy");
    assert_eq!(status.code(), Some(0), "{printed}");
    let canary = region_line(&report, "us-west2", &printed);
    let second = region_line(&report, "us-east1", &printed);
    for line in [&canary, &second] {
        assert_eq!(line["result"], "promoted", "{printed}");
    }
    // The second region started once the canary region was promoted.
    assert!(
        canary["ended_after"].as_f64().unwrap() <= second["started_after"].as_f64().unwrap(),
        "{printed}"
    );
    for region in REGIONS {
        let serving = serving(&stage, region).await;
        assert_eq!(serving.len(), 1, "{region}: {serving:?}");
        assert_ne!(serving[0].0, "hello-stable", "{region}: {serving:?}");
        assert_eq!(
            line_revision(region == "us-west2", &canary, &second),
            serving[0].0,
            "{region}"
        );
    }

    // `status` has a line per region; `--region` picks one, an unknown one is exit 2.
    let status_run = stage
        .run(
            "status",
            stage.command("status", &["status", NAME, "--format", "json"]),
        )
        .await;
    let (status_report, printed) = read_report(&stage, "status");
    assert_eq!(status_run.code(), Some(0), "{printed}");
    let regions: Vec<&str> = status_report["regions"]
        .as_array()
        .unwrap_or_else(|| panic!("{printed}"))
        .iter()
        .map(|line| line["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, REGIONS, "{printed}");
    let unknown = stage
        .run(
            "unknown-region",
            stage.command(
                "unknown-region",
                &["status", NAME, "--region", "europe-west1"],
            ),
        )
        .await;
    let printed = stage.printed("unknown-region");
    assert_eq!(unknown.code(), Some(2), "{printed}");
    assert!(
        printed.contains("`--region europe-west1` is not a region of service `hello`"),
        "{printed}"
    );

    // `rollback --region us-east1` rolls back that region only.
    let rollback = stage
        .run(
            "rollback",
            stage.command(
                "rollback",
                &[
                    "rollback",
                    NAME,
                    "--region",
                    "us-east1",
                    "--yes",
                    "--non-interactive",
                    "--reason",
                    "test",
                ],
            ),
        )
        .await;
    let printed = stage.printed("rollback");
    assert_eq!(rollback.code(), Some(0), "{printed}");
    assert_eq!(
        serving(&stage, "us-east1").await,
        [("hello-stable".to_string(), 100)],
        "{printed}"
    );
    assert_ne!(
        serving(&stage, "us-west2").await[0].0,
        "hello-stable",
        "{printed}"
    );
    stage.shutdown().await;
}

/// The revision a region's line says it promoted.
fn line_revision(canary_region: bool, canary: &Value, second: &Value) -> String {
    let line = if canary_region { canary } else { second };
    line["report"]["outcome"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `deploy --region` deploys one region (a one-region deploy); a rollback of every region
/// then rolls that one back and says the region where the service does not exist has nothing
/// to roll back, instead of failing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_of_one_region_then_a_rollback_of_all_skips_the_region_never_deployed() {
    let stage = Stage::empty(NAME).await;
    service_file(stage.services.parent().unwrap());
    let env = [("SERVICE_NAME", NAME), ("BUILD_COMMIT", STABLE_COMMIT)]
        .map(|(key, value)| (key.to_string(), value.to_string()));
    stage
        .platform
        .create(
            &id("us-west2"),
            &RevisionSpec {
                name: format!("{NAME}-stable"),
                image: support::hello_image().to_string(),
                labels: revision_labels(STABLE_COMMIT),
                base: None,
                settings: RevisionSettings {
                    env: env.into_iter().collect(),
                    ..RevisionSettings::default()
                },
            },
        )
        .await
        .unwrap();
    let status = stage
        .run("one", deploy(&stage, "one", &["--region", "us-west2"]))
        .await;
    let (report, printed) = read_report(&stage, "one");
    assert_eq!(status.code(), Some(0), "{printed}");
    // A one-region deploy: the rollout report itself, not a line per region.
    assert_eq!(report["outcome"]["outcome"], "promoted", "{printed}");
    assert!(stage
        .platform
        .service(&id("us-east1"))
        .await
        .unwrap()
        .is_none());

    let rollback = stage
        .run(
            "rollback-all",
            stage.command(
                "rollback-all",
                &["rollback", NAME, "--non-interactive", "--format", "json"],
            ),
        )
        .await;
    let (output, printed) = read_report(&stage, "rollback-all");
    assert_eq!(rollback.code(), Some(0), "{printed}");
    assert!(
        printed.contains("`hello` is not deployed in us-east1: nothing to roll back there"),
        "{printed}"
    );
    let regions = output["regions"]
        .as_array()
        .unwrap_or_else(|| panic!("{printed}"));
    assert_eq!(regions.len(), 1, "{printed}");
    assert_eq!(regions[0]["region"], "us-west2", "{printed}");
    assert_eq!(regions[0]["rolled_back"], true, "{printed}");
    assert_eq!(
        serving(&stage, "us-west2").await,
        [("hello-stable".to_string(), 100)]
    );
    stage.shutdown().await;
}
