//! The `.dockerignore` corpus: for each case, a context with a fixed tree and one `.dockerignore`
//! is built into a `FROM scratch` image with `COPY . /ctx/`, and the files that actually landed
//! in the image (read back by exporting a container's filesystem) are compared with
//!
//! 1. the files the case says must be there (written by hand from Docker's rules), and
//! 2. what the `docker build` CLI (classic builder, `DOCKER_BUILDKIT=0`: the same builder
//!    deployer drives) puts in the image from the same context, directories included.
//!
//! The engine is the real one; the registry is not needed.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, path::Path, process::Command};

use chrono::Utc;
use deployer::{
    image::{self, BuildPlan, Engine, SilentReporter},
    repo::SourceRevision,
};
use futures::StreamExt;

const DOCKERFILE: &str = "FROM scratch\nCOPY . /ctx/\n";

/// The context tree (besides `Dockerfile` and `.dockerignore`); `empty/` is an empty directory.
const TREE: &[&str] = &[
    "README.md",
    "notes.txt",
    "file1.txt",
    "file10.txt",
    "space name.txt",
    "[weird].txt",
    ".env",
    ".git/HEAD",
    "app/main.rs",
    "app/lib.rs",
    "app/README.md",
    "app/tests/test_main.rs",
    "app/target/debug/app",
    "app/target/debug/app.d",
    "target/release/bin",
    "docs/guide.md",
    "docs/api/index.md",
    "docs/api/secret.md",
    "logs/a.log",
    "logs/keep.log",
    "node_modules/x/index.js",
];

const ALL_APP: &[&str] = &[
    "app/main.rs",
    "app/lib.rs",
    "app/README.md",
    "app/tests/test_main.rs",
    "app/target/debug/app",
    "app/target/debug/app.d",
];

/// (name, `.dockerignore`, files that must NOT be in the image)
fn cases() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let everything: Vec<&str> = TREE
        .iter()
        .copied()
        .chain(["Dockerfile", ".dockerignore"])
        .collect();
    let all_but = |kept: &[&str]| -> Vec<&'static str> {
        everything
            .iter()
            .copied()
            .filter(|file| !kept.contains(file))
            .collect()
    };
    vec![
        ("empty file", "", vec![]),
        ("root-anchored glob", "*.md", vec!["README.md"]),
        (
            "double star at any depth",
            "**/*.md",
            vec![
                "README.md",
                "app/README.md",
                "docs/guide.md",
                "docs/api/index.md",
                "docs/api/secret.md",
            ],
        ),
        (
            "directory excludes its content",
            "docs",
            vec!["docs/guide.md", "docs/api/index.md", "docs/api/secret.md"],
        ),
        (
            "leading slash",
            "/docs/api",
            vec!["docs/api/index.md", "docs/api/secret.md"],
        ),
        (
            "exception inside an excluded directory",
            "docs/\n!docs/api/index.md",
            vec!["docs/guide.md", "docs/api/secret.md"],
        ),
        (
            "double star directory name",
            "**/target",
            vec![
                "app/target/debug/app",
                "app/target/debug/app.d",
                "target/release/bin",
            ],
        ),
        (
            "plain name is anchored",
            "target",
            vec!["target/release/bin"],
        ),
        (
            "one level of directories",
            "*/target",
            vec!["app/target/debug/app", "app/target/debug/app.d"],
        ),
        (
            "exception for one file",
            "logs/*.log\n!logs/keep.log",
            vec!["logs/a.log"],
        ),
        ("everything but a directory", "*\n!app", all_but(ALL_APP)),
        (
            "question mark is one character",
            "file?.txt",
            vec!["file1.txt"],
        ),
        ("escaped brackets", "\\[weird\\].txt", vec!["[weird].txt"]),
        (
            "double star in the middle",
            "app/**/*.rs",
            vec!["app/main.rs", "app/lib.rs", "app/tests/test_main.rs"],
        ),
        (
            // Docker's quirk: an excluded directory is only walked when an exception pattern
            // starts with its path, so `!**/*.md` re-includes only top-level files.
            "exception with leading double star does not reach into excluded directories",
            "**\n!**/*.md",
            all_but(&["README.md"]),
        ),
        (
            "dotfiles and dependency directories",
            ".git\n.env\nnode_modules",
            vec![".git/HEAD", ".env", "node_modules/x/index.js"],
        ),
        (
            "comments and surrounding spaces",
            "# a comment\n  notes.txt  \n",
            vec!["notes.txt"],
        ),
        ("space in a name", "space name.txt", vec!["space name.txt"]),
        (
            "the last matching line wins",
            "!README.md\n*.md",
            vec!["README.md"],
        ),
        (
            "exception for a subdirectory",
            "app\n!app/tests",
            vec![
                "app/main.rs",
                "app/lib.rs",
                "app/README.md",
                "app/target/debug/app",
                "app/target/debug/app.d",
            ],
        ),
        (
            "Dockerfile and .dockerignore excluded (sent, but not copied)",
            "Dockerfile\n.dockerignore",
            vec!["Dockerfile", ".dockerignore"],
        ),
        ("dot slash prefix", "./notes.txt", vec!["notes.txt"]),
        (
            "trailing double star",
            "docs/**",
            vec!["docs/guide.md", "docs/api/index.md", "docs/api/secret.md"],
        ),
        (
            "deep directory by name",
            "**/debug",
            vec!["app/target/debug/app", "app/target/debug/app.d"],
        ),
        (
            "exception with a glob",
            "*.txt\n!file1*",
            vec!["notes.txt", "space name.txt", "[weird].txt"],
        ),
        (
            "re-exclusion after an exception",
            "app/*\n!app/tests\napp/tests/*.rs",
            ALL_APP.to_vec(),
        ),
    ]
}

