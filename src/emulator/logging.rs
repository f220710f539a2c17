//! Request and container logs, served in the Cloud Logging v2 `entries.list` shape
//! (`POST /v2/entries:list`).
//!
//! Routers add one request entry per proxied request (`httpRequest`, severity from the status);
//! the runtime adds one entry per line a container writes (stdout INFO, stderr ERROR), with the
//! resource `cloud_run_revision` and the labels Cloud Run uses. The newest
//! [`KEPT_ENTRIES`] entries are kept in memory.
//!
//! Filters: clauses `FIELD OP VALUE` joined by `AND`, where FIELD is a dotted path in the entry
//! (`resource.labels.service_name`, `severity`, `timestamp`, `httpRequest.status`, `logName`,
//! `textPayload`), and OP one of `=`, `!=`, `>`, `>=`, `<`, `<=`, `:` (contains). Severities
//! compare by level, timestamps as times, numbers as numbers. A clause may also be Cloud
//! Logging's `sample(FIELD, FRACTION)`: it keeps a deterministic fraction of the entries, chosen
//! by a hash of the field's value (the same entry is always in or out for the same fraction, and
//! a smaller fraction keeps a subset of a larger one), as Cloud Logging documents it for
//! `sample(insertId, 0.25)`; entries without the field are not kept. [`sampled`] is the rule.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use axum::response::IntoResponse;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{api_error::ApiError, monitoring::split_and};

/// How many entries are kept.
pub const KEPT_ENTRIES: usize = 100_000;

/// Where an entry comes from.
#[derive(Debug, Clone)]
pub struct LogSource {
    /// Project id.
    pub project: String,
    /// Region.
    pub location: String,
    /// Service id.
    pub service: String,
    /// Revision short name.
    pub revision: String,
}

impl LogSource {
    fn resource(&self) -> Value {
        json!({
            "type": "cloud_run_revision",
            "labels": {
                "project_id": self.project,
                "location": self.location,
                "service_name": self.service,
                "revision_name": self.revision,
                "configuration_name": self.service,
            }
        })
    }
}

/// One proxied request, for its log entry.
#[derive(Debug, Clone)]
pub struct RequestLog {
    /// HTTP method.
    pub method: String,
    /// Full URL as the client used it.
    pub url: String,
    /// Response status.
    pub status: u16,
    /// Latency in seconds.
    pub latency_seconds: f64,
    /// `User-Agent`, if any.
    pub user_agent: Option<String>,
    /// Client address.
    pub remote_ip: String,
}

/// The log entries of one emulator.
#[derive(Debug, Default)]
pub struct Logging {
    entries: Mutex<VecDeque<Value>>,
    next_id: Mutex<u64>,
    lists: AtomicU64,
}

/// Logging alone (`POST /v2/entries:list`), without the rest of the emulator or Docker: for
/// tests and benchmarks that feed entries themselves ([`Logging::request`]).
pub fn router(logging: Arc<Logging>) -> axum::Router {
    axum::Router::new().route(
        "/v2/entries:list",
        axum::routing::post(
            |axum::extract::State(logging): axum::extract::State<Arc<Logging>>,
             body: axum::body::Bytes| async move {
                match logging.list(&body) {
                    Ok(value) => axum::Json(value).into_response(),
                    Err(error) => error.into_response(),
                }
            },
        )
        .with_state(logging),
    )
}

/// The body of `entries:list`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRequest {
    #[serde(default)]
    resource_names: Vec<String>,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    order_by: String,
    #[serde(default)]
    page_size: usize,
    #[serde(default)]
    page_token: String,
}

fn severity_level(name: &str) -> Option<u32> {
    Some(match name.to_ascii_uppercase().as_str() {
        "DEFAULT" => 0,
        "DEBUG" => 100,
        "INFO" => 200,
        "NOTICE" => 300,
        "WARNING" => 400,
        "ERROR" => 500,
        "CRITICAL" => 600,
        "ALERT" => 700,
        "EMERGENCY" => 800,
        _ => return None,
    })
}

fn now_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

impl Logging {
    fn push(&self, mut entry: Value) {
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        entry["insertId"] = Value::String(format!("{id:016x}"));
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.push_back(entry);
        while entries.len() > KEPT_ENTRIES {
            entries.pop_front();
        }
    }

