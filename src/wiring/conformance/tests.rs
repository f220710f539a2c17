//! One table row per rule of the conformance check.

use super::*;
use crate::config::{ScheduleConfig, SubscriptionConfig};

const P: &str = "nba";

fn subscription(name: &str, topic: &str, push_path: Option<&str>) -> SubscriptionConfig {
    SubscriptionConfig {
        name: name.into(),
        topic: topic.into(),
        push_path: push_path.map(str::to_string),
    }
}

fn service(
    name: &str,
    publishes: &[&str],
    subscriptions: Vec<SubscriptionConfig>,
) -> ServiceWiring {
    ServiceWiring {
        service: name.into(),
        project: Some(P.into()),
        region: Some("us-west2".into()),
        publishes: publishes.iter().map(|topic| topic.to_string()).collect(),
        subscriptions,
        schedules: Vec::new(),
    }
}

/// phase3 → phase4 → coordinator (the orchestrator) → worker.
fn declared() -> Declared {
    let mut coordinator = service(
        "prediction-coordinator",
        &["prediction-requests"],
        vec![subscription(
            "coordinator-phase4-complete",
            "phase4-complete",
            Some("/pubsub"),
        )],
    );
    coordinator.schedules.push(ScheduleConfig {
        name: "coordinator-morning".into(),
        schedule: "0 10 * * *".into(),
        time_zone: "America/Los_Angeles".into(),
        path: "/start".into(),
    });
    Declared {
        services: vec![
            service("phase4-processors", &["phase4-complete"], vec![]),
            coordinator,
            service(
                "prediction-worker",
                &[],
                vec![subscription(
                    "worker-prediction-requests",
                    "prediction-requests",
                    Some("/predict"),
                )],
            ),
            service(
                "grading-service",
                &[],
                vec![subscription("grading-pull", "prediction-requests", None)],
            ),
        ],
    }
}

fn url(service: &str) -> String {
    format!("https://{service}-abc123-uw.a.run.app")
}

fn live(name: &str, topic: &str, endpoint: &str) -> LiveSubscription {
    LiveSubscription {
        name: format!("projects/{P}/subscriptions/{name}"),
        topic: format!("projects/{P}/topics/{topic}"),
        push_endpoint: endpoint.into(),
    }
}

/// The live project exactly as declared.
fn conforming() -> Observed {
    let services = [
        "phase4-processors",
        "prediction-coordinator",
        "prediction-worker",
        "grading-service",
    ];
    Observed {
        pubsub: Ok(PubSubState {
            topics: ["phase4-complete", "prediction-requests"]
                .iter()
                .map(|topic| format!("projects/{P}/topics/{topic}"))
                .collect(),
            subscriptions: vec![
                live(
                    "coordinator-phase4-complete",
                    "phase4-complete",
                    &format!("{}/pubsub", url("prediction-coordinator")),
                ),
                // Pushing to the service's second URL (the deterministic `*.run.app` form)
                // with a verification token conforms too.
                live(
                    "worker-prediction-requests",
                    "prediction-requests",
                    "https://prediction-worker-12345.us-west2.run.app/predict?token=x",
                ),
                live("grading-pull", "prediction-requests", ""),
                // Undeclared, on a topic nobody consumes: not this check's business.
                live("audit-export", "audit-log", "https://elsewhere.example/in"),
            ],
        }),
        scheduler: Ok(vec![LiveJob {
            name: format!("projects/{P}/locations/us-west2/jobs/coordinator-morning"),
            schedule: "0 10 * * *".into(),
            time_zone: "America/Los_Angeles".into(),
            target: JobTarget::Http {
                uri: format!("{}/start", url("prediction-coordinator")),
            },
        }]),
        service_urls: services
            .iter()
            .map(|service| {
                let mut urls = vec![url(service)];
                urls.push(format!("https://{service}-12345.us-west2.run.app"));
                (service.to_string(), Ok(urls))
            })
            .collect(),
    }
}

fn state(observed: &mut Observed) -> &mut PubSubState {
    observed.pubsub.as_mut().unwrap()
}

fn subscription_of<'a>(observed: &'a mut Observed, name: &str) -> &'a mut LiveSubscription {
    state(observed)
        .subscriptions
        .iter_mut()
        .find(|live| short_name(&live.name) == name)
        .unwrap()
}

