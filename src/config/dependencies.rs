//! `depends_on` across service files: every name a known service, and no cycle. A rule over the
//! whole workspace, so it runs in [`Workspace::load_all`](super::Workspace::load_all) after each
//! file was validated on its own.

use std::collections::BTreeMap;

use super::{locate, Diagnostic, Diagnostics, LoadedService};

/// A dependency cycle of `services` (name → `depends_on`), named from its smallest service
/// back to it (`["a", "b", "a"]`), if there is one. Unknown names are ignored here.
pub fn cycle(services: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = services
        .keys()
        .map(|name| (name.as_str(), Mark::New))
        .collect();
    for start in services.keys() {
        if marks[start.as_str()] != Mark::New {
            continue;
        }
        // Depth-first, iteratively: (service, index of its next dependency).
        let mut path: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        marks.insert(start.as_str(), Mark::Open);
        while let Some((name, next)) = path.last().copied() {
            let dependencies = &services[name];
            let Some(dependency) = dependencies.get(next) else {
                marks.insert(name, Mark::Done);
                path.pop();
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            match marks.get(dependency.as_str()).copied() {
                Some(Mark::New) => {
                    marks.insert(dependency.as_str(), Mark::Open);
                    path.push((dependency.as_str(), 0));
                }
                Some(Mark::Open) => {
                    let from = path
                        .iter()
                        .position(|(open, _)| *open == dependency.as_str())
                        .unwrap_or(0);
                    let mut cycle: Vec<String> = path[from..]
                        .iter()
                        .map(|(open, _)| open.to_string())
                        .collect();
                    cycle.push(dependency.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) | None => {}
            }
        }
    }
    None
}

/// Unknown names in `depends_on` and dependency cycles, as diagnostics on the files.
pub fn check(services: &[LoadedService]) -> Diagnostics {
    let mut diagnostics = Diagnostics::default();
    let graph: BTreeMap<String, Vec<String>> = services
        .iter()
        .map(|service| {
            (
                service.config.name.clone(),
                service.config.depends_on.clone(),
            )
        })
        .collect();
    let at_depends_on = |service: &LoadedService, message: String, hint: &str| {
        let source = super::files::read_regular_file(&service.path).unwrap_or_default();
        let span = locate::span_of(&source, &[locate::Part::Key("depends_on")]);
        Diagnostic::at(&service.path, &source, span, message).with_hint(hint)
    };
    for service in services {
        for dependency in &service.config.depends_on {
            if !graph.contains_key(dependency) {
                let known: Vec<&str> = graph.keys().map(String::as_str).collect();
                diagnostics.push(at_depends_on(
                    service,
                    format!(
                        "`depends_on` names `{dependency}`, which is not a service (known: {})",
                        known.join(", ")
                    ),
                    "name services by their `name`",
                ));
            }
        }
    }
    if let Some(cycle) = cycle(&graph) {
        if let Some(service) = services
            .iter()
            .find(|service| service.config.name == cycle[0])
        {
            diagnostics.push(at_depends_on(
                service,
                format!("dependency cycle: {}", cycle.join(" → ")),
                "a service cannot wait for itself: remove one `depends_on` of the cycle",
            ));
        }
    }
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
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

    #[test]
    fn cycles_are_named_from_the_first_service_back_to_it() {
        let cases: &[(Edges, Option<&[&str]>)] = &[
            (&[("a", &[]), ("b", &["a"]), ("c", &["b"])], None),
            (&[("a", &["b"]), ("b", &["a"])], Some(&["a", "b", "a"])),
            (&[("a", &["a"])], Some(&["a", "a"])),
            (
                &[("a", &[]), ("b", &["c"]), ("c", &["d"]), ("d", &["b"])],
                Some(&["b", "c", "d", "b"]),
            ),
            (&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])], None),
            (&[("a", &["unknown"])], None),
        ];
        for (edges, expected) in cases {
            let expected =
                expected.map(|names| names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
            assert_eq!(cycle(&graph(edges)), expected, "{edges:?}");
        }
    }
}
