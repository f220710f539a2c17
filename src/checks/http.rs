//! The `http` provider: GET a URL, read a number at a dotted JSON field.
//!
//! A non-2xx answer is an error (a 503 from a stats endpoint is not a measurement); a field
//! that is `null` is no data; a field that is missing or not a number is a malformed answer.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{
    excerpt, link::redact_url, send_and_read, MetricProvider, ProviderError, Query, Sample,
};

const PROVIDER: &str = "http";

/// The `http` provider.
#[derive(Debug, Clone)]
pub struct Http {
    client: Option<reqwest::Client>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A provider with its own connection pool.
    pub fn new() -> Self {
        crate::install_crypto_provider();
        Self {
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .user_agent(concat!("deployer/", env!("CARGO_PKG_VERSION")))
                .build()
                .ok(),
        }
    }
}

/// The value at `path` (`a.b.0.c`: object keys, array indexes) in `document`.
pub fn field<'a>(document: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|segment| !segment.is_empty())
        .try_fold(document, |current, segment| match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// A JSON value that is not a measurement; `what` names where it was (`field `a.b``).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotANumber {
    /// A number JSON allows but `f64` does not hold.
    #[error("{what} is not a finite number")]
    NotFinite {
        /// Where it was.
        what: String,
    },
    /// Text that does not read as a number.
    #[error("{what} is the text `{excerpt}`, not a number")]
    Text {
        /// Where it was.
        what: String,
        /// The start of the text.
        excerpt: String,
    },
    /// An array or an object.
    #[error("{what} is not a number")]
    Structure {
        /// Where it was.
        what: String,
    },
}

/// A JSON value as a measurement: numbers, numeric strings, booleans (1/0); `null` is no data.
pub fn to_sample(value: &Value, what: &str) -> Result<Sample, NotANumber> {
    match value {
        Value::Null => Ok(Sample::NoData {
            reason: format!("{what} is null"),
        }),
        Value::Number(number) => {
            number
                .as_f64()
                .map(Sample::value)
                .ok_or_else(|| NotANumber::NotFinite {
                    what: what.to_string(),
                })
        }
        Value::String(text) => {
            text.trim()
                .parse::<f64>()
                .map(Sample::value)
                .map_err(|_| NotANumber::Text {
                    what: what.to_string(),
                    excerpt: excerpt(text, 40),
                })
        }
        Value::Bool(flag) => Ok(Sample::value(if *flag { 1.0 } else { 0.0 })),
        Value::Array(_) | Value::Object(_) => Err(NotANumber::Structure {
            what: what.to_string(),
        }),
    }
}

#[async_trait]
impl MetricProvider for Http {
    async fn sample(&self, query: &Query) -> Result<Sample, ProviderError> {
        let Query::Http { url, field: path } = query else {
            return Err(ProviderError::Rejected {
                provider: PROVIDER,
                message: "not an http query".into(),
            });
        };
        let client = self.client.as_ref().ok_or(ProviderError::Unavailable {
            provider: PROVIDER,
            message: "cannot create an HTTP client".into(),
        })?;
        let shown = redact_url(url);
        let (status, body) =
            send_and_read(client.get(url), PROVIDER, &format!("GET {shown}")).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let message = format!(
                "GET {shown} answered HTTP {status}: {}",
                excerpt(&text, 200)
            );
            return Err(ProviderError::of_http_status(PROVIDER, status, message));
        }
        let document: Value =
            serde_json::from_slice(&body).map_err(|error| ProviderError::Malformed {
                provider: PROVIDER,
                message: format!("GET {shown}: the answer is not JSON ({error})"),
            })?;
        let value = field(&document, path).ok_or_else(|| ProviderError::Malformed {
            provider: PROVIDER,
            message: format!("GET {shown}: the answer has no field `{path}`"),
        })?;
        to_sample(value, &format!("field `{path}`")).map_err(|error| ProviderError::Malformed {
            provider: PROVIDER,
            message: error.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_fields_reach_objects_and_arrays() {
        let document = json!({"coverage": {"percent": 92.4}, "items": [{"n": "7"}], "gone": null});
        assert_eq!(field(&document, "coverage.percent"), Some(&json!(92.4)));
        assert_eq!(
            to_sample(field(&document, "items.0.n").unwrap(), "x").unwrap(),
            Sample::value(7.0)
        );
        assert!(matches!(
            to_sample(field(&document, "gone").unwrap(), "x").unwrap(),
            Sample::NoData { .. }
        ));
        assert!(field(&document, "coverage.missing").is_none());
        assert!(to_sample(&json!("ninety"), "x").is_err());
        assert!(to_sample(&json!({"a": 1}), "x").is_err());
    }
}
