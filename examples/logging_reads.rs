//! What one look at a canary's request counts costs in Cloud Logging reads, before and after
//! the bounded reader, on the emulator's Logging (`entries.list`, its filter language and
//! `sample()`), fed request log entries at a given rate.
//!
//! A canary step of `--duration` seconds with a look every `--interval` seconds, all traffic to
//! the canary revision. At each look:
//!
//! - before: the previous reader's path, every entry of the step so far paged 1,000 at a time
//!   (the `cloud-logging` provider's count over the same request-log filter, which is the loop
//!   `CloudLoggingRequests` ran until it read bounded looks);
//! - after: `CloudLoggingRequests::request_counts`, the reader the rollout uses.
//!
//! Requests to Logging are counted by the emulator itself (`Logging::lists`). Run by
//! `bench/logging_reads.sh`; results in docs/BENCHMARKS.md.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use deployer::{
    checks::{
        cloud_logging::{request_log_filter, CloudLogging, CloudLoggingRequests},
        MetricProvider, Query, RequestMetrics, Sample,
    },
    emulator::logging::{self, LogSource, Logging, RequestLog},
    platform::ServiceId,
};

fn argument(name: &str, default: u64) -> u64 {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|index| arguments.get(index + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn rates() -> Vec<u64> {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|argument| argument == "--rates")
        .and_then(|index| arguments.get(index + 1))
        .map(|list| {
            list.split(',')
                .filter_map(|rate| rate.parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![50, 500, 2000])
}

#[tokio::main]
async fn main() {
    let interval = argument("--interval", 15);
    let duration = argument("--duration", 45);
    let error_percent = argument("--error-percent", 3);
    println!(
        "canary step of {duration} s, a look every {interval} s, {error_percent}% errors; per look: requests to Logging / entries read (before → after), the sampling fraction, the counts (after) and the true counts"
    );
    println!(
        "{:>6} {:>4} | {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>16} {:>16}",
        "req/s",
        "look",
        "req bef",
        "read bef",
        "req aft",
        "read aft",
        "fraction",
        "counts after",
        "true"
    );
    for rate in rates() {
        run(rate, interval, duration, error_percent as f64 / 100.0).await;
    }
}

async fn run(rate: u64, interval: u64, duration: u64, error_rate: f64) {
    let logging = Arc::new(Logging::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let endpoint = format!("http://{}", listener.local_addr().expect("an address"));
    let app = logging::router(Arc::clone(&logging));
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Simulated time ends before the real clock, which the previous reader's window uses.
    let start: DateTime<Utc> = Utc::now() - chrono::Duration::seconds(duration as i64 + 5);
    let now = Arc::new(AtomicI64::new(start.timestamp_millis()));
    let clock = Arc::clone(&now);
    let after = CloudLoggingRequests::new(Some(endpoint.clone())).with_clock(Arc::new(move || {
        DateTime::from_timestamp_millis(clock.load(Ordering::SeqCst)).unwrap_or_else(Utc::now)
    }));
    let before = CloudLogging::new(Some(endpoint));
    let service = ServiceId {
        project: "bench".into(),
        region: "local".into(),
        name: "svc".into(),
    };
    let source = LogSource {
        project: "bench".into(),
        location: "local".into(),
        service: "svc".into(),
        revision: "canary".into(),
    };
    let (mut total, mut errors, mut random) = (0u64, 0u64, 7u64);
    for look in 1..=duration / interval {
        for index in (look - 1) * interval * rate..look * interval * rate {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let error = (random % 1_000_000) as f64 / 1e6 < error_rate;
            let request = RequestLog {
                method: "GET".into(),
                url: "http://127.0.0.1/".into(),
                status: if error { 503 } else { 200 },
                latency_seconds: 0.01,
                user_agent: None,
                remote_ip: "127.0.0.1".into(),
            };
            let at = start + chrono::Duration::microseconds((index * 1_000_000 / rate) as i64);
            logging.request_received(&source, &request, at, at);
            total += 1;
            errors += u64::from(error);
        }
        let elapsed = look * interval;
        now.store(
            (start + chrono::Duration::seconds(elapsed as i64)).timestamp_millis(),
            Ordering::SeqCst,
        );

        let lists = logging.lists();
        let window = (Utc::now() - start).to_std().unwrap_or_default() + Duration::from_secs(1);
        let old = before
            .sample(&Query::CloudLogging {
                project: "bench".into(),
                filter: request_log_filter(&service, "canary"),
                window,
            })
            .await;
        let read_before = match old {
            Ok(Sample::Value { value, .. }) => value as u64,
            other => {
                eprintln!("the previous reader failed: {other:?}");
                std::process::exit(1);
            }
        };
        let requests_before = logging.lists() - lists;

        let lists = logging.lists();
        let started = Instant::now();
        let counts = match after
            .request_counts(&service, "canary", Duration::from_secs(elapsed + 1))
            .await
        {
            Ok(counts) => counts,
            Err(error) => {
                eprintln!("the reader failed: {error}");
                std::process::exit(1);
            }
        };
        let took = started.elapsed();
        let requests_after = logging.lists() - lists;
        let Some(cost) = after.last_look(&service, "canary") else {
            eprintln!("the reader recorded no look");
            std::process::exit(1);
        };
        println!(
            "{rate:>6} {look:>4} | {requests_before:>9} {read_before:>9} | {requests_after:>9} {:>9} {:>9.5} | {:>16} {:>16}   ({} ms)",
            cost.entries_read,
            cost.fraction,
            format!("{}/{}", counts.errors, counts.total),
            format!("{errors}/{total}"),
            took.as_millis()
        );
    }
}
