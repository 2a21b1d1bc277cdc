//! Arrival detection: deciding from a stream of fixes that a driver has really stopped at a stop.
//!
//! A driver is **checked in** at a stop when, on the fixes' own timestamps, they have stayed
//! *stationary* inside the stop's geofence for a *dwell* time:
//!
//! - *inside*: great-circle distance to the stop ≤ the stop's radius (default 100 m);
//! - *stationary*: every fix of the dwell lies within `stationary_radius_m` of the running
//!   centroid of the dwell's fixes, and no fix reports a speed above `max_dwell_speed_mps`;
//! - *dwell*: at least `min_fixes` fixes spanning at least `dwell_ms`; a sparse phone's span
//!   (mean interval ≥ `sparse_interval_ms`) is credited one mean interval, the stop's unseen
//!   start and end.
//!
//! Fix density is one kind of evidence, not the only one (issue 15): real phones report rarely
//! or go quiet when still. A stop is also checked in when
//! - *the phone went quiet there*: after a fix inside the zone it sent nothing for
//!   `quiet_gap_ms` (90 s) and reappeared no farther than `quiet_max_speed_mps` (1 m/s) allows:
//!   what a distance-filtered app (Traccar Client, 75 m) does while parked; a time-sampled app
//!   has no such gaps, and one that drove on reports within 75 m, ~30 s at city speed;
//! - *the phone says it is still* (`Fix::motion`, e.g. Traccar Client's `is_moving: false`)
//!   inside the zone, once a dwell has begun there.
//!
//! `trackhub eval-arrival --profile NAME` measures each against what real apps send
//! (`eval::profiles`; BENCHMARKS.md has the table).
//!
//! One outlier (a jittery fix outside the zone or away from the centroid) is tolerated without
//! restarting the dwell; two in a row restart it. Fixes whose reported accuracy is worse than
//! `max_accuracy_m` are ignored: they neither start, extend nor break a dwell.
//!
//! After a check-in, the driver **departs** once `exit_confirm_fixes` consecutive fixes lie
//! beyond the exit ring (`radius × exit_radius_factor`): the wider ring is the hysteresis that
//! keeps jitter around the edge from flapping arrive/depart. A stop is checked in at most once
//! and departed at most once; the database enforces the same per (trip, stop).
//!
//! Defaults were chosen on the Amazon delivery dataset (805 six-minute chunks with per-fix
//! `Driving`/`OnFoot` ground truth, ~5 s sampling, see `eval::amazon`):
//! - parked stops (`OnFoot` ≥ 60 s) wander a median 21 m, p95 45 m, p99 80 m from where the
//!   stop began (the courier walks with the phone): hence a 50 m stationary radius;
//! - stationary runs *inside* `Driving` (traffic lights, queues) last p90 20 s, p99 65 s, and a
//!   few 60-130 s. A 60 s dwell checked in at 23 of them; 75 s at 14; 90 s at 7 but lost 7 % of
//!   real stops. The vehicle is already stopped before the courier gets out and stays stopped
//!   after, so 75 s still catches 60 s `OnFoot` stretches: measured precision 0.984, recall 0.993
//!   (the dwell rule alone).
//! - `max_dwell_speed_mps` 2.5 m/s (9 km/h) is above brisk walking (1.4-1.8 m/s), below urban
//!   driving; device Doppler speed is accurate to a few tenths of m/s.
//! - 100 m radius: geocoded addresses sit a median 48 m from where couriers really are (LaDe).
//! - with the evidence model, all 805 chunks: every fix 0.977 / 0.995, one fix per 30 s 0.985 /
//!   0.985, Traccar Client 9 defaults 0.950 / 0.666, Traccar Client 10 0.983 / 0.791.

use std::collections::{HashMap, HashSet};

use rstar::{primitives::GeomWithData, primitives::Rectangle, RTree};

use super::{haversine_m, BBox};
use crate::model::{CheckinEvidence, Fix, Motion, Sampling, StopKey};