#[test]
fn the_declared_wiring_as_it_is_live_conforms() {
    let findings = check(&declared(), &conforming());
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(exit_code(&findings), 0);
}

#[test]
fn each_difference_is_found_at_its_level_naming_what_and_where() {
    type Change = fn(&mut Observed);
    /// (case, change to the conforming project, level, kind, part of `delivers_to`, services)
    type Row = (
        &'static str,
        Change,
        Level,
        Kind,
        &'static str,
        &'static [&'static str],
    );
    let rows: Vec<Row> =
        vec![
        (
            "the Session 77 bypass: an undeclared push on the orchestrator's topic to the worker",
            |observed| {
                let endpoint = format!("{}/pubsub", url("prediction-worker"));
                state(observed).subscriptions.push(live(
                    "worker-direct-phase4",
                    "phase4-complete",
                    &endpoint,
                ));
            },
            Level::Critical,
            Kind::UndeclaredSubscription,
            "service `prediction-worker`",
            &["prediction-coordinator", "prediction-worker"],
        ),
        (
            "an undeclared pull subscription on a consumed topic",
            |observed| {
                state(observed)
                    .subscriptions
                    .push(live("someone-pulls", "prediction-requests", ""));
            },
            Level::Critical,
            Kind::UndeclaredSubscription,
            "pull",
            &["prediction-worker", "grading-service"],
        ),
        (
            "a declared push subscription pushing to another path",
            |observed| {
                subscription_of(observed, "worker-prediction-requests").push_endpoint =
                    format!("{}/other", url("prediction-worker"));
            },
            Level::Critical,
            Kind::WrongPushEndpoint,
            "/other",
            &["prediction-worker"],
        ),
        (
            "a declared push subscription pushing to another service",
            |observed| {
                subscription_of(observed, "worker-prediction-requests").push_endpoint =
                    format!("{}/predict", url("grading-service"));
            },
            Level::Critical,
            Kind::WrongPushEndpoint,
            "service `grading-service`",
            &["prediction-worker"],
        ),
        (
            "a declared push subscription that is pull",
            |observed| {
                subscription_of(observed, "worker-prediction-requests")
                    .push_endpoint
                    .clear();
            },
            Level::Critical,
            Kind::NotPushed,
            "pull",
            &["prediction-worker"],
        ),
        (
            "a declared pull subscription that pushes",
            |observed| {
                subscription_of(observed, "grading-pull").push_endpoint =
                    "https://evil.example/x".into();
            },
            Level::Critical,
            Kind::UnexpectedPush,
            "https://evil.example/x",
            &["grading-service"],
        ),
        (
            "a declared subscription on another topic",
            |observed| {
                subscription_of(observed, "grading-pull").topic =
                    format!("projects/{P}/topics/phase4-complete");
            },
            Level::Critical,
            Kind::WrongTopic,
            "pull",
            &["grading-service"],
        ),
        (
            "a declared subscription missing",
            |observed| {
                state(observed)
                    .subscriptions
                    .retain(|live| short_name(&live.name) != "coordinator-phase4-complete");
            },
            Level::Critical,
            Kind::MissingSubscription,
            "nowhere",
            &["prediction-coordinator"],
        ),
        (
            "a declared topic missing",
            |observed| {
                state(observed)
                    .topics
                    .remove(&format!("projects/{P}/topics/phase4-complete"));
            },
            Level::Warn,
            Kind::MissingTopic,
            "nowhere",
            &["phase4-processors", "prediction-coordinator"],
        ),
        (
            "a scheduler job missing",
            |observed| observed.scheduler.as_mut().unwrap().clear(),
            Level::Warn,
            Kind::MissingJob,
            "nowhere",
            &["prediction-coordinator"],
        ),
        (
            "a scheduler job on another schedule",
            |observed| observed.scheduler.as_mut().unwrap()[0].schedule = "0 11 * * *".into(),
            Level::Warn,
            Kind::JobSchedule,
            "calls",
            &["prediction-coordinator"],
        ),
        (
            "a scheduler job calling another path",
            |observed| {
                observed.scheduler.as_mut().unwrap()[0].target = JobTarget::Http {
                    uri: format!("{}/stop", url("prediction-coordinator")),
                }
            },
            Level::Warn,
            Kind::JobTarget,
            "/stop",
            &["prediction-coordinator"],
        ),
        (
            "Pub/Sub unreadable",
            |observed| observed.pubsub = Err("HTTP 503: unavailable".into()),
            Level::Error,
            Kind::Unreadable,
            "unknown",
            &[
                "phase4-processors",
                "prediction-coordinator",
                "prediction-worker",
                "grading-service",
            ],
        ),
        (
            "Cloud Scheduler unreadable",
            |observed| observed.scheduler = Err("connection refused".into()),
            Level::Error,
            Kind::Unreadable,
            "unknown",
            &["prediction-coordinator"],
        ),
        (
            "a push subscription whose service URL is unknown",
            |observed| {
                observed
                    .service_urls
                    .insert("prediction-worker".into(), Err("not deployed".into()));
            },
            Level::Error,
            Kind::Unreadable,
            "push to",
            &["prediction-worker"],
        ),
    ];
    for (case, change, level, kind, delivers, services) in rows {
        let mut observed = conforming();
        change(&mut observed);
        let findings = check(&declared(), &observed);
        assert_eq!(findings.len(), 1, "{case}: {findings:#?}");
        let finding = &findings[0];
        assert_eq!((finding.level, finding.kind), (level, kind), "{case}");
        assert!(
            finding.delivers_to.contains(delivers),
            "{case}: delivers_to {:?}",
            finding.delivers_to
        );
        assert_eq!(finding.services, services, "{case}");
        assert!(
            !finding.fix.is_empty() && !finding.message.is_empty(),
            "{case}"
        );
        let expected = match level {
            Level::Critical => Conformance::Critical,
            Level::Error => Conformance::Error,
            Level::Warn => Conformance::Warn,
        };
        for service in services {
            assert_eq!(conformance(&findings, Some(service)), expected, "{case}");
        }
        assert_eq!(
            conformance(&findings, Some("phase3-processors")),
            Conformance::Pass,
            "{case}: an uninvolved service passes"
        );
        assert_eq!(
            exit_code(&findings),
            if level == Level::Critical { 2 } else { 1 },
            "{case}"
        );
    }
}

