//! Malformed or oversized answers of a fake Cloud Run API (and Cloud Logging), driven through
//! Google's client: a malformed answer is neither an unavailable platform nor retried, pages are
//! shown shortened, and traffic splits that do not add up are decode errors.
//!
//! Each test is named after what broke; each failed on the code before its fix.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod fake_cloud_run;

use std::time::Duration;

use deployer::platform::Platform as _;

use fake_cloud_run::{quick_retries, read_error, service_with_statuses, Server};

#[tokio::test]
async fn a_garbage_answer_is_a_malformed_answer_not_an_unavailable_platform() {
    let server = Server::start(200, "application/json", "{\"name\": [garbage".into()).await;
    let error = read_error(&server).await;
    let text = error.to_string();
    assert!(!error.is_transient(), "{text}");
    assert!(text.contains("malformed answer"), "{text}");
    assert!(!text.contains("unavailable"), "{text}");
    assert!(text.contains(&server.url), "names the endpoint: {text}");
}

#[tokio::test]
async fn a_garbage_answer_is_not_retried() {
    let server = Server::start(200, "application/json", "not json at all".into()).await;
    let platform = server.platform().await;
    let result =
        deployer::platform::read_service(&platform, &fake_cloud_run::id(), quick_retries()).await;
    assert!(result.is_err());
    assert_eq!(server.requests(), 1, "a malformed answer is read once");
}

#[tokio::test]
async fn an_html_page_is_a_malformed_answer_shown_shortened() {
    let page = format!(
        "<!DOCTYPE html>\n<html><body>{}</body></html>\n",
        "<p>Sign in to continue</p>\n".repeat(2_000)
    );
    let server = Server::start(200, "text/html", page).await;
    let error = read_error(&server).await;
    let text = error.to_string();
    assert!(!error.is_transient(), "{text}");
    assert!(
        text.chars().count() < 600,
        "{} characters: {text}",
        text.chars().count()
    );
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(text.contains(&server.url), "names the endpoint: {text}");
}

#[tokio::test]
async fn a_one_megabyte_403_body_is_shown_shortened() {
    let body = "é".repeat(1_000_000);
    let server = Server::start(403, "text/plain", body).await;
    let error = read_error(&server).await;
    let text = error.to_string();
    assert!(text.starts_with("permission denied"), "{text}");
    assert!(
        text.chars().count() < 600,
        "{} characters",
        text.chars().count()
    );
    assert!(
        text.contains("more characters)"),
        "says what was left out: {text}"
    );
    assert!(text.contains(&server.url), "names the endpoint: {text}");
    assert!(text.contains("403"), "{text}");
}

#[tokio::test]
async fn an_html_502_from_a_proxy_is_shown_shortened_and_retried() {
    let page = format!("<html>\n{}\n</html>", "bad gateway ".repeat(50_000));
    let server = Server::start(502, "text/html", page).await;
    let platform = server.platform().await;
    let error = deployer::platform::read_service(&platform, &fake_cloud_run::id(), quick_retries())
        .await
        .expect_err("a 502 fails the read");
    let text = error.to_string();
    assert!(error.is_transient(), "{text}");
    assert!(
        text.chars().count() < 600,
        "{} characters",
        text.chars().count()
    );
    assert!(
        server.requests() >= 5,
        "transient: retried ({})",
        server.requests()
    );
}

#[tokio::test]
async fn three_full_traffic_statuses_are_not_read_as_44_percent() {
    let server = Server::start(
        200,
        "application/json",
        service_with_statuses(&[100, 100, 100]),
    )
    .await;
    let error = read_error(&server).await;
    let text = error.to_string();
    assert!(!error.is_transient(), "{text}");
    assert!(text.contains("sum to 300"), "{text}");
}

#[tokio::test]
async fn a_negative_traffic_percent_is_a_decode_error_not_clamped_to_zero() {
    let server = Server::start(200, "application/json", service_with_statuses(&[-10, 110])).await;
    let text = read_error(&server).await.to_string();
    assert!(text.contains("-10"), "{text}");
}

#[tokio::test]
async fn a_traffic_percent_above_100_is_a_decode_error_not_clamped() {
    let server = Server::start(200, "application/json", service_with_statuses(&[150])).await;
    let text = read_error(&server).await.to_string();
    assert!(text.contains("150"), "{text}");
}

#[tokio::test]
async fn a_traffic_split_summing_to_80_is_reported() {
    let server = Server::start(200, "application/json", service_with_statuses(&[50, 30])).await;
    let text = read_error(&server).await.to_string();
    assert!(text.contains("sum to 80"), "{text}");
}

#[tokio::test]
async fn a_consistent_split_still_decodes() {
    let server = Server::start(200, "application/json", service_with_statuses(&[90, 10, 0])).await;
    let platform = server.platform().await;
    let snapshot = platform
        .service(&fake_cloud_run::id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        snapshot.serving(),
        [("s-0".to_string(), 90), ("s-1".to_string(), 10)]
    );
}

/// A request log entry with `httpRequest` but no status (or one no HTTP answer has) was
/// counted as a request that succeeded: enough of them dilute a failing canary's error rate.
#[tokio::test]
async fn a_request_log_entry_without_a_possible_status_is_malformed_not_a_success() {
    use deployer::checks::{cloud_logging::CloudLoggingRequests, MetricsError, RequestMetrics};
    let server = Server::start(200, "application/json", String::new()).await;
    let metrics = CloudLoggingRequests::new(Some(server.url.clone()));
    let now = chrono::Utc::now().to_rfc3339();
    let entry = |id: &str, request: serde_json::Value| serde_json::json!({"logName": "projects/p/logs/run.googleapis.com%2Frequests", "insertId": id, "timestamp": now, "receiveTimestamp": now, "httpRequest": request});
    for odd in [
        serde_json::json!({"requestMethod": "GET"}),
        serde_json::json!({"status": 0}),
        serde_json::json!({"status": -500}),
        serde_json::json!({"status": 1503}),
    ] {
        let body = serde_json::json!({"entries": [entry("1", serde_json::json!({"status": 503})), entry("2", odd.clone())]});
        server.answer(200, body.to_string());
        let error = metrics
            .request_counts(&fake_cloud_run::id(), "s-1", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            matches!(error, MetricsError::Malformed { .. }),
            "{odd}: {error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("1 of 2 request log entries have no HTTP status"),
            "{error}"
        );
    }
    let body = serde_json::json!({"entries": [entry("1", serde_json::json!({"status": 503})), entry("2", serde_json::json!({"status": 200}))]});
    server.answer(200, body.to_string());
    let counts = metrics
        .request_counts(&fake_cloud_run::id(), "s-1", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((counts.total, counts.errors), (2, 1));
}
