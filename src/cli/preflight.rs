//! `deployer preflight SERVICE`: the 8-step checklist, streamed as it runs, then the go / no-go.
//!
//! Text goes to stdout one step at a time (`[1/8] Uncommitted changes ....... PASS  reason`), the
//! test command's output to stderr as it comes; `--format json` prints one document at the end
//! for CI. Exit 0 = safe to deploy, 1 = not (see [`crate::preflight::decide`] for who may accept
//! a warning).

use std::fmt::Write as _;

use clap::Args;
use serde::Serialize;

use super::{
    github_actions::{self, Annotation},
    prompt, target, Context,
};
use crate::{
    config::ServiceConfig,
    exit::ExitStatus,
    pipeline::ChecklistReporter,
    preflight::{
        self, Acceptance, Check, Decision, DeployedSource, PreflightOptions, PreflightReport,
        Reporter, Resolution, Step, StepDecision, Summary, STEP_COUNT,
    },
    repo::short,
};

/// `preflight`.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// The service's name.
    pub service: String,
    #[command(flatten)]
    pub flags: PreflightFlags,
}

/// The checklist's flags, shared by `preflight` and `deploy`.
#[derive(Debug, Clone, Args)]
pub struct PreflightFlags {
    /// Do not fetch the remote branch: compare with it as last fetched (offline).
    #[arg(long)]
    pub no_fetch: bool,
    /// Do not run the service's test command (recorded as a warning).
    #[arg(long)]
    pub skip_tests: bool,
    /// Accept warnings without asking (not schema changes: see `--accept-schema-changes`).
    #[arg(long)]
    pub accept_warnings: bool,
    /// Accept the schema-change warning (a rollback across a schema change may be unsafe).
    #[arg(long)]
    pub accept_schema_changes: bool,
}

/// Column where the status starts: `[1/8] Uncommitted changes ....... PASS`.
const STATUS_COLUMN: usize = 34;

/// Detail lines shown per step in text (JSON has them all).
const SHOWN_DETAILS: usize = 12;