#[test]
fn a_bypass_names_the_subscription_its_topic_where_it_delivers_and_the_fix() {
    let mut observed = conforming();
    let endpoint = format!("{}/pubsub", url("prediction-worker"));
    state(&mut observed).subscriptions.push(live(
        "worker-direct-phase4",
        "phase4-complete",
        &endpoint,
    ));
    let findings = check(&declared(), &observed);
    let finding = &findings[0];
    assert_eq!(
        finding.resource,
        "projects/nba/subscriptions/worker-direct-phase4"
    );
    assert_eq!(
        finding.topic.as_deref(),
        Some("projects/nba/topics/phase4-complete")
    );
    assert!(
        finding.message.contains("`worker-direct-phase4`"),
        "{finding:?}"
    );
    assert!(
        finding
            .message
            .contains("bypasses `prediction-coordinator`"),
        "{finding:?}"
    );
    assert!(finding.message.contains(&endpoint), "{finding:?}");
    assert!(
        finding
            .fix
            .contains("gcloud pubsub subscriptions delete worker-direct-phase4 --project nba"),
        "{finding:?}"
    );
}

#[test]
fn critical_findings_come_first_and_remote_text_is_escaped() {
    let mut observed = conforming();
    state(&mut observed)
        .topics
        .remove(&format!("projects/{P}/topics/phase4-complete"));
    state(&mut observed).subscriptions.push(live(
        "bypass",
        "prediction-requests",
        "https://x.example/\u{1b}[31mred",
    ));
    let findings = check(&declared(), &observed);
    assert_eq!(findings[0].level, Level::Critical);
    assert_eq!(findings.last().unwrap().level, Level::Warn);
    assert!(!findings[0].message.contains('\u{1b}'), "{:?}", findings[0]);
}

#[test]
fn services_without_wiring_read_nothing_and_pass() {
    let declared = Declared {
        services: vec![service("hello", &[], vec![])],
    };
    let observed = Observed {
        pubsub: Err("never read".into()),
        scheduler: Err("never read".into()),
        service_urls: BTreeMap::new(),
    };
    assert!(check(&declared, &observed).is_empty());
}
