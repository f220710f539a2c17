//! The build: the pre-build hook, then the Dockerfile build through the engine's `/build` API
//! with provenance stamped in.
//!
//! Provenance, so that an image can always be traced to its source: the OCI labels `revision`
//! (the full commit), `source` (the git remote) and `created`, plus `dev.deployer.service` and
//! `dev.deployer.version`; the build argument `BUILD_COMMIT` (the demo service reports it on
//! `/health`); the tag `REPOSITORY:SHORTSHA`, or `REPOSITORY:SHORTSHA-dirty-FINGERPRINT` when the
//! working tree has uncommitted changes, so a dirty build can never be mistaken for the commit.
//!
//! The engine's classic builder is used (the one every engine has; BuildKit needs a session
//! protocol the API client would have to speak). Its output is a stream of `Step N/M : ...`
//! headers and step output, which is turned into [`BuildStep`] events; when a step fails, the
//! error names that step and carries its output.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::{Path, PathBuf},
    process::Stdio,
};

use bollard::query_parameters::BuildImageOptions;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{
    context::BuildContext, BuildStep, Engine, ImageError, Reporter, LABEL_CREATED, LABEL_REVISION,
    LABEL_SOURCE,
};
use crate::{config::ServiceConfig, repo::SourceRevision};

/// Label holding the deployer service name.
pub const LABEL_SERVICE: &str = "dev.deployer.service";
/// Label holding the version of deployer that built the image.
pub const LABEL_VERSION: &str = "dev.deployer.version";
/// Label present (value `true`) on images built from a tree with uncommitted changes.
pub const LABEL_DIRTY: &str = "dev.deployer.dirty";

/// How many lines of hook or step output an error keeps.
const OUTPUT_LINES_KEPT: usize = 40;

/// Everything a build needs, resolved from a service file and the repository.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// The service's name.
    pub service: String,
    /// The repository root; the context, Dockerfile and hook are relative to it.
    pub repository_root: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// Build arguments from the service file (`BUILD_COMMIT` is added).
    pub args: BTreeMap<String, String>,
    /// The pre-build hook, run by `sh -c` from the repository root.
    pub pre_build: Option<String>,
    /// The image repository, without tag.
    pub repository: String,
    /// The source state being built.
    pub revision: SourceRevision,
    /// The git remote's URL, for the `source` label.
    pub source: Option<String>,
    /// The build time, for the `created` label.
    pub created: DateTime<Utc>,
}

/// A built image, tagged in the local engine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuiltImage {
    /// The engine's image id (`sha256:...`): the digest of the image configuration.
    pub id: String,
    /// `REPOSITORY:TAG`.
    pub reference: String,
    /// The repository, without tag.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The labels deployer set.
    pub labels: BTreeMap<String, String>,
}

impl BuildPlan {
    /// The plan for `config`, with paths resolved against `repository_root`.
    pub fn new(
        config: &ServiceConfig,
        repository_root: &Path,
        revision: SourceRevision,
        source: Option<String>,
        created: DateTime<Utc>,
    ) -> Self {
        Self {
            service: config.name.clone(),
            repository_root: repository_root.to_path_buf(),
            context: repository_root.join(&config.build.context),
            dockerfile: repository_root.join(&config.build.dockerfile),
            args: config.build.args.clone(),
            pre_build: config.build.pre_build.clone(),
            repository: config.image.repository.clone(),
            revision,
            source,
            created,
        }
    }

    /// The tag: the short commit, with `-dirty-FINGERPRINT` for uncommitted changes.
    pub fn tag(&self) -> String {
        match &self.revision.dirty {
            None => self.revision.short_commit().to_string(),
            Some(fingerprint) => format!("{}-dirty-{fingerprint}", self.revision.short_commit()),
        }
    }

    /// `REPOSITORY:TAG`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag())
    }

    /// The provenance labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (LABEL_REVISION.to_string(), self.revision.commit.clone()),
            (
                LABEL_CREATED.to_string(),
                self.created.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
            (LABEL_SERVICE.to_string(), self.service.clone()),
            (
                LABEL_VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ]);
        if let Some(source) = &self.source {
            labels.insert(LABEL_SOURCE.to_string(), source.clone());
        }
        if self.revision.dirty.is_some() {
            labels.insert(LABEL_DIRTY.to_string(), "true".to_string());
        }
        labels
    }

    /// The build arguments: the service file's, and `BUILD_COMMIT` (deployer's value wins, so
    /// the commit an image reports is always the one it was built from).
    pub fn build_args(&self) -> BTreeMap<String, String> {
        let mut args = self.args.clone();
        args.insert("BUILD_COMMIT".to_string(), self.revision.commit.clone());
        args
    }
}