/// Runs `preflight`.
pub fn run(context: &Context, args: &PreflightArgs) -> anyhow::Result<ExitStatus> {
    let workspace = context.workspace()?;
    let loaded = workspace.find(&args.service)??;
    let config = loaded.config.with_overrides(&context.overrides);
    let id = target::service_id(&config)?;
    let safe = super::block_on(async {
        match target::connect(&config, context.endpoint.as_deref()).await {
            Ok(platform) => {
                let source = DeployedSource::Platform {
                    platform: &platform,
                    id,
                };
                checklist(context, &config, &workspace.root, &args.flags, source).await
            }
            Err(error) => {
                let source = DeployedSource::Unavailable(format!("{error:#}"));
                checklist(context, &config, &workspace.root, &args.flags, source).await
            }
        }
    })?;
    Ok(if safe {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// Runs the checklist, prints it (text as steps finish, or one JSON document on stdout), asks
/// about warnings as the rules say, and returns whether it is safe to deploy. A deploy runs its
/// checklist in the pipeline (`pipeline::RepositoryPreparation`), drawn by the same
/// [`ChecklistDrawing`] without the JSON document: its stdout carries only the deploy report.
async fn checklist(
    context: &Context,
    config: &ServiceConfig,
    root: &std::path::Path,
    flags: &PreflightFlags,
    source: DeployedSource<'_>,
) -> anyhow::Result<bool> {
    let drawing = ChecklistDrawing::new(context);
    drawing.started(&config.name);
    let report = preflight::run(config, root, source, &flags.options(context), &drawing).await;
    drawing.finished(&report);
    let prompter = prompt::prompter(context);
    let decision = preflight::decide(&report, flags.acceptance(context), prompter.as_ref());
    if !drawing.text {
        context.output.json(&JsonReport {
            report: &report,
            summary: report.summary(),
            safe_to_deploy: decision.safe_to_deploy,
            decisions: &decision.steps,
        })?;
    }
    drawing.decided(&report, &decision);
    Ok(decision.safe_to_deploy)
}

impl PreflightFlags {
    /// The checklist's options from these flags (the repository-wide steps shared by every
    /// checklist of this run).
    pub(super) fn options(&self, context: &Context) -> PreflightOptions {
        PreflightOptions {
            fetch: !self.no_fetch,
            skip_tests: self.skip_tests,
            repository_steps: Some(std::sync::Arc::clone(&context.repository_steps)),
            ..PreflightOptions::default()
        }
    }

    /// Who may accept a warning. `--yes` answers other commands' confirmations; accepting a
    /// preflight warning takes a human's answer or a flag that names what is accepted, so
    /// `--yes` runs ask nothing here.
    pub(super) fn acceptance(&self, context: &Context) -> Acceptance {
        Acceptance {
            interactive: context.interactive && !context.assume_yes,
            accept_warnings: self.accept_warnings,
            accept_schema_changes: self.accept_schema_changes,
        }
    }
}

/// In GitHub Actions: one annotation per WARN (`::warning`) and FAIL (`::error`) with how it was
/// decided, an `::error` with the verdict when it is not safe to deploy (a warning nobody
/// accepted fails the job too, and the page should say why), and the steps as a table.
fn github_actions_output(
    service: &str,
    report: &PreflightReport,
    decision: &Decision,
) -> (Vec<Annotation>, String) {
    let resolution_of = |step: u8| {
        decision
            .steps
            .iter()
            .find(|decision| decision.step == step)
            .and_then(resolution_text)
    };
    let mut annotations = Vec::new();
    let mut rows = Vec::new();
    for check in &report.checks {
        let resolution = resolution_of(check.step);
        let mut message = check.reason.clone();
        if let Some(hint) = &check.hint {
            let _ = write!(message, " — hint: {hint}");
        }
        if let Some(resolution) = &resolution {
            let _ = write!(message, " ({resolution})");
        }
        let title = format!(
            "Preflight: {service} / [{}/{STEP_COUNT}] {}",
            check.step, check.name
        );
        match check.status {
            preflight::Status::Pass => {}
            preflight::Status::Warn => annotations.push(Annotation::warning(title, message)),
            preflight::Status::Fail => annotations.push(Annotation::error(title, message)),
        }
        rows.push([
            format!("{}/{STEP_COUNT}", check.step),
            check.name.to_string(),
            check.status.label().to_string(),
            check.reason.clone(),
            resolution.unwrap_or_default(),
        ]);
    }
    let verdict = verdict_text(decision);
    if !decision.safe_to_deploy {
        annotations.push(Annotation::error(
            format!("Preflight: {service}"),
            verdict.clone(),
        ));
    }
    let mut summary = format!(
        "## Preflight `{}`: {}\n\n",
        github_actions::cell(service),
        github_actions::cell(&verdict)
    );
    summary.push_str(&github_actions::table(
        &["step", "check", "status", "reason", "decision"],
        rows,
    ));
    (annotations, summary)
}

/// The JSON document of `--format json`.
#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a PreflightReport,
    summary: Summary,
    safe_to_deploy: bool,
    decisions: &'a [StepDecision],
}

/// Draws a checklist: its title, steps as they finish, the summary and the verdict (text), test
/// output as it comes (stderr, both formats), and in GitHub Actions its annotations and step
/// summary. `preflight` and `deploy` both draw through it.
pub(super) struct ChecklistDrawing<'a> {
    context: &'a Context,
    text: bool,
}

impl<'a> ChecklistDrawing<'a> {
    pub(super) fn new(context: &'a Context) -> Self {
        Self {
            context,
            text: !context.output.is_json(),
        }
    }
}

impl Reporter for ChecklistDrawing<'_> {
    fn step_started(&self, _step: Step) {}

    fn step_finished(&self, check: &Check) {
        if self.text {
            self.context.output.data(check_text(check));
        }
    }

    fn test_output(&self, line: &str) {
        self.context.output.message(format!("      | {line}"));
    }
}

