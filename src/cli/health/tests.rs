use super::*;
use crate::health::run::{next_check, PreviousCheck};

fn sample(status: Status, value: Option<f64>) -> HealthCheck {
    HealthCheck {
        service: "phase4-processors".into(),
        check: "Vegas Line Coverage".into(),
        provider: "bigquery",
        status,
        severity: match status {
            Status::Pass => checks::Severity::Ok,
            Status::Critical => checks::Severity::Critical,
            _ => checks::Severity::Warning,
        },
        value,
        unit: crate::config::Unit::Percent,
        thresholds: Some(checks::Thresholds {
            comparison: ">=",
            warn: 90.0,
            critical: 70.0,
        }),
        query: "SELECT 1".into(),
        elapsed_ms: 12,
        link: Some("https://console.cloud.google.com/bigquery".into()),
        runbook: "runbooks/phase4-processors.md#troubleshoot".into(),
        message: None,
    }
}

#[test]
fn the_dashboard_reads_like_the_teams_script() {
    let results = vec![
        sample(Status::Pass, Some(92.4)),
        sample(Status::Critical, Some(44.2)),
    ];
    let score = health::score(&results);
    let at = chrono::DateTime::parse_from_rfc3339("2026-02-02T18:00:00Z")
        .unwrap()
        .to_utc();
    let schedule = Schedule {
        last_check: at,
        previous_check: None,
        every: None,
        next_check: None,
        history: "history.jsonl".into(),
    };
    let text = render(&results, &score, &schedule, &Painter { color: false });
    assert!(
        text.contains("[1/2] Vegas Line Coverage ...................... PASS\n      92.4% (threshold: ≥90%)\n"),
        "{text}"
    );
    assert!(text.contains("44.2% (threshold: ≥90%)"), "{text}");
    assert!(
        text.contains("runbook: runbooks/phase4-processors.md#troubleshoot"),
        "{text}"
    );
    assert!(
        text.contains("Score: 50/100 (CRITICAL): 1 of 2 passed"),
        "{text}"
    );
    assert!(text.contains("Last Check: 2026-02-02 18:00 UTC"), "{text}");
    assert!(!text.contains('\x1b'), "no colour unless asked: {text}");
    assert!(!text.contains("Next Check"), "not scheduled: {text}");
    let coloured = render(&results, &score, &schedule, &Painter { color: true });
    assert!(coloured.contains("\x1b[1;32mPASS\x1b[0m"), "{coloured}");
    assert!(coloured.contains("\x1b[1;31mCRITICAL\x1b[0m"), "{coloured}");
}

#[test]
fn github_actions_annotate_what_did_not_pass() {
    assert_eq!(annotation(&sample(Status::Pass, Some(92.4))), None);
    assert_eq!(
        annotation(&sample(Status::Critical, Some(44.2)))
            .unwrap()
            .command(),
        "::error title=Health%3A phase4-processors / Vegas Line Coverage::CRITICAL 44.2%25 (threshold: ≥90%25) (runbook: runbooks/phase4-processors.md#troubleshoot)"
    );
    assert!(annotation(&sample(Status::Warn, Some(80.0)))
        .unwrap()
        .command()
        .starts_with("::warning "));
    let results = vec![sample(Status::Critical, Some(44.2))];
    let summary = step_summary(&results, &health::score(&results));
    assert!(
        summary.starts_with("## Health: CRITICAL (0/100, 0 of 1 passed)"),
        "{summary}"
    );
    assert!(
        summary.contains(
            "| phase4-processors | Vegas Line Coverage | CRITICAL | 44.2% (threshold: ≥90%) |"
        ),
        "{summary}"
    );
}

#[test]
fn a_scheduled_run_shows_the_previous_and_the_next_check() {
    let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
    let every = parse_every("6h").unwrap();
    // As `0 */6 * * *` runs: the next multiple of 6 h since midnight UTC.
    assert_eq!(
        next_check(at("2026-02-02T18:00:07Z"), every),
        at("2026-02-03T00:00:00Z")
    );
    assert_eq!(
        next_check(at("2026-02-02T14:23:00Z"), every),
        at("2026-02-02T18:00:00Z")
    );
    assert_eq!(
        next_check(at("2026-02-02T18:00:00Z"), every),
        at("2026-02-03T00:00:00Z")
    );
    assert_eq!(
        next_check(at("2026-02-02T10:10:00Z"), parse_every("30m").unwrap()),
        at("2026-02-02T10:30:00Z")
    );
    for bad in ["5h", "7d", "10s", "7m", "soon"] {
        assert!(parse_every(bad).is_err(), "{bad}");
    }
    let results = vec![sample(Status::Pass, Some(92.4))];
    let score = health::score(&results);
    let schedule = Schedule {
        last_check: at("2026-02-02T18:00:07Z"),
        previous_check: Some(PreviousCheck {
            at: at("2026-02-02T12:00:05Z"),
            verdict: Verdict::Critical,
            score: 33.3,
        }),
        every: Some("6h".into()),
        next_check: Some(next_check(at("2026-02-02T18:00:07Z"), every)),
        history: "bigquery:p.d.t".into(),
    };
    let text = render(&results, &score, &schedule, &Painter { color: false });
    assert!(
        text.ends_with(
            "Last Check: 2026-02-02 18:00 UTC · previous 2026-02-02 12:00 UTC (CRITICAL)\nNext Check: 2026-02-03 00:00 UTC (every 6h)"
        ),
        "{text}"
    );
}

#[test]
fn no_value_shows_why() {
    let mut check = sample(Status::NoData, None);
    check.message = Some("no row".into());
    assert_eq!(detail(&check), "no row");
    check.thresholds.as_mut().unwrap().comparison = "<=";
    check.value = Some(3.0);
    check.unit = crate::config::Unit::Count;
    assert_eq!(detail(&check), "3 (threshold: ≤90)");
}
