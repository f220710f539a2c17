use chrono::TimeZone;

use super::{metrics::delivery, *};

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

fn actor() -> Actor {
    Actor {
        who: "alice@laptop".into(),
        run: None,
    }
}

fn rollout(revision: &str, stable: Option<&str>, outcome: Outcome, start: i64, end: i64) -> Entry {
    Entry {
        at: at(end),
        started: at(start),
        kind: Kind::Rollout,
        outcome,
        revision: revision.into(),
        from: stable.into_iter().map(String::from).collect(),
        commit: Some(format!("{revision}000")),
        commit_time: None,
        rollout: Some(format!("r-{revision}")),
        actor: actor(),
        why: None,
    }
}

fn emergency(to: &str, from: &[&str], minute: i64) -> Entry {
    Entry {
        kind: Kind::EmergencyRollback,
        outcome: Outcome::Restored,
        from: from.iter().map(|name| name.to_string()).collect(),
        why: Some("users report 500s".into()),
        ..rollout(to, None, Outcome::Restored, minute, minute)
    }
}

/// A (first deploy), B promoted, C rolled back, D promoted.
fn abcd() -> History {
    [
        rollout("a", None, Outcome::PromotedUnmonitored, 0, 1),
        rollout("b", Some("a"), Outcome::Promoted, 10, 20),
        rollout("c", Some("b"), Outcome::RolledBack, 30, 32),
        rollout("d", Some("b"), Outcome::Promoted, 40, 50),
    ]
    .into_iter()
    .fold(History::default(), |history, entry| history.with(entry))
}

#[test]
fn a_rolled_back_revision_is_bad_and_promoted_ones_and_their_stables_good() {
    let history = abcd();
    assert_eq!(
        history.verdict("a"),
        Some(Verdict::Good),
        "stable of b's passed rollout"
    );
    assert_eq!(history.verdict("b"), Some(Verdict::Good));
    assert_eq!(history.verdict("c"), Some(Verdict::Bad));
    assert_eq!(history.verdict("d"), Some(Verdict::Good));
    assert_eq!(history.verdict("x"), None);
}

#[test]
fn a_good_revision_emergency_rolled_back_from_becomes_bad_and_stays_bad() {
    let history = abcd().with(emergency("b", &["d"], 60));
    assert_eq!(history.verdict("d"), Some(Verdict::Bad));
    assert_eq!(history.verdict("b"), Some(Verdict::Good));
    // A later passed rollout with d as its (bad) stable does not make d good again.
    let history = history.with(rollout("e", Some("d"), Outcome::Promoted, 70, 80));
    assert_eq!(history.verdict("d"), Some(Verdict::Bad));
}

#[test]
fn held_and_unmonitored_promotions_are_neither_good_nor_bad() {
    let history = History::default()
        .with(rollout("h", Some("s"), Outcome::Held, 0, 5))
        .with(rollout("p", Some("s"), Outcome::PromotedUnmonitored, 6, 7));
    assert_eq!(history.verdict("h"), None);
    assert_eq!(history.verdict("p"), None);
    assert!(history.mentions("h") && history.mentions("s"));
}

#[test]
fn the_annotation_round_trips() {
    let history = abcd().with(emergency("b", &["d"], 60));
    let text = history.encode();
    assert_eq!(History::decode(&text).unwrap(), history);
    assert!(History::decode("{not json").is_err());
}

#[test]
fn after_a_thousand_rollouts_the_history_stays_bounded_and_remembers_bad_revisions() {
    let mut history = History::default();
    for index in 0..1_000 {
        let outcome = if index % 10 == 3 {
            Outcome::RolledBack
        } else {
            Outcome::Promoted
        };
        let mut entry = rollout(
            &format!("svc-{index:05}-abc"),
            Some(&format!("svc-{:05}-abc", index.max(1) - 1)),
            outcome,
            index * 10,
            index * 10 + 5,
        );
        entry.why = Some("request errors FAIL — canary 27.6% errors (16/58), stable 0.0% errors (0/501); 5.0% allowed".repeat(5));
        entry.actor.run =
            Some("https://github.com/nba-props/platform/actions/runs/1234567890".into());
        history = history.with(entry);
        assert!(history.encode().len() <= MAX_ENCODED_BYTES, "{index}");
    }
    assert!(history.entries.len() <= MAX_ENTRIES);
    assert!(history.earlier.len() <= MAX_EARLIER);
    assert_eq!(history.compacted as usize + history.entries.len(), 1_000);
    // An early rolled-back revision, compacted away long ago, is still known bad.
    let early_bad = "svc-00803-abc";
    assert!(history
        .entries
        .iter()
        .all(|entry| entry.revision != early_bad));
    assert_eq!(history.verdict(early_bad), Some(Verdict::Bad));
    assert_eq!(history.verdict("svc-00999-abc"), Some(Verdict::Good));
    // `why` is kept to its bound, by characters.
    let why = history.last().unwrap().why.as_ref().unwrap();
    assert!(
        why.chars().count() <= MAX_WHY_CHARS + 30,
        "{}",
        why.chars().count()
    );
}

