//! The request-count reader (`CloudLoggingRequests`) against the emulator's Cloud Logging
//! (`entries.list` with its filter language and `sample()`), fed request log entries at a
//! given rate with simulated timestamps: the looks of a canary step every 15 s, each bounded
//! in pages whatever the traffic, and the counts against the true ones.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "support/service_id.rs"]
mod service_id;

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use deployer::{
    checks::{
        cloud_logging::CloudLoggingRequests,
        request_log::{MAX_PAGES_PER_LOOK, TARGET_ENTRIES_PER_LOOK},
        RequestMetrics,
    },
    emulator::logging::{self, LogSource, Logging, RequestLog},
    platform::ServiceId,
};
use service_id::service_id;

struct Feed {
    logging: Arc<Logging>,
    endpoint: String,
    /// Simulated wall clock, in milliseconds since the epoch.
    now: Arc<AtomicI64>,
    start: DateTime<Utc>,
    /// Requests fed so far, and their 5xx.
    total: u64,
    errors: u64,
    random: u64,
}

impl Feed {
    async fn start() -> Self {
        let logging = Arc::new(Logging::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = logging::router(Arc::clone(&logging));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Self {
            logging,
            endpoint,
            now: Arc::new(AtomicI64::new(start.timestamp_millis())),
            start,
            total: 0,
            errors: 0,
            random: 42,
        }
    }

    fn reader(&self) -> CloudLoggingRequests {
        let now = Arc::clone(&self.now);
        CloudLoggingRequests::new(Some(self.endpoint.clone())).with_clock(Arc::new(move || {
            DateTime::from_timestamp_millis(now.load(Ordering::SeqCst)).unwrap()
        }))
    }

    /// `rate` requests per second to `revision` from `from` to `to` seconds after the start,
    /// each a 5xx with probability `error_rate`; the clock moves to `to`.
    fn serve(&mut self, revision: &str, rate: u64, error_rate: f64, from: u64, to: u64) {
        let source = LogSource {
            project: "test".into(),
            location: "local".into(),
            service: "svc".into(),
            revision: revision.into(),
        };
        for index in from * rate..to * rate {
            // xorshift64: a fixed sequence of errors, the same on every run.
            self.random ^= self.random << 13;
            self.random ^= self.random >> 7;
            self.random ^= self.random << 17;
            let error = (self.random % 1_000_000) as f64 / 1e6 < error_rate;
            let at = self.start + chrono::Duration::microseconds((index * 1_000_000 / rate) as i64);
            let request = RequestLog {
                method: "GET".into(),
                url: "http://127.0.0.1/".into(),
                status: if error { 503 } else { 200 },
                latency_seconds: 0.01,
                user_agent: None,
                remote_ip: "127.0.0.1".into(),
            };
            self.logging.request_received(&source, &request, at, at);
            self.total += 1;
            self.errors += u64::from(error);
        }
        let to = self.start + chrono::Duration::seconds(to as i64);
        self.now.store(to.timestamp_millis(), Ordering::SeqCst);
    }
}

fn service() -> ServiceId {
    service_id("test", "local", "svc")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_2000_requests_per_second_each_look_reads_at_most_four_pages_and_the_error_rate_is_within_three_standard_errors(
) {
    let mut feed = Feed::start().await;
    let reader = feed.reader();
    for look in 1..=3u64 {
        let before = feed.logging.lists();
        feed.serve("canary", 2000, 0.03, (look - 1) * 15, look * 15);
        // The canary step's cumulative window: the step so far, plus a second.
        let window = Duration::from_secs(look * 15 + 1);
        let counts = reader
            .request_counts(&service(), "canary", window)
            .await
            .unwrap();
        let cost = reader.last_look(&service(), "canary").unwrap();
        let requests = feed.logging.lists() - before;
        assert_eq!(requests, u64::from(cost.requests));
        // The stated bound: MAX_PAGES_PER_LOOK pages, plus one probe on the first look.
        let bound = MAX_PAGES_PER_LOOK as u64 + u64::from(look == 1);
        assert!(requests <= bound, "look {look}: {requests} requests");
        assert!(cost.entries_read <= bound * 1000, "look {look}: {cost:?}");
        // In the steady state, about one page of new entries (the target) per look.
        if look > 1 {
            assert!(requests <= 2, "look {look}: {requests} requests");
            assert!(
                (cost.entries_read as f64) < 1.4 * TARGET_ENTRIES_PER_LOOK,
                "look {look}: {cost:?}"
            );
        }
        assert!(cost.fraction < 0.1, "{cost:?}");
        assert!(counts.sample_ppm.is_some());
        // Counts are the sample's: enough requests to decide, and the error rate within three
        // standard errors sqrt(p(1-p)/n) of the true one.
        let truth = feed.errors as f64 / feed.total as f64;
        let rate = counts.errors as f64 / counts.total as f64;
        let standard_error = (truth * (1.0 - truth) / counts.total as f64).sqrt();
        assert!(counts.total >= 1000, "look {look}: {counts:?}");
        assert!(
            (rate - truth).abs() <= 3.0 * standard_error,
            "look {look}: sampled {rate:.4} ({counts:?}), true {truth:.4} ({} of {}), standard error {standard_error:.4}",
            feed.errors,
            feed.total
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_50_requests_per_second_looks_read_only_new_entries_and_count_exactly() {
    let mut feed = Feed::start().await;
    let reader = feed.reader();
    let mut read = 0;
    for look in 1..=4u64 {
        feed.serve("canary", 50, 0.05, (look - 1) * 15, look * 15);
        let window = Duration::from_secs(look * 15 + 1);
        let counts = reader
            .request_counts(&service(), "canary", window)
            .await
            .unwrap();
        let cost = reader.last_look(&service(), "canary").unwrap();
        assert_eq!(
            (counts.total, counts.errors, counts.sample_ppm),
            (feed.total, feed.errors, None),
            "look {look}"
        );
        assert_eq!(cost.fraction, 1.0);
        read += cost.entries_read;
        if look > 1 {
            // 750 new entries and the 10-second overlap (500) again, not the whole step.
            assert_eq!(cost.entries_read, 1251, "look {look}");
            assert_eq!(cost.requests, 2, "look {look}");
        }
    }
    assert!(read < 2 * feed.total);
}
