//! Live ETAs: the driver's pending stops re-estimated on a timer (never on the ingest path,
//! which only updates the driver's pace), stored, carried on the driver's live position, and
//! turned into `stop.approaching` / `stop.late` events once per crossing.

use std::sync::{Arc, Mutex};

use super::{lock, DriverState, Hub};
use crate::eta::plan::{refresh, Alert, AlertConfig, PlanStop, Situation, TripPlan};
use crate::eta::ApproachCurve;
use crate::geo::arrival::StopPhase;
use crate::geo::distance::haversine_m;
use crate::model::{now_ms, DriverKey, Event, EventKind, StopKey, StopStatus};
use crate::shutdown::Shutdown;
use crate::store::etas::EtaRow;
use crate::store::settings::FleetSettings;
use crate::store::TripRecord;

/// How often the refresher runs, ms.
pub const REFRESH_EVERY_MS: u64 = 2_000;
/// A driver's ETAs are recomputed when it sent a fix since the last estimate, or this long
/// after it (time passes for a driver whose phone went quiet, and windows open), ms.
const STALE_MS: i64 = 30_000;
/// How far before an arrival the driver's recent fixes teach the fleet's curve, ms.
const LEARN_WINDOW_MS: i64 = 30 * 60 * 1000;
/// Check-ins a node reads back to start a fleet's curve, and most fixes it reads for them
/// (200 approaches of 15 min at one fix per 5 s is 36,000).
const HISTORY_CHECKINS: i64 = 200;
const HISTORY_MAX_FIXES: i64 = 40_000;
/// The fleet's typical travelled speed before any is seen, m/s: the median travelled speed of
/// the Porto taxi training trips (`trackhub eval-eta --learn`).
pub const DEFAULT_FLEET_MPS: f64 = 6.88;
/// Weight of one driver's pace sample in the fleet's travelled speed (an exponential average
/// over a few thousand samples: minutes of a busy fleet, hours of a small one).
const FLEET_MPS_ALPHA: f64 = 0.001;

/// How long a fleet's settings are trusted before they are read again, ms: a change made on
/// another node reaches this one within it (on this node, at once).
const SETTINGS_TTL_MS: i64 = 60_000;

/// What one fleet's ETAs learn and use: its approach curve, typical travelled speed and its own
/// settings.
#[derive(Debug, Clone)]
pub struct FleetEta {
    pub curve: ApproachCurve,
    /// m/s.
    pub travelled_mps: f64,
    pub settings: FleetSettings,
    /// Server time the settings were read, ms (`None`: never).
    settings_read_ms: Option<i64>,
    /// The curve has learned from the fleet's stored check-ins (once per node).
    from_history: bool,
}

impl Default for FleetEta {
    fn default() -> Self {
        Self {
            curve: ApproachCurve::default(),
            travelled_mps: DEFAULT_FLEET_MPS,
            settings: FleetSettings::default(),
            settings_read_ms: None,
            from_history: false,
        }
    }
}

impl FleetEta {
    /// The alert thresholds for this fleet: its own settings over the node's defaults.
    pub fn alerts(&self, defaults: &AlertConfig) -> AlertConfig {
        AlertConfig {
            approach_eta_s: self
                .settings
                .approach_eta_s
                .unwrap_or(defaults.approach_eta_s),
            approach_distance_m: self
                .settings
                .approach_distance_m
                .unwrap_or(defaults.approach_distance_m),
            ..*defaults
        }
    }
}

/// A stored trip's stops as the ETA refresh tracks them.
pub(super) fn plan_of(trip: &TripRecord) -> TripPlan {
    let trip_id: Arc<str> = trip.id.as_str().into();
    TripPlan {
        trip_id: trip_id.clone(),
        stops: trip
            .stops
            .iter()
            .map(|s| PlanStop {
                key: StopKey {
                    trip_id: trip_id.clone(),
                    stop_id: s.id.as_str().into(),
                },
                lat: s.lat,
                lon: s.lon,
                service_s: s.service_s,
                window_start_ms: s.window_start,
                window_end_ms: s.window_end,
                eta_ms: s.eta.filter(|_| s.status == StopStatus::Pending),
                approaching: s.approaching,
                late: s.late,
            })
            .collect(),
    }
}

impl Hub {
    fn fleet_eta(&self, fleet: &Arc<str>) -> Arc<Mutex<FleetEta>> {
        if let Some(f) = self.fleet_etas.get(&**fleet) {
            return f.clone();
        }
        self.fleet_etas.entry(fleet.clone()).or_default().clone()
    }

    /// Uses a fleet's new settings at once (the REST handler stored them).
    pub fn fleet_settings_changed(&self, fleet: &str, settings: FleetSettings) {
        let f = self.fleet_eta(&fleet.into());
        let mut f = lock(&f);
        f.settings = settings;
        f.settings_read_ms = Some(now_ms());
    }

