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

use super::{
    google_client::{Attempts, CallError, GoogleApi, LazyClient, Settings},
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

impl GoogleApi for LoggingServiceV2 {
    const NAME: &'static str = "Cloud Logging";
    const GOOGLE_LABEL: &'static str = "logging.googleapis.com";

    fn build(
        settings: Settings,
    ) -> impl std::future::Future<Output = Result<Self, google_cloud_gax::client_builder::Error>> + Send
    {
        settings.apply(Self::builder()).build()
    }
}

/// Calls `visit` with every entry of `project` matching `filter` in the last `window`;
/// returns false when it stopped at [`MAX_PAGES`].
async fn each_entry(
    client: &LoggingServiceV2,
    project: &str,
    filter: &str,
    window: Duration,
    mut visit: impl FnMut(&LogEntry),
) -> Result<bool, CallError> {
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
        let page = send_page(client, project, &filter, false, page_token)
            .await
            .map_err(CallError::of)?;
        page.entries.iter().for_each(&mut visit);
        if page.next_page_token.is_empty() {
            return Ok(true);
        }
        page_token = page.next_page_token;
    }
    Ok(false)
}

/// One page of `entries.list` (oldest first, or newest first with `newest_first`), tried again
/// through transient faults until `deadline` ([`super::transient`]): the entries and the next
/// page's token (empty on the last page).
async fn page_until(
    client: &LoggingServiceV2,
    project: &str,
    filter: &str,
    newest_first: bool,
    page_token: String,
    deadline: tokio::time::Instant,
) -> Result<(Vec<LogEntry>, String), CallError> {
    let page = transient::retry_until(deadline, "entries.list", || {
        send_page(client, project, filter, newest_first, page_token.clone())
    })
    .await
    .map_err(CallError::of_look)?;
    Ok((page.entries, page.next_page_token))
}

async fn send_page(
    client: &LoggingServiceV2,
    project: &str,
    filter: &str,
    newest_first: bool,
    page_token: String,
) -> Result<google_cloud_logging_v2::model::ListLogEntriesResponse, google_cloud_gax::error::Error>
{
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

/// The `cloud-logging` provider.
#[derive(Debug)]
pub struct CloudLogging {
    client: LazyClient<LoggingServiceV2>,
}

impl CloudLogging {
    /// A provider for `endpoint` (`DEPLOYER_LOGGING_ENDPOINT`), or Google's when `None`.
    pub fn new(endpoint: Option<String>) -> Self {
        Self {
            client: LazyClient::new(endpoint.as_deref()),
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
        let client = self
            .client
            .get()
            .await
            .map_err(|error| CallError::from(error).for_check(PROVIDER))?;
        let mut count = 0u64;
        each_entry(client, project, filter, *window, |_| count += 1)
            .await
            .map_err(|error| error.for_check(PROVIDER))?;
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
    client: LazyClient<LoggingServiceV2>,
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
            // Every page is tried once by the client: the look retries within its budget.
            client: LazyClient::new(endpoint.as_deref()).with_attempts(Attempts::One),
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

    fn error(&self, error: CallError) -> MetricsError {
        error.for_request_counts(self.client.label())
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
            .map_err(|error| self.error(error.into()))?;
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
            let (page, next) = page_until(
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
fn readable(entries: &[LogEntry]) -> Result<Vec<request_log::Entry>, CallError> {
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
        return Err(CallError::Malformed(format!(
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

#[async_trait]
impl RequestMetrics for CloudLoggingRequests {
    async fn request_counts(
        &self,
        service: &ServiceId,
        revision: &str,
        window: Duration,
    ) -> Result<RequestCounts, MetricsError> {
        let deadline = tokio::time::Instant::now() + super::READ_BUDGET;
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
