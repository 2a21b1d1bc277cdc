//! A check-in's evidence (migration 0011) as JSON: stored in `checkins.evidence` and returned
//! as is by `GET /v1/checkins`. Times in the JSON are seconds, distances metres.

use serde_json::{json, Value};

use crate::model::CheckinEvidence;

/// `{"kind":"dwell","fixes":16,"span_s":75.0,"credited_s":0.0}`,
/// `{"kind":"quiet_gap","gap_s":125.0,"moved_m":80.2}`, `{"kind":"device_still","fixes":4}`,
/// `{"kind":"manual"}`.
pub fn to_json(e: &CheckinEvidence) -> Value {
    let secs = |ms: i64| ms as f64 / 1000.0;
    match *e {
        CheckinEvidence::Dwell {
            fixes,
            span_ms,
            credited_ms,
        } => {
            json!({"kind": e.kind(), "fixes": fixes, "span_s": secs(span_ms), "credited_s": secs(credited_ms)})
        }
        CheckinEvidence::QuietGap { gap_ms, moved_m } => {
            json!({"kind": e.kind(), "gap_s": secs(gap_ms), "moved_m": (moved_m * 10.0).round() / 10.0})
        }
        CheckinEvidence::DeviceStill { fixes } => json!({"kind": e.kind(), "fixes": fixes}),
        CheckinEvidence::Manual => json!({"kind": e.kind()}),
    }
}

/// The inverse of [`to_json`]; `None` for text it did not write (or NULL).
pub fn from_json(text: &str) -> Option<CheckinEvidence> {
    let v: Value = serde_json::from_str(text).ok()?;
    let ms = |name: &str| v[name].as_f64().map(|s| (s * 1000.0).round() as i64);
    let fixes = || v["fixes"].as_u64().and_then(|n| u32::try_from(n).ok());
    Some(match v["kind"].as_str()? {
        "dwell" => CheckinEvidence::Dwell {
            fixes: fixes()?,
            span_ms: ms("span_s")?,
            credited_ms: ms("credited_s")?,
        },
        "quiet_gap" => CheckinEvidence::QuietGap {
            gap_ms: ms("gap_s")?,
            moved_m: v["moved_m"].as_f64()?,
        },
        "device_still" => CheckinEvidence::DeviceStill { fixes: fixes()? },
        "manual" => CheckinEvidence::Manual,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_goes_through_json_and_back() {
        for e in [
            CheckinEvidence::Dwell {
                fixes: 16,
                span_ms: 75_000,
                credited_ms: 0,
            },
            CheckinEvidence::QuietGap {
                gap_ms: 125_000,
                moved_m: 80.2,
            },
            CheckinEvidence::DeviceStill { fixes: 4 },
            CheckinEvidence::Manual,
        ] {
            assert_eq!(from_json(&to_json(&e).to_string()), Some(e));
        }
        assert_eq!(from_json("{\"kind\":\"telepathy\"}"), None);
    }
}
