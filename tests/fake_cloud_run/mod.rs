//! A fake Cloud Run Admin API answering every request with one status, content type and body,
//! for the tests that drive Google's client into malformed, oversized or inconsistent answers.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use axum::{
    http::{header, StatusCode},
    response::IntoResponse,
};
use deployer::platform::{
    cloud_run::{CloudRunPlatform, Endpoint},
    Platform, RetryPolicy, ServiceId,
};

type Answer = (u16, &'static str, String);

/// A fake Admin API answering every request with one status, content type and body.
pub struct Server {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    answer: Arc<Mutex<Answer>>,
}

impl Server {
    pub async fn start(status: u16, content_type: &'static str, body: String) -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new((status, content_type, body)));
        let counter = Arc::clone(&requests);
        let shared = Arc::clone(&answer);
        let app = axum::Router::new().fallback(move || {
            let counter = Arc::clone(&counter);
            let (status, content_type, body) = shared.lock().unwrap().clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (
                    StatusCode::from_u16(status).unwrap(),
                    [(header::CONTENT_TYPE, content_type)],
                    body,
                )
                    .into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{address}"),
            requests,
            answer,
        }
    }

    /// Answers from now on with `status` and `body` (JSON).
    pub fn answer(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, "application/json", body);
    }

    pub async fn platform(&self) -> CloudRunPlatform {
        CloudRunPlatform::connect(
            &Endpoint::Custom(self.url.clone()),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

pub fn id() -> ServiceId {
    ServiceId {
        project: "p".into(),
        region: "r".into(),
        name: "s".into(),
    }
}

/// A Cloud Run service answer whose `trafficStatuses` have these percents.
pub fn service_with_statuses(percents: &[i64]) -> String {
    let statuses: Vec<serde_json::Value> = percents
        .iter()
        .enumerate()
        .map(|(index, percent)| {
            serde_json::json!({"type": 2, "revision": format!("s-{index}"), "percent": percent})
        })
        .collect();
    serde_json::json!({
        "name": "projects/p/locations/r/services/s",
        "etag": "\"e1\"",
        "uri": "https://s.example",
        "latestReadyRevision": "projects/p/locations/r/services/s/revisions/s-0",
        "latestCreatedRevision": "projects/p/locations/r/services/s/revisions/s-0",
        "traffic": [{"type": 2, "revision": "s-0", "percent": 100}],
        "trafficStatuses": statuses,
    })
    .to_string()
}

/// The error of reading the service.
pub async fn read_error(server: &Server) -> deployer::platform::PlatformError {
    let platform = server.platform().await;
    platform
        .service(&id())
        .await
        .expect_err("the answer is refused")
}

/// A fast retry policy, so that a wrongly retried answer shows as extra requests, not a delay.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        initial_backoff: std::time::Duration::from_millis(1),
        max_backoff: std::time::Duration::from_millis(1),
        ..Default::default()
    }
}
