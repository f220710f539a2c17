//! `.github/workflows/drift.yml` parsed as YAML: it must run `deployer drift --github-issue`
//! every 6 hours and on demand, with the permissions the issue lifecycle and Workload Identity
//! Federation need, and the full history for the comparison.

use yaml_rust2::{Yaml, YamlLoader};

fn workflow() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.github/workflows/drift.yml");
    let text = std::fs::read_to_string(path).expect("read the drift workflow");
    let mut documents = YamlLoader::load_from_str(&text).expect("the drift workflow is valid YAML");
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

#[test]
fn the_drift_workflow_runs_every_six_hours_and_on_demand() {
    let workflow = workflow();
    let on = &workflow["on"];
    let cron = on["schedule"][0]["cron"].as_str().expect("a schedule");
    let fields: Vec<&str> = cron.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "{cron}");
    assert_eq!(fields[1], "*/6", "every 6 hours: {cron}");
    assert!(
        fields[0].parse::<u8>().is_ok_and(|minute| minute < 60),
        "{cron}"
    );
    assert_eq!(&fields[2..], ["*", "*", "*"], "{cron}");
    assert!(!on["workflow_dispatch"].is_badvalue(), "runs on demand");

    let permissions = &workflow["permissions"];
    assert_eq!(permissions["issues"].as_str(), Some("write"));
    assert_eq!(permissions["id-token"].as_str(), Some("write"));
    assert_eq!(permissions["contents"].as_str(), Some("read"));
}

#[test]
fn the_drift_job_authenticates_by_workload_identity_and_keeps_issues() {
    let workflow = workflow();
    let jobs = workflow["jobs"].as_hash().expect("jobs");
    assert_eq!(jobs.len(), 1);
    let steps = workflow["jobs"]["drift"]["steps"].as_vec().expect("steps");
    let uses = |prefix: &str| {
        steps.iter().position(|step| {
            step["uses"]
                .as_str()
                .is_some_and(|uses| uses.starts_with(prefix))
        })
    };
    let checkout = uses("actions/checkout@").expect("a checkout");
    assert_eq!(
        steps[checkout]["with"]["fetch-depth"].as_i64(),
        Some(0),
        "the whole history"
    );
    let auth = uses("google-github-actions/auth@").expect("Workload Identity Federation");
    assert!(steps[auth]["with"]["workload_identity_provider"]
        .as_str()
        .is_some());
    assert!(
        steps[auth]["with"]["credentials_json"].is_badvalue(),
        "no key file"
    );
    let drift = steps
        .iter()
        .position(|step| {
            step["run"]
                .as_str()
                .is_some_and(|run| run.contains("deployer drift --github-issue"))
        })
        .expect("a step runs `deployer drift --github-issue`");
    assert!(auth < drift && checkout < drift);
    assert!(steps[drift]["env"]["GITHUB_TOKEN"]
        .as_str()
        .is_some_and(|token| token.contains("secrets.GITHUB_TOKEN")));
}
