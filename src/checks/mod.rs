//! Service checks and metric providers: where numbers about a service come from.
//!
//! # The API the rollout and the health check call
//!
//! ```text
//! let endpoints = ProviderEndpoints::from_env().or_emulator(local_emulator_url); // once
//! let providers = Providers::new(endpoints.clone());                             // once
//! checks_for_gate(&config, Gate::Canary) -> Vec<&CheckConfig>      // the checks of a phase
//! run_checks(&checks, &CheckContext { .. }, &providers).await -> Vec<CheckResult>
//! request_metrics_for(&config.rollout, &endpoints) -> Result<Box<dyn RequestMetrics>, _>
//! ```
//!
//! [`run_checks`] runs every check concurrently, each bounded by its own `timeout`, so a slow
//! provider never delays a decision another metric already made; it never fails as a whole:
//! a check that cannot be evaluated is an [`Status::Error`] result. A [`CheckResult`] carries
//! the status (PASS / WARN / CRITICAL / NO DATA / ERROR), the value and unit, the thresholds,
//! the resolved query, the time taken and a link a person can open; for `baseline = true`
//! checks also the stable revision's value, and [`Scope::ServiceWide`] when the stable
//! revision breaches as badly (the whole service is failing: do not blame the canary).
//! A gate passes only on [`CheckResult::passes_gate`]: NO DATA and ERROR never pass one, whatever
//! `on_no_data` says (that only weighs reports and `deployer check`'s exit code).
//!
//! # Providers
//!
//! One [`MetricProvider`] per vendor, behind one seam: a resolved [`Query`] in, a [`Sample`]
//! out (a value, with the counts behind a rate when known, or no data), or a typed
//! [`ProviderError`]. `bigquery` ([`bigquery`]), `http` ([`http`]), `cloud-logging`
//! ([`cloud_logging`]), `cloud-monitoring` ([`cloud_monitoring`]) and `prometheus`
//! ([`prometheus`]). Endpoints come from [`ProviderEndpoints`] (`DEPLOYER_*_ENDPOINT`,
//! `DEPLOYER_PROMETHEUS_URL`), the same code path for Google and for local parts; Google
//! endpoints (`https://`) use Application Default Credentials, others none. Clients are built on
//! first use, so a run whose checks never touch BigQuery never looks for credentials.
//!
//! # Request counts
//!
//! [`RequestMetrics`] gives per-revision request and error counts, the input of the canary
//! analysis, from Cloud Logging request logs ([`cloud_logging::CloudLoggingRequests`]), Cloud
//! Monitoring ([`cloud_monitoring::CloudMonitoring`]) or Prometheus
//! ([`prometheus::PrometheusRequests`]), chosen by `rollout.request_metrics`
//! ([`request_metrics_for`]).

pub mod bigquery;
pub mod cloud_logging;
pub mod cloud_monitoring;
mod context;
mod google_client;
pub mod http;
mod link;
pub mod prometheus;
mod providers;
pub mod request_log;
mod request_metrics;
mod result;
pub mod transient;

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::config::{CheckConfig, CheckSource, Gate, ServiceConfig};

pub use context::{
    promql_duration, unknown_placeholders, uses_placeholder, CheckContext, MissingPlaceholder,
    PLACEHOLDERS,
};
pub use google_client::NO_CREDENTIALS;
pub(crate) use google_client::{credentials_for, describe_google_error, retry_policy, LazyClient};
pub use providers::{ProviderEndpoints, Providers};
pub use request_metrics::{
    request_metrics_for, MetricsError, RequestCounts, RequestMetrics, READ_BUDGET,
};
pub use result::{
    exit_code, format_value, BaselineResult, CheckResult, Scope, Severity, Status, Thresholds,
};

/// The counts behind a rate (`matching` of `total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// The events counted by the rate's numerator.
    pub matching: u64,
    /// All events.
    pub total: u64,
}

/// What a provider measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A value, with the counts behind it for rates.
    Value {
        /// The value.
        value: f64,
        /// The counts behind a rate, when the provider gives them.
        counts: Option<Counts>,
    },
    /// The provider answered, but there was nothing to measure.
    NoData {
        /// What was empty (`no row`, `NULL`, `empty vector`).
        reason: String,
    },
}

impl Sample {
    /// A value with no counts.
    pub fn value(value: f64) -> Self {
        Sample::Value {
            value,
            counts: None,
        }
    }
}

