//! The history reads of the GitHub drift source: compare two commits, and the commits touching
//! a path, on the GitHub transport of `notify::github`.

use reqwest::Method;
use serde::Deserialize;

use crate::notify::github::{same_origin, GitHubClient, GitHubError, RepositoryName};

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

impl GitHubClient {
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
            if !same_origin(&next, self.base()) {
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
            .map_err(|_| GitHubError::InvalidBaseUrl(self.base().to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_percent_encoded_in_paths() {
        assert_eq!(path_part("main"), "main");
        assert_eq!(path_part("feature/x y"), "feature/x%20y");
    }
}
