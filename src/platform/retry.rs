//! The retry policy for etag-guarded writes.
//!
//! Google's client does not retry PATCH requests, and rightly so: after a 503 or a timeout the
//! write may or may not have been applied. Blindly re-sending could apply a traffic split twice
//! or, worse, overwrite a change someone made in between. So after an ambiguous failure deployer
//! *re-reads* the service: if the change is visible, the write landed; if the etag is unchanged,
//! nothing happened and the same write (same etag) is safe to send again; if the etag changed
//! and the change is not visible, someone else wrote the service — a conflict, never retried.

use std::time::Duration;

use super::{Platform, PlatformError, RevisionSnapshot, ServiceId, ServiceSnapshot, ServiceUpdate};

/// How often and how patiently transient failures are retried (docs/ROLLOUT.md, "Retries").
///
/// A try is retried while both limits allow: at most `attempts` tries, and no wait that would
/// end after `budget` (counted from the first try). Waits double from `initial_backoff` up to
/// `max_backoff`, each drawn at random between half and all of it (jitter: many deployers
/// throttled together do not come back in step), and never shorter than a `Retry-After` the
/// platform asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled each time up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// The whole operation's budget: no retry starts after it.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 10,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            budget: Duration::from_secs(60),
        }
    }
}

/// The longest `Retry-After` honoured: a larger one is treated as this (the budget decides).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based) with `error`: exponential, with
    /// jitter, at least the error's `Retry-After`.
    pub fn delay(&self, attempt: u32, error: &PlatformError) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        let ceiling = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        let jittered = if ceiling.is_zero() {
            ceiling
        } else {
            use rand::Rng as _;
            rand::rng().random_range(ceiling / 2..=ceiling)
        };
        match error.retry_after() {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }
}

/// Tracks one operation's tries against its [`RetryPolicy`].
#[derive(Debug)]
pub(crate) struct Budget {
    policy: RetryPolicy,
    started: tokio::time::Instant,
    tries: u32,
}

impl Budget {
    pub(crate) fn start(policy: RetryPolicy) -> Self {
        Self {
            policy,
            started: tokio::time::Instant::now(),
            tries: 0,
        }
    }

    /// Counts a failed try; the wait before the next one, or `None` when the policy is spent.
    pub(crate) fn after_failure(&mut self, error: &PlatformError) -> Option<Duration> {
        self.tries += 1;
        if self.tries >= self.policy.attempts {
            return None;
        }
        let wait = self.policy.delay(self.tries, error);
        let elapsed = self.started.elapsed();
        (elapsed.saturating_add(wait) <= self.policy.budget).then_some(wait)
    }

    /// The line said before the next try, in the words of the CLI: `retrying in 1.2 s (2 of
    /// 10): <cause>` (`(try 2)` when the tries are unbounded, as a rollback's are).
    pub(crate) fn retrying(&self, wait: Duration, cause: &dyn std::fmt::Display) -> String {
        let seconds = wait.as_secs_f64();
        let wait = if seconds >= 10.0 {
            format!("{seconds:.0} s")
        } else {
            format!("{seconds:.1} s")
        };
        let next = self.tries.saturating_add(1);
        let count = if self.policy.attempts == u32::MAX {
            format!("try {next}")
        } else {
            format!("{next} of {}", self.policy.attempts)
        };
        format!("retrying in {wait} ({count}): {cause}")
    }

