//! Per-revision request metrics: recorded by the routers, served in the Cloud Monitoring v3
//! `projects.timeSeries.list` shape (`run.googleapis.com/request_count` and
//! `run.googleapis.com/request_latencies`) and as Prometheus text at `/metrics`.
//!
//! Requests are counted in one-second buckets per series (service, revision, response code);
//! a query sums the buckets of each alignment window. Buckets older than [`RETENTION`] are
//! dropped, so memory stays bounded on a long-running emulator. Latencies keep an exponential
//! histogram (Cloud Run's bucket layout) so distributions and percentiles can be answered.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write,
    sync::Mutex,
    time::Duration,
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::api_error::ApiError;

/// How long request buckets are kept.
pub const RETENTION: Duration = Duration::from_secs(6 * 3600);

/// `run.googleapis.com/request_count`.
pub const REQUEST_COUNT: &str = "run.googleapis.com/request_count";
/// `run.googleapis.com/request_latencies`.
pub const REQUEST_LATENCIES: &str = "run.googleapis.com/request_latencies";

/// Exponential histogram layout of latencies in milliseconds: bucket `i` (1 ≤ i ≤ N) holds
/// values in `[SCALE·G^(i-1), SCALE·G^i)`; bucket 0 underflow, N+1 overflow.
const FINITE_BUCKETS: usize = 64;
const GROWTH: f64 = 1.4;
const SCALE: f64 = 1.0;

/// The series a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// Project id.
    pub project: String,
    /// Region.
    pub location: String,
    /// Service id.
    pub service: String,
    /// Revision short name.
    pub revision: String,
    /// HTTP status code of the response.
    pub response_code: u16,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    count: u64,
    latency_sum_ms: f64,
    /// Sparse histogram: only as long as the highest bucket used.
    histogram: Vec<u64>,
}

impl Bucket {
    fn add(&mut self, other: &Bucket) {
        self.count += other.count;
        self.latency_sum_ms += other.latency_sum_ms;
        if self.histogram.len() < other.histogram.len() {
            self.histogram.resize(other.histogram.len(), 0);
        }
        for (index, count) in other.histogram.iter().enumerate() {
            self.histogram[index] += count;
        }
    }

    fn percentile(&self, fraction: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = (fraction * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_upper_bound(index);
            }
        }
        bucket_upper_bound(self.histogram.len().saturating_sub(1))
    }
}

fn bucket_index(latency_ms: f64) -> usize {
    if latency_ms < SCALE {
        return 0;
    }
    let index = ((latency_ms / SCALE).ln() / GROWTH.ln()).floor() as usize + 1;
    index.min(FINITE_BUCKETS + 1)
}

fn bucket_upper_bound(index: usize) -> f64 {
    SCALE * GROWTH.powi(index.min(FINITE_BUCKETS) as i32)
}

/// The class of a status code: `2xx`, `4xx`, ...
pub fn code_class(status: u16) -> String {
    format!("{}xx", status / 100)
}

/// All request metrics of one emulator.
#[derive(Debug, Default)]
pub struct Monitoring {
    series: Mutex<HashMap<SeriesKey, BTreeMap<i64, Bucket>>>,
}

/// One output series: metric JSON, resource JSON, summed buckets.
type GroupedSeries = (Value, Value, BTreeMap<i64, Bucket>);

/// A parsed `timeSeries.list` request.
#[derive(Debug, Default)]
struct Query {
    metric_type: String,
    equals: Vec<(String, String, bool)>,
    start: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    alignment_period: Option<i64>,
    aligner: String,
    reducer: String,
    group_by: Vec<String>,
    page_size: usize,
    page_token: usize,
}

impl Monitoring {
    /// Records one proxied request.
    pub fn record(&self, key: SeriesKey, at: DateTime<Utc>, latency: Duration) {
        let latency_ms = latency.as_secs_f64() * 1000.0;
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = series.entry(key).or_default();
        let bucket = buckets.entry(at.timestamp()).or_default();
        bucket.count += 1;
        bucket.latency_sum_ms += latency_ms;
        let index = bucket_index(latency_ms);
        if bucket.histogram.len() <= index {
            bucket.histogram.resize(index + 1, 0);
        }
        bucket.histogram[index] += 1;
        let oldest = at.timestamp() - RETENTION.as_secs() as i64;
        while let Some((&second, _)) = buckets.first_key_value() {
            if second >= oldest {
                break;
            }
            buckets.remove(&second);
        }
    }

