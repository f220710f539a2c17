//! The conformance check: the declared wiring against what the live project has, as a pure
//! function of both, so every rule is a row of a table test.
//!
//! | finding | level | why |
//! |---|---|---|
//! | a subscription on a topic some service consumes, declared by no service | CRITICAL | the Session 77 bypass: messages reach something nobody designed |
//! | a declared push subscription pushing anywhere but its service's URL + `push_path` | CRITICAL | the service does not get its messages, something else does |
//! | a declared push subscription that is pull, or a declared pull one that pushes | CRITICAL | same |
//! | a declared subscription on another topic than declared | CRITICAL | the service consumes the wrong events |
//! | a declared subscription missing | CRITICAL | the service gets nothing |
//! | a declared topic missing | WARN | publishing fails, but nothing is delivered wrongly |
//! | a scheduler job missing, or with another schedule, time zone or target | WARN | a periodic run is lost or moved |
//! | an API or a service URL that cannot be read | ERROR | nothing was shown to conform: never a pass |
//!
//! Push endpoints are compared with every URL Cloud Run lists for the service (`urls`, the
//! `*.run.app` forms, and `uri`), each followed by the declared path; a query string (a push
//! verification token) is ignored. Every finding names the subscription or job, its topic,
//! where it delivers, and the fix.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{job_path, short_name, subscription_path, topic_path, Declared, ServiceWiring};
use crate::untrusted::escaped;

/// A subscription as Pub/Sub lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveSubscription {
    /// `projects/P/subscriptions/S`.
    pub name: String,
    /// `projects/P/topics/T` (`_deleted-topic_` when its topic was deleted).
    pub topic: String,
    /// `pushConfig.pushEndpoint`; empty for a pull subscription.
    pub push_endpoint: String,
}

/// Where a scheduler job sends its call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum JobTarget {
    /// `httpTarget.uri`.
    Http {
        /// The URL called.
        uri: String,
    },
    /// `pubsubTarget.topicName`.
    Pubsub {
        /// The topic published to.
        topic: String,
    },
    /// An App Engine target, or none.
    Other,
}

/// A Cloud Scheduler job as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveJob {
    /// `projects/P/locations/R/jobs/J`.
    pub name: String,
    /// The unix-cron schedule.
    pub schedule: String,
    /// The time zone (empty: UTC).
    pub time_zone: String,
    /// Where it calls.
    pub target: JobTarget,
}

/// What Pub/Sub has in the projects read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PubSubState {
    /// Topic names (`projects/P/topics/T`).
    pub topics: BTreeSet<String>,
    /// Every subscription.
    pub subscriptions: Vec<LiveSubscription>,
}

/// What was read from the live project; each part may have been unreadable (the reason).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observed {
    /// Pub/Sub topics and subscriptions.
    pub pubsub: Result<PubSubState, String>,
    /// Cloud Scheduler jobs of the locations read.
    pub scheduler: Result<Vec<LiveJob>, String>,
    /// Every URL of each service, by deployer name, or why it is unknown.
    pub service_urls: BTreeMap<String, Result<Vec<String>, String>>,
}

/// How bad a finding is. Ordered: a CRITICAL outweighs an ERROR, which outweighs a WARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// Look at it.
    Warn,
    /// Could not be checked: never a pass.
    Error,
    /// Events go where nobody designed them to, or nowhere.
    Critical,
}

impl Level {
    /// `WARN`, `ERROR`, `CRITICAL`.
    pub fn label(self) -> &'static str {
        match self {
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A subscription on a consumed topic that no service declares.
    UndeclaredSubscription,
    /// A declared push subscription pushing elsewhere.
    WrongPushEndpoint,
    /// A declared push subscription that is a pull subscription.
    NotPushed,
    /// A declared pull subscription that pushes.
    UnexpectedPush,
    /// A declared subscription on another topic.
    WrongTopic,
    /// A declared subscription that does not exist.
    MissingSubscription,
    /// A declared topic that does not exist.
    MissingTopic,
    /// A declared scheduler job that does not exist.
    MissingJob,
    /// A scheduler job with another schedule or time zone.
    JobSchedule,
    /// A scheduler job calling something else.
    JobTarget,
    /// Something could not be read.
    Unreadable,
}

/// One difference between the declared and the live wiring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What kind.
    pub kind: Kind,
    /// The services concerned (the declaring one; for a bypass, the topic's consumers and the
    /// service it delivers to).
    pub services: Vec<String>,
    /// The subscription, topic or job (full resource name), or the API that was unreadable.
    pub resource: String,
    /// The topic involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Where it delivers (`push to URL (service S)`, `pull`, `nowhere`).
    pub delivers_to: String,
    /// What is wrong, in one line.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// A service's overall conformance: the worst of its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Conformance {
    /// No difference.
    Pass,
    /// Only warnings.
    Warn,
    /// Something could not be checked (and nothing CRITICAL was found).
    Error,
    /// At least one CRITICAL finding.
    Critical,
}

