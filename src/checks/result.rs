//! The outcome of one check: a [`Status`] with everything a person needs to trust it — the
//! value and unit, the thresholds, the resolved query, the time it took and a link to open.

use serde::{Deserialize, Serialize};

use crate::config::{CheckConfig, Comparison, NoDataPolicy, Unit};

use super::{Counts, Sample};

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Within the thresholds.
    Pass,
    /// Past the warning threshold.
    Warn,
    /// Past the critical threshold.
    Critical,
    /// The provider answered, with nothing to measure (no row, empty vector).
    NoData,
    /// The check could not be evaluated (provider down, bad answer, timeout).
    Error,
}

impl Status {
    /// The label people read: `PASS`, `WARN`, `CRITICAL`, `NO DATA`, `ERROR`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Critical => "CRITICAL",
            Status::NoData => "NO DATA",
            Status::Error => "ERROR",
        }
    }

    /// True when a value was measured (PASS, WARN or CRITICAL).
    pub fn evaluated(self) -> bool {
        matches!(self, Status::Pass | Status::Warn | Status::Critical)
    }
}

/// How bad a result is for reporting and exit codes: NO DATA counts as its check's
/// `on_no_data`, an ERROR at least as a warning (it never passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing to act on.
    Ok,
    /// Look at it.
    Warning,
    /// Act now.
    Critical,
}

/// Where a breach lies, when the stable revision was measured too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Only the revision under test is measured, or only it breaches.
    Revision,
    /// The stable revision breaches as badly: the whole service is failing, not the canary.
    ServiceWide,
}

/// The stable revision's measurement of a `baseline = true` check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaselineResult {
    /// The stable revision.
    pub revision: String,
    /// Its status.
    pub status: Status,
    /// Its value.
    pub value: Option<f64>,
    /// The resolved query run for it.
    pub query: String,
    /// Why there is no value, if there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The thresholds a value was compared with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// `>=`, `>`, `<=` or `<`.
    pub comparison: &'static str,
    /// The warning threshold.
    pub warn: f64,
    /// The critical threshold.
    pub critical: f64,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Its provider (`bigquery`, `http`, ...).
    pub provider: &'static str,
    /// The verdict.
    pub status: Status,
    /// The verdict's weight for reporting (`on_no_data` applied).
    pub severity: Severity,
    /// The measured value.
    pub value: Option<f64>,
    /// The counts behind a rate, when the provider gave them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// Unit of the value.
    pub unit: Unit,
    /// The thresholds.
    pub thresholds: Thresholds,
    /// The query as run, placeholders resolved.
    pub query: String,
    /// A page a person can open to look at the same data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Time the evaluation took, in milliseconds.
    pub elapsed_ms: u64,
    /// Why there is no value (NO DATA, ERROR), or a note about the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The revision measured, when the query names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The stable revision's measurement (`baseline = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineResult>,
    /// Whether a breach is the revision's own or shared by the whole service.
    pub scope: Scope,
}

impl CheckResult {
    /// True when this result lets a gate pass: measured and PASS. NO DATA and ERROR never do,
    /// whatever `on_no_data` says (that is for reports only).
    pub fn passes_gate(&self) -> bool {
        self.status == Status::Pass
    }

    /// One line for people: `44.2% = 442/1000 (warn < 90%, critical < 70%)`, or the message
    /// when there is no value.
    pub fn summary(&self) -> String {
        match self.value {
            Some(value) => format!(
                "{}{} (warn {} {}, critical {} {})",
                format_value(value, self.unit),
                self.counts
                    .map(|counts| format!(" = {}/{}", counts.matching, counts.total))
                    .unwrap_or_default(),
                warn_symbol(self.thresholds.comparison),
                format_value(self.thresholds.warn, self.unit),
                warn_symbol(self.thresholds.comparison),
                format_value(self.thresholds.critical, self.unit),
            ),
            None => self.message.clone().unwrap_or_default(),
        }
    }
}

/// The relation a value has past a threshold (`<` for `>=` checks).
fn warn_symbol(comparison: &str) -> &'static str {
    match comparison {
        ">=" => "<",
        ">" => "<=",
        "<=" => ">",
        _ => ">=",
    }
}

/// A value with its unit: `92.4%`, `0.05`, `281`.
pub fn format_value(value: f64, unit: Unit) -> String {
    let number = if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    match unit {
        Unit::Percent => format!("{number}%"),
        Unit::Count | Unit::Ratio => number,
    }
}

/// The status of `value` against the check's thresholds.
pub fn judge(check: &CheckConfig, value: f64) -> Status {
    let comparison: Comparison = check.comparison;
    if !value.is_finite() {
        return Status::Error;
    }
    if !comparison.holds(value, check.critical) {
        Status::Critical
    } else if !comparison.holds(value, check.warn) {
        Status::Warn
    } else {
        Status::Pass
    }
}

