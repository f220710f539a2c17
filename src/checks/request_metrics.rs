//! Per-revision request counts, the input of the canary analysis: [`RequestCounts`], the
//! [`RequestMetrics`] readers behind one seam, their [`MetricsError`], and
//! [`request_metrics_for`], which picks the reader `rollout.request_metrics` names (Cloud
//! Logging request logs, Cloud Monitoring or Prometheus).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{cloud_logging, cloud_monitoring, prometheus, ProviderEndpoints};
use crate::config::{RequestMetricsSource, RolloutConfig};
use crate::platform::ServiceId;

/// Requests served by one revision in a window, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// All requests.
    pub total: u64,
    /// Requests answered with a 5xx status (errors of the service; 4xx are the caller's).
    pub errors: u64,
    /// When the counts are of a sample of the requests (`cloud-logging` at high traffic): the
    /// fraction of the latest read, in parts per million. The counts are the sample's own, not
    /// scaled: each sampled request is still a Bernoulli trial (docs/ANALYSIS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_ppm: Option<u32>,
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

/// How long a read of request counts outside a rollout's look (`deployer doctor`, say)
/// retries transient faults: the budget of [`RequestMetrics::request_counts`] for the readers
/// that retry within one.
pub const READ_BUDGET: Duration = Duration::from_secs(10);

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

    /// The same, for a rollout's look: transient failures of the provider are retried until
    /// `deadline` (the look's budget). A reader without retries of its own answers as
    /// [`request_counts`](Self::request_counts).
    async fn request_counts_until(
        &self,
        service: &ServiceId,
        revision: &str,
        window: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<RequestCounts, MetricsError> {
        let _ = deadline;
        self.request_counts(service, revision, window).await
    }
}

/// The reader of per-revision request counts that `rollout.request_metrics` names, at
/// `endpoints` (Google's when unset; Prometheus needs `DEPLOYER_PROMETHEUS_URL`).
pub fn request_metrics_for(
    rollout: &RolloutConfig,
    endpoints: &ProviderEndpoints,
) -> Result<Box<dyn RequestMetrics>, MetricsError> {
    Ok(match rollout.request_metrics {
        RequestMetricsSource::CloudLogging => Box::new(cloud_logging::CloudLoggingRequests::new(
            endpoints.logging.clone(),
        )),
        RequestMetricsSource::CloudMonitoring => Box::new(cloud_monitoring::CloudMonitoring::new(
            endpoints
                .monitoring
                .as_deref()
                .unwrap_or(cloud_monitoring::GOOGLE_ENDPOINT),
        )?),
        RequestMetricsSource::Prometheus => {
            let url = endpoints
                .prometheus
                .clone()
                .ok_or_else(|| MetricsError::Unavailable {
                    provider: "prometheus".into(),
                    message:
                        "`rollout.request_metrics = \"prometheus\"` needs `DEPLOYER_PROMETHEUS_URL`"
                            .into(),
                })?;
            Box::new(prometheus::PrometheusRequests::new(url))
        }
    })
}
