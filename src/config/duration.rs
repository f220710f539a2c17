//! `HumanDuration`: durations written as people write them (`30s`, `5m`, `1h 30m`), and the
//! ranges they must fall in.
//!
//! Every duration deployer reads — in a service file or from a flag — is at most
//! [`HumanDuration::MAX`] (365 days), checked when it is parsed. Without that bound a
//! `hold = "1000000y"` parsed fine and later overflowed the arithmetic of lock expiries and
//! rollout deadlines (a panic after the lock and the 0% revision were written). Settings with a
//! tighter documented range check it with a [`DurationRange`].

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::untrusted::escaped;

/// A duration read from and written as a human string (`humantime` syntax: `90s`, `5m`, `1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The longest duration accepted anywhere: 365 days. Sums of a few hundred of them (every
    /// step's hold, a monitor) still fit comfortably in any time arithmetic.
    pub const MAX: Duration = Duration::from_secs(365 * 24 * 60 * 60);

    /// The wrapped duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

/// A documented range of durations, both ends included (`1s..=7days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// The shortest duration allowed.
    pub min: Duration,
    /// The longest duration allowed (at most [`HumanDuration::MAX`]).
    pub max: Duration,
}

impl DurationRange {
    /// `min..=max`.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    /// True when `duration` is in the range.
    pub fn contains(&self, duration: Duration) -> bool {
        (self.min..=self.max).contains(&duration)
    }

    /// Parses `text` as a duration in this range; the error says which end it crossed.
    pub fn parse(&self, text: &str) -> Result<HumanDuration, DurationError> {
        let duration = parse_unbounded(text)?;
        if duration > self.max {
            Err(DurationError::TooLong {
                text: text.to_string(),
                max: self.max,
            })
        } else if duration < self.min {
            Err(DurationError::TooShort {
                text: text.to_string(),
                min: self.min,
            })
        } else {
            Ok(HumanDuration(duration))
        }
    }
}

/// A duration that cannot be read, or falls outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration at all (`30`, `5 minutes ago`).
    #[error(
        "invalid duration `{}`: {reason} (write e.g. `30s`, `5m`, `1h 30m`)",
        escaped(text)
    )]
    Invalid {
        /// What was written.
        text: String,
        /// Why `humantime` refused it.
        reason: String,
    },
    /// Longer than the range allows.
    #[error("duration `{}` is longer than the longest allowed, {}", escaped(text), describe(*max))]
    TooLong {
        /// What was written.
        text: String,
        /// The longest allowed.
        max: Duration,
    },
    /// Shorter than the range allows.
    #[error("duration `{}` is shorter than the shortest allowed, {}", escaped(text), describe(*min))]
    TooShort {
        /// What was written.
        text: String,
        /// The shortest allowed.
        min: Duration,
    },
}

/// What kind of [`DurationError`] a message carries, when it went through serde as text (a
/// service file's duration: serde keeps only the message of a custom error, not its type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationErrorKind {
    /// [`DurationError::Invalid`].
    Invalid,
    /// [`DurationError::TooLong`] or [`DurationError::TooShort`].
    OutOfRange,
}

impl DurationError {
    /// Its kind.
    pub fn kind(&self) -> DurationErrorKind {
        match self {
            Self::Invalid { .. } => DurationErrorKind::Invalid,
            Self::TooLong { .. } | Self::TooShort { .. } => DurationErrorKind::OutOfRange,
        }
    }
}

impl DurationErrorKind {
    /// The kind of the [`DurationError`] whose message `message` is, if it is one. The messages'
    /// openings are this file's (the `#[error]` lines above); a test holds every variant to it.
    pub fn of_message(message: &str) -> Option<Self> {
        if message.starts_with("invalid duration `") {
            Some(Self::Invalid)
        } else if message.starts_with("duration `") {
            Some(Self::OutOfRange)
        } else {
            None
        }
    }

