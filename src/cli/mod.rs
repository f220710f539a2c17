//! The command line: clap types, global conventions, and one file per command.
//!
//! This is the only module that prints, draws progress or asks questions. Data goes to stdout
//! (text, or JSON with `--format json`); messages, diagnostics and logs go to stderr, so
//! `deployer ... --format json | jq` always works.

pub mod args;
mod build;
mod check;
mod completions;
mod deploy;
mod doctor;
mod drift;
mod emulator;
mod fleet;
mod github_actions;
mod graph;
mod health;
mod held;
mod history;
mod output;
mod preflight;
pub mod prompt;
mod rollback;
mod rollout_progress;
mod services;
mod status;
pub mod target;

use std::{io::IsTerminal, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    config::{Diagnostics, TargetOverrides, Workspace, WorkspaceError},
    exit::ExitStatus,
};

pub use output::Output;

/// Guarded rollouts for Google Cloud Run.
///
/// deployer replaces a bash deploy script: preflight checklist, image build by digest, new
/// revisions that get no traffic until their identity is verified, canary steps judged by a
/// sequential statistical test, automatic rollback, drift detection and a unified health check.
#[derive(Debug, Parser)]
#[command(
    name = "deployer",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// GCP project of Cloud Run targets (overrides the service file).
    #[arg(long, global = true, env = "DEPLOYER_PROJECT", value_name = "PROJECT")]
    pub project: Option<String>,
    /// Cloud Run region of Cloud Run targets (overrides the service file's `region`; for a
    /// service with `target.regions`, picks one of them).
    #[arg(long, global = true, env = "DEPLOYER_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// Output format: `text` for people, `json` for machines (data on stdout).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Answer yes to every confirmation.
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,
    /// Never ask questions (automatic when stdin is not a terminal or `CI` is set).
    #[arg(long, global = true)]
    pub non_interactive: bool,
    /// Directory of service definitions [default: the nearest `services/` upwards].
    #[arg(long, global = true, env = "DEPLOYER_SERVICES_DIR", value_name = "DIR")]
    pub services_dir: Option<PathBuf>,
    /// Cloud Run Admin API endpoint, e.g. a local emulator's `http://127.0.0.1:8090`
    /// [default: Google for `cloud-run` targets, the local emulator for `local` ones].
    #[arg(
        long,
        global = true,
        env = "DEPLOYER_CLOUD_RUN_ENDPOINT",
        value_name = "URL",
        value_parser = args::endpoint_url
    )]
    pub endpoint: Option<String>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); `RUST_LOG` also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text (for `graph`, the Mermaid diagram: `--format mermaid` says so).
    #[value(alias = "mermaid")]
    Text,
    /// JSON on stdout.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a service's image through the Docker Engine API (`--push`: push it, print its digest).
    Build(build::BuildArgs),
    /// List, show, validate service definitions (`services/*.toml`), or print their schema.
    #[command(subcommand)]
    Services(services::ServicesCommand),
    /// Deploy a new revision as a guarded rollout.
    ///
    /// The new revision starts with 0% of traffic and a `canary` tag; it gets traffic only after
    /// its `/health` reports the expected service and commit and its image digest matches. Then
    /// canary steps, each judged by a sequential test on error rates, promotion, and the
    /// post-deploy monitor. Any failure puts 100% back on the previous revision.
    Deploy(deploy::DeployArgs),
    /// Show a service: revisions, traffic split, deployed commits, rollout in progress, lock.
    Status(status::StatusArgs),
    /// Emergency rollback: 100% of traffic to the previous healthy revision, in one write.
    ///
    /// No build, no git, no metrics: works when everything else is down. Non-interactive runs
    /// proceed without asking; interactive runs confirm unless `--yes`.
    Rollback(rollback::RollbackArgs),
    /// Promote a held rollout: its canary takes 100%, then the post-deploy monitor (a failure
    /// rolls back, as in a deploy). Records who and why.
    ///
    /// Only for a rollout that ended held (exit 6 of `deploy`); refused otherwise (exit 2).
    /// Exit codes as `deploy`: 0 promoted, 4 rolled back by the monitor, 5 rollback failed.
    Promote(held::PromoteArgs),
    /// Abort a held rollout: 100% back on its stable revision, the journal closed as aborted,
    /// the canary recorded bad. Records who and why.
    ///
    /// Only for a rollout that ended held; refused otherwise (exit 2). Exit 0 when done,
    /// 5 when the write failed.
    Abort(held::AbortArgs),
    /// The release history read from the platform: every rollout, emergency rollback,
    /// promotion and abort, newest first (when, who, commit, revision, outcome, duration, why).
    ///
    /// The same from any machine: it is kept on the service itself. `--stats` computes the
    /// delivery metrics (deployment frequency, change failure rate, time to restore, lead time)
    /// per service and for all of them, over `--since` (default 30 days).
    History(history::HistoryArgs),
    /// Break a service's rollout lock (after a crashed deploy), showing who held it.
    Unlock(rollback::UnlockArgs),
    /// Run a service's checks once: a dry run of what the rollout's gates would see.
    ///
    /// Exit 0 = all pass, 1 = the worst is a warning (or an error), 2 = the worst is critical,
    /// 3 = no check could be evaluated.
    Check(check::CheckArgs),
    /// Run the 8-step preflight checklist: is it safe to deploy this service now?
    ///
    /// Exit 0 = safe to deploy, 1 = not. A WARN needs an interactive yes or
    /// `--accept-warnings` (`--accept-schema-changes` for schema changes); a FAIL always stops.
    Preflight(preflight::PreflightArgs),
    /// Is this machine ready to deploy? One line per check (Docker Engine, git and `main`,
    /// Google credentials, and per service: project and region, the image repository, the
    /// Google APIs it uses enabled, Cloud Run permissions, `actAs` on its runtime service
    /// account, its Secret Manager references, request metrics, session affinity, notification
    /// settings), PASS/WARN/FAIL, each failure with the command that fixes it.
    ///
    /// Exit 0 when every check passes, 1 otherwise.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Man(completions::ManArgs),
    /// Run the local Cloud Run emulator (foreground, or `--detach`), or show/stop a running one.
    Emulator(emulator::EmulatorArgs),
    /// Deployed commit vs `main`: commits behind, those touching the service, severity.
    ///
    /// Every service by default (read concurrently). Exit 0 = all OK, 1 = worst WARN,
    /// 2 = worst CRITICAL. `--github-issue` keeps one GitHub issue per drifting service.
    Drift(drift::DriftArgs),
    /// The unified health check: every `health` check of every service and their drift, a
    /// score, a dashboard; exit 0 PASS, 1 WARNING, 2 CRITICAL.
    Health(health::HealthArgs),
    /// The declared event wiring (Pub/Sub topics and subscriptions, Cloud Scheduler jobs) as a
    /// Mermaid flowchart; `--check` compares it with the live project.
    ///
    /// Exit with `--check`: 0 = the live project matches, 1 = warnings or something could not be
    /// read, 2 = a CRITICAL difference (an undeclared subscription on a consumed topic, a push
    /// to the wrong URL, a declared subscription missing).
    Graph(graph::GraphArgs),
}