/// The worst of `findings` (those about `service` when given).
pub fn conformance(findings: &[Finding], service: Option<&str>) -> Conformance {
    findings
        .iter()
        .filter(|finding| service.is_none_or(|name| finding.services.iter().any(|s| s == name)))
        .map(|finding| match finding.level {
            Level::Warn => Conformance::Warn,
            Level::Error => Conformance::Error,
            Level::Critical => Conformance::Critical,
        })
        .max()
        .unwrap_or(Conformance::Pass)
}

/// The exit code of `graph --check`: 0 conforming, 1 warnings or errors, 2 any CRITICAL.
pub fn exit_code(findings: &[Finding]) -> u8 {
    match conformance(findings, None) {
        Conformance::Pass => 0,
        Conformance::Warn | Conformance::Error => 1,
        Conformance::Critical => 2,
    }
}

/// `url` without its query string and trailing `/`.
fn base(url: &str) -> &str {
    let without_query = url.split_once('?').map_or(url, |(before, _)| before);
    without_query.trim_end_matches('/')
}

/// True when `endpoint` is `url` + `path` for one of `urls`.
fn matches_any(endpoint: &str, urls: &[String], path: &str) -> bool {
    let endpoint = base(endpoint);
    urls.iter()
        .any(|url| endpoint == format!("{}{}", base(url), path).trim_end_matches('/'))
}

/// The service whose URL `endpoint` points under, if any.
fn service_at<'a>(observed: &'a Observed, endpoint: &str) -> Option<&'a str> {
    let endpoint = base(endpoint);
    observed
        .service_urls
        .iter()
        .find(|(_, urls)| {
            urls.as_ref().is_ok_and(|urls| {
                urls.iter().any(|url| {
                    let url = base(url);
                    !url.is_empty()
                        && endpoint
                            .strip_prefix(url)
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                })
            })
        })
        .map(|(service, _)| service.as_str())
}

/// `push to URL (service S)`, `push to URL`, or `pull (nothing is pushed)`.
fn delivery(observed: &Observed, endpoint: &str) -> String {
    if endpoint.is_empty() {
        return "pull (nothing is pushed)".into();
    }
    match service_at(observed, endpoint) {
        Some(service) => format!("push to {} (service `{service}`)", escaped(endpoint)),
        None => format!("push to {}", escaped(endpoint)),
    }
}

/// Compares `declared` with `observed`: every difference, CRITICAL first.
pub fn check(declared: &Declared, observed: &Observed) -> Vec<Finding> {
    let mut findings = Vec::new();
    check_pubsub(declared, observed, &mut findings);
    check_schedules(declared, observed, &mut findings);
    // Stable: within a level, the order of the service files.
    findings.sort_by_key(|finding| std::cmp::Reverse(finding.level));
    findings
}

fn unreadable(services: Vec<String>, resource: &str, why: &str, fix: &str) -> Finding {
    Finding {
        level: Level::Error,
        kind: Kind::Unreadable,
        services,
        resource: resource.to_string(),
        topic: None,
        delivers_to: "unknown".into(),
        message: format!("{resource} could not be read: {}", escaped(why)),
        fix: fix.to_string(),
    }
}

