//! Links a person can open to look at a check's data themselves, and URL redaction: a URL
//! shown in a report never carries credentials.

use super::{promql_duration, ProviderEndpoints, Query};

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(crate) fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `url` without user information and with the values of secret-looking query parameters
/// (`token`, `key`, `secret`, `password`, `signature`) replaced by `REDACTED`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let lower = name.to_ascii_lowercase();
                let secret = ["token", "key", "secret", "password", "signature", "auth"]
                    .iter()
                    .any(|word| lower.contains(word));
                let value = if secret {
                    "REDACTED".to_string()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// The page showing `query`'s data: the BigQuery console, Logs Explorer with the filter,
/// Metrics Explorer, the Prometheus graph, or the URL of an `http` check.
pub fn for_query(query: &Query, endpoints: &ProviderEndpoints) -> Option<String> {
    Some(match query {
        Query::Bigquery { project, .. } => format!(
            "https://console.cloud.google.com/bigquery?project={}",
            encode(project)
        ),
        Query::Http { url, .. } => redact_url(url),
        Query::CloudLogging {
            project,
            filter,
            window,
        } => format!(
            "https://console.cloud.google.com/logs/query;query={};duration=PT{}S?project={}",
            encode(filter),
            window.as_secs().max(1),
            encode(project)
        ),
        Query::CloudMonitoring { project, .. } => format!(
            "https://console.cloud.google.com/monitoring/metrics-explorer?project={}",
            encode(project)
        ),
        Query::Prometheus { url, promql } => {
            let base = url.as_ref().or(endpoints.prometheus.as_ref())?;
            let range = promql_duration(std::time::Duration::from_secs(3600));
            format!(
                "{}/graph?g0.expr={}&g0.tab=0&g0.range_input={range}",
                redact_url(base).trim_end_matches('/'),
                encode(promql)
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_in_urls() {
        assert_eq!(
            redact_url("https://user:hunter2@example.com/stats?token=abc&day=1"),
            "https://example.com/stats?token=REDACTED&day=1"
        );
        assert_eq!(redact_url("/relative"), "/relative");
    }

    #[test]
    fn logs_explorer_link_carries_the_filter() {
        let link = for_query(
            &Query::CloudLogging {
                project: "p".into(),
                filter: "severity>=ERROR".into(),
                window: std::time::Duration::from_secs(600),
            },
            &ProviderEndpoints::default(),
        )
        .unwrap();
        assert_eq!(
            link,
            "https://console.cloud.google.com/logs/query;query=severity%3E%3DERROR;duration=PT600S?project=p"
        );
    }
}
