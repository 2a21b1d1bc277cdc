//! Arrival detection scored on the Amazon delivery dataset ("GPS-ordered Activity Labels",
//! Eftelioglu et al., IWCTS 2022, CC-BY-4.0): 805 six-minute chunks, ~5 s sampling, every fix
//! labelled `Driving` or `OnFoot` (stopped at a delivery, in or out of the vehicle).
//!
//! Each chunk is one driver with one trip. Coordinates are metres east/north of an unknown point
//! and are projected onto a chosen WGS84 origin (equirectangular, exact to < 1 mm over a few km).
//! - **Positive stops**: where each `OnFoot` stretch of ≥ 60 s begins (stretches already under way
//!   when the chunk starts are skipped: their start is unknown). They must be checked in.
//! - **Negative stops**: along the `Driving` path, one every ≥ 100 m, farther than the exit ring
//!   plus 50 m (200 m at the default 100 m radius) from every `OnFoot` fix: places the vehicle
//!   only drove past, crawled by or waited at a light. They must not be checked in.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use chrono::NaiveDateTime;

use crate::geo::arrival::{ArrivalConfig, ArrivalTracker, Decision, Geofence, StopPhase};
use crate::geo::distance::EARTH_RADIUS_M;
use crate::model::Fix;
use crate::model::StopKey;

/// Shortest `OnFoot` stretch that makes a positive stop, ms.
pub const MIN_ON_FOOT_MS: i64 = 60_000;
/// Geofence radius of the evaluation stops, m (the API default).
pub const RADIUS_M: f64 = 100.0;
/// Default projection origin (Seattle): any point works, the data has no absolute location.
pub const DEFAULT_ORIGIN: (f64, f64) = (47.6062, -122.3321);
/// Where the data lives relative to the project root.
pub const DATASET_DIR: &str = "../shared/data/amazon_delivery_activity_labels/data_anon";

/// One labelled fix: time ms since the chunk's arbitrary epoch, metres east (x) and north (y).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelledFix {
    pub t_ms: i64,
    pub x: f64,
    pub y: f64,
    pub on_foot: bool,
}

/// One chunk (one driver, ~6 minutes).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub name: String,
    pub fixes: Vec<LabelledFix>,
}

/// Projects metres east/north of `origin` (lat, lon degrees) to WGS84 (lat, lon).
pub fn project(origin: (f64, f64), x_m: f64, y_m: f64) -> (f64, f64) {
    let lat = origin.0 + (y_m / EARTH_RADIUS_M).to_degrees();
    let lon = origin.1 + (x_m / (EARTH_RADIUS_M * origin.0.to_radians().cos())).to_degrees();
    (lat, lon)
}

impl Chunk {
    /// The chunk's fixes as recorded fixes at `origin`; time keeps the chunk's own epoch
    /// (1964-01-12), which replay shifts to now.
    pub fn raw_fixes(&self, origin: (f64, f64)) -> Vec<Fix> {
        self.fixes
            .iter()
            .map(|f| {
                let (lat, lon) = project(origin, f.x, f.y);
                Fix::at(f.t_ms, lat, lon)
            })
            .collect()
    }

    /// Positive and negative stop positions, see the module docs.
    pub fn eval_stops(&self) -> EvalStops {
        let mut positives = Vec::new();
        let mut positive_starts_ms = Vec::new();
        let mut i = 0;
        while i < self.fixes.len() {
            let mut j = i;
            while j + 1 < self.fixes.len() && self.fixes[j + 1].on_foot == self.fixes[i].on_foot {
                j += 1;
            }
            let f = &self.fixes[i];
            if f.on_foot && i > 0 && self.fixes[j].t_ms - f.t_ms >= MIN_ON_FOOT_MS {
                positives.push((f.x, f.y));
                positive_starts_ms.push(f.t_ms);
            }
            i = j + 1;
        }
        let keep_off = RADIUS_M * ArrivalConfig::default().exit_radius_factor + 50.0;
        let on_foot: Vec<&LabelledFix> = self.fixes.iter().filter(|f| f.on_foot).collect();
        let mut negatives: Vec<(f64, f64)> = Vec::new();
        for f in self.fixes.iter().filter(|f| !f.on_foot) {
            let far = on_foot
                .iter()
                .all(|o| (o.x - f.x).hypot(o.y - f.y) > keep_off);
            let spaced = negatives
                .last()
                .is_none_or(|(x, y)| (x - f.x).hypot(y - f.y) >= 100.0);
            if far && spaced {
                negatives.push((f.x, f.y));
            }
        }
        EvalStops {
            positives,
            positive_starts_ms,
            negatives,
        }
    }
}

