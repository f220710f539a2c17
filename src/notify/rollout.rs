//! Rollout notifications: what a rollout tells the team as it starts and as it ends (promoted,
//! stopped, rolled back, held, aborted, rollback failed), to Slack and to a generic JSON webhook.
//!
//! Commands build one [`RolloutNotifier`] from the service file and the environment, and hand
//! it a [`RolloutNotice`] per event. Routing follows `health`: the level's Slack variable
//! (`<VAR>_WARNING`, `<VAR>_CRITICAL`) when set, else `<VAR>` (`notifications.slack_webhook_env`);
//! INFO (started, promoted) goes to `<VAR>` only. The JSON webhook (the variable named by
//! `notifications.webhook_env`) gets every chosen event, as the object [`RolloutNotifier::webhook_body`]
//! documents. A variable that is unset turns its channel off.
//!
//! A notification never blocks or fails a rollout: [`RolloutNotifier::send`] sends to every
//! destination at once, each bounded by one deadline (rate-limit waits included, a receiver that
//! hangs is cut off), and returns failures as warning lines for the command to print; it never
//! returns an error. Commands send an outcome after its traffic write landed, never before.
//! Nothing here prints, and no line carries a webhook URL: they name the variable.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::{
    slack::{escape, route_variable, Webhook, MAX_HEADER_CHARS, MAX_SECTION_CHARS, MAX_TEXT_CHARS},
    webhook::JsonWebhook,
};
pub use crate::config::RolloutEvent;
use crate::{
    config::ServiceConfig,
    rollout::events::{Outcome, RolloutReport},
    untrusted::ellipsized,
};

/// How long one notification may take to each destination, 429 waits included.
pub const SEND_DEADLINE: Duration = Duration::from_secs(10);

/// Characters of the why line in a Slack section (within [`MAX_SECTION_CHARS`]).
const REASON_CHARS: usize = 2000;

/// How urgent an event is: the Slack routing and the webhook's `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NoticeLevel {
    /// Started, promoted: to `<VAR>` only.
    Info,
    /// Stopped, rolled back, held, aborted: a human should look.
    Warning,
    /// The rollback failed: a human must act now.
    Critical,
}

impl NoticeLevel {
    /// The level of `event`.
    pub fn of(event: RolloutEvent) -> NoticeLevel {
        match event {
            RolloutEvent::Started | RolloutEvent::Promoted => NoticeLevel::Info,
            RolloutEvent::Stopped
            | RolloutEvent::RolledBack
            | RolloutEvent::Held
            | RolloutEvent::Aborted => NoticeLevel::Warning,
            RolloutEvent::RollbackFailed => NoticeLevel::Critical,
        }
    }

    /// `INFO`, `WARNING`, `CRITICAL`.
    pub fn label(self) -> &'static str {
        match self {
            NoticeLevel::Info => "INFO",
            NoticeLevel::Warning => "WARNING",
            NoticeLevel::Critical => "CRITICAL",
        }
    }

    /// The suffix of the Slack variable of this level (`None`: the base variable).
    fn slack_suffix(self) -> Option<&'static str> {
        match self {
            NoticeLevel::Info => None,
            NoticeLevel::Warning | NoticeLevel::Critical => Some(self.label()),
        }
    }
}

/// One rollout event of one service, as the command knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutNotice {
    /// What happened.
    pub event: RolloutEvent,
    /// The service.
    pub service: String,
    /// The new revision (the canary), once created.
    pub revision: Option<String>,
    /// The stable revision (where a rollback or an abort put 100%).
    pub stable: Option<String>,
    /// The commit deployed.
    pub commit: Option<String>,
    /// The image deployed.
    pub image: Option<String>,
    /// The why line, with its numbers.
    pub reason: Option<String>,
    /// The rollout's id, once it has one (the lock is taken).
    pub rollout_id: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
}

