//! The 8-step preflight checklist: what stops a dirty tree, a wrong branch, an unpushed commit,
//! an unreviewed schema change or a failing test from reaching production.
//!
//! [`run`] gathers the facts (git through [`crate::repo`], the deployed state through the
//! [`Platform`] boundary, the service's tests, its `/health`) and returns a [`PreflightReport`]:
//! one [`Check`] per step, each `PASS`, `WARN` or `FAIL` with a one-line reason and a hint.
//! Nothing here prints; progress (a finished step, a line of test output) goes through
//! [`Reporter`]. [`decide`] then turns the report into a go / no-go, asking through a
//! [`Prompter`](crate::interaction::Prompter) where a human may accept a warning. `deploy` runs
//! the same two functions as its first phase.
//!
//! A step that cannot run (no remote, platform unreachable, no test command) is a `WARN` that
//! says why — never a silent `PASS`: a checklist that passes because it checked nothing is worse
//! than no checklist.

mod decision;
mod deployment;
mod shipping;
mod tests_step;
mod working_tree;

use std::{path::Path, time::Duration};

use serde::Serialize;

use crate::{
    config::ServiceConfig,
    platform::{Platform, ServiceId},
    repo::{CommitRange, Head, Repository},
};

pub use decision::{decide, Acceptance, Decision, Resolution, StepDecision};
pub use deployment::{DeployedRevision, COMMIT_LABEL};

/// How many steps the checklist has (`[3/8]`).
pub const STEP_COUNT: u8 = 8;

/// How many commits of the range to ship are listed (all are counted).
pub const LISTED_COMMITS: usize = 1000;

/// The outcome of one step. Ordered: `Pass < Warn < Fail`, so the worst is the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Nothing to worry about.
    Pass,
    /// Something a human should look at (or a step that could not run); deploying needs an
    /// acceptance.
    Warn,
    /// Deploying is not safe; nothing accepts it.
    Fail,
}

impl Status {
    /// `PASS`, `WARN` or `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// 1 to 8.
    pub step: u8,
    /// The step's name (`Uncommitted changes`).
    pub name: &'static str,
    /// PASS / WARN / FAIL.
    pub status: Status,
    /// One line saying why.
    pub reason: String,
    /// What to do about it, when there is something to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Supporting lines (files, commits, traffic split).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// True for a warning that `--accept-warnings` does not accept (schema changes): it needs a
    /// human's yes or its own flag, because it can make a rollback unsafe.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub needs_explicit_confirmation: bool,
}

impl Check {
    fn new(step: Step, status: Status, reason: impl Into<String>) -> Self {
        Self {
            step: step as u8,
            name: step.name(),
            status,
            reason: reason.into(),
            hint: None,
            details: Vec::new(),
            needs_explicit_confirmation: false,
        }
    }

    fn pass(step: Step, reason: impl Into<String>) -> Self {
        Self::new(step, Status::Pass, reason)
    }

    fn warn(step: Step, reason: impl Into<String>) -> Self {
        Self::new(step, Status::Warn, reason)
    }

    fn fail(step: Step, reason: impl Into<String>) -> Self {
        Self::new(step, Status::Fail, reason)
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    fn details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
}

/// The eight steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// 1.
    UncommittedChanges = 1,
    /// 2.
    Branch = 2,
    /// 3.
    RemoteSync = 3,
    /// 4.
    Commits = 4,
    /// 5.
    SchemaChanges = 5,
    /// 6.
    Tests = 6,
    /// 7.
    DeploymentStatus = 7,
    /// 8.
    ServiceHealth = 8,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 8] = [
        Step::UncommittedChanges,
        Step::Branch,
        Step::RemoteSync,
        Step::Commits,
        Step::SchemaChanges,
        Step::Tests,
        Step::DeploymentStatus,
        Step::ServiceHealth,
    ];

    /// The name shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Step::UncommittedChanges => "Uncommitted changes",
            Step::Branch => "Branch",
            Step::RemoteSync => "Sync with remote",
            Step::Commits => "Commits to ship",
            Step::SchemaChanges => "Schema changes",
            Step::Tests => "Tests",
            Step::DeploymentStatus => "Deployment status",
            Step::ServiceHealth => "Service health",
        }
    }
}

/// Counts of a report's statuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Steps that passed.
    pub passed: usize,
    /// Steps that warned.
    pub warnings: usize,
    /// Steps that failed.
    pub failed: usize,
}

/// Everything the checklist found.
#[derive(Debug, Clone, Serialize)]
pub struct PreflightReport {
    /// The service.
    pub service: String,
    /// HEAD, when the repository could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
    /// The revision serving traffic now and the commit it was built from, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed: Option<DeployedRevision>,
    /// The commits that will ship (deployed commit → HEAD), when both are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits: Option<CommitRange>,
    /// One check per step, in order.
    pub checks: Vec<Check>,
}

