//! ETAs scored on real trips: each trip's last fix is the stop, and at every earlier fix the
//! model's estimate of the remaining time is compared with what the trip really took.
//!
//! Two folds: the traces at even positions train the model (the [`ApproachCurve`] from their
//! arrivals, the fleet's typical travelled speed) that is scored on the odd ones, then the other
//! way round, so no trip is scored by a model that saw it. The baselines get the same trips:
//! - **fixed speed**: the great-circle distance at a city speed ([`CITY_MPS`]), and at the
//!   median effective speed of the training fold (the best constant, fitted);
//! - **average so far**: the great-circle distance at the trip's own average speed so far
//!   (distance along its fixes ÷ elapsed time), what a tracking page without a model shows.

use crate::eta::{estimate, ApproachCurve, EtaConfig, Pace, PlannedStop};
use crate::geo::distance::haversine_m;
use crate::model::Fix;

/// The city speed of the fixed-speed baseline, m/s: 30 km/h, the urban speed limit of much of
/// Europe and the figure a dispatcher would guess.
pub const CITY_MPS: f64 = 30.0 / 3.6;
/// Horizons scored, minutes before arrival: [from, to).
pub const HORIZONS_MIN: [(i64, i64); 3] = [(0, 5), (5, 15), (15, 30)];
/// Where the data lives relative to the project root.
pub const PORTO: &str = "../shared/data/porto_taxi/train_first1999trips.csv";
pub const GOTRACK: &str = "../shared/data/gotrack_car_bus_brazil/go_track_trackspoints.csv";

/// The methods compared, in table order.
pub const METHODS: [&str; 4] = [
    "trackhub",
    "fixed 30 km/h",
    "fixed fitted",
    "average so far",
];

/// Absolute errors, s, per method and horizon.
#[derive(Debug, Clone, Default)]
pub struct EtaScore {
    /// `errors[method][horizon]`.
    pub errors: [[Vec<f64>; 3]; 4],
    pub trips: usize,
}

impl EtaScore {
    /// Median and 90th percentile of one method's errors at one horizon, s.
    pub fn quantiles(&self, method: usize, horizon: usize) -> Option<(f64, f64)> {
        let mut e = self.errors[method][horizon].clone();
        if e.is_empty() {
            return None;
        }
        e.sort_by(f64::total_cmp);
        let q = |p: f64| e[((e.len() - 1) as f64 * p).round() as usize];
        Some((q(0.5), q(0.9)))
    }

    /// Samples at a horizon.
    pub fn samples(&self, horizon: usize) -> usize {
        self.errors[0][horizon].len()
    }
}

/// One trip's fixes, in time order.
pub type Trip = Vec<Fix>;

/// Trips worth scoring: at least 8 fixes over at least 3 minutes, ending at least 500 m (great
/// circle) from where they started (a loop back to its start has no meaningful straight line).
pub fn usable(fixes: &Trip) -> bool {
    let (Some(first), Some(last)) = (fixes.first(), fixes.last()) else {
        return false;
    };
    fixes.len() >= 8
        && last.ts_ms - first.ts_ms >= 180_000
        && haversine_m(first.lat, first.lon, last.lat, last.lon) >= 500.0
}

/// A trip arrives where its last fix is, at its first fix within [`ARRIVED_M`] of it after which
/// it stays within twice that: phones go on recording a parked vehicle (Go!Track traces end
/// with minutes of it), and the hub's arrival is entering the stop, not the end of recording.
pub const ARRIVED_M: f64 = 50.0;

/// The trip cut at its arrival (see [`ARRIVED_M`]).
pub fn until_arrival(mut fixes: Trip) -> Trip {
    let Some(end) = fixes.last().copied() else {
        return fixes;
    };
    let dist = |f: &Fix| haversine_m(f.lat, f.lon, end.lat, end.lon);
    let mut arrived = fixes.len() - 1;
    for i in (0..fixes.len()).rev() {
        let d = dist(&fixes[i]);
        if d > 2.0 * ARRIVED_M {
            break;
        }
        if d <= ARRIVED_M {
            arrived = i;
        }
    }
    fixes.truncate(arrived + 1);
    fixes
}

/// A dataset's usable trips (each trace's fixes, as `replay` reads them), each cut at its
/// arrival.
pub fn prepare(traces: impl IntoIterator<Item = Trip>) -> Vec<Trip> {
    traces
        .into_iter()
        .map(until_arrival)
        .filter(usable)
        .collect()
}

/// What the model learns from training trips.
#[derive(Debug, Clone)]
pub struct Learned {
    pub curve: ApproachCurve,
    /// The fleet's typical travelled speed (the pace ratio's denominator), m/s.
    pub fleet_mps: f64,
    /// The median effective speed (great circle ÷ remaining time) of every sample, m/s.
    pub median_effective_mps: f64,
}