    /// Answers `GET /v3/projects/{project}/timeSeries` with the query parameters given.
    pub fn list_time_series(
        &self,
        project: &str,
        parameters: &[(String, String)],
    ) -> Result<Value, ApiError> {
        let query = parse_query(parameters)?;
        let is_latency = match query.metric_type.as_str() {
            REQUEST_COUNT => false,
            REQUEST_LATENCIES => true,
            other => {
                return Err(ApiError::invalid(format!(
                    "metric.type `{other}` is not served by the emulator: use `{REQUEST_COUNT}` \
                     or `{REQUEST_LATENCIES}`"
                )))
            }
        };
        let end = query.end.timestamp();
        let period = query.alignment_period.unwrap_or(60);
        let start = query
            .start
            .map(|start| start.timestamp())
            .unwrap_or(end - period);
        if start > end {
            return Err(ApiError::invalid(
                "interval.startTime is after interval.endTime",
            ));
        }

        // Gather matching series, already grouped by the labels that survive reduction.
        let mut grouped: BTreeMap<Vec<(String, String)>, GroupedSeries> = BTreeMap::new();
        {
            let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
            for (key, buckets) in series.iter() {
                if key.project != project {
                    continue;
                }
                let mut metric_labels = BTreeMap::from([
                    (
                        "response_code_class".to_string(),
                        code_class(key.response_code),
                    ),
                    ("route_type".to_string(), "default".to_string()),
                ]);
                if !is_latency {
                    metric_labels
                        .insert("response_code".to_string(), key.response_code.to_string());
                }
                let resource_labels = BTreeMap::from([
                    ("project_id".to_string(), key.project.clone()),
                    ("location".to_string(), key.location.clone()),
                    ("service_name".to_string(), key.service.clone()),
                    ("revision_name".to_string(), key.revision.clone()),
                    ("configuration_name".to_string(), key.service.clone()),
                ]);
                let field = |name: &str| -> Option<String> {
                    name.strip_prefix("resource.labels.")
                        .or_else(|| name.strip_prefix("resource.label."))
                        .and_then(|label| resource_labels.get(label).cloned())
                        .or_else(|| {
                            name.strip_prefix("metric.labels.")
                                .or_else(|| name.strip_prefix("metric.label."))
                                .and_then(|label| metric_labels.get(label).cloned())
                        })
                        .or_else(|| {
                            (name == "resource.type").then(|| "cloud_run_revision".to_string())
                        })
                };
                let matches = query
                    .equals
                    .iter()
                    .all(|(name, value, equal)| (field(name).as_deref() == Some(value)) == *equal);
                if !matches {
                    continue;
                }
                let reduce = query.reducer != "REDUCE_NONE" && !query.reducer.is_empty();
                let (group, metric_value, resource_value) = if reduce {
                    let kept: Vec<(String, String)> = query
                        .group_by
                        .iter()
                        .filter_map(|name| field(name).map(|value| (name.clone(), value)))
                        .collect();
                    let pick = |prefixes: [&str; 2]| -> serde_json::Map<String, Value> {
                        kept.iter()
                            .filter_map(|(name, value)| {
                                prefixes
                                    .iter()
                                    .find_map(|prefix| name.strip_prefix(prefix))
                                    .map(|label| (label.to_string(), Value::String(value.clone())))
                            })
                            .collect()
                    };
                    (
                        kept.clone(),
                        json!({"type": query.metric_type, "labels": pick(["metric.labels.", "metric.label."])}),
                        json!({"type": "cloud_run_revision", "labels": pick(["resource.labels.", "resource.label."])}),
                    )
                } else {
                    let mut identity: Vec<(String, String)> = resource_labels
                        .iter()
                        .chain(metric_labels.iter())
                        .map(|(name, value)| (name.clone(), value.clone()))
                        .collect();
                    identity.sort();
                    (
                        identity,
                        json!({"type": query.metric_type, "labels": metric_labels}),
                        json!({"type": "cloud_run_revision", "labels": resource_labels}),
                    )
                };
                let entry = grouped
                    .entry(group)
                    .or_insert_with(|| (metric_value, resource_value, BTreeMap::new()));
                for (second, bucket) in buckets.range(start..end) {
                    entry.2.entry(*second).or_default().add(bucket);
                }
            }
        }

        let mut all_series = Vec::new();
        for (_, (metric, resource, buckets)) in grouped {
            let points = points(&buckets, start, end, period, is_latency, &query.aligner);
            if points.is_empty() {
                continue;
            }
            let (kind, value_type) = match (is_latency, query.aligner.as_str()) {
                (_, "ALIGN_RATE") => ("GAUGE", "DOUBLE"),
                (true, aligner)
                    if aligner.starts_with("ALIGN_PERCENTILE") || aligner == "ALIGN_MEAN" =>
                {
                    ("GAUGE", "DOUBLE")
                }
                (true, _) => ("DELTA", "DISTRIBUTION"),
                (false, _) => ("DELTA", "INT64"),
            };
            all_series.push(json!({
                "metric": metric,
                "resource": resource,
                "metricKind": kind,
                "valueType": value_type,
                "points": points,
                "unit": if is_latency { "ms" } else { "1" },
            }));
        }
        let page_size = if query.page_size == 0 {
            100_000
        } else {
            query.page_size
        };
        let page: Vec<Value> = all_series
            .iter()
            .skip(query.page_token)
            .take(page_size)
            .cloned()
            .collect();
        let next = query.page_token + page.len();
        let mut body = json!({ "timeSeries": page, "unit": if is_latency { "ms" } else { "1" } });
        if next < all_series.len() {
            body["nextPageToken"] = Value::String(next.to_string());
        }
        Ok(body)
    }

