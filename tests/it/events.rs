//! The durable event log and the service streams that resume from it, against a real hub: a
//! consumer away during 100 automatic check-ins (and a hub restart) gets each exactly once, in
//! order, on the WebSocket stream, on SSE with `Last-Event-ID`, and from `GET /v1/events`.

use crate::common;

use std::ops::Range;

use common::sse::Sse;
use common::*;
use serde_json::{json, Value};
use trackhub::auth::Role;

const LAT: f64 = 41.15;
const LON: f64 = -8.61;
/// Stops of the chain lie this far apart, due north.
const SPACING_M: f64 = 1_000.0;

fn stop_position(i: usize) -> (f64, f64) {
    offset(LAT, LON, i as f64 * SPACING_M, 0.0)
}

/// A trip of `n` stops laid along a meridian.
fn chain_trip(id: &str, driver: &str, n: usize) -> Value {
    let stops: Vec<Value> = (0..n)
        .map(|i| {
            let (lat, lon) = stop_position(i);
            json!({"id": format!("s{i}"), "lat": lat, "lon": lon, "radius_m": 100})
        })
        .collect();
    json!({"id": id, "driver_id": driver, "stops": stops})
}

/// Drives through `stops`: per stop, a fix 200 m before it, then 120 s parked 10 m from it
/// (fixes every 10 s from 30 s on), one batch per stop, each acknowledged. Device time: stop `i`
/// starts at `t0 + i × 200 s`. Returns the check-ins the socket reported, as stop ids.
async fn visit(d: &mut Ws, stops: Range<usize>, t0: i64, seq: &mut u64) -> Vec<String> {
    let mut checked_in = Vec::new();
    for i in stops {
        let start = t0 + i as i64 * 200_000;
        let (blat, blon) = offset(stop_position(i).0, LON, -200.0, 0.0);
        let (plat, plon) = offset(stop_position(i).0, LON, 10.0, 0.0);
        let mut pings = vec![ping(*seq, start, blat, blon)];
        for k in 1..=12 {
            pings.push(ping(
                *seq + k,
                start + 20_000 + 10_000 * k as i64,
                plat,
                plon,
            ));
        }
        *seq += 13;
        d.send(&json!({"type": "batch", "pings": pings})).await;
        for f in d.until_ack(*seq - 1).await {
            if f["type"] == "checkin" {
                checked_in.push(f["stop_id"].as_str().unwrap().to_string());
            }
        }
    }
    checked_in
}

/// Reads `n` events from a stream socket (skipping anything else), as (id, stop_id).
async fn ws_events(s: &mut Ws, n: usize) -> Vec<(i64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let f = s.until(|f| f["type"] == "event").await;
        got.push(id_and_stop(&f["event"]));
    }
    got
}

fn id_and_stop(e: &Value) -> (i64, String) {
    (
        e["id"].as_i64().expect("event id"),
        e["stop_id"].as_str().unwrap_or("").to_string(),
    )
}

/// A hub whose drivers may send a batch per stop as fast as acks come back.
async fn hub() -> TestHub {
    TestHub::start_with(|c| {
        c.limits.msgs_per_s = 1_000;
        c.limits.msg_burst = 1_000;
    })
    .await
}

