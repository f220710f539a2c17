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

/// A clap value parser from `parse` whose errors never echo the value: clap's own message is
/// `invalid value '<the whole value>'`, and a 100 KB `--env` value was printed whole. The
/// message of `parse` says what is wrong (escaped and shortened); exit 2 as any clap error.
#[derive(Clone)]
pub struct Quiet<F>(pub F);

impl<T, F> clap::builder::TypedValueParser for Quiet<F>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        command: &clap::Command,
        argument: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let flag = argument.map_or_else(String::new, |argument| {
            format!(
                " for '{}'",
                argument
                    .get_long()
                    .map_or_else(|| argument.get_id().to_string(), |long| format!("--{long}"))
            )
        });
        let refuse = |why: String| {
            let mut command = command.clone();
            command.error(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value{flag}: {why}"),
            )
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("the value is not valid UTF-8".into()))?;
        (self.0)(text).map_err(refuse)
    }
}

/// A clap value parser for an API endpoint (`--endpoint` and the `DEPLOYER_*_ENDPOINT`
/// variables clap reads): an `http://` or `https://` URL with a host. Anything else is a usage
/// error (exit 2) at once: `ftp://…` used to be retried for 20 s and `not a url` ended in
/// `could not initialize transport client`.
pub fn endpoint_url(text: &str) -> Result<String, String> {
    let shown = || crate::untrusted::escaped(&crate::untrusted::shortened(text, 100)).into_owned();
    let url = url::Url::parse(text.trim()).map_err(|error| {
        format!(
            "`{}` is not a URL ({error}): e.g. `http://127.0.0.1:8090`",
            shown()
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{}` is not an http:// or https:// URL (scheme `{}`)",
            shown(),
            crate::untrusted::escaped(url.scheme())
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{}` names no host", shown()));
    }
    Ok(text.trim().to_string())
}

/// The endpoint variables read outside clap (`DEPLOYER_EMULATOR_ENDPOINT`,
/// `DEPLOYER_PUBSUB_ENDPOINT`, …): every `DEPLOYER_*_ENDPOINT` and `DEPLOYER_PROMETHEUS_URL`
/// set in `variables` must be an endpoint URL ([`endpoint_url`]); blank values are unset.
pub fn check_endpoint_variables(
    variables: impl IntoIterator<Item = (String, String)>,
) -> Result<(), String> {
    for (name, value) in variables {
        let endpoint = name.starts_with("DEPLOYER_")
            && (name.ends_with("_ENDPOINT") || name == "DEPLOYER_PROMETHEUS_URL");
        if endpoint && !value.trim().is_empty() {
            endpoint_url(&value).map_err(|why| format!("`{name}`: {why}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_other_than_http_or_https_and_non_urls_are_refused() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:8090"),
            Ok("http://127.0.0.1:8090".into())
        );
        assert!(endpoint_url("https://run.googleapis.com").is_ok());
        for text in [
            "ftp://127.0.0.1:21",
            "not a url",
            "",
            "file:///etc/passwd",
            "http://",
            "127.0.0.1:8090",
        ] {
            assert!(endpoint_url(text).is_err(), "{text}");
        }
        let variables = |name: &str, value: &str| vec![(name.to_string(), value.to_string())];
        assert!(
            check_endpoint_variables(variables("DEPLOYER_PUBSUB_ENDPOINT", "ftp://x"))
                .unwrap_err()
                .contains("DEPLOYER_PUBSUB_ENDPOINT")
        );
        assert!(check_endpoint_variables(variables("DEPLOYER_PUBSUB_ENDPOINT", " ")).is_ok());
        assert!(check_endpoint_variables(variables("OTHER_ENDPOINT", "ftp://x")).is_ok());
    }

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
