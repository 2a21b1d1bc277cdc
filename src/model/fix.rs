//! A GPS fix: one sample of one driver's position, as every layer sees it.

/// One GPS sample of one driver, as the core sees it (already validated by the edge).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    /// Device time of the fix, unix milliseconds UTC.
    pub ts_ms: i64,
    /// Latitude, degrees WGS84, in [-90, 90].
    pub lat: f64,
    /// Longitude, degrees WGS84, in [-180, 180].
    pub lon: f64,
    /// Horizontal accuracy (1-sigma radius), metres, when the device reports it.
    pub accuracy_m: Option<f64>,
    /// Ground speed, m/s, when the device reports it.
    pub speed_mps: Option<f64>,
    /// Course over ground, degrees clockwise from true north, when reported.
    pub heading_deg: Option<f64>,
    /// Whether the device itself says it is moving or still, when it does: Traccar Client's
    /// motion state machine (`is_moving`, `activity.type`), our socket protocol's `motion`.
    /// Evidence, not a measurement: a phone reports `still` only after minutes without motion.
    pub motion: Option<Motion>,
}

/// A phone's battery, as its tracking app reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Battery {
    /// Charge in [0, 1].
    pub level: f64,
    /// Whether it is charging, when said.
    pub charging: Option<bool>,
}

/// The device's own motion state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Motion {
    Moving,
    Still,
}

impl Motion {
    /// `moving` | `still`, as on the wire and in history.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moving => "moving",
            Self::Still => "still",
        }
    }

    /// The state named by [`Motion::as_str`], `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "moving" => Some(Self::Moving),
            "still" => Some(Self::Still),
            _ => None,
        }
    }
}

impl Fix {
    /// A fix with only time and position (no accuracy, speed or heading).
    pub fn at(ts_ms: i64, lat: f64, lon: f64) -> Self {
        Self {
            ts_ms,
            lat,
            lon,
            accuracy_m: None,
            speed_mps: None,
            heading_deg: None,
            motion: None,
        }
    }
}

/// Why a fix was refused: `code` (`invalid_coordinates`, `timestamp_in_future`,
/// `invalid_timestamp`, `invalid_accuracy`, `invalid_speed`, `invalid_heading`), the field at
/// fault in the socket protocol's names (`lat`, `lon`, `ts`, `accuracy_m`, `speed_mps`,
/// `heading_deg`; each edge renames it to its own), and a message for people.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidFix {
    pub code: &'static str,
    pub field: &'static str,
    pub message: String,
}

impl InvalidFix {
    pub fn new(code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            field,
            message: message.into(),
        }
    }
}

/// Fixes from before 2000-01-01 (unix ms) are refused: a phone whose clock was never set.
const Y2000_MS: i64 = 946_684_800_000;

impl Fix {
    /// Checks the fix whatever edge it came from: finite lat/lon in range, `ts_ms` no more than
    /// `max_future_ms` ahead of `now_ms` (server time, unix ms UTC) and not before 2000-01-01,
    /// accuracy and speed ≥ 0, heading in [0, 360).
    pub fn validate(&self, now_ms: i64, max_future_ms: i64) -> Result<(), InvalidFix> {
        if !self.lat.is_finite() || !(-90.0..=90.0).contains(&self.lat) {
            return Err(InvalidFix::new(
                "invalid_coordinates",
                "lat",
                "lat must be a number within [-90, 90]",
            ));
        }
        if !self.lon.is_finite() || !(-180.0..=180.0).contains(&self.lon) {
            return Err(InvalidFix::new(
                "invalid_coordinates",
                "lon",
                "lon must be a number within [-180, 180]",
            ));
        }
        if self.ts_ms > now_ms.saturating_add(max_future_ms) {
            return Err(InvalidFix::new(
                "timestamp_in_future",
                "ts",
                format!(
                    "ts is {} ms ahead of server time (limit {max_future_ms} ms)",
                    self.ts_ms.saturating_sub(now_ms)
                ),
            ));
        }
        if self.ts_ms < Y2000_MS {
            return Err(InvalidFix::new(
                "invalid_timestamp",
                "ts",
                "ts is before 2000-01-01",
            ));
        }
        let non_negative = |v: Option<f64>, code: &'static str, name: &'static str| match v {
            Some(x) if !x.is_finite() || x < 0.0 => {
                Err(InvalidFix::new(code, name, format!("{name} must be ≥ 0")))
            }
            _ => Ok(()),
        };
        non_negative(self.accuracy_m, "invalid_accuracy", "accuracy_m")?;
        non_negative(self.speed_mps, "invalid_speed", "speed_mps")?;
        if let Some(h) = self.heading_deg {
            if !h.is_finite() || !(0.0..360.0).contains(&h) {
                return Err(InvalidFix::new(
                    "invalid_heading",
                    "heading_deg",
                    "heading_deg must be within [0, 360)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field_and_the_code() {
        let now = 1_790_000_000_000;
        let ok = Fix::at(now, 41.15, -8.61);
        assert_eq!(ok.validate(now, 60_000), Ok(()));
        let cases = [
            (Fix { lat: 91.0, ..ok }, "invalid_coordinates", "lat"),
            (
                Fix {
                    lon: f64::NAN,
                    ..ok
                },
                "invalid_coordinates",
                "lon",
            ),
            (
                Fix {
                    ts_ms: now + 61_000,
                    ..ok
                },
                "timestamp_in_future",
                "ts",
            ),
            (Fix { ts_ms: 0, ..ok }, "invalid_timestamp", "ts"),
            (
                Fix {
                    accuracy_m: Some(-1.0),
                    ..ok
                },
                "invalid_accuracy",
                "accuracy_m",
            ),
            (
                Fix {
                    speed_mps: Some(f64::INFINITY),
                    ..ok
                },
                "invalid_speed",
                "speed_mps",
            ),
            (
                Fix {
                    heading_deg: Some(360.0),
                    ..ok
                },
                "invalid_heading",
                "heading_deg",
            ),
        ];
        for (fix, code, field) in cases {
            let e = fix.validate(now, 60_000).unwrap_err();
            assert_eq!((e.code, e.field), (code, field), "{fix:?}");
        }
        // No overflow at the edges of i64.
        assert!(Fix {
            ts_ms: i64::MAX,
            ..ok
        }
        .validate(i64::MAX, 60_000)
        .is_ok());
    }
}
