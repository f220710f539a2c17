//! The alert lifecycle of each (service, check), as pure functions of the previous state, this
//! run's results and the time: alert on entering WARN/CRITICAL, again at once when it worsens,
//! at most once per `repeat_interval` while unchanged, and "resolved" when it passes again.
//! Then the digest: one Slack message per destination and run (`text` plus blocks, within
//! Slack's limits, [`crate::notify::slack::MAX_BLOCKS`] and the rest).

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{HealthCheck, Score};
use crate::{
    checks::{self, Severity},
    notify::slack::{
        escape, route_variable, MAX_BLOCKS, MAX_HEADER_CHARS, MAX_SECTION_CHARS, MAX_TEXT_CHARS,
    },
    untrusted::ellipsized,
};

/// The repeat interval when none is configured (the team's schedule).
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// Characters of a value or message in an alert line (so the runbook link always fits).
const VALUE_CHARS: usize = 1000;

/// How bad an alerting check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// WARN, or ERROR / NO DATA weighed as a warning.
    Warning,
    /// CRITICAL, or NO DATA weighed critical.
    Critical,
}

impl Level {
    /// The level of a check, `None` when it needs no alert.
    pub fn of(check: &HealthCheck) -> Option<Level> {
        match check.severity {
            Severity::Ok if check.passed() => None,
            // NO DATA with `on_no_data = "pass"`: not a pass of the score, but nothing to alert.
            Severity::Ok => None,
            Severity::Warning => Some(Level::Warning),
            Severity::Critical => Some(Level::Critical),
        }
    }

    /// `WARNING`, `CRITICAL`.
    pub fn label(self) -> &'static str {
        match self {
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }
}

/// What is remembered of an alerting check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its level when last seen.
    pub level: Level,
    /// When it was last alerted.
    pub alerted_at: DateTime<Utc>,
}

/// The lifecycle state of every alerting (service, check), by [`HealthCheck::key`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    /// The entries.
    pub checks: BTreeMap<String, Entry>,
}

/// Why a check is in this run's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// It entered WARN/CRITICAL.
    New,
    /// It got worse (WARNING to CRITICAL).
    Worse,
    /// Unchanged for a repeat interval.
    Repeat,
    /// It passes again.
    Resolved,
}

/// One alert of the digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Why it is sent.
    pub kind: Kind,
    /// Its level (for `resolved`, the level it had).
    pub level: Level,
    /// The check.
    pub check: HealthCheck,
}

/// This run's alerts and the state to keep once they are delivered.
pub fn plan(
    state: &AlertState,
    checks: &[HealthCheck],
    now: DateTime<Utc>,
    repeat_interval: impl Fn(&HealthCheck) -> Duration,
) -> (Vec<Alert>, AlertState) {
    let mut next = state.clone();
    let mut alerts = Vec::new();
    for check in checks {
        let key = check.key();
        let previous = state.checks.get(&key);
        let level = Level::of(check);
        let repeat =
            chrono::Duration::from_std(repeat_interval(check)).unwrap_or(chrono::Duration::MAX);
        let kind = match (previous, level) {
            (None, None) => None,
            (None, Some(_)) => Some(Kind::New),
            (Some(previous), Some(level)) if level > previous.level => Some(Kind::Worse),
            (Some(previous), Some(_)) if now - previous.alerted_at >= repeat => Some(Kind::Repeat),
            (Some(_), Some(_)) => None,
            (Some(_), None) if check.passed() => Some(Kind::Resolved),
            // Not alerting, not passing (NO DATA weighed as a pass): keep waiting.
            (Some(_), None) => None,
        };
        match (kind, level) {
            (Some(Kind::Resolved), _) => {
                let level = previous.map(|entry| entry.level).unwrap_or(Level::Warning);
                next.checks.remove(&key);
                alerts.push(Alert {
                    kind: Kind::Resolved,
                    level,
                    check: check.clone(),
                });
            }
            (Some(kind), Some(level)) => {
                next.checks.insert(
                    key,
                    Entry {
                        level,
                        alerted_at: now,
                    },
                );
                alerts.push(Alert {
                    kind,
                    level,
                    check: check.clone(),
                });
            }
            (None, Some(level)) => {
                // Better but still alerting (CRITICAL to WARNING): remember the level, so that
                // worsening again alerts at once; the repeat clock keeps running.
                if let Some(entry) = next.checks.get_mut(&key) {
                    entry.level = level;
                }
            }
            _ => {}
        }
    }
    (alerts, next)
}

/// Where a digest goes: the variable holding the webhook, and its alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// The environment variable (its value, the URL, is secret).
    pub variable: String,
    /// The alerts sent there.
    pub alerts: Vec<Alert>,
}

