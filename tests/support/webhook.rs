//! A local stand-in for a generic JSON webhook receiver: `POST /hooks/{secret}` with a JSON
//! body (`content-type: application/json`, else `415`) is recorded and answered `204`. Told to,
//! it answers `429` with `Retry-After` first, refuses with a status, or hangs: it reads the
//! request and never answers (the connection stays open), as a wedged receiver does.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]
#![allow(dead_code)] // Each test binary uses a different part.

use std::sync::{Arc, Mutex};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use serde_json::Value;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// `204` and the body recorded.
    #[default]
    Accept,
    /// This status, nothing recorded.
    Refuse(u16),
    /// Never answers.
    Hang,
}

#[derive(Default)]
pub struct WebhookState {
    pub behaviour: Behaviour,
    /// Accepted bodies: (secret path segment, body).
    pub bodies: Vec<(String, Value)>,
    /// Requests received (answered or not).
    pub requests: usize,
    /// The next N requests answer 429.
    pub rate_limit_next: usize,
    /// `Retry-After` of those answers, in seconds.
    pub retry_after_seconds: u64,
}

pub struct WebhookStandIn {
    pub url: String,
    pub state: Arc<Mutex<WebhookState>>,
}

impl WebhookStandIn {
    /// Starts on an ephemeral port of 127.0.0.1 (its own thread and runtime).
    pub fn start(behaviour: Behaviour) -> Self {
        let state = Arc::new(Mutex::new(WebhookState {
            behaviour,
            retry_after_seconds: 1,
            ..WebhookState::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = Router::new()
                    .route("/hooks/{secret}", post(receive))
                    .with_state(shared);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self {
            url: format!("http://{address}"),
            state,
        }
    }

    /// The URL of the hook `secret`.
    pub fn hook_url(&self, secret: &str) -> String {
        format!("{}/hooks/{secret}", self.url)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, WebhookState> {
        self.state.lock().unwrap()
    }

    /// The bodies accepted.
    pub fn bodies(&self) -> Vec<Value> {
        self.lock()
            .bodies
            .iter()
            .map(|(_, body)| body.clone())
            .collect()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<WebhookState>>>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = {
        let mut state = state.lock().unwrap();
        state.requests += 1;
        if state.rate_limit_next > 0 {
            state.rate_limit_next -= 1;
            let mut response = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
            response.headers_mut().insert(
                "retry-after",
                state.retry_after_seconds.to_string().parse().unwrap(),
            );
            return response;
        }
        state.behaviour
    };
    match behaviour {
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Refuse(status) => (
            StatusCode::from_u16(status).unwrap(),
            "refused by the stand-in",
        )
            .into_response(),
        Behaviour::Accept => {
            let json = headers
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with("application/json"));
            match serde_json::from_slice::<Value>(&body) {
                Ok(body) if json => {
                    state.lock().unwrap().bodies.push((secret, body));
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response(),
            }
        }
    }
}
