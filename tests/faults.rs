//! Faults: every Google API call bounded, every safety write persistent (issue 14).
//!
//! The first part drives the real `CloudRunPlatform` (Google's official client) against broken
//! local endpoints — a silent one, a slow drip, connection resets, a refused port, an endless
//! `nextPageToken`, an operation that never finishes — with tokio's paused clock: the waits
//! are the policy's, not the test machine's, and nothing sleeps.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use deployer::platform::{
    cloud_run::{CloudRunPlatform, Endpoint, CALL_DEADLINE, MAX_PAGES},
    read_revisions, read_service, Platform, PlatformError, RetryPolicy, ServiceId,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

fn id() -> ServiceId {
    ServiceId {
        project: "p".into(),
        region: "r".into(),
        name: "s".into(),
    }
}

/// How a broken endpoint behaves once a connection is accepted.
#[derive(Debug, Clone, Copy)]
enum Broken {
    /// Reads the request and never answers.
    Silent,
    /// Answers a status line, then one header byte a second, forever.
    Drip,
    /// Resets the connection as soon as it is accepted.
    Reset,
}

/// A raw TCP endpoint that misbehaves as told; counts the connections it accepted.
async fn broken_endpoint(behaviour: Broken) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                match behaviour {
                    Broken::Reset => {
                        let _ = stream.set_linger(Some(Duration::ZERO));
                        drop(stream);
                    }
                    Broken::Silent => {
                        let mut buffer = vec![0; 65536];
                        while stream.read(&mut buffer).await.is_ok_and(|n| n > 0) {}
                    }
                    Broken::Drip => {
                        let mut buffer = vec![0; 65536];
                        let _ = stream.read(&mut buffer).await;
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ").await;
                        loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            if stream.write_all(b"a").await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (url, accepted)
}

async fn platform(url: &str) -> CloudRunPlatform {
    CloudRunPlatform::connect(&Endpoint::Custom(url.to_string()), Duration::from_secs(60))
        .await
        .unwrap()
}

/// The longest a read may take by the policy: its budget, plus the one call in flight.
fn read_bound() -> Duration {
    RetryPolicy::default().budget + CALL_DEADLINE
}

/// Reads the service against `url` the way `deployer status` does; the error and how long it
/// took (on the paused clock). A read that hangs fails the test after 30 virtual minutes.
async fn status_read(url: &str) -> (PlatformError, Duration) {
    let platform = platform(url).await;
    let started = tokio::time::Instant::now();
    let read = read_service(&platform, &id(), RetryPolicy::default());
    let result = tokio::time::timeout(Duration::from_secs(1800), read)
        .await
        .expect("the read hung for 30 minutes");
    (result.expect_err("a broken endpoint"), started.elapsed())
}

fn assert_bounded_and_named(url: &str, error: &PlatformError, elapsed: Duration) {
    assert!(elapsed <= read_bound(), "took {elapsed:?}: {error}");
    let message = error.to_string();
    assert!(message.contains(url), "names the endpoint: {message}");
    assert!(error.is_transient(), "{error:?}");
}

/// A status read against an endpoint that never answers hung 5 minutes: each try waited about
/// 60 s inside the client's own retry loop, and ours repeated it 5 times.
#[tokio::test(start_paused = true)]
async fn a_status_read_against_a_silent_endpoint_gives_up_within_the_budget_naming_it() {
    let (url, accepted) = broken_endpoint(Broken::Silent).await;
    let (error, elapsed) = status_read(&url).await;
    assert_bounded_and_named(&url, &error, elapsed);
    assert!(error.to_string().contains("no answer"), "{error}");
    assert!(error.to_string().contains("gave up after"), "{error}");
    let tries = accepted.load(Ordering::SeqCst);
    assert!((2..=10).contains(&tries), "{tries} tries");
}

#[tokio::test(start_paused = true)]
async fn a_status_read_against_a_slow_drip_gives_up_within_the_budget_naming_it() {
    let (url, _) = broken_endpoint(Broken::Drip).await;
    let (error, elapsed) = status_read(&url).await;
    assert_bounded_and_named(&url, &error, elapsed);
}

#[tokio::test(start_paused = true)]
async fn a_status_read_against_connection_resets_gives_up_within_the_budget_naming_it() {
    let (url, accepted) = broken_endpoint(Broken::Reset).await;
    let (error, elapsed) = status_read(&url).await;
    assert_bounded_and_named(&url, &error, elapsed);
    assert!(accepted.load(Ordering::SeqCst) >= 2, "retried");
}

#[tokio::test(start_paused = true)]
async fn a_status_read_against_a_refused_port_gives_up_within_the_budget_naming_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (error, elapsed) = status_read(&url).await;
    assert_bounded_and_named(&url, &error, elapsed);
}
