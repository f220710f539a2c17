//! What the driver reads: the new revision's identity before it gets traffic, and each look of
//! a canary step or of the monitor (the request-error test, the revision's own `/health` and
//! the gate's service checks, read concurrently and reported as one [`Observation`]). Also the
//! question asked on Ctrl-C. Nothing here decides: the machine judges what is read.

use std::time::Duration;

use super::{
    driver::{tag_url, Driver, Running, CANARY_TAG},
    events::Event,
    identity::{self, IdentityError},
    machine::{Interruption, Phase, State},
    observation::{MetricResult, Observation, Status},
    ports::{CheckScope, DeployRequest, REQUEST_ERRORS},
};
use crate::{
    config::Gate,
    platform::read_service,
    repo::{short_commit, RECORDED_COMMIT_CHARS},
};

impl Driver<'_> {
    pub(super) fn scope(&self, running: &Running<'_>) -> CheckScope {
        let request = running.request;
        CheckScope {
            revision: running.journal.canary.clone(),
            stable_revision: running.journal.stable.clone(),
            commit: request.commit.clone(),
            revision_url: running.canary_base.clone(),
            stable_url: running.service_url.clone(),
        }
    }

    /// One look: the request-error test, the health of the canary (its tag URL in a step, the
    /// service URL in the monitor) and the gate's service checks, read concurrently.
    pub(super) async fn observe(
        &self,
        running: &Running<'_>,
        state: &State,
        elapsed: Duration,
    ) -> Observation {
        let request = running.request;
        let policy = &running.policy;
        let id = &request.id;
        let canary = running.journal.canary.clone();
        let stable = running.stable();
        let monitoring = state.phase == Phase::Monitoring;
        let (gate, window, remaining) = if monitoring {
            (
                Gate::Monitor,
                policy.monitor_interval,
                policy.monitor_duration.saturating_sub(elapsed),
            )
        } else {
            // Cumulative counts since the step started: the sequential test of the step.
            (
                Gate::Canary,
                elapsed + Duration::from_secs(1),
                policy.hold.saturating_sub(elapsed),
            )
        };
        // A look's reads retry transient faults within the look's own time: until the next
        // look is due.
        let deadline = tokio::time::Instant::now()
            + if monitoring {
                policy.monitor_interval
            } else {
                policy.interval
            };
        let requests = async {
            // Both revisions at once: they share the look's time.
            let (canary_counts, stable_counts) = tokio::join!(
                self.metrics
                    .request_counts_until(id, &canary, window, deadline),
                async {
                    if monitoring {
                        None
                    } else {
                        Some(
                            self.metrics
                                .request_counts_until(id, &stable, window, deadline)
                                .await,
                        )
                    }
                }
            );
            match (canary_counts, stable_counts) {
                (Ok(canary), None) => (self.analyser.judge(canary, None), Some(canary), None),
                (Ok(canary), Some(Ok(stable))) => (
                    self.analyser.judge(canary, Some(stable)),
                    Some(canary),
                    Some(stable),
                ),
                (Err(error), _) | (_, Some(Err(error))) => (
                    MetricResult::new(REQUEST_ERRORS, Status::Error, error.to_string()),
                    None,
                    None,
                ),
            }
        };
        let health = async {
            let url = if monitoring {
                match read_service(self.platform, id, self.retry).await {
                    Ok(Some(snapshot)) => Ok(format!(
                        "{}{}",
                        snapshot.uri.trim_end_matches('/'),
                        request.health.path
                    )),
                    Ok(None) => Err("the service disappeared".to_string()),
                    Err(error) => Err(error.to_string()),
                }
            } else {
                running
                    .canary_base
                    .as_ref()
                    .map(|base| format!("{base}{}", request.health.path))
                    .ok_or_else(|| format!("the platform reports no URL for tag `{CANARY_TAG}`"))
            };
            let name = if monitoring {
                "service health"
            } else {
                "canary health"
            };
            match url {
                Err(reason) => MetricResult::new(name, Status::Error, reason),
                Ok(url) => match self.health_ok(&url, request).await {
                    Ok(()) => {
                        MetricResult::new(name, Status::Pass, format!("`{url}` answered 200"))
                    }
                    // A revision whose own `/health` fails is failing, whatever its request
                    // counts say.
                    Err(reason) => MetricResult::new(name, Status::Fail, reason),
                },
            }
        };
        let scope = self.scope(running);
        let checks = async {
            if self.checks.gates(gate) {
                self.checks.run(gate, &scope).await
            } else {
                Vec::new()
            }
        };
        let ((request_result, canary_counts, stable_counts), health, checks) =
            tokio::join!(requests, health, checks);
        let mut results = vec![request_result, health];
        results.extend(checks);
        self.reporter.event(&Event::Analysis {
            phase: state.phase,
            canary_percent: state.percent,
            canary: canary_counts,
            stable: stable_counts,
            results: results.clone(),
            remaining,
        });
        Observation::of(results)
    }

    pub(super) fn interrupted(&self) -> Interruption {
        // Ctrl-C: interactive users choose; unattended runs take the safe default (roll back).
        let choice = self.prompter.choose(
            "Interrupted. What now?",
            &[
                "roll back (100% to the stable revision)",
                "leave the split as it is, for a human",
            ],
            0,
        );
        if choice == 0 {
            Interruption::RollBack
        } else {
            Interruption::Leave
        }
    }

    /// Waits for the canary to be Ready with the right image, then checks its identity on the
    /// tag URL.
    pub(super) async fn verify(&self, running: &mut Running<'_>) -> Result<(), IdentityError> {
        let request = running.request;
        let id = &request.id;
        let expected = request.expected();
        identity::wait_ready(self.platform, id, &running.journal.canary, expected).await?;
        let snapshot = read_service(self.platform, id, self.retry)
            .await
            .map_err(|error| IdentityError::Unreachable(error.to_string()))?
            .ok_or_else(|| IdentityError::Unreachable(format!("`{}` disappeared", id.name)))?;
        running.etag = snapshot.etag.clone();
        let url = tag_url(&snapshot).ok_or_else(|| {
            IdentityError::Unreachable(format!(
                "the platform reports no URL for tag `{CANARY_TAG}`"
            ))
        })?;
        running.canary_base = Some(url.clone());
        running.service_url = Some(snapshot.uri.clone());
        let url = format!("{url}{}", request.health.path);
        identity::verify_url(self.probe, &url, expected).await?;
        self.reporter.event(&Event::IdentityVerified {
            url,
            service: request.service_name.clone(),
            commit: short_commit(&request.commit, RECORDED_COMMIT_CHARS).to_string(),
        });
        Ok(())
    }

    /// `GET url` answers 200; two tries, so that one lost request does not roll back a healthy
    /// revision.
    pub(super) async fn health_ok(&self, url: &str, request: &DeployRequest) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..2 {
            match self.probe.get(url, request.health.timeout.get()).await {
                Ok(answer) if answer.status == 200 => return Ok(()),
                Ok(answer) => last = format!("`{url}` answered HTTP {}", answer.status),
                Err(error) => last = format!("`{url}` did not answer: {error}"),
            }
        }
        Err(last)
    }
}
