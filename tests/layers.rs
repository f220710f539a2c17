//! The import graph against the layers `docs/ARCHITECTURE.md` documents ("Layers").
//!
//! The documented order is the check's only input: a numbered list, bottom floor first, each
//! item naming its modules in backticks before ` — `. Every `crate::…` path in `src/` (a `use`
//! line, a braced `use crate::{a, b::c}` group, or a path written inline) is an import of the
//! top-level module it names; a module may import only modules on a lower floor. The check fails
//! on an import that runs up or sideways, and on a module of `src/` the list does not name, so
//! the docs and the code cannot drift apart.
//!
//! Comments and the contents of literals are skipped: an intra-doc link or a string is not an
//! import. Paths to items of the crate root (`crate::install_crypto_provider`) are not
//! imports of a module. `src/lib.rs` and `src/main.rs` stand above every floor.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

/// The floors of `docs/ARCHITECTURE.md`'s "Layers" section: module → floor (1 = bottom).
fn documented_floors(architecture: &str) -> BTreeMap<String, usize> {
    let section = architecture
        .split("\n## ")
        .find(|section| section.starts_with("Layers"))
        .expect("docs/ARCHITECTURE.md has a `## Layers` section");
    let mut floors = BTreeMap::new();
    for line in section.lines() {
        let Some((number, rest)) = line.split_once(". ") else {
            continue;
        };
        let Ok(floor) = number.trim().parse::<usize>() else {
            continue;
        };
        let names = rest.split(" — ").next().unwrap_or(rest);
        for (index, name) in names.split('`').enumerate() {
            if index % 2 == 1 {
                let previous = floors.insert(name.to_string(), floor);
                assert!(
                    previous.is_none(),
                    "`{name}` is on two floors of the Layers list"
                );
            }
        }
    }
    assert!(!floors.is_empty(), "the Layers section lists no floors");
    floors
}

/// The code of `source`: comments (`//`, `/* */`, doc comments) and the contents of string and
/// character literals left out, so that neither a doc link nor a glob such as `"src/**/*.rs"`
/// reads as code.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut code = String::with_capacity(source.len());
    let mut index = 0;
    let at = |index: usize| chars.get(index).copied().unwrap_or('\0');
    while index < chars.len() {
        let c = chars[index];
        let previous_is_identifier =
            index > 0 && (chars[index - 1].is_alphanumeric() || chars[index - 1] == '_');
        if c == '/' && at(index + 1) == '/' {
            while index < chars.len() && chars[index] != '\n' {
                index += 1;
            }
        } else if c == '/' && at(index + 1) == '*' {
            let mut depth = 0;
            while index < chars.len() {
                if chars[index] == '/' && at(index + 1) == '*' {
                    depth += 1;
                    index += 2;
                } else if chars[index] == '*' && at(index + 1) == '/' {
                    depth -= 1;
                    index += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    index += 1;
                }
            }
        } else if c == 'r' && !previous_is_identifier && matches!(at(index + 1), '"' | '#') {
            // A raw string: r"…", r#"…"#; `r#ident` (a raw identifier) is code.
            let mut hashes = 0;
            let mut next = index + 1;
            while at(next) == '#' {
                hashes += 1;
                next += 1;
            }
            if at(next) != '"' {
                code.push(c);
                index += 1;
                continue;
            }
            index = next + 1;
            while index < chars.len() {
                if chars[index] == '"' && (1..=hashes).all(|offset| at(index + offset) == '#') {
                    index += 1 + hashes;
                    break;
                }
                index += 1;
            }
            code.push_str("\"\"");
        } else if c == '"' {
            index += 1;
            while index < chars.len() && chars[index] != '"' {
                index += if chars[index] == '\\' { 2 } else { 1 };
            }
            index += 1;
            code.push_str("\"\"");
        } else if c == '\'' && (at(index + 1) == '\\' || at(index + 2) == '\'') {
            // A character literal ('x', '\n', '\u{1b}'); a lifetime (`'a`) is code.
            index += 1;
            while index < chars.len() && chars[index] != '\'' {
                index += if chars[index] == '\\' { 2 } else { 1 };
            }
            index += 1;
            code.push_str("' '");
        } else {
            code.push(c);
            index += 1;
        }
    }
    code
}

