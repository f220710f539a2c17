//! Reading the live wiring: Pub/Sub topics and subscriptions, Cloud Scheduler jobs, and every
//! URL Cloud Run lists for a service.
//!
//! Pub/Sub and Cloud Scheduler are read through Google's official crates: measured, the admin
//! surface of `google-cloud-pubsub` (`TopicAdmin`, `SubscriptionAdmin`) and
//! `google-cloud-scheduler-v1` speak REST/JSON through the same gax/reqwest stack as the Cloud
//! Run client (only the Pub/Sub data plane, unused here, is gRPC), so they add four crates to
//! the tree and no second HTTP or auth stack. Every list is read page by page
//! (`pageToken`/`nextPageToken`, at most [`MAX_PAGES`] pages) within [`READ_TIMEOUT`].
//!
//! Endpoints come from `DEPLOYER_PUBSUB_ENDPOINT` and `DEPLOYER_SCHEDULER_ENDPOINT`, else the
//! local emulator for local targets, else Google's; credentials follow the providers' rule
//! ([`crate::checks::credentials_for`]): anonymous for a non-`https` endpoint, Application
//! Default Credentials for Google.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use google_cloud_pubsub::client::{SubscriptionAdmin, TopicAdmin};
use google_cloud_scheduler_v1::{client::CloudScheduler, model::job::Target};

use super::{
    conformance::{JobTarget, LiveJob, LiveSubscription, Observed, PubSubState},
    Declared,
};
use crate::{
    checks::{credentials_for, describe_google_error, retry_policy},
    platform::{Platform, ServiceId},
};

/// Items asked per page (Cloud Scheduler's maximum; Pub/Sub allows more).
pub const PAGE_SIZE: i32 = 500;
/// Pages read at most per list: 100,000 items at 500 a page.
pub const MAX_PAGES: usize = 200;
/// Time limit of one API's whole read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Pub/Sub and Cloud Scheduler are. `None`: Google's endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// `DEPLOYER_PUBSUB_ENDPOINT`.
    pub pubsub: Option<String>,
    /// `DEPLOYER_SCHEDULER_ENDPOINT`.
    pub scheduler: Option<String>,
}

impl Endpoints {
    /// The endpoints named by the environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The endpoints named by `lookup` (an environment); blank values are unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        Self {
            pubsub: get("DEPLOYER_PUBSUB_ENDPOINT"),
            scheduler: get("DEPLOYER_SCHEDULER_ENDPOINT"),
        }
    }

    /// These endpoints, with both APIs at `emulator` where unset: the local emulator serves
    /// them beside the Admin API (pass `None` for Google targets).
    pub fn or_emulator(mut self, emulator: Option<&str>) -> Self {
        if let Some(url) = emulator {
            self.pubsub.get_or_insert_with(|| url.to_string());
            self.scheduler.get_or_insert_with(|| url.to_string());
        }
        self
    }
}

fn describe(endpoint: Option<&str>, default: &str) -> String {
    endpoint
        .unwrap_or(default)
        .trim_end_matches('/')
        .to_string()
}

async fn within<T>(
    what: &str,
    read: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| format!("{what}: no answer within {}s", READ_TIMEOUT.as_secs()))?
}

/// Topics and subscriptions of `projects` (project ids).
pub async fn read_pubsub(
    endpoint: Option<&str>,
    projects: &BTreeSet<String>,
) -> Result<PubSubState, String> {
    let shown = describe(endpoint, "pubsub.googleapis.com");
    within(&shown, async {
        crate::install_crypto_provider();
        let credentials = credentials_for(endpoint)?;
        let mut topics = TopicAdmin::builder()
            .with_credentials(credentials.clone())
            .with_retry_policy(retry_policy());
        let mut subscriptions = SubscriptionAdmin::builder()
            .with_credentials(credentials)
            .with_retry_policy(retry_policy());
        if let Some(endpoint) = endpoint {
            topics = topics.with_endpoint(endpoint.trim_end_matches('/'));
            subscriptions = subscriptions.with_endpoint(endpoint.trim_end_matches('/'));
        }
        let failed = |error: &dyn std::fmt::Display| format!("{shown}: {error}");
        let topics = topics
            .build()
            .await
            .map_err(|error| failed(&format!("cannot create the Pub/Sub client: {error}")))?;
        let subscriptions = subscriptions
            .build()
            .await
            .map_err(|error| failed(&format!("cannot create the Pub/Sub client: {error}")))?;
        let mut state = PubSubState::default();
        for project in projects {
            let parent = format!("projects/{project}");
            let mut token = String::new();
            for page in 0.. {
                if page == MAX_PAGES {
                    return Err(failed(&format!(
                        "more than {MAX_PAGES} pages of topics in `{parent}`"
                    )));
                }
                let answer = topics
                    .list_topics()
                    .set_project(parent.clone())
                    .set_page_size(PAGE_SIZE)
                    .set_page_token(token.clone())
                    .send()
                    .await
                    .map_err(|error| {
                        failed(&format!(
                            "topics of `{parent}`: {}",
                            describe_google_error(&error)
                        ))
                    })?;
                state
                    .topics
                    .extend(answer.topics.into_iter().map(|topic| topic.name));
                if answer.next_page_token.is_empty() {
                    break;
                }
                token = answer.next_page_token;
            }
            let mut token = String::new();
            for page in 0.. {
                if page == MAX_PAGES {
                    return Err(failed(&format!(
                        "more than {MAX_PAGES} pages of subscriptions in `{parent}`"
                    )));
                }
                let answer = subscriptions
                    .list_subscriptions()
                    .set_project(parent.clone())
                    .set_page_size(PAGE_SIZE)
                    .set_page_token(token.clone())
                    .send()
                    .await
                    .map_err(|error| {
                        failed(&format!(
                            "subscriptions of `{parent}`: {}",
                            describe_google_error(&error)
                        ))
                    })?;
                state
                    .subscriptions
                    .extend(answer.subscriptions.into_iter().map(|subscription| {
                        LiveSubscription {
                            push_endpoint: subscription
                                .push_config
                                .map(|push| push.push_endpoint)
                                .unwrap_or_default(),
                            name: subscription.name,
                            topic: subscription.topic,
                        }
                    }));
                if answer.next_page_token.is_empty() {
                    break;
                }
                token = answer.next_page_token;
            }
        }
        Ok(state)
    })
    .await
}

