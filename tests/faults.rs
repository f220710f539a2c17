//! Faults: every Google API call bounded, every safety write persistent.
//!
//! The second part is a small fault matrix against the emulator (real containers, Google's
//! client, the real `Driver`): Admin API 429s, 503s and latency × a healthy or a faulty canary,
//! asserting the outcome, one revision at 100% and no lock left behind. The third runs the
//! `deployer` binary and `kill -9`s it at each phase the rollout journal records (`verifying`,
//! `canary`, `monitoring`), then runs `deployer rollback` or a new `deployer deploy`; and runs
//! two deploys of one service at once. `bench/chaos.sh` is the same matrix, larger.
//!
//! The first part drives the real `CloudRunPlatform` (Google's official client) against broken
//! local endpoints — a silent one, a slow drip, connection resets, a refused port, an endless
//! `nextPageToken`, an operation that never finishes — with tokio's paused clock: the waits
//! are the policy's, not the test machine's, and nothing sleeps.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

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
use support::service_id::service_id;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

fn id() -> ServiceId {
    service_id("p", "r", "s")
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
    let plan = RollbackPlan::to_stable(snapshot.serving(), "s-0".into(), "test".into());
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
    use std::time::Duration;

    use deployer::{
        checks::{
            cloud_logging::CloudLoggingRequests, cloud_monitoring::CloudMonitoring, RequestMetrics,
        },
        config::{HealthConfig, HumanDuration, InconclusivePolicy, RolloutConfig, RunConfig},
        emulator::faults::FaultConfig,
        interaction::Unattended,
        platform::{Platform, RetryPolicy},
        rollout::{
            analyser::SequentialAnalyser,
            driver::Driver,
            events::{Event, Outcome, RolloutReporter},
            identity::HttpProbe,
            journal::LocalJournal,
            lock::LOCK_ANNOTATION,
            ports::{DeployRequest, NoChecks},
        },
    };

    use super::support::{
        create_hello_service, emulator_platform, hello_env, hello_image,
        service_id::local_service_id, start_emulator, Load,
    };

    /// Nothing recorded: the matrix asserts on the report and the service.
    struct Quiet;

    impl RolloutReporter for Quiet {
        fn event(&self, _: &Event) {}
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

    /// Issue #19's fault mix, scaled to a test: looks every 2 s (each look's reads retry
    /// within those 2 s), a monitor of three 2 s intervals.
    fn short_policy() -> RolloutConfig {
        RolloutConfig {
            hold: HumanDuration(Duration::from_secs(30)),
            interval: HumanDuration(Duration::from_secs(2)),
            monitor_duration: HumanDuration(Duration::from_secs(6)),
            monitor_interval: HumanDuration(Duration::from_secs(2)),
            ..policy()
        }
    }

    /// The policy of issue #19's fault matrix: hold 30 s, looks every 5 s, monitor 15 s every
    /// 5 s (a look's retries have 5 s; with 2 s, three tries of a 30% fault mix under a loaded
    /// machine can all fail, and one unread monitor interval is, rightly, not a pass).
    fn issue_policy() -> RolloutConfig {
        RolloutConfig {
            hold: HumanDuration(Duration::from_secs(30)),
            interval: HumanDuration(Duration::from_secs(5)),
            monitor_duration: HumanDuration(Duration::from_secs(15)),
            monitor_interval: HumanDuration(Duration::from_secs(5)),
            ..policy()
        }
    }

    /// Where the request counts are read.
    #[derive(Debug, Clone, Copy)]
    enum Reads {
        /// Cloud Monitoring `timeSeries.list` (`/v3`).
        Monitoring,
        /// Cloud Logging `entries.list` (`/v2`, with the Admin API).
        Logging,
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
        deploy_with(
            name,
            faults,
            fail_rate,
            expect_promoted,
            Reads::Monitoring,
            policy(),
        )
        .await;
    }

    /// [`deploy_under`] with the counts read from `reads`, under `rollout`.
    async fn deploy_with(
        name: &str,
        faults: FaultConfig,
        fail_rate: Option<&str>,
        expect_promoted: bool,
        reads: Reads,
        rollout: RolloutConfig,
    ) {
        let directory = tempfile::tempdir().unwrap();
        let emulator = start_emulator(&directory.path().join("emulator")).await;
        let platform = emulator_platform(&emulator).await;
        let id = local_service_id(name);
        let stable = format!("{name}-stable");
        let stable_commit = "5ab1e00000000000000000000000000000000001";
        let created = create_hello_service(&platform, &id, &stable, stable_commit).await;
        let load = Load::start(&created.uri, 50, Duration::from_secs(120));
        emulator.set_faults(faults.clone()).unwrap();

        let commit = "c0ffee0000000000000000000000000000000002";
        let metrics: Box<dyn RequestMetrics> = match reads {
            Reads::Monitoring => Box::new(CloudMonitoring::new(emulator.endpoint()).unwrap()),
            Reads::Logging => Box::new(CloudLoggingRequests::new(Some(
                emulator.endpoint().to_string(),
            ))),
        };
        let analyser = SequentialAnalyser::new(&rollout).unwrap();
        let probe = HttpProbe::new();
        let state = tempfile::tempdir().unwrap();
        let driver = Driver {
            platform: &platform,
            metrics: metrics.as_ref(),
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
            commit_time: None,
            dirty: None,
            run: RunConfig::default(),
            env: hello_env(name, commit, fail_rate),
            policy: rollout,
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

    /// Issue #19: 30% of every `/v2` call — Admin API reads and writes, Logging's
    /// `entries.list` — answering 503 or 429, each 200 ms slower.
    fn transient_mix() -> FaultConfig {
        FaultConfig {
            error_rate: 0.3,
            error_statuses: vec![503, 429],
            path_prefix: Some("/v2/".into()),
            latency_ms: 200,
            ..FaultConfig::default()
        }
    }

    /// Issue #19: under this mix 6 of 6 healthy canaries were rolled back ("no decision within
    /// 30s at 10%: the metrics could not be read", or a monitor interval "had no readable
    /// metrics"): one throttled `entries.list` made a whole look unread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_healthy_canary_is_promoted_through_503s_and_429s_on_admin_and_logging_calls() {
        deploy_with(
            "transient-healthy",
            transient_mix(),
            None,
            true,
            Reads::Logging,
            issue_policy(),
        )
        .await;
    }

    /// The same mix on Cloud Monitoring's `timeSeries.list` (the `cloud-monitoring` request
    /// source) and the Admin API: a throttled read is retried within the look, as Logging's is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_healthy_canary_is_promoted_through_503s_and_429s_on_admin_and_monitoring_calls() {
        deploy_with(
            "transient-monitoring",
            FaultConfig {
                path_prefix: Some("/v".into()),
                ..transient_mix()
            },
            None,
            true,
            Reads::Monitoring,
            issue_policy(),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_faulty_canary_is_rolled_back_through_503s_and_429s_on_admin_and_logging_calls() {
        deploy_with(
            "transient-faulty",
            transient_mix(),
            Some("0.5"),
            false,
            Reads::Logging,
            short_policy(),
        )
        .await;
    }
}

// ---- kill -9 at each journalled phase, and concurrent deploys (the `deployer` binary) -------

mod crashes {
    use std::{process::Child, time::Duration};

    use deployer::{
        emulator::faults::FaultConfig,
        platform::Platform,
        release::{History, Verdict},
        rollout::{
            journal::{Journal, LocalJournal},
            lock::Lock,
            machine::Phase,
        },
    };

    use super::support::stage::Stage;

    /// The commit of the run that is killed (or of the first of two concurrent runs).
    const FIRST_COMMIT: &str = "c0ffee0000000000000000000000000000000002";
    /// The commit of the run after the crash (or of the second concurrent run).
    const SECOND_COMMIT: &str = "bead000000000000000000000000000000000003";

    /// `kill -9` of a deploy at a chosen phase.
    #[async_trait::async_trait]
    trait KillAt {
        /// Starts a deploy and `kill -9`s it as soon as its journal (the local copy in the state
        /// directory, written after each write landed) shows `phase`. Returns the journal the
        /// service shows after the kill — still at `phase` — and the dead process' id.
        async fn kill_at(&self, phase: Phase) -> (Journal, u32);
    }

    #[async_trait::async_trait]
    impl KillAt for Stage {
        async fn kill_at(&self, phase: Phase) -> (Journal, u32) {
            if phase == Phase::Verifying {
                // The `verifying` window (the revision already Ready, one read and one probe)
                // is a few milliseconds; 300 ms more on every Admin API read widens it.
                self.emulator
                    .set_faults(FaultConfig {
                        latency_ms: 300,
                        method: Some("GET".into()),
                        path_prefix: Some("/v2/".into()),
                        ..FaultConfig::default()
                    })
                    .unwrap();
            }
            let mut child: Child = self.deploy("killed", FIRST_COMMIT).spawn().unwrap();
            let local = LocalJournal::in_directory(self.state.clone());
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                if local
                    .load(&self.id)
                    .is_some_and(|journal| journal.phase() == phase)
                {
                    break;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "deployer ended ({status}) before its journal showed {phase:?}:\n{}",
                        self.printed("killed")
                    );
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the journal never showed {phase:?}: {:?}\n{}",
                    local.load(&self.id),
                    self.printed("killed")
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            self.emulator.set_faults(FaultConfig::default()).unwrap();
            let snapshot = self.service().await;
            let journal = Journal::of(&snapshot).expect("the killed run's journal");
            assert_eq!(
                journal.phase(),
                phase,
                "killed at {phase:?}: {}",
                self.printed("killed")
            );
            let lock = Lock::of(&snapshot).expect("the killed run's lock");
            assert_eq!(lock.pid, child.id());
            assert!(lock.holder_gone(), "{lock:?}");
            // Killed at any moment, nothing on the platform calls the unfinished canary good.
            let history = History::of(&snapshot).unwrap();
            assert_ne!(
                history.verdict(&journal.canary),
                Some(Verdict::Good),
                "killed at {phase:?}: {history:?}"
            );
            (journal, child.id())
        }
    }

    /// `kill -9` at `phase`, then `deployer rollback`: the stable revision serves alone, the
    /// interrupted journal is closed and the dead run's lock is gone in the same write.
    async fn killed_then_rolled_back(name: &str, phase: Phase) {
        let stage = Stage::new(name).await;
        let (journal, _) = stage.kill_at(phase).await;
        let status = stage
            .run(
                "rollback",
                stage.command("rollback", &["rollback", name, "--non-interactive"]),
            )
            .await;
        let printed = stage.printed("rollback");
        assert_eq!(status.code(), Some(0), "{printed}");
        let snapshot = stage.assert_consistent(&stage.stable, &printed).await;
        let closed = Journal::of(&snapshot).unwrap();
        assert_eq!(closed.id, journal.id, "{printed}");
        assert!(
            matches!(closed.phase(), Phase::RolledBack | Phase::Stopped),
            "{closed:?}"
        );
        // The next deploy is not refused by the dead run's lock.
        let status = stage.run("next", stage.deploy("next", SECOND_COMMIT)).await;
        let printed = stage.printed("next");
        assert_eq!(status.code(), Some(0), "{printed}");
        let promoted = Journal::of(&stage.service().await).unwrap();
        stage.assert_consistent(&promoted.canary, &printed).await;
        assert_killed_canary_avoided(&stage, &journal).await;
        stage.shutdown().await;
    }

    /// After a killed rollout was ended (rolled back or dropped), the release history records
    /// its canary bad, and a plain `rollback` — after a later promotion — never chooses it.
    async fn assert_killed_canary_avoided(stage: &Stage, killed: &Journal) {
        let history = History::of(&stage.service().await).unwrap();
        assert_eq!(
            history.verdict(&killed.canary),
            Some(Verdict::Bad),
            "{history:?}"
        );
        let name = stage.id.name.clone();
        let status = stage
            .run(
                "dry-run",
                stage.command(
                    "dry-run",
                    &["rollback", &name, "--dry-run", "--format", "json"],
                ),
            )
            .await;
        let printed = stage.printed("dry-run");
        assert_eq!(status.code(), Some(0), "{printed}");
        let plan: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(stage.output("dry-run", "stdout")).unwrap(),
        )
        .unwrap();
        assert_eq!(plan["rolled_back"], false, "{printed}");
        assert_eq!(plan["to"], stage.stable.as_str(), "{printed}");
        assert_ne!(plan["to"], killed.canary.as_str(), "{printed}");
    }

    /// `kill -9` at `phase`, then a new `deployer deploy`: it recovers the interrupted rollout
    /// (canary dropped, or traffic back on the stable revision), takes over the dead run's lock
    /// and promotes its own revision.
    async fn killed_then_deployed(name: &str, phase: Phase) {
        let stage = Stage::new(name).await;
        let (journal, _) = stage.kill_at(phase).await;
        let status = stage.run("next", stage.deploy("next", SECOND_COMMIT)).await;
        let printed = stage.printed("next");
        assert_eq!(status.code(), Some(0), "{printed}");
        assert!(
            printed.contains(&format!("interrupted rollout `{}`", journal.id)),
            "{printed}"
        );
        let promoted = Journal::of(&stage.service().await).unwrap();
        assert_ne!(promoted.id, journal.id);
        assert_eq!(promoted.commit, SECOND_COMMIT);
        assert_eq!(promoted.phase(), Phase::Promoted, "{printed}");
        stage.assert_consistent(&promoted.canary, &printed).await;
        assert_killed_canary_avoided(&stage, &journal).await;
        stage.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_while_verifying_then_rolled_back() {
        killed_then_rolled_back("kv-rollback", Phase::Verifying).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_in_a_canary_step_then_rolled_back() {
        killed_then_rolled_back("kc-rollback", Phase::Canary).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_while_monitoring_then_rolled_back() {
        killed_then_rolled_back("km-rollback", Phase::Monitoring).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_while_verifying_then_deployed_again() {
        killed_then_deployed("kv-deploy", Phase::Verifying).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_in_a_canary_step_then_deployed_again() {
        killed_then_deployed("kc-deploy", Phase::Canary).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_while_monitoring_then_deployed_again() {
        killed_then_deployed("km-deploy", Phase::Monitoring).await;
    }

    /// Two deploys of one service at once (a pipeline triggered twice): one proceeds to the
    /// end, the other is refused by the lock with exit 3 (stopped before traffic) and names the
    /// holder; only the winner's revision was created and it serves alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deploys_of_one_service_one_wins_the_other_exits_3() {
        let stage = Stage::new("contended").await;
        let (first, second) = tokio::join!(
            stage.run("first", stage.deploy("first", FIRST_COMMIT)),
            stage.run("second", stage.deploy("second", SECOND_COMMIT)),
        );
        let (winner, loser, commit) = match (first.code(), second.code()) {
            (Some(0), Some(3)) => ("first", "second", FIRST_COMMIT),
            (Some(3), Some(0)) => ("second", "first", SECOND_COMMIT),
            codes => panic!(
                "exactly one deploy must proceed, the other exit 3: {codes:?}\n{}\n{}",
                stage.printed("first"),
                stage.printed("second")
            ),
        };
        let refused = stage.printed(loser);
        assert!(refused.contains("is locked by"), "{refused}");
        let promoted = Journal::of(&stage.service().await).unwrap();
        assert_eq!(promoted.commit, commit, "{}", stage.printed(winner));
        assert_eq!(promoted.phase(), Phase::Promoted);
        assert!(
            refused.contains(&format!("rollout {}", promoted.id)),
            "{refused}"
        );
        stage
            .assert_consistent(&promoted.canary, &stage.printed(winner))
            .await;
        let revisions = stage.platform.revisions(&stage.id).await.unwrap();
        assert_eq!(revisions.len(), 2, "{revisions:?}");
        stage.shutdown().await;
    }
}
