//! Trip and driver reports against a real hub, in every format, parsed back with the same
//! crates that wrote them (`gpx`, `csv`) and as GeoJSON.

use crate::common;

use common::*;
use serde_json::{json, Value};

const LAT: f64 = 41.15;
const LON: f64 = -8.61;

fn north(m: f64) -> f64 {
    LAT + m / M_PER_DEG
}

async fn get_raw(hub: &TestHub, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut req = hub.http.get(hub.url(path)).bearer_auth(hub.token(
        trackhub::auth::Role::Admin,
        "admin",
        "f1",
    ));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, r.text().await.unwrap())
}

#[tokio::test]
async fn a_trip_report_in_json_geojson_gpx_and_csv() {
    let hub = TestHub::start().await;
    let now = now_ms();
    let (status, _) = hub
        .post(
            "/v1/trips",
            "f1",
            &json!({"id": "t1", "driver_id": "D", "stops": [
                {"id": "s1", "name": "Depot", "lat": north(1_000.0), "lon": LON,
                 "window_end": trackhub::protocol::time::format_ts(now + 3_600_000)},
                {"id": "s2", "lat": north(2_000.0), "lon": LON,
                 "window_end": trackhub::protocol::time::format_ts(now - 60_000)},
            ]}),
        )
        .await;
    assert_eq!(status, 201);
    // 1 km of driving (20 fixes, 50 m apart), 2 minutes at s1, 500 m on, 2 minutes parked
    // away from both stops (unplanned). Device times from now on, 5 s apart.
    let mut path: Vec<(f64, f64)> = (0..=20).map(|i| (north(i as f64 * 50.0), LON)).collect();
    path.extend([(north(1_000.0), LON); 24]);
    path.extend((1..=10).map(|i| (north(1_000.0 + i as f64 * 50.0), LON)));
    path.extend([(north(1_500.0), LON); 24]);
    let t0 = now + 1_000;
    let pings: Vec<Value> = path
        .iter()
        .enumerate()
        .map(|(i, (lat, lon))| ping(i as u64 + 1, t0 + i as i64 * 5_000 - 400_000, *lat, *lon))
        .collect();
    let last = pings.len() as u64;
    let mut d = hub.driver("D", "f1").await;
    d.send(&json!({"type": "batch", "pings": pings})).await;
    d.until_ack(last).await;
    hub.wait_get("/v1/events?types=driver.stopped", "f1", "two stops", |b| {
        b["events"].as_array().unwrap().len() == 2
    })
    .await;

    // The fixes were recorded before the trip was created here: the span starts with them.
    let t1 = format!("/v1/trips/t1/report?from={}", t0 - 400_000);
    let (status, _, body) = get_raw(&hub, &t1, None).await;
    assert_eq!(status, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    let dist = r["distance_m"].as_f64().unwrap();
    assert!((dist - 1_500.0).abs() < 20.0, "{r}");
    assert_eq!(r["fixes"], path.len());
    assert_eq!(r["stops"][0]["status"], "departed");
    assert!(r["stops"][0]["dwell_s"].as_f64().unwrap() >= 75.0, "{r}");
    assert_eq!(r["stops"][0]["on_time"], true);
    assert_eq!(r["stops"][1]["on_time"], false, "pending past its window");
    assert_eq!(r["on_time_share"], 0.5);
    assert_eq!(r["unplanned_stops"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["stopped_s"].as_f64().unwrap() >= 200.0, "{r}");

    // GeoJSON by Accept: the track and a point per stop and unplanned stop.
    let (status, ctype, body) = get_raw(&hub, &t1, Some("application/geo+json")).await;
    assert_eq!((status, ctype.as_str()), (200, "application/geo+json"));
    let g: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(g["type"], "FeatureCollection");
    assert_eq!(g["features"][0]["geometry"]["type"], "LineString");
    assert_eq!(g["features"].as_array().unwrap().len(), 1 + 2 + 1);
    // Simplified for display: a straight road keeps its ends and its stops.
    let (_, _, body) = get_raw(&hub, &format!("{t1}&format=geojson&simplify_m=10"), None).await;
    let simple: Value = serde_json::from_str(&body).unwrap();
    let kept = simple["features"][0]["geometry"]["coordinates"]
        .as_array()
        .unwrap()
        .len();
    assert!(kept < 10, "{kept} of {} points kept", path.len());

    // GPX 1.1, read back with the `gpx` crate.
    let (status, ctype, body) = get_raw(&hub, &format!("{t1}&format=gpx"), None).await;
    assert_eq!((status, ctype.as_str()), (200, "application/gpx+xml"));
    let doc = gpx::read(body.as_bytes()).expect("valid GPX");
    assert_eq!(doc.version, gpx::GpxVersion::Gpx11);
    assert_eq!(doc.tracks[0].segments[0].points.len(), path.len());
    assert!(doc.tracks[0].segments[0].points[0].time.is_some());
    assert_eq!(doc.waypoints.len(), 3);
    assert_eq!(doc.waypoints[0].name.as_deref(), Some("s1"));

    // CSV, read back with the `csv` crate: one row per stop.
    let (status, ctype, body) = get_raw(&hub, &t1, Some("text/csv")).await;
    assert_eq!((status, ctype.as_str()), (200, "text/csv; charset=utf-8"));
    let mut rows = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[0], "stop_id");
    let rows: Vec<csv::StringRecord> = rows.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][0], "s1");
    assert_eq!(&rows[0][1], "Depot");
    assert_eq!(&rows[0][11], "true");

    // The driver's own report over the same span.
    let (status, _, body) = get_raw(&hub, "/v1/drivers/D/report?format=json", None).await;
    assert_eq!(status, 200, "{body}");
    let dr: Value = serde_json::from_str(&body).unwrap();
    assert!((dr["distance_m"].as_f64().unwrap() - dist).abs() < 1.0);
    assert_eq!(dr["stops"].as_array().unwrap().len(), 2);
    assert!(dr["online_s"].as_f64().unwrap() > 0.0);
    // The stops are stored segments that match the event log: each begins at its
    // `driver.stopped`'s `stopped_since`, the first ends at its `driver.moving`.
    let (_, stopped) = hub.get("/v1/events?types=driver.stopped", "f1").await;
    let (_, moving) = hub.get("/v1/events?types=driver.moving", "f1").await;
    for (seg, ev) in dr["stops"]
        .as_array()
        .unwrap()
        .iter()
        .zip(stopped["events"].as_array().unwrap())
    {
        assert_eq!(seg["from"], ev["stopped_since"], "{seg} {ev}");
    }
    assert!(moving["events"][0]["ts"].is_string(), "{moving}");
    assert_eq!(
        dr["stops"][0]["to"], moving["events"][0]["ts"],
        "{dr} {moving}"
    );
    assert!(dr["stops"][1]["to"].is_null(), "still stopped: {dr}");
    // Bad queries are named.
    let (status, _, body) = get_raw(
        &hub,
        "/v1/drivers/D/report?format=xml&simplify_m=0&from=yesterday",
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(get_raw(&hub, "/v1/trips/nope/report", None).await.0, 404);
}
