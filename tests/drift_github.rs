//! Drift issues end to end against the local GitHub stand-in (`tests/support/github.rs`, strict
//! about headers, paginated listings with pull requests mixed in, secondary rate limits): the
//! lifecycle over five runs, the errors a user sees, and the GitHub drift source against the
//! git one on the same repository.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "support/git_repo.rs"]
mod git_repo;
#[path = "support/github.rs"]
mod github;
#[path = "support/service_id.rs"]
mod service_id;

use std::{path::Path, time::Duration};

use chrono::Utc;
use deployer::{
    config,
    drift::{self, deployed, issue, GitOptions, ServiceInput, Severity},
    notify::github::{GitHubClient, GitHubError, RepositoryName, Token},
    platform::{
        cloud_run::revision_labels, memory::MemoryPlatform, Platform, RevisionSpec, ServiceUpdate,
        TrafficTarget,
    },
    repo::Repository,
};
use git_repo::Repo;
use github::{GitHubStandIn, TOKEN};
use service_id::local_service_id;

fn service(name: &str) -> config::ServiceConfig {
    config::parse(
        Path::new("services/svc.toml"),
        &format!(
            "name = \"{name}\"\nrunbook = \"runbooks/{name}.md\"\n[target]\nkind = \"local\"\n[image]\nrepository = \"127.0.0.1:5000/{name}\"\n\
             [preflight]\npaths = [\"api/**\"]\nschema_paths = [\"api/schemas/**\"]\n[notifications]\ngithub_repository = \"o/r\"\n"
        ),
    )
    .unwrap()
}

/// Serves `commit` from a new revision taking 100% of the traffic.
async fn deploy(platform: &MemoryPlatform, name: &str, revision: &str, commit: &str) {
    let spec = RevisionSpec {
        name: revision.into(),
        image: format!("127.0.0.1:5000/{name}@sha256:1"),
        labels: revision_labels(commit),
        base: None,
        settings: Default::default(),
    };
    match platform.service(&local_service_id(name)).await.unwrap() {
        None => {
            platform
                .create(&local_service_id(name), &spec)
                .await
                .unwrap();
        }
        Some(snapshot) => {
            platform
                .update(
                    &local_service_id(name),
                    &snapshot.etag,
                    &ServiceUpdate {
                        template: Some(spec),
                        traffic: Some(vec![TrafficTarget::to_revision(revision, 100)]),
                        ..ServiceUpdate::default()
                    },
                )
                .await
                .unwrap();
        }
    }
}

/// No image is ever read: every revision here carries its commit label.
struct NoImages;

#[async_trait::async_trait]
impl deployed::ImageLabels for NoImages {
    async fn revision(&self, image: &str) -> Result<Option<String>, String> {
        Err(format!("no registry in this test (`{image}`)"))
    }
}

async fn measure(repo: &Repo, platform: &MemoryPlatform) -> drift::DriftReport {
    let config = service("svc");
    let deployed = deployed::read(
        platform,
        &local_service_id("svc"),
        &NoImages,
        Duration::from_secs(5),
    )
    .await;
    let inputs = vec![ServiceInput {
        config,
        id: local_service_id("svc"),
        deployed,
    }];
    let opened = Repository::discover(repo.path()).unwrap();
    drift::from_git(
        &opened,
        &inputs,
        &GitOptions {
            fetch: true,
            fetch_time_limit: Duration::from_secs(30),
        },
        Utc::now(),
    )
}

fn client(standin: &GitHubStandIn) -> GitHubClient {
    GitHubClient::new(&standin.url, Token::new(TOKEN), "GITHUB_TOKEN")
        .unwrap()
        .with_max_wait(Duration::from_secs(10))
}

