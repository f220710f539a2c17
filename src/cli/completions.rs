//! `deployer completions SHELL` and `deployer man`: generated from the clap definition, so they
//! never disagree with `--help`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use crate::exit::ExitStatus;

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    pub shell: Shell,
}

/// `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `deployer.1` and one page per subcommand (`deployer-services.1`, ...) into this
    /// directory instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Prints the completion script.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitStatus> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "deployer", &mut std::io::stdout());
    Ok(ExitStatus::Success)
}

/// Prints or writes the man pages.
pub fn man(args: &ManArgs) -> anyhow::Result<ExitStatus> {
    let command = Cli::command();
    match &args.out_dir {
        None => {
            clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .context("cannot write the man page")?;
        }
        Some(dir) => {
            fs_err::create_dir_all(dir)?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("cannot write man pages into `{}`", dir.display()))?;
            eprintln!("wrote man pages into `{}`", dir.display());
        }
    }
    Ok(ExitStatus::Success)
}
