//! What the dispatcher's map reads (issue 19), against a real hub over real sockets: the
//! fleet's drivers with status, trip progress and ETA (`GET /v1/fleet/drivers`), the newest
//! events first (`GET /v1/events?order=desc`), and why a check-in happened (its evidence).

use crate::common;

use common::*;
use serde_json::{json, Value};
use trackhub::auth::Role;

const LAT: f64 = 41.15;
const LON: f64 = -8.61;

fn row<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["driver_id"] == id)
        .unwrap_or_else(|| panic!("no row for {id}: {list}"))
}

#[tokio::test]
async fn the_drivers_panel_lists_moving_stopped_and_offline_drivers_with_their_trips() {
    let hub = TestHub::start().await;
    // A trip for a driver whose phone never reported, and one for a driver who will park at it.
    for (trip, driver) in [("t-idle", "idle"), ("t-park", "parker")] {
        let (lat, lon) = offset(LAT, LON, 2_000.0, 0.0);
        let body = json!({"id": trip, "driver_id": driver, "stops": [
            {"id": "far", "name": "Far away", "lat": lat, "lon": lon},
            {"id": "far2", "lat": lat + 0.01, "lon": lon}
        ]});
        assert_eq!(hub.post("/v1/trips", "f1", &body).await.0, 201);
    }
    let t0 = now_ms() - 200_000;
    // `mover` drives north at 10 m/s; `parker` stays put for 3 minutes (driver.stopped after
    // the 75 s dwell).
    let mut mover = hub.driver("mover", "f1").await;
    let driving: Vec<Value> = (0..10)
        .map(|i| {
            let (lat, lon) = offset(LAT, LON, i as f64 * 50.0, 0.0);
            ping(1 + i, t0 + i as i64 * 5_000, lat, lon)
        })
        .collect();
    mover
        .send(&json!({"type": "batch", "pings": driving}))
        .await;
    mover.until_ack(10).await;
    let mut parker = hub.driver("parker", "f1").await;
    let (plat, plon) = offset(LAT, LON, 0.0, 300.0);
    let parked: Vec<Value> = (0..37)
        .map(|i| ping(1 + i, t0 + i as i64 * 5_000, plat, plon))
        .collect();
    parker
        .send(&json!({"type": "batch", "pings": parked}))
        .await;
    parker.until_ack(37).await;

    let list = hub
        .wait_get("/v1/fleet/drivers", "f1", "a stopped driver", |v| {
            v["drivers"]
                .as_array()
                .is_some_and(|d| d.iter().any(|r| r["status"] == "stopped"))
        })
        .await;
    let ids: Vec<&str> = list["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["driver_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["idle", "mover", "parker"],
        "every driver, sorted by id"
    );

    let mover = row(&list, "mover");
    assert_eq!(mover["status"], "moving");
    assert!(mover["since"].is_null());
    assert_eq!(
        mover["position"]["ts"],
        trackhub::protocol::time::format_ts(t0 + 45_000)
    );
    assert!(mover["trip"].is_null());

    let parker = row(&list, "parker");
    assert_eq!(parker["status"], "stopped");
    assert_eq!(
        parker["since"],
        trackhub::protocol::time::format_ts(t0),
        "stopped since its first fix there"
    );
    assert_eq!(parker["trip"]["id"], "t-park");
    assert_eq!(parker["trip"]["done"], 0);
    assert_eq!(parker["trip"]["total"], 2);
    assert_eq!(parker["trip"]["next_stop"]["id"], "far");
    assert_eq!(parker["trip"]["next_stop"]["name"], "Far away");

    let idle = row(&list, "idle");
    assert_eq!(idle["status"], "offline");
    assert!(
        idle["since"].is_null() && idle["position"].is_null(),
        "{idle}"
    );
    assert_eq!(idle["trip"]["next_stop"]["id"], "far");

    // Drivers and services of another fleet see nothing of it; drivers may not list.
    let (_, other) = hub.get("/v1/fleet/drivers", "f2").await;
    assert_eq!(other, json!({"drivers": []}));
    let token = hub.token(Role::Driver, "mover", "f1");
    assert_eq!(hub.get_as("/v1/fleet/drivers", &token).await.0, 403);
}

#[tokio::test]
async fn the_events_feed_reads_the_newest_first_and_a_manual_check_in_says_so() {
    let hub = TestHub::start().await;
    let body = json!({"id": "t1", "driver_id": "D1", "stops": [
        {"id": "s1", "lat": LAT, "lon": LON}, {"id": "s2", "lat": LAT + 0.01, "lon": LON}
    ]});
    assert_eq!(hub.post("/v1/trips", "f1", &body).await.0, 201);
    for stop in ["s1", "s2"] {
        let (status, c) = hub
            .post(
                &format!("/v1/trips/t1/stops/{stop}/checkin"),
                "f1",
                &json!({}),
            )
            .await;
        assert_eq!(status, 201, "{c}");
        assert_eq!(c["evidence"], json!({"kind": "manual"}));
    }
    let (_, list) = hub.get("/v1/checkins?trip_id=t1", "f1").await;
    assert!(
        list["checkins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["evidence"] == json!({"kind": "manual"})),
        "{list}"
    );

    // Oldest first by default; `order=desc` gives the newest first, and `next_since` is the
    // log's head (where a stream resumes live).
    let (_, asc) = hub.get("/v1/events", "f1").await;
    let types = |page: &Value| -> Vec<String> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        types(&asc),
        ["stop.checked_in", "stop.checked_in", "trip.completed"]
    );
    let (_, desc) = hub.get("/v1/events?order=desc&limit=2", "f1").await;
    assert_eq!(types(&desc), ["trip.completed", "stop.checked_in"]);
    assert_eq!(desc["events"][1]["stop_id"], "s2");
    assert_eq!(desc["next_since"], asc["events"][2]["id"]);
    let (_, typed) = hub
        .get("/v1/events?order=desc&types=stop.checked_in", "f1")
        .await;
    assert_eq!(typed["events"][0]["stop_id"], "s2");
    let (status, problem) = hub.get("/v1/events?order=sideways", "f1").await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "order");
}
