//! The `prometheus` provider: a PromQL instant query (`GET /api/v1/query`) answering one value.
//!
//! An empty vector is no data; a vector of more than one series is an error that names them
//! (a check compares one number, and silently picking one series would hide the others); a
//! scalar is a value. Also [`PrometheusRequests`], per-revision request counts for the
//! rollout.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::{
    excerpt, link::redact_url, promql_duration, send_and_read, MetricProvider, MetricsError,
    ProviderError, Query, RequestCounts, RequestMetrics, Sample,
};
use crate::platform::ServiceId;

const PROVIDER: &str = "prometheus";

/// The `prometheus` provider.
#[derive(Debug, Clone)]
pub struct Prometheus {
    default_url: Option<String>,
    client: Option<reqwest::Client>,
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Value,
}

#[derive(Debug, Deserialize)]
struct Series {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

fn http_client() -> Option<reqwest::Client> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .ok()
}

/// `{a="1", b="2"}`, the way Prometheus prints a series.
fn series_name(labels: &BTreeMap<String, String>) -> String {
    let name = labels.get("__name__").cloned().unwrap_or_default();
    let labels: Vec<String> = labels
        .iter()
        .filter(|(key, _)| *key != "__name__")
        .map(|(key, value)| format!("{key}=\"{value}\""))
        .collect();
    format!("{name}{{{}}}", labels.join(", "))
}

fn number(text: &str) -> Result<f64, ProviderError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other.parse().map_err(|_| ProviderError::Malformed {
            provider: PROVIDER,
            message: format!("sample value `{}` is not a number", excerpt(other, 40)),
        }),
    }
}

/// Runs `promql` at `base` and returns the vector's series (a scalar as one unlabelled series).
async fn instant_query(
    client: &reqwest::Client,
    base: &str,
    promql: &str,
) -> Result<Vec<(BTreeMap<String, String>, f64)>, ProviderError> {
    let shown = redact_url(base);
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let request = client.get(&url).query(&[("query", promql)]);
    let (status, body) = send_and_read(request, PROVIDER, &shown).await?;
    let answer: Answer = match serde_json::from_slice(&body) {
        Ok(answer) => answer,
        Err(_) if !status.is_success() => {
            return Err(ProviderError::Unavailable {
                provider: PROVIDER,
                message: format!(
                    "{shown} answered HTTP {status}: {}",
                    excerpt(&String::from_utf8_lossy(&body), 200)
                ),
            })
        }
        Err(error) => {
            return Err(ProviderError::Malformed {
                provider: PROVIDER,
                message: format!("{shown}: not a Prometheus API answer ({error})"),
            })
        }
    };
    if answer.status != "success" {
        let message = format!(
            "{}: {}",
            answer.error_type.as_deref().unwrap_or("error"),
            answer.error.as_deref().unwrap_or("no message")
        );
        return Err(ProviderError::of_http_status(PROVIDER, status, message));
    }
    let data = answer.data.ok_or(ProviderError::Malformed {
        provider: PROVIDER,
        message: "a success answer without `data`".into(),
    })?;
    let malformed = |message: String| ProviderError::Malformed {
        provider: PROVIDER,
        message,
    };
    match data.result_type.as_str() {
        "vector" => {
            let series: Vec<Series> = serde_json::from_value(data.result)
                .map_err(|error| malformed(format!("unreadable vector: {error}")))?;
            series
                .into_iter()
                .map(|series| Ok((series.metric, number(&series.value.1)?)))
                .collect()
        }
        "scalar" => {
            let (_, value): (f64, String) = serde_json::from_value(data.result)
                .map_err(|error| malformed(format!("unreadable scalar: {error}")))?;
            Ok(vec![(BTreeMap::new(), number(&value)?)])
        }
        other => Err(ProviderError::Rejected {
            provider: PROVIDER,
            message: format!(
                "the query answers a {other}, not an instant vector or scalar: write an \
                 expression such as `sum(rate(x[5m]))`"
            ),
        }),
    }
}

impl Prometheus {
    /// A provider whose checks without `url` go to `default_url` (`DEPLOYER_PROMETHEUS_URL`).
    pub fn new(default_url: Option<String>) -> Self {
        Self {
            default_url,
            client: http_client(),
        }
    }
}

