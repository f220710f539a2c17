use std::collections::BTreeMap;

use super::*;
use crate::exit::ExitStatus::{self, *};

fn services(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    edges
        .iter()
        .map(|(name, needs)| {
            (
                name.to_string(),
                needs.iter().map(|n| n.to_string()).collect(),
            )
        })
        .collect()
}

/// Services and their `depends_on`.
type Edges<'a> = &'a [(&'a str, &'a [&'a str])];

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| name.to_string()).collect()
}

/// The fleet: b depends on a, c on b, d on nothing.
fn abcd() -> BTreeMap<String, Vec<String>> {
    services(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])])
}

#[test]
fn order_puts_dependencies_first_and_ties_by_name() {
    let cases: &[(Edges, &[&str], &[&str])] = &[
        (
            &[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])],
            &["a", "b", "c", "d"],
            &["a", "b", "c", "d"],
        ),
        (
            &[("x", &["y"]), ("y", &["z"]), ("z", &[])],
            &["x", "y", "z"],
            &["z", "y", "x"],
        ),
        // A dependency outside the deploy is taken as deployed.
        (&[("a", &[]), ("b", &["a"])], &["b"], &["b"]),
        (
            &[("w", &["a", "b"]), ("a", &[]), ("b", &["a"])],
            &["w", "b", "a"],
            &["a", "b", "w"],
        ),
    ];
    for (edges, selected, expected) in cases {
        let fleet = Fleet::plan(&names(selected), &services(edges)).unwrap();
        assert_eq!(fleet.order(), names(expected), "{edges:?} {selected:?}");
    }
}

