//! The two wire codecs of the sockets, chosen per connection with `Sec-WebSocket-Protocol`
//! (RFC 6455 §1.9): `trackhub.v1.json` (text frames, the default when the client names none) and
//! `trackhub.v1.proto` (binary frames of the `proto/trackhub.proto` messages). Both decode into
//! the same domain messages, so everything after this module is codec-blind.

use std::sync::Arc;

use prost::Message;
use serde::Serialize;

use super::driver::{BadPing, DriverMsg, DriverOut, Ping, MAX_BATCH};
use super::time::{format_ts, WireTs};
use super::watch::{WatchIn, WatchOut};
use super::{pb, EventView, PositionView};
use crate::model::LivePosition;

/// Subprotocol name of the JSON codec.
pub const JSON_PROTOCOL: &str = "trackhub.v1.json";
/// Subprotocol name of the protobuf codec.
pub const PROTO_PROTOCOL: &str = "trackhub.v1.proto";
/// The subprotocols the hub accepts, in the order it prefers them when a client offers both.
pub const PROTOCOLS: [&str; 2] = [PROTO_PROTOCOL, JSON_PROTOCOL];

/// How one socket's frames are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    Json,
    Proto,
}

/// A received data frame.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// An encoded frame to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    Text(String),
    Binary(Vec<u8>),
}

/// Why a frame could not be decoded: `code` goes on the error frame, with the `seq` when one
/// could still be read (so the phone can drop that fix from its buffer).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub code: &'static str,
    pub message: String,
    pub seq: Option<u64>,
}

impl DecodeError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            seq: None,
        }
    }
}

impl Codec {
    /// The codec of a negotiated subprotocol; JSON when none was negotiated.
    pub fn from_protocol(protocol: Option<&str>) -> Self {
        match protocol {
            Some(PROTO_PROTOCOL) => Codec::Proto,
            _ => Codec::Json,
        }
    }

    /// The frame this codec expects, or an `unsupported_frame` error for the other kind.
    fn expect<'a, T>(
        self,
        frame: Frame<'a>,
        text: impl FnOnce(&'a str) -> Result<T, DecodeError>,
        binary: impl FnOnce(&'a [u8]) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        match (self, frame) {
            (Codec::Json, Frame::Text(t)) => text(t),
            (Codec::Proto, Frame::Binary(b)) => binary(b),
            (Codec::Json, Frame::Binary(_)) => Err(DecodeError::new(
                "unsupported_frame",
                "this socket speaks trackhub.v1.json: send text frames",
            )),
            (Codec::Proto, Frame::Text(_)) => Err(DecodeError::new(
                "unsupported_frame",
                "this socket speaks trackhub.v1.proto: send binary frames",
            )),
        }
    }

    /// Decodes a driver frame. Errors: `unsupported_frame`, `invalid_json` / `invalid_protobuf`
    /// (not parseable), `invalid_message` (parseable, wrong shape), `batch_too_large`.
    pub fn decode_driver(self, frame: Frame<'_>) -> Result<DriverMsg, DecodeError> {
        self.expect(frame, decode_driver_json, decode_driver_proto)
    }

    /// Encodes a frame for a driver.
    pub fn encode_driver(self, out: &DriverOut) -> Wire {
        match self {
            Codec::Json => Wire::Text(to_json(&DriverOutJson::from(out))),
            Codec::Proto => Wire::Binary(driver_out_pb(out).encode_to_vec()),
        }
    }

    /// Decodes a watcher frame (errors as for [`Codec::decode_driver`]).
    pub fn decode_watch(self, frame: Frame<'_>) -> Result<WatchIn, DecodeError> {
        self.expect(frame, decode_watch_json, decode_watch_proto)
    }

