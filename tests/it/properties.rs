//! Properties over generated inputs (proptest): arrival detection keeps its promises on any fix
//! sequence, both codecs decode what the other encodes, and no decoder panics on any input.
//! The fuzz targets in `fuzz/` push the same checks much further.

use proptest::prelude::*;
use prost::Message as _;
use std::sync::Arc;
use trackhub::geo::arrival::{ArrivalConfig, Geofence};
use trackhub::geo::arrival_invariants::run_and_check;
use trackhub::geo::haversine_m;
use trackhub::model::{Fix, StopKey};
use trackhub::protocol::codec::{Codec, Frame};
use trackhub::protocol::driver::{DriverMsg, Ping};
use trackhub::protocol::osmand;
use trackhub::protocol::pb;
use trackhub::protocol::time::WireTs;

const M_PER_DEG: f64 = 111_195.0;

fn offset(lat: f64, lon: f64, north_m: f64, east_m: f64) -> (f64, f64) {
    (
        lat + north_m / M_PER_DEG,
        lon + east_m / (M_PER_DEG * lat.to_radians().cos()),
    )
}

/// A generated trip: stops (up to 3 within 300 m of an origin) and a fix sequence made of
/// segments, each either parked near one stop (scattered by up to 80 m, ~75 % of segments) or
/// roaming within 600 m, 5-40 fixes every 1-10 s, sometimes stepping back in time; phones
/// report accuracy (0-120 m) and speed (0-20 m/s) or not.
fn scenario() -> impl Strategy<Value = (Vec<Geofence>, Vec<Fix>)> {
    let stops = prop::collection::vec((-300.0..300.0f64, -300.0..300.0f64, 20.0..150.0f64), 1..=3);
    let fix = (
        -1.0..1.0f64,
        -1.0..1.0f64,
        prop::option::of(0.0..120.0f64),
        prop::option::of(prop_oneof![3 => 0.0..2.0f64, 1 => 0.0..20.0f64]),
    );
    let segment = (
        prop_oneof![3 => (0..3usize).prop_map(Some), 1 => Just(None)],
        0.0..80.0f64,
        prop_oneof![9 => 1_000..10_000i64, 1 => -10_000..0i64],
        prop::collection::vec(fix, 5..40),
    );
    (
        -60.0..60.0f64,
        -179.0..179.0f64,
        stops,
        prop::collection::vec(segment, 1..12),
    )
        .prop_map(|(lat0, lon0, stops, segments)| {
            let fences: Vec<Geofence> = stops
                .iter()
                .enumerate()
                .map(|(i, (n, e, r))| {
                    let (lat, lon) = offset(lat0, lon0, *n, *e);
                    let key = StopKey {
                        trip_id: Arc::from("t"),
                        stop_id: Arc::from(format!("s{i}")),
                    };
                    Geofence {
                        key,
                        lat,
                        lon,
                        radius_m: *r,
                    }
                })
                .collect();
            let mut ts = 1_790_000_000_000i64;
            let mut fixes = Vec::new();
            for (near, scatter_m, dt, seg) in segments {
                for (i, (a, b, accuracy_m, speed_mps)) in seg.into_iter().enumerate() {
                    // A backward step only between segments (a phone's buffered upload).
                    ts += if i == 0 { dt } else { dt.abs() };
                    let (lat, lon) = match near {
                        Some(k) => {
                            let (n, e, _) = stops[k % stops.len()];
                            offset(lat0, lon0, n + a * scatter_m, e + b * scatter_m)
                        }
                        None => offset(lat0, lon0, a * 600.0, b * 600.0),
                    };
                    fixes.push(Fix {
                        ts_ms: ts,
                        lat,
                        lon,
                        accuracy_m,
                        speed_mps,
                        heading_deg: None,
                        motion: None,
                    });
                }
            }
            (fences, fixes)
        })
}

