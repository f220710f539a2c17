//! Semantic validation of a parsed service file: everything types cannot say.
//!
//! Each rule exists because breaking it would make a rollout unsafe or meaningless: canary steps
//! that do not end at 100 never promote; a warning threshold beyond the critical one never warns;
//! a missing runbook leaves on-call without instructions at 3 a.m.

use std::{
    cell::OnceCell,
    path::{Path, PathBuf},
    time::Duration,
};

use toml_edit::Document;

use super::{
    diagnostic::LineIndex,
    files::{self, FileProblem},
    locate::{span_in, Part},
    CheckSource, Comparison, Diagnostic, Diagnostics, DurationRange, HumanDuration, ServiceConfig,
    Target, Unit,
};

/// Collects every semantic problem of `config` (read from `file`, whose text is `source`);
/// paths in the file are resolved against the repository `root`.
pub fn validate(config: &ServiceConfig, file: &Path, source: &str, root: &Path) -> Diagnostics {
    let mut report = Report {
        file,
        document: OnceCell::new(),
        source,
        lines: OnceCell::new(),
        diagnostics: Diagnostics::default(),
    };
    check_names(config, &mut report);
    check_regions(config, &mut report);
    check_files(config, root, &mut report);
    check_rollout(config, &mut report);
    check_run(config, &mut report);
    check_checks(config, &mut report);
    check_drift(config, &mut report);
    check_wiring(config, &mut report);
    check_notifications(config, &mut report);
    check_depends_on(config, &mut report);
    report.diagnostics
}

/// `target.regions`: at least one, each a region name (`platform::check_region`), none twice,
/// and not beside `target.region` (which one would `--region` override?).
fn check_regions(config: &ServiceConfig, report: &mut Report<'_>) {
    let (regions, region) = match &config.target {
        Target::CloudRun {
            regions, region, ..
        } => (regions, region.as_ref()),
        Target::Local { regions, .. } => (regions, None),
    };
    let Some(regions) = regions else {
        return;
    };
    let at = [Part::Key("target"), Part::Key("regions")];
    if region.is_some() {
        report.error(
            &[Part::Key("target"), Part::Key("region")],
            "`target.region` and `target.regions` are both set".to_string(),
            "keep one: `regions = [\"us-west2\", \"us-east1\"]` (the canary region first) for several regions, `region` for one",
        );
    }
    if regions.is_empty() {
        report.error(
            &at,
            "`target.regions` is empty".to_string(),
            "list at least one region, the canary region first, e.g. `regions = [\"us-west2\", \"us-east1\"]`",
        );
    }
    for (index, region) in regions.iter().enumerate() {
        let path = [
            Part::Key("target"),
            Part::Key("regions"),
            Part::Index(index),
        ];
        if let Err(error) = crate::platform::check_region(region) {
            report.error(
                &path,
                format!("invalid region in `target.regions`: {error}"),
                "write each region as `gcloud run regions list` names it",
            );
        } else if regions[..index].contains(region) {
            report.error(
                &path,
                format!("region `{region}` is listed twice in `target.regions`"),
                "list each region once",
            );
        }
    }
}

