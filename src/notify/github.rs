//! A small client of the GitHub REST API: the issue calls drift needs (list by label, create,
//! update, comment) and the two history calls of the GitHub drift source (compare two commits,
//! commits touching a path).
//!
//! Plain reqwest with serde rather than `octocrab`: deployer needs six endpoints, and the parts
//! that matter here — the exact headers, `Link` pagination, waiting out rate limits within a
//! bound, and errors that never contain the token — are a few dozen lines that stay visible and
//! testable against a local stand-in, with no second HTTP stack in the dependency tree
//! (`docs/DRIFT.md`).
//!
//! Wire facts (GitHub REST, version `2022-11-28`): every request carries
//! `Accept: application/vnd.github+json`, `X-GitHub-Api-Version`, a `User-Agent` (GitHub answers
//! 403 without one) and `Authorization: Bearer TOKEN`. Listings paginate through the
//! `Link: <URL>; rel="next"` header. The issue listing returns pull requests too (they carry a
//! `pull_request` key); they are dropped here. A rate limit answers 403 or 429, with
//! `Retry-After` (secondary limit) or `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (primary
//! limit); the client waits when the wait fits within its bound, and fails clearly otherwise.

use std::time::Duration;

use reqwest::{header, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::untrusted::first_chars;

/// The API base when `GITHUB_API_URL` is unset.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// The REST API version deployer speaks.
pub const API_VERSION: &str = "2022-11-28";

/// How long, in all, one request may wait for rate limits before failing.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(120);

/// How long GitHub asks to wait after a secondary rate limit that names no time.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Characters of a GitHub error message kept in an error (counted in characters, never bytes).
const MESSAGE_CHARS: usize = 300;

/// Errors of the GitHub API. None of them contains the token.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// The token's environment variable is unset or empty.
    #[error("no GitHub token: the environment variable `{variable}` is not set")]
    MissingToken {
        /// The variable (`notifications.github_token_env`).
        variable: String,
    },
    /// `notifications.github_repository` (or `GITHUB_REPOSITORY`) is not `OWNER/NAME`.
    #[error("`{0}` is not a GitHub repository name (`OWNER/NAME`)")]
    InvalidRepository(String),
    /// `GITHUB_API_URL` is not an http(s) URL.
    #[error("`GITHUB_API_URL` is not an http(s) URL: `{0}`")]
    InvalidBaseUrl(String),
    /// 401: the token is missing, expired or wrong.
    #[error("GitHub refused the token from `{variable}` (401 {message}) at `{url}`")]
    Unauthorized {
        /// The token's variable.
        variable: String,
        /// The request URL.
        url: String,
        /// GitHub's message.
        message: String,
    },
    /// 404: the repository does not exist, or the token cannot see it.
    #[error("GitHub answered 404 for `{url}`: the repository or commit does not exist, or the token from `{variable}` cannot see it")]
    NotFound {
        /// The token's variable.
        variable: String,
        /// The request URL.
        url: String,
    },
    /// 403 that is not a rate limit: the token lacks a permission.
    #[error("GitHub refused `{url}` (403 {message})")]
    Forbidden {
        /// The request URL.
        url: String,
        /// GitHub's message.
        message: String,
    },
    /// A rate limit whose wait is longer than the client's bound.
    #[error("GitHub rate limit on `{url}`: it asks to wait {}, longer than the {} deployer waits", humantime::format_duration(*wait), humantime::format_duration(*bound))]
    RateLimited {
        /// The request URL.
        url: String,
        /// What GitHub asked for.
        wait: Duration,
        /// The client's bound.
        bound: Duration,
    },
    /// Any other answer that is not a success.
    #[error("GitHub answered {status} for `{url}`: {message}")]
    Status {
        /// The request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// The request did not reach GitHub, or its answer could not be read.
    #[error("cannot reach GitHub at `{url}`: {message}")]
    Transport {
        /// The request URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The answer is not what the API documents.
    #[error("unexpected answer from `{url}`: {message}")]
    InvalidResponse {
        /// The request URL.
        url: String,
        /// What is wrong.
        message: String,
    },
}

/// A token, never shown: its `Debug` hides it and no error message contains it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// A token from a string (trimmed).
    pub fn new(value: &str) -> Self {
        Self(value.trim().to_string())
    }

    /// Reads the token from the environment variable `variable`.
    pub fn from_env(variable: &str) -> Result<Self, GitHubError> {
        match std::env::var(variable) {
            Ok(value) if !value.trim().is_empty() => Ok(Self::new(&value)),
            _ => Err(GitHubError::MissingToken {
                variable: variable.to_string(),
            }),
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Token([hidden])")
    }
}

/// `OWNER/NAME`, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RepositoryName(String);

impl RepositoryName {
    /// Parses `OWNER/NAME` (letters, digits, `-`, `_`, `.`).
    pub fn parse(text: &str) -> Result<Self, GitHubError> {
        let valid_part = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match text.trim().split_once('/') {
            Some((owner, name)) if valid_part(owner) && valid_part(name) => {
                Ok(Self(format!("{owner}/{name}")))
            }
            _ => Err(GitHubError::InvalidRepository(text.to_string())),
        }
    }

    /// `OWNER/NAME`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RepositoryName {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// An issue as listed (pull requests excluded).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Issue {
    /// The issue number.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body (Markdown); GitHub sends `null` for an empty one.
    #[serde(default)]
    pub body: Option<String>,
    /// `open` or `closed`.
    pub state: String,
    /// The page a person opens.
    #[serde(default)]
    pub html_url: String,
}

impl Issue {
    /// True when the issue is open.
    pub fn is_open(&self) -> bool {
        self.state == "open"
    }
}

/// Fields of an issue update (`PATCH /repos/O/R/issues/N`); `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IssueUpdate {
    /// New body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `open` or `closed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Why it was closed (`completed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<&'static str>,
}

/// One commit of a comparison.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ComparedCommit {
    /// Full id.
    pub sha: String,
    /// The git commit's author, committer and message.
    pub commit: CommitDetail,
}

