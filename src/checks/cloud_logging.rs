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
//! binds tighter than `AND`, so a user filter with `OR`s keeps its meaning. The provider's count
//! pages through the entries ([`MAX_PAGES`] pages of [`PAGE_SIZE`]); past that the count is a
//! lower bound, far above any sensible threshold.
//!
//! [`CloudLoggingRequests`] does not page through a whole window: its reads cost about the same
//! at any traffic. Each look reads only the entries since the previous look of the revision, a
//! sample of them through `sample(insertId, fraction)` at high traffic, at most
//! [`request_log::MAX_PAGES_PER_LOOK`] pages (plus one probe on a revision's first look); the
//! per-revision state is in [`request_log`](super::request_log).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use google_cloud_logging_v2::{client::LoggingServiceV2, model::LogEntry};
use tokio::sync::OnceCell;

use super::{
    credentials_for, excerpt,
    request_log::{self, ReadPlan, RevisionLog, MAX_PAGES_PER_LOOK},
    transient, MetricProvider, MetricsError, ProviderError, Query, RequestCounts, RequestMetrics,
    Sample,
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
    /// The Google client retries on its own ([`super::retry_policy`]); off when the caller
    /// retries within a budget ([`super::transient`]).
    own_retries: bool,
}

impl Client {
    fn new(endpoint: Option<String>) -> Self {
        Self {
            endpoint: endpoint.map(|url| url.trim_end_matches('/').to_string()),
            client: OnceCell::new(),
            own_retries: true,
        }
    }

    /// A client whose every call is tried once: the caller retries.
    fn without_retries(endpoint: Option<String>) -> Self {
        Self {
            own_retries: false,
            ..Self::new(endpoint)
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
                let mut builder = LoggingServiceV2::builder().with_credentials(credentials);
                builder = if self.own_retries {
                    builder.with_retry_policy(super::retry_policy())
                } else {
                    builder.with_retry_policy(super::single_attempt())
                };
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
            let (entries, next) = self
                .page(client, project, &filter, false, page_token)
                .await?;
            entries.iter().for_each(&mut visit);
            if next.is_empty() {
                return Ok(true);
            }
            page_token = next;
        }
        Ok(false)
    }

    /// One page of `entries.list` (oldest first, or newest first with `newest_first`): the
    /// entries and the next page's token (empty on the last page).
    async fn page(
        &self,
        client: &LoggingServiceV2,
        project: &str,
        filter: &str,
        newest_first: bool,
        page_token: String,
    ) -> Result<(Vec<LogEntry>, String), ListError> {
        let page = Self::send_page(client, project, filter, newest_first, page_token)
            .await
            .map_err(list_error)?;
        Ok((page.entries, page.next_page_token))
    }

    /// One page, tried again through transient faults until `deadline`
    /// ([`super::transient`]).
    async fn page_until(
        &self,
        client: &LoggingServiceV2,
        project: &str,
        filter: &str,
        newest_first: bool,
        page_token: String,
        deadline: tokio::time::Instant,
    ) -> Result<(Vec<LogEntry>, String), ListError> {
        let page = transient::retry_until(deadline, "entries.list", || {
            Self::send_page(client, project, filter, newest_first, page_token.clone())
        })
        .await
        .map_err(|failure| match failure {
            transient::Failure::Failed(error) => list_error(error),
            transient::Failure::OutOfTime(last) => ListError::Unavailable(match last {
                Some(error) => format!(
                    "no answer within the look's time (retried through: {})",
                    super::describe_google_error(&error)
                ),
                None => "no answer within the look's time".to_string(),
            }),
        })?;
        Ok((page.entries, page.next_page_token))
    }

    async fn send_page(
        client: &LoggingServiceV2,
        project: &str,
        filter: &str,
        newest_first: bool,
        page_token: String,
    ) -> Result<
        google_cloud_logging_v2::model::ListLogEntriesResponse,
        google_cloud_gax::error::Error,
    > {
        client
            .list_log_entries()
            .set_resource_names([format!("projects/{project}")])
            .set_filter(filter.to_string())
            .set_order_by(if newest_first {
                "timestamp desc"
            } else {
                "timestamp asc"
            })
            .set_page_size(PAGE_SIZE)
            .set_page_token(page_token)
            .send()
            .await
    }
}