fn identifier_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first names of a braced group's top-level items: `a, b::{c, d}, self` → `a`, `b`, `self`.
fn group_heads(group: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = 0;
    for (index, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(identifier_at(group[item_start..index].trim_start()));
                item_start = index + 1;
            }
            _ => {}
        }
    }
    heads.push(identifier_at(group[item_start..].trim_start()));
    heads.into_iter().filter(|head| !head.is_empty()).collect()
}

/// The top-level names every `crate::` path of `code` starts with.
fn crate_paths(code: &str) -> Vec<&str> {
    let mut names = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::`, not this crate
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(index, _)| index);
            names.extend(group_heads(&group[..end]));
        } else {
            names.push(identifier_at(rest));
        }
    }
    names
}

fn rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The top-level modules of `src/` (`src/x.rs` or `src/x/`).
fn modules(src: &Path) -> Vec<String> {
    let mut modules: Vec<String> = fs::read_dir(src)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir() || path.extension().is_some_and(|e| e == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "lib" && name != "main")
        .collect();
    modules.sort();
    modules
}

/// Every import of `src/` that does not run down the documented floors, as a line to read.
fn violations(root: &Path) -> Vec<String> {
    let architecture = fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let floors = documented_floors(&architecture);
    let src = root.join("src");
    let modules = modules(&src);
    let mut problems: Vec<String> = modules
        .iter()
        .filter(|module| !floors.contains_key(*module))
        .map(|module| {
            format!("module `{module}` is on no floor of docs/ARCHITECTURE.md's Layers list")
        })
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let mut components = relative.components();
        let first = components.next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        let Some(&floor) = floors.get(&module) else {
            continue; // lib.rs, main.rs; an undocumented module is reported above
        };
        let code = code_only(&fs::read_to_string(&file).unwrap());
        let mut seen = Vec::new();
        for target in crate_paths(&code) {
            if target == module || seen.contains(&target) || !modules.iter().any(|m| m == target) {
                continue;
            }
            seen.push(target);
            let Some(&target_floor) = floors.get(target) else {
                continue;
            };
            if target_floor >= floor {
                let direction = if target_floor == floor {
                    "on the same floor"
                } else {
                    "above it"
                };
                problems.push(format!(
                    "src/{}: `{module}` (floor {floor}) imports `{target}` (floor {target_floor}), {direction}",
                    relative.display()
                ));
            }
        }
    }
    problems
}

#[test]
fn every_module_imports_only_modules_on_lower_floors() {
    let problems = violations(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(
        problems.is_empty(),
        "imports against the layers of docs/ARCHITECTURE.md (\"Layers\"): move what both sides \
         need down, or change the documented order if the design changed:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn crate_paths_are_read_from_use_lines_groups_and_inline_paths() {
    let code = code_only(
        "use crate::{\n    config::{A, B},\n    platform::{self, C},\n    untrusted,\n};\n\
         /// [`crate::health`] in a doc comment is no import\n\
         use crate::repo::short; // crate::drift after code\n\
         const GLOB: &str = \"src/**/*.rs crate::wiring\"; let c = '\"'; let r = r#\"crate::x\"#;\n\
         fn f<'a>() { crate::checks::run(); my_crate::x(); }\n\
         /* crate::fleet /* nested */ crate::emulator */ use crate::exit;",
    );
    assert_eq!(
        crate_paths(&code),
        ["config", "platform", "untrusted", "repo", "checks", "exit"]
    );
}

#[test]
fn the_layers_list_is_read_by_floor() {
    let floors = documented_floors(
        "# x\n\n## Layers\n\ntext with `words`\n\n1. `a`, `b` — leaves (`not_a_module`)\n\
         2. `c` — above\n\n## Next\n\n3. `d` — another section\n",
    );
    assert_eq!(
        floors.into_iter().collect::<Vec<_>>(),
        [("a".into(), 1), ("b".into(), 1), ("c".into(), 2)]
    );
}
