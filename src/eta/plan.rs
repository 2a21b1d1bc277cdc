//! A driver's trips as the ETA sees them: stops in order with their windows, latest ETAs and
//! the approaching/late state, refreshed from the driver's position.

use std::sync::Arc;

use super::{estimate, ApproachCurve, EtaConfig, PlannedStop};
use crate::geo::distance::haversine_m;
use crate::model::{NextStop, StopKey};

/// When `stop.approaching` and `stop.late` fire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertConfig {
    /// The next stop is *approaching* when its ETA is at most this far ahead, s. Default 300:
    /// the 5 minutes customers are told to get ready by in Onfleet's "driver arriving" SMS and
    /// Radar's trip `approaching` status (both configurable there too).
    pub approach_eta_s: f64,
    /// … or when the driver is at most this far from it, m (great circle). Default 500.
    pub approach_distance_m: f64,
    /// Approaching is re-armed only when both the ETA and the distance are back beyond this
    /// multiple of their thresholds (hysteresis). Default 2.
    pub rearm_factor: f64,
    /// A stop is late when its ETA passes its window's end by more than this, and recovered
    /// when the ETA is back this far inside the window, s. Default 60: about the median error
    /// of the ETA five minutes out (46-51 s, `eval-eta`), so an ETA hovering at the window's
    /// end does not flap.
    pub late_margin_s: f64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            approach_eta_s: 300.0,
            approach_distance_m: 500.0,
            rearm_factor: 2.0,
            late_margin_s: 60.0,
        }
    }
}

/// One stop of a trip, as the ETA refresh tracks it. Degrees WGS84, times unix ms UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStop {
    pub key: StopKey,
    pub lat: f64,
    pub lon: f64,
    /// s.
    pub service_s: f64,
    pub window_start_ms: Option<i64>,
    pub window_end_ms: Option<i64>,
    /// The latest ETA published for the stop.
    pub eta_ms: Option<i64>,
    /// `stop.approaching` announced and not re-armed.
    pub approaching: bool,
    /// `stop.late` announced (late) and not recovered.
    pub late: bool,
}

/// A trip's stops in order.
#[derive(Debug, Clone, PartialEq)]
pub struct TripPlan {
    pub trip_id: Arc<str>,
    pub stops: Vec<PlanStop>,
}

/// A change of a stop's approaching/late state, for the hub to make durable and announce.
#[derive(Debug, Clone, PartialEq)]
pub enum Alert {
    Approaching {
        key: StopKey,
        eta_ms: i64,
        distance_m: f64,
    },
    /// The driver went back away from a stop it was approaching: the next approach counts again.
    Rearmed { key: StopKey },
    Late {
        key: StopKey,
        eta_ms: i64,
        window_end_ms: i64,
        late: bool,
    },
}

/// What one refresh of a driver's plans produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Refresh {
    /// Stops whose ETA moved by at least [`MIN_CHANGE_MS`] (or had none): (stop, ETA).
    pub changed: Vec<(StopKey, i64)>,
    pub alerts: Vec<Alert>,
    /// The first pending stop of the oldest trip that has one, with its ETA.
    pub next: Option<NextStop>,
}

/// Smallest ETA change worth publishing and storing, ms: ETAs are quoted to the minute, and
/// a 10 s threshold keeps a parked driver's ETAs from being rewritten every refresh.
pub const MIN_CHANGE_MS: i64 = 10_000;

/// The inputs every trip of one driver shares in a refresh.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    pub cfg: &'a EtaConfig,
    pub alerts: &'a AlertConfig,
    pub curve: &'a ApproachCurve,
    /// What is known of the driver's pace.
    pub pace: super::DriverPace,
    /// The driver's position, degrees.
    pub position: (f64, f64),
    pub now_ms: i64,
}

/// Refreshes the ETAs of every pending stop (`pending` tells which are) of `plans`, in order,
/// and decides the approaching/late crossings. The plans' flags and ETAs are updated as if
/// every alert were recorded; the hub reverts a flag whose alert it could not store.
pub fn refresh(
    plans: &mut [TripPlan],
    pending: impl Fn(&StopKey) -> bool,
    at: Situation<'_>,
) -> Refresh {
    let mut out = Refresh::default();
    for plan in plans.iter_mut() {
        let open: Vec<usize> = (0..plan.stops.len())
            .filter(|&i| pending(&plan.stops[i].key))
            .collect();
        if open.is_empty() {
            continue;
        }
        let planned: Vec<PlannedStop> = open
            .iter()
            .map(|&i| {
                let s = &plan.stops[i];
                PlannedStop {
                    lat: s.lat,
                    lon: s.lon,
                    service_s: s.service_s,
                    window_start_ms: s.window_start_ms,
                }
            })
            .collect();
        let etas = estimate(at.cfg, at.curve, at.pace, at.position, at.now_ms, &planned);
        for (n, (&i, &eta)) in open.iter().zip(&etas).enumerate() {
            let s = &mut plan.stops[i];
            if s.eta_ms
                .is_none_or(|old| (old - eta).abs() >= MIN_CHANGE_MS)
            {
                s.eta_ms = Some(eta);
                out.changed.push((s.key.clone(), eta));
            }
            if n == 0 {
                approach(s, eta, at, &mut out.alerts);
                if out.next.is_none() {
                    out.next = Some(NextStop {
                        key: s.key.clone(),
                        eta_ms: s.eta_ms.unwrap_or(eta),
                    });
                }
            }
            lateness(s, eta, at.alerts, &mut out.alerts);
        }
    }
    out
}

