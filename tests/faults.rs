//! Faults: every Google API call bounded, every safety write persistent (issue 14).
//!
//! The second part is a small fault matrix against the emulator (real containers, Google's
//! client, the real `Driver`): Admin API 429s, 503s and latency × a healthy or a faulty canary,
//! asserting the outcome, one revision at 100% and no lock left behind.
//!
//! The first part drives the real `CloudRunPlatform` (Google's official client) against broken
//! local endpoints — a silent one, a slow drip, connection resets, a refused port, an endless
//! `nextPageToken`, an operation that never finishes — with tokio's paused clock: the waits
//! are the policy's, not the test machine's, and nothing sleeps.

mod support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::Request,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use deployer::{
    platform::{
        cloud_run::{CloudRunPlatform, Endpoint, CALL_DEADLINE, MAX_PAGES},
        read_revisions, read_service, Platform, PlatformError, RetryPolicy, ServiceId,
    },
    rollout::rollback::{execute_with, RollbackPlan, RollbackPolicy},
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
                        // SO_LINGER 0: the close is a reset (blocking on drop is moot here).
                        #[allow(deprecated)]
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
    let id = id();
    let read = read_service(&platform, &id, RetryPolicy::default());
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

/// A fake Admin API: `answer(method, path)` gives status, extra headers and a JSON body.
struct FakeApi {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl FakeApi {
    async fn start(
        answer: impl Fn(&str, &str) -> (u16, Vec<(&'static str, String)>, String)
            + Send
            + Sync
            + 'static,
    ) -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let answer = Arc::new(answer);
        let app = axum::Router::new().fallback(move |request: Request| {
            let counter = Arc::clone(&counter);
            let answer = Arc::clone(&answer);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let (status, headers, body) =
                    answer(request.method().as_str(), request.uri().path());
                let mut response: Response = (
                    StatusCode::from_u16(status).unwrap(),
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response();
                for (name, value) in headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{address}"),
            requests,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A service serving `s-1` at 100%, with `s-0` Ready beside it.
fn service_json() -> String {
    serde_json::json!({
        "name": "projects/p/locations/r/services/s",
        "etag": "\"e1\"",
        "uri": "https://s.example",
        "latestReadyRevision": "projects/p/locations/r/services/s/revisions/s-1",
        "latestCreatedRevision": "projects/p/locations/r/services/s/revisions/s-1",
        "traffic": [{"type": 2, "revision": "s-1", "percent": 100}],
        "trafficStatuses": [{"type": 2, "revision": "s-1", "percent": 100}],
    })
    .to_string()
}

/// An endless `nextPageToken` made ~1,700 requests in 75 s and left a deploy stuck mid-canary.
#[tokio::test]
async fn an_endless_next_page_token_stops_after_the_page_bound_with_an_error() {
    let api = FakeApi::start(|_, _| {
        (
            200,
            vec![],
            serde_json::json!({"revisions": [], "nextPageToken": "again"}).to_string(),
        )
    })
    .await;
    let platform = platform(&api.url).await;
    let error = read_revisions(&platform, &id(), RetryPolicy::default())
        .await
        .unwrap_err();
    assert!(matches!(error, PlatformError::Malformed(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&api.url), "{message}");
    assert!(message.contains(&format!("{MAX_PAGES} pages")), "{message}");
    assert_eq!(api.requests(), MAX_PAGES, "not retried, not more");
}

/// Google's client does not retry 429 and ignores `Retry-After`: deployer reads it.
#[tokio::test]
async fn a_429_is_throttling_with_the_retry_after_the_api_asked_for() {
    let api = FakeApi::start(|_, _| {
        (
            429,
            vec![("retry-after", "7".to_string())],
            serde_json::json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}})
                .to_string(),
        )
    })
    .await;
    let platform = platform(&api.url).await;
    let error = platform.service(&id()).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(
        error.retry_after(),
        Some(Duration::from_secs(7)),
        "{error:?}"
    );
    assert!(error.to_string().contains(&api.url), "{error}");
}

/// Google's client retried a revision read on 503; it no longer retries by itself, so the
/// platform does (the driver reads the canary's revision directly).
#[tokio::test]
async fn a_revision_read_is_retried_through_a_503() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let api = FakeApi::start(move |_, _| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            let body = serde_json::json!({"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}});
            return (503, vec![], body.to_string());
        }
        let revision = serde_json::json!({
            "name": "projects/p/locations/r/services/s/revisions/s-1",
            "conditions": [{"type": "Ready", "state": 4}],
        });
        (200, vec![], revision.to_string())
    })
    .await;
    let platform = platform(&api.url).await;
    let revision = platform.revision(&id(), "s-1").await.unwrap().unwrap();
    assert_eq!(revision.name, "s-1");
    assert_eq!(api.requests(), 2);
}

/// An operation that never completed kept `rollback` waiting 10 minutes: now each operation is
/// waited for a short deadline, the error says what was waited for, and the rollback re-reads
/// and tries again until its own budget is spent.
#[tokio::test]
async fn a_rollback_whose_operation_never_finishes_stops_at_its_budget_saying_what_it_waited_for() {
    let api = FakeApi::start(|method, path| {
        let operation = serde_json::json!({
            "name": "projects/p/locations/r/operations/op-1",
            "done": false,
        })
        .to_string();
        match (method, path) {
            ("GET", "/v2/projects/p/locations/r/services/s") => (200, vec![], service_json()),
            _ => (200, vec![], operation),
        }
    })
    .await;
    let platform =
        CloudRunPlatform::connect(&Endpoint::Custom(api.url.clone()), Duration::from_secs(1))
            .await
            .unwrap();
    let snapshot = platform.service(&id()).await.unwrap().unwrap();
    let plan = RollbackPlan {
        from: snapshot.serving(),
        to: "s-0".into(),
        why: "test".into(),
    };
    let policy = RollbackPolicy {
        budget: Duration::from_secs(3),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(200),
    };
    let error = execute_with(&platform, snapshot, &plan, None, policy)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("Cloud Run applying the update of `s`"),
        "{message}"
    );
    assert!(message.contains("gave up after"), "tried again: {message}");
}

// ---- The fault matrix on the emulator ----------------------------------------------------

mod matrix {
    use std::{collections::BTreeMap, time::Duration};

    use deployer::{
        checks::cloud_monitoring::CloudMonitoring,
        config::{HealthConfig, HumanDuration, InconclusivePolicy, RolloutConfig, RunConfig},
        emulator::faults::FaultConfig,
        interaction::Unattended,
        platform::{
            cloud_run::{revision_labels, CloudRunPlatform, Endpoint},
            Platform, RetryPolicy, RevisionSettings, RevisionSpec, ServiceId,
        },
        rollout::{
            analyser::SequentialAnalyser,
            driver::{DeployRequest, Driver, NoChecks},
            events::{Event, Outcome, RolloutReporter},
            identity::HttpProbe,
            journal::LocalJournal,
            lock::LOCK_ANNOTATION,
        },
    };

    use super::support::{hello_image, start_emulator, Load};

    /// Nothing recorded: the matrix asserts on the report and the service.
    struct Quiet;

    impl RolloutReporter for Quiet {
        fn event(&self, _: &Event) {}
    }

    fn env(name: &str, commit: &str, fail_rate: Option<&str>) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("SERVICE_NAME".to_string(), name.to_string()),
            ("BUILD_COMMIT".to_string(), commit.to_string()),
        ]);
        if let Some(rate) = fail_rate {
            env.insert("FAIL_RATE".into(), rate.into());
        }
        env
    }

