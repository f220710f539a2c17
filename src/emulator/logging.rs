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
//! compare by level, timestamps as times, numbers as numbers.

use std::{collections::VecDeque, sync::Mutex};

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

    /// Adds the entry of one proxied request.
    pub fn request(&self, source: &LogSource, request: &RequestLog, at: DateTime<Utc>) {
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
            "receiveTimestamp": now_text(Utc::now()),
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

    /// Answers `POST /v2/entries:list`.
    pub fn list(&self, body: &[u8]) -> Result<Value, ApiError> {
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
struct Clause {
    path: Vec<String>,
    operator: &'static str,
    value: String,
}

fn parse_filter(filter: &str) -> Result<Vec<Clause>, ApiError> {
    const OPERATORS: [&str; 7] = [">=", "<=", "!=", "=", ">", "<", ":"];
    split_and(filter)
        .into_iter()
        .map(|clause| {
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
            Ok(Clause {
                path: field.split('.').map(str::to_string).collect(),
                operator,
                value: value.to_string(),
            })
        })
        .collect()
}

impl Clause {
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
}
