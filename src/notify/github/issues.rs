//! The issue endpoints drift's issue lifecycle uses: list by label (pull requests left out),
//! create, update, comment.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{GitHubClient, GitHubError, RepositoryName};

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

impl GitHubClient {
    /// Every issue (open and closed) carrying `label`, pull requests left out.
    pub async fn issues_with_label(
        &self,
        repository: &RepositoryName,
        label: &str,
    ) -> Result<Vec<Issue>, GitHubError> {
        let mut url = url::Url::parse(&self.url(&format!("/repos/{repository}/issues")))
            .map_err(|_| GitHubError::InvalidBaseUrl(self.base().to_string()))?;
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
}