impl ChecklistReporter for ChecklistDrawing<'_> {
    fn started(&self, service: &str) {
        if self.text {
            self.context
                .output
                .data(format!("Preflight checklist for `{service}`"));
        }
    }

    fn finished(&self, report: &PreflightReport) {
        if self.text {
            self.context.output.data(summary_text(report));
        }
    }

    fn decided(&self, report: &PreflightReport, decision: &Decision) {
        if self.text {
            self.context.output.data(verdict_text(decision));
        }
        if github_actions::enabled() {
            let (annotations, summary) = github_actions_output(&report.service, report, decision);
            github_actions::publish(self.context, &annotations, &summary);
        }
    }
}

/// One step: the status line, its hint, its details.
pub fn check_text(check: &Check) -> String {
    let label = format!("[{}/{STEP_COUNT}] {} ", check.step, check.name);
    let dots = ".".repeat(STATUS_COLUMN.saturating_sub(label.chars().count()).max(2));
    let mut text = format!("{label}{dots} {}  {}", check.status.label(), check.reason);
    if let Some(hint) = &check.hint {
        let _ = write!(text, "\n      hint: {hint}");
    }
    for line in check.details.iter().take(SHOWN_DETAILS) {
        let _ = write!(text, "\n      {line}");
    }
    if check.details.len() > SHOWN_DETAILS {
        let _ = write!(
            text,
            "\n      ... {} more lines (`--format json` shows them all)",
            check.details.len() - SHOWN_DETAILS
        );
    }
    text
}

/// The summary after the steps: counts, HEAD and what is deployed.
pub fn summary_text(report: &PreflightReport) -> String {
    let summary = report.summary();
    let mut text = format!(
        "\nSummary: {} passed, {} {}, {} failed",
        summary.passed,
        summary.warnings,
        if summary.warnings == 1 {
            "warning"
        } else {
            "warnings"
        },
        summary.failed
    );
    if let Some(head) = &report.head {
        let _ = write!(text, "\nHEAD: {}", short(head.commit()));
        if let Some(branch) = head.branch() {
            let _ = write!(text, " on `{branch}`");
        }
    }
    if let Some(deployed) = &report.deployed {
        let _ = write!(text, "\nDeployed: `{}`", deployed.revision);
        if let Some(commit) = &deployed.commit {
            let _ = write!(text, " built from {}", short(commit));
        }
    }
    text
}

/// How a step was decided (`accepted by --accept-warnings`), when there is something to say.
fn resolution_text(decision: &StepDecision) -> Option<String> {
    Some(match &decision.resolution {
        Resolution::Passed | Resolution::NotAsked => return None,
        Resolution::AcceptedByFlag { flag } => format!("accepted by {flag}"),
        Resolution::Confirmed => "confirmed".into(),
        Resolution::Declined => "declined".into(),
        Resolution::NotAccepted { needs } => format!("needs {needs} (or an interactive yes)"),
        Resolution::Failed => "failed".into(),
    })
}

