//! Trip and driver reports, computed from what is stored: the track (distance driven), the
//! stop segments (stopped and driving time, unplanned stops), presence events (time
//! online) and the stops' times (per-stop punctuality). Pure: the edges read the data and
//! write the formats (JSON, GeoJSON, GPX 1.1, CSV).

use crate::geo::haversine_m;
use crate::model::{Event, EventKind, Fix, StopSegment, StopStatus};
use crate::store::StopRecord;

/// Segments faster than this are GPS jumps, left out of the distance, m/s (250 km/h).
const MAX_MPS: f64 = 70.0;

/// Distance along a track, m: the sum of great-circle steps, without jumps.
pub fn distance_m(track: &[Fix]) -> f64 {
    track
        .windows(2)
        .map(|w| {
            let d = haversine_m(w[0].lat, w[0].lon, w[1].lat, w[1].lon);
            let dt = (w[1].ts_ms - w[0].ts_ms) as f64 / 1000.0;
            if dt > 0.0 && d / dt <= MAX_MPS {
                d
            } else {
                0.0
            }
        })
        .sum()
}

/// Time stopped within `[from_ms, to_ms]`, ms.
pub fn stopped_ms(segments: &[StopSegment], from_ms: i64, to_ms: i64) -> i64 {
    segments
        .iter()
        .map(|s| (s.to_ms.unwrap_or(to_ms).min(to_ms) - s.from_ms.max(from_ms)).max(0))
        .sum()
}

/// Time online within `[from_ms, to_ms]` from `driver.online`/`driver.offline` events (log
/// order), ms; a driver online at `to_ms` counts until then.
pub fn online_ms(events: &[Event], from_ms: i64, to_ms: i64) -> i64 {
    let mut total = 0;
    let mut since: Option<i64> = None;
    for e in events {
        match e.kind {
            EventKind::DriverOnline => {
                since.get_or_insert(e.ts_ms.max(from_ms));
            }
            EventKind::DriverOffline => {
                if let Some(s) = since.take() {
                    total += (e.ts_ms.min(to_ms) - s).max(0);
                }
            }
            _ => {}
        }
    }
    if let Some(s) = since {
        total += (to_ms - s).max(0);
    }
    total
}

/// A stop's punctuality: `Some(true)` when it was reached by its window's end, `Some(false)`
/// when after it or still pending past it at `now_ms`, `None` without a window end or while it
/// can still make it.
pub fn on_time(stop: &StopRecord, now_ms: i64) -> Option<bool> {
    let end = stop.window_end?;
    match stop.arrived_at {
        Some(at) => Some(at <= end),
        None if stop.status == StopStatus::Pending && now_ms > end => Some(false),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts_ms: i64, kind: EventKind) -> Event {
        Event {
            id: None,
            fleet: "f".into(),
            driver_id: "D".into(),
            ts_ms,
            position: Some((41.0, -8.0)),
            kind,
        }
    }

    #[test]
    fn distance_skips_jumps_and_times_are_clipped_to_the_span() {
        let track = [
            Fix::at(0, 41.0, -8.0),
            Fix::at(10_000, 41.001, -8.0), // 111 m
            Fix::at(11_000, 42.0, -8.0),   // a jump
            Fix::at(20_000, 41.002, -8.0),
        ];
        let d = distance_m(&track);
        assert!((d - 111.2).abs() < 1.0, "{d}");
        let segs = [
            StopSegment {
                from_ms: 20_000,
                to_ms: Some(200_000),
                lat: 41.0,
                lon: -8.0,
                unplanned: true,
            },
            StopSegment {
                from_ms: 250_000,
                to_ms: None,
                lat: 41.0,
                lon: -8.0,
                unplanned: false,
            },
        ];
        assert_eq!(stopped_ms(&segs, 0, 400_000), 180_000 + 150_000);
        assert_eq!(stopped_ms(&segs, 100_000, 300_000), 100_000 + 50_000);
        let events = [
            event(0, EventKind::DriverOnline),
            event(350_000, EventKind::DriverOffline),
        ];
        assert_eq!(online_ms(&events, 0, 400_000), 350_000);
    }
}
