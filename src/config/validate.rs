//! Semantic validation of a parsed service file: everything types cannot say.
//!
//! Each rule exists because breaking it would make a rollout unsafe or meaningless: canary steps
//! that do not end at 100 never promote; a warning threshold beyond the critical one never warns;
//! a missing runbook leaves on-call without instructions at 3 a.m.

use std::path::Path;

use super::{
    locate::{span_of, Part},
    CheckSource, Comparison, Diagnostic, Diagnostics, ServiceConfig, Target, Unit,
};

/// Collects every semantic problem of `config` (read from `file`, whose text is `source`);
/// paths in the file are resolved against the repository `root`.
pub fn validate(config: &ServiceConfig, file: &Path, source: &str, root: &Path) -> Diagnostics {
    let mut report = Report {
        file,
        source,
        diagnostics: Diagnostics::default(),
    };
    check_names(config, &mut report);
    check_files(config, root, &mut report);
    check_rollout(config, &mut report);
    check_checks(config, &mut report);
    report.diagnostics
}

struct Report<'a> {
    file: &'a Path,
    source: &'a str,
    diagnostics: Diagnostics,
}

impl Report<'_> {
    fn error(&mut self, path: &[Part<'_>], message: String, hint: &str) {
        let span = span_of(self.source, path);
        self.diagnostics
            .push(Diagnostic::at(self.file, self.source, span, message).with_hint(hint));
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
        Target::CloudRun { service, .. } | Target::Local { service } => service,
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
        || repository.chars().any(char::is_whitespace)
        || repository.chars().any(|c| c.is_ascii_uppercase())
    {
        report.error(
            &[Part::Key("image"), Part::Key("repository")],
            format!("invalid image repository `{repository}`"),
            "write the repository without tag or digest, in lowercase, e.g. `127.0.0.1:5000/hello`; deployer adds the tag and deploys by digest",
        );
    }
    if !config.health.path.starts_with('/') {
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
    }
}

/// Sections every runbook has (matched case-insensitively in its headings), so that on-call
/// finds the same five parts in every service's runbook.
pub const RUNBOOK_SECTIONS: [&str; 5] =
    ["pre-flight", "deploy", "verify", "troubleshoot", "rollback"];

fn check_files(config: &ServiceConfig, root: &Path, report: &mut Report<'_>) {
    match std::fs::read_to_string(root.join(&config.runbook)) {
        Err(_) => report.error(
            &[Part::Key("runbook")],
            format!("runbook `{}` not found", config.runbook),
            "every service needs a runbook: create it (paths are relative to the repository root)",
        ),
        Ok(text) => {
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
    let context = root.join(&config.build.context);
    if !context.is_dir() {
        report.error(
            &[Part::Key("build"), Part::Key("context")],
            format!(
                "build context `{}` is not a directory",
                config.build.context
            ),
            "paths are relative to the repository root",
        );
    }
    if !root.join(&config.build.dockerfile).is_file() {
        report.error(
            &[Part::Key("build"), Part::Key("dockerfile")],
            format!("Dockerfile `{}` not found", config.build.dockerfile),
            "paths are relative to the repository root",
        );
    }
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
        ("hold", rollout.hold),
        ("interval", rollout.interval),
        ("monitor_duration", rollout.monitor_duration),
        ("monitor_interval", rollout.monitor_interval),
    ];
    for (key, value) in durations {
        if value.get().is_zero() && key != "monitor_duration" {
            report.error(
                &[Part::Key("rollout"), Part::Key(key)],
                format!("`rollout.{key}` is zero"),
                "give a positive duration such as `30s`",
            );
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
    for (index, check) in config.checks.iter().enumerate() {
        let at = |key| [Part::Key("checks"), Part::Index(index), Part::Key(key)];
        if check.name.trim().is_empty() {
            report.error(&at("name"), "check name is empty".into(), "name the check");
        }
        if config.checks[..index]
            .iter()
            .any(|other| other.name == check.name)
        {
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
        let unknown = crate::checks::unknown_placeholders(query);
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
                    crate::checks::PLACEHOLDERS
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
}
