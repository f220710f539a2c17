//! Architecture as code: the event wiring each service declares (`publishes`,
//! `[[subscriptions]]`, `[[schedules]]`), drawn as a Mermaid flowchart and compared with the
//! live project — another view of "intended vs actual", beside [`crate::drift`].
//!
//! ```text
//! Declared::from_configs(&configs)                  // the intent, in full resource names
//! graph::mermaid(&declared, selection, report)      // the flowchart (differences marked)
//! live::observe(&declared, &endpoints, urls).await  // Pub/Sub, Cloud Scheduler, service URLs
//! conformance::check(&declared, &observed)          // findings: pure, table-tested
//! ```
//!
//! Why this exists: the team's Session 77 incident was a Pub/Sub subscription delivering
//! straight to a service and bypassing the orchestrator, written down nowhere and found only
//! after days. Drift and data checks cannot see such a thing; a comparison of the declared
//! wiring with the live subscriptions can, every time `health` runs.

pub mod conformance;
pub mod graph;
pub mod live;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::{ScheduleConfig, ServiceConfig, SubscriptionConfig, Target};

/// The name of the conformance check in `health` (one result per service).
pub const ARCHITECTURE_CHECK: &str = "Architecture";

/// The declared wiring of one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceWiring {
    /// The service's name in deployer (`services/*.toml`).
    pub service: String,
    /// Its GCP project, when known (a local target lives in the emulator's `local`).
    pub project: Option<String>,
    /// Its region, when known.
    pub region: Option<String>,
    /// Topic ids it publishes to.
    pub publishes: Vec<String>,
    /// Subscriptions it consumes.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Cloud Scheduler jobs that call it.
    pub schedules: Vec<ScheduleConfig>,
}

impl ServiceWiring {
    /// True when the service declares any wiring.
    pub fn declares_anything(&self) -> bool {
        !(self.publishes.is_empty() && self.subscriptions.is_empty() && self.schedules.is_empty())
    }

    /// Every topic id the service names (published or subscribed), in order, once.
    pub fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = Vec::new();
        for topic in self.publishes.iter().chain(
            self.subscriptions
                .iter()
                .map(|subscription| &subscription.topic),
        ) {
            if !topics.contains(&topic.as_str()) {
                topics.push(topic);
            }
        }
        topics
    }
}

/// The declared wiring of every service, in the order of the service files.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Declared {
    /// One entry per service.
    pub services: Vec<ServiceWiring>,
}

impl Declared {
    /// The wiring the (overridden) service definitions declare.
    pub fn from_configs(configs: &[ServiceConfig]) -> Self {
        Self {
            services: configs
                .iter()
                .map(|config| {
                    let (project, region) = match &config.target {
                        // A multi-region service's wiring is read in its canary region.
                        Target::CloudRun { project, .. } => {
                            (project.clone(), config.regions().into_iter().next())
                        }
                        Target::Local { .. } => (Some("local".into()), Some("local".into())),
                    };
                    ServiceWiring {
                        service: config.name.clone(),
                        project,
                        region,
                        publishes: config.publishes.clone(),
                        subscriptions: config.subscriptions.clone(),
                        schedules: config.schedules.clone(),
                    }
                })
                .collect(),
        }
    }

    /// True when some service declares wiring.
    pub fn declares_anything(&self) -> bool {
        self.services.iter().any(ServiceWiring::declares_anything)
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceWiring> {
        self.services.iter().find(|wiring| wiring.service == name)
    }

    /// Projects whose Pub/Sub must be read: those of services with topics or subscriptions.
    pub fn pubsub_projects(&self) -> BTreeSet<String> {
        self.services
            .iter()
            .filter(|wiring| !wiring.topics().is_empty())
            .filter_map(|wiring| wiring.project.clone())
            .collect()
    }

    /// `projects/P/locations/R` of every service with schedules: where jobs must be read.
    pub fn scheduler_locations(&self) -> BTreeSet<String> {
        self.services
            .iter()
            .filter(|wiring| !wiring.schedules.is_empty())
            .filter_map(|wiring| match (&wiring.project, &wiring.region) {
                (Some(project), Some(region)) => Some(location_path(project, region)),
                _ => None,
            })
            .collect()
    }
}

/// `projects/P/topics/T`.
pub fn topic_path(project: &str, topic: &str) -> String {
    format!("projects/{project}/topics/{topic}")
}

/// `projects/P/subscriptions/S`.
pub fn subscription_path(project: &str, subscription: &str) -> String {
    format!("projects/{project}/subscriptions/{subscription}")
}

/// `projects/P/locations/R`.
pub fn location_path(project: &str, region: &str) -> String {
    format!("projects/{project}/locations/{region}")
}

/// `projects/P/locations/R/jobs/J`.
pub fn job_path(project: &str, region: &str, job: &str) -> String {
    format!("{}/jobs/{job}", location_path(project, region))
}

/// The last segment of a resource name (`projects/p/topics/t` → `t`).
pub fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}