/// Runs the pre-build hook (if any), then builds and tags the image.
pub async fn build(
    engine: &Engine,
    plan: &BuildPlan,
    reporter: &mut dyn Reporter,
) -> Result<BuiltImage, ImageError> {
    // Check the inputs before running a hook that may take minutes.
    if !plan.context.is_dir() {
        return Err(ImageError::ContextMissing(plan.context.clone()));
    }
    if let Some(command) = &plan.pre_build {
        run_hook(plan, command, reporter).await?;
    }
    let context = BuildContext::new(&plan.context, &plan.dockerfile)?;
    let reference = plan.reference();
    let labels = plan.labels();
    let options = BuildImageOptions {
        dockerfile: context.dockerfile_name().to_string(),
        t: Some(reference.clone()),
        rm: true,
        forcerm: true,
        buildargs: Some(plan.build_args().into_iter().collect::<HashMap<_, _>>()),
        labels: Some(labels.clone().into_iter().collect::<HashMap<_, _>>()),
        ..Default::default()
    };
    let (body, packing) = context.into_stream();
    let mut stream =
        engine
            .docker()
            .build_image(options, None, Some(bollard::body_try_stream(body)));
    let mut progress = StepTracker::default();
    let mut image_id = None;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream.as_deref() {
                    progress.feed(text, reporter);
                }
                if let Some(aux) = info.aux {
                    if let Some(id) = aux.id {
                        image_id = Some(id);
                    }
                }
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    progress.finish(reporter);
    drop(stream);
    let packed = packing.await.unwrap_or_else(|error| {
        Err(ImageError::ContextRead {
            path: plan.context.clone(),
            source: std::io::Error::other(error.to_string()),
        })
    });
    let summary = match (failure, packed) {
        // A file that could not be read explains a broken upload better than the engine's view
        // of it; but when the engine stopped reading because the build failed (a Dockerfile it
        // cannot parse), the packing error is only the echo of that failure.
        (Some(_), Err(ImageError::ContextRead { path, source }))
            if source.kind() != std::io::ErrorKind::BrokenPipe =>
        {
            return Err(ImageError::ContextRead { path, source })
        }
        (Some(error), _) => return Err(build_failure(error, progress)),
        (None, packed) => packed?,
    };
    reporter.context_sent(&summary);
    let id = image_id.ok_or(ImageError::NoImageId)?;
    Ok(BuiltImage {
        id,
        reference,
        repository: plan.repository.clone(),
        tag: plan.tag(),
        labels,
    })
}

fn build_failure(error: bollard::errors::Error, progress: StepTracker) -> ImageError {
    use bollard::errors::Error;
    match error {
        // A failed step, reported inside the stream.
        Error::DockerStreamError { error } => ImageError::BuildFailed {
            step: progress.current,
            message: error.trim().to_string(),
            output: progress.output.into_iter().collect(),
        },
        // The engine refused the build before any step (a Dockerfile it cannot parse, a
        // missing Dockerfile in the context).
        Error::DockerResponseServerError { message, .. } => ImageError::BuildFailed {
            step: progress.current,
            message: message.trim().to_string(),
            output: progress.output.into_iter().collect(),
        },
        other => ImageError::Engine {
            action: "build the image",
            source: other,
        },
    }
}

/// Turns the classic builder's text stream into step events and keeps the current step's
/// output for error messages.
#[derive(Default)]
struct StepTracker {
    partial: String,
    current: Option<BuildStep>,
    output: VecDeque<String>,
}

impl StepTracker {
    fn feed(&mut self, text: &str, reporter: &mut dyn Reporter) {
        self.partial.push_str(text);
        while let Some(newline) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=newline).collect();
            self.line(line.trim_end(), reporter);
        }
    }

    fn finish(&mut self, reporter: &mut dyn Reporter) {
        let rest = std::mem::take(&mut self.partial);
        if !rest.trim().is_empty() {
            self.line(rest.trim_end(), reporter);
        }
    }

    fn line(&mut self, line: &str, reporter: &mut dyn Reporter) {
        if let Some(step) = parse_step(line) {
            reporter.build_step(&step);
            self.current = Some(step);
            self.output.clear();
            return;
        }
        // The classic builder's bookkeeping (intermediate containers, layer ids, the final
        // "Successfully built/tagged") is not output of the step: leaving it out keeps failure
        // messages to what the step printed.
        let trimmed = line.trim_start();
        if trimmed.is_empty()
            || trimmed.starts_with("--->")
            || trimmed.starts_with("Removing intermediate container")
            || trimmed.starts_with("Successfully built")
            || trimmed.starts_with("Successfully tagged")
        {
            return;
        }
        reporter.build_output(line);
        if self.output.len() == OUTPUT_LINES_KEPT {
            self.output.pop_front();
        }
        self.output.push_back(line.to_string());
    }
}

/// `Step 2/5 : COPY . /app` → the step.
fn parse_step(line: &str) -> Option<BuildStep> {
    let rest = line.strip_prefix("Step ")?;
    let (numbers, instruction) = rest.split_once(" : ")?;
    let (number, total) = numbers.split_once('/')?;
    Some(BuildStep {
        number: number.parse().ok()?,
        total: total.parse().ok()?,
        instruction: instruction.trim().to_string(),
    })
}