fn list_error(error: google_cloud_gax::error::Error) -> ListError {
    match error.status() {
        Some(status) if status.code == google_cloud_gax::error::rpc::Code::InvalidArgument => {
            ListError::Rejected(excerpt(&status.message, 300))
        }
        _ if error.is_deserialization() => {
            ListError::Malformed(super::describe_google_error(&error))
        }
        _ => ListError::Unavailable(super::describe_google_error(&error)),
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

/// The wall clock the reader compares log timestamps with (replaceable in tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What one look at a revision cost and read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LookCost {
    /// `entries.list` requests sent.
    pub requests: u32,
    /// Entries received.
    pub entries_read: u64,
    /// The sampling fraction of the look's read (1.0: every entry).
    pub fraction: f64,
}

/// Per-revision request counts from Cloud Run's request logs, read in bounded looks: each look
/// reads the entries since the previous one, sampled at high traffic, at most
/// [`MAX_PAGES_PER_LOOK`] pages plus a probe on a revision's first look.
pub struct CloudLoggingRequests {
    client: Client,
    clock: Clock,
    revisions: Mutex<HashMap<RevisionKey, Arc<tokio::sync::Mutex<RevisionLog>>>>,
    costs: Mutex<HashMap<RevisionKey, LookCost>>,
}

impl std::fmt::Debug for CloudLoggingRequests {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CloudLoggingRequests")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl CloudLoggingRequests {
    /// A reader for `endpoint` (`DEPLOYER_LOGGING_ENDPOINT`), or Google's when `None`.
    pub fn new(endpoint: Option<String>) -> Self {
        Self {
            client: Client::without_retries(endpoint),
            clock: Arc::new(Utc::now),
            revisions: Mutex::default(),
            costs: Mutex::default(),
        }
    }

    /// The same reader on another clock (tests and benchmarks that feed log entries with
    /// simulated timestamps).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// What the latest look at `revision` of `service` cost.
    pub fn last_look(&self, service: &ServiceId, revision: &str) -> Option<LookCost> {
        self.costs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&key(service, revision))
            .copied()
    }

    fn error(&self, error: ListError) -> MetricsError {
        match error {
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
        }
    }

    /// Reads `plan` (oldest first, at most [`MAX_PAGES_PER_LOOK`] pages, or one page newest
    /// first for a probe): the entries and whether they reached the newest one.
    async fn read(
        &self,
        service: &ServiceId,
        revision: &str,
        plan: ReadPlan,
        probe: bool,
        cost: &mut LookCost,
        deadline: tokio::time::Instant,
    ) -> Result<(Vec<request_log::Entry>, bool), MetricsError> {
        let client = self
            .client
            .get()
            .await
            .map_err(|message| self.error(ListError::Unavailable(message)))?;
        let since = plan.since.to_rfc3339_opts(SecondsFormat::Nanos, true);
        let mut filter = format!(
            "{} AND timestamp>=\"{since}\"",
            request_log_filter(service, revision)
        );
        if plan.from > plan.since {
            let received = plan.from.to_rfc3339_opts(SecondsFormat::Nanos, true);
            filter.push_str(&format!(" AND receiveTimestamp>=\"{received}\""));
        }
        let fraction = plan.fraction.unwrap_or(1.0);
        if !probe && fraction < 1.0 {
            filter.push_str(&format!(" AND sample(insertId, {fraction:.6})"));
        }
        let pages = if probe { 1 } else { MAX_PAGES_PER_LOOK };
        let mut entries = Vec::new();
        let mut page_token = String::new();
        for _ in 0..pages {
            let (page, next) = self
                .client
                .page_until(
                    client,
                    &service.project,
                    &filter,
                    probe,
                    page_token,
                    deadline,
                )
                .await
                .map_err(|error| self.error(error))?;
            cost.requests += 1;
            cost.entries_read += page.len() as u64;
            entries.extend(page);
            if next.is_empty() {
                return Ok((readable(&entries).map_err(|e| self.error(e))?, true));
            }
            page_token = next;
        }
        let mut read = readable(&entries).map_err(|e| self.error(e))?;
        read.sort_by_key(|entry| entry.timestamp);
        Ok((read, false))
    }
}

