//! A metric read retried through transient faults, within the look's own budget.
//!
//! Google's APIs throttle (Logging reads above all) and answer the odd 503: one such answer must
//! not make a whole look unread. A read that fails with `503`/`UNAVAILABLE`, `429`/
//! `RESOURCE_EXHAUSTED` (a quota or rate limit), or a lost connection is tried again after a
//! backoff (200 ms doubling to 2 s, with jitter), never sooner than the answer's `RetryInfo` or
//! `Retry-After` asks — and never past the `deadline` of the look: a retry that could not start
//! before it is not made, and a try still running at the deadline is abandoned. So a look fails
//! only when the provider stays down for the whole look. Permanent refusals (a disabled API, a
//! missing permission, a rejected filter) are never retried.

use std::{future::Future, time::Duration};

use google_cloud_gax::error::{rpc::Code, Error};
use tokio::time::Instant;

use crate::google_errors::{self, Disposition};

/// Wait before the first retry; doubled after each one.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How a failed try ended the read.
#[derive(Debug)]
pub enum Failure {
    /// A permanent error, or a transient one the budget left no time to retry.
    Failed(Error),
    /// The deadline passed during a try; the previous try's error, if any.
    OutOfTime(Option<Error>),
}

/// Whether `error` is worth another try, and how long it asked to be left alone.
pub fn transient(error: &Error) -> Option<Option<Duration>> {
    let asked = google_errors::asked_wait(error);
    if let Some(explained) = error.status().and_then(google_errors::explain) {
        return (explained.disposition == Disposition::Throttled)
            .then_some(explained.retry_after.or(asked));
    }
    let by_code = error
        .status()
        .is_some_and(|status| matches!(status.code, Code::Unavailable | Code::ResourceExhausted));
    let by_http = matches!(error.http_status_code(), Some(429 | 503));
    let lost = error.is_io() || error.is_connect() || error.is_transport() || error.is_timeout();
    (by_code || by_http || lost).then_some(asked)
}

/// The backoff before retry number `retry` (0-based): doubling, jittered between half and all.
fn backoff(retry: u32) -> Duration {
    let ceiling = INITIAL_BACKOFF
        .saturating_mul(2u32.saturating_pow(retry.min(16)))
        .min(MAX_BACKOFF);
    use rand::Rng as _;
    rand::rng().random_range(ceiling / 2..=ceiling)
}

/// Runs `call` until it succeeds, fails permanently, or `deadline` leaves no time for another
/// try (see the module doc). `what` names the read in the debug log of each retry.
pub async fn retry_until<T, F, Fut>(
    deadline: Instant,
    what: &str,
    mut call: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut last = None;
    let mut retry = 0u32;
    loop {
        let error = match tokio::time::timeout_at(deadline, call()).await {
            Err(_) => return Err(Failure::OutOfTime(last)),
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error,
        };
        let Some(asked) = transient(&error) else {
            return Err(Failure::Failed(error));
        };
        let wait = backoff(retry).max(asked.unwrap_or_default());
        if Instant::now() + wait >= deadline {
            return Err(Failure::Failed(error));
        }
        tracing::debug!(what, ?wait, %error, "transient failure, retrying within the look");
        last = Some(error);
        retry = retry.saturating_add(1);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use google_cloud_gax::error::rpc::Status;

    use super::*;

    fn answer(json: serde_json::Value) -> Error {
        let status = Status::try_from(&bytes::Bytes::from(json.to_string())).unwrap();
        Error::service(status)
    }

    fn unavailable() -> Error {
        answer(
            serde_json::json!({"error": {"code": 503, "message": "down", "status": "UNAVAILABLE"}}),
        )
    }

    fn throttled(delay: &str) -> Error {
        answer(serde_json::json!({"error": {
            "code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}],
        }}))
    }

    fn disabled() -> Error {
        answer(serde_json::json!({"error": {
            "code": 403, "message": "disabled", "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SERVICE_DISABLED", "domain": "googleapis.com",
                "metadata": {"service": "logging.googleapis.com", "consumer": "projects/1"},
            }],
        }}))
    }

    #[test]
    fn unavailable_and_throttled_are_transient_a_disabled_api_is_not() {
        assert_eq!(transient(&unavailable()), Some(None));
        assert_eq!(
            transient(&throttled("3s")),
            Some(Some(Duration::from_secs(3)))
        );
        assert_eq!(transient(&disabled()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_an_answer() {
        let tries = AtomicU32::new(0);
        let started = Instant::now();
        let read = retry_until(started + Duration::from_secs(5), "read", || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0 => Err(unavailable()),
                1 => Err(throttled("1s")),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(read.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        // The second wait honoured RetryInfo's second.
        assert!(
            started.elapsed() >= Duration::from_millis(1100),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_is_not_retried() {
        let tries = AtomicU32::new(0);
        let read: Result<(), _> =
            retry_until(Instant::now() + Duration::from_secs(5), "read", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(disabled())
            })
            .await;
        assert!(matches!(read, Err(Failure::Failed(_))));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_deadline() {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(5);
        let read: Result<(), _> =
            retry_until(deadline, "read", || async { Err(unavailable()) }).await;
        assert!(matches!(read, Err(Failure::Failed(_))));
        assert!(Instant::now() <= deadline);
        // A wait asked beyond the deadline is not waited for.
        let asked: Result<(), _> =
            retry_until(Instant::now() + Duration::from_secs(5), "read", || async {
                Err(throttled("30s"))
            })
            .await;
        assert!(matches!(asked, Err(Failure::Failed(_))));
        assert!(started.elapsed() < Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_running_past_the_deadline_is_abandoned() {
        let started = Instant::now();
        let tries = AtomicU32::new(0);
        let read: Result<(), _> = retry_until(started + Duration::from_secs(2), "read", || async {
            if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(unavailable())
            } else {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
        })
        .await;
        assert!(matches!(read, Err(Failure::OutOfTime(Some(_)))));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
