//! Rollout notifications against the wire formats they meet: the Slack stand-in (strict about
//! payloads, `429` with `Retry-After` on demand, per-hook routing) and a JSON webhook stand-in
//! that can refuse or hang. What is proven: a rate-limited message is delivered once, a CRITICAL
//! event goes to `<VAR>_CRITICAL`, the webhook gets the documented object, failures are warning
//! lines naming the variable and never the URL, and a hanging receiver is cut off at the
//! deadline. `tests/rollout_emulator.rs` runs the `deploy` command with them.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "support/slack.rs"]
mod slack;
#[path = "support/webhook.rs"]
mod webhook;

use std::{collections::BTreeMap, time::Duration};

use deployer::{
    config::ServiceConfig,
    notify::rollout::{RolloutEvent, RolloutNotice, RolloutNotifier},
};
use slack::SlackStandIn;
use webhook::{Behaviour, WebhookStandIn};

const BASE_HOOK: &str = "T000/B000/base-s3cr3t";
const CRITICAL_HOOK: &str = "T000/B000/critical-s3cr3t";

/// The service `hello`, with `notifications` as the lines of its `[notifications]`.
fn service(notifications: &str) -> ServiceConfig {
    toml::from_str(&format!(
        "name = \"hello\"\nrunbook = \"runbooks/hello.md\"\n[target]\nkind = \"local\"\n\
         [image]\nrepository = \"r/hello\"\n[notifications]\n{notifications}\n"
    ))
    .unwrap()
}

fn notifier(notifications: &str, env: &[(&str, String)]) -> RolloutNotifier {
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    RolloutNotifier::new(&service(notifications), move |name| env.get(name).cloned())
}

fn rolled_back() -> RolloutNotice {
    RolloutNotice {
        revision: Some("hello-00002-new".into()),
        stable: Some("hello-00001-old".into()),
        reason: Some("canary 5xx 30.0% (9/30) vs stable 0.0% (0/270)".into()),
        rollout_id: Some("r-123".into()),
        ..RolloutNotice::new(RolloutEvent::RolledBack, "hello")
    }
}

#[tokio::test]
async fn a_slack_429_with_retry_after_is_waited_out_and_the_message_delivered_once() {
    let slack = SlackStandIn::start(&[BASE_HOOK]);
    slack.lock().rate_limit_next = 1;
    let notifier = notifier("", &[("SLACK_WEBHOOK_URL", slack.hook_url(BASE_HOOK))]);
    let warnings = notifier.send(&rolled_back()).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(slack.lock().answers, [429, 200]);
    let messages = slack.messages(BASE_HOOK);
    assert_eq!(messages.len(), 1);
    let text = messages[0]["text"].as_str().unwrap();
    assert!(text.contains("`hello` rolled back (WARNING)"), "{text}");
    assert!(text.contains("(9/30)"), "the numbers travel: {text}");
}

#[tokio::test]
async fn a_rollback_failure_goes_to_the_critical_webhook_and_a_start_to_the_base_one() {
    let slack = SlackStandIn::start(&[BASE_HOOK, CRITICAL_HOOK]);
    let notifier = notifier(
        "",
        &[
            ("SLACK_WEBHOOK_URL", slack.hook_url(BASE_HOOK)),
            ("SLACK_WEBHOOK_URL_CRITICAL", slack.hook_url(CRITICAL_HOOK)),
        ],
    );
    let failed = RolloutNotice {
        reason: Some("the rollback to `hello-00001-old` failed: 403".into()),
        ..RolloutNotice::new(RolloutEvent::RollbackFailed, "hello")
    };
    assert!(notifier.send(&failed).await.is_empty());
    assert!(notifier
        .send(&RolloutNotice::new(RolloutEvent::Started, "hello"))
        .await
        .is_empty());
    let critical = slack.messages(CRITICAL_HOOK);
    assert_eq!(critical.len(), 1);
    assert!(critical[0]["blocks"][1]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with("*CRITICAL* · *ROLLBACK FAILED"));
    let base = slack.messages(BASE_HOOK);
    assert_eq!(base.len(), 1, "INFO goes to the base variable only");
    assert!(base[0]["text"]
        .as_str()
        .unwrap()
        .contains("rollout started"));
}

