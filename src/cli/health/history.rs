//! `deployer health history`: each check's trend from the recorded runs, a sparkline on a
//! terminal, the series in JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::{parse_location, parse_since};
use crate::{
    checks::Status,
    cli::{output::color_enabled_on_stdout, Context},
    exit::ExitStatus,
    health::store::{self, Location, Store},
};

/// `health history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only runs this recent (`7d`, `12h`).
    #[arg(long, default_value = "7d", value_parser = parse_since)]
    pub since: std::time::Duration,
    /// Only the checks of this name (case-insensitive).
    #[arg(long, value_name = "NAME")]
    pub check: Option<String>,
    /// Where the runs were kept: `file` or `bigquery:PROJECT.DATASET.TABLE` (as `health
    /// --history`).
    #[arg(long, env = "DEPLOYER_HEALTH_HISTORY", value_name = "STORE", value_parser = parse_location)]
    pub history: Option<Location>,
    /// BigQuery REST endpoint of a `bigquery:` store [default: Google's].
    #[arg(long, env = "DEPLOYER_BIGQUERY_ENDPOINT", value_name = "URL", value_parser = crate::cli::args::endpoint_url)]
    pub bigquery_endpoint: Option<String>,
}

#[derive(Debug, Serialize)]
struct HistoryOutput {
    since: chrono::DateTime<chrono::Utc>,
    runs: usize,
    skipped_lines: usize,
    series: std::collections::BTreeMap<String, Vec<store::Point>>,
}

/// `health history`.
pub(super) fn run(context: &Context, args: &HistoryArgs) -> anyhow::Result<ExitStatus> {
    let store = Store::open(
        args.history.as_ref().unwrap_or(&Location::File),
        args.bigquery_endpoint.as_deref(),
    );
    let since = chrono::Utc::now()
        - chrono::Duration::from_std(args.since).unwrap_or(chrono::Duration::MAX);
    let (runs, skipped) = crate::cli::block_on(async { Ok(store.read(since).await?) })?;
    let series = store::series(&runs, args.check.as_deref());
    if skipped > 0 {
        context.output.message(format!(
            "warning: {skipped} unreadable record(s) of `{}` skipped",
            store.describe()
        ));
    }
    if context.output.is_json() {
        context.output.json(&HistoryOutput {
            since,
            runs: runs.len(),
            skipped_lines: skipped,
            series,
        })?;
        return Ok(ExitStatus::Success);
    }
    if series.is_empty() {
        context.output.data(format!(
            "no recorded run{} since {} (`{}`)",
            args.check
                .as_ref()
                .map(|name| format!(" of `{name}`"))
                .unwrap_or_default(),
            since.format("%Y-%m-%d %H:%M UTC"),
            store.describe()
        ));
        return Ok(ExitStatus::Success);
    }
    let sparklines = color_enabled_on_stdout();
    let width = series
        .keys()
        .map(|key| key.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = format!(
        "{} run(s) since {}\n",
        runs.len(),
        since.format("%Y-%m-%d %H:%M UTC")
    );
    for (key, points) in &series {
        let passed = points
            .iter()
            .filter(|point| point.status == Status::Pass)
            .count();
        let last = points
            .last()
            .map(|point| point.status.label())
            .unwrap_or("-");
        let trend = if sparklines {
            store::sparkline(&points.iter().map(|point| point.value).collect::<Vec<_>>())
        } else {
            points
                .iter()
                .map(|point| match point.value {
                    Some(value) => format!("{value}"),
                    None => point.status.label().to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            text,
            "{key}{}  {trend}  last {last}, {passed}/{} passed",
            " ".repeat(width - key.chars().count()),
            points.len()
        );
    }
    context.output.data(text.trim_end());
    Ok(ExitStatus::Success)
}
