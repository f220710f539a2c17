//! The rollout driver against the in-memory platform, with scripted metrics and health answers,
//! under paused tokio time: a 30-minute monitor runs in milliseconds.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use deployer::{
    checks::{MetricsError, RequestCounts, RequestMetrics},
    config::{Gate, HealthConfig, HumanDuration, InconclusivePolicy, RolloutConfig, RunConfig},
    interaction::{Prompter, Unattended},
    platform::{
        memory::{Fault, MemoryPlatform},
        Platform, PlatformError, RetryPolicy, RevisionSettings, RevisionSnapshot, RevisionSpec,
        ServiceId, ServiceUpdate, TrafficTarget,
    },
    rollout::{
        driver::Driver,
        events::{Event, Outcome, RolloutReport, RolloutReporter},
        identity::{HealthAnswer, HealthProbe, ProbeError},
        journal::{Journal, LocalJournal, JOURNAL_ANNOTATION},
        lock::{Lock, LOCK_ANNOTATION},
        machine::{Phase, State},
        observation::{MetricResult, Status},
        ports::{Analyser, CheckScope, DeployRequest, GateChecks, Interrupt, NoChecks},
    },
};
use serde_json::json;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const IMAGE: &str = "127.0.0.1:5000/svc@sha256:new";

fn id() -> ServiceId {
    ServiceId {
        project: "p".into(),
        region: "r".into(),
        name: "svc".into(),
    }
}

/// Metrics: per revision, either counts or an error.
#[derive(Default)]
struct Metrics {
    canary_errors: Mutex<bool>,
}

#[async_trait]
impl RequestMetrics for Metrics {
    async fn request_counts(
        &self,
        _: &ServiceId,
        _: &str,
        _: Duration,
    ) -> Result<RequestCounts, MetricsError> {
        if *self.canary_errors.lock().unwrap() {
            return Err(MetricsError::Unavailable {
                provider: "test".into(),
                message: "HTTP 503".into(),
            });
        }
        Ok(RequestCounts {
            total: 100,
            errors: 1,
            sample_ppm: None,
        })
    }
}

/// An analyser that answers from a script, then repeats its last answer.
struct Script(Mutex<Vec<MetricResult>>);

impl Script {
    fn new(judgements: Vec<MetricResult>) -> Self {
        Self(Mutex::new(judgements))
    }
}

impl Analyser for Script {
    fn judge(&self, _: RequestCounts, _: Option<RequestCounts>) -> MetricResult {
        let mut script = self.0.lock().unwrap();
        if script.len() > 1 {
            script.remove(0)
        } else {
            script[0].clone()
        }
    }
}

/// Health answers: the tag URL reports `identity`, the service URL 200.
struct Probe {
    identity: serde_json::Value,
}

