//! `deployer deploy` of several services on the emulator with real containers: dependency
//! order, a failing service's dependents not started while independent ones go on, one fleet
//! report and the worst exit code; a dependency cycle refused before anything starts.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;

use deployer::platform::{cloud_run::revision_labels, Platform, RevisionSettings, RevisionSpec};
use serde_json::Value;
use support::{
    service_id::local_service_id,
    stage::{Stage, ROLLOUT, STABLE_COMMIT},
};

const COMMIT: &str = "f1ee700000000000000000000000000000000001";

/// A `local` service file for `name` (the hello image reports `SERVICE_NAME`), with its
/// runbook.
fn service_file(repository: &Path, name: &str, depends_on: &[&str], env: &[(&str, &str)]) {
    std::fs::write(
        repository.join(format!("runbooks/{name}.md")),
        format!(
            "# Runbook: {name}\n\n## Pre-flight\n\n`deployer preflight {name}`\n\n## Deploy\n\n\
             `deployer deploy {name}`\n\n## Verify\n\n`deployer status {name}`\n\n\
             ## Troubleshoot\n\nRead the revision's logs.\n\n## Rollback\n\n\
             `deployer rollback {name}`\n"
        ),
    )
    .unwrap();
    let depends_on = depends_on
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut env_table = format!("SERVICE_NAME = \"{name}\"\n");
    for (key, value) in env {
        env_table.push_str(&format!("{key} = \"{value}\"\n"));
    }
    std::fs::write(
        repository.join(format!("services/{name}.toml")),
        format!(
            r#"name = "{name}"
runbook = "runbooks/{name}.md"
depends_on = [{depends_on}]

[target]
kind = "local"

[image]
repository = "127.0.0.1:5000/{name}"

[build]
context = "."
dockerfile = "Dockerfile"

[run.env]
{env_table}
[health]
path = "/health"
timeout = "2s"

[rollout]
{ROLLOUT}"#
        ),
    )
    .unwrap();
}