/// Why a provider gave no sample. None of these ever lets a check pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached, or failed (transport error, 5xx, no credentials).
    #[error("`{provider}` is unavailable: {message}")]
    Unavailable {
        /// Which provider.
        provider: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The provider refused the query (a SQL error, a missing table, HTTP 4xx, bad PromQL).
    #[error("`{provider}` refused the query: {message}")]
    Rejected {
        /// Which provider.
        provider: &'static str,
        /// The provider's reason.
        message: String,
    },
    /// The answer could not be read as a value.
    #[error("unreadable answer from `{provider}`: {message}")]
    Malformed {
        /// Which provider.
        provider: &'static str,
        /// What was wrong with it.
        message: String,
    },
    /// The query matched several series where one value was expected.
    #[error("`{provider}` answered {} series where one was expected: {}", series.len(), series.join(", "))]
    Ambiguous {
        /// Which provider.
        provider: &'static str,
        /// The series, by their labels.
        series: Vec<String>,
    },
    /// No answer within the check's timeout.
    #[error("`{provider}` did not answer within {}", humantime::format_duration(*after))]
    Timeout {
        /// Which provider.
        provider: &'static str,
        /// The timeout.
        after: Duration,
    },
}

impl ProviderError {
    /// A refusal `provider` answered with HTTP `status`: a 5xx is the provider failing
    /// (unavailable), any other status the query refused.
    pub(crate) fn of_http_status(
        provider: &'static str,
        status: reqwest::StatusCode,
        message: String,
    ) -> Self {
        if status.is_server_error() {
            ProviderError::Unavailable { provider, message }
        } else {
            ProviderError::Rejected { provider, message }
        }
    }
}

/// A check's query with its placeholders resolved: what a provider runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A BigQuery SQL query.
    Bigquery {
        /// The project the job runs in.
        project: String,
        /// Standard SQL.
        sql: String,
        /// Cost guard.
        maximum_bytes_billed: u64,
        /// Time the job may take.
        timeout: Duration,
    },
    /// An HTTP GET.
    Http {
        /// Absolute URL.
        url: String,
        /// Dotted JSON field of the value.
        field: String,
    },
    /// A count of log entries.
    CloudLogging {
        /// Project of the logs.
        project: String,
        /// The filter, without the time range.
        filter: String,
        /// The time range, up to now.
        window: Duration,
    },
    /// One value from time series.
    CloudMonitoring {
        /// Project of the metrics.
        project: String,
        /// The time-series filter.
        filter: String,
        /// The time range, up to now (also the alignment period).
        window: Duration,
        /// Per-series aligner.
        aligner: String,
        /// Cross-series reducer.
        reducer: String,
    },
    /// A PromQL instant query.
    Prometheus {
        /// The server, when the check names one.
        url: Option<String>,
        /// The expression.
        promql: String,
    },
}

impl Query {
    /// The query as people read it in reports.
    pub fn text(&self) -> String {
        match self {
            Query::Bigquery { sql, .. } => sql.trim().to_string(),
            Query::Http { url, field } => format!("GET {} → {field}", link::redact_url(url)),
            Query::CloudLogging { filter, .. } | Query::CloudMonitoring { filter, .. } => {
                filter.clone()
            }
            Query::Prometheus { promql, .. } => promql.clone(),
        }
    }
}

/// A metric provider: runs a resolved query, answers one sample.
#[async_trait]
pub trait MetricProvider: Send + Sync {
    /// Runs `query`. A query of another provider is a [`ProviderError::Rejected`].
    async fn sample(&self, query: &Query) -> Result<Sample, ProviderError>;
}

/// The checks of `config` that gate `gate`, in file order.
pub fn checks_for_gate(config: &ServiceConfig, gate: Gate) -> Vec<&CheckConfig> {
    config
        .checks
        .iter()
        .filter(|check| check.gates.contains(&gate))
        .collect()
}

/// Errors resolving a check's query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A placeholder has no value.
    #[error(transparent)]
    Missing(#[from] MissingPlaceholder),
    /// An `http` check is a path but no URL reaches the revision.
    #[error("`url` is a path and no URL of the service is known")]
    NoServiceUrl,
}

