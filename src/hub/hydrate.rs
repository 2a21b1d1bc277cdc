//! Hydration: a driver's state built from the database when its first fix reaches this node
//! (active trips, the last minutes of its track replayed), and trips added while it is served.

use std::sync::{Arc, Mutex};

use super::{lock, CheckinNotice, DriverSlot, DriverState, Hub};
use crate::bus::Outgoing;
use crate::geo::arrival::{ArrivalConfig, ArrivalTracker, Decision, Geofence, StopPhase};
use crate::model::{now_ms, DriverKey, Fix, StopKey, StopStatus};
use crate::store::TripRecord;

/// How far back (device time, before the newest stored fix) hydration replays a driver's track:
/// several dwell times, so a dwell in progress is rebuilt whole. Milliseconds.
pub const HYDRATE_WINDOW_MS: i64 = 15 * 60 * 1000;

/// Longest a fix waits for hydration before it is processed without it, and how long the driver's
/// later fixes skip hydration after such a failure (the database is down or slow). Milliseconds.
///
/// 10 s, was 2 s: with acks that wait for commits, a fix cannot be acked while the database is
/// unreachable anyway, so waiting longer for the driver's trips costs no acks; and on a loaded
/// PostgreSQL the pool took 2-3 s to hand out a connection, so 2 s left a parked driver
/// without its trip, unchecked-in, for a minute (`tests/it/drain.rs` on PostgreSQL).
pub(super) const HYDRATE_TIMEOUT_MS: u64 = 10_000;
pub(super) const HYDRATE_RETRY_MS: i64 = 5_000;

impl Hub {
    /// The slot of a driver this node serves, hydrated from the database on first use. When the
    /// database cannot be read the fix is still processed (live position, history queue) and the
    /// next fix tries again.
    /// Also returns the check-ins that hydration's replay decided, for the frame that caused it
    /// to tell the driver (issue 16: a check-in decided while loading a driver, e.g. after a
    /// slow first load, was stored but never announced to the phone).
    pub(super) async fn ready_slot(
        &self,
        who: &DriverKey,
    ) -> (Arc<DriverSlot>, Vec<CheckinNotice>) {
        use std::sync::atomic::Ordering::Relaxed;
        let slot = self.slot(who);
        if slot.ready.initialized() || now_ms() < slot.retry_after_ms.load(Relaxed) {
            return (slot, Vec::new());
        }
        let told = Mutex::new(Vec::new());
        let hydrated = slot
            .ready
            .get_or_try_init(|| async {
                let notices = self.hydrate(who, &slot).await?;
                *lock(&told) = notices;
                Ok::<(), String>(())
            })
            .await;
        if let Err(e) = hydrated {
            slot.retry_after_ms
                .store(now_ms() + HYDRATE_RETRY_MS, Relaxed);
            tracing::warn!(error = %e, driver = %who.driver_id, "driver state not loaded from the database; fixes go on without trips until it is");
        }
        let told = told.into_inner().unwrap_or_else(|e| e.into_inner());
        (slot, told)
    }

    /// Loads a driver's active trips and replays its recent track through arrival detection, so a
    /// dwell begun on another node (or before a restart) continues here. Decisions the replay
    /// reaches are applied like live ones: the store makes them idempotent.
    pub(super) async fn hydrate(
        &self,
        who: &DriverKey,
        slot: &DriverSlot,
    ) -> Result<Vec<CheckinNotice>, String> {
        // Only the reads are bounded in time: once they are in, the replay and its decisions run
        // to the end, so no decision is lost half-way.
        let limit = std::time::Duration::from_millis(HYDRATE_TIMEOUT_MS);
        let load = async {
            self.ensure_zones(&who.fleet)
                .await
                .map_err(|e| e.to_string())?;
            self.loader.load(who).await
        };
        let super::loader::Loaded { trips, recent } = match tokio::time::timeout(limit, load).await
        {
            Ok(loaded) => loaded?,
            Err(_) => return Err(format!("no answer within {HYDRATE_TIMEOUT_MS} ms")),
        };
        let decisions = {
            let mut state = lock(&slot.state);
            let mut decisions = Vec::new();
            for trip in &trips {
                decisions.extend(add_trip_to(&mut state, trip, &self.cfg.arrival));
            }
            if let Some(newest) = recent.last().map(|f| f.ts_ms) {
                for fix in recent
                    .iter()
                    .filter(|f| f.ts_ms >= newest - HYDRATE_WINDOW_MS)
                {
                    for d in state.arrival.observe(fix, &self.cfg.arrival) {
                        decisions.push((d, *fix));
                    }
                    state.recent.push(*fix);
                    state.pace.observe(fix);
                }
                // Fixes already stored (resent after a reconnect) are late, not new.
                state.newest_ts_ms = state.newest_ts_ms.max(Some(newest));
            }
            decisions
        };
        let mut notices = Vec::new();
        for (decision, fix) in decisions {
            notices.extend(self.apply_decision(who, &fix, decision).await);
        }
        Ok(notices)
    }