impl RolloutNotice {
    /// `event` of `service`, now, with nothing else known yet.
    pub fn new(event: RolloutEvent, service: &str) -> Self {
        Self {
            event,
            service: service.to_string(),
            revision: None,
            stable: None,
            commit: None,
            image: None,
            reason: None,
            rollout_id: None,
            at: Utc::now(),
        }
    }

    /// The notice of a finished rollout's `report`.
    pub fn of_report(report: &RolloutReport) -> Self {
        let (event, reason, stable) = match &report.outcome {
            Outcome::Promoted { .. } => (RolloutEvent::Promoted, None, report.stable.clone()),
            Outcome::StoppedBeforeTraffic { reason } => {
                (RolloutEvent::Stopped, Some(reason), report.stable.clone())
            }
            Outcome::RolledBack { reason, revision } => (
                RolloutEvent::RolledBack,
                Some(reason),
                Some(revision.clone()),
            ),
            Outcome::Held { reason } => (RolloutEvent::Held, Some(reason), report.stable.clone()),
            Outcome::RollbackFailed { reason } => (
                RolloutEvent::RollbackFailed,
                Some(reason),
                report.stable.clone(),
            ),
        };
        let revision = match &report.outcome {
            Outcome::Promoted { revision } => Some(revision.clone()),
            _ => report.canary.clone(),
        };
        Self {
            revision,
            stable,
            reason: reason.cloned(),
            rollout_id: report.id.clone(),
            ..Self::new(event, &report.service)
        }
    }
}

impl RolloutNotice {
    /// How the rollout that `started` ends: its `report`'s notice, or `stopped` when its
    /// rollout could not start (`Err(why)`); with the commit and image of the opening notice.
    pub fn ending(started: &RolloutNotice, report: Result<&RolloutReport, String>) -> Self {
        let ending = match report {
            Ok(report) => RolloutNotice::of_report(report),
            Err(why) => RolloutNotice {
                reason: Some(format!("the rollout could not start: {why}")),
                ..RolloutNotice::new(RolloutEvent::Stopped, &started.service)
            },
        };
        RolloutNotice {
            commit: started.commit.clone(),
            image: started.image.clone(),
            ..ending
        }
    }
}

/// Sends rollout notices of one service to its Slack webhook and JSON webhook.
pub struct RolloutNotifier {
    /// The events chosen in the service file.
    events: Vec<RolloutEvent>,
    /// `notifications.slack_webhook_env`.
    slack_base: String,
    /// `notifications.webhook_env`.
    webhook_variable: Option<String>,
    /// Every set variable that may hold a webhook, with its URL (secret).
    urls: BTreeMap<String, String>,
    /// user@host, or the CI actor.
    who: String,
    /// The CI run, when in GitHub Actions.
    run_url: Option<String>,
    /// The service file's `runbook` path.
    runbook: String,
    /// The runbook on the web, when the repository is known.
    runbook_url: Option<String>,
    /// Per destination and notice.
    deadline: Duration,
}