/// What every command gets: the global conventions, resolved once.
pub struct Context {
    /// Where output goes and how it looks.
    pub output: Output,
    /// True when questions may be asked.
    pub interactive: bool,
    /// `--yes`.
    pub assume_yes: bool,
    /// Project/region overrides.
    pub overrides: TargetOverrides,
    /// `--endpoint`.
    pub endpoint: Option<String>,
    services_dir: Option<PathBuf>,
    /// Preflight steps 1–3, checked once per process: a deploy of several services or regions
    /// checks the working tree, the branch and the remote (and fetches) once.
    pub repository_steps: std::sync::Arc<crate::preflight::RepositorySteps>,
}

impl Context {
    fn new(global: &GlobalArgs) -> Self {
        // Non-interactive whenever nobody can answer: stdin is not a terminal (a pipe, cron) or
        // a CI system says so. A CI job must never hang on a prompt.
        let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty() && value != "false");
        let interactive = !global.non_interactive && !ci && std::io::stdin().is_terminal();
        let from_env = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        };
        Self {
            output: Output::new(global.format),
            interactive,
            assume_yes: global.yes,
            overrides: TargetOverrides {
                project: global
                    .project
                    .clone()
                    .or_else(|| from_env(&["CLOUDSDK_CORE_PROJECT", "GOOGLE_CLOUD_PROJECT"])),
                region: global
                    .region
                    .clone()
                    .or_else(|| from_env(&["CLOUDSDK_RUN_REGION"])),
            },
            endpoint: global.endpoint.clone(),
            services_dir: global.services_dir.clone(),
            repository_steps: std::sync::Arc::default(),
        }
    }

    /// One service by name, with `--project`/`--region` applied, its workspace and its
    /// platform id: what every command acting on a service starts with.
    pub fn service(
        &self,
        name: &str,
    ) -> anyhow::Result<(
        Workspace,
        crate::config::ServiceConfig,
        crate::platform::ServiceId,
    )> {
        let (workspace, mut regions) = self.service_regions(name)?;
        // A command of one region acts on a multi-region service's `--region`, else on its
        // canary region; `service_regions` never answers an empty list.
        if regions.is_empty() {
            return Err(UsageError {
                message: format!("service `{name}` has no region"),
            }
            .into());
        }
        let (config, id) = regions.swap_remove(0);
        Ok((workspace, config, id))
    }

    /// One service by name in each region a command acts on, the canary region first: every
    /// region of a multi-region service, or the one `--region` picks (exit 2 when it is not
    /// one of them); a one-region service's one region.
    pub fn service_regions(
        &self,
        name: &str,
    ) -> anyhow::Result<(
        Workspace,
        Vec<(crate::config::ServiceConfig, crate::platform::ServiceId)>,
    )> {
        let workspace = self.workspace()?;
        let config = workspace
            .find(name)??
            .config
            .with_overrides(&self.overrides);
        let configs = config
            .region_configs(self.overrides.region.as_deref())
            .map_err(|message| UsageError { message })?;
        let mut regions = Vec::with_capacity(configs.len());
        for config in configs {
            let id = target::service_id(&config)?;
            regions.push((config, id));
        }
        Ok((workspace, regions))
    }

    /// The workspace of service definitions.
    pub fn workspace(&self) -> Result<Workspace, WorkspaceError> {
        let current = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Workspace::discover(self.services_dir.as_deref(), &current)
    }
}

