//! Guarded rollouts end to end against the local emulator, with Google's official client and
//! real containers: `Driver::deploy` on `CloudRunPlatform`, request counts from the emulator's
//! Cloud Monitoring API judged by the sequential analysis, identity checked on the tag URL, and a
//! load generator sending real requests through the emulator's router meanwhile. The last test
//! runs the `deployer` binary and `kill -9`s it in the middle of a canary step.
//!
//! Every test starts its own emulator on an ephemeral port; all revisions run the demo service
//! `examples/hello` (one image, built once), whose identity and error rate come from its
//! environment (`SERVICE_NAME`, `BUILD_COMMIT`, `FAIL_RATE`).

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod support;

#[path = "fixtures/bigquery/seed.rs"]
mod seed;
#[path = "support/slack.rs"]
mod slack;
#[path = "support/webhook.rs"]
mod webhook;

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use deployer::{
    checks::cloud_monitoring::CloudMonitoring,
    config::{HealthConfig, HumanDuration, InconclusivePolicy, RolloutConfig, RunConfig},
    emulator::{faults::FaultConfig, Emulator},
    interaction::Unattended,
    platform::{
        cloud_run::CloudRunPlatform, Platform, PlatformError, RetryPolicy, RevisionSnapshot,
        RevisionSpec, ServiceId, ServiceSnapshot, ServiceUpdate,
    },
    rollout::{
        analyser::SequentialAnalyser,
        driver::Driver,
        events::Outcome,
        gates::ServiceChecks,
        identity::HttpProbe,
        journal::{Journal, LocalJournal, JOURNAL_ANNOTATION},
        lock::{LockError, LOCK_ANNOTATION},
        machine::Phase,
        ports::{DeployError, DeployRequest, GateChecks, NoChecks},
    },
};
use std::sync::{atomic::AtomicU64, Arc};

use deployer::{
    checks::{ProviderEndpoints, Providers},
    config::ServiceConfig,
};
use support::{
    create_hello_service, emulator_platform, hello_env, hello_image, recorder::Recorder,
    service_id::local_service_id, start_emulator, Load,
};

/// The commit of the revision serving before each rollout.
const STABLE_COMMIT: &str = "5ab1e00000000000000000000000000000000001";
/// The commit being deployed.
const NEW_COMMIT: &str = "c0ffee0000000000000000000000000000000002";
/// Requests per second of the load generator.
const LOAD_RATE: u32 = 50;
/// Longest any one test sends load.
const LOAD_LIMIT: Duration = Duration::from_secs(120);

/// A short policy: 10% → 50% → 100%, looks every second, 3 s of post-deploy monitor. With
/// 50 requests/s, the 10% step sees about 5 canary requests a second; `max_error_rate` 0.2 lets
/// the sequential test pass a healthy canary after about 22 requests and fail one at 30% errors
/// after about 26.
fn policy() -> RolloutConfig {
    RolloutConfig {
        steps: vec![10, 50, 100],
        hold: HumanDuration(Duration::from_secs(20)),
        interval: HumanDuration(Duration::from_secs(1)),
        max_error_rate: 0.2,
        min_requests: 20,
        inconclusive: InconclusivePolicy::Rollback,
        monitor_duration: HumanDuration(Duration::from_secs(3)),
        monitor_interval: HumanDuration(Duration::from_secs(1)),
        consecutive_error_limit: 3,
        ..RolloutConfig::default()
    }
}

fn health() -> HealthConfig {
    HealthConfig {
        timeout: HumanDuration(Duration::from_secs(2)),
        ..HealthConfig::default()
    }
}

fn request(name: &str, commit: &str, fail_rate: Option<&str>) -> DeployRequest {
    DeployRequest {
        id: local_service_id(name),
        service_name: name.into(),
        image: hello_image().to_string(),
        commit: commit.into(),
        commit_time: None,
        dirty: None,
        run: RunConfig::default(),
        env: hello_env(name, commit, fail_rate),
        policy: policy(),
        health: health(),
        lock_wait: Duration::ZERO,
        ready_timeout: Duration::from_secs(30),
        accept_warnings: false,
    }
}

/// An emulator with one service `name` serving its first revision `name-stable` (hello at
/// [`STABLE_COMMIT`]), and load on the service URL.
struct Fixture {
    emulator: Emulator,
    platform: CloudRunPlatform,
    id: ServiceId,
    stable: String,
    uri: String,
    load: Option<Load>,
    state: tempfile::TempDir,
    _directory: tempfile::TempDir,
}

impl Fixture {
    async fn new(name: &str) -> Fixture {
        let directory = tempfile::tempdir().unwrap();
        let emulator = start_emulator(&directory.path().join("emulator")).await;
        let platform = emulator_platform(&emulator).await;
        let id = local_service_id(name);
        let stable = format!("{name}-stable");
        let created = create_hello_service(&platform, &id, &stable, STABLE_COMMIT).await;
        assert_eq!(created.serving(), [(stable.clone(), 100)]);
        let load = Load::start(&created.uri, LOAD_RATE, LOAD_LIMIT);
        Fixture {
            emulator,
            platform,
            id,
            stable,
            uri: created.uri,
            load: Some(load),
            state: tempfile::tempdir().unwrap(),
            _directory: directory,
        }
    }

    async fn service(&self) -> ServiceSnapshot {
        self.platform.service(&self.id).await.unwrap().unwrap()
    }

