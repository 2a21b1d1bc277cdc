//! Fleet geofences against a real hub: every zone kind validated and stored, `geofence.entered`,
//! `geofence.dwelled` and `geofence.exited` once each in the durable log, and the flapping cases
//! (jitter on the boundary, a route clipping a corner, a driver outside the filter) silent.

use crate::common;

use common::*;
use serde_json::{json, Value};

const LAT: f64 = 41.15;
const LON: f64 = -8.61;

fn north(m: f64) -> f64 {
    LAT + m / M_PER_DEG
}

fn east(m: f64) -> f64 {
    LON + m / (M_PER_DEG * LAT.to_radians().cos())
}

/// A GeoJSON square of `side` m with its south-west corner `(south, west)` m from (LAT, LON).
fn square(south: f64, west: f64, side: f64) -> Value {
    let (s, w, n, e) = (
        north(south),
        east(west),
        north(south + side),
        east(west + side),
    );
    json!({"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]})
}

fn kinds(body: &Value, geofence: &str) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["geofence_id"] == geofence)
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

async fn send(d: &mut Ws, seq0: u64, t0: i64, step_ms: i64, path: &[(f64, f64)]) -> u64 {
    let pings: Vec<Value> = path
        .iter()
        .enumerate()
        .map(|(i, (lat, lon))| ping(seq0 + i as u64, t0 + i as i64 * step_ms, *lat, *lon))
        .collect();
    let last = seq0 + path.len() as u64 - 1;
    d.send(&json!({"type": "batch", "pings": pings})).await;
    d.until_ack(last).await;
    last + 1
}

#[tokio::test]
async fn geofences_are_validated_stored_listed_patched_and_deleted() {
    let hub = TestHub::start().await;
    let hub = &hub;
    let post = |body: Value| async move { hub.post("/v1/geofences", "f1", &body).await };
    let (status, circle) = post(
        json!({"id": "depot", "name": "Depot", "circle": {"center": [LON, LAT], "radius_m": 150}}),
    )
    .await;
    assert_eq!(status, 201, "{circle}");
    assert_eq!(circle["circle"]["radius_m"], 150.0);
    assert_eq!(circle["dwell_s"], 60.0);
    assert_eq!(circle["margin_m"], 20.0);
    let (status, poly) = post(json!({"id": "yard", "geometry": square(0.0, 0.0, 200.0), "dwell_s": 30, "margin_m": 10, "drivers": ["D"]})).await;
    assert_eq!(status, 201, "{poly}");
    assert_eq!(poly["geometry"], square(0.0, 0.0, 200.0));
    let multi = json!({"type": "MultiPolygon", "coordinates": [
        square(0.0, 0.0, 100.0)["coordinates"], square(500.0, 500.0, 100.0)["coordinates"]]});
    let (status, body) = post(json!({"id": "two", "geometry": multi})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["geometry"]["type"], "MultiPolygon");
    assert_eq!(
        post(json!({"id": "depot", "circle": {"center": [LON, LAT], "radius_m": 50}}))
            .await
            .0,
        409
    );

    // Invalid shapes, each named.
    let bowtie = json!({"type": "Polygon", "coordinates": [[[east(0.0), north(0.0)], [east(100.0), north(100.0)], [east(100.0), north(0.0)], [east(0.0), north(100.0)], [east(0.0), north(0.0)]]]});
    let open_ring = json!({"type": "Polygon", "coordinates": [[[east(0.0), north(0.0)], [east(100.0), north(0.0)], [east(100.0), north(100.0)], [east(0.0), north(100.0)]]]});
    let cases = [
        (json!({"geometry": bowtie}), "geometry", "self-intersection"),
        (
            json!({"geometry": open_ring}),
            "geometry.coordinates[0]",
            "closed",
        ),
        (
            json!({"geometry": {"type": "Point", "coordinates": [LON, LAT]}}),
            "geometry.type",
            "Polygon",
        ),
        (
            json!({"circle": {"center": [LON, LAT], "radius_m": 1}}),
            "circle.radius_m",
            "5",
        ),
        (
            json!({"circle": {"center": [LON, LAT], "radius_m": 50}, "geometry": square(0.0, 0.0, 10.0)}),
            "circle",
            "exactly one",
        ),
        (
            json!({"circle": {"center": [LON, LAT], "radius_m": 50}, "dwell_s": -1, "margin_m": 5000}),
            "dwell_s",
            "86400",
        ),
        (
            json!({"geometry": square(0.0, 0.0, 300_000.0)}),
            "geometry",
            "km",
        ),
    ];
    for (body, field, says) in cases {
        let (status, problem) = post(body.clone()).await;
        assert_eq!(status, 422, "{body} -> {problem}");
        let errors = problem["errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| e["field"] == field
                && e["message"]
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .contains(&says.to_lowercase())),
            "{body} -> {problem}"
        );
    }

    let (_, list) = hub.get("/v1/geofences", "f1").await;
    let ids: Vec<&str> = list["geofences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["depot", "two", "yard"]);
    assert!(hub.get("/v1/geofences", "f2").await.1["geofences"]
        .as_array()
        .unwrap()
        .is_empty());

    let admin = hub.token(trackhub::auth::Role::Admin, "admin", "f1");
    let patched = hub
        .http
        .patch(hub.url("/v1/geofences/yard"))
        .bearer_auth(&admin)
        .json(&json!({"dwell_s": 120, "drivers": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status().as_u16(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["dwell_s"], 120.0);
    assert!(patched["drivers"].is_null());
    assert_eq!(patched["geometry"], square(0.0, 0.0, 200.0));
    let del = |id: &'static str| {
        let (hub, admin) = (&hub, admin.clone());
        async move {
            hub.http
                .delete(hub.url(&format!("/v1/geofences/{id}")))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(del("two").await, 204);
    assert_eq!(del("two").await, 404);
    assert_eq!(hub.get("/v1/geofences/two", "f1").await.0, 404);
}

#[tokio::test]
async fn zone_events_fire_once_each_and_flapping_stays_silent() {
    let hub = TestHub::start().await;
    for (id, body) in [
        (
            "yard",
            json!({"geometry": square(0.0, 0.0, 200.0), "dwell_s": 60, "margin_m": 20}),
        ),
        (
            "gate",
            json!({"circle": {"center": [east(100.0), north(1_000.0)], "radius_m": 60}, "dwell_s": 600}),
        ),
        (
            "only-e",
            json!({"geometry": square(2_000.0, 0.0, 200.0), "drivers": ["E"]}),
        ),
    ] {
        let mut body = body;
        body["id"] = json!(id);
        assert_eq!(hub.post("/v1/geofences", "f1", &body).await.0, 201);
    }
    let mut d = hub.driver("D", "f1").await;
    let t0 = now_ms() - 20 * 60_000;
    // Jitter ±15 m across the yard's west edge for 5 minutes (within the 20 m margin), then a
    // route clipping its south-west corner (one fix 30 m inside), then the filtered zone.
    let mut path: Vec<(f64, f64)> = (0..30)
        .map(|i| (north(100.0), east(if i % 2 == 0 { -15.0 } else { 15.0 })))
        .collect();
    path.extend([
        (north(-60.0), east(0.0)),
        (north(-20.0), east(30.0)),
        (north(30.0), east(30.0)),
        (north(30.0), east(-40.0)),
        (north(40.0), east(-80.0)),
    ]);
    path.extend([(north(2_100.0), east(100.0)); 3]);
    // Then into the gate circle (the sentinel: its entry is logged after anything above).
    path.extend([(north(1_000.0), east(100.0)); 2]);
    let seq = send(&mut d, 1, t0, 10_000, &path).await;
    let body = hub
        .wait_get(
            "/v1/events?types=geofence.entered,geofence.dwelled,geofence.exited",
            "f1",
            "the gate's entry",
            |b| kinds(b, "gate") == ["geofence.entered"],
        )
        .await;
    assert!(
        kinds(&body, "yard").is_empty(),
        "flapping made events: {body}"
    );
    assert!(
        kinds(&body, "only-e").is_empty(),
        "the driver filter was ignored: {body}"
    );

    // A real visit: into the yard, 90 s there, out: entered, dwelled, exited, once each.
    let t1 = t0 + path.len() as i64 * 10_000;
    let mut visit = vec![(north(100.0), east(-100.0)), (north(100.0), east(100.0))];
    visit.extend([(north(100.0), east(100.0)); 9]);
    visit.extend([(north(100.0), east(300.0)), (north(100.0), east(320.0))]);
    send(&mut d, seq, t1, 10_000, &visit).await;
    let body = hub
        .wait_get("/v1/events", "f1", "the yard's exit", |b| {
            kinds(b, "yard").len() == 3
        })
        .await;
    assert_eq!(
        kinds(&body, "yard"),
        ["geofence.entered", "geofence.dwelled", "geofence.exited"]
    );
    let yard: Vec<&Value> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["geofence_id"] == "yard")
        .collect();
    assert_eq!(
        yard[0]["ts"],
        trackhub::protocol::time::format_ts(t1 + 10_000),
        "entered at the first fix inside"
    );
    assert_eq!(yard[2]["entered_at"], yard[0]["ts"]);
    assert_eq!(yard[2]["driver_id"], "D");
    // The gate was left when the driver went on: exited, and never dwelled (600 s).
    assert_eq!(
        kinds(&body, "gate"),
        ["geofence.entered", "geofence.exited"]
    );
}

/// Automatic stops (issue 18): a driver on a trip parks away from its stops (`driver.stopped`,
/// `unplanned: true`), drives on (`driver.moving`), then parks at its stop (`unplanned: false`,
/// and the check-in).
#[tokio::test]
async fn automatic_stops_anywhere_and_unplanned_ones_are_flagged() {
    let hub = TestHub::start().await;
    let (status, _) = hub
        .post("/v1/trips", "f1", &json!({"id": "t1", "driver_id": "D", "stops": [{"id": "s1", "lat": north(2_000.0), "lon": LON}]}))
        .await;
    assert_eq!(status, 201);
    let mut d = hub.driver("D", "f1").await;
    let t0 = now_ms() - 20 * 60_000;
    // 2 minutes parked 1 km short of the stop, 1 km of driving, 2 minutes at the stop.
    let mut path: Vec<(f64, f64)> = vec![(north(1_000.0), LON); 24];
    path.extend((1..=20).map(|i| (north(1_000.0 + i as f64 * 50.0), LON)));
    path.extend([(north(2_000.0), LON); 24]);
    send(&mut d, 1, t0, 5_000, &path).await;
    let body = hub
        .wait_get(
            "/v1/events?types=driver.stopped,driver.moving,stop.checked_in",
            "f1",
            "both stops",
            |b| {
                b["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["type"] == "driver.stopped")
                    .count()
                    == 2
            },
        )
        .await;
    let events: Vec<(&str, Option<bool>)> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["unplanned"].as_bool()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("driver.stopped", Some(true)),
            ("driver.moving", None),
            ("stop.checked_in", None),
            ("driver.stopped", Some(false)),
        ],
        "{body}"
    );
    let first = &body["events"][0];
    assert_eq!(
        first["stopped_since"],
        trackhub::protocol::time::format_ts(t0)
    );
    assert_eq!(body["events"][1]["stopped_since"], first["stopped_since"]);
}