/// The git part of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CommitDetail {
    /// Author (name and date).
    pub author: Option<Signature>,
    /// Committer (name and date).
    pub committer: Option<Signature>,
    /// The whole message.
    pub message: String,
}

/// A name and an ISO 8601 date.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Signature {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `2024-01-01T00:00:00Z`.
    #[serde(default)]
    pub date: String,
}

/// A changed file of a comparison.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChangedFile {
    /// Path.
    pub filename: String,
    /// The old path of a rename.
    #[serde(default)]
    pub previous_filename: Option<String>,
}

/// `GET /repos/O/R/compare/BASE...HEAD`, all pages of commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// `identical`, `ahead`, `behind` or `diverged`.
    pub status: String,
    /// Commits of HEAD not in BASE.
    pub ahead_by: usize,
    /// Commits of BASE not in HEAD.
    pub behind_by: usize,
    /// The commits of BASE..HEAD, oldest first.
    pub commits: Vec<ComparedCommit>,
    /// Files changed between the merge base and HEAD (GitHub lists at most 300).
    pub files: Vec<ChangedFile>,
    /// BASE itself.
    pub base_commit: Option<ComparedCommit>,
    /// The newest common ancestor of BASE and HEAD.
    pub merge_base_commit: Option<ComparedCommit>,
}

#[derive(Deserialize)]
struct ComparisonPage {
    status: String,
    ahead_by: usize,
    behind_by: usize,
    #[serde(default)]
    commits: Vec<ComparedCommit>,
    #[serde(default)]
    files: Option<Vec<ChangedFile>>,
    #[serde(default)]
    base_commit: Option<ComparedCommit>,
    #[serde(default)]
    merge_base_commit: Option<ComparedCommit>,
}