    /// Prometheus text exposition of all series.
    pub fn prometheus(&self) -> String {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut totals: BTreeMap<(String, String, String, String), Bucket> = BTreeMap::new();
        for (key, buckets) in series.iter() {
            let total = totals
                .entry((
                    key.project.clone(),
                    key.service.clone(),
                    key.revision.clone(),
                    code_class(key.response_code),
                ))
                .or_default();
            for bucket in buckets.values() {
                total.add(bucket);
            }
        }
        let mut text = String::new();
        text.push_str(
            "# HELP emulator_request_count Requests served by the emulator's routers, by revision and response class (counts kept for 6 hours).\n# TYPE emulator_request_count counter\n",
        );
        for ((project, service, revision, class), bucket) in &totals {
            let _ = writeln!(
                text,
                "emulator_request_count{{project_id=\"{project}\",service_name=\"{service}\",revision_name=\"{revision}\",response_code_class=\"{class}\"}} {}",
                bucket.count
            );
        }
        text.push_str(
            "# HELP emulator_request_latencies_milliseconds Latency of requests through the emulator's routers.\n# TYPE emulator_request_latencies_milliseconds histogram\n",
        );
        for ((project, service, revision, class), bucket) in &totals {
            let labels = format!(
                "project_id=\"{project}\",service_name=\"{service}\",revision_name=\"{revision}\",response_code_class=\"{class}\""
            );
            let mut cumulative = 0;
            for (index, count) in bucket.histogram.iter().enumerate().take(FINITE_BUCKETS + 1) {
                cumulative += count;
                let _ = writeln!(
                    text,
                    "emulator_request_latencies_milliseconds_bucket{{{labels},le=\"{}\"}} {cumulative}",
                    bucket_upper_bound(index)
                );
            }
            let _ = writeln!(
                text,
                "emulator_request_latencies_milliseconds_bucket{{{labels},le=\"+Inf\"}} {}",
                bucket.count
            );
            let _ = writeln!(
                text,
                "emulator_request_latencies_milliseconds_sum{{{labels}}} {}",
                bucket.latency_sum_ms
            );
            let _ = writeln!(
                text,
                "emulator_request_latencies_milliseconds_count{{{labels}}} {}",
                bucket.count
            );
        }
        text
    }
}

