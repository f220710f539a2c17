//! The retry policy for etag-guarded writes.
//!
//! Google's client does not retry PATCH requests, and rightly so: after a 503 or a timeout the
//! write may or may not have been applied. Blindly re-sending could apply a traffic split twice
//! or, worse, overwrite a change someone made in between. So after an ambiguous failure deployer
//! *re-reads* the service: if the change is visible, the write landed; if the etag is unchanged,
//! nothing happened and the same write (same etag) is safe to send again; if the etag changed
//! and the change is not visible, someone else wrote the service — a conflict, never retried.

use std::time::Duration;

use super::{Platform, PlatformError, ServiceId, ServiceSnapshot, ServiceUpdate};

/// How often and how patiently transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Applies `update` guarded by `etag`, retrying transient failures safely (see the module doc).
pub async fn write_guarded(
    platform: &dyn Platform,
    id: &ServiceId,
    etag: &str,
    update: &ServiceUpdate,
    policy: RetryPolicy,
) -> Result<ServiceSnapshot, PlatformError> {
    let mut attempt = 1;
    loop {
        let error = match platform.update(id, etag, update).await {
            Ok(snapshot) => return Ok(snapshot),
            Err(error) if error.is_transient() && attempt < policy.attempts => error,
            Err(error) => return Err(error),
        };
        tracing::warn!(%id, attempt, %error, "write failed ambiguously; re-reading the service");
        tokio::time::sleep(policy.backoff(attempt)).await;
        attempt += 1;
        match platform.service(id).await {
            Ok(Some(snapshot)) if update.is_visible_in(&snapshot) => {
                tracing::info!(%id, "the write had landed");
                return Ok(snapshot);
            }
            Ok(Some(snapshot)) if snapshot.etag != etag => {
                return Err(PlatformError::Conflict(id.path()));
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(PlatformError::NotFound(id.path())),
            Err(error) if error.is_transient() => {}
            Err(error) => return Err(error),
        }
    }
}

/// Reads a service, retrying transient failures (reads are always safe to repeat).
pub async fn read_service(
    platform: &dyn Platform,
    id: &ServiceId,
    policy: RetryPolicy,
) -> Result<Option<ServiceSnapshot>, PlatformError> {
    let mut attempt = 1;
    loop {
        match platform.service(id).await {
            Err(error) if error.is_transient() && attempt < policy.attempts => {
                tracing::warn!(%id, attempt, %error, "read failed; retrying");
                tokio::time::sleep(policy.backoff(attempt)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}
