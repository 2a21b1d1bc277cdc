//! Random stops and fix sequences through arrival detection: at most one check-in (and one
//! departure) per stop, never a check-in without enough accurate fixes inside the radius for the
//! dwell time (see `trackhub::geo::arrival_invariants`).
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use trackhub::geo::arrival::{ArrivalConfig, Geofence};
use trackhub::geo::arrival_invariants::run_and_check;
use trackhub::model::Fix;
use trackhub::model::StopKey;

#[derive(Debug, Arbitrary)]
struct Input {
    origin: (i16, i16),
    stops: Vec<(i16, i16, u8)>,
    fixes: Vec<Step>,
    dwell_s: u8,
}

#[derive(Debug, Arbitrary)]
struct Step {
    dt_ms: i16,
    /// Metres north/east of the origin, in 0.5 m units.
    north: i16,
    east: i16,
    accuracy_m: Option<u8>,
    speed_dmps: Option<u8>,
}

const M_PER_DEG: f64 = 111_195.0;

fn at(lat0: f64, lon0: f64, north_m: f64, east_m: f64) -> (f64, f64) {
    (lat0 + north_m / M_PER_DEG, lon0 + east_m / (M_PER_DEG * lat0.to_radians().cos()))
}

fuzz_target!(|input: Input| {
    let lat0 = f64::from(input.origin.0) / 600.0; // within ±55°
    let lon0 = f64::from(input.origin.1) / 200.0; // within ±164°
    let fences: Vec<Geofence> = input
        .stops
        .iter()
        .take(8)
        .enumerate()
        .map(|(i, (n, e, r))| {
            let (lat, lon) = at(lat0, lon0, f64::from(*n) / 100.0, f64::from(*e) / 100.0);
            Geofence {
                key: StopKey { trip_id: Arc::from("t"), stop_id: Arc::from(format!("s{i}")) },
                lat,
                lon,
                radius_m: 10.0 + f64::from(*r),
            }
        })
        .collect();
    let mut ts = 1_790_000_000_000i64;
    let fixes: Vec<Fix> = input
        .fixes
        .iter()
        .take(5_000)
        .map(|s| {
            ts += i64::from(s.dt_ms) * 10;
            let (lat, lon) = at(lat0, lon0, f64::from(s.north) / 2.0 / 50.0, f64::from(s.east) / 2.0 / 50.0);
            Fix {
                ts_ms: ts,
                lat,
                lon,
                accuracy_m: s.accuracy_m.map(f64::from),
                speed_mps: s.speed_dmps.map(|d| f64::from(d) / 10.0),
                heading_deg: None,
                motion: None,
            }
        })
        .collect();
    let cfg = ArrivalConfig {
        dwell_ms: 1_000 + i64::from(input.dwell_s) * 1_000,
        ..ArrivalConfig::default()
    };
    if let Err(broken) = run_and_check(&fences, &fixes, &cfg) {
        panic!("{broken}");
    }
});