/// `name` created outside deployer, serving `NAME-stable` (hello at [`STABLE_COMMIT`]).
async fn create(stage: &Stage, name: &str) {
    let env = [("SERVICE_NAME", name), ("BUILD_COMMIT", STABLE_COMMIT)]
        .map(|(key, value)| (key.to_string(), value.to_string()));
    stage
        .platform
        .create(
            &local_service_id(name),
            &RevisionSpec {
                name: format!("{name}-stable"),
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
}

/// The revisions serving `name`, with their percent.
async fn serving(platform: &impl Platform, name: &str) -> Vec<(String, u8)> {
    platform
        .service(&local_service_id(name))
        .await
        .unwrap()
        .map(|snapshot| snapshot.serving())
        .unwrap_or_default()
}

fn fleet_command(stage: &Stage, label: &str) -> std::process::Command {
    deploy_command(stage, label, &["--all", "--parallel", "2"])
}

/// `deployer deploy SELECTION... --image hello --commit COMMIT`, unattended, JSON.
fn deploy_command(stage: &Stage, label: &str, selection: &[&str]) -> std::process::Command {
    let mut command = stage.command(
        label,
        &[
            &["deploy"],
            selection,
            &[
                "--image",
                support::hello_image(),
                "--commit",
                COMMIT,
                "--skip-preflight",
                "--non-interactive",
                "--format",
                "json",
            ],
        ]
        .concat(),
    );
    command.args(["--env", &format!("BUILD_COMMIT={COMMIT}")]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_service_is_rolled_back_its_dependents_never_start_and_independent_ones_are_promoted(
) {
    let stage = Stage::empty("a").await;
    let repository = stage.services.parent().unwrap().to_path_buf();
    service_file(&repository, "a", &[], &[]);
    service_file(&repository, "b", &["a"], &[("FAIL_RATE", "0.5")]);
    service_file(&repository, "c", &["b"], &[]);
    service_file(&repository, "d", &[], &[]);
    for name in ["a", "b", "c", "d"] {
        create(&stage, name).await;
    }
    let status = stage.run("fleet", fleet_command(&stage, "fleet")).await;
    let printed = stage.printed("fleet");
    assert_eq!(status.code(), Some(4), "{printed}");
    let stdout = std::fs::read_to_string(stage.output("fleet", "stdout")).unwrap();
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{printed}"));
    assert_eq!(report["exit_code"], 4);
    assert_eq!(report["order"], serde_json::json!(["a", "b", "c", "d"]));
    let line = |name: &str| -> Value {
        report["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|line| line["service"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no line for {name}: {printed}"))
    };
    assert_eq!(line("a")["result"], "promoted", "{printed}");
    assert_eq!(line("b")["result"], "rolled_back", "{printed}");
    assert_eq!(line("c")["result"], "not_started", "{printed}");
    assert_eq!(line("c")["detail"], "not started: dependency b failed");
    assert_eq!(line("d")["result"], "promoted", "{printed}");
    // a was promoted before b started.
    let a_ended = line("a")["ended_after"].as_f64().unwrap();
    let b_started = line("b")["started_after"].as_f64().unwrap();
    assert!(
        a_ended <= b_started,
        "a ended at {a_ended}, b started at {b_started}"
    );
    // Each service's own rollout: a and d serve their new revision, b is back on its stable
    // revision, c was left as it was.
    for name in ["a", "d"] {
        let serving = serving(&stage.platform, name).await;
        assert_eq!(serving.len(), 1, "{name}: {serving:?}");
        assert_ne!(
            serving[0].0,
            format!("{name}-stable"),
            "{name}: {serving:?}"
        );
    }
    assert_eq!(
        serving(&stage.platform, "b").await,
        [("b-stable".to_string(), 100)]
    );
    assert_eq!(
        serving(&stage.platform, "c").await,
        [("c-stable".to_string(), 100)]
    );
    stage.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_cycle_or_an_unknown_dependency_exits_2_naming_it_before_anything_starts() {
    let stage = Stage::empty("a").await;
    let repository = stage.services.parent().unwrap().to_path_buf();
    service_file(&repository, "a", &["b"], &[]);
    service_file(&repository, "b", &["a"], &[]);
    service_file(&repository, "d", &[], &[]);
    let status = stage.run("cycle", fleet_command(&stage, "cycle")).await;
    let printed = stage.printed("cycle");
    assert_eq!(status.code(), Some(2), "{printed}");
    assert!(printed.contains("dependency cycle: a → b → a"), "{printed}");
    // An unknown name is refused the same way, named.
    service_file(&repository, "a", &["nowhere"], &[]);
    let status = stage.run("unknown", fleet_command(&stage, "unknown")).await;
    let printed = stage.printed("unknown");
    assert_eq!(status.code(), Some(2), "{printed}");
    assert!(
        printed.contains("`depends_on` names `nowhere`, which is not a service"),
        "{printed}"
    );
    assert!(
        serving(&stage.platform, "d").await.is_empty(),
        "d was deployed"
    );
    stage.shutdown().await;
}

/// A service and its `depends_on`.
type Dependencies = (&'static str, &'static [&'static str]);

/// The benchmark of docs/BENCHMARKS.md ("Fleet deploy"), run by `bench/fleet.sh`: six healthy
/// services — the team's pipeline (phase3 → phase4 → coordinator → worker → grading) and one
/// independent service — deployed one `deployer deploy NAME` after another, then as one fleet
/// with `--parallel 1` and `--parallel 3`; and six independent services the same ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/fleet.sh"]
async fn fleet_wall_time_against_the_sum_of_single_deploys() {
    let shapes: [(&str, [Dependencies; 6]); 2] = [
        (
            "pipeline of 5 + 1 independent",
            [
                ("phase3", &[]),
                ("phase4", &["phase3"]),
                ("coordinator", &["phase4"]),
                ("worker", &["coordinator"]),
                ("grading", &["worker"]),
                ("api", &[]),
            ],
        ),
        (
            "6 independent",
            [
                ("s1", &[]),
                ("s2", &[]),
                ("s3", &[]),
                ("s4", &[]),
                ("s5", &[]),
                ("s6", &[]),
            ],
        ),
    ];
    for (shape, services) in shapes {
        let stage = Stage::empty("phase3").await;
        let repository = stage.services.parent().unwrap().to_path_buf();
        std::fs::remove_file(stage.services.join("phase3.toml")).unwrap();
        for (name, depends_on) in services {
            service_file(&repository, name, depends_on, &[]);
            create(&stage, name).await;
        }
        let started = std::time::Instant::now();
        for (name, _) in services {
            let label = format!("single-{name}");
            let status = stage
                .run(&label, deploy_command(&stage, &label, &[name]))
                .await;
            assert_eq!(status.code(), Some(0), "{}", stage.printed(&label));
        }
        let sum = started.elapsed();
        let mut figures = vec![format!(
            "sum of 6 single deploys {:.1} s",
            sum.as_secs_f64()
        )];
        for parallel in ["1", "3"] {
            let label = format!("fleet-{parallel}");
            let started = std::time::Instant::now();
            let status = stage
                .run(
                    &label,
                    deploy_command(&stage, &label, &["--all", "--parallel", parallel]),
                )
                .await;
            assert_eq!(status.code(), Some(0), "{}", stage.printed(&label));
            figures.push(format!(
                "fleet --parallel {parallel} {:.1} s",
                started.elapsed().as_secs_f64()
            ));
        }
        println!("{shape}: {}", figures.join(", "));
        stage.shutdown().await;
    }
}

#[path = "support/git_repo.rs"]
mod git_repo;

/// A service file whose paths are `DIR/**`, with the test rollout policy.
fn changed_service(name: &str, dir: &str) -> String {
    format!(
        "name = \"{name}\"\nrunbook = \"runbooks/{name}.md\"\n[target]\nkind = \"local\"\n\
         [image]\nrepository = \"127.0.0.1:5000/{name}\"\n[preflight]\npaths = [\"{dir}/**\"]\n\
         [run.env]\nSERVICE_NAME = \"{name}\"\n[health]\npath = \"/health\"\ntimeout = \"2s\"\n\
         [rollout]\n{ROLLOUT}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_picks_exactly_the_services_whose_paths_changed_since_their_deployed_commit() {
    let repo = git_repo::Repo::new();
    let runbook = "# r\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n";
    repo.write("runbooks/api.md", runbook);
    repo.write("runbooks/web.md", runbook);
    repo.write("Dockerfile", "FROM scratch\n");
    repo.write("services/api.toml", &changed_service("api", "api"));
    repo.write("services/web.toml", &changed_service("web", "web"));
    let deployed = repo.commit(
        &[
            "runbooks/api.md",
            "runbooks/web.md",
            "Dockerfile",
            "services/api.toml",
            "services/web.toml",
        ],
        "first",
        10,
    );
    let head = repo.change("api/main.rs", "the fix", "api: the fix", 5);
    repo.push();
    let state = tempfile::tempdir().unwrap();
    let emulator = support::start_emulator(&state.path().join("emulator")).await;
    let platform = support::emulator_platform(&emulator).await;
    for name in ["api", "web"] {
        support::create_hello_service(
            &platform,
            &local_service_id(name),
            &format!("{name}-stable"),
            &deployed,
        )
        .await;
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_deployer"))
        .current_dir(repo.path())
        .env("DEPLOYER_STATE_DIR", state.path().join("deployer"))
        .env_remove("DEPLOYER_SERVICES_DIR")
        .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT")
        .env_remove("DEPLOYER_LOGGING_ENDPOINT")
        .env_remove("DEPLOYER_MONITORING_ENDPOINT")
        .stdin(std::process::Stdio::null())
        .args(["deploy", "--changed", "--image", support::hello_image()])
        .args(["--commit", &head, "--env", &format!("BUILD_COMMIT={head}")])
        .args(["--skip-preflight", "--non-interactive", "--format", "json"])
        .args(["--endpoint", emulator.endpoint()])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stderr}"));
    assert_eq!(report["order"], serde_json::json!(["api"]), "{stderr}");
    assert_eq!(report["services"][0]["result"], "promoted");
    assert_eq!(
        serving(&platform, "web").await,
        [("web-stable".to_string(), 100)]
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_starts_no_new_rollout_and_the_running_one_ends_on_its_own() {
    let stage = Stage::empty("a").await;
    let repository = stage.services.parent().unwrap().to_path_buf();
    service_file(&repository, "a", &[], &[]);
    service_file(&repository, "b", &["a"], &[]);
    for name in ["a", "b"] {
        create(&stage, name).await;
    }
    let mut command = tokio::process::Command::from(deploy_command(
        &stage,
        "interrupted",
        &["a", "b", "--parallel", "1"],
    ));
    command.kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let pid = child.id().expect("a running deploy") as i32;
    // Once `a` started, Ctrl-C (SIGINT to the process, as a terminal sends it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !stage.printed("interrupted").contains("starting `a`") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stage.printed("interrupted")
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // At once: the handler must be installed before the first service is said to start (it
    // used to be installed only when the first rollout yielded, and a Ctrl-C a second after
    // `starting` on a loaded machine killed the deploy with no report).
    // SAFETY: `kill` with a pid we spawned and a valid signal number has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(std::time::Duration::from_secs(120), child.wait())
        .await
        .expect("the deploy ends")
        .unwrap();
    let printed = stage.printed("interrupted");
    let stdout = std::fs::read_to_string(stage.output("interrupted", "stdout")).unwrap();
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{printed}"));
    assert_eq!(report["interrupted"], true, "{printed}");
    let (a, b) = (&report["services"][0], &report["services"][1]);
    // `a` ran to its own end: promoted when the signal came before its rollout listened,
    // rolled back (the unattended answer) when it came during the rollout.
    assert!(
        a["result"] == "promoted" || a["result"] == "rolled_back",
        "{printed}"
    );
    assert_eq!(b["result"], "not_started", "{printed}");
    assert_eq!(b["detail"], "not started: interrupted");
    let expected = if a["result"] == "promoted" { 3 } else { 4 };
    assert_eq!(status.code(), Some(expected), "{printed}");
    assert_eq!(
        serving(&stage.platform, "b").await,
        [("b-stable".to_string(), 100)]
    );
    stage.shutdown().await;
}

/// Review of the fix above: installing the Ctrl-C handler up front for every deploy made a
/// single deploy keep a Ctrl-C pressed during its checklist or build for its first canary
/// step, so traffic moved after the user asked to stop. A single deploy obeys Ctrl-C at once
/// until its rollout listens; only a fleet (which listens from its start) installs it early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_single_deploys_checklist_stops_it_before_any_write() {
    let stage = Stage::empty("a").await;
    let repository = stage.services.parent().unwrap().to_path_buf();
    service_file(&repository, "a", &[], &[]);
    let marker = stage.services.join("tests-started");
    let file = repository.join("services/a.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!(
        "\n[preflight]\ntest_command = \"touch '{}' && sleep 30\"\n",
        marker.display()
    ));
    std::fs::write(&file, text).unwrap();
    create(&stage, "a").await;
    let mut command = tokio::process::Command::from(stage.command(
        "single",
        &[
            "deploy",
            "a",
            "--image",
            support::hello_image(),
            "--commit",
            COMMIT,
            "--non-interactive",
        ],
    ));
    command.kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let pid = child.id().expect("a running deploy") as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            stage.printed("single")
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // SAFETY: `kill` with a pid we spawned and a valid signal number has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
        .await
        .unwrap_or_else(|_| panic!("Ctrl-C was not obeyed: {}", stage.printed("single")))
        .unwrap();
    assert!(!status.success(), "{}", stage.printed("single"));
    assert_eq!(
        serving(&stage.platform, "a").await,
        [("a-stable".to_string(), 100)]
    );
    stage.shutdown().await;
}
