//! Service definitions: `services/*.toml` — the model, loading, validation and locations.
//!
//! Loading is two passes. Serde reads the file into [`ServiceConfig`] (types, unknown keys,
//! defaults); then [`validate`](validate::validate) checks what types cannot say (steps
//! ascending, thresholds in range, files that must exist). Both passes report
//! [`Diagnostic`]s that name the file, line and column, so a user can jump straight to the
//! mistake; the loader never panics, whatever the input (a property test holds it to that).

pub mod dependencies;
mod diagnostic;
mod duration;
mod files;
mod locate;
mod model;
pub mod placeholders;
mod validate;

use std::path::{Path, PathBuf};

use crate::untrusted::escaped;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use duration::{DurationError, DurationErrorKind, DurationRange, HumanDuration};
pub use model::{
    BigquerySource, BuildConfig, CheckConfig, CheckSource, CloudLoggingSource,
    CloudMonitoringSource, Comparison, DriftConfig, Gate, HealthConfig, HttpSource, ImageConfig,
    InconclusivePolicy, NoDataPolicy, NotificationConfig, PreflightConfig, PrometheusSource,
    Provider, RequestMetricsSource, RolloutConfig, RolloutEvent, RunConfig, ScheduleConfig,
    ServiceConfig, SubscriptionConfig, Target, Unit, LOCAL_REGION,
};

/// Where service definitions live: the repository root and its `services/` directory.
///
/// Runbooks, Dockerfiles and build contexts in service files are relative to `root`.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The repository root (the directory holding `services/`).
    pub root: PathBuf,
    /// The directory of service definitions.
    pub services_dir: PathBuf,
}

/// One service file that loaded and validated.
#[derive(Debug, Clone)]
pub struct LoadedService {
    /// The file it came from.
    pub path: PathBuf,
    /// Its content, with defaults filled in.
    pub config: ServiceConfig,
}

/// Errors finding the workspace or a service (file-level problems are [`Diagnostics`]).
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// No `services/` directory above the current directory.
    #[error("no `services/` directory found in `{start}` or any parent directory")]
    NotFound { start: PathBuf },
    /// The services directory given by flag or environment does not exist.
    #[error("services directory `{}` does not exist", escaped_path(.0))]
    MissingDir(PathBuf),
    /// The services directory given by flag or environment is something else (a file, a symlink
    /// loop).
    #[error("services directory `{}` {problem}", escaped_path(.path))]
    NotADirectory {
        path: PathBuf,
        /// What it is instead, e.g. "is a regular file, not a directory".
        problem: String,
    },
    /// The services directory could not be read.
    #[error("cannot read services directory `{}`", escaped_path(.path))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No service of that name (the name is shown escaped: it is what the user typed).
    #[error("no service named `{}` in `{}`", escaped(.name), escaped_path(.dir))]
    UnknownService {
        name: String,
        dir: PathBuf,
        suggestion: Option<String>,
    },
}

