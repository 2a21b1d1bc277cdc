//! OsmAnd protocol against a real hub, with exactly the requests the phone apps send
//! (https://www.traccar.org/osmand/): Traccar Client ≤ 8 (parameters on a bodiless POST, speed in
//! knots, unix seconds), Traccar Client 9 (JSON body, motion and battery), Traccar Client 10
//! (form parameters, JSON arrays, heartbeats without coordinates), and the OsmAnd app (GET, unix
//! ms, `hdop`).

use crate::common;

use common::*;
use serde_json::{json, Value};

const LAT: f64 = 41.15;
const LON: f64 = -8.61;
const DEVICE: &str = "48241179";

async fn register(hub: &TestHub, fleet: &str, id: &str, driver: &str) -> String {
    let (status, body) = hub
        .post(
            "/v1/devices",
            fleet,
            &json!({"id": id, "driver_id": driver}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["driver_id"], driver);
    let key = body["key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 48);
    key
}

/// Traccar Client for Android ≤ 8: `POST <server URL>?id=…&timestamp=…` with no body, the
/// parameters appended to the configured URL (which carries our `key`).
async fn traccar_classic(hub: &TestHub, key: &str, ts_s: i64, lat: f64, lon: f64) -> (u16, Value) {
    let url = format!(
        "{}/osmand?key={key}&id={DEVICE}&timestamp={ts_s}&lat={lat}&lon={lon}&speed=0.0&bearing=0.0\
         &altitude=80.0&accuracy=9.6&batt=87.0",
        hub.base
    );
    let r = hub.http.post(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn traccar_client_and_osmand_requests_feed_the_same_pipeline() {
    let hub = TestHub::start().await;
    let key = register(&hub, "f1", DEVICE, "D1").await;
    let trip = json!({"id":"t1","driver_id":"D1","stops":[{"id":"s1","lat":LAT,"lon":LON}]});
    assert_eq!(hub.post("/v1/trips", "f1", &trip).await.0, 201);
    let mut w = hub.watcher("f1").await;
    w.send(&json!({"type":"subscribe","drivers":["D1"]})).await;
    w.json().await;

    // Approach, then park 15 m from the stop for two minutes, one report every 5 s.
    let t0 = now_ms() / 1000 - 600;
    let (lat, lon) = offset(LAT, LON, -300.0, 0.0);
    assert_eq!(
        traccar_classic(&hub, &key, t0, lat, lon).await,
        (200, json!({"accepted":1,"late":0,"heartbeats":0}))
    );
    let pos = w.until(|f| f["type"] == "positions").await;
    assert_eq!(pos["positions"][0]["lat"], lat);
    assert_eq!(pos["positions"][0]["accuracy_m"], 9.6);
    let (plat, plon) = offset(LAT, LON, 15.0, 0.0);
    for i in 0..=24 {
        let (status, body) = traccar_classic(&hub, &key, t0 + 60 + i * 5, plat, plon).await;
        assert_eq!(status, 200, "{body}");
    }
    let ev = w
        .until(|f| f["type"] == "event" && f["event"]["type"] == "stop.checked_in")
        .await;
    assert_eq!(ev["event"]["trip_id"], "t1");
    assert_eq!(
        ev["event"]["arrived_at"],
        trackhub::protocol::time::format_ts((t0 + 60) * 1000)
    );

    // A resent report (the app retries when it missed our answer) is not a new fix.
    assert_eq!(
        traccar_classic(&hub, &key, t0 + 60, plat, plon).await,
        (200, json!({"accepted":0,"late":1,"heartbeats":0}))
    );

    // Traccar Client ≥ 9: JSON body; speed m/s and -1 for unknown heading.
    let body = json!({"location":{"timestamp":trackhub::protocol::time::format_ts((t0 + 300) * 1000),
        "coords":{"latitude":LAT + 0.01,"longitude":LON,"accuracy":5,"speed":12.5,"heading":-1,"altitude":80},
        "is_moving":true,"odometer":1234,"event":"motionchange","battery":{"level":0.87,"is_charging":false},
        "activity":{"type":"in_vehicle"},"extras":{}},"device_id":DEVICE});
    let r = hub
        .http
        .post(format!("{}/osmand?key={key}", hub.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(
        (pos["lat"].as_f64(), pos["speed_mps"].as_f64()),
        (Some(LAT + 0.01), Some(12.5))
    );
    assert!(pos.get("heading_deg").is_none(), "{pos}");

    // The OsmAnd app (LiveSender): GET with its URL template's `{0}`…`{6}` filled: a millisecond
    // timestamp, `hdop` holding Location.getAccuracy() (m) and speed in m/s; key as a bearer
    // token.
    let url = format!(
        "{}/osmand?id={DEVICE}&lat={}&lon={LON}&timestamp={}&hdop=3.0&altitude=80.0&speed=10.0&bearing=90.0",
        hub.base,
        LAT + 0.02,
        (t0 + 310) * 1000
    );
    let r = hub.http.get(url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(
        (pos["speed_mps"].as_f64(), pos["accuracy_m"].as_f64()),
        (Some(10.0), Some(3.0)),
        "OsmAnd's speed is m/s and its hdop its accuracy in metres: {pos}"
    );

    let track = hub
        .wait_track("/v1/drivers/D1/track?from=0", "f1", 28)
        .await;
    assert_eq!(track["properties"]["count"], 28);
    let (_, list) = hub.get("/v1/checkins", "f1").await;
    assert_eq!(list["checkins"].as_array().unwrap().len(), 1);
    hub.stop().await;
}

#[tokio::test]
async fn devices_prove_themselves_and_bad_reports_get_field_errors() {
    let hub = TestHub::start().await;
    let key = register(&hub, "f1", DEVICE, "D1").await;
    let t = now_ms() / 1000;

    // Wrong key, unknown device, no key: the same 401.
    assert_eq!(
        traccar_classic(&hub, "0".repeat(48).as_str(), t, LAT, LON)
            .await
            .0,
        401
    );
    let unknown = format!("{}/osmand?key={key}&id=999&lat={LAT}&lon={LON}", hub.base);
    assert_eq!(
        hub.http
            .post(unknown)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let keyless = format!("{}/osmand?id={DEVICE}&lat={LAT}&lon={LON}", hub.base);
    let r = hub.http.post(keyless).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(
        hub.get("/v1/drivers/D1", "f1").await.0,
        404,
        "nothing got in"
    );

    // Invalid reports: 422 with every bad field.
    let bad = format!(
        "{}/osmand?key={key}&id={DEVICE}&lat=abc&timestamp=later",
        hub.base
    );
    let r = hub.http.post(bad).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["lat", "timestamp", "lon"], "{body}");
    // The field is named as the client sent it, the code is in the message (issue 20).
    let (status, body) = traccar_classic(&hub, &key, t, 95.0, LON).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("lat"))
    );
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("invalid_coordinates"), "{body}");
    let (status, _) = traccar_classic(&hub, &key, t + 3600, LAT, LON).await;
    assert_eq!(status, 422, "an hour in the future");

    // The fleet's devices are listed, without keys; another fleet sees none of them.
    let (status, list) = hub.get("/v1/devices", "f1").await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![DEVICE], "{list}");
    assert!(list["devices"][0].get("key").is_none(), "{list}");
    let (_, other) = hub.get("/v1/devices", "f2").await;
    assert_eq!(other["devices"], json!([]));

    // Registration rules: admins only, ids unique across fleets, revocation.
    let d_token = hub.token(trackhub::auth::Role::Driver, "D1", "f1");
    let (status, _) = hub
        .post_as("/v1/devices", &d_token, &json!({"id":"x","driver_id":"D1"}))
        .await;
    assert_eq!(status, 403);
    let (status, _) = hub
        .post(
            "/v1/devices",
            "f2",
            &json!({"id": DEVICE, "driver_id": "D9"}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, body) = hub
        .post(
            "/v1/devices",
            "f1",
            &json!({"id": "p2", "driver_id": "D2", "key": "short"}),
        )
        .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("key"))
    );
    let del = |fleet: &str| {
        hub.http
            .delete(hub.url(&format!("/v1/devices/{DEVICE}")))
            .bearer_auth(hub.token(trackhub::auth::Role::Admin, "a", fleet))
            .send()
    };
    assert_eq!(
        del("f2").await.unwrap().status().as_u16(),
        404,
        "another fleet's device"
    );
    assert_eq!(traccar_classic(&hub, &key, t, LAT, LON).await.0, 200);
    assert_eq!(del("f1").await.unwrap().status().as_u16(), 204);
    assert_eq!(
        traccar_classic(&hub, &key, t + 1, LAT, LON).await.0,
        401,
        "revoked"
    );
    hub.stop().await;
}

/// One device cannot flood the hub: past its request rate `/osmand` answers 429 with
/// `Retry-After`, counted per device after its key is checked (a stranger cannot spend it),
/// and the driver's fix budget covers its devices too (issue 16: `/osmand` had no limit).
#[tokio::test]
async fn osmand_requests_are_rate_limited_per_device_with_retry_after() {
    let hub = TestHub::start_with(|c| {
        c.limits.osmand_per_device_per_s = 1; // burst 10
    })
    .await;
    let key = register(&hub, "f1", DEVICE, "D1").await;
    let t0 = now_ms() / 1000 - 600;
    // A stranger with a wrong key spends nothing.
    for _ in 0..20 {
        assert_eq!(
            traccar_classic(&hub, "wrong-key", t0, LAT, LON).await.0,
            401
        );
    }
    for i in 0..10 {
        let (status, body) = traccar_classic(&hub, &key, t0 + i, LAT, LON).await;
        assert_eq!(status, 200, "report {i}: {body}");
    }
    let url = format!(
        "{}/osmand?key={key}&id={DEVICE}&timestamp={}&lat={LAT}&lon={LON}",
        hub.base,
        t0 + 10
    );
    let r = hub.http.post(url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 429, "{body}");
    hub.stop().await;
}

/// Traccar Client 9's exact JSON (`_locationTemplate` in lib/preferences.dart): a stationary
/// `motionchange` and a flagged heartbeat carry the phone's motion and battery; Traccar Client
/// 10's form (`HttpUploader.kt`) and its JSON array are read too; and a heartbeat without
/// coordinates answers 200, keeps the driver online past the presence timeout, and never moves
/// its live position (issue 15: it got 422, and the client resent it forever).
#[tokio::test]
async fn traccar_client_9_and_10_bodies_and_heartbeats_without_coordinates() {
    let hub = TestHub::start_with(|c| c.hub.presence_timeout_ms = 2_000).await;
    let key = register(&hub, "f1", DEVICE, "D1").await;
    let url = format!("{}/osmand?key={key}", hub.base);
    let now_s = now_ms() / 1000;

    // Traccar Client 9: the template's fields, in its order, `_` included.
    let body = format!(
        r#"{{"location":{{"timestamp":"{}","coords":{{"latitude":{LAT},"longitude":{LON},"accuracy":9.6,"speed":0,"heading":-1,"altitude":80}},"is_moving":false,"odometer":1234.5,"event":"motionchange","battery":{{"level":0.42,"is_charging":true}},"activity":{{"type":"still"}},"extras":{{}},"_":"&id={DEVICE}&lat={LAT}&lon={LON}&timestamp=x&"}},"device_id":"{DEVICE}"}}"#,
        trackhub::protocol::time::format_ts((now_s - 30) * 1000)
    );
    let r = hub
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(pos["lat"], LAT);
    assert_eq!(pos["battery"], json!({"level": 0.42, "charging": true}));

    // Traccar Client 10, form parameters (speed in knots, battery in %).
    let form = format!(
        "id={DEVICE}&lat={}&lon={LON}&timestamp={}&accuracy=12.0&altitude=80.0&speed=0.0&bearing=0.0&batt=41&charge=false",
        LAT + 0.0001,
        now_s - 20
    );
    let r = hub
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(pos["battery"], json!({"level": 0.41, "charging": false}));

    // Traccar Client 10 with `uploadJson`: an array of flat objects.
    let array = json!([{"id": DEVICE, "lat": LAT + 0.0002, "lon": LON, "timestamp": now_s - 10,
        "accuracy": 8.0, "speed": 1.94, "bearing": 90.0, "batt": 40, "charge": false}]);
    let r = hub.http.post(&url).json(&array).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(pos["lat"], LAT + 0.0002);
    assert!(
        (pos["speed_mps"].as_f64().unwrap() - 0.998).abs() < 0.01,
        "1.94 kn: {pos}"
    );

    // Heartbeats without coordinates, every 500 ms for 4 s (twice the presence timeout): each
    // 200, none moves the position, and the driver stays online.
    let heartbeat = || {
        hub.http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "id={DEVICE}&timestamp={}&batt=39&charge=false",
                now_ms() / 1000
            ))
            .send()
    };
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        let r = heartbeat().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"accepted": 0, "late": 0, "heartbeats": 1})
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let (status, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(status, 200, "kept online by heartbeats: {pos}");
    assert_eq!(
        pos["lat"],
        LAT + 0.0002,
        "a heartbeat never moves the position"
    );
    assert_eq!(pos["battery"]["level"], 0.39);
    // Without them it goes offline after the timeout.
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.get("/v1/drivers/D1", "f1").await.0 == 200 {
        assert!(tokio::time::Instant::now() < deadline, "never went offline");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Traccar Client 9's heartbeat flag with its last location: stored as a still fix.
    let body = json!({"location":{"timestamp": trackhub::protocol::time::format_ts(now_ms()),
        "coords":{"latitude":LAT,"longitude":LON,"accuracy":100,"speed":-1,"heading":-1,"altitude":0},
        "is_moving":false,"event":"heartbeat","heartbeat":true,"activity":{"type":"still"},
        "battery":{"level":0.38,"is_charging":false},"extras":{}},"device_id":DEVICE});
    let r = hub.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 1);
    // Half a coordinate is still an error, named.
    let r = hub
        .http
        .post(format!("{url}&id={DEVICE}&lat={LAT}&timestamp={now_s}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"][0]["field"],
        "lon"
    );
    hub.stop().await;
}

