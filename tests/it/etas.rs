//! Live ETAs and the `stop.approaching` / `stop.late` events against a real hub: ETAs on
//! `GET /v1/trips/{id}` and on a watcher's positions, each crossing announced exactly once.

use crate::common;

use common::*;
use serde_json::{json, Value};
use trackhub::protocol::time::{format_ts, parse_ts};

const LAT: f64 = 41.15;
const LON: f64 = -8.61;

fn events_of<'a>(body: &'a Value, kind: &str, stop: &str) -> Vec<&'a Value> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind && e["stop_id"] == stop)
        .collect()
}

fn eta_of(trip: &Value, stop: usize) -> Option<i64> {
    trip["stops"][stop]["eta"]
        .as_str()
        .map(|t| parse_ts(t).unwrap())
}

#[tokio::test]
async fn etas_reach_the_trip_and_watchers_and_each_crossing_is_announced_once() {
    let hub = TestHub::start().await;
    let now = now_ms();
    // s1 3 km north with a window ending in 6 minutes (too soon from 3 km out: late), two
    // minutes of service; s2 3 km further, no window.
    let s1 = LAT + 3_000.0 / M_PER_DEG;
    let (status, trip) = hub
        .post(
            "/v1/trips",
            "f1",
            &json!({"id": "t1", "driver_id": "D", "stops": [
                {"id": "s1", "lat": s1, "lon": LON, "service_s": 120,
                 "window_start": format_ts(now - 600_000), "window_end": format_ts(now + 360_000)},
                {"id": "s2", "lat": s1 + 3_000.0 / M_PER_DEG, "lon": LON},
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{trip}");
    assert_eq!(trip["stops"][0]["service_s"], 120.0);
    assert_eq!(trip["stops"][0]["window_end"], format_ts(now + 360_000));

    let mut w = hub.watcher("f1").await;
    w.send(&json!({"type":"subscribe","bbox":[LON - 0.2, LAT - 0.2, LON + 0.2, LAT + 0.2]}))
        .await;
    w.until(|f| f["type"] == "snapshot").await;

    let mut d = hub.driver("D", "f1").await;
    d.ping_acked(ping(1, now_ms(), LAT, LON)).await;

    // Both stops get ETAs, in order, the second past the first's service time.
    let trip = hub
        .wait_get("/v1/trips/t1", "f1", "ETAs on both stops", |t| {
            eta_of(t, 0).is_some() && eta_of(t, 1).is_some()
        })
        .await;
    let (e1, e2) = (eta_of(&trip, 0).unwrap(), eta_of(&trip, 1).unwrap());
    assert!(e1 > now + 120_000, "3 km takes minutes: {trip}");
    assert!(e2 > e1 + 120_000, "s2 after s1 and its service: {trip}");
    assert!(trip["stops"][0]["eta_updated_at"].is_string());
    // The watcher sees the driver with its next stop and that ETA.
    let frame = w
        .until(|f| f["positions"][0]["next_stop"]["stop_id"] == "s1")
        .await;
    let next = &frame["positions"][0]["next_stop"];
    assert_eq!(next["trip_id"], "t1");
    assert!((parse_ts(next["eta"].as_str().unwrap()).unwrap() - e1).abs() < 15_000);

    // Late: the ETA is past 6 minutes.
    let late = hub
        .wait_get("/v1/events?types=stop.late", "f1", "stop.late", |b| {
            !events_of(b, "stop.late", "s1").is_empty()
        })
        .await;
    assert_eq!(events_of(&late, "stop.late", "s1")[0]["late"], true);
    assert!(hub.get("/v1/trips/t1", "f1").await.1["stops"][0]["late"] == true);

    // Jitter in and out of the approach ring (300 m and 700 m out, never past twice the
    // thresholds): one `stop.approaching`; the late stop recovers once. Each fix waits for the
    // watcher to show the ETA the refresh computed from it, so every position was estimated.
    let mut last_eta = next["eta"].as_str().unwrap().to_string();
    for (seq, out_m) in [(2, 300.0), (3, 700.0), (4, 300.0), (5, 700.0), (6, 300.0)] {
        d.ping_acked(ping(seq, now_ms(), s1 - out_m / M_PER_DEG, LON))
            .await;
        let frame = w
            .until(|f| {
                f["positions"][0]["next_stop"]["eta"]
                    .as_str()
                    .is_some_and(|eta| eta != last_eta)
            })
            .await;
        last_eta = frame["positions"][0]["next_stop"]["eta"]
            .as_str()
            .unwrap()
            .to_string();
    }
    let body = hub
        .wait_get("/v1/events", "f1", "the late stop recovered", |b| {
            events_of(b, "stop.late", "s1").len() == 2
        })
        .await;
    let approaching = events_of(&body, "stop.approaching", "s1");
    assert_eq!(approaching.len(), 1, "{body}");
    assert!(approaching[0]["distance_m"].as_f64().unwrap() <= 500.0);
    assert!(approaching[0]["eta"].is_string());
    let lates: Vec<&Value> = events_of(&body, "stop.late", "s1")
        .into_iter()
        .map(|e| &e["late"])
        .collect();
    assert_eq!(lates, vec![&json!(true), &json!(false)]);
    assert!(events_of(&body, "stop.approaching", "s2").is_empty());

    // Checked in at s1: s2 is next, s1 has no ETA any more.
    let (status, _) = hub
        .post("/v1/trips/t1/stops/s1/checkin", "f1", &json!({}))
        .await;
    assert_eq!(status, 201);
    w.until(|f| f["positions"][0]["next_stop"]["stop_id"] == "s2")
        .await;
    let trip = hub.get("/v1/trips/t1", "f1").await.1;
    assert!(trip["stops"][0]["eta"].is_null(), "{trip}");
    assert!(eta_of(&trip, 1).is_some());
}

#[tokio::test]
async fn stop_times_are_validated() {
    let hub = TestHub::start().await;
    let (status, body) = hub
        .post(
            "/v1/trips",
            "f1",
            &json!({"driver_id": "D", "stops": [
                {"lat": LAT, "lon": LON, "service_s": -1,
                 "window_start": "2026-11-29T10:00:00Z", "window_end": "2026-11-29T09:00:00Z"},
            ]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["stops[0].service_s", "stops[0].window_end"]);
    let (status, body) = hub
        .post(
            "/v1/trips",
            "f1",
            &json!({"driver_id": "D", "stops": [{"lat": LAT, "lon": LON, "window_end": "soon"}]}),
        )
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");
}

/// A fleet's own approach threshold (`PUT /v1/settings`) is in force at once: with 10 km the
/// driver 5 km out is approaching; the other fleet keeps the defaults.
#[tokio::test]
async fn the_approach_threshold_is_set_per_fleet() {
    let hub = TestHub::start().await;
    let admin = hub.token(trackhub::auth::Role::Admin, "admin", "f1");
    let put = |body: Value| {
        let (hub, admin) = (&hub, admin.clone());
        async move {
            let r = hub
                .http
                .put(hub.url("/v1/settings"))
                .bearer_auth(admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = put(json!({"approach_eta_s": -1, "approach_distance_m": 1e9})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    let (status, body) = put(json!({"approach_distance_m": 10_000})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["effective"]["approach_distance_m"], 10_000.0);
    assert_eq!(body["effective"]["approach_eta_s"], 300.0);
    assert_eq!(hub.get("/v1/settings", "f1").await.1, body);
    assert!(hub.get("/v1/settings", "f2").await.1["approach_distance_m"].is_null());

    for fleet in ["f1", "f2"] {
        let stop = json!({"id": "s1", "lat": LAT + 5_000.0 / M_PER_DEG, "lon": LON});
        let (status, _) = hub
            .post(
                "/v1/trips",
                fleet,
                &json!({"id": "t1", "driver_id": "D", "stops": [stop]}),
            )
            .await;
        assert_eq!(status, 201);
        let mut d = hub.driver("D", fleet).await;
        d.ping_acked(ping(1, now_ms(), LAT, LON)).await;
    }
    hub.wait_get(
        "/v1/events?types=stop.approaching",
        "f1",
        "f1's approach",
        |b| events_of(b, "stop.approaching", "s1").len() == 1,
    )
    .await;
    // f2's driver got its ETA (so it was refreshed) without approaching.
    hub.wait_get("/v1/trips/t1", "f2", "f2's ETA", |t| eta_of(t, 0).is_some())
        .await;
    let (_, f2) = hub.get("/v1/events?types=stop.approaching", "f2").await;
    assert!(events_of(&f2, "stop.approaching", "s1").is_empty(), "{f2}");
}

/// The fleet's ETA curve learns from its check-ins, and a restarted node starts from them (the
/// stored fixes before each automatic check-in), not from the built-in prior again.
#[tokio::test]
async fn the_eta_curve_learns_from_check_ins_and_survives_a_restart() {
    use trackhub::eta::ApproachCurve;
    let hub = TestHub::start().await;
    let curve = |hub: &TestHub| {
        hub.running
            .as_ref()
            .unwrap()
            .state
            .hub
            .fleet_eta_snapshot("f1")
            .curve
    };
    let (status, _) = hub
        .post(
            "/v1/trips",
            "f1",
            &json!({"id": "t1", "driver_id": "D", "stops": [{"id": "s1", "lat": LAT, "lon": LON}]}),
        )
        .await;
    assert_eq!(status, 201);
    // 2 km in 10 minutes (a slow 3.3 m/s approach, one fix per 10 s), then 2 minutes parked.
    let t0 = now_ms() - 15 * 60_000;
    let mut d = hub.driver("D", "f1").await;
    let mut pings = Vec::new();
    for i in 0..=60 {
        let south_m = 2_000.0 * (1.0 - i as f64 / 60.0);
        pings.push(ping(
            i as u64 + 1,
            t0 + i * 10_000,
            LAT - south_m / M_PER_DEG,
            LON,
        ));
    }
    for i in 1..=12 {
        pings.push(ping(61 + i as u64, t0 + 600_000 + i * 10_000, LAT, LON));
    }
    d.send(&json!({"type": "batch", "pings": pings})).await;
    d.until_ack(73).await;
    hub.wait_get("/v1/checkins", "f1", "the check-in", |b| {
        b["checkins"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;
    let learned = curve(&hub);
    assert_ne!(
        learned,
        ApproachCurve::default(),
        "the check-in taught the curve"
    );
    d.close().await;

    // After a restart the curve is rebuilt from the stored fixes once a driver of the fleet is
    // served here.
    let hub = hub.restart().await;
    let mut e = hub.driver("E", "f1").await;
    e.ping_acked(ping(1, now_ms(), LAT, LON)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while curve(&hub) == ApproachCurve::default() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the curve was not rebuilt"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(curve(&hub), learned);
}
