//! [`alert`]: one health run's alert cycle. Plans the run's alerts against the stored lifecycle
//! ([`super::alerts`]), routes them to the webhooks their services name, sends one digest per
//! webhook, and saves the lifecycle of what was delivered; [`AlertReport`] is what happened.
//! Says every step through [`Probe::say`], never a webhook's URL.

use serde::Serialize;

use super::{
    alerts::{self, Alert, Kind, Level},
    run::Probe,
    store::Store,
    HealthCheck, Score,
};
use crate::{config::ServiceConfig, notify::slack::Webhook};

/// What happened to this run's alerts.
#[derive(Debug, Default, Serialize)]
pub struct AlertReport {
    /// The alerts of the run (new, worse, repeat, resolved).
    pub planned: Vec<PlannedAlert>,
    /// One per webhook.
    pub deliveries: Vec<Delivery>,
    /// Alerts with no webhook variable set.
    pub not_sent: usize,
}

/// One alert of the run.
#[derive(Debug, Serialize)]
pub struct PlannedAlert {
    /// The service.
    pub service: String,
    /// The check.
    pub check: String,
    /// New, worse, repeat, resolved.
    pub kind: Kind,
    /// Its level.
    pub level: Level,
}

/// One digest sent (or not).
#[derive(Debug, Serialize)]
pub struct Delivery {
    /// The variable holding the webhook (never its value).
    pub variable: String,
    /// The alerts it carried.
    pub alerts: usize,
    /// Whether it was delivered.
    pub delivered: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn variable_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

/// Plans this run's alerts against the stored lifecycle, sends one digest per webhook, and
/// keeps the state of what was delivered. Says every step (never a URL).
pub(super) async fn alert(
    probe: &impl Probe,
    store: &Store,
    configs: &[ServiceConfig],
    results: &[HealthCheck],
    score: &Score,
    now: chrono::DateTime<chrono::Utc>,
) -> AlertReport {
    let mut report = AlertReport::default();
    let previous = match store.load_alerts().await {
        Ok(state) => state,
        Err(error) => {
            probe.say(format!(
                "warning: {error}: alerts start over (every failing check alerts as new)"
            ));
            Default::default()
        }
    };
    let config_of = |service: &str| {
        configs
            .iter()
            .find(|config| config.target_label() == service)
    };
    let (planned, next) = alerts::plan(&previous, results, now, |check| {
        config_of(&check.service)
            .and_then(|config| config.notifications.repeat_interval)
            .map(|interval| interval.get())
            .unwrap_or(alerts::DEFAULT_REPEAT_INTERVAL)
    });
    report.planned = planned
        .iter()
        .map(|alert| PlannedAlert {
            service: alert.check.service.clone(),
            check: alert.check.check.clone(),
            kind: alert.kind,
            level: alert.level,
        })
        .collect();
    let repositories = configs
        .iter()
        .filter_map(|config| {
            let repository = config.notifications.github_repository.as_ref()?;
            let server = std::env::var("GITHUB_SERVER_URL")
                .ok()
                .filter(|value| !value.trim().is_empty())
                .unwrap_or_else(|| "https://github.com".into());
            Some((
                config.target_label(),
                format!("{}/{repository}/blob/main", server.trim_end_matches('/')),
            ))
        })
        .collect();
    let (destinations, unrouted) = alerts::route(
        planned,
        |service| {
            config_of(service)
                .map(|config| config.notifications.slack_webhook_env.clone())
                .unwrap_or_else(|| "SLACK_WEBHOOK_URL".into())
        },
        variable_set,
    );
    report.not_sent = unrouted.len();
    if !unrouted.is_empty() {
        let mut variables: Vec<String> = unrouted
            .iter()
            .filter_map(|alert| config_of(&alert.check.service))
            .map(|config| format!("`{}`", config.notifications.slack_webhook_env))
            .collect();
        variables.dedup();
        probe.say(format!(
            "warning: {} alert(s) not sent: no Slack webhook is set ({})",
            unrouted.len(),
            variables.join(", ")
        ));
    }
    let mut undelivered: Vec<&Alert> = unrouted.iter().collect();
    for destination in &destinations {
        let message = alerts::digest(
            &alerts::grouped_by_cause(&destination.alerts),
            score,
            &repositories,
        );
        let url = std::env::var(&destination.variable).unwrap_or_default();
        let sent = match Webhook::new(&destination.variable, &url) {
            Ok(webhook) => webhook.post(&message).await,
            Err(error) => Err(error),
        };
        match &sent {
            Ok(()) => probe.say(format!(
                "Slack: sent {} alert(s) through the webhook in `{}`",
                destination.alerts.len(),
                destination.variable
            )),
            Err(error) => {
                probe.say(format!("error: {error}"));
                undelivered.extend(destination.alerts.iter());
            }
        }
        report.deliveries.push(Delivery {
            variable: destination.variable.clone(),
            alerts: destination.alerts.len(),
            delivered: sent.is_ok(),
            error: sent.err().map(|error| error.to_string()),
        });
    }
    let kept = alerts::settle(&previous, next, &undelivered);
    if kept != previous {
        if let Err(error) = store.save_alerts(&kept, now).await {
            probe.say(format!("error: the alert state is not saved: {error}"));
            report.deliveries.push(Delivery {
                variable: "state".into(),
                alerts: 0,
                delivered: false,
                error: Some(error.to_string()),
            });
        }
    }
    report
}