/// Project, service and revision.
type RevisionKey = (String, String, String);

fn key(service: &ServiceId, revision: &str) -> RevisionKey {
    (
        service.project.clone(),
        service.name.clone(),
        revision.to_string(),
    )
}

/// The entries as the counts need them. Every entry of Cloud Run's request log is a request
/// with its status, an `insertId` and a timestamp. One without (no `httpRequest`, no status, or
/// none an HTTP answer can have) is an impossible record: counting it as a request that
/// succeeded, or skipping it, could hide 5xx.
fn readable(entries: &[LogEntry]) -> Result<Vec<request_log::Entry>, ListError> {
    let mut read = Vec::with_capacity(entries.len());
    let mut unreadable = 0usize;
    for entry in entries {
        let status = entry.http_request.as_ref().map(|request| request.status);
        let time = |at: Option<&google_cloud_wkt::Timestamp>| {
            at.and_then(|at| {
                DateTime::from_timestamp(at.seconds(), u32::try_from(at.nanos()).unwrap_or(0))
            })
        };
        let timestamp = time(entry.timestamp.as_ref());
        let received = time(entry.receive_timestamp.as_ref());
        match (status, timestamp, received) {
            (Some(status @ 100..=599), Some(timestamp), Some(received))
                if !entry.insert_id.is_empty() =>
            {
                read.push(request_log::Entry {
                    insert_id: entry.insert_id.clone(),
                    timestamp,
                    received,
                    error: status >= 500,
                })
            }
            _ => unreadable += 1,
        }
    }
    if unreadable > 0 {
        return Err(ListError::Malformed(format!(
            "{unreadable} of {} request log entries have no HTTP status (no `httpRequest`, or a status outside 100-599), no timestamp, receiveTimestamp or insertId",
            entries.len()
        )));
    }
    Ok(read)
}

/// The filter of `revision`'s request log entries.
pub fn request_log_filter(service: &ServiceId, revision: &str) -> String {
    format!(
        "logName=\"projects/{}/logs/run.googleapis.com%2Frequests\" AND resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"{}\" AND resource.labels.revision_name=\"{revision}\"",
        service.project, service.name
    )
}

/// How long a read outside a rollout's look (`deployer doctor`, say) retries transient faults.
pub const READ_BUDGET: Duration = Duration::from_secs(10);

#[async_trait]
impl RequestMetrics for CloudLoggingRequests {
    async fn request_counts(
        &self,
        service: &ServiceId,
        revision: &str,
        window: Duration,
    ) -> Result<RequestCounts, MetricsError> {
        let deadline = tokio::time::Instant::now() + READ_BUDGET;
        self.request_counts_until(service, revision, window, deadline)
            .await
    }

    /// Every page is retried through 503s and 429s until `deadline`
    /// ([`transient`](super::transient)); a page that fails leaves the revision's cursor
    /// where it was, so the next look reads the same entries again.
    async fn request_counts_until(
        &self,
        service: &ServiceId,
        revision: &str,
        window: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<RequestCounts, MetricsError> {
        let state = Arc::clone(
            self.revisions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .entry(key(service, revision))
                .or_default(),
        );
        let mut state = state.lock().await;
        let now = (self.clock)();
        let mut plan = state.plan(now, window);
        let mut cost = LookCost {
            requests: 0,
            entries_read: 0,
            fraction: 1.0,
        };
        let mut done = false;
        if plan.fraction.is_none() {
            let (newest, complete) = self
                .read(service, revision, plan, true, &mut cost, deadline)
                .await?;
            match state.probed(plan, &newest, complete, now) {
                None => done = true,
                Some(sampled) => plan = sampled,
            }
        }
        if !done {
            let (entries, complete) = self
                .read(service, revision, plan, false, &mut cost, deadline)
                .await?;
            state.record(plan, &entries, complete, now);
        }
        cost.fraction = plan.fraction.unwrap_or(1.0);
        tracing::debug!(
            revision,
            requests = cost.requests,
            entries = cost.entries_read,
            fraction = cost.fraction,
            "request log look"
        );
        self.costs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key(service, revision), cost);
        Ok(state.counts(now, window))
    }
}
