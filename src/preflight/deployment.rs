//! The deployed state (read once through the [`Platform`] boundary) and steps 7–8: the
//! deployment status and the serving service's `/health`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    config::HealthConfig,
    platform::{ServiceSnapshot, TrafficTarget},
    rollout::lock::Lock,
};

use super::{Check, DeployedSource, Status, Step};

/// The revision label holding the commit a revision was built from.
pub const COMMIT_LABEL: &str = "deployer-commit";

/// The revision serving most traffic, and the commit its label names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployedRevision {
    /// Revision name.
    pub revision: String,
    /// Value of its `deployer-commit` label, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// What the platform says about the service.
#[derive(Debug, Clone)]
pub(super) enum DeployedState {
    /// The platform could not be read; the reason.
    Unavailable(String),
    /// The service does not exist: this is its first deploy.
    NotDeployed {
        /// The platform's name of the service.
        service: String,
    },
    /// The service exists.
    Deployed {
        /// As read.
        snapshot: Box<ServiceSnapshot>,
        /// The revision serving most traffic, with its commit label (`None`: nothing serves).
        primary: Option<DeployedRevision>,
        /// Why the primary revision's labels could not be read, if they could not.
        revision_problem: Option<String>,
    },
}

impl DeployedState {
    pub(super) fn deployed_revision(&self) -> Option<DeployedRevision> {
        match self {
            DeployedState::Deployed { primary, .. } => primary.clone(),
            _ => None,
        }
    }
}

/// Reads the service and its serving revision, each read within `limit`.
pub(super) async fn read(source: DeployedSource<'_>, limit: Duration) -> DeployedState {
    let (platform, id) = match source {
        DeployedSource::Unavailable(reason) => return DeployedState::Unavailable(reason),
        DeployedSource::Platform { platform, id } => (platform, id),
    };
    let too_slow = || {
        format!(
            "reading `{}` took longer than {}",
            id.name,
            humantime::format_duration(limit)
        )
    };
    let snapshot = match tokio::time::timeout(limit, platform.service(&id)).await {
        Err(_) => return DeployedState::Unavailable(too_slow()),
        Ok(Err(error)) => return DeployedState::Unavailable(error.to_string()),
        Ok(Ok(None)) => {
            return DeployedState::NotDeployed {
                service: id.name.clone(),
            }
        }
        Ok(Ok(Some(snapshot))) => snapshot,
    };
    let mut revision_problem = None;
    let primary = match snapshot.primary_revision() {
        None => None,
        Some(name) => {
            let commit = match tokio::time::timeout(limit, platform.revision(&id, &name)).await {
                Err(_) => {
                    revision_problem = Some(too_slow());
                    None
                }
                Ok(Err(error)) => {
                    revision_problem = Some(error.to_string());
                    None
                }
                Ok(Ok(None)) => {
                    revision_problem = Some(format!("revision `{name}` not found"));
                    None
                }
                Ok(Ok(Some(revision))) => revision.labels.get(COMMIT_LABEL).cloned(),
            };
            Some(DeployedRevision {
                revision: name,
                commit,
            })
        }
    };
    DeployedState::Deployed {
        snapshot: Box::new(snapshot),
        primary,
        revision_problem,
    }
}

