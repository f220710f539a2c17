//! Google's structured errors, as one line that names the cause and the fix.
//!
//! Google APIs answer errors as `{"error": {"code", "message", "status", "details": [...]}}`,
//! where `details` may hold a `google.rpc.ErrorInfo` (a machine-readable `reason` with
//! `metadata`: the permission, the API, the quota) and a `google.rpc.RetryInfo` (how long to
//! wait). The human `message` alone ("Cloud Run Admin API has not been used in project 123
//! before or it is disabled…") is long and buries the one command that fixes it. [`explain`]
//! turns the reasons deployer's users meet on a new project into one line and a decision:
//!
//! | reason | line | retried |
//! |---|---|---|
//! | `SERVICE_DISABLED` | the API, the project, `gcloud services enable API --project P` | never |
//! | `IAM_PERMISSION_DENIED` | the permission, the resource, granting a role | never |
//! | `ACCESS_TOKEN_SCOPE_INSUFFICIENT` | the missing `cloud-platform` scope | never |
//! | `RATE_LIMIT_EXCEEDED`, `*QUOTA*` | the quota (metric, limit), the console page | after `RetryInfo`, within the command's budget |
//!
//! Every value taken from the answer is escaped and shortened (it is remote text).

use std::{collections::HashMap, time::Duration};

use google_cloud_gax::error::rpc::{Status, StatusDetails};

use crate::untrusted::{escaped, shortened};

/// What to do about an explained error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A permission or scope is missing: nothing changes until someone acts. Never retried.
    Denied,
    /// An API is disabled, or another permanent refusal. Never retried.
    Refused,
    /// A rate limit or quota: retried after [`Explained::retry_after`], within the budget.
    Throttled,
}

/// One of Google's errors, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// One line: the cause and the fix.
    pub line: String,
    /// Retried or not.
    pub disposition: Disposition,
    /// `RetryInfo.retryDelay`, when the answer carried one.
    pub retry_after: Option<Duration>,
}

/// A value of the answer's metadata, escaped and shortened (`?` when absent).
fn value(metadata: &HashMap<String, String>, key: &str) -> Option<String> {
    metadata
        .get(key)
        .filter(|value| !value.is_empty())
        .map(|value| escaped(&shortened(value, 120)).into_owned())
}

/// `projects/123` → `123` (the form `--project` takes).
fn project_of(consumer: &str) -> &str {
    consumer.strip_prefix("projects/").unwrap_or(consumer)
}

/// `RetryInfo.retryDelay`, if the answer has one.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    status.details.iter().find_map(|detail| match detail {
        StatusDetails::RetryInfo(info) => info
            .retry_delay
            .and_then(|delay| Duration::try_from(delay).ok()),
        _ => None,
    })
}

/// The API a `SERVICE_DISABLED` refusal names (`logging.googleapis.com`), escaped and
/// shortened; `None` for any other answer. For a caller that says the fix on a line of its own
/// (`deployer doctor`).
pub fn disabled_api(status: &Status) -> Option<String> {
    status.details.iter().find_map(|detail| match detail {
        StatusDetails::ErrorInfo(info) if info.reason == "SERVICE_DISABLED" => {
            value(&info.metadata, "service")
        }
        _ => None,
    })
}

