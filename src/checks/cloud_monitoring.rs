//! Cloud Monitoring on Google's official `google-cloud-monitoring-v3` client (REST
//! `projects.timeSeries.list`): the `cloud-monitoring` provider and
//! [`CloudMonitoring`], Cloud Run's per-revision request counts.
//!
//! A check's filter is read over its window, each series aligned over the whole window by the
//! check's aligner, then reduced across series by its reducer: one series with one value is
//! expected; several are an error that names them. Request counts select
//! `run.googleapis.com/request_count` of one revision, summed per `response_code_class`.
//! Against Google the client uses Application Default Credentials; against any other endpoint
//! (the local emulator) anonymous ones.

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_monitoring_v3::{
    client::MetricService,
    model::{
        aggregation::{Aligner, Reducer},
        typed_value::Value as PointValue,
        Aggregation, TimeInterval, TimeSeries,
    },
};

use super::{
    excerpt,
    google_client::{single_attempt, CallError, GoogleApi, LazyClient, Settings},
    transient, MetricProvider, MetricsError, ProviderError, Query, RequestCounts, RequestMetrics,
    Sample,
};
use crate::platform::ServiceId;

/// The most pages of time series followed: an endless `nextPageToken` is an error, not a loop.
const MAX_PAGES: usize = 100;

/// Google's Cloud Monitoring endpoint.
pub const GOOGLE_ENDPOINT: &str = "https://monitoring.googleapis.com";

const PROVIDER: &str = "cloud-monitoring";

impl GoogleApi for MetricService {
    const NAME: &'static str = "Cloud Monitoring";
    const GOOGLE_LABEL: &'static str = GOOGLE_ENDPOINT;

    /// Google's endpoint, named in full, is Google's (`None`).
    fn normalize(endpoint: &str) -> Option<String> {
        Some(endpoint.trim_end_matches('/').to_string()).filter(|url| url != GOOGLE_ENDPOINT)
    }

    fn build(
        settings: Settings,
    ) -> impl std::future::Future<Output = Result<Self, google_cloud_gax::client_builder::Error>> + Send
    {
        settings.apply(Self::builder()).build()
    }
}

/// Every series of `project` matching `filter` over the last `window`, aggregated: each page
/// retried through transient faults until `deadline` when there is one.
async fn list(
    lazy_client: &LazyClient<MetricService>,
    project: &str,
    filter: &str,
    window: Duration,
    aggregation: Aggregation,
    deadline: Option<tokio::time::Instant>,
) -> Result<Vec<TimeSeries>, CallError> {
    let client = lazy_client.get().await?;
    let end = chrono::Utc::now();
    let seconds = i64::try_from(window.as_secs().max(1)).unwrap_or(i64::MAX);
    let interval = TimeInterval::new()
        .set_start_time(google_cloud_wkt::Timestamp::clamp(
            end.timestamp() - seconds,
            0,
        ))
        .set_end_time(google_cloud_wkt::Timestamp::clamp(end.timestamp(), 0));
    let mut series = Vec::new();
    let mut page_token = String::new();
    for _ in 0..MAX_PAGES {
        let send = || {
            use google_cloud_gax::options::RequestOptionsBuilder as _;
            let request = client
                .list_time_series()
                .set_name(format!("projects/{project}"))
                .set_filter(filter)
                .set_interval(interval.clone())
                .set_aggregation(aggregation.clone())
                .set_page_token(page_token.clone());
            // Within a look, each try is one attempt: the look's own retries
            // ([`super::transient`]) decide when to try again. The client's policy would
            // sleep its own backoff (a second and more) inside the try, past a short look.
            match deadline {
                Some(_) => request.with_retry_policy(single_attempt()),
                None => request,
            }
            .send()
        };
        // A rollout's look retries 503s and 429s within its own time
        // ([`super::transient`]); a check's read is tried as the client's policy says.
        let page = match deadline {
            None => send().await.map_err(CallError::of)?,
            Some(deadline) => transient::retry_until(deadline, "timeSeries.list", send)
                .await
                .map_err(CallError::of_look)?,
        };
        series.extend(page.time_series);
        if page.next_page_token.is_empty() {
            return Ok(series);
        }
        page_token = page.next_page_token;
    }
    Err(CallError::Malformed(format!(
        "`{}`: still a next page after {MAX_PAGES} pages of time series",
        lazy_client.label()
    )))
}

