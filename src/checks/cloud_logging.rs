//! Cloud Logging on Google's official `google-cloud-logging-v2` client (REST `entries.list`):
//! the `cloud-logging` provider (how many entries match a filter in a window) and
//! [`CloudLoggingRequests`], per-revision request and 5xx counts from Cloud Run's request logs.
//!
//! Cloud Run writes one entry per request to `run.googleapis.com/requests` with
//! `httpRequest.status` and the revision in `resource.labels.revision_name`; they reach Cloud
//! Logging within seconds, where Cloud Monitoring's `request_count` takes minutes — the reason
//! this is the default source of the canary analysis (`docs/ANALYSIS.md`).
//!
//! The time range is appended as `AND timestamp>="…"`: in the Logging query language `OR`
//! binds tighter than `AND`, so a user filter with `OR`s keeps its meaning. Counting pages
//! through the entries ([`MAX_PAGES`] pages of [`PAGE_SIZE`]); past that the count is a lower
//! bound, far above any sensible threshold.

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_logging_v2::{client::LoggingServiceV2, model::LogEntry};
use tokio::sync::OnceCell;

use super::{
    credentials_for, excerpt, MetricProvider, MetricsError, ProviderError, Query, RequestCounts,
    RequestMetrics, Sample,
};
use crate::platform::ServiceId;

const PROVIDER: &str = "cloud-logging";

/// Entries asked per page.
pub const PAGE_SIZE: i32 = 1000;
/// Pages read at most for one count.
pub const MAX_PAGES: usize = 50;

/// A lazily built Logging client.
#[derive(Debug)]
struct Client {
    endpoint: Option<String>,
    client: OnceCell<Result<LoggingServiceV2, String>>,
}

impl Client {
    fn new(endpoint: Option<String>) -> Self {
        Self {
            endpoint: endpoint.map(|url| url.trim_end_matches('/').to_string()),
            client: OnceCell::new(),
        }
    }

    fn label(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| "logging.googleapis.com".into())
    }

    async fn get(&self) -> Result<&LoggingServiceV2, String> {
        self.client
            .get_or_init(|| async {
                crate::install_crypto_provider();
                let credentials = credentials_for(self.endpoint.as_deref())?;
                let mut builder = LoggingServiceV2::builder()
                    .with_credentials(credentials)
                    .with_retry_policy(super::retry_policy());
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.with_endpoint(endpoint.clone());
                }
                builder
                    .build()
                    .await
                    .map_err(|error| format!("cannot create the Cloud Logging client: {error}"))
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Calls `visit` with every entry of `project` matching `filter` in the last `window`;
    /// returns false when it stopped at [`MAX_PAGES`].
    async fn each_entry(
        &self,
        project: &str,
        filter: &str,
        window: Duration,
        mut visit: impl FnMut(&LogEntry),
    ) -> Result<bool, ListError> {
        let client = self.get().await.map_err(ListError::Unavailable)?;
        let since = chrono::Utc::now()
            - chrono::Duration::from_std(window).unwrap_or_else(|_| chrono::Duration::minutes(10));
        let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let filter = if filter.trim().is_empty() {
            format!("timestamp>=\"{since}\"")
        } else {
            format!("{} AND timestamp>=\"{since}\"", filter.trim())
        };
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let page = client
                .list_log_entries()
                .set_resource_names([format!("projects/{project}")])
                .set_filter(filter.clone())
                .set_page_size(PAGE_SIZE)
                .set_page_token(page_token.clone())
                .send()
                .await
                .map_err(|error| match error.status() {
                    Some(status)
                        if status.code == google_cloud_gax::error::rpc::Code::InvalidArgument =>
                    {
                        ListError::Rejected(excerpt(&status.message, 300))
                    }
                    _ if error.is_deserialization() => {
                        ListError::Malformed(super::describe_google_error(&error))
                    }
                    _ => ListError::Unavailable(super::describe_google_error(&error)),
                })?;
            page.entries.iter().for_each(&mut visit);
            if page.next_page_token.is_empty() {
                return Ok(true);
            }
            page_token = page.next_page_token;
        }
        Ok(false)
    }
}

