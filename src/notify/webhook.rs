//! A generic JSON webhook client: `POST` one JSON object, any `2xx` is a delivery. The URL is a
//! secret (it often carries a token): it is never printed, logged or put in an error; errors
//! name the environment variable that holds it, as the Slack client's do.
//!
//! Wire facts: `429` with `Retry-After` (seconds) is waited out when the wait fits within the
//! client's bound, and fails clearly otherwise; every other answer outside `2xx` is a refusal,
//! reported with its status and the first characters of the answer.

use std::time::Duration;

use reqwest::StatusCode;

use super::slack::retry_after;
use crate::untrusted::ellipsized;

/// Characters of the receiver's answer kept in an error.
const ANSWER_CHARS: usize = 200;

/// Longest one request may take (the caller's deadline usually cuts it sooner).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors delivering a JSON object. None contains the webhook URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    /// The variable holds no http(s) URL.
    #[error("the webhook in `{variable}` is not an http(s) URL")]
    InvalidUrl {
        /// The variable.
        variable: String,
    },
    /// The receiver answered outside `2xx`.
    #[error("the webhook in `{variable}` refused the message: {status} {answer}")]
    Refused {
        /// The variable.
        variable: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer.
        answer: String,
    },
    /// Rate limited for longer than the client may wait.
    #[error("the webhook in `{variable}` rate-limited the message for longer than {}", humantime::format_duration(*max_wait))]
    RateLimited {
        /// The variable.
        variable: String,
        /// The bound.
        max_wait: Duration,
    },
    /// The request did not reach the receiver.
    #[error("cannot reach the webhook in `{variable}`: {message}")]
    Transport {
        /// The variable.
        variable: String,
        /// What went wrong (without the URL).
        message: String,
    },
}

/// A JSON webhook: its URL (secret) and the variable it came from (for messages).
pub struct JsonWebhook {
    url: reqwest::Url,
    variable: String,
    max_wait: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for JsonWebhook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("JsonWebhook")
            .field("variable", &self.variable)
            .field("url", &"[secret]")
            .finish()
    }
}

impl JsonWebhook {
    /// The webhook `url` read from `variable`.
    pub fn new(variable: &str, url: &str) -> Result<Self, WebhookError> {
        crate::install_crypto_provider();
        let invalid = || WebhookError::InvalidUrl {
            variable: variable.to_string(),
        };
        let url = reqwest::Url::parse(url.trim()).map_err(|_| invalid())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid());
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| WebhookError::Transport {
                variable: variable.to_string(),
                message: error.without_url().to_string(),
            })?;
        Ok(Self {
            url,
            variable: variable.to_string(),
            max_wait: super::slack::DEFAULT_MAX_WAIT,
            client,
        })
    }

    /// The same webhook, waiting at most `max_wait` for rate limits.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The variable the URL came from.
    pub fn variable(&self) -> &str {
        &self.variable
    }

    /// Posts `body`; waits out 429s within the bound.
    pub async fn post(&self, body: &serde_json::Value) -> Result<(), WebhookError> {
        let mut waited = Duration::ZERO;
        loop {
            let response = self
                .client
                .post(self.url.clone())
                .json(body)
                .send()
                .await
                .map_err(|error| WebhookError::Transport {
                    variable: self.variable.clone(),
                    message: error.without_url().to_string(),
                })?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(response.headers()).unwrap_or(Duration::from_secs(1));
                if waited + wait > self.max_wait {
                    return Err(WebhookError::RateLimited {
                        variable: self.variable.clone(),
                        max_wait: self.max_wait,
                    });
                }
                tracing::info!(variable = %self.variable, seconds = wait.as_secs(), "webhook rate limit: waiting before retrying");
                tokio::time::sleep(wait).await;
                waited += wait;
                continue;
            }
            if status.is_success() {
                return Ok(());
            }
            let answer = response.text().await.unwrap_or_default();
            return Err(WebhookError::Refused {
                variable: self.variable.clone(),
                status: status.as_u16(),
                answer: ellipsized(answer.trim(), ANSWER_CHARS).into_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_never_shows() {
        let webhook = JsonWebhook::new("HOOK", "https://example.com/hook?token=s3cr3t").unwrap();
        assert!(!format!("{webhook:?}").contains("s3cr3t"));
        for bad in ["not a url s3cr3t", "ftp://example.com/s3cr3t"] {
            let error = JsonWebhook::new("HOOK", bad).unwrap_err();
            assert!(!error.to_string().contains("s3cr3t"), "{error}");
            assert!(error.to_string().contains("`HOOK`"), "{error}");
        }
    }
}
