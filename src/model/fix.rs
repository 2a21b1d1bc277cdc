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
        }
    }
}