    /// Teaches the curve of each fleet new to this node from its stored history: the fixes
    /// before its last [`HISTORY_CHECKINS`] automatic check-ins, so a restarted node does not
    /// start from the prior again. Retried at the next refresh when the read fails.
    async fn learn_from_history(&self) {
        let new: Vec<Arc<str>> = self
            .fleet_etas
            .iter()
            .filter(|f| !lock(f.value()).from_history)
            .map(|f| f.key().clone())
            .collect();
        for fleet in new {
            let samples = self
                .store
                .approach_samples(&fleet, HISTORY_CHECKINS, LEARN_WINDOW_MS, HISTORY_MAX_FIXES)
                .await;
            match samples {
                Ok(samples) => {
                    let f = self.fleet_eta(&fleet);
                    let mut f = lock(&f);
                    for s in &samples {
                        f.curve.observe(
                            haversine_m(s.lat, s.lon, s.stop_lat, s.stop_lon),
                            (s.arrived_at_ms - s.ts_ms) as f64 / 1000.0,
                        );
                    }
                    f.from_history = true;
                    tracing::debug!(%fleet, fixes = samples.len(), "ETA curve learned from stored check-ins");
                }
                Err(e) => tracing::warn!(error = %e, %fleet, "ETA history not read; retrying"),
            }
        }
    }

    /// Reads the settings of the fleets with drivers on this node that were not read for a
    /// while. A fleet whose read fails keeps what it had and is retried at the next refresh.
    async fn read_fleet_settings(&self, now: i64) {
        let stale: Vec<Arc<str>> = self
            .fleet_etas
            .iter()
            .filter(|f| {
                lock(f.value())
                    .settings_read_ms
                    .is_none_or(|at| now - at >= SETTINGS_TTL_MS)
            })
            .map(|f| f.key().clone())
            .collect();
        for fleet in stale {
            match self.store.fleet_settings(&fleet).await {
                Ok(settings) => {
                    let f = self.fleet_eta(&fleet);
                    let mut f = lock(&f);
                    f.settings = settings;
                    f.settings_read_ms = Some(now);
                }
                Err(e) => {
                    tracing::warn!(error = %e, %fleet, "fleet settings not read; using the last known")
                }
            }
        }
    }

    /// The fleet's learned ETA figures (for tools and tests).
    pub fn fleet_eta_snapshot(&self, fleet: &str) -> FleetEta {
        self.fleet_etas
            .get(fleet)
            .map(|f| lock(&f).clone())
            .unwrap_or_default()
    }

    /// Teaches the fleet's curve from a check-in: how far the driver was (great circle) and how
    /// long it then took, for each of its recent fixes before `arrived_at_ms`.
    pub(super) fn learn_arrival(&self, who: &DriverKey, key: &StopKey, arrived_at_ms: i64) {
        let Some(slot) = self.drivers.get(who).map(|s| s.clone()) else {
            return;
        };
        let samples: Vec<(f64, f64)> = {
            let state = lock(&slot.state);
            let Some(stop) = state
                .plans
                .iter()
                .flat_map(|p| &p.stops)
                .find(|s| &s.key == key)
            else {
                return;
            };
            state
                .recent
                .iter()
                .filter(|f| f.ts_ms < arrived_at_ms && arrived_at_ms - f.ts_ms <= LEARN_WINDOW_MS)
                .map(|f| {
                    (
                        haversine_m(f.lat, f.lon, stop.lat, stop.lon),
                        (arrived_at_ms - f.ts_ms) as f64 / 1000.0,
                    )
                })
                .collect()
        };
        let fleet = self.fleet_eta(&who.fleet);
        let mut fleet = lock(&fleet);
        for (d, t) in samples {
            fleet.curve.observe(d, t);
        }
    }

    /// Re-estimates the ETAs of every driver this node serves that has pending stops and a new
    /// fix (or a stale estimate); publishes the changes on the driver's live position, stores
    /// them, and records and announces approaching/late crossings.
    pub async fn refresh_etas(&self) {
        let now = now_ms();
        let slots: Vec<_> = self
            .drivers
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (who, _) in &slots {
            self.fleet_eta(&who.fleet);
        }
        self.read_fleet_settings(now).await;
        self.learn_from_history().await;
        let mut rows = Vec::new();
        let mut alerts = Vec::new();
        for (who, slot) in slots {
            let fleet = self.fleet_eta(&who.fleet);
            let mut state = lock(&slot.state);
            let Some(update) = self.refresh_driver(&who, &mut state, &fleet, now) else {
                continue;
            };
            for (key, eta_ms) in update.changed {
                rows.push(EtaRow {
                    fleet: who.fleet.clone(),
                    key,
                    eta_ms,
                    updated_at_ms: now,
                });
            }
            for alert in update.alerts {
                alerts.push((who.clone(), alert));
            }
        }
        if let Err(e) = self.store.update_etas(&rows).await {
            // Soft state: the next refresh that changes them writes them again.
            tracing::warn!(error = %e, etas = rows.len(), "ETAs not stored");
        }
        for (who, alert) in alerts {
            self.record_alert(&who, alert, now).await;
        }
    }