impl Workspace {
    /// Finds the workspace: an explicit services directory (flag or `DEPLOYER_SERVICES_DIR`),
    /// else the nearest `services/` directory in `start` or its parents.
    pub fn discover(explicit: Option<&Path>, start: &Path) -> Result<Self, WorkspaceError> {
        if let Some(dir) = explicit {
            let problem = match std::fs::metadata(dir).map_err(files::FileProblem::from) {
                Ok(metadata) if metadata.is_dir() => None,
                Ok(metadata) => Some(match files::kind_of(metadata.file_type()) {
                    Some(kind) => format!("is {kind}, not a directory"),
                    None => "is a regular file, not a directory".to_string(),
                }),
                Err(files::FileProblem::Missing) => {
                    return Err(WorkspaceError::MissingDir(dir.to_path_buf()))
                }
                Err(problem) => Some(problem.to_string()),
            };
            if let Some(problem) = problem {
                return Err(WorkspaceError::NotADirectory {
                    path: dir.to_path_buf(),
                    problem,
                });
            }
            let root = match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                _ => dir
                    .canonicalize()
                    .ok()
                    .and_then(|dir| dir.parent().map(Path::to_path_buf))
                    .unwrap_or_else(|| PathBuf::from(".")),
            };
            return Ok(Self {
                root,
                services_dir: dir.to_path_buf(),
            });
        }
        let found = start
            .ancestors()
            .find(|dir| dir.join("services").is_dir())
            .ok_or_else(|| WorkspaceError::NotFound {
                start: start.to_path_buf(),
            })?;
        // Paths are kept relative to the current directory when it is inside the repository
        // (`services/hello.toml`, `../services/hello.toml`), so diagnostics are short.
        let root = std::env::current_dir()
            .ok()
            .and_then(|current| {
                let depth = current.strip_prefix(found).ok()?.components().count();
                Some(if depth == 0 {
                    PathBuf::from(".")
                } else {
                    (0..depth).map(|_| "..").collect()
                })
            })
            .unwrap_or_else(|| found.to_path_buf());
        let services_dir = if root == Path::new(".") {
            PathBuf::from("services")
        } else {
            root.join("services")
        };
        Ok(Self { root, services_dir })
    }

    /// The service files, sorted by path: every `*.toml` entry, whatever it is — a FIFO, a
    /// directory or a dangling symlink named `*.toml` is reported when loaded, not skipped.
    pub fn service_files(&self) -> Result<Vec<PathBuf>, WorkspaceError> {
        let read_error = |source| WorkspaceError::Read {
            path: self.services_dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.services_dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "toml")
            {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Loads and validates every service file. Problems of all files are collected, so one run
    /// shows every mistake; duplicate service names are reported on the later file.
    pub fn load_all(&self) -> Result<(Vec<LoadedService>, Diagnostics), WorkspaceError> {
        let files = self.service_files()?;
        let (services, mut diagnostics) = self.load_files(&files);
        diagnostics.extend(dependencies::check(&services));
        Ok((services, diagnostics))
    }

    /// Loads and validates the given files (see [`Workspace::load_all`]).
    pub fn load_files(&self, files: &[PathBuf]) -> (Vec<LoadedService>, Diagnostics) {
        let mut services: Vec<LoadedService> = Vec::new();
        let mut diagnostics = Diagnostics::default();
        for path in files {
            match self.load_file(path) {
                Ok(loaded) => {
                    if let Some(first) = services
                        .iter()
                        .find(|other| other.config.name == loaded.config.name)
                    {
                        let source = files::read_regular_file(path).unwrap_or_default();
                        let span = locate::span_of(&source, &[locate::Part::Key("name")]);
                        diagnostics.push(
                            Diagnostic::at(
                                path,
                                &source,
                                span,
                                format!(
                                    "duplicate service name `{}`: `{}` already defines it",
                                    loaded.config.name,
                                    first.path.display()
                                ),
                            )
                            .with_hint("give each service a unique `name`"),
                        );
                    } else {
                        services.push(loaded);
                    }
                }
                Err(errors) => diagnostics.extend(errors),
            }
        }
        (services, diagnostics)
    }

    /// Loads and validates one service file.
    pub fn load_file(&self, path: &Path) -> Result<LoadedService, Diagnostics> {
        let source = match files::read_regular_file(path) {
            Ok(source) => source,
            Err(problem) => {
                return Err(Diagnostics::from(Diagnostic::whole_file(
                    path,
                    problem.to_string(),
                )))
            }
        };
        self.load_source(path, &source)
    }

    /// Loads and validates the text of a service file (`path` names it in diagnostics).
    pub fn load_source(&self, path: &Path, source: &str) -> Result<LoadedService, Diagnostics> {
        let config = parse(path, source)?;
        let diagnostics = validate::validate(&config, path, source, &self.root);
        if diagnostics.is_empty() {
            Ok(LoadedService {
                path: path.to_path_buf(),
                config,
            })
        } else {
            Err(diagnostics)
        }
    }

    /// Finds one service by name, loading (and validating) only the files needed.
    ///
    /// Tries `services/NAME.toml` first, then every file, since the file name need not match.
    pub fn find(&self, name: &str) -> Result<Result<LoadedService, Diagnostics>, WorkspaceError> {
        let direct = self.services_dir.join(format!("{name}.toml"));
        if let Ok(source) = files::read_regular_file(&direct) {
            if let Ok(config) = parse(&direct, &source) {
                if config.name == name {
                    return Ok(self.load_file(&direct));
                }
            }
        }
        let files = self.service_files()?;
        let mut names = Vec::new();
        for path in &files {
            let Ok(source) = files::read_regular_file(path) else {
                continue;
            };
            match parse(path, &source) {
                Ok(config) if config.name == name => return Ok(self.load_file(path)),
                Ok(config) => names.push(config.name),
                Err(_) => {}
            }
        }
        Err(WorkspaceError::UnknownService {
            name: name.to_string(),
            dir: self.services_dir.clone(),
            suggestion: closest(name, names.iter().map(String::as_str)).map(str::to_string),
        })
    }
}

fn escaped_path(path: &Path) -> String {
    escaped(&path.display().to_string()).into_owned()
}

/// Parses one file's text into the model (pass one: types, unknown keys, defaults).
pub fn parse(path: &Path, source: &str) -> Result<ServiceConfig, Diagnostics> {
    toml::from_str::<ServiceConfig>(source)
        .map_err(|error| Diagnostics::from(diagnostic::from_toml_error(path, source, &error)))
}

/// Overrides of the target's project and region, from flags or the environment (like gcloud).
#[derive(Debug, Clone, Default)]
pub struct TargetOverrides {
    /// `--project`, `DEPLOYER_PROJECT` or `CLOUDSDK_CORE_PROJECT`.
    pub project: Option<String>,
    /// `--region`, `DEPLOYER_REGION` or `CLOUDSDK_RUN_REGION`.
    pub region: Option<String>,
}

impl ServiceConfig {
    /// Applies project/region overrides to a Cloud Run target (a local target has neither).
    /// The region of a service with `target.regions` is not overridden: `--region` picks one of its
    /// regions ([`ServiceConfig::region_configs`]).
    pub fn with_overrides(mut self, overrides: &TargetOverrides) -> Self {
        let listed = self.listed_regions().is_some();
        if let Target::CloudRun {
            project, region, ..
        } = &mut self.target
        {
            if let Some(value) = &overrides.project {
                *project = Some(value.clone());
            }
            if let (Some(value), false) = (&overrides.region, listed) {
                *region = Some(value.clone());
            }
        }
        self
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// The JSON Schema of the service-definition format.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(ServiceConfig);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_target(target: &str) -> ServiceConfig {
        parse(
            Path::new("s.toml"),
            &format!(
                "name = \"hello\"\nrunbook = \"r.md\"\n[target]\n{target}\n[image]\nrepository = \"127.0.0.1:5000/hello\"\n"
            ),
        )
        .unwrap()
    }

    #[test]
    fn each_region_of_a_multi_region_service_has_its_own_label() {
        let multi = with_target(
            "kind = \"cloud-run\"\nproject = \"p\"\nregions = [\"us-west2\", \"us-east1\"]",
        );
        let labels: Vec<String> = multi
            .region_configs(None)
            .unwrap()
            .iter()
            .map(ServiceConfig::target_label)
            .collect();
        assert_eq!(labels, ["hello@us-west2", "hello@us-east1"]);
        // A one-region service keeps its plain name, so its alerts' history carries on.
        let single = with_target("kind = \"cloud-run\"\nregion = \"us-west2\"");
        assert_eq!(
            single.region_configs(None).unwrap()[0].target_label(),
            "hello"
        );
        // The region a config is in is still its one region, whatever the flag says.
        let east = &multi.region_configs(Some("us-east1")).unwrap()[0];
        assert_eq!(east.regions(), ["us-east1"]);
        let overridden = east.clone().with_overrides(&TargetOverrides {
            project: None,
            region: Some("us-west2".into()),
        });
        assert_eq!(overridden.regions(), ["us-east1"]);
    }

    fn regions_of(configs: &[ServiceConfig]) -> Vec<Vec<String>> {
        configs.iter().map(ServiceConfig::regions).collect()
    }

    #[test]
    fn region_configs_give_every_region_canary_first_or_the_one_region_flag_picks() {
        let multi = with_target(
            "kind = \"cloud-run\"\nproject = \"p\"\nregions = [\"us-west2\", \"us-east1\"]",
        );
        assert!(multi.is_multi_region());
        let overrides = TargetOverrides {
            project: None,
            region: Some("us-east1".into()),
        };
        // `--region` picks one region of the list; it does not override it.
        let picked = multi.clone().with_overrides(&overrides);
        assert_eq!(picked.regions(), ["us-west2", "us-east1"]);
        assert_eq!(
            regions_of(&picked.region_configs(Some("us-east1")).unwrap()),
            [["us-east1"]]
        );
        assert_eq!(
            regions_of(&multi.region_configs(None).unwrap()),
            [["us-west2"], ["us-east1"]]
        );
        let error = multi.region_configs(Some("europe-west1")).unwrap_err();
        assert!(
            error.contains("`--region europe-west1` is not a region of service `hello`")
                && error.contains("us-west2, us-east1"),
            "{error}"
        );
        // A one-region service: `--region` overrides its region, as before.
        let single =
            with_target("kind = \"cloud-run\"\nregion = \"us-west2\"").with_overrides(&overrides);
        assert!(!single.is_multi_region());
        assert_eq!(
            regions_of(&single.region_configs(Some("us-east1")).unwrap()),
            [["us-east1"]]
        );
        // A local target: the emulator's locations, `local` by default.
        let local = with_target("kind = \"local\"\nregions = [\"us-west2\", \"us-east1\"]");
        assert_eq!(
            regions_of(&local.region_configs(None).unwrap()),
            [["us-west2"], ["us-east1"]]
        );
        assert_eq!(with_target("kind = \"local\"").regions(), [LOCAL_REGION]);
    }

    #[test]
    fn closest_suggests_typos_only() {
        let keys = ["max_error_rate", "min_requests", "monitor_duration"];
        assert_eq!(closest("max_eror_rate", keys), Some("max_error_rate"));
        assert_eq!(closest("monitor_duraton", keys), Some("monitor_duration"));
        assert_eq!(closest("zzz", keys), None);
    }
}
