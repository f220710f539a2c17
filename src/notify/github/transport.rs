//! The HTTP side of the GitHub client: the headers every request carries, `Link` pagination,
//! rate limits waited out within a bound, and errors without the token.

use std::time::Duration;

use reqwest::{header, Method, StatusCode};

use crate::untrusted::first_chars;

use super::{GitHubError, Token, API_VERSION, DEFAULT_API_URL, DEFAULT_MAX_WAIT};

/// How long GitHub asks to wait after a secondary rate limit that names no time.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Characters of a GitHub error message kept in an error (counted in characters, never bytes).
const MESSAGE_CHARS: usize = 300;

/// A client for one API base and one token.
#[derive(Debug, Clone)]
pub struct GitHubClient {
    http: reqwest::Client,
    base: String,
    token: Token,
    token_variable: String,
    max_wait: Duration,
}

/// An answer that succeeded: its JSON and the next page, if any.
pub(crate) struct Page {
    pub(crate) body: serde_json::Value,
    pub(crate) next: Option<String>,
}

impl GitHubClient {
    /// A client for `base` (e.g. `https://api.github.com`, `https://HOST/api/v3`). The token came
    /// from `token_variable`, which errors name.
    pub fn new(base: &str, token: Token, token_variable: &str) -> Result<Self, GitHubError> {
        crate::install_crypto_provider();
        let base = base.trim().trim_end_matches('/').to_string();
        let parsed =
            url::Url::parse(&base).map_err(|_| GitHubError::InvalidBaseUrl(base.clone()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(GitHubError::InvalidBaseUrl(base));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("deployer/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|error| GitHubError::Transport {
                url: base.clone(),
                message: error.to_string(),
            })?;
        Ok(Self {
            http,
            base,
            token,
            token_variable: token_variable.to_string(),
            max_wait: DEFAULT_MAX_WAIT,
        })
    }

    /// A client for `GITHUB_API_URL` (default [`DEFAULT_API_URL`]) with the token from the
    /// environment variable `token_variable`.
    pub fn from_environment(token_variable: &str) -> Result<Self, GitHubError> {
        let base = std::env::var("GITHUB_API_URL")
            .ok()
            .filter(|value| !value.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_API_URL.to_string());
        Self::new(&base, Token::from_env(token_variable)?, token_variable)
    }

    /// Sets how long one request may wait for rate limits, in all.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The API base.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends one request, waiting out rate limits within the bound.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Page, GitHubError> {
        let mut waited = Duration::ZERO;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url)
                .header(header::ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", API_VERSION)
                .bearer_auth(&self.token.0);
            if let Some(body) = body {
                request = request.json(body);
            }
            let transport = |error: reqwest::Error| GitHubError::Transport {
                url: url.to_string(),
                // reqwest's message names the URL and the cause, never the headers.
                message: error.without_url().to_string(),
            };
            let response = request.send().await.map_err(transport)?;
            let status = response.status();
            let headers = response.headers().clone();
            let text = response.text().await.map_err(transport)?;
            if status.is_success() {
                let body = if text.trim().is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::from_str(&text).map_err(|error| GitHubError::InvalidResponse {
                        url: url.to_string(),
                        message: format!("the answer is not JSON: {error}"),
                    })?
                };
                return Ok(Page {
                    body,
                    next: next_link(&headers),
                });
            }
            let message = error_message(&text);
            if let Some(wait) = rate_limit_wait(status, &headers, chrono::Utc::now().timestamp()) {
                if waited + wait > self.max_wait {
                    return Err(GitHubError::RateLimited {
                        url: url.to_string(),
                        wait,
                        bound: self.max_wait,
                    });
                }
                tracing::info!(
                    target: "deployer::progress",
                    "GitHub rate limit: retrying in {}",
                    humantime::format_duration(wait)
                );
                tokio::time::sleep(wait).await;
                waited += wait;
                continue;
            }
            return Err(match status {
                StatusCode::UNAUTHORIZED => GitHubError::Unauthorized {
                    variable: self.token_variable.clone(),
                    url: url.to_string(),
                    message,
                },
                StatusCode::NOT_FOUND => GitHubError::NotFound {
                    variable: self.token_variable.clone(),
                    url: url.to_string(),
                },
                StatusCode::FORBIDDEN => GitHubError::Forbidden {
                    url: url.to_string(),
                    message,
                },
                _ => GitHubError::Status {
                    url: url.to_string(),
                    status: status.as_u16(),
                    message,
                },
            });
        }
    }

    /// GETs every page of a listing, following `Link: rel="next"`. A next page on another
    /// origin is refused: the token is only ever sent to the API base.
    pub(crate) async fn get_all(&self, first: &str) -> Result<Vec<serde_json::Value>, GitHubError> {
        let mut items = Vec::new();
        let mut url = first.to_string();
        loop {
            let page = self.send(Method::GET, &url, None).await?;
            match page.body {
                serde_json::Value::Array(values) => items.extend(values),
                _ => {
                    return Err(GitHubError::InvalidResponse {
                        url,
                        message: "a listing that is not a JSON array".into(),
                    })
                }
            }
            match page.next {
                Some(next) if same_origin(&next, &self.base) => url = next,
                Some(next) => {
                    return Err(GitHubError::InvalidResponse {
                        url,
                        message: format!("the next page `{next}` is not on the API base"),
                    })
                }
                None => return Ok(items),
            }
        }
    }

    pub(crate) fn parse<T: serde::de::DeserializeOwned>(
        url: &str,
        value: serde_json::Value,
    ) -> Result<T, GitHubError> {
        serde_json::from_value(value).map_err(|error| GitHubError::InvalidResponse {
            url: url.to_string(),
            message: error.to_string(),
        })
    }
}

