//! The test client's protobuf codec: tests speak JSON values; on a `trackhub.v1.proto` socket
//! this module translates them to the binary messages of `proto/trackhub.proto` and back, so one
//! test body checks both codecs. Written independently of the server's codec on purpose.

use prost::Message as _;
use serde_json::{json, Map, Value};
use trackhub::protocol::pb;
use trackhub::protocol::time::format_ts;

/// Which socket a client is on: decides the message types of binary frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Driver,
    Watch,
}

fn ping_pb(v: &Value) -> pb::Ping {
    pb::Ping {
        seq: v["seq"].as_u64().expect("ping seq"),
        ts_ms: v["ts"].as_i64().expect("ping ts as unix ms"),
        lat: v["lat"].as_f64().expect("ping lat"),
        lon: v["lon"].as_f64().expect("ping lon"),
        accuracy_m: v["accuracy_m"].as_f64(),
        speed_mps: v["speed_mps"].as_f64(),
        heading_deg: v["heading_deg"].as_f64(),
        driver_id: v["driver_id"].as_str().map(String::from),
        motion: v["motion"].as_str().map(String::from),
    }
}

/// Encodes a client message given as its JSON form.
pub fn encode(edge: Edge, v: &Value) -> Vec<u8> {
    match (edge, v["type"].as_str()) {
        (Edge::Driver, Some("ping")) => pb::DriverIn {
            msg: Some(pb::driver_in::Msg::Ping(ping_pb(v))),
        }
        .encode_to_vec(),
        (Edge::Driver, Some("batch")) => pb::DriverIn {
            msg: Some(pb::driver_in::Msg::Batch(pb::Batch {
                pings: v["pings"].as_array().unwrap().iter().map(ping_pb).collect(),
            })),
        }
        .encode_to_vec(),
        (Edge::Watch, Some("subscribe")) => pb::WatchIn {
            msg: Some(pb::watch_in::Msg::Subscribe(pb::Subscribe {
                bbox: v["bbox"].as_array().map(|b| pb::BBox {
                    west: b[0].as_f64().unwrap(),
                    south: b[1].as_f64().unwrap(),
                    east: b[2].as_f64().unwrap(),
                    north: b[3].as_f64().unwrap(),
                }),
                drivers: v["drivers"]
                    .as_array()
                    .map(|d| d.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
            })),
        }
        .encode_to_vec(),
        other => panic!("no protobuf form for {other:?}: {v}"),
    }
}

fn error_json(e: pb::Error) -> Value {
    let mut v = json!({"type": "error", "code": e.code, "message": e.message});
    if let Some(seq) = e.seq {
        v["seq"] = json!(seq);
    }
    v
}

/// Inserts `key` when the value is present.
fn put<T: Into<Value>>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(v) = value {
        map.insert(key.into(), v.into());
    }
}

fn position_json(p: pb::Position) -> Value {
    let mut m = Map::new();
    m.insert("driver_id".into(), p.driver_id.into());
    m.insert("lat".into(), p.lat.into());
    m.insert("lon".into(), p.lon.into());
    m.insert("ts".into(), format_ts(p.ts_ms).into());
    put(&mut m, "accuracy_m", p.accuracy_m);
    put(&mut m, "speed_mps", p.speed_mps);
    put(&mut m, "heading_deg", p.heading_deg);
    Value::Object(m)
}

fn event_json(e: pb::Event) -> Value {
    let mut m = Map::new();
    put(&mut m, "id", e.id);
    m.insert("type".into(), e.r#type.into());
    m.insert("ts".into(), format_ts(e.ts_ms).into());
    m.insert("fleet".into(), e.fleet.into());
    m.insert("driver_id".into(), e.driver_id.into());
    put(&mut m, "lat", e.lat);
    put(&mut m, "lon", e.lon);
    put(&mut m, "trip_id", e.trip_id);
    put(&mut m, "stop_id", e.stop_id);
    put(&mut m, "arrived_at", e.arrived_at_ms.map(format_ts));
    put(&mut m, "checked_in_at", e.checked_in_at_ms.map(format_ts));
    put(&mut m, "departed_at", e.departed_at_ms.map(format_ts));
    put(&mut m, "source", e.source);
    Value::Object(m)
}

/// Decodes a server frame into its JSON form.
pub fn decode(edge: Edge, bytes: &[u8]) -> Value {
    match edge {
        Edge::Driver => {
            use pb::driver_out::Msg;
            match pb::DriverOut::decode(bytes)
                .expect("DriverOut")
                .msg
                .expect("msg set")
            {
                Msg::Ack(a) => json!({"type": "ack", "seq": a.seq}),
                Msg::Error(e) => error_json(e),
                Msg::Checkin(c) => json!({
                    "type": "checkin",
                    "trip_id": c.trip_id,
                    "stop_id": c.stop_id,
                    "arrived_at": format_ts(c.arrived_at_ms),
                    "checked_in_at": format_ts(c.checked_in_at_ms),
                }),
                Msg::Tracking(t) => json!({
                    "type": "tracking",
                    "sampling": t.sampling,
                    "interval_s": t.interval_s,
                    "distance_m": t.distance_m,
                }),
            }
        }
        Edge::Watch => {
            use pb::watch_out::Msg;
            let positions = |p: pb::Positions| -> Vec<Value> {
                p.positions.into_iter().map(position_json).collect()
            };
            match pb::WatchOut::decode(bytes)
                .expect("WatchOut")
                .msg
                .expect("msg set")
            {
                Msg::Snapshot(p) => json!({"type": "snapshot", "positions": positions(p)}),
                Msg::Positions(p) => json!({"type": "positions", "positions": positions(p)}),
                Msg::Event(e) => json!({"type": "event", "event": event_json(e)}),
                Msg::Error(e) => error_json(e),
            }
        }
    }
}