/// The reporting weight of `status` for `check`.
pub fn severity(check: &CheckConfig, status: Status) -> Severity {
    match status {
        Status::Pass => Severity::Ok,
        Status::Warn | Status::Error => Severity::Warning,
        Status::Critical => Severity::Critical,
        Status::NoData => match check.on_no_data {
            NoDataPolicy::Pass => Severity::Ok,
            NoDataPolicy::Warn => Severity::Warning,
            NoDataPolicy::Critical => Severity::Critical,
        },
    }
}

/// The status, value and message of one measurement.
pub(crate) fn outcome(
    check: &CheckConfig,
    sample: Result<Sample, String>,
) -> (Status, Option<f64>, Option<Counts>, Option<String>) {
    match sample {
        Ok(Sample::Value { value, counts }) => {
            let status = judge(check, value);
            let message = (status == Status::Error).then(|| format!("value {value} is not finite"));
            (status, Some(value), counts, message)
        }
        Ok(Sample::NoData { reason }) => (Status::NoData, None, None, Some(reason)),
        Err(message) => (Status::Error, None, None, Some(message)),
    }
}

/// The worst severity of `results` as an exit status of `deployer check`: 0 all pass, 1 worst
/// is a warning, 2 worst is critical, 3 none could be evaluated.
pub fn exit_code(results: &[CheckResult]) -> u8 {
    if results.is_empty() || !results.iter().any(|result| result.status.evaluated()) {
        return 3;
    }
    match results.iter().map(|result| result.severity).max() {
        Some(Severity::Critical) => 2,
        Some(Severity::Warning) => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(comparison: &str, warn: f64, critical: f64, on_no_data: &str) -> CheckConfig {
        toml::from_str::<CheckConfig>(&format!(
            "name = \"c\"\nprovider = \"bigquery\"\nquery = \"SELECT 1\"\ncomparison = \"{comparison}\"\nwarn = {warn}\ncritical = {critical}\non_no_data = \"{on_no_data}\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn thresholds_decide_the_status() {
        let coverage = check(">=", 90.0, 70.0, "warn");
        let table = [
            (92.4, Status::Pass),
            (90.0, Status::Pass),
            (89.9, Status::Warn),
            (70.0, Status::Warn),
            (44.2, Status::Critical),
            (f64::NAN, Status::Error),
        ];
        for (value, expected) in table {
            assert_eq!(judge(&coverage, value), expected, "{value}");
        }
        let errors = check("<=", 5.0, 20.0, "warn");
        assert_eq!(judge(&errors, 0.0), Status::Pass);
        assert_eq!(judge(&errors, 6.0), Status::Warn);
        assert_eq!(judge(&errors, 21.0), Status::Critical);
        let above = check(">", 100.0, 50.0, "warn");
        assert_eq!(judge(&above, 100.0), Status::Warn);
        assert_eq!(judge(&above, 281.0), Status::Pass);
    }

    #[test]
    fn no_data_is_weighted_by_policy_and_never_passes_a_gate() {
        for (policy, expected) in [
            ("pass", Severity::Ok),
            ("warn", Severity::Warning),
            ("critical", Severity::Critical),
        ] {
            let check = check(">=", 90.0, 70.0, policy);
            assert_eq!(severity(&check, Status::NoData), expected);
            assert_eq!(severity(&check, Status::Error), Severity::Warning);
        }
    }

    #[test]
    fn exit_codes_follow_the_worst_result() {
        let coverage = check(">=", 90.0, 70.0, "warn");
        let result = |status: Status| CheckResult {
            name: "c".into(),
            provider: "bigquery",
            status,
            severity: severity(&coverage, status),
            value: status.evaluated().then_some(1.0),
            counts: None,
            unit: Unit::Percent,
            thresholds: Thresholds {
                comparison: ">=",
                warn: 90.0,
                critical: 70.0,
            },
            query: String::new(),
            link: None,
            elapsed_ms: 0,
            message: None,
            revision: None,
            baseline: None,
            scope: Scope::Revision,
        };
        let code = |statuses: &[Status]| {
            exit_code(&statuses.iter().map(|s| result(*s)).collect::<Vec<_>>())
        };
        assert_eq!(code(&[Status::Pass, Status::Pass]), 0);
        assert_eq!(code(&[Status::Pass, Status::Warn]), 1);
        assert_eq!(code(&[Status::Pass, Status::Error]), 1);
        assert_eq!(code(&[Status::Pass, Status::NoData]), 1);
        assert_eq!(code(&[Status::Warn, Status::Critical]), 2);
        assert_eq!(code(&[Status::NoData, Status::Error]), 3);
        assert_eq!(code(&[]), 3);
    }

    #[test]
    fn values_read_with_their_unit() {
        assert_eq!(format_value(92.4, Unit::Percent), "92.4%");
        assert_eq!(format_value(281.0, Unit::Count), "281");
        assert_eq!(format_value(0.05, Unit::Ratio), "0.05");
        assert_eq!(format_value(1.0 / 3.0, Unit::Ratio), "0.3333");
    }
}