#[tokio::test]
async fn the_json_webhook_receives_the_documented_object() {
    let receiver = WebhookStandIn::start(Behaviour::Accept);
    receiver.lock().rate_limit_next = 1;
    let notifier = notifier(
        "webhook_env = \"DEPLOYER_WEBHOOK_URL\"\ngithub_repository = \"acme/shop\"",
        &[
            ("DEPLOYER_WEBHOOK_URL", receiver.hook_url("s3cr3t")),
            ("GITHUB_ACTOR", "octocat".into()),
            ("GITHUB_REPOSITORY", "acme/shop".into()),
            ("GITHUB_RUN_ID", "99".into()),
        ],
    );
    let warnings = notifier.send(&rolled_back()).await;
    assert!(warnings.is_empty(), "{warnings:?}");
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 1, "after one 429, delivered once");
    let body = &bodies[0];
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "at",
            "commit",
            "event",
            "image",
            "level",
            "reason",
            "revision",
            "rollout_id",
            "run_url",
            "runbook",
            "runbook_url",
            "service",
            "stable",
            "who"
        ]
    );
    assert_eq!(body["event"], "rolled-back");
    assert_eq!(body["level"], "WARNING");
    assert_eq!(body["revision"], "hello-00002-new");
    assert_eq!(body["stable"], "hello-00001-old");
    assert_eq!(body["who"], "octocat");
    assert_eq!(
        body["run_url"],
        "https://github.com/acme/shop/actions/runs/99"
    );
    assert_eq!(
        body["runbook_url"],
        "https://github.com/acme/shop/blob/main/runbooks/hello.md"
    );
    assert_eq!(body["rollout_id"], "r-123");
    assert!(chrono::DateTime::parse_from_rfc3339(body["at"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn failed_sends_are_warning_lines_naming_the_variable_never_the_url() {
    let slack = SlackStandIn::start(&[]);
    let receiver = WebhookStandIn::start(Behaviour::Refuse(500));
    let notifier = notifier(
        "slack_webhook_env = \"TEAM_SLACK\"\nwebhook_env = \"TEAM_HOOK\"",
        &[
            ("TEAM_SLACK", slack.hook_url(BASE_HOOK)),
            ("TEAM_HOOK", receiver.hook_url("s3cr3t")),
        ],
    );
    let warnings = notifier.send(&rolled_back()).await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("`TEAM_SLACK`") && warnings[0].contains("404 no_service"));
    assert!(warnings[1].contains("`TEAM_HOOK`") && warnings[1].contains("500"));
    for warning in &warnings {
        assert!(!warning.contains("s3cr3t"), "{warning}");
        assert!(!warning.contains(&slack.url) && !warning.contains(&receiver.url));
    }
    assert!(!format!("{notifier:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn a_hanging_webhook_is_cut_off_at_the_deadline_and_slack_still_gets_the_message() {
    let slack = SlackStandIn::start(&[BASE_HOOK]);
    let receiver = WebhookStandIn::start(Behaviour::Hang);
    let notifier = notifier(
        "webhook_env = \"DEPLOYER_WEBHOOK_URL\"",
        &[
            ("SLACK_WEBHOOK_URL", slack.hook_url(BASE_HOOK)),
            ("DEPLOYER_WEBHOOK_URL", receiver.hook_url("s3cr3t")),
        ],
    )
    .with_deadline(Duration::from_millis(500));
    let warnings = notifier.send(&rolled_back()).await;
    assert_eq!(
        warnings,
        ["the `rolled-back` notification was not delivered to the JSON webhook: the webhook in `DEPLOYER_WEBHOOK_URL` did not answer within 500ms"]
    );
    assert_eq!(receiver.lock().requests, 1);
    assert_eq!(slack.messages(BASE_HOOK).len(), 1);
}
