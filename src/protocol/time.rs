//! Timestamps on the wire: RFC 3339 UTC strings or unix milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer};

/// Formats unix ms UTC as RFC 3339 with milliseconds and `Z`, e.g. `2026-11-21T10:00:00.120Z`.
pub fn format_ts(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Parses an RFC 3339 string (any offset) or a string of unix milliseconds into unix ms UTC.
pub fn parse_ts(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Ok(ms);
    }
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("`{text}` is neither RFC 3339 nor unix milliseconds: {e}"))
}

/// A timestamp as sent by a client: RFC 3339 string or unix ms number.
#[derive(Debug, Clone, PartialEq)]
pub struct WireTs(pub i64);

impl<'de> Deserialize<'de> for WireTs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(i64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(WireTs(ms)),
            Raw::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Ok(WireTs(f as i64))
            }
            Raw::Float(_) => Err(serde::de::Error::custom(
                "ts must be whole unix milliseconds",
            )),
            Raw::Text(t) => parse_ts(&t).map(WireTs).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forms() {
        let ms = parse_ts("2026-11-21T10:00:00.120Z").unwrap();
        assert_eq!(format_ts(ms), "2026-11-21T10:00:00.120Z");
        assert_eq!(parse_ts("2026-11-21T11:00:00.120+01:00").unwrap(), ms);
        assert_eq!(parse_ts(&ms.to_string()).unwrap(), ms);
        assert!(parse_ts("yesterday").is_err());
        let w: WireTs = serde_json::from_str(&ms.to_string()).unwrap();
        assert_eq!(w.0, ms);
    }
}
