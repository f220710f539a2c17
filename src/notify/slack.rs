//! A Slack incoming-webhook client. The webhook URL is a secret: it is never printed, logged or
//! put in an error (errors name the environment variable that holds it).
//!
//! Wire facts (Slack incoming webhooks): `POST` a JSON body (`text`, `blocks`); success is
//! `200` with the body `ok`; failures are `400 invalid_payload` (and other `invalid_*`),
//! `403 action_prohibited`, `404 no_service` / `channel_not_found`, `410 channel_is_archived`,
//! and `429` with `Retry-After` (seconds) when rate limited: the client waits when the wait fits
//! within its bound, and fails clearly otherwise.

use std::time::Duration;

use reqwest::StatusCode;

use crate::untrusted::ellipsized;

/// How long, in all, one message may wait for rate limits.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);

/// Characters of Slack's answer kept in an error.
/// Slack's limit of blocks per message.
pub const MAX_BLOCKS: usize = 50;

/// Slack's limit of characters in a section's text (and in a context element's).
pub const MAX_SECTION_CHARS: usize = 3000;

/// Slack's limit of characters in a header block's text.
pub const MAX_HEADER_CHARS: usize = 150;

/// Characters of a message's `text` fallback (the notification preview) deployer sends:
/// Slack truncates longer ones itself, at a place deployer does not choose.
pub const MAX_TEXT_CHARS: usize = 3000;

const ANSWER_CHARS: usize = 200;

/// Errors delivering a message. None contains the webhook URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlackError {
    /// The variable holds no http(s) URL.
    #[error("the Slack webhook in `{variable}` is not an http(s) URL")]
    InvalidUrl {
        /// The variable.
        variable: String,
    },
    /// Slack refused the message.
    #[error("Slack refused the message sent to the webhook in `{variable}`: {status} {answer}")]
    Refused {
        /// The variable.
        variable: String,
        /// The HTTP status.
        status: u16,
        /// Slack's answer (`invalid_payload`, `no_service`, ...).
        answer: String,
    },
    /// Rate limited for longer than the client may wait.
    #[error("Slack rate-limited the webhook in `{variable}` for longer than {}", humantime::format_duration(*max_wait))]
    RateLimited {
        /// The variable.
        variable: String,
        /// The bound.
        max_wait: Duration,
    },
    /// The request did not reach Slack.
    #[error("cannot reach the Slack webhook in `{variable}`: {message}")]
    Transport {
        /// The variable.
        variable: String,
        /// What went wrong (without the URL).
        message: String,
    },
}

/// A webhook: its URL (secret) and the variable it came from (for messages).
pub struct Webhook {
    url: String,
    variable: String,
    max_wait: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Webhook")
            .field("variable", &self.variable)
            .field("url", &"[secret]")
            .finish()
    }
}

impl Webhook {
    /// The webhook `url` read from `variable`.
    pub fn new(variable: &str, url: &str) -> Result<Self, SlackError> {
        crate::install_crypto_provider();
        let parsed = reqwest::Url::parse(url.trim()).map_err(|_| SlackError::InvalidUrl {
            variable: variable.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SlackError::InvalidUrl {
                variable: variable.to_string(),
            });
        }
        Ok(Self {
            url: url.trim().to_string(),
            variable: variable.to_string(),
            max_wait: DEFAULT_MAX_WAIT,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|error| SlackError::Transport {
                    variable: variable.to_string(),
                    message: error.without_url().to_string(),
                })?,
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

    /// Posts `message`; waits out 429s within the bound.
    pub async fn post(&self, message: &serde_json::Value) -> Result<(), SlackError> {
        let mut waited = Duration::ZERO;
        loop {
            let response = self
                .client
                .post(&self.url)
                .json(message)
                .send()
                .await
                .map_err(|error| SlackError::Transport {
                    variable: self.variable.clone(),
                    message: error.without_url().to_string(),
                })?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(response.headers()).unwrap_or(Duration::from_secs(1));
                if waited + wait > self.max_wait {
                    return Err(SlackError::RateLimited {
                        variable: self.variable.clone(),
                        max_wait: self.max_wait,
                    });
                }
                tracing::info!(variable = %self.variable, seconds = wait.as_secs(), "Slack rate limit: waiting before retrying");
                tokio::time::sleep(wait).await;
                waited += wait;
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            if status == StatusCode::OK && body.trim() == "ok" {
                return Ok(());
            }
            return Err(SlackError::Refused {
                variable: self.variable.clone(),
                status: status.as_u16(),
                answer: ellipsized(body.trim(), ANSWER_CHARS).into_owned(),
            });
        }
    }
}

/// The variable a message of `level` goes to: `<base>_<LEVEL>` (`SLACK_WEBHOOK_URL_CRITICAL`)
/// when `is_set`, else `<base>` when set; `None` when neither is. A message without a level
/// (INFO) goes to `<base>` only. `health` alerts and rollout notifications route alike.
pub fn route_variable(
    base: &str,
    level: Option<&str>,
    is_set: impl Fn(&str) -> bool,
) -> Option<String> {
    level
        .map(|level| format!("{base}_{level}"))
        .into_iter()
        .chain(std::iter::once(base.to_string()))
        .find(|name| is_set(name))
}

/// Slack's mrkdwn escaping of text that came from elsewhere (`&`, `<`, `>`).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `Retry-After` in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_never_shows() {
        let webhook = Webhook::new(
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T/B/s3cr3t",
        )
        .unwrap();
        assert!(!format!("{webhook:?}").contains("s3cr3t"));
        let error = Webhook::new("SLACK_WEBHOOK_URL", "not a url s3cr3t").unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"));
        assert!(error.to_string().contains("SLACK_WEBHOOK_URL"));
    }

    #[test]
    fn a_level_goes_to_its_own_variable_when_set_else_to_the_base() {
        let set = |names: &'static [&'static str]| move |name: &str| names.contains(&name);
        let both = set(&["HOOK", "HOOK_CRITICAL"]);
        assert_eq!(
            route_variable("HOOK", Some("CRITICAL"), both).as_deref(),
            Some("HOOK_CRITICAL")
        );
        assert_eq!(
            route_variable("HOOK", Some("WARNING"), both).as_deref(),
            Some("HOOK")
        );
        assert_eq!(route_variable("HOOK", None, both).as_deref(), Some("HOOK"));
        assert_eq!(
            route_variable("HOOK", None, set(&["HOOK_CRITICAL"])),
            None,
            "INFO never goes to a level's webhook"
        );
        assert_eq!(route_variable("HOOK", Some("WARNING"), set(&[])), None);
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