/// Learns the curve and the fleet speed from `trips`, as the hub does from check-ins: from the
/// built-in prior (what a new fleet starts with) when `from_prior`, else from nothing.
pub fn learn<'a>(trips: impl IntoIterator<Item = &'a Trip>, from_prior: bool) -> Learned {
    let mut curve = if from_prior {
        ApproachCurve::default()
    } else {
        ApproachCurve::empty()
    };
    let mut paces = Vec::new();
    let mut effective = Vec::new();
    for t in trips {
        let end = t.last().expect("usable trips have fixes");
        let mut pace = Pace::default();
        for f in t {
            pace.observe(f);
            paces.extend(pace.speed_mps());
            let d = haversine_m(f.lat, f.lon, end.lat, end.lon);
            let rem_s = (end.ts_ms - f.ts_ms) as f64 / 1000.0;
            curve.observe(d, rem_s);
            if rem_s > 0.0 && d > 20.0 {
                effective.push(d / rem_s);
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        if v.is_empty() {
            return CITY_MPS;
        }
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Learned {
        curve,
        fleet_mps: median(paces),
        median_effective_mps: median(effective),
    }
}

/// Scores `test` trips with a model `learned` elsewhere.
pub fn score(cfg: &EtaConfig, learned: &Learned, test: &[&Trip], into: &mut EtaScore) {
    for t in test {
        into.trips += 1;
        let end = *t.last().expect("usable trips have fixes");
        let stop = [PlannedStop {
            lat: end.lat,
            lon: end.lon,
            service_s: 0.0,
            window_start_ms: None,
        }];
        let first = t[0];
        let mut pace = Pace::default();
        let mut travelled_m = 0.0;
        let mut prev = first;
        for f in t.iter() {
            pace.observe(f);
            travelled_m += haversine_m(prev.lat, prev.lon, f.lat, f.lon);
            prev = *f;
            let rem_ms = end.ts_ms - f.ts_ms;
            let Some(h) = HORIZONS_MIN
                .iter()
                .position(|(a, b)| rem_ms > a * 60_000 && rem_ms < b * 60_000)
            else {
                continue;
            };
            let rem_s = rem_ms as f64 / 1000.0;
            let d = haversine_m(f.lat, f.lon, end.lat, end.lon);
            let ours = estimate(
                cfg,
                &learned.curve,
                crate::eta::DriverPace {
                    ratio: pace.ratio(learned.fleet_mps),
                    trip_mps: pace.trip_speed_mps(),
                },
                (f.lat, f.lon),
                f.ts_ms,
                &stop,
            )[0];
            let elapsed_s = (f.ts_ms - first.ts_ms) as f64 / 1000.0;
            let so_far_mps = if elapsed_s >= 60.0 && travelled_m > 0.0 {
                travelled_m / elapsed_s
            } else {
                CITY_MPS
            };
            let guesses = [
                (ours - f.ts_ms) as f64 / 1000.0,
                d / CITY_MPS,
                d / learned.median_effective_mps,
                d / so_far_mps.max(0.5),
            ];
            for (m, g) in guesses.iter().enumerate() {
                into.errors[m][h].push((g - rem_s).abs());
            }
        }
    }
}

/// The file the built-in prior ([`crate::eta::curve::PRIOR_MPS`]) was measured on: scored
/// without the prior, which has seen its trips.
pub const PRIOR_SOURCE: &str = "train_first1999trips.csv";

/// Two-fold evaluation of one dataset: even-position trips train, odd ones are scored, and the
/// other way round. `from_prior`: as a new fleet would, starting from the built-in curve (every
/// dataset but [`PRIOR_SOURCE`]).
pub fn evaluate(cfg: &EtaConfig, traces: &[Trip], from_prior: bool) -> EtaScore {
    let mut s = EtaScore::default();
    for fold in 0..2 {
        let train = traces.iter().enumerate().filter(|(i, _)| i % 2 != fold);
        let learned = learn(train.map(|(_, t)| t), from_prior);
        let test: Vec<&Trip> = traces
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == fold)
            .map(|(_, t)| t)
            .collect();
        score(cfg, &learned, &test, &mut s);
    }
    s
}

/// The table `trackhub eval-eta` prints (and BENCHMARKS.md keeps): per horizon, each method's
/// median and p90 absolute error in seconds.
pub fn table(name: &str, s: &EtaScore) -> String {
    let mut out = format!(
        "{name}: {} trips, two folds\n| horizon | samples | {} |\n|---|---|{}\n",
        s.trips,
        METHODS
            .iter()
            .map(|m| format!("{m} median / p90 (s)"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(METHODS.len())
    );
    for (h, (a, b)) in HORIZONS_MIN.iter().enumerate() {
        let cells: Vec<String> = (0..METHODS.len())
            .map(|m| {
                s.quantiles(m, h)
                    .map_or("-".into(), |(q50, q90)| format!("{q50:.0} / {q90:.0}"))
            })
            .collect();
        out += &format!(
            "| {a}-{b} min | {} | {} |\n",
            s.samples(h),
            cells.join(" | ")
        );
    }
    out
}
