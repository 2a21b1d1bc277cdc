//! Several hub processes behind one Redis and one PostgreSQL: positions, events and check-ins
//! cross nodes; a Redis restart degrades and then converges; a driver moving nodes mid-dwell is
//! checked in once. Every node is the real `trackhub serve` binary.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::*;
use serde_json::{json, Value};

const LAT: f64 = 41.15;
const LON: f64 = -8.61;
const BBOX: [f64; 4] = [LON - 0.1, LAT - 0.1, LON + 0.1, LAT + 0.1];

/// Fixes parked 20 m from the stop every 5 s from `t0` for `secs` seconds, seqs from `seq0`.
fn parked(seq0: u64, t0: i64, secs: i64) -> Vec<Value> {
    let (lat, lon) = offset(LAT, LON, 20.0, 0.0);
    (0..=secs / 5)
        .map(|i| ping(seq0 + i as u64, t0 + i * 5000, lat, lon))
        .collect()
}

/// Ten fixes driving north to the stop at 10 m/s, ending 50 m short of it.
fn approach(seq0: u64, t0: i64) -> Vec<Value> {
    (0..10)
        .map(|i| {
            let (lat, lon) = offset(LAT, LON, -500.0 + i as f64 * 50.0, 0.0);
            ping(seq0 + i, t0 + i as i64 * 5000, lat, lon)
        })
        .collect()
}

fn has_driver(frame: &Value, id: &str) -> bool {
    frame["positions"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["driver_id"] == id))
}

/// True for a `positions` frame placing `id` at latitude `lat`.
fn at(frame: &Value, id: &str, lat: f64) -> bool {
    frame["type"] == "positions"
        && frame["positions"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["driver_id"] == id && (p["lat"].as_f64().unwrap() - lat).abs() < 1e-9)
        })
}

async fn subscribe_bbox(w: &mut Ws) {
    w.send(&json!({"type":"subscribe","bbox": BBOX})).await;
    let snap = w.json().await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
}

