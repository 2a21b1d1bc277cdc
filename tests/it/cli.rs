//! The admin subcommands (`trackhub trips …`, `trackhub devices …`) against a real hub: the
//! binary reads the hub's secret from its data dir and calls the REST API.

use crate::common;

use common::*;
use serde_json::Value;
use std::process::Command;

/// Runs `trackhub <args>` against `hub`; returns stdout parsed as JSON, panicking with stderr
/// on failure.
fn trackhub(hub: &TestHub, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_trackhub"))
        .args(args)
        .args(["--hub", &hub.base, "--fleet", "f1"])
        .env("TRACKHUB_DATA_DIR", &hub.data_dir)
        .env_remove("TRACKHUB_JWT_SECRET")
        .output()
        .expect("trackhub runs");
    assert!(
        out.status.success(),
        "trackhub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trips_and_devices_are_managed_from_the_command_line() {
    let hub = TestHub::start().await;
    let made = tokio::task::block_in_place(|| {
        trackhub(
            &hub,
            &[
                "trips",
                "create",
                "--id",
                "t-cli",
                "--driver",
                "D1",
                "--stop",
                "47.61,-122.33",
                "--stop",
                "47.62,-122.34,80",
            ],
        )
    });
    assert_eq!(made["id"], "t-cli", "{made}");
    assert_eq!(made["stops"].as_array().unwrap().len(), 2);
    assert_eq!(made["stops"][1]["radius_m"], 80.0);
    let (status, stored) = hub.get("/v1/trips/t-cli", "f1").await;
    assert_eq!(status, 200);
    assert_eq!(stored["driver_id"], "D1");

    let listed = tokio::task::block_in_place(|| trackhub(&hub, &["trips", "list"]));
    assert_eq!(listed["trips"][0]["id"], "t-cli", "{listed}");
    let shown = tokio::task::block_in_place(|| trackhub(&hub, &["trips", "show", "t-cli"]));
    assert_eq!(shown["stops"][0]["id"], "s1");

    let device = tokio::task::block_in_place(|| {
        trackhub(
            &hub,
            &["devices", "create", "--id", "phone-1", "--driver", "D1"],
        )
    });
    let key = device["key"].as_str().expect("the key, shown once");
    assert!(key.len() >= 32);
    let devices = tokio::task::block_in_place(|| trackhub(&hub, &["devices", "list"]));
    assert_eq!(devices["devices"][0]["id"], "phone-1", "{devices}");
    let one = tokio::task::block_in_place(|| trackhub(&hub, &["devices", "show", "phone-1"]));
    assert_eq!(one["driver_id"], "D1");
    hub.stop().await;
}