/// `POST /v1/devices` answers what Traccar Client needs (issue 15): its server URL, with the key
/// in the path (the app keeps only a configuration link's origin and path), and a configuration
/// link (`ConfigurationService.applyUri`: link or QR code) with the settings that make arrival
/// detection work. The app then reports to that URL.
#[tokio::test]
async fn a_new_device_gets_a_traccar_client_configuration_link() {
    let hub = TestHub::start().await;
    let (status, body) = hub
        .post(
            "/v1/devices",
            "f1",
            &json!({"id": "phone 7", "driver_id": "D7"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let key = body["key"].as_str().unwrap();
    let server_url = body["traccar_client"]["server_url"].as_str().unwrap();
    assert_eq!(server_url, format!("{}/osmand/{key}", hub.base));
    let link =
        reqwest::Url::parse(body["traccar_client"]["config_link"].as_str().unwrap()).unwrap();
    // What applyUri keeps as the server URL: origin and path.
    assert_eq!(
        format!("{}{}", link.origin().ascii_serialization(), link.path()),
        server_url
    );
    let settings: std::collections::BTreeMap<String, String> =
        link.query_pairs().into_owned().collect();
    assert_eq!(settings["id"], "phone 7");
    assert_eq!(settings["stop_detection"], "false");
    assert_eq!(settings["distance"], "0");
    assert_eq!(settings["accuracy"], "high");
    // Traccar Client 9 posting its JSON to that URL.
    let report = json!({"location":{"timestamp": trackhub::protocol::time::format_ts(now_ms() - 1000),
        "coords":{"latitude":LAT,"longitude":LON,"accuracy":6,"speed":0,"heading":-1,"altitude":0},
        "is_moving":true,"event":"","activity":{"type":"in_vehicle"},"extras":{}},"device_id":"phone 7"});
    let r = hub
        .http
        .post(server_url)
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(hub.get("/v1/drivers/D7", "f1").await.1["lat"], LAT);
    // A wrong key in the path is refused like any wrong key.
    let r = hub
        .http
        .post(format!("{}/osmand/not-the-key", hub.base))
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    hub.stop().await;
}