    /// Encodes a `positions` frame from positions encoded beforehand (each once, shared by every
    /// watcher that gets it), by concatenation: the same bytes as [`Codec::encode_watch`] of
    /// `WatchOut::Positions` (JSON: `{"type":"positions","positions":[…]}`; protobuf:
    /// `WatchOut.positions`, field 2).
    pub fn encode_positions<P: EncodedPosition>(self, changes: &[P]) -> Wire {
        match self {
            Codec::Json => {
                let len = changes.iter().map(|c| c.json().len() + 1).sum::<usize>();
                let mut out = String::with_capacity(len + 40);
                out.push_str(r#"{"type":"positions","positions":["#);
                for (i, change) in changes.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(change.json());
                }
                out.push_str("]}");
                Wire::Text(out)
            }
            Codec::Proto => {
                let inner = changes.iter().map(|c| c.proto().len()).sum::<usize>();
                let mut out = Vec::with_capacity(inner + 12);
                // WatchOut { positions (field 2) = Positions { positions (field 1): each entry } }
                prost::encoding::encode_key(
                    2,
                    prost::encoding::WireType::LengthDelimited,
                    &mut out,
                );
                prost::encoding::encode_varint(inner as u64, &mut out);
                for change in changes {
                    out.extend_from_slice(change.proto());
                }
                Wire::Binary(out)
            }
        }
    }

    /// Encodes a frame for a watcher.
    pub fn encode_watch(self, out: &WatchOut) -> Wire {
        match self {
            Codec::Json => Wire::Text(to_json(&WatchOutJson::from(out))),
            Codec::Proto => Wire::Binary(watch_out_pb(out).encode_to_vec()),
        }
    }
}

/// A position already encoded for a `positions` frame, in both codecs: what
/// [`Codec::encode_positions`] concatenates.
pub trait EncodedPosition {
    /// One JSON object of the frame's array ([`position_json`]).
    fn json(&self) -> &str;
    /// One protobuf `Positions` entry, key and length included ([`position_pb_entry`]).
    fn proto(&self) -> &[u8];
}

impl<T: EncodedPosition> EncodedPosition for Arc<T> {
    fn json(&self) -> &str {
        (**self).json()
    }
    fn proto(&self) -> &[u8] {
        (**self).proto()
    }
}

/// One position as a JSON object of a `positions` frame (see [`Codec::encode_positions`]).
pub fn position_json(p: &LivePosition) -> Box<str> {
    to_json(&PositionView::from(p)).into_boxed_str()
}

/// One position as an entry of `Positions.positions` (field 1): key, length and the `Position`
/// message, device time only (receive time is bus-internal), as in [`Codec::encode_watch`].
pub fn position_pb_entry(p: &LivePosition) -> Box<[u8]> {
    let msg = watcher_position_pb(p);
    let mut out = Vec::with_capacity(msg.encoded_len() + 4);
    prost::encoding::message::encode(1, &msg, &mut out);
    out.into_boxed_slice()
}

fn watcher_position_pb(p: &LivePosition) -> pb::Position {
    pb::Position {
        // Receive time is bus-internal: clients get device time only, as in JSON.
        received_ms: None,
        ..pb::Position::from(p)
    }
}

fn to_json(v: &impl Serialize) -> String {
    serde_json::to_string(v).expect("wire views serialize")
}

fn json_error(e: &serde_json::Error, text: &str) -> DecodeError {
    if e.is_data() {
        DecodeError {
            code: "invalid_message",
            message: e.to_string(),
            seq: seq_of_json(text),
        }
    } else {
        DecodeError::new("invalid_json", e.to_string())
    }
}

/// The `seq` of a frame that parsed as JSON but not as a valid message, for the error frame.
fn seq_of_json(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get("seq")?
        .as_u64()
}

fn batch_too_large(len: usize) -> DecodeError {
    DecodeError::new(
        "batch_too_large",
        format!("a batch holds at most {MAX_BATCH} pings; got {len}"),
    )
}

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DriverInJson {
    Ping(Ping),
    Batch { pings: Vec<serde_json::Value> },
}

