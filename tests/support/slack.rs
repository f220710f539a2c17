//! A local stand-in for Slack incoming webhooks, strict about the wire format as Slack is:
//! only `POST /services/{team}/{bot}/{secret}` for the hooks it knows (else `404 no_service`),
//! a JSON body with a non-empty `text` and at most 50 valid blocks, section text at most 3000
//! characters and header text at most 150 (else `400 invalid_payload`), and `200 ok` otherwise.
//! Told to, it answers `429` with `Retry-After` first. Every accepted message is recorded, by
//! hook.

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

#[derive(Default)]
pub struct SlackState {
    /// The hooks that exist: their `{team}/{bot}/{secret}` path.
    pub hooks: Vec<String>,
    /// Accepted messages: (hook path, body).
    pub messages: Vec<(String, Value)>,
    /// Every answer's status, in order.
    pub answers: Vec<u16>,
    /// The next N requests answer 429.
    pub rate_limit_next: usize,
    /// `Retry-After` of those answers, in seconds.
    pub retry_after_seconds: u64,
}

pub struct SlackStandIn {
    pub url: String,
    pub state: Arc<Mutex<SlackState>>,
}

impl SlackStandIn {
    /// Starts on an ephemeral port of 127.0.0.1 (its own thread and runtime) with `hooks`.
    pub fn start(hooks: &[&str]) -> Self {
        let state = Arc::new(Mutex::new(SlackState {
            hooks: hooks.iter().map(|hook| hook.to_string()).collect(),
            retry_after_seconds: 1,
            ..SlackState::default()
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
                    .route("/services/{team}/{bot}/{secret}", post(webhook))
                    .with_state(shared);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self {
            url: format!("http://{address}"),
            state,
        }
    }

    /// The URL of `hook`.
    pub fn hook_url(&self, hook: &str) -> String {
        format!("{}/services/{hook}", self.url)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SlackState> {
        self.state.lock().unwrap()
    }

    /// The messages accepted for `hook`.
    pub fn messages(&self, hook: &str) -> Vec<Value> {
        self.lock()
            .messages
            .iter()
            .filter(|(path, _)| path == hook)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

fn answer(state: &mut SlackState, status: StatusCode, text: &'static str) -> Response {
    state.answers.push(status.as_u16());
    (status, text).into_response()
}

/// Checks a payload as Slack does: `Err(why)` when it would answer `invalid_payload`.
fn validate(body: &Value) -> Result<(), &'static str> {
    let text = body.get("text").and_then(Value::as_str).ok_or("no text")?;
    if text.trim().is_empty() {
        return Err("empty text");
    }
    let Some(blocks) = body.get("blocks") else {
        return Ok(());
    };
    let blocks = blocks.as_array().ok_or("blocks is not an array")?;
    if blocks.len() > 50 {
        return Err("too many blocks");
    }
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("header") => {
                let text = &block["text"];
                let chars = text["text"]
                    .as_str()
                    .ok_or("header without text")?
                    .chars()
                    .count();
                if text["type"] != "plain_text" || chars > 150 {
                    return Err("bad header");
                }
            }
            Some("section") => {
                let text = &block["text"];
                let chars = text["text"]
                    .as_str()
                    .ok_or("section without text")?
                    .chars()
                    .count();
                if !matches!(text["type"].as_str(), Some("mrkdwn" | "plain_text")) || chars > 3000 {
                    return Err("bad section");
                }
            }
            Some("context") => {
                let elements = block["elements"]
                    .as_array()
                    .ok_or("context without elements")?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err("bad context");
                }
            }
            _ => return Err("unknown block"),
        }
    }
    Ok(())
}

async fn webhook(
    State(state): State<Arc<Mutex<SlackState>>>,
    Path((team, bot, secret)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().unwrap();
    let hook = format!("{team}/{bot}/{secret}");
    if !state.hooks.contains(&hook) {
        return answer(&mut state, StatusCode::NOT_FOUND, "no_service");
    }
    if state.rate_limit_next > 0 {
        state.rate_limit_next -= 1;
        state.answers.push(429);
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "rate_limited").into_response();
        response.headers_mut().insert(
            "retry-after",
            state.retry_after_seconds.to_string().parse().unwrap(),
        );
        return response;
    }
    let json = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    match parsed {
        Some(body) if json => {
            if validate(&body).is_err() {
                return answer(&mut state, StatusCode::BAD_REQUEST, "invalid_payload");
            }
            state.messages.push((hook, body));
            answer(&mut state, StatusCode::OK, "ok")
        }
        _ => answer(&mut state, StatusCode::BAD_REQUEST, "invalid_payload"),
    }
}
