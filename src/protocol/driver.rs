//! Driver socket messages (`/v1/ws/driver`).

use serde::Deserialize;

use super::time::WireTs;
use crate::model::{Fix, Motion, TrackingHint};

/// Most pings accepted in one `batch` frame.
pub const MAX_BATCH: usize = 1_000;

/// A message from a driver's phone, decoded by either codec (see `codec`).
#[derive(Debug, Clone, PartialEq)]
pub enum DriverMsg {
    /// One fix.
    Ping(Ping),
    /// Fixes the phone buffered while offline, oldest first, each decoded (and later validated)
    /// on its own so that one bad fix does not refuse the rest.
    Batch(Vec<Result<Ping, BadPing>>),
}

/// A batch entry that could not be decoded: its `seq` when readable, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadPing {
    pub seq: Option<u64>,
    pub message: String,
}

/// One fix as sent by a phone. The driver is the token's `sub`; a `driver_id` in the body must
/// name the same driver (publishing as someone else is refused with `forbidden`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ping {
    /// Client sequence number; acks report the highest processed.
    pub seq: u64,
    /// Device time: RFC 3339 or unix ms.
    pub ts: WireTs,
    /// Degrees WGS84.
    pub lat: f64,
    pub lon: f64,
    /// Horizontal accuracy, m (≥ 0).
    #[serde(default)]
    pub accuracy_m: Option<f64>,
    /// Speed over ground, m/s (≥ 0).
    #[serde(default)]
    pub speed_mps: Option<f64>,
    /// Heading, degrees clockwise from north, [0, 360).
    #[serde(default)]
    pub heading_deg: Option<f64>,
    /// Optional claim of who sent it; checked against the token.
    #[serde(default)]
    pub driver_id: Option<String>,
    /// The phone's own motion state, when it knows it: `moving` | `still` (e.g. from its
    /// activity recognition). Evidence for arrival detection.
    #[serde(default)]
    pub motion: Option<String>,
}

/// Why a ping was refused: the model's [`InvalidFix`](crate::model::fix::InvalidFix), whose `code` goes on the wire as the
/// error frame's `code` and whose `field` names the ping field at fault.
pub use crate::model::fix::InvalidFix as Rejection;

impl Ping {
    /// The fix this ping carries, not yet validated.
    pub fn fix(&self) -> Fix {
        Fix {
            ts_ms: self.ts.0,
            lat: self.lat,
            lon: self.lon,
            accuracy_m: self.accuracy_m,
            speed_mps: self.speed_mps,
            heading_deg: self.heading_deg,
            motion: self.motion.as_deref().and_then(Motion::parse),
        }
    }

    /// The ping's fix, validated ([`Fix::validate`]), and its `motion` if any.
    pub fn validate(&self, now_ms: i64, max_future_ms: i64) -> Result<Fix, Rejection> {
        if let Some(m) = self
            .motion
            .as_deref()
            .filter(|m| Motion::parse(m).is_none())
        {
            return Err(Rejection::new(
                "invalid_motion",
                "motion",
                format!("motion must be `moving` or `still`, not `{m}`"),
            ));
        }
        let fix = self.fix();
        fix.validate(now_ms, max_future_ms)?;
        Ok(fix)
    }
}

/// A message to a driver's phone (encoded by either codec, see `codec`).
#[derive(Debug, Clone, PartialEq)]
pub enum DriverOut {
    /// Every seq up to and including `seq` that the phone sent has been processed.
    Ack { seq: u64 },
    /// A refused message or fix; the socket stays open unless a close follows.
    Error {
        code: &'static str,
        message: String,
        seq: Option<u64>,
        /// With `unavailable`: when to resend the refused fixes, ms (the phone keeps them).
        retry_after_ms: Option<u64>,
    },
    /// The driver was checked in at a stop. Times unix ms UTC (RFC 3339 in JSON).
    Checkin {
        trip_id: String,
        stop_id: String,
        arrived_at_ms: i64,
        checked_in_at_ms: i64,
    },
    /// How often to report from now on (sent when it changes).
    Tracking(TrackingHint),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(json: &str) -> Ping {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn decodes_and_validates() {
        let now = 1_800_000_000_000;
        let p = ping(
            r#"{"seq":7,"ts":"2026-11-21T10:00:00.120Z","lat":47.61,"lon":-122.33,"accuracy_m":8}"#,
        );
        let fix = p.validate(now, 60_000).unwrap();
        assert_eq!(fix.accuracy_m, Some(8.0));
        assert_eq!(fix.speed_mps, None);
        let cases = [
            (
                r#"{"seq":1,"ts":1790000000000,"lat":91,"lon":0}"#,
                "invalid_coordinates",
            ),
            (
                r#"{"seq":1,"ts":1790000000000,"lat":0,"lon":-181}"#,
                "invalid_coordinates",
            ),
            (
                r#"{"seq":1,"ts":1800000070000,"lat":0,"lon":0}"#,
                "timestamp_in_future",
            ),
            (r#"{"seq":1,"ts":5,"lat":0,"lon":0}"#, "invalid_timestamp"),
            (
                r#"{"seq":1,"ts":1790000000000,"lat":0,"lon":0,"accuracy_m":-1}"#,
                "invalid_accuracy",
            ),
            (
                r#"{"seq":1,"ts":1790000000000,"lat":0,"lon":0,"speed_mps":-0.1}"#,
                "invalid_speed",
            ),
            (
                r#"{"seq":1,"ts":1790000000000,"lat":0,"lon":0,"heading_deg":360}"#,
                "invalid_heading",
            ),
        ];
        for (json, code) in cases {
            assert_eq!(
                ping(json).validate(now, 60_000).unwrap_err().code,
                code,
                "{json}"
            );
        }
    }
}
