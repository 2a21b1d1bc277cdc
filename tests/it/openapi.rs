//! The OpenAPI document against the real router: `GET /openapi.json` is OpenAPI 3.1, every
//! documented operation is answered by a route (never axum's bare 404 or a 405), and no route
//! is added past the document (every `.route("…")` literal in `src/` is one of the few pages
//! that are not API). The validator in CI (`scripts/smoke.sh`) checks the document itself.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::Value;
use trackhub::auth::Role;

/// Routes registered outside the document, on purpose: the document itself and the pages (the
/// map, the driver app and its redirect).
const UNDOCUMENTED: &[&str] = &[
    "/openapi.json",
    "/",
    "/map/config.json",
    "/driver",
    "/driver/",
];

#[tokio::test]
async fn every_documented_operation_is_routed_and_every_route_documented() {
    let hub = TestHub::start().await;
    let (status, doc) = hub.get("/openapi.json", "f1").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let token = hub.token(Role::Admin, "admin", "f1");
    let mut ids = BTreeSet::new();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "1" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in item.as_object().unwrap() {
            let Some(id) = op["operationId"].as_str() else {
                continue; // path-level fields such as `parameters`
            };
            assert!(ids.insert(id.to_string()), "operationId `{id}` twice");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = hub
                .http
                .request(method.clone(), hub.url(&concrete))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let problem = r
                .headers()
                .get("content-type")
                .is_some_and(|c| c.to_str().unwrap().starts_with("application/problem+json"));
            assert_ne!(status, 405, "{method} {path}: documented but not routed");
            assert!(
                status != 404 || problem,
                "{method} {path}: axum's bare 404, the route does not exist"
            );
        }
    }

    // Every route literal in the source is documented or one of the known pages.
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices(".route(\"") {
                let rest = &text[i + 8..];
                let route = &rest[..rest.find('"').unwrap()];
                assert!(
                    documented.contains(route) || UNDOCUMENTED.contains(&route),
                    "{}: route {route} is not in the OpenAPI document (use utoipa_axum::routes!)",
                    path.display()
                );
            }
        }
    }
    let security: &Value = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(security["scheme"], "bearer");
    hub.stop().await;
}