/// `check`'s query for `context`.
pub fn resolve(check: &CheckConfig, context: &CheckContext) -> Result<Query, ResolveError> {
    let window = check.window.get();
    let text = |text: &str| context.resolve(text, window);
    let project = |project: &Option<String>| match project {
        Some(project) => text(project),
        None => Ok(context.project.clone()),
    };
    Ok(match &check.source {
        CheckSource::Bigquery(source) => Query::Bigquery {
            project: project(&source.project)?,
            sql: text(&source.query)?,
            maximum_bytes_billed: source.maximum_bytes_billed,
            timeout: check.timeout.get(),
        },
        CheckSource::Http(source) => {
            let url = text(&source.url)?;
            let url = if url.starts_with('/') {
                let base = context
                    .revision_url
                    .as_deref()
                    .ok_or(ResolveError::NoServiceUrl)?;
                format!("{}{url}", base.trim_end_matches('/'))
            } else {
                url
            };
            Query::Http {
                url,
                field: text(&source.field)?,
            }
        }
        CheckSource::CloudLogging(source) => Query::CloudLogging {
            project: project(&source.project)?,
            filter: text(&source.filter)?,
            window,
        },
        CheckSource::CloudMonitoring(source) => Query::CloudMonitoring {
            project: project(&source.project)?,
            filter: text(&source.filter)?,
            window,
            aligner: source.aligner.clone(),
            reducer: source.reducer.clone(),
        },
        CheckSource::Prometheus(source) => Query::Prometheus {
            url: source.url.as_deref().map(text).transpose()?,
            promql: text(&source.query)?,
        },
    })
}

/// Runs `checks` for `context`, concurrently, each bounded by its timeout. The results are in
/// the order of `checks`.
pub async fn run_checks(
    checks: &[&CheckConfig],
    context: &CheckContext,
    providers: &Providers,
) -> Vec<CheckResult> {
    futures::future::join_all(
        checks
            .iter()
            .map(|check| run_check(check, context, providers)),
    )
    .await
}

/// One measurement: the query run (or why it could not be), the sample, the time taken.
struct Measurement {
    query: Result<Query, String>,
    sample: Result<Sample, String>,
}

async fn measure(
    check: &CheckConfig,
    context: &CheckContext,
    providers: &Providers,
) -> Measurement {
    let query = match resolve(check, context) {
        Ok(query) => query,
        Err(error) => {
            return Measurement {
                query: Err(check.source.query_text().to_string()),
                sample: Err(error.to_string()),
            }
        }
    };
    let timeout = check.timeout.get();
    let sample =
        match tokio::time::timeout(timeout, providers.for_query(&query).sample(&query)).await {
            Ok(Ok(sample)) => Ok(sample),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(ProviderError::Timeout {
                provider: check.provider().as_str(),
                after: timeout,
            }
            .to_string()),
        };
    Measurement {
        query: Ok(query),
        sample,
    }
}

/// Runs one check (and its baseline): never fails, an unevaluable check is an ERROR result.
pub async fn run_check(
    check: &CheckConfig,
    context: &CheckContext,
    providers: &Providers,
) -> CheckResult {
    let started = std::time::Instant::now();
    let stable_context = check
        .baseline
        .then(|| context.for_stable())
        .flatten()
        .filter(|stable| stable.revision != context.revision);
    let (measured, baseline) = match &stable_context {
        Some(stable) => {
            let (measured, baseline) = futures::future::join(
                measure(check, context, providers),
                measure(check, stable, providers),
            )
            .await;
            (measured, Some(baseline))
        }
        None => (measure(check, context, providers).await, None),
    };
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, value, counts, mut message) = result::outcome(check, measured.sample);
    let baseline = baseline.zip(stable_context).map(|(baseline, stable)| {
        let (status, value, _, message) = result::outcome(check, baseline.sample);
        BaselineResult {
            revision: stable.revision.unwrap_or_default(),
            status,
            value,
            query: match baseline.query {
                Ok(query) => query.text(),
                Err(text) => text,
            },
            message,
        }
    });
    if check.baseline && baseline.is_none() && message.is_none() {
        message = Some(match (&context.stable_revision, &context.revision) {
            (None, _) => "baseline not measured: no stable revision".to_string(),
            _ => "baseline not measured: the stable revision is the one measured".to_string(),
        });
    }
    // A breach the stable revision shares (as bad or worse) is the service's, not the
    // canary's: rolling back would not fix it, so it is reported as service-wide.
    let scope = match &baseline {
        Some(baseline)
            if matches!(status, Status::Warn | Status::Critical)
                && matches!(baseline.status, Status::Warn | Status::Critical)
                && baseline.status >= status =>
        {
            Scope::ServiceWide
        }
        _ => Scope::Revision,
    };
    let (query_text, link) = match &measured.query {
        Ok(query) => (query.text(), link::for_query(query, providers.endpoints())),
        Err(text) => (text.clone(), None),
    };
    let revision = match &measured.query {
        Ok(_) if uses_placeholder(check.source.query_text(), "revision") || check.baseline => {
            context.revision.clone()
        }
        _ => None,
    };
    CheckResult {
        name: check.name.clone(),
        provider: check.provider().as_str(),
        status,
        severity: result::severity(check, status),
        value,
        counts,
        unit: check.unit,
        thresholds: Thresholds {
            comparison: check.comparison.symbol(),
            warn: check.warn,
            critical: check.critical,
        },
        query: query_text,
        link,
        elapsed_ms,
        message,
        revision,
        baseline,
        scope,
    }
}

