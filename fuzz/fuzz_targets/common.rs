//! Checks shared by the frame decoders' targets.

use trackhub::protocol::codec::DecodeError;
use trackhub::protocol::driver::DriverMsg;

/// Validates every decoded ping the way the driver socket does; a fix that passes must be in range.
pub fn check_driver(decoded: Result<DriverMsg, DecodeError>) {
    let pings = match decoded {
        Ok(DriverMsg::Ping(p)) => vec![p],
        Ok(DriverMsg::Batch(b)) => b.into_iter().flatten().collect(),
        Err(_) => return,
    };
    for p in pings {
        if let Ok(fix) = p.validate(1_790_000_000_000, 60_000) {
            assert!((-90.0..=90.0).contains(&fix.lat) && (-180.0..=180.0).contains(&fix.lon));
            assert!(fix.accuracy_m.is_none_or(|a| a.is_finite() && a >= 0.0));
            assert!(fix.heading_deg.is_none_or(|h| (0.0..360.0).contains(&h)));
        }
    }
}
