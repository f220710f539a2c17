//! Hostile and broken input: special files where service files are expected, paths
//! leaving the repository, absurd durations and rates, terminal escapes in echoed names, and
//! malformed or oversized answers from a fake Cloud Run API driven through Google's client.
//!
//! Each test is named after what broke; each failed on the code before its fix.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use deployer::config::Workspace;

/// A repository with `services/`, `runbooks/ok.md` and a `Dockerfile`, in a temp dir.
struct Repository {
    directory: tempfile::TempDir,
}

impl Repository {
    fn new() -> Self {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        std::fs::create_dir_all(root.join("services")).unwrap();
        std::fs::create_dir_all(root.join("runbooks")).unwrap();
        std::fs::copy("tests/fixtures/runbooks/ok.md", root.join("runbooks/ok.md")).unwrap();
        std::fs::copy("tests/fixtures/Dockerfile", root.join("Dockerfile")).unwrap();
        Self { directory }
    }

    fn root(&self) -> &Path {
        self.directory.path()
    }

    fn workspace(&self) -> Workspace {
        Workspace {
            root: self.root().to_path_buf(),
            services_dir: self.root().join("services"),
        }
    }

    /// Writes `services/NAME.toml` and returns its path.
    fn service(&self, name: &str, text: &str) -> PathBuf {
        let path = self.root().join("services").join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The diagnostics of loading `path`, one `line:col: message` per entry.
    fn diagnostics(&self, path: &Path) -> Vec<String> {
        match self.workspace().load_file(path) {
            Ok(_) => vec![],
            Err(diagnostics) => diagnostics
                .iter()
                .map(|diagnostic| {
                    format!(
                        "{}:{}: {}",
                        diagnostic.line, diagnostic.column, diagnostic.message
                    )
                })
                .collect(),
        }
    }
}

/// The valid fixture with `replace` applied (each `(from, to)` must match).
fn valid_with(replacements: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string("tests/fixtures/valid.toml").unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "`{from}` is in the valid fixture");
        text = text.replacen(from, to, 1);
    }
    text
}

