//! The state behind [`CloudLoggingRequests`](super::cloud_logging::CloudLoggingRequests): one
//! revision's request log read in bounded looks. Pure: the reader does the I/O, this decides what
//! to read and counts what was read.
//!
//! Each look reads only the entries Logging received since the previous look (a cursor on
//! `receiveTimestamp`, not on `timestamp`: a slow request — a timeout, say — is logged long
//! after its `timestamp`, and a timestamp cursor would pass over it), re-reading an [`OVERLAP`]
//! for entries whose arrival order differs from their receive times, and skipping those already
//! counted by their `insertId`. Only entries whose `timestamp` is in the window are asked for. The entries are read through Logging's `sample(insertId, fraction)`, with the
//! fraction chosen from the observed rate so that a look reads about
//! [`TARGET_ENTRIES_PER_LOOK`] entries whatever the traffic; a look never reads more than
//! [`MAX_PAGES_PER_LOOK`] pages (plus one probe page on a revision's first look), and when it
//! stops there the cursor stays at the last entry read so the next look goes on from it.
//! Counts are kept per second of the entries' timestamps, so any window inside what was read is
//! a sum.
//!
//! A sampled request is still a Bernoulli trial with the revision's error rate (the hash of
//! `insertId` knows nothing of the status): the counts are of the sample, never scaled, and the
//! fraction travels with them (`RequestCounts::sample_ppm`) for the analysis to report.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use chrono::{DateTime, Utc};

use super::RequestCounts;

/// Entries a look aims to read (two pages of 1,000, with room for the rate's noise).
pub const TARGET_ENTRIES_PER_LOOK: f64 = 1500.0;
/// Pages of the sampled read at most per look (each up to 1,000 entries).
pub const MAX_PAGES_PER_LOOK: usize = 3;
/// How far before the cursor each look reads again, for entries that arrive late.
pub const OVERLAP: Duration = Duration::from_secs(10);
/// The smallest fraction read (one request in 100,000).
pub const MIN_FRACTION: f64 = 0.000_01;
/// Counts older than this are dropped (longer than any step's `hold` or monitor interval).
pub const KEPT: Duration = Duration::from_secs(6 * 3600);

/// One request log entry, as the reader needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Logging's unique id of the entry.
    pub insert_id: String,
    /// When the request was served.
    pub timestamp: DateTime<Utc>,
    /// When Logging received the entry.
    pub received: DateTime<Utc>,
    /// Whether its status was a 5xx.
    pub error: bool,
}

/// What one look is to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadPlan {
    /// Read entries whose `timestamp` is at or after this time (the window's start).
    pub since: DateTime<Utc>,
    /// Read entries Logging received at or after this time.
    pub from: DateTime<Utc>,
    /// Through `sample(insertId, fraction)` (1.0: every entry); `None` until the rate is known:
    /// read the newest page first ([`RevisionLog::probed`]).
    pub fraction: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    total: u64,
    errors: u64,
}

/// One revision's reading state.
#[derive(Debug, Default)]
pub struct RevisionLog {
    /// Entries timestamped at or after this are counted (`None`: nothing read yet).
    covered_from: Option<DateTime<Utc>>,
    /// Entries received before this were read (but for arrivals out of order within
    /// [`OVERLAP`]): the newest `receiveTimestamp` of a complete read.
    cursor: Option<DateTime<Utc>>,
    /// Observed entries per second (all, not only the sampled ones).
    rate: Option<f64>,
    /// The fraction of the latest read.
    fraction: f64,
    /// `insertId`s counted received at or after `cursor - OVERLAP`, with their receive times.
    seen: HashMap<String, DateTime<Utc>>,
    /// Counts by second of the entries' timestamps.
    buckets: BTreeMap<i64, Bucket>,
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds().max(1)) as f64 / 1000.0
}

/// The fraction that makes `rate` entries per second over `span_seconds` about
/// [`TARGET_ENTRIES_PER_LOOK`] entries, rounded to parts per million as the filter writes it.
pub fn fraction_for(rate: f64, span_seconds: f64) -> f64 {
    let expected = rate * span_seconds.max(0.001);
    if !expected.is_finite() || expected <= TARGET_ENTRIES_PER_LOOK {
        return 1.0;
    }
    let fraction = (TARGET_ENTRIES_PER_LOOK / expected).clamp(MIN_FRACTION, 1.0);
    (fraction * 1e6).round().max(1.0) / 1e6
}

