//! The rollout driver on the in-memory platform, for the tests of the driver and of the deploy
//! pipeline: service `svc` serving `svc-stable`, request metrics that read or fail on demand, an
//! analyser and health answers that follow a script, every event recorded, and a short-stepped
//! policy (5 → 25 → 50 → 100%, a 30-minute monitor) meant for paused tokio time.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use deployer::{
    checks::{MetricsError, RequestCounts, RequestMetrics},
    config::{HealthConfig, HumanDuration, RolloutConfig, RunConfig},
    interaction::{Prompter, Unattended},
    platform::{
        memory::MemoryPlatform, Platform, RetryPolicy, RevisionSettings, RevisionSnapshot,
        RevisionSpec, ServiceId,
    },
    rollout::{
        driver::Driver,
        events::{Outcome, RolloutReport},
        identity::{HealthAnswer, HealthProbe, ProbeError},
        journal::{Journal, LocalJournal},
        observation::{MetricResult, Status},
        ports::{Analyser, DeployError, DeployRequest, GateChecks, Interrupt, NoChecks},
    },
};
use serde_json::json;

use super::{recorder::Recorder, service_id::service_id};

/// The commit being deployed.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The image being deployed.
pub const IMAGE: &str = "127.0.0.1:5000/svc@sha256:new";

/// The service under test.
pub fn id() -> ServiceId {
    service_id("p", "r", "svc")
}

/// Metrics: per revision, either counts or an error.
#[derive(Default)]
pub struct Metrics {
    pub canary_errors: Mutex<bool>,
}

#[async_trait]
impl RequestMetrics for Metrics {
    async fn request_counts(
        &self,
        _: &ServiceId,
        _: &str,
        _: Duration,
    ) -> Result<RequestCounts, MetricsError> {
        if *self.canary_errors.lock().expect("the metrics switch") {
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
pub struct Script(pub Mutex<Vec<MetricResult>>);

impl Script {
    pub fn new(judgements: Vec<MetricResult>) -> Self {
        Self(Mutex::new(judgements))
    }
}

impl Analyser for Script {
    fn judge(&self, _: RequestCounts, _: Option<RequestCounts>) -> MetricResult {
        let mut script = self.0.lock().expect("the analyser's script");
        if script.len() > 1 {
            script.remove(0)
        } else {
            script[0].clone()
        }
    }
}

/// Health answers: the tag URL reports `identity`, the service URL 200.
pub struct Probe {
    pub identity: serde_json::Value,
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

/// A prompter that always picks the same option (a user answering at the terminal).
pub struct Picks(pub usize);

impl Prompter for Picks {
    fn confirm(&self, _: &str, safe_default: bool) -> bool {
        safe_default
    }

    fn choose(&self, _: &str, _: &[&str], _: usize) -> usize {
        self.0
    }
}

/// 5 → 25 → 50 → 100%, a look every 15 s, a 30-minute monitor looked at every 5 minutes.
pub fn policy() -> RolloutConfig {
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

/// A deploy of [`IMAGE`] at [`COMMIT`] to [`id`] under `policy`.
pub fn request(policy: RolloutConfig) -> DeployRequest {
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

/// The in-memory platform with `svc` serving `svc-stable` (`REGION=west`, 512Mi).
pub async fn platform() -> MemoryPlatform {
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
        .expect("create the stable revision");
    platform
}

/// An interrupt that never comes.
pub fn never() -> Interrupt {
    Box::pin(std::future::pending())
}

/// The platform, the scripted parts and a state directory of a driver under test.
pub struct Harness {
    pub platform: MemoryPlatform,
    pub metrics: Metrics,
    pub analyser: Script,
    pub probe: Probe,
    pub recorder: Recorder,
    pub checks: Box<dyn GateChecks>,
    pub state: tempfile::TempDir,
}

impl Harness {
    /// A harness whose analyser answers `judgements` in turn, and whose canary reports the
    /// deployed commit.
    pub async fn new(judgements: Vec<MetricResult>) -> Self {
        Self {
            platform: platform().await,
            metrics: Metrics::default(),
            analyser: Script::new(judgements),
            probe: Probe {
                identity: json!({"service": "svc", "commit": COMMIT}),
            },
            recorder: Recorder::default(),
            checks: Box::new(NoChecks),
            state: tempfile::tempdir().expect("a temporary state directory"),
        }
    }

    /// The driver, unattended.
    pub fn driver(&self) -> Driver<'_> {
        self.driver_with(&Unattended { assume_yes: false })
    }

    /// The driver, asking `prompter`.
    pub fn driver_with<'a>(&'a self, prompter: &'a dyn Prompter) -> Driver<'a> {
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

    /// Deploys `request` unattended and never interrupted; returns its report.
    pub async fn deploy(&self, request: &DeployRequest) -> RolloutReport {
        self.deploy_answering(&Unattended { assume_yes: false }, request)
            .await
    }

    /// Deploys `request` with `prompter` answering, never interrupted; returns its report.
    pub async fn deploy_answering(
        &self,
        prompter: &dyn Prompter,
        request: &DeployRequest,
    ) -> RolloutReport {
        self.driver_with(prompter)
            .deploy(request, never())
            .await
            .expect("the deploy ran")
    }

    /// Deploys `request` unattended, expecting it to be refused; returns why.
    pub async fn deploy_error(&self, request: &DeployRequest) -> DeployError {
        self.deploy_error_answering(&Unattended { assume_yes: false }, request)
            .await
    }

    /// Deploys `request` with `prompter` answering, expecting it to be refused; returns why.
    pub async fn deploy_error_answering(
        &self,
        prompter: &dyn Prompter,
        request: &DeployRequest,
    ) -> DeployError {
        match self.driver_with(prompter).deploy(request, never()).await {
            Ok(report) => panic!("the deploy ran: {:?}", report.outcome),
            Err(error) => error,
        }
    }

    /// The revisions serving `svc` and their percents.
    pub async fn serving(&self) -> Vec<(String, u8)> {
        self.platform
            .service(&id())
            .await
            .expect("read the service")
            .expect("the service exists")
            .serving()
    }

    /// Asserts that `report` promoted its canary, and returns that revision as the platform has it.
    pub async fn promoted(&self, report: &RolloutReport) -> RevisionSnapshot {
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
            .expect("read the revision")
            .expect("the promoted revision exists")
    }

    /// The journal on the service.
    pub async fn journal(&self) -> Journal {
        let snapshot = self
            .platform
            .service(&id())
            .await
            .expect("read the service")
            .expect("the service exists");
        Journal::of(&snapshot).expect("journal recorded")
    }
}

/// The request-error metric failing the canary.
pub fn fail() -> MetricResult {
    MetricResult::new(
        "request errors",
        Status::Fail,
        "canary 30.0% errors (60/200) vs 5% allowed",
    )
}

/// The request-error metric passing the canary.
pub fn pass() -> MetricResult {
    MetricResult::new("request errors", Status::Pass, "canary 0.0% errors (0/400)")
}

/// The request-error metric without enough requests to judge.
pub fn inconclusive() -> MetricResult {
    MetricResult::new(
        "request errors",
        Status::Inconclusive,
        "12 canary requests (< 50 needed)",
    )
}