fn check_pubsub(declared: &Declared, observed: &Observed, findings: &mut Vec<Finding>) {
    let with_topics: Vec<&ServiceWiring> = declared
        .services
        .iter()
        .filter(|wiring| !wiring.topics().is_empty())
        .collect();
    if with_topics.is_empty() {
        return;
    }
    let mut known: Vec<&ServiceWiring> = Vec::new();
    for wiring in with_topics {
        if wiring.project.is_some() {
            known.push(wiring);
        } else {
            findings.push(unreadable(
                vec![wiring.service.clone()],
                &format!("the Pub/Sub wiring of `{}`", wiring.service),
                "the service's project is unknown",
                "set `target.project`, pass `--project` or set `DEPLOYER_PROJECT`",
            ));
        }
    }
    let state = match &observed.pubsub {
        Ok(state) => state,
        Err(why) => {
            findings.push(unreadable(
                known.iter().map(|wiring| wiring.service.clone()).collect(),
                "Pub/Sub",
                why,
                "check `DEPLOYER_PUBSUB_ENDPOINT`, Application Default Credentials (`gcloud auth application-default login`) and the `pubsub.subscriptions.list` and `pubsub.topics.list` permissions",
            ));
            return;
        }
    };
    // Declared subscriptions by full name, and the topics someone consumes.
    let mut declared_subscriptions: BTreeSet<String> = BTreeSet::new();
    let mut consumers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for wiring in &known {
        let project = wiring.project.as_deref().unwrap_or_default();
        for subscription in &wiring.subscriptions {
            declared_subscriptions.insert(subscription_path(project, &subscription.name));
            let consumers = consumers
                .entry(topic_path(project, &subscription.topic))
                .or_default();
            if !consumers.contains(&wiring.service) {
                consumers.push(wiring.service.clone());
            }
        }
    }
    // The bypass: a subscription on a consumed topic that no service declares.
    for live in &state.subscriptions {
        if declared_subscriptions.contains(&live.name) {
            continue;
        }
        let Some(topic_consumers) = consumers.get(&live.topic) else {
            continue;
        };
        let mut services = topic_consumers.clone();
        let target = (!live.push_endpoint.is_empty())
            .then(|| service_at(observed, &live.push_endpoint))
            .flatten();
        if let Some(target) = target {
            if !services.iter().any(|service| service == target) {
                services.push(target.to_string());
            }
        }
        let project = live
            .name
            .split('/')
            .nth(1)
            .map(str::to_string)
            .unwrap_or_default();
        findings.push(Finding {
            level: Level::Critical,
            kind: Kind::UndeclaredSubscription,
            services,
            resource: live.name.clone(),
            topic: Some(live.topic.clone()),
            delivers_to: delivery(observed, &live.push_endpoint),
            message: format!(
                "subscription `{}` on `{}` is declared by no service, and delivers {}: it bypasses {}",
                escaped(short_name(&live.name)),
                escaped(short_name(&live.topic)),
                delivery(observed, &live.push_endpoint),
                topic_consumers
                    .iter()
                    .map(|service| format!("`{service}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix: format!(
                "delete it (`gcloud pubsub subscriptions delete {} --project {}`), or declare it under `[[subscriptions]]` in the file of the service meant to consume it",
                escaped(short_name(&live.name)),
                escaped(&project)
            ),
        });
    }
    // Declared subscriptions and topics.
    for wiring in &known {
        let project = wiring.project.as_deref().unwrap_or_default();
        let urls = observed.service_urls.get(&wiring.service);
        for subscription in &wiring.subscriptions {
            let name = subscription_path(project, &subscription.name);
            let topic = topic_path(project, &subscription.topic);
            let expected = |urls: &[String]| match (&subscription.push_path, urls.first()) {
                (Some(path), Some(url)) => format!("{}{path}", base(url)),
                (Some(path), None) => format!("SERVICE_URL{path}"),
                (None, _) => String::new(),
            };
            let finding =
                |level, kind, delivers_to: String, message: String, fix: String| Finding {
                    level,
                    kind,
                    services: vec![wiring.service.clone()],
                    resource: name.clone(),
                    topic: Some(topic.clone()),
                    delivers_to,
                    message,
                    fix,
                };
            let Some(live) = state.subscriptions.iter().find(|live| live.name == name) else {
                let known_urls = urls.and_then(|urls| urls.as_ref().ok());
                let push = match &subscription.push_path {
                    Some(_) => format!(
                        " --push-endpoint {}",
                        expected(known_urls.map(Vec::as_slice).unwrap_or_default())
                    ),
                    None => String::new(),
                };
                findings.push(finding(
                    Level::Critical,
                    Kind::MissingSubscription,
                    "nowhere (missing)".into(),
                    format!(
                        "declared subscription `{}` on `{}` is missing: `{}` receives nothing",
                        subscription.name, subscription.topic, wiring.service
                    ),
                    format!(
                        "`gcloud pubsub subscriptions create {} --project {project} --topic {}{push}`",
                        subscription.name, subscription.topic
                    ),
                ));
                continue;
            };
            if live.topic != topic {
                findings.push(finding(
                    Level::Critical,
                    Kind::WrongTopic,
                    delivery(observed, &live.push_endpoint),
                    format!(
                        "subscription `{}` is on `{}`, declared on `{}`",
                        subscription.name,
                        escaped(short_name(&live.topic)),
                        subscription.topic
                    ),
                    format!(
                        "a subscription cannot change topic: delete it and create it on `{}` (`gcloud pubsub subscriptions delete {} --project {project}`, then `create ... --topic {}`)",
                        subscription.topic, subscription.name, subscription.topic
                    ),
                ));
            }
            match (&subscription.push_path, live.push_endpoint.is_empty()) {
                (None, true) => {}
                (None, false) => findings.push(finding(
                    Level::Critical,
                    Kind::UnexpectedPush,
                    delivery(observed, &live.push_endpoint),
                    format!(
                        "subscription `{}` on `{}` is declared pull but delivers {}",
                        subscription.name,
                        subscription.topic,
                        delivery(observed, &live.push_endpoint)
                    ),
                    format!(
                        "make it pull again (`gcloud pubsub subscriptions modify-push-config {} --project {project} --push-endpoint=\"\"`), or declare its `push_path`",
                        subscription.name
                    ),
                )),
                (Some(path), pull) => match urls {
                    Some(Ok(urls)) if !urls.is_empty() => {
                        if pull || !matches_any(&live.push_endpoint, urls, path) {
                            findings.push(finding(
                                Level::Critical,
                                if pull { Kind::NotPushed } else { Kind::WrongPushEndpoint },
                                delivery(observed, &live.push_endpoint),
                                format!(
                                    "subscription `{}` on `{}` delivers {}, not to `{}`'s URL + `{path}` ({})",
                                    subscription.name,
                                    subscription.topic,
                                    delivery(observed, &live.push_endpoint),
                                    wiring.service,
                                    urls.iter()
                                        .map(|url| format!("{}{path}", base(url)))
                                        .collect::<Vec<_>>()
                                        .join(" or ")
                                ),
                                format!(
                                    "`gcloud pubsub subscriptions modify-push-config {} --project {project} --push-endpoint {}`",
                                    subscription.name,
                                    expected(urls)
                                ),
                            ));
                        }
                    }
                    other => {
                        let why = match other {
                            Some(Err(why)) => escaped(why).into_owned(),
                            _ => "the platform lists no URL for it".to_string(),
                        };
                        findings.push(Finding {
                            level: Level::Error,
                            kind: Kind::Unreadable,
                            services: vec![wiring.service.clone()],
                            resource: name.clone(),
                            topic: Some(topic.clone()),
                            delivers_to: delivery(observed, &live.push_endpoint),
                            message: format!(
                                "push subscription `{}` delivers {}, and `{}`'s URL is unknown ({why}): not verified",
                                subscription.name,
                                delivery(observed, &live.push_endpoint),
                                wiring.service
                            ),
                            fix: format!(
                                "deploy `{}`, or check that `deployer status {}` can read it",
                                wiring.service, wiring.service
                            ),
                        });
                    }
                },
            }
        }
    }
    // Declared topics, once each, naming every service that publishes or consumes it.
    let mut missing: Vec<(String, &str, String, Vec<String>)> = Vec::new();
    for wiring in &known {
        let project = wiring.project.as_deref().unwrap_or_default();
        for topic in wiring.topics() {
            let full = topic_path(project, topic);
            if state.topics.contains(&full) {
                continue;
            }
            match missing.iter_mut().find(|(name, ..)| *name == full) {
                Some((.., services)) => services.push(wiring.service.clone()),
                None => missing.push((
                    full,
                    topic,
                    project.to_string(),
                    vec![wiring.service.clone()],
                )),
            }
        }
    }
    for (full, topic, project, services) in missing {
        findings.push(Finding {
            level: Level::Warn,
            kind: Kind::MissingTopic,
            message: format!(
                "topic `{topic}`, declared by {}, is missing",
                services
                    .iter()
                    .map(|service| format!("`{service}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            services,
            resource: full,
            topic: Some(topic.to_string()),
            delivers_to: "nowhere (missing)".into(),
            fix: format!("`gcloud pubsub topics create {topic} --project {project}`"),
        });
    }
}

/// Cloud Scheduler's default time zone, under its spellings.
fn same_time_zone(declared: &str, live: &str) -> bool {
    let utc = |zone: &str| matches!(zone, "" | "UTC" | "Etc/UTC" | "Etc/GMT" | "GMT");
    declared == live || (utc(declared) && utc(live))
}

fn check_schedules(declared: &Declared, observed: &Observed, findings: &mut Vec<Finding>) {
    let with_schedules: Vec<&ServiceWiring> = declared
        .services
        .iter()
        .filter(|wiring| !wiring.schedules.is_empty())
        .collect();
    if with_schedules.is_empty() {
        return;
    }
    let jobs = match &observed.scheduler {
        Ok(jobs) => jobs,
        Err(why) => {
            findings.push(unreadable(
                with_schedules
                    .iter()
                    .map(|wiring| wiring.service.clone())
                    .collect(),
                "Cloud Scheduler",
                why,
                "check `DEPLOYER_SCHEDULER_ENDPOINT`, Application Default Credentials and the `cloudscheduler.jobs.list` permission",
            ));
            return;
        }
    };
    for wiring in with_schedules {
        let (Some(project), Some(region)) = (&wiring.project, &wiring.region) else {
            findings.push(unreadable(
                vec![wiring.service.clone()],
                &format!("the schedules of `{}`", wiring.service),
                "the service's project or region is unknown",
                "set `target.project` and `target.region`, or pass `--project`/`--region`",
            ));
            continue;
        };
        let urls = observed.service_urls.get(&wiring.service);
        for schedule in &wiring.schedules {
            let name = job_path(project, region, &schedule.name);
            let expected_uri = match urls {
                Some(Ok(urls)) if !urls.is_empty() => {
                    format!("{}{}", base(&urls[0]), schedule.path)
                }
                _ => format!("SERVICE_URL{}", schedule.path),
            };
            let finding = |kind, delivers_to: String, message: String, fix: String| Finding {
                level: Level::Warn,
                kind,
                services: vec![wiring.service.clone()],
                resource: name.clone(),
                topic: None,
                delivers_to,
                message,
                fix,
            };
            let Some(job) = jobs.iter().find(|job| job.name == name) else {
                findings.push(finding(
                    Kind::MissingJob,
                    "nowhere (missing)".into(),
                    format!(
                        "scheduler job `{}` ({} {}) calling `{}` at `{}` is missing",
                        schedule.name, schedule.schedule, schedule.time_zone, wiring.service, schedule.path
                    ),
                    format!(
                        "`gcloud scheduler jobs create http {} --project {project} --location {region} --schedule '{}' --time-zone {} --uri {expected_uri}`",
                        schedule.name, schedule.schedule, schedule.time_zone
                    ),
                ));
                continue;
            };
            let calls = match &job.target {
                JobTarget::Http { uri } => match service_at(observed, uri) {
                    Some(service) => format!("calls {} (service `{service}`)", escaped(uri)),
                    None => format!("calls {}", escaped(uri)),
                },
                JobTarget::Pubsub { topic } => {
                    format!("publishes to `{}`", escaped(short_name(topic)))
                }
                JobTarget::Other => "calls a non-HTTP target".into(),
            };
            let declared_schedule: Vec<&str> = schedule.schedule.split_whitespace().collect();
            let live_schedule: Vec<&str> = job.schedule.split_whitespace().collect();
            if declared_schedule != live_schedule
                || !same_time_zone(&schedule.time_zone, &job.time_zone)
            {
                findings.push(finding(
                    Kind::JobSchedule,
                    calls.clone(),
                    format!(
                        "scheduler job `{}` runs `{}` ({}), declared `{}` ({})",
                        schedule.name,
                        escaped(&job.schedule),
                        if job.time_zone.is_empty() {
                            "UTC".into()
                        } else {
                            escaped(&job.time_zone)
                        },
                        schedule.schedule,
                        schedule.time_zone
                    ),
                    format!(
                        "`gcloud scheduler jobs update http {} --project {project} --location {region} --schedule '{}' --time-zone {}`",
                        schedule.name, schedule.schedule, schedule.time_zone
                    ),
                ));
            }
            let target_problem = match (&job.target, urls) {
                (JobTarget::Http { uri }, Some(Ok(urls))) if !urls.is_empty() => {
                    (!matches_any(uri, urls, &schedule.path)).then_some(Level::Warn)
                }
                (JobTarget::Http { .. }, _) => Some(Level::Error),
                _ => Some(Level::Warn),
            };
            match target_problem {
                None => {}
                Some(Level::Error) => findings.push(Finding {
                    level: Level::Error,
                    kind: Kind::Unreadable,
                    services: vec![wiring.service.clone()],
                    resource: name.clone(),
                    topic: None,
                    delivers_to: calls.clone(),
                    message: format!(
                        "scheduler job `{}` {calls}, and `{}`'s URL is unknown: not verified",
                        schedule.name, wiring.service
                    ),
                    fix: format!("deploy `{}`, or check that `deployer status {}` can read it", wiring.service, wiring.service),
                }),
                Some(_) => findings.push(finding(
                    Kind::JobTarget,
                    calls.clone(),
                    format!(
                        "scheduler job `{}` {calls}, declared to call `{}` at `{}`",
                        schedule.name, wiring.service, schedule.path
                    ),
                    format!(
                        "`gcloud scheduler jobs update http {} --project {project} --location {region} --uri {expected_uri}`",
                        schedule.name
                    ),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests;