impl RevisionLog {
    /// What to read at `now` for counts over the last `window`. A window reaching before what
    /// was read starts again from nothing.
    pub fn plan(&mut self, now: DateTime<Utc>, window: Duration) -> ReadPlan {
        let start = now - chrono_duration(window);
        let Some(covered_from) = self.covered_from else {
            return self.restart(start);
        };
        if start < covered_from - chrono::Duration::seconds(1) {
            return self.restart(start);
        }
        let from = self
            .cursor
            .map_or(covered_from, |cursor| cursor - chrono_duration(OVERLAP))
            .max(covered_from);
        let fraction = self
            .rate
            .map(|rate| fraction_for(rate, seconds_between(from, now)));
        ReadPlan {
            since: covered_from,
            from,
            fraction,
        }
    }

    fn restart(&mut self, start: DateTime<Utc>) -> ReadPlan {
        let rate = self.rate;
        *self = Self {
            rate,
            ..Self::default()
        };
        ReadPlan {
            since: start,
            from: start,
            fraction: None,
        }
    }

    /// The probe's answer (the newest page at or after `plan.from`, every entry): when it held
    /// every entry (`complete`) they are counted and the look is done (`None`); otherwise the
    /// rate it shows gives the fraction of the sampled read.
    pub fn probed(
        &mut self,
        plan: ReadPlan,
        newest: &[Entry],
        complete: bool,
        now: DateTime<Utc>,
    ) -> Option<ReadPlan> {
        if complete {
            self.record(
                ReadPlan {
                    fraction: Some(1.0),
                    ..plan
                },
                newest,
                true,
                now,
            );
            return None;
        }
        let newest_at = newest.iter().map(|entry| entry.timestamp).max();
        let oldest_at = newest.iter().map(|entry| entry.timestamp).min();
        let rate = match (oldest_at, newest_at) {
            (Some(oldest), Some(newest_at)) => {
                newest.len() as f64 / seconds_between(oldest, newest_at)
            }
            _ => 0.0,
        };
        self.rate = Some(rate);
        Some(ReadPlan {
            fraction: Some(fraction_for(rate, seconds_between(plan.from, now))),
            ..plan
        })
    }

    /// Counts what a read of `plan` returned; `complete` when it reached the last entry,
    /// otherwise it stopped at [`MAX_PAGES_PER_LOOK`]: the cursor stays, and the next look reads
    /// the same range again (with a smaller fraction, and what was counted skipped).
    pub fn record(
        &mut self,
        plan: ReadPlan,
        entries: &[Entry],
        complete: bool,
        now: DateTime<Utc>,
    ) {
        let fraction = plan.fraction.unwrap_or(1.0);
        self.covered_from.get_or_insert(plan.since);
        for entry in entries {
            if self.seen.contains_key(&entry.insert_id) {
                continue;
            }
            self.seen.insert(entry.insert_id.clone(), entry.received);
            let bucket = self.buckets.entry(entry.timestamp.timestamp()).or_default();
            bucket.total += 1;
            bucket.errors += u64::from(entry.error);
        }
        let newest_received = entries.iter().map(|entry| entry.received).max();
        let read_until = if complete {
            now
        } else {
            newest_received.unwrap_or(now)
        };
        self.rate = Some(entries.len() as f64 / fraction / seconds_between(plan.from, read_until));
        self.fraction = fraction;
        if complete {
            self.cursor = self.cursor.max(newest_received);
        }
        if let Some(cursor) = self.cursor {
            let forget_before = cursor - chrono_duration(OVERLAP);
            self.seen.retain(|_, received| *received >= forget_before);
        }
        let drop_before = (now - chrono_duration(KEPT)).timestamp();
        self.buckets = self.buckets.split_off(&drop_before);
    }