fn approach(s: &mut PlanStop, eta: i64, at: Situation<'_>, alerts: &mut Vec<Alert>) {
    let c = at.alerts;
    let distance_m = haversine_m(at.position.0, at.position.1, s.lat, s.lon);
    let ahead_s = (eta - at.now_ms) as f64 / 1000.0;
    if !s.approaching && (ahead_s <= c.approach_eta_s || distance_m <= c.approach_distance_m) {
        s.approaching = true;
        alerts.push(Alert::Approaching {
            key: s.key.clone(),
            eta_ms: eta,
            distance_m: distance_m.round(),
        });
    } else if s.approaching
        && ahead_s > c.approach_eta_s * c.rearm_factor
        && distance_m > c.approach_distance_m * c.rearm_factor
    {
        s.approaching = false;
        alerts.push(Alert::Rearmed { key: s.key.clone() });
    }
}

fn lateness(s: &mut PlanStop, eta: i64, c: &AlertConfig, alerts: &mut Vec<Alert>) {
    let Some(end) = s.window_end_ms else { return };
    let margin = (c.late_margin_s * 1000.0) as i64;
    let flip = if !s.late && eta > end + margin {
        Some(true)
    } else if s.late && eta < end - margin {
        Some(false)
    } else {
        None
    };
    if let Some(late) = flip {
        s.late = late;
        alerts.push(Alert::Late {
            key: s.key.clone(),
            eta_ms: eta,
            window_end_ms: end,
            late,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(window_end_ms: Option<i64>) -> Vec<TripPlan> {
        let stop = |id: &str, lat: f64| PlanStop {
            key: StopKey {
                trip_id: "t".into(),
                stop_id: id.into(),
            },
            lat,
            lon: -8.61,
            service_s: 60.0,
            window_start_ms: None,
            window_end_ms,
            eta_ms: None,
            approaching: false,
            late: false,
        };
        vec![TripPlan {
            trip_id: "t".into(),
            stops: vec![stop("s1", 41.15), stop("s2", 41.17)],
        }]
    }

    fn at<'a>(
        lat: f64,
        now_ms: i64,
        cfg: &'a (EtaConfig, AlertConfig, ApproachCurve),
    ) -> Situation<'a> {
        Situation {
            cfg: &cfg.0,
            alerts: &cfg.1,
            curve: &cfg.2,
            pace: Default::default(),
            position: (lat, -8.61),
            now_ms,
        }
    }

    #[test]
    fn approaching_fires_once_per_crossing_with_hysteresis() {
        let cfg = Default::default();
        let mut plans = plan(None);
        let count = |r: &Refresh| {
            r.alerts
                .iter()
                .filter(|a| matches!(a, Alert::Approaching { .. }))
                .count()
        };
        // 5.5 km out: not approaching; ETAs for both stops, the second later.
        let far = refresh(&mut plans, |_| true, at(41.10, 0, &cfg));
        assert_eq!(count(&far), 0);
        assert_eq!(far.changed.len(), 2);
        assert!(far.changed[1].1 > far.changed[0].1 + 60_000);
        assert_eq!(far.next.as_ref().unwrap().key.stop_id.as_ref(), "s1");
        // 400 m out: approaching, once; jitter back to 700 m and in again: nothing new.
        let mut fired = 0;
        for lat in [41.1464, 41.1437, 41.1464, 41.1437, 41.1464] {
            fired += count(&refresh(&mut plans, |_| true, at(lat, 1_000, &cfg)));
        }
        assert_eq!(fired, 1);
        // Back out past twice the thresholds: re-armed, and the next approach fires again.
        let away = refresh(&mut plans, |_| true, at(41.10, 2_000, &cfg));
        assert!(away
            .alerts
            .iter()
            .any(|a| matches!(a, Alert::Rearmed { .. })));
        assert_eq!(
            count(&refresh(&mut plans, |_| true, at(41.1464, 3_000, &cfg))),
            1
        );
        // s1 checked in: s2 is next, and it is 2.2 km away.
        let on = refresh(
            &mut plans,
            |k| k.stop_id.as_ref() == "s2",
            at(41.15, 4_000, &cfg),
        );
        assert_eq!(on.next.unwrap().key.stop_id.as_ref(), "s2");
    }

    #[test]
    fn late_fires_when_the_eta_passes_the_window_and_again_when_it_recovers() {
        let cfg = Default::default();
        // The window of both stops ends 10 minutes from t=0.
        let mut plans = plan(Some(600_000));
        let lates = |r: &Refresh| -> Vec<(String, bool)> {
            r.alerts
                .iter()
                .filter_map(|a| match a {
                    Alert::Late { key, late, .. } => Some((key.stop_id.to_string(), *late)),
                    _ => None,
                })
                .collect()
        };
        // Near s1 at t=0: on time.
        assert!(lates(&refresh(&mut plans, |_| true, at(41.1464, 0, &cfg))).is_empty());
        // Still there 9.5 minutes later: both ETAs pass the window's end + 60 s, once each.
        let t = 570_000;
        assert_eq!(
            lates(&refresh(&mut plans, |_| true, at(41.1464, t, &cfg))),
            vec![("s1".into(), true), ("s2".into(), true)]
        );
        assert!(lates(&refresh(&mut plans, |_| true, at(41.1464, t + 1_000, &cfg))).is_empty());
        // s1 is checked in (no longer pending); the window of s2 is moved later by recovering:
        // a plan with a later window end recovers s2 once.
        plans[0].stops[1].window_end_ms = Some(3_600_000);
        assert_eq!(
            lates(&refresh(
                &mut plans,
                |k| k.stop_id.as_ref() == "s2",
                at(41.15, t + 2_000, &cfg)
            )),
            vec![("s2".into(), false)]
        );
    }
}