/// Cloud Scheduler jobs of `locations` (`projects/P/locations/R`).
pub async fn read_scheduler(
    endpoint: Option<&str>,
    locations: &BTreeSet<String>,
) -> Result<Vec<LiveJob>, String> {
    let shown = describe(endpoint, "cloudscheduler.googleapis.com");
    within(&shown, async {
        crate::install_crypto_provider();
        let failed = |error: &dyn std::fmt::Display| format!("{shown}: {error}");
        let credentials = credentials_for(endpoint)?;
        let mut builder = CloudScheduler::builder()
            .with_credentials(credentials)
            .with_retry_policy(retry_policy());
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        let client = builder.build().await.map_err(|error| {
            failed(&format!(
                "cannot create the Cloud Scheduler client: {error}"
            ))
        })?;
        let mut jobs = Vec::new();
        for location in locations {
            let mut token = String::new();
            for page in 0.. {
                if page == MAX_PAGES {
                    return Err(failed(&format!(
                        "more than {MAX_PAGES} pages of jobs in `{location}`"
                    )));
                }
                let answer = client
                    .list_jobs()
                    .set_parent(location.clone())
                    .set_page_size(PAGE_SIZE)
                    .set_page_token(token.clone())
                    .send()
                    .await
                    .map_err(|error| {
                        failed(&format!(
                            "jobs of `{location}`: {}",
                            describe_google_error(&error)
                        ))
                    })?;
                jobs.extend(answer.jobs.into_iter().map(|job| LiveJob {
                    target: match job.target {
                        Some(Target::HttpTarget(target)) => JobTarget::Http { uri: target.uri },
                        Some(Target::PubsubTarget(target)) => JobTarget::Pubsub {
                            topic: target.topic_name,
                        },
                        _ => JobTarget::Other,
                    },
                    name: job.name,
                    schedule: job.schedule,
                    time_zone: job.time_zone,
                }));
                if answer.next_page_token.is_empty() {
                    break;
                }
                token = answer.next_page_token;
            }
        }
        Ok(jobs)
    })
    .await
}

/// Reads what `declared` needs (nothing for an API no service uses) and assembles the
/// observation with the services' URLs (read by the caller through its platform).
pub async fn observe(
    declared: &Declared,
    endpoints: &Endpoints,
    service_urls: BTreeMap<String, Result<Vec<String>, String>>,
) -> Observed {
    let projects = declared.pubsub_projects();
    let locations = declared.scheduler_locations();
    let pubsub = async {
        if projects.is_empty() {
            Ok(PubSubState::default())
        } else {
            read_pubsub(endpoints.pubsub.as_deref(), &projects).await
        }
    };
    let scheduler = async {
        if locations.is_empty() {
            Ok(Vec::new())
        } else {
            read_scheduler(endpoints.scheduler.as_deref(), &locations).await
        }
    };
    let (pubsub, scheduler) = futures::future::join(pubsub, scheduler).await;
    Observed {
        pubsub,
        scheduler,
        service_urls,
    }
}

/// Every URL the platform lists for the service, or why there is none.
pub async fn service_urls(platform: &dyn Platform, id: &ServiceId) -> Result<Vec<String>, String> {
    match platform.service(id).await {
        Ok(Some(snapshot)) => {
            let urls = snapshot.all_urls();
            if urls.is_empty() {
                Err(format!("`{}` lists no URL", id.path()))
            } else {
                Ok(urls)
            }
        }
        Ok(None) => Err(format!("`{}` is not deployed", id.path())),
        Err(error) => Err(crate::untrusted::escaped(&error.to_string()).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_come_from_the_environment_then_the_emulator() {
        let endpoints = Endpoints::from_lookup(|name| match name {
            "DEPLOYER_PUBSUB_ENDPOINT" => Some("http://127.0.0.1:1".into()),
            "DEPLOYER_SCHEDULER_ENDPOINT" => Some(" ".into()),
            _ => None,
        })
        .or_emulator(Some("http://127.0.0.1:8090"));
        assert_eq!(endpoints.pubsub.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(
            endpoints.scheduler.as_deref(),
            Some("http://127.0.0.1:8090")
        );
        assert_eq!(Endpoints::default().or_emulator(None), Endpoints::default());
    }
}