impl std::fmt::Debug for RolloutNotifier {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RolloutNotifier")
            .field("events", &self.events)
            .field("variables_set", &self.urls.keys().collect::<Vec<_>>())
            .field("who", &self.who)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl RolloutNotifier {
    /// The notifier of `config`'s service; `env` reads environment variables (the webhook URLs,
    /// `GITHUB_ACTOR`, `GITHUB_SERVER_URL`, `GITHUB_REPOSITORY`, `GITHUB_RUN_ID`). Blank values
    /// count as unset.
    pub fn new(config: &ServiceConfig, env: impl Fn(&str) -> Option<String>) -> Self {
        let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let notifications = &config.notifications;
        let slack_base = notifications.slack_webhook_env.clone();
        let candidates = [
            Some(slack_base.clone()),
            Some(format!("{slack_base}_{}", NoticeLevel::Warning.label())),
            Some(format!("{slack_base}_{}", NoticeLevel::Critical.label())),
            notifications.webhook_env.clone(),
        ];
        let urls = candidates
            .into_iter()
            .flatten()
            .filter_map(|variable| env(&variable).map(|url| (variable, url)))
            .collect();
        let who = env("GITHUB_ACTOR").unwrap_or_else(crate::process::current_owner);
        let server = env("GITHUB_SERVER_URL")
            .map(|server| server.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| "https://github.com".into());
        let run_url = match (env("GITHUB_REPOSITORY"), env("GITHUB_RUN_ID")) {
            (Some(repository), Some(run)) => Some(format!(
                "{server}/{}/actions/runs/{}",
                repository.trim(),
                run.trim()
            )),
            _ => None,
        };
        let runbook_url = notifications
            .github_repository
            .clone()
            .or_else(|| env("GITHUB_REPOSITORY"))
            .map(|repository| {
                format!(
                    "{server}/{}/blob/main/{}",
                    repository.trim(),
                    config.runbook.trim_start_matches("./")
                )
            });
        Self {
            events: notifications
                .rollout_events
                .clone()
                .unwrap_or_else(|| RolloutEvent::ALL.to_vec()),
            slack_base,
            webhook_variable: notifications.webhook_env.clone(),
            urls,
            who,
            run_url,
            runbook: config.runbook.clone(),
            runbook_url,
            deadline: SEND_DEADLINE,
        }
    }

    /// The same notifier with another deadline per destination.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The deadline per destination: the longest [`RolloutNotifier::send`] takes.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// True when the service file chose `event`.
    pub fn wants(&self, event: RolloutEvent) -> bool {
        self.events.contains(&event)
    }

    /// Who is deploying: `GITHUB_ACTOR` in CI, else user@host.
    pub fn who(&self) -> &str {
        &self.who
    }

    /// The variables `notice` goes to: its Slack variable (routed by level) and the JSON
    /// webhook's, those that are set; none when the event is not chosen.
    pub fn destinations(&self, notice: &RolloutNotice) -> Vec<String> {
        if !self.wants(notice.event) {
            return Vec::new();
        }
        let level = NoticeLevel::of(notice.event);
        let slack = route_variable(&self.slack_base, level.slack_suffix(), |name| {
            self.urls.contains_key(name)
        });
        let webhook = self
            .webhook_variable
            .clone()
            .filter(|variable| self.urls.contains_key(variable));
        slack.into_iter().chain(webhook).collect()
    }

    /// Sends `notice` to every destination at once, each bounded by the deadline; returns one
    /// warning line per destination that did not take it (naming the variable, never the URL).
    pub async fn send(&self, notice: &RolloutNotice) -> Vec<String> {
        let destinations = self.destinations(notice);
        let webhook_variable = self.webhook_variable.as_deref();
        let slack = destinations
            .iter()
            .find(|variable| Some(variable.as_str()) != webhook_variable);
        let webhook = destinations
            .iter()
            .find(|variable| Some(variable.as_str()) == webhook_variable);
        let to_slack = async {
            let variable = slack?;
            let url = self.urls.get(variable)?;
            let message = self.slack_message(notice);
            let sent = async {
                Webhook::new(variable, url)?
                    .with_max_wait(self.deadline)
                    .post(&message)
                    .await
            };
            self.bounded(notice, "Slack", variable, sent).await
        };
        let to_webhook = async {
            let variable = webhook?;
            let url = self.urls.get(variable)?;
            let body = self.webhook_body(notice);
            let sent = async {
                JsonWebhook::new(variable, url)?
                    .with_max_wait(self.deadline)
                    .post(&body)
                    .await
            };
            self.bounded(notice, "the JSON webhook", variable, sent)
                .await
        };
        let (slack, webhook) = tokio::join!(to_slack, to_webhook);
        slack.into_iter().chain(webhook).collect()
    }

    /// `sent` cut off at the deadline; a warning line when it failed or was cut off.
    async fn bounded<E: std::fmt::Display>(
        &self,
        notice: &RolloutNotice,
        channel: &str,
        variable: &str,
        sent: impl std::future::Future<Output = Result<(), E>>,
    ) -> Option<String> {
        let event = notice.event.name();
        match tokio::time::timeout(self.deadline, sent).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!(
                "the `{event}` notification was not delivered to {channel}: {error}"
            )),
            Err(_) => Some(format!(
                "the `{event}` notification was not delivered to {channel}: the webhook in `{variable}` did not answer within {}",
                humantime::format_duration(self.deadline)
            )),
        }
    }

    /// The JSON webhook's body, a stable object:
    ///
    /// `event` (`started`, `promoted`, `stopped`, `rolled-back`, `held`, `aborted`,
    /// `rollback-failed`), `level` (`INFO`, `WARNING`, `CRITICAL`), `service`, `revision` (the new
    /// revision), `stable` (the stable revision; after a rollback or an abort, where 100% went),
    /// `commit`, `image`, `reason` (the why line with its numbers), `who`, `run_url`, `runbook`
    /// (the service file's path), `runbook_url`, `rollout_id`, `at` (RFC 3339, UTC). Unknown
    /// values are `null`; every key is always present.
    pub fn webhook_body(&self, notice: &RolloutNotice) -> Value {
        json!({
            "event": notice.event.name(),
            "level": NoticeLevel::of(notice.event).label(),
            "service": notice.service,
            "revision": notice.revision,
            "stable": notice.stable,
            "commit": notice.commit,
            "image": notice.image,
            "reason": notice.reason,
            "who": self.who,
            "run_url": self.run_url,
            "runbook": self.runbook,
            "runbook_url": self.runbook_url,
            "rollout_id": notice.rollout_id,
            "at": notice.at.to_rfc3339_opts(SecondsFormat::Secs, true),
        })
    }

    /// The Slack message: a `text` fallback and Block Kit blocks (a header, the revisions and
    /// the why line, and a context line with who, the commit, the rollout, the CI run and the
    /// runbook), within Slack's limits, text from elsewhere escaped.
    pub fn slack_message(&self, notice: &RolloutNotice) -> Value {
        let level = NoticeLevel::of(notice.event);
        let title = format!("{}: {}", notice.service, headline(notice.event));
        let mut lines = vec![format!(
            "*{}* · *{}* `{}`",
            level.label(),
            headline(notice.event),
            escape(&notice.service)
        )];
        let revisions: Vec<String> = [
            ("new revision", &notice.revision),
            ("stable", &notice.stable),
        ]
        .into_iter()
        .filter_map(|(label, revision)| {
            Some(format!("*{label}:* `{}`", escape(revision.as_deref()?)))
        })
        .collect();
        if !revisions.is_empty() {
            lines.push(revisions.join(" · "));
        }
        if let Some(image) = &notice.image {
            lines.push(format!("*image:* `{}`", escape(image)));
        }
        if let Some(reason) = &notice.reason {
            lines.push(format!(
                "*why:* {}",
                escape(&ellipsized(reason, REASON_CHARS))
            ));
        }
        let mut context = vec![format!("by {}", escape(&self.who))];
        if let Some(commit) = &notice.commit {
            context.push(format!("commit `{}`", escape(commit)));
        }
        if let Some(id) = &notice.rollout_id {
            context.push(format!("rollout `{}`", escape(id)));
        }
        if let Some(run) = &self.run_url {
            context.push(link(run, "CI run"));
        }
        context.push(match &self.runbook_url {
            Some(url) => link(url, "runbook"),
            None => format!("runbook: `{}`", escape(&self.runbook)),
        });
        let context = context.join(" · ");
        let fallback = format!(
            "deployer: `{}` {} ({}){}",
            notice.service,
            headline(notice.event),
            level.label(),
            notice
                .reason
                .as_ref()
                .map(|reason| format!(" — {reason}"))
                .unwrap_or_default()
        );
        json!({
            "text": ellipsized(&escape(&fallback), MAX_TEXT_CHARS),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": ellipsized(&title, MAX_HEADER_CHARS)}},
                {"type": "section", "text": {"type": "mrkdwn", "text": ellipsized(&lines.join("\n"), MAX_SECTION_CHARS)}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": ellipsized(&context, MAX_SECTION_CHARS)}]},
            ]
        })
    }
}