    async fn revision(&self, name: &str) -> RevisionSnapshot {
        self.platform
            .revision(&self.id, name)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("revision `{name}` exists"))
    }

    /// Polls the service until its journal says `phase` at `percent`% (30 s at most).
    async fn wait_for_phase(&self, phase: Phase, percent: u8) -> Journal {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let snapshot = self.service().await;
            if let Some(journal) = Journal::of(&snapshot) {
                if journal.phase() == phase && journal.state.percent == percent {
                    return journal;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the journal never showed {phase:?} at {percent}%: {:?}",
                snapshot.annotations.get(JOURNAL_ANNOTATION)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asserts the service ends on exactly `revision` at 100%, as written and as served, with
    /// no lock left behind.
    async fn assert_serves_only(&self, revision: &str) -> ServiceSnapshot {
        let snapshot = self.service().await;
        assert_eq!(
            snapshot.serving(),
            [(revision.to_string(), 100)],
            "traffic statuses: {:?}",
            snapshot.traffic_statuses
        );
        assert!(
            snapshot
                .traffic
                .iter()
                .all(|target| target.revision.is_some()),
            "the split names every revision explicitly: {:?}",
            snapshot.traffic
        );
        assert!(
            !snapshot.annotations.contains_key(LOCK_ANNOTATION),
            "the lock was released: {:?}",
            snapshot.annotations.get(LOCK_ANNOTATION)
        );
        snapshot
    }

    async fn finish_load(&mut self) -> support::LoadReport {
        self.load.take().expect("load running").finish().await
    }

    async fn shutdown(mut self) {
        if let Some(load) = self.load.take() {
            load.finish().await;
        }
        self.emulator.shutdown().await;
    }
}

/// The parts of a driver that do not depend on the test.
struct Parts {
    metrics: CloudMonitoring,
    analyser: SequentialAnalyser,
    probe: HttpProbe,
    recorder: Recorder,
    prompter: Unattended,
}

impl Parts {
    fn new(monitoring_endpoint: &str) -> Parts {
        Parts {
            metrics: CloudMonitoring::new(monitoring_endpoint).unwrap(),
            analyser: SequentialAnalyser::new(&policy()).unwrap(),
            probe: HttpProbe::new(),
            recorder: Recorder::default(),
            prompter: Unattended::default(),
        }
    }

    fn driver<'a>(&'a self, platform: &'a dyn Platform, state: &std::path::Path) -> Driver<'a> {
        self.driver_with_checks(platform, state, &NoChecks)
    }

    fn driver_with_checks<'a>(
        &'a self,
        platform: &'a dyn Platform,
        state: &std::path::Path,
        checks: &'a dyn GateChecks,
    ) -> Driver<'a> {
        Driver {
            platform,
            metrics: &self.metrics,
            analyser: &self.analyser,
            probe: &self.probe,
            checks,
            reporter: &self.recorder,
            prompter: &self.prompter,
            local_journal: LocalJournal::in_directory(state.to_path_buf()),
            retry: RetryPolicy::default(),
        }
    }
}

fn never() -> deployer::rollout::ports::Interrupt {
    Box::pin(std::future::pending())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_step_by_step_under_real_traffic() {
    let mut fixture = Fixture::new("promote").await;
    let parts = Parts::new(fixture.emulator.endpoint());
    let driver = parts.driver(&fixture.platform, fixture.state.path());

    let report = driver
        .deploy(&request("promote", NEW_COMMIT, None), never())
        .await
        .unwrap();

    let canary = report.canary.clone().unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: canary.clone()
        },
        "{}",
        parts.recorder.transcript()
    );
    assert_eq!(report.stable.as_deref(), Some(fixture.stable.as_str()));
    assert_eq!(parts.recorder.canary_percents(), [10, 50, 100]);
    assert!(
        canary.starts_with("promote-c0ffee0-"),
        "revision named after the commit: {canary}"
    );
    let snapshot = fixture.assert_serves_only(&canary).await;
    let journal = Journal::of(&snapshot).unwrap();
    assert_eq!(journal.phase(), Phase::Promoted);
    assert_eq!(journal.commit, NEW_COMMIT);
    let revision = fixture.revision(&canary).await;
    assert_eq!(revision.labels["deployer-commit"], NEW_COMMIT);
    assert!(revision.labels.contains_key("deployer-version"));
    assert_eq!(revision.image, hello_image());

    // The split was real: both revisions answered the load generator, and nothing failed.
    let load = fixture.finish_load().await;
    assert!(load.served_by(&fixture.stable) > 0, "{load:?}");
    assert!(load.served_by(&canary) > 0, "{load:?}");
    assert!(
        load.answers.keys().all(|(_, status)| *status == 200),
        "{load:?}"
    );
    // After promotion the service URL reaches the new revision only.
    let answer = support::http()
        .get(format!("{}/health", fixture.uri))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["commit"], NEW_COMMIT);
    assert_eq!(body["revision"], canary.as_str());
    fixture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_30_percent_of_requests_is_rolled_back_with_the_numbers() {
    let mut fixture = Fixture::new("failing").await;
    let parts = Parts::new(fixture.emulator.endpoint());
    let driver = parts.driver(&fixture.platform, fixture.state.path());

    let report = driver
        .deploy(&request("failing", NEW_COMMIT, Some("0.3")), never())
        .await
        .unwrap();

    let Outcome::RolledBack { reason, revision } = &report.outcome else {
        panic!(
            "expected a rollback, got {:?}\n{}",
            report.outcome,
            parts.recorder.transcript()
        );
    };
    assert_eq!(revision, &fixture.stable);
    // The reason carries the canary's observed numbers and the limit.
    assert!(reason.contains("% errors ("), "{reason}");
    assert!(reason.contains("20.0% allowed"), "{reason}");
    assert_eq!(
        parts.recorder.canary_percents(),
        [10],
        "never went past the first step"
    );
    let snapshot = fixture.assert_serves_only(&fixture.stable).await;
    let journal = Journal::of(&snapshot).unwrap();
    assert_eq!(journal.phase(), Phase::RolledBack);
    assert_eq!(journal.state.reason.as_deref(), Some(reason.as_str()));
    // The canary really failed real requests, and only the canary.
    let load = fixture.finish_load().await;
    let failed: usize = load
        .answers
        .iter()
        .filter(|((_, status), _)| *status == 500)
        .map(|(_, count)| count)
        .sum();
    assert!(failed > 0, "{load:?}");
    assert_eq!(
        load.answers
            .iter()
            .filter(|((_, status), _)| *status != 200 && *status != 500)
            .count(),
        0,
        "{load:?}"
    );
    fixture.shutdown().await;
}

