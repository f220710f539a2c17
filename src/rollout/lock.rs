//! One rollout per service at a time: a lock held on the platform itself.
//!
//! The lock is the service annotation `deployer.dev/lock`, a JSON record of who holds it, from
//! which host and process, since when and until when. It is written with the service's etag, so
//! two deployers racing for it cannot both win: the second write is refused as a conflict, the
//! loser re-reads and sees the winner's lock. Keeping it on the service (not on a laptop) means
//! CI and engineers see the same lock. An expired lock can be taken over; a live one only by
//! `deployer unlock`, which says who held it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::platform::{
    read_service, write_guarded, Platform, PlatformError, RetryPolicy, ServiceId, ServiceSnapshot,
    ServiceUpdate,
};
use crate::process::{current_host, current_user};
// Who runs this process is `process`'s (below `release`, which records it as the actor); the
// lock and the driver name it from here.
pub use crate::process::current_owner;

/// The annotation holding the lock.
pub const LOCK_ANNOTATION: &str = "deployer.dev/lock";

/// Who holds a service's rollout lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// A unique id of the rollout holding it.
    pub id: String,
    /// The user (`$USER`, or `ci` in CI).
    pub owner: String,
    /// The host name.
    pub host: String,
    /// The process id on that host.
    pub pid: u32,
    /// When it was taken.
    pub started: DateTime<Utc>,
    /// When it stops counting (a crashed deployer does not block others forever).
    pub expires: DateTime<Utc>,
}

