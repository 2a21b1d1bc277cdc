//! Automatic stops: a driver stationary anywhere (not only at a planned stop) for the arrival
//! dwell is *stopped*, and *moving* again once it leaves, decided by the same evidence model as
//! check-ins (`arrival::StopTrack`: dwell with outlier tolerance, a phone gone quiet, a device
//! that says it is still; departure past the exit ring).
//!
//! The planned stop's fixed geofence becomes a floating one: a circle of the stationary radius
//! (50 m) centred on the fix that may begin a stop. While no dwell is in progress it follows the
//! driver (re-centred on each fix); once a dwell begins it stays, and the dwell decides. After
//! a stop, departure (past 1.5 × the radius on two fixes, as for a check-in) gives *moving* and
//! a new floating circle where the driver is.
//!
//! Measured on the Amazon labels (`trackhub eval-stops`; BENCHMARKS.md).

use super::arrival::{ArrivalConfig, Decision, Geofence, StopPhase, StopTrack};
use crate::model::{Fix, StopKey};

/// A change of a driver's movement. Times device time, unix ms UTC; position degrees WGS84.
#[derive(Debug, Clone, PartialEq)]
pub enum Movement {
    /// Stopped since `since_ms` (the dwell's first fix), decided at `confirmed_at_ms`, around
    /// (`lat`, `lon`) (the floating circle's centre).
    Stopped {
        since_ms: i64,
        confirmed_at_ms: i64,
        lat: f64,
        lon: f64,
    },
    /// Moving again since `at_ms` (the first fix past the exit ring), after a stop since
    /// `stopped_since_ms`.
    Moving { at_ms: i64, stopped_since_ms: i64 },
}

/// One driver's automatic-stop state.
#[derive(Debug, Default, Clone)]
pub struct StopDetector {
    track: Option<StopTrack>,
    last_ts_ms: Option<i64>,
    /// Start of the stop in progress.
    stopped_since_ms: Option<i64>,
}

fn floating(fix: &Fix, cfg: &ArrivalConfig) -> StopTrack {
    StopTrack::new(
        Geofence {
            key: StopKey {
                trip_id: "".into(),
                stop_id: "auto".into(),
            },
            lat: fix.lat,
            lon: fix.lon,
            radius_m: cfg.stationary_radius_m,
        },
        StopPhase::Pending,
    )
}

impl StopDetector {
    /// True while the driver is stopped.
    pub fn stopped(&self) -> bool {
        self.track
            .as_ref()
            .is_some_and(|t| matches!(t.phase(), StopPhase::Arrived { .. }))
    }

    /// Feeds the driver's next fix (device time must increase; older fixes are ignored).
    pub fn observe(&mut self, fix: &Fix, cfg: &ArrivalConfig) -> Option<Movement> {
        if self.last_ts_ms.is_some_and(|last| fix.ts_ms <= last) {
            return None;
        }
        self.last_ts_ms = Some(fix.ts_ms);
        let track = self.track.get_or_insert_with(|| floating(fix, cfg));
        match track.observe(fix, cfg) {
            Some(Decision::CheckIn {
                arrived_at_ms,
                confirmed_at_ms,
                ..
            }) => {
                self.stopped_since_ms = Some(arrived_at_ms);
                Some(Movement::Stopped {
                    since_ms: arrived_at_ms,
                    confirmed_at_ms,
                    lat: track.fence().lat,
                    lon: track.fence().lon,
                })
            }
            Some(Decision::Departure { departed_at_ms, .. }) => {
                let mut next = floating(fix, cfg);
                next.observe(fix, cfg);
                *track = next;
                Some(Movement::Moving {
                    at_ms: departed_at_ms,
                    stopped_since_ms: self.stopped_since_ms.take().unwrap_or(departed_at_ms),
                })
            }
            None => {
                if track.phase() == StopPhase::Pending && !track.dwelling() {
                    // Nothing began here: the circle follows the driver.
                    let mut next = floating(fix, cfg);
                    next.observe(fix, cfg);
                    *track = next;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: f64 = 1.0 / 111_195.0;

    fn run(path: &[(i64, f64)]) -> Vec<Movement> {
        let cfg = ArrivalConfig::default();
        let mut d = StopDetector::default();
        path.iter()
            .filter_map(|(t, north_m)| d.observe(&Fix::at(*t, 41.15 + north_m * M, -8.61), &cfg))
            .collect()
    }

    #[test]
    fn a_stop_anywhere_and_moving_on() {
        // Driving north at 10 m/s for a minute, 3 minutes parked (jitter ±8 m), driving on.
        let mut path: Vec<(i64, f64)> = (0..12).map(|i| (i * 5_000, i as f64 * 50.0)).collect();
        path.extend((12..48).map(|i| (i * 5_000, 600.0 + if i % 2 == 0 { 8.0 } else { -8.0 })));
        path.extend((48..60).map(|i| (i * 5_000, 600.0 + (i - 47) as f64 * 50.0)));
        let m = run(&path);
        assert_eq!(m.len(), 2, "{m:?}");
        match (&m[0], &m[1]) {
            (
                Movement::Stopped { since_ms, .. },
                Movement::Moving {
                    at_ms,
                    stopped_since_ms,
                },
            ) => {
                assert_eq!(*since_ms, 60_000);
                assert_eq!(stopped_since_ms, since_ms);
                assert!(*at_ms >= 240_000 && *at_ms <= 250_000, "{at_ms}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_red_light_and_crawling_traffic_are_not_stops() {
        // 40 s at a light, then crawling at 1.5 m/s for 3 minutes (past the stationary radius).
        let mut path: Vec<(i64, f64)> = (0..8).map(|i| (i * 5_000, 0.0)).collect();
        path.extend((8..44).map(|i| (i * 5_000, (i - 7) as f64 * 7.5)));
        assert!(run(&path).is_empty());
    }
}