/// The go / no-go line.
pub fn verdict_text(decision: &Decision) -> String {
    let describe = |decision: &StepDecision| -> Option<String> {
        Some(format!(
            "step {} {}",
            decision.step,
            resolution_text(decision)?
        ))
    };
    let notes: Vec<String> = decision.steps.iter().filter_map(describe).collect();
    if decision.safe_to_deploy {
        if notes.is_empty() {
            "Safe to deploy.".into()
        } else {
            format!("Safe to deploy ({}).", notes.join("; "))
        }
    } else {
        let blocking: Vec<String> = decision.blocking().filter_map(describe).collect();
        format!("Not safe to deploy: {}.", blocking.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        interaction::Unattended,
        platform::{
            cloud_run::revision_labels, memory::MemoryPlatform, Platform, RevisionSpec, ServiceId,
        },
        preflight::SilentReporter,
        testing::TestRepo,
    };

    /// A repository with a deployed commit, three commits to ship (one a schema change), a
    /// local remote in sync, a passing test command, and a healthy service on 127.0.0.1.
    async fn scenario() -> (PreflightReport, TestRepo) {
        let repo = TestRepo::new();
        let deployed = repo.commit_file("src/main.rs", "fn main() {}", "Session 76 fix");
        repo.commit_file_as("src/lib.rs", "", "Add vegas line coverage check", "Ada");
        repo.commit_file_as(
            "schemas/predictions.json",
            "{}",
            "Add column `edge`",
            "Grace",
        );
        repo.commit_file_as("src/lib.rs", "//", "Tidy", "Ada");
        let _remote = repo.add_bare_remote("origin");
        repo.push("origin", "main");
        let platform = MemoryPlatform::new();
        let id = ServiceId {
            project: "local".into(),
            region: "local".into(),
            name: "svc".into(),
        };
        platform
            .create(
                &id,
                &RevisionSpec {
                    name: "svc-00001".into(),
                    image: "127.0.0.1:5000/svc@sha256:1".into(),
                    labels: revision_labels(&deployed),
                    base: None,
                    settings: Default::default(),
                },
            )
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/health", axum::routing::get(|| async { "{}" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        platform.set_uri(&id, &format!("http://{address}"));
        let config = crate::config::parse(
            std::path::Path::new("services/svc.toml"),
            "name = \"svc\"\nrunbook = \"r.md\"\n[target]\nkind = \"local\"\n[image]\nrepository = \"r/svc\"\n\
             [preflight]\ntest_command = \"echo tests ok\"\nschema_paths = [\"schemas/**\"]\n",
        )
        .unwrap();
        let options = PreflightOptions {
            fetch: true,
            ..PreflightOptions::default()
        };
        let report = preflight::run(
            &config,
            repo.path(),
            DeployedSource::Platform {
                platform: &platform,
                id,
            },
            &options,
            &SilentReporter,
        )
        .await;
        (report, repo)
    }

    fn settings() -> insta::Settings {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"\b[0-9a-f]{40}\b", "[commit]");
        settings.add_filter(r"\b[0-9a-f]{7}\b", "[short]");
        settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
        settings.add_filter(r"in \d+ ms", "in [ms] ms");
        settings.add_filter(r"in \d+\.\ds", "in [seconds]s");
        settings.add_filter(r#""time": \d+"#, r#""time": [time]"#);
        settings
    }

    fn text(report: &PreflightReport, decision: &Decision) -> String {
        let mut text = String::from("Preflight checklist for `svc`\n");
        for check in &report.checks {
            text.push_str(&check_text(check));
            text.push('\n');
        }
        text.push_str(&summary_text(report));
        text.push('\n');
        text.push_str(&verdict_text(decision));
        text
    }

    #[tokio::test]
    async fn text_report_in_ci_without_flags() {
        let (report, _repo) = scenario().await;
        let decision = preflight::decide(&report, Acceptance::default(), &Unattended::default());
        assert!(!decision.safe_to_deploy);
        settings().bind(|| insta::assert_snapshot!(text(&report, &decision)));
    }

    #[tokio::test]
    async fn json_report_with_both_flags() {
        let (report, _repo) = scenario().await;
        let acceptance = Acceptance {
            interactive: false,
            accept_warnings: true,
            accept_schema_changes: true,
        };
        let decision = preflight::decide(&report, acceptance, &Unattended::default());
        assert!(decision.safe_to_deploy);
        let document = serde_json::to_value(JsonReport {
            report: &report,
            summary: report.summary(),
            safe_to_deploy: decision.safe_to_deploy,
            decisions: &decision.steps,
        })
        .unwrap();
        settings().bind(|| insta::assert_json_snapshot!(document));
    }

    #[test]
    fn long_details_are_cut_with_a_pointer_to_json() {
        let check = Check {
            step: 4,
            name: "Commits to ship",
            status: preflight::Status::Pass,
            reason: "600 commits ship".into(),
            hint: None,
            details: (0..600).map(|index| format!("commit {index}")).collect(),
            needs_explicit_confirmation: false,
        };
        let text = check_text(&check);
        assert_eq!(text.lines().count(), 1 + SHOWN_DETAILS + 1);
        assert!(text.starts_with("[4/8] Commits to ship ............ PASS  600 commits ship"));
        assert!(text.ends_with("... 588 more lines (`--format json` shows them all)"));
    }
}