    /// A trip was just stored: detection starts for it here if this node serves its driver
    /// (and its stops are checked against the driver's recent fixes: a driver already parked
    /// at the first stop is checked in), and the other nodes are told so that the node serving
    /// the driver does the same.
    pub async fn trip_created(&self, trip: &TripRecord) {
        self.bus.publish(Outgoing::Trip {
            fleet: trip.fleet.as_str().into(),
            trip_id: trip.id.clone(),
            driver_id: trip.driver_id.clone(),
        });
        self.add_trip(trip).await;
    }

    /// Starts detecting arrivals for a stored trip's stops, if this node serves its driver (a
    /// driver not served yet gets its trips when it is hydrated), and decides at once what the
    /// driver's recent fixes already show (issue 15: a trip given to a driver who is already
    /// there counts, and so do the fixes a node took before another node's announcement of a
    /// trip reached it).
    pub(super) async fn add_trip(&self, trip: &TripRecord) {
        let who = DriverKey::new(&trip.fleet, &trip.driver_id);
        let Some(slot) = self.drivers.get(&who).map(|s| s.clone()) else {
            return;
        };
        let decisions = add_trip_to(&mut lock(&slot.state), trip, &self.cfg.arrival);
        for (decision, fix) in decisions {
            self.apply_decision(&who, &fix, decision).await;
        }
    }
}

/// Adds a stored trip's stops to a driver's detector, in their stored phase, after running the
/// new ones against the driver's recent fixes; returns what that run decided, with the fix that
/// decided it. Stops already tracked keep their state (hydration and a bus announcement may both
/// bring the same trip).
pub(super) fn add_trip_to(
    state: &mut DriverState,
    trip: &TripRecord,
    cfg: &ArrivalConfig,
) -> Vec<(Decision, Fix)> {
    let trip_id: Arc<str> = trip.id.as_str().into();
    // The new stops on their own first: the driver's tracker has seen the recent fixes already
    // (and ignores fixes older than its newest), so they are run through these stops alone.
    let mut fresh = ArrivalTracker::new();
    for s in &trip.stops {
        let phase = match (s.status, s.arrived_at) {
            (StopStatus::Pending, _) => StopPhase::Pending,
            (StopStatus::Arrived, Some(at)) => StopPhase::Arrived { arrived_at_ms: at },
            _ => continue, // departed: nothing left to detect
        };
        let key = StopKey {
            trip_id: trip_id.clone(),
            stop_id: s.id.as_str().into(),
        };
        if state.arrival.phase(&key).is_some() {
            continue;
        }
        let fence = Geofence {
            key,
            lat: s.lat,
            lon: s.lon,
            radius_m: s.radius_m,
        };
        fresh.add_stop(fence, phase, cfg);
    }
    if !state.plans.iter().any(|p| *p.trip_id == *trip.id) {
        state.plans.push(super::eta::plan_of(trip));
        state.eta_basis = None; // estimated at the next refresh
        if state.plans.len() == 1 {
            state.pace.start_trip(); // the driver's trip average counts from here
        }
    }
    let mut decisions = Vec::new();
    for fix in state.recent.iter() {
        for d in fresh.observe(fix, cfg) {
            decisions.push((d, *fix));
        }
    }
    state.arrival.adopt(fresh, cfg);
    decisions
}