/// The generator reaches the interesting cases: many scenarios check in, some depart.
#[test]
fn generated_scenarios_reach_check_ins_and_departures() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use trackhub::geo::arrival::Decision;
    let mut runner = TestRunner::deterministic();
    let (mut with_checkin, mut with_departure) = (0, 0);
    for _ in 0..200 {
        let (fences, fixes) = scenario().new_tree(&mut runner).unwrap().current();
        let decisions = run_and_check(&fences, &fixes, &ArrivalConfig::default()).unwrap();
        with_checkin += decisions
            .iter()
            .any(|d| matches!(d, Decision::CheckIn { .. })) as u32;
        with_departure += decisions
            .iter()
            .any(|d| matches!(d, Decision::Departure { .. })) as u32;
    }
    assert!(with_checkin >= 60, "{with_checkin}/200 scenarios check in");
    assert!(
        with_departure >= 20,
        "{with_departure}/200 scenarios depart"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arrival_detection_keeps_its_promises((fences, fixes) in scenario()) {
        if let Err(broken) = run_and_check(&fences, &fixes, &ArrivalConfig::default()) {
            prop_assert!(false, "{}", broken);
        }
    }

    #[test]
    fn json_and_protobuf_decode_the_same_ping(
        seq in any::<u64>(),
        ts_ms in 946_684_800_000i64..4_000_000_000_000,
        lat in -90.0..=90.0f64,
        lon in -180.0..=180.0f64,
        accuracy_m in prop::option::of(0.0..1e4f64),
        speed_mps in prop::option::of(0.0..100.0f64),
        heading_deg in prop::option::of(0.0..360.0f64),
    ) {
        let ping = Ping { seq, ts: WireTs(ts_ms), lat, lon, accuracy_m, speed_mps, heading_deg, driver_id: None, motion: None };
        let mut json = serde_json::json!({"type":"ping","seq":seq,"ts":ts_ms,"lat":lat,"lon":lon});
        if let Some(a) = accuracy_m { json["accuracy_m"] = a.into(); }
        if let Some(s) = speed_mps { json["speed_mps"] = s.into(); }
        if let Some(h) = heading_deg { json["heading_deg"] = h.into(); }
        let bytes = pb::DriverIn { msg: Some(pb::driver_in::Msg::Ping(pb::Ping {
            seq, ts_ms, lat, lon, accuracy_m, speed_mps, heading_deg, driver_id: None, motion: None,
        })) }.encode_to_vec();
        let text = json.to_string();
        let from_json = Codec::Json.decode_driver(Frame::Text(&text)).unwrap();
        let from_proto = Codec::Proto.decode_driver(Frame::Binary(&bytes)).unwrap();
        prop_assert_eq!(&from_json, &DriverMsg::Ping(ping));
        prop_assert_eq!(from_json, from_proto);
    }

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), text in ".{0,256}") {
        for codec in [Codec::Json, Codec::Proto] {
            let _ = codec.decode_driver(Frame::Binary(&bytes));
            let _ = codec.decode_driver(Frame::Text(&text));
            let _ = codec.decode_watch(Frame::Binary(&bytes));
            let _ = codec.decode_watch(Frame::Text(&text));
        }
        let _ = osmand::parse_json(&bytes);
        let _ = osmand::parse_json(text.as_bytes());
        let pairs: Vec<(String, String)> = form_urlencoded::parse(text.as_bytes()).into_owned().collect();
        let _ = osmand::parse_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let _ = osmand::parse_timestamp(&text);
    }

    #[test]
    fn osmand_speed_is_knots_and_heading_is_normalised(knots in 0.0..200.0f64, bearing in 0.0..720.0f64) {
        let q = format!("id=d&lat=1&lon=2&speed={knots}&bearing={bearing}");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        let r = osmand::parse_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        let rep = &r.reports[0];
        prop_assert!((rep.speed_mps.unwrap() - knots * 0.514_444).abs() < 1e-3 * knots.max(1.0));
        let h = rep.heading_deg.unwrap();
        prop_assert!((0.0..360.0).contains(&h));
    }

    #[test]
    fn haversine_is_a_distance(
        a in (-89.0..89.0f64, -180.0..180.0f64),
        b in (-89.0..89.0f64, -180.0..180.0f64),
        c in (-89.0..89.0f64, -180.0..180.0f64),
    ) {
        let d = |p: (f64, f64), q: (f64, f64)| haversine_m(p.0, p.1, q.0, q.1);
        prop_assert!(d(a, a).abs() < 1e-6);
        prop_assert!((d(a, b) - d(b, a)).abs() < 1e-6);
        prop_assert!(d(a, b) <= 20_015_087.0 + 1.0, "at most half the circumference");
        prop_assert!(d(a, c) <= d(a, b) + d(b, c) + 1e-3);
    }
}
