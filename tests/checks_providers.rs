//! Each metric provider against its real part: the BigQuery emulator (seeded with the team's
//! tables), Prometheus from Debian, the project's Cloud Run emulator (its Logging and
//! Monitoring APIs fed by real requests to a real container), and a local HTTP server. For
//! each: a value, no data, a malformed answer, the provider down (an ERROR, never a pass) and
//! a timeout.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod support;

#[path = "fixtures/bigquery/seed.rs"]
mod seed;

use std::{path::Path, time::Duration};

use axum::{http::StatusCode, routing::get, Router};
use deployer::{
    checks::{
        self, cloud_logging::CloudLoggingRequests, cloud_monitoring::CloudMonitoring,
        prometheus::PrometheusRequests, CheckContext, CheckResult, ProviderEndpoints, Providers,
        RequestMetrics, Scope, Status,
    },
    config::{CheckConfig, Gate, Workspace},
};
use seed::Level;

/// A port where nothing listens.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// A server that accepts connections and never answers.
async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{address}")
}

/// A local HTTP server answering canned documents.
async fn canned_server() -> String {
    let app = Router::new()
        .route(
            "/stats",
            get(|| async { r#"{"coverage": {"percent": 92.4}, "late": null}"# }),
        )
        .route("/text", get(|| async { "<html>not json</html>" }))
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "overloaded") }),
        )
        .route(
            "/v2/entries:list",
            axum::routing::post(|| async { r#"{"entries": "not a list"}"# }),
        )
        .route(
            "/v3/projects/{project}/timeSeries",
            get(|| async { r#"{"timeSeries": 7}"# }),
        )
        .route(
            "/api/v1/query",
            get(|| async { r#"{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": "x"}]}}"# }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}")
}

fn check(toml: &str) -> CheckConfig {
    toml::from_str(toml).unwrap_or_else(|error| panic!("check does not parse: {error}\n{toml}"))
}

fn context(project: &str) -> CheckContext {
    CheckContext {
        service: "api".into(),
        project: project.into(),
        region: "us-west2".into(),
        ..CheckContext::default()
    }
}

async fn run_one(
    check: &CheckConfig,
    context: &CheckContext,
    providers: &Providers,
) -> CheckResult {
    checks::run_checks(&[check], context, providers)
        .await
        .remove(0)
}

fn assert_error(result: &CheckResult, contains: &str) {
    assert_eq!(result.status, Status::Error, "{result:#?}");
    assert!(!result.passes_gate());
    let message = result.message.as_deref().unwrap_or_default();
    assert!(message.contains(contains), "`{message}` lacks `{contains}`");
}

fn bigquery_check(sql: &str, timeout: &str) -> CheckConfig {
    check(&format!(
        "name = \"q\"\nprovider = \"bigquery\"\nquery = '''{sql}'''\ncomparison = \">=\"\nwarn = 90\ncritical = 70\nunit = \"percent\"\ntimeout = \"{timeout}\"\n"
    ))
}

fn providers_with(endpoints: ProviderEndpoints) -> Providers {
    support::install_crypto();
    Providers::new(endpoints)
}

#[tokio::test]
async fn shipped_bigquery_checks_report_the_seeded_values_healthy_and_degraded() {
    let endpoint = seed::endpoint();
    let workspace = Workspace::discover(None, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (services, diagnostics) = workspace.load_all().unwrap();
    assert!(diagnostics.is_empty(), "{diagnostics}");
    let shipped: Vec<&CheckConfig> = services
        .iter()
        .flat_map(|loaded| loaded.config.checks.iter())
        .filter(|check| check.provider() == deployer::config::Provider::Bigquery)
        .collect();
    assert_eq!(shipped.len(), 5, "the five BigQuery checks of the team");
    let providers = providers_with(ProviderEndpoints {
        bigquery: Some(endpoint.clone()),
        ..ProviderEndpoints::default()
    });
    for (level, project) in [
        (Level::Healthy, "providers-healthy"),
        (Level::Degraded, "providers-degraded"),
    ] {
        seed::seed(&endpoint, project, level).await;
        let results = checks::run_checks(&shipped, &context(project), &providers).await;
        for (name, value, counts) in seed::expected(level) {
            let result = results
                .iter()
                .find(|result| result.name == name)
                .unwrap_or_else(|| panic!("no result for `{name}`"));
            assert_eq!(result.value, Some(value), "{level:?} {name}: {result:#?}");
            assert_eq!(
                result.counts.map(|counts| (counts.matching, counts.total)),
                counts,
                "{level:?} {name}"
            );
            assert!(result.query.contains(project), "{}", result.query);
            assert_eq!(
                result.link.as_deref(),
                Some(
                    format!("https://console.cloud.google.com/bigquery?project={project}").as_str()
                )
            );
        }
        let status = |name: &str| results.iter().find(|r| r.name == name).unwrap().status;
        match level {
            Level::Healthy => assert!(
                results.iter().all(|r| r.status == Status::Pass),
                "{results:#?}"
            ),
            Level::Degraded => {
                assert_eq!(status("Vegas Line Coverage"), Status::Critical);
                assert_eq!(status("Grading Completeness"), Status::Critical);
                assert_eq!(status("Phase 3 Completion"), Status::Pass);
                assert_eq!(status("Recent Predictions"), Status::Pass);
                assert_eq!(status("BDB Coverage"), Status::Pass);
            }
        }
    }
}

#[tokio::test]
async fn bigquery_value_no_data_malformed_rejected_down_and_timeout() {
    let endpoint = seed::endpoint();
    let providers = providers_with(ProviderEndpoints {
        bigquery: Some(endpoint.clone()),
        ..ProviderEndpoints::default()
    });
    let context = context("providers-bigquery");
    let value = run_one(&bigquery_check("SELECT 95.5", "20s"), &context, &providers).await;
    assert_eq!((value.status, value.value), (Status::Pass, Some(95.5)));
    let low = run_one(
        &bigquery_check("SELECT 44.2, 442, 1000", "20s"),
        &context,
        &providers,
    )
    .await;
    assert_eq!(low.status, Status::Critical);
    assert_eq!(low.counts.map(|c| (c.matching, c.total)), Some((442, 1000)));

    let null = run_one(
        &bigquery_check("SELECT CAST(NULL AS FLOAT64)", "20s"),
        &context,
        &providers,
    )
    .await;
    assert_eq!(null.status, Status::NoData, "{null:#?}");
    assert!(!null.passes_gate());
    let no_row = run_one(
        &bigquery_check("SELECT x FROM UNNEST([1, 2]) AS x WHERE x > 5", "20s"),
        &context,
        &providers,
    )
    .await;
    assert_eq!(no_row.status, Status::NoData, "{no_row:#?}");

    let text = run_one(
        &bigquery_check("SELECT 'ninety'", "20s"),
        &context,
        &providers,
    )
    .await;
    assert_error(&text, "not a number");
    // The emulator answers a missing table with HTTP 200, no rows and an `errors` array: an
    // ERROR, never NO DATA.
    let missing = run_one(
        &bigquery_check(
            "SELECT COUNT(*) FROM `providers-bigquery.nope.nothing`",
            "20s",
        ),
        &context,
        &providers,
    )
    .await;
    assert_error(&missing, "refused the query");

    let down = providers_with(ProviderEndpoints {
        bigquery: Some(closed_port()),
        ..ProviderEndpoints::default()
    });
    let result = run_one(&bigquery_check("SELECT 95", "20s"), &context, &down).await;
    assert_error(&result, "unavailable");

    // Baseline: the same query for the stable revision. Both breach: service-wide; only
    // the canary breaches: the canary's own.
    let mut canary = context.clone();
    canary.revision = Some("api-00002-new".into());
    canary.stable_revision = Some("api-00001-old".into());
    for (stable_value, scope) in [(45, Scope::ServiceWide), (95, Scope::Revision)] {
        let mut baseline = bigquery_check(
            &format!("SELECT IF('{{revision}}' = 'api-00002-new', 40, {stable_value})"),
            "20s",
        );
        baseline.baseline = true;
        let result = run_one(&baseline, &canary, &providers).await;
        assert_eq!(
            (result.status, result.value),
            (Status::Critical, Some(40.0))
        );
        assert_eq!(result.revision.as_deref(), Some("api-00002-new"));
        let stable = result.baseline.as_ref().expect("baseline measured");
        assert_eq!(stable.revision, "api-00001-old");
        assert_eq!(stable.value, Some(stable_value as f64));
        assert_eq!(result.scope, scope, "{result:#?}");
    }

    let silent = providers_with(ProviderEndpoints {
        bigquery: Some(silent_server().await),
        ..ProviderEndpoints::default()
    });
    let started = std::time::Instant::now();
    let result = run_one(&bigquery_check("SELECT 95", "1s"), &context, &silent).await;
    assert_error(&result, "did not answer within 1s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

fn http_check(url: &str, field: &str, timeout: &str) -> CheckConfig {
    check(&format!(
        "name = \"h\"\nprovider = \"http\"\nurl = \"{url}\"\nfield = \"{field}\"\ncomparison = \">=\"\nwarn = 90\ncritical = 70\nunit = \"percent\"\ntimeout = \"{timeout}\"\n"
    ))
}

#[tokio::test]
async fn http_value_no_data_malformed_down_and_timeout() {
    let server = canned_server().await;
    let providers = providers_with(ProviderEndpoints::default());
    let mut context = context("p");
    context.revision_url = Some(server.clone());
    let value = run_one(
        &http_check("/stats", "coverage.percent", "5s"),
        &context,
        &providers,
    )
    .await;
    assert_eq!(
        (value.status, value.value),
        (Status::Pass, Some(92.4)),
        "{value:#?}"
    );
    assert_eq!(
        value.link.as_deref(),
        Some(format!("{server}/stats").as_str())
    );
    let absolute = run_one(
        &http_check(&format!("{server}/stats"), "coverage.percent", "5s"),
        &CheckContext::default(),
        &providers,
    )
    .await;
    assert_eq!(absolute.value, Some(92.4));
    let null = run_one(&http_check("/stats", "late", "5s"), &context, &providers).await;
    assert_eq!(null.status, Status::NoData);
    let missing = run_one(
        &http_check("/stats", "coverage.nope", "5s"),
        &context,
        &providers,
    )
    .await;
    assert_error(&missing, "no field `coverage.nope`");
    let text = run_one(&http_check("/text", "x", "5s"), &context, &providers).await;
    assert_error(&text, "not JSON");
    let unavailable = run_one(&http_check("/down", "x", "5s"), &context, &providers).await;
    assert_error(&unavailable, "HTTP 503");
    let no_base = run_one(
        &http_check("/stats", "x", "5s"),
        &CheckContext::default(),
        &providers,
    )
    .await;
    assert_error(&no_base, "no URL of the service");
    let down = run_one(
        &http_check(&format!("{}/stats", closed_port()), "x", "5s"),
        &context,
        &providers,
    )
    .await;
    assert_error(&down, "unavailable");
    let slow = run_one(
        &http_check(&format!("{}/stats", silent_server().await), "x", "1s"),
        &context,
        &providers,
    )
    .await;
    assert_error(&slow, "did not answer within 1s");
}

fn prometheus_env() -> String {
    std::env::var("DEPLOYER_TEST_PROMETHEUS").unwrap_or_else(|_| {
        panic!("DEPLOYER_TEST_PROMETHEUS is not set: run the tests through tests/run.sh, whose tests/env/30-prometheus.sh starts Prometheus")
    })
}

fn prometheus_check(query: &str, url: Option<&str>) -> CheckConfig {
    let url = url
        .map(|url| format!("url = \"{url}\"\n"))
        .unwrap_or_default();
    check(&format!(
        "name = \"p\"\nprovider = \"prometheus\"\nquery = '{query}'\n{url}comparison = \">=\"\nwarn = 1\ncritical = 1\ntimeout = \"2s\"\n"
    ))
}

#[tokio::test]
async fn prometheus_value_no_data_several_series_malformed_down_and_timeout() {
    let server = prometheus_env();
    let providers = providers_with(ProviderEndpoints {
        prometheus: Some(server.clone()),
        ..ProviderEndpoints::default()
    });
    let context = context("p");
    let up = run_one(
        &prometheus_check(r#"up{job="self"}"#, None),
        &context,
        &providers,
    )
    .await;
    assert_eq!((up.status, up.value), (Status::Pass, Some(1.0)), "{up:#?}");
    assert!(
        up.link
            .as_deref()
            .unwrap_or_default()
            .starts_with(&format!("{server}/graph?g0.expr=up%7Bjob%3D%22self%22%7D")),
        "{:?}",
        up.link
    );
    let empty = run_one(
        &prometheus_check(r#"up{job="nothing-here"}"#, None),
        &context,
        &providers,
    )
    .await;
    assert_eq!(empty.status, Status::NoData, "{empty:#?}");
    // Only Prometheus' own two jobs: other tests' emulators are scraped too (job `emulator`).
    let several = run_one(
        &prometheus_check(r#"up{job=~"self|self-again"}"#, None),
        &context,
        &providers,
    )
    .await;
    assert_error(&several, "2 series where one was expected");
    for job in ["self", "self-again"] {
        assert!(
            several
                .message
                .as_deref()
                .unwrap_or_default()
                .contains(&format!("job=\"{job}\"")),
            "{:?}",
            several.message
        );
    }
    let bad = run_one(&prometheus_check("up{", None), &context, &providers).await;
    assert_error(&bad, "refused the query");
    let canned = canned_server().await;
    let malformed = run_one(&prometheus_check("up", Some(&canned)), &context, &providers).await;
    assert_error(&malformed, "unreadable");
    let down = run_one(
        &prometheus_check("up", Some(&closed_port())),
        &context,
        &providers,
    )
    .await;
    assert_error(&down, "unavailable");
    let silent = run_one(
        &prometheus_check("up", Some(&silent_server().await)),
        &context,
        &providers,
    )
    .await;
    assert_error(&silent, "did not answer within 2s");
    // Request counts: Prometheus accepts the reader's PromQL; a revision without series
    // counts nothing, a server that is down is an error.
    let service = support::service_id::service_id("p", "r", "api");
    let counts = PrometheusRequests::new(server.clone())
        .request_counts(&service, "api-00001-abc", Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!((counts.total, counts.errors), (0, 0));
    assert!(PrometheusRequests::new(closed_port())
        .request_counts(&service, "api-00001-abc", Duration::from_secs(300))
        .await
        .is_err());
    let unset = run_one(
        &prometheus_check("up", None),
        &context,
        &providers_with(ProviderEndpoints::default()),
    )
    .await;
    assert_error(&unset, "DEPLOYER_PROMETHEUS_URL");
}

/// Polls `read` until it returns `want` (or 20 s pass); the time it took.
async fn time_until<F, Fut>(want: u64, mut read: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let started = std::time::Instant::now();
    loop {
        let got = read().await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still {got}, not {want}, after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_and_monitoring_on_the_emulator_fed_by_real_requests() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = support::start_emulator(directory.path()).await;
    let (services, _) = support::clients(emulator.endpoint()).await;
    let service = support::create_service(
        &services,
        support::PROJECT_PARENT,
        "checked",
        support::echo_service(&[]),
    )
    .await;
    let revision = support::short(&service.latest_ready_revision);
    let id = support::service_id::service_id("test", "local", "checked");
    let endpoints = ProviderEndpoints {
        logging: Some(emulator.endpoint().to_string()),
        monitoring: Some(emulator.endpoint().to_string()),
        ..ProviderEndpoints::default()
    };
    let providers = providers_with(endpoints.clone());
    let mut context = context("test");
    context.service = "checked".into();
    context.revision = Some(revision.clone());
    context.stable_revision = Some(revision.clone());

    // Before any request: zero error lines is a value (PASS), the metric has no data.
    let errors = check(
        "name = \"Error Log Lines\"\nprovider = \"cloud-logging\"\nfilter = 'resource.labels.service_name=\"{service}\" AND resource.labels.revision_name=\"{revision}\" AND httpRequest.status>=500'\nwindow = \"10m\"\ncomparison = \"<=\"\nwarn = 5\ncritical = 20\n",
    );
    let requests = check(
        "name = \"Requests\"\nprovider = \"cloud-monitoring\"\nfilter = 'metric.type = \"run.googleapis.com/request_count\" AND resource.labels.service_name = \"{service}\" AND resource.labels.revision_name = \"{revision}\"'\nwindow = \"10m\"\ncomparison = \">=\"\nwarn = 10\ncritical = 1\n",
    );
    let before = checks::run_checks(&[&errors, &requests], &context, &providers).await;
    assert_eq!(
        (before[0].status, before[0].value),
        (Status::Pass, Some(0.0)),
        "{:#?}",
        before[0]
    );
    assert_eq!(before[1].status, Status::NoData, "{:#?}", before[1]);

    // Real requests through the emulator's router: 30 good, 25 failing.
    let http = support::http();
    for _ in 0..30 {
        support::get_json(&http, &service.uri).await;
    }
    for _ in 0..25 {
        support::get_json(&http, &format!("{}/status/500", service.uri)).await;
    }
    let sent = std::time::Instant::now();
    let logging_reader = CloudLoggingRequests::new(endpoints.logging.clone());
    let monitoring_reader = CloudMonitoring::new(emulator.endpoint()).unwrap();
    let window = Duration::from_secs(600);
    let logging_fresh = time_until(55, || async {
        logging_reader
            .request_counts(&id, &revision, window)
            .await
            .map_or(0, |counts| counts.total)
    })
    .await;
    let monitoring_fresh = time_until(55, || async {
        monitoring_reader
            .request_counts(&id, &revision, window)
            .await
            .map_or(0, |counts| counts.total)
    })
    .await;
    eprintln!(
        "request-count freshness on the emulator after the last request: cloud-logging {} ms, cloud-monitoring {} ms (measured {} ms after sending)",
        logging_fresh.as_millis(),
        monitoring_fresh.as_millis(),
        sent.elapsed().as_millis()
    );
    let counts = logging_reader
        .request_counts(&id, &revision, window)
        .await
        .unwrap();
    assert_eq!((counts.total, counts.errors), (55, 25));
    let counts = monitoring_reader
        .request_counts(&id, &revision, window)
        .await
        .unwrap();
    assert_eq!((counts.total, counts.errors), (55, 25));

    // Checks: 25 error entries is CRITICAL (> 20); 55 requests pass; the baseline is the
    // same revision here, so it is not measured twice.
    let after = checks::run_checks(&[&errors, &requests], &context, &providers).await;
    assert_eq!(
        (after[0].status, after[0].value),
        (Status::Critical, Some(25.0)),
        "{:#?}",
        after[0]
    );
    assert!(after[0]
        .link
        .as_deref()
        .unwrap_or_default()
        .starts_with("https://console.cloud.google.com/logs/query;query="));
    assert_eq!(
        (after[1].status, after[1].value),
        (Status::Pass, Some(55.0)),
        "{:#?}",
        after[1]
    );

    // Several series where one is expected: no reduction, grouped by response code.
    let by_code = check(
        "name = \"By code\"\nprovider = \"cloud-monitoring\"\nfilter = 'metric.type = \"run.googleapis.com/request_count\" AND resource.labels.service_name = \"{service}\"'\naligner = \"ALIGN_SUM\"\nreducer = \"REDUCE_NONE\"\ncomparison = \">=\"\nwarn = 1\ncritical = 1\n",
    );
    let ambiguous = run_one(&by_code, &context, &providers).await;
    assert_error(&ambiguous, "series where one was expected");

    // Baseline: the stable revision measured too; a breach it shares is service-wide.
    let mut canary_context = context.clone();
    canary_context.revision = Some(revision.clone());
    canary_context.stable_revision = Some(revision.clone());
    let mut baseline_errors = errors.clone();
    baseline_errors.baseline = true;
    let shared = run_one(&baseline_errors, &canary_context, &providers).await;
    assert_eq!(shared.scope, Scope::Revision, "same revision: no baseline");

    // Malformed answers, the provider down, and a timeout: ERROR, never PASS.
    let canned = canned_server().await;
    for (endpoints, contains) in [
        (
            ProviderEndpoints {
                logging: Some(canned.clone()),
                monitoring: Some(canned.clone()),
                ..ProviderEndpoints::default()
            },
            "unreadable",
        ),
        (
            ProviderEndpoints {
                logging: Some(closed_port()),
                monitoring: Some(closed_port()),
                ..ProviderEndpoints::default()
            },
            "unavailable",
        ),
    ] {
        let broken = providers_with(endpoints.clone());
        for result in checks::run_checks(&[&errors, &requests], &context, &broken).await {
            assert_error(&result, contains);
        }
        assert!(CloudLoggingRequests::new(endpoints.logging.clone())
            .request_counts(&id, &revision, window)
            .await
            .is_err());
    }
    let silent = silent_server().await;
    let slow = providers_with(ProviderEndpoints {
        logging: Some(silent.clone()),
        monitoring: Some(silent),
        ..ProviderEndpoints::default()
    });
    let mut quick_errors = errors.clone();
    quick_errors.timeout = "1s".parse().unwrap();
    let mut quick_requests = requests.clone();
    quick_requests.timeout = "1s".parse().unwrap();
    let started = std::time::Instant::now();
    for result in checks::run_checks(&[&quick_errors, &quick_requests], &context, &slow).await {
        assert_error(&result, "did not answer within 1s");
    }
    // Concurrent: two 1-second timeouts take about one second, not two.
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scraping_the_emulator_counts_real_requests() {
    let server = prometheus_env();
    let targets = std::env::var("DEPLOYER_TEST_PROMETHEUS_TARGETS")
        .expect("DEPLOYER_TEST_PROMETHEUS_TARGETS is set by tests/env/30-prometheus.sh");
    let directory = tempfile::tempdir().unwrap();
    let emulator = support::start_emulator(directory.path()).await;
    let (services, _) = support::clients(emulator.endpoint()).await;
    let name = format!("scraped-{}", std::process::id());
    let service = support::create_service(
        &services,
        support::PROJECT_PARENT,
        &name,
        support::echo_service(&[]),
    )
    .await;
    let revision = support::short(&service.latest_ready_revision);
    let target_file = Path::new(&targets).join(format!("{name}.json"));
    let address = emulator
        .endpoint()
        .trim_start_matches("http://")
        .to_string();
    std::fs::write(&target_file, format!("[{{\"targets\": [\"{address}\"]}}]")).unwrap();

    let http = support::http();
    for _ in 0..9 {
        support::get_json(&http, &service.uri).await;
    }
    support::get_json(&http, &format!("{}/status/500", service.uri)).await;
    let providers = providers_with(ProviderEndpoints {
        prometheus: Some(server.clone()),
        ..ProviderEndpoints::default()
    });
    let mut total = prometheus_check(
        &format!("sum(emulator_request_count{{service_name=\"{name}\"}})"),
        None,
    );
    total.warn = 10.0;
    total.critical = 1.0;
    // Prometheus scrapes the emulator within seconds of discovering it.
    let started = std::time::Instant::now();
    let first = loop {
        let result = run_one(&total, &context("p"), &providers).await;
        if result.value == Some(10.0) || started.elapsed() > Duration::from_secs(20) {
            break result;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (first.status, first.value),
        (Status::Pass, Some(10.0)),
        "{first:#?}"
    );

    // More requests, a quarter of them failing: the reader counts every request of the young
    // revision by class, exactly.
    for _ in 0..15 {
        support::get_json(&http, &service.uri).await;
    }
    for _ in 0..5 {
        support::get_json(&http, &format!("{}/status/500", service.uri)).await;
    }
    let id = support::service_id::service_id("test", "local", &name);
    let reader = PrometheusRequests::new(server);
    let started = std::time::Instant::now();
    let counts = loop {
        let counts = reader
            .request_counts(&id, &revision, Duration::from_secs(600))
            .await
            .unwrap();
        if (counts.total, counts.errors) == (30, 6) || started.elapsed() > Duration::from_secs(20) {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = std::fs::remove_file(&target_file);
    assert_eq!((counts.total, counts.errors), (30, 6));
    emulator.shutdown().await;
}

#[tokio::test]
async fn one_slow_provider_never_delays_the_others() {
    let endpoint = seed::endpoint();
    let providers = providers_with(ProviderEndpoints {
        bigquery: Some(endpoint),
        prometheus: Some(silent_server().await),
        ..ProviderEndpoints::default()
    });
    let mut slow = prometheus_check("up", None);
    slow.timeout = "3s".parse().unwrap();
    slow.gates = vec![Gate::Canary];
    let fast = bigquery_check("SELECT 95", "20s");
    let started = std::time::Instant::now();
    let (fast_result, _) = futures::future::join(
        async {
            let result = run_one(&fast, &context("p"), &providers).await;
            (result, started.elapsed())
        },
        run_one(&slow, &context("p"), &providers),
    )
    .await;
    let (fast_result, fast_elapsed) = fast_result;
    assert_eq!(fast_result.status, Status::Pass);
    assert!(fast_elapsed < Duration::from_secs(2), "{fast_elapsed:?}");
    let results = checks::run_checks(&[&fast, &slow], &context("p"), &providers).await;
    assert_eq!(results[0].status, Status::Pass);
    assert!(results[0].elapsed_ms < 2000, "{}", results[0].elapsed_ms);
    assert_eq!(results[1].status, Status::Error);
}