    /// The error to report once the policy is spent: the last one, saying how long it tried.
    pub(crate) fn exhausted(&self, error: PlatformError) -> PlatformError {
        if self.tries <= 1 {
            return error;
        }
        error.with_note(&format!(
            "gave up after {} tries over {}",
            self.tries,
            humantime::format_duration(Duration::from_secs(self.started.elapsed().as_secs()))
        ))
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
    let mut budget = Budget::start(policy);
    // A try failed ambiguously and no re-read since showed whether it landed.
    let mut unknown = false;
    loop {
        let error = match platform.update(id, etag, update).await {
            Ok(snapshot) => return Ok(snapshot),
            Err(error) if error.is_transient() => error,
            // The etag moved on since a try whose fate is unknown (its re-read failed too): it
            // may be our own write that landed. Only a read that shows the change is not there
            // makes it someone else's.
            Err(PlatformError::Conflict(path)) if unknown => {
                return match read_service(platform, id, policy).await? {
                    Some(snapshot) if update.is_visible_in(&snapshot) => {
                        tracing::info!(%id, "the write had landed");
                        Ok(snapshot)
                    }
                    _ => Err(PlatformError::Conflict(path)),
                };
            }
            Err(error) => return Err(error),
        };
        unknown = true;
        let Some(wait) = budget.after_failure(&error) else {
            return Err(budget.exhausted(error));
        };
        // A user-facing line (the CLI shows target `deployer::progress` at every verbosity).
        tracing::info!(
            target: "deployer::progress",
            "{}",
            budget.retrying(wait, &format_args!("the write to `{id}` may not have landed ({error}); re-reading first"))
        );
        tokio::time::sleep(wait).await;
        match platform.service(id).await {
            Ok(Some(snapshot)) if update.is_visible_in(&snapshot) => {
                tracing::info!(%id, "the write had landed");
                return Ok(snapshot);
            }
            Ok(Some(snapshot)) if snapshot.etag != etag => {
                return Err(PlatformError::Conflict(id.path()));
            }
            Ok(Some(_)) => unknown = false,
            Ok(None) => return Err(PlatformError::NotFound(id.path())),
            Err(error) if error.is_transient() => {}
            Err(error) => return Err(error),
        }
    }
}

/// Runs the read `call`, retrying transient failures within `policy` (reads are always safe
/// to repeat). `what` names the read in the message logged after each failed try.
pub async fn retry_read<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut call: F,
) -> Result<T, PlatformError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PlatformError>>,
{
    let mut budget = Budget::start(policy);
    loop {
        match call().await {
            Err(error) if error.is_transient() => {
                let Some(wait) = budget.after_failure(&error) else {
                    return Err(budget.exhausted(error));
                };
                tracing::info!(
                    target: "deployer::progress",
                    "{}",
                    budget.retrying(wait, &format_args!("{what} failed: {error}"))
                );
                tokio::time::sleep(wait).await;
            }
            result => return result,
        }
    }
}

/// Reads a service, retrying transient failures (reads are always safe to repeat).
pub async fn read_service(
    platform: &dyn Platform,
    id: &ServiceId,
    policy: RetryPolicy,
) -> Result<Option<ServiceSnapshot>, PlatformError> {
    retry_read(policy, &format!("reading `{id}`"), || platform.service(id)).await
}

/// Lists a service's revisions, retrying transient failures.
pub async fn read_revisions(
    platform: &dyn Platform,
    id: &ServiceId,
    policy: RetryPolicy,
) -> Result<Vec<RevisionSnapshot>, PlatformError> {
    retry_read(policy, &format!("listing the revisions of `{id}`"), || {
        platform.revisions(id)
    })
    .await
}

#[cfg(test)]
mod retrying_tests {
    use super::*;

    #[test]
    fn a_retry_is_said_in_the_clis_words() {
        let mut budget = Budget::start(RetryPolicy::default());
        let error = PlatformError::Unavailable("503".into());
        assert!(budget.after_failure(&error).is_some());
        assert!(budget.after_failure(&error).is_some());
        assert_eq!(
            budget.retrying(Duration::from_secs(5), &"reading `s` failed: 503"),
            "retrying in 5.0 s (3 of 10): reading `s` failed: 503"
        );
        let mut unbounded = Budget::start(RetryPolicy {
            attempts: u32::MAX,
            ..RetryPolicy::default()
        });
        assert!(unbounded.after_failure(&error).is_some());
        assert_eq!(
            unbounded.retrying(Duration::from_secs(15), &"x"),
            "retrying in 15 s (try 2): x"
        );
    }
}
