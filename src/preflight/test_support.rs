//! Fixtures of the preflight tests: a minimal service, the in-memory platform with a deployed
//! commit, and a reporter that collects what it is told.

use std::{path::Path, sync::Mutex};

use crate::{
    config::ServiceConfig,
    platform::{
        cloud_run::revision_labels, memory::MemoryPlatform, Platform, RevisionSpec, ServiceId,
    },
    testing::TestRepo,
};

use super::{run, Check, DeployedSource, PreflightOptions, PreflightReport, Reporter, Step};

/// The service `svc` on a local target, with optional `preflight` lines.
pub fn service(preflight: &str) -> ServiceConfig {
    let source = format!(
        "name = \"svc\"\nrunbook = \"runbooks/svc.md\"\n[target]\nkind = \"local\"\n[image]\nrepository = \"127.0.0.1:5000/svc\"\n[preflight]\n{preflight}\n"
    );
    crate::config::parse(Path::new("services/svc.toml"), &source).expect("valid service")
}

/// `svc` with a test command (or none) and a time limit.
pub fn service_with_tests(command: Option<&str>, timeout: &str) -> ServiceConfig {
    let command = command
        .map(|command| format!("test_command = {command:?}\n"))
        .unwrap_or_default();
    service(&format!("{command}test_timeout = \"{timeout}\""))
}

/// The id of `svc` on the platform.
pub fn id() -> ServiceId {
    ServiceId {
        project: "local".into(),
        region: "local".into(),
        name: "svc".into(),
    }
}

/// A platform where `svc-00001`, labelled with `commit`, serves all traffic.
pub async fn deployed_at(commit: &str) -> MemoryPlatform {
    let platform = MemoryPlatform::new();
    platform
        .create(
            &id(),
            &RevisionSpec {
                name: "svc-00001".into(),
                image: "127.0.0.1:5000/svc@sha256:1".into(),
                labels: revision_labels(commit),
                base: None,
                settings: Default::default(),
            },
        )
        .await
        .expect("create");
    platform
}

/// No fetch, no tests: the steps that only read.
pub fn options_offline() -> PreflightOptions {
    PreflightOptions {
        fetch: false,
        skip_tests: true,
        ..PreflightOptions::default()
    }
}

/// Runs the checklist in `root` against an empty platform.
pub async fn run_in(root: &Path, options: &PreflightOptions) -> PreflightReport {
    let platform = MemoryPlatform::new();
    run(
        &service(""),
        root,
        DeployedSource::Platform {
            platform: &platform,
            id: id(),
        },
        options,
        &Collecting::default(),
    )
    .await
}

/// Runs the checklist of `config` in `repo` against `platform`.
pub async fn run_config(
    repo: &TestRepo,
    config: &ServiceConfig,
    platform: &dyn Platform,
    options: &PreflightOptions,
) -> PreflightReport {
    run(
        config,
        repo.path(),
        DeployedSource::Platform { platform, id: id() },
        options,
        &Collecting::default(),
    )
    .await
}

/// Runs the checklist in `repo` against `platform`.
pub async fn run_with(
    repo: &TestRepo,
    platform: &dyn Platform,
    options: &PreflightOptions,
) -> PreflightReport {
    run_config(repo, &service(""), platform, options).await
}

/// Runs the checklist with the platform unreachable.
pub async fn run_unreachable(repo: &TestRepo, reason: &str) -> PreflightReport {
    run(
        &service(""),
        repo.path(),
        DeployedSource::Unavailable(reason.into()),
        &options_offline(),
        &Collecting::default(),
    )
    .await
}

/// One step of an offline run against an empty platform.
pub async fn run_step(repo: &TestRepo, step: Step) -> Check {
    let report = run_in(repo.path(), &options_offline()).await;
    report.check(step).cloned().expect("every step reports")
}

/// One step of a run that fetches.
pub async fn run_step_fetching(repo: &TestRepo, step: Step) -> Check {
    let options = PreflightOptions {
        fetch: true,
        ..options_offline()
    };
    let report = run_in(repo.path(), &options).await;
    report.check(step).cloned().expect("every step reports")
}

/// Step 5 with these schema globs.
pub async fn schema_step(repo: &TestRepo, platform: &dyn Platform, globs: &[String]) -> Check {
    let list = globs
        .iter()
        .map(|glob| format!("{glob:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = service(&format!("schema_paths = [{list}]"));
    let report = run_config(repo, &config, platform, &options_offline()).await;
    report
        .check(Step::SchemaChanges)
        .cloned()
        .expect("every step reports")
}

/// Collects the events of a run.
#[derive(Debug, Default)]
pub struct Collecting {
    events: Mutex<Vec<String>>,
    lines: Mutex<Vec<String>>,
}

impl Collecting {
    /// The test output lines, in order.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// `started N` / `finished N STATUS` events, in order.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl Reporter for Collecting {
    fn step_started(&self, step: Step) {
        self.events
            .lock()
            .unwrap()
            .push(format!("started {}", step as u8));
    }

    fn step_finished(&self, check: &Check) {
        self.events.lock().unwrap().push(format!(
            "finished {} {}",
            check.step,
            check.status.label()
        ));
    }

    fn test_output(&self, line: &str) {
        self.lines.lock().unwrap().push(line.to_string());
    }
}