fn decode_driver_json(text: &str) -> Result<DriverMsg, DecodeError> {
    match serde_json::from_str::<DriverInJson>(text).map_err(|e| json_error(&e, text))? {
        DriverInJson::Ping(p) => Ok(DriverMsg::Ping(p)),
        DriverInJson::Batch { pings } if pings.len() > MAX_BATCH => {
            Err(batch_too_large(pings.len()))
        }
        DriverInJson::Batch { pings } => Ok(DriverMsg::Batch(
            pings
                .into_iter()
                .map(|v| {
                    let seq = v.get("seq").and_then(|s| s.as_u64());
                    serde_json::from_value::<Ping>(v).map_err(|e| BadPing {
                        seq,
                        message: e.to_string(),
                    })
                })
                .collect(),
        )),
    }
}

fn ping_from_pb(p: pb::Ping) -> Ping {
    Ping {
        seq: p.seq,
        ts: WireTs(p.ts_ms),
        lat: p.lat,
        lon: p.lon,
        accuracy_m: p.accuracy_m,
        speed_mps: p.speed_mps,
        heading_deg: p.heading_deg,
        driver_id: p.driver_id,
        motion: p.motion,
    }
}

fn decode_driver_proto(bytes: &[u8]) -> Result<DriverMsg, DecodeError> {
    let m = pb::DriverIn::decode(bytes)
        .map_err(|e| DecodeError::new("invalid_protobuf", e.to_string()))?;
    match m.msg {
        Some(pb::driver_in::Msg::Ping(p)) => Ok(DriverMsg::Ping(ping_from_pb(p))),
        Some(pb::driver_in::Msg::Batch(b)) if b.pings.len() > MAX_BATCH => {
            Err(batch_too_large(b.pings.len()))
        }
        Some(pb::driver_in::Msg::Batch(b)) => Ok(DriverMsg::Batch(
            b.pings.into_iter().map(|p| Ok(ping_from_pb(p))).collect(),
        )),
        None => Err(DecodeError::new(
            "invalid_message",
            "DriverIn holds neither a ping nor a batch",
        )),
    }
}

fn decode_watch_json(text: &str) -> Result<WatchIn, DecodeError> {
    serde_json::from_str(text).map_err(|e| json_error(&e, text))
}

fn decode_watch_proto(bytes: &[u8]) -> Result<WatchIn, DecodeError> {
    let m = pb::WatchIn::decode(bytes)
        .map_err(|e| DecodeError::new("invalid_protobuf", e.to_string()))?;
    match m.msg {
        Some(pb::watch_in::Msg::Subscribe(s)) => Ok(WatchIn::Subscribe {
            bbox: s.bbox.map(|b| [b.west, b.south, b.east, b.north]),
            drivers: Some(s.drivers),
        }),
        None => Err(DecodeError::new(
            "invalid_message",
            "WatchIn holds no subscribe",
        )),
    }
}

/// JSON form of [`DriverOut`]: times as RFC 3339 UTC.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DriverOutJson<'a> {
    Ack {
        seq: u64,
    },
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Checkin {
        trip_id: &'a str,
        stop_id: &'a str,
        arrived_at: String,
        checked_in_at: String,
    },
    Tracking {
        sampling: &'static str,
        interval_s: u32,
        distance_m: u32,
    },
}

impl<'a> From<&'a DriverOut> for DriverOutJson<'a> {
    fn from(out: &'a DriverOut) -> Self {
        match out {
            DriverOut::Ack { seq } => DriverOutJson::Ack { seq: *seq },
            DriverOut::Error {
                code,
                message,
                seq,
                retry_after_ms,
            } => DriverOutJson::Error {
                code,
                message,
                seq: *seq,
                retry_after_ms: *retry_after_ms,
            },
            DriverOut::Checkin {
                trip_id,
                stop_id,
                arrived_at_ms,
                checked_in_at_ms,
            } => DriverOutJson::Checkin {
                trip_id,
                stop_id,
                arrived_at: format_ts(*arrived_at_ms),
                checked_in_at: format_ts(*checked_in_at_ms),
            },
            DriverOut::Tracking(h) => DriverOutJson::Tracking {
                sampling: h.sampling.as_str(),
                interval_s: h.interval_s,
                distance_m: h.distance_m,
            },
        }
    }
}

