//! Metric providers: where numbers about a service come from.
//!
//! [`RequestMetrics`] gives per-revision request and error counts, the input of the canary
//! analysis; [`cloud_monitoring::CloudMonitoring`] reads them from Cloud Monitoring's
//! `run.googleapis.com/request_count` (Google's, or the local emulator's identical API).

pub mod cloud_monitoring;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::platform::ServiceId;

/// Requests served by one revision in a window, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// All requests.
    pub total: u64,
    /// Requests answered with a 5xx status (errors of the service; 4xx are the caller's).
    pub errors: u64,
}

impl RequestCounts {
    /// The error rate, if there was any request.
    pub fn error_rate(&self) -> Option<f64> {
        (self.total > 0).then(|| self.errors as f64 / self.total as f64)
    }
}

/// Errors reading metrics: the analysis counts them as measurement errors.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    /// The provider could not be reached or answered an error.
    #[error("metrics unavailable from `{provider}`: {message}")]
    Unavailable {
        /// Which provider.
        provider: String,
        /// What went wrong.
        message: String,
    },
    /// The provider answered something that could not be read.
    #[error("unreadable answer from `{provider}`: {message}")]
    Malformed {
        /// Which provider.
        provider: String,
        /// What was wrong with it.
        message: String,
    },
}

/// Per-revision request counts.
#[async_trait]
pub trait RequestMetrics: Send + Sync {
    /// Requests served by `revision` of `service` during the last `window`.
    async fn request_counts(
        &self,
        service: &ServiceId,
        revision: &str,
        window: Duration,
    ) -> Result<RequestCounts, MetricsError>;
}
