//! The deploy pipeline (preflight → image → rollout) on the in-memory platform, under paused
//! tokio time: the order of its stages and what each outcome leaves behind. The rollout it ends
//! in is `rollout_driver.rs`'s subject; the harness both share is `support/driver_harness.rs`.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use deployer::{
    config::RunConfig,
    image::DeliveryError,
    pipeline::{
        self, Delivered, ImageSource, Plan, Preparation, SyntheticTraffic, TargetKind,
        PREFLIGHT_STOPPED,
    },
    platform::memory::MemoryPlatform,
    rollout::{
        events::{Event, Outcome, RolloutReport},
        ports::DeployRequest,
    },
};
use serde_json::json;
use support::driver_harness::{id, never, pass, policy, request, Harness, Probe, COMMIT, IMAGE};

/// A checklist and a build that answer from a script and record what was asked.
struct Scripted {
    safe: bool,
    calls: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(safe: bool) -> Self {
        Self {
            safe,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait(?Send)]
impl Preparation for Scripted {
    async fn checklist(&mut self) -> bool {
        self.calls.lock().unwrap().push("preflight".into());
        self.safe
    }

    async fn build(&mut self, push: bool) -> Result<Delivered, DeliveryError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("build push={push}"));
        Ok(Delivered {
            image: IMAGE.into(),
            commit: COMMIT.into(),
            dirty: None,
        })
    }
}

fn plan(target: TargetKind, image: ImageSource, run: RunConfig) -> Plan {
    Plan {
        target,
        target_name: id().to_string(),
        // Nothing listens on port 1: the optional local registry does not answer.
        repository: "127.0.0.1:1/svc".into(),
        skip_preflight: false,
        image,
        service: "svc".into(),
        rollout: Box::new(move |delivered: Delivered| DeployRequest {
            image: delivered.image,
            commit: delivered.commit,
            dirty: delivered.dirty,
            run,
            ..request(policy())
        }),
        traffic: None,
    }
}

/// Runs the pipeline of `plan` through `stages` and the harness's driver, never interrupted.
async fn deploy(harness: &Harness, plan: Plan, stages: &mut Scripted) -> RolloutReport {
    pipeline::deploy(plan, stages, &harness.driver(), never())
        .await
        .expect("the pipeline ran")
}

fn events(harness: &Harness) -> Vec<Event> {
    harness.recorder.events()
}

#[tokio::test(start_paused = true)]
async fn a_checklist_with_problems_stops_before_the_image_and_writes_nothing() {
    let harness = Harness::new(vec![pass()]).await;
    let mut stages = Scripted::new(false);
    let writes = harness.platform.writes();
    let report = deploy(
        &harness,
        plan(
            TargetKind::CloudRun,
            ImageSource::Build,
            RunConfig::default(),
        ),
        &mut stages,
    )
    .await;
    assert_eq!(
        report.outcome,
        Outcome::StoppedBeforeTraffic {
            reason: PREFLIGHT_STOPPED.into()
        }
    );
    assert_eq!(report.id, None, "no rollout began");
    assert_eq!(stages.calls(), ["preflight"], "nothing was built");
    assert_eq!(harness.platform.writes(), writes, "nothing was written");
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn cloud_run_builds_and_pushes_then_rolls_out_what_was_built() {
    let harness = Harness::new(vec![pass()]).await;
    let mut stages = Scripted::new(true);
    let report = deploy(
        &harness,
        plan(
            TargetKind::CloudRun,
            ImageSource::Build,
            RunConfig::default(),
        ),
        &mut stages,
    )
    .await;
    assert_eq!(stages.calls(), ["preflight", "build push=true"]);
    let revision = harness.promoted(&report).await;
    assert_eq!(revision.image, IMAGE);
    assert_eq!(revision.labels["deployer-commit"], COMMIT);
    // The opening line comes before the revision exists.
    let events = events(&harness);
    let deploying = events
        .iter()
        .position(|event| matches!(event, Event::Deploying { .. }))
        .expect("the opening event");
    let created = events
        .iter()
        .position(|event| matches!(event, Event::RevisionCreated { .. }))
        .unwrap();
    assert!(deploying < created);
}

#[tokio::test(start_paused = true)]
async fn a_local_target_without_a_registry_deploys_the_local_image_and_says_so() {
    let harness = Harness::new(vec![pass()]).await;
    let mut stages = Scripted::new(true);
    let report = deploy(
        &harness,
        plan(TargetKind::Local, ImageSource::Build, RunConfig::default()),
        &mut stages,
    )
    .await;
    assert_eq!(stages.calls(), ["preflight", "build push=false"]);
    assert!(
        report
            .notes
            .iter()
            .any(|note| note.contains("does not answer: deploying the local image")),
        "{:?}",
        report.notes
    );
}

#[tokio::test(start_paused = true)]
async fn a_given_image_is_deployed_without_a_build_and_skipping_the_checklist_is_recorded() {
    let mut harness = Harness::new(vec![pass()]).await;
    let mut stages = Scripted::new(false);
    let given = Delivered {
        image: "127.0.0.1:5000/svc@sha256:given".into(),
        commit: "fedcba9".into(),
        dirty: None,
    };
    let mut plan = plan(
        TargetKind::CloudRun,
        ImageSource::Given(given),
        RunConfig::default(),
    );
    plan.skip_preflight = true;
    harness.probe = Probe {
        identity: json!({"service": "svc", "commit": "fedcba9"}),
    };
    let report = deploy(&harness, plan, &mut stages).await;
    assert!(stages.calls().is_empty(), "{:?}", stages.calls());
    let revision = harness.promoted(&report).await;
    assert_eq!(revision.image, "127.0.0.1:5000/svc@sha256:given");
    assert!(events(&harness).iter().any(|event| matches!(
        event,
        Event::Warning { message } if message.contains("--skip-preflight")
    )));
    assert!(report
        .notes
        .iter()
        .any(|note| note.contains("--skip-preflight")));
}

#[tokio::test(start_paused = true)]
async fn secrets_a_local_target_cannot_resolve_are_warned_before_the_revision_exists() {
    let harness = Harness::new(vec![pass()]).await;
    let mut stages = Scripted::new(true);
    let run = RunConfig {
        secrets: BTreeMap::from([(
            "API_KEY".to_string(),
            "projects/p/secrets/api-key/versions/3".to_string(),
        )]),
        ..RunConfig::default()
    };
    deploy(
        &harness,
        plan(TargetKind::Local, ImageSource::Build, run),
        &mut stages,
    )
    .await;
    let events = events(&harness);
    let warned = events
        .iter()
        .position(
            |event| matches!(event, Event::Warning { message } if message.contains("`API_KEY`")),
        )
        .expect("the secret is named");
    let created = events
        .iter()
        .position(|event| matches!(event, Event::RevisionCreated { .. }))
        .unwrap();
    assert!(warned < created);
}

#[tokio::test(start_paused = true)]
async fn synthetic_traffic_is_summarised_in_the_report() {
    let harness = Harness::new(vec![pass()]).await;
    let mut stages = Scripted::new(true);
    let mut plan = plan(TargetKind::Local, ImageSource::Build, RunConfig::default());
    plan.traffic = Some(SyntheticTraffic {
        rate: 5,
        platform: Arc::new(MemoryPlatform::new()),
    });
    let report = deploy(&harness, plan, &mut stages).await;
    assert!(
        report
            .notes
            .iter()
            .any(|note| note.starts_with("synthetic traffic")),
        "{:?}",
        report.notes
    );
}
