//! A local stand-in for the GitHub REST API, strict about its wire format: it refuses a request
//! without `User-Agent` (403) and without the right token (401), wants
//! `Accept: application/vnd.github+json` and `X-GitHub-Api-Version: 2022-11-28`, lists issues
//! with pull requests mixed in and paginates them through `Link` headers (two per page, whatever
//! `per_page` asks), answers content-creating requests with the secondary rate limit (403 or 429
//! with `Retry-After`) when told to, and serves `compare` and `commits?path=` from a real git
//! repository. Every request is recorded, so tests can count writes.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]
#![allow(dead_code)] // Each test binary uses a different part.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, patch, post},
    Json, Router,
};
use serde_json::{json, Value};

pub const TOKEN: &str = "ghs_standin_token_1234";
pub const OWNER: &str = "o";
pub const REPO: &str = "r";
/// Issues per page, whatever the client asks: forces pagination in every test.
const PAGE_SIZE: usize = 2;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Default)]
pub struct GitHubState {
    /// Issues and pull requests, by number.
    pub items: BTreeMap<u64, Value>,
    pub comments: Vec<(u64, String)>,
    pub requests: Vec<Recorded>,
    /// The next N content-creating requests answer a secondary rate limit.
    pub rate_limit_next_writes: usize,
    /// `Retry-After` of those answers.
    pub retry_after_seconds: u64,
    /// A repository to answer `compare` and `commits` from.
    pub git: Option<PathBuf>,
    next_number: u64,
}

pub struct GitHubStandIn {
    pub url: String,
    pub state: Arc<Mutex<GitHubState>>,
}

