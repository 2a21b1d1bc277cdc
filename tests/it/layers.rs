//! The layers of `src/`, checked: every top-level module belongs to one layer, and imports
//! (`crate::…` paths, in `use` lines and inline) point to its own layer or one below, never
//! above; and top-level modules never import each other in a cycle. Test code (`#[cfg(test)]`
//! modules) is left out: a test may build the real thing from any layer.
//!
//! Layers, from the bottom: the model (domain types, shutdown, metrics) → wire formats
//! (`protocol`) → core (pure geometry, storage, fan-out, bus, webhook delivery, limits) → the
//! hub (the ingest pipeline) → edges (REST, sockets, streams, auth, tools, and the configuration
//! and shared state they are handed) → the application (start-up and shutdown).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: &[(&str, &[&str])] = &[
    ("model", &["model", "shutdown", "metrics"]),
    ("formats", &["protocol"]),
    (
        "core",
        &[
            "geo", "eta", "store", "report", "fanout", "bus", "webhooks", "limits",
        ],
    ),
    ("hub", &["hub"]),
    (
        "edges",
        &[
            "config", "state", "error", "extract", "auth", "api", "ws", "stream", "web", "admin",
            "customer", "replay", "eval",
        ],
    ),
    ("app", &["app"]),
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, mods)| mods.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer: add it to LAYERS"))
}

/// The source of a file without its `#[cfg(test)]` modules (from the attribute to the end of
/// the file: test modules sit at the end, as everywhere in this crate).
fn without_tests(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

/// Top-level module → the top-level modules it imports, with a file that does.
fn import_graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if !rel.ends_with(".rs") || rel == "lib.rs" || rel == "main.rs" {
                continue;
            }
            let module = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let code = without_tests(&text);
            let imports = graph.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    imports.entry(name).or_insert_with(|| rel.clone());
                }
            }
        }
    }
    graph
}

#[test]
fn imports_point_down_only_and_modules_form_no_cycle() {
    let graph = import_graph();
    let mut upward = Vec::new();
    for (module, imports) in &graph {
        for (target, file) in imports {
            if layer_of(target) > layer_of(module) {
                upward.push(format!(
                    "{file}: `{module}` ({}) imports `{target}` ({})",
                    LAYERS[layer_of(module)].0,
                    LAYERS[layer_of(target)].0
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports pointing up:\n{}",
        upward.join("\n")
    );

    // No cycle between top-level modules (depth-first search with a path stack).
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("import cycle: {} → {m}", path[at..].join(" → "));
        }
        path.push(m);
        for next in graph.get(m).into_iter().flat_map(|i| i.keys()) {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_model_imports_nothing_of_the_crate_but_itself() {
    let graph = import_graph();
    assert_eq!(
        graph["model"].keys().collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "the model is what every layer may import; it imports none of them"
    );
}
