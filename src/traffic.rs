//! Synthetic traffic for rehearsals on the local emulator.
//!
//! A canary analysis needs requests to judge. In production real users send them; on the local
//! emulator nobody does, so `deploy` to a `local` target sends a steady stream of `GET`s to the
//! service URL while the rollout runs (`--traffic RATE`, 0 turns it off). The generator is
//! bounded in rate, concurrency and time, and only ever targets the URL it is given (the
//! emulator's loopback address).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinHandle};

/// What the generator sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrafficSummary {
    /// Requests answered.
    pub answered: u64,
    /// Of those, answers with a 5xx status.
    pub server_errors: u64,
    /// Requests that got no answer (connection refused, timeout).
    pub unanswered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    answered: AtomicU64,
    server_errors: AtomicU64,
    unanswered: AtomicU64,
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

impl TrafficGenerator {
    /// Sends `rate` requests per second (at most [`MAX_RATE`]: a higher rate is sent at
    /// [`MAX_RATE`]) to `url` for at most `limit`.
    pub fn start(url: String, rate: u32, limit: Duration) -> Self {
        let counters = Arc::new(Counters::default());
        let shared = Arc::clone(&counters);
        crate::install_crypto_provider();
        let task = tokio::spawn(async move {
            let Ok(client) = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
            else {
                tracing::warn!("cannot build an HTTP client: no synthetic traffic");
                return;
            };
            let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
            if rate > MAX_RATE {
                tracing::warn!(
                    rate,
                    "synthetic traffic is capped at {MAX_RATE} requests per second"
                );
            }
            let period = Duration::from_secs(1) / rate.clamp(1, MAX_RATE);
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let deadline = tokio::time::Instant::now() + limit;
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
        });
        Self { task, counters }
    }

    /// What was sent so far.
    pub fn summary(&self) -> TrafficSummary {
        TrafficSummary {
            answered: self.counters.answered.load(Ordering::Relaxed),
            server_errors: self.counters.server_errors.load(Ordering::Relaxed),
            unanswered: self.counters.unanswered.load(Ordering::Relaxed),
        }
    }

    /// Stops sending and returns what was sent.
    pub fn stop(self) -> TrafficSummary {
        self.task.abort();
        self.summary()
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
}
