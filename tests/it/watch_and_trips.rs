//! Watchers, trips, check-ins, departures, presence and fleet isolation against a real hub.

use crate::common;

use common::*;
use serde_json::{json, Value};
use trackhub::auth::Role;

const LAT: f64 = 41.15;
const LON: f64 = -8.61;

fn ids(frame: &Value) -> Vec<String> {
    frame["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["driver_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn watcher_gets_snapshot_coalesced_positions_and_follows_the_viewport() {
    let hub = TestHub::start().await;
    let t = now_ms() - 60_000;
    let mut a = hub.driver("A", "f1").await; // in the first viewport
    let mut b = hub.driver("B", "f1").await; // in the second viewport
    a.ping_acked(ping(1, t, LAT, LON)).await;
    b.ping_acked(ping(1, t, LAT + 1.0, LON)).await;

    let mut w = hub.watcher("f1").await;
    w.send(&json!({"type":"subscribe","bbox":[LON - 0.1, LAT - 0.1, LON + 0.1, LAT + 0.1]}))
        .await;
    let snap = w.json().await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(ids(&snap), vec!["A"]);

    // 50 fixes in one batch arrive as at most a couple of positions frames, latest fix winning.
    let batch: Vec<_> = (2..=51)
        .map(|s| ping(s, t + s as i64 * 1000, LAT + s as f64 * 1e-5, LON))
        .collect();
    a.send(&json!({"type":"batch","pings": batch})).await;
    a.until_ack(51).await;
    let mut seen_a = 0;
    let last = w
        .until(|f| {
            if f["type"] == "positions" {
                seen_a += ids(f).iter().filter(|d| *d == "A").count();
                f["positions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["ts"] == trackhub::protocol::time::format_ts(t + 51_000))
            } else {
                false
            }
        })
        .await;
    assert!(
        seen_a <= 3,
        "positions were not coalesced: {seen_a} frames for 50 fixes"
    );
    assert_eq!(ids(&last), vec!["A"]);

    // Move the viewport: a fresh snapshot of B only, and A's fixes stop arriving.
    w.send(&json!({"type":"subscribe","bbox":[LON - 0.1, LAT + 0.9, LON + 0.1, LAT + 1.1]}))
        .await;
    let snap = w.until(|f| f["type"] == "snapshot").await;
    assert_eq!(ids(&snap), vec!["B"]);
    a.ping_acked(ping(60, t + 60_000, LAT, LON)).await;
    b.ping_acked(ping(2, t + 2000, LAT + 1.0001, LON)).await;
    let next = w.until(|f| f["type"] == "positions").await;
    assert_eq!(ids(&next), vec!["B"], "A is outside the new viewport");

    // A drivers list adds a driver wherever it is.
    w.send(&json!({"type":"subscribe","drivers":["A"]})).await;
    let snap = w.until(|f| f["type"] == "snapshot").await;
    assert_eq!(ids(&snap), vec!["A"]);

    // Bad subscriptions get error frames and the socket stays usable.
    w.send(&json!({"type":"subscribe","bbox":[0, 10, 1, 5]}))
        .await;
    assert_eq!(
        w.until(|f| f["type"] == "error").await["code"],
        "invalid_bbox"
    );
    w.send(&json!({"type":"subscribe"})).await;
    assert_eq!(
        w.until(|f| f["type"] == "error").await["code"],
        "invalid_subscription"
    );
    w.send(&json!({"type":"subscribe","drivers":["B"]})).await;
    assert_eq!(ids(&w.until(|f| f["type"] == "snapshot").await), vec!["B"]);
    hub.stop().await;
}

#[tokio::test]
async fn fleets_are_isolated() {
    let hub = TestHub::start().await;
    let t = now_ms() - 10_000;
    let mut a = hub.driver("D1", "fleet-a").await;
    let mut w_b = hub.watcher("fleet-b").await;
    w_b.send(&json!({"type":"subscribe","bbox":[-180,-90,180,90],"drivers":["D1"]}))
        .await;
    assert_eq!(ids(&w_b.json().await), Vec::<String>::new());
    let mut w_a = hub.watcher("fleet-a").await;
    w_a.send(&json!({"type":"subscribe","bbox":[-180,-90,180,90]}))
        .await;
    w_a.json().await;

    a.ping_acked(ping(1, t, LAT, LON)).await;
    assert_eq!(
        ids(&w_a.until(|f| f["type"] == "positions").await),
        vec!["D1"]
    );
    // Fleet B sees nothing of it: not over the socket…
    let mut other = hub.driver("D9", "fleet-b").await;
    other.ping_acked(ping(1, t, LAT, LON)).await;
    let f = w_b.until(|f| f["type"] == "positions").await;
    assert_eq!(
        ids(&f),
        vec!["D9"],
        "fleet B's watcher only ever sees fleet B"
    );
    // …nor over REST.
    assert_eq!(hub.get("/v1/drivers/D1", "fleet-b").await.0, 404);
    let (_, list) = hub.get("/v1/drivers?bbox=-180,-90,180,90", "fleet-b").await;
    assert_eq!(list["drivers"].as_array().unwrap().len(), 1);
    let (_, near) = hub
        .get(
            &format!("/v1/drivers/nearby?lat={LAT}&lon={LON}&limit=5"),
            "fleet-b",
        )
        .await;
    assert_eq!(near["drivers"][0]["driver_id"], "D9");
    assert_eq!(near["drivers"].as_array().unwrap().len(), 1);
    let trip = json!({"id":"t-a","driver_id":"D1","stops":[{"lat":LAT,"lon":LON}]});
    assert_eq!(hub.post("/v1/trips", "fleet-a", &trip).await.0, 201);
    assert_eq!(hub.get("/v1/trips/t-a", "fleet-b").await.0, 404);
    let (_, checkins) = hub.get("/v1/checkins?trip_id=t-a", "fleet-b").await;
    assert_eq!(checkins["checkins"], json!([]));
    hub.stop().await;
}

/// Fixes parked 20 m from (LAT, LON) every 5 s for `secs` seconds, seqs from `seq0`.
fn parked(seq0: u64, t0: i64, secs: i64) -> Vec<Value> {
    let (lat, lon) = offset(LAT, LON, 20.0, 0.0);
    (0..=secs / 5)
        .map(|i| ping(seq0 + i as u64, t0 + i * 5000, lat, lon))
        .collect()
}

#[tokio::test]
async fn check_in_is_exactly_once_even_when_fixes_are_replayed_or_the_hub_restarts() {
    let hub = TestHub::start().await;
    let trip = json!({"id":"t1","driver_id":"D1","stops":[
        {"id":"s1","name":"Rua A","lat":LAT,"lon":LON,"radius_m":100},
        {"id":"s2","lat":LAT + 0.05,"lon":LON}
    ]});
    let (status, body) = hub.post("/v1/trips", "f1", &trip).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stops"][0]["status"], "pending");
    assert_eq!(body["stops"][1]["radius_m"], 100.0);

    let mut w = hub.watcher("f1").await;
    w.send(&json!({"type":"subscribe","drivers":["D1"]})).await;
    w.json().await;

    let t0 = now_ms() - 600_000;
    let mut d = hub.driver("D1", "f1").await;
    // Drive in at 10 m/s, then stay for 2 minutes.
    let approach: Vec<Value> = (0..10)
        .map(|i| {
            let (lat, lon) = offset(LAT, LON, -500.0 + i as f64 * 50.0, 0.0);
            ping(1 + i, t0 + i as i64 * 5000, lat, lon)
        })
        .collect();
    let stay = parked(11, t0 + 50_000, 120);
    let fixes: Vec<Value> = approach.into_iter().chain(stay).collect();
    d.send(&json!({"type":"batch","pings": fixes.clone()}))
        .await;
    let frames = d.until_ack(fixes.len() as u64).await;
    let checkins: Vec<&Value> = frames.iter().filter(|f| f["type"] == "checkin").collect();
    assert_eq!(checkins.len(), 1, "{frames:?}");
    assert_eq!(checkins[0]["stop_id"], "s1");
    assert_eq!(checkins[0]["trip_id"], "t1");
    assert_eq!(
        checkins[0]["arrived_at"],
        trackhub::protocol::time::format_ts(t0 + 50_000)
    );
    assert_eq!(
        checkins[0]["checked_in_at"],
        trackhub::protocol::time::format_ts(t0 + 50_000 + 75_000)
    );

    let ev = w
        .until(|f| f["type"] == "event" && f["event"]["type"] == "stop.checked_in")
        .await;
    assert_eq!(ev["event"]["stop_id"], "s1");
    assert_eq!(ev["event"]["source"], "auto");

    // The phone resends everything with new seqs on a new socket: no second check-in.
    d.close().await;
    let mut d = hub.driver("D1", "f1").await;
    let resent: Vec<Value> = fixes
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f["seq"] = json!(f["seq"].as_u64().unwrap() + 1000);
            f
        })
        .collect();
    d.send(&json!({"type":"batch","pings": resent.clone()}))
        .await;
    let frames = d.until_ack(1000 + fixes.len() as u64).await;
    assert!(frames.iter().all(|f| f["type"] != "checkin"), "{frames:?}");

    // After a restart (detection state rebuilt from the database) the same fixes again: still once.
    d.close().await;
    let hub = hub.restart().await;
    let mut d = hub.driver("D1", "f1").await;
    d.send(&json!({"type":"batch","pings": resent})).await;
    let frames = d.until_ack(1000 + fixes.len() as u64).await;
    assert!(frames.iter().all(|f| f["type"] != "checkin"), "{frames:?}");

    let (_, list) = hub.get("/v1/checkins?trip_id=t1", "f1").await;
    let list = list["checkins"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["stop_id"], "s1");
    assert_eq!(list[0]["driver_id"], "D1");
    assert!(list[0]["departed_at"].is_null());
    // Why: stationary inside for 16 fixes (every 5 s) over the 75 s dwell, a dense phone.
    assert_eq!(
        list[0]["evidence"],
        json!({"kind": "dwell", "fixes": 16, "span_s": 75.0, "credited_s": 0.0})
    );
    let (_, trip) = hub.get("/v1/trips/t1", "f1").await;
    assert_eq!(trip["stops"][0]["status"], "arrived");
    assert_eq!(trip["stops"][1]["status"], "pending");
    assert_eq!(trip["status"], "active");

    // Leave: two fixes beyond the 150 m exit ring record the departure.
    let mut w = hub.watcher("f1").await;
    w.send(&json!({"type":"subscribe","drivers":["D1"]})).await;
    w.json().await;
    let t1 = t0 + 300_000;
    let away: Vec<Value> = (0..4)
        .map(|i| {
            let (lat, lon) = offset(LAT, LON, 100.0 + i as f64 * 60.0, 0.0);
            ping(2000 + i, t1 + i as i64 * 5000, lat, lon)
        })
        .collect();
    d.send(&json!({"type":"batch","pings": away})).await;
    d.until_ack(2003).await;
    let ev = w
        .until(|f| f["type"] == "event" && f["event"]["type"] == "stop.departed")
        .await;
    assert_eq!(ev["event"]["stop_id"], "s1");
    assert_eq!(
        ev["event"]["departed_at"],
        trackhub::protocol::time::format_ts(t1 + 5_000),
        "first fix beyond 150 m (160 m)"
    );
    let (_, trip) = hub.get("/v1/trips/t1", "f1").await;
    assert_eq!(trip["stops"][0]["status"], "departed");

    // The manual fallback completes the trip; a second manual check-in is a conflict.
    let (status, c) = hub
        .post("/v1/trips/t1/stops/s2/checkin", "f1", &json!({}))
        .await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["source"], "manual");
    let ev = w
        .until(|f| f["type"] == "event" && f["event"]["type"] == "trip.completed")
        .await;
    assert_eq!(ev["event"]["trip_id"], "t1");
    assert_eq!(
        hub.post("/v1/trips/t1/stops/s2/checkin", "f1", &json!({}))
            .await
            .0,
        409
    );
    assert_eq!(
        hub.post("/v1/trips/t1/stops/s1/checkin", "f1", &json!({}))
            .await
            .0,
        409
    );
    assert_eq!(
        hub.post("/v1/trips/t1/stops/nope/checkin", "f1", &json!({}))
            .await
            .0,
        404
    );
    let (_, trip) = hub.get("/v1/trips/t1", "f1").await;
    assert_eq!(trip["status"], "completed");
    hub.stop().await;
}

