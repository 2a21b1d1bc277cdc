//! The driver socket against a real hub: ingest and ack, duplicates, late fixes, bad input, auth.

use crate::common;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use trackhub::auth::Role;

const LAT: f64 = 47.61;
const LON: f64 = -122.33;

#[tokio::test]
async fn ping_and_batch_are_acked_and_move_the_live_position() {
    let hub = TestHub::start().await;
    let mut d = hub.driver("D1", "f1").await;
    let t = now_ms() - 10_000;
    let frames = d.ping_acked(ping(1, t, LAT, LON)).await;
    assert_eq!(frames.last().unwrap(), &json!({"type": "ack", "seq": 1}));

    let (status, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(status, 200);
    assert_eq!(pos["lat"], LAT);
    assert_eq!(pos["driver_id"], "D1");

    // A buffered batch: acked once with the highest seq; the live position is the newest fix.
    let batch: Vec<_> = (2..=6)
        .map(|s| ping(s, t + s as i64 * 1000, LAT + s as f64 * 1e-4, LON))
        .collect();
    d.send(&json!({"type": "batch", "pings": batch})).await;
    let frames = d.until_ack(6).await;
    assert_eq!(
        frames.iter().filter(|f| f["type"] == "ack").count(),
        1,
        "{frames:?}"
    );
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert!((pos["lat"].as_f64().unwrap() - (LAT + 6e-4)).abs() < 1e-9);

    // A driver id in the body may name the token's own driver (publishing as another driver is
    // refused: tests/security.rs).
    d.ping_acked(json!({"type":"ping","seq":7,"ts":t + 7000,"lat":LAT,"lon":LON,"driver_id":"D1"}))
        .await;

    let (_, track) = hub.get("/v1/drivers/D1/track", "f1").await;
    assert_eq!(track["type"], "Feature");
    assert_eq!(track["geometry"]["type"], "LineString");
    let track = hub.wait_track("/v1/drivers/D1/track", "f1", 7).await;
    assert_eq!(track["geometry"]["coordinates"][0], json!([LON, LAT]));
    assert_eq!(
        track["properties"]["timestamps"].as_array().unwrap().len(),
        7
    );
    hub.stop().await;
}

#[tokio::test]
async fn repeated_seq_is_acked_and_ignored() {
    let hub = TestHub::start().await;
    let mut d = hub.driver("D1", "f1").await;
    let t = now_ms() - 10_000;
    d.ping_acked(ping(5, t, LAT, LON)).await;
    // Same seq, different content: acked, but neither the live position nor history changes.
    let frames = d.ping_acked(ping(5, t + 1000, LAT + 0.01, LON)).await;
    assert_eq!(frames, vec![json!({"type": "ack", "seq": 5})]);
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(pos["lat"], LAT);

    // A reconnect resending its buffer is deduplicated too (state is per driver, not per socket).
    d.close().await;
    let mut d = hub.driver("D1", "f1").await;
    d.ping_acked(ping(5, t + 2000, LAT + 0.02, LON)).await;
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(pos["lat"], LAT);
    hub.stop().await;
}

/// A phone whose seq counter restarts (reinstall, cleared storage), or that once sent a wild
/// seq, is not blackholed: a seen seq below the highest on a fix newer than every fix of the
/// driver restarts the anti-replay window, and every later fix is stored (issue 16: all were
/// acked and dropped as duplicates until the node restarted).
#[tokio::test]
async fn a_restarted_seq_counter_is_not_taken_for_duplicates() {
    let hub = TestHub::start().await;
    let mut d = hub.driver("D1", "f1").await;
    let t = now_ms() - 60_000;
    for seq in 1..=3 {
        d.ping_acked(ping(seq, t + seq as i64 * 1000, LAT, LON))
            .await;
    }
    // One wild seq, far ahead.
    d.ping_acked(ping(1_000_000_000_000, t + 4_000, LAT, LON))
        .await;
    // The app is reinstalled: its counter starts again at 1, on new fixes.
    d.close().await;
    let mut d = hub.driver("D1", "f1").await;
    let frames = d.ping_acked(ping(1, t + 5_000, LAT + 0.001, LON)).await;
    assert_eq!(frames, vec![json!({"type": "ack", "seq": 1})]);
    d.ping_acked(ping(2, t + 6_000, LAT + 0.002, LON)).await;
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(
        pos["lat"],
        LAT + 0.002,
        "the live position follows the new counter"
    );
    let track = hub.wait_track("/v1/drivers/D1/track", "f1", 6).await;
    assert_eq!(
        track["properties"]["timestamps"].as_array().unwrap().len(),
        6
    );
    // A true resend (same seq, its original time) is still a duplicate.
    d.ping_acked(ping(1, t + 5_000, LAT + 0.001, LON)).await;
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(pos["lat"], LAT + 0.002);
    hub.stop().await;
}

#[tokio::test]
async fn late_fix_goes_to_history_but_never_moves_the_live_position_back() {
    let hub = TestHub::start().await;
    let mut d = hub.driver("D1", "f1").await;
    let t = now_ms() - 60_000;
    d.ping_acked(ping(1, t + 30_000, LAT, LON)).await;
    d.ping_acked(ping(2, t, LAT + 0.05, LON)).await; // older device time
    let (_, pos) = hub.get("/v1/drivers/D1", "f1").await;
    assert_eq!(pos["lat"], LAT, "live position stays at the newest fix");
    let track = hub.wait_track("/v1/drivers/D1/track", "f1", 2).await;
    // Ordered by device time: the late fix comes first.
    assert_eq!(track["geometry"]["coordinates"][0][1], LAT + 0.05);
    hub.stop().await;
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_the_socket_stays_open() {
    let hub = TestHub::start().await;
    let mut d = hub.driver("D1", "f1").await;
    let t = now_ms() - 5_000;

    let cases = vec![
        (
            json!({"type":"ping","seq":1,"ts":t,"lat":91.0,"lon":0.0}),
            "invalid_coordinates",
            Some(1),
        ),
        (
            json!({"type":"ping","seq":2,"ts":t,"lat":0.0,"lon":181.0}),
            "invalid_coordinates",
            Some(2),
        ),
        (
            json!({"type":"ping","seq":3,"ts":now_ms() + 120_000,"lat":0.0,"lon":0.0}),
            "timestamp_in_future",
            Some(3),
        ),
        (
            json!({"type":"ping","seq":4,"ts":"not a time","lat":0.0,"lon":0.0}),
            "invalid_message",
            Some(4),
        ),
        (
            json!({"type":"ping","seq":5,"ts":t,"lat":0.0,"lon":0.0,"accuracy_m":-3.0}),
            "invalid_accuracy",
            Some(5),
        ),
        (
            json!({"type":"ping","seq":6,"ts":t,"lat":0.0,"lon":0.0,"speed_mps":-1.0}),
            "invalid_speed",
            Some(6),
        ),
        (
            json!({"type":"ping","seq":7,"ts":t,"lat":0.0,"lon":0.0,"heading_deg":400.0}),
            "invalid_heading",
            Some(7),
        ),
        (
            json!({"type":"ping","seq":8,"ts":t,"lat":"north","lon":0.0}),
            "invalid_message",
            Some(8),
        ),
        (
            json!({"type":"ping","seq":9,"ts":t}),
            "invalid_message",
            Some(9),
        ),
        (
            json!({"type":"teleport","seq":10}),
            "invalid_message",
            Some(10),
        ),
        (
            json!({"type":"ping","seq":11,"ts":1000,"lat":0.0,"lon":0.0}),
            "invalid_timestamp",
            Some(11),
        ),
        (
            json!({"type":"ping","seq":12,"ts":t,"lat":0.0,"lon":0.0,"motion":"sideways"}),
            "invalid_motion",
            Some(12),
        ),
    ];
    for (frame, code, seq) in cases {
        d.send(&frame).await;
        let err = d.json().await;
        assert_eq!(err["type"], "error", "{frame}");
        assert_eq!(err["code"], code, "{frame} -> {err}");
        assert_eq!(err["seq"].as_u64(), seq, "{frame}");
        assert!(!err["message"].as_str().unwrap().is_empty());
        // A refused fix is processed: the ack covers it so the phone drops it.
        assert_eq!(d.json().await, json!({"type":"ack","seq":seq.unwrap()}));
    }

    // The phone's own motion state is accepted (issue 15).
    let mut still = ping(13, t, LAT, LON);
    still["motion"] = json!("still");
    assert_eq!(
        d.ping_acked(still).await.last().unwrap(),
        &json!({"type":"ack","seq":13})
    );

    d.send_raw(Message::Text("{not json".into())).await;
    let err = d.json().await;
    assert_eq!(err["code"], "invalid_json");

    // A bad fix inside a batch is refused alone; the rest is ingested.
    let batch = json!({"type":"batch","pings":[ping(20, t, LAT, LON), {"seq":21,"ts":t+1,"lat":200,"lon":0}, ping(22, t + 2000, LAT, LON)]});
    d.send(&batch).await;
    let frames = d.until_ack(22).await;
    assert!(
        frames
            .iter()
            .any(|f| f["code"] == "invalid_coordinates" && f["seq"] == 21),
        "{frames:?}"
    );

    let big: Vec<_> = (0..1001).map(|s| ping(100 + s, t, LAT, LON)).collect();
    d.send(&json!({"type":"batch","pings": big})).await;
    // That frame is over 64 KiB, so the socket closes with 1009 before the batch limit matters.
    assert_eq!(d.close_code().await, Some(1009));

    // Still-valid sockets work; the driver's earlier fixes are there.
    let mut d = hub.driver("D1", "f1").await;
    d.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(d.json().await["code"], "unsupported_frame");
    d.ping_acked(ping(200, t + 3000, LAT, LON)).await;
    assert_eq!(hub.get("/v1/drivers/D1", "f1").await.0, 200);

    // A batch under 64 KiB but over 1,000 pings is refused as a whole.
    let many: Vec<_> = (0..1001).map(|_| json!({})).collect();
    d.send(&json!({"type":"batch","pings": many})).await;
    assert_eq!(d.json().await["code"], "batch_too_large");
    hub.stop().await;
}

#[tokio::test]
async fn a_silent_socket_is_pinged_then_closed_with_1001() {
    use tokio::io::AsyncReadExt;
    let hub = TestHub::start_with(|c| c.idle_timeout_s = 3).await;
    let url = hub.ws_url("/v1/ws/driver", &hub.token(Role::Driver, "D1", "f1"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // Keep only the TCP stream: nothing answers the server's pings from now on.
    let tokio_tungstenite::MaybeTlsStream::Plain(mut tcp) = ws.into_inner() else {
        panic!("plain TCP expected")
    };
    let started = std::time::Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("server closes a silent socket")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    // Server frames are unmasked: 0x89 = ping, 0x88 = close with a 2-byte code (1001 = 0x03E9).
    assert!(
        bytes.windows(1).any(|w| w[0] == 0x89),
        "the server pinged first: {bytes:?}"
    );
    let close_at = bytes
        .iter()
        .position(|b| *b == 0x88)
        .expect("a close frame");
    assert_eq!(
        &bytes[close_at + 2..close_at + 4],
        &[0x03, 0xE9],
        "close code 1001: {bytes:?}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    hub.stop().await;
}

/// Issue 16: the in-memory slot of every driver ever seen (seq window, arrival state) stayed
/// until the node restarted. A driver offline and silent for `slot_idle_ms` is evicted; when it
/// comes back it is loaded again like after a restart, and its fixes are taken.
#[tokio::test]
async fn idle_driver_slots_are_evicted_and_a_returning_driver_is_served() {
    let hub = TestHub::start_with(|c| {
        c.hub.presence_timeout_ms = 300;
        c.hub.slot_idle_ms = 600;
    })
    .await;
    let slots = || hub.running.as_ref().unwrap().state.hub.driver_slots();
    let t = now_ms() - 10_000;
    for i in 0..20 {
        let mut d = hub.driver(&format!("D{i}"), "f1").await;
        d.ping_acked(ping(1, t, LAT, LON)).await;
        d.close().await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while slots() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} slots never evicted",
            slots()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // D0 returns (a reinstalled app: seq 1 again) with a newer fix: served and stored.
    let mut d = hub.driver("D0", "f1").await;
    d.ping_acked(ping(1, t + 1_000, LAT + 0.001, LON)).await;
    let (_, pos) = hub.get("/v1/drivers/D0", "f1").await;
    assert_eq!(pos["lat"], LAT + 0.001);
    hub.wait_track(&format!("/v1/drivers/D0/track?from={}", t - 1), "f1", 2)
        .await;
    hub.stop().await;
}

/// Issue 15: a phone that asks for them (`?tracking=1`) is told how often to report: `off`
/// without a stop to detect, `sparse` with stops ahead but none near, `dense` within 500 m of a
/// pending stop, each sent once when it changes; a phone that did not ask never gets one.
#[tokio::test]
async fn the_hub_tells_an_opted_in_phone_how_densely_to_sample() {
    let hub = TestHub::start().await;
    let token = hub.token(Role::Driver, "D1", "f1");
    let mut d = Ws::connect(&format!(
        "{}&tracking=1",
        hub.ws_url("/v1/ws/driver", &token)
    ))
    .await;
    let t = now_ms() - 600_000;
    let tracking = |frames: &[serde_json::Value]| -> Vec<serde_json::Value> {
        frames
            .iter()
            .filter(|f| f["type"] == "tracking")
            .cloned()
            .collect()
    };
    let frames = d.ping_acked(ping(1, t, LAT - 0.05, LON)).await;
    assert_eq!(
        tracking(&frames),
        [json!({"type":"tracking","sampling":"off","interval_s":300,"distance_m":0})]
    );
    // Unchanged: not sent again.
    let frames = d.ping_acked(ping(2, t + 5_000, LAT - 0.05, LON)).await;
    assert!(tracking(&frames).is_empty(), "{frames:?}");

    let trip = json!({"id":"t1","driver_id":"D1","stops":[{"id":"s1","lat":LAT,"lon":LON}]});
    assert_eq!(hub.post("/v1/trips", "f1", &trip).await.0, 201);
    // 5.5 km away: stops ahead, none near.
    let frames = d.ping_acked(ping(3, t + 10_000, LAT - 0.05, LON)).await;
    assert_eq!(tracking(&frames)[0]["sampling"], "sparse", "{frames:?}");
    assert_eq!(tracking(&frames)[0]["interval_s"], 30);
    // 300 m from the stop: dense.
    let (lat, lon) = offset(LAT, LON, -300.0, 0.0);
    let frames = d.ping_acked(ping(4, t + 60_000, lat, lon)).await;
    assert_eq!(tracking(&frames)[0]["sampling"], "dense", "{frames:?}");
    assert_eq!(tracking(&frames)[0]["interval_s"], 5);
    // Parked at the stop until the check-in: nothing left to detect, off again.
    let (plat, plon) = offset(LAT, LON, 10.0, 0.0);
    let pings: Vec<_> = (0..20)
        .map(|k| ping(5 + k, t + 70_000 + k as i64 * 5_000, plat, plon))
        .collect();
    d.send(&json!({"type":"batch","pings": pings})).await;
    let frames = d.until_ack(24).await;
    assert!(frames.iter().any(|f| f["type"] == "checkin"), "{frames:?}");
    assert_eq!(
        tracking(&frames).last().unwrap()["sampling"],
        "off",
        "{frames:?}"
    );

    // Without `tracking=1`: acks and check-ins only.
    let mut plain = hub.driver("D2", "f1").await;
    let frames = plain.ping_acked(ping(1, t, LAT, LON)).await;
    assert!(tracking(&frames).is_empty(), "{frames:?}");
    hub.stop().await;
}
