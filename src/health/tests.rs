use super::*;
use crate::checks::Thresholds;

fn config(name: &str) -> ServiceConfig {
    toml::from_str(&format!(
        "name = \"{name}\"\nrunbook = \"runbooks/{name}.md\"\n[target]\nkind = \"local\"\n[image]\nrepository = \"r/{name}\"\n"
    ))
    .unwrap()
}

pub(crate) fn check(service: &str, name: &str, status: Status) -> HealthCheck {
    HealthCheck {
        service: service.into(),
        check: name.into(),
        provider: "bigquery",
        status,
        severity: match status {
            Status::Pass => Severity::Ok,
            Status::Critical => Severity::Critical,
            _ => Severity::Warning,
        },
        value: status.evaluated().then_some(50.0),
        unit: Unit::Percent,
        thresholds: Some(Thresholds {
            comparison: ">=",
            warn: 90.0,
            critical: 70.0,
        }),
        query: "SELECT 1".into(),
        elapsed_ms: 1,
        link: None,
        runbook: format!("runbooks/{service}.md#troubleshoot"),
        message: None,
    }
}

fn statuses(list: &[Status]) -> Vec<HealthCheck> {
    list.iter()
        .enumerate()
        .map(|(index, status)| check("s", &format!("c{index}"), *status))
        .collect()
}

#[test]
fn the_score_is_the_share_of_passes_and_bands_the_verdict() {
    use Status::*;
    let table: &[(&[Status], usize, Verdict)] = &[
        (&[Pass, Pass, Pass, Pass, Pass], 100, Verdict::Pass),
        (&[Pass, Pass, Pass, Pass, Warn], 80, Verdict::Pass),
        (&[Pass, Pass, Pass, Warn, Warn], 60, Verdict::Warning),
        (&[Pass, Warn], 50, Verdict::Warning),
        (&[Pass, Warn, Warn], 33, Verdict::Critical),
        // ERROR and NO DATA are not passes.
        (&[Pass, Pass, Pass, Error, NoData], 60, Verdict::Warning),
        (&[NoData, Error], 0, Verdict::Critical),
    ];
    for (list, percent, verdict) in table {
        let score = score(&statuses(list));
        assert_eq!(score.percent as usize, *percent, "{list:?}");
        assert_eq!(score.verdict, *verdict, "{list:?}");
        assert_eq!(score.total, list.len());
    }
}

#[test]
fn any_critical_check_makes_the_run_critical() {
    use Status::*;
    // The team's run: 3 of 5 passed (60%), Vegas coverage 44.2% CRITICAL.
    let run = statuses(&[Pass, Pass, Pass, Critical, Warn]);
    let score = score(&run);
    assert_eq!(score.passed, 3);
    assert_eq!(score.verdict, Verdict::Critical);
    assert_eq!(score.verdict.exit_code(), 2);
    let mostly_fine = statuses(&[
        Pass, Pass, Pass, Pass, Pass, Pass, Pass, Pass, Pass, Critical,
    ]);
    assert_eq!(super::score(&mostly_fine).verdict, Verdict::Critical);
    // NO DATA weighed critical by `on_no_data` is critical too.
    let mut no_data = statuses(&[Pass, Pass, Pass, Pass, Pass, NoData]);
    no_data[5].severity = Severity::Critical;
    assert_eq!(super::score(&no_data).verdict, Verdict::Critical);
}

#[test]
fn no_check_at_all_is_not_healthy() {
    let score = score(&[]);
    assert_eq!(score.total, 0);
    assert_eq!(score.verdict, Verdict::Critical);
}

#[test]
fn exit_codes_are_0_1_2() {
    assert_eq!(Verdict::Pass.exit_code(), 0);
    assert_eq!(Verdict::Warning.exit_code(), 1);
    assert_eq!(Verdict::Critical.exit_code(), 2);
    assert_eq!(Verdict::Pass.exit_code_with(true), 1);
    assert_eq!(Verdict::Critical.exit_code_with(true), 2);
    assert_eq!(Verdict::Pass.exit_code_with(false), 0);
}

#[test]
fn runbook_links_name_the_troubleshooting_section() {
    assert_eq!(runbook_link(&config("api")), "runbooks/api.md#troubleshoot");
}

#[test]
fn two_regions_of_one_service_never_share_an_alert() {
    let config = crate::config::parse(
        std::path::Path::new("s.toml"),
        "name = \"hello\"\nrunbook = \"r.md\"\n[target]\nkind = \"cloud-run\"\nproject = \"p\"\nregions = [\"us-west2\", \"us-east1\"]\n[image]\nrepository = \"127.0.0.1:5000/hello\"\n",
    )
    .unwrap();
    let keys: Vec<String> = config
        .region_configs(None)
        .unwrap()
        .iter()
        .map(|config| HealthCheck::from_architecture(config, &[], 0).key())
        .collect();
    assert_eq!(
        keys,
        ["hello@us-west2/Architecture", "hello@us-east1/Architecture"]
    );
}