    fn refresh_driver(
        &self,
        who: &DriverKey,
        state: &mut DriverState,
        fleet: &Mutex<FleetEta>,
        now: i64,
    ) -> Option<crate::eta::plan::Refresh> {
        if state.plans.is_empty() {
            return None;
        }
        let (fix, received_ms) = state.last_fix?;
        if state
            .eta_basis
            .is_some_and(|(ts, at)| ts == fix.ts_ms && now - at < STALE_MS)
        {
            return None;
        }
        state.eta_basis = Some((fix.ts_ms, now));
        // The fleet's lock is held for this driver's few haversines (after the driver's: the
        // one order both are taken in).
        let mut f = lock(fleet);
        let pace = crate::eta::DriverPace {
            ratio: state.pace.ratio(f.travelled_mps),
            trip_mps: state.pace.trip_speed_mps(),
        };
        if let Some(v) = state.pace.speed_mps() {
            f.travelled_mps += FLEET_MPS_ALPHA * (v - f.travelled_mps);
        }
        let alerts = f.alerts(&self.cfg.alerts);
        let arrival = &state.arrival;
        let update = refresh(
            &mut state.plans,
            |k| arrival.phase(k) == Some(StopPhase::Pending),
            Situation {
                cfg: &self.cfg.eta,
                alerts: &alerts,
                curve: &f.curve,
                pace,
                position: (fix.lat, fix.lon),
                now_ms: now,
            },
        );
        drop(f);
        // Trips with nothing left to estimate are dropped.
        state.plans.retain(|p| {
            p.stops
                .iter()
                .any(|s| arrival.phase(&s.key) == Some(StopPhase::Pending))
        });
        if update.next != state.next_stop {
            state.next_stop = update.next.clone();
            // Watchers learn the new ETA now, not at the driver's next fix.
            self.publish_position(who, fix, received_ms, state.next_stop.clone());
        }
        Some(update)
    }

    async fn record_alert(&self, who: &DriverKey, alert: Alert, now: i64) {
        let (key, kind) = match alert {
            Alert::Rearmed { key } => {
                if let Err(e) = self.store.rearm_approach(&who.fleet, &key).await {
                    // The database still says approaching, and would refuse the next approach:
                    // the flag goes back, so the next refresh re-arms it again.
                    tracing::warn!(error = %e, stop = %key.stop_id, "approach not re-armed in the database; will retry");
                    self.undo_alert(who, &key, |s| s.approaching = true);
                }
                return;
            }
            Alert::Approaching {
                key,
                eta_ms,
                distance_m,
            } => (
                key.clone(),
                EventKind::StopApproaching {
                    key,
                    eta_ms,
                    distance_m,
                },
            ),
            Alert::Late {
                key,
                eta_ms,
                window_end_ms,
                late,
            } => (
                key.clone(),
                EventKind::StopLate {
                    key,
                    eta_ms,
                    window_end_ms,
                    late,
                },
            ),
        };
        let event = self.event_at_live_position(who, now, kind);
        self.presence.barrier().await;
        match self.store.record_stop_alert(&event).await {
            Ok(Some(id)) => self.emit(Arc::new(Event {
                id: Some(id),
                ..event
            })),
            Ok(None) => {}
            Err(e) => {
                // Not dropped: the flag goes back, so the next refresh decides it again.
                tracing::error!(error = %e, stop = %key.stop_id, kind = event.kind.name(), "stop alert not stored; will retry");
                match event.kind {
                    EventKind::StopApproaching { .. } => {
                        self.undo_alert(who, &key, |s| s.approaching = false)
                    }
                    EventKind::StopLate { late, .. } => {
                        self.undo_alert(who, &key, |s| s.late = !late)
                    }
                    _ => {}
                }
            }
        }
    }

    /// Puts a stop's approaching/late flag back after its change could not be stored, and makes
    /// the next refresh estimate the driver again, so the crossing is decided (and written) again.
    fn undo_alert(&self, who: &DriverKey, key: &StopKey, undo: impl FnOnce(&mut PlanStop)) {
        let Some(slot) = self.drivers.get(who).map(|s| s.clone()) else {
            return;
        };
        let mut state = lock(&slot.state);
        if let Some(s) = state
            .plans
            .iter_mut()
            .flat_map(|p| p.stops.iter_mut())
            .find(|s| &s.key == key)
        {
            undo(s);
        }
        state.eta_basis = None;
    }

    /// Runs [`Hub::refresh_etas`] (and re-reads stale geofences) every [`REFRESH_EVERY_MS`]
    /// until shutdown.
    pub async fn run_eta_refresher(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(REFRESH_EVERY_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.refresh_etas().await;
                    self.reload_stale_zones(now_ms()).await;
                }
                _ = shutdown.recv() => return,
            }
        }
    }
}