/// Groups `alerts` by webhook: `<VAR>_WARNING` / `<VAR>_CRITICAL` when set (a resolved alert
/// goes where its level went), else `<VAR>`, `<VAR>` being the service's
/// `notifications.slack_webhook_env` (`variable_of`). Alerts whose variables are all unset
/// are returned apart: nowhere to send them.
pub fn route(
    alerts: Vec<Alert>,
    variable_of: impl Fn(&str) -> String,
    is_set: impl Fn(&str) -> bool,
) -> (Vec<Destination>, Vec<Alert>) {
    let mut destinations: Vec<Destination> = Vec::new();
    let mut unrouted = Vec::new();
    for alert in alerts {
        let base = variable_of(&alert.check.service);
        let variable = route_variable(&base, Some(alert.level.label()), &is_set);
        match variable {
            Some(variable) => match destinations.iter_mut().find(|d| d.variable == variable) {
                Some(destination) => destination.alerts.push(alert),
                None => destinations.push(Destination {
                    variable,
                    alerts: vec![alert],
                }),
            },
            None => unrouted.push(alert),
        }
    }
    (destinations, unrouted)
}

/// The state to keep: `next` except for the checks whose alert was not delivered, which keep
/// their `previous` entry (so the next run alerts them again).
pub fn settle(previous: &AlertState, mut next: AlertState, undelivered: &[&Alert]) -> AlertState {
    for alert in undelivered {
        let key = alert.check.key();
        match previous.checks.get(&key) {
            Some(entry) => {
                next.checks.insert(key, entry.clone());
            }
            None => {
                next.checks.remove(&key);
            }
        }
    }
    next
}

/// A runbook as a link: a URL through the repository when `repository_url` is known
/// (`https://github.com/OWNER/NAME/blob/main`), else the path.
fn runbook_text(runbook: &str, repository_url: Option<&String>) -> String {
    match repository_url {
        Some(base) => format!("<{base}/{runbook}|runbook>"),
        None => format!("runbook: `{}`", escape(runbook)),
    }
}

fn line(alert: &Alert, repositories: &BTreeMap<String, String>) -> String {
    let check = &alert.check;
    let what = match alert.kind {
        Kind::New => format!("{} (new)", alert.level.label()),
        Kind::Worse => format!("{} (worse)", alert.level.label()),
        Kind::Repeat => format!("{} (still)", alert.level.label()),
        Kind::Resolved => "RESOLVED".to_string(),
    };
    let value = check
        .value
        .map(|value| crate::checks::format_value(value, check.unit))
        .or_else(|| check.message.clone())
        .unwrap_or_default();
    format!(
        "*{what}* `{}` · *{}*: {} — {}",
        escape(&check.service),
        escape(&check.check),
        escape(&ellipsized(&value, VALUE_CHARS)),
        runbook_text(&check.runbook, repositories.get(&check.service))
    )
}

/// The digest of `alerts`: the `text` fallback and the blocks. `repositories` maps a service
/// to the web base of its files (`https://github.com/OWNER/NAME/blob/main`), for runbook links.
pub fn digest(alerts: &[Alert], score: &Score, repositories: &BTreeMap<String, String>) -> Value {
    let open = alerts.iter().filter(|a| a.kind != Kind::Resolved).count();
    let resolved = alerts.len() - open;
    let title = format!(
        "deployer health: {} (score {:.0}/100, {} of {} passed) — {open} alerting, {resolved} resolved",
        score.verdict.label(),
        score.percent.floor(),
        score.passed,
        score.total
    );
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": ellipsized(&title, MAX_HEADER_CHARS)}
    })];
    // Header, up to 48 alerts, and one line for the rest.
    let room = MAX_BLOCKS - 2;
    for alert in alerts.iter().take(room) {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": ellipsized(&line(alert, repositories), MAX_SECTION_CHARS)}
        }));
    }
    if alerts.len() > room {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("and {} more (see `deployer health`)", alerts.len() - room)}]
        }));
    }
    let fallback = std::iter::once(title)
        .chain(alerts.iter().map(|alert| line(alert, repositories)))
        .collect::<Vec<_>>()
        .join("\n");
    json!({"text": ellipsized(&fallback, MAX_TEXT_CHARS), "blocks": blocks})
}

/// The cause an alert without a value shares with others: `no Google credentials` whatever
/// the provider said around it, else its whole message.
fn cause(alert: &Alert) -> Option<String> {
    if alert.check.value.is_some() {
        return None;
    }
    let message = alert.check.message.as_deref()?;
    Some(if message.contains(checks::NO_CREDENTIALS) {
        format!(
            "{} (`gcloud auth application-default login`, or `GOOGLE_APPLICATION_CREDENTIALS` in CI)",
            checks::NO_CREDENTIALS
        )
    } else {
        message.to_string()
    })
}