#[async_trait]
impl HealthProbe for Probe {
    async fn get(&self, url: &str, _: Duration) -> Result<HealthAnswer, ProbeError> {
        Ok(HealthAnswer {
            status: 200,
            body: Some(if url.contains("canary---") {
                self.identity.clone()
            } else {
                json!({"service": "svc"})
            }),
        })
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl RolloutReporter for Recorder {
    fn event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn canary_percents(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|event| match event {
                Event::TrafficMoved { canary_percent, .. } => Some(*canary_percent),
                _ => None,
            })
            .collect()
    }
}

fn policy() -> RolloutConfig {
    RolloutConfig {
        steps: vec![5, 25, 50, 100],
        hold: HumanDuration(Duration::from_secs(300)),
        interval: HumanDuration(Duration::from_secs(15)),
        monitor_duration: HumanDuration(Duration::from_secs(1800)),
        monitor_interval: HumanDuration(Duration::from_secs(300)),
        consecutive_error_limit: 3,
        ..RolloutConfig::default()
    }
}

fn request(policy: RolloutConfig) -> DeployRequest {
    DeployRequest {
        id: id(),
        service_name: "svc".into(),
        image: IMAGE.into(),
        commit: COMMIT.into(),
        commit_time: None,
        dirty: None,
        run: RunConfig::default(),
        env: BTreeMap::new(),
        policy,
        health: HealthConfig::default(),
        lock_wait: Duration::ZERO,
        ready_timeout: Duration::from_secs(60),
        accept_warnings: false,
    }
}

async fn platform() -> MemoryPlatform {
    let platform = MemoryPlatform::new();
    platform
        .create(
            &id(),
            &RevisionSpec {
                name: "svc-stable".into(),
                image: "127.0.0.1:5000/svc@sha256:old".into(),
                labels: BTreeMap::new(),
                base: None,
                settings: RevisionSettings {
                    env: BTreeMap::from([("REGION".to_string(), "west".to_string())]),
                    memory: Some("512Mi".into()),
                    ..RevisionSettings::default()
                },
            },
        )
        .await
        .unwrap();
    platform
}

fn never() -> Interrupt {
    Box::pin(std::future::pending())
}

struct Harness {
    platform: MemoryPlatform,
    metrics: Metrics,
    analyser: Script,
    probe: Probe,
    recorder: Recorder,
    checks: Box<dyn GateChecks>,
    state: tempfile::TempDir,
}

impl Harness {
    async fn new(judgements: Vec<MetricResult>) -> Self {
        Self {
            platform: platform().await,
            metrics: Metrics::default(),
            analyser: Script::new(judgements),
            probe: Probe {
                identity: json!({"service": "svc", "commit": COMMIT}),
            },
            recorder: Recorder::default(),
            checks: Box::new(NoChecks),
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn driver(&self) -> Driver<'_> {
        self.driver_with(&Unattended { assume_yes: false })
    }

    fn driver_with<'a>(&'a self, prompter: &'a dyn Prompter) -> Driver<'a> {
        Driver {
            platform: &self.platform,
            metrics: &self.metrics,
            analyser: &self.analyser,
            probe: &self.probe,
            checks: self.checks.as_ref(),
            reporter: &self.recorder,
            prompter,
            local_journal: LocalJournal::in_directory(self.state.path().to_path_buf()),
            retry: RetryPolicy::default(),
        }
    }

    async fn serving(&self) -> Vec<(String, u8)> {
        self.platform
            .service(&id())
            .await
            .unwrap()
            .unwrap()
            .serving()
    }

    /// Asserts that `report` promoted its canary, and returns that revision as the platform has it.
    async fn promoted(&self, report: &RolloutReport) -> RevisionSnapshot {
        let canary = report.canary.clone().expect("a canary was created");
        assert_eq!(
            report.outcome,
            Outcome::Promoted {
                revision: canary.clone()
            },
            "{:?}",
            report.notes
        );
        self.platform
            .revision(&id(), &canary)
            .await
            .unwrap()
            .expect("the promoted revision exists")
    }

    async fn journal(&self) -> Journal {
        let snapshot = self.platform.service(&id()).await.unwrap().unwrap();
        Journal::of(&snapshot).expect("journal recorded")
    }
}

fn fail() -> MetricResult {
    MetricResult::new(
        "request errors",
        Status::Fail,
        "canary 30.0% errors (60/200) vs 5% allowed",
    )
}

fn pass() -> MetricResult {
    MetricResult::new("request errors", Status::Pass, "canary 0.0% errors (0/400)")
}

fn inconclusive() -> MetricResult {
    MetricResult::new(
        "request errors",
        Status::Inconclusive,
        "12 canary requests (< 50 needed)",
    )
}

#[tokio::test(start_paused = true)]
async fn a_healthy_canary_is_promoted_after_the_full_monitor() {
    let harness = Harness::new(vec![pass()]).await;
    let started = tokio::time::Instant::now();
    let report = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    let canary = report.canary.clone().unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: canary.clone()
        }
    );
    assert_eq!(harness.serving().await, [(canary.clone(), 100)]);
    assert_eq!(harness.recorder.canary_percents(), [5, 25, 50, 100]);
    // Three steps of one interval each, then the 30-minute monitor.
    assert!(
        started.elapsed() >= Duration::from_secs(1800 + 45),
        "{:?}",
        started.elapsed()
    );
    let journal = harness.journal().await;
    assert_eq!(journal.phase(), Phase::Promoted);
    let snapshot = harness.platform.service(&id()).await.unwrap().unwrap();
    assert!(
        !snapshot.annotations.contains_key(LOCK_ANNOTATION),
        "lock released"
    );
    let revision = harness
        .platform
        .revision(&id(), &canary)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revision.labels["deployer-commit"], COMMIT);
    assert!(canary.starts_with("svc-0123456-"), "{canary}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_is_rolled_back_with_its_numbers() {
    let harness = Harness::new(vec![pass(), fail()]).await;
    let report = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    match &report.outcome {
        Outcome::RolledBack { reason, revision } => {
            assert_eq!(revision, "svc-stable");
            assert!(reason.contains("30.0% errors"), "{reason}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
    assert_eq!(harness.recorder.canary_percents(), [5, 25]);
    assert_eq!(harness.journal().await.phase(), Phase::RolledBack);
}

#[tokio::test(start_paused = true)]
async fn wrong_code_never_gets_traffic() {
    let mut harness = Harness::new(vec![pass()]).await;
    harness.probe.identity = json!({"service": "svc", "commit": "fedcba9876543210"});
    let report = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    match &report.outcome {
        Outcome::StoppedBeforeTraffic { reason } => {
            assert!(reason.starts_with("wrong code deployed"), "{reason}")
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    assert!(
        harness.recorder.canary_percents().is_empty(),
        "no traffic moved"
    );
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
    assert_eq!(harness.journal().await.phase(), Phase::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_revision_that_fails_to_start_stops_the_deploy() {
    let harness = Harness::new(vec![pass()]).await;
    harness.platform.fail_image(IMAGE);
    let report = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    match &report.outcome {
        Outcome::StoppedBeforeTraffic { reason } => {
            assert!(reason.contains("failed to start"), "{reason}")
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn metrics_unavailable_is_never_promoted() {
    let harness = Harness::new(vec![pass()]).await;
    *harness.metrics.canary_errors.lock().unwrap() = true;
    let report = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    match &report.outcome {
        Outcome::RolledBack { reason, .. } => {
            assert!(reason.contains("4 unread looks in a row"), "{reason}")
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn inconclusive_with_hold_leaves_the_split_for_a_human() {
    let harness = Harness::new(vec![inconclusive()]).await;
    let mut policy = policy();
    policy.inconclusive = InconclusivePolicy::Hold;
    let report = harness
        .driver()
        .deploy(&request(policy), never())
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Outcome::Held { .. }),
        "{:?}",
        report.outcome
    );
    let canary = report.canary.unwrap();
    assert_eq!(
        harness.serving().await,
        [("svc-stable".to_string(), 95), (canary, 5)]
    );
    assert_eq!(harness.journal().await.phase(), Phase::Held);
}

#[tokio::test(start_paused = true)]
async fn a_failure_in_the_monitor_rolls_back() {
    // Three passing steps, then the first monitor check fails.
    let harness = Harness::new(vec![pass(), pass(), pass(), fail()]).await;
    let report = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(harness.recorder.canary_percents(), [5, 25, 50, 100]);
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn a_rollback_survives_platform_errors() {
    let harness = Harness::new(vec![fail()]).await;
    // The first step's write, then two 503s on the rollback write.
    let driver = harness.driver();
    let platform = &harness.platform;
    let deploy_request = request(policy());
    let deploy = driver.deploy(&deploy_request, never());
    tokio::pin!(deploy);
    // Let the deploy reach its first analysis, then break the API for two calls.
    tokio::select! {
        _ = &mut deploy => panic!("finished too early"),
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    platform.inject(Fault::Before(PlatformError::Unavailable("503".into())));
    platform.inject(Fault::After(PlatformError::Unavailable("503".into())));
    let report = deploy.await.unwrap();
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn another_writer_mid_rollout_stops_safely() {
    let harness = Harness::new(vec![pass()]).await;
    let driver = harness.driver();
    let deploy_request = request(policy());
    let deploy = driver.deploy(&deploy_request, never());
    tokio::pin!(deploy);
    tokio::select! {
        _ = &mut deploy => panic!("finished too early"),
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    // An on-call engineer's emergency rollback lands between two steps.
    harness.platform.external_update(
        &id(),
        &ServiceUpdate::traffic(vec![TrafficTarget::to_revision("svc-stable", 100)]),
    );
    let report = deploy.await.unwrap();
    match &report.outcome {
        Outcome::RolledBack { reason, revision } => {
            assert_eq!(revision, "svc-stable");
            assert!(
                reason.contains("someone else changed the service"),
                "{reason}"
            );
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

/// A previous deployer died (kill -9) with a canary at 25% and its lock held.
async fn crash_mid_canary(harness: &Harness) {
    crash_in(
        harness,
        State {
            phase: Phase::Canary,
            step: Some(1),
            percent: 25,
            ..State::start()
        },
    )
    .await;
}

/// A previous deployer died (kill -9) in `state`, its lock held, the split as the state says.
async fn crash_in(harness: &Harness, state: State) {
    let percent = state.percent;
    let snapshot = harness.platform.service(&id()).await.unwrap().unwrap();
    harness
        .platform
        .update(
            &id(),
            &snapshot.etag,
            &ServiceUpdate {
                template: Some(RevisionSpec {
                    name: "svc-crashed".into(),
                    image: "127.0.0.1:5000/svc@sha256:crashed".into(),
                    labels: BTreeMap::new(),
                    base: None,
                    settings: RevisionSettings::default(),
                }),
                traffic: Some(vec![
                    TrafficTarget::to_revision("svc-stable", 100 - percent),
                    TrafficTarget::to_revision("svc-crashed", percent).tagged("canary"),
                ]),
                ..ServiceUpdate::default()
            },
        )
        .await
        .unwrap();
    let dead = Journal {
        id: "dead-rollout".into(),
        stable: Some("svc-stable".into()),
        canary: "svc-crashed".into(),
        commit: "crashed".into(),
        commit_time: None,
        image: "img".into(),
        owner: "ci@runner".into(),
        started: chrono::Utc::now(),
        updated: chrono::Utc::now(),
        state,
        decision: None,
    };
    let mut lock = Lock::new(
        "dead-rollout",
        Duration::from_secs(3600),
        chrono::Utc::now(),
    );
    // Its process is gone: a child that has exited and been reaped.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    lock.pid = gone.id();
    harness.platform.external_update(
        &id(),
        &ServiceUpdate::default()
            .with_annotation(
                JOURNAL_ANNOTATION,
                Some(serde_json::to_string(&dead).unwrap()),
            )
            .with_annotation(LOCK_ANNOTATION, Some(serde_json::to_string(&lock).unwrap())),
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_rollout_is_rolled_back_by_the_next_run() {
    let harness = Harness::new(vec![pass()]).await;
    crash_mid_canary(&harness).await;
    let report = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    assert!(
        report
            .notes
            .iter()
            .any(|note| note.contains("interrupted rollout `dead-rollout` rolled back")),
        "{:?}",
        report.notes
    );
    let canary = report.canary.clone().unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: canary.clone()
        }
    );
    assert_eq!(harness.serving().await, [(canary, 100)]);
}

#[tokio::test(start_paused = true)]
async fn ctrl_c_takes_the_safe_default_when_unattended() {
    let harness = Harness::new(vec![inconclusive()]).await;
    let interrupt: Interrupt = Box::pin(tokio::time::sleep(Duration::from_secs(40)));
    let report = harness
        .driver()
        .deploy(&request(policy()), interrupt)
        .await
        .unwrap();
    match &report.outcome {
        Outcome::RolledBack { reason, .. } => assert_eq!(reason, "interrupted by the user"),
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn a_locked_service_is_not_touched() {
    let harness = Harness::new(vec![pass()]).await;
    let other = Lock::new(
        "someone-else",
        Duration::from_secs(3600),
        chrono::Utc::now(),
    );
    harness.platform.external_update(
        &id(),
        &ServiceUpdate::default().with_annotation(
            LOCK_ANNOTATION,
            Some(serde_json::to_string(&other).unwrap()),
        ),
    );
    let writes = harness.platform.writes();
    let error = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("locked by"), "{error}");
    assert_eq!(harness.platform.writes(), writes, "nothing written");
}

#[tokio::test(start_paused = true)]
async fn a_running_rollout_is_not_mistaken_for_an_interrupted_one() {
    let harness = Harness::new(vec![pass()]).await;
    // Another deployer, alive (this very process), is in its canary step.
    let running = Journal {
        id: "running-rollout".into(),
        stable: Some("svc-stable".into()),
        canary: "svc-other".into(),
        commit: "other".into(),
        commit_time: None,
        image: "img".into(),
        owner: "ci@runner".into(),
        started: chrono::Utc::now(),
        updated: chrono::Utc::now(),
        state: State {
            phase: Phase::Canary,
            step: Some(0),
            percent: 5,
            ..State::start()
        },
        decision: None,
    };
    let lock = Lock::new(
        "running-rollout",
        Duration::from_secs(3600),
        chrono::Utc::now(),
    );
    harness.platform.external_update(
        &id(),
        &ServiceUpdate::default()
            .with_annotation(
                JOURNAL_ANNOTATION,
                Some(serde_json::to_string(&running).unwrap()),
            )
            .with_annotation(LOCK_ANNOTATION, Some(serde_json::to_string(&lock).unwrap())),
    );
    let writes = harness.platform.writes();
    let error = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("rollout running-rollout"),
        "{error}"
    );
    assert_eq!(
        harness.platform.writes(),
        writes,
        "the running rollout was not rolled back"
    );
}

/// A prompter that always picks the same option (a user answering at the terminal).
struct Picks(usize);

impl Prompter for Picks {
    fn confirm(&self, _: &str, safe_default: bool) -> bool {
        safe_default
    }

    fn choose(&self, _: &str, _: &[&str], _: usize) -> usize {
        self.0
    }
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_rollout_can_be_resumed_where_it_stopped() {
    let harness = Harness::new(vec![pass()]).await;
    crash_mid_canary(&harness).await;
    let writes = harness.platform.writes();
    let report = harness
        .driver_with(&Picks(1))
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: "svc-crashed".into()
        },
        "{:?}",
        report.notes
    );
    assert_eq!(
        report.id.as_deref(),
        Some("dead-rollout"),
        "the resumed rollout keeps its id"
    );
    // Resumed at its step (25%), not from the start; no new revision was created.
    assert_eq!(harness.recorder.canary_percents(), [25, 50, 100]);
    assert_eq!(harness.serving().await, [("svc-crashed".to_string(), 100)]);
    assert!(harness.platform.writes() > writes);
    assert!(report
        .notes
        .iter()
        .any(|note| note.contains("resumed the interrupted rollout")));
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_rollout_can_be_left_for_a_human() {
    let harness = Harness::new(vec![pass()]).await;
    crash_mid_canary(&harness).await;
    let writes = harness.platform.writes();
    let error = harness
        .driver_with(&Picks(2))
        .deploy(&request(policy()), never())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("left for a human"), "{error}");
    assert_eq!(harness.platform.writes(), writes, "nothing written");
}

#[tokio::test(start_paused = true)]
async fn a_build_from_a_dirty_tree_is_labelled_as_such_on_its_revision() {
    let harness = Harness::new(vec![pass()]).await;
    let mut dirty = request(policy());
    dirty.dirty = Some("54bad933".into());
    let report = harness.driver().deploy(&dirty, never()).await.unwrap();
    let canary = report.canary.unwrap();
    let revision = harness
        .platform
        .revision(&id(), &canary)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revision.labels["deployer-dirty"], "54bad933");
    assert_eq!(revision.labels["deployer-commit"], COMMIT);
}

/// Service checks scripted per gate: every run of a gate answers the same results.
struct Checks(BTreeMap<Gate, Vec<MetricResult>>);

#[async_trait]
impl GateChecks for Checks {
    fn gates(&self, gate: Gate) -> bool {
        self.0.contains_key(&gate)
    }

    async fn run(&self, gate: Gate, scope: &CheckScope) -> Vec<MetricResult> {
        assert!(scope.revision.starts_with("svc-0123456-"), "{scope:?}");
        assert_eq!(scope.stable_revision.as_deref(), Some("svc-stable"));
        self.0.get(&gate).cloned().unwrap_or_default()
    }
}

fn check(name: &str, status: Status) -> MetricResult {
    MetricResult::new(name, status, "92.4% (threshold: >= 90%)")
}

/// Defect 1: with `inconclusive = "promote"`, a huge error limit and every metrics read failing,
/// the old driver moved 10% → 50% → 100% and reported "post-deploy monitor passed".
#[tokio::test(start_paused = true)]
async fn metrics_always_failing_never_promote_under_any_inconclusive_policy() {
    for inconclusive in [
        InconclusivePolicy::Promote,
        InconclusivePolicy::Hold,
        InconclusivePolicy::Rollback,
    ] {
        let harness = Harness::new(vec![pass()]).await;
        *harness.metrics.canary_errors.lock().unwrap() = true;
        let mut policy = policy();
        policy.inconclusive = inconclusive;
        policy.consecutive_error_limit = 100;
        let report = harness
            .driver()
            .deploy(&request(policy), never())
            .await
            .unwrap();
        assert!(
            !matches!(report.outcome, Outcome::Promoted { .. }),
            "{inconclusive:?}: {:?}",
            report.outcome
        );
        assert_eq!(
            harness.recorder.canary_percents(),
            [5],
            "{inconclusive:?}: never left the first step"
        );
        let reason = match &report.outcome {
            Outcome::Held { reason } | Outcome::RolledBack { reason, .. } => reason.clone(),
            other => panic!("{inconclusive:?}: {other:?}"),
        };
        assert!(reason.contains("never promoted without data"), "{reason}");
    }
}

/// Defect 2: a monitor in which nothing could be read "passed".
#[tokio::test(start_paused = true)]
async fn a_monitor_without_readable_metrics_does_not_pass() {
    let no_data = MetricResult::new("request errors", Status::NoData, "no series");
    let harness = Harness::new(vec![pass(), pass(), pass(), no_data]).await;
    let mut policy = policy();
    policy.consecutive_error_limit = 100;
    policy.inconclusive = InconclusivePolicy::Hold;
    let report = harness
        .driver()
        .deploy(&request(policy), never())
        .await
        .unwrap();
    match &report.outcome {
        Outcome::Held { reason } => assert!(
            reason.contains("had no look that read every metric"),
            "{reason}"
        ),
        other => panic!("expected a hold, got {other:?}"),
    }
    assert_eq!(harness.journal().await.phase(), Phase::Held);
}

/// Defect 3: Ctrl-C "leave the split" during the monitor journalled the rollout Promoted and
/// dropped the stable revision from the split.
#[tokio::test(start_paused = true)]
async fn ctrl_c_leave_during_the_monitor_ends_held_with_the_stable_revision_kept() {
    let harness = Harness::new(vec![pass()]).await;
    // Three steps of 15 s, then 10 minutes into the 30-minute monitor.
    let interrupt: Interrupt = Box::pin(tokio::time::sleep(Duration::from_secs(45 + 600)));
    let report = harness
        .driver_with(&Picks(1))
        .deploy(&request(policy()), interrupt)
        .await
        .unwrap();
    assert!(
        matches!(&report.outcome, Outcome::Held { reason } if reason.contains("interrupted")),
        "{:?}",
        report.outcome
    );
    let journal = harness.journal().await;
    assert_eq!(journal.phase(), Phase::Held);
    let snapshot = harness.platform.service(&id()).await.unwrap().unwrap();
    assert!(
        snapshot
            .traffic
            .iter()
            .any(|target| target.revision.as_deref() == Some("svc-stable")),
        "the stable revision stays in the split: {:?}",
        snapshot.traffic
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_monitor_is_resumed_by_promoting_and_monitoring_again() {
    let harness = Harness::new(vec![pass()]).await;
    crash_in(
        &harness,
        State {
            phase: Phase::Monitoring,
            percent: 100,
            ..State::start()
        },
    )
    .await;
    let started = tokio::time::Instant::now();
    let report = harness
        .driver_with(&Picks(1))
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: "svc-crashed".into()
        }
    );
    assert_eq!(harness.recorder.canary_percents(), [100]);
    assert!(
        started.elapsed() >= Duration::from_secs(1800),
        "monitored again in full"
    );
}

/// Defect 4: after a rolled-back `--env FAIL_RATE=0.3` deploy, the next plain deploy created a
/// revision that again had `FAIL_RATE=0.3` (it edited the template of the rolled-back revision).
#[tokio::test(start_paused = true)]
async fn the_next_revision_starts_from_the_stable_revision_not_a_rolled_back_one() {
    let harness = Harness::new(vec![fail()]).await;
    let mut faulty = request(policy());
    faulty.env = BTreeMap::from([("FAIL_RATE".to_string(), "0.3".to_string())]);
    let report = harness.driver().deploy(&faulty, never()).await.unwrap();
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }));

    *harness.analyser.0.lock().unwrap() = vec![pass()];
    let mut plain = request(policy());
    plain.run = RunConfig {
        memory: Some("1Gi".into()),
        ..RunConfig::default()
    };
    let report = harness.driver().deploy(&plain, never()).await.unwrap();
    let revision = harness.promoted(&report).await;
    assert_eq!(
        revision.settings.env,
        BTreeMap::from([("REGION".to_string(), "west".to_string())]),
        "the stable revision's environment, without the rolled-back FAIL_RATE"
    );
    assert_eq!(revision.settings.memory.as_deref(), Some("1Gi"));
    let changes: Vec<Vec<String>> = harness
        .recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|event| match event {
            Event::SettingsChanged { changes } => Some(changes.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        [
            vec!["env FAIL_RATE: unset → 0.3".to_string()],
            vec!["memory: 512Mi → 1Gi".to_string()]
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_critical_validation_check_stops_the_deploy_before_any_traffic() {
    let mut harness = Harness::new(vec![pass()]).await;
    harness.checks = Box::new(Checks(BTreeMap::from([(
        Gate::Validation,
        vec![check("Vegas Line Coverage", Status::Fail)],
    )])));
    let report = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    match &report.outcome {
        Outcome::StoppedBeforeTraffic { reason } => {
            assert!(reason.contains("Vegas Line Coverage FAIL"), "{reason}")
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    assert!(harness.recorder.canary_percents().is_empty());
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn validation_warnings_stop_an_unattended_deploy_and_pass_when_accepted() {
    let mut harness = Harness::new(vec![pass()]).await;
    harness.checks = Box::new(Checks(BTreeMap::from([(
        Gate::Validation,
        vec![check("Grading Completeness", Status::Warn)],
    )])));
    let report = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    assert!(
        matches!(&report.outcome, Outcome::StoppedBeforeTraffic { reason } if reason.contains("not accepted")),
        "{:?}",
        report.outcome
    );
    let mut accepted = request(policy());
    accepted.accept_warnings = true;
    let report = harness.driver().deploy(&accepted, never()).await.unwrap();
    assert!(
        matches!(report.outcome, Outcome::Promoted { .. }),
        "{:?}",
        report.outcome
    );
}

#[tokio::test(start_paused = true)]
async fn a_critical_canary_check_rolls_back_naming_the_check() {
    let mut harness = Harness::new(vec![inconclusive()]).await;
    harness.checks = Box::new(Checks(BTreeMap::from([(
        Gate::Canary,
        vec![check("Recent Predictions", Status::Fail)],
    )])));
    let report = harness
        .driver()
        .deploy(&request(policy()), never())
        .await
        .unwrap();
    match &report.outcome {
        Outcome::RolledBack { reason, .. } => {
            assert!(
                reason.contains("Recent Predictions FAIL: 92.4%"),
                "{reason}"
            )
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(harness.recorder.canary_percents(), [5]);
}

/// Recovery from every phase a crashed run can have journalled: before traffic moved the
/// canary is dropped and the requested deploy goes on; after, "resume" continues from the
/// journalled step (or the monitor) through the same state machine, and ends promoted.
#[tokio::test(start_paused = true)]
async fn recovery_resumes_from_each_journalled_phase() {
    let at = |phase, step: Option<usize>, percent| State {
        phase,
        step,
        percent,
        ..State::start()
    };
    let cases = [
        (at(Phase::Verifying, None, 0), None),
        (at(Phase::Validating, None, 0), None),
        (at(Phase::Canary, Some(0), 5), Some(vec![5, 25, 50, 100])),
        (at(Phase::Canary, Some(1), 25), Some(vec![25, 50, 100])),
        (at(Phase::Canary, Some(2), 50), Some(vec![50, 100])),
        // The monitor is resumed by writing 100% again (idempotent), then monitoring afresh.
        (at(Phase::Monitoring, None, 100), Some(vec![100])),
    ];
    for (state, resumed_percents) in cases {
        let phase = state.phase;
        let harness = Harness::new(vec![pass()]).await;
        crash_in(&harness, state).await;
        let report = harness
            .driver_with(&Picks(1))
            .deploy(&request(policy()), never())
            .await
            .unwrap();
        let serving = harness.serving().await;
        match resumed_percents {
            Some(percents) => {
                assert_eq!(
                    report.outcome,
                    Outcome::Promoted {
                        revision: "svc-crashed".into()
                    },
                    "{phase:?}: {:?}",
                    report.notes
                );
                assert_eq!(harness.recorder.canary_percents(), percents, "{phase:?}");
                assert_eq!(serving, [("svc-crashed".to_string(), 100)], "{phase:?}");
            }
            None => {
                // Nothing had moved: the crashed canary is dropped, the new image deployed.
                let canary = report.canary.clone().unwrap();
                assert_ne!(canary, "svc-crashed", "{phase:?}");
                assert_eq!(
                    report.outcome,
                    Outcome::Promoted {
                        revision: canary.clone()
                    },
                    "{phase:?}: {:?}",
                    report.notes
                );
                assert_eq!(serving, [(canary, 100)], "{phase:?}");
            }
        }
        let journal = harness.journal().await;
        assert_eq!(journal.phase(), Phase::Promoted, "{phase:?}");
        let snapshot = harness.platform.service(&id()).await.unwrap().unwrap();
        assert!(
            !snapshot.annotations.contains_key(LOCK_ANNOTATION),
            "{phase:?}: no lock left by the dead run or this one"
        );
    }
}

/// The deploy pipeline (preflight → image → rollout) on the in-memory platform: the order of
/// its stages and what each outcome leaves behind.
mod pipeline {
    use std::sync::Arc;

    use deployer::rollout::pipeline::{
        self, Delivered, ImageSource, Plan, Stages, SyntheticTraffic, TargetKind, PREFLIGHT_STOPPED,
    };

    use super::*;

    /// Stages that answer from a script and record what was asked.
    struct Scripted {
        safe: bool,
        calls: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(safe: bool) -> Self {
            Self {
                safe,
                calls: Mutex::new(Vec::new()),
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait(?Send)]
    impl Stages for Scripted {
        async fn preflight(&self) -> anyhow::Result<bool> {
            self.calls.lock().unwrap().push("preflight".into());
            Ok(self.safe)
        }

        async fn build(&self, push: bool) -> anyhow::Result<Delivered> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("build push={push}"));
            Ok(Delivered {
                image: IMAGE.into(),
                commit: COMMIT.into(),
                dirty: None,
            })
        }
    }

    fn plan(target: TargetKind, image: ImageSource, run: RunConfig) -> Plan {
        Plan {
            target,
            target_name: id().to_string(),
            // Nothing listens on port 1: the optional local registry does not answer.
            repository: "127.0.0.1:1/svc".into(),
            skip_preflight: false,
            image,
            service: "svc".into(),
            rollout: Box::new(move |delivered: Delivered| DeployRequest {
                image: delivered.image,
                commit: delivered.commit,
                dirty: delivered.dirty,
                run,
                ..request(policy())
            }),
            traffic: None,
        }
    }

    fn events(harness: &Harness) -> Vec<Event> {
        harness.recorder.0.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn a_checklist_with_problems_stops_before_the_image_and_writes_nothing() {
        let harness = Harness::new(vec![pass()]).await;
        let stages = Scripted::new(false);
        let writes = harness.platform.writes();
        let report = pipeline::deploy(
            plan(
                TargetKind::CloudRun,
                ImageSource::Build,
                RunConfig::default(),
            ),
            &stages,
            &harness.driver(),
            never(),
        )
        .await
        .unwrap();
        assert_eq!(
            report.outcome,
            Outcome::StoppedBeforeTraffic {
                reason: PREFLIGHT_STOPPED.into()
            }
        );
        assert_eq!(report.id, None, "no rollout began");
        assert_eq!(stages.calls(), ["preflight"], "nothing was built");
        assert_eq!(harness.platform.writes(), writes, "nothing was written");
        assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn cloud_run_builds_and_pushes_then_rolls_out_what_was_built() {
        let harness = Harness::new(vec![pass()]).await;
        let stages = Scripted::new(true);
        let report = pipeline::deploy(
            plan(
                TargetKind::CloudRun,
                ImageSource::Build,
                RunConfig::default(),
            ),
            &stages,
            &harness.driver(),
            never(),
        )
        .await
        .unwrap();
        assert_eq!(stages.calls(), ["preflight", "build push=true"]);
        let revision = harness.promoted(&report).await;
        assert_eq!(revision.image, IMAGE);
        assert_eq!(revision.labels["deployer-commit"], COMMIT);
        // The opening line comes before the revision exists.
        let events = events(&harness);
        let deploying = events
            .iter()
            .position(|event| matches!(event, Event::Deploying { .. }))
            .expect("the opening event");
        let created = events
            .iter()
            .position(|event| matches!(event, Event::RevisionCreated { .. }))
            .unwrap();
        assert!(deploying < created);
    }

    #[tokio::test(start_paused = true)]
    async fn a_local_target_without_a_registry_deploys_the_local_image_and_says_so() {
        let harness = Harness::new(vec![pass()]).await;
        let stages = Scripted::new(true);
        let report = pipeline::deploy(
            plan(TargetKind::Local, ImageSource::Build, RunConfig::default()),
            &stages,
            &harness.driver(),
            never(),
        )
        .await
        .unwrap();
        assert_eq!(stages.calls(), ["preflight", "build push=false"]);
        assert!(
            report
                .notes
                .iter()
                .any(|note| note.contains("does not answer: deploying the local image")),
            "{:?}",
            report.notes
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_given_image_is_deployed_without_a_build_and_skipping_the_checklist_is_recorded() {
        let mut harness = Harness::new(vec![pass()]).await;
        let stages = Scripted::new(false);
        let given = Delivered {
            image: "127.0.0.1:5000/svc@sha256:given".into(),
            commit: "fedcba9".into(),
            dirty: None,
        };
        let mut plan = plan(
            TargetKind::CloudRun,
            ImageSource::Given(given),
            RunConfig::default(),
        );
        plan.skip_preflight = true;
        harness.probe = Probe {
            identity: json!({"service": "svc", "commit": "fedcba9"}),
        };
        let report = pipeline::deploy(plan, &stages, &harness.driver(), never())
            .await
            .unwrap();
        assert!(stages.calls().is_empty(), "{:?}", stages.calls());
        let revision = harness.promoted(&report).await;
        assert_eq!(revision.image, "127.0.0.1:5000/svc@sha256:given");
        assert!(events(&harness).iter().any(|event| matches!(
            event,
            Event::Warning { message } if message.contains("--skip-preflight")
        )));
        assert!(report
            .notes
            .iter()
            .any(|note| note.contains("--skip-preflight")));
    }

    #[tokio::test(start_paused = true)]
    async fn secrets_a_local_target_cannot_resolve_are_warned_before_the_revision_exists() {
        let harness = Harness::new(vec![pass()]).await;
        let stages = Scripted::new(true);
        let run = RunConfig {
            secrets: BTreeMap::from([(
                "API_KEY".to_string(),
                "projects/p/secrets/api-key/versions/3".to_string(),
            )]),
            ..RunConfig::default()
        };
        pipeline::deploy(
            plan(TargetKind::Local, ImageSource::Build, run),
            &stages,
            &harness.driver(),
            never(),
        )
        .await
        .unwrap();
        let events = events(&harness);
        let warned = events
            .iter()
            .position(|event| matches!(event, Event::Warning { message } if message.contains("`API_KEY`")))
            .expect("the secret is named");
        let created = events
            .iter()
            .position(|event| matches!(event, Event::RevisionCreated { .. }))
            .unwrap();
        assert!(warned < created);
    }

    #[tokio::test(start_paused = true)]
    async fn synthetic_traffic_is_summarised_in_the_report() {
        let harness = Harness::new(vec![pass()]).await;
        let stages = Scripted::new(true);
        let mut plan = plan(TargetKind::Local, ImageSource::Build, RunConfig::default());
        plan.traffic = Some(SyntheticTraffic {
            rate: 5,
            platform: Arc::new(MemoryPlatform::new()),
        });
        let report = pipeline::deploy(plan, &stages, &harness.driver(), never())
            .await
            .unwrap();
        assert!(
            report
                .notes
                .iter()
                .any(|note| note.starts_with("synthetic traffic")),
            "{:?}",
            report.notes
        );
    }
}

/// A first deploy used to leave the created service following "latest" (Cloud Run's default):
/// a revision created by anyone afterwards would have taken all traffic unverified.
#[tokio::test(start_paused = true)]
async fn a_first_deploy_names_its_revision_in_the_split_instead_of_following_latest() {
    /// The first revision answers on the service URL itself.
    struct Everywhere;
    #[async_trait]
    impl HealthProbe for Everywhere {
        async fn get(&self, _: &str, _: Duration) -> Result<HealthAnswer, ProbeError> {
            Ok(HealthAnswer {
                status: 200,
                body: Some(json!({"service": "svc", "commit": COMMIT})),
            })
        }
    }
    let harness = Harness::new(vec![pass()]).await;
    let empty = MemoryPlatform::new();
    let driver = Driver {
        platform: &empty,
        probe: &Everywhere,
        ..harness.driver()
    };
    let report = driver.deploy(&request(policy()), never()).await.unwrap();
    let revision = report.canary.clone().unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: revision.clone()
        },
        "{:?}",
        report.notes
    );
    let snapshot = empty.service(&id()).await.unwrap().unwrap();
    assert_eq!(
        snapshot.traffic,
        [TrafficTarget::to_revision(&revision, 100)],
        "the split names the revision"
    );
}

/// A service whose revisions all failed (its first deploy had a bad image) could never be
/// deployed again: the next deploy pinned the split to the revision named ``, read it six times
/// and ended "did not start". It is deployed as a first deploy, with nothing to roll back to.
#[tokio::test(start_paused = true)]
async fn a_service_whose_revisions_all_failed_is_deployed_as_a_first_deploy() {
    struct Everywhere;
    #[async_trait]
    impl HealthProbe for Everywhere {
        async fn get(&self, _: &str, _: Duration) -> Result<HealthAnswer, ProbeError> {
            Ok(HealthAnswer {
                status: 200,
                body: Some(json!({"service": "svc", "commit": COMMIT})),
            })
        }
    }
    let harness = Harness::new(vec![pass()]).await;
    let failed = MemoryPlatform::new();
    failed.fail_image("127.0.0.1:5000/svc@sha256:bad");
    let created = failed
        .create(
            &id(),
            &RevisionSpec {
                name: "svc-bad".into(),
                image: "127.0.0.1:5000/svc@sha256:bad".into(),
                labels: BTreeMap::new(),
                base: None,
                settings: RevisionSettings::default(),
            },
        )
        .await;
    assert!(created.is_err(), "the first revision fails to start");
    let before = failed
        .service(&id())
        .await
        .unwrap()
        .expect("the service exists with its failed revision");
    assert_eq!(
        before.primary_revision().as_deref(),
        Some(""),
        "the state of the report: nothing Ready serves"
    );
    let driver = Driver {
        platform: &failed,
        probe: &Everywhere,
        ..harness.driver()
    };
    let report = driver.deploy(&request(policy()), never()).await.unwrap();
    let revision = report.canary.clone().expect("a revision was deployed");
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: revision.clone()
        },
        "{:?}",
        report.notes
    );
    assert!(
        report
            .notes
            .iter()
            .any(|note| note.contains("nothing to roll back to")
                || note.contains("no previous revision")),
        "{:?}",
        report.notes
    );
    assert!(
        !report
            .notes
            .iter()
            .any(|note| note.contains("pins it to ``")),
        "{:?}",
        report.notes
    );
    let after = failed.service(&id()).await.unwrap().unwrap();
    assert_eq!(after.serving(), [(revision.clone(), 100)]);
    assert!(Lock::of(&after).is_none(), "the lock is released");
}

/// `deploy --env DB_PASSWORD=…` printed the value in `settings-changed` (`env DB_PASSWORD:
/// unset → …`), in text and in `--format json` events. No event of the rollout carries it now.
#[tokio::test(start_paused = true)]
async fn the_value_of_a_secret_looking_variable_is_in_no_event() {
    let harness = Harness::new(vec![pass()]).await;
    let mut secret = request(policy());
    secret.env = BTreeMap::from([
        ("DB_PASSWORD".to_string(), "hunter2-value".to_string()),
        ("api_token".to_string(), "token-value".to_string()),
    ]);
    let report = harness.driver().deploy(&secret, never()).await.unwrap();
    harness.promoted(&report).await;
    let events = harness.recorder.0.lock().unwrap().clone();
    let json = serde_json::to_string(&events).unwrap();
    let debug = format!("{events:?} {report:?}");
    for value in ["hunter2-value", "token-value"] {
        assert!(!json.contains(value), "{json}");
        assert!(!debug.contains(value), "{debug}");
    }
    assert!(
        json.contains("env DB_PASSWORD: set (value not shown)"),
        "changed/unchanged is still said: {json}"
    );
}
