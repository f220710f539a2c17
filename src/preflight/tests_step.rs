//! Step 6: the service's test command, run by `sh -c` from the repository root, its output
//! streamed line by line through the [`Reporter`], within `preflight.test_timeout`.

use std::{
    collections::VecDeque, os::unix::process::ExitStatusExt, path::Path, process::Stdio,
    sync::Mutex, time::Instant,
};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::config::ServiceConfig;

use super::{Check, Reporter, Step};

/// How many of the last output lines a failed run keeps in its details.
const KEPT_LINES: usize = 20;

/// Step 6. A skip is a WARN with its reason, never a PASS: untested code is a risk someone
/// should accept knowingly.
pub(super) async fn run(
    config: &ServiceConfig,
    root: &Path,
    skip: bool,
    reporter: &dyn Reporter,
) -> Check {
    let step = Step::Tests;
    if skip {
        return Check::warn(step, "skipped: --skip-tests")
            .hint("run the tests before deploying, or drop `--skip-tests`");
    }
    let Some(command) = &config.preflight.test_command else {
        return Check::warn(step, "skipped: the service has no `preflight.test_command`")
            .hint("set `preflight.test_command` in the service file");
    };
    let limit = config.preflight.test_timeout;
    let mut child = match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(root)
        .env("DEPLOYER_SERVICE", &config.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout stops the whole tree (`sh`, `cargo`, the
        // test binaries), not just `sh` while its children keep running.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            return Check::fail(step, format!("cannot start `sh -c {command}`: {error}"))
                .hint("check that `sh` exists and the repository root is readable")
        }
    };
    let tail = Mutex::new(VecDeque::with_capacity(KEPT_LINES));
    let started = Instant::now();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let finished = tokio::time::timeout(limit.get(), async {
        let (_, _, status) = tokio::join!(
            forward(stdout, reporter, &tail),
            forward(stderr, reporter, &tail),
            child.wait()
        );
        status
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let details = || -> Vec<String> {
        tail.lock()
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default()
    };
    match finished {
        Ok(Ok(status)) if status.success() => {
            Check::pass(step, format!("`{command}` passed in {elapsed:.1}s"))
        }
        Ok(Ok(status)) => {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "unknown exit status".into(),
            };
            Check::fail(
                step,
                format!("`{command}` failed ({how}) after {elapsed:.1}s"),
            )
            .hint("fix the tests before deploying")
            .details(details())
        }
        Ok(Err(error)) => Check::fail(
            step,
            format!("`{command}` could not be waited for: {error}"),
        ),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                // SAFETY: `kill` has no memory-safety preconditions. `-pid` addresses the process
                // group created for this child (`process_group(0)` makes its id the group id),
                // and the child has not been reaped yet, so the id cannot have been reused.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.wait().await;
            Check::fail(
                step,
                format!("`{command}` did not finish within {limit}: stopped"),
            )
            .hint("raise `preflight.test_timeout`, or make the tests faster")
            .details(details())
        }
    }
}

/// Forwards one output stream to the reporter line by line, keeping the last lines. Bytes that
/// are not UTF-8 are replaced rather than ending the stream.
async fn forward(
    stream: Option<impl AsyncRead + Unpin>,
    reporter: &dyn Reporter,
    tail: &Mutex<VecDeque<String>>,
) {
    let Some(stream) = stream else { return };
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = line.trim_end_matches(['\n', '\r']);
                reporter.test_output(line);
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() == KEPT_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_support::*, Status};
    use super::*;

    #[tokio::test]
    async fn a_passing_command_streams_its_output() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("marker"), "").unwrap();
        let config =
            service_with_tests(Some("ls; echo to-stderr >&2; echo $DEPLOYER_SERVICE"), "1m");
        let reporter = Collecting::default();
        let check = run(&config, root.path(), false, &reporter).await;
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert!(check.reason.starts_with("`ls; echo"), "{check:?}");
        let mut lines = reporter.lines();
        lines.sort();
        assert_eq!(lines, ["marker", "svc", "to-stderr"], "runs from the root");
    }

    #[tokio::test]
    async fn a_failing_command_fails_with_the_last_lines() {
        let root = tempfile::tempdir().unwrap();
        let config = service_with_tests(Some("echo 'test x ... FAILED'; exit 3"), "1m");
        let check = run(&config, root.path(), false, &Collecting::default()).await;
        assert_eq!(check.status, Status::Fail);
        assert!(check.reason.contains("failed (exit status 3)"), "{check:?}");
        assert_eq!(check.details, ["test x ... FAILED"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_past_its_time_limit_is_stopped_with_its_children() {
        let root = tempfile::tempdir().unwrap();
        // The backgrounded `sleep` holds the output pipe open: only killing the whole process
        // group lets the step end.
        let config = service_with_tests(Some("sleep 600 & echo started; wait"), "5s");
        let check = run(&config, root.path(), false, &Collecting::default()).await;
        assert_eq!(check.status, Status::Fail, "{check:?}");
        assert_eq!(
            check.reason,
            "`sleep 600 & echo started; wait` did not finish within 5s: stopped"
        );
    }

    #[tokio::test]
    async fn skips_are_warnings_with_the_reason() {
        let root = tempfile::tempdir().unwrap();
        let check = run(
            &service_with_tests(None, "1m"),
            root.path(),
            false,
            &Collecting::default(),
        )
        .await;
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.reason,
            "skipped: the service has no `preflight.test_command`"
        );
        let check = run(
            &service_with_tests(Some("exit 1"), "1m"),
            root.path(),
            true,
            &Collecting::default(),
        )
        .await;
        assert_eq!(check.status, Status::Warn);
        assert_eq!(check.reason, "skipped: --skip-tests");
    }
}
