//! What `deploy/` and `docker-compose.yml` ship, checked against the code: the Grafana dashboard
//! only queries metrics the hub exports (so a renamed metric cannot leave an empty panel), and
//! every file the compose file mounts exists.

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `trackhub_…` names in `text`, with a histogram's `_bucket`/`_sum`/`_count` suffix removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("trackhub_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        names.insert(base);
    }
    names
}

#[test]
fn the_dashboard_queries_only_metrics_the_hub_exports() {
    let dashboard =
        std::fs::read_to_string(root().join("deploy/grafana/dashboards/trackhub.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let mut queried = BTreeSet::new();
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queried.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    let exported = metric_names(&std::fs::read_to_string(root().join("src/metrics.rs")).unwrap());
    let unknown: Vec<_> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the hub does not export: {unknown:?}"
    );
}

#[test]
fn every_file_the_compose_file_mounts_exists() {
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut mounts = 0;
    for line in compose.lines() {
        let Some(rest) = line.trim().strip_prefix("- ./") else {
            continue;
        };
        let path = rest.split(':').next().unwrap();
        assert!(
            root().join(path).exists(),
            "docker-compose.yml mounts ./{path}, which is missing"
        );
        mounts += 1;
    }
    assert!(mounts >= 4, "{mounts} mounts");
}