fn error_pb(code: &str, message: &str, seq: Option<u64>) -> pb::Error {
    pb::Error {
        code: code.into(),
        message: message.into(),
        seq,
        retry_after_ms: None,
    }
}

fn driver_out_pb(out: &DriverOut) -> pb::DriverOut {
    use pb::driver_out::Msg;
    let msg = match out {
        DriverOut::Ack { seq } => Msg::Ack(pb::Ack { seq: *seq }),
        DriverOut::Error {
            code,
            message,
            seq,
            retry_after_ms,
        } => Msg::Error(pb::Error {
            retry_after_ms: *retry_after_ms,
            ..error_pb(code, message, *seq)
        }),
        DriverOut::Checkin {
            trip_id,
            stop_id,
            arrived_at_ms,
            checked_in_at_ms,
        } => Msg::Checkin(pb::Checkin {
            trip_id: trip_id.clone(),
            stop_id: stop_id.clone(),
            arrived_at_ms: *arrived_at_ms,
            checked_in_at_ms: *checked_in_at_ms,
        }),
        DriverOut::Tracking(h) => Msg::Tracking(pb::Tracking {
            sampling: h.sampling.as_str().into(),
            interval_s: h.interval_s,
            distance_m: h.distance_m,
        }),
    };
    pb::DriverOut { msg: Some(msg) }
}

/// JSON form of [`WatchOut`].
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WatchOutJson<'a> {
    Snapshot { positions: Vec<PositionView> },
    Positions { positions: Vec<PositionView> },
    Event { event: Box<EventView> },
    Error { code: &'a str, message: &'a str },
}

impl<'a> From<&'a WatchOut> for WatchOutJson<'a> {
    fn from(out: &'a WatchOut) -> Self {
        let views = |ps: &[crate::model::LivePosition]| ps.iter().map(PositionView::from).collect();
        match out {
            WatchOut::Snapshot { positions } => WatchOutJson::Snapshot {
                positions: views(positions),
            },
            WatchOut::Positions { positions } => WatchOutJson::Positions {
                positions: views(positions),
            },
            WatchOut::Event { event } => WatchOutJson::Event {
                event: Box::new(EventView::from(&**event)),
            },
            WatchOut::Error { code, message } => WatchOutJson::Error { code, message },
        }
    }
}