/// Runs a parsed command line and returns its exit status (errors are printed here).
pub fn run(cli: Cli) -> ExitStatus {
    init_logging(cli.global.verbose);
    crate::install_crypto_provider();
    let context = Context::new(&cli.global);
    // Endpoints read from the environment outside clap are refused as clap refuses flags:
    // exit 2 before anything is read or written.
    if let Err(message) = args::check_endpoint_variables(std::env::vars()) {
        let error = anyhow::Error::new(UsageError { message });
        context.output.error(&error);
        return ExitStatus::Usage;
    }
    let name = cli.command.name();
    let result = match cli.command {
        Command::Build(args) => build::run(&context, &args),
        Command::Services(command) => services::run(&context, command),
        Command::Deploy(args) => deploy::deploy(&context, &args),
        Command::Status(args) => status::status(&context, &args),
        Command::Rollback(args) => rollback::rollback(&context, &args),
        Command::Unlock(args) => rollback::unlock(&context, &args),
        Command::History(args) => history::history(&context, &args),
        Command::Promote(args) => held::promote(&context, &args),
        Command::Abort(args) => held::abort(&context, &args),
        Command::Preflight(args) => preflight::run(&context, &args),
        Command::Check(args) => check::run(&context, &args),
        Command::Completions(args) => completions::completions(&args),
        Command::Man(args) => completions::man(&args),
        Command::Emulator(args) => emulator::run(&context, args),
        Command::Drift(args) => drift::run(&context, &args),
        Command::Health(args) => health::run(&context, &args),
        Command::Graph(args) => graph::run(&context, &args),
        Command::Doctor(args) => doctor::run(&context, &args),
    };
    match result {
        Ok(status) => status,
        Err(error) => {
            let status = classify(&error);
            context.output.error(&error);
            // A command that failed outright (a deploy that did not start, an unreachable
            // platform, a usage error) is an error on the run's page too.
            let annotation =
                github_actions::Annotation::error(format!("deployer {name}"), format!("{error:#}"));
            github_actions::publish(&context, &[annotation], "");
            status
        }
    }
}