fn split_text(snapshot: &ServiceSnapshot) -> String {
    let serving = snapshot.serving();
    if serving.is_empty() {
        return "no revision serves traffic".into();
    }
    serving
        .iter()
        .map(|(revision, percent)| format!("{revision} {percent}%"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn written_split(traffic: &[TrafficTarget]) -> String {
    if traffic.is_empty() {
        return "(empty: follows the latest ready revision)".into();
    }
    traffic
        .iter()
        .map(|target| {
            let revision = target.revision.as_deref().unwrap_or("LATEST");
            match &target.tag {
                Some(tag) => format!("{revision} {}% tag `{tag}`", target.percent),
                None => format!("{revision} {}%", target.percent),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Step 7: ready, latest ready revision, split, pinned traffic, lock. Every finding is listed;
/// the worst decides the status and gives the reason.
pub(super) fn status(state: &DeployedState, now: DateTime<Utc>) -> Check {
    let step = Step::DeploymentStatus;
    let (snapshot, primary) = match state {
        DeployedState::Unavailable(reason) => {
            return Check::warn(step, format!("cannot run: {reason}")).hint(
                "check the platform endpoint and credentials (`--endpoint`, `gcloud auth application-default login`)",
            )
        }
        DeployedState::NotDeployed { service } => {
            return Check::pass(
                step,
                format!("first deploy: `{service}` does not exist on the platform yet"),
            )
        }
        DeployedState::Deployed {
            snapshot, primary, ..
        } => (snapshot, primary),
    };
    let follows_latest = snapshot.traffic_follows_latest();
    let mut details = vec![
        format!("ready: {}", if snapshot.ready { "yes" } else { "no" }),
        format!("latest ready revision: {}", snapshot.latest_ready_revision),
        format!("serving: {}", split_text(snapshot)),
        format!(
            "traffic: {}{}",
            written_split(&snapshot.traffic),
            if follows_latest {
                ""
            } else {
                " (pinned by revision name)"
            }
        ),
    ];
    let mut findings: Vec<(Status, String, Option<String>)> = Vec::new();
    match Lock::of(snapshot) {
        None => details.push("lock: none".into()),
        Some(lock) if lock.is_expired(now) => {
            details.push(format!("lock: {} (expired)", lock.describe()));
            findings.push((
                Status::Warn,
                format!("a stale rollout lock: {}", lock.describe()),
                Some(format!(
                    "the rollout that held it may have crashed: the next deploy finds its journal; `deployer unlock {}` removes the lock",
                    snapshot.id.name
                )),
            ));
        }
        Some(lock) => {
            details.push(format!("lock: {}", lock.describe()));
            findings.push((
                Status::Fail,
                format!("a rollout is in progress: locked by {}", lock.describe()),
                Some(format!(
                    "wait for it (`deploy --lock-wait`); only if its holder is gone: `deployer unlock {}`",
                    snapshot.id.name
                )),
            ));
        }
    }
    if !snapshot.ready {
        let why = snapshot.failure.as_deref().unwrap_or("no reason given");
        findings.push((
            Status::Warn,
            format!("the service is not Ready: {why}"),
            Some("the last change failed; the service keeps serving its last good revision".into()),
        ));
    }
    if snapshot.reconciling {
        findings.push((
            Status::Warn,
            "the platform is still applying a change to the service".into(),
            Some("wait for it to finish".into()),
        ));
    }
    let serving = snapshot.serving();
    if serving.len() > 1 {
        findings.push((
            Status::Warn,
            format!(
                "traffic is split across {} revisions ({}): a rollout may be in progress or interrupted",
                serving.len(),
                split_text(snapshot)
            ),
            Some("find out who is rolling out before starting another rollout".into()),
        ));
    }
    let latest_serves = serving
        .iter()
        .any(|(name, _)| *name == snapshot.latest_ready_revision);
    if !follows_latest && !latest_serves && !serving.is_empty() {
        findings.push((
            Status::Warn,
            format!(
                "traffic is pinned to {} while the latest ready revision `{}` gets none",
                split_text(snapshot),
                snapshot.latest_ready_revision
            ),
            Some("an earlier deploy was not promoted (or was rolled back): find out why before deploying on top".into()),
        ));
    }
    if serving.is_empty() {
        findings.push((Status::Warn, "no revision serves traffic".into(), None));
    }
    let worst = findings.iter().map(|finding| finding.0).max();
    match worst {
        None => {
            let serving = primary
                .as_ref()
                .map(|primary| primary.revision.as_str())
                .unwrap_or_default();
            let which = if serving == snapshot.latest_ready_revision {
                " (the latest ready revision)"
            } else {
                ""
            };
            Check::pass(
                step,
                format!(
                    "ready; `{serving}` serves 100%{which}; traffic {}",
                    if follows_latest {
                        "follows the latest revision"
                    } else {
                        "pinned by revision name"
                    }
                ),
            )
            .details(details)
        }
        Some(worst) => {
            let mut chosen = None;
            for (status, reason, hint) in findings {
                if status == worst && chosen.is_none() {
                    chosen = Some((reason, hint));
                } else {
                    details.push(format!("also: {reason}"));
                }
            }
            let (reason, hint) = chosen.unwrap_or_default();
            let check = Check::new(step, worst, reason).details(details);
            match hint {
                Some(hint) => check.hint(hint),
                None => check,
            }
        }
    }
}

/// Step 8: `GET <service URL><health path>` answers 200 within the health timeout.
///
/// The service URL routes to the serving revisions, so this is the health users get now. An
/// answer other than 200 FAILs (production is unhealthy before the deploy: the canary analysis
/// would compare against a failing baseline). No answer at all WARNs: the URL may simply not be
/// reachable from this machine (internal ingress), which says nothing about the service.
pub(super) async fn health(state: &DeployedState, config: &HealthConfig) -> Check {
    let step = Step::ServiceHealth;
    let snapshot = match state {
        DeployedState::Unavailable(reason) => {
            return Check::warn(step, format!("cannot run: {reason}"))
        }
        DeployedState::NotDeployed { service } => {
            return Check::pass(
                step,
                format!("first deploy: nothing serves `{service}` yet"),
            )
        }
        DeployedState::Deployed { snapshot, .. } => snapshot,
    };
    if snapshot.serving().is_empty() {
        return Check::warn(step, "cannot run: no revision serves traffic");
    }
    if snapshot.uri.is_empty() {
        return Check::warn(step, "cannot run: the platform reports no service URL");
    }
    let url = format!("{}{}", snapshot.uri.trim_end_matches('/'), config.path);
    crate::install_crypto_provider();
    let client = match reqwest::Client::builder()
        .timeout(config.timeout.get())
        .build()
    {
        Ok(client) => client,
        Err(error) => return Check::warn(step, format!("cannot run: {error}")),
    };
    let started = Instant::now();
    match client.get(&url).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => Check::pass(
            step,
            format!(
                "GET {url} answered 200 in {} ms",
                started.elapsed().as_millis()
            ),
        ),
        Ok(response) => Check::fail(
            step,
            format!("GET {url} answered {}", response.status()),
        )
        .hint(
            "production is unhealthy before this deploy: find out why first (401/403: the service needs authentication)",
        ),
        Err(error) => {
            let why = if error.is_timeout() {
                format!("no answer within {}", config.timeout)
            } else {
                super::describe(&error)
            };
            Check::warn(step, format!("GET {url} failed: {why}")).hint(
                "the service may not be reachable from this machine (internal ingress, VPN, proxy)",
            )
        }
    }
}

#[cfg(test)]
mod platform_tests {
    use std::collections::BTreeMap;

    use chrono::TimeDelta;

    use super::super::{test_support::*, Status, Step};
    use crate::{
        platform::{memory::MemoryPlatform, Platform, RevisionSpec, ServiceUpdate, TrafficTarget},
        rollout::lock::{Lock, LOCK_ANNOTATION},
        testing::TestRepo,
    };

    async fn with_second_revision(platform: &MemoryPlatform, split: Vec<TrafficTarget>) {
        let snapshot = platform.service(&id()).await.unwrap().unwrap();
        let update = ServiceUpdate {
            template: Some(RevisionSpec {
                name: "svc-00002".into(),
                image: "127.0.0.1:5000/svc@sha256:2".into(),
                labels: BTreeMap::new(),
                base: None,
                settings: Default::default(),
            }),
            traffic: Some(split),
            ..ServiceUpdate::default()
        };
        platform
            .update(&id(), &snapshot.etag, &update)
            .await
            .unwrap();
    }

    async fn step(repo: &TestRepo, platform: &MemoryPlatform, step: Step) -> super::Check {
        let report = run_with(repo, platform, &options_offline()).await;
        report.check(step).cloned().unwrap()
    }

    /// A lock taken `age` ago for ten minutes.
    fn lock(age: TimeDelta) -> ServiceUpdate {
        let taken = chrono::Utc::now() - age;
        let lock = Lock::new("rollout-1", std::time::Duration::from_secs(600), taken);
        ServiceUpdate::default()
            .with_annotation(LOCK_ANNOTATION, Some(serde_json::to_string(&lock).unwrap()))
    }

    #[tokio::test]
    async fn step_7_ready_and_serving_passes_with_the_details() {
        let repo = TestRepo::new();
        let head = repo.commit_file("a.txt", "one", "first");
        let platform = deployed_at(&head).await;
        let check = step(&repo, &platform, Step::DeploymentStatus).await;
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert_eq!(
            check.reason,
            "ready; `svc-00001` serves 100% (the latest ready revision); traffic follows the latest revision"
        );
        assert_eq!(
            check.details,
            [
                "ready: yes",
                "latest ready revision: svc-00001",
                "serving: svc-00001 100%",
                "traffic: (empty: follows the latest ready revision)",
                "lock: none"
            ]
        );
    }

    #[tokio::test]
    async fn step_7_warns_on_a_split_and_on_pinned_traffic() {
        let repo = TestRepo::new();
        let head = repo.commit_file("a.txt", "one", "first");
        let platform = deployed_at(&head).await;
        with_second_revision(
            &platform,
            vec![
                TrafficTarget::to_revision("svc-00001", 90),
                TrafficTarget::to_revision("svc-00002", 10).tagged("canary"),
            ],
        )
        .await;
        let check = step(&repo, &platform, Step::DeploymentStatus).await;
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert_eq!(
            check.reason,
            "traffic is split across 2 revisions (svc-00001 90%, svc-00002 10%): a rollout may be in progress or interrupted"
        );

        platform.external_update(
            &id(),
            &ServiceUpdate::traffic(vec![TrafficTarget::to_revision("svc-00001", 100)]),
        );
        let check = step(&repo, &platform, Step::DeploymentStatus).await;
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert_eq!(
            check.reason,
            "traffic is pinned to svc-00001 100% while the latest ready revision `svc-00002` gets none"
        );
    }

    #[tokio::test]
    async fn step_7_fails_while_a_rollout_holds_the_lock_and_warns_on_a_stale_one() {
        let repo = TestRepo::new();
        let head = repo.commit_file("a.txt", "one", "first");
        let platform = deployed_at(&head).await;
        platform.external_update(&id(), &lock(TimeDelta::minutes(1)));
        let check = step(&repo, &platform, Step::DeploymentStatus).await;
        assert_eq!(check.status, Status::Fail, "{check:?}");
        assert!(check.reason.contains("rollout rollout-1"), "{check:?}");
        assert!(
            check
                .reason
                .starts_with("a rollout is in progress: locked by "),
            "{check:?}"
        );

        platform.external_update(&id(), &lock(TimeDelta::minutes(20)));
        let check = step(&repo, &platform, Step::DeploymentStatus).await;
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(
            check.reason.starts_with("a stale rollout lock: "),
            "{check:?}"
        );
        assert!(check.reason.contains("rollout rollout-1"), "{check:?}");
    }

    /// A one-route HTTP server on 127.0.0.1:0 answering `status` to everything.
    async fn health_server(status: u16) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let code = axum::http::StatusCode::from_u16(status).unwrap();
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(move || async move { (code, "{}") }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn step_8_health_200_passes_other_answers_fail_no_answer_warns() {
        let repo = TestRepo::new();
        let head = repo.commit_file("a.txt", "one", "first");
        let platform = deployed_at(&head).await;

        let healthy = health_server(200).await;
        platform.set_uri(&id(), &healthy);
        let check = step(&repo, &platform, Step::ServiceHealth).await;
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert!(check
            .reason
            .starts_with(&format!("GET {healthy}/health answered 200 in ")));

        let failing = health_server(503).await;
        platform.set_uri(&id(), &failing);
        let check = step(&repo, &platform, Step::ServiceHealth).await;
        assert_eq!(check.status, Status::Fail, "{check:?}");
        assert_eq!(
            check.reason,
            format!("GET {failing}/health answered 503 Service Unavailable")
        );

        // A port nobody listens on: bound, then released.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        platform.set_uri(&id(), &format!("http://{address}"));
        let check = step(&repo, &platform, Step::ServiceHealth).await;
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(check
            .reason
            .starts_with(&format!("GET http://{address}/health failed: ")));
    }

    #[tokio::test]
    async fn steps_7_and_8_pass_on_a_first_deploy() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        let platform = MemoryPlatform::new();
        let check = step(&repo, &platform, Step::DeploymentStatus).await;
        assert_eq!(check.status, Status::Pass);
        assert_eq!(
            check.reason,
            "first deploy: `svc` does not exist on the platform yet"
        );
        let check = step(&repo, &platform, Step::ServiceHealth).await;
        assert_eq!(check.status, Status::Pass);
        assert_eq!(check.reason, "first deploy: nothing serves `svc` yet");
    }
}