/// The valid fixture with a `[rollout]` section (and nothing after it but checks).
fn valid_with_rollout(rollout: &str) -> String {
    valid_with(&[("[[checks]]", &format!("[rollout]\n{rollout}\n\n[[checks]]"))])
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// What a finished `deployer` run left: exit code, stdout, stderr.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `deployer ARGS` in `cwd`, killing it (and failing) after `limit`: a hang is a failure,
/// never a stuck suite.
fn deployer_within(cwd: &Path, args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("CI", "1")
        .env_remove("DEPLOYER_SERVICES_DIR")
        .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`deployer {}` still running after {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

fn deployer(cwd: &Path, args: &[&str]) -> Run {
    deployer_within(cwd, args, Duration::from_secs(60))
}

// ---- item 9: special files, linear validation ------------------------------------------------

#[test]
fn services_validate_on_a_fifo_reports_a_named_pipe_instead_of_blocking() {
    let repository = Repository::new();
    let fifo = repository.root().join("services/pipe.toml");
    mkfifo(&fifo);
    let run = deployer_within(
        repository.root(),
        &["services", "validate", "services/pipe.toml"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("services/pipe.toml:1:1: is a named pipe (FIFO), not a regular file"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_fifo_in_the_services_directory_is_reported_not_skipped() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    mkfifo(&repository.root().join("services/pipe.toml"));
    let run = deployer_within(
        repository.root(),
        &["services", "validate"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("pipe.toml:1:1: is a named pipe"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("ok     services/svc.toml"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_fifo_runbook_does_not_block_validation() {
    let repository = Repository::new();
    mkfifo(&repository.root().join("runbooks/pipe.md"));
    let path = repository.service(
        "svc",
        &valid_with(&[("runbooks/ok.md", "runbooks/pipe.md")]),
    );
    let started = Instant::now();
    let (sender, receiver) = std::sync::mpsc::channel();
    let workspace = repository.workspace();
    std::thread::spawn(move || {
        let _ = sender.send(workspace.load_file(&path).map(|_| ()));
    });
    let result = receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("validation of a FIFO runbook finishes");
    let diagnostics = result.expect_err("a FIFO runbook is an error");
    let text = diagnostics.to_string();
    assert!(
        text.contains(
            ":2:11: runbook `runbooks/pipe.md` is a named pipe (FIFO), not a regular file"
        ),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_directory_named_like_a_service_file_is_reported_as_a_directory() {
    let repository = Repository::new();
    std::fs::create_dir(repository.root().join("services/dir.toml")).unwrap();
    let diagnostics = repository.diagnostics(&repository.root().join("services/dir.toml"));
    assert_eq!(diagnostics, ["1:1: is a directory, not a regular file"]);
}

#[test]
fn a_device_named_as_a_service_file_is_reported_as_a_device() {
    let repository = Repository::new();
    // `/dev/null`, not `/dev/zero`: the old code read `/dev/zero` until memory ran out.
    std::os::unix::fs::symlink("/dev/null", repository.root().join("services/null.toml")).unwrap();
    let diagnostics = repository.diagnostics(&repository.root().join("services/null.toml"));
    assert_eq!(
        diagnostics,
        ["1:1: is a character device, not a regular file"]
    );
}

#[test]
fn a_service_file_that_is_a_symlink_loop_says_so() {
    let repository = Repository::new();
    let services = repository.root().join("services");
    std::os::unix::fs::symlink("b.toml", services.join("a.toml")).unwrap();
    std::os::unix::fs::symlink("a.toml", services.join("b.toml")).unwrap();
    let diagnostics = repository.diagnostics(&services.join("a.toml"));
    assert_eq!(diagnostics, ["1:1: is a symlink loop"]);
    let run = deployer(repository.root(), &["services", "validate"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("a.toml:1:1: is a symlink loop"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_services_directory_that_is_a_file_says_so() {
    let repository = Repository::new();
    let file = repository.root().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let run = deployer(
        repository.root(),
        &["services", "list", "--services-dir", "not-a-dir"],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("services directory `not-a-dir` is a regular file, not a directory"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_services_directory_that_is_a_symlink_loop_says_so() {
    let repository = Repository::new();
    let root = repository.root();
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    let run = deployer(root, &["services", "list", "--services-dir", "loop-a"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("services directory `loop-a` is a symlink loop"),
        "{}",
        run.stderr
    );
}

#[test]
fn ten_thousand_checks_with_one_name_give_one_diagnostic_per_duplicate() {
    let repository = Repository::new();
    let check = "[[checks]]\nname = \"Coverage\"\nprovider = \"bigquery\"\nquery = \"SELECT 95\"\ncomparison = \">=\"\nwarn = 90\ncritical = 70\nunit = \"percent\"\n\n";
    let head = valid_with(&[]);
    let head = head.split("[[checks]]").next().unwrap();
    let head_lines = head.lines().count();
    let text = format!("{head}{}", check.repeat(10_000));
    let path = repository.service("many", &text);
    let diagnostics = repository.diagnostics(&path);
    assert_eq!(diagnostics.len(), 9_999);
    // Check K (0-based) starts at line head_lines + 1 + 9K; its name is on the next line, col 8.
    for (index, diagnostic) in diagnostics.iter().enumerate() {
        let check = index + 1;
        let line = head_lines + 1 + 9 * check + 1;
        assert_eq!(
            diagnostic,
            &format!("{line}:8: duplicate check name `Coverage`"),
            "duplicate #{check}"
        );
    }
}

// ---- item 15: service files ------------------------------------------------------------------

#[test]
fn a_runbook_outside_the_repository_is_refused() {
    let repository = Repository::new();
    let outside = repository
        .root()
        .parent()
        .unwrap()
        .join("outside-runbook.md");
    let path = repository.service(
        "svc",
        &valid_with(&[("runbooks/ok.md", "../outside-runbook.md")]),
    );
    let diagnostics = repository.diagnostics(&path);
    assert_eq!(
        diagnostics,
        ["2:11: runbook `../outside-runbook.md` is outside the repository"],
        "{}",
        outside.display()
    );
}

#[test]
fn an_absolute_dockerfile_path_is_refused() {
    let repository = Repository::new();
    let path = repository.service(
        "svc",
        &valid_with(&[(
            "dockerfile = \"Dockerfile\"",
            "dockerfile = \"/etc/passwd\"",
        )]),
    );
    assert_eq!(
        repository.diagnostics(&path),
        ["12:14: Dockerfile `/etc/passwd` is outside the repository"]
    );
}

#[test]
fn a_dockerfile_through_a_symlink_out_of_the_repository_is_refused() {
    let repository = Repository::new();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    std::os::unix::fs::symlink(
        elsewhere.path().join("Dockerfile"),
        repository.root().join("Linked.Dockerfile"),
    )
    .unwrap();
    let path = repository.service(
        "svc",
        &valid_with(&[(
            "dockerfile = \"Dockerfile\"",
            "dockerfile = \"Linked.Dockerfile\"",
        )]),
    );
    assert_eq!(
        repository.diagnostics(&path),
        ["12:14: Dockerfile `Linked.Dockerfile` is outside the repository (through a symlink)"]
    );
}

#[test]
fn a_directory_where_the_dockerfile_is_expected_is_not_called_missing() {
    let repository = Repository::new();
    let path = repository.service(
        "svc",
        &valid_with(&[("dockerfile = \"Dockerfile\"", "dockerfile = \"runbooks\"")]),
    );
    assert_eq!(
        repository.diagnostics(&path),
        ["12:14: Dockerfile `runbooks` is a directory, not a regular file"]
    );
}

#[test]
fn a_directory_where_the_runbook_is_expected_is_not_called_missing() {
    let repository = Repository::new();
    let path = repository.service("svc", &valid_with(&[("runbooks/ok.md", "runbooks")]));
    assert_eq!(
        repository.diagnostics(&path),
        ["2:11: runbook `runbooks` is a directory, not a regular file"]
    );
}

#[test]
fn a_build_context_outside_the_repository_is_refused() {
    let repository = Repository::new();
    let path = repository.service(
        "svc",
        &valid_with(&[("context = \".\"", "context = \"../..\"")]),
    );
    assert_eq!(
        repository.diagnostics(&path),
        ["11:11: build context `../..` is outside the repository"]
    );
}

#[test]
fn a_health_path_with_crlf_is_refused() {
    let repository = Repository::new();
    let path = repository.service(
        "svc",
        &valid_with(&[(
            "[[checks]]",
            "[health]\npath = \"/health\\r\\nX-Injected: 1\"\n\n[[checks]]",
        )]),
    );
    assert_eq!(
        repository.diagnostics(&path),
        ["15:8: health path `/health\\r\\nX-Injected: 1` contains control characters"]
    );
}

#[test]
fn a_non_ascii_image_repository_is_refused() {
    let repository = Repository::new();
    let path = repository.service(
        "svc",
        &valid_with(&[("127.0.0.1:5000/svc", "127.0.0.1:5000/sérvice")]),
    );
    assert_eq!(
        repository.diagnostics(&path),
        ["8:14: invalid image repository `127.0.0.1:5000/sérvice`"]
    );
}

#[test]
fn a_hold_of_a_million_years_is_refused_at_parse_time() {
    let repository = Repository::new();
    let path = repository.service("svc", &valid_with_rollout("hold = \"1000000y\""));
    let diagnostics = repository.diagnostics(&path);
    assert_eq!(
        diagnostics,
        ["15:8: duration `1000000y` is longer than the longest allowed, 365days"]
    );
}

#[test]
fn a_hold_that_overflows_the_rollout_duration_with_six_steps_is_refused() {
    let repository = Repository::new();
    let path = repository.service(
        "svc",
        &valid_with_rollout("steps = [1, 2, 5, 25, 50, 100]\nhold = \"99999999999y\""),
    );
    let diagnostics = repository.diagnostics(&path);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert!(diagnostics[0].starts_with("16:8: "), "{diagnostics:?}");
    assert!(diagnostics[0].contains("99999999999y"), "{diagnostics:?}");
}

#[test]
fn a_hold_above_seven_days_is_out_of_its_documented_range() {
    let repository = Repository::new();
    let path = repository.service("svc", &valid_with_rollout("hold = \"8days\""));
    assert_eq!(
        repository.diagnostics(&path),
        ["15:8: `rollout.hold` = 8days is out of range 1s..=7days"]
    );
}

#[test]
fn a_monitor_duration_above_seven_days_is_out_of_its_documented_range() {
    let repository = Repository::new();
    let path = repository.service("svc", &valid_with_rollout("monitor_duration = \"30days\""));
    assert_eq!(
        repository.diagnostics(&path),
        ["15:20: `rollout.monitor_duration` = 30days is out of range 0s..=7days"]
    );
}

// ---- item 16: echoed names are escaped -------------------------------------------------------

#[test]
fn an_unknown_service_name_with_terminal_escapes_is_shown_escaped() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    let run = deployer(
        repository.root(),
        &["services", "show", "\u{1b}[2J\u{1b}[31mevil"],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(
        run.stderr
            .contains("no service named `\\u{1b}[2J\\u{1b}[31mevil`"),
        "{:?}",
        run.stderr
    );
}

#[test]
fn a_did_you_mean_suggestion_with_terminal_escapes_is_shown_escaped() {
    let repository = Repository::new();
    repository.service(
        "svc",
        &valid_with(&[("name = \"svc\"", "name = \"svc\\u001b]0;pwned\\u0007\"")]),
    );
    let run = deployer(repository.root(), &["services", "show", "svc]0;pwned"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(!run.stderr.contains('\u{7}'), "{:?}", run.stderr);
    assert!(
        run.stderr
            .contains("did you mean `svc\\u{1b}]0;pwned\\u{7}`?"),
        "{:?}",
        run.stderr
    );
}

#[test]
fn an_invalid_service_name_with_terminal_escapes_is_shown_escaped_in_its_diagnostic() {
    let repository = Repository::new();
    let path = repository.service(
        "svc",
        &valid_with(&[("name = \"svc\"", "name = \"\\u001b[31mred\"")]),
    );
    assert_eq!(
        repository.diagnostics(&path),
        ["1:8: invalid service name `\\u{1b}[31mred`"]
    );
}

#[test]
fn an_unknown_key_with_terminal_escapes_is_shown_escaped_in_its_diagnostic() {
    let repository = Repository::new();
    let path = repository.service(
        "svc",
        &valid_with(&[("[target]", "\"\\u001b[31mkey\" = 1\n\n[target]")]),
    );
    let run = deployer(
        repository.root(),
        &["services", "validate", path.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(
        run.stderr.contains("unknown key `\\u{1b}[31mkey`"),
        "{:?}",
        run.stderr
    );
}

#[test]
fn a_file_name_with_terminal_escapes_is_shown_escaped() {
    let repository = Repository::new();
    let path = repository.service(
        "evil\u{1b}[2J",
        &valid_with(&[("name = \"svc\"", "name = \"Bad\"")]),
    );
    let run = deployer(
        repository.root(),
        &["services", "validate", path.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(!run.stdout.contains('\u{1b}'), "{:?}", run.stdout);
    assert!(
        run.stderr.contains("evil\\u{1b}[2J.toml:1:8"),
        "{:?}",
        run.stderr
    );
}

// ---- item 13: duration and rate flags --------------------------------------------------------

#[test]
fn a_ready_timeout_of_a_million_years_is_a_usage_error() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    let run = deployer(
        repository.root(),
        &["deploy", "svc", "--ready-timeout", "1000000y"],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--ready-timeout"), "{}", run.stderr);
    assert!(
        run.stderr.contains("longer than the longest allowed"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_lock_wait_of_500000000000_years_is_a_usage_error() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    let run = deployer(
        repository.root(),
        &["deploy", "svc", "--lock-wait", "500000000000y"],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--lock-wait"), "{}", run.stderr);
}

#[test]
fn an_emulator_startup_timeout_of_zero_is_a_usage_error() {
    let repository = Repository::new();
    let data = repository.root().join("emulator-data");
    let run = deployer(
        repository.root(),
        &[
            "emulator",
            "--data-dir",
            data.to_str().unwrap(),
            "--startup-timeout",
            "0s",
            "status",
        ],
    );
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--startup-timeout"), "{}", run.stderr);
    assert!(
        run.stderr.contains("shorter than the shortest allowed, 1s"),
        "{}",
        run.stderr
    );
}

// ---- items 11 and 12: answers of a fake Cloud Run API, through Google's client -------------

mod fake_cloud_run {
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
        Platform, ServiceId,
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
}

use deployer::platform::Platform as _;
use fake_cloud_run::{read_error, service_with_statuses, Server};

/// A fast retry policy, so that a wrongly retried answer shows as extra requests, not a delay.
fn quick_retries() -> deployer::platform::RetryPolicy {
    deployer::platform::RetryPolicy {
        attempts: 5,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
        ..Default::default()
    }
}

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

// ---- property tests: the loader and the decoding of Cloud Run answers never panic ----------
//
// `PROPTEST_CASES=N` runs a longer campaign (docs/FUZZING.md); the suite's default is small.

mod properties {
    use std::path::Path;

    use deployer::platform::cloud_run::{decode_revision, decode_service};
    use google_cloud_run_v2::model;
    use proptest::{collection, prelude::*, sample};
    use serde_json::Value;

    use super::{fake_cloud_run, valid_with, Repository};

    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(default)
    }

    /// Keys of Cloud Run's Service and Revision (and their parts), so that arbitrary JSON often
    /// decodes into a model with fields set, plus arbitrary keys.
    const KEYS: &[&str] = &[
        "name",
        "uid",
        "etag",
        "uri",
        "urls",
        "generation",
        "observedGeneration",
        "reconciling",
        "conditions",
        "terminalCondition",
        "latestReadyRevision",
        "latestCreatedRevision",
        "traffic",
        "trafficStatuses",
        "annotations",
        "labels",
        "template",
        "containers",
        "image",
        "type",
        "revision",
        "percent",
        "tag",
        "state",
        "message",
        "reason",
        "createTime",
        "env",
        "value",
        "service",
        "scaling",
    ];

    fn json_key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => sample::select(KEYS).prop_map(str::to_string),
            1 => "\\PC{0,8}",
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-300i64..300).prop_map(Value::from),
            any::<i64>().prop_map(|number| Value::from(number.to_string())),
            any::<f64>()
                .prop_map(|number| serde_json::Number::from_f64(number)
                    .map_or(Value::Null, Value::Number)),
            "\\PC{0,24}".prop_map(Value::from),
            sample::select(
                &[
                    "REVISION",
                    "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST",
                    "CONDITION_SUCCEEDED",
                    "CONDITION_FAILED",
                    "Ready",
                    "2024-01-01T00:00:00Z",
                    "30s"
                ][..]
            )
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 96, 8, |inner| {
            prop_oneof![
                collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                collection::btree_map(json_key(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A value for a field: mostly of the field's type (`typed`), sometimes anything.
    fn field(typed: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
        proptest::option::of(prop_oneof![40 => typed, 1 => json_value()]).boxed()
    }

    fn text() -> BoxedStrategy<Value> {
        prop_oneof![
            "\\PC{0,16}",
            "projects/p/locations/r/services/s/revisions/[a-z0-9-]{0,8}"
        ]
        .prop_map(Value::from)
        .boxed()
    }

    fn enumeration() -> BoxedStrategy<Value> {
        prop_oneof![
            (-2i64..5).prop_map(Value::from),
            sample::select(
                &[
                    "REVISION",
                    "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST",
                    "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                    "CONDITION_SUCCEEDED",
                    "CONDITION_FAILED",
                    "CONDITION_PENDING"
                ][..]
            )
            .prop_map(Value::from),
        ]
        .boxed()
    }

    fn object(fields: Vec<(&'static str, BoxedStrategy<Option<Value>>)>) -> BoxedStrategy<Value> {
        let (names, strategies): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
        strategies
            .prop_map(move |values| {
                Value::Object(
                    names
                        .iter()
                        .zip(values)
                        .filter_map(|(name, value)| Some((name.to_string(), value?)))
                        .collect(),
                )
            })
            .boxed()
    }

    fn traffic_entry() -> BoxedStrategy<Value> {
        object(vec![
            ("type", field(enumeration())),
            ("revision", field(text())),
            (
                "percent",
                field(
                    prop_oneof![(-300i64..300), any::<i32>().prop_map(i64::from)]
                        .prop_map(Value::from),
                ),
            ),
            ("tag", field(text())),
            ("uri", field(text())),
        ])
    }

    fn condition() -> BoxedStrategy<Value> {
        object(vec![
            (
                "type",
                field(prop_oneof![Just(Value::from("Ready")), text()]),
            ),
            ("state", field(enumeration())),
            ("message", field(text())),
        ])
    }

    fn string_map() -> BoxedStrategy<Value> {
        collection::btree_map("\\PC{0,8}", "\\PC{0,16}", 0..4)
            .prop_map(|map| {
                Value::Object(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            })
            .boxed()
    }

    fn containers() -> BoxedStrategy<Value> {
        collection::vec(object(vec![("image", field(text()))]), 0..3)
            .prop_map(Value::Array)
            .boxed()
    }

    /// JSON shaped like a Cloud Run Service or Revision, each field usually of its type.
    fn resource_json() -> BoxedStrategy<Value> {
        object(vec![
            ("name", field(text())),
            ("etag", field(text())),
            ("uri", field(text())),
            (
                "generation",
                field(any::<i64>().prop_map(|n| Value::from(n.to_string()))),
            ),
            (
                "observedGeneration",
                field(any::<i64>().prop_map(Value::from)),
            ),
            ("reconciling", field(any::<bool>().prop_map(Value::from))),
            ("latestReadyRevision", field(text())),
            ("latestCreatedRevision", field(text())),
            (
                "traffic",
                field(collection::vec(traffic_entry(), 0..5).prop_map(Value::Array)),
            ),
            (
                "trafficStatuses",
                field(collection::vec(traffic_entry(), 0..5).prop_map(Value::Array)),
            ),
            (
                "conditions",
                field(collection::vec(condition(), 0..3).prop_map(Value::Array)),
            ),
            ("terminalCondition", field(condition())),
            ("annotations", field(string_map())),
            ("labels", field(string_map())),
            (
                "template",
                field(object(vec![("containers", field(containers()))])),
            ),
            ("containers", field(containers())),
            (
                "createTime",
                field(prop_oneof![
                    Just(Value::from("2024-01-01T00:00:00Z")),
                    text()
                ]),
            ),
        ])
    }

    fn top_level_object() -> impl Strategy<Value = Value> {
        collection::btree_map(json_key(), json_value(), 0..12)
            .prop_map(|map| Value::Object(map.into_iter().collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(256)))]

        /// Arbitrary JSON that Google's client accepts as a Service or a Revision never panics
        /// our decoding.
        #[test]
        fn arbitrary_service_and_revision_answers_never_panic_decoding(
            value in prop_oneof![3 => resource_json(), 1 => top_level_object().boxed()]
        ) {
            if let Ok(service) = serde_json::from_value::<model::Service>(value.clone()) {
                let _ = decode_service(&fake_cloud_run::id(), &service);
            }
            if let Ok(revision) = serde_json::from_value::<model::Revision>(value) {
                let _ = decode_revision(&revision);
            }
        }

        /// A split decodes exactly when every percent is 0..=100 and a non-empty split sums to
        /// 100; then the serving percents sum to 100 too (no wrap, no clamp).
        #[test]
        fn traffic_splits_decode_only_when_they_add_up(
            percents in collection::vec(prop_oneof![0i32..=100, any::<i32>()], 0..5)
        ) {
            let statuses: Vec<model::TrafficTargetStatus> = percents
                .iter()
                .enumerate()
                .map(|(index, percent)| {
                    model::TrafficTargetStatus::new()
                        .set_revision(format!("s-{}", index % 2))
                        .set_percent(*percent)
                })
                .collect();
            let service = model::Service::new().set_traffic_statuses(statuses);
            let valid = percents.iter().all(|percent| (0..=100).contains(percent))
                && (percents.is_empty() || percents.iter().map(|p| i64::from(*p)).sum::<i64>() == 100);
            match decode_service(&fake_cloud_run::id(), &service) {
                Ok(snapshot) => {
                    prop_assert!(valid, "{percents:?} decoded");
                    let total: u32 = snapshot.serving().iter().map(|(_, p)| u32::from(*p)).sum();
                    prop_assert_eq!(total, if percents.is_empty() { 0 } else { 100 });
                }
                Err(problem) => prop_assert!(!valid, "{percents:?} refused: {problem}"),
            }
        }

        /// Arbitrary bytes as a service file never panic the loader, and every diagnostic is
        /// inside the file.
        #[test]
        fn arbitrary_bytes_as_a_service_file_never_panic_the_loader(
            bytes in collection::vec(any::<u8>(), 0..600)
        ) {
            let repository = Repository::new();
            let path = repository.root().join("services/bytes.toml");
            std::fs::write(&path, &bytes).unwrap();
            if let Err(diagnostics) = repository.workspace().load_file(&path) {
                let lines = bytes.iter().filter(|byte| **byte == b'\n').count() + 2;
                for diagnostic in diagnostics.iter() {
                    prop_assert!(diagnostic.line >= 1 && diagnostic.line <= lines);
                    prop_assert!(diagnostic.column >= 1);
                    prop_assert!(!diagnostic.message.contains('\u{1b}'), "escaped: {:?}", diagnostic.message);
                }
            }
        }

        /// Arbitrary values in every duration and path of a valid file never panic, never load
        /// a path outside the repository, and never let a duration beyond 365 days through.
        #[test]
        fn arbitrary_durations_and_paths_never_panic_or_escape(
            durations in collection::vec(prop_oneof![
                "[0-9]{1,22}[a-z]{1,6}",
                "[0-9 ]{0,4}\\PC{0,6}",
            ], 6),
            runbook in prop_oneof![
                Just("runbooks/ok.md".to_string()),
                "(\\.\\./|/|runbooks/|\\./){0,4}[a-z.\\n\\u{1b}]{0,10}",
            ],
            dockerfile in prop_oneof![
                Just("Dockerfile".to_string()),
                "(\\.\\./|/|\\./|runbooks){0,3}[A-Za-z.]{0,10}",
            ],
        ) {
            let repository = Repository::new();
            let text = valid_with(&[
                ("runbooks/ok.md", &runbook.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").replace('\u{1b}', "\\u001b")),
                ("dockerfile = \"Dockerfile\"", &format!("dockerfile = {dockerfile:?}")),
                ("[[checks]]", &format!(
                    "[health]\ntimeout = {:?}\n\n[preflight]\ntest_timeout = {:?}\n\n[rollout]\nhold = {:?}\ninterval = {:?}\nmonitor_duration = {:?}\nmonitor_interval = {:?}\n\n[[checks]]",
                    durations[0], durations[1], durations[2], durations[3], durations[4], durations[5],
                )),
            ]);
            let path = repository.service("svc", &text);
            if let Ok(loaded) = repository.workspace().load_file(&path) {
                let config = &loaded.config;
                for duration in [
                    config.health.timeout, config.preflight.test_timeout, config.rollout.hold,
                    config.rollout.interval, config.rollout.monitor_duration,
                    config.rollout.monitor_interval,
                ] {
                    prop_assert!(duration.get() <= std::time::Duration::from_secs(7 * 24 * 3600));
                }
                let root = repository.root().canonicalize().unwrap();
                for relative in [&config.runbook, &config.build.dockerfile] {
                    let resolved = repository.root().join(relative).canonicalize().unwrap();
                    prop_assert!(resolved.starts_with(&root), "{relative} escaped");
                }
                prop_assert!(Path::new(&config.runbook).is_relative());
            }
        }
    }

    /// Arbitrary bodies (and statuses) answered by the fake Admin API never panic the real
    /// client path: transport, Google's decoding, ours, error mapping.
    #[test]
    fn arbitrary_http_answers_never_panic_the_cloud_run_platform() {
        use deployer::platform::Platform as _;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut runner =
            proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases(64)));
        let strategy = (
            sample::select(
                &[
                    // Only answers that are not retried: a 429 or 5xx is retried with backoff
                    // within the read budget (seconds of real time per case, tested in
                    // tests/faults.rs), and its body reaches the same decoding as a 4xx's.
                    200u16, 200, 200, 400, 401, 403, 404, 409,
                ][..],
            ),
            prop_oneof![
                resource_json().prop_map(|value| value.to_string()),
                top_level_object().prop_map(|value| value.to_string()),
                "\\PC{0,200}",
                Just(super::service_with_statuses(&[100, 100, 100])),
            ],
        );
        let (server, platform) = runtime.block_on(async {
            let server =
                fake_cloud_run::Server::start(200, "application/json", String::new()).await;
            let platform = server.platform().await;
            (server, platform)
        });
        runner
            .run(&strategy, |(status, body)| {
                server.answer(status, body);
                runtime.block_on(async {
                    match platform.service(&fake_cloud_run::id()).await {
                        Ok(_) => {}
                        Err(error) => {
                            let text = error.to_string();
                            prop_assert!(text.chars().count() < 700, "{text}");
                            prop_assert!(!text.contains('\n'), "{text}");
                        }
                    }
                    let _ = platform.revision(&fake_cloud_run::id(), "s-1").await;
                    Ok(())
                })
            })
            .unwrap();
    }

    // ---- Cloud Monitoring and Cloud Logging answers ---------------------------------------

    /// What a generated number is, as a request count.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Count {
        /// A whole number of requests (0 ..= i64::MAX).
        Whole(u64),
        /// Impossible as a request count (negative, fractional-huge, NaN, infinite, overflowing
        /// int64, not a number, a bool, a distribution, no value at all). `finite` tells whether
        /// it is still a finite number for a generic check (a bool is 1, a distribution its mean).
        Impossible { finite: bool },
    }

    /// One Monitoring point's `value` (a `TypedValue`) and what it is.
    fn typed_value() -> BoxedStrategy<(Value, Count)> {
        use serde_json::json;
        let whole = prop_oneof![0u64..1_000_000, 0u64..=(i64::MAX as u64)];
        prop_oneof![
            6 => whole.clone().prop_map(|n| (json!({"int64Value": n.to_string()}), Count::Whole(n))),
            2 => (0u64..1_000_000).prop_map(|n| (json!({"doubleValue": n as f64}), Count::Whole(n))),
            2 => whole.prop_map(|n| (json!({"stringValue": n.to_string()}), Count::Whole(n))),
            1 => (i64::MIN..0).prop_map(|n| (json!({"int64Value": n.to_string()}), Count::Impossible { finite: true })),
            1 => sample::select(&[
                "9223372036854775808", "18446744073709551616", "99999999999999999999999",
                "-9223372036854775809", "NaN", "1.5", "", " 7",
            ][..]).prop_map(|text| (json!({"int64Value": text}), Count::Impossible { finite: false })),
            1 => sample::select(&["NaN", "Infinity", "-Infinity"][..])
                .prop_map(|text| (json!({"doubleValue": text}), Count::Impossible { finite: false })),
            1 => prop_oneof![-1e300..-1e-300f64, 1.9e19..1e300f64]
                .prop_map(|x| (json!({"doubleValue": x}), Count::Impossible { finite: true })),
            1 => sample::select(&["NaN", "inf", "-inf", "infinity", "1e400"][..])
                .prop_map(|text| (json!({"stringValue": text}), Count::Impossible { finite: false })),
            1 => prop_oneof![
                (i64::MIN..0).prop_map(|n| n.to_string()),
                Just("1.5e3".to_string()),
                Just("18446744073709551616".to_string()),
            ].prop_map(|text| (json!({"stringValue": text}), Count::Impossible { finite: true })),
            1 => "[a-z ]{1,8}".prop_map(|text| (json!({"stringValue": text}), Count::Impossible { finite: false })),
            1 => any::<bool>().prop_map(|b| (json!({"boolValue": b}), Count::Impossible { finite: true })),
            1 => (0.0..1e6f64).prop_map(|mean| (json!({"distributionValue": {"count": "3", "mean": mean}}), Count::Impossible { finite: true })),
            1 => Just((json!({}), Count::Impossible { finite: false })),
        ]
        .boxed()
    }

    /// A `timeSeries` answer: series of `run.googleapis.com/request_count` by response class.
    #[allow(clippy::type_complexity)]
    fn time_series() -> BoxedStrategy<Vec<(String, Vec<(Value, Count)>)>> {
        let class = prop_oneof![
            sample::select(&["2xx", "4xx", "5xx", "3xx", ""][..]).prop_map(str::to_string),
            "\\PC{0,4}",
        ];
        collection::vec((class, collection::vec(typed_value(), 0..4)), 0..4).boxed()
    }

    fn time_series_json(series: &[(String, Vec<(Value, Count)>)]) -> String {
        let series: Vec<Value> = series
            .iter()
            .map(|(class, points)| {
                serde_json::json!({
                    "metric": {"type": "run.googleapis.com/request_count", "labels": {"response_code_class": class}},
                    "resource": {"type": "cloud_run_revision", "labels": {"revision_name": "s-1"}},
                    "metricKind": "DELTA",
                    "valueType": "INT64",
                    "points": points.iter().map(|(value, _)| serde_json::json!({
                        "interval": {"startTime": "2024-01-01T00:00:00Z", "endTime": "2024-01-01T00:01:00Z"},
                        "value": value,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({"timeSeries": series}).to_string()
    }

    /// An HTTP answer of a fake Google API: mostly 200 with the generated body; sometimes an
    /// error status with Google's error body, or arbitrary JSON (`None`: no model to check).
    fn http_answer<T: std::fmt::Debug + Clone + 'static>(
        body: BoxedStrategy<T>,
        encode: fn(&T) -> String,
    ) -> BoxedStrategy<(u16, String, Option<T>)> {
        // No 503: Google's client retries it after a backoff (a timing question, not decoding).
        prop_oneof![
            12 => body.prop_map(move |model| (200u16, encode(&model), Some(model))),
            1 => (sample::select(&[400u16, 404, 429, 500][..]), "\\PC{0,40}").prop_map(|(status, message)| {
                let body = serde_json::json!({"error": {"code": status, "message": message, "status": "X"}});
                (status, body.to_string(), None)
            }),
            1 => top_level_object().prop_map(|value| (200u16, value.to_string(), None)),
            1 => "\\PC{0,60}".prop_map(|text| (200u16, text, None)),
        ]
        .boxed()
    }

    fn checked(text: &str) -> deployer::config::CheckConfig {
        toml::from_str(text).unwrap()
    }

    /// A single-threaded runtime with a fake Google API answering whatever it is told.
    fn fake_google() -> (tokio::runtime::Runtime, fake_cloud_run::Server) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(fake_cloud_run::Server::start(
            200,
            "application/json",
            String::new(),
        ));
        (runtime, server)
    }

    fn check_context() -> deployer::checks::CheckContext {
        deployer::checks::CheckContext {
            service: "s".into(),
            project: "p".into(),
            region: "r".into(),
            revision: Some("s-1".into()),
            ..deployer::checks::CheckContext::default()
        }
    }

    /// Arbitrary and mis-shaped Cloud Monitoring `timeSeries` answers, read through the real
    /// client and decoding, as the canary analysis reads request counts (`CloudMonitoring`)
    /// and as a `cloud-monitoring` check reads a value (`ALIGN_SUM`): no panic; a request count
    /// that is impossible (negative, NaN, infinite, fractional-huge, overflowing int64, not a
    /// number, no value) or a sum beyond 64 bits is a measurement error, never counts; a
    /// plausible answer is counted exactly; a check passes only on a finite value.
    #[test]
    fn arbitrary_monitoring_answers_never_turn_impossible_counts_into_a_pass() {
        use deployer::{
            checks::{
                cloud_monitoring::CloudMonitoring, ProviderEndpoints, Providers,
                RequestMetrics as _, Status,
            },
            platform::ServiceId,
        };
        let (runtime, server) = fake_google();
        let metrics = CloudMonitoring::new(&server.url).unwrap();
        let providers = Providers::new(ProviderEndpoints {
            monitoring: Some(server.url.clone()),
            ..ProviderEndpoints::default()
        });
        let check = checked(
            "name = \"Requests\"\nprovider = \"cloud-monitoring\"\nfilter = 'metric.type = \"run.googleapis.com/request_count\"'\naligner = \"ALIGN_SUM\"\nreducer = \"REDUCE_SUM\"\nwindow = \"10m\"\ncomparison = \">=\"\nwarn = 10\ncritical = 1\n",
        );
        let context = check_context();
        let id = ServiceId {
            project: "p".into(),
            region: "r".into(),
            name: "s".into(),
        };
        let mut runner =
            proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases(64)));
        runner
            .run(
                &http_answer(time_series(), |series| time_series_json(series)),
                |(status, body, model)| {
                    server.answer(status, body.clone());
                    let counts = runtime.block_on(metrics.request_counts(
                        &id,
                        "s-1",
                        std::time::Duration::from_secs(60),
                    ));
                    let result =
                        runtime.block_on(deployer::checks::run_check(&check, &context, &providers));
                    if let Err(error) = &counts {
                        let text = error.to_string();
                        prop_assert!(!text.contains('\n') && text.chars().count() < 700, "{text}");
                    }
                    if let Ok(counts) = &counts {
                        prop_assert!(counts.errors <= counts.total, "{counts:?}");
                    }
                    if result.status.evaluated() {
                        let value = result.value.unwrap_or(f64::NAN);
                        prop_assert!(value.is_finite(), "{result:?} for {body}");
                    }
                    let Some(series) = model.filter(|_| status == 200) else {
                        return Ok(());
                    };
                    // Request counts: exactly the plausible sums, else an error.
                    let points = || {
                        series
                            .iter()
                            .flat_map(|(_, points)| points.iter().map(|(_, count)| *count))
                    };
                    let impossible =
                        points().any(|count| matches!(count, Count::Impossible { .. }));
                    let sum = |only_5xx: bool| -> u128 {
                        series
                            .iter()
                            .filter(|(class, _)| !only_5xx || class == "5xx")
                            .flat_map(|(_, points)| points.iter())
                            .map(|(_, count)| match count {
                                Count::Whole(n) => u128::from(*n),
                                Count::Impossible { .. } => 0,
                            })
                            .sum()
                    };
                    let (total, errors) = (sum(false), sum(true));
                    if impossible || total > u128::from(u64::MAX) {
                        prop_assert!(counts.is_err(), "counted {counts:?} from {body}");
                    } else {
                        let counts = counts
                            .map_err(|error| TestCaseError::fail(format!("{error} for {body}")))?;
                        prop_assert_eq!(
                            (u128::from(counts.total), u128::from(counts.errors)),
                            (total, errors),
                            "{}",
                            body
                        );
                    }
                    // A check: one series with points is one value; a non-finite point is an
                    // error, never a pass.
                    let with_points: Vec<_> = series
                        .iter()
                        .filter(|(_, points)| !points.is_empty())
                        .collect();
                    if let [(_, points)] = with_points.as_slice() {
                        if points
                            .iter()
                            .any(|(_, count)| matches!(count, Count::Impossible { finite: false }))
                        {
                            prop_assert_eq!(
                                result.status,
                                Status::Error,
                                "{:?} for {}",
                                result,
                                body
                            );
                        } else if points
                            .iter()
                            .all(|(_, count)| matches!(count, Count::Whole(_)))
                        {
                            prop_assert!(result.status.evaluated(), "{result:?} for {body}");
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    /// What a generated request log entry's `httpRequest.status` is.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Logged {
        /// An HTTP status (100..=599).
        Status(i32),
        /// No request, or an impossible status (none, 0, negative, beyond 599, beyond i32).
        Impossible,
    }

    fn log_entry() -> BoxedStrategy<(Value, Logged)> {
        use serde_json::json;
        // Within the reader's window (the test runs for seconds): Cloud Logging gives every
        // entry a timestamp and a receiveTimestamp (and an insertId, see `entries_json`).
        let entry = |request: Option<Value>| {
            let now = chrono::Utc::now().to_rfc3339();
            let mut entry = json!({
                "logName": "projects/p/logs/run.googleapis.com%2Frequests",
                "resource": {"type": "cloud_run_revision", "labels": {"revision_name": "s-1"}},
                "timestamp": now,
                "receiveTimestamp": now,
            });
            if let Some(request) = request {
                entry["httpRequest"] = request;
            }
            entry
        };
        prop_oneof![
            12 => prop_oneof![100i32..600, 200i32..204, 500i32..504]
                .prop_map(move |status| (entry(Some(json!({"status": status, "requestMethod": "GET"}))), Logged::Status(status))),
            1 => prop_oneof![i32::MIN..100, 600..=i32::MAX]
                .prop_map(move |status| (entry(Some(json!({"status": status}))), Logged::Impossible)),
            1 => sample::select(vec![json!("99999999999"), json!(-99999999999i64), json!(1e12), json!("5xx")])
                .prop_map(move |status| (entry(Some(json!({"status": status}))), Logged::Impossible)),
            1 => Just((entry(Some(json!({"requestMethod": "GET"}))), Logged::Impossible)),
            1 => Just((entry(None), Logged::Impossible)),
        ]
        .boxed()
    }

    fn entries_json(entries: &[(Value, Logged)]) -> String {
        let with_ids = entries.iter().enumerate().map(|(index, (entry, _))| {
            let mut entry = entry.clone();
            entry["insertId"] = Value::String(format!("{index:08x}"));
            entry
        });
        serde_json::json!({"entries": with_ids.collect::<Vec<_>>()}).to_string()
    }

    /// Arbitrary and mis-shaped Cloud Logging `entries` answers, read through the real client
    /// and decoding, as the canary analysis reads request counts from Cloud Run's request logs
    /// (`CloudLoggingRequests`) and as a `cloud-logging` check counts entries: no panic; a
    /// request entry without a possible HTTP status is a measurement error, never a request
    /// that succeeded; a plausible answer is counted exactly.
    #[test]
    fn arbitrary_logging_answers_never_turn_impossible_statuses_into_a_pass() {
        use deployer::{
            checks::{
                cloud_logging::CloudLoggingRequests, ProviderEndpoints, Providers,
                RequestMetrics as _,
            },
            platform::ServiceId,
        };
        let (runtime, server) = fake_google();
        let providers = Providers::new(ProviderEndpoints {
            logging: Some(server.url.clone()),
            ..ProviderEndpoints::default()
        });
        let check = checked(
            "name = \"Errors\"\nprovider = \"cloud-logging\"\nfilter = 'httpRequest.status>=500'\nwindow = \"10m\"\ncomparison = \"<=\"\nwarn = 5\ncritical = 20\n",
        );
        let context = check_context();
        let id = ServiceId {
            project: "p".into(),
            region: "r".into(),
            name: "s".into(),
        };
        let mut runner =
            proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases(64)));
        let answers = http_answer(collection::vec(log_entry(), 0..12).boxed(), |entries| {
            entries_json(entries)
        });
        runner
            .run(&answers, |(status, body, model)| {
                server.answer(status, body.clone());
                // A reader per answer: each is a revision's first look (the reader keeps what it
                // counted per revision across looks).
                let metrics = CloudLoggingRequests::new(Some(server.url.clone()));
                let counts = runtime.block_on(metrics.request_counts(
                    &id,
                    "s-1",
                    std::time::Duration::from_secs(60),
                ));
                let result =
                    runtime.block_on(deployer::checks::run_check(&check, &context, &providers));
                if let Err(error) = &counts {
                    let text = error.to_string();
                    prop_assert!(!text.contains('\n') && text.chars().count() < 700, "{text}");
                }
                if let Ok(counts) = &counts {
                    prop_assert!(counts.errors <= counts.total, "{counts:?}");
                }
                if result.status.evaluated() {
                    prop_assert!(result.value.is_some_and(f64::is_finite), "{result:?}");
                }
                let Some(entries) = model.filter(|_| status == 200) else {
                    return Ok(());
                };
                let overflowing = entries.iter().any(|(entry, _)| {
                    entry["httpRequest"]["status"]
                        .as_i64()
                        .is_none_or(|s| i32::try_from(s).is_err())
                        && !entry["httpRequest"]["status"].is_null()
                });
                if entries
                    .iter()
                    .any(|(_, logged)| *logged == Logged::Impossible)
                {
                    prop_assert!(counts.is_err(), "counted {counts:?} from {body}");
                } else {
                    let counts = counts
                        .map_err(|error| TestCaseError::fail(format!("{error} for {body}")))?;
                    let errors = entries
                        .iter()
                        .filter(|(_, logged)| matches!(logged, Logged::Status(500..=599)))
                        .count();
                    prop_assert_eq!(
                        (counts.total, counts.errors),
                        (entries.len() as u64, errors as u64),
                        "{}",
                        body
                    );
                }
                // The check counts entries, whatever they hold, once they decode.
                if !overflowing {
                    prop_assert_eq!(
                        result.value,
                        Some(entries.len() as f64),
                        "{:?} for {}",
                        result,
                        body
                    );
                }
                Ok(())
            })
            .unwrap();
    }
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

#[test]
fn a_revision_name_with_terminal_escapes_is_shown_escaped_in_platform_errors() {
    use deployer::platform::PlatformError;
    let path = "projects/p/locations/r/services/s/revisions/\u{1b}[2Jx".to_string();
    for error in [
        PlatformError::NotFound(path.clone()),
        PlatformError::Conflict(path),
    ] {
        let text = error.to_string();
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("revisions/\\u{1b}[2Jx"), "{text:?}");
    }
}