#[tokio::test]
async fn a_consumer_away_during_100_checkins_and_a_restart_gets_each_once_in_order() {
    let mut hub = hub().await;
    assert_eq!(
        hub.post("/v1/trips", "f1", &chain_trip("t1", "D1", 101))
            .await
            .0,
        201
    );
    let t0 = now_ms() - 101 * 200_000 - 3_600_000;
    let mut seq = 1;

    // Live: the consumer sees the first check-in, then goes away.
    let mut consumer = hub.stream("f1", "mode=none&types=stop.checked_in").await;
    let mut d = hub.driver("D1", "f1").await;
    assert_eq!(visit(&mut d, 0..1, t0, &mut seq).await, ["s0"]);
    let (last_seen, stop) = ws_events(&mut consumer, 1).await.remove(0);
    assert_eq!(stop, "s0");
    consumer.close().await;

    // Away: 50 check-ins, a hub restart, 50 more.
    assert_eq!(visit(&mut d, 1..51, t0, &mut seq).await.len(), 50);
    d.close().await;
    hub = hub.restart().await;
    let mut d = hub.driver("D1", "f1").await;
    assert_eq!(visit(&mut d, 51..101, t0, &mut seq).await.len(), 50);

    let expected: Vec<String> = (1..101).map(|i| format!("s{i}")).collect();
    let check = |what: &str, got: &[(i64, String)]| {
        let stops: Vec<&String> = got.iter().map(|(_, s)| s).collect();
        assert_eq!(
            stops,
            expected.iter().collect::<Vec<_>>(),
            "{what}: stops in order"
        );
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0) && got[0].0 > last_seen,
            "{what}: ids increase from the resume point"
        );
    };

    // REST, in pages of 30.
    let mut rest = Vec::new();
    let mut since = last_seen;
    loop {
        let (status, page) = hub
            .get(
                &format!("/v1/events?since={since}&limit=30&types=stop.checked_in"),
                "f1",
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        assert!(events.len() <= 30);
        rest.extend(events.iter().map(id_and_stop));
        since = rest.last().unwrap().0;
    }
    check("GET /v1/events", &rest);

    // The WebSocket stream, resumed.
    let mut consumer = hub
        .stream(
            "f1",
            &format!("mode=none&types=stop.checked_in&since={last_seen}"),
        )
        .await;
    let ws = ws_events(&mut consumer, 100).await;
    check("ws stream", &ws);
    assert_eq!(ws, rest, "the same events, ids and order on both");

    // SSE, resumed the way EventSource does: the original URL plus Last-Event-ID.
    let token = hub.token(Role::Service, "billing", "f1");
    let url = hub.url("/v1/stream?mode=none&types=stop.checked_in&since=0");
    let (status, sse) = Sse::connect(&hub.http, &url, &token, Some(last_seen)).await;
    assert_eq!(status, 200);
    let mut sse = sse.unwrap();
    let mut sse_got = Vec::new();
    while sse_got.len() < 100 {
        let e = sse.next().await.expect("stream open");
        assert_eq!(e.event, "stop.checked_in");
        assert_eq!(
            e.id.as_deref(),
            e.data["id"].as_i64().map(|i| i.to_string()).as_deref()
        );
        sse_got.push(id_and_stop(&e.data));
    }
    assert_eq!(sse_got, rest);

    // Nothing is sent twice: the next thing each stream carries is a new, live check-in.
    assert_eq!(
        hub.post("/v1/trips", "f1", &chain_trip("t2", "D1", 1))
            .await
            .0,
        201
    );
    let (status, _) = hub
        .post("/v1/trips/t2/stops/s0/checkin", "f1", &json!({}))
        .await;
    assert_eq!(status, 201);
    let live = ws_events(&mut consumer, 1).await.remove(0);
    assert_eq!(live.1, "s0");
    assert!(live.0 > rest.last().unwrap().0);
    let e = sse.next().await.unwrap();
    assert_eq!(id_and_stop(&e.data), live);
    hub.stop().await;
}

