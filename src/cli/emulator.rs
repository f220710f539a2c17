//! `deployer emulator`: run the local Cloud Run emulator in the foreground (default) or in the
//! background (`--detach`), and `deployer emulator status` / `stop` to find and stop one.
//!
//! A running emulator announces itself in `DATA_DIR/emulator.json` (pid, endpoint); `status`
//! and `stop` read that file and talk to the emulator's `/emulator/v1/*` endpoints.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use axum::body::Body;
use clap::{Args, Subcommand};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::{
    config::HumanDuration,
    emulator::{
        background::{find_running, spawn_background, BackgroundError, BackgroundOptions},
        default_data_dir, Emulator, EmulatorConfig, RunningEmulator, DEFAULT_PORT,
    },
    exit::ExitStatus,
};

use super::{Context, UsageError};

/// `deployer emulator`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  deployer emulator                      # foreground on 127.0.0.1:8090, Ctrl-C stops\n  deployer emulator --detach             # background; the log is DATA_DIR/emulator.log\n  deployer emulator status\n  deployer emulator stop"
)]
pub struct EmulatorArgs {
    #[command(subcommand)]
    action: Option<EmulatorAction>,
    /// API port on 127.0.0.1 (0 picks a free port).
    #[arg(long, env = "DEPLOYER_EMULATOR_PORT", default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Where the emulator keeps its state [default: `$XDG_STATE_HOME/deployer/emulator` or
    /// `~/.local/state/deployer/emulator`].
    #[arg(
        long,
        global = true,
        env = "DEPLOYER_EMULATOR_DATA_DIR",
        value_name = "DIR"
    )]
    data_dir: Option<PathBuf>,
    /// Run in the background; prints the endpoint once it answers.
    #[arg(long)]
    detach: bool,
    /// How long a revision may take to pass its startup probe.
    #[arg(long, default_value = "30s", value_parser = super::args::duration_in(super::args::STARTUP_TIMEOUT), value_name = "DURATION")]
    startup_timeout: HumanDuration,
}

/// Subcommands of `deployer emulator`.
#[derive(Debug, Subcommand)]
enum EmulatorAction {
    /// Say whether an emulator runs on the data directory, and where.
    Status,
    /// Stop the emulator running on the data directory (its containers are removed; its state
    /// stays for the next start).
    Stop,
}

/// Runs `deployer emulator ...`.
pub fn run(context: &Context, args: EmulatorArgs) -> anyhow::Result<ExitStatus> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    match args.action {
        None if args.detach => detach(context, &args, &data_dir),
        None => foreground(context, &args, &data_dir),
        Some(EmulatorAction::Status) => status(context, &data_dir),
        Some(EmulatorAction::Stop) => stop(context, &data_dir),
    }
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // The emulator runs on a runtime of its own; this one only waits for signals and talks
    // to a running emulator.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn foreground(
    context: &Context,
    args: &EmulatorArgs,
    data_dir: &Path,
) -> anyhow::Result<ExitStatus> {
    let mut config = EmulatorConfig::new(data_dir);
    config.listen.set_port(args.port);
    config.startup_timeout = args.startup_timeout.get();
    tokio_runtime()?.block_on(async {
        let emulator = Emulator::start(config)
            .await
            .context("cannot start the emulator")?;
        let running = RunningEmulator::read(emulator.data_dir());
        if context.output.is_json() {
            if let Some(running) = &running {
                context.output.json(running)?;
            }
        } else {
            context.output.data(emulator.endpoint());
        }
        context.output.message(format!(
            "emulator listening on {} (data dir `{}`); Ctrl-C stops it",
            emulator.endpoint(),
            emulator.data_dir().display()
        ));
        wait_for_stop(&emulator).await;
        context
            .output
            .message("stopping the emulator: removing its containers");
        emulator.shutdown().await;
        anyhow::Ok(ExitStatus::Success)
    })
}

