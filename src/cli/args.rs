//! Value parsers shared by flags: durations and rates with documented ranges.
//!
//! A flag value out of range is a usage error (exit 2) reported by clap with the flag's name,
//! before anything is read or written: `--ready-timeout 1000000y` used to pass parsing and panic
//! in deadline arithmetic after the lock and the 0% revision were written, and `--traffic
//! 4294967295` turned into a zero period that panicked the traffic generator.
//!
//! Use as `#[arg(long, value_parser = args::duration_in(args::READY_TIMEOUT))]` on a
//! [`HumanDuration`] field, or `value_parser = args::traffic_rate` on a `u32`.

use std::time::Duration;

use crate::{
    config::{DurationError, DurationRange, HumanDuration},
    synthetic_load::MAX_RATE,
};

/// `deploy --ready-timeout`: how long a new revision may take to become Ready.
pub const READY_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(60 * 60));
/// `deploy --lock-wait`: how long to wait for another rollout (`0s`: do not wait).
pub const LOCK_WAIT: DurationRange =
    DurationRange::new(Duration::ZERO, Duration::from_secs(24 * 60 * 60));
/// `status --watch --every`: how often the service is read.
pub const WATCH_INTERVAL: DurationRange =
    DurationRange::new(Duration::from_millis(500), Duration::from_secs(5 * 60));
/// `emulator --startup-timeout`: how long a revision may take to pass its startup probe.
pub const STARTUP_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(60 * 60));

/// A clap value parser for a duration in `range`.
pub fn duration_in(
    range: DurationRange,
) -> impl Fn(&str) -> Result<HumanDuration, DurationError> + Clone + Send + Sync + 'static {
    move |text| range.parse(text)
}

/// A clap value parser for `deploy --traffic`: requests per second, `0` (off) to
/// [`MAX_RATE`].
pub fn traffic_rate(text: &str) -> Result<u32, String> {
    let rate: u32 = text.trim().parse().map_err(|_| {
        format!(
            "`{}` is not a whole number of requests per second",
            crate::untrusted::escaped(text)
        )
    })?;
    if rate > MAX_RATE {
        return Err(format!(
            "{rate} requests per second is more than the most allowed, {MAX_RATE}"
        ));
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags_refuse_values_outside_their_range() {
        let ready = duration_in(READY_TIMEOUT);
        assert_eq!(ready("2m").unwrap().get(), Duration::from_secs(120));
        for (text, expected) in [
            ("0s", "shorter than the shortest allowed, 1s"),
            ("1000000y", "longer than the longest allowed, 1h"),
            ("500000000000y", "longer than the longest allowed, 1h"),
            ("99999999999999999999y", "invalid duration"),
            ("2", "invalid duration `2`"),
        ] {
            let error = ready(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        let lock = duration_in(LOCK_WAIT);
        assert!(lock("0s").is_ok());
        assert!(lock("2days").is_err());
    }

    /// The flags as `deploy` declares them, with these parsers: defaults parse, values out of
    /// range are clap errors (exit 2) naming the flag.
    #[derive(Debug, clap::Parser)]
    struct DeployLike {
        #[arg(long, default_value = "0s", value_parser = duration_in(LOCK_WAIT))]
        lock_wait: HumanDuration,
        #[arg(long, default_value = "2m", value_parser = duration_in(READY_TIMEOUT))]
        ready_timeout: HumanDuration,
        #[arg(long, value_parser = traffic_rate)]
        traffic: Option<u32>,
    }

    #[test]
    fn deploy_flags_with_these_parsers_refuse_absurd_values_as_usage_errors() {
        use clap::Parser as _;
        let parsed = DeployLike::try_parse_from(["deploy"]).unwrap();
        assert_eq!(parsed.lock_wait.get(), Duration::ZERO);
        assert_eq!(parsed.ready_timeout.get(), Duration::from_secs(120));
        assert_eq!(parsed.traffic, None);
        for (flag, value) in [
            ("--ready-timeout", "500000000000y"),
            ("--ready-timeout", "1000000y"),
            ("--ready-timeout", "0s"),
            ("--lock-wait", "1000000y"),
            ("--traffic", "4294967295"),
        ] {
            let error = DeployLike::try_parse_from(["deploy", flag, value]).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{flag} {value}");
            assert!(error.to_string().contains(flag), "{flag} {value}: {error}");
        }
    }

    #[test]
    fn traffic_rates_of_u32_max_are_refused() {
        assert_eq!(traffic_rate("0"), Ok(0));
        assert_eq!(traffic_rate("50"), Ok(50));
        assert_eq!(traffic_rate(&MAX_RATE.to_string()), Ok(MAX_RATE));
        assert!(traffic_rate("4294967295")
            .unwrap_err()
            .contains("most allowed"));
        assert!(traffic_rate("4294967296").is_err());
        assert!(traffic_rate("-1").is_err());
    }
}
