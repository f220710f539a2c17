//! A real Google Cloud project's first hour, without Google: hostile flags and variables that
//! must be usage errors before anything is written, no credentials at all, and Google's error
//! shapes (`google.rpc.ErrorInfo`, `RetryInfo`) from a stand-in speaking its JSON format.
//!
//! Each test is named after what broke; each failed on the code before its fix.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod fake_cloud_run;
mod hostile;

use deployer::platform::Platform as _;
use std::{process::Command, time::Duration};

use fake_cloud_run::{quick_retries, service_with_statuses, Server};
use hostile::{deployer_with_env, deployer_within, run_within, valid_with, Repository, Run};

/// A repository with `services/svc.toml` on a `cloud-run` target (project and region set).
fn cloud_run_repository() -> Repository {
    let repository = Repository::new();
    repository.service(
        "svc",
        &valid_with(&[(
            "kind = \"local\"",
            "kind = \"cloud-run\"\nproject = \"my-project\"\nregion = \"us-central1\"",
        )]),
    );
    repository
}

/// Asserts a usage error (exit 2) within 5 s whose stderr contains `expected`.
fn assert_usage_error(run: &Run, expected: &str) {
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(expected), "{}", run.stderr);
}

#[test]
fn an_ftp_endpoint_is_a_usage_error_at_once_not_retried() {
    let repository = cloud_run_repository();
    let run = deployer_within(
        repository.root(),
        &["status", "svc", "--endpoint", "ftp://127.0.0.1:21"],
        Duration::from_secs(5),
    );
    assert_usage_error(&run, "not an http:// or https:// URL");
}

#[test]
fn an_endpoint_that_is_not_a_url_is_a_usage_error_not_a_transport_failure() {
    let repository = cloud_run_repository();
    let run = deployer_within(
        repository.root(),
        &["status", "svc", "--endpoint", "not a url"],
        Duration::from_secs(5),
    );
    assert_usage_error(&run, "is not a URL");
    assert!(!run.stderr.contains("transport"), "{}", run.stderr);
}

#[test]
fn endpoint_variables_with_other_schemes_are_usage_errors() {
    let repository = cloud_run_repository();
    for variable in [
        "DEPLOYER_CLOUD_RUN_ENDPOINT",
        "DEPLOYER_EMULATOR_ENDPOINT",
        "DEPLOYER_LOGGING_ENDPOINT",
        "DEPLOYER_PUBSUB_ENDPOINT",
    ] {
        let run = deployer_with_env(
            repository.root(),
            &["status", "svc"],
            &[(variable, "ftp://127.0.0.1:21")],
            Duration::from_secs(5),
        );
        assert_usage_error(&run, "ftp://127.0.0.1:21");
    }
}

#[test]
fn a_region_with_a_path_is_a_usage_error() {
    let repository = cloud_run_repository();
    for command in ["status", "rollback", "deploy"] {
        let run = deployer_within(
            repository.root(),
            &[command, "svc", "--region", "../../x"],
            Duration::from_secs(5),
        );
        assert_usage_error(&run, "is not a Cloud Run region");
    }
}

#[test]
fn an_empty_or_garbage_image_is_a_usage_error_before_anything_is_written() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    for image in ["", "not an image!", "Hello/World"] {
        let run = deployer_within(
            repository.root(),
            &["deploy", "svc", "--image", image],
            Duration::from_secs(5),
        );
        assert_usage_error(&run, "is not an image reference");
    }
}

#[test]
fn env_names_with_control_characters_non_ascii_or_reserved_are_usage_errors() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    for (env, expected) in [
        ("A\u{1b}[2JB=1", "is not an environment variable name"),
        ("NAÏVE=1", "is not an environment variable name"),
        ("1ST=1", "is not an environment variable name"),
        ("PORT=9090", "reserved by Cloud Run"),
        ("K_SERVICE=x", "reserved by Cloud Run"),
    ] {
        let run = deployer_within(
            repository.root(),
            &["deploy", "svc", "--env", env],
            Duration::from_secs(5),
        );
        assert_usage_error(&run, expected);
        assert!(!run.stderr.contains('\u{1b}'), "escaped: {}", run.stderr);
    }
}