/// An environment variable name as Cloud Run accepts it.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A Secret Manager version reference: `projects/P/secrets/S/versions/V`.
fn is_secret_reference(reference: &str) -> bool {
    let parts: Vec<&str> = reference.split('/').collect();
    parts.len() == 6
        && parts[0] == "projects"
        && parts[2] == "secrets"
        && parts[4] == "versions"
        && [parts[1], parts[3], parts[5]].iter().all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn check_run(config: &ServiceConfig, report: &mut Report<'_>) {
    let run = &config.run;
    for (table, names) in [("env", &run.env), ("secrets", &run.secrets)] {
        for name in names.keys() {
            if !is_env_name(name) {
                report.error(
                    &[Part::Key("run"), Part::Key(table), Part::Key(name)],
                    format!(
                        "`run.{table}`: `{}` is not an environment variable name",
                        name.escape_debug()
                    ),
                    "names are letters, digits and `_`, not starting with a digit",
                );
            }
        }
    }
    for (name, value) in &run.env {
        if value.chars().any(|c| c.is_control() && c != '\t') {
            report.error(
                &[Part::Key("run"), Part::Key("env"), Part::Key(name)],
                format!("`run.env.{name}` holds control characters"),
                "write the value on one line",
            );
        }
        if run.secrets.contains_key(name) {
            report.error(
                &[Part::Key("run"), Part::Key("secrets"), Part::Key(name)],
                format!("`{name}` is both in `run.env` and in `run.secrets`"),
                "a variable is either a literal or a secret reference",
            );
        }
    }
    for (name, reference) in &run.secrets {
        if !is_secret_reference(reference) {
            report.error(
                &[Part::Key("run"), Part::Key("secrets"), Part::Key(name)],
                // The value is not echoed: it may be the secret itself, written by mistake.
                format!("`run.secrets.{name}` is not a Secret Manager reference"),
                "write `projects/PROJECT/secrets/SECRET/versions/VERSION` (a version number or `latest`); never the secret's value",
            );
        }
    }
    if let Some(concurrency) = run.concurrency {
        if !(1..=1000).contains(&concurrency) {
            report.error(
                &[Part::Key("run"), Part::Key("concurrency")],
                format!("`run.concurrency` = {concurrency} is not between 1 and 1000"),
                "Cloud Run allows 1 to 1000 concurrent requests per instance",
            );
        }
    }
    if let (Some(min), Some(max)) = (run.min_instances, run.max_instances) {
        if min > max {
            report.error(
                &[Part::Key("run"), Part::Key("min_instances")],
                format!("`run.min_instances` ({min}) is above `run.max_instances` ({max})"),
                "lower `min_instances` or raise `max_instances`",
            );
        }
    }
    if let Some(timeout) = run.timeout {
        if timeout.get().is_zero() || timeout.get() > std::time::Duration::from_secs(3600) {
            report.error(
                &[Part::Key("run"), Part::Key("timeout")],
                format!("`run.timeout` = {timeout} is not between 1s and 60m"),
                "Cloud Run's request timeout is at most 60 minutes",
            );
        }
    }
}

/// The diagnostics of one file, with the file's text parsed and indexed once — at the first
/// error — so that locating N errors costs N lookups, not N parses and N scans of the text.
struct Report<'a> {
    file: &'a Path,
    source: &'a str,
    document: OnceCell<Option<Document<&'a str>>>,
    lines: OnceCell<LineIndex<'a>>,
    diagnostics: Diagnostics,
}

impl Report<'_> {
    fn error(&mut self, path: &[Part<'_>], message: String, hint: &str) {
        let source = self.source;
        let span = self
            .document
            .get_or_init(|| Document::parse(source).ok())
            .as_ref()
            .and_then(|document| span_in(document, path));
        let lines = self.lines.get_or_init(|| LineIndex::new(source));
        self.diagnostics
            .push(Diagnostic::located(self.file, lines, span, message).with_hint(hint));
    }
}

/// `depends_on`: service names, not the service itself, each once (whether they exist and
/// whether they go round is a rule over every file: `config::dependencies`).
fn check_depends_on(config: &ServiceConfig, report: &mut Report<'_>) {
    for (index, dependency) in config.depends_on.iter().enumerate() {
        let at = [Part::Key("depends_on"), Part::Index(index)];
        if !is_service_name(dependency) {
            report.error(
                &at,
                format!("`depends_on` entry `{dependency}` is not a service name"),
                "service names are lowercase letters, digits and `-`",
            );
        } else if *dependency == config.name {
            report.error(
                &at,
                format!("dependency cycle: {} → {}", config.name, config.name),
                "a service cannot depend on itself",
            );
        } else if config.depends_on[..index].contains(dependency) {
            report.error(
                &at,
                format!("`depends_on` names `{dependency}` twice"),
                "name each dependency once",
            );
        }
    }
}

/// Cloud Run's rule for service names: lowercase letters, digits and hyphens, starting with a
/// letter, not ending with a hyphen, at most 49 characters.
fn is_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 49
        && bytes[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-')
}