    /// What a person can do about it, beyond the message: nothing more for an invalid duration
    /// (its message gives examples), the ranges for one out of range.
    pub fn hint(self) -> Option<&'static str> {
        match self {
            Self::Invalid => None,
            Self::OutOfRange => Some(
                "every duration is at most 365 days; `deployer services schema` gives each setting's range",
            ),
        }
    }
}

impl fmt::Display for DurationRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", describe(self.min), describe(self.max))
    }
}

/// A range end as written in the docs: whole days as days (`365days`, where `humantime` would
/// say `11months 30days 3h 50m 24s`), anything else as `humantime` writes it.
fn describe(duration: Duration) -> String {
    const DAY: u64 = 24 * 60 * 60;
    let seconds = duration.as_secs();
    if seconds >= DAY && seconds % DAY == 0 && duration.subsec_nanos() == 0 {
        match seconds / DAY {
            1 => "1day".to_string(),
            days => format!("{days}days"),
        }
    } else {
        humantime::format_duration(duration).to_string()
    }
}

fn parse_unbounded(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|error| DurationError::Invalid {
        text: text.to_string(),
        reason: error.to_string(),
    })
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    /// Parses a duration from zero to [`HumanDuration::MAX`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DurationRange::new(Duration::ZERO, HumanDuration::MAX).parse(text)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `30s`, `5m` or `1h 30m`")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as `30s`, `5m` or `1h 30m`, at most 365 days (each setting documents its own range).",
            "pattern": "^\\s*[0-9]+\\s*[a-zµ]+(\\s*[0-9]+\\s*[a-zµ]+)*\\s*$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        for (text, seconds) in [("30s", 30), ("5m", 300), ("1h 30m", 5400), (" 2m ", 120)] {
            let duration: HumanDuration = text.parse().unwrap();
            assert_eq!(duration.get(), Duration::from_secs(seconds), "{text}");
            let again: HumanDuration = duration.to_string().parse().unwrap();
            assert_eq!(again, duration);
        }
    }

    #[test]
    fn durations_beyond_a_year_are_refused_when_parsed() {
        let error = "1000000y".parse::<HumanDuration>().unwrap_err().to_string();
        assert_eq!(
            error,
            "duration `1000000y` is longer than the longest allowed, 365days"
        );
        assert!("99999999999y".parse::<HumanDuration>().is_err());
        assert!("500000000000y".parse::<HumanDuration>().is_err());
        assert_eq!(
            "365days".parse::<HumanDuration>().unwrap().get(),
            HumanDuration::MAX
        );
    }

    #[test]
    fn ranges_name_the_end_crossed() {
        let range = DurationRange::new(Duration::from_secs(1), Duration::from_secs(3600));
        assert_eq!(range.to_string(), "1s..=1h");
        assert_eq!(
            range.parse("0s").unwrap_err().to_string(),
            "duration `0s` is shorter than the shortest allowed, 1s"
        );
        assert_eq!(
            range.parse("2h").unwrap_err().to_string(),
            "duration `2h` is longer than the longest allowed, 1h"
        );
        assert_eq!(range.parse("1h").unwrap().get(), Duration::from_secs(3600));
    }

    #[test]
    fn rejects_bare_numbers_with_a_hint() {
        let error = "30".parse::<HumanDuration>().unwrap_err().to_string();
        assert!(error.contains("`30s`"), "{error}");
    }

    #[test]
    fn every_error_is_recognised_by_its_message() {
        let range = DurationRange::new(Duration::from_secs(1), Duration::from_secs(3600));
        for (text, kind) in [
            ("30", DurationErrorKind::Invalid),
            ("0s", DurationErrorKind::OutOfRange),
            ("2h", DurationErrorKind::OutOfRange),
        ] {
            let error = range.parse(text).unwrap_err();
            assert_eq!(error.kind(), kind, "{text}");
            assert_eq!(
                DurationErrorKind::of_message(&error.to_string()),
                Some(kind),
                "{text}"
            );
        }
        assert_eq!(DurationErrorKind::of_message("missing field `x`"), None);
    }
}
