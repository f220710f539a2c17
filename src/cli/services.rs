//! `deployer services list | show | validate | schema`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::Context;
use crate::{
    config::{self, Diagnostic, LoadedService, ServiceConfig, Target},
    exit::ExitStatus,
    untrusted::escaped,
};

/// The `services` subcommands.
#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// List the defined services (target, canary steps, checks).
    List,
    /// Show one service's definition, resolved: every default filled in, overrides applied.
    Show(ShowArgs),
    /// Validate service files (all of `services/` by default); exit 2 on any error.
    Validate(ValidateArgs),
    /// Print the JSON Schema of service files, for editor completion and validation.
    Schema,
}

/// `services show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The service's name.
    pub name: String,
}

/// `services validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files to validate [default: every `*.toml` of the services directory].
    pub files: Vec<PathBuf>,
}

/// Runs a `services` subcommand.
pub fn run(context: &Context, command: ServicesCommand) -> anyhow::Result<ExitStatus> {
    match command {
        ServicesCommand::List => list(context),
        ServicesCommand::Show(args) => show(context, &args),
        ServicesCommand::Validate(args) => validate(context, &args),
        ServicesCommand::Schema => {
            context.output.json(&config::json_schema())?;
            Ok(ExitStatus::Success)
        }
    }
}

/// One row of `services list`.
#[derive(Debug, Serialize)]
struct ListRow<'a> {
    name: &'a str,
    target: String,
    steps: &'a [u8],
    checks: usize,
    file: String,
}

fn target_text(config: &ServiceConfig) -> String {
    match &config.target {
        Target::CloudRun { project, .. } => {
            let regions = config.regions();
            format!(
                "cloud-run {}/{}/{}",
                project.as_deref().unwrap_or("?"),
                if regions.is_empty() {
                    "?".to_string()
                } else {
                    regions.join(",")
                },
                config.platform_service_name()
            )
        }
        Target::Local { .. } if config.is_multi_region() => format!(
            "local {}/{}",
            config.regions().join(","),
            config.platform_service_name()
        ),
        Target::Local { .. } => format!("local/{}", config.platform_service_name()),
    }
}

fn list(context: &Context) -> anyhow::Result<ExitStatus> {
    let workspace = context.workspace()?;
    let (services, diagnostics) = workspace.load_all()?;
    let services: Vec<(PathBuf, ServiceConfig)> = services
        .into_iter()
        .map(|loaded| {
            (
                loaded.path,
                loaded.config.with_overrides(&context.overrides),
            )
        })
        .collect();
    let rows: Vec<ListRow<'_>> = services
        .iter()
        .map(|(path, config)| ListRow {
            name: &config.name,
            target: target_text(config),
            steps: &config.rollout.steps,
            checks: config.checks.len(),
            file: relative(&workspace.root, path),
        })
        .collect();
    if context.output.is_json() {
        context.output.json(&rows)?;
    } else if rows.is_empty() {
        context.output.message(format!(
            "no valid service files in `{}`",
            workspace.services_dir.display()
        ));
    } else {
        let name_width = rows
            .iter()
            .map(|row| row.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let target_width = rows
            .iter()
            .map(|row| row.target.len())
            .max()
            .unwrap_or(6)
            .max(6);
        context.output.data(format!(
            "{:name_width$}  {:target_width$}  {:16}  CHECKS",
            "NAME", "TARGET", "STEPS"
        ));
        for row in &rows {
            let steps = row
                .steps
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join("→");
            context.output.data(format!(
                "{:name_width$}  {:target_width$}  {:16}  {}",
                row.name, row.target, steps, row.checks
            ));
        }
    }
    if diagnostics.is_empty() {
        Ok(ExitStatus::Success)
    } else {
        context.output.diagnostics(&diagnostics);
        context.output.message(format!(
            "{} problem(s) in service files: `deployer services validate` shows them all",
            diagnostics.len()
        ));
        Ok(ExitStatus::Usage)
    }
}

fn show(context: &Context, args: &ShowArgs) -> anyhow::Result<ExitStatus> {
    let workspace = context.workspace()?;
    let loaded = workspace.find(&args.name)??;
    let config = loaded.config.with_overrides(&context.overrides);
    if context.output.is_json() {
        context.output.json(&config)?;
    } else {
        let text = toml::to_string_pretty(&config).context("cannot render the service as TOML")?;
        context.output.data(format!(
            "# {} (resolved: defaults filled in, overrides applied)\n{}\n\n# New revisions start from the stable revision's settings (the one serving), then\n# `[run]`{}, then `deploy --env`; settings not named here are kept from the stable revision.",
            relative(&workspace.root, &loaded.path),
            text.trim_end(),
            if config.run.is_empty() { " (not set)" } else { "" }
        ));
    }
    Ok(ExitStatus::Success)
}

/// The result of validating one file, for `--format json`.
#[derive(Debug, Serialize)]
struct FileReport {
    file: String,
    service: Option<String>,
    valid: bool,
    diagnostics: Vec<Diagnostic>,
}

fn validate(context: &Context, args: &ValidateArgs) -> anyhow::Result<ExitStatus> {
    let workspace = context.workspace()?;
    let files = if args.files.is_empty() {
        workspace.service_files()?
    } else {
        args.files.clone()
    };
    let (services, diagnostics) = workspace.load_files(&files);
    let reports: Vec<FileReport> = files
        .iter()
        .map(|file| {
            let service: Option<&LoadedService> =
                services.iter().find(|loaded| &loaded.path == file);
            let file_diagnostics: Vec<Diagnostic> = diagnostics
                .iter()
                .filter(|diagnostic| &diagnostic.file == file)
                .cloned()
                .collect();
            FileReport {
                file: relative(&workspace.root, file),
                service: service.map(|loaded| loaded.config.name.clone()),
                valid: service.is_some() && file_diagnostics.is_empty(),
                diagnostics: file_diagnostics,
            }
        })
        .collect();
    let invalid = reports.iter().filter(|report| !report.valid).count();
    if context.output.is_json() {
        context.output.json(&reports)?;
    } else {
        for report in &reports {
            if let (true, Some(name)) = (report.valid, &report.service) {
                context
                    .output
                    .data(format!("ok     {} ({name})", escaped(&report.file)));
            } else {
                context
                    .output
                    .data(format!("error  {}", escaped(&report.file)));
            }
        }
        context.output.diagnostics(&diagnostics);
        if files.is_empty() {
            context.output.message(format!(
                "no service files in `{}`",
                workspace.services_dir.display()
            ));
        } else if invalid == 0 {
            context
                .output
                .message(format!("{} service file(s) valid", files.len()));
        } else {
            context.output.message(format!(
                "{} error(s) in {invalid} of {} service file(s)",
                diagnostics.len(),
                files.len()
            ));
        }
    }
    Ok(if invalid == 0 && !files.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Usage
    })
}

/// `path` relative to the repository root when it is inside it, for short, stable output.
fn relative(root: &std::path::Path, path: &std::path::Path) -> String {
    let absolute_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let absolute = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    absolute
        .strip_prefix(&absolute_root)
        .map(|inside| inside.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}
