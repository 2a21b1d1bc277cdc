//! Device behaviours: what a phone app would have sent of a recorded trace. The Amazon chunks
//! hold one fix every ~5 s; each profile keeps the fixes its app would have reported, with the
//! fields it would have filled, so that arrival detection is measured on what real clients send
//! and not only on a phone that reports every fix (`trackhub eval-arrival --profile NAME`).
//!
//! Models, each from the app's source and defaults:
//! - `every`: every recorded fix (our own app in the foreground).
//! - `every-15s`, `every-30s`, `every-60s`: a battery-saving app of our socket protocol sending
//!   the newest fix once per period.
//! - `traccar9`: Traccar Client 9 at its defaults (`lib/preferences.dart`: accuracy `medium`,
//!   `distance` 75 m, `fastest_interval` 30 s, stop detection on; transistorsoft SDK:
//!   `disableElasticity`, `stopTimeout` 5 min, `stationaryRadius` 25 m). A fix when the phone has
//!   moved 75 m from the last one it sent, at most one per 30 s; medium accuracy reports no GPS
//!   speed. Still for 5 min within 25 m: one `motionchange` fix with `is_moving: false`, then
//!   nothing until it moves 25 m, then a `motionchange` fix with `is_moving: true`.
//! - `traccar10`: Traccar Client 10 (traccar-client-sdk): 75 m or 300 s, whichever comes first;
//!   still for 60 s within 25 m: one fresh fix, then paused (heartbeats carry no position) until
//!   it moves 25 m. It sends no motion flag.
//! - `osmand`: OsmAnd live tracking at its default interval (`LIVE_MONITORING_INTERVAL` 5,000 ms),
//!   with its accuracy.

use anyhow::bail;

use crate::geo::haversine_m;
use crate::model::{Fix, Motion};

/// Every profile name `--profile` takes.
pub const PROFILES: [&str; 7] = [
    "every",
    "every-15s",
    "every-30s",
    "every-60s",
    "traccar9",
    "traccar10",
    "osmand",
];

/// A device behaviour (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Profile {
    Every,
    Period { ms: i64 },
    Traccar9,
    Traccar10,
    OsmAnd,
}

impl Profile {
    /// The profile called `name` (one of [`PROFILES`]).
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "every" => Self::Every,
            "every-15s" => Self::Period { ms: 15_000 },
            "every-30s" => Self::Period { ms: 30_000 },
            "every-60s" => Self::Period { ms: 60_000 },
            "traccar9" => Self::Traccar9,
            "traccar10" => Self::Traccar10,
            "osmand" => Self::OsmAnd,
            other => bail!("unknown profile `{other}`; known: {}", PROFILES.join(", ")),
        })
    }

    /// What the app would have sent of `fixes` (oldest first, ~5 s apart).
    pub fn sample(self, fixes: &[Fix]) -> Vec<Fix> {
        match self {
            Self::Every => fixes.to_vec(),
            Self::Period { ms } => every(fixes, ms),
            Self::OsmAnd => every(fixes, 5_000),
            Self::Traccar9 => distance_filtered(fixes, &TRACCAR9),
            Self::Traccar10 => distance_filtered(fixes, &TRACCAR10),
        }
    }
}

/// The newest fix once per `period_ms`: the first fix, then the first one at least a period
/// after the last sent.
fn every(fixes: &[Fix], period_ms: i64) -> Vec<Fix> {
    let mut out: Vec<Fix> = Vec::new();
    for f in fixes {
        if out.last().is_none_or(|l| f.ts_ms - l.ts_ms >= period_ms) {
            out.push(*f);
        }
    }
    out
}

/// A distance-filtered, stop-detecting client.
struct Filtered {
    /// Moved this far from the last sent fix: send, m.
    distance_m: f64,
    /// Never two fixes closer in time, ms.
    fastest_ms: i64,
    /// This long since the last sent fix: send anyway, ms (`None`: never).
    interval_ms: Option<i64>,
    /// Still (within `stationary_radius_m`) this long: the stationary fix, then a pause, ms.
    stop_timeout_ms: i64,
    stationary_radius_m: f64,
    /// Whether fixes carry `is_moving` (motion) and GPS speed.
    motion_flags: bool,
}