impl Command {
    /// The command's name on the command line.
    fn name(&self) -> &'static str {
        match self {
            Command::Build(_) => "build",
            Command::Services(_) => "services",
            Command::Deploy(_) => "deploy",
            Command::Status(_) => "status",
            Command::Rollback(_) => "rollback",
            Command::Unlock(_) => "unlock",
            Command::History(_) => "history",
            Command::Promote(_) => "promote",
            Command::Abort(_) => "abort",
            Command::Check(_) => "check",
            Command::Preflight(_) => "preflight",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
            Command::Emulator(_) => "emulator",
            Command::Drift(_) => "drift",
            Command::Health(_) => "health",
            Command::Graph(_) => "graph",
            Command::Doctor(_) => "doctor",
        }
    }
}

/// Maps an error to its exit status: problems with what the user wrote (flags, service files)
/// are usage errors (2); everything else is a failure (1).
fn classify(error: &anyhow::Error) -> ExitStatus {
    // `RollbackFailed` is attached as context: anyhow finds a context type by downcasting the
    // error itself, not by walking `chain()` (where it is hidden inside anyhow's wrapper).
    if error.downcast_ref::<rollback::RollbackFailed>().is_some() {
        return ExitStatus::RollbackFailed;
    }
    // A deploy refused by another rollout's lock changed nothing: exit 3, as documented.
    use crate::rollout::{lock::LockError, ports::DeployError};
    let locked = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<DeployError>(),
            Some(DeployError::Lock(LockError::Held { .. }))
        ) || matches!(
            cause.downcast_ref::<LockError>(),
            Some(LockError::Held { .. })
        )
    });
    if locked {
        return ExitStatus::StoppedBeforeTraffic;
    }
    let is_usage = error.chain().any(|cause| {
        cause.is::<Diagnostics>() || cause.is::<WorkspaceError>() || cause.is::<UsageError>()
    });
    if is_usage {
        ExitStatus::Usage
    } else {
        ExitStatus::Failure
    }
}

/// An invalid command line found after parsing (a flag combination clap cannot express).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    /// What is wrong.
    pub message: String,
}

/// The cause of `error` as results show it: `no Google credentials` when that is what the chain
/// holds (the full message, with the fix, is said once per run by [`say_credentials_once`]),
/// else the whole chain.
pub(crate) fn short_cause(error: &anyhow::Error) -> String {
    use crate::{credentials::CredentialsError, platform::cloud_run::ConnectError};
    let missing = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<CredentialsError>(),
            Some(CredentialsError::Missing { .. })
        ) || matches!(
            cause.downcast_ref::<ConnectError>(),
            Some(ConnectError::Credentials(CredentialsError::Missing { .. }))
        )
    });
    if missing {
        crate::checks::NO_CREDENTIALS.to_string()
    } else {
        format!("{error:#}")
    }
}