fn check_names(config: &ServiceConfig, report: &mut Report<'_>) {
    if !is_service_name(&config.name) {
        report.error(
            &[Part::Key("name")],
            format!("invalid service name `{}`", config.name),
            "use lowercase letters, digits and `-`, starting with a letter (at most 49 characters)",
        );
    }
    let target_service = match &config.target {
        Target::CloudRun { service, .. } | Target::Local { service, .. } => service,
    };
    if let Some(service) = target_service {
        if !is_service_name(service) {
            report.error(
                &[Part::Key("target"), Part::Key("service")],
                format!("invalid Cloud Run service name `{service}`"),
                "use lowercase letters, digits and `-`, starting with a letter (at most 49 characters)",
            );
        }
    }
    for (key, value) in match &config.target {
        Target::CloudRun {
            project, region, ..
        } => vec![("project", project), ("region", region)],
        Target::Local { .. } => vec![],
    } {
        if value
            .as_deref()
            .is_some_and(|value| value.trim().is_empty())
        {
            report.error(
                &[Part::Key("target"), Part::Key(key)],
                format!("`target.{key}` is empty"),
                "remove the key to take it from `--project`/`--region` or the environment",
            );
        }
    }
    let repository = &config.image.repository;
    let last_segment = repository.rsplit('/').next().unwrap_or_default();
    if repository.trim().is_empty()
        || repository.contains('@')
        || last_segment.contains(':')
        || !repository.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/' | ':')
        })
    {
        report.error(
            &[Part::Key("image"), Part::Key("repository")],
            format!("invalid image repository `{repository}`"),
            "write the repository without tag or digest, in lowercase ASCII (`a-z 0-9 . _ - / :`), e.g. `127.0.0.1:5000/hello`; deployer adds the tag and deploys by digest",
        );
    }
    if config.health.path.chars().any(char::is_control) {
        // A CR/LF in the path would end the request line of the health request: header
        // injection, or a request for something else entirely.
        report.error(
            &[Part::Key("health"), Part::Key("path")],
            format!(
                "health path `{}` contains control characters",
                config.health.path
            ),
            "write a plain URL path such as `/health`",
        );
    } else if !config.health.path.starts_with('/') {
        report.error(
            &[Part::Key("health"), Part::Key("path")],
            format!(
                "health path `{}` does not start with `/`",
                config.health.path
            ),
            "write an absolute path such as `/health`",
        );
    }
    if config.health.timeout.get().is_zero() {
        report.error(
            &[Part::Key("health"), Part::Key("timeout")],
            "`health.timeout` is zero".into(),
            "give the health request a time limit such as `5s`",
        );
    } else {
        check_range(
            report,
            ("health", "timeout"),
            config.health.timeout,
            HEALTH_TIMEOUT,
        );
    }
}

/// Documented ranges of the durations of a service file (README, "Service definitions"), so
/// that no setting can make a rollout wait for years or overflow a deadline.
pub const HOLD: DurationRange = DurationRange::new(SECOND, WEEK);
/// `rollout.interval` (also at most `hold`).
pub const INTERVAL: DurationRange = DurationRange::new(SECOND, DAY);
/// `rollout.monitor_duration` (`0s` skips the monitor).
pub const MONITOR_DURATION: DurationRange = DurationRange::new(Duration::ZERO, WEEK);
/// `rollout.monitor_interval` (also at most `monitor_duration`).
pub const MONITOR_INTERVAL: DurationRange = DurationRange::new(SECOND, DAY);
/// `health.timeout`.
pub const HEALTH_TIMEOUT: DurationRange = DurationRange::new(SECOND, Duration::from_secs(300));
/// `preflight.test_timeout`.
pub const TEST_TIMEOUT: DurationRange = DurationRange::new(SECOND, DAY);

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const WEEK: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Reports `section.key` when `value` is outside `range`.
fn check_range(
    report: &mut Report<'_>,
    (section, key): (&str, &str),
    value: HumanDuration,
    range: DurationRange,
) {
    if !range.contains(value.get()) {
        report.error(
            &[Part::Key(section), Part::Key(key)],
            format!("`{section}.{key}` = {value} is out of range {range}"),
            "durations of a service file have documented ranges (README, \"Service definitions\")",
        );
    }
}

/// Sections every runbook has (matched case-insensitively in its headings), so that on-call
/// finds the same five parts in every service's runbook.
pub const RUNBOOK_SECTIONS: [&str; 5] =
    ["pre-flight", "deploy", "verify", "troubleshoot", "rollback"];