#[derive(Deserialize)]
struct ListedCommit {
    sha: String,
}

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
struct Page {
    body: serde_json::Value,
    next: Option<String>,
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends one request, waiting out rate limits within the bound.
    async fn send(
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
    async fn get_all(&self, first: &str) -> Result<Vec<serde_json::Value>, GitHubError> {
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

    fn parse<T: serde::de::DeserializeOwned>(
        url: &str,
        value: serde_json::Value,
    ) -> Result<T, GitHubError> {
        serde_json::from_value(value).map_err(|error| GitHubError::InvalidResponse {
            url: url.to_string(),
            message: error.to_string(),
        })
    }

    /// Every issue (open and closed) carrying `label`, pull requests left out.
    pub async fn issues_with_label(
        &self,
        repository: &RepositoryName,
        label: &str,
    ) -> Result<Vec<Issue>, GitHubError> {
        let mut url = url::Url::parse(&self.url(&format!("/repos/{repository}/issues")))
            .map_err(|_| GitHubError::InvalidBaseUrl(self.base.clone()))?;
        url.query_pairs_mut()
            .append_pair("state", "all")
            .append_pair("labels", label)
            .append_pair("per_page", "100");
        let url = url.to_string();
        let mut issues = Vec::new();
        for item in self.get_all(&url).await? {
            // The issues endpoint lists pull requests too; an issue never has this key.
            if item.get("pull_request").is_some() {
                continue;
            }
            issues.push(Self::parse::<Issue>(&url, item)?);
        }
        Ok(issues)
    }

    /// Opens an issue.
    pub async fn create_issue(
        &self,
        repository: &RepositoryName,
        title: &str,
        body: &str,
        labels: &[&str],
    ) -> Result<Issue, GitHubError> {
        let url = self.url(&format!("/repos/{repository}/issues"));
        let request = serde_json::json!({ "title": title, "body": body, "labels": labels });
        let page = self.send(Method::POST, &url, Some(&request)).await?;
        Self::parse(&url, page.body)
    }

    /// Changes an issue's body and/or state.
    pub async fn update_issue(
        &self,
        repository: &RepositoryName,
        number: u64,
        update: &IssueUpdate,
    ) -> Result<Issue, GitHubError> {
        let url = self.url(&format!("/repos/{repository}/issues/{number}"));
        let request =
            serde_json::to_value(update).map_err(|error| GitHubError::InvalidResponse {
                url: url.clone(),
                message: error.to_string(),
            })?;
        let page = self.send(Method::PATCH, &url, Some(&request)).await?;
        Self::parse(&url, page.body)
    }

    /// Adds a comment to an issue.
    pub async fn comment(
        &self,
        repository: &RepositoryName,
        number: u64,
        body: &str,
    ) -> Result<(), GitHubError> {
        let url = self.url(&format!("/repos/{repository}/issues/{number}/comments"));
        let request = serde_json::json!({ "body": body });
        self.send(Method::POST, &url, Some(&request)).await?;
        Ok(())
    }

    /// `GET /repos/O/R/compare/BASE...HEAD`, with every page of commits (files come with the
    /// first page only, as GitHub sends them).
    pub async fn compare(
        &self,
        repository: &RepositoryName,
        base: &str,
        head: &str,
    ) -> Result<Comparison, GitHubError> {
        let url = format!(
            "{}?per_page=100",
            self.url(&format!(
                "/repos/{repository}/compare/{}...{}",
                path_part(base),
                path_part(head)
            ))
        );
        let mut page = self.send(Method::GET, &url, None).await?;
        let first: ComparisonPage = Self::parse(&url, page.body)?;
        let mut comparison = Comparison {
            status: first.status,
            ahead_by: first.ahead_by,
            behind_by: first.behind_by,
            commits: first.commits,
            files: first.files.unwrap_or_default(),
            base_commit: first.base_commit,
            merge_base_commit: first.merge_base_commit,
        };
        while let Some(next) = page.next.take() {
            if !same_origin(&next, &self.base) {
                return Err(GitHubError::InvalidResponse {
                    url,
                    message: format!("the next page `{next}` is not on the API base"),
                });
            }
            page = self.send(Method::GET, &next, None).await?;
            let more: ComparisonPage = Self::parse(&next, std::mem::take(&mut page.body))?;
            comparison.commits.extend(more.commits);
        }
        Ok(comparison)
    }

    /// The ids of the commits reachable from `sha` that touch `path` (a file or a directory),
    /// committed at or after `since` (ISO 8601).
    pub async fn commits_touching(
        &self,
        repository: &RepositoryName,
        sha: &str,
        path: &str,
        since: &str,
    ) -> Result<Vec<String>, GitHubError> {
        let mut url = url::Url::parse(&self.url(&format!("/repos/{repository}/commits")))
            .map_err(|_| GitHubError::InvalidBaseUrl(self.base.clone()))?;
        url.query_pairs_mut()
            .append_pair("sha", sha)
            .append_pair("path", path)
            .append_pair("since", since)
            .append_pair("per_page", "100");
        let url = url.to_string();
        self.get_all(&url)
            .await?
            .into_iter()
            .map(|item| Self::parse::<ListedCommit>(&url, item).map(|commit| commit.sha))
            .collect()
    }
}

/// A ref in a URL path: characters outside `[A-Za-z0-9._/-]` percent-encoded.
fn path_part(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b'/') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn same_origin(url: &str, base: &str) -> bool {
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
    fn repository_names_are_checked() {
        assert_eq!(
            RepositoryName::parse("nba-props/platform")
                .unwrap()
                .as_str(),
            "nba-props/platform"
        );
        for bad in ["", "platform", "a/b/c", "../x", "a/..", "a b/c", "/x"] {
            assert!(RepositoryName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_never_shows() {
        let token = Token::new("ghp_secret123");
        assert_eq!(format!("{token:?}"), "Token([hidden])");
        let client = GitHubClient::new("http://127.0.0.1:9", token, "GITHUB_TOKEN").unwrap();
        assert!(!format!("{client:?}").contains("ghp_secret123"));
    }

    #[test]
    fn error_messages_are_cut_by_characters() {
        let long = format!("{{\"message\":\"{}\"}}", "é".repeat(400));
        let message = error_message(&long);
        assert_eq!(message.chars().count(), MESSAGE_CHARS + 1);
        assert_eq!(error_message("plain text"), "plain text");
        assert_eq!(path_part("main"), "main");
        assert_eq!(path_part("feature/x y"), "feature/x%20y");
    }
}