#[tokio::test]
async fn the_event_log_is_per_fleet_validated_and_complete() {
    let hub = hub().await;
    assert_eq!(
        hub.post("/v1/trips", "f1", &chain_trip("t1", "D1", 2))
            .await
            .0,
        201
    );
    let mut d = hub.driver("D1", "f1").await;
    let t0 = now_ms() - 3_600_000;
    let mut seq = 1;
    visit(&mut d, 0..2, t0, &mut seq).await;

    // Every kind the visit made, in order: online, check-in, departure, check-in, completed
    // (the automatic stops of the same visits, `driver.stopped`/`driver.moving`, are checked in
    // tests/it/geofences.rs and filtered out here).
    let (_, all) = hub
        .get(
            "/v1/events?since=0&types=driver.online,stop.checked_in,stop.departed,trip.completed",
            "f1",
        )
        .await;
    let kinds: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "driver.online",
            "stop.checked_in",
            "stop.departed",
            "stop.checked_in",
            "trip.completed"
        ]
    );
    let first = &all["events"][1];
    assert_eq!(first["fleet"], "f1");
    assert_eq!(first["driver_id"], "D1");
    assert_eq!(first["trip_id"], "t1");
    assert_eq!(first["source"], "auto");
    assert!(first["ts"].as_str().unwrap().ends_with('Z'));

    // Filters.
    let (_, only) = hub
        .get("/v1/events?types=trip.completed,stop.departed", "f1")
        .await;
    assert_eq!(only["events"].as_array().unwrap().len(), 2);
    let (_, other_driver) = hub.get("/v1/events?drivers=D9", "f1").await;
    assert_eq!(other_driver["events"], json!([]));
    // A filtered read's cursor moves past the rows it skipped (issue 16: it stayed at `since`,
    // and a filtered stream scanned the same rows at every read). Full pages resume after their
    // last event instead.
    let newest = all["events"][4]["id"].as_i64().unwrap();
    assert_eq!(other_driver["next_since"], newest);
    let (_, page) = hub
        .get("/v1/events?types=stop.checked_in&limit=1", "f1")
        .await;
    assert_eq!(page["next_since"], all["events"][1]["id"]);
    let (_, rest) = hub
        .get(
            &format!(
                "/v1/events?types=stop.checked_in&since={}",
                page["next_since"]
            ),
            "f1",
        )
        .await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 1);
    assert_eq!(rest["events"][0]["id"], all["events"][3]["id"]);
    assert_eq!(rest["next_since"], newest);
    // Ids are matched literally: `%` and `_` are not wildcards.
    let mut odd = hub.driver("D%_", "f1").await;
    odd.ping_acked(ping(1, t0, LAT, LON)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.get("/v1/events?drivers=D%25_", "f1").await.1["events"] == json!([]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "D%_ online never logged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        hub.get("/v1/events?drivers=DX1", "f1").await.1["events"],
        json!([])
    );
    assert_eq!(
        hub.get("/v1/events?drivers=D1x", "f1").await.1["events"],
        json!([])
    );

    // Another fleet sees none of it; drivers may not read the log.
    assert_eq!(hub.get("/v1/events", "f2").await.1["events"], json!([]));
    let driver = hub.token(Role::Driver, "D1", "f1");
    assert_eq!(hub.get_as("/v1/events", &driver).await.0, 403);

    // Bad queries are problem+json with the field named.
    for (query, field) in [
        ("since=-1", "since"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("types=stop.arrived", "types"),
    ] {
        let (status, body) = hub.get(&format!("/v1/events?{query}"), "f1").await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}");
    }
    assert_eq!(hub.get("/v1/events?since=abc", "f1").await.0, 400);

    // The same checks guard the streams, before the upgrade.
    let token = hub.token(Role::Service, "svc", "f1");
    let stream = |q: &str| format!("{}&{q}", hub.ws_url("/v1/ws/stream", &token));
    assert_eq!(upgrade_status(&stream("mode=fast"), &[]).await, 422);
    assert_eq!(upgrade_status(&stream("bbox=1,2,3"), &[]).await, 422);
    assert_eq!(upgrade_status(&stream("fleet=f2"), &[]).await, 403);
    assert_eq!(
        upgrade_status(&stream("mode=none&types=none"), &[]).await,
        422
    );
    let as_driver = hub.ws_url("/v1/ws/stream", &driver);
    assert_eq!(upgrade_status(&as_driver, &[]).await, 403);
    hub.stop().await;
}