/// Waits for Ctrl-C, SIGTERM, or `POST /emulator/v1/shutdown`.
async fn wait_for_stop(emulator: &Emulator) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
        _ = emulator.stop_requested() => {}
    }
}

fn detach(context: &Context, args: &EmulatorArgs, data_dir: &Path) -> anyhow::Result<ExitStatus> {
    let options = BackgroundOptions {
        executable: std::env::current_exe().context("cannot find the deployer executable")?,
        data_dir: data_dir.to_path_buf(),
        port: args.port,
        startup_timeout: args.startup_timeout.get(),
    };
    let running = match spawn_background(&options) {
        Ok(running) => running,
        Err(error @ BackgroundError::AlreadyRunning(_)) => {
            bail!(UsageError {
                message: error.to_string()
            })
        }
        Err(error) => return Err(error).context("cannot start the emulator in the background"),
    };
    if context.output.is_json() {
        context.output.json(&running)?;
    } else {
        context.output.data(&running.endpoint);
        context.output.message(format!(
            "emulator running in the background (pid {}); log `{}`; stop it with `deployer emulator stop`",
            running.pid,
            data_dir.join("emulator.log").display()
        ));
    }
    Ok(ExitStatus::Success)
}

/// One plain-HTTP request to the emulator's own API.
async fn call(method: &str, url: &str) -> anyhow::Result<(u16, String)> {
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let request = axum::http::Request::builder()
        .method(method)
        .uri(url)
        .body(Body::empty())?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .context("the emulator did not answer within 5 s")??;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(Body::new(response.into_body()), 1 << 20).await?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn status(context: &Context, data_dir: &Path) -> anyhow::Result<ExitStatus> {
    let running = find_running(data_dir);
    let Some(running) = running else {
        if context.output.is_json() {
            context
                .output
                .json(&serde_json::json!({"running": false, "dataDir": data_dir}))?;
        } else {
            context.output.message(format!(
                "no emulator runs on `{}`; start one with `deployer emulator --detach`",
                data_dir.display()
            ));
        }
        return Ok(ExitStatus::Failure);
    };
    let answer = tokio_runtime()?.block_on(call(
        "GET",
        &format!("{}/emulator/v1/status", running.endpoint),
    ));
    let services = answer
        .ok()
        .and_then(|(code, body)| (code == 200).then_some(body))
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|body| body["services"].as_u64());
    if context.output.is_json() {
        context.output.json(&serde_json::json!({
            "running": true,
            "answering": services.is_some(),
            "pid": running.pid,
            "endpoint": running.endpoint,
            "dataDir": running.data_dir,
            "startedAt": running.started_at,
            "services": services,
        }))?;
    } else {
        context.output.data(format!(
            "emulator running: pid {}, endpoint {}, data dir `{}`, since {}, {}",
            running.pid,
            running.endpoint,
            running.data_dir.display(),
            running.started_at,
            match services {
                Some(count) => format!("{count} service(s)"),
                None => "NOT answering".to_string(),
            }
        ));
    }
    Ok(if services.is_some() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn stop(context: &Context, data_dir: &Path) -> anyhow::Result<ExitStatus> {
    let running = find_running(data_dir);
    let Some(running) = running else {
        context
            .output
            .message(format!("no emulator runs on `{}`", data_dir.display()));
        return Ok(ExitStatus::Success);
    };
    let url = format!("{}/emulator/v1/shutdown", running.endpoint);
    let (code, body) = tokio_runtime()?
        .block_on(call("POST", &url))
        .with_context(|| format!("cannot ask the emulator at {} to stop", running.endpoint))?;
    if code != 202 {
        bail!("the emulator refused to stop (HTTP {code}): {body}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while crate::process::process_alive(running.pid) {
        if std::time::Instant::now() > deadline {
            bail!(
                "the emulator (pid {}) is still running 60 s after it was asked to stop",
                running.pid
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    context
        .output
        .message(format!("emulator (pid {}) stopped", running.pid));
    Ok(ExitStatus::Success)
}