fn watch_out_pb(out: &WatchOut) -> pb::WatchOut {
    use pb::watch_out::Msg;
    let positions = |ps: &[LivePosition]| pb::Positions {
        positions: ps.iter().map(watcher_position_pb).collect(),
    };
    let msg = match out {
        WatchOut::Snapshot { positions: ps } => Msg::Snapshot(positions(ps)),
        WatchOut::Positions { positions: ps } => Msg::Positions(positions(ps)),
        WatchOut::Event { event } => Msg::Event(pb::Event::from(&**event)),
        WatchOut::Error { code, message } => Msg::Error(error_pb(code, message, None)),
    };
    pb::WatchOut { msg: Some(msg) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_from_shared_changes_are_the_same_bytes_as_a_whole_frame() {
        let fix = |ts_ms, lat, lon| crate::model::Fix {
            speed_mps: Some(3.5),
            ..crate::model::Fix::at(ts_ms, lat, lon)
        };
        let positions = vec![
            LivePosition {
                driver_id: "d1".into(),
                fix: fix(1_790_000_000_123, 41.15, -8.61),
                received_ms: 1_790_000_000_200,
                next_stop: None,
            },
            LivePosition {
                driver_id: "d\"2".into(),
                fix: crate::model::Fix::at(1_790_000_001_000, -33.9, 151.2),
                received_ms: 5,
                next_stop: None,
            },
        ];
        struct Encoded(Box<str>, Box<[u8]>);
        impl EncodedPosition for Encoded {
            fn json(&self) -> &str {
                &self.0
            }
            fn proto(&self) -> &[u8] {
                &self.1
            }
        }
        let changes: Vec<Encoded> = positions
            .iter()
            .map(|p| Encoded(position_json(p), position_pb_entry(p)))
            .collect();
        for codec in [Codec::Json, Codec::Proto] {
            let whole = codec.encode_watch(&WatchOut::Positions {
                positions: positions.clone(),
            });
            assert_eq!(codec.encode_positions(&changes), whole, "{codec:?}");
            assert_eq!(
                codec.encode_positions::<Encoded>(&[]),
                codec.encode_watch(&WatchOut::Positions { positions: vec![] })
            );
        }
    }

    #[test]
    fn json_envelopes_and_per_entry_batch_errors() {
        let m = Codec::Json
            .decode_driver(Frame::Text(
                r#"{"type":"batch","pings":[{"seq":1,"ts":1790000000000,"lat":1,"lon":2},{"seq":2}]}"#,
            ))
            .unwrap();
        let DriverMsg::Batch(pings) = m else {
            panic!("batch")
        };
        assert!(pings[0].is_ok());
        assert_eq!(pings[1].as_ref().unwrap_err().seq, Some(2));
        let err = Codec::Json
            .decode_driver(Frame::Text(r#"{"type":"ping","seq":9}"#))
            .unwrap_err();
        assert_eq!((err.code, err.seq), ("invalid_message", Some(9)));
        assert_eq!(
            Codec::Json
                .decode_driver(Frame::Text("{"))
                .unwrap_err()
                .code,
            "invalid_json"
        );
        assert_eq!(
            Codec::Json.encode_driver(&DriverOut::Ack { seq: 3 }),
            Wire::Text(r#"{"type":"ack","seq":3}"#.into())
        );
    }

    #[test]
    fn proto_decodes_the_same_messages_and_refuses_text() {
        let ping = pb::Ping {
            seq: 4,
            ts_ms: 1_790_000_000_000,
            lat: 1.0,
            lon: 2.0,
            accuracy_m: Some(5.0),
            ..Default::default()
        };
        let bytes = pb::DriverIn {
            msg: Some(pb::driver_in::Msg::Ping(ping)),
        }
        .encode_to_vec();
        let json = r#"{"type":"ping","seq":4,"ts":1790000000000,"lat":1,"lon":2,"accuracy_m":5}"#;
        assert_eq!(
            Codec::Proto.decode_driver(Frame::Binary(&bytes)).unwrap(),
            Codec::Json.decode_driver(Frame::Text(json)).unwrap()
        );
        assert_eq!(
            Codec::Proto
                .decode_driver(Frame::Text(json))
                .unwrap_err()
                .code,
            "unsupported_frame"
        );
        assert_eq!(
            Codec::Proto
                .decode_driver(Frame::Binary(&[0xff, 0xff]))
                .unwrap_err()
                .code,
            "invalid_protobuf"
        );
        let Wire::Binary(ack) = Codec::Proto.encode_driver(&DriverOut::Ack { seq: 3 }) else {
            panic!("binary")
        };
        let decoded = pb::DriverOut::decode(ack.as_slice()).unwrap();
        assert_eq!(
            decoded.msg,
            Some(pb::driver_out::Msg::Ack(pb::Ack { seq: 3 }))
        );
    }

    #[test]
    fn events_carry_their_log_id_in_both_codecs() {
        use crate::model::{Event, EventKind};
        let event = WatchOut::Event {
            event: std::sync::Arc::new(Event {
                id: Some(7),
                fleet: "f".into(),
                driver_id: "d".into(),
                ts_ms: 1_790_000_000_000,
                position: None,
                kind: EventKind::DriverOnline,
            }),
        };
        let Wire::Text(json) = Codec::Json.encode_watch(&event) else {
            panic!("text")
        };
        assert!(
            json.contains(r#""event":{"id":7,"type":"driver.online""#),
            "{json}"
        );
        let Wire::Binary(bytes) = Codec::Proto.encode_watch(&event) else {
            panic!("binary")
        };
        match pb::WatchOut::decode(bytes.as_slice()).unwrap().msg {
            Some(pb::watch_out::Msg::Event(e)) => assert_eq!(e.id, Some(7)),
            other => panic!("{other:?}"),
        }
    }
}
