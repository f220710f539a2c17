//! `deployer build SERVICE [--push]`: run the pre-build hook, build the service's image through
//! the Docker Engine API with provenance labels, and optionally push it and print its digest.
//!
//! stdout carries only the result: the tagged reference after a build, the pinned
//! `REPOSITORY@sha256:...` after a push (what deploys use), or a JSON document with
//! `--format json`. Progress goes to stderr: bars and spinners on a terminal, plain lines
//! otherwise (CI logs).

use std::{collections::HashMap, io::IsTerminal, time::Duration};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::{
    config::ServiceConfig,
    exit::ExitStatus,
    image::{
        self, BuildStep, BuiltImage, ContextSummary, Delivery, LayerProgress, PushedImage, Reporter,
    },
};

use super::Context;

/// Arguments of `deployer build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The service to build (its `services/*.toml` name).
    pub service: String,
    /// Push the image to the service's `image.repository` and print its digest.
    #[arg(long)]
    pub push: bool,
}

/// The result, for `--format json`.
#[derive(Debug, Serialize)]
struct BuildReport<'a> {
    service: &'a str,
    commit: &'a str,
    dirty: bool,
    image: &'a BuiltImage,
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<&'a PushedImage>,
}

/// Runs `deployer build`.
pub fn run(context: &Context, args: &BuildArgs) -> anyhow::Result<ExitStatus> {
    let workspace = context.workspace()?;
    let loaded = workspace.find(&args.service)??;
    let config = loaded.config.with_overrides(&context.overrides);
    let Delivery {
        plan,
        built,
        pushed,
    } = super::block_on(async {
        Ok(build_image(context, &config, &workspace.root, args.push).await?)
    })?;
    if context.output.is_json() {
        context.output.json(&BuildReport {
            service: &plan.service,
            commit: &plan.revision.commit,
            dirty: plan.revision.dirty.is_some(),
            image: &built,
            push: pushed.as_ref(),
        })?;
    } else {
        match &pushed {
            Some(pushed) => context.output.data(&pushed.pinned),
            None => context.output.data(&built.reference),
        }
    }
    Ok(ExitStatus::Success)
}

/// Builds a service's image (and pushes it when `push`, `image::build_service`), with progress
/// on stderr. A deploy builds in the pipeline, drawn by the same [`CliReporter`].
async fn build_image(
    context: &Context,
    config: &ServiceConfig,
    root: &std::path::Path,
    push: bool,
) -> Result<Delivery, image::DeliveryError> {
    image::build_service(config, root, push, &mut CliReporter::new(context)).await
}

/// Shows progress on stderr: indicatif on a terminal, one line per event otherwise.
pub(super) struct CliReporter {
    fancy: bool,
    multi: MultiProgress,
    current: Option<ProgressBar>,
    layers: HashMap<String, ProgressBar>,
    /// Last status printed per layer in plain mode (progress ticks are not repeated).
    layer_status: HashMap<String, String>,
}

impl CliReporter {
    pub(super) fn new(context: &Context) -> Self {
        let fancy = std::io::stderr().is_terminal() && !context.output.is_json();
        let multi = MultiProgress::with_draw_target(if fancy {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Self {
            fancy,
            multi,
            current: None,
            layers: HashMap::new(),
            layer_status: HashMap::new(),
        }
    }

    fn note(&self, text: impl AsRef<str>) {
        if self.fancy {
            let _ = self.multi.println(text.as_ref());
        } else {
            eprintln!("{}", text.as_ref());
        }
    }

    fn spinner(&mut self, message: String) {
        if let Some(previous) = self.current.take() {
            previous.finish_and_clear();
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}{wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar.set_message(message);
        self.current = Some(bar);
    }
}

impl Reporter for CliReporter {
    fn uncommitted_changes(&mut self, tag: &str, fingerprint: &str) {
        self.note(format!(
            "the working tree has uncommitted changes: tagging `{tag}` (changes fingerprint {fingerprint})"
        ));
    }

    fn built(&mut self, built: &BuiltImage) {
        if let Some(bar) = self.current.take() {
            bar.finish_and_clear();
        }
        self.note(format!("built {} ({})", built.reference, built.id));
    }

    fn push_started(&mut self, built: &BuiltImage, with_credentials: bool) {
        let how = if with_credentials {
            "with stored credentials"
        } else {
            "without credentials"
        };
        self.note(format!("pushing {} {how}", built.reference));
    }

    fn pushed(&mut self, pushed: &PushedImage) {
        for (_, bar) in self.layers.drain() {
            bar.finish_and_clear();
        }
        self.note(format!(
            "pushed {} digest {}",
            pushed.reference, pushed.digest
        ));
    }

    fn finished(&mut self) {
        if let Some(bar) = self.current.take() {
            bar.finish_and_clear();
        }
        for (_, bar) in self.layers.drain() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }

    fn hook_started(&mut self, command: &str) {
        if self.fancy {
            self.spinner(format!("pre-build hook `{command}`"));
        } else {
            eprintln!("running pre-build hook `{command}`");
        }
    }

    fn hook_output(&mut self, line: &str) {
        if self.fancy {
            if let Some(bar) = &self.current {
                bar.set_prefix("pre-build hook: ");
                bar.set_message(line.to_string());
            }
        } else {
            eprintln!("  {line}");
        }
    }

    fn context_sent(&mut self, summary: &ContextSummary) {
        self.note(format!(
            "build context: {} files, {} directories, {:.1} MB",
            summary.files,
            summary.directories,
            summary.bytes as f64 / 1_000_000.0
        ));
    }

    fn build_step(&mut self, step: &BuildStep) {
        let text = format!("Step {}/{} : {}", step.number, step.total, step.instruction);
        if self.fancy {
            if let Some(bar) = self.current.take() {
                bar.finish_and_clear();
            }
            let _ = self.multi.println(&text);
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {spinner} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            self.current = Some(bar);
        } else {
            eprintln!("{text}");
        }
    }

    fn build_output(&mut self, line: &str) {
        if self.fancy {
            if let Some(bar) = &self.current {
                bar.set_message(line.to_string());
            }
        } else {
            eprintln!("  {line}");
        }
    }

    fn push_layer(&mut self, progress: &LayerProgress) {
        if !self.fancy {
            if self.layer_status.get(&progress.layer) != Some(&progress.status) {
                self.layer_status
                    .insert(progress.layer.clone(), progress.status.clone());
                eprintln!("  layer {}: {}", progress.layer, progress.status);
            }
            return;
        }
        let bar = self
            .layers
            .entry(progress.layer.clone())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template(
                        "  {prefix} {msg:<22} [{bar:30}] {bytes}/{total_bytes}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(progress.layer.clone());
                bar
            });
        bar.set_message(progress.status.clone());
        if let Some((current, total)) = progress.progress {
            bar.set_length(total);
            bar.set_position(current);
        }
        if progress.status == "Pushed" || progress.status == "Layer already exists" {
            let length = bar.length().unwrap_or(0);
            bar.set_position(length);
        }
    }
}