#[test]
fn planning_refuses_unknown_services_and_cycles_naming_them() {
    assert_eq!(
        Fleet::plan(&names(&["nope"]), &abcd()).unwrap_err(),
        FleetError::UnknownService("nope".into())
    );
    let cyclic = services(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"])]);
    let error = Fleet::plan(&names(&["a"]), &cyclic).unwrap_err();
    assert_eq!(error.to_string(), "dependency cycle: a → c → b → a");
}

/// One scripted run: each step is (parallel, services that finish and how) → which start.
fn run(
    graph: &BTreeMap<String, Vec<String>>,
    selected: &[&str],
    parallel: usize,
    outcomes: &BTreeMap<&str, ExitStatus>,
) -> (Vec<Vec<String>>, Fleet) {
    let mut fleet = Fleet::plan(&names(selected), graph).unwrap();
    let mut waves = Vec::new();
    loop {
        let started = fleet.start_ready(parallel);
        if started.is_empty() {
            break;
        }
        for name in &started {
            fleet.finish(
                name,
                outcomes.get(name.as_str()).copied().unwrap_or(Success),
            );
        }
        waves.push(started);
    }
    (waves, fleet)
}

#[test]
fn a_failed_service_stops_its_dependents_and_independent_ones_go_on() {
    let outcomes = BTreeMap::from([("b", RolledBack)]);
    let cases: &[(usize, &[&[&str]])] = &[
        // One at a time: a, then b (fails), then d; c is never started.
        (1, &[&["a"], &["b"], &["d"]]),
        // Two at a time: a and d together, then b.
        (2, &[&["a", "d"], &["b"]]),
        (8, &[&["a", "d"], &["b"]]),
    ];
    for (parallel, expected) in cases {
        let (waves, fleet) = run(&abcd(), &["a", "b", "c", "d"], *parallel, &outcomes);
        let expected: Vec<Vec<String>> = expected.iter().map(|wave| names(wave)).collect();
        assert_eq!(waves, expected, "parallel {parallel}");
        assert_eq!(fleet.state("a"), Some(&ServiceState::Finished(Success)));
        assert_eq!(fleet.state("b"), Some(&ServiceState::Finished(RolledBack)));
        assert_eq!(
            fleet.state("c"),
            Some(&ServiceState::NotStarted(NotStarted::DependencyFailed {
                dependency: "b".into()
            }))
        );
        assert_eq!(fleet.state("d"), Some(&ServiceState::Finished(Success)));
        assert!(fleet.is_done());
        assert_eq!(fleet.exit_status(), RolledBack);
    }
}

#[test]
fn dependents_of_a_failure_are_not_started_transitively_and_name_the_failure() {
    let graph = services(&[
        ("a", &[]),
        ("b", &["a"]),
        ("c", &["b"]),
        ("e", &["c", "d"]),
        ("d", &[]),
    ]);
    let (_, fleet) = run(
        &graph,
        &["a", "b", "c", "d", "e"],
        1,
        &BTreeMap::from([("a", StoppedBeforeTraffic)]),
    );
    for name in ["b", "c", "e"] {
        assert_eq!(
            fleet.state(name).map(|state| match state {
                ServiceState::NotStarted(why) => why.to_string(),
                other => format!("{other:?}"),
            }),
            Some("not started: dependency a failed".into()),
            "{name}"
        );
    }
    assert_eq!(fleet.state("d"), Some(&ServiceState::Finished(Success)));
}

#[test]
fn the_exit_status_is_the_worst_outcome() {
    let cases: &[(&[ExitStatus], ExitStatus)] = &[
        (&[Success, Success], Success),
        (&[Success, StoppedBeforeTraffic], StoppedBeforeTraffic),
        (&[RolledBack, StoppedBeforeTraffic], RolledBack),
        (&[RolledBack, Held], Held),
        (&[Held, Failure], Failure),
        (&[RollbackFailed, Failure, RolledBack], RollbackFailed),
    ];
    for (outcomes, expected) in cases {
        let graph: BTreeMap<String, Vec<String>> = (0..outcomes.len())
            .map(|index| (format!("s{index}"), Vec::new()))
            .collect();
        let selected: Vec<String> = graph.keys().cloned().collect();
        let mut fleet = Fleet::plan(&selected, &graph).unwrap();
        let started = fleet.start_ready(outcomes.len());
        for (name, outcome) in started.iter().zip(outcomes.iter()) {
            fleet.finish(name, *outcome);
        }
        assert_eq!(fleet.exit_status(), *expected, "{outcomes:?}");
    }
}

#[test]
fn an_interrupt_starts_nothing_new_and_running_rollouts_end_on_their_own() {
    let mut fleet = Fleet::plan(&names(&["a", "b", "c", "d"]), &abcd()).unwrap();
    assert_eq!(fleet.start_ready(1), names(&["a"]));
    fleet.interrupt();
    assert!(!fleet.is_done());
    assert_eq!(fleet.start_ready(4), Vec::<String>::new());
    fleet.finish("a", Success);
    assert!(fleet.is_done());
    assert_eq!(
        fleet.state("d"),
        Some(&ServiceState::NotStarted(NotStarted::Interrupted))
    );
    assert_eq!(fleet.exit_status(), StoppedBeforeTraffic);
}

#[test]
fn nothing_starts_beyond_the_parallel_limit() {
    let graph = services(&[("a", &[]), ("b", &[]), ("c", &[])]);
    let mut fleet = Fleet::plan(&names(&["a", "b", "c"]), &graph).unwrap();
    assert_eq!(fleet.start_ready(2), names(&["a", "b"]));
    assert_eq!(fleet.start_ready(2), Vec::<String>::new());
    fleet.finish("b", Success);
    assert_eq!(fleet.start_ready(2), names(&["c"]));
}

#[test]
fn a_chain_runs_in_its_own_order_and_a_failure_leaves_every_later_one_not_started() {
    // Not alphabetical: the canary region first.
    let regions = names(&["us-west2", "us-east1", "europe-west1"]);
    let mut wave = Fleet::chain(&regions).unwrap();
    assert_eq!(wave.order(), regions);
    assert_eq!(wave.start_ready(8), names(&["us-west2"]));
    assert!(wave.start_ready(8).is_empty(), "one region at a time");
    wave.finish("us-west2", Success);
    assert_eq!(wave.start_ready(8), names(&["us-east1"]));
    wave.finish("us-east1", RolledBack);
    assert!(wave.start_ready(8).is_empty());
    assert_eq!(
        wave.state("europe-west1"),
        Some(&ServiceState::NotStarted(NotStarted::DependencyFailed {
            dependency: "us-east1".into()
        }))
    );
    assert!(wave.is_done());
    assert_eq!(wave.exit_status(), RolledBack);

    let mut healthy = Fleet::chain(&regions).unwrap();
    while let Some(region) = healthy.start_ready(1).pop() {
        healthy.finish(&region, Success);
    }
    assert_eq!(healthy.exit_status(), Success);
    assert!(Fleet::chain(&names(&["us-west2", "us-west2"])).is_err());
}