/// The real platform, with one twist: when the driver sends its rollback write, the emulator is
/// told to answer every PATCH with 503 for the first two attempts — so the rollback itself meets
/// a failing API, deterministically, on top of the background fraction of failing calls.
struct PatchOutage<'a> {
    inner: &'a CloudRunPlatform,
    emulator: &'a Emulator,
    background: FaultConfig,
    rollback_attempts: AtomicUsize,
    unavailable: AtomicUsize,
}

fn is_rollback(update: &ServiceUpdate) -> bool {
    update
        .annotations
        .get(JOURNAL_ANNOTATION)
        .and_then(|value| value.as_deref())
        .and_then(|text| serde_json::from_str::<Journal>(text).ok())
        .is_some_and(|journal| journal.phase() == Phase::RolledBack)
}

#[async_trait]
impl Platform for PatchOutage<'_> {
    async fn service(&self, id: &ServiceId) -> Result<Option<ServiceSnapshot>, PlatformError> {
        self.inner.service(id).await
    }

    async fn revisions(&self, id: &ServiceId) -> Result<Vec<RevisionSnapshot>, PlatformError> {
        self.inner.revisions(id).await
    }

    async fn revision(
        &self,
        id: &ServiceId,
        name: &str,
    ) -> Result<Option<RevisionSnapshot>, PlatformError> {
        self.inner.revision(id, name).await
    }

    async fn create(
        &self,
        id: &ServiceId,
        spec: &RevisionSpec,
    ) -> Result<ServiceSnapshot, PlatformError> {
        self.inner.create(id, spec).await
    }

    async fn update(
        &self,
        id: &ServiceId,
        etag: &str,
        update: &ServiceUpdate,
    ) -> Result<ServiceSnapshot, PlatformError> {
        let outage =
            is_rollback(update) && self.rollback_attempts.fetch_add(1, Ordering::SeqCst) < 2;
        if outage {
            self.emulator
                .set_faults(FaultConfig {
                    error_rate: 1.0,
                    error_status: Some(503),
                    method: Some("PATCH".into()),
                    ..FaultConfig::default()
                })
                .unwrap();
        }
        let result = self.inner.update(id, etag, update).await;
        if outage {
            self.emulator.set_faults(self.background.clone()).unwrap();
        }
        if matches!(result, Err(PlatformError::Unavailable(_))) {
            self.unavailable.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_gets_through_an_api_answering_503s() {
    let fixture = Fixture::new("flaky").await;
    let parts = Parts::new(fixture.emulator.endpoint());
    // A tenth of the Admin API's calls fail with 503 during the whole rollout (Monitoring is
    // left alone: this test is about writes).
    let background = FaultConfig {
        error_rate: 0.1,
        error_status: Some(503),
        path_prefix: Some("/v2/".into()),
        ..FaultConfig::default()
    };
    fixture.emulator.set_faults(background.clone()).unwrap();
    let platform = PatchOutage {
        inner: &fixture.platform,
        emulator: &fixture.emulator,
        background,
        rollback_attempts: AtomicUsize::new(0),
        unavailable: AtomicUsize::new(0),
    };
    let driver = parts.driver(&platform, fixture.state.path());

    let report = driver
        .deploy(&request("flaky", NEW_COMMIT, Some("0.3")), never())
        .await
        .unwrap();

    fixture.emulator.set_faults(FaultConfig::default()).unwrap();
    assert_eq!(
        report.outcome,
        Outcome::RolledBack {
            reason: match &report.outcome {
                Outcome::RolledBack { reason, .. } => reason.clone(),
                other => panic!("expected a rollback, got {other:?}"),
            },
            revision: fixture.stable.clone(),
        }
    );
    assert!(
        platform.rollback_attempts.load(Ordering::SeqCst) >= 3,
        "the rollback write was retried after its 503s"
    );
    assert!(platform.unavailable.load(Ordering::SeqCst) >= 2);
    let snapshot = fixture.assert_serves_only(&fixture.stable).await;
    assert_eq!(Journal::of(&snapshot).unwrap().phase(), Phase::RolledBack);
    fixture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_between_steps_stops_the_rollout_without_losing_their_change() {
    let fixture = Fixture::new("contested").await;
    let parts = Parts::new(fixture.emulator.endpoint());
    let driver = parts.driver(&fixture.platform, fixture.state.path());
    let request = request("contested", NEW_COMMIT, None);

    let other_writer = async {
        fixture.wait_for_phase(Phase::Canary, 10).await;
        // An engineer changes the service with Google's client while the canary is at 10%.
        let (services, _) = support::clients(fixture.emulator.endpoint()).await;
        let mut service = support::get_service(&services, &fixture.id.path()).await;
        service.labels.insert("changed-by".into(), "on-call".into());
        support::update_service(&services, service).await;
    };
    let (report, ()) = tokio::join!(driver.deploy(&request, never()), other_writer);
    let report = report.unwrap();

    let Outcome::RolledBack { reason, revision } = &report.outcome else {
        panic!(
            "expected the rollout to stop, got {:?}\n{}",
            report.outcome,
            parts.recorder.transcript()
        );
    };
    assert_eq!(revision, &fixture.stable);
    assert!(
        reason.contains("changed by someone else"),
        "the reason names the conflict: {reason}"
    );
    assert_eq!(parts.recorder.canary_percents(), [10]);
    let snapshot = fixture.assert_serves_only(&fixture.stable).await;
    assert_eq!(
        snapshot.labels.get("changed-by").map(String::as_str),
        Some("on-call"),
        "the other writer's change survived"
    );
    fixture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metrics_a_canary_is_never_promoted() {
    let fixture = Fixture::new("blind").await;

    // Monitoring unreachable: nothing listens on port 1.
    let parts = Parts::new("http://127.0.0.1:1");
    let driver = parts.driver(&fixture.platform, fixture.state.path());
    let report = driver
        .deploy(&request("blind", NEW_COMMIT, None), never())
        .await
        .unwrap();
    let Outcome::RolledBack { reason, revision } = &report.outcome else {
        panic!("expected a rollback, got {:?}", report.outcome);
    };
    assert_eq!(revision, &fixture.stable);
    // Which rule ends the step depends on how long each failed read takes on a loaded machine:
    // the error limit (4 unread looks in a row) or the step's deadline with nothing read. Both
    // are "never promoted without data".
    assert!(
        reason.contains("4 unread looks in a row")
            || reason.contains("never promoted without data"),
        "{reason}"
    );
    assert!(reason.contains("metrics unavailable"), "{reason}");
    assert_eq!(parts.recorder.canary_percents(), [10]);
    fixture.assert_serves_only(&fixture.stable).await;

    // Monitoring reachable but failing (the emulator answers its Monitoring API with 503s).
    fixture
        .emulator
        .set_faults(FaultConfig {
            error_rate: 1.0,
            error_status: Some(503),
            path_prefix: Some("/v3/".into()),
            ..FaultConfig::default()
        })
        .unwrap();
    let parts = Parts::new(fixture.emulator.endpoint());
    let driver = parts.driver(&fixture.platform, fixture.state.path());
    let report = driver
        .deploy(&request("blind", NEW_COMMIT, None), never())
        .await
        .unwrap();
    let Outcome::RolledBack { reason, revision } = &report.outcome else {
        panic!("expected a rollback, got {:?}", report.outcome);
    };
    assert_eq!(revision, &fixture.stable);
    assert!(reason.contains("503"), "{reason}");
    assert!(
        !parts.recorder.canary_percents().contains(&100),
        "never promoted"
    );
    fixture.assert_serves_only(&fixture.stable).await;

    // The first defect of the rollout core: `inconclusive = "promote"` and a huge error limit
    // with every Monitoring read failing promoted the canary. Now the step ends at its
    // deadline held at 10%, never promoted.
    let mut blind = request("blind", NEW_COMMIT, None);
    blind.policy.inconclusive = InconclusivePolicy::Promote;
    blind.policy.consecutive_error_limit = 100;
    blind.policy.hold = HumanDuration(Duration::from_secs(6));
    let parts = Parts::new(fixture.emulator.endpoint());
    let driver = parts.driver(&fixture.platform, fixture.state.path());
    let report = driver.deploy(&blind, never()).await.unwrap();
    let Outcome::Held { reason } = &report.outcome else {
        panic!("expected a hold, got {:?}", report.outcome);
    };
    assert!(reason.contains("never promoted without data"), "{reason}");
    assert_eq!(parts.recorder.canary_percents(), [10]);
    fixture.shutdown().await;
}

/// The fourth defect of the rollout core: after a rolled-back `--env FAIL_RATE=0.3` deploy, the
/// next plain deploy created a revision that again had `FAIL_RATE=0.3`, because it edited the
/// service's template (which still described the rolled-back revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rolled_back_deploy_the_next_one_does_not_inherit_its_environment() {
    let mut fixture = Fixture::new("inherit").await;
    let parts = Parts::new(fixture.emulator.endpoint());
    let driver = parts.driver(&fixture.platform, fixture.state.path());
    let report = driver
        .deploy(&request("inherit", NEW_COMMIT, Some("0.3")), never())
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{:?}",
        report.outcome
    );
    let faulty = report.canary.unwrap();
    assert_eq!(
        fixture.revision(&faulty).await.settings.env["FAIL_RATE"],
        "0.3"
    );

    // A plain deploy: only the commit changes (`--env` names nothing else).
    let parts = Parts::new(fixture.emulator.endpoint());
    let driver = parts.driver(&fixture.platform, fixture.state.path());
    let mut plain = request("inherit", NEW_COMMIT, None);
    plain.env = BTreeMap::from([("BUILD_COMMIT".to_string(), NEW_COMMIT.to_string())]);
    let report = driver.deploy(&plain, never()).await.unwrap();
    let canary = report.canary.clone().unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: canary.clone()
        },
        "{}",
        parts.recorder.transcript()
    );
    let env = fixture.revision(&canary).await.settings.env;
    assert!(!env.contains_key("FAIL_RATE"), "{env:?}");
    assert_eq!(
        env["SERVICE_NAME"], "inherit",
        "the stable revision's setting kept"
    );
    fixture.assert_serves_only(&canary).await;
    let load = fixture.finish_load().await;
    assert!(load.served_by(&canary) > 0, "{load:?}");
    fixture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_one_proceeds_the_others_fail_naming_the_holder() {
    let fixture = Fixture::new("contended").await;
    let first = Parts::new(fixture.emulator.endpoint());
    let second = Parts::new(fixture.emulator.endpoint());
    let third = Parts::new(fixture.emulator.endpoint());
    let request = request("contended", NEW_COMMIT, None);

    // Two deploys of the same commit at the same moment (a pipeline triggered twice).
    let late_comer = async {
        fixture.wait_for_phase(Phase::Canary, 10).await;
        // A third deploy while the winner is in its canary step.
        let driver = third.driver(&fixture.platform, fixture.state.path());
        driver.deploy(&request, never()).await
    };
    let first_driver = first.driver(&fixture.platform, fixture.state.path());
    let second_driver = second.driver(&fixture.platform, fixture.state.path());
    let (a, b, c) = tokio::join!(
        first_driver.deploy(&request, never()),
        second_driver.deploy(&request, never()),
        late_comer
    );

    let (winner, loser) = match (a, b) {
        (Ok(winner), Err(loser)) | (Err(loser), Ok(winner)) => (winner, loser),
        (a, b) => panic!("exactly one deploy must proceed: {a:?} / {b:?}"),
    };
    let canary = winner.canary.clone().unwrap();
    assert_eq!(
        winner.outcome,
        Outcome::Promoted {
            revision: canary.clone()
        }
    );
    for error in [loser, c.expect_err("the late deploy must not proceed")] {
        let DeployError::Lock(LockError::Held { service, holder }) = &error else {
            panic!("expected the lock error, got {error:?}");
        };
        assert_eq!(service, "contended");
        assert!(
            holder.contains(&format!(
                "rollout {}",
                winner.id.as_deref().unwrap_or_default()
            )) && holder.contains(&format!("pid {}", std::process::id())),
            "the error names the holder: {holder}"
        );
        assert!(error.to_string().contains("is locked by"), "{error}");
    }
    // Only the winner created a revision, and it serves alone.
    let revisions = fixture.platform.revisions(&fixture.id).await.unwrap();
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    fixture.assert_serves_only(&canary).await;
    fixture.shutdown().await;
}

/// The short policy of the binary's tests, as a service file's `[rollout]` table.
const SHORT_ROLLOUT: &str = r#"steps = [10, 50, 100]
hold = "20s"
interval = "1s"
max_error_rate = 0.2
min_requests = 20
inconclusive = "rollback"
monitor_duration = "3s"
monitor_interval = "1s"
consecutive_error_limit = 3
"#;

/// `deployer deploy NAME --image ... --commit COMMIT` against the emulator, as CI would run it.
fn deploy_command(
    fixture: &Fixture,
    services: &std::path::Path,
    state: &std::path::Path,
    commit: &str,
    output: &std::path::Path,
) -> std::process::Command {
    let name = fixture.id.name.as_str();
    let endpoint = fixture.emulator.endpoint();
    let mut command = support::deployer_command(services, state);
    command
        .args(["deploy", name, "--image", hello_image()])
        .args(["--skip-preflight", "--non-interactive"])
        .args(["--endpoint", endpoint, "--monitoring-endpoint", endpoint])
        .args(["--commit", commit])
        .args(["--env", &format!("SERVICE_NAME={name}")])
        .args(["--env", &format!("BUILD_COMMIT={commit}")])
        .stdout(std::fs::File::create(output.with_extension("stdout")).unwrap())
        .stderr(std::fs::File::create(output.with_extension("stderr")).unwrap());
    command
}

fn read_output(output: &std::path::Path) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        std::fs::read_to_string(output.with_extension("stdout")).unwrap_or_default(),
        std::fs::read_to_string(output.with_extension("stderr")).unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_killed_mid_canary_is_recovered_by_the_next_run() {
    let fixture = Fixture::new("crashy").await;
    let repository = tempfile::tempdir().unwrap();
    let services = support::local_repository(repository.path(), "crashy", SHORT_ROLLOUT);
    let state = fixture.state.path();

    // The first deployer gets as far as the 10% step, then dies without a word.
    let first_output = repository.path().join("first");
    let mut first = deploy_command(&fixture, &services, state, NEW_COMMIT, &first_output)
        .spawn()
        .unwrap();
    let journal = tokio::select! {
        journal = fixture.wait_for_phase(Phase::Canary, 10) => journal,
        status = async {
            loop {
                if let Some(status) = first.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } => panic!("deployer exited early ({status}):\n{}", read_output(&first_output)),
    };
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let crashed = journal.canary.clone();
    let snapshot = fixture.service().await;
    assert_eq!(
        snapshot.serving(),
        [(fixture.stable.clone(), 90), (crashed.clone(), 10)],
        "the killed run left its canary at 10%"
    );
    let lock = deployer::rollout::lock::Lock::of(&snapshot).expect("the dead run's lock");
    assert_eq!(lock.pid, first.id());
    assert!(lock.holder_gone());

    // `deployer status` tells on-call what the dead run left behind.
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args([
            "status",
            "crashy",
            "--endpoint",
            fixture.emulator.endpoint(),
        ])
        .env("DEPLOYER_SERVICES_DIR", &services)
        .env("DEPLOYER_STATE_DIR", state)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains(&format!("IN PROGRESS `{}`", journal.id)),
        "{status}"
    );
    assert!(status.contains(&format!("pid {}", first.id())), "{status}");

    // The next run finds the interrupted rollout, rolls it back, then deploys.
    let second_output = repository.path().join("second");
    let second = tokio::process::Command::from(deploy_command(
        &fixture,
        &services,
        state,
        STABLE_COMMIT,
        &second_output,
    ))
    .status()
    .await
    .unwrap();
    let output = read_output(&second_output);
    assert_eq!(second.code(), Some(0), "{output}");
    assert!(
        output.contains(&format!(
            "interrupted rollout `{}` rolled back: 100% on `{}`",
            journal.id, fixture.stable
        )),
        "{output}"
    );
    assert!(output.contains("PROMOTED"), "{output}");
    let snapshot = fixture.service().await;
    let journal = Journal::of(&snapshot).unwrap();
    assert_eq!(journal.phase(), Phase::Promoted);
    assert_ne!(journal.canary, crashed);
    fixture.assert_serves_only(&journal.canary).await;
    assert_eq!(
        fixture.revision(&journal.canary).await.labels["deployer-commit"],
        STABLE_COMMIT
    );
    fixture.shutdown().await;
}

/// A service file for `name` on the emulator with the given `[[checks]]` tables.
fn service_with_checks(name: &str, checks: &str) -> ServiceConfig {
    toml::from_str(&format!(
        r#"
name = "{name}"
runbook = "runbooks/hello.md"
[target]
kind = "local"
[image]
repository = "127.0.0.1:5000/hello"
{checks}
"#
    ))
    .unwrap()
}

/// A JSON endpoint whose `coverage` field the test sets (a data-quality metric of the service).
async fn coverage_server(coverage: Arc<AtomicU64>) -> String {
    let app =
        axum::Router::new().route(
            "/quality",
            axum::routing::get(move || {
                let coverage = coverage.clone();
                async move {
                    axum::Json(serde_json::json!({"coverage": coverage.load(Ordering::SeqCst)}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{address}/quality")
}

fn providers(emulator: &str, bigquery: Option<String>) -> Providers {
    Providers::new(
        ProviderEndpoints {
            bigquery,
            ..ProviderEndpoints::default()
        }
        .or_emulator(Some(emulator)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_check_at_the_degraded_level_stops_the_deploy_before_traffic() {
    let fixture = Fixture::new("validated").await;
    let bigquery = seed::endpoint();
    seed::seed(&bigquery, "local", seed::Level::Degraded).await;
    let config = service_with_checks(
        "validated",
        r#"
[[checks]]
name = "Vegas Line Coverage"
provider = "bigquery"
query = """
SELECT ROUND(100 * SAFE_DIVIDE(SUM(IF(features[OFFSET(25)] > 0, 1, 0)), COUNT(*)), 1),
       SUM(IF(features[OFFSET(25)] > 0, 1, 0)),
       COUNT(*)
FROM `{project}.nba_predictions.ml_feature_store_v2`
WHERE game_date = DATE_SUB(CURRENT_DATE(), INTERVAL 1 DAY)
"""
comparison = ">="
warn = 90
critical = 70
unit = "percent"
gates = ["validation"]
"#,
    );
    let checks = ServiceChecks::new(
        &config,
        &fixture.id,
        providers(fixture.emulator.endpoint(), Some(bigquery)),
    );
    let parts = Parts::new(fixture.emulator.endpoint());
    let driver = parts.driver_with_checks(&fixture.platform, fixture.state.path(), &checks);
    let report = driver
        .deploy(&request("validated", NEW_COMMIT, None), never())
        .await
        .unwrap();
    let Outcome::StoppedBeforeTraffic { reason } = &report.outcome else {
        panic!("expected a stop, got {:?}", report.outcome);
    };
    assert!(
        reason.contains("Vegas Line Coverage FAIL: 44.2%"),
        "{reason}"
    );
    assert!(
        parts.recorder.canary_percents().is_empty(),
        "no traffic moved"
    );
    fixture.assert_serves_only(&fixture.stable).await;

    // The provider down: the gate never passes.
    let config = service_with_checks(
        "validated",
        r#"
[[checks]]
name = "Recent Predictions"
provider = "bigquery"
query = "SELECT COUNT(*) FROM `{project}.nba_predictions.player_prop_predictions`"
comparison = ">"
warn = 100
critical = 10
timeout = "3s"
gates = ["validation"]
"#,
    );
    let down = ServiceChecks::new(
        &config,
        &fixture.id,
        providers(
            fixture.emulator.endpoint(),
            Some("http://127.0.0.1:1".into()),
        ),
    );
    let parts = Parts::new(fixture.emulator.endpoint());
    let driver = parts.driver_with_checks(&fixture.platform, fixture.state.path(), &down);
    let report = driver
        .deploy(&request("validated", NEW_COMMIT, None), never())
        .await
        .unwrap();
    let Outcome::StoppedBeforeTraffic { reason } = &report.outcome else {
        panic!("expected a stop, got {:?}", report.outcome);
    };
    assert!(reason.contains("Recent Predictions ERROR"), "{reason}");
    fixture.assert_serves_only(&fixture.stable).await;
    fixture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_check_turning_critical_rolls_back_naming_the_check() {
    let fixture = Fixture::new("quality").await;
    let coverage = Arc::new(AtomicU64::new(95));
    let url = coverage_server(coverage.clone()).await;
    let config = service_with_checks(
        "quality",
        &format!(
            r#"
[[checks]]
name = "BDB Coverage"
provider = "http"
url = "{url}"
field = "coverage"
comparison = ">="
warn = 90
critical = 70
unit = "percent"
gates = ["canary"]
"#
        ),
    );
    let checks = ServiceChecks::new(
        &config,
        &fixture.id,
        providers(fixture.emulator.endpoint(), None),
    );
    let parts = Parts::new(fixture.emulator.endpoint());
    let (report, rolled_back_after) = {
        let driver = parts.driver_with_checks(&fixture.platform, fixture.state.path(), &checks);
        let deploy_request = request("quality", NEW_COMMIT, None);
        let deploy = driver.deploy(&deploy_request, never());
        tokio::pin!(deploy);
        // Once the canary has traffic, the data it produces degrades.
        let turned = loop {
            tokio::select! {
                report = &mut deploy => panic!("finished before the check turned: {report:?}"),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if parts.recorder.canary_percents().contains(&10) {
                coverage.store(10, Ordering::SeqCst);
                break std::time::Instant::now();
            }
        };
        let report = deploy.await.unwrap();
        (report, turned.elapsed())
    };
    let Outcome::RolledBack { reason, revision } = &report.outcome else {
        panic!("expected a rollback, got {:?}", report.outcome);
    };
    assert_eq!(revision, &fixture.stable);
    assert!(reason.contains("BDB Coverage FAIL: 10%"), "{reason}");
    println!(
        "check CRITICAL → rollback written: {} ms",
        rolled_back_after.as_millis()
    );
    fixture.assert_serves_only(&fixture.stable).await;
    fixture.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_check_on_the_canarys_error_logs_rolls_back() {
    let fixture = Fixture::new("logs").await;
    let config = service_with_checks(
        "logs",
        r#"
[[checks]]
name = "Error Log Lines"
provider = "cloud-logging"
filter = 'resource.labels.service_name="{service}" AND resource.labels.revision_name="{revision}" AND severity>=ERROR'
window = "10s"
comparison = "<="
warn = 1
critical = 3
gates = ["monitor"]
"#,
    );
    let checks = ServiceChecks::new(
        &config,
        &fixture.id,
        providers(fixture.emulator.endpoint(), None),
    );
    let parts = Parts::new(fixture.emulator.endpoint());
    let driver = parts.driver_with_checks(&fixture.platform, fixture.state.path(), &checks);
    // 3% of requests fail: the canary passes the request-error test (20% allowed), and its
    // error log lines (one per 5xx) breach the monitor's check once it serves everything.
    let mut canary = request("logs", NEW_COMMIT, Some("0.03"));
    canary.policy.monitor_duration = HumanDuration(Duration::from_secs(20));
    canary.policy.monitor_interval = HumanDuration(Duration::from_secs(2));
    let report = driver.deploy(&canary, never()).await.unwrap();
    let Outcome::RolledBack { reason, .. } = &report.outcome else {
        panic!(
            "expected a rollback, got {:?}\n{}",
            report.outcome,
            parts.recorder.transcript()
        );
    };
    assert!(
        reason.starts_with("post-deploy monitor: Error Log Lines FAIL"),
        "{reason}"
    );
    assert!(
        parts.recorder.canary_percents().contains(&100),
        "it was promoted first"
    );
    fixture.assert_serves_only(&fixture.stable).await;
    fixture.shutdown().await;
}

/// Commits everything under `root` on `main` of a new repository; returns the commit.
fn commit_all(root: &std::path::Path) -> String {
    let mut options = git2::RepositoryInitOptions::new();
    options.initial_head("main");
    let repository = git2::Repository::init_opts(root, &options).unwrap();
    let mut index = repository.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repository.find_tree(index.write_tree().unwrap()).unwrap();
    let signature = git2::Signature::now("Ada", "ada@example.com").unwrap();
    repository
        .commit(Some("HEAD"), &signature, &signature, "first", &tree, &[])
        .unwrap()
        .to_string()
}

/// `deploy` in GitHub Actions: the preflight it runs annotates its warnings (saying who accepted
/// them), the outcome that is not a promotion is an `::error`, and both go to the step summary.
/// The new revision reports another commit than the one deployed: the identity check stops the
/// deploy before any traffic moves (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_github_actions_a_deploy_annotates_its_preflight_and_its_outcome() {
    let fixture = Fixture::new("annotated").await;
    let repository = tempfile::tempdir().unwrap();
    let services = support::local_repository(repository.path(), "annotated", SHORT_ROLLOUT);
    let head = commit_all(repository.path());
    let runner = tempfile::tempdir().unwrap();
    let summary = runner.path().join("summary.md");
    let endpoint = fixture.emulator.endpoint();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(["deploy", "annotated", "--image", hello_image()])
        .args(["--accept-warnings", "--non-interactive", "--traffic", "0"])
        .args(["--endpoint", endpoint, "--monitoring-endpoint", endpoint])
        .args(["--commit", &head])
        .args(["--env", "SERVICE_NAME=annotated"])
        .args(["--env", &format!("BUILD_COMMIT={NEW_COMMIT}")])
        .current_dir(repository.path())
        .env("DEPLOYER_SERVICES_DIR", &services)
        .env("DEPLOYER_STATE_DIR", fixture.state.path())
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("NO_COLOR", "1")
        .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT")
        .env_remove("DEPLOYER_MONITORING_ENDPOINT")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");
    let annotations: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("::"))
        .collect();
    let (last, preflight) = annotations.split_last().expect("annotations");
    assert!(
        last.starts_with("::error title=Deploy%3A annotated::STOPPED before any traffic moved: ")
            && last.contains(&format!("reports commit `{NEW_COMMIT}`"))
            && last.ends_with("%0A`annotated-stable` serves as before"),
        "{stdout}"
    );
    assert!(!preflight.is_empty(), "{stdout}");
    for annotation in preflight {
        assert!(
            annotation.starts_with("::warning title=Preflight%3A annotated / [")
                && annotation.ends_with(" (accepted by --accept-warnings)"),
            "every preflight warning was accepted by the flag: {stdout}"
        );
    }
    assert!(
        preflight
            .iter()
            .any(|line| line.contains("[3/8] Sync with remote::")),
        "{stdout}"
    );
    let written = std::fs::read_to_string(&summary).unwrap();
    let preflight_at = written
        .find("## Preflight `annotated`: Safe to deploy (")
        .expect(&written);
    let deploy_at = written
        .find("## Deploy `annotated`: STOPPED before any traffic moved: ")
        .expect(&written);
    assert!(preflight_at < deploy_at, "{written}");
    assert!(
        written.contains("`annotated-stable` serves as before\n"),
        "{written}"
    );
    fixture.assert_serves_only(&fixture.stable).await;
    fixture.shutdown().await;
}

/// `deploy` with rollout notifications to a Slack that rate-limits once (`429`, `Retry-After: 1`)
/// and a JSON webhook that hangs: the deploy ends exactly as it would without them (the new
/// revision reports another commit, so the identity check stops it before traffic, exit 3),
/// Slack gets `started` and `stopped` once each, each hanging send costs one note naming its
/// variable, and no webhook URL appears in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_notifications_through_a_rate_limited_slack_and_a_hanging_webhook_leave_the_outcome_unchanged(
) {
    const HOOK: &str = "T000/B000/deploy-s3cr3t";
    let fixture = Fixture::new("notified").await;
    let repository = tempfile::tempdir().unwrap();
    let services = support::local_repository(repository.path(), "notified", SHORT_ROLLOUT);
    let file = services.join("notified.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("\n[notifications]\nwebhook_env = \"DEPLOYER_WEBHOOK_URL\"\n");
    std::fs::write(&file, text).unwrap();
    let slack = slack::SlackStandIn::start(&[HOOK]);
    slack.lock().rate_limit_next = 1;
    let receiver = webhook::WebhookStandIn::start(webhook::Behaviour::Hang);

    let output = repository.path().join("deploy");
    let mut command = deploy_command(
        &fixture,
        &services,
        fixture.state.path(),
        NEW_COMMIT,
        &output,
    );
    command
        // The revision reports the stable commit: "wrong code deployed", stopped before traffic.
        .args(["--env", &format!("BUILD_COMMIT={STABLE_COMMIT}")])
        .args(["--traffic", "0"])
        .env("SLACK_WEBHOOK_URL", slack.hook_url(HOOK))
        .env("DEPLOYER_WEBHOOK_URL", receiver.hook_url("s3cr3t"))
        .env_remove("SLACK_WEBHOOK_URL_WARNING")
        .env_remove("SLACK_WEBHOOK_URL_CRITICAL")
        .env_remove("GITHUB_ACTIONS");
    let status = tokio::task::spawn_blocking(move || command.status().unwrap())
        .await
        .unwrap();
    let text = read_output(&output);
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(text.contains("STOPPED before any traffic moved"), "{text}");
    for secret in ["s3cr3t", slack.url.as_str(), receiver.url.as_str()] {
        assert!(!text.contains(secret), "`{secret}` shown: {text}");
    }
    for event in ["started", "stopped"] {
        let line = format!(
            "note: the `{event}` notification was not delivered to the JSON webhook: the webhook in `DEPLOYER_WEBHOOK_URL` did not answer within 10s"
        );
        assert_eq!(text.matches(&line).count(), 1, "{text}");
    }
    let messages = slack.messages(HOOK);
    let texts: Vec<&str> = messages
        .iter()
        .filter_map(|message| message["text"].as_str())
        .collect();
    // In the order Slack accepted them: `started` may still be waiting out its 429 when the
    // outcome is sent.
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|text| text.contains("`notified` rollout started (INFO)")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|text| text
            .contains("`notified` stopped before any traffic moved (WARNING)")
            && text.contains(STABLE_COMMIT)),
        "the why line travels: {texts:?}"
    );
    assert_eq!(slack.lock().answers, [429, 200, 200]);
    assert_eq!(receiver.lock().requests, 2);
    fixture.assert_serves_only(&fixture.stable).await;
    fixture.shutdown().await;
}
