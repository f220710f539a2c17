//! Following a rollout that runs elsewhere (`deployer status SERVICE --watch`): what the
//! platform shows of it — the journal's phase, step and percent, and the split — polled until
//! the rollout ends.
//!
//! Everything comes from the service itself (the journal annotation written with every
//! traffic change), so it works from any machine for a rollout started by anyone. The looks of
//! a canary step are not written to the platform (a write per look would cost Admin API write
//! quota for no safety); the journal shows the step, its percent, the error counts of the
//! metrics that could not be read and, once the rollout ends, why.

use std::time::Duration;

use super::journal::Journal;
use crate::platform::{read_service, Platform, PlatformError, RetryPolicy, ServiceId};

/// What changed on the service, as the watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchUpdate {
    /// The rollout's journal.
    pub journal: Journal,
    /// The split (revision, percent), largest first.
    pub split: Vec<(String, u8)>,
}

/// Why watching stopped before the rollout ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The service does not exist.
    #[error("service `{0}` not found")]
    NoService(String),
    /// No journal on the service: deployer never rolled it out.
    #[error("no rollout is recorded on `{0}`")]
    NoRollout(String),
    /// The platform could not be read (after its retries).
    #[error(transparent)]
    Platform(#[from] PlatformError),
}

/// Polls `id` every `every` and calls `seen` with each new state (the first read included)
/// until the rollout the service shows ends; returns its final journal. A rollout that has
/// already ended returns at once. When another rollout replaces the watched one (a new deploy
/// after it ended), watching ends with the watched one's last journal.
pub async fn follow(
    platform: &dyn Platform,
    id: &ServiceId,
    every: Duration,
    mut seen: impl FnMut(&WatchUpdate),
) -> Result<Journal, WatchError> {
    let mut last: Option<WatchUpdate> = None;
    loop {
        let snapshot = read_service(platform, id, RetryPolicy::default())
            .await?
            .ok_or_else(|| WatchError::NoService(id.path()))?;
        let journal =
            Journal::of(&snapshot).ok_or_else(|| WatchError::NoRollout(id.name.clone()))?;
        if let Some(previous) = &last {
            if previous.journal.id != journal.id {
                return Ok(previous.journal.clone());
            }
        }
        let update = WatchUpdate {
            split: snapshot.serving(),
            journal,
        };
        if last.as_ref() != Some(&update) {
            seen(&update);
        }
        if update.journal.phase().is_terminal() {
            return Ok(update.journal);
        }
        last = Some(update);
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        platform::{memory::MemoryPlatform, RevisionSpec, ServiceUpdate, TrafficTarget},
        rollout::{
            journal::JOURNAL_ANNOTATION,
            machine::{Phase, State},
        },
    };

    fn id() -> ServiceId {
        ServiceId {
            project: "p".into(),
            region: "r".into(),
            name: "svc".into(),
        }
    }

    fn journal(phase: Phase, percent: u8) -> Journal {
        Journal {
            id: "r1".into(),
            stable: Some("svc-1".into()),
            canary: "svc-2".into(),
            commit: "c0ffee".into(),
            commit_time: None,
            image: "img".into(),
            owner: "ci@runner".into(),
            started: chrono::Utc::now(),
            updated: chrono::Utc::now(),
            state: State {
                phase,
                percent,
                ..State::start()
            },
            decision: None,
        }
    }

    /// A rollout in another process, seen from here: every phase it journals, then its end.
    #[tokio::test(start_paused = true)]
    async fn a_rollout_running_elsewhere_is_followed_to_its_end() {
        let platform = std::sync::Arc::new(MemoryPlatform::new());
        let spec = |name: &str| RevisionSpec {
            name: name.into(),
            image: "img".into(),
            labels: Default::default(),
            base: None,
            settings: Default::default(),
        };
        let created = platform.create(&id(), &spec("svc-1")).await.unwrap();
        platform
            .update(
                &id(),
                &created.etag,
                &ServiceUpdate {
                    template: Some(spec("svc-2")),
                    traffic: Some(vec![
                        TrafficTarget::to_revision("svc-1", 100),
                        TrafficTarget::to_revision("svc-2", 0),
                    ]),
                    ..ServiceUpdate::default()
                }
                .with_annotation(
                    JOURNAL_ANNOTATION,
                    Some(journal(Phase::Verifying, 0).encode()),
                ),
            )
            .await
            .unwrap();
        let writer = std::sync::Arc::clone(&platform);
        let rollout = tokio::spawn(async move {
            for (phase, percent, canary) in [
                (Phase::Canary, 10, 10),
                (Phase::Canary, 50, 50),
                (Phase::Monitoring, 100, 100),
                (Phase::Promoted, 100, 100),
            ] {
                tokio::time::sleep(Duration::from_secs(30)).await;
                writer.external_update(
                    &id(),
                    &ServiceUpdate::traffic(vec![
                        TrafficTarget::to_revision("svc-1", 100 - canary),
                        TrafficTarget::to_revision("svc-2", canary),
                    ])
                    .with_annotation(JOURNAL_ANNOTATION, Some(journal(phase, percent).encode())),
                );
            }
        });
        let mut seen = Vec::new();
        let started = tokio::time::Instant::now();
        let end = follow(platform.as_ref(), &id(), Duration::from_secs(2), |update| {
            seen.push((update.journal.phase(), update.journal.state.percent))
        })
        .await
        .unwrap();
        rollout.await.unwrap();
        assert_eq!(end.phase(), Phase::Promoted);
        assert_eq!(
            seen,
            [
                (Phase::Verifying, 0),
                (Phase::Canary, 10),
                (Phase::Canary, 50),
                (Phase::Monitoring, 100),
                (Phase::Promoted, 100),
            ]
        );
        // Polled every 2 s: it ends within one poll of the rollout's end.
        assert!(
            started.elapsed() <= Duration::from_secs(122),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_without_a_rollout_says_so() {
        let platform = MemoryPlatform::new();
        let spec = RevisionSpec {
            name: "svc-1".into(),
            image: "img".into(),
            labels: Default::default(),
            base: None,
            settings: Default::default(),
        };
        platform.create(&id(), &spec).await.unwrap();
        let error = follow(&platform, &id(), Duration::from_secs(2), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(error, WatchError::NoRollout(_)), "{error}");
    }
}