#[tokio::test]
async fn cluster_watcher_on_b_follows_driver_on_a_and_catches_up_after_redis_restarts() {
    let mut c = Cluster::start(2).await;
    let (a, b) = (0, 1);

    // The trip is created on B; the driver streams to A, which loads it from the database.
    let trip = json!({"id":"t1","driver_id":"D1","stops":[{"id":"s1","lat":LAT,"lon":LON,"radius_m":100}]});
    let (status, body) = c.post(b, "/v1/trips", "f1", &trip).await;
    assert_eq!(status, 201, "{body}");

    let mut wa = c.watcher(a, "f1").await;
    subscribe_bbox(&mut wa).await;
    let mut wb = c.watcher(b, "f1").await;
    subscribe_bbox(&mut wb).await;

    let t0 = now_ms() - 600_000;
    let mut d1 = c.driver(a, "D1", "f1").await;
    let fixes: Vec<Value> = approach(1, t0)
        .into_iter()
        .chain(parked(11, t0 + 50_000, 120))
        .collect();
    let last_seq = fixes.last().unwrap()["seq"].as_u64().unwrap();
    d1.send(&json!({"type":"batch","pings": fixes})).await;
    let frames = d1.until_ack(last_seq).await;
    let checkins: Vec<&Value> = frames.iter().filter(|f| f["type"] == "checkin").collect();
    assert_eq!(checkins.len(), 1, "{frames:?}");

    // B's watcher gets A's driver and A's check-in (events are immediate, positions come with
    // the next flush: either may be first).
    let (mut saw_position, mut checkin) = (false, None);
    while !saw_position || checkin.is_none() {
        let f = wb.json().await;
        saw_position |= f["type"] == "positions" && has_driver(&f, "D1");
        if f["type"] == "event" && f["event"]["type"] == "stop.checked_in" {
            checkin = Some(f);
        }
    }
    let ev = checkin.unwrap();
    assert_eq!(ev["event"]["driver_id"], "D1");
    assert_eq!(ev["event"]["stop_id"], "s1");
    // B's REST sees A's driver in its own index.
    let near = c
        .poll(
            b,
            &format!("/v1/drivers/nearby?lat={LAT}&lon={LON}&limit=5"),
            "f1",
            WAIT,
            |b| b["drivers"].as_array().is_some_and(|d| !d.is_empty()),
        )
        .await;
    assert_eq!(near["drivers"][0]["driver_id"], "D1", "{near}");
    assert!(near["drivers"][0]["distance_m"].as_f64().unwrap() < 30.0);
    // …and B's drivers panel lists A's driver as online, with the position A published.
    let panel = c
        .poll(b, "/v1/fleet/drivers", "f1", WAIT, |b| {
            b["drivers"]
                .as_array()
                .is_some_and(|d| d.iter().any(|r| r["driver_id"] == "D1"))
        })
        .await;
    let row = &panel["drivers"][0];
    assert_eq!(row["driver_id"], "D1", "{panel}");
    assert_ne!(row["status"], "offline", "{panel}");
    assert!(
        (row["position"]["lat"].as_f64().unwrap() - LAT).abs() < 0.001,
        "{panel}"
    );
    let (_, list) = c.get(b, "/v1/checkins?trip_id=t1", "f1").await;
    assert_eq!(list["checkins"].as_array().unwrap().len(), 1, "{list}");

    // Redis dies. A keeps ingesting and serving its own watcher; both nodes say degraded.
    c.redis.kill();
    c.wait_status(a, "degraded").await;
    c.wait_status(b, "degraded").await;
    let (lat, lon) = offset(LAT, LON, 2_000.0, 0.0);
    let t1 = t0 + 300_000;
    d1.ping_acked(ping(100, t1, lat, lon)).await;
    wa.until(|f| at(f, "D1", lat)).await;
    // A second driver reports once during the outage, then stays silent.
    let mut d2 = c.driver(a, "D2", "f1").await;
    let (lat2, lon2) = offset(LAT, LON, 0.0, 3_000.0);
    d2.ping_acked(ping(1, t1, lat2, lon2)).await;
    let (_, on_b) = c.get(b, "/v1/drivers/D2", "f1").await;
    assert_ne!(
        on_b["driver_id"], "D2",
        "B cannot know D2 while Redis is down"
    );

    // Redis returns: within 5 s B knows the silent driver (republished by A) and follows D1 again.
    c.redis.restart().await;
    let back = Instant::now();
    let d2_on_b = c
        .poll(b, "/v1/drivers/D2", "f1", Duration::from_secs(5), |b| {
            b["driver_id"] == "D2"
        })
        .await;
    assert!((d2_on_b["lat"].as_f64().unwrap() - lat2).abs() < 1e-9);
    let caught_up = back.elapsed();
    let (_, d1_on_b) = c.get(b, "/v1/drivers/D1", "f1").await;
    assert!(
        (d1_on_b["lat"].as_f64().unwrap() - lat).abs() < 1e-9,
        "{d1_on_b}"
    );
    c.wait_status(a, "ready").await;
    c.wait_status(b, "ready").await;
    let (lat3, lon3) = offset(LAT, LON, 2_100.0, 0.0);
    d1.ping_acked(ping(101, t1 + 5_000, lat3, lon3)).await;
    wb.until(|f| at(f, "D1", lat3)).await;
    eprintln!("B caught up {caught_up:?} after Redis returned");
    c.stop().await;
}