    /// Adds the entry of one proxied request, received now.
    pub fn request(&self, source: &LogSource, request: &RequestLog, at: DateTime<Utc>) {
        self.request_received(source, request, at, Utc::now());
    }

    /// Adds the entry of one proxied request that Logging received at `received` (tests and
    /// benchmarks that simulate time).
    pub fn request_received(
        &self,
        source: &LogSource,
        request: &RequestLog,
        at: DateTime<Utc>,
        received: DateTime<Utc>,
    ) {
        let severity = match request.status {
            500.. => "ERROR",
            400.. => "WARNING",
            _ => "INFO",
        };
        let mut http_request = json!({
            "requestMethod": request.method,
            "requestUrl": request.url,
            "status": request.status,
            "latency": format!("{:.6}s", request.latency_seconds),
            "remoteIp": request.remote_ip,
            "protocol": "HTTP/1.1",
        });
        if let Some(agent) = &request.user_agent {
            http_request["userAgent"] = Value::String(agent.clone());
        }
        self.push(json!({
            "logName": format!("projects/{}/logs/run.googleapis.com%2Frequests", source.project),
            "resource": source.resource(),
            "timestamp": now_text(at),
            "receiveTimestamp": now_text(received),
            "severity": severity,
            "httpRequest": http_request,
        }));
    }

    /// Adds one line a container wrote.
    pub fn container_line(&self, source: &LogSource, stderr: bool, line: &str, at: DateTime<Utc>) {
        let stream = if stderr { "stderr" } else { "stdout" };
        self.push(json!({
            "logName": format!("projects/{}/logs/run.googleapis.com%2F{stream}", source.project),
            "resource": source.resource(),
            "timestamp": now_text(at),
            "receiveTimestamp": now_text(Utc::now()),
            "severity": if stderr { "ERROR" } else { "INFO" },
            "textPayload": line,
            "labels": {"instanceId": format!("emulator-{}", source.revision)},
        }));
    }

    /// How many `entries.list` requests were answered.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    /// Answers `POST /v2/entries:list`.
    pub fn list(&self, body: &[u8]) -> Result<Value, ApiError> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        let request: ListRequest = if body.iter().all(u8::is_ascii_whitespace) {
            ListRequest::default()
        } else {
            serde_json::from_slice(body).map_err(|error| {
                ApiError::invalid(format!("invalid entries.list request: {error}"))
            })?
        };
        let clauses = parse_filter(&request.filter)?;
        let projects: Vec<String> = request
            .resource_names
            .iter()
            .filter_map(|name| name.strip_prefix("projects/").map(str::to_string))
            .collect();
        let descending = match request.order_by.trim() {
            "" | "timestamp asc" | "timestamp" => false,
            "timestamp desc" => true,
            other => {
                return Err(ApiError::invalid(format!(
                    "orderBy `{other}` is not supported: use `timestamp asc` or `timestamp desc`"
                )))
            }
        };
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let matching = entries.iter().filter(|entry| {
            let project_matches = projects.is_empty()
                || entry["resource"]["labels"]["project_id"]
                    .as_str()
                    .is_some_and(|project| projects.iter().any(|wanted| wanted == project));
            project_matches && clauses.iter().all(|clause| clause.matches(entry))
        });
        let ordered: Vec<&Value> = if descending {
            matching.rev().collect()
        } else {
            matching.collect()
        };
        let offset: usize = if request.page_token.is_empty() {
            0
        } else {
            request
                .page_token
                .parse()
                .map_err(|_| ApiError::invalid("pageToken is not valid"))?
        };
        let page_size = match request.page_size {
            0 => 50,
            size => size.min(1000),
        };
        let page: Vec<Value> = ordered
            .iter()
            .skip(offset)
            .take(page_size)
            .map(|entry| (*entry).clone())
            .collect();
        let mut body = json!({ "entries": page });
        if offset + page_size < ordered.len() {
            body["nextPageToken"] = Value::String((offset + page_size).to_string());
        }
        Ok(body)
    }
}

#[derive(Debug)]
enum Clause {
    Compare(Comparison),
    /// `sample(FIELD, FRACTION)`.
    Sample {
        path: Vec<String>,
        fraction: f64,
    },
}

