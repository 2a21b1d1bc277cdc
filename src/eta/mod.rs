//! Estimated times of arrival (ETA) at a driver's pending stops, with no external router.
//!
//! The model (measured on real trips with `trackhub eval-eta`, figures in BENCHMARKS.md):
//! - **Distance**: great-circle (haversine) distance from the driver to the next stop, then from
//!   stop to stop in trip order.
//! - **Time for a distance**: an [`ApproachCurve`], the fleet's typical *effective* speed
//!   (great-circle metres per second of remaining time) by distance band, learned from the
//!   fleet's own arrivals. It folds the road network's detour and the time lost at lights and in
//!   traffic into one learned figure, which is why it beats a fixed speed: on Porto taxi trips a
//!   vehicle 300 m from its stop covers the straight line at ~3.7 m/s, one 5 km away at ~7 m/s.
//! - **The driver's pace**: a [`Pace`], the driver's recent travelled speed over the fleet's
//!   typical one, scales the estimate partly ([`EtaConfig::pace_weight`]): a driver stuck in
//!   traffic now is slower than the curve says, a driver on a motorway faster. Within the last
//!   minutes the driver's average speed since its trip began is blended in
//!   ([`EtaConfig::trip_pace_blend`]).
//! - **Stops in order**: each following stop's ETA is the previous one's plus its service time
//!   (s) plus the curve's time for the stop-to-stop distance at the fleet's pace.
//! - **Windows**: a stop may not be served before its window opens; the ETA of the stops after it
//!   counts the wait.
//!
//! Pure: no I/O, no clock; the hub feeds fixes and arrivals and asks for estimates.

pub mod curve;
mod pace;
pub mod plan;

pub use curve::ApproachCurve;
pub use pace::Pace;

use crate::geo::distance::haversine_m;

/// Tunables of the estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EtaConfig {
    /// How much of the driver's own pace scales the fleet curve: the estimate is divided by
    /// `pace^pace_weight`. 0 ignores the driver, 1 trusts its last minutes fully. Default 0.5:
    /// the best of 0, 0.5 and 1 on the Porto trips (`eval-eta`, BENCHMARKS.md).
    pub pace_weight: f64,
    /// Range the driver's pace ratio is clamped to: a driver parked for a minute (ratio ~0) must
    /// not push the ETA to infinity, nor a GPS jump bring it to zero. Default [0.5, 2.0].
    pub pace_clamp: (f64, f64),
    /// For a first leg estimated at under 5 minutes, weight (in log time) of the driver's own
    /// average speed since its trip began, fading to 0 at 15 minutes. Near the stop what this
    /// driver has been doing on this trip says more than the fleet's median. Default 0.5: with
    /// it the median error five minutes out fell from 46 to 42 s on Porto and from 51 to 42 s
    /// on Go!Track, at 5-15 minutes it rose from 119 to 146 s on Porto (`eval-eta`,
    /// BENCHMARKS.md).
    pub trip_pace_blend: f64,
}

/// What the estimate knows of the driver.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DriverPace {
    /// Recent travelled speed over the fleet's ([`Pace::ratio`]).
    pub ratio: Option<f64>,
    /// Average travelled speed since the trip began, m/s ([`Pace::trip_speed_mps`]).
    pub trip_mps: Option<f64>,
}

impl Default for EtaConfig {
    fn default() -> Self {
        Self {
            pace_weight: 0.5,
            pace_clamp: (0.5, 2.0),
            trip_pace_blend: 0.5,
        }
    }
}

/// One stop still to serve, in trip order. Position in degrees WGS84, times unix ms UTC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedStop {
    pub lat: f64,
    pub lon: f64,
    /// Time spent at the stop before driving on, s.
    pub service_s: f64,
    /// The stop cannot be served before this (its window's start), unix ms.
    pub window_start_ms: Option<i64>,
}