/// A `Retry-After` header in seconds (an HTTP date is not honoured: clocks differ).
pub fn retry_after_header(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// How long a failed call was asked to wait before the next try: the answer's `RetryInfo`,
/// else its `Retry-After` header.
pub fn asked_wait(error: &google_cloud_gax::error::Error) -> Option<Duration> {
    error
        .status()
        .and_then(retry_delay)
        .or_else(|| error.http_headers().and_then(retry_after_header))
}

/// Explains `status` when it carries an `ErrorInfo` whose reason deployer knows (see the module
/// doc); `None` otherwise (the caller keeps its own mapping by status code).
pub fn explain(status: &Status) -> Option<Explained> {
    let info = status.details.iter().find_map(|detail| match detail {
        StatusDetails::ErrorInfo(info) => Some(info),
        _ => None,
    })?;
    let metadata = &info.metadata;
    let reason = info.reason.as_str();
    let retry_after = retry_delay(status);
    let (line, disposition) = match reason {
        "SERVICE_DISABLED" => {
            let api = value(metadata, "service")
                .or_else(|| Some(escaped(&shortened(&info.domain, 120)).into_owned()))
                .filter(|api| !api.is_empty())
                .unwrap_or_else(|| "the API".into());
            let consumer = value(metadata, "consumer");
            let project = consumer.as_deref().map(project_of);
            let line = match project {
                Some(project) => format!(
                    "the `{api}` API is not enabled in project `{project}`: enable it with `gcloud services enable {api} --project {project}` (it takes a minute to apply)"
                ),
                None => format!(
                    "the `{api}` API is not enabled in the project: enable it with `gcloud services enable {api} --project PROJECT`"
                ),
            };
            (line, Disposition::Refused)
        }
        "IAM_PERMISSION_DENIED" => {
            let permission = value(metadata, "permission").unwrap_or_else(|| "a permission".into());
            let resource = value(metadata, "resource")
                .map(|resource| format!(" on `{resource}`"))
                .unwrap_or_default();
            (
                format!(
                    "the caller lacks the permission `{permission}`{resource}: grant its account a role that has it (`gcloud projects add-iam-policy-binding PROJECT --member=serviceAccount:… --role=…`; `roles/run.developer` covers Cloud Run deploys)"
                ),
                Disposition::Denied,
            )
        }
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT" => {
            let api = value(metadata, "service").unwrap_or_else(|| "the API".into());
            (
                format!(
                    "the access token lacks the OAuth scope that `{api}` needs: use credentials with the `https://www.googleapis.com/auth/cloud-platform` scope (`gcloud auth application-default login`, or give the VM or node pool that scope)"
                ),
                Disposition::Denied,
            )
        }
        reason if reason == "RATE_LIMIT_EXCEEDED" || reason.contains("QUOTA") => {
            let quota = value(metadata, "quota_limit")
                .or_else(|| value(metadata, "quota_metric"))
                .unwrap_or_else(|| escaped(&shortened(reason, 63)).into_owned());
            let api = value(metadata, "service").unwrap_or_else(|| "the API".into());
            let project = value(metadata, "consumer");
            let page = match project.as_deref().map(project_of) {
                Some(project) => {
                    format!("https://console.cloud.google.com/iam-admin/quotas?project={project}")
                }
                None => "https://console.cloud.google.com/iam-admin/quotas".into(),
            };
            let wait = retry_after
                .map(|wait| format!("; Google asks to wait {}", humantime::format_duration(wait)))
                .unwrap_or_default();
            (
                format!(
                    "the quota `{quota}` of `{api}` is exhausted{wait}: deployer retries within its budget; if it persists, raise the quota ({page})"
                ),
                Disposition::Throttled,
            )
        }
        _ => return None,
    };
    Some(Explained {
        line,
        disposition,
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `status` as Google's JSON error format, parsed the way the client parses it.
    fn status(json: serde_json::Value) -> Status {
        Status::try_from(&bytes::Bytes::from(json.to_string())).unwrap()
    }

    fn error_info(reason: &str, metadata: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"error": {
            "code": 403,
            "message": "long text",
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": metadata,
            }],
        }})
    }

    #[test]
    fn a_disabled_api_names_the_api_and_the_command_that_enables_it() {
        let explained = explain(&status(error_info(
            "SERVICE_DISABLED",
            serde_json::json!({"service": "run.googleapis.com", "consumer": "projects/123"}),
        )))
        .unwrap();
        assert_eq!(explained.disposition, Disposition::Refused);
        assert!(
            explained
                .line
                .contains("`gcloud services enable run.googleapis.com --project 123`"),
            "{}",
            explained.line
        );
        let disabled = status(error_info(
            "SERVICE_DISABLED",
            serde_json::json!({"service": "run.googleapis.com"}),
        ));
        assert_eq!(
            disabled_api(&disabled).as_deref(),
            Some("run.googleapis.com")
        );
        let denied = status(error_info("IAM_PERMISSION_DENIED", serde_json::json!({})));
        assert_eq!(disabled_api(&denied), None);
    }

    #[test]
    fn a_rate_limit_follows_retry_info() {
        let mut json = error_info(
            "RATE_LIMIT_EXCEEDED",
            serde_json::json!({"quota_limit": "WriteRequestsPerMinutePerProject", "consumer": "projects/123"}),
        );
        json["error"]["code"] = 429.into();
        json["error"]["status"] = "RESOURCE_EXHAUSTED".into();
        json["error"]["details"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}));
        let explained = explain(&status(json)).unwrap();
        assert_eq!(explained.disposition, Disposition::Throttled);
        assert_eq!(explained.retry_after, Some(Duration::from_secs(7)));
        assert!(
            explained.line.contains("WriteRequestsPerMinutePerProject"),
            "{}",
            explained.line
        );
        assert!(
            explained.line.contains("quotas?project=123"),
            "{}",
            explained.line
        );
    }

    #[test]
    fn remote_metadata_is_escaped_and_shortened() {
        let explained = explain(&status(error_info(
            "IAM_PERMISSION_DENIED",
            serde_json::json!({"permission": format!("\u{1b}[2J{}", "x".repeat(10_000))}),
        )))
        .unwrap();
        assert!(!explained.line.contains('\u{1b}'));
        assert!(
            explained.line.chars().count() < 600,
            "{}",
            explained.line.chars().count()
        );
    }

    #[test]
    fn an_unknown_reason_is_left_to_the_status_code() {
        assert_eq!(
            explain(&status(error_info("SOMETHING_ELSE", serde_json::json!({})))),
            None
        );
    }
}