#[tokio::test]
async fn cluster_driver_moving_nodes_mid_dwell_is_checked_in_once() {
    let c = Cluster::start(2).await;
    let (a, b) = (0, 1);
    let trip = json!({"id":"t2","driver_id":"D3","stops":[{"id":"s1","lat":LAT,"lon":LON,"radius_m":100}]});
    let (status, body) = c.post(a, "/v1/trips", "f1", &trip).await;
    assert_eq!(status, 201, "{body}");
    let mut wa = c.watcher(a, "f1").await;
    wa.send(&json!({"type":"subscribe","drivers":["D3"]})).await;
    wa.json().await;

    // On A: drive in and stay 40 s (less than the 75 s dwell): no check-in yet.
    let t0 = now_ms() - 600_000;
    let arrived = t0 + 50_000;
    let on_a: Vec<Value> = approach(1, t0)
        .into_iter()
        .chain(parked(11, arrived, 40))
        .collect();
    let mut d = c.driver(a, "D3", "f1").await;
    d.send(&json!({"type":"batch","pings": on_a.clone()})).await;
    let frames = d
        .until_ack(on_a.last().unwrap()["seq"].as_u64().unwrap())
        .await;
    assert!(frames.iter().all(|f| f["type"] != "checkin"), "{frames:?}");
    d.close().await;
    // A's history is written (the phone takes longer than this to reconnect).
    c.poll(a, "/v1/drivers/D3/track?limit=1000", "f1", WAIT, |t| {
        t["properties"]["count"].as_u64() == Some(on_a.len() as u64)
    })
    .await;

    // On B the phone first resends its last fixes (acks lost), then keeps parking 40 s more.
    let mut d = c.driver(b, "D3", "f1").await;
    let resent: Vec<Value> = on_a[on_a.len() - 3..]
        .iter()
        .map(|f| {
            let mut f = f.clone();
            f["seq"] = json!(f["seq"].as_u64().unwrap() + 1000);
            f
        })
        .collect();
    let more = parked(100, arrived + 45_000, 40);
    let fixes: Vec<Value> = resent.into_iter().chain(more).collect();
    d.send(&json!({"type":"batch","pings": fixes.clone()}))
        .await;
    let frames = d
        .until_ack(fixes.last().unwrap()["seq"].as_u64().unwrap())
        .await;
    let checkins: Vec<&Value> = frames.iter().filter(|f| f["type"] == "checkin").collect();
    assert_eq!(
        checkins.len(),
        1,
        "the dwell begun on A completes on B: {frames:?}"
    );
    // The dwell began on A: arrival at the first parked fix, check-in 75 s later.
    assert_eq!(
        checkins[0]["arrived_at"],
        trackhub::protocol::time::format_ts(arrived)
    );
    assert_eq!(
        checkins[0]["checked_in_at"],
        trackhub::protocol::time::format_ts(arrived + 75_000)
    );
    // A's watcher learns it through the bus.
    let ev = wa
        .until(|f| f["type"] == "event" && f["event"]["type"] == "stop.checked_in")
        .await;
    assert_eq!(ev["event"]["trip_id"], "t2");

    // Back to A with everything again: still one check-in.
    d.close().await;
    let mut d = c.driver(a, "D3", "f1").await;
    let again: Vec<Value> = on_a
        .iter()
        .chain(fixes.iter())
        .enumerate()
        .map(|(i, f)| {
            let mut f = f.clone();
            f["seq"] = json!(5000 + i as u64);
            f
        })
        .collect();
    d.send(&json!({"type":"batch","pings": again.clone()}))
        .await;
    let frames = d.until_ack(5000 + again.len() as u64 - 1).await;
    assert!(frames.iter().all(|f| f["type"] != "checkin"), "{frames:?}");
    for node in [a, b] {
        let (_, list) = c.get(node, "/v1/checkins?trip_id=t2", "f1").await;
        let list = list["checkins"].as_array().unwrap().clone();
        assert_eq!(list.len(), 1, "{list:?}");
    }
    c.stop().await;
}

