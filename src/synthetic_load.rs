//! Synthetic traffic for rehearsals on the local emulator.
//!
//! A canary analysis needs requests to judge. In production real users send them; on the local
//! emulator nobody does, so `deploy` to a `local` target sends a steady stream of `GET`s to the
//! service URL while the rollout runs (`--traffic RATE`, 0 turns it off). The generator is
//! bounded in rate, concurrency and time, and only ever targets the URL it is given (the
//! emulator's loopback address).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinHandle};

use crate::platform::{Platform, ServiceId};

/// What the generator sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrafficSummary {
    /// Requests answered.
    pub answered: u64,
    /// Of those, answers with a 5xx status.
    pub server_errors: u64,
    /// Requests that got no answer (connection refused, timeout).
    pub unanswered: u64,
    /// False when the generator never sent anything because it could not learn the service's
    /// URL; `problem` then says why.
    pub started: bool,
    /// The last reason it could not start (or `None`).
    pub problem: Option<String>,
}

impl TrafficSummary {
    /// One line for the deploy report: what was sent, or that nothing was and why.
    pub fn describe(&self) -> String {
        if self.started {
            format!(
                "synthetic traffic: {} requests answered ({} with 5xx), {} unanswered",
                self.answered, self.server_errors, self.unanswered
            )
        } else {
            format!(
                "synthetic traffic never started: {} (the canary had no requests to judge)",
                self.problem
                    .as_deref()
                    .unwrap_or("stopped before the service's URL was known")
            )
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    server_errors: AtomicU64,
    unanswered: AtomicU64,
    started: AtomicBool,
    problem: Mutex<Option<String>>,
}

impl Counters {
    fn set_problem(&self, problem: Option<String>) {
        *self
            .problem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = problem;
    }
}

/// A running generator; [`TrafficGenerator::stop`] ends it.
#[derive(Debug)]
pub struct TrafficGenerator {
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

/// Requests in flight at most (a slow service must not pile up connections).
const MAX_IN_FLIGHT: usize = 64;

/// The highest rate, in requests per second (`deploy --traffic` refuses more). A rehearsal
/// needs tens of requests per second; a rate near `u32::MAX` made the period between requests
/// round to zero, which panicked the timer.
pub const MAX_RATE: u32 = 1000;

/// Longest wait between two reads of the service's URL while it is not known.
const MAX_URL_BACKOFF: Duration = Duration::from_secs(5);

impl TrafficGenerator {
    /// Sends `rate` requests per second (at most [`MAX_RATE`]: a higher rate is sent at
    /// [`MAX_RATE`]) to `url` for at most `limit`.
    pub fn start(url: String, rate: u32, limit: Duration) -> Self {
        let counters = Arc::new(Counters::default());
        counters.started.store(true, Ordering::Relaxed);
        let shared = Arc::clone(&counters);
        let deadline = tokio::time::Instant::now() + limit;
        let task = tokio::spawn(async move { send(url, rate, deadline, shared).await });
        Self { task, counters }
    }

    /// Like [`TrafficGenerator::start`], for the URL of service `id`, read from `platform`
    /// until it is known: a failed read (or a service not created yet) is retried, not the end
    /// of the traffic — one failed read at start used to disable the generator without a word
    /// and the healthy canary was rolled back for lack of data. The summary says when it never
    /// started, and why.
    pub fn start_for_service(
        platform: Arc<dyn Platform>,
        id: ServiceId,
        rate: u32,
        limit: Duration,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let shared = Arc::clone(&counters);
        let deadline = tokio::time::Instant::now() + limit;
        let task = tokio::spawn(async move {
            let mut wait = Duration::from_millis(250);
            let url = loop {
                let (problem, expected) = match platform.service(&id).await {
                    Ok(Some(snapshot)) if !snapshot.uri.is_empty() => break snapshot.uri,
                    // Expected while a first deploy creates the service: not worth a warning.
                    Ok(Some(_)) => ("the service has no URL yet".to_string(), true),
                    Ok(None) => ("the service does not exist yet".to_string(), true),
                    Err(error) => (format!("cannot read the URL of `{id}`: {error}"), false),
                };
                if expected {
                    tracing::debug!(
                        "synthetic traffic not started yet: {problem}; retrying in {wait:?}"
                    );
                } else {
                    tracing::info!(
                        target: "deployer::progress",
                        "synthetic traffic not started yet: {problem}; retrying in {}",
                        humantime::format_duration(Duration::from_millis(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)))
                    );
                }
                shared.set_problem(Some(problem));
                if tokio::time::Instant::now() + wait >= deadline {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_URL_BACKOFF);
            };
            shared.set_problem(None);
            shared.started.store(true, Ordering::Relaxed);
            send(url, rate, deadline, shared).await;
        });
        Self { task, counters }
    }

    /// What was sent so far.
    pub fn summary(&self) -> TrafficSummary {
        TrafficSummary {
            answered: self.counters.answered.load(Ordering::Relaxed),
            server_errors: self.counters.server_errors.load(Ordering::Relaxed),
            unanswered: self.counters.unanswered.load(Ordering::Relaxed),
            started: self.counters.started.load(Ordering::Relaxed),
            problem: self
                .counters
                .problem
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// Stops sending and returns what was sent.
    pub fn stop(self) -> TrafficSummary {
        self.task.abort();
        self.summary()
    }
}

/// Sends `rate` requests per second to `url` until `deadline`.
async fn send(url: String, rate: u32, deadline: tokio::time::Instant, shared: Arc<Counters>) {
    crate::install_crypto_provider();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            shared.started.store(false, Ordering::Relaxed);
            shared.set_problem(Some(format!("cannot build an HTTP client: {error}")));
            tracing::info!(target: "deployer::progress", "warning: cannot build an HTTP client: no synthetic traffic");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    if rate > MAX_RATE {
        tracing::info!(
            target: "deployer::progress",
            "warning: synthetic traffic is capped at {MAX_RATE} requests per second (asked {rate})"
        );
    }
    let period = Duration::from_secs(1) / rate.clamp(1, MAX_RATE);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while tokio::time::Instant::now() < deadline {
        ticks.tick().await;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue;
        };
        let client = client.clone();
        let url = url.clone();
        let counters = Arc::clone(&shared);
        tokio::spawn(async move {
            match client.get(&url).send().await {
                Ok(response) => {
                    counters.answered.fetch_add(1, Ordering::Relaxed);
                    if response.status().is_server_error() {
                        counters.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    counters.unanswered.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn server(status: u16) -> (String, Arc<AtomicU64>) {
        let hits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::from_u16(status).unwrap_or_default()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}/"), hits)
    }

    async fn wait_for(hits: &AtomicU64, count: u64) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while hits.load(Ordering::Relaxed) < count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the generator sends requests");
    }

    #[tokio::test]
    async fn sends_until_stopped_and_counts_server_errors() {
        let (url, hits) = server(500).await;
        let generator = TrafficGenerator::start(url, 100, Duration::from_secs(60));
        wait_for(&hits, 20).await;
        let summary = generator.stop();
        assert!(summary.answered >= 1);
        assert_eq!(summary.server_errors, summary.answered);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_stop = hits.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            hits.load(Ordering::Relaxed),
            after_stop,
            "nothing sent after stop"
        );
    }

    #[tokio::test]
    async fn stops_by_itself_at_its_limit() {
        let (url, hits) = server(200).await;
        let generator = TrafficGenerator::start(url, 200, Duration::from_millis(200));
        tokio::time::timeout(Duration::from_secs(30), async {
            while !generator.task.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the generator ends at its limit");
        assert!(hits.load(Ordering::Relaxed) >= 1);
    }

    #[tokio::test]
    async fn a_rate_of_u32_max_does_not_panic_with_a_zero_period() {
        let (url, hits) = server(200).await;
        let generator = TrafficGenerator::start(url, u32::MAX, Duration::from_secs(60));
        wait_for(&hits, 5).await;
        assert!(
            !generator.task.is_finished(),
            "the generator is still running"
        );
        generator.stop();
    }

    #[tokio::test]
    async fn an_unreachable_service_is_counted_not_fatal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let generator = TrafficGenerator::start(url, 100, Duration::from_secs(60));
        tokio::time::timeout(Duration::from_secs(30), async {
            while generator.summary().unanswered < 5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("unanswered requests are counted");
        let summary = generator.stop();
        assert_eq!(summary.answered, 0);
    }

    fn memory_service() -> (Arc<crate::platform::memory::MemoryPlatform>, ServiceId) {
        let platform = Arc::new(crate::platform::memory::MemoryPlatform::new());
        let id = ServiceId {
            project: "p".into(),
            region: "r".into(),
            name: "svc".into(),
        };
        (platform, id)
    }

    async fn create(platform: &crate::platform::memory::MemoryPlatform, id: &ServiceId) {
        let spec = crate::platform::RevisionSpec {
            name: "svc-1".into(),
            image: "a".into(),
            labels: Default::default(),
            base: None,
            settings: Default::default(),
        };
        platform.create(id, &spec).await.unwrap();
    }

    /// One failed read at start disabled the local traffic generator without a word, and the
    /// healthy canary was rolled back for lack of data.
    #[tokio::test]
    async fn a_failed_first_read_of_the_url_is_retried_and_traffic_flows() {
        let (url, hits) = server(200).await;
        let (platform, id) = memory_service();
        create(&platform, &id).await;
        platform.set_uri(&id, &url);
        for _ in 0..2 {
            platform.inject_read_failure(crate::platform::PlatformError::Unavailable(
                "HTTP 503".into(),
            ));
        }
        let generator =
            TrafficGenerator::start_for_service(platform, id, 100, Duration::from_secs(60));
        wait_for(&hits, 5).await;
        let summary = generator.stop();
        assert!(summary.started, "{summary:?}");
        assert!(
            summary.describe().contains("requests answered"),
            "{summary:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_generator_that_never_learns_the_url_says_so_and_why() {
        let (platform, id) = memory_service();
        create(&platform, &id).await;
        for _ in 0..1000 {
            platform.inject_read_failure(crate::platform::PlatformError::Unavailable(
                "`http://fake`: HTTP 503".into(),
            ));
        }
        let generator =
            TrafficGenerator::start_for_service(platform, id, 100, Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(31)).await;
        let summary = generator.stop();
        assert!(!summary.started);
        let line = summary.describe();
        assert!(line.contains("never started"), "{line}");
        assert!(line.contains("http://fake"), "{line}");
    }
}