impl PreflightReport {
    /// Counts of PASS / WARN / FAIL.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for check in &self.checks {
            match check.status {
                Status::Pass => summary.passed += 1,
                Status::Warn => summary.warnings += 1,
                Status::Fail => summary.failed += 1,
            }
        }
        summary
    }

    /// The worst status of all steps.
    pub fn worst(&self) -> Status {
        self.checks
            .iter()
            .map(|check| check.status)
            .max()
            .unwrap_or(Status::Pass)
    }

    /// The check of one step.
    pub fn check(&self, step: Step) -> Option<&Check> {
        self.checks.iter().find(|check| check.step == step as u8)
    }
}

/// Where the deployed state comes from.
pub enum DeployedSource<'a> {
    /// A connected platform and the service's id on it.
    Platform {
        /// The platform.
        platform: &'a dyn Platform,
        /// The service.
        id: ServiceId,
    },
    /// The platform could not be reached (the reason is reported by steps 4, 5, 7 and 8).
    Unavailable(String),
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct PreflightOptions {
    /// Fetch the remote branch before comparing (`--no-fetch` turns it off).
    pub fetch: bool,
    /// Time limit of the fetch.
    pub fetch_time_limit: Duration,
    /// Skip the test command (`--skip-tests`); the skip is recorded as a warning.
    pub skip_tests: bool,
    /// Time limit of each read of the deployed state.
    pub platform_time_limit: Duration,
    /// Steps 1–3 (working tree, branch, remote) as already checked by this process for the
    /// same repository, branch and remote: a deploy of several services (or regions) checks
    /// them, and fetches, once.
    pub repository_steps: Option<std::sync::Arc<RepositorySteps>>,
}

/// The results of steps 1–3, by repository, branch, remote and fetch, shared by the runs of
/// one process (see [`PreflightOptions::repository_steps`]).
#[derive(Debug, Default)]
pub struct RepositorySteps {
    checked: std::sync::Mutex<std::collections::HashMap<String, Vec<Check>>>,
}

impl RepositorySteps {
    /// The checks recorded under `key` (and `true`), or `check()`'s, recorded (and `false`).
    /// Runs that share a key wait for each other, so the remote is fetched once.
    fn get_or_check(&self, key: String, check: impl FnOnce() -> Vec<Check>) -> (Vec<Check>, bool) {
        let mut checked = self
            .checked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = checked.get(&key) {
            let found = found
                .iter()
                .cloned()
                .map(|mut check| {
                    check
                        .details
                        .push("checked once for this deploy (repository-wide)".into());
                    check
                })
                .collect();
            return (found, true);
        }
        let checks = check();
        checked.insert(key, checks.clone());
        (checks, false)
    }
}

impl Default for PreflightOptions {
    fn default() -> Self {
        Self {
            fetch: true,
            fetch_time_limit: Duration::from_secs(30),
            skip_tests: false,
            platform_time_limit: Duration::from_secs(10),
            repository_steps: None,
        }
    }
}

/// Progress of a run, for the CLI to show as it happens.
pub trait Reporter: Send + Sync {
    /// A step starts.
    fn step_started(&self, step: Step);
    /// A step finished with this result.
    fn step_finished(&self, check: &Check);
    /// One line of the test command's output (stdout or stderr), as it comes.
    fn test_output(&self, line: &str);
}

/// A reporter that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilentReporter;

impl Reporter for SilentReporter {
    fn step_started(&self, _step: Step) {}
    fn step_finished(&self, _check: &Check) {}
    fn test_output(&self, _line: &str) {}
}