impl GitHubStandIn {
    /// Starts on an ephemeral port of 127.0.0.1 (its own thread and runtime).
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(GitHubState {
            next_number: 1,
            retry_after_seconds: 1,
            ..GitHubState::default()
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
                    .route(
                        "/repos/{owner}/{repo}/issues",
                        get(list_issues).post(create_issue),
                    )
                    .route("/repos/{owner}/{repo}/issues/{number}", patch(update_issue))
                    .route(
                        "/repos/{owner}/{repo}/issues/{number}/comments",
                        post(comment),
                    )
                    .route("/repos/{owner}/{repo}/compare/{range}", get(compare))
                    .route("/repos/{owner}/{repo}/commits", get(commits))
                    .layer(axum::middleware::from_fn_with_state(shared.clone(), strict))
                    .with_state(shared);
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self {
            url: format!("http://{address}"),
            state,
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, GitHubState> {
        self.state.lock().unwrap()
    }

    /// Seeds an item (issue, or pull request when `pull_request`) and returns its number.
    pub fn seed(
        &self,
        title: &str,
        body: &str,
        labels: &[&str],
        state: &str,
        pull_request: bool,
    ) -> u64 {
        let mut guard = self.lock();
        let number = guard.next_number;
        guard.next_number += 1;
        let mut item = issue_json(number, title, body, labels, state);
        if pull_request {
            item["pull_request"] =
                json!({ "url": format!("https://api.github.com/repos/o/r/pulls/{number}") });
        }
        guard.items.insert(number, item);
        number
    }

    /// Requests that changed something (POST, PATCH) and were answered with success.
    pub fn writes(&self) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .filter(|request| request.method != "GET" && request.status < 300)
            .cloned()
            .collect()
    }

    /// The issues (not pull requests) carrying a label.
    pub fn issues(&self) -> Vec<Value> {
        self.lock()
            .items
            .values()
            .filter(|item| item.get("pull_request").is_none())
            .cloned()
            .collect()
    }
}

type Shared = Arc<Mutex<GitHubState>>;

fn issue_json(number: u64, title: &str, body: &str, labels: &[&str], state: &str) -> Value {
    json!({
        "id": 1000 + number,
        "node_id": format!("I_{number}"),
        "number": number,
        "title": title,
        "body": if body.is_empty() { Value::Null } else { json!(body) },
        "state": state,
        "state_reason": Value::Null,
        "labels": labels.iter().map(|name| json!({ "name": name, "color": "ededed" })).collect::<Vec<_>>(),
        "html_url": format!("https://github.com/{OWNER}/{REPO}/issues/{number}"),
        "url": format!("https://api.github.com/repos/{OWNER}/{REPO}/issues/{number}"),
        "user": { "login": "deployer-bot" },
    })
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

/// The checks GitHub makes of every request, and the recording.
async fn strict(
    State(state): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let response = if header("user-agent").is_empty() {
        error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        )
    } else if header("authorization") != format!("Bearer {TOKEN}") {
        error(StatusCode::UNAUTHORIZED, "Bad credentials")
    } else if header("accept") != "application/vnd.github+json" {
        error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported 'Accept' header",
        )
    } else if header("x-github-api-version") != "2022-11-28" {
        error(StatusCode::BAD_REQUEST, "Invalid API version")
    } else if method != Method::GET && {
        let mut guard = state.lock().unwrap();
        let limited = guard.rate_limit_next_writes > 0;
        if limited {
            guard.rate_limit_next_writes -= 1;
        }
        limited
    } {
        let seconds = state.lock().unwrap().retry_after_seconds;
        // Alternate the two answers GitHub gives for a secondary limit.
        let status = if state.lock().unwrap().requests.len() % 2 == 0 {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        let mut response = error(status, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.");
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
        response
    } else {
        next.run(request).await
    };
    state.lock().unwrap().requests.push(Recorded {
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
    });
    response
}

fn check_repository(owner: &str, repo: &str) -> Option<Response> {
    (owner != OWNER || repo != REPO).then(|| error(StatusCode::NOT_FOUND, "Not Found"))
}

fn origin(headers: &HeaderMap) -> String {
    format!(
        "http://{}",
        headers
            .get("host")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("127.0.0.1")
    )
}

/// A page of `items` with GitHub's `Link` header.
fn paginated(
    headers: &HeaderMap,
    uri: &Uri,
    query: &BTreeMap<String, String>,
    items: Vec<Value>,
    page_size: usize,
) -> Response {
    let page: usize = query
        .get("page")
        .and_then(|page| page.parse().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(page_size).max(1);
    let shown: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .collect();
    let link_to = |target: usize| {
        let mut pairs: Vec<String> = query
            .iter()
            .filter(|(key, _)| *key != "page")
            .map(|(key, value)| format!("{key}={}", url_encode(value)))
            .collect();
        pairs.push(format!("page={target}"));
        format!("<{}{}?{}>", origin(headers), uri.path(), pairs.join("&"))
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
        links.push(format!("{}; rel=\"last\"", link_to(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link_to(1)));
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
    }
    let mut response = Json(Value::Array(shown)).into_response();
    if !links.is_empty() {
        response
            .headers_mut()
            .insert("link", links.join(", ").parse().unwrap());
    }
    response
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

async fn list_issues(
    State(state): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(response) = check_repository(&owner, &repo) {
        return response;
    }
    let wanted_state = query.get("state").cloned().unwrap_or_else(|| "open".into());
    let labels: Vec<String> = query
        .get("labels")
        .map(|labels| labels.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let items: Vec<Value> = state
        .lock()
        .unwrap()
        .items
        .values()
        .rev() // newest first, as GitHub sorts by default
        .filter(|item| wanted_state == "all" || item["state"] == wanted_state.as_str())
        .filter(|item| {
            labels.iter().all(|label| {
                item["labels"]
                    .as_array()
                    .is_some_and(|names| names.iter().any(|name| name["name"] == label.as_str()))
            })
        })
        .cloned()
        .collect();
    paginated(&headers, &uri, &query, items, PAGE_SIZE)
}

async fn create_issue(
    State(state): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(response) = check_repository(&owner, &repo) {
        return response;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let Some(title) = request["title"].as_str() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: title is missing",
        );
    };
    let labels: Vec<&str> = request["labels"]
        .as_array()
        .map(|labels| labels.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut guard = state.lock().unwrap();
    let number = guard.next_number;
    guard.next_number += 1;
    let issue = issue_json(
        number,
        title,
        request["body"].as_str().unwrap_or_default(),
        &labels,
        "open",
    );
    guard.items.insert(number, issue.clone());
    (StatusCode::CREATED, Json(issue)).into_response()
}

async fn update_issue(
    State(state): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    body: Bytes,
) -> Response {
    if let Some(response) = check_repository(&owner, &repo) {
        return response;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let mut guard = state.lock().unwrap();
    let Some(issue) = guard.items.get_mut(&number) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    for field in ["title", "body", "state", "state_reason"] {
        if let Some(value) = request.get(field) {
            issue[field] = value.clone();
        }
    }
    if let Some(state) = request["state"].as_str() {
        if state != "open" && state != "closed" {
            return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed: state");
        }
    }
    (StatusCode::OK, Json(issue.clone())).into_response()
}

async fn comment(
    State(state): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    body: Bytes,
) -> Response {
    if let Some(response) = check_repository(&owner, &repo) {
        return response;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let mut guard = state.lock().unwrap();
    if !guard.items.contains_key(&number) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let text = request["body"].as_str().unwrap_or_default().to_string();
    guard.comments.push((number, text.clone()));
    (
        StatusCode::CREATED,
        Json(json!({ "id": guard.comments.len(), "body": text })),
    )
        .into_response()
}

fn commit_json(commit: &git2::Commit<'_>) -> Value {
    let time = |when: git2::Time| {
        chrono::DateTime::from_timestamp(when.seconds(), 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    json!({
        "sha": commit.id().to_string(),
        "commit": {
            "author": { "name": commit.author().name().unwrap_or_default(), "date": time(commit.author().when()) },
            "committer": { "name": commit.committer().name().unwrap_or_default(), "date": time(commit.committer().when()) },
            "message": commit.message().unwrap_or_default(),
        },
        "parents": commit.parent_ids().map(|id| json!({ "sha": id.to_string() })).collect::<Vec<_>>(),
    })
}

fn resolve<'r>(repository: &'r git2::Repository, name: &str) -> Option<git2::Commit<'r>> {
    repository
        .revparse_single(name)
        .ok()
        .and_then(|object| object.peel_to_commit().ok())
}

fn range(repository: &git2::Repository, from: git2::Oid, hide: git2::Oid) -> Vec<git2::Oid> {
    let mut walk = repository.revwalk().unwrap();
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
        .unwrap();
    walk.push(from).unwrap();
    walk.hide(hide).unwrap();
    walk.map(Result::unwrap).collect()
}

async fn compare(
    State(state): State<Shared>,
    Path((owner, repo, spec)): Path<(String, String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(response) = check_repository(&owner, &repo) {
        return response;
    }
    let Some(path) = state.lock().unwrap().git.clone() else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let Some((base, head)) = spec.split_once("...") else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let repository = git2::Repository::open(path).unwrap();
    let (Some(base), Some(head)) = (resolve(&repository, base), resolve(&repository, head)) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("No commit found for SHA: {base}"),
        );
    };
    let merge_base = repository.merge_base(base.id(), head.id()).unwrap();
    let ahead = range(&repository, head.id(), base.id());
    let behind = range(&repository, base.id(), head.id());
    let status = match (ahead.len(), behind.len()) {
        (0, 0) => "identical",
        (_, 0) => "ahead",
        (0, _) => "behind",
        _ => "diverged",
    };
    let per_page: usize = query
        .get("per_page")
        .and_then(|value| value.parse().ok())
        .unwrap_or(250)
        .min(100);
    let page: usize = query
        .get("page")
        .and_then(|value| value.parse().ok())
        .unwrap_or(1)
        .max(1);
    // Oldest first, as GitHub lists them.
    let commits: Vec<Value> = ahead
        .iter()
        .rev()
        .map(|id| commit_json(&repository.find_commit(*id).unwrap()))
        .collect();
    let mut document = json!({
        "status": status,
        "ahead_by": ahead.len(),
        "behind_by": behind.len(),
        "total_commits": ahead.len(),
        "base_commit": commit_json(&base),
        "merge_base_commit": commit_json(&repository.find_commit(merge_base).unwrap()),
    });
    let last = commits.len().div_ceil(per_page).max(1);
    document["commits"] = Value::Array(
        commits
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect(),
    );
    if page == 1 {
        let old = repository.find_commit(merge_base).unwrap().tree().unwrap();
        let diff = repository
            .diff_tree_to_tree(Some(&old), Some(&head.tree().unwrap()), None)
            .unwrap();
        let files: Vec<Value> = diff
            .deltas()
            .map(|delta| json!({ "filename": delta.new_file().path().unwrap().to_string_lossy(), "status": "modified" }))
            .collect();
        document["files"] = Value::Array(files);
    }
    let mut response = Json(document).into_response();
    if page < last {
        response.headers_mut().insert(
            "link",
            format!(
                "<{}{}?per_page={per_page}&page={}>; rel=\"next\"",
                origin(&headers),
                uri.path(),
                page + 1
            )
            .parse()
            .unwrap(),
        );
    }
    response
}

async fn commits(
    State(state): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(response) = check_repository(&owner, &repo) {
        return response;
    }
    let Some(path) = state.lock().unwrap().git.clone() else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let repository = git2::Repository::open(path).unwrap();
    let Some(start) = resolve(&repository, query.get("sha").map_or("HEAD", String::as_str)) else {
        return error(StatusCode::NOT_FOUND, "No commit found");
    };
    let since = query
        .get("since")
        .and_then(|since| chrono::DateTime::parse_from_rfc3339(since).ok())
        .map(|since| since.timestamp());
    let prefix = query.get("path").cloned().unwrap_or_default();
    let mut walk = repository.revwalk().unwrap();
    walk.push(start.id()).unwrap();
    let mut found = Vec::new();
    for id in walk {
        let commit = repository.find_commit(id.unwrap()).unwrap();
        if since.is_some_and(|since| commit.committer().when().seconds() < since) {
            continue;
        }
        let tree = commit.tree().unwrap();
        let parent = commit.parent(0).ok().map(|parent| parent.tree().unwrap());
        let mut options = git2::DiffOptions::new();
        options.pathspec(&prefix);
        let diff = repository
            .diff_tree_to_tree(parent.as_ref(), Some(&tree), Some(&mut options))
            .unwrap();
        if diff.deltas().len() > 0 {
            found.push(commit_json(&commit));
        }
    }
    paginated(&headers, &uri, &query, found, 100)
}