/// One point of a request count: a whole number of requests, or why it cannot be one. A
/// request count is an INT64 metric: a bool, a distribution or a point without a value is as
/// impossible as a negative count (ignoring it once counted a 5xx series as no errors).
fn point_count(value: Option<&PointValue>) -> Result<u64, String> {
    let impossible = |shown: String| Err(format!("a request count of {shown} is impossible"));
    match value {
        Some(PointValue::Int64Value(value)) => match u64::try_from(*value) {
            Ok(count) => Ok(count),
            Err(_) => impossible(value.to_string()),
        },
        Some(PointValue::DoubleValue(value)) => {
            // 2^64 as f64: every finite value below it converts exactly after rounding.
            const LIMIT: f64 = 18_446_744_073_709_551_616.0;
            if value.is_finite() && *value >= 0.0 && value.round() < LIMIT {
                Ok(value.round() as u64)
            } else {
                impossible(value.to_string())
            }
        }
        Some(PointValue::StringValue(text)) => match text.trim().parse::<u64>() {
            Ok(count) => Ok(count),
            Err(_) => impossible(format!("`{}`", excerpt(text, 40))),
        },
        Some(PointValue::BoolValue(value)) => impossible(format!("the bool {value}")),
        Some(PointValue::DistributionValue(_)) => impossible("a distribution".to_string()),
        Some(_) => impossible("a value of an unknown type".to_string()),
        None => impossible("nothing (a point without a value)".to_string()),
    }
}

/// Request counts per response code class from `run.googleapis.com/request_count` series,
/// in checked arithmetic: a negative, fractional-infinite or overflowing count, or more errors
/// than requests, is a malformed answer — never a pass (two 5xx points of 2^63 used to add up
/// to 0 errors and promote a failing canary).
fn request_counts_of(series: &[TimeSeries]) -> Result<RequestCounts, String> {
    let overflow = || "request counts overflow 64 bits".to_string();
    let mut counts = RequestCounts::default();
    for series in series {
        let class = series
            .metric
            .as_ref()
            .and_then(|metric| metric.labels.get("response_code_class"))
            .map(String::as_str)
            .unwrap_or_default();
        let mut sum = 0u64;
        for point in &series.points {
            let count = point_count(point.value.as_ref().and_then(|value| value.value.as_ref()))?;
            sum = sum.checked_add(count).ok_or_else(overflow)?;
        }
        counts.total = counts.total.checked_add(sum).ok_or_else(overflow)?;
        if class == "5xx" {
            counts.errors = counts.errors.checked_add(sum).ok_or_else(overflow)?;
        }
    }
    if counts.errors > counts.total {
        return Err(format!(
            "{} errors out of {} requests",
            counts.errors, counts.total
        ));
    }
    Ok(counts)
}

fn point_value(value: &PointValue) -> Option<f64> {
    match value {
        PointValue::Int64Value(value) => Some(*value as f64),
        PointValue::DoubleValue(value) => Some(*value),
        PointValue::BoolValue(value) => Some(if *value { 1.0 } else { 0.0 }),
        PointValue::DistributionValue(distribution) => Some(distribution.mean),
        PointValue::StringValue(text) => text.parse().ok(),
        _ => None,
    }
}

/// `metric.type{label="value", ...}` of one series, for errors naming it.
fn series_name(series: &TimeSeries) -> String {
    let mut labels: Vec<String> = Vec::new();
    let mut name = String::new();
    if let Some(metric) = &series.metric {
        name = metric.r#type.clone();
        labels.extend(
            metric
                .labels
                .iter()
                .map(|(key, value)| format!("metric.labels.{key}=\"{value}\"")),
        );
    }
    if let Some(resource) = &series.resource {
        labels.extend(
            resource
                .labels
                .iter()
                .map(|(key, value)| format!("resource.labels.{key}=\"{value}\"")),
        );
    }
    labels.sort();
    format!("{name}{{{}}}", labels.join(", "))
}

fn whole_window(window: Duration) -> google_cloud_wkt::Duration {
    google_cloud_wkt::Duration::clamp(
        i64::try_from(window.as_secs().max(1)).unwrap_or(i64::MAX),
        0,
    )
}

/// The `cloud-monitoring` provider.
#[derive(Debug)]
pub struct MonitoringProvider {
    client: LazyClient<MetricService>,
}