/// `alerts` with those that share one cause (same kind and level, no value, one message —
/// six checks without Google credentials) merged into one line naming the checks: the digest
/// used to drown in six copies of one sentence.
pub fn grouped_by_cause(alerts: &[Alert]) -> Vec<Alert> {
    let mut grouped: Vec<(Option<String>, Vec<&Alert>)> = Vec::new();
    for alert in alerts {
        let key = cause(alert);
        let same = grouped.iter_mut().find(|(other, members)| {
            key.is_some()
                && *other == key
                && members[0].kind == alert.kind
                && members[0].level == alert.level
        });
        match same {
            Some((_, members)) => members.push(alert),
            None => grouped.push((key, vec![alert])),
        }
    }
    grouped
        .into_iter()
        .map(|(key, members)| match (key, members.as_slice()) {
            (Some(cause), [first, _, ..]) => {
                let mut merged = (*first).clone();
                let mut services: Vec<&str> = members
                    .iter()
                    .map(|alert| alert.check.service.as_str())
                    .collect();
                services.dedup();
                merged.check.service = services.join(", ");
                let mut names: Vec<&str> = Vec::new();
                for alert in &members {
                    if !names.contains(&alert.check.check.as_str()) {
                        names.push(&alert.check.check);
                    }
                }
                // One check of several services (`Architecture` of two) keeps its name.
                merged.check.check = match names.as_slice() {
                    [only] => (*only).to_string(),
                    _ => format!("{} checks ({})", members.len(), names.join(", ")),
                };
                merged.check.message = Some(cause);
                merged
            }
            (_, members) => members[0].clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Status;
    use crate::health::tests::check;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-02-02T00:00:00Z")
            .unwrap()
            .to_utc()
            + chrono::Duration::hours(hours)
    }

    fn kinds(alerts: &[Alert]) -> Vec<(String, Kind)> {
        alerts
            .iter()
            .map(|alert| (alert.check.check.clone(), alert.kind))
            .collect()
    }

    #[test]
    fn the_lifecycle_fires_repeats_sparingly_worsens_and_resolves() {
        let six = |_: &HealthCheck| DEFAULT_REPEAT_INTERVAL;
        let warn = vec![check("s", "vegas", Status::Warn)];
        let (alerts, state) = plan(&AlertState::default(), &warn, at(0), six);
        assert_eq!(kinds(&alerts), [("vegas".into(), Kind::New)]);
        // Unchanged within the interval: nothing.
        let (alerts, state) = plan(&state, &warn, at(5), six);
        assert!(alerts.is_empty());
        // Worse: at once.
        let critical = vec![check("s", "vegas", Status::Critical)];
        let (alerts, state) = plan(&state, &critical, at(5), six);
        assert_eq!(kinds(&alerts), [("vegas".into(), Kind::Worse)]);
        assert_eq!(alerts[0].level, Level::Critical);
        // The repeat clock restarts at the last alert (hour 5): hour 10 nothing, hour 11 again.
        let (alerts, state) = plan(&state, &critical, at(10), six);
        assert!(alerts.is_empty());
        let (alerts, state) = plan(&state, &critical, at(11), six);
        assert_eq!(kinds(&alerts), [("vegas".into(), Kind::Repeat)]);
        // Better but still bad: no message; worse again: at once.
        let (alerts, state) = plan(&state, &warn, at(12), six);
        assert!(alerts.is_empty());
        let (alerts, state) = plan(&state, &critical, at(12), six);
        assert_eq!(kinds(&alerts), [("vegas".into(), Kind::Worse)]);
        // Passing again: resolved, with the level it had, and forgotten.
        let pass = vec![check("s", "vegas", Status::Pass)];
        let (alerts, state) = plan(&state, &pass, at(13), six);
        assert_eq!(kinds(&alerts), [("vegas".into(), Kind::Resolved)]);
        assert_eq!(alerts[0].level, Level::Critical);
        assert!(state.checks.is_empty());
        let (alerts, _) = plan(&state, &pass, at(14), six);
        assert!(alerts.is_empty());
    }

    #[test]
    fn errors_alert_as_warnings_and_checks_not_run_keep_their_state() {
        let six = |_: &HealthCheck| DEFAULT_REPEAT_INTERVAL;
        let run = vec![
            check("a", "x", Status::Error),
            check("b", "y", Status::Critical),
        ];
        let (alerts, state) = plan(&AlertState::default(), &run, at(0), six);
        assert_eq!(alerts[0].level, Level::Warning);
        assert_eq!(alerts[1].level, Level::Critical);
        // A run of `--service a` alone leaves `b`'s lifecycle as it was.
        let (alerts, next) = plan(&state, &[check("a", "x", Status::Pass)], at(1), six);
        assert_eq!(kinds(&alerts), [("x".into(), Kind::Resolved)]);
        assert!(next.checks.contains_key("b/y"));
        assert!(!next.checks.contains_key("a/x"));
    }

    #[test]
    fn the_digest_keeps_within_slack_limits_and_links_runbooks() {
        let many: Vec<Alert> = (0..120)
            .map(|index| Alert {
                kind: Kind::New,
                level: Level::Critical,
                check: {
                    let mut c = check("svc", &format!("check {index}"), Status::Critical);
                    c.value = None;
                    c.message = Some("é".repeat(5000));
                    c
                },
            })
            .collect();
        let checks: Vec<HealthCheck> = many.iter().map(|a| a.check.clone()).collect();
        let score = crate::health::score(&checks);
        let repositories = BTreeMap::from([(
            "svc".to_string(),
            "https://github.com/o/r/blob/main".to_string(),
        )]);
        let message = digest(&many, &score, &repositories);
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), MAX_BLOCKS);
        for block in blocks {
            if block["type"] == "section" {
                let text = block["text"]["text"].as_str().unwrap();
                assert!(text.chars().count() <= MAX_SECTION_CHARS);
            }
        }
        assert!(blocks[1]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("https://github.com/o/r/blob/main/runbooks/svc.md#troubleshoot|runbook"));
        assert!(blocks[49]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("and 72 more"));
        assert!(message["text"]
            .as_str()
            .unwrap()
            .starts_with("deployer health: CRITICAL"));
    }

    #[test]
    fn alerts_route_by_severity_and_undelivered_ones_are_kept_for_later() {
        let run = vec![
            check("a", "x", Status::Warn),
            check("a", "y", Status::Critical),
            check("b", "z", Status::Critical),
        ];
        let (alerts, next) = plan(&AlertState::default(), &run, at(0), |_| {
            DEFAULT_REPEAT_INTERVAL
        });
        let variable_of = |service: &str| match service {
            "a" => "SLACK_WEBHOOK_URL".to_string(),
            _ => "OTHER_HOOK".to_string(),
        };
        let set = ["SLACK_WEBHOOK_URL", "SLACK_WEBHOOK_URL_CRITICAL"];
        let (destinations, unrouted) =
            route(alerts.clone(), variable_of, |name| set.contains(&name));
        assert_eq!(destinations.len(), 2);
        assert_eq!(destinations[0].variable, "SLACK_WEBHOOK_URL");
        assert_eq!(destinations[0].alerts[0].check.check, "x");
        assert_eq!(destinations[1].variable, "SLACK_WEBHOOK_URL_CRITICAL");
        assert_eq!(destinations[1].alerts[0].check.check, "y");
        assert_eq!(unrouted.len(), 1, "b has no webhook");
        // `x` was not delivered: the next run alerts it again as new.
        let kept = settle(&AlertState::default(), next, &[&alerts[0]]);
        assert!(!kept.checks.contains_key("a/x"));
        assert!(kept.checks.contains_key("a/y"));
        let (again, _) = plan(&kept, &run, at(1), |_| DEFAULT_REPEAT_INTERVAL);
        assert_eq!(kinds(&again), [("x".into(), Kind::New)]);
    }

    /// `check` and `health` printed the missing-credentials sentence once per check and per
    /// service: six times in one Slack digest. Results that share one cause are one line.
    #[test]
    fn the_digest_groups_results_that_share_one_cause() {
        let alert = |service: &str, name: &str, message: &str| Alert {
            kind: Kind::New,
            level: Level::Warning,
            check: HealthCheck {
                service: service.into(),
                check: name.into(),
                value: None,
                message: Some(message.into()),
                ..check(service, name, Status::Error)
            },
        };
        let alerts = vec![
            alert("a", "Coverage", "`bigquery` is unavailable: cannot create the BigQuery client: no Google credentials"),
            alert("a", "Deployment Drift", "drift unknown: the platform cannot be read: no Google credentials"),
            alert("b", "Latency", "`cloud-monitoring` is unavailable: no Google credentials"),
            alert("b", "Freshness", "`prometheus` is unavailable: connection refused"),
        ];
        let grouped = grouped_by_cause(&alerts);
        assert_eq!(grouped.len(), 2, "{grouped:#?}");
        assert_eq!(grouped[0].check.service, "a, b");
        assert_eq!(
            grouped[0].check.check,
            "3 checks (Coverage, Deployment Drift, Latency)"
        );
        assert!(grouped[0]
            .check
            .message
            .as_deref()
            .unwrap()
            .starts_with("no Google credentials"));
        assert_eq!(grouped[1], alerts[3]);
    }
}
