//! `deployer emulator`: background run, `status`, `stop`, and a clean stop on SIGTERM.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

fn deployer(arguments: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(arguments)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DEPLOYER_EMULATOR_PORT")
        .stdin(Stdio::null())
        .output()
        .expect("run deployer")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn detached_emulator_is_found_by_status_and_stopped_by_stop() {
    let directory = tempfile::tempdir().unwrap();
    let data_dir = directory.path().join("data");

    let started = deployer(&["emulator", "--detach", "--port", "0"], &data_dir);
    assert_eq!(started.status.code(), Some(0), "{}", text(&started.stderr));
    let endpoint = text(&started.stdout).trim().to_string();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(text(&started.stderr).contains("deployer emulator stop"));

    let status = deployer(&["emulator", "status"], &data_dir);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    assert!(text(&status.stdout).contains(&endpoint));
    assert!(text(&status.stdout).contains("0 service(s)"));

    let json = deployer(&["emulator", "status", "--format", "json"], &data_dir);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["running"], true);
    assert_eq!(value["endpoint"], endpoint.as_str());

    let again = deployer(&["emulator", "--detach", "--port", "0"], &data_dir);
    assert_eq!(
        again.status.code(),
        Some(2),
        "a second emulator on the same data dir is refused"
    );
    assert!(
        text(&again.stderr).contains("already runs"),
        "{}",
        text(&again.stderr)
    );

    let stopped = deployer(&["emulator", "stop"], &data_dir);
    assert_eq!(stopped.status.code(), Some(0), "{}", text(&stopped.stderr));
    assert!(!data_dir.join("emulator.json").exists());

    let status = deployer(&["emulator", "status"], &data_dir);
    assert_eq!(status.status.code(), Some(1));
    assert!(text(&status.stderr).contains("no emulator runs"));
}

#[test]
fn foreground_emulator_stops_cleanly_on_sigterm() {
    let directory = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(["emulator", "--port", "0", "--data-dir"])
        .arg(directory.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state_file = directory.path().join("emulator.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the emulator did not write emulator.json"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the emulator exited early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).trim().starts_with("http://127.0.0.1:"));
    assert!(text(&output.stderr).contains("stopping the emulator"));
    assert!(
        !state_file.exists(),
        "emulator.json is removed on a clean stop"
    );
    assert!(
        directory.path().join("state.json").exists(),
        "the state stays"
    );
}
