//! What a check is run for — [`CheckContext`] — and the placeholders it fills in queries (their
//! names and syntax are the service-file model's: [`crate::config::placeholders`]).
//!
//! `{service}`, `{revision}`, `{stable_revision}`, `{project}`, `{region}`, `{commit}`,
//! `{window}` (and `{window_seconds}`) are replaced by their values; `{{` and `}}` are literal
//! braces. Only a brace pair around a bare lowercase name is a placeholder, so PromQL label
//! matchers (`{job="api"}`) and SQL are left alone. A placeholder the context has no value for
//! is an error of that check (never an empty string: `revision_name = ""` would silently match
//! nothing and read as NO DATA).

use std::time::Duration;

use serde::Serialize;

use crate::config::placeholders::{tokens, Token};
pub use crate::config::placeholders::{unknown_placeholders, uses_placeholder, PLACEHOLDERS};

/// What the checks are run for: the service, the revision under test and the stable one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckContext {
    /// The platform's service name (Cloud Run service id).
    pub service: String,
    /// GCP project of the target (for a local target, the emulator's project).
    pub project: String,
    /// Region of the target.
    pub region: String,
    /// The revision under test (the canary), if known.
    pub revision: Option<String>,
    /// The revision serving before the rollout, if known.
    pub stable_revision: Option<String>,
    /// The commit under test, if known.
    pub commit: Option<String>,
    /// Base URL reaching the revision under test (its tag URL during a rollout), for `http`
    /// checks written as a path.
    pub revision_url: Option<String>,
    /// Base URL reaching the stable revision, for baselines of `http` checks.
    pub stable_url: Option<String>,
}

/// A placeholder that has no value in the context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("placeholder `{{{name}}}` has no value here{}", hint_for(name))]
pub struct MissingPlaceholder {
    /// The placeholder's name.
    pub name: String,
}

fn hint_for(name: &str) -> &'static str {
    match name {
        "revision" => " (pass `--revision`, or run it from a rollout)",
        "stable_revision" => " (the service has no serving revision)",
        "commit" => " (the revision carries no commit)",
        _ => "",
    }
}

impl CheckContext {
    /// The same context with the stable revision as the revision under test (for baselines).
    pub fn for_stable(&self) -> Option<CheckContext> {
        let stable = self.stable_revision.clone()?;
        Some(CheckContext {
            revision: Some(stable),
            revision_url: self.stable_url.clone(),
            commit: None,
            ..self.clone()
        })
    }

    fn value(&self, name: &str, window: Duration) -> Option<String> {
        match name {
            "service" => Some(self.service.clone()),
            "project" => Some(self.project.clone()),
            "region" => Some(self.region.clone()),
            "revision" => self.revision.clone(),
            "stable_revision" => self.stable_revision.clone(),
            "commit" => self.commit.clone(),
            "window" => Some(promql_duration(window)),
            "window_seconds" => Some(window.as_secs().max(1).to_string()),
            _ => None,
        }
    }

    /// `text` with its placeholders replaced.
    pub fn resolve(&self, text: &str, window: Duration) -> Result<String, MissingPlaceholder> {
        let mut resolved = String::with_capacity(text.len());
        for token in tokens(text) {
            match token {
                Token::Text(text) => resolved.push_str(text),
                Token::Placeholder(name) => match self.value(name, window) {
                    Some(value) if !value.is_empty() => resolved.push_str(&value),
                    _ => {
                        return Err(MissingPlaceholder {
                            name: name.to_string(),
                        })
                    }
                },
            }
        }
        Ok(resolved)
    }
}

/// A duration as PromQL and people write it: `10m`, `90s`, `2h`.
pub fn promql_duration(duration: Duration) -> String {
    let seconds = duration.as_secs().max(1);
    if seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else if seconds % 60 == 0 {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> CheckContext {
        CheckContext {
            service: "api".into(),
            project: "p".into(),
            region: "us-west2".into(),
            revision: Some("api-00002-new".into()),
            stable_revision: Some("api-00001-old".into()),
            commit: None,
            revision_url: None,
            stable_url: None,
        }
    }

    #[test]
    fn resolves_placeholders_and_leaves_promql_braces() {
        let window = Duration::from_secs(600);
        let resolved = context()
            .resolve(
                r#"sum(rate(x{service="{service}",rev="{revision}"}[{window}])) {{lit}} {window_seconds}"#,
                window,
            )
            .unwrap();
        assert_eq!(
            resolved,
            r#"sum(rate(x{service="api",rev="api-00002-new"}[10m])) {lit} 600"#
        );
        let stable = context().for_stable().unwrap();
        assert_eq!(
            stable.resolve("{revision}", window).unwrap(),
            "api-00001-old"
        );
    }

    #[test]
    fn a_missing_value_is_an_error_not_an_empty_string() {
        let error = context()
            .resolve("commit = '{commit}'", Duration::from_secs(60))
            .unwrap_err();
        assert_eq!(error.name, "commit");
        assert!(error.to_string().contains("`{commit}`"), "{error}");
    }

    #[test]
    fn durations_read_like_promql() {
        assert_eq!(promql_duration(Duration::from_secs(600)), "10m");
        assert_eq!(promql_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(promql_duration(Duration::from_secs(90)), "90s");
    }
}
