//! The workflow files parsed as YAML. `.github/workflows/drift.yml` must run `deployer drift
//! --github-issue` every 6 hours and on demand, with the permissions the issue lifecycle and
//! Workload Identity Federation need, and the full history for the comparison.
//! `.github/workflows/deploy.yml` must deploy non-interactively, accept warnings only when the
//! person starting the run asks for it, and authenticate the same way. Every flag their command
//! lines pass must exist in the binary's `--help`.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

use yaml_rust2::{Yaml, YamlLoader};

fn load(name: &str) -> Yaml {
    let path = format!("{}/.github/workflows/{name}", env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    let mut documents = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|error| panic!("{path} is not valid YAML: {error}"));
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

fn workflow() -> Yaml {
    load("drift.yml")
}

/// The `--long` flags of every line of `script` that runs `deployer COMMAND`.
fn flags_of(script: &str, command: &str) -> Vec<String> {
    let marker = format!("deployer {command}");
    script
        .lines()
        .filter(|line| line.contains(&marker))
        .flat_map(|line| line.split_whitespace())
        .filter(|word| word.starts_with("--"))
        .map(|word| word.split('=').next().unwrap_or(word).to_string())
        .collect()
}

/// `deployer COMMAND --help`.
fn help(command: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// Every flag in `flags` is one `deployer COMMAND` accepts.
fn assert_flags_exist(flags: &[String], command: &str) {
    let help = help(command);
    for flag in flags {
        assert!(
            help.split(|c: char| c.is_whitespace() || c == ',')
                .any(|word| word == flag),
            "`deployer {command}` has no `{flag}`:\n{help}"
        );
    }
}

/// The steps of `job`, and the position of the first that `uses` an action starting with `prefix`.
fn uses(steps: &[Yaml], prefix: &str) -> Option<usize> {
    steps.iter().position(|step| {
        step["uses"]
            .as_str()
            .is_some_and(|uses| uses.starts_with(prefix))
    })
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
    let uses = |prefix: &str| uses(steps, prefix);
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
    let flags = flags_of(steps[drift]["run"].as_str().unwrap(), "drift");
    assert!(flags.contains(&"--github-issue".to_string()), "{flags:?}");
    assert_flags_exist(&flags, "drift");
}

#[test]
fn the_deploy_workflow_deploys_on_demand_accepting_only_what_the_team_chooses() {
    let workflow = load("deploy.yml");
    let on = workflow["on"].as_hash().expect("triggers");
    assert_eq!(on.len(), 1, "a deploy starts only on demand: {on:?}");
    let inputs = &workflow["on"]["workflow_dispatch"]["inputs"];
    assert_eq!(inputs["service"]["required"].as_bool(), Some(true));
    for input in ["accept_warnings", "accept_schema_changes"] {
        assert_eq!(inputs[input]["type"].as_str(), Some("boolean"), "{input}");
        assert_eq!(
            inputs[input]["default"].as_bool(),
            Some(false),
            "{input}: nothing is accepted unless asked"
        );
    }
    let permissions = &workflow["permissions"];
    assert_eq!(permissions["id-token"].as_str(), Some("write"));
    assert_eq!(permissions["contents"].as_str(), Some("read"));
    assert_eq!(
        permissions.as_hash().map(|permissions| permissions.len()),
        Some(2),
        "no other permission"
    );
    assert!(workflow["concurrency"]["group"]
        .as_str()
        .is_some_and(|group| group.contains("inputs.service")));

    let jobs = workflow["jobs"].as_hash().expect("jobs");
    assert_eq!(jobs.len(), 1);
    let job = &workflow["jobs"]["deploy"];
    assert!(
        job["environment"].as_str().is_some(),
        "a protected environment"
    );
    let steps = job["steps"].as_vec().expect("steps");
    let checkout = uses(steps, "actions/checkout@").expect("a checkout");
    assert_eq!(steps[checkout]["with"]["fetch-depth"].as_i64(), Some(0));
    let auth = uses(steps, "google-github-actions/auth@").expect("Workload Identity Federation");
    assert!(steps[auth]["with"]["workload_identity_provider"]
        .as_str()
        .is_some());
    assert!(
        steps[auth]["with"]["credentials_json"].is_badvalue(),
        "no key file"
    );
    for step in steps {
        if let Some(run) = step["run"].as_str() {
            assert!(
                !run.contains("${{ inputs.") && !run.contains("${{ github.event.inputs."),
                "inputs go through the environment, never pasted into a script: {run}"
            );
        }
    }
    let deploy = steps
        .iter()
        .position(|step| {
            step["run"]
                .as_str()
                .is_some_and(|run| run.contains("deployer deploy"))
        })
        .expect("a step runs `deployer deploy`");
    assert!(checkout < deploy && auth < deploy);
    let run = steps[deploy]["run"].as_str().unwrap();
    let command_line = run
        .lines()
        .find(|line| line.contains("deployer deploy"))
        .unwrap();
    assert!(command_line.contains("--non-interactive"), "{command_line}");
    for forbidden in [
        "--accept-warnings",
        "--accept-schema-changes",
        "--yes",
        "--skip-preflight",
    ] {
        assert!(
            !command_line.contains(forbidden),
            "never on the command line itself: {command_line}"
        );
    }
    // The acceptances are added only by the inputs.
    let env = &steps[deploy]["env"];
    assert_eq!(
        env["ACCEPT_WARNINGS"].as_str(),
        Some("${{ inputs.accept_warnings }}")
    );
    assert_eq!(
        env["ACCEPT_SCHEMA_CHANGES"].as_str(),
        Some("${{ inputs.accept_schema_changes }}")
    );
    assert!(
        run.contains(r#"if [ "$ACCEPT_WARNINGS" = "true" ]; then flags+=(--accept-warnings); fi"#)
    );
    assert!(run.contains(
        r#"if [ "$ACCEPT_SCHEMA_CHANGES" = "true" ]; then flags+=(--accept-schema-changes); fi"#
    ));
    let mut flags = flags_of(run, "deploy");
    flags.extend([
        "--accept-warnings".to_string(),
        "--accept-schema-changes".to_string(),
    ]);
    assert_flags_exist(&flags, "deploy");
}
