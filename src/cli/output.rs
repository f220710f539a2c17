//! Where output goes and how it looks: data on stdout, messages on stderr, colour only on a
//! terminal and never with `NO_COLOR`.

use std::io::{IsTerminal, Write};

use crate::{
    config::{Diagnostics, WorkspaceError},
    image::ImageError,
    repo::RepoError,
    untrusted::escaped,
};

use super::Format;

/// The output conventions of one run.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--format`.
    pub format: Format,
    /// Colour on stderr.
    color: bool,
}

/// True when stderr is a terminal and `NO_COLOR` is unset (<https://no-color.org>).
pub fn color_enabled_on_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
        && std::io::stderr().is_terminal()
}

/// True when stdout is a terminal and `NO_COLOR` is unset: colour in data written to stdout.
pub fn color_enabled_on_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
        && std::io::stdout().is_terminal()
}

impl Output {
    /// Output for `--format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            color: color_enabled_on_stderr(),
        }
    }

    /// True for `--format json`.
    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Writes a JSON document to stdout.
    pub fn json(&self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, value)?;
        writeln!(stdout)?;
        Ok(())
    }

    /// Writes text to stdout.
    pub fn data(&self, text: impl std::fmt::Display) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`deployer ... | head`) is not an error worth a panic.
        let _ = writeln!(stdout, "{text}");
    }

    /// Writes a message to stderr.
    pub fn message(&self, text: impl std::fmt::Display) {
        eprintln!("{text}");
    }

    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// `error:` in red (when colour is on).
    pub fn error_label(&self) -> String {
        self.paint("error", "1;31")
    }

    /// `hint:` in cyan (when colour is on).
    pub fn hint_label(&self) -> String {
        self.paint("hint", "1;36")
    }

    /// Prints service-file diagnostics to stderr, one `error:` block each.
    pub fn diagnostics(&self, diagnostics: &Diagnostics) {
        for diagnostic in diagnostics.iter() {
            eprintln!(
                "{}: {}:{}:{}: {}",
                self.error_label(),
                escaped(&diagnostic.file.display().to_string()),
                diagnostic.line,
                diagnostic.column,
                diagnostic.message
            );
            if let Some(hint) = &diagnostic.hint {
                eprintln!("  {}: {hint}", self.hint_label());
            }
        }
    }

    /// Prints an error with its causes and, where the user can act, a hint.
    pub fn error(&self, error: &anyhow::Error) {
        if let Some(diagnostics) = error.downcast_ref::<Diagnostics>() {
            self.diagnostics(diagnostics);
            return;
        }
        eprintln!("{}: {error}", self.error_label());
        for cause in error.chain().skip(1) {
            if let Some(diagnostics) = cause.downcast_ref::<Diagnostics>() {
                self.diagnostics(diagnostics);
            } else {
                eprintln!("  caused by: {cause}");
            }
        }
        if let Some(hint) = hint_for(error) {
            eprintln!("  {}: {hint}", self.hint_label());
        }
    }
}

/// A hint for errors where the user can act.
fn hint_for(error: &anyhow::Error) -> Option<String> {
    if let Some(hint) = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<ImageError>().and_then(image_hint))
    {
        return Some(hint);
    }
    if let Some(error) = error.chain().find_map(|cause| {
        // An image's delivery carries the repository's error transparently: the chain shows
        // the `DeliveryError`, not the `RepoError` inside it.
        cause.downcast_ref::<RepoError>().or_else(|| {
            match cause.downcast_ref::<crate::image::DeliveryError>()? {
                crate::image::DeliveryError::Repo(error) => Some(error),
                _ => None,
            }
        })
    }) {
        return match error {
            RepoError::NotARepository { .. } => Some(
                "images are stamped with the git commit they are built from: run deployer inside the repository's git working tree".into(),
            ),
            RepoError::NoCommit { .. } => Some("commit the sources first: images are tagged by commit".into()),
            RepoError::Git { .. } => None,
        };
    }
    error.chain().find_map(|cause| match cause.downcast_ref::<WorkspaceError>()? {
        WorkspaceError::NotFound { .. } => Some(
            "run deployer inside the repository, or pass `--services-dir DIR` (or set `DEPLOYER_SERVICES_DIR`)".into(),
        ),
        WorkspaceError::MissingDir(_) | WorkspaceError::NotADirectory { .. } => {
            Some("check `--services-dir` / `DEPLOYER_SERVICES_DIR`".into())
        }
        WorkspaceError::UnknownService { suggestion: Some(name), .. } => Some(format!(
            "did you mean `{}`? (`deployer services list` shows them all)",
            escaped(name)
        )),
        WorkspaceError::UnknownService { .. } => {
            Some("`deployer services list` shows the defined services".into())
        }
        WorkspaceError::Read { .. } => None,
    })
}

/// Hints for image errors the user can act on.
fn image_hint(error: &ImageError) -> Option<String> {
    match error {
        ImageError::EngineUnavailable { .. } => Some(
            "start the Docker daemon, or point `DOCKER_HOST` at a running one (`docker info` checks)"
                .into(),
        ),
        ImageError::HookFailed { .. } | ImageError::HookSpawn { .. } => Some(
            "the hook is `build.pre_build` in the service file; it runs by `sh -c` from the repository root"
                .into(),
        ),
        ImageError::BuildFailed { .. } => {
            Some("fix the Dockerfile step above; `build.dockerfile` names the Dockerfile".into())
        }
        ImageError::IgnoreFile { .. } => {
            Some("patterns follow Docker's `.dockerignore` rules (Go `filepath.Match` plus `**`)".into())
        }
        ImageError::PushFailed { .. } => Some(
            "check that the registry of `image.repository` is reachable and that `docker login` (or a credential helper) has credentials for it"
                .into(),
        ),
        ImageError::Credentials { .. } => Some(
            "credentials come from `~/.docker/config.json` (auths, credHelpers, credsStore) or, for Google registries, Application Default Credentials"
                .into(),
        ),
        _ => None,
    }
}