#[test]
fn the_ci_actor_and_run_url_are_recorded_in_github_actions() {
    let variables = [
        ("GITHUB_SERVER_URL", "https://github.com/"),
        ("GITHUB_REPOSITORY", "nba-props/platform"),
        ("GITHUB_RUN_ID", "42"),
        ("GITHUB_ACTOR", "octocat"),
    ];
    let lookup = |name: &str| {
        variables
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    };
    let actor = Actor::from_lookup(lookup, || "me@host".into());
    assert_eq!(actor.who, "github:octocat");
    assert_eq!(
        actor.run.as_deref(),
        Some("https://github.com/nba-props/platform/actions/runs/42")
    );
    let local = Actor::from_lookup(|_| None, || "me@host".into());
    assert_eq!(
        local,
        Actor {
            who: "me@host".into(),
            run: None
        }
    );
}

/// A seeded month with known answers (docs/ROLLOUT.md, "Delivery metrics").
#[test]
fn delivery_metrics_of_a_seeded_history() {
    let hour = 60;
    let mut b = rollout("b", Some("a"), Outcome::Promoted, 0, 30);
    b.commit_time = Some(at(-2 * hour)); // lead time 2 h 30 min
    let c = rollout(
        "c",
        Some("b"),
        Outcome::RolledBack,
        24 * hour,
        24 * hour + 10,
    ); // restore 10 min
    let mut d = rollout("d", Some("b"), Outcome::Promoted, 48 * hour, 48 * hour + 30);
    d.commit_time = Some(at(47 * hour)); // lead time 1 h 30 min
    let e = emergency("b", &["d"], 50 * hour); // restore: d promoted at 48h30 → 50h: 90 min
    let f = rollout(
        "f",
        Some("b"),
        Outcome::StoppedBeforeTraffic,
        60 * hour,
        60 * hour + 2,
    );
    let g = rollout(
        "g",
        Some("b"),
        Outcome::RollbackFailed,
        70 * hour,
        70 * hour + 5,
    );
    let mut h = rollout("h", Some("b"), Outcome::Promoted, 72 * hour, 72 * hour + 20); // restores g: 2 h 20 min
    h.commit_time = None;
    let history = [b, c, d, e, f, g, h]
        .into_iter()
        .fold(History::default(), |history, entry| history.with(entry));
    let metrics = delivery(
        &[&history],
        at(-hour),
        at(-hour) + chrono::Duration::days(30),
    );
    assert_eq!(metrics.rollouts, 6);
    assert_eq!(metrics.deployments, 3, "b, d, h");
    assert!((metrics.deployments_per_day - 0.1).abs() < 1e-9);
    assert_eq!(metrics.failed, 4, "c, d (emergency-rolled-back), f, g");
    assert_eq!(metrics.change_failure_rate, Some(4.0 / 6.0));
    assert_eq!(metrics.emergency_rollbacks, 1);
    assert_eq!(metrics.open_failures, 0);
    assert_eq!(metrics.time_to_restore.count, 3);
    assert_eq!(metrics.time_to_restore.median_seconds, Some(90 * 60));
    assert_eq!(metrics.time_to_restore.max_seconds, Some(140 * 60));
    assert_eq!(metrics.lead_time.count, 2);
    assert_eq!(metrics.lead_time.median_seconds, Some(2 * 3600));
    // Two services together: the counts add up.
    let both = delivery(
        &[&history, &abcd()],
        at(-hour),
        at(-hour) + chrono::Duration::days(30),
    );
    assert_eq!(both.rollouts, 6 + 4);
    // A window that starts after everything: nothing.
    let none = delivery(&[&history], at(100 * hour), at(200 * hour));
    assert_eq!((none.rollouts, none.change_failure_rate), (0, None));
}
