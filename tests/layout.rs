//! The engine's layout: no two modules of the crate depend on each other, directly or through
//! others (README, Development). A circle means a concern is split across files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The crate's top-level modules and the others each one names (`crate::x`), outside its tests.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            for inner in fs::read_dir(&path).unwrap() {
                files.push((path.clone(), inner.unwrap().path()));
            }
        } else {
            files.push((path.clone(), path));
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, file) in files {
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = top.file_stem().unwrap().to_string_lossy().to_string();
        if module == "lib" {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                deps.insert(name);
            }
        }
        // `use crate::{a, b}` names several.
        for (i, _) in code.match_indices("use crate::{") {
            let rest = &code[i + "use crate::{".len()..];
            let group = &rest[..rest.find("};").unwrap_or(0)];
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// A circle through `start`, if there is one.
fn circle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    at: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in graph.get(at).into_iter().flatten() {
        if next == start {
            let mut found = path.clone();
            found.push(next.clone());
            return Some(found);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(found) = circle(graph, start, next, path) {
                return Some(found);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let graph = dependencies();
    assert!(graph.contains_key("session") && graph["session"].contains("store"));
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if let Some(found) = circle(&graph, module, module, &mut path) {
            panic!("import circle: {}", found.join(" → "));
        }
    }
}

#[test]
fn a_circle_is_found_when_there_is_one() {
    let mut graph = dependencies();
    graph.get_mut("gate").unwrap().insert("session".to_string());
    let mut path = vec!["gate".to_string()];
    assert!(circle(&graph, "gate", "gate", &mut path).is_some());
}
