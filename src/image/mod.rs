//! Container images: the build context (`.dockerignore` + tar), the build through the Docker
//! Engine API, the push with the registry's digest, registry credentials, and reading an image's
//! labels back (from the local engine or the registry) to verify what was built.
//!
//! Deploys use the digest this module returns (`REPO@sha256:...`), never a tag: a tag can be
//! moved by anyone with push rights, a digest names exactly the bytes that were built from the
//! commit in the image's labels. That is what lets a later step rule out "wrong code deployed".
//!
//! Nothing here prints. Progress goes through a [`Reporter`] the CLI implements (progress bars
//! on a terminal, plain lines otherwise); errors are [`ImageError`] values.

mod build;
mod context;
mod credentials;
mod deliver;
mod dockerignore;
mod engine;
mod inspect;
mod push;
mod registry;

pub use build::{build, BuildPlan, BuiltImage, LABEL_DIRTY, LABEL_SERVICE, LABEL_VERSION};
pub use context::{BuildContext, ContextSummary};
pub use credentials::{registry_answers, registry_host, RegistryCredentials};
pub use deliver::{build_service, Delivery, DeliveryError};
pub use dockerignore::{IgnoreRules, PatternError};
pub use engine::Engine;
pub use inspect::{verify_identity, IdentityMismatch, ImageIdentity};
pub use push::{push, PushedImage};
pub use registry::{Manifest, RegistryClient, MANIFEST_TYPES};

use std::path::PathBuf;

/// OCI label holding the git commit an image was built from.
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";
/// OCI label holding where the source lives (the git remote's URL).
pub const LABEL_SOURCE: &str = "org.opencontainers.image.source";
/// OCI label holding when the image was built (RFC 3339).
pub const LABEL_CREATED: &str = "org.opencontainers.image.created";

/// One step of a Dockerfile build, as the engine announces it (`Step 2/5 : COPY . /app`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStep {
    /// 1-based step number.
    pub number: u32,
    /// Number of steps in the Dockerfile.
    pub total: u32,
    /// The instruction, e.g. `COPY dist/hello /hello`.
    pub instruction: String,
}

/// Progress of one layer during a push, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    /// Short layer id.
    pub layer: String,
    /// The engine's status: `Preparing`, `Waiting`, `Pushing`, `Pushed`, `Layer already exists`.
    pub status: String,
    /// Bytes sent so far and the layer's size, while `Pushing`.
    pub progress: Option<(u64, u64)>,
}

/// Receives progress from image operations. Every method has a default that ignores the event,
/// so a caller implements only what it shows.
pub trait Reporter {
    /// The pre-build hook started.
    fn hook_started(&mut self, _command: &str) {}
    /// One line of the pre-build hook's output (stdout and stderr).
    fn hook_output(&mut self, _line: &str) {}
    /// The build context was packed and sent to the engine.
    fn context_sent(&mut self, _summary: &ContextSummary) {}
    /// The engine started a Dockerfile step.
    fn build_step(&mut self, _step: &BuildStep) {}
    /// One line of build output (of the current step).
    fn build_output(&mut self, _line: &str) {}
    /// A layer's push progressed.
    fn push_layer(&mut self, _progress: &LayerProgress) {}
    /// The working tree differs from its commit: the image is tagged `tag`, which names the
    /// changes' fingerprint.
    fn uncommitted_changes(&mut self, _tag: &str, _fingerprint: &str) {}
    /// The image was built.
    fn built(&mut self, _image: &BuiltImage) {}
    /// The push starts, with the registry's stored credentials or without any.
    fn push_started(&mut self, _image: &BuiltImage, _with_credentials: bool) {}
    /// The image was pushed.
    fn pushed(&mut self, _image: &PushedImage) {}
    /// [`build_service`] ended, whether it delivered or not.
    fn finished(&mut self) {}
}

/// A reporter that ignores everything (tests, library callers that only want the result).
#[derive(Debug, Default)]
pub struct SilentReporter;

impl Reporter for SilentReporter {}

