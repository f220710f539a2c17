//! Cloud Monitoring: `projects.timeSeries.list` for Cloud Run's per-revision request counts.
//!
//! The filter selects `run.googleapis.com/request_count` of one revision; points are summed
//! per `response_code_class`. Against Google the request carries an OAuth token from
//! Application Default Credentials; against the local emulator (an `http://` endpoint) none.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{MetricsError, RequestCounts, RequestMetrics};
use crate::platform::ServiceId;

/// Google's Cloud Monitoring endpoint.
pub const GOOGLE_ENDPOINT: &str = "https://monitoring.googleapis.com";

/// A Cloud Monitoring client for request counts.
#[derive(Debug, Clone)]
pub struct CloudMonitoring {
    endpoint: String,
    http: reqwest::Client,
    credentials: Option<google_cloud_auth::credentials::Credentials>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListResponse {
    #[serde(default)]
    time_series: Vec<TimeSeries>,
    #[serde(default)]
    next_page_token: String,
}

#[derive(Debug, Deserialize)]
struct TimeSeries {
    #[serde(default)]
    metric: Metric,
    #[serde(default)]
    points: Vec<Point>,
}

#[derive(Debug, Default, Deserialize)]
struct Metric {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Point {
    value: PointValue,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PointValue {
    /// int64 values travel as JSON strings.
    #[serde(default)]
    int64_value: Option<serde_json::Value>,
    #[serde(default)]
    double_value: Option<f64>,
}

impl PointValue {
    fn count(&self) -> Option<u64> {
        match &self.int64_value {
            Some(serde_json::Value::String(text)) => text.parse().ok(),
            Some(serde_json::Value::Number(number)) => number.as_u64(),
            Some(_) => None,
            None => self.double_value.map(|value| value.max(0.0).round() as u64),
        }
    }
}

impl CloudMonitoring {
    /// A client for `endpoint` (without `/v3`). Google's endpoint uses Application Default
    /// Credentials; any other endpoint is called without credentials.
    pub fn new(endpoint: &str) -> Result<Self, MetricsError> {
        crate::install_crypto_provider();
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let unavailable = |message: String| MetricsError::Unavailable {
            provider: endpoint.clone(),
            message,
        };
        let credentials = if endpoint.starts_with("https://") {
            Some(
                google_cloud_auth::credentials::Builder::default()
                    .build()
                    .map_err(|error| unavailable(format!("no credentials: {error}")))?,
            )
        } else {
            None
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|error| unavailable(error.to_string()))?;
        Ok(Self {
            endpoint,
            http,
            credentials,
        })
    }

    fn unavailable(&self, message: impl Into<String>) -> MetricsError {
        MetricsError::Unavailable {
            provider: self.endpoint.clone(),
            message: message.into(),
        }
    }

    async fn auth_headers(&self) -> Result<reqwest::header::HeaderMap, MetricsError> {
        let Some(credentials) = &self.credentials else {
            return Ok(reqwest::header::HeaderMap::new());
        };
        match credentials.headers(http::Extensions::new()).await {
            Ok(google_cloud_auth::credentials::CacheableResource::New { data, .. }) => Ok(data),
            Ok(google_cloud_auth::credentials::CacheableResource::NotModified) => {
                Err(self.unavailable("credentials returned no headers"))
            }
            Err(error) => Err(self.unavailable(format!("credentials: {error}"))),
        }
    }
}

#[async_trait]
impl RequestMetrics for CloudMonitoring {
    async fn request_counts(
        &self,
        service: &ServiceId,
        revision: &str,
        window: Duration,
    ) -> Result<RequestCounts, MetricsError> {
        let end = chrono::Utc::now();
        let start = end
            - chrono::Duration::from_std(window).unwrap_or_else(|_| chrono::Duration::minutes(5));
        let filter = format!(
            "metric.type = \"run.googleapis.com/request_count\" AND resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"{}\" AND resource.labels.revision_name = \"{revision}\"",
            service.name
        );
        let url = format!(
            "{}/v3/projects/{}/timeSeries",
            self.endpoint, service.project
        );
        let headers = self.auth_headers().await?;
        let mut counts = RequestCounts::default();
        let mut page_token = String::new();
        loop {
            let response = self
                .http
                .get(&url)
                .headers(headers.clone())
                .query(&[
                    ("filter", filter.as_str()),
                    (
                        "interval.startTime",
                        &start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ),
                    (
                        "interval.endTime",
                        &end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    ),
                    ("pageToken", page_token.as_str()),
                ])
                .send()
                .await
                .map_err(|error| self.unavailable(error.without_url().to_string()))?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                return Err(self.unavailable(format!(
                    "HTTP {status}: {}",
                    body.chars().take(200).collect::<String>()
                )));
            }
            let page: ListResponse =
                response
                    .json()
                    .await
                    .map_err(|error| MetricsError::Malformed {
                        provider: self.endpoint.clone(),
                        message: error.without_url().to_string(),
                    })?;
            for series in &page.time_series {
                let class = series
                    .metric
                    .labels
                    .get("response_code_class")
                    .map(String::as_str)
                    .unwrap_or_default();
                let sum: u64 = series
                    .points
                    .iter()
                    .filter_map(|point| point.value.count())
                    .sum();
                counts.total += sum;
                if class == "5xx" {
                    counts.errors += sum;
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_int64_values_as_strings_or_numbers() {
        let page: ListResponse = serde_json::from_str(
            r#"{"timeSeries":[
                {"metric":{"type":"run.googleapis.com/request_count","labels":{"response_code_class":"2xx"}},
                 "points":[{"interval":{},"value":{"int64Value":"90"}},{"value":{"int64Value":7}}]},
                {"metric":{"labels":{"response_code_class":"5xx"}},"points":[{"value":{"int64Value":"3"}}]}
            ]}"#,
        )
        .unwrap();
        let counts: Vec<u64> = page
            .time_series
            .iter()
            .flat_map(|series| series.points.iter().filter_map(|point| point.value.count()))
            .collect();
        assert_eq!(counts, [90, 7, 3]);
    }
}