    /// 10% → 100%, a look a second: a healthy canary passes after ~22 requests at 10%.
    fn policy() -> RolloutConfig {
        RolloutConfig {
            steps: vec![10, 100],
            hold: HumanDuration(Duration::from_secs(20)),
            interval: HumanDuration(Duration::from_secs(1)),
            max_error_rate: 0.2,
            min_requests: 20,
            inconclusive: InconclusivePolicy::Rollback,
            monitor_duration: HumanDuration(Duration::from_secs(2)),
            monitor_interval: HumanDuration(Duration::from_secs(1)),
            consecutive_error_limit: 3,
            ..RolloutConfig::default()
        }
    }

    /// Deploys a canary (`fail_rate` of its answers 500s) under `faults` on the Admin API and
    /// checks the end state: `expect_promoted` or rolled back to the stable revision, exactly
    /// one revision at 100%, no lock left.
    async fn deploy_under(
        name: &str,
        faults: FaultConfig,
        fail_rate: Option<&str>,
        expect_promoted: bool,
    ) {
        let directory = tempfile::tempdir().unwrap();
        let emulator = start_emulator(&directory.path().join("emulator")).await;
        let platform = CloudRunPlatform::connect(
            &Endpoint::Custom(emulator.endpoint().to_string()),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let id = ServiceId {
            project: "local".into(),
            region: "local".into(),
            name: name.into(),
        };
        let stable = format!("{name}-stable");
        let stable_commit = "5ab1e00000000000000000000000000000000001";
        let created = platform
            .create(
                &id,
                &RevisionSpec {
                    name: stable.clone(),
                    image: hello_image().to_string(),
                    labels: revision_labels(stable_commit),
                    base: None,
                    settings: RevisionSettings {
                        env: env(name, stable_commit, None),
                        ..RevisionSettings::default()
                    },
                },
            )
            .await
            .unwrap();
        let load = Load::start(&created.uri, 50, Duration::from_secs(120));
        emulator.set_faults(faults.clone()).unwrap();

        let commit = "c0ffee0000000000000000000000000000000002";
        let metrics = CloudMonitoring::new(emulator.endpoint()).unwrap();
        let analyser = SequentialAnalyser::new(&policy()).unwrap();
        let probe = HttpProbe::new();
        let state = tempfile::tempdir().unwrap();
        let driver = Driver {
            platform: &platform,
            metrics: &metrics,
            analyser: &analyser,
            probe: &probe,
            checks: &NoChecks,
            reporter: &Quiet,
            prompter: &Unattended::default(),
            local_journal: LocalJournal::in_directory(state.path().to_path_buf()),
            retry: RetryPolicy::default(),
        };
        let request = DeployRequest {
            id: id.clone(),
            service_name: name.into(),
            image: hello_image().to_string(),
            commit: commit.into(),
            dirty: None,
            run: RunConfig::default(),
            env: env(name, commit, fail_rate),
            policy: policy(),
            health: HealthConfig {
                timeout: HumanDuration(Duration::from_secs(2)),
                ..HealthConfig::default()
            },
            lock_wait: Duration::ZERO,
            ready_timeout: Duration::from_secs(30),
            accept_warnings: false,
        };
        let report = driver
            .deploy(&request, Box::pin(std::future::pending()))
            .await
            .unwrap_or_else(|error| panic!("{faults:?}: {error}"));
        emulator.set_faults(FaultConfig::default()).unwrap();
        load.finish().await;

        let snapshot = platform.service(&id).await.unwrap().unwrap();
        let expected = match (&report.outcome, expect_promoted) {
            (Outcome::Promoted { revision }, true) => revision.clone(),
            (Outcome::RolledBack { revision, .. }, false) => {
                assert_eq!(revision, &stable);
                stable.clone()
            }
            (other, _) => panic!("{faults:?}: unexpected outcome {other:?}"),
        };
        assert_eq!(snapshot.serving(), [(expected, 100)], "{faults:?}");
        assert!(
            !snapshot.annotations.contains_key(LOCK_ANNOTATION),
            "{faults:?}: no lock left behind"
        );
        emulator.shutdown().await;
    }

    /// With 30% of Admin API writes answering 429, a faulty canary's automatic rollback failed
    /// after 5 quick tries (exit 5, split left 90/10).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_faulty_canary_is_rolled_back_through_429s_on_30_percent_of_writes() {
        let faults = FaultConfig {
            error_rate: 0.3,
            error_status: Some(429),
            path_prefix: Some("/v2/".into()),
            method: Some("PATCH".into()),
            ..FaultConfig::default()
        };
        deploy_under("throttled", faults, Some("0.5"), false).await;
    }

    /// A first service read failed the deploy after 4 retries in 4 s (exit 1).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_healthy_canary_is_promoted_through_503s_and_latency_on_30_percent_of_reads() {
        let faults = FaultConfig {
            error_rate: 0.3,
            error_status: Some(503),
            path_prefix: Some("/v2/".into()),
            method: Some("GET".into()),
            latency_ms: 200,
            ..FaultConfig::default()
        };
        deploy_under("unavailable", faults, None, true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_faulty_canary_is_rolled_back_through_500s_and_latency_on_every_kind_of_call() {
        let faults = FaultConfig {
            error_rate: 0.2,
            error_status: Some(500),
            path_prefix: Some("/v2/".into()),
            latency_ms: 100,
            ..FaultConfig::default()
        };
        deploy_under("internal", faults, Some("0.5"), false).await;
    }
}