impl Lock {
    /// A new lock for this process, valid for `ttl`.
    pub fn new(id: &str, ttl: Duration, now: DateTime<Utc>) -> Self {
        Self {
            id: id.to_string(),
            owner: current_user(),
            host: current_host(),
            pid: std::process::id(),
            started: now,
            expires: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1)),
        }
    }

    /// The lock recorded on a service, if any (an unreadable record counts as a lock held by
    /// "unknown", so garbage never silently unlocks a service).
    pub fn of(snapshot: &ServiceSnapshot) -> Option<Lock> {
        let text = snapshot.annotations.get(LOCK_ANNOTATION)?;
        Some(serde_json::from_str(text).unwrap_or_else(|_| Lock {
            id: "unreadable".into(),
            owner: "unknown".into(),
            host: "unknown".into(),
            pid: 0,
            started: DateTime::<Utc>::MIN_UTC,
            expires: DateTime::<Utc>::MAX_UTC,
        }))
    }

    /// True once the lock has expired.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires
    }

    /// True when the holder provably no longer runs: it ran on this host and its process is
    /// gone (a `kill -9`ed deployer). A holder on another host cannot be checked from here.
    pub fn holder_gone(&self) -> bool {
        self.pid != 0 && self.host == current_host() && !crate::process::process_alive(self.pid)
    }

    /// "alice on laptop (pid 42) since 10:02:03 UTC, expires 11:02:03 UTC".
    pub fn describe(&self) -> String {
        format!(
            "{} on {} (pid {}, rollout {}) since {}, expires {}",
            self.owner,
            self.host,
            self.pid,
            self.id,
            self.started.format("%Y-%m-%d %H:%M:%S UTC"),
            self.expires.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Lock errors.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LockError {
    /// Someone else holds the lock.
    #[error("`{service}` is locked by {holder}")]
    Held {
        /// The service.
        service: String,
        /// Who holds it.
        holder: String,
    },
    /// The service does not exist (nothing to lock yet).
    #[error("`{0}` not found")]
    NotFound(String),
    /// The platform failed.
    #[error(transparent)]
    Platform(#[from] PlatformError),
}

/// How many lock writes refused as conflicts one lock operation makes before giving up.
const RACE_ATTEMPTS: u32 = 8;

/// The pause after a lock write refused as a conflict, before the re-read (doubled after each
/// further refusal).
const RACE_PAUSE: Duration = Duration::from_millis(100);

/// The lock writes of one lock operation ([`acquire`], [`release`], [`break_lock`]) refused as
/// conflicts. A refusal is a lost race only when someone else wrote the service: then the
/// re-read shows a new etag, and the write is re-decided after a pause. A second refusal at an
/// etag already refused means nobody else wrote: the platform refuses the write itself (e.g. a
/// split that still names a revision which failed to start), and asking again would only repeat
/// the refusal, so it ends the operation — as do [`RACE_ATTEMPTS`] refusals in all.
#[derive(Default)]
struct Races {
    refused: Vec<String>,
}

impl Races {
    /// After the write at `etag` was refused: waits before the re-read, or says why to stop.
    async fn lost(&mut self, id: &ServiceId, etag: &str) -> Result<(), LockError> {
        let again = self.refused.iter().any(|refused| refused == etag);
        self.refused.push(etag.to_string());
        if again {
            return Err(LockError::Platform(PlatformError::Refused(format!(
                "the write of the lock of `{}` was refused twice although nobody else wrote the service (its split may name a revision that failed to start: move its traffic to a revision that serves, e.g. `gcloud run services update-traffic`)",
                crate::untrusted::escaped(&id.name)
            ))));
        }
        if self.refused.len() >= RACE_ATTEMPTS as usize {
            return Err(LockError::Platform(PlatformError::Conflict(id.path())));
        }
        let doublings = u32::try_from(self.refused.len() - 1).unwrap_or(u32::MAX);
        tokio::time::sleep(RACE_PAUSE.saturating_mul(2u32.saturating_pow(doublings))).await;
        Ok(())
    }
}

/// Sets (or removes) the lock annotation on the service as read in `snapshot`. `Ok(None)` when
/// the service changed since that read: the caller reads again and re-decides.
async fn write_lock(
    platform: &dyn Platform,
    snapshot: &ServiceSnapshot,
    value: Option<String>,
) -> Result<Option<ServiceSnapshot>, LockError> {
    let update = ServiceUpdate::default().with_annotation(LOCK_ANNOTATION, value);
    match write_guarded(
        platform,
        &snapshot.id,
        &snapshot.etag,
        &update,
        RetryPolicy::default(),
    )
    .await
    {
        Ok(snapshot) => Ok(Some(snapshot)),
        Err(PlatformError::Conflict(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Takes the lock, waiting up to `wait` (polling every `poll`) while someone else holds it.
/// Returns the service as it is after the lock write (its etag is the one to use next).
pub async fn acquire(
    platform: &dyn Platform,
    id: &ServiceId,
    lock: &Lock,
    wait: Duration,
    poll: Duration,
) -> Result<ServiceSnapshot, LockError> {
    let started = tokio::time::Instant::now();
    let mut races = Races::default();
    loop {
        let snapshot = read_service(platform, id, RetryPolicy::default())
            .await?
            .ok_or_else(|| LockError::NotFound(id.path()))?;
        let now = Utc::now();
        match Lock::of(&snapshot) {
            // A lock whose holder is provably gone (same host, process dead) is stale at once.
            Some(held) if held.id != lock.id && !held.is_expired(now) && !held.holder_gone() => {
                if started.elapsed() >= wait {
                    return Err(LockError::Held {
                        service: id.name.clone(),
                        holder: held.describe(),
                    });
                }
                tracing::info!(holder = %held.describe(), "waiting for the rollout lock");
                tokio::time::sleep(
                    poll.min(wait.saturating_sub(started.elapsed()))
                        .max(Duration::from_millis(10)),
                )
                .await;
            }
            previous => {
                if let Some(expired) = previous.filter(|held| held.id != lock.id) {
                    tracing::info!(target: "deployer::progress", "taking over a stale lock (expired, or its process is gone): {}", expired.describe());
                }
                // `None`: someone wrote the service between our read and our write (perhaps
                // another deployer taking the lock): read again and re-decide.
                if let Some(snapshot) = write_lock(platform, &snapshot, Some(lock.encode())).await?
                {
                    return Ok(snapshot);
                }
                races.lost(id, &snapshot.etag).await?;
            }
        }
    }
}

/// Releases the lock if (and only if) it is still ours. Returns the service after the write.
pub async fn release(
    platform: &dyn Platform,
    id: &ServiceId,
    lock_id: &str,
) -> Result<Option<ServiceSnapshot>, LockError> {
    let mut races = Races::default();
    loop {
        let Some(snapshot) = read_service(platform, id, RetryPolicy::default()).await? else {
            return Ok(None);
        };
        match Lock::of(&snapshot) {
            Some(held) if held.id == lock_id => {
                if let Some(written) = write_lock(platform, &snapshot, None).await? {
                    return Ok(Some(written));
                }
                races.lost(id, &snapshot.etag).await?;
            }
            _ => return Ok(Some(snapshot)),
        }
    }
}

/// Breaks whatever lock the service has; returns the lock that was broken, if any.
pub async fn break_lock(
    platform: &dyn Platform,
    id: &ServiceId,
) -> Result<Option<Lock>, LockError> {
    let mut races = Races::default();
    loop {
        let snapshot = read_service(platform, id, RetryPolicy::default())
            .await?
            .ok_or_else(|| LockError::NotFound(id.path()))?;
        let Some(held) = Lock::of(&snapshot) else {
            return Ok(None);
        };
        if write_lock(platform, &snapshot, None).await?.is_some() {
            return Ok(Some(held));
        }
        races.lost(id, &snapshot.etag).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{memory::MemoryPlatform, RevisionSpec};

    fn id() -> ServiceId {
        ServiceId {
            project: "p".into(),
            region: "r".into(),
            name: "svc".into(),
        }
    }

    async fn platform() -> MemoryPlatform {
        let platform = MemoryPlatform::new();
        platform
            .create(
                &id(),
                &RevisionSpec {
                    name: "svc-1".into(),
                    image: "img@1".into(),
                    labels: Default::default(),
                    base: None,
                    settings: Default::default(),
                },
            )
            .await
            .unwrap();
        platform
    }

    #[tokio::test(start_paused = true)]
    async fn two_deployers_exactly_one_wins() {
        let platform = platform().await;
        let first = Lock::new("a", Duration::from_secs(3600), Utc::now());
        let second = Lock::new("b", Duration::from_secs(3600), Utc::now());
        acquire(
            &platform,
            &id(),
            &first,
            Duration::ZERO,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let error = acquire(
            &platform,
            &id(),
            &second,
            Duration::from_secs(5),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, LockError::Held { ref holder, .. } if holder.contains("rollout a")),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_ends_when_the_holder_releases() {
        let platform = std::sync::Arc::new(platform().await);
        let first = Lock::new("a", Duration::from_secs(3600), Utc::now());
        acquire(
            platform.as_ref(),
            &id(),
            &first,
            Duration::ZERO,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let releaser = {
            let platform = platform.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                release(platform.as_ref(), &id(), "a").await.unwrap();
            })
        };
        let second = Lock::new("b", Duration::from_secs(3600), Utc::now());
        let snapshot = acquire(
            platform.as_ref(),
            &id(),
            &second,
            Duration::from_secs(120),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        releaser.await.unwrap();
        assert_eq!(Lock::of(&snapshot).unwrap().id, "b");
    }

    /// A lock whose holder died on this host refused every deploy until it expired.
    #[tokio::test]
    async fn a_lock_whose_process_is_gone_is_taken_over_at_once() {
        let platform = platform().await;
        let mut dead = Lock::new("dead", Duration::from_secs(3600), Utc::now());
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        dead.pid = gone.id();
        let snapshot = platform.service(&id()).await.unwrap().unwrap();
        write_lock(&platform, &snapshot, Some(dead.encode()))
            .await
            .unwrap()
            .unwrap();
        let ours = Lock::new("ours", Duration::from_secs(60), Utc::now());
        let after = acquire(
            &platform,
            &id(),
            &ours,
            Duration::ZERO,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(Lock::of(&after).unwrap().id, "ours");
    }

    #[tokio::test]
    async fn an_expired_lock_is_taken_over_and_release_only_removes_our_own() {
        let platform = platform().await;
        let stale = Lock::new(
            "old",
            Duration::from_secs(1),
            Utc::now() - chrono::Duration::hours(2),
        );
        acquire(
            &platform,
            &id(),
            &stale,
            Duration::ZERO,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let fresh = Lock::new("new", Duration::from_secs(3600), Utc::now());
        acquire(
            &platform,
            &id(),
            &fresh,
            Duration::ZERO,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let after = release(&platform, &id(), "old").await.unwrap().unwrap();
        assert_eq!(Lock::of(&after).unwrap().id, "new");
        let broken = break_lock(&platform, &id()).await.unwrap().unwrap();
        assert_eq!(broken.id, "new");
        let now = platform.service(&id()).await.unwrap().unwrap();
        assert!(Lock::of(&now).is_none());
    }

    /// A platform that refuses every update as a conflict (as Cloud Run refuses any write of a
    /// service whose split names a revision that failed to start); `moving`: another writer
    /// changes the service at each refusal (a race lost every time).
    struct Refusing {
        inner: MemoryPlatform,
        moving: bool,
        updates: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl Platform for Refusing {
        async fn service(&self, id: &ServiceId) -> Result<Option<ServiceSnapshot>, PlatformError> {
            self.inner.service(id).await
        }
        async fn revisions(
            &self,
            id: &ServiceId,
        ) -> Result<Vec<crate::platform::RevisionSnapshot>, PlatformError> {
            self.inner.revisions(id).await
        }
        async fn revision(
            &self,
            id: &ServiceId,
            name: &str,
        ) -> Result<Option<crate::platform::RevisionSnapshot>, PlatformError> {
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
            _etag: &str,
            _update: &ServiceUpdate,
        ) -> Result<ServiceSnapshot, PlatformError> {
            let count = self
                .updates
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.moving {
                self.inner.external_update(
                    id,
                    &ServiceUpdate::default()
                        .with_annotation("other-writer", Some(count.to_string())),
                );
            }
            Err(PlatformError::Conflict(id.path()))
        }
    }

    async fn refusing(moving: bool) -> Refusing {
        let inner = platform().await;
        let ours = Lock::new("ours", Duration::from_secs(3600), Utc::now());
        acquire(&inner, &id(), &ours, Duration::ZERO, Duration::from_secs(1))
            .await
            .unwrap();
        Refusing {
            inner,
            moving,
            updates: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// A deploy whose new revision failed to start polled the API forever after its report:
    /// every release write was refused as a conflict and re-tried at once, without end.
    #[tokio::test(start_paused = true)]
    async fn a_release_refused_at_an_unchanged_etag_ends_after_a_second_try() {
        let platform = refusing(false).await;
        let started = tokio::time::Instant::now();
        let error = release(&platform, &id(), "ours").await.unwrap_err();
        assert!(
            matches!(&error, LockError::Platform(PlatformError::Refused(message)) if message.contains("refused twice although nobody else wrote")),
            "{error}"
        );
        assert_eq!(
            platform.updates.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
        assert_eq!(started.elapsed(), RACE_PAUSE);
        let error = break_lock(&platform, &id()).await.unwrap_err();
        assert!(
            matches!(error, LockError::Platform(PlatformError::Refused(_))),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn races_lost_every_time_end_after_a_bounded_number_of_paused_tries() {
        let platform = refusing(true).await;
        let started = tokio::time::Instant::now();
        let error = release(&platform, &id(), "ours").await.unwrap_err();
        assert_eq!(
            error,
            LockError::Platform(PlatformError::Conflict(id().path()))
        );
        assert_eq!(
            platform.updates.load(std::sync::atomic::Ordering::SeqCst),
            RACE_ATTEMPTS
        );
        // 100 ms, 200 ms, ... doubling between the tries: never a tight loop.
        let paused: Duration = (0..RACE_ATTEMPTS - 1)
            .map(|doublings| RACE_PAUSE * 2u32.pow(doublings))
            .sum();
        assert_eq!(started.elapsed(), paused);
    }
}