impl MonitoringProvider {
    /// A provider for `endpoint` (`DEPLOYER_MONITORING_ENDPOINT`), or Google's when `None`.
    pub fn new(endpoint: Option<String>) -> Self {
        Self {
            client: LazyClient::new(endpoint.as_deref()),
        }
    }
}

#[async_trait]
impl MetricProvider for MonitoringProvider {
    async fn sample(&self, query: &Query) -> Result<Sample, ProviderError> {
        let Query::CloudMonitoring {
            project,
            filter,
            window,
            aligner,
            reducer,
        } = query
        else {
            return Err(ProviderError::Rejected {
                provider: PROVIDER,
                message: "not a cloud-monitoring query".into(),
            });
        };
        let aligner_value = Aligner::from(aligner.as_str());
        let reducer_value = Reducer::from(reducer.as_str());
        if matches!(aligner_value, Aligner::UnknownValue(_)) {
            return Err(ProviderError::Rejected {
                provider: PROVIDER,
                message: format!("unknown aligner `{aligner}`: use e.g. `ALIGN_SUM`"),
            });
        }
        if matches!(reducer_value, Reducer::UnknownValue(_)) {
            return Err(ProviderError::Rejected {
                provider: PROVIDER,
                message: format!("unknown reducer `{reducer}`: use e.g. `REDUCE_SUM`"),
            });
        }
        let aggregation = Aggregation::new()
            .set_alignment_period(whole_window(*window))
            .set_per_series_aligner(aligner_value.clone())
            .set_cross_series_reducer(reducer_value);
        let series = list(&self.client, project, filter, *window, aggregation, None)
            .await
            .map_err(|error| error.for_check(PROVIDER))?;
        let series: Vec<&TimeSeries> = series.iter().filter(|s| !s.points.is_empty()).collect();
        match series.as_slice() {
            [] => Ok(Sample::NoData {
                reason: "no time series matched in the window".into(),
            }),
            [one] => {
                // Points come newest first. Counting aligners split a window that straddles
                // an alignment boundary into two points: add them; others read the newest.
                // A point that carries no number is a malformed answer, not a point to skip:
                // the sum of the others would be a value the series never had.
                let values: Vec<f64> = one
                    .points
                    .iter()
                    .map(|point| point.value.as_ref()?.value.as_ref().and_then(point_value))
                    .collect::<Option<_>>()
                    .ok_or_else(|| ProviderError::Malformed {
                        provider: PROVIDER,
                        message: format!(
                            "a point of {} carries no number",
                            excerpt(&series_name(one), 200)
                        ),
                    })?;
                let value = if matches!(
                    aligner_value,
                    Aligner::AlignSum | Aligner::AlignDelta | Aligner::AlignCount
                ) {
                    values.iter().sum::<f64>()
                } else {
                    values.first().copied().ok_or(ProviderError::Malformed {
                        provider: PROVIDER,
                        message: "the series' points carry no number".into(),
                    })?
                };
                if values.is_empty() {
                    return Err(ProviderError::Malformed {
                        provider: PROVIDER,
                        message: "the series' points carry no number".into(),
                    });
                }
                Ok(Sample::value(value))
            }
            many => Err(ProviderError::Ambiguous {
                provider: PROVIDER,
                series: many.iter().map(|series| series_name(series)).collect(),
            }),
        }
    }
}

/// A Cloud Monitoring client for request counts.
#[derive(Debug)]
pub struct CloudMonitoring {
    client: LazyClient<MetricService>,
}

impl CloudMonitoring {
    /// A client for `endpoint` (without `/v3`). Google's endpoint uses Application Default
    /// Credentials; any other endpoint is called without credentials.
    pub fn new(endpoint: &str) -> Result<Self, MetricsError> {
        Ok(Self {
            client: LazyClient::new(Some(endpoint)),
        })
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
        let deadline = tokio::time::Instant::now() + super::READ_BUDGET;
        self.request_counts_until(service, revision, window, deadline)
            .await
    }