/// Detection parameters. See the module docs for where each default comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrivalConfig {
    /// Minimum time stationary inside the geofence before a check-in, ms (default 75,000).
    pub dwell_ms: i64,
    /// Radius around the dwell's running centroid that still counts as stationary, m (default 50).
    pub stationary_radius_m: f64,
    /// Minimum number of fixes in a dwell (default 3), so one or two stray fixes never suffice.
    pub min_fixes: u32,
    /// Fixes reporting a worse accuracy than this are ignored by detection, m (default 50).
    pub max_accuracy_m: f64,
    /// A fix reporting a higher speed is moving, never dwelling, m/s (default 2.5).
    pub max_dwell_speed_mps: f64,
    /// Consecutive outlier fixes tolerated inside a dwell (default 1).
    pub tolerated_outliers: u32,
    /// Exit ring = radius × this factor (default 1.5: a 100 m stop departs beyond 150 m).
    pub exit_radius_factor: f64,
    /// Consecutive fixes beyond the exit ring that confirm a departure (default 2).
    pub exit_confirm_fixes: u32,
    /// Quiet-phone evidence: after a fix inside the geofence, a phone that sends nothing for at
    /// least this long and then reports from near where it was (below `quiet_max_speed_mps`
    /// on average) has been stationary there, ms (default 90,000). Distance-filtered apps
    /// (Traccar Client: 75 m) send nothing while parked; time-sampled ones have no such gaps.
    /// The gap is measured from the dwell's newest fix, across the stray fixes the dwell
    /// tolerates (`tolerated_outliers`): a courier who parks, walks 80 m to a door (one
    /// distance-filtered report) and comes back was there all along (eval-arrival, Traccar
    /// Client 9: recall 0.57 without the tolerance, 0.67 with it, for 27 more false check-ins
    /// of 3,658 negative stretches).
    pub quiet_gap_ms: i64,
    /// Highest average speed over a quiet gap that still counts as stationary, m/s (default 1.0:
    /// a distance-filtered phone that drove on would have reported within 75 m, ~30 s at city
    /// speed).
    pub quiet_max_speed_mps: f64,
    /// A dwell whose fixes are this far apart on average comes from a sparse phone: its span
    /// is credited one mean interval (the stop's unseen start and end), ms (default 10,000).
    pub sparse_interval_ms: i64,
}

impl Default for ArrivalConfig {
    fn default() -> Self {
        Self {
            dwell_ms: 75_000,
            stationary_radius_m: 50.0,
            min_fixes: 3,
            max_accuracy_m: 50.0,
            max_dwell_speed_mps: 2.5,
            tolerated_outliers: 1,
            exit_radius_factor: 1.5,
            exit_confirm_fixes: 2,
            quiet_gap_ms: 90_000,
            quiet_max_speed_mps: 1.0,
            sparse_interval_ms: 10_000,
        }
    }
}

/// The zone around a stop: centre (degrees WGS84) and radius (m).
#[derive(Debug, Clone, PartialEq)]
pub struct Geofence {
    pub key: StopKey,
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
}

/// Where a stop stands for its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPhase {
    /// Not yet checked in.
    Pending,
    /// Checked in; the dwell began at `arrived_at_ms` (device time, unix ms).
    Arrived { arrived_at_ms: i64 },
    /// Checked in and left again.
    Departed,
}

/// What a fix caused.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The driver has arrived: dwell began at `arrived_at_ms`, confirmed by the fix at
    /// `confirmed_at_ms` (both device time, unix ms UTC).
    CheckIn {
        key: StopKey,
        arrived_at_ms: i64,
        confirmed_at_ms: i64,
        /// Which rule decided it, with its figures.
        evidence: CheckinEvidence,
    },
    /// The driver left the exit ring after a check-in; `departed_at_ms` is the first fix outside.
    Departure { key: StopKey, departed_at_ms: i64 },
}

/// Running sums of a dwell in progress (no fixes are stored: O(1) memory per stop).
#[derive(Debug, Clone, Copy, Default)]
struct Dwell {
    first_ts_ms: i64,
    count: u32,
    sum_lat: f64,
    sum_lon: f64,
    /// The newest fix of the dwell (quiet-gap evidence is measured from it).
    last: Option<Fix>,
}

impl Dwell {
    fn push(&mut self, fix: &Fix) {
        if self.count == 0 {
            self.first_ts_ms = fix.ts_ms;
        }
        self.last = Some(*fix);
        self.count += 1;
        self.sum_lat += fix.lat;
        self.sum_lon += fix.lon;
    }

    fn centroid(&self) -> (f64, f64) {
        (
            self.sum_lat / self.count as f64,
            self.sum_lon / self.count as f64,
        )
    }
}

/// A fix that did not fit the dwell in progress, kept in case the dwell restarts from it.
#[derive(Debug, Clone, Copy)]
struct Outlier {
    fix: Fix,
    inside: bool,
}

/// One stop's state machine: the evidence model itself, shared by planned stops (below) and
/// automatic stops anywhere (`super::stops`).
#[derive(Debug, Clone)]
pub(super) struct StopTrack {
    fence: Geofence,
    phase: StopPhase,
    dwell: Dwell,
    /// Consecutive outliers inside a dwell, and the latest of them.
    strikes: u32,
    last_outlier: Option<Outlier>,
    /// Consecutive fixes beyond the exit ring after a check-in, and when the first one was.
    outside: u32,
    first_outside_ms: i64,
}