/// Runs the pre-build hook from the repository root, streaming its output to the reporter and
/// failing with the output's tail when it exits non-zero.
async fn run_hook(
    plan: &BuildPlan,
    command: &str,
    reporter: &mut dyn Reporter,
) -> Result<(), ImageError> {
    reporter.hook_started(command);
    let spawn_error = |source| ImageError::HookSpawn {
        command: command.to_string(),
        source,
    };
    let root = std::fs::canonicalize(&plan.repository_root).map_err(spawn_error)?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(&root)
        .env("DEPLOYER_SERVICE", &plan.service)
        .env("DEPLOYER_COMMIT", &plan.revision.commit)
        .env("DEPLOYER_IMAGE", plan.reference())
        .env("DEPLOYER_REPOSITORY_ROOT", &root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let mut stdout = child.stdout.take().map(BufReader::new);
    let mut stderr = child.stderr.take().map(BufReader::new);
    let mut kept: VecDeque<String> = VecDeque::new();
    let mut keep = |line: Vec<u8>, reporter: &mut dyn Reporter| {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        reporter.hook_output(text);
        if kept.len() == OUTPUT_LINES_KEPT {
            kept.pop_front();
        }
        kept.push_back(text.to_string());
    };
    // Both pipes are read together: reading one to the end first could deadlock a hook that
    // fills the other pipe's buffer.
    while stdout.is_some() || stderr.is_some() {
        let mut out_line = Vec::new();
        let mut err_line = Vec::new();
        tokio::select! {
            read = read_line(&mut stdout, &mut out_line) => match read {
                Ok(0) | Err(_) => stdout = None,
                Ok(_) => keep(out_line, reporter),
            },
            read = read_line(&mut stderr, &mut err_line) => match read {
                Ok(0) | Err(_) => stderr = None,
                Ok(_) => keep(err_line, reporter),
            },
        }
    }
    let status = child.wait().await.map_err(spawn_error)?;
    if status.success() {
        return Ok(());
    }
    let status = match status.code() {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    };
    Err(ImageError::HookFailed {
        command: command.to_string(),
        status,
        output: kept.into_iter().collect(),
    })
}

/// One line from a pipe that is still open; never ready for a closed one.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut Option<R>,
    buffer: &mut Vec<u8>,
) -> std::io::Result<usize> {
    match reader {
        Some(reader) => reader.read_until(b'\n', buffer).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dirty: Option<&str>) -> BuildPlan {
        BuildPlan {
            service: "hello".into(),
            repository_root: ".".into(),
            context: ".".into(),
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::from([
                ("SERVICE_NAME".to_string(), "hello".to_string()),
                ("BUILD_COMMIT".to_string(), "user value".to_string()),
            ]),
            pre_build: None,
            repository: "127.0.0.1:5000/hello".into(),
            revision: SourceRevision {
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                dirty: dirty.map(str::to_string),
            },
            source: Some("https://example.com/repo.git".into()),
            created: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn provenance_of_a_clean_tree() {
        let plan = plan(None);
        assert_eq!(plan.reference(), "127.0.0.1:5000/hello:0123456789ab");
        let labels = plan.labels();
        assert_eq!(
            labels[LABEL_REVISION],
            "0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(labels[LABEL_CREATED], "2026-01-02T03:04:05Z");
        assert_eq!(labels[LABEL_SOURCE], "https://example.com/repo.git");
        assert_eq!(labels[LABEL_SERVICE], "hello");
        assert_eq!(labels[LABEL_VERSION], env!("CARGO_PKG_VERSION"));
        assert!(!labels.contains_key(LABEL_DIRTY));
        let args = plan.build_args();
        assert_eq!(args["BUILD_COMMIT"], plan.revision.commit);
        assert_eq!(args["SERVICE_NAME"], "hello");
    }

    #[test]
    fn dirty_tree_gets_a_distinct_tag() {
        let plan = plan(Some("deadbeef"));
        assert_eq!(plan.tag(), "0123456789ab-dirty-deadbeef");
        assert_eq!(plan.labels()[LABEL_DIRTY], "true");
    }

    #[test]
    fn step_lines_are_parsed() {
        assert_eq!(
            parse_step("Step 2/5 : COPY dist/hello /hello"),
            Some(BuildStep {
                number: 2,
                total: 5,
                instruction: "COPY dist/hello /hello".into()
            })
        );
        assert_eq!(parse_step(" ---> Running in 1234"), None);
        assert_eq!(parse_step("Step x/5 : RUN"), None);
    }

    #[test]
    fn tracker_keeps_output_of_the_current_step_across_chunks() {
        let mut tracker = StepTracker::default();
        let mut reporter = super::super::SilentReporter;
        tracker.feed(
            "Step 1/2 : FROM scratch\n ---> x\nStep 2/2 : RU",
            &mut reporter,
        );
        tracker.feed("N false\nsome output\nmore", &mut reporter);
        tracker.finish(&mut reporter);
        assert_eq!(tracker.current.unwrap().instruction, "RUN false");
        assert_eq!(tracker.output, ["some output", "more"]);
    }
}