pub(crate) fn same_origin(url: &str, base: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base)) {
        (Ok(url), Ok(base)) => url.origin() == base.origin(),
        _ => false,
    }
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|link| {
            let (target, parameters) = link.split_once(';')?;
            let is_next = parameters.split(';').any(|parameter| {
                parameter.trim().replace(' ', "") == "rel=\"next\""
                    || parameter.trim() == "rel=next"
            });
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_string())
        })
}

/// How long to wait before retrying, when the answer is a rate limit: `Retry-After` first
/// (seconds), then `x-ratelimit-reset` when `x-ratelimit-remaining` is 0, then GitHub's advice
/// of a minute for a secondary limit that names no time. `None`: not a rate limit.
pub fn rate_limit_wait(
    status: StatusCode,
    headers: &header::HeaderMap,
    now_epoch_seconds: i64,
) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(seconds) = text("retry-after").and_then(|value| value.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(seconds));
    }
    if text("x-ratelimit-remaining").map(str::trim) == Some("0") {
        let reset = text("x-ratelimit-reset").and_then(|value| value.trim().parse::<i64>().ok());
        return Some(match reset {
            Some(reset) => {
                Duration::from_secs(u64::try_from(reset - now_epoch_seconds).unwrap_or(0) + 1)
            }
            None => DEFAULT_RATE_LIMIT_WAIT,
        });
    }
    (status == StatusCode::TOO_MANY_REQUESTS).then_some(DEFAULT_RATE_LIMIT_WAIT)
}

/// GitHub's `message` field, or the start of the body, at most [`MESSAGE_CHARS`] characters.
fn error_message(body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    let kept = first_chars(&message, MESSAGE_CHARS);
    if kept.len() == message.len() {
        return message;
    }
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> header::HeaderMap {
        let mut map = header::HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn next_link_is_found_among_other_relations() {
        let map = headers(&[(
            "link",
            "<https://api.github.com/repositories/1/issues?page=1>; rel=\"prev\", <https://api.github.com/repositories/1/issues?page=3>; rel=\"next\", <https://api.github.com/repositories/1/issues?page=5>; rel=\"last\"",
        )]);
        assert_eq!(
            next_link(&map).as_deref(),
            Some("https://api.github.com/repositories/1/issues?page=3")
        );
        let last_page = headers(&[(
            "link",
            "<https://api.github.com/x?page=1>; rel=\"first\", <https://api.github.com/x?page=4>; rel=\"prev\"",
        )]);
        assert_eq!(next_link(&last_page), None);
        assert_eq!(next_link(&header::HeaderMap::new()), None);
    }

    #[test]
    fn rate_limit_waits_table() {
        let now = 1_000;
        /// Status, headers, expected wait in seconds.
        type Case<'a> = (u16, &'a [(&'static str, &'a str)], Option<u64>);
        let cases: &[Case<'_>] = &[
            (403, &[("retry-after", "7")], Some(7)),
            (429, &[("retry-after", "2")], Some(2)),
            (
                403,
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1030"),
                ],
                Some(31),
            ),
            (403, &[("x-ratelimit-remaining", "0")], Some(60)),
            (429, &[], Some(60)),
            // A 403 that is a permission problem, not a limit.
            (403, &[("x-ratelimit-remaining", "4999")], None),
            (500, &[("retry-after", "7")], None),
        ];
        for (status, pairs, expected) in cases {
            let wait =
                rate_limit_wait(StatusCode::from_u16(*status).unwrap(), &headers(pairs), now);
            assert_eq!(
                wait,
                expected.map(Duration::from_secs),
                "{status} {pairs:?}"
            );
        }
    }

    #[test]
    fn error_messages_are_cut_by_characters() {
        let long = format!("{{\"message\":\"{}\"}}", "é".repeat(400));
        let message = error_message(&long);
        assert_eq!(message.chars().count(), MESSAGE_CHARS + 1);
        assert_eq!(error_message("plain text"), "plain text");
    }
}