#[tokio::test]
async fn a_dwell_interrupted_by_a_hub_restart_completes_after_it() {
    let hub = TestHub::start().await;
    let trip = json!({"id":"t1","driver_id":"D1","stops":[{"id":"s1","lat":LAT,"lon":LON}]});
    assert_eq!(hub.post("/v1/trips", "f1", &trip).await.0, 201);
    let t0 = now_ms() - 600_000;
    // 40 s parked (the dwell is 75 s), then the hub restarts.
    let first = parked(1, t0, 40);
    let mut d = hub.driver("D1", "f1").await;
    d.send(&json!({"type":"batch","pings": first.clone()}))
        .await;
    let frames = d.until_ack(first.len() as u64).await;
    assert!(frames.iter().all(|f| f["type"] != "checkin"), "{frames:?}");
    d.close().await;
    let hub = hub.restart().await;
    // 40 s more after the restart: the dwell rebuilt from stored history reaches 75 s.
    let rest = parked(100, t0 + 45_000, 40);
    let mut d = hub.driver("D1", "f1").await;
    d.send(&json!({"type":"batch","pings": rest.clone()})).await;
    let frames = d.until_ack(100 + rest.len() as u64 - 1).await;
    let checkins: Vec<&Value> = frames.iter().filter(|f| f["type"] == "checkin").collect();
    assert_eq!(checkins.len(), 1, "{frames:?}");
    assert_eq!(
        checkins[0]["arrived_at"],
        trackhub::protocol::time::format_ts(t0)
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_red_light_next_to_the_stop_does_not_check_in() {
    let hub = TestHub::start().await;
    let trip = json!({"id":"t1","driver_id":"D1","stops":[{"id":"s1","lat":LAT,"lon":LON}]});
    assert_eq!(hub.post("/v1/trips", "f1", &trip).await.0, 201);
    let t0 = now_ms() - 600_000;
    let mut d = hub.driver("D1", "f1").await;
    let mut fixes = Vec::new();
    let mut seq = 0;
    let mut at = |north: f64, east: f64, t: i64, speed: Option<f64>| {
        seq += 1;
        let (lat, lon) = offset(LAT, LON, north, east);
        let mut p = ping(seq, t0 + t * 1000, lat, lon);
        if let Some(s) = speed {
            p["speed_mps"] = json!(s);
        }
        p
    };
    // Approach, wait 60 s at a light 40 m away, drive on.
    for i in 0..8 {
        fixes.push(at(-400.0 + i as f64 * 45.0, 40.0, i * 5, Some(9.0)));
    }
    for i in 0..13 {
        fixes.push(at(-40.0, 40.0, 40 + i * 5, Some(0.0)));
    }
    for i in 0..10 {
        fixes.push(at(-40.0 + i as f64 * 50.0, 40.0, 105 + i * 5, Some(10.0)));
    }
    d.send(&json!({"type":"batch","pings": fixes})).await;
    let frames = d.until_ack(seq).await;
    assert!(frames.iter().all(|f| f["type"] != "checkin"), "{frames:?}");
    let (_, list) = hub.get("/v1/checkins", "f1").await;
    assert_eq!(list["checkins"], json!([]));
    hub.stop().await;
}

#[tokio::test]
async fn silent_driver_goes_offline_and_leaves_the_index() {
    let hub = TestHub::start_with(|c| c.hub.presence_timeout_ms = 1_500).await;
    let mut w = hub.watcher("f1").await;
    w.send(&json!({"type":"subscribe","drivers":["D1"]})).await;
    w.json().await;
    let mut d = hub.driver("D1", "f1").await;
    d.ping_acked(ping(1, now_ms(), LAT, LON)).await;
    let online = w.until(|f| f["type"] == "event").await;
    assert_eq!(online["event"]["type"], "driver.online");
    assert_eq!(hub.get("/v1/drivers/D1", "f1").await.0, 200);
    let offline = w
        .until(|f| f["type"] == "event" && f["event"]["type"] == "driver.offline")
        .await;
    assert_eq!(offline["event"]["driver_id"], "D1");
    assert_eq!(offline["event"]["lat"], LAT);
    assert_eq!(hub.get("/v1/drivers/D1", "f1").await.0, 404);
    // The next fix brings it back.
    d.ping_acked(ping(2, now_ms(), LAT, LON)).await;
    assert_eq!(
        w.until(|f| f["type"] == "event").await["event"]["type"],
        "driver.online"
    );
    hub.stop().await;
}

#[tokio::test]
async fn rest_validates_bodies_and_queries_with_problem_details() {
    let hub = TestHub::start().await;
    let (status, body) = hub
        .post("/v1/trips", "f1", &json!({"driver_id":"D1","stops":[{"lat":95,"lon":0},{"id":"x","lat":0,"lon":0,"radius_m":1},{"id":"x","lat":0,"lon":0}]}))
        .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["stops[0].lat", "stops[1].radius_m", "stops[2].id"],
        "{body}"
    );
    assert_eq!(
        hub.post("/v1/trips", "f1", &json!({"driver_id":"D1"}))
            .await
            .0,
        422
    );
    assert_eq!(
        hub.post("/v1/trips", "f1", &json!({"driver_id":"D1","stops":[]}))
            .await
            .0,
        422
    );
    let r = hub
        .http
        .post(hub.url("/v1/trips"))
        .bearer_auth(hub.token(Role::Admin, "a", "f1"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // Generated ids; a driver may not create trips; a reused id conflicts.
    let (status, trip) = hub
        .post(
            "/v1/trips",
            "f1",
            &json!({"driver_id":"D1","stops":[{"lat":1,"lon":2}]}),
        )
        .await;
    assert_eq!(status, 201);
    assert!(trip["id"].as_str().unwrap().starts_with("trip-"));
    assert_eq!(trip["stops"][0]["id"], "stop-1");
    let driver = hub.token(Role::Driver, "D1", "f1");
    assert_eq!(
        hub.post_as(
            "/v1/trips",
            &driver,
            &json!({"driver_id":"D1","stops":[{"lat":1,"lon":2}]})
        )
        .await
        .0,
        403
    );
    let dup = json!({"id": trip["id"], "driver_id":"D1","stops":[{"lat":1,"lon":2}]});
    assert_eq!(hub.post("/v1/trips", "f1", &dup).await.0, 409);
    // The trip's own driver may read it; another driver may not.
    assert_eq!(
        hub.get_as(
            &format!("/v1/trips/{}", trip["id"].as_str().unwrap()),
            &driver
        )
        .await
        .0,
        200
    );
    let other = hub.token(Role::Driver, "D2", "f1");
    assert_eq!(
        hub.get_as(
            &format!("/v1/trips/{}", trip["id"].as_str().unwrap()),
            &other
        )
        .await
        .0,
        403
    );

    // Queries.
    assert_eq!(hub.get("/v1/drivers?bbox=1,2,3", "f1").await.0, 422);
    assert_eq!(
        hub.get("/v1/drivers/nearby?lat=100&lon=0", "f1").await.0,
        422
    );
    assert_eq!(
        hub.get("/v1/drivers/nearby?lat=abc&lon=0", "f1").await.0,
        400
    );
    assert_eq!(
        hub.get("/v1/drivers/nearby?lat=0&lon=0&limit=0", "f1")
            .await
            .0,
        422
    );
    assert_eq!(
        hub.get("/v1/drivers/D1/track?from=yesterday", "f1").await.0,
        422
    );
    assert_eq!(hub.get("/v1/checkins?limit=0", "f1").await.0, 422);
    assert_eq!(hub.get("/livez", "f1").await.0, 200);
    assert_eq!(hub.get("/readyz", "f1").await.0, 200);
    hub.stop().await;
}

#[tokio::test]
async fn nearby_ranks_by_great_circle_distance() {
    let hub = TestHub::start().await;
    let t = now_ms() - 1000;
    // At 60°N: "east" is 0.9° of longitude away (~50 km), "north" 0.6° of latitude (~67 km).
    let mut n = hub.driver("north", "f1").await;
    let mut e = hub.driver("east", "f1").await;
    n.ping_acked(ping(1, t, 60.6, 10.0)).await;
    e.ping_acked(ping(1, t, 60.0, 10.9)).await;
    let (_, near) = hub
        .get("/v1/drivers/nearby?lat=60&lon=10&limit=2", "f1")
        .await;
    let order: Vec<&str> = near["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["driver_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, vec!["east", "north"]);
    let d0 = near["drivers"][0]["distance_m"].as_f64().unwrap();
    assert!((d0 - 49_600.0).abs() < 500.0, "{d0}");
    let (_, near) = hub
        .get(
            "/v1/drivers/nearby?lat=60&lon=10&limit=5&radius_m=55000",
            "f1",
        )
        .await;
    assert_eq!(near["drivers"].as_array().unwrap().len(), 1);
    hub.stop().await;
}

#[tokio::test]
async fn trips_are_listed_newest_first_with_stops_per_fleet() {
    let hub = TestHub::start().await;
    for (id, stops) in [("t-1", 2), ("t-2", 3)] {
        let stops: Vec<Value> = (0..stops)
            .map(|i| json!({"id": format!("s{i}"), "lat": LAT + i as f64 * 0.01, "lon": LON}))
            .collect();
        let trip = json!({"id": id, "driver_id": "D1", "stops": stops});
        assert_eq!(hub.post("/v1/trips", "fleet-a", &trip).await.0, 201);
    }
    let other = json!({"id":"t-b","driver_id":"D1","stops":[{"lat":LAT,"lon":LON}]});
    assert_eq!(hub.post("/v1/trips", "fleet-b", &other).await.0, 201);

    let (status, list) = hub.get("/v1/trips?status=active", "fleet-a").await;
    assert_eq!(status, 200, "{list}");
    let trips = list["trips"].as_array().unwrap();
    let ids: Vec<&str> = trips.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["t-2", "t-1"],
        "newest first, fleet B's trip not listed"
    );
    let stop_ids: Vec<&str> = trips[0]["stops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(stop_ids, ["s0", "s1", "s2"], "stops in trip order");
    assert_eq!(trips[0]["stops"][0]["status"], "pending");

    let (_, one) = hub.get("/v1/trips?limit=1", "fleet-a").await;
    assert_eq!(one["trips"].as_array().unwrap().len(), 1);
    let (_, completed) = hub.get("/v1/trips?status=completed", "fleet-a").await;
    assert_eq!(completed["trips"], json!([]));
    let (status, problem) = hub.get("/v1/trips?status=lost&limit=0", "fleet-a").await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["status", "limit"]);
    // Drivers do not list trips.
    let driver = hub.token(Role::Driver, "D1", "fleet-a");
    assert_eq!(hub.get_as("/v1/trips", &driver).await.0, 403);
    hub.stop().await;
}

#[tokio::test]
async fn the_live_map_is_served_from_the_binary() {
    let hub = TestHub::start_with(|c| c.map.tile_url = String::new()).await;
    let http = reqwest::Client::new();
    let page = http.get(hub.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    for asset in [
        "/map/app.js",
        "/map/app.css",
        "/map/vendor/leaflet/leaflet.js",
        "/map/vendor/leaflet/leaflet.css",
    ] {
        assert!(html.contains(asset), "the page loads {asset}");
        let r = http.get(hub.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    let licence = http
        .get(hub.url("/map/vendor/leaflet/LICENSE"))
        .send()
        .await
        .unwrap();
    assert!(licence.text().await.unwrap().contains("BSD 2-Clause"));
    let config: Value = http
        .get(hub.url("/map/config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["tile_url"], "", "offline: a plain background");
    assert_eq!(config["flush_interval_ms"], 100);
    hub.stop().await;
}

/// The driver app: its page (with the CSP), a redirect from `/driver`, and the files an
/// installable web app needs, each with its type; a driver reads its own active trips only.
#[tokio::test]
async fn the_driver_app_is_served_from_the_binary() {
    let hub = TestHub::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let moved = http.get(hub.url("/driver")).send().await.unwrap();
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.headers()["location"], "/driver/");
    let page = http.get(hub.url("/driver/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let html = page.text().await.unwrap();
    for (asset, ctype) in [
        ("/driver/app.js", "text/javascript"),
        ("/driver/outbox.js", "text/javascript"),
        ("/driver/app.css", "text/css"),
        ("/driver/manifest.webmanifest", "application/manifest+json"),
        ("/driver/icon.svg", "image/svg+xml"),
    ] {
        assert!(html.contains(asset), "the page loads {asset}");
        let r = http.get(hub.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ctype));
    }
    let sw = http.get(hub.url("/driver/sw.js")).send().await.unwrap();
    assert!(sw.text().await.unwrap().contains("\"/driver/app.js\""));
    let manifest: Value = http
        .get(hub.url("/driver/manifest.webmanifest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["start_url"], "/driver/");
    assert_eq!(manifest["scope"], "/driver/");

    let (created, body) = hub.post(
        "/v1/trips",
        "fleet-a",
        &json!({"id": "t1", "driver_id": "D1", "stops": [{"id": "s1", "lat": 47.61, "lon": -122.33}]}),
    )
    .await;
    assert_eq!(created, 201, "{body}");
    let mine = hub.token(Role::Driver, "D1", "fleet-a");
    let (status, trips) = hub.get_as("/v1/drivers/D1/trips", &mine).await;
    assert_eq!(status, 200, "{trips}");
    assert_eq!(trips["trips"][0]["id"], "t1");
    assert_eq!(trips["trips"][0]["stops"][0]["status"], "pending");
    let other = hub.token(Role::Driver, "D2", "fleet-a");
    assert_eq!(hub.get_as("/v1/drivers/D1/trips", &other).await.0, 403);
    let (_, none) = hub.get_as("/v1/drivers/D2/trips", &other).await;
    assert_eq!(none["trips"].as_array().unwrap().len(), 0);
    hub.stop().await;
}

/// A snapshot larger than any one message a client may send (and than tungstenite's 256 KiB
/// write cap the hub used to keep) reaches the watcher whole, and the socket stays live after it.
#[tokio::test]
async fn a_snapshot_of_thousands_of_drivers_arrives_whole() {
    const DRIVERS: usize = 1_600;
    trackhub::replay::raise_fd_limit();
    // Every driver connects from 127.0.0.1: no per-address connection rate here.
    let server = TestHub::start_with(|c| c.limits.conns_per_ip_per_s = 0).await;
    // Long ids make each position ~190 bytes of JSON: 1,600 of them are ~300 KB.
    let id = |i: usize| format!("snapshot-driver-{i:05}-{}", "x".repeat(40));
    let mut drivers = Vec::with_capacity(DRIVERS);
    for chunk in (0..DRIVERS).collect::<Vec<_>>().chunks(100) {
        let joins: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let url =
                    server.ws_url("/v1/ws/driver", &server.token(Role::Driver, &id(i), "big"));
                tokio::spawn(async move {
                    let mut ws = Ws::connect(&url).await;
                    let (lat, lon) = offset(LAT, LON, i as f64 * 3.0, (i % 40) as f64 * 50.0);
                    ws.ping_acked(ping(1, now_ms(), lat, lon)).await;
                    ws
                })
            })
            .collect();
        for j in joins {
            drivers.push(j.await.expect("driver task"));
        }
    }
    let mut w = server.watcher("big").await;
    w.send(&json!({"type":"subscribe","bbox":[-180,-90,180,90]}))
        .await;
    let snapshot = w.json().await;
    assert_eq!(snapshot["type"], "snapshot");
    // Compact JSON, as the hub writes it.
    let bytes = serde_json::to_string(&snapshot).unwrap().len();
    assert!(
        bytes > 256 * 1024,
        "the case needs a snapshot over 256 KiB, got {bytes} bytes"
    );
    let mut seen = ids(&snapshot);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), DRIVERS, "every driver once");
    // Still live: the next fix of one driver arrives as a positions frame.
    let (lat, lon) = offset(LAT, LON, -500.0, 0.0);
    drivers[7].ping_acked(ping(2, now_ms(), lat, lon)).await;
    let moved = w.until(|v| v["type"] == "positions").await;
    assert_eq!(ids(&moved), [id(7)]);
    server.stop().await;
}