    /// The counts over the last `window` at `now`, of the sample read.
    pub fn counts(&self, now: DateTime<Utc>, window: Duration) -> RequestCounts {
        let start = (now - chrono_duration(window)).timestamp();
        let (total, errors) = self
            .buckets
            .range(start..)
            .fold((0, 0), |(total, errors), (_, bucket)| {
                (total + bucket.total, errors + bucket.errors)
            });
        RequestCounts {
            total,
            errors,
            sample_ppm: (self.fraction < 1.0).then(|| (self.fraction * 1e6).round() as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
            + chrono::Duration::milliseconds((seconds * 1000.0) as i64)
    }

    /// An entry timestamped at `seconds`, received `lag` seconds later.
    fn entry(id: u64, seconds: f64, lag: f64, error: bool) -> Entry {
        Entry {
            insert_id: format!("{id:016x}"),
            timestamp: at(seconds),
            received: at(seconds + lag),
            error,
        }
    }

    fn plan(since: f64, from: f64, fraction: f64) -> ReadPlan {
        ReadPlan {
            since: at(since),
            from: at(from),
            fraction: Some(fraction),
        }
    }

    #[test]
    fn fraction_keeps_a_look_near_the_target() {
        assert_eq!(fraction_for(0.0, 15.0), 1.0);
        assert_eq!(fraction_for(50.0, 25.0), 1.0); // 1,250 entries: all of them
        assert_eq!(fraction_for(2000.0, 15.0), 0.05); // 30,000 entries: 1,500 of them
        assert_eq!(fraction_for(1e9, 1e6), MIN_FRACTION);
        assert_eq!(fraction_for(f64::INFINITY, 15.0), 1.0);
    }

    #[test]
    fn first_look_probes_and_a_complete_probe_counts_everything() {
        let mut log = RevisionLog::default();
        let first = log.plan(at(20.0), Duration::from_secs(20));
        assert_eq!(
            first,
            ReadPlan {
                since: at(0.0),
                from: at(0.0),
                fraction: None
            }
        );
        let entries: Vec<Entry> = (0..100)
            .map(|i| entry(i, i as f64 / 5.0, 0.5, i % 10 == 0))
            .collect();
        assert_eq!(log.probed(first, &entries, true, at(20.0)), None);
        let counts = log.counts(at(20.0), Duration::from_secs(20));
        assert_eq!(
            (counts.total, counts.errors, counts.sample_ppm),
            (100, 10, None)
        );
    }

    #[test]
    fn a_full_probe_sets_the_fraction_from_its_rate() {
        let mut log = RevisionLog::default();
        let first = log.plan(at(15.0), Duration::from_secs(15));
        // The newest 1,000 entries span 0.5 s: 2,000 per second.
        let newest: Vec<Entry> = (0..1000)
            .map(|i| entry(i, 14.5 + i as f64 / 2000.0, 0.1, false))
            .collect();
        let sampled = log.probed(first, &newest, false, at(15.0)).unwrap();
        assert_eq!((sampled.since, sampled.from), (at(0.0), at(0.0)));
        let fraction = sampled.fraction.unwrap();
        assert!((0.049..=0.051).contains(&fraction), "{fraction}");
    }

    #[test]
    fn later_looks_read_what_was_received_since_and_skip_what_was_counted() {
        let mut log = RevisionLog::default();
        log.plan(at(15.0), Duration::from_secs(15));
        log.record(
            plan(0.0, 0.0, 1.0),
            &[entry(1, 1.0, 0.5, false), entry(2, 13.0, 1.0, true)],
            true,
            at(15.0),
        );
        let next = log.plan(at(30.0), Duration::from_secs(30));
        // From the newest receive time read (14 s), less the overlap; the window from 0 s.
        assert_eq!(next, plan(0.0, 4.0, 1.0));
        // The overlap brings entry 2 again; entry 3, a slow request timestamped at 2 s, is
        // received only now: it is counted, however late.
        log.record(
            next,
            &[
                entry(3, 2.0, 27.0, true),
                entry(2, 13.0, 1.0, true),
                entry(4, 28.0, 0.5, false),
            ],
            true,
            at(30.0),
        );
        let counts = log.counts(at(30.0), Duration::from_secs(30));
        assert_eq!((counts.total, counts.errors), (4, 2));
        // A window inside what was read is a sum of its seconds.
        let recent = log.counts(at(30.0), Duration::from_secs(10));
        assert_eq!((recent.total, recent.errors), (1, 0));
    }

    #[test]
    fn a_look_stopped_at_the_page_limit_keeps_its_cursor_and_samples_less_next_time() {
        let mut log = RevisionLog::default();
        log.plan(at(15.0), Duration::from_secs(15));
        let read: Vec<Entry> = (0..3000)
            .map(|i| entry(i, i as f64 / 400.0, 0.0, false))
            .collect();
        log.record(plan(0.0, 0.0, 0.5), &read, false, at(15.0));
        let next = log.plan(at(30.0), Duration::from_secs(30));
        // Nothing complete yet: the same range again.
        assert_eq!((next.since, next.from), (at(0.0), at(0.0)));
        // The rate seen: 3,000 sampled at 0.5 in 7.5 s = 800/s; over 30 s: 1,500 of 24,000.
        let fraction = next.fraction.unwrap();
        assert!((0.062..=0.063).contains(&fraction), "{fraction}");
        assert_eq!(
            log.counts(at(30.0), Duration::from_secs(30)).sample_ppm,
            Some(500_000)
        );
    }

    #[test]
    fn a_window_before_what_was_read_starts_again() {
        let mut log = RevisionLog::default();
        log.plan(at(100.0), Duration::from_secs(10));
        log.record(
            plan(90.0, 90.0, 1.0),
            &[entry(1, 95.0, 0.0, false)],
            true,
            at(100.0),
        );
        let again = log.plan(at(110.0), Duration::from_secs(60));
        assert_eq!(
            again,
            ReadPlan {
                since: at(50.0),
                from: at(50.0),
                fraction: None
            }
        );
        assert_eq!(log.counts(at(110.0), Duration::from_secs(60)).total, 0);
    }
}
