//! A driver's recent travelled speed: how fast it is going now compared to its fleet.

use crate::geo::distance::haversine_m;
use crate::model::Fix;

/// Time constant of the average, s: the last ~2 minutes count (a red light fades within a few
/// minutes; a traffic jam stays in it). 120 s, chosen among 60, 120 and 300 s by `eval-eta`
/// (BENCHMARKS.md).
const TAU_S: f64 = 120.0;
/// Segments faster than this are GPS jumps, not driving, m/s (250 km/h).
const MAX_MPS: f64 = 70.0;
/// A gap longer than this restarts the average: the phone was off, not driving slowly, s.
const MAX_GAP_S: f64 = 600.0;
/// The average needs this much time behind it before it says anything, s.
const MIN_SPAN_S: f64 = 30.0;

/// Exponentially weighted travelled speed of one driver (distance along its fixes over time,
/// stopped time included), m/s.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pace {
    last: Option<(i64, f64, f64)>,
    distance_m: f64,
    time_s: f64,
    /// Distance along the fixes and time since the trip began (not decayed).
    trip_m: f64,
    trip_s: f64,
}

impl Pace {
    /// Takes the driver's next fix (device time order; older fixes are ignored).
    pub fn observe(&mut self, fix: &Fix) {
        if let Some((ts, lat, lon)) = self.last {
            let dt = (fix.ts_ms - ts) as f64 / 1000.0;
            if dt <= 0.0 {
                return;
            }
            if dt > MAX_GAP_S {
                *self = Self::default();
            } else {
                let d = haversine_m(lat, lon, fix.lat, fix.lon).min(MAX_MPS * dt);
                let decay = (-dt / TAU_S).exp();
                self.distance_m = self.distance_m * decay + d;
                self.time_s = self.time_s * decay + dt;
                self.trip_m += d;
                self.trip_s += dt;
            }
        }
        self.last = Some((fix.ts_ms, fix.lat, fix.lon));
    }

    /// The driver's recent travelled speed, m/s; `None` before a minute of fixes.
    pub fn speed_mps(&self) -> Option<f64> {
        (self.time_s >= MIN_SPAN_S).then(|| self.distance_m / self.time_s)
    }

    /// The driver's average travelled speed since its trip began ([`Pace::start_trip`]), m/s;
    /// `None` before a minute of it.
    pub fn trip_speed_mps(&self) -> Option<f64> {
        (self.trip_s >= MIN_SPAN_S).then(|| self.trip_m / self.trip_s)
    }

    /// A trip begins: the trip average starts again from the next fix.
    pub fn start_trip(&mut self) {
        self.trip_m = 0.0;
        self.trip_s = 0.0;
    }

    /// The driver's recent speed over the fleet's typical travelled speed (`fleet_mps`), the
    /// factor [`super::estimate`] scales the current leg by.
    pub fn ratio(&self, fleet_mps: f64) -> Option<f64> {
        let v = self.speed_mps()?;
        (fleet_mps > 0.0).then(|| v / fleet_mps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_follows_the_recent_speed_and_restarts_after_a_gap() {
        let mut p = Pace::default();
        // 10 m/s north for 2 minutes (1 fix / 5 s; 0.00045° of latitude ≈ 50 m).
        for i in 0..25 {
            p.observe(&Fix::at(i * 5_000, 41.0 + i as f64 * 0.00045, -8.6));
        }
        let v = p.speed_mps().unwrap();
        assert!((v - 10.0).abs() < 0.3, "{v}");
        // Parked for 5 minutes: the pace falls well below half.
        for i in 25..85 {
            p.observe(&Fix::at(i * 5_000, 41.0108, -8.6));
        }
        assert!(p.speed_mps().unwrap() < 5.0);
        // An hour of silence starts over.
        p.observe(&Fix::at(85 * 5_000 + 3_600_000, 41.02, -8.6));
        assert_eq!(p.speed_mps(), None);
    }
}