enum ListError {
    Unavailable(String),
    Rejected(String),
    Malformed(String),
}

/// The `cloud-logging` provider.
#[derive(Debug)]
pub struct CloudLogging {
    client: Client,
}

impl CloudLogging {
    /// A provider for `endpoint` (`DEPLOYER_LOGGING_ENDPOINT`), or Google's when `None`.
    pub fn new(endpoint: Option<String>) -> Self {
        Self {
            client: Client::new(endpoint),
        }
    }
}

#[async_trait]
impl MetricProvider for CloudLogging {
    async fn sample(&self, query: &Query) -> Result<Sample, ProviderError> {
        let Query::CloudLogging {
            project,
            filter,
            window,
        } = query
        else {
            return Err(ProviderError::Rejected {
                provider: PROVIDER,
                message: "not a cloud-logging query".into(),
            });
        };
        let mut count = 0u64;
        self.client
            .each_entry(project, filter, *window, |_| count += 1)
            .await
            .map_err(|error| match error {
                ListError::Unavailable(message) => ProviderError::Unavailable {
                    provider: PROVIDER,
                    message,
                },
                ListError::Rejected(message) => ProviderError::Rejected {
                    provider: PROVIDER,
                    message,
                },
                ListError::Malformed(message) => ProviderError::Malformed {
                    provider: PROVIDER,
                    message,
                },
            })?;
        // Zero matching entries is a measurement (no error line), not an absence of data.
        Ok(Sample::value(count as f64))
    }
}

/// Per-revision request counts from Cloud Run's request logs.
#[derive(Debug)]
pub struct CloudLoggingRequests {
    client: Client,
}

impl CloudLoggingRequests {
    /// A reader for `endpoint` (`DEPLOYER_LOGGING_ENDPOINT`), or Google's when `None`.
    pub fn new(endpoint: Option<String>) -> Self {
        Self {
            client: Client::new(endpoint),
        }
    }
}

/// The filter of `revision`'s request log entries.
pub fn request_log_filter(service: &ServiceId, revision: &str) -> String {
    format!(
        "logName=\"projects/{}/logs/run.googleapis.com%2Frequests\" AND resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"{}\" AND resource.labels.revision_name=\"{revision}\"",
        service.project, service.name
    )
}

#[async_trait]
impl RequestMetrics for CloudLoggingRequests {
    async fn request_counts(
        &self,
        service: &ServiceId,
        revision: &str,
        window: Duration,
    ) -> Result<RequestCounts, MetricsError> {
        let mut counts = RequestCounts::default();
        let mut unreadable = 0u64;
        self.client
            .each_entry(
                &service.project,
                &request_log_filter(service, revision),
                window,
                |entry| match entry.http_request.as_ref().map(|request| request.status) {
                    Some(status @ 100..=599) => {
                        counts.total += 1;
                        if status >= 500 {
                            counts.errors += 1;
                        }
                    }
                    _ => unreadable += 1,
                },
            )
            .await
            .map_err(|error| match error {
                ListError::Malformed(message) => MetricsError::Malformed {
                    provider: self.client.label(),
                    message,
                },
                ListError::Unavailable(message) | ListError::Rejected(message) => {
                    MetricsError::Unavailable {
                        provider: self.client.label(),
                        message,
                    }
                }
            })?;
        // Every entry of Cloud Run's request log is a request with its status. One without
        // (no `httpRequest`, no status, or none an HTTP answer can have) is an impossible
        // record: counting it as a request that succeeded, or skipping it, could hide 5xx.
        if unreadable > 0 {
            return Err(MetricsError::Malformed {
                provider: self.client.label(),
                message: format!(
                    "{unreadable} of {} request log entries have no HTTP status (no `httpRequest`, or a status outside 100-599)",
                    unreadable.saturating_add(counts.total)
                ),
            });
        }
        Ok(counts)
    }
}
