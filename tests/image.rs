//! `deployer build` against the real Docker Engine and the local registry that
//! `tests/env/10-registry.sh` starts (`DEPLOYER_TEST_REGISTRY`): the demo image is built, pushed,
//! checked through the registry's own API and run; failures are checked for clear messages.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use deployer::image::{self, Engine, ImageIdentity, RegistryClient};

/// The registry the environment fragment started; a missing one fails the test, never skips it.
fn registry() -> String {
    match std::env::var("DEPLOYER_TEST_REGISTRY") {
        Ok(address) if !address.is_empty() => address,
        _ => panic!(
            "DEPLOYER_TEST_REGISTRY is not set: run the tests through tests/run.sh, whose \
             tests/env/10-registry.sh starts the local registry"
        ),
    }
}

fn deployer(directory: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(args)
        .current_dir(directory)
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .output()
        .expect("run deployer")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn git(directory: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(directory)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        text(&output.stderr)
    );
    text(&output.stdout).trim().to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    deployer::install_crypto_provider();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The manifest digest the registry itself reports for `path:reference`, read with plain HTTP
/// (not deployer's client), asking for the manifest types the engine pushes.
fn registry_digest(registry: &str, path: &str, reference: &str) -> String {
    let url = format!("http://{registry}/v2/{path}/manifests/{reference}");
    let output = Command::new("curl")
        .args([
            "-fsS",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &url,
        ])
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "GET {url}: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("docker-content-digest")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Docker-Content-Digest header from {url}"))
}