#[tokio::test]
async fn events_past_retention_answer_410_instead_of_a_silent_gap() {
    let hub = TestHub::start_with(|c| c.events.retention_s = 1).await;
    let t0 = now_ms() - 60_000;
    for (n, driver) in ["D1", "D2", "D3"].iter().enumerate() {
        let mut d = hub.driver(driver, "f1").await;
        d.ping_acked(ping(1, t0 + n as i64, LAT, LON)).await;
    }
    // Three driver.online events, stored; retention (1 s) deletes all but the newest.
    let deadline = tokio::time::Instant::now() + WAIT;
    let gone = loop {
        let (status, body) = hub.get("/v1/events?since=0", "f1").await;
        if status == 410 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never pruned: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(gone["status"], 410);
    let detail = gone["detail"].as_str().unwrap();
    let pruned: i64 = detail
        .split("since=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("the detail names where to resume");
    let (status, rest) = hub.get(&format!("/v1/events?since={pruned}"), "f1").await;
    assert_eq!(status, 200);
    // The newest is kept (on a loaded machine the three were stored in more than one batch, and
    // the second may not be pruned yet when the first is: it is then kept too).
    let rest = rest["events"].as_array().unwrap();
    assert!((1..=2).contains(&rest.len()), "{rest:?}");
    assert_eq!(
        rest.last().unwrap()["driver_id"],
        "D3",
        "the newest is kept"
    );

    let token = hub.token(Role::Service, "svc", "f1");
    let url = format!("{}&since=0", hub.ws_url("/v1/ws/stream", &token));
    assert_eq!(upgrade_status(&url, &[]).await, 410);
    let (status, _) = Sse::connect(&hub.http, &hub.url("/v1/stream"), &token, Some(0)).await;
    assert_eq!(status, 410);
    hub.stop().await;
}

/// A departure whose write fails is decided again and stored once the database takes it (issue
/// 16: it was logged and dropped, and the stop stayed `arrived` for good). The fault is a
/// trigger in the hub's own database that refuses to mark a stop departed, on either engine.
#[tokio::test]
async fn a_departure_that_failed_to_store_is_retried() {
    let hub = hub().await;
    assert_eq!(
        hub.post("/v1/trips", "f1", &chain_trip("t1", "D1", 2))
            .await
            .0,
        201
    );
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&hub.cfg.database_url).await.unwrap();
    let postgres = hub.cfg.database_url.starts_with("postgres");
    let fault: &[&str] = if postgres {
        &[
            "CREATE FUNCTION refuse_departure() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$",
            "CREATE TRIGGER refuse_departure BEFORE UPDATE ON stops FOR EACH ROW \
             WHEN (NEW.status = 'departed') EXECUTE FUNCTION refuse_departure()",
        ]
    } else {
        &["CREATE TRIGGER refuse_departure BEFORE UPDATE ON stops \
           WHEN NEW.status = 'departed' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"]
    };
    for statement in fault {
        sqlx::query(statement).execute(&db).await.unwrap();
    }

    let mut d = hub.driver("D1", "f1").await;
    let t0 = now_ms() - 3_600_000;
    let mut seq = 1;
    assert_eq!(visit(&mut d, 0..1, t0, &mut seq).await, ["s0"]);
    // Two fixes 400 m south of s0 (its exit ring is 150 m): the departure is decided, and its
    // write refused.
    let away = |seq: u64, dt: i64, south_m: f64| {
        let (lat, lon) = offset(stop_position(0).0, LON, -south_m, 0.0);
        ping(seq, t0 + 150_000 + dt, lat, lon)
    };
    d.send(&json!({"type":"batch","pings":[away(seq, 0, 400.0), away(seq + 1, 5_000, 420.0)]}))
        .await;
    d.until_ack(seq + 1).await;
    seq += 2;
    let (_, trip) = hub.get("/v1/trips/t1", "f1").await;
    assert_eq!(trip["stops"][0]["status"], "arrived");
    let departed = |log: &Value| {
        log["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "stop.departed")
            .count()
    };
    assert_eq!(departed(&hub.get("/v1/events", "f1").await.1), 0);

    // The database takes it again; the next fixes outside the stop decide the departure anew.
    let repair = if postgres {
        "DROP TRIGGER refuse_departure ON stops"
    } else {
        "DROP TRIGGER refuse_departure"
    };
    sqlx::query(repair).execute(&db).await.unwrap();
    d.send(
        &json!({"type":"batch","pings":[away(seq, 10_000, 440.0), away(seq + 1, 15_000, 460.0)]}),
    )
    .await;
    d.until_ack(seq + 1).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, trip) = hub.get("/v1/trips/t1", "f1").await;
        if trip["stops"][0]["status"] == "departed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never departed: {trip}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(departed(&hub.get("/v1/events", "f1").await.1), 1);
    db.close().await;
    hub.stop().await;
}