impl StopTrack {
    /// A stop in `phase` with nothing observed yet.
    pub(super) fn new(fence: Geofence, phase: StopPhase) -> Self {
        Self {
            fence,
            phase,
            dwell: Dwell::default(),
            strikes: 0,
            last_outlier: None,
            outside: 0,
            first_outside_ms: 0,
        }
    }

    /// Where the stop is and its phase.
    pub(super) fn fence(&self) -> &Geofence {
        &self.fence
    }

    pub(super) fn phase(&self) -> StopPhase {
        self.phase
    }

    /// A dwell is in progress (pending, with fixes inside).
    pub(super) fn dwelling(&self) -> bool {
        self.phase == StopPhase::Pending && self.dwell.count > 0
    }

    /// True while this stop needs to see fixes even outside its geofence's envelope.
    fn engaged(&self) -> bool {
        matches!(self.phase, StopPhase::Arrived { .. })
            || (self.phase == StopPhase::Pending && self.dwell.count > 0)
    }

    fn exit_radius_m(&self, cfg: &ArrivalConfig) -> f64 {
        self.fence.radius_m * cfg.exit_radius_factor.max(1.0)
    }

    pub(super) fn observe(&mut self, fix: &Fix, cfg: &ArrivalConfig) -> Option<Decision> {
        let d = haversine_m(fix.lat, fix.lon, self.fence.lat, self.fence.lon);
        match self.phase {
            StopPhase::Pending => self.observe_pending(fix, d, cfg),
            // A departure follows the arrival in device time: fixes from before it (a phone
            // resending its buffer after a hub restart) say nothing about leaving.
            StopPhase::Arrived { arrived_at_ms } if fix.ts_ms <= arrived_at_ms => None,
            StopPhase::Arrived { .. } => self.observe_arrived(fix, d, cfg),
            StopPhase::Departed => None,
        }
    }

    fn observe_pending(&mut self, fix: &Fix, d: f64, cfg: &ArrivalConfig) -> Option<Decision> {
        let moving = fix.speed_mps.is_some_and(|s| s > cfg.max_dwell_speed_mps);
        let inside = d <= self.fence.radius_m && !moving;
        if self.dwell.count == 0 {
            self.strikes = 0;
            self.last_outlier = None;
            if inside {
                self.dwell.push(fix);
            }
            return None;
        }
        // Evidence beyond fix density: the device says it is still, inside the zone; or it went
        // quiet after a fix inside and reappears near it (see `quiet_gap_ms`: at most
        // `tolerated_outliers` stray fixes in between, or the dwell would have restarted).
        let quiet = self.dwell.last.and_then(|last| {
            let gap_ms = fix.ts_ms - last.ts_ms;
            let moved_m = haversine_m(last.lat, last.lon, fix.lat, fix.lon);
            (gap_ms >= cfg.quiet_gap_ms
                && moved_m <= cfg.quiet_max_speed_mps * gap_ms as f64 / 1000.0)
                .then_some(CheckinEvidence::QuietGap { gap_ms, moved_m })
        });
        if let Some(evidence) = quiet {
            return Some(self.check_in(fix.ts_ms, evidence));
        }
        if inside && fix.motion == Some(Motion::Still) {
            let fixes = self.dwell.count + 1;
            return Some(self.check_in(fix.ts_ms, CheckinEvidence::DeviceStill { fixes }));
        }
        let (clat, clon) = self.dwell.centroid();
        let stationary = haversine_m(fix.lat, fix.lon, clat, clon) <= cfg.stationary_radius_m;
        if !(inside && stationary) {
            self.strikes += 1;
            if self.strikes > cfg.tolerated_outliers {
                // Restart. When the previous outlier was inside too and this fix sits next to it,
                // the driver stopped there: the new dwell starts at that earlier fix.
                self.dwell = Dwell::default();
                self.strikes = 0;
                if let Some(prev) = self.last_outlier.filter(|p| {
                    inside
                        && p.inside
                        && haversine_m(p.fix.lat, p.fix.lon, fix.lat, fix.lon)
                            <= cfg.stationary_radius_m
                }) {
                    self.dwell.push(&prev.fix);
                }
                if inside {
                    self.dwell.push(fix);
                }
                self.last_outlier = None;
            } else {
                self.last_outlier = Some(Outlier { fix: *fix, inside });
            }
            return None;
        }
        self.strikes = 0;
        self.last_outlier = None;
        self.dwell.push(fix);
        // A sparse phone's stop began up to one sampling interval before the dwell's first fix
        // and goes on after its newest: half an interval each side, the dwell's own mean
        // interval. A dense phone's span already measures the stop (adding its few seconds cost
        // precision on every-fix phones, eval-arrival: 14 → 22 false check-ins).
        let span = fix.ts_ms - self.dwell.first_ts_ms;
        let mean_gap = span / i64::from(self.dwell.count.max(2) - 1);
        let sparse = if mean_gap >= cfg.sparse_interval_ms {
            mean_gap
        } else {
            0
        };
        if self.dwell.count >= cfg.min_fixes && span + sparse >= cfg.dwell_ms {
            let evidence = CheckinEvidence::Dwell {
                fixes: self.dwell.count,
                span_ms: span,
                credited_ms: sparse,
            };
            return Some(self.check_in(fix.ts_ms, evidence));
        }
        None
    }