fn timestamp(seconds: i64) -> String {
    DateTime::<Utc>::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One point per alignment window that saw requests, newest first (as Cloud Monitoring
/// returns them). Windows end at `end` and go back by `period`.
fn points(
    buckets: &BTreeMap<i64, Bucket>,
    start: i64,
    end: i64,
    period: i64,
    is_latency: bool,
    aligner: &str,
) -> Vec<Value> {
    let mut points = Vec::new();
    let mut window_end = end;
    while window_end > start {
        let window_start = (window_end - period).max(start);
        let mut total = Bucket::default();
        for (_, bucket) in buckets.range(window_start..window_end) {
            total.add(bucket);
        }
        if total.count > 0 {
            let value = match (is_latency, aligner) {
                (_, "ALIGN_RATE") => {
                    json!({"doubleValue": total.count as f64 / (window_end - window_start) as f64})
                }
                (true, "ALIGN_PERCENTILE_99") => json!({"doubleValue": total.percentile(0.99)}),
                (true, "ALIGN_PERCENTILE_95") => json!({"doubleValue": total.percentile(0.95)}),
                (true, "ALIGN_PERCENTILE_50") => json!({"doubleValue": total.percentile(0.50)}),
                (true, "ALIGN_MEAN") => {
                    json!({"doubleValue": total.latency_sum_ms / total.count as f64})
                }
                (true, _) => {
                    let mut counts = total.histogram.clone();
                    counts.resize(FINITE_BUCKETS + 2, 0);
                    json!({"distributionValue": {
                        "count": total.count.to_string(),
                        "mean": total.latency_sum_ms / total.count as f64,
                        "bucketOptions": {"exponentialBuckets": {
                            "numFiniteBuckets": FINITE_BUCKETS, "growthFactor": GROWTH, "scale": SCALE}},
                        "bucketCounts": counts.iter().map(u64::to_string).collect::<Vec<_>>(),
                    }})
                }
                (false, _) => json!({"int64Value": total.count.to_string()}),
            };
            points.push(json!({
                "interval": {"startTime": timestamp(window_start), "endTime": timestamp(window_end)},
                "value": value,
            }));
        }
        window_end = window_start;
    }
    points
}

fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| {
            ApiError::invalid(format!("{name} `{text}` is not an RFC 3339 time: {error}"))
        })
}

fn parse_seconds(name: &str, text: &str) -> Result<i64, ApiError> {
    text.strip_suffix('s')
        .and_then(|seconds| seconds.parse::<f64>().ok())
        .filter(|seconds| *seconds >= 1.0)
        .map(|seconds| seconds as i64)
        .ok_or_else(|| ApiError::invalid(format!("{name} `{text}` is not a duration like `60s`")))
}

fn parse_query(parameters: &[(String, String)]) -> Result<Query, ApiError> {
    let mut query = Query {
        end: Utc::now(),
        ..Query::default()
    };
    let mut filter = None;
    for (name, value) in parameters {
        if value.is_empty() {
            continue;
        }
        match name.as_str() {
            "filter" => filter = Some(value.clone()),
            "interval.startTime" => query.start = Some(parse_time(name, value)?),
            "interval.endTime" => query.end = parse_time(name, value)?,
            "aggregation.alignmentPeriod" => {
                query.alignment_period = Some(parse_seconds(name, value)?)
            }
            "aggregation.perSeriesAligner" => query.aligner = aligner_name(value),
            "aggregation.crossSeriesReducer" => query.reducer = reducer_name(value),
            "aggregation.groupByFields" => query.group_by.push(value.clone()),
            "pageSize" => {
                query.page_size = value
                    .parse()
                    .map_err(|_| ApiError::invalid(format!("pageSize `{value}` is not a number")))?
            }
            "pageToken" => {
                query.page_token = value
                    .parse()
                    .map_err(|_| ApiError::invalid(format!("pageToken `{value}` is not valid")))?
            }
            _ => {}
        }
    }
    let filter = filter.ok_or_else(|| {
        ApiError::invalid(
            "filter is required, e.g. metric.type = \"run.googleapis.com/request_count\"",
        )
    })?;
    for clause in split_and(&filter) {
        let (name, value, equal) = if let Some((name, value)) = clause.split_once("!=") {
            (name, value, false)
        } else if let Some((name, value)) = clause.split_once('=') {
            (name, value, true)
        } else {
            return Err(ApiError::invalid(format!(
                "filter clause `{clause}` is not supported: use `field = \"value\"` joined by AND"
            )));
        };
        let name = name.trim().to_string();
        let value = value.trim().trim_matches('"').to_string();
        if name == "metric.type" {
            query.metric_type = value;
        } else if name == "resource.type"
            || name.starts_with("resource.label")
            || name.starts_with("metric.label")
        {
            query.equals.push((name, value, equal));
        } else {
            return Err(ApiError::invalid(format!(
                "filter field `{name}` is not supported by the emulator"
            )));
        }
    }
    if query.metric_type.is_empty() {
        return Err(ApiError::invalid("the filter must name a metric.type"));
    }
    Ok(query)
}

/// An aligner by name; Google's clients send enums as their numbers (`enum-encoding=int`).
fn aligner_name(value: &str) -> String {
    let name = match value {
        "0" => "ALIGN_NONE",
        "1" => "ALIGN_DELTA",
        "2" => "ALIGN_RATE",
        "3" => "ALIGN_INTERPOLATE",
        "4" => "ALIGN_NEXT_OLDER",
        "10" => "ALIGN_MIN",
        "11" => "ALIGN_MAX",
        "12" => "ALIGN_MEAN",
        "13" => "ALIGN_COUNT",
        "14" => "ALIGN_SUM",
        "15" => "ALIGN_STDDEV",
        "18" => "ALIGN_PERCENTILE_99",
        "19" => "ALIGN_PERCENTILE_95",
        "20" => "ALIGN_PERCENTILE_50",
        "21" => "ALIGN_PERCENTILE_05",
        other => other,
    };
    name.to_string()
}