#[async_trait]
impl MetricProvider for Prometheus {
    async fn sample(&self, query: &Query) -> Result<Sample, ProviderError> {
        let Query::Prometheus { url, promql } = query else {
            return Err(ProviderError::Rejected {
                provider: PROVIDER,
                message: "not a prometheus query".into(),
            });
        };
        let base =
            url.as_ref()
                .or(self.default_url.as_ref())
                .ok_or(ProviderError::Unavailable {
                    provider: PROVIDER,
                    message: "no server: set `url` in the check or `DEPLOYER_PROMETHEUS_URL`"
                        .into(),
                })?;
        let client = self.client.as_ref().ok_or(ProviderError::Unavailable {
            provider: PROVIDER,
            message: "cannot create an HTTP client".into(),
        })?;
        let mut series = instant_query(client, base, promql).await?;
        match series.len() {
            0 => Ok(Sample::NoData {
                reason: "the query answered an empty vector".into(),
            }),
            1 => Ok(Sample::value(series.remove(0).1)),
            _ => Err(ProviderError::Ambiguous {
                provider: PROVIDER,
                series: series
                    .iter()
                    .map(|(labels, _)| series_name(labels))
                    .collect(),
            }),
        }
    }
}

/// Per-revision request counts from Prometheus: Cloud Run's `request_count` as Google's
/// Managed Service for Prometheus names it (`run_googleapis_com:request_count`), or the local
/// emulator's `emulator_request_count`, both labelled `service_name`, `revision_name` and
/// `response_code_class`. Counts are the counter's growth over the window (exact for
/// counters without resets).
#[derive(Debug, Clone)]
pub struct PrometheusRequests {
    url: String,
    client: Option<reqwest::Client>,
}

impl PrometheusRequests {
    /// A reader of the server at `url`.
    pub fn new(url: String) -> Self {
        Self {
            url,
            client: http_client(),
        }
    }
}

/// Label values are quoted PromQL strings.
fn quoted(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

#[async_trait]
impl RequestMetrics for PrometheusRequests {
    async fn request_counts(
        &self,
        service: &ServiceId,
        revision: &str,
        window: Duration,
    ) -> Result<RequestCounts, MetricsError> {
        let provider = redact_url(&self.url);
        let client = self.client.as_ref().ok_or(MetricsError::Unavailable {
            provider: provider.clone(),
            message: "cannot create an HTTP client".into(),
        })?;
        // The counter now minus the counter a window ago, per class — not `increase()`, which
        // extrapolates to the window's edges and misses the requests behind a series' first
        // sample. A series younger than the window (a new revision) subtracts nothing: its
        // whole count is in the window.
        let selector = format!(
            "{{__name__=~\"run_googleapis_com:request_count|emulator_request_count\", service_name=\"{}\", revision_name=\"{}\"}}",
            quoted(&service.name),
            quoted(revision)
        );
        let window = promql_duration(window);
        let promql = format!(
            "sum by (response_code_class) ({selector}) - (sum by (response_code_class) ({selector} offset {window}) or sum by (response_code_class) ({selector}) * 0)"
        );
        let series =
            instant_query(client, &self.url, &promql)
                .await
                .map_err(|error| match error {
                    ProviderError::Malformed { message, .. } => MetricsError::Malformed {
                        provider: provider.clone(),
                        message,
                    },
                    other => MetricsError::Unavailable {
                        provider: provider.clone(),
                        message: other.to_string(),
                    },
                })?;
        let mut counts = RequestCounts::default();
        for (labels, value) in series {
            // A counter reset (a restarted exporter) makes the difference negative: count 0.
            let count = if value.is_finite() {
                value.max(0.0).round() as u64
            } else {
                0
            };
            counts.total += count;
            if labels.get("response_code_class").map(String::as_str) == Some("5xx") {
                counts.errors += count;
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_as_prometheus_prints_them() {
        let labels = BTreeMap::from([
            ("__name__".to_string(), "up".to_string()),
            ("job".to_string(), "api".to_string()),
        ]);
        assert_eq!(series_name(&labels), "up{job=\"api\"}");
        assert_eq!(quoted("a\"b"), "a\\\"b");
    }
}