/// What can go wrong building, pushing or inspecting an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The Docker Engine cannot be reached.
    #[error("cannot reach the Docker Engine at `{host}`")]
    EngineUnavailable {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// A request to the engine failed.
    #[error("the Docker Engine failed to {action}")]
    Engine {
        action: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
    /// The build context directory does not exist.
    #[error("build context `{0}` is not a directory")]
    ContextMissing(PathBuf),
    /// The Dockerfile does not exist.
    #[error("Dockerfile `{0}` not found")]
    DockerfileMissing(PathBuf),
    /// The `.dockerignore` file has a pattern Docker would refuse.
    #[error("invalid `{path}`")]
    IgnoreFile {
        path: PathBuf,
        #[source]
        source: PatternError,
    },
    /// A file of the context could not be read.
    #[error("cannot read `{path}` for the build context")]
    ContextRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The pre-build hook could not be started.
    #[error("cannot run the pre-build hook `{command}`")]
    HookSpawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The pre-build hook failed.
    #[error("pre-build hook `{command}` failed ({status}){}", output_block(output))]
    HookFailed {
        command: String,
        status: String,
        output: Vec<String>,
    },
    /// A Dockerfile step failed (or the Dockerfile could not be parsed).
    #[error("build failed{}: {message}{}", step_text(step), output_block(output))]
    BuildFailed {
        step: Option<BuildStep>,
        message: String,
        output: Vec<String>,
    },
    /// The build ended without the engine naming the image it built.
    #[error("the Docker Engine finished the build without reporting an image id")]
    NoImageId,
    /// The push failed (registry down, refused credentials, ...).
    #[error("push of `{reference}` failed: {message}")]
    PushFailed { reference: String, message: String },
    /// The push ended without the registry's digest.
    #[error("push of `{reference}` finished without a digest from the registry")]
    NoDigest { reference: String },
    /// Registry credentials could not be obtained.
    #[error("cannot get credentials for registry `{host}`: {message}")]
    Credentials { host: String, message: String },
    /// A registry HTTP request failed.
    #[error("registry request `{url}` failed: {message}")]
    Registry { url: String, message: String },
    /// An image reference deployer cannot use.
    #[error("invalid image reference `{0}`")]
    InvalidReference(String),
}

fn step_text(step: &Option<BuildStep>) -> String {
    match step {
        Some(step) => format!(
            " at step {}/{} `{}`",
            step.number, step.total, step.instruction
        ),
        None => String::new(),
    }
}

fn output_block(output: &[String]) -> String {
    if output.is_empty() {
        return String::new();
    }
    let mut text = String::from("\n  output:");
    for line in output {
        text.push_str("\n  | ");
        text.push_str(line);
    }
    text
}

/// Splits `REPOSITORY[:TAG]` at the tag's colon (a colon before the last `/` is a port).
pub fn split_tag(reference: &str) -> (&str, Option<&str>) {
    let name_start = reference.rfind('/').map_or(0, |slash| slash + 1);
    match reference[name_start..].rfind(':') {
        Some(colon) => (
            &reference[..name_start + colon],
            Some(&reference[name_start + colon + 1..]),
        ),
        None => (reference, None),
    }
}

/// Checks an image reference as the Docker distribution grammar defines it:
/// `[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]`, path components of lowercase letters and digits
/// joined by `.`, `_`, `__` or dashes; or a local image's content id `sha256:HEX` (64 hex
/// digits). `Err` says what is wrong, the reference escaped and shortened.
pub fn check_reference(reference: &str) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "`{}` is not an image reference ({why}): e.g. `europe-west1-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE@sha256:...`",
            crate::untrusted::escaped(&crate::untrusted::shortened(reference, 100))
        ))
    };
    let is_hex = |text: &str, length: usize| {
        text.len() == length
            && text
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    };
    if reference.is_empty() {
        return refuse("it is empty");
    }
    if let Some(hex) = reference.strip_prefix("sha256:") {
        return if is_hex(hex, 64) {
            Ok(())
        } else {
            refuse("a content id is `sha256:` and 64 lowercase hex digits")
        };
    }
    let (named, digest) = match reference.split_once('@') {
        Some((named, digest)) => (named, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        match digest.strip_prefix("sha256:") {
            Some(hex) if is_hex(hex, 64) => {}
            _ => return refuse("the digest must be `sha256:` and 64 lowercase hex digits"),
        }
    }
    let (name, tag) = split_tag(named);
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return refuse("a tag is up to 128 letters, digits, `_`, `.` and `-`");
        }
    }
    if name.is_empty() || name.len() > 255 {
        return refuse("the name is empty or longer than 255 characters");
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    // The first component is a registry host when it has a `.` or a `:`, or is `localhost`.
    if components.len() > 1 && (first.contains(['.', ':']) || first == "localhost") {
        let (host, port) = match first.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (first, None),
        };
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if !host.split('.').all(label_ok)
            || port.is_some_and(|port| port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()))
        {
            return refuse("the registry host is not a host name with an optional port");
        }
        components.remove(0);
    }
    let component_ok = |component: &str| {
        let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        !component.is_empty()
            && component.starts_with(alphanumeric)
            && component.ends_with(alphanumeric)
            && component
                .chars()
                .all(|c| alphanumeric(c) || matches!(c, '.' | '_' | '-'))
            && !component.contains("..")
            && !component.contains("___")
            && !component.contains("._")
            && !component.contains("_.")
    };
    if components.is_empty() || !components.iter().all(|component| component_ok(component)) {
        return refuse(
            "path components are lowercase letters and digits joined by `.`, `_` or `-`",
        );
    }
    Ok(())
}

/// Lowercase hex of bytes (digests, fingerprints).
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// `sha256:HEX` of bytes, as registries name content.
fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tag_handles_ports() {
        assert_eq!(
            split_tag("127.0.0.1:5000/hello:abc"),
            ("127.0.0.1:5000/hello", Some("abc"))
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/hello"),
            ("127.0.0.1:5000/hello", None)
        );
        assert_eq!(split_tag("hello:1"), ("hello", Some("1")));
    }

    #[test]
    fn an_empty_or_garbage_image_reference_is_refused() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for valid in [
            format!("europe-west1-docker.pkg.dev/project/repository/hello@{digest}"),
            "127.0.0.1:5000/hello:abc".to_string(),
            "localhost/hello".to_string(),
            "hello".to_string(),
            "gcr.io/p/hello-world_2:v1.2".to_string(),
            digest.clone(),
            format!("127.0.0.1:5000/svc:tag@{digest}"),
        ] {
            assert_eq!(check_reference(&valid), Ok(()), "{valid}");
        }
        for invalid in [
            "",
            " ",
            "not an image",
            "Hello",
            "hello@sha256:short",
            "hello:",
            "gcr.io/p/../x",
            "gcr.io:port/x",
            "a\u{1b}[2Jb",
            "sha256:xyz",
            "//x",
            "x/",
            "-x",
        ] {
            assert!(check_reference(invalid).is_err(), "{invalid:?}");
        }
        let long = "x".repeat(100_000);
        assert!(check_reference(&long).unwrap_err().chars().count() < 400);
    }

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