/// Stop positions of one chunk, (x, y) metres east/north.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalStops {
    /// Where `OnFoot` stretches of ≥ 60 s begin: must check in.
    pub positives: Vec<(f64, f64)>,
    /// When each positive stop's `OnFoot` stretch begins (chunk time, ms): detection delay is
    /// measured from it.
    pub positive_starts_ms: Vec<i64>,
    /// Only driven past: must not check in.
    pub negatives: Vec<(f64, f64)>,
}

/// Reads one chunk file (`timestamp,x,y,groundtruth`).
pub fn read_chunk(path: &Path) -> anyhow::Result<Chunk> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut fixes = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.with_context(|| format!("{} row {}", path.display(), i + 2))?;
        let bad = || {
            anyhow!(
                "{} row {}: expected timestamp,x,y,groundtruth",
                path.display(),
                i + 2
            )
        };
        let ts = rec.get(0).ok_or_else(bad)?;
        // Nanosecond fractions; chrono's %.f takes up to 9 digits.
        let t = NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S%.f").map_err(|_| bad())?;
        fixes.push(LabelledFix {
            t_ms: t.and_utc().timestamp_millis(),
            x: rec.get(1).ok_or_else(bad)?.parse().map_err(|_| bad())?,
            y: rec.get(2).ok_or_else(bad)?.parse().map_err(|_| bad())?,
            on_foot: rec.get(3).ok_or_else(bad)? == "OnFoot",
        });
    }
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("chunk")
        .to_string();
    Ok(Chunk { name, fixes })
}

/// The chunk files of the dataset directory, sorted by name. Fails clearly when it is absent.
pub fn chunk_paths(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "Amazon dataset not found at {} (expected ../shared/data next to the project)",
            dir.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        anyhow::bail!("no trajectory_*.csv in {}", dir.display());
    }
    Ok(paths)
}

/// Counts of one evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Score {
    pub true_positives: usize,
    pub false_negatives: usize,
    pub false_positives: usize,
    pub true_negatives: usize,
    /// Check-ins beyond the first for the same stop (must stay 0).
    pub duplicates: usize,
}

impl Score {
    pub fn precision(&self) -> f64 {
        let called = self.true_positives + self.false_positives;
        if called == 0 {
            1.0
        } else {
            self.true_positives as f64 / called as f64
        }
    }

    pub fn recall(&self) -> f64 {
        let real = self.true_positives + self.false_negatives;
        if real == 0 {
            1.0
        } else {
            self.true_positives as f64 / real as f64
        }
    }

    pub fn add(&mut self, o: &Score) {
        self.true_positives += o.true_positives;
        self.false_negatives += o.false_negatives;
        self.false_positives += o.false_positives;
        self.true_negatives += o.true_negatives;
        self.duplicates += o.duplicates;
    }
}

/// The stops of one chunk as geofences: positives are `pos-N`, negatives `neg-N`.
pub fn geofences(chunk: &Chunk, origin: (f64, f64)) -> Vec<Geofence> {
    let EvalStops {
        positives: pos,
        negatives: neg,
        ..
    } = chunk.eval_stops();
    let trip: std::sync::Arc<str> = chunk.name.as_str().into();
    let mk = |prefix: &str, i: usize, (x, y): (f64, f64)| {
        let (lat, lon) = project(origin, x, y);
        Geofence {
            key: StopKey {
                trip_id: trip.clone(),
                stop_id: format!("{prefix}-{i}").into(),
            },
            lat,
            lon,
            radius_m: RADIUS_M,
        }
    };
    pos.iter()
        .enumerate()
        .map(|(i, p)| mk("pos", i, *p))
        .chain(neg.iter().enumerate().map(|(i, p)| mk("neg", i, *p)))
        .collect()
}