const TRACCAR9: Filtered = Filtered {
    distance_m: 75.0,
    fastest_ms: 30_000,
    interval_ms: None,
    stop_timeout_ms: 300_000,
    stationary_radius_m: 25.0,
    motion_flags: true,
};

const TRACCAR10: Filtered = Filtered {
    distance_m: 75.0,
    fastest_ms: 0,
    interval_ms: Some(300_000),
    stop_timeout_ms: 60_000,
    stationary_radius_m: 25.0,
    motion_flags: false,
};

fn distance_filtered(fixes: &[Fix], c: &Filtered) -> Vec<Fix> {
    let mut out: Vec<Fix> = Vec::new();
    let strip = |f: &Fix, motion: Option<Motion>| Fix {
        // Medium accuracy (Traccar 9) has no GPS speed; neither client reports what we lack.
        speed_mps: None,
        motion: if c.motion_flags { motion } else { None },
        ..*f
    };
    // Where the phone became still, and whether it has paused.
    let mut anchor: Option<Fix> = None;
    let mut paused = false;
    for f in fixes {
        let moved_from_anchor = anchor
            .map(|a| haversine_m(a.lat, a.lon, f.lat, f.lon))
            .unwrap_or(f64::INFINITY);
        if moved_from_anchor > c.stationary_radius_m {
            anchor = Some(*f);
            if paused {
                // Motion again: the SDK's motionchange fix, where the phone is.
                paused = false;
                out.push(strip(f, Some(Motion::Moving)));
                continue;
            }
        } else if !paused && f.ts_ms - anchor.map_or(f.ts_ms, |a| a.ts_ms) >= c.stop_timeout_ms {
            paused = true;
            out.push(strip(f, Some(Motion::Still)));
            continue;
        }
        if paused {
            continue;
        }
        let Some(last) = out.last() else {
            out.push(strip(f, Some(Motion::Moving)));
            continue;
        };
        let since = f.ts_ms - last.ts_ms;
        let moved = haversine_m(last.lat, last.lon, f.lat, f.lon);
        let due = c.interval_ms.is_some_and(|i| since >= i);
        if since >= c.fastest_ms && (moved >= c.distance_m || due) {
            out.push(strip(f, Some(Motion::Moving)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 fix / 5 s: 100 s driving north at 10 m/s, 400 s parked, 100 s driving on.
    fn drive_park_drive() -> Vec<Fix> {
        let m = 1.0 / 111_195.0;
        (0..120)
            .map(|i| {
                let t = i * 5;
                let north = if t < 100 {
                    t as f64 * 10.0
                } else if t < 500 {
                    1_000.0
                } else {
                    1_000.0 + (t - 500) as f64 * 10.0
                };
                Fix::at(t * 1000, 47.0 + north * m, -122.0)
            })
            .collect()
    }

    #[test]
    fn profiles_keep_what_their_app_would_send() {
        let fixes = drive_park_drive();
        assert_eq!(Profile::Every.sample(&fixes).len(), 120);
        assert_eq!(
            Profile::parse("every-30s").unwrap().sample(&fixes).len(),
            20
        );
        // Traccar 9: every 75 m but at most one per 30 s while driving, then one still fix
        // after 5 min parked, then a moving fix when it leaves.
        let t9 = Profile::Traccar9.sample(&fixes);
        let still: Vec<_> = t9
            .iter()
            .filter(|f| f.motion == Some(Motion::Still))
            .collect();
        assert_eq!(still.len(), 1, "{t9:?}");
        assert_eq!(still[0].ts_ms, 400_000, "5 min after parking at 100 s");
        assert!(t9.windows(2).all(|w| w[1].ts_ms - w[0].ts_ms >= 5_000));
        assert!(t9.iter().all(|f| f.speed_mps.is_none()));
        // Traccar 10: one fresh fix 60 s into the stop, then silence until it moves.
        let t10 = Profile::Traccar10.sample(&fixes);
        let parked: Vec<_> = t10
            .iter()
            .filter(|f| (100_001..500_000).contains(&f.ts_ms))
            .collect();
        assert_eq!(parked.len(), 1, "{t10:?}");
        assert_eq!(parked[0].ts_ms, 160_000);
        assert!(t10.iter().all(|f| f.motion.is_none()));
        assert!(Profile::parse("pigeon").is_err());
    }
}