/// ETAs (unix ms UTC) of `stops`, in order, for a driver at (`lat`, `lon`) at `now_ms`.
///
/// `pace` is what is known of the driver (nothing: the fleet's curve alone). The first ETA
/// counts from `now_ms`; each next one adds the previous stop's wait for its window, its service
/// time and the drive between the two.
pub fn estimate(
    cfg: &EtaConfig,
    curve: &ApproachCurve,
    pace: DriverPace,
    (lat, lon): (f64, f64),
    now_ms: i64,
    stops: &[PlannedStop],
) -> Vec<i64> {
    let scale = pace
        .ratio
        .map(|p| {
            p.clamp(cfg.pace_clamp.0, cfg.pace_clamp.1)
                .powf(cfg.pace_weight)
        })
        .unwrap_or(1.0);
    let mut at_ms = now_ms as f64;
    let (mut from_lat, mut from_lon) = (lat, lon);
    let mut etas = Vec::with_capacity(stops.len());
    for (i, s) in stops.iter().enumerate() {
        if i > 0 {
            let prev = &stops[i - 1];
            if let Some(open) = prev.window_start_ms {
                at_ms = at_ms.max(open as f64);
            }
            at_ms += prev.service_s.max(0.0) * 1000.0;
        }
        let d = haversine_m(from_lat, from_lon, s.lat, s.lon);
        // The driver's own pace counts for the leg it is driving now; later legs are driven at
        // the fleet's typical pace.
        let leg_s = if i == 0 {
            first_leg_s(cfg, curve.seconds_for(d) / scale, d, pace.trip_mps)
        } else {
            curve.seconds_for(d)
        };
        at_ms += leg_s * 1000.0;
        etas.push(at_ms.round() as i64);
        (from_lat, from_lon) = (s.lat, s.lon);
    }
    etas
}

/// The first leg's time: the curve's (scaled by pace), blended in log time with the driver's
/// trip average when the leg is short (see [`EtaConfig::trip_pace_blend`]).
fn first_leg_s(cfg: &EtaConfig, curve_s: f64, d: f64, trip_mps: Option<f64>) -> f64 {
    let Some(v) = trip_mps.filter(|v| *v > 0.0) else {
        return curve_s;
    };
    let own_s = d / v.max(0.5);
    let w = cfg.trip_pace_blend * ((900.0 - curve_s) / 600.0).clamp(0.0, 1.0);
    if curve_s <= 0.0 || own_s <= 0.0 || w <= 0.0 {
        return curve_s;
    }
    (curve_s.ln() * (1.0 - w) + own_s.ln() * w).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(lat: f64, lon: f64, service_s: f64) -> PlannedStop {
        PlannedStop {
            lat,
            lon,
            service_s,
            window_start_ms: None,
        }
    }

    #[test]
    fn etas_grow_along_the_stops_and_count_service_and_windows() {
        let curve = ApproachCurve::default();
        let cfg = EtaConfig::default();
        let stops = [stop(41.15, -8.61, 120.0), stop(41.16, -8.61, 0.0)];
        let etas = estimate(
            &cfg,
            &curve,
            DriverPace::default(),
            (41.14, -8.61),
            0,
            &stops,
        );
        assert!(etas[0] > 0 && etas[1] > etas[0] + 120_000, "{etas:?}");
        // A window opening an hour out pushes the next stop past it.
        let mut waiting = stops;
        waiting[0].window_start_ms = Some(3_600_000);
        let later = estimate(
            &cfg,
            &curve,
            DriverPace::default(),
            (41.14, -8.61),
            0,
            &waiting,
        );
        assert_eq!(later[0], etas[0]);
        assert!(later[1] > 3_600_000 + 120_000, "{later:?}");
    }

    #[test]
    fn a_slow_driver_gets_a_later_eta_within_the_clamp() {
        let ratio = |r: f64| DriverPace {
            ratio: Some(r),
            trip_mps: None,
        };
        let curve = ApproachCurve::default();
        let cfg = EtaConfig::default();
        let stops = [stop(41.15, -8.61, 0.0)];
        let normal = estimate(&cfg, &curve, ratio(1.0), (41.14, -8.61), 0, &stops)[0];
        let slow = estimate(&cfg, &curve, ratio(0.5), (41.14, -8.61), 0, &stops)[0];
        let parked = estimate(&cfg, &curve, ratio(0.0), (41.14, -8.61), 0, &stops)[0];
        assert!(slow > normal);
        assert_eq!(
            parked, slow,
            "a parked driver is clamped to the slowest pace"
        );
    }

    #[test]
    fn at_the_stop_the_eta_is_now() {
        let etas = estimate(
            &EtaConfig::default(),
            &ApproachCurve::default(),
            DriverPace::default(),
            (41.15, -8.61),
            5_000,
            &[stop(41.15, -8.61, 0.0)],
        );
        assert_eq!(etas, vec![5_000]);
    }
}