/// Scores a set of checked-in stop ids against a chunk's stops.
pub fn score(fences: &[Geofence], checked_in: &[String]) -> Score {
    let mut s = Score::default();
    for f in fences {
        let n = checked_in.iter().filter(|c| **c == *f.key.stop_id).count();
        s.duplicates += n.saturating_sub(1);
        match (f.key.stop_id.starts_with("pos"), n > 0) {
            (true, true) => s.true_positives += 1,
            (true, false) => s.false_negatives += 1,
            (false, true) => s.false_positives += 1,
            (false, false) => s.true_negatives += 1,
        }
    }
    s
}

/// What one device profile scored over a set of chunks.
#[derive(Debug, Clone, Default)]
pub struct ProfileResult {
    pub score: Score,
    /// For each stop checked in correctly: from the start of its `OnFoot` stretch to the fix
    /// that confirmed the check-in (device time), ms.
    pub delays_ms: Vec<i64>,
    /// Fixes the profile sent, over all chunks.
    pub fixes_sent: usize,
    /// Check-ins by the evidence that decided them (`CheckinEvidence::kind`): (at a real stop,
    /// at a negative stretch), so a rule's false check-ins can be told from its true ones.
    pub by_evidence: std::collections::BTreeMap<&'static str, (usize, usize)>,
}

impl ProfileResult {
    /// The median detection delay, seconds (`None` without a true positive).
    pub fn median_delay_s(&self) -> Option<f64> {
        let mut d = self.delays_ms.clone();
        d.sort_unstable();
        (!d.is_empty()).then(|| d[d.len() / 2] as f64 / 1000.0)
    }
}

/// Runs the detector over what `profile`'s app would have sent of each chunk, and scores it.
pub fn evaluate_profile(
    paths: &[PathBuf],
    cfg: &ArrivalConfig,
    origin: (f64, f64),
    profile: super::profiles::Profile,
) -> anyhow::Result<ProfileResult> {
    let mut result = ProfileResult::default();
    for p in paths {
        let chunk = read_chunk(p)?;
        let fences = geofences(&chunk, origin);
        let starts = chunk.eval_stops().positive_starts_ms;
        let mut tracker = ArrivalTracker::new();
        for f in &fences {
            tracker.add_stop(f.clone(), StopPhase::Pending, cfg);
        }
        let sent = profile.sample(&chunk.raw_fixes(origin));
        result.fixes_sent += sent.len();
        let mut checked_in = Vec::new();
        for fix in &sent {
            for d in tracker.observe(fix, cfg) {
                if let Decision::CheckIn {
                    key,
                    confirmed_at_ms,
                    evidence,
                    ..
                } = d
                {
                    let positive = key.stop_id.starts_with("pos-");
                    let tally = result.by_evidence.entry(evidence.kind()).or_default();
                    if positive {
                        tally.0 += 1;
                    } else {
                        tally.1 += 1;
                    }
                    if let Some(i) = key
                        .stop_id
                        .strip_prefix("pos-")
                        .and_then(|i| i.parse::<usize>().ok())
                    {
                        result.delays_ms.push(confirmed_at_ms - starts[i]);
                    }
                    checked_in.push(key.stop_id.to_string());
                }
            }
        }
        result.score.add(&score(&fences, &checked_in));
    }
    Ok(result)
}

/// Scores every chunk file in `paths`, every recorded fix sent.
pub fn evaluate(
    paths: &[PathBuf],
    cfg: &ArrivalConfig,
    origin: (f64, f64),
) -> anyhow::Result<Score> {
    Ok(evaluate_profile(paths, cfg, origin, super::profiles::Profile::Every)?.score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_round_trip_is_metric() {
        let (lat, lon) = project(DEFAULT_ORIGIN, 300.0, 400.0);
        let d = crate::geo::haversine_m(DEFAULT_ORIGIN.0, DEFAULT_ORIGIN.1, lat, lon);
        assert!((d - 500.0).abs() < 0.5, "{d}");
    }
}