/// Runs the eight steps for `config`, in order, from the repository at `root`.
///
/// Never fails: whatever goes wrong becomes the reason of a `WARN` or `FAIL` of the step it
/// concerns, so the user always sees the whole checklist.
pub async fn run(
    config: &ServiceConfig,
    root: &Path,
    deployed: DeployedSource<'_>,
    options: &PreflightOptions,
    reporter: &dyn Reporter,
) -> PreflightReport {
    let mut report = PreflightReport {
        service: config.name.clone(),
        head: None,
        deployed: None,
        commits: None,
        checks: Vec::new(),
    };
    let record = |report: &mut PreflightReport, check: Check| {
        reporter.step_finished(&check);
        report.checks.push(check);
    };
    let preflight = &config.preflight;

    // Steps 1–3: the working tree and the branch, from git alone.
    let repo = Repository::discover(root);
    let head = repo.as_ref().ok().map(|repo| repo.head());
    let check_repository = || {
        let mut checks = Vec::with_capacity(3);
        let mut step = |step: Step, check: &dyn Fn() -> Check| {
            reporter.step_started(step);
            let check = check();
            reporter.step_finished(&check);
            checks.push(check);
        };
        step(Step::UncommittedChanges, &|| {
            working_tree::uncommitted(&repo)
        });
        step(Step::Branch, &|| {
            working_tree::branch(&repo, head.as_ref(), &preflight.branch, &preflight.remote)
        });
        step(Step::RemoteSync, &|| {
            working_tree::remote_sync(&repo, head.as_ref(), preflight, options)
        });
        checks
    };
    let (repository_checks, shared) = match &options.repository_steps {
        Some(steps) => steps.get_or_check(
            format!(
                "{}\n{}\n{}\n{}",
                root.display(),
                preflight.branch,
                preflight.remote,
                options.fetch
            ),
            check_repository,
        ),
        None => (check_repository(), false),
    };
    for check in repository_checks {
        if shared {
            if let Some(step) = Step::ALL.get(usize::from(check.step).wrapping_sub(1)) {
                reporter.step_started(*step);
            }
            reporter.step_finished(&check);
        }
        report.checks.push(check);
    }
    let head = head.and_then(Result::ok);
    report.head = head.clone();

    // Steps 4–5: what ships, against what the platform serves.
    reporter.step_started(Step::Commits);
    let state = deployment::read(deployed, options.platform_time_limit).await;
    report.deployed = state.deployed_revision();
    let shipping = shipping::commits(&repo, head.as_ref(), &state);
    report.commits = shipping.range.clone();
    record(&mut report, shipping.check.clone());
    reporter.step_started(Step::SchemaChanges);
    record(
        &mut report,
        shipping::schema_changes(&repo, &preflight.schema_paths, &shipping),
    );

    // Step 6: the service's tests.
    reporter.step_started(Step::Tests);
    let tests = tests_step::run(config, root, options.skip_tests, reporter).await;
    record(&mut report, tests);

    // Steps 7–8: the service as it runs now.
    reporter.step_started(Step::DeploymentStatus);
    record(&mut report, deployment::status(&state, chrono::Utc::now()));
    reporter.step_started(Step::ServiceHealth);
    record(
        &mut report,
        deployment::health(&state, &config.health).await,
    );
    report
}

/// An error and its causes on one line. libgit2's messages are used without their
/// `; class=...; code=...` suffix, which means nothing to a user.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let text = match error.downcast_ref::<git2::Error>() {
            Some(git) => git.message().to_string(),
            None => error.to_string(),
        };
        if !parts.iter().any(|part: &String| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::{test_support::*, *};
    use crate::testing::TestRepo;

    #[tokio::test]
    async fn every_step_reports_start_and_result_in_order() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        let platform = crate::platform::memory::MemoryPlatform::new();
        let reporter = Collecting::default();
        let report = run(
            &service(""),
            repo.path(),
            DeployedSource::Platform {
                platform: &platform,
                id: id(),
            },
            &options_offline(),
            &reporter,
        )
        .await;
        let steps: Vec<u8> = report.checks.iter().map(|check| check.step).collect();
        assert_eq!(steps, [1, 2, 3, 4, 5, 6, 7, 8]);
        let events = reporter.events();
        assert_eq!(events.len(), 16);
        assert_eq!(events[0], "started 1");
        assert_eq!(events[1], "finished 1 PASS");
        assert_eq!(events[15], "finished 8 PASS");
        assert_eq!(report.worst(), Status::Warn, "no remote, tests skipped");
        assert_eq!(
            report.summary(),
            Summary {
                passed: 6,
                warnings: 2,
                failed: 0
            }
        );
    }

    #[tokio::test]
    async fn a_deploy_of_several_services_checks_the_repository_once() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        let platform = crate::platform::memory::MemoryPlatform::new();
        let options = PreflightOptions {
            repository_steps: Some(std::sync::Arc::default()),
            ..options_offline()
        };
        let first = run_with(&repo, &platform, &options).await;
        // The working tree changes between the two services: the second one still reports
        // what the first one found, because steps 1–3 ran once for the deploy.
        std::fs::write(repo.path().join("b.txt"), "uncommitted").unwrap();
        let reporter = Collecting::default();
        let second = run(
            &service(""),
            repo.path(),
            DeployedSource::Platform {
                platform: &platform,
                id: id(),
            },
            &options,
            &reporter,
        )
        .await;
        for (before, after) in first.checks[..3].iter().zip(&second.checks[..3]) {
            assert_eq!((before.step, before.status), (after.step, after.status));
            assert_eq!(
                after.details.last().map(String::as_str),
                Some("checked once for this deploy (repository-wide)")
            );
        }
        assert_eq!(second.checks[0].status, Status::Pass);
        // Every step is still shown, in order.
        let events = reporter.events();
        assert_eq!(events.len(), 16);
        assert_eq!(events[0], "started 1");
        assert_eq!(events[5], "finished 3 WARN");
        // Without the shared steps, the second run sees the change.
        let alone = run_with(&repo, &platform, &options_offline()).await;
        assert_ne!(alone.checks[0].status, Status::Pass);
    }
}
