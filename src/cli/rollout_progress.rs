//! The progress of one service's guarded rollout as it is drawn on stderr: a spinner line on a
//! terminal (the analysis updates one live line), plain lines otherwise, prefixed with the
//! service's name in a deploy of several, JSON objects with `--format json`; and the reporter
//! that has the `started` notification sent beside the drawing when the rollout of the image
//! starts.

use std::{io::IsTerminal, sync::Mutex, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

use super::Context;
use crate::{
    notify::rollout::{RolloutEvent, RolloutNotice, RolloutNotifications},
    rollout::{
        events::{Event, Outcome, RolloutReporter},
        machine::Phase,
        observation::{MetricResult, Status},
    },
};

/// Progress: a spinner line on a terminal, plain lines otherwise.
pub(super) struct Progress {
    bar: Option<ProgressBar>,
    json: bool,
    last_line: Mutex<String>,
    /// `[SERVICE] ` before every line, in a deploy of several services.
    prefix: String,
}

impl Progress {
    pub(super) fn new(context: &Context) -> Self {
        let bar = (std::io::stderr().is_terminal() && !context.output.is_json()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            json: context.output.is_json(),
            last_line: Mutex::new(String::new()),
            prefix: String::new(),
        }
    }

    /// Plain lines prefixed with the service's name: several rollouts draw at once.
    pub(super) fn within_fleet(&mut self, service: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.prefix = format!("[{service}] ");
    }

    fn line(&self, text: String) {
        let text = format!("{}{text}", self.prefix);
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One look's results: the worst first, each `NAME STATUS (detail)`.
fn results_text(results: &[MetricResult]) -> String {
    let mut sorted: Vec<&MetricResult> = results.iter().collect();
    sorted.sort_by_key(|result| std::cmp::Reverse(result.status));
    sorted
        .iter()
        .map(|result| {
            let wide = if result.service_wide && result.status == Status::Fail {
                " (SERVICE-WIDE)"
            } else {
                ""
            };
            format!(
                "{} {}{wide} — {}",
                result.name,
                result.status.label(),
                result.detail
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl RolloutReporter for Progress {
    fn event(&self, event: &Event) {
        if self.json {
            // Machine-readable progress on stderr, one JSON object per line.
            if let Ok(line) = serde_json::to_string(event) {
                eprintln!("{line}");
            }
            return;
        }
        let text = match event {
            Event::LockTaken { holder } => format!("lock taken: {holder}"),
            Event::InterruptedRolloutFound { journal } => format!(
                "found an interrupted rollout `{}` of `{}` in phase `{:?}` at {}% (owner {})",
                journal.id,
                journal.canary,
                journal.state.phase,
                journal.state.percent,
                journal.owner
            ),
            Event::Notice { message } => message.clone(),
            Event::Warning { message } => format!("warning: {message}"),
            Event::Deploying {
                service,
                target,
                image,
                commit,
            } => format!("deploying `{service}` to {target}: image {image}, commit {commit}"),
            Event::SettingsChanged { changes } => format!(
                "the new revision differs from the stable one: {}",
                changes.join("; ")
            ),
            Event::RevisionCreated { revision } => format!(
                "created revision `{revision}` with 0% traffic and tag `canary`"
            ),
            Event::IdentityVerified {
                url,
                service,
                commit,
            } => format!(
                "identity verified: `{url}` reports service `{service}` and commit `{commit}`; image digest matches"
            ),
            Event::Validation { results } => {
                format!("validation: {}", results_text(results))
            }
            Event::TrafficMoved {
                canary_percent,
                split,
            } => format!(
                "traffic: canary {canary_percent}% ({})",
                split
                    .iter()
                    .map(|target| format!(
                        "{} {}%",
                        target.revision.as_deref().unwrap_or("latest"),
                        target.percent
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Event::Analysis {
                phase,
                canary_percent,
                results,
                remaining,
                ..
            } => {
                let label = if *phase == Phase::Monitoring {
                    "monitor".to_string()
                } else {
                    format!("{canary_percent:>3}%")
                };
                let text = format!(
                    "[{label}] {} ({} left)",
                    results_text(results),
                    humantime::format_duration(Duration::from_secs(remaining.as_secs()))
                );
                if let Some(bar) = &self.bar {
                    // On a terminal the analysis updates one live line.
                    bar.set_message(text);
                    return;
                }
                text
            }
            Event::RollingBack { to, reason } => {
                format!("rolling back: 100% to `{to}` — {reason}")
            }
            Event::Finished { outcome } => match outcome {
                Outcome::Promoted { .. } => "rollout finished: promoted".to_string(),
                Outcome::StoppedBeforeTraffic { .. } => "rollout finished: stopped before any traffic moved".to_string(),
                Outcome::RolledBack { .. } => "rollout finished: rolled back".to_string(),
                Outcome::Held { .. } => "rollout finished: held for a human".to_string(),
                Outcome::RollbackFailed { .. } => "rollout finished: THE ROLLBACK FAILED".to_string(),
            },
        };
        let mut last = self
            .last_line
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last != text {
            self.line(text.clone());
            *last = text;
        }
    }
}

/// Draws every event and, when the rollout of the image starts (`deploying`), has the
/// `started` notification sent beside it (never awaited here: a slow webhook cannot delay the
/// rollout).
pub(super) struct Notifying<'a> {
    pub(super) progress: &'a Progress,
    pub(super) notifications: RolloutNotifications,
}

impl RolloutReporter for Notifying<'_> {
    fn event(&self, event: &Event) {
        self.progress.event(event);
        if let Event::Deploying {
            service,
            image,
            commit,
            ..
        } = event
        {
            self.notifications.start(RolloutNotice {
                image: Some(image.clone()),
                commit: Some(commit.clone()),
                ..RolloutNotice::new(RolloutEvent::Started, service)
            });
        }
    }
}