/// The next `n` events of a stream socket, as (id, trip_id).
/// Issue 15: the driver streams to A and is already parked at the stop (2 minutes of fixes,
/// acked) when its trip is created on B. A learns of the trip through the bus and runs its
/// stops against the fixes it has already taken: the driver is checked in without another fix;
/// and a second trip created on A itself for a driver parked there checks in at once too.
#[tokio::test]
async fn cluster_a_trip_given_to_a_driver_already_there_checks_in() {
    let c = Cluster::start(2).await;
    let (a, b) = (0, 1);
    let t0 = now_ms() - 600_000;
    let mut d = c.driver(a, "D5", "f1").await;
    let fixes: Vec<Value> = approach(1, t0)
        .into_iter()
        .chain(parked(11, t0 + 50_000, 120))
        .collect();
    d.send(&json!({"type":"batch","pings": fixes.clone()}))
        .await;
    let frames = d
        .until_ack(fixes.last().unwrap()["seq"].as_u64().unwrap())
        .await;
    assert!(
        frames.iter().all(|f| f["type"] != "checkin"),
        "no trip yet: {frames:?}"
    );

    let trip = json!({"id":"t5","driver_id":"D5","stops":[{"id":"s1","lat":LAT,"lon":LON,"radius_m":100}]});
    let (status, body) = c.post(b, "/v1/trips", "f1", &trip).await;
    assert_eq!(status, 201, "{body}");
    // Checked in on A from the fixes it already had: arrival at the first parked fix.
    let list = c
        .poll(a, "/v1/checkins?trip_id=t5", "f1", WAIT, |l| {
            l["checkins"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    assert_eq!(
        list["checkins"][0]["arrived_at"],
        trackhub::protocol::time::format_ts(t0 + 50_000)
    );
    assert_eq!(list["checkins"][0]["source"], "auto");

    // The same on one node: a trip created on A for a driver parked there.
    let mut e = c.driver(a, "D6", "f1").await;
    let fixes = parked(1, t0, 120);
    e.send(&json!({"type":"batch","pings": fixes.clone()}))
        .await;
    e.until_ack(fixes.last().unwrap()["seq"].as_u64().unwrap())
        .await;
    let trip = json!({"id":"t6","driver_id":"D6","stops":[{"id":"s1","lat":LAT,"lon":LON,"radius_m":100}]});
    assert_eq!(c.post(a, "/v1/trips", "f1", &trip).await.0, 201);
    c.poll(b, "/v1/checkins?trip_id=t6", "f1", WAIT, |l| {
        l["checkins"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;
    c.stop().await;
}

async fn read_events(ws: &mut Ws, n: usize) -> Vec<(i64, Value)> {
    let mut got = Vec::new();
    while got.len() < n {
        let f = ws.until(|f| f["type"] == "event").await;
        got.push((
            f["event"]["id"].as_i64().unwrap(),
            f["event"]["trip_id"].clone(),
        ));
    }
    got
}

/// Check-ins made on both nodes at once: the log's ids are global and increase in commit order,
/// a stream on either node hears of every one live (through Redis: the nodes' periodic re-read
/// is set to 10 minutes), and a consumer resuming on the other node gets the rest exactly once.
#[tokio::test]
async fn cluster_events_have_global_ids_and_reach_streams_on_every_node() {
    let cluster = Cluster::start(2).await;
    for k in 0..30 {
        let trip = json!({"id": format!("t{k}"), "driver_id": format!("D{k}"),
            "stops": [{"id": "s1", "lat": LAT, "lon": LON, "radius_m": 80}]});
        assert_eq!(cluster.post(k % 2, "/v1/trips", "f1", &trip).await.0, 201);
    }
    // A webhook receiver: both nodes dispatch, each delivery must be claimed by one of them.
    let received: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let sink = received.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let sink = sink.clone();
            async move {
                let id = headers["trackhub-event-id"].to_str().unwrap().to_string();
                sink.lock().unwrap().push(id);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let (status, hook) = cluster
        .post(
            0,
            "/v1/webhooks",
            "f1",
            &json!({"url": hook_url, "events": ["stop.checked_in"]}),
        )
        .await;
    assert_eq!(status, 201);

    let query = "mode=none&types=stop.checked_in";
    let mut on_b = cluster.stream(1, "f1", query).await;
    let mut on_a = cluster.stream(0, "f1", query).await;

    // 20 check-ins at once, half on each node.
    let checkins = (0..20).map(|k| {
        let http = cluster.http.clone();
        let url = cluster.nodes[k % 2].url(&format!("/v1/trips/t{k}/stops/s1/checkin"));
        let token = cluster.token(trackhub::auth::Role::Admin, "admin", "f1");
        tokio::spawn(async move { post_json(&http, &url, &token, &json!({})).await.0 })
    });
    for c in checkins.collect::<Vec<_>>() {
        assert_eq!(c.await.unwrap(), 201);
    }
    let b = read_events(&mut on_b, 20).await;
    let a = read_events(&mut on_a, 20).await;
    let (_, log) = cluster
        .get(0, "/v1/events?types=stop.checked_in", "f1")
        .await;
    let logged: Vec<(i64, Value)> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_i64().unwrap(), e["trip_id"].clone()))
        .collect();
    assert_eq!(logged.len(), 20);
    assert!(logged.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(a, logged, "node A's stream: the log, in order");
    assert_eq!(b, logged, "node B's stream: the log, in order");

    // B's consumer leaves; 10 more check-ins on A; it resumes on A with every one exactly once.
    let last = b.last().unwrap().0;
    on_b.close().await;
    for k in 20..30 {
        let path = format!("/v1/trips/t{k}/stops/s1/checkin");
        assert_eq!(cluster.post(0, &path, "f1", &json!({})).await.0, 201);
    }
    let mut resumed = cluster
        .stream(0, "f1", &format!("{query}&since={last}"))
        .await;
    let rest = read_events(&mut resumed, 10).await;
    let trips: Vec<Value> = rest.iter().map(|(_, t)| t.clone()).collect();
    let want: Vec<Value> = (20..30).map(|k| json!(format!("t{k}"))).collect();
    assert_eq!(trips, want);
    assert!(rest[0].0 > last && rest.windows(2).all(|w| w[0].0 < w[1].0));

    // Every check-in delivered once, by one node or the other.
    let path = format!(
        "/v1/webhooks/{}/deliveries?status=delivered",
        hook["id"].as_str().unwrap()
    );
    let delivered = cluster
        .poll(1, &path, "f1", WAIT, |b| {
            b["deliveries"].as_array().unwrap().len() == 30
        })
        .await;
    assert!(delivered["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["attempts"] == 1));
    let mut ids = received.lock().unwrap().clone();
    assert_eq!(ids.len(), 30, "no delivery made twice");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30);
}

/// ETAs and tracking links across nodes (issue 17): the driver streams to A; the trip and the
/// customer's link are made on B; B's trip view has A's ETAs (stored), and B's tracking page
/// shows the driver on the way with the ETA A computed (carried on the bus with the position).
#[tokio::test]
async fn cluster_etas_and_a_tracking_link_follow_a_driver_served_by_another_node() {
    let c = Cluster::start(2).await;
    let (a, b) = (0, 1);
    let (stop_lat, stop_lon) = offset(LAT, LON, 2_000.0, 0.0);
    let (status, trip) = c
        .post(
            b,
            "/v1/trips",
            "f1",
            &json!({"id": "t1", "driver_id": "D", "stops": [{"id": "s1", "lat": stop_lat, "lon": stop_lon}]}),
        )
        .await;
    assert_eq!(status, 201, "{trip}");
    let (status, link) = c
        .post(b, "/v1/trips/t1/stops/s1/links", "f1", &json!({}))
        .await;
    assert_eq!(status, 201, "{link}");
    let mut d = c.driver(a, "D", "f1").await;
    d.ping_acked(ping(1, now_ms(), LAT, LON)).await;

    let trip = c
        .poll(b, "/v1/trips/t1", "f1", WAIT, |t| {
            t["stops"][0]["eta"].is_string()
        })
        .await;
    let path = format!("{}/status", link["path"].as_str().unwrap());
    let view = c.poll(b, &path, "f1", WAIT, |v| v["state"] == "next").await;
    assert_eq!(view["driver"]["lat"].as_f64().unwrap(), LAT);
    // The page's ETA is the one A stored, to the ETA refresh's 10 s of slack.
    let eta = |v: &Value| trackhub::protocol::time::parse_ts(v.as_str().unwrap()).unwrap();
    assert!((eta(&view["stop"]["eta"]) - eta(&trip["stops"][0]["eta"])).abs() <= 10_000);
    c.stop().await;
}
