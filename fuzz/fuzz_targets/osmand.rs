//! Any OsmAnd request (parameters or JSON): parsing never panics, and a parsed report has finite
//! coordinates and a heading in [0, 360).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trackhub::osmand;

fn check(parsed: Result<osmand::Request, Vec<trackhub::error::FieldError>>) {
    if let Ok(r) = parsed {
        assert!(!r.device_id.is_empty());
        for rep in r.reports {
            assert!(rep.lat.is_finite() && rep.lon.is_finite());
            assert!(rep.heading_deg.is_none_or(|h| (0.0..360.0).contains(&h)));
            assert!(rep.speed_mps.is_none_or(|s| s.is_finite() && s >= 0.0));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(osmand::parse_json(data));
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    check(osmand::parse_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = osmand::parse_timestamp(text);
    }
});
