//! A small client of the GitHub REST API: its transport (headers, pagination, rate limits) and
//! the issue calls drift needs (list by label, create, update, comment). The GitHub drift
//! source's history reads (compare two commits, commits touching a path) are drift's own
//! (`drift/github_commits.rs`), on this transport.
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

mod issues;
mod transport;

use std::time::Duration;

use serde::Serialize;

pub use issues::{Issue, IssueUpdate};
pub(crate) use transport::same_origin;
pub use transport::{next_link, rate_limit_wait, GitHubClient};

/// The API base when `GITHUB_API_URL` is unset.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// The REST API version deployer speaks.
pub const API_VERSION: &str = "2022-11-28";

/// How long, in all, one request may wait for rate limits before failing.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(120);

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