#[test]
fn hello_is_built_pushed_and_verifiable_by_digest() {
    let registry = registry();
    assert_eq!(
        registry, "127.0.0.1:5000",
        "services/hello.toml pushes to 127.0.0.1:5000"
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = deployer(&root, &["build", "hello", "--push", "--format", "json"]);
    assert!(
        output.status.success(),
        "deployer build hello --push failed:\n{}",
        text(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let commit = git(&root, &["rev-parse", "HEAD"]);
    let dirty = !git(&root, &["status", "--porcelain"]).is_empty();
    assert_eq!(report["commit"], commit.as_str());
    assert_eq!(report["dirty"], dirty);
    let tag = report["image"]["tag"].as_str().unwrap().to_string();
    if dirty {
        assert!(
            tag.starts_with(&format!("{}-dirty-", &commit[..12])),
            "{tag}"
        );
    } else {
        assert_eq!(tag, commit[..12]);
    }

    // The digest deployer reports is the one the registry serves for the tag.
    let digest = report["push"]["digest"].as_str().unwrap().to_string();
    assert_eq!(registry_digest(&registry, "hello", &tag), digest);
    assert_eq!(
        report["push"]["pinned"],
        format!("127.0.0.1:5000/hello@{digest}").as_str()
    );

    // Labels read back by digest, from the registry and from the engine.
    let runtime = runtime();
    let (from_registry, from_engine) = runtime.block_on(async {
        let client = RegistryClient::new(&registry, None).unwrap();
        let from_registry = ImageIdentity::from_registry(&client, "127.0.0.1:5000/hello", &digest)
            .await
            .unwrap();
        let engine = Engine::connect().await.unwrap();
        let from_engine =
            ImageIdentity::from_engine(&engine, &format!("127.0.0.1:5000/hello@{digest}"))
                .await
                .unwrap();
        (from_registry, from_engine)
    });
    for identity in [&from_registry, &from_engine] {
        image::verify_identity(identity, "hello", &commit).unwrap();
        assert_eq!(
            identity.labels[image::LABEL_VERSION],
            env!("CARGO_PKG_VERSION")
        );
        assert!(identity.labels.contains_key(image::LABEL_CREATED));
        assert_eq!(identity.labels.contains_key(image::LABEL_DIRTY), dirty);
    }
    assert_eq!(from_registry.config_digest, from_engine.config_digest);
    assert!(image::verify_identity(&from_registry, "hello", "0000000").is_err());
    assert!(image::verify_identity(&from_registry, "other", &commit).is_err());

    // The image runs, and reports the commit it was built from.
    let run = Command::new("docker")
        .args(["run", "-d", "--rm", "-p", "127.0.0.1::8080"])
        .arg(format!("127.0.0.1:5000/hello@{digest}"))
        .output()
        .unwrap();
    assert!(run.status.success(), "docker run: {}", text(&run.stderr));
    let container = text(&run.stdout).trim().to_string();
    let port = text(
        &Command::new("docker")
            .args(["port", &container, "8080/tcp"])
            .output()
            .unwrap()
            .stdout,
    );
    let address = port.lines().next().unwrap_or_default().trim().to_string();
    let mut health = String::new();
    for _ in 0..50 {
        let answer = Command::new("curl")
            .args([
                "-fsS",
                "--max-time",
                "2",
                &format!("http://{address}/health"),
            ])
            .output()
            .unwrap();
        if answer.status.success() {
            health = text(&answer.stdout);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let stop = Command::new("docker")
        .args(["stop", "-t", "5", &container])
        .output()
        .unwrap();
    assert!(stop.status.success());
    let health: serde_json::Value =
        serde_json::from_str(&health).unwrap_or_else(|_| panic!("/health answered `{health}`"));
    assert_eq!(health["service"], "hello");
    assert_eq!(health["commit"], commit.as_str());
}

/// A throwaway git repository with one service `svc` and the given extra files.
struct Fixture {
    directory: tempfile::TempDir,
}

impl Fixture {
    fn new(service_extra: &str, files: &[(&str, &str)]) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        let write = |path: &str, content: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        };
        write(
            "runbooks/svc.md",
            "# Runbook: svc\n\n## Pre-flight\n\n## Deploy\n\n## Verify\n\n## Troubleshoot\n\n## Rollback\n",
        );
        write(
            "services/svc.toml",
            &format!(
                "name = \"svc\"\nrunbook = \"runbooks/svc.md\"\n[target]\nkind = \"local\"\n{service_extra}"
            ),
        );
        for (path, content) in files {
            write(path, content);
        }
        git(root, &["init", "-q"]);
        git(root, &["add", "-A"]);
        git(
            root,
            &[
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.com",
                "commit",
                "-qm",
                "fixture",
            ],
        );
        Self { directory }
    }

    fn root(&self) -> &Path {
        self.directory.path()
    }
}

fn image_section(repository: &str) -> String {
    format!("[image]\nrepository = \"{repository}\"\n")
}

#[test]
fn failing_dockerfile_step_is_named_with_its_output() {
    let fixture = Fixture::new(
        &image_section("127.0.0.1:5000/deployer-test-broken"),
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY present.txt /present.txt\nCOPY missing.txt /missing.txt\n",
            ),
            ("present.txt", "here\n"),
        ],
    );
    let output = deployer(fixture.root(), &["build", "svc"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("build failed at step 3/")
            && stderr.contains("`COPY missing.txt /missing.txt`"),
        "{stderr}"
    );
    assert!(stderr.contains("missing.txt"), "{stderr}");
    assert!(stderr.contains("hint: fix the Dockerfile step"), "{stderr}");
}

#[test]
fn unparsable_dockerfile_is_reported() {
    let fixture = Fixture::new(
        &image_section("127.0.0.1:5000/deployer-test-unparsable"),
        &[("Dockerfile", "FORM scratch\n")],
    );
    let output = deployer(fixture.root(), &["build", "svc"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("build failed"), "{stderr}");
    assert!(stderr.contains("unknown instruction"), "{stderr}");
}

#[test]
fn failing_hook_stops_the_build_with_its_output() {
    let fixture = Fixture::new(
        &format!(
            "{}[build]\npre_build = \"echo preparing; echo \\\"service=$DEPLOYER_SERVICE image=$DEPLOYER_IMAGE\\\" >&2; exit 3\"\n",
            image_section("127.0.0.1:5000/deployer-test-hook")
        ),
        &[("Dockerfile", "FROM scratch\n")],
    );
    let output = deployer(fixture.root(), &["build", "svc"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pre-build hook"), "{stderr}");
    assert!(stderr.contains("failed (exit code 3)"), "{stderr}");
    assert!(stderr.contains("| preparing"), "{stderr}");
    assert!(
        stderr.contains("| service=svc image=127.0.0.1:5000/deployer-test-hook:"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Step 1/"),
        "the build must not start: {stderr}"
    );
}

#[test]
fn hook_sees_deployer_variables_and_runs_from_the_root() {
    let fixture = Fixture::new(
        &format!(
            "{}[build]\npre_build = \"mkdir -p out && env | grep ^DEPLOYER_ | sort > out/hook-env && pwd > out/hook-pwd\"\n",
            image_section("127.0.0.1:5000/deployer-test-hook-env")
        ),
        &[("Dockerfile", "FROM scratch\nCOPY out /out\n")],
    );
    let output = deployer(fixture.root(), &["build", "svc"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let root = fixture.root().canonicalize().unwrap();
    let commit = git(&root, &["rev-parse", "HEAD"]);
    let environment = std::fs::read_to_string(root.join("out/hook-env")).unwrap();
    assert!(
        environment.contains("DEPLOYER_SERVICE=svc\n"),
        "{environment}"
    );
    assert!(
        environment.contains(&format!("DEPLOYER_COMMIT={commit}\n")),
        "{environment}"
    );
    // The hook's own output makes the tree dirty; the image name is the one being built.
    assert!(
        environment.contains(&format!(
            "DEPLOYER_IMAGE=127.0.0.1:5000/deployer-test-hook-env:{}",
            &commit[..12]
        )),
        "{environment}"
    );
    assert!(
        environment.contains(&format!("DEPLOYER_REPOSITORY_ROOT={}\n", root.display())),
        "{environment}"
    );
    let pwd = std::fs::read_to_string(root.join("out/hook-pwd")).unwrap();
    assert_eq!(pwd.trim(), root.display().to_string());
}

#[test]
fn registry_down_fails_the_push_clearly() {
    // Nothing listens on port 1 of the loopback address.
    let fixture = Fixture::new(
        &image_section("127.0.0.1:1/deployer-test-down"),
        &[("Dockerfile", "FROM scratch\nCOPY a /a\n"), ("a", "a\n")],
    );
    let output = deployer(fixture.root(), &["build", "svc", "--push"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("push of `127.0.0.1:1/deployer-test-down:"),
        "{stderr}"
    );
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(stderr.contains("hint: check that the registry"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "no digest on stdout after a failure"
    );
}

#[test]
fn no_docker_daemon_is_a_clear_error() {
    let fixture = Fixture::new(
        &image_section("127.0.0.1:5000/deployer-test-nodaemon"),
        &[("Dockerfile", "FROM scratch\n")],
    );
    for host in ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"] {
        let output = Command::new(env!("CARGO_BIN_EXE_deployer"))
            .args(["build", "svc"])
            .current_dir(fixture.root())
            .env("NO_COLOR", "1")
            .env("DOCKER_HOST", host)
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("cannot reach the Docker Engine at `{host}`")),
            "{stderr}"
        );
        assert!(stderr.contains("hint: start the Docker daemon"), "{stderr}");
    }
}

#[test]
fn dirty_tree_gets_a_dirty_tag_and_label() {
    let fixture = Fixture::new(
        &image_section("127.0.0.1:5000/deployer-test-dirty"),
        &[("Dockerfile", "FROM scratch\nCOPY a /a\n"), ("a", "one\n")],
    );
    let commit = git(fixture.root(), &["rev-parse", "HEAD"]);
    let clean = deployer(fixture.root(), &["build", "svc"]);
    assert!(clean.status.success(), "{}", text(&clean.stderr));
    assert_eq!(
        text(&clean.stdout).trim(),
        format!("127.0.0.1:5000/deployer-test-dirty:{}", &commit[..12])
    );
    std::fs::write(fixture.root().join("a"), "two\n").unwrap();
    let dirty = deployer(fixture.root(), &["build", "svc", "--format", "json"]);
    assert!(dirty.status.success(), "{}", text(&dirty.stderr));
    let report: serde_json::Value = serde_json::from_slice(&dirty.stdout).unwrap();
    let tag = report["image"]["tag"].as_str().unwrap();
    assert!(
        tag.starts_with(&format!("{}-dirty-", &commit[..12])),
        "{tag}"
    );
    assert_eq!(report["image"]["labels"][image::LABEL_DIRTY], "true");
    assert_eq!(
        report["image"]["labels"][image::LABEL_REVISION],
        commit.as_str()
    );
}