#[test]
fn a_100_kb_env_argument_is_never_echoed_whole() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    // One argument may hold at most 128 KiB (Linux's MAX_ARG_STRLEN).
    let without_equals = format!("{}{}", "x".repeat(50_000), "é".repeat(25_000));
    let with_bad_name = format!("BAD NAME={}", "x".repeat(100_000));
    for env in [without_equals.as_str(), with_bad_name.as_str()] {
        let run = deployer_within(
            repository.root(),
            &["deploy", "svc", "--env", env],
            Duration::from_secs(5),
        );
        assert_eq!(
            run.code,
            Some(2),
            "{}",
            run.stderr.chars().take(500).collect::<String>()
        );
        assert!(
            run.stderr.chars().count() < 2_000,
            "{} characters on stderr",
            run.stderr.chars().count()
        );
    }
}

/// A rollback whose write was answered with an operation named `../../../etc/passwd` retried it
/// as "unavailable" for minutes: it is a malformed answer; the rollback re-reads the service
/// once and, the split unchanged, fails (exit 5 at the CLI) without sending the write again.
#[tokio::test]
async fn an_operation_named_like_a_path_is_malformed_and_the_rollback_rereads_and_fails() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use axum::http::Method;
    use deployer::{
        platform::{
            cloud_run::{CloudRunPlatform, Endpoint},
            PlatformError,
        },
        rollout::rollback::{execute_with, RollbackError, RollbackPlan, RollbackPolicy},
    };

    let writes = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let (counted_writes, counted_reads) = (Arc::clone(&writes), Arc::clone(&reads));
    let service = service_with_statuses(&[100]);
    let app = axum::Router::new().fallback(move |method: Method| {
        let (writes, reads, service) = (
            Arc::clone(&counted_writes),
            Arc::clone(&counted_reads),
            service.clone(),
        );
        async move {
            if method == Method::PATCH {
                writes.fetch_add(1, Ordering::SeqCst);
                serde_json::json!({"name": "../../../etc/passwd", "done": false}).to_string()
            } else {
                reads.fetch_add(1, Ordering::SeqCst);
                service
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let platform = CloudRunPlatform::connect(
        &Endpoint::Custom(format!("http://{address}")),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let snapshot = platform
        .service(&fake_cloud_run::id())
        .await
        .unwrap()
        .unwrap();
    let plan = RollbackPlan::to_stable(vec![("s-0".into(), 100)], "s-1".into(), "a test".into());
    let policy = RollbackPolicy {
        budget: Duration::from_secs(30),
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let error = execute_with(&platform, snapshot, &plan, None, policy)
        .await
        .expect_err("the split did not change");
    assert!(
        matches!(error, RollbackError::Platform(PlatformError::Malformed(_))),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not a valid resource name"),
        "{error}"
    );
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "the write is not sent again"
    );
    assert_eq!(
        reads.load(Ordering::SeqCst),
        3,
        "read, read before the write, re-read after"
    );
}

/// At the default verbosity a retried read printed timestamped tracing `WARN` lines: the
/// retries are now plain lines in the CLI's words (`retrying in 0.4 s (2 of 10): …`), and
/// `-v` keeps the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_at_default_verbosity_are_plain_lines_not_tracing_warnings() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use axum::{http::StatusCode, response::IntoResponse};

    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    let service = service_with_statuses(&[100]);
    let app = axum::Router::new().fallback(move || {
        let (counter, service) = (Arc::clone(&counter), service.clone());
        async move {
            // Two 503s, then the service.
            if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                (StatusCode::SERVICE_UNAVAILABLE, "busy".to_string()).into_response()
            } else {
                (StatusCode::OK, service).into_response()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    let root = repository.root().to_path_buf();
    let endpoint = format!("http://{address}");
    let run = |verbose: bool| {
        let (root, endpoint) = (root.clone(), endpoint.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["status", "svc", "--endpoint", endpoint.as_str()];
            if verbose {
                args.push("-v");
            }
            deployer_with_env(&root, &args, &[("RUST_LOG", "")], Duration::from_secs(60))
        })
    };
    let quiet = run(false).await.unwrap();
    assert!(
        quiet.stderr.contains("retrying in ") && quiet.stderr.contains(" (2 of 10): reading"),
        "{}",
        quiet.stderr
    );
    assert!(!quiet.stderr.contains("WARN"), "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("INFO"), "{}", quiet.stderr);
    answered.store(0, Ordering::SeqCst);
    let verbose = run(true).await.unwrap();
    assert!(
        verbose.stderr.contains("INFO"),
        "-v keeps the logs: {}",
        verbose.stderr
    );
}

/// With no Google credentials at all (an empty `HOME`, no variables), `status`, `rollback` and
/// `deploy` retried Google's metadata-server fallback for 29–37 s and ended with "Fetching the
/// token resulted in transient errors"; `check` and `health` printed that sentence per check.
/// Each now ends at once with one message naming what is missing and the fix (the bound here
/// is generous; docs/BENCHMARKS.md has the measured figures).
#[test]
fn without_google_credentials_every_command_ends_at_once_with_the_fix() {
    let repository = cloud_run_repository();
    let home = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(5);
    for args in [
        vec!["status", "svc"],
        vec!["rollback", "svc"],
        vec!["deploy", "svc"],
        vec![
            "deploy",
            "svc",
            "--image",
            "127.0.0.1:5000/svc:x",
            "--commit",
            "0123456",
        ],
        vec!["check", "svc"],
        vec!["health", "--no-alerts"],
        vec!["doctor"],
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_deployer"));
        command
            .args(&args)
            .current_dir(repository.root())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("CI", "1")
            .env("NO_COLOR", "1");
        let run = run_within(command, limit);
        // Everything the user sees (`doctor` draws its findings on stdout).
        let stderr = format!("{}{}", run.stdout, run.stderr);
        let status = run;
        assert_ne!(status.code, Some(0), "{args:?}: {stderr}");
        assert_eq!(
            stderr
                .matches("gcloud auth application-default login")
                .count(),
            1,
            "{args:?}: the fix, once: {stderr}"
        );
        assert!(
            stderr.contains("Workload Identity Federation"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("transient"), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("retrying"),
            "{args:?}: never retried: {stderr}"
        );
        if matches!(args[0], "status" | "rollback" | "deploy") {
            assert_eq!(status.code, Some(1), "{args:?}: {stderr}");
        }
    }
}

// ---- issue 19, deliverable 4: Google's error shapes ------------------------------------------

/// Google's JSON error with one `ErrorInfo` (and a `RetryInfo` when `retry_delay` is given).
fn google_error(
    code: u16,
    status: &str,
    reason: &str,
    metadata: serde_json::Value,
    retry_delay: Option<&str>,
) -> String {
    let mut details = vec![serde_json::json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": metadata,
    })];
    if let Some(delay) = retry_delay {
        details.push(serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": delay,
        }));
    }
    serde_json::json!({"error": {
        "code": code,
        "message": "a long message from Google that buries the fix. ".repeat(20),
        "status": status,
        "details": details,
    }})
    .to_string()
}

/// Reads the service through the retrying read; the error and the number of requests.
async fn read_through_retries(
    body: String,
    code: u16,
) -> (deployer::platform::PlatformError, usize) {
    let server = Server::start(code, "application/json", body).await;
    let platform = server.platform().await;
    let error = deployer::platform::read_service(&platform, &fake_cloud_run::id(), quick_retries())
        .await
        .expect_err("the read fails");
    (error, server.requests())
}

#[tokio::test]
async fn service_disabled_names_the_command_that_enables_the_api_and_is_not_retried() {
    let body = google_error(
        403,
        "PERMISSION_DENIED",
        "SERVICE_DISABLED",
        serde_json::json!({"service": "run.googleapis.com", "consumer": "projects/123"}),
        None,
    );
    let (error, requests) = read_through_retries(body, 403).await;
    let text = error.to_string();
    assert!(
        text.contains("`gcloud services enable run.googleapis.com --project 123`"),
        "{text}"
    );
    assert!(
        !text.contains("buries the fix"),
        "one line, not Google's prose: {text}"
    );
    assert!(!error.is_transient(), "{text}");
    assert_eq!(requests, 1, "a permanent error is asked once");
}

#[tokio::test]
async fn iam_permission_denied_names_the_permission_and_is_not_retried() {
    let body = google_error(
        403,
        "PERMISSION_DENIED",
        "IAM_PERMISSION_DENIED",
        serde_json::json!({"permission": "run.services.get", "resource": "projects/p/locations/r/services/s"}),
        None,
    );
    let (error, requests) = read_through_retries(body, 403).await;
    let text = error.to_string();
    assert!(text.starts_with("permission denied"), "{text}");
    assert!(text.contains("`run.services.get`"), "{text}");
    assert!(text.contains("add-iam-policy-binding"), "{text}");
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn an_insufficient_token_scope_names_the_scope_and_is_not_retried() {
    let body = google_error(
        403,
        "PERMISSION_DENIED",
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        serde_json::json!({"service": "run.googleapis.com", "method": "google.cloud.run.v2.Services.GetService"}),
        None,
    );
    let (error, requests) = read_through_retries(body, 403).await;
    let text = error.to_string();
    assert!(text.contains("auth/cloud-platform"), "{text}");
    assert!(!error.is_transient(), "{text}");
    assert_eq!(requests, 1);
}

#[tokio::test]
async fn a_rate_limit_is_retried_after_retry_info_within_the_budget() {
    let body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "RATE_LIMIT_EXCEEDED",
        serde_json::json!({"quota_limit": "WriteRequestsPerMinutePerProjectPerRegion", "service": "run.googleapis.com", "consumer": "projects/123"}),
        Some("0.020s"),
    );
    let (error, requests) = read_through_retries(body.clone(), 429).await;
    let text = error.to_string();
    assert!(error.is_transient(), "{text}");
    assert!(
        text.contains("WriteRequestsPerMinutePerProjectPerRegion"),
        "{text}"
    );
    assert!(text.contains("iam-admin/quotas?project=123"), "{text}");
    assert_eq!(requests, 5, "retried up to the policy's 5 tries");
    // One answer: the wait Google asked for is the error's.
    let server = Server::start(429, "application/json", body).await;
    let error = server
        .platform()
        .await
        .service(&fake_cloud_run::id())
        .await
        .expect_err("throttled");
    assert_eq!(error.retry_after(), Some(Duration::from_millis(20)));
}

#[tokio::test]
async fn a_quota_exceeded_follows_retry_info_too() {
    let body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "RESOURCE_QUOTA_EXCEEDED",
        serde_json::json!({"quota_metric": "run.googleapis.com/requests", "consumer": "projects/123"}),
        Some("3s"),
    );
    let server = Server::start(429, "application/json", body).await;
    let error = server
        .platform()
        .await
        .service(&fake_cloud_run::id())
        .await
        .expect_err("throttled");
    assert!(error.is_transient(), "{error}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
    assert!(
        error.to_string().contains("run.googleapis.com/requests"),
        "{error}"
    );
}

/// The CLI end of `SERVICE_DISABLED`: one line with the fix, exit 1, one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_service_whose_api_is_disabled_exits_1_with_the_enable_command() {
    let body = google_error(
        403,
        "PERMISSION_DENIED",
        "SERVICE_DISABLED",
        serde_json::json!({"service": "run.googleapis.com", "consumer": "projects/123"}),
        None,
    );
    let server = Server::start(403, "application/json", body).await;
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    let root = repository.root().to_path_buf();
    let endpoint = server.url.clone();
    let run = tokio::task::spawn_blocking(move || {
        deployer_within(
            &root,
            &["status", "svc", "--endpoint", &endpoint],
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stderr
            .matches("gcloud services enable run.googleapis.com --project 123")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert_eq!(server.requests(), 1, "{}", run.stderr);
}