    /// Checks in on `evidence`: arrival at the dwell's first fix, confirmed at
    /// `confirmed_at_ms` (device time).
    fn check_in(&mut self, confirmed_at_ms: i64, evidence: CheckinEvidence) -> Decision {
        let arrived_at_ms = self.dwell.first_ts_ms;
        self.phase = StopPhase::Arrived { arrived_at_ms };
        self.dwell = Dwell::default();
        Decision::CheckIn {
            key: self.fence.key.clone(),
            arrived_at_ms,
            confirmed_at_ms,
            evidence,
        }
    }

    fn observe_arrived(&mut self, fix: &Fix, d: f64, cfg: &ArrivalConfig) -> Option<Decision> {
        if d <= self.exit_radius_m(cfg) {
            self.outside = 0;
            return None;
        }
        if self.outside == 0 {
            self.first_outside_ms = fix.ts_ms;
        }
        self.outside += 1;
        if self.outside >= cfg.exit_confirm_fixes.max(1) {
            self.phase = StopPhase::Departed;
            return Some(Decision::Departure {
                key: self.fence.key.clone(),
                departed_at_ms: self.first_outside_ms,
            });
        }
        None
    }
}

type FenceEntry = GeomWithData<Rectangle<[f64; 2]>, StopKey>;

/// The arrival state of one driver: the geofences of the stops of its active trips in an R-tree
/// (over each exit ring's bounding box), and a state machine per stop.
///
/// Each fix costs one R-tree point query plus work for the stops it is near (or engaged with),
/// so 100k stops cost about what 10 do.
#[derive(Debug, Default)]
pub struct ArrivalTracker {
    tree: RTree<FenceEntry>,
    stops: HashMap<StopKey, StopTrack>,
    /// Stops with a dwell in progress or checked in: they must see fixes outside their envelope.
    engaged: HashSet<StopKey>,
    /// Device time of the newest fix observed; older or equal fixes are ignored.
    last_ts_ms: Option<i64>,
    /// How many stops are pending (kept with every phase change, so [`Self::sampling_at`]
    /// needs no scan of the stops).
    pending: usize,
}