fn write_context(root: &Path, dockerignore: &str) {
    for file in TREE.iter().chain(&["Dockerfile", ".dockerignore"]) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let content = match *file {
            "Dockerfile" => DOCKERFILE.to_string(),
            ".dockerignore" => dockerignore.to_string(),
            other => format!("{other}\n"),
        };
        std::fs::write(path, content).unwrap();
    }
    std::fs::create_dir_all(root.join("empty")).unwrap();
}

/// Every path under `/ctx` in the image (directories with a trailing `/`).
async fn image_listing(engine: &Engine, image: &str) -> BTreeSet<String> {
    let docker = engine.docker();
    let container = docker
        .create_container(
            None,
            bollard::models::ContainerCreateBody {
                image: Some(image.to_string()),
                // Never started: a scratch image has no command, and export needs none.
                cmd: Some(vec!["/none".to_string()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let mut stream = docker.export_container(&container.id);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    docker
        .remove_container(
            &container.id,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut listing = BTreeSet::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let Some(relative) = path.strip_prefix("ctx/") else {
            continue;
        };
        let relative = relative.trim_end_matches('/');
        if relative.is_empty() {
            continue;
        }
        if entry.header().entry_type().is_dir() {
            listing.insert(format!("{relative}/"));
        } else {
            listing.insert(relative.to_string());
        }
    }
    listing
}

/// Removes `image` but not its untagged parents: those are build-cache layers that a concurrent
/// build (the demo's `ARG SERVICE_NAME` step, say) may be using at that moment — pruning them
/// made that build fail with "unable to find image sha256:…".
async fn remove_image(engine: &Engine, image: &str) {
    let _ = engine
        .docker()
        .remove_image(
            image,
            Some(bollard::query_parameters::RemoveImageOptions {
                force: true,
                noprune: true,
                ..Default::default()
            }),
            None,
        )
        .await;
}

#[test]
fn dockerignore_corpus_matches_docker() {
    let cases = cases();
    assert!(cases.len() >= 15);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = runtime
        .block_on(Engine::connect())
        .expect("the Docker Engine must be running (tests/env/00-docker.sh checks it)");
    let mut failures = Vec::new();
    for (index, (name, dockerignore, excluded)) in cases.iter().enumerate() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        write_context(root, dockerignore);
        let plan = BuildPlan {
            service: "corpus".into(),
            repository_root: root.to_path_buf(),
            context: root.to_path_buf(),
            dockerfile: root.join("Dockerfile"),
            args: Default::default(),
            pre_build: None,
            repository: format!("deployer-corpus/case{index:02}"),
            revision: SourceRevision {
                commit: "0".repeat(40),
                dirty: None,
            },
            source: None,
            created: Utc::now(),
        };
        let built = runtime
            .block_on(image::build(&engine, &plan, &mut SilentReporter))
            .unwrap_or_else(|error| panic!("case `{name}`: build failed: {error}"));
        let ours = runtime.block_on(image_listing(&engine, &built.id));
        runtime.block_on(remove_image(&engine, &built.reference));

        // 1. The hand-written expectation (files only: directories follow from them).
        let expected_files: BTreeSet<String> = TREE
            .iter()
            .chain(&["Dockerfile", ".dockerignore"])
            .filter(|file| !excluded.contains(file))
            .map(|file| file.to_string())
            .collect();
        let our_files: BTreeSet<String> = ours
            .iter()
            .filter(|path| !path.ends_with('/'))
            .cloned()
            .collect();
        if our_files != expected_files {
            failures.push(format!(
                "case `{name}` ({dockerignore:?}):\n  missing: {:?}\n  unexpected: {:?}",
                expected_files.difference(&our_files).collect::<Vec<_>>(),
                our_files.difference(&expected_files).collect::<Vec<_>>()
            ));
        }

        // 2. The docker CLI on the same context, directories included.
        let output = Command::new("docker")
            .args(["build", "-q", "."])
            .current_dir(root)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("run the docker CLI");
        assert!(
            output.status.success(),
            "case `{name}`: docker build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let theirs = runtime.block_on(image_listing(&engine, &id));
        runtime.block_on(remove_image(&engine, &id));
        if ours != theirs {
            failures.push(format!(
                "case `{name}` ({dockerignore:?}) differs from the docker CLI:\n  only deployer: {:?}\n  only docker: {:?}",
                ours.difference(&theirs).collect::<Vec<_>>(),
                theirs.difference(&ours).collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Deployer refuses what Docker refuses, naming the line.
#[test]
fn invalid_dockerignore_is_an_error_naming_the_line() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    write_context(root, "*.md\n[unclosed\n");
    let error = image::BuildContext::new(root, &root.join("Dockerfile")).unwrap_err();
    assert!(error.to_string().contains(".dockerignore"), "{error}");
    let cause = std::error::Error::source(&error)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        cause.starts_with("line 2: invalid pattern `[unclosed`"),
        "{cause}"
    );
}
