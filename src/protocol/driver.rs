//! Driver socket messages (`/v1/ws/driver`).

use serde::Deserialize;

use super::time::WireTs;
use crate::model::Fix;

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
}

/// Why a ping was refused; `code` goes on the wire as the error frame's `code`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: &'static str,
    /// The ping field at fault: `lat`, `lon`, `ts`, `accuracy_m`, `speed_mps`, `heading_deg`.
    pub field: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            field,
            message: message.into(),
        }
    }
}

impl Ping {
    /// Validates the ping into a domain [`Fix`]: finite lat/lon in range, `ts` no more than
    /// `max_future_ms` ahead of `now_ms` and not before 2000-01-01, accuracy and speed ≥ 0,
    /// heading in [0, 360).
    pub fn validate(&self, now_ms: i64, max_future_ms: i64) -> Result<Fix, Rejection> {
        const Y2000_MS: i64 = 946_684_800_000;
        if !self.lat.is_finite() || !(-90.0..=90.0).contains(&self.lat) {
            return Err(Rejection::new(
                "invalid_coordinates",
                "lat",
                "lat must be a number within [-90, 90]",
            ));
        }
        if !self.lon.is_finite() || !(-180.0..=180.0).contains(&self.lon) {
            return Err(Rejection::new(
                "invalid_coordinates",
                "lon",
                "lon must be a number within [-180, 180]",
            ));
        }
        if self.ts.0 > now_ms + max_future_ms {
            return Err(Rejection::new(
                "timestamp_in_future",
                "ts",
                format!(
                    "ts is {} ms ahead of server time (limit {max_future_ms} ms)",
                    self.ts.0 - now_ms
                ),
            ));
        }
        if self.ts.0 < Y2000_MS {
            return Err(Rejection::new(
                "invalid_timestamp",
                "ts",
                "ts is before 2000-01-01",
            ));
        }
        let non_negative = |v: Option<f64>, code: &'static str, name: &'static str| match v {
            Some(x) if !x.is_finite() || x < 0.0 => {
                Err(Rejection::new(code, name, format!("{name} must be ≥ 0")))
            }
            _ => Ok(()),
        };
        non_negative(self.accuracy_m, "invalid_accuracy", "accuracy_m")?;
        non_negative(self.speed_mps, "invalid_speed", "speed_mps")?;
        if let Some(h) = self.heading_deg {
            if !h.is_finite() || !(0.0..360.0).contains(&h) {
                return Err(Rejection::new(
                    "invalid_heading",
                    "heading_deg",
                    "heading_deg must be within [0, 360)",
                ));
            }
        }
        Ok(Fix {
            ts_ms: self.ts.0,
            lat: self.lat,
            lon: self.lon,
            accuracy_m: self.accuracy_m,
            speed_mps: self.speed_mps,
            heading_deg: self.heading_deg,
        })
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