#[derive(Debug)]
struct Comparison {
    path: Vec<String>,
    operator: &'static str,
    value: String,
}

/// Whether `sample(FIELD, fraction)` keeps an entry whose FIELD is `value`: a 64-bit hash of the
/// value (FNV-1a, then the splitmix64 finaliser to spread sequential ids), as a number in
/// [0, 1), is below `fraction`. Deterministic, and monotone in `fraction`.
pub fn sampled(value: &str, fraction: f64) -> bool {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    ((hash >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

fn parse_sample(clause: &str) -> Option<Result<Clause, ApiError>> {
    let inner = clause
        .strip_prefix("sample")?
        .trim_start()
        .strip_prefix('(')?
        .trim_end()
        .strip_suffix(')')?;
    let invalid = |why: &str| {
        Some(Err(ApiError::invalid(format!(
            "filter clause `{clause}`: {why}"
        ))))
    };
    let Some((field, fraction)) = inner.split_once(',') else {
        return invalid("sample takes a field and a fraction: sample(insertId, 0.25)");
    };
    let field = field.trim();
    if field.is_empty() || field.contains(char::is_whitespace) {
        return invalid("sample's first argument is a field");
    }
    match fraction.trim().parse::<f64>() {
        Ok(fraction) if (0.0..=1.0).contains(&fraction) => Some(Ok(Clause::Sample {
            path: field.split('.').map(str::to_string).collect(),
            fraction,
        })),
        _ => invalid("sample's fraction is a number from 0.0 to 1.0"),
    }
}

fn parse_filter(filter: &str) -> Result<Vec<Clause>, ApiError> {
    const OPERATORS: [&str; 7] = [">=", "<=", "!=", "=", ">", "<", ":"];
    split_and(filter)
        .into_iter()
        .map(|clause| {
            if let Some(sample) = parse_sample(&clause) {
                return sample;
            }
            let found = OPERATORS
                .iter()
                .filter_map(|operator| clause.find(operator).map(|index| (index, *operator)))
                .min_by_key(|(index, operator)| (*index, std::cmp::Reverse(operator.len())));
            let Some((index, operator)) = found else {
                return Err(ApiError::invalid(format!(
                    "filter clause `{clause}` is not supported: use FIELD OP VALUE joined by AND"
                )));
            };
            let field = clause[..index].trim();
            let value = clause[index + operator.len()..].trim().trim_matches('"');
            if field.is_empty() || field.contains(char::is_whitespace) {
                return Err(ApiError::invalid(format!(
                    "filter clause `{clause}` has no field"
                )));
            }
            Ok(Clause::Compare(Comparison {
                path: field.split('.').map(str::to_string).collect(),
                operator,
                value: value.to_string(),
            }))
        })
        .collect()
}

fn field<'a>(entry: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(entry, |current, segment| current.get(segment))
}

impl Clause {
    fn matches(&self, entry: &Value) -> bool {
        match self {
            Clause::Compare(comparison) => comparison.matches(entry),
            Clause::Sample { path, fraction } => match field(entry, path) {
                Some(Value::String(text)) => sampled(text, *fraction),
                Some(Value::Null) | None => false,
                Some(other) => sampled(&other.to_string(), *fraction),
            },
        }
    }
}

impl Comparison {
    fn matches(&self, entry: &Value) -> bool {
        let mut current = entry;
        for segment in &self.path {
            match current.get(segment) {
                Some(next) => current = next,
                None => return self.operator == "!=",
            }
        }
        let actual = match current {
            Value::String(text) => text.clone(),
            Value::Null => return self.operator == "!=",
            other => other.to_string(),
        };
        if self.operator == ":" {
            return actual.contains(&self.value);
        }
        let ordering = if self.path.len() == 1 && self.path[0] == "severity" {
            match (severity_level(&actual), severity_level(&self.value)) {
                (Some(left), Some(right)) => left.cmp(&right),
                _ => return false,
            }
        } else if let (Ok(left), Ok(right)) = (
            DateTime::parse_from_rfc3339(&actual),
            DateTime::parse_from_rfc3339(&self.value),
        ) {
            left.cmp(&right)
        } else if let (Ok(left), Ok(right)) = (actual.parse::<f64>(), self.value.parse::<f64>()) {
            left.total_cmp(&right)
        } else {
            actual.cmp(&self.value)
        };
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self.operator {
            "=" => ordering == Equal,
            "!=" => ordering != Equal,
            ">" => ordering == Greater,
            ">=" => ordering != Less,
            "<" => ordering == Less,
            "<=" => ordering != Greater,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(revision: &str) -> LogSource {
        LogSource {
            project: "p".into(),
            location: "l".into(),
            service: "s".into(),
            revision: revision.into(),
        }
    }

    fn request(status: u16) -> RequestLog {
        RequestLog {
            method: "GET".into(),
            url: "http://127.0.0.1/".into(),
            status,
            latency_seconds: 0.01,
            user_agent: None,
            remote_ip: "127.0.0.1".into(),
        }
    }

    #[test]
    fn filters_by_labels_severity_and_time() {
        let logging = Logging::default();
        let at = Utc::now();
        logging.request(&source("a"), &request(200), at);
        logging.request(&source("a"), &request(500), at);
        logging.request(&source("b"), &request(503), at);
        logging.container_line(&source("b"), true, "panic: boom", at);
        let list = |filter: &str| {
            let body = json!({"resourceNames": ["projects/p"], "filter": filter}).to_string();
            logging.list(body.as_bytes()).unwrap()["entries"]
                .as_array()
                .unwrap()
                .len()
        };
        assert_eq!(list(""), 4);
        assert_eq!(list("resource.labels.revision_name=\"a\""), 2);
        assert_eq!(list("severity>=ERROR"), 3);
        assert_eq!(
            list("severity>=ERROR AND resource.labels.revision_name=\"a\""),
            1
        );
        assert_eq!(list("httpRequest.status>=500"), 2);
        assert_eq!(list("textPayload:\"boom\""), 1);
        let later = (at + chrono::Duration::seconds(5)).to_rfc3339();
        assert_eq!(list(&format!("timestamp>=\"{later}\"")), 0);
        assert!(logging.list(b"{not json").is_err());
        assert!(logging.list(br#"{"filter": "no operator here"}"#).is_err());
    }

    #[test]
    fn sample_keeps_a_deterministic_nested_fraction_by_insert_id() {
        let logging = Logging::default();
        let at = Utc::now();
        for _ in 0..20_000 {
            logging.request(&source("a"), &request(200), at);
        }
        let ids = |filter: &str| -> Vec<String> {
            let mut ids = Vec::new();
            let mut token = String::new();
            loop {
                let body =
                    json!({"filter": filter, "pageSize": 1000, "pageToken": token}).to_string();
                let page = logging.list(body.as_bytes()).unwrap();
                for entry in page["entries"].as_array().unwrap() {
                    ids.push(entry["insertId"].as_str().unwrap().to_string());
                }
                match page["nextPageToken"].as_str() {
                    Some(next) => token = next.to_string(),
                    None => return ids,
                }
            }
        };
        let quarter = ids("resource.labels.revision_name=\"a\" AND sample(insertId, 0.25)");
        let tenth = ids("sample(insertId, 0.1) AND resource.labels.revision_name=\"a\"");
        // 20,000 × 0.25 = 5,000 ± 61 (one standard deviation); 20,000 × 0.1 = 2,000 ± 42.
        assert!(
            (4_750..=5_250).contains(&quarter.len()),
            "{}",
            quarter.len()
        );
        assert!((1_800..=2_200).contains(&tenth.len()), "{}", tenth.len());
        assert_eq!(quarter, ids("sample(insertId, 0.25)"), "deterministic");
        assert!(tenth.iter().all(|id| quarter.contains(id)), "nested");
        assert_eq!(ids("sample(insertId, 0)").len(), 0);
        assert_eq!(ids("sample(insertId, 1.0)").len(), 20_000);
        assert_eq!(ids("sample(noSuchField, 1.0)").len(), 0);
        for bad in [
            "sample(insertId)",
            "sample(insertId, 1.5)",
            "sample(, 0.5)",
            "sample(insertId, x)",
        ] {
            let body = json!({"filter": bad}).to_string();
            assert!(logging.list(body.as_bytes()).is_err(), "{bad}");
        }
    }
}
