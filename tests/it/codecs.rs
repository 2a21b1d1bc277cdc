//! The socket protocol under each codec (`Sec-WebSocket-Protocol`): the same test body runs on
//! JSON text frames and on protobuf binary frames against a real hub.

use crate::common;

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use trackhub::protocol::time::format_ts;

const LAT: f64 = 41.15;
const LON: f64 = -8.61;

async fn protocol(codec: Codec) {
    let hub = TestHub::start().await;
    let trip = json!({"id":"t1","driver_id":"D1","stops":[{"id":"s1","lat":LAT,"lon":LON,"radius_m":100}]});
    assert_eq!(hub.post("/v1/trips", "f1", &trip).await.0, 201);

    let mut w = hub.watcher_codec("f1", codec).await;
    w.send(&json!({"type":"subscribe","drivers":["D1"]})).await;
    assert_eq!(w.json().await, json!({"type":"snapshot","positions":[]}));

    let mut d = hub.driver_codec("D1", "f1", codec).await;
    let t0 = now_ms() - 600_000;
    let (lat, lon) = offset(LAT, LON, -500.0, 0.0);
    let frames = d.ping_acked(ping(1, t0, lat, lon)).await;
    assert_eq!(frames, vec![json!({"type":"ack","seq":1})]);
    let pos = w.until(|f| f["type"] == "positions").await;
    assert_eq!(
        pos["positions"][0],
        json!({"driver_id":"D1","lat":lat,"lon":lon,"ts":format_ts(t0),"accuracy_m":8.0})
    );

    // A batch with one bad fix: that fix is refused by seq, the rest is acked.
    let (lat2, lon2) = offset(LAT, LON, -400.0, 0.0);
    let batch = json!({"type":"batch","pings":[
        ping(2, t0 + 5000, lat2, lon2), ping(3, t0 + 6000, 91.0, lon2), ping(4, t0 + 7000, lat2, lon2)
    ]});
    d.send(&batch).await;
    let frames = d.until_ack(4).await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["code"], "invalid_coordinates");
    assert_eq!(frames[0]["seq"], 3);

    // A resent seq is acked, not processed again.
    assert_eq!(
        d.ping_acked(ping(2, t0 + 5000, lat2, lon2)).await,
        vec![json!({"type":"ack","seq":4})]
    );

    // The wrong kind of frame for the codec: an error frame, and the socket stays usable.
    let wrong = match codec {
        Codec::Proto => Message::Text("{}".into()),
        _ => Message::Binary(vec![1, 2, 3].into()),
    };
    d.send_raw(wrong).await;
    assert_eq!(d.json().await["code"], "unsupported_frame");

    // Parked 20 m from the stop for 2 minutes: one check-in, on the socket and to the watcher.
    let (plat, plon) = offset(LAT, LON, 20.0, 0.0);
    let stay: Vec<Value> = (0..=24)
        .map(|i| ping(5 + i, t0 + 60_000 + i as i64 * 5000, plat, plon))
        .collect();
    d.send(&json!({"type":"batch","pings":stay})).await;
    let frames = d.until_ack(29).await;
    let checkins: Vec<&Value> = frames.iter().filter(|f| f["type"] == "checkin").collect();
    assert_eq!(
        checkins,
        vec![&json!({
            "type":"checkin","trip_id":"t1","stop_id":"s1",
            "arrived_at": format_ts(t0 + 60_000),
            "checked_in_at": format_ts(t0 + 60_000 + 75_000),
        })]
    );
    let ev = w
        .until(|f| f["type"] == "event" && f["event"]["type"] == "stop.checked_in")
        .await;
    assert_eq!(ev["event"]["trip_id"], "t1");
    assert_eq!(ev["event"]["source"], "auto");
    assert_eq!(ev["event"]["checked_in_at"], format_ts(t0 + 135_000));

    // Watcher errors and a bbox subscription.
    w.send(&json!({"type":"subscribe"})).await;
    assert_eq!(
        w.until(|f| f["type"] == "error").await["code"],
        "invalid_subscription"
    );
    w.send(&json!({"type":"subscribe","bbox":[LON - 0.1, LAT - 0.1, LON + 0.1, LAT + 0.1]}))
        .await;
    let snap = w.until(|f| f["type"] == "snapshot").await;
    assert_eq!(snap["positions"][0]["driver_id"], "D1");
    assert_eq!(snap["positions"][0]["lat"], plat);

    let (_, list) = hub.get("/v1/checkins", "f1").await;
    assert_eq!(list["checkins"].as_array().unwrap().len(), 1, "{list}");
    hub.stop().await;
}

#[tokio::test]
async fn json_codec_passes_the_protocol() {
    protocol(Codec::Json).await;
}

#[tokio::test]
async fn protobuf_codec_passes_the_protocol() {
    protocol(Codec::Proto).await;
}

#[tokio::test]
async fn without_a_subprotocol_the_codec_is_json() {
    protocol(Codec::Default).await;
}