    /// Each page is retried through 503s and 429s until `deadline` ([`super::transient`]).
    async fn request_counts_until(
        &self,
        service: &ServiceId,
        revision: &str,
        window: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<RequestCounts, MetricsError> {
        let filter = format!(
            "metric.type = \"run.googleapis.com/request_count\" AND resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"{}\" AND resource.labels.revision_name = \"{revision}\"",
            service.name
        );
        let aggregation = Aggregation::new()
            .set_alignment_period(whole_window(window))
            .set_per_series_aligner(Aligner::AlignDelta)
            .set_cross_series_reducer(Reducer::ReduceSum)
            .set_group_by_fields(["metric.labels.response_code_class"]);
        let series = list(
            &self.client,
            &service.project,
            &filter,
            window,
            aggregation,
            Some(deadline),
        )
        .await
        .map_err(|error| error.for_request_counts(self.client.label()))?;
        request_counts_of(&series).map_err(|message| MetricsError::Malformed {
            provider: self.client.label(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series as the REST API answers it (decoded by the client's own model).
    fn series(class: &str, values: &[PointValue]) -> TimeSeries {
        let points: Vec<serde_json::Value> = values
            .iter()
            .map(|value| {
                let value = match value {
                    PointValue::Int64Value(v) => serde_json::json!({"int64Value": v.to_string()}),
                    PointValue::DoubleValue(v) if v.is_finite() => {
                        serde_json::json!({"doubleValue": v})
                    }
                    PointValue::DoubleValue(v) if v.is_nan() => {
                        serde_json::json!({"doubleValue": "NaN"})
                    }
                    PointValue::DoubleValue(_) => serde_json::json!({"doubleValue": "Infinity"}),
                    PointValue::StringValue(v) => serde_json::json!({"stringValue": v}),
                    other => panic!("{other:?}"),
                };
                serde_json::json!({"value": value})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metric": {"type": "run.googleapis.com/request_count", "labels": {"response_code_class": class}},
            "points": points,
        }))
        .unwrap()
    }

    /// Two 5xx points of 2^63 wrapped to 0 errors and the failing canary was promoted.
    #[test]
    fn two_5xx_points_of_2_pow_63_are_malformed_not_zero_errors() {
        let huge = PointValue::Int64Value(i64::MAX);
        let answer = [
            series("2xx", &[PointValue::Int64Value(10)]),
            series(
                "5xx",
                &[huge.clone(), huge.clone(), PointValue::Int64Value(2)],
            ),
        ];
        let error = request_counts_of(&answer).unwrap_err();
        assert!(error.contains("overflow"), "{error}");
        let doubles = [series(
            "5xx",
            &[
                PointValue::DoubleValue(9.3e18),
                PointValue::DoubleValue(9.3e18),
            ],
        )];
        assert!(request_counts_of(&doubles).is_err());
    }

    #[test]
    fn negative_infinite_and_non_numeric_counts_are_malformed_not_clamped_to_zero() {
        for value in [
            PointValue::Int64Value(-5),
            PointValue::DoubleValue(-1.0),
            PointValue::DoubleValue(f64::NAN),
            PointValue::DoubleValue(f64::INFINITY),
            PointValue::DoubleValue(1e30),
            PointValue::StringValue("lots".into()),
        ] {
            let answer = [series("5xx", std::slice::from_ref(&value))];
            assert!(request_counts_of(&answer).is_err(), "{value:?}");
        }
    }

    /// A 5xx series whose points were bools (or distributions, or no value at all) was
    /// skipped: counted as no errors, it could promote a failing canary.
    #[test]
    fn request_count_points_without_a_whole_number_are_malformed_not_skipped() {
        let bool_point: TimeSeries = serde_json::from_value(serde_json::json!({
            "metric": {"labels": {"response_code_class": "5xx"}},
            "points": [{"value": {"boolValue": true}}],
        }))
        .unwrap();
        let empty_point: TimeSeries = serde_json::from_value(serde_json::json!({
            "metric": {"labels": {"response_code_class": "5xx"}},
            "points": [{"value": {}}],
        }))
        .unwrap();
        for odd in [bool_point, empty_point] {
            let answer = [series("2xx", &[PointValue::Int64Value(10)]), odd];
            let error = request_counts_of(&answer).unwrap_err();
            assert!(error.contains("is impossible"), "{error}");
        }
    }

    #[test]
    fn plausible_counts_add_up_per_class() {
        let answer = [
            series(
                "2xx",
                &[PointValue::Int64Value(90), PointValue::DoubleValue(5.0)],
            ),
            series(
                "5xx",
                &[
                    PointValue::Int64Value(3),
                    PointValue::StringValue("2".into()),
                ],
            ),
            series("4xx", &[PointValue::Int64Value(1)]),
        ];
        assert_eq!(
            request_counts_of(&answer).unwrap(),
            RequestCounts {
                total: 101,
                errors: 5,
                sample_ppm: None,
            }
        );
    }
}