/// When any of `causes` is "no Google credentials", says once (stderr) what is missing and
/// how to fix it: every Google provider of every check reports the same cause, and six copies
/// of one sentence used to bury it.
pub(crate) fn say_credentials_once<'a>(
    context: &Context,
    causes: impl IntoIterator<Item = &'a str>,
) {
    let mentioned = causes
        .into_iter()
        .any(|cause| cause.contains(crate::checks::NO_CREDENTIALS));
    if let (true, Err(error)) = (mentioned, crate::credentials::find()) {
        context
            .output
            .message(format!("{}: {error}", context.output.error_label()));
    }
}

/// Runs a future to completion on a single-threaded runtime (fast to start: an emergency
/// rollback should not pay for a thread pool).
pub fn block_on<T>(
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// Logs on stderr. At the default verbosity (no `-v`, no `RUST_LOG`) there are no log lines,
/// only the lines domain code means for people — retries, takeovers, warnings it cannot return
/// — which it emits under the target [`PROGRESS_TARGET`] and which are shown as plain lines
/// (`retrying in 5.0 s (3 of 10): …`), without timestamp or level. `-v`/`-vv`/`-vvv` or
/// `RUST_LOG` give the full logs, those lines included.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let from_environment = std::env::var_os("RUST_LOG").is_some_and(|value| !value.is_empty());
    if verbose == 0 && !from_environment {
        let _ = tracing_subscriber::fmt()
            // The emulator is a server: its own failures stay visible when it runs in front.
            .with_env_filter(EnvFilter::new(format!(
                "{PROGRESS_TARGET}=info,deployer::emulator=warn"
            )))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .try_init();
        return;
    }
    let default = match verbose {
        0 | 1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = if from_environment {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
    } else {
        EnvFilter::new(default)
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(output::color_enabled_on_stderr())
        .with_target(false)
        .try_init();
}

/// The tracing target of lines meant for people at every verbosity (see [`init_logging`]).
pub const PROGRESS_TARGET: &str = "deployer::progress";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The names annotations use are the command line's.
    #[test]
    fn command_names_are_the_subcommands() {
        for name in [
            "build",
            "deploy",
            "status",
            "rollback",
            "unlock",
            "check",
            "preflight",
            "drift",
        ] {
            let cli = Cli::try_parse_from(["deployer", name, "svc"]).unwrap();
            assert_eq!(cli.command.name(), name);
        }
        let cli = Cli::try_parse_from(["deployer", "services", "list"]).unwrap();
        assert_eq!(cli.command.name(), "services");
        let cli = Cli::try_parse_from(["deployer", "health"]).unwrap();
        assert_eq!(cli.command.name(), "health");
    }

    /// A failed `rollback` exited 1, never the documented 5: `classify` looked for the context
    /// type in `chain()`, where anyhow hides it.
    #[test]
    fn a_failed_rollback_exits_5() {
        let error = anyhow::Error::new(crate::platform::PlatformError::Unavailable("503".into()))
            .context("rollback of `hello` failed: a human must act")
            .context(rollback::RollbackFailed);
        assert_eq!(classify(&error), ExitStatus::RollbackFailed);
    }

    /// A deploy refused by the lock exited 1, not the documented 3.
    #[test]
    fn a_deploy_refused_by_the_lock_exits_3() {
        use crate::rollout::{lock::LockError, ports::DeployError};
        let held = DeployError::Lock(LockError::Held {
            service: "hello".into(),
            holder: "alice on laptop".into(),
        });
        let error = anyhow::Error::new(held).context("deploy of `hello` did not start");
        assert_eq!(classify(&error), ExitStatus::StoppedBeforeTraffic);
        let platform = DeployError::Lock(LockError::Platform(
            crate::platform::PlatformError::Unavailable("503".into()),
        ));
        let error = anyhow::Error::new(platform).context("deploy of `hello` did not start");
        assert_eq!(
            classify(&error),
            ExitStatus::Failure,
            "a platform failure is not a lock"
        );
    }
}