/// A path of the service file, resolved inside the repository, or the reason it is not there
/// (reported at `key`).
fn repository_path(
    report: &mut Report<'_>,
    root: &Path,
    key: &[Part<'_>],
    what: &str,
    relative: &str,
) -> Option<PathBuf> {
    match files::inside_repository(root, relative) {
        Ok(path) => Some(path),
        Err(outside) => {
            report.error(
                key,
                format!("{what} `{relative}` {outside}"),
                "paths in service files are relative to the repository root and stay inside it",
            );
            None
        }
    }
}

fn check_files(config: &ServiceConfig, root: &Path, report: &mut Report<'_>) {
    let runbook_key = [Part::Key("runbook")];
    let runbook = repository_path(report, root, &runbook_key, "runbook", &config.runbook);
    match runbook.map(|path| files::read_regular_file(&path)) {
        None => {}
        Some(Err(FileProblem::Missing)) => report.error(
            &runbook_key,
            format!("runbook `{}` not found", config.runbook),
            "every service needs a runbook: create it (paths are relative to the repository root)",
        ),
        Some(Err(problem)) => report.error(
            &runbook_key,
            format!("runbook `{}` {problem}", config.runbook),
            "`runbook` names a Markdown file, relative to the repository root",
        ),
        Some(Ok(text)) => {
            let headings: Vec<String> = text
                .lines()
                .filter(|line| line.trim_start().starts_with('#'))
                .map(|line| line.to_lowercase().replace("preflight", "pre-flight"))
                .collect();
            let missing: Vec<&str> = RUNBOOK_SECTIONS
                .into_iter()
                .filter(|section| !headings.iter().any(|heading| heading.contains(section)))
                .collect();
            if !missing.is_empty() {
                report.error(
                    &[Part::Key("runbook")],
                    format!(
                        "runbook `{}` has no section for {}",
                        config.runbook,
                        missing
                            .iter()
                            .map(|section| format!("`{section}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "add a `## ` heading for each of pre-flight, deploy, verify, troubleshoot and rollback",
                );
            }
        }
    }
    let context_key = [Part::Key("build"), Part::Key("context")];
    let context = &config.build.context;
    if let Some(path) = repository_path(report, root, &context_key, "build context", context) {
        if !path.is_dir() {
            report.error(
                &context_key,
                format!("build context `{context}` is not a directory"),
                "paths are relative to the repository root",
            );
        }
    }
    let dockerfile_key = [Part::Key("build"), Part::Key("dockerfile")];
    let dockerfile = &config.build.dockerfile;
    if let Some(path) = repository_path(report, root, &dockerfile_key, "Dockerfile", dockerfile) {
        let problem = std::fs::metadata(&path)
            .map_err(FileProblem::from)
            .and_then(|metadata| match files::kind_of(metadata.file_type()) {
                Some(kind) => Err(FileProblem::NotRegular(kind)),
                None => Ok(()),
            });
        match problem {
            Ok(()) => {}
            Err(FileProblem::Missing) => report.error(
                &dockerfile_key,
                format!("Dockerfile `{dockerfile}` not found"),
                "paths are relative to the repository root",
            ),
            Err(problem) => report.error(
                &dockerfile_key,
                format!("Dockerfile `{dockerfile}` {problem}"),
                "`build.dockerfile` names a file, relative to the repository root",
            ),
        }
    }
    check_range(
        report,
        ("preflight", "test_timeout"),
        config.preflight.test_timeout,
        TEST_TIMEOUT,
    );
    for (index, pattern) in config.preflight.schema_paths.iter().enumerate() {
        if pattern.trim().is_empty() {
            report.error(
                &[
                    Part::Key("preflight"),
                    Part::Key("schema_paths"),
                    Part::Index(index),
                ],
                "empty schema path pattern".into(),
                "write a glob such as `schemas/**`",
            );
        }
    }
}

fn check_rollout(config: &ServiceConfig, report: &mut Report<'_>) {
    let rollout = &config.rollout;
    let steps = &rollout.steps;
    let steps_path = [Part::Key("rollout"), Part::Key("steps")];
    if steps.is_empty() {
        report.error(
            &steps_path,
            "`rollout.steps` is empty".into(),
            "list the canary percentages, ending at 100, e.g. `[5, 25, 50, 100]`",
        );
    }
    for (index, step) in steps.iter().enumerate() {
        if *step == 0 || *step > 100 {
            report.error(
                &[Part::Key("rollout"), Part::Key("steps"), Part::Index(index)],
                format!("traffic step {step} is not between 1 and 100"),
                "each step is the canary's traffic percentage",
            );
        } else if index > 0 && *step <= steps[index - 1] {
            report.error(
                &[Part::Key("rollout"), Part::Key("steps"), Part::Index(index)],
                format!(
                    "traffic steps are not ascending: {step} comes after {}",
                    steps[index - 1]
                ),
                "list the steps in strictly ascending order, e.g. `[5, 25, 50, 100]`",
            );
        }
    }
    if let Some(last) = steps.last() {
        if *last != 100 && (1..=100).contains(last) {
            report.error(
                &[
                    Part::Key("rollout"),
                    Part::Key("steps"),
                    Part::Index(steps.len() - 1),
                ],
                format!("traffic steps end at {last}, not 100"),
                "end the steps with 100 so that a successful rollout promotes the revision",
            );
        }
    }
    let fraction_rules = [
        ("max_error_rate", rollout.max_error_rate, 0.0, 1.0),
        ("alpha", rollout.alpha, 0.0, 0.5),
        ("beta", rollout.beta, 0.0, 0.5),
    ];
    for (key, value, low, high) in fraction_rules {
        if !(value > low && value < high) {
            report.error(
                &[Part::Key("rollout"), Part::Key(key)],
                format!("`rollout.{key}` = {value} is out of range ({low}, {high})"),
                match key {
                    "max_error_rate" => "write a fraction, e.g. `0.05` for 5%",
                    _ => "write a probability bound, e.g. `0.01`",
                },
            );
        }
    }
    let durations = [
        ("hold", rollout.hold, HOLD),
        ("interval", rollout.interval, INTERVAL),
        (
            "monitor_duration",
            rollout.monitor_duration,
            MONITOR_DURATION,
        ),
        (
            "monitor_interval",
            rollout.monitor_interval,
            MONITOR_INTERVAL,
        ),
    ];
    for (key, value, range) in durations {
        if value.get().is_zero() && key != "monitor_duration" {
            report.error(
                &[Part::Key("rollout"), Part::Key(key)],
                format!("`rollout.{key}` is zero"),
                "give a positive duration such as `30s`",
            );
        } else {
            check_range(report, ("rollout", key), value, range);
        }
    }
    if rollout.interval > rollout.hold {
        report.error(
            &[Part::Key("rollout"), Part::Key("interval")],
            format!(
                "`rollout.interval` ({}) is longer than `rollout.hold` ({})",
                rollout.interval, rollout.hold
            ),
            "the analysis must run at least once per step: make `interval` at most `hold`",
        );
    }
    if !rollout.monitor_duration.get().is_zero()
        && rollout.monitor_interval > rollout.monitor_duration
    {
        report.error(
            &[Part::Key("rollout"), Part::Key("monitor_interval")],
            format!(
                "`rollout.monitor_interval` ({}) is longer than `rollout.monitor_duration` ({})",
                rollout.monitor_interval, rollout.monitor_duration
            ),
            "make `monitor_interval` at most `monitor_duration` (or set `monitor_duration = \"0s\"` to skip the monitor)",
        );
    }
    if rollout.consecutive_error_limit == 0 {
        report.error(
            &[Part::Key("rollout"), Part::Key("consecutive_error_limit")],
            "`rollout.consecutive_error_limit` is zero".into(),
            "allow at least one measurement error, e.g. `4`",
        );
    }
}

fn check_checks(config: &ServiceConfig, report: &mut Report<'_>) {
    let mut seen_names = std::collections::HashSet::new();
    for (index, check) in config.checks.iter().enumerate() {
        let at = |key| [Part::Key("checks"), Part::Index(index), Part::Key(key)];
        if check.name.trim().is_empty() {
            report.error(&at("name"), "check name is empty".into(), "name the check");
        }
        if !seen_names.insert(check.name.as_str()) {
            report.error(
                &at("name"),
                format!("duplicate check name `{}`", check.name),
                "give each check of a service a unique name",
            );
        }
        let query_key = check.source.query_key();
        let query = check.source.query_text();
        if query.trim().is_empty() {
            report.error(
                &at(query_key),
                format!("check `{}` has an empty `{query_key}`", check.name),
                "write the provider's query (SQL, PromQL, a filter or a URL)",
            );
        }
        let unknown = super::placeholders::unknown_placeholders(query);
        if !unknown.is_empty() {
            report.error(
                &at(query_key),
                format!(
                    "check `{}` uses unknown placeholder{} {}",
                    check.name,
                    if unknown.len() > 1 { "s" } else { "" },
                    unknown
                        .iter()
                        .map(|name| format!("`{{{name}}}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &format!(
                    "placeholders are {}; write `{{{{` for a literal brace",
                    super::placeholders::PLACEHOLDERS
                        .iter()
                        .map(|name| format!("`{{{name}}}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        match &check.source {
            CheckSource::Http(http) => {
                if !(http.url.starts_with('/')
                    || http.url.starts_with("http://")
                    || http.url.starts_with("https://"))
                {
                    report.error(
                        &at("url"),
                        format!(
                            "http check `{}`: `url` is neither an absolute URL nor a path",
                            check.name
                        ),
                        "write `https://host/path` or a path on the service such as `/stats`",
                    );
                }
                if http.field.trim().is_empty() {
                    report.error(
                        &at("field"),
                        format!("http check `{}` has an empty `field`", check.name),
                        "name the JSON field holding the value, e.g. `field = \"coverage.percent\"`",
                    );
                }
            }
            CheckSource::Bigquery(bigquery) if bigquery.maximum_bytes_billed == 0 => {
                report.error(
                    &at("maximum_bytes_billed"),
                    format!("check `{}`: `maximum_bytes_billed` is zero", check.name),
                    "allow the bytes the query reads, e.g. `10_000_000_000` (10 GB)",
                );
            }
            CheckSource::Prometheus(prometheus) => {
                if let Some(url) = &prometheus.url {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        report.error(
                            &at("url"),
                            format!(
                                "prometheus check `{}`: `url` `{url}` is not an http(s) URL",
                                check.name
                            ),
                            "write the server's base URL, e.g. `http://127.0.0.1:9090`",
                        );
                    }
                }
            }
            _ => {}
        }
        for (key, value) in [("timeout", check.timeout), ("window", check.window)] {
            if value.get().is_zero() {
                report.error(
                    &at(key),
                    format!("check `{}`: `{key}` is zero", check.name),
                    "give a positive duration such as `30s`",
                );
            }
        }
        if check.gates.is_empty() {
            report.error(
                &at("gates"),
                format!("check `{}` gates no phase", check.name),
                "list at least one of `validation`, `canary`, `monitor`, `health`",
            );
        }
        for (key, value) in [("warn", check.warn), ("critical", check.critical)] {
            let range = match check.unit {
                Unit::Percent => Some((0.0, 100.0)),
                Unit::Ratio => Some((0.0, 1.0)),
                Unit::Count => None,
            };
            if !value.is_finite() {
                report.error(
                    &at(key),
                    format!("`{key}` of check `{}` is not a finite number", check.name),
                    "write a number",
                );
            } else if let Some((low, high)) = range {
                if value < low || value > high {
                    report.error(
                        &at(key),
                        format!(
                            "`{key}` = {value} of check `{}` is out of range {low}..={high} for unit `{}`",
                            check.name,
                            match check.unit {
                                Unit::Percent => "percent",
                                _ => "ratio",
                            }
                        ),
                        "percentages are 0 to 100, ratios 0 to 1",
                    );
                }
            }
        }
        let ordered = if check.comparison.higher_is_better() {
            check.warn >= check.critical
        } else {
            check.warn <= check.critical
        };
        if !ordered {
            let (relation, example) = match check.comparison {
                Comparison::AtLeast | Comparison::Above => ("at least", "warn = 90, critical = 80"),
                _ => ("at most", "warn = 5, critical = 10"),
            };
            report.error(
                &at("warn"),
                format!(
                    "check `{}`: `warn` ({}) must be {relation} `critical` ({}) for `{}`",
                    check.name,
                    check.warn,
                    check.critical,
                    check.comparison.symbol()
                ),
                &format!(
                    "a value degrades through `warn` before it reaches `critical`, e.g. {example}"
                ),
            );
        }
    }
}

/// `[drift]`: a WARN threshold beyond the CRITICAL one would never warn; a zero commit count
/// would make every drift CRITICAL at once.
fn check_drift(config: &ServiceConfig, report: &mut Report<'_>) {
    let drift = &config.drift;
    if drift.warn_after > drift.critical_after {
        report.error(
            &[Part::Key("drift"), Part::Key("warn_after")],
            format!(
                "`drift.warn_after` ({}) is longer than `drift.critical_after` ({})",
                drift.warn_after, drift.critical_after
            ),
            "drift becomes a WARN first, then CRITICAL: make `warn_after` at most `critical_after`",
        );
    }
    if drift.critical_commits == Some(0) {
        report.error(
            &[Part::Key("drift"), Part::Key("critical_commits")],
            "`drift.critical_commits` is 0".into(),
            "the number of undeployed service-relevant commits that makes drift CRITICAL: at least 1 (or leave it unset)",
        );
    }
}

/// `[notifications]`: the webhook keys name environment variables. A URL written there instead
/// would be a secret committed to the repository; the message does not repeat the value.
fn check_notifications(config: &ServiceConfig, report: &mut Report<'_>) {
    let notifications = &config.notifications;
    for (key, value) in [
        ("slack_webhook_env", Some(&notifications.slack_webhook_env)),
        ("webhook_env", notifications.webhook_env.as_ref()),
    ] {
        let Some(value) = value else { continue };
        if !is_env_name(value) {
            report.error(
                &[Part::Key("notifications"), Part::Key(key)],
                format!("`notifications.{key}` is not an environment variable name"),
                "name the variable that holds the webhook URL (e.g. `DEPLOYER_WEBHOOK_URL`), never the URL itself: a URL in a service file is a secret in the repository",
            );
        }
    }
}

/// A Pub/Sub topic or subscription id as Pub/Sub accepts it: 3 to 255 characters, starting
/// with a letter, of letters, digits and `-._~%+`, not starting with `goog`.
pub fn is_pubsub_id(id: &str) -> bool {
    let length = id.chars().count();
    (3..=255).contains(&length)
        && id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !id.to_ascii_lowercase().starts_with("goog")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~%+".contains(c))
}

/// A Cloud Scheduler job id: 1 to 500 letters, digits, `-` and `_`.
fn is_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 500
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A unix-cron schedule as Cloud Scheduler takes it: five fields of digits, `*`, `/`, `,`, `-`
/// and month or weekday names.
fn is_cron(schedule: &str) -> bool {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    fields.len() == 5
        && fields.iter().all(|field| {
            field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "*/,-".contains(c))
        })
}

/// A URL path a push subscription or a job calls: absolute, no control characters, no spaces.
fn path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        Some("does not start with `/`")
    } else if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("contains spaces or control characters")
    } else {
        None
    }
}

/// `publishes`, `[[subscriptions]]` and `[[schedules]]`: ids Pub/Sub and Cloud Scheduler
/// accept, paths on the service's URL, and no name declared twice (two declarations of one
/// subscription would make the conformance check compare it with two intents).
fn check_wiring(config: &ServiceConfig, report: &mut Report<'_>) {
    let mut topics = std::collections::HashSet::new();
    for (index, topic) in config.publishes.iter().enumerate() {
        let at = [Part::Key("publishes"), Part::Index(index)];
        if !is_pubsub_id(topic) {
            report.error(
                &at,
                format!(
                    "`publishes`: `{}` is not a Pub/Sub topic id",
                    topic.escape_debug()
                ),
                PUBSUB_ID_HINT,
            );
        } else if !topics.insert(topic.as_str()) {
            report.error(
                &at,
                format!("`publishes` lists `{topic}` twice"),
                "list each topic once",
            );
        }
    }
    let mut names = std::collections::HashSet::new();
    for (index, subscription) in config.subscriptions.iter().enumerate() {
        let at = |key| {
            [
                Part::Key("subscriptions"),
                Part::Index(index),
                Part::Key(key),
            ]
        };
        if !is_pubsub_id(&subscription.name) {
            report.error(
                &at("name"),
                format!(
                    "subscription `{}` is not a Pub/Sub subscription id",
                    subscription.name.escape_debug()
                ),
                PUBSUB_ID_HINT,
            );
        } else if !names.insert(subscription.name.as_str()) {
            report.error(
                &at("name"),
                format!("duplicate subscription `{}`", subscription.name),
                "declare each subscription once",
            );
        }
        if !is_pubsub_id(&subscription.topic) {
            report.error(
                &at("topic"),
                format!(
                    "subscription `{}`: `{}` is not a Pub/Sub topic id",
                    subscription.name,
                    subscription.topic.escape_debug()
                ),
                PUBSUB_ID_HINT,
            );
        }
        if let Some(path) = &subscription.push_path {
            if let Some(problem) = path_problem(path) {
                report.error(
                    &at("push_path"),
                    format!(
                        "subscription `{}`: `push_path` `{}` {problem}",
                        subscription.name,
                        path.escape_debug()
                    ),
                    "write the path on the service's URL, e.g. `/pubsub`; omit `push_path` for a pull subscription",
                );
            }
        }
    }
    let mut jobs = std::collections::HashSet::new();
    for (index, schedule) in config.schedules.iter().enumerate() {
        let at = |key| [Part::Key("schedules"), Part::Index(index), Part::Key(key)];
        if !is_job_id(&schedule.name) {
            report.error(
                &at("name"),
                format!(
                    "`{}` is not a Cloud Scheduler job id",
                    schedule.name.escape_debug()
                ),
                "job ids are 1 to 500 letters, digits, `-` and `_`",
            );
        } else if !jobs.insert(schedule.name.as_str()) {
            report.error(
                &at("name"),
                format!("duplicate schedule `{}`", schedule.name),
                "declare each Cloud Scheduler job once",
            );
        }
        if !is_cron(&schedule.schedule) {
            report.error(
                &at("schedule"),
                format!(
                    "schedule `{}`: `{}` is not a unix-cron schedule",
                    schedule.name,
                    schedule.schedule.escape_debug()
                ),
                "write five fields: minute hour day-of-month month day-of-week, e.g. `0 */6 * * *`",
            );
        }
        if schedule.time_zone.trim().is_empty() || schedule.time_zone.contains(char::is_whitespace)
        {
            report.error(
                &at("time_zone"),
                format!(
                    "schedule `{}`: `time_zone` is not a time zone name",
                    schedule.name
                ),
                "write a tz database name such as `Etc/UTC` or `America/Los_Angeles`",
            );
        }
        if let Some(problem) = path_problem(&schedule.path) {
            report.error(
                &at("path"),
                format!(
                    "schedule `{}`: `path` `{}` {problem}",
                    schedule.name,
                    schedule.path.escape_debug()
                ),
                "write the path on the service's URL the job calls, e.g. `/start`",
            );
        }
    }
}

const PUBSUB_ID_HINT: &str =
    "ids are 3 to 255 letters, digits and `-._~%+`, starting with a letter (not `goog`)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_cloud_run_rules() {
        for good in ["hello", "prediction-worker", "a1"] {
            assert!(is_service_name(good), "{good}");
        }
        for bad in ["", "Hello", "1abc", "abc-", "a_b", &"a".repeat(50)] {
            assert!(!is_service_name(bad), "{bad}");
        }
    }

    #[test]
    fn wiring_ids_follow_pubsub_and_scheduler_rules() {
        for good in ["phase3-complete", "a.b_c~d%e+f", "Topic1"] {
            assert!(is_pubsub_id(good), "{good}");
        }
        for bad in [
            "",
            "ab",
            "1abc",
            "google-x",
            "a b c",
            "é-topic",
            &"a".repeat(256),
        ] {
            assert!(!is_pubsub_id(bad), "{bad}");
        }
        assert!(is_job_id("unified-health-check_1"));
        assert!(!is_job_id("a.b"));
        assert!(is_cron("0 */6 * * *"));
        assert!(is_cron("30 10 * JAN-MAR MON,FRI"));
        assert!(!is_cron("every 6 hours"));
        assert!(!is_cron("0 */6 * *"));
        assert_eq!(path_problem("/pubsub"), None);
        assert!(path_problem("pubsub").is_some());
        assert!(path_problem("/a\r\nHost: x").is_some());
    }
}
