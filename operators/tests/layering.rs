//! The operators crate's module graph has no cycles, and the records at its bottom import no
//! stage: read from the sources, so a new import that breaks the layering fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules every stage may import and that import no stage.
const FOUNDATION: [&str; 6] = ["records", "events", "geo", "time", "token", "hash"];

/// Each source file's module path (`ledger/operator.rs` is `["ledger", "operator"]`) and its
/// non-test code with comments removed.
fn sources() -> Vec<(Vec<String>, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            panic!("cannot read {}", dir.display());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&root).expect("under src");
        let mut path: Vec<String> = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if path.last().is_some_and(|l| l == "mod" || l == "lib") {
            path.pop();
        }
        if path.last().is_some_and(|l| l == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let mut code = String::new();
        for line in text.lines() {
            let trimmed = line.trim_start();
            // Unit tests may reach anywhere; the layering is about the product's code.
            if trimmed.starts_with("#[cfg(test)]") && !line.starts_with(' ') {
                break;
            }
            if trimmed.starts_with("//") {
                continue;
            }
            code.push_str(line);
            code.push('\n');
        }
        out.push((path, code));
    }
    out
}

/// The module paths `code` (in module `at`) refers to through `crate::` and `super::`.
fn references(at: &[String], code: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> Vec<String> {
        let mut parts = Vec::new();
        let mut rest = s;
        loop {
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            parts.push(rest[..end].to_string());
            match rest[end..].strip_prefix("::") {
                Some(next) => rest = next,
                None => break,
            }
        }
        parts
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        out.push(ident(&code[i + "crate::".len()..]));
    }
    for (i, _) in code.match_indices("super::") {
        // Inside a file module, `super` is the parent; grouped `use super::{a, b}` names
        // items, which belong to the parent itself.
        let mut path = at[..at.len().saturating_sub(1)].to_vec();
        path.extend(ident(&code[i + "super::".len()..]));
        out.push(path);
    }
    out
}

/// Edges between the children of `parent` (the crate's top-level modules for `[]`).
fn edges(parent: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let depth = parent.len();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, code) in sources() {
        if path.len() <= depth || path[..depth] != *parent {
            continue;
        }
        let from = path[depth].clone();
        let entry = graph.entry(from.clone()).or_default();
        for target in references(&path, &code) {
            if target.len() > depth && target[..depth] == *parent && target[depth] != from {
                entry.insert(target[depth].clone());
            }
        }
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = edges(&[]);
    assert!(graph.contains_key("ledger") && graph.contains_key("records"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn modules_within_each_stage_form_no_cycle() {
    let parents: BTreeSet<Vec<String>> = sources()
        .into_iter()
        .filter(|(p, _)| p.len() >= 2)
        .map(|(p, _)| p[..p.len() - 1].to_vec())
        .collect();
    assert!(parents.contains(&vec!["ranker".to_string()]));
    for parent in parents {
        if let Some(cycle) = find_cycle(&edges(&parent)) {
            panic!(
                "import cycle inside {}: {}",
                parent.join("::"),
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn records_and_the_schema_import_no_stage() {
    let graph = edges(&[]);
    for module in FOUNDATION {
        let stages: Vec<&String> = graph
            .get(module)
            .into_iter()
            .flatten()
            .filter(|m| !FOUNDATION.contains(&m.as_str()))
            .collect();
        assert!(
            stages.is_empty(),
            "{module} is at the bottom of the graph but imports {stages:?}"
        );
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    let refs = references(
        &["ledger".into(), "operator".into()],
        "use super::status::X; use crate::pacing::{a, b};",
    );
    assert!(
        refs.contains(&vec![
            "ledger".to_string(),
            "status".to_string(),
            "X".to_string()
        ]) || refs.contains(&vec!["ledger".to_string(), "status".to_string()])
    );
    assert!(refs.contains(&vec!["pacing".to_string()]));
}