async fn sync(standin: &GitHubStandIn, report: &drift::DriftReport) -> issue::Outcome {
    let repository = RepositoryName::parse("o/r").unwrap();
    let targets = vec![(&report.services[0], repository)];
    let links = issue::Links {
        server_url: "https://github.com".into(),
    };
    let mut outcomes = issue::sync(&client(standin), &targets, &links).await;
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0).expect("sync succeeds")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_issue_per_drifting_service_through_its_whole_lifecycle() {
    let repo = Repo::new();
    let deployed_commit = repo.change("api/main.rs", "v1", "deployed", 100);
    repo.change("web/index.html", "x", "web only: not the service's", 90);
    repo.change("api/main.rs", "v2", "api: the fix nobody deployed", 80);
    repo.push();
    let platform = MemoryPlatform::new();
    deploy(&platform, "svc", "svc-00001", &deployed_commit).await;

    let standin = GitHubStandIn::start();
    // Pull requests carry the label too, and a same-looking marker; the listing has 2 items a
    // page, so finding the issue needs the `Link` header.
    for number in 0..3 {
        standin.seed(
            &format!("PR {number}"),
            "<!-- deployer:drift service=svc -->",
            &[issue::LABEL],
            "open",
            true,
        );
    }
    standin.seed(
        "other service",
        "<!-- deployer:drift service=svc-gateway -->",
        &[issue::LABEL],
        "open",
        false,
    );
    // The first write meets the secondary rate limit (Retry-After: 1).
    standin.lock().rate_limit_next_writes = 1;

    // Run 1: drift starts (80 h old, past `critical_after` 3 days) → one issue.
    let report = measure(&repo, &platform).await;
    assert_eq!(
        report.services[0].severity,
        Severity::Critical,
        "{:?}",
        report.services[0].reason
    );
    let first = sync(&standin, &report).await;
    assert_eq!(first.action, issue::Action::Created);
    let number = first.number.unwrap();
    let writes = standin.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let limited = standin
        .lock()
        .requests
        .iter()
        .filter(|request| matches!(request.status, 403 | 429))
        .count();
    assert_eq!(
        limited, 1,
        "the rate-limited write was retried after Retry-After"
    );
    let issue = standin.lock().items[&number].clone();
    let body = issue["body"].as_str().unwrap().to_string();
    assert!(
        body.starts_with("<!-- deployer:drift service=svc -->"),
        "{body}"
    );
    assert!(body.contains("api: the fix nobody deployed"), "{body}");
    assert!(!body.contains("web only"), "{body}");
    assert!(body.contains("deployer deploy svc"));
    assert_eq!(issue["labels"][0]["name"], issue::LABEL);

    // Newer pull requests push the issue to the third page of the listing.
    for number in 0..4 {
        standin.seed(
            &format!("later PR {number}"),
            "<!-- deployer:drift service=svc -->",
            &[issue::LABEL],
            "open",
            true,
        );
    }

    // Run 2: the same drift → no write at all.
    let before = standin.writes().len();
    let report = measure(&repo, &platform).await;
    let second = sync(&standin, &report).await;
    assert_eq!(second.action, issue::Action::Unchanged);
    assert_eq!(second.number, Some(number));
    assert_eq!(
        standin.writes().len(),
        before,
        "an unchanged drift writes nothing"
    );

    // Run 3: another relevant commit → the body is updated, nothing else.
    repo.change("api/schemas/t.json", "{}", "api: new column", 1);
    repo.push();
    let report = measure(&repo, &platform).await;
    let third = sync(&standin, &report).await;
    assert_eq!(third.action, issue::Action::Updated);
    let writes = standin.writes();
    assert_eq!(writes.len(), before + 1);
    assert_eq!(writes.last().unwrap().method, "PATCH");
    let body = standin.lock().items[&number]["body"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        body.contains("api: new column") && body.contains("`api/schemas/t.json`"),
        "{body}"
    );

    // Run 4: deployed again → a comment, then closed.
    let head = repo.change("docs/x.md", "x", "docs", 0);
    repo.push();
    deploy(&platform, "svc", "svc-00002", &head).await;
    let report = measure(&repo, &platform).await;
    assert_eq!(
        report.services[0].severity,
        Severity::Ok,
        "{}",
        report.services[0].reason
    );
    let fourth = sync(&standin, &report).await;
    assert_eq!(fourth.action, issue::Action::Closed);
    assert_eq!(standin.lock().items[&number]["state"], "closed");
    let comments = standin.lock().comments.clone();
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].1.starts_with("Deployed again: `svc-00002`"),
        "{comments:?}"
    );

    // Run 5: drift returns (past `warn_after` 6 h) → the same issue is reopened.
    repo.change("api/main.rs", "v3", "api: another fix", 7);
    repo.push();
    let report = measure(&repo, &platform).await;
    assert_eq!(report.services[0].severity, Severity::Warn);
    let fifth = sync(&standin, &report).await;
    assert_eq!(fifth.action, issue::Action::Reopened);
    assert_eq!(fifth.number, Some(number));
    assert_eq!(standin.lock().items[&number]["state"], "open");
    let drift_issues: Vec<_> = standin
        .issues()
        .into_iter()
        .filter(|issue| {
            issue["body"]
                .as_str()
                .is_some_and(|body| body.starts_with("<!-- deployer:drift service=svc -->"))
        })
        .collect();
    assert_eq!(drift_issues.len(), 1, "never a duplicate");
    assert!(standin
        .lock()
        .comments
        .last()
        .unwrap()
        .1
        .starts_with("Drift returned:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn github_errors_are_clear_and_never_show_the_token() {
    let standin = GitHubStandIn::start();
    let repository = RepositoryName::parse("o/r").unwrap();
    let wrong =
        GitHubClient::new(&standin.url, Token::new("ghp_wrong_secret"), "DRIFT_TOKEN").unwrap();
    let error = wrong
        .issues_with_label(&repository, issue::LABEL)
        .await
        .unwrap_err();
    assert!(
        matches!(error, GitHubError::Unauthorized { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("`DRIFT_TOKEN`") && text.contains("401 Bad credentials"),
        "{text}"
    );
    assert!(
        !text.contains("ghp_wrong_secret") && !format!("{error:?}").contains("ghp_wrong_secret")
    );

    let missing = RepositoryName::parse("o/missing").unwrap();
    let error = client(&standin)
        .issues_with_label(&missing, issue::LABEL)
        .await
        .unwrap_err();
    assert!(matches!(error, GitHubError::NotFound { .. }), "{error:?}");

    // Past the client's bound, a rate limit fails at once with what GitHub asked for.
    standin.lock().rate_limit_next_writes = 5;
    standin.lock().retry_after_seconds = 3600;
    let started = std::time::Instant::now();
    let error = client(&standin)
        .create_issue(&repository, "t", "b", &[issue::LABEL])
        .await
        .unwrap_err();
    assert!(
        matches!(error, GitHubError::RateLimited { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("1h"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The stand-in is as strict as GitHub about the User-Agent.
    let bare = reqwest::Client::builder().build().unwrap();
    let answer = bare
        .get(format!("{}/repos/o/r/issues", standin.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_github_source_agrees_with_git() {
    let repo = Repo::new();
    let deployed_commit = repo.change("api/main.rs", "v1", "deployed", 50);
    for index in 0..120 {
        let file = if index % 3 == 0 {
            "api/main.rs"
        } else {
            "web/index.html"
        };
        repo.change(file, &format!("v{index}"), &format!("change {index}"), 40);
    }
    repo.change("api/schemas/t.json", "{}", "schema", 30);
    repo.push();
    let platform = MemoryPlatform::new();
    deploy(&platform, "svc", "svc-00001", &deployed_commit).await;
    let from_git = measure(&repo, &platform).await;

    let standin = GitHubStandIn::start();
    standin.lock().git = Some(repo.path().to_path_buf());
    let deployed = deployed::read(
        &platform,
        &local_service_id("svc"),
        &NoImages,
        Duration::from_secs(5),
    )
    .await;
    let inputs = vec![ServiceInput {
        config: service("svc"),
        id: local_service_id("svc"),
        deployed,
    }];
    let from_github = drift::from_github(&client(&standin), &inputs, None, Utc::now()).await;
    let (git, hub) = (
        from_git.services[0].revisions[0].facts.clone().unwrap(),
        from_github.services[0].revisions[0].facts.clone().unwrap(),
    );
    assert_eq!(
        (hub.behind, hub.relevant),
        (121, 41),
        "{:?}",
        from_github.services[0].reason
    );
    assert_eq!((git.behind, git.relevant), (hub.behind, hub.relevant));
    assert_eq!(git.schema_changes, hub.schema_changes);
    assert_eq!(git.main_commit, hub.main_commit);
    assert_eq!(
        git.relevant_commits
            .iter()
            .map(|commit| &commit.id)
            .collect::<Vec<_>>(),
        hub.relevant_commits
            .iter()
            .map(|commit| &commit.id)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        from_git.services[0].severity,
        from_github.services[0].severity
    );
    // The comparison's 121 commits came in two pages.
    let compares = standin
        .lock()
        .requests
        .iter()
        .filter(|request| request.path.contains("/compare/"))
        .count();
    assert_eq!(compares, 2);
}
