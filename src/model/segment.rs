//! A stop segment: one automatic stop of a driver (see `geo::stops`), as stored and reported.

/// A driver's stop from `from_ms` (the dwell's first fix) to `to_ms` (the first fix past the
/// exit ring), device time, unix ms UTC; around (`lat`, `lon`), WGS84 degrees (the centre of
/// the stationary circle). `unplanned`: during an active trip, at none of its stops.
#[derive(Debug, Clone, PartialEq)]
pub struct StopSegment {
    pub from_ms: i64,
    /// `None`: still stopped.
    pub to_ms: Option<i64>,
    pub lat: f64,
    pub lon: f64,
    pub unplanned: bool,
}