impl ArrivalTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The sampling this driver needs at `fix`: dense with a dwell in progress or a pending
    /// stop within `near_m`, sparse with pending stops farther away, off without any. One
    /// R-tree query of a box around the fix, none without a pending stop.
    pub fn sampling_at(&self, fix: &Fix, near_m: f64) -> Sampling {
        // Most fixes come from drivers without a pending stop: no query for them.
        if self.pending == 0 {
            return Sampling::Off;
        }
        let pending = |k: &StopKey| {
            self.stops
                .get(k)
                .is_some_and(|t| t.phase == StopPhase::Pending)
        };
        if self.engaged.iter().any(pending) {
            return Sampling::Dense;
        }
        let near = BBox::around(fix.lat, fix.lon, near_m)
            .parts()
            .into_iter()
            .any(|(lo, hi)| {
                self.tree
                    .locate_in_envelope_intersecting(&rstar::AABB::from_corners(lo, hi))
                    .any(|e| pending(&e.data))
            });
        if near {
            Sampling::Dense
        } else {
            Sampling::Sparse
        }
    }

    /// True when (`lat`, `lon`) lies inside the geofence of one of the tracked stops (any
    /// phase): an automatic stop there is a planned one.
    pub fn covers(&self, lat: f64, lon: f64) -> bool {
        self.tree
            .locate_in_envelope_intersecting(&rstar::AABB::from_point([lon, lat]))
            .filter_map(|e| self.stops.get(&e.data))
            .any(|t| haversine_m(lat, lon, t.fence.lat, t.fence.lon) <= t.fence.radius_m)
    }

    /// Number of stops tracked.
    pub fn len(&self) -> usize {
        self.stops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Adds (or replaces) a stop in the given phase (restored from storage on start-up).
    pub fn add_stop(&mut self, fence: Geofence, phase: StopPhase, cfg: &ArrivalConfig) {
        self.remove_stop(&fence.key, cfg);
        let key = fence.key.clone();
        let exit = fence.radius_m * cfg.exit_radius_factor.max(1.0);
        for (lo, hi) in BBox::around(fence.lat, fence.lon, exit).parts() {
            self.tree.insert(FenceEntry::new(
                Rectangle::from_corners(lo, hi),
                key.clone(),
            ));
        }
        if phase == StopPhase::Pending {
            self.pending += 1;
        }
        let track = StopTrack::new(fence, phase);
        if track.engaged() {
            self.engaged.insert(key.clone());
        }
        self.stops.insert(key, track);
    }

    /// Moves every stop of `other` into this tracker with the state it reached there (a new
    /// trip's stops, run first against the driver's recent fixes on their own: this tracker
    /// has already seen those fixes and ignores them). A stop this tracker already has is kept.
    pub fn adopt(&mut self, other: ArrivalTracker, cfg: &ArrivalConfig) {
        for (key, track) in other.stops {
            if self.stops.contains_key(&key) {
                continue;
            }
            self.add_stop(track.fence.clone(), track.phase, cfg);
            if track.engaged() {
                self.engaged.insert(key.clone());
            }
            self.stops.insert(key, track);
        }
    }

    /// Removes a stop (trip cancelled or finished).
    pub fn remove_stop(&mut self, key: &StopKey, cfg: &ArrivalConfig) {
        if let Some(track) = self.stops.remove(key) {
            if track.phase == StopPhase::Pending {
                self.pending -= 1;
            }
            let exit = track.exit_radius_m(cfg);
            for (lo, hi) in BBox::around(track.fence.lat, track.fence.lon, exit).parts() {
                self.tree.remove(&FenceEntry::new(
                    Rectangle::from_corners(lo, hi),
                    key.clone(),
                ));
            }
            self.engaged.remove(key);
        }
    }

    /// Marks a stop checked in by other means (a manual check-in) so detection does not repeat it.
    pub fn mark_arrived(&mut self, key: &StopKey, arrived_at_ms: i64) {
        if let Some(track) = self.stops.get_mut(key) {
            if track.phase == StopPhase::Pending {
                self.pending -= 1;
                track.phase = StopPhase::Arrived { arrived_at_ms };
                track.dwell = Dwell::default();
                self.engaged.insert(key.clone());
            }
        }
    }

    /// Forces a stop's phase, e.g. back to `Pending` when a check-in could not be stored.
    pub fn set_phase(&mut self, key: &StopKey, phase: StopPhase) {
        if let Some(track) = self.stops.get_mut(key) {
            match (
                track.phase == StopPhase::Pending,
                phase == StopPhase::Pending,
            ) {
                (true, false) => self.pending -= 1,
                (false, true) => self.pending += 1,
                _ => {}
            }
            track.phase = phase;
            track.dwell = Dwell::default();
            track.strikes = 0;
            track.last_outlier = None;
            track.outside = 0;
            if track.engaged() {
                self.engaged.insert(key.clone());
            } else {
                self.engaged.remove(key);
            }
        }
    }

    /// The phase of one stop.
    pub fn phase(&self, key: &StopKey) -> Option<StopPhase> {
        self.stops.get(key).map(|t| t.phase)
    }

    /// Feeds one fix (device time must increase: older or equal fixes are ignored and return
    /// nothing). Returns the check-ins and departures it caused, in a stable order.
    pub fn observe(&mut self, fix: &Fix, cfg: &ArrivalConfig) -> Vec<Decision> {
        if self.last_ts_ms.is_some_and(|last| fix.ts_ms <= last) {
            return Vec::new();
        }
        self.last_ts_ms = Some(fix.ts_ms);
        if fix.accuracy_m.is_some_and(|a| a > cfg.max_accuracy_m) {
            return Vec::new();
        }
        let mut candidates: Vec<StopKey> = self
            .tree
            .locate_all_at_point(&[fix.lon, fix.lat])
            .map(|e| e.data.clone())
            .collect();
        candidates.extend(self.engaged.iter().cloned());
        candidates.sort();
        candidates.dedup();

        let mut decisions = Vec::new();
        for key in candidates {
            let Some(track) = self.stops.get_mut(&key) else {
                continue;
            };
            if let Some(decision) = track.observe(fix, cfg) {
                if matches!(decision, Decision::CheckIn { .. }) {
                    self.pending -= 1;
                }
                decisions.push(decision);
            }
            if track.engaged() {
                self.engaged.insert(key);
            } else {
                self.engaged.remove(&key);
            }
        }
        decisions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAT: f64 = 47.61;
    const LON: f64 = -122.33;
    /// Metres per degree of latitude (mean).
    const M_PER_DEG: f64 = 111_195.0;

    fn key(s: &str) -> StopKey {
        StopKey {
            trip_id: "t".into(),
            stop_id: s.into(),
        }
    }

    /// A tracker with one 100 m stop `s1` at (LAT, LON) in `phase`.
    fn tracker_in(phase: StopPhase, cfg: &ArrivalConfig) -> ArrivalTracker {
        let mut t = ArrivalTracker::new();
        t.add_stop(
            Geofence {
                key: key("s1"),
                lat: LAT,
                lon: LON,
                radius_m: 100.0,
            },
            phase,
            cfg,
        );
        t
    }

    fn tracker(cfg: &ArrivalConfig) -> ArrivalTracker {
        tracker_in(StopPhase::Pending, cfg)
    }

    /// A fix `north_m` metres north and `east_m` east of the stop at `t_s` seconds.
    fn fix(t_s: i64, north_m: f64, east_m: f64) -> Fix {
        Fix {
            ts_ms: 1_700_000_000_000 + t_s * 1000,
            lat: LAT + north_m / M_PER_DEG,
            lon: LON + east_m / (M_PER_DEG * LAT.to_radians().cos()),
            accuracy_m: Some(8.0),
            speed_mps: None,
            heading_deg: None,
            motion: None,
        }
    }

    fn run(t: &mut ArrivalTracker, cfg: &ArrivalConfig, fixes: &[Fix]) -> Vec<Decision> {
        fixes.iter().flat_map(|f| t.observe(f, cfg)).collect()
    }

    #[test]
    fn parked_at_stop_checks_in_once_with_dwell_start() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        // Jitter of ±15 m around a point 30 m from the stop, every 5 s for 3 minutes.
        let fixes: Vec<Fix> = (0..36)
            .map(|i| fix(i * 5, 30.0 + if i % 2 == 0 { 15.0 } else { -15.0 }, 10.0))
            .collect();
        let d = run(&mut t, &cfg, &fixes);
        assert_eq!(d.len(), 1, "{d:?}");
        match &d[0] {
            Decision::CheckIn {
                arrived_at_ms,
                confirmed_at_ms,
                evidence,
                ..
            } => {
                assert_eq!(*arrived_at_ms, fixes[0].ts_ms);
                // Why: 16 fixes over 75 s, a dense phone (no sparse credit).
                assert_eq!(
                    *evidence,
                    CheckinEvidence::Dwell {
                        fixes: 16,
                        span_ms: 75_000,
                        credited_ms: 0
                    }
                );
                assert_eq!(
                    *confirmed_at_ms, fixes[15].ts_ms,
                    "75 s after the first fix"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue 15: a distance-filtered phone (Traccar Client: 75 m) sends nothing while parked.
    /// A fix inside the stop, silence, then a fix from near it: stationary evidence. The same
    /// distance covered in 30 s is driving.
    #[test]
    fn a_phone_gone_quiet_at_the_stop_checks_in_and_a_short_gap_does_not() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        let d = run(&mut t, &cfg, &[fix(0, -20.0, 0.0), fix(125, 60.0, 0.0)]);
        assert!(
            matches!(&d[..], [Decision::CheckIn { arrived_at_ms, confirmed_at_ms, evidence: CheckinEvidence::QuietGap { gap_ms: 125_000, moved_m }, .. }]
                if *arrived_at_ms == fix(0, 0.0, 0.0).ts_ms && *confirmed_at_ms == fix(125, 0.0, 0.0).ts_ms
                    && (*moved_m - 80.0).abs() < 1.0),
            "{d:?}"
        );
        let mut t = tracker(&cfg);
        assert!(run(&mut t, &cfg, &[fix(0, -20.0, 0.0), fix(30, 60.0, 0.0)]).is_empty());
        // Quiet, but far: it drove on (more than 1 m/s on average).
        let mut t = tracker(&cfg);
        assert!(run(&mut t, &cfg, &[fix(0, -20.0, 0.0), fix(100, 200.0, 0.0)]).is_empty());
        // One stray report in between (a walk to the door) is tolerated; two restart the dwell.
        let mut t = tracker(&cfg);
        let back = fix(99, -20.0, 0.0);
        let d = run(
            &mut t,
            &cfg,
            &[fix(0, -20.0, 0.0), fix(90, 160.0, 0.0), back],
        );
        assert!(
            matches!(
                &d[..],
                [Decision::CheckIn {
                    evidence: CheckinEvidence::QuietGap { gap_ms: 99_000, .. },
                    ..
                }]
            ),
            "{d:?}"
        );
        let mut t = tracker(&cfg);
        let strays = [fix(50, 160.0, 0.0), fix(90, 160.0, 0.0)];
        assert!(run(
            &mut t,
            &cfg,
            &[fix(0, -20.0, 0.0), strays[0], strays[1], back]
        )
        .is_empty());
    }

    /// The phone's own `still` inside the zone is evidence enough once a dwell has begun.
    #[test]
    fn a_still_phone_inside_the_zone_checks_in() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        let still = Fix {
            motion: Some(Motion::Still),
            ..fix(20, 5.0, 0.0)
        };
        let d = run(&mut t, &cfg, &[fix(0, 10.0, 0.0), still]);
        assert_eq!(d.len(), 1, "{d:?}");
    }

    /// A phone sampling every 30 s shows a 75 s stop as three fixes 60 s apart: its span is
    /// credited one interval for the unseen start and end. Two fixes never suffice.
    #[test]
    fn a_sparse_phone_parked_checks_in_on_its_third_fix() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        let d = run(&mut t, &cfg, &[fix(0, 10.0, 0.0), fix(30, 12.0, 3.0)]);
        assert!(d.is_empty());
        let d = run(&mut t, &cfg, &[fix(60, 8.0, -2.0)]);
        assert_eq!(d.len(), 1, "{d:?}");
    }

    #[test]
    fn driving_past_does_not_check_in() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        // 10 m/s straight through the stop.
        let fixes: Vec<Fix> = (0..40)
            .map(|i| fix(i * 5, -200.0 + i as f64 * 50.0, 0.0))
            .collect();
        assert!(run(&mut t, &cfg, &fixes).is_empty());
    }

    #[test]
    fn crawling_in_traffic_does_not_check_in() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        // 1.5 m/s through the zone: 200 m of zone takes 133 s, but never stationary for 75 s.
        let fixes: Vec<Fix> = (0..60)
            .map(|i| fix(i * 5, -150.0 + i as f64 * 7.5, 20.0))
            .collect();
        assert!(run(&mut t, &cfg, &fixes).is_empty());
    }

    #[test]
    fn waiting_at_a_light_for_a_minute_does_not_check_in() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        let mut fixes: Vec<Fix> = (0..10)
            .map(|i| fix(i * 5, -300.0 + i as f64 * 25.0, 40.0))
            .collect();
        fixes.extend((10..22).map(|i| fix(i * 5, -60.0, 40.0))); // 60 s stopped 72 m away
        fixes.extend((22..40).map(|i| fix(i * 5, -60.0 + (i - 21) as f64 * 40.0, 40.0)));
        assert!(run(&mut t, &cfg, &fixes).is_empty());
    }

    #[test]
    fn one_jittery_fix_inside_does_not_check_in() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        let mut fixes: Vec<Fix> = (0..40).map(|i| fix(i * 5, 400.0, 0.0)).collect();
        fixes[10] = fix(50, 5.0, 0.0); // one wild fix at the stop
        assert!(run(&mut t, &cfg, &fixes).is_empty());
    }

    #[test]
    fn poor_accuracy_fixes_never_check_in() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        let fixes: Vec<Fix> = (0..40)
            .map(|i| Fix {
                accuracy_m: Some(120.0),
                ..fix(i * 5, 10.0, 0.0)
            })
            .collect();
        assert!(run(&mut t, &cfg, &fixes).is_empty());
    }

    #[test]
    fn moving_speed_breaks_the_dwell() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        let fixes: Vec<Fix> = (0..40)
            .map(|i| Fix {
                speed_mps: Some(6.0),
                ..fix(i * 5, 10.0, 0.0)
            })
            .collect();
        assert!(run(&mut t, &cfg, &fixes).is_empty());
    }

    #[test]
    fn single_outlier_is_tolerated_and_two_restart() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        let mut fixes: Vec<Fix> = (0..20).map(|i| fix(i * 5, 0.0, 0.0)).collect();
        fixes[8] = fix(40, 300.0, 0.0);
        let d = run(&mut t, &cfg, &fixes);
        assert!(
            matches!(d.as_slice(), [Decision::CheckIn { arrived_at_ms, .. }] if *arrived_at_ms == fixes[0].ts_ms)
        );

        let mut t = tracker(&cfg);
        let mut fixes: Vec<Fix> = (0..20).map(|i| fix(i * 5, 0.0, 0.0)).collect();
        fixes[8] = fix(40, 300.0, 0.0);
        fixes[9] = fix(45, 300.0, 0.0);
        let d = run(&mut t, &cfg, &fixes);
        assert!(
            d.is_empty(),
            "dwell restarted at 50 s, only 45 s by the last fix: {d:?}"
        );

        // A driver rolling in: a fix on the way starts a dwell, then the vehicle stops 70 m on.
        // The restart begins at the first fix of the real stop, not the second.
        let mut t = tracker(&cfg);
        let mut fixes = vec![fix(0, -50.0, 0.0)];
        fixes.extend((1..25).map(|i| fix(i * 5, 20.0, 0.0)));
        let d = run(&mut t, &cfg, &fixes);
        assert!(
            matches!(d.as_slice(), [Decision::CheckIn { arrived_at_ms, .. }] if *arrived_at_ms == fixes[1].ts_ms),
            "{d:?}"
        );
    }

    #[test]
    fn departure_needs_two_fixes_beyond_the_exit_ring() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        let mut fixes: Vec<Fix> = (0..20).map(|i| fix(i * 5, 0.0, 0.0)).collect();
        fixes.push(fix(100, 160.0, 0.0)); // beyond 150 m once: jitter
        fixes.push(fix(105, 120.0, 0.0)); // back inside the ring
        fixes.push(fix(110, 170.0, 0.0));
        fixes.push(fix(115, 400.0, 0.0));
        fixes.push(fix(120, 0.0, 0.0)); // coming back never re-checks in
        fixes.extend((25..60).map(|i| fix(i * 5, 0.0, 0.0)));
        let d = run(&mut t, &cfg, &fixes);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            matches!(&d[1], Decision::Departure { departed_at_ms, .. } if *departed_at_ms == fixes[22].ts_ms)
        );
        assert_eq!(t.phase(&key("s1")), Some(StopPhase::Departed));
    }

    #[test]
    fn replayed_or_old_fixes_change_nothing() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker(&cfg);
        let fixes: Vec<Fix> = (0..20).map(|i| fix(i * 5, 0.0, 0.0)).collect();
        assert_eq!(run(&mut t, &cfg, &fixes).len(), 1);
        assert!(run(&mut t, &cfg, &fixes).is_empty());
    }

    #[test]
    fn fixes_older_than_the_arrival_never_depart() {
        let cfg = ArrivalConfig::default();
        let arrived_at_ms = fix(100, 0.0, 0.0).ts_ms;
        let mut t = tracker_in(StopPhase::Arrived { arrived_at_ms }, &cfg);
        let before: Vec<Fix> = (0..10).map(|i| fix(i * 5, -500.0, 0.0)).collect();
        assert!(run(&mut t, &cfg, &before).is_empty());
        let after: Vec<Fix> = (21..24).map(|i| fix(i * 5, -500.0, 0.0)).collect();
        assert_eq!(run(&mut t, &cfg, &after).len(), 1);
    }

    #[test]
    fn restored_arrived_stop_does_not_check_in_again() {
        let cfg = ArrivalConfig::default();
        let mut t = tracker_in(StopPhase::Arrived { arrived_at_ms: 0 }, &cfg);
        let fixes: Vec<Fix> = (0..20).map(|i| fix(i * 5, 0.0, 0.0)).collect();
        assert!(run(&mut t, &cfg, &fixes).is_empty());
    }

    #[test]
    fn only_nearby_stops_among_many_are_touched() {
        let cfg = ArrivalConfig::default();
        let mut t = ArrivalTracker::new();
        for i in 0..10_000 {
            let fence = Geofence {
                key: key(&format!("s{i}")),
                lat: LAT + (i / 100) as f64 * 0.01,
                lon: LON + (i % 100) as f64 * 0.01,
                radius_m: 100.0,
            };
            t.add_stop(fence, StopPhase::Pending, &cfg);
        }
        let fixes: Vec<Fix> = (0..20).map(|i| fix(i * 5, 0.0, 0.0)).collect();
        let d = run(&mut t, &cfg, &fixes);
        assert_eq!(d.len(), 1);
        assert!(matches!(&d[0], Decision::CheckIn { key, .. } if &*key.stop_id == "s0"));
        t.remove_stop(&key("s0"), &cfg);
        assert_eq!(t.len(), 9_999);
        assert_eq!(t.tree.size(), 9_999);
    }
}
