//! Automatic stops scored on the Amazon delivery labels: every `OnFoot` stretch of ≥ 60 s is a
//! real stop (the courier got out), except one already under way when the chunk starts.
//!
//! A detected stop (`Movement::Stopped`) is a true positive when its start lies within a real
//! stop's stretch, or up to 60 s before it (the van stops before the courier is out); each real
//! stop matches at most one detection. Other detections are false positives, except those inside
//! a shorter `OnFoot` stretch (a stop under a minute: neither required nor wrong), counted apart.

use std::path::PathBuf;

use super::amazon::{read_chunk, Score, MIN_ON_FOOT_MS};
use crate::geo::arrival::ArrivalConfig;
use crate::geo::stops::{Movement, StopDetector};

/// How early a detected stop may begin before its `OnFoot` stretch, ms.
pub const EARLY_MS: i64 = 60_000;

/// Counts of one evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopScore {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    /// Detections inside an `OnFoot` stretch shorter than 60 s (not counted either way).
    pub short_stops: usize,
    /// False negatives whose stretch began while the detector was still in an earlier stop
    /// (two deliveries from one parked van: one stop for both).
    pub merged: usize,
    /// Time stopped by the detector (`Stopped` to `Moving`, or the chunk's end), ms: what a
    /// report calls stopped time.
    pub stopped_ms: i64,
    /// Time labelled `OnFoot`, ms (every stretch, from its first fix to its last).
    pub on_foot_ms: i64,
}

impl StopScore {
    /// The counts as the arrival evaluation's score (no negatives here).
    fn score(&self) -> Score {
        Score {
            true_positives: self.true_positives,
            false_positives: self.false_positives,
            false_negatives: self.false_negatives,
            ..Score::default()
        }
    }

    pub fn precision(&self) -> f64 {
        self.score().precision()
    }

    pub fn recall(&self) -> f64 {
        self.score().recall()
    }
}

/// Runs the detector over every chunk (projected at `origin`) and scores it.
pub fn evaluate(
    paths: &[PathBuf],
    cfg: &ArrivalConfig,
    origin: (f64, f64),
) -> anyhow::Result<StopScore> {
    let mut s = StopScore::default();
    for path in paths {
        let chunk = read_chunk(path)?;
        // `OnFoot` stretches (start, end, long enough, under way at the start).
        let mut stretches = Vec::new();
        let mut i = 0;
        while i < chunk.fixes.len() {
            let mut j = i;
            while j + 1 < chunk.fixes.len() && chunk.fixes[j + 1].on_foot == chunk.fixes[i].on_foot
            {
                j += 1;
            }
            if chunk.fixes[i].on_foot {
                let (a, b) = (chunk.fixes[i].t_ms, chunk.fixes[j].t_ms);
                stretches.push((a, b, b - a >= MIN_ON_FOOT_MS, i == 0));
            }
            i = j + 1;
        }
        s.on_foot_ms += stretches.iter().map(|(a, b, ..)| b - a).sum::<i64>();
        let mut detector = StopDetector::default();
        let mut matched = vec![false; stretches.len()];
        let mut began_stopped = vec![false; stretches.len()];
        let fixes = chunk.raw_fixes(origin);
        let end_ms = fixes.last().map_or(0, |f| f.ts_ms);
        let mut stopped_since: Option<i64> = None;
        for fix in fixes {
            if let Some(k) = stretches.iter().position(|(a, ..)| *a == fix.ts_ms) {
                began_stopped[k] = detector.stopped();
            }
            let since_ms = match detector.observe(&fix, cfg) {
                Some(Movement::Stopped { since_ms, .. }) => {
                    stopped_since = Some(since_ms);
                    since_ms
                }
                Some(Movement::Moving { at_ms, .. }) => {
                    if let Some(since) = stopped_since.take() {
                        s.stopped_ms += at_ms - since;
                    }
                    continue;
                }
                None => continue,
            };
            let hit = stretches
                .iter()
                .position(|(a, b, _, _)| since_ms >= a - EARLY_MS && since_ms <= *b);
            match hit {
                Some(k) if stretches[k].2 && !stretches[k].3 && !matched[k] => {
                    matched[k] = true;
                    s.true_positives += 1;
                }
                // A stop under way at the chunk's start, or the same stop again: not scored.
                Some(k) if stretches[k].3 || matched[k] => {}
                Some(_) => s.short_stops += 1,
                None => s.false_positives += 1,
            }
        }
        if let Some(since) = stopped_since {
            s.stopped_ms += end_ms - since;
        }
        for (k, (_, _, long, started)) in stretches.iter().enumerate() {
            if *long && !*started && !matched[k] {
                s.false_negatives += 1;
                if began_stopped[k] {
                    s.merged += 1;
                }
            }
        }
    }
    Ok(s)
}
