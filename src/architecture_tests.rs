//! The shape of the source tree, checked: the modules import each other without a circle (so
//! each rule has one home and a change has one direction to travel), and no source file but
//! a test file grows past 600 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    path.strip_prefix(src)
        .expect("under src")
        .to_string_lossy()
        .into_owned()
}

fn is_test_file(relative: &str) -> bool {
    relative.contains("tests")
}

/// The top-level module a file belongs to (`apply/records.rs` -> `apply`).
fn module_of(relative: &str) -> Option<String> {
    let first = relative.split('/').next()?.trim_end_matches(".rs");
    (!matches!(first, "lib" | "main")).then(|| first.to_string())
}

/// The modules a file's non-test code names as `crate::<module>`, also inside
/// `use crate::{a, b::c}` groups.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.insert(first_ident(&item));
        } else {
            found.insert(first_ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn first_ident(text: &str) -> String {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    text[..end].to_string()
}

/// module -> the other top-level modules it imports.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<(String, String)> = sources()
        .iter()
        .map(|p| {
            (
                relative(p),
                std::fs::read_to_string(p).expect("read source"),
            )
        })
        .collect();
    let modules: BTreeSet<String> = files.iter().filter_map(|(r, _)| module_of(r)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (relative, text) in &files {
        let Some(module) = module_of(relative).filter(|_| !is_test_file(relative)) else {
            continue;
        };
        let targets = graph.entry(module.clone()).or_default();
        for target in imports(text) {
            if target != module && modules.contains(&target) {
                targets.insert(target);
            }
        }
    }
    graph
}

/// A path that leaves `from` and comes back to it, if there is one.
fn circle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("non-empty path");
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                let mut circle = path.clone();
                circle.push(from.to_string());
                return Some(circle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn the_modules_import_each_other_without_a_circle() {
    let graph = import_graph();
    assert!(graph.contains_key("apply") && graph["controller"].contains("apply"));
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| circle_through(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_import_reader_sees_groups_and_paths() {
    let text = "use crate::api::X;\nuse crate::{journal::{Done, Journal}, plan, Error};\n\
                fn f() { crate::time::now(); }\n#[cfg(test)]\nmod tests { use crate::cli; }";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["Error", "api", "journal", "plan", "time"]);
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(
        circle_through(&graph, "a").expect("a circle"),
        ["a", "b", "a"]
    );
}

#[test]
fn no_source_file_but_a_test_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .iter()
        .map(|p| {
            (
                relative(p),
                std::fs::read_to_string(p).expect("read source"),
            )
        })
        .filter(|(relative, text)| !is_test_file(relative) && text.lines().count() > MAX_LINES)
        .map(|(relative, text)| format!("{relative}: {} lines", text.lines().count()))
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}