/// The notifications of one rollout: the opening one (`started`) sent in a task beside the
/// rollout, so that a slow receiver never delays it, and the outcome sent at the end while the
/// opening one finishes. A rollout that never started notifies nothing at its end.
#[derive(Debug)]
pub struct RolloutNotifications {
    notifier: Arc<RolloutNotifier>,
    started: Mutex<Option<InFlight>>,
}

/// The opening notice and its send.
#[derive(Debug)]
struct InFlight {
    notice: RolloutNotice,
    send: tokio::task::JoinHandle<Vec<String>>,
}

impl RolloutNotifications {
    /// The notifications of a rollout, through `notifier`.
    pub fn new(notifier: RolloutNotifier) -> Self {
        Self {
            notifier: Arc::new(notifier),
            started: Mutex::new(None),
        }
    }

    /// The notifier.
    pub fn notifier(&self) -> &RolloutNotifier {
        &self.notifier
    }

    /// Sends `notice` (the rollout started) in a task of the current Tokio runtime and returns
    /// at once; outside a runtime, sends nothing. A second call replaces the first's notice.
    pub fn start(&self, notice: RolloutNotice) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (notifier, sent) = (self.notifier.clone(), notice.clone());
        let send = runtime.spawn(async move { notifier.send(&sent).await });
        let previous = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(InFlight { notice, send });
        if let Some(previous) = previous {
            previous.send.abort();
        }
    }

    /// When the rollout started: sends the outcome `outcome_of(started notice)` (call it once
    /// the rollout's traffic writes are done) while the `started` send finishes, both at once,
    /// so the caller waits at most one deadline (and a second's grace for the task). Returns
    /// the warning lines of both; nothing at all when no rollout started.
    pub async fn finish(
        &self,
        outcome_of: impl FnOnce(&RolloutNotice) -> RolloutNotice,
    ) -> Vec<String> {
        let started = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(InFlight { notice, send }) = started else {
            return Vec::new();
        };
        let outcome = outcome_of(&notice);
        // The task is bounded by the notifier's deadline itself; the timeout only guards the
        // join against a task that was starved.
        let grace = self.notifier.deadline() + Duration::from_secs(1);
        let (opening, closing) = tokio::join!(
            tokio::time::timeout(grace, send),
            self.notifier.send(&outcome)
        );
        let mut warnings = match opening {
            Ok(Ok(warnings)) => warnings,
            Ok(Err(_)) | Err(_) => vec![format!(
                "the `{}` notification did not finish sending",
                notice.event.name()
            )],
        };
        warnings.extend(closing);
        warnings
    }
}