/// A reducer by name (numbers as [`aligner_name`]).
fn reducer_name(value: &str) -> String {
    let name = match value {
        "0" => "REDUCE_NONE",
        "1" => "REDUCE_MEAN",
        "2" => "REDUCE_MIN",
        "3" => "REDUCE_MAX",
        "4" => "REDUCE_SUM",
        "6" => "REDUCE_COUNT",
        other => other,
    };
    name.to_string()
}

/// Splits a filter on `AND` outside quotes.
pub fn split_and(filter: &str) -> Vec<String> {
    let mut clauses = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let words: Vec<&str> = filter.split_inclusive(char::is_whitespace).collect();
    for word in words {
        let quotes = word.matches('"').count();
        if !in_quotes && word.trim() == "AND" {
            clauses.push(std::mem::take(&mut current));
            continue;
        }
        if quotes % 2 == 1 {
            in_quotes = !in_quotes;
        }
        current.push_str(word);
    }
    clauses.push(current);
    clauses
        .into_iter()
        .map(|clause| clause.trim().to_string())
        .filter(|clause| !clause.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(revision: &str, code: u16) -> SeriesKey {
        SeriesKey {
            project: "p".into(),
            location: "l".into(),
            service: "s".into(),
            revision: revision.into(),
            response_code: code,
        }
    }

    fn parameters(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn counts_by_class_and_revision_with_reduction() {
        let monitoring = Monitoring::default();
        let at = DateTime::parse_from_rfc3339("2025-01-01T00:00:30Z")
            .unwrap()
            .with_timezone(&Utc);
        for _ in 0..3 {
            monitoring.record(key("a", 200), at, Duration::from_millis(5));
        }
        monitoring.record(key("a", 503), at, Duration::from_millis(5));
        monitoring.record(key("b", 200), at, Duration::from_millis(5));
        let body = monitoring
            .list_time_series(
                "p",
                &parameters(&[
                    ("filter", "metric.type = \"run.googleapis.com/request_count\" AND resource.labels.revision_name = \"a\""),
                    ("interval.startTime", "2025-01-01T00:00:00Z"),
                    ("interval.endTime", "2025-01-01T00:01:00Z"),
                    ("aggregation.alignmentPeriod", "60s"),
                    ("aggregation.perSeriesAligner", "ALIGN_DELTA"),
                    ("aggregation.crossSeriesReducer", "REDUCE_SUM"),
                    ("aggregation.groupByFields", "metric.labels.response_code_class"),
                ]),
            )
            .unwrap();
        let series = body["timeSeries"].as_array().unwrap();
        assert_eq!(series.len(), 2, "{body}");
        let count = |class: &str| {
            series
                .iter()
                .find(|series| series["metric"]["labels"]["response_code_class"] == class)
                .map(|series| series["points"][0]["value"]["int64Value"].clone())
        };
        assert_eq!(count("2xx"), Some(json!("3")));
        assert_eq!(count("5xx"), Some(json!("1")));

        let outside = monitoring
            .list_time_series(
                "p",
                &parameters(&[
                    (
                        "filter",
                        "metric.type = \"run.googleapis.com/request_count\"",
                    ),
                    ("interval.startTime", "2025-01-01T00:01:00Z"),
                    ("interval.endTime", "2025-01-01T00:02:00Z"),
                ]),
            )
            .unwrap();
        assert_eq!(outside["timeSeries"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn bad_filters_are_invalid_arguments() {
        let monitoring = Monitoring::default();
        for filter in [
            "",
            "metric.type = \"x\"",
            "foo.bar = \"1\" AND metric.type = \"run.googleapis.com/request_count\"",
        ] {
            let result = monitoring.list_time_series("p", &parameters(&[("filter", filter)]));
            assert!(result.is_err(), "{filter}");
        }
    }

    #[test]
    fn latency_buckets_grow_exponentially() {
        assert_eq!(bucket_index(0.5), 0);
        assert_eq!(bucket_index(1.0), 1);
        assert!(bucket_upper_bound(bucket_index(100.0)) >= 100.0);
    }
}