/// Sends `request` and reads the whole answer: its status and body. A failure to send or to read
/// is the provider being unavailable, told as `{label}: why` (the URL left out of reqwest's
/// message: `label` names it, redacted).
pub(crate) async fn send_and_read(
    request: reqwest::RequestBuilder,
    provider: &'static str,
    label: &str,
) -> Result<(reqwest::StatusCode, bytes::Bytes), ProviderError> {
    let unavailable = |error: reqwest::Error| ProviderError::Unavailable {
        provider,
        message: format!("{label}: {}", error.without_url()),
    };
    let response = request.send().await.map_err(unavailable)?;
    let status = response.status();
    let body = response.bytes().await.map_err(unavailable)?;
    Ok((status, body))
}

/// The first `limit` characters of `text` (never cut inside a character).
pub(crate) fn excerpt(text: &str, limit: usize) -> String {
    let mut cut: String = text.chars().take(limit).collect();
    if text.chars().nth(limit).is_some() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str) -> CheckConfig {
        toml::from_str(&format!(
            "name = \"c\"\ncomparison = \">=\"\nwarn = 1\ncritical = 0\n{toml}"
        ))
        .unwrap()
    }

    fn context() -> CheckContext {
        CheckContext {
            service: "api".into(),
            project: "target-project".into(),
            region: "us-west2".into(),
            revision: Some("api-00002-new".into()),
            revision_url: Some("https://canary---api.example/".into()),
            ..CheckContext::default()
        }
    }

    #[test]
    fn queries_resolve_projects_paths_and_windows() {
        let bigquery = check("provider = \"bigquery\"\nquery = \"SELECT 1 FROM `{project}.d.t`\"\nproject = \"billing-{region}\"\ntimeout = \"5s\"");
        assert_eq!(
            resolve(&bigquery, &context()).unwrap(),
            Query::Bigquery {
                project: "billing-us-west2".into(),
                sql: "SELECT 1 FROM `target-project.d.t`".into(),
                maximum_bytes_billed: 10_000_000_000,
                timeout: Duration::from_secs(5),
            }
        );
        let http = check("provider = \"http\"\nurl = \"/stats?rev={revision}\"\nfield = \"a.b\"");
        assert_eq!(
            resolve(&http, &context()).unwrap(),
            Query::Http {
                url: "https://canary---api.example/stats?rev=api-00002-new".into(),
                field: "a.b".into(),
            }
        );
        assert_eq!(
            resolve(
                &http,
                &CheckContext {
                    revision_url: None,
                    ..context()
                }
            ),
            Err(ResolveError::NoServiceUrl)
        );
        let logging = check("provider = \"cloud-logging\"\nfilter = \"x\"\nwindow = \"2m\"");
        assert!(matches!(
            resolve(&logging, &context()).unwrap(),
            Query::CloudLogging { project, window, .. }
                if project == "target-project" && window == Duration::from_secs(120)
        ));
        let prometheus =
            check("provider = \"prometheus\"\nquery = \"rate(x[{window}])\"\nwindow = \"5m\"");
        assert!(matches!(
            resolve(&prometheus, &context()).unwrap(),
            Query::Prometheus { promql, url: None } if promql == "rate(x[5m])"
        ));
        let stable =
            check("provider = \"prometheus\"\nquery = \"x{{r=\\\"{stable_revision}\\\"}}\"");
        assert!(matches!(
            resolve(&stable, &context()),
            Err(ResolveError::Missing(MissingPlaceholder { name })) if name == "stable_revision"
        ));
    }
}