/// What happened, in a few words.
fn headline(event: RolloutEvent) -> &'static str {
    match event {
        RolloutEvent::Started => "rollout started",
        RolloutEvent::Promoted => "promoted",
        RolloutEvent::Stopped => "stopped before any traffic moved",
        RolloutEvent::RolledBack => "rolled back",
        RolloutEvent::Held => "held for a human",
        RolloutEvent::Aborted => "aborted",
        RolloutEvent::RollbackFailed => "ROLLBACK FAILED: a human must act now",
    }
}

/// A Slack link `<url|label>`; the URL escaped as Slack asks (`&<>`), and a `|` in it encoded
/// so that it cannot end the URL early.
fn link(url: &str, label: &str) -> String {
    format!("<{}|{label}>", escape(url).replace('|', "%7C"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service `hello` with `notifications` as the lines of its `[notifications]`.
    fn config(notifications: &str) -> ServiceConfig {
        toml::from_str(&format!(
            "name = \"hello\"\nrunbook = \"runbooks/hello.md\"\n[target]\nkind = \"local\"\n\
             [image]\nrepository = \"r/hello\"\n[notifications]\n{notifications}\n"
        ))
        .unwrap()
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    fn report(outcome: Outcome) -> RolloutReport {
        RolloutReport {
            id: Some("r-1".into()),
            service: "hello".into(),
            canary: Some("hello-new".into()),
            stable: Some("hello-old".into()),
            outcome,
            notes: Vec::new(),
        }
    }

    #[test]
    fn each_outcome_maps_to_its_event_and_level() {
        let cases = [
            (
                Outcome::Promoted {
                    revision: "hello-new".into(),
                },
                RolloutEvent::Promoted,
                NoticeLevel::Info,
            ),
            (
                Outcome::StoppedBeforeTraffic {
                    reason: "identity".into(),
                },
                RolloutEvent::Stopped,
                NoticeLevel::Warning,
            ),
            (
                Outcome::RolledBack {
                    reason: "5xx 30% (9/30)".into(),
                    revision: "hello-old".into(),
                },
                RolloutEvent::RolledBack,
                NoticeLevel::Warning,
            ),
            (
                Outcome::Held {
                    reason: "inconclusive".into(),
                },
                RolloutEvent::Held,
                NoticeLevel::Warning,
            ),
            (
                Outcome::RollbackFailed {
                    reason: "403".into(),
                },
                RolloutEvent::RollbackFailed,
                NoticeLevel::Critical,
            ),
        ];
        for (outcome, event, level) in cases {
            let notice = RolloutNotice::of_report(&report(outcome));
            assert_eq!(notice.event, event);
            assert_eq!(NoticeLevel::of(notice.event), level, "{event:?}");
            assert_eq!(notice.revision.as_deref(), Some("hello-new"));
            assert_eq!(notice.stable.as_deref(), Some("hello-old"));
            assert_eq!(notice.rollout_id.as_deref(), Some("r-1"));
        }
        let rolled_back = RolloutNotice::of_report(&report(Outcome::RolledBack {
            reason: "5xx 30% (9/30)".into(),
            revision: "hello-old".into(),
        }));
        assert_eq!(rolled_back.reason.as_deref(), Some("5xx 30% (9/30)"));
    }

    #[test]
    fn a_rollout_that_could_not_start_ends_as_stopped_with_the_opening_commit() {
        let started = RolloutNotice {
            commit: Some("c0ffee".into()),
            image: Some("r/hello@sha256:1".into()),
            ..RolloutNotice::new(RolloutEvent::Started, "hello")
        };
        let ending = RolloutNotice::ending(&started, Err("`hello` is locked by alice".into()));
        assert_eq!(ending.event, RolloutEvent::Stopped);
        assert_eq!(
            ending.reason.as_deref(),
            Some("the rollout could not start: `hello` is locked by alice")
        );
        assert_eq!(ending.commit.as_deref(), Some("c0ffee"));
        let promoted = report(Outcome::Promoted {
            revision: "hello-new".into(),
        });
        let ending = RolloutNotice::ending(&started, Ok(&promoted));
        assert_eq!(ending.event, RolloutEvent::Promoted);
        assert_eq!(ending.image.as_deref(), Some("r/hello@sha256:1"));
    }

    #[test]
    fn levels_route_like_health_alerts_and_info_goes_to_the_base_variable() {
        let notifier = RolloutNotifier::new(
            &config("webhook_env = \"DEPLOYER_WEBHOOK_URL\""),
            env(&[
                ("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/base"),
                ("SLACK_WEBHOOK_URL_CRITICAL", "http://127.0.0.1:9/critical"),
                ("DEPLOYER_WEBHOOK_URL", "http://127.0.0.1:9/json"),
            ]),
        );
        let to = |event| notifier.destinations(&RolloutNotice::new(event, "hello"));
        assert_eq!(
            to(RolloutEvent::RollbackFailed),
            ["SLACK_WEBHOOK_URL_CRITICAL", "DEPLOYER_WEBHOOK_URL"]
        );
        assert_eq!(
            to(RolloutEvent::RolledBack),
            ["SLACK_WEBHOOK_URL", "DEPLOYER_WEBHOOK_URL"]
        );
        assert_eq!(
            to(RolloutEvent::Started),
            ["SLACK_WEBHOOK_URL", "DEPLOYER_WEBHOOK_URL"]
        );
    }

    #[test]
    fn only_the_chosen_events_are_sent_and_unset_variables_send_nothing() {
        let chosen = RolloutNotifier::new(
            &config("rollout_events = [\"rollback-failed\"]"),
            env(&[("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/base")]),
        );
        assert!(chosen
            .destinations(&RolloutNotice::new(RolloutEvent::Started, "hello"))
            .is_empty());
        assert_eq!(
            chosen.destinations(&RolloutNotice::new(RolloutEvent::RollbackFailed, "hello")),
            ["SLACK_WEBHOOK_URL"]
        );
        let blank = RolloutNotifier::new(
            &config("webhook_env = \"HOOK\""),
            env(&[("SLACK_WEBHOOK_URL", "  "), ("HOOK", "")]),
        );
        assert!(blank
            .destinations(&RolloutNotice::new(RolloutEvent::RollbackFailed, "hello"))
            .is_empty());
    }

    #[test]
    fn the_webhook_body_is_the_documented_object_with_ci_who_run_and_runbook() {
        let notifier = RolloutNotifier::new(
            &config(""),
            env(&[
                ("GITHUB_ACTOR", "octocat"),
                ("GITHUB_SERVER_URL", "https://github.example/"),
                ("GITHUB_REPOSITORY", "acme/shop"),
                ("GITHUB_RUN_ID", "42"),
            ]),
        );
        let mut notice = RolloutNotice::of_report(&report(Outcome::RolledBack {
            reason: "5xx 30% (9/30)".into(),
            revision: "hello-old".into(),
        }));
        notice.commit = Some("c0ffee".into());
        notice.at = DateTime::parse_from_rfc3339("2026-02-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let body = notifier.webhook_body(&notice);
        assert_eq!(
            body,
            json!({
                "event": "rolled-back",
                "level": "WARNING",
                "service": "hello",
                "revision": "hello-new",
                "stable": "hello-old",
                "commit": "c0ffee",
                "image": null,
                "reason": "5xx 30% (9/30)",
                "who": "octocat",
                "run_url": "https://github.example/acme/shop/actions/runs/42",
                "runbook": "runbooks/hello.md",
                "runbook_url": "https://github.example/acme/shop/blob/main/runbooks/hello.md",
                "rollout_id": "r-1",
                "at": "2026-02-02T03:04:05Z",
            })
        );
    }

    #[test]
    fn outside_ci_who_is_user_at_host_and_there_is_no_run_url() {
        let notifier = RolloutNotifier::new(&config(""), env(&[]));
        assert_eq!(notifier.who(), crate::process::current_owner());
        let body = notifier.webhook_body(&RolloutNotice::new(RolloutEvent::Started, "hello"));
        assert_eq!(body["run_url"], Value::Null);
        assert_eq!(body["runbook_url"], Value::Null);
        assert_eq!(body["level"], "INFO");
    }

    #[test]
    fn the_slack_message_escapes_what_came_from_elsewhere_and_keeps_within_limits() {
        let notifier = RolloutNotifier::new(
            &config(""),
            env(&[("GITHUB_REPOSITORY", "acme/shop"), ("GITHUB_RUN_ID", "7")]),
        );
        let mut notice = RolloutNotice::of_report(&report(Outcome::RollbackFailed {
            reason: format!("<!channel> 5xx & more {}", "é".repeat(5000)),
        }));
        notice.commit = Some("c0ffee".into());
        let message = notifier.slack_message(&notice);
        let blocks = message["blocks"].as_array().unwrap();
        let header = blocks[0]["text"]["text"].as_str().unwrap();
        assert!(header.chars().count() <= 150);
        assert!(header.contains("ROLLBACK FAILED"));
        let section = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(section.starts_with("*CRITICAL*"));
        assert!(section.contains("&lt;!channel&gt; 5xx &amp; more"));
        assert!(!section.contains("<!channel>"));
        assert!(section.chars().count() <= 3000);
        let context = blocks[2]["elements"][0]["text"].as_str().unwrap();
        assert!(context.contains("<https://github.com/acme/shop/actions/runs/7|CI run>"));
        assert!(
            context.contains("<https://github.com/acme/shop/blob/main/runbooks/hello.md|runbook>")
        );
        assert!(context.contains("commit `c0ffee`"));
        assert!(message["text"].as_str().unwrap().chars().count() <= 3000);
        assert!(!message["text"].as_str().unwrap().contains("<!channel>"));
    }

    /// A receiver that accepts connections and never answers.
    async fn hanging_receiver() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (format!("http://{address}/hook/s3cr3t"), task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_receiver_is_cut_off_at_the_deadline_with_one_warning_naming_the_variable() {
        let (url, receiver) = hanging_receiver().await;
        let leaked: &'static str = Box::leak(url.into_boxed_str());
        let pairs: &'static [(&'static str, &'static str)] = Box::leak(Box::new([
            ("SLACK_WEBHOOK_URL_CRITICAL", leaked),
            ("HOOK", leaked),
        ]));
        let notifier = RolloutNotifier::new(&config("webhook_env = \"HOOK\""), env(pairs));
        let started = tokio::time::Instant::now();
        let warnings = notifier
            .send(&RolloutNotice::new(RolloutEvent::RollbackFailed, "hello"))
            .await;
        let took = started.elapsed();
        // Both destinations at once, each cut off at the deadline: the whole send takes one
        // deadline, not two, and far less than the HTTP client's own 30 s timeout.
        assert!(took >= SEND_DEADLINE, "{took:?}");
        assert!(took < SEND_DEADLINE + Duration::from_secs(1), "{took:?}");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("`SLACK_WEBHOOK_URL_CRITICAL` did not answer within 10s"));
        assert!(warnings[1].contains("`HOOK` did not answer within 10s"));
        for warning in &warnings {
            assert!(!warning.contains("s3cr3t") && !warning.contains("127.0.0.1"));
        }
        receiver.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_receiver_delays_the_end_of_a_rollout_by_at_most_one_deadline() {
        let (url, receiver) = hanging_receiver().await;
        let leaked: &'static str = Box::leak(url.into_boxed_str());
        let pairs: &'static [(&'static str, &'static str)] =
            Box::leak(Box::new([("SLACK_WEBHOOK_URL", leaked), ("HOOK", leaked)]));
        let notifications = RolloutNotifications::new(RolloutNotifier::new(
            &config("webhook_env = \"HOOK\""),
            env(pairs),
        ));
        let began = tokio::time::Instant::now();
        notifications.start(RolloutNotice::new(RolloutEvent::Started, "hello"));
        assert_eq!(began.elapsed(), Duration::ZERO, "`started` never waits");
        // A rollout shorter than the deadline: `started` still hangs when it ends.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let ended = tokio::time::Instant::now();
        let warnings = notifications
            .finish(|started| RolloutNotice {
                reason: Some("canary 5xx 30% (9/30)".into()),
                ..RolloutNotice::new(RolloutEvent::RolledBack, &started.service)
            })
            .await;
        let added = ended.elapsed();
        assert!(added <= SEND_DEADLINE, "{added:?}");
        assert_eq!(
            warnings.len(),
            4,
            "two events × two destinations: {warnings:?}"
        );
        assert!(warnings[0].starts_with("the `started` notification"));
        assert!(warnings[3].starts_with("the `rolled-back` notification"));
        // Nothing started: nothing to finish, at once.
        let before = tokio::time::Instant::now();
        assert!(notifications
            .finish(|_| unreachable!("no rollout started"))
            .await
            .is_empty());
        assert_eq!(before.elapsed(), Duration::ZERO);
        receiver.abort();
    }
}
