//! Fleet geofences on the ingest path: each fleet's zones in an immutable R-tree index, read
//! from the database when the fleet's first driver reaches this node, rebuilt at once when this
//! node changes them and re-read every 30 s (changes made on other nodes); each accepted fix is
//! run through its driver's [`ZoneTracker`], and what it decides goes to the ordered event
//! writer (durable, then announced with its log id).

use std::sync::Arc;

use super::{DriverState, Hub};
use crate::geo::stops::Movement;
use crate::geo::zones::{ZoneEvent, ZoneIndex};
use crate::model::{now_ms, DriverKey, EventKind, Fix};
use crate::store::StoreError;

/// How long a fleet's zones are trusted before they are read again, ms.
const ZONES_TTL_MS: i64 = 30_000;

/// One fleet's zones and when they were read (server time, ms).
#[derive(Debug, Clone)]
pub(super) struct FleetZones {
    index: Arc<ZoneIndex>,
    read_ms: i64,
    /// Server time of the last change made on this node (a read that began before it is older
    /// than the index and is not swapped in).
    changed_ms: i64,
}

impl Hub {
    /// The fleet's zone index, when it has been loaded on this node.
    pub(super) fn zone_index(&self, fleet: &str) -> Option<Arc<ZoneIndex>> {
        self.zones.get(fleet).map(|z| z.index.clone())
    }

    /// Reads a fleet's geofences and swaps its index (what a change on this node calls).
    pub async fn reload_zones(&self, fleet: &str) -> Result<usize, StoreError> {
        let began = now_ms();
        let records = self.store.geofences(fleet).await?;
        let index = ZoneIndex::new(records.iter().map(|g| g.zone()).collect());
        let n = index.len();
        let mut entry = self
            .zones
            .entry(fleet.into())
            .or_insert_with(|| FleetZones {
                index: Arc::new(ZoneIndex::default()),
                read_ms: 0,
                changed_ms: 0,
            });
        if entry.changed_ms < began {
            entry.index = Arc::new(index);
        }
        entry.read_ms = now_ms();
        Ok(n)
    }

    /// A geofence was stored or changed on this node: the fleet's index gets it at once (when
    /// the fleet's zones are loaded here; otherwise they are read whole when first needed).
    pub fn zone_upserted(&self, fleet: &str, zone: crate::geo::zones::Zone) {
        if let Some(mut z) = self.zones.get_mut(fleet) {
            z.index = Arc::new(z.index.with(zone));
            z.changed_ms = now_ms();
        }
    }

    /// A geofence was deleted on this node.
    pub fn zone_removed(&self, fleet: &str, id: &str) {
        if let Some(mut z) = self.zones.get_mut(fleet) {
            z.index = Arc::new(z.index.without(id));
            z.changed_ms = now_ms();
        }
    }

    /// Loads a fleet's zones the first time one of its drivers reaches this node. One load per
    /// fleet at a time: 5,000 drivers connecting at once wait for one read of the fleet's
    /// geofences instead of making 5,000 (they starved the pool: ack p99 5.4 s with 10k zones).
    pub(super) async fn ensure_zones(&self, fleet: &str) -> Result<(), StoreError> {
        if self.zones.contains_key(fleet) {
            return Ok(());
        }
        let gate = self.zones_loading.entry(fleet.into()).or_default().clone();
        let _one = gate.lock().await;
        if self.zones.contains_key(fleet) {
            return Ok(());
        }
        self.reload_zones(fleet).await.map(|_| ())
    }

    /// Re-reads the zones of fleets read more than 30 s ago; a failed read keeps the old index
    /// and is retried at the next call.
    pub(super) async fn reload_stale_zones(&self, now: i64) {
        let stale: Vec<Arc<str>> = self
            .zones
            .iter()
            .filter(|z| now - z.read_ms >= ZONES_TTL_MS)
            .map(|z| z.key().clone())
            .collect();
        for fleet in stale {
            if let Err(e) = self.reload_zones(&fleet).await {
                tracing::warn!(error = %e, %fleet, "geofences not re-read; keeping the last known");
            }
        }
    }

    /// Runs an accepted fix through the driver's zones (under the driver's lock).
    pub(super) fn observe_zones(
        &self,
        who: &DriverKey,
        state: &mut DriverState,
        fix: &Fix,
    ) -> Vec<ZoneEvent> {
        match self.zone_index(&who.fleet) {
            Some(index) if !index.is_empty() || state.zones.inside().next().is_some() => {
                state.zones.observe(&index, &who.driver_id, fix)
            }
            _ => Vec::new(),
        }
    }

    /// Runs an accepted fix through the driver's automatic-stop detector (under the driver's
    /// lock): the event it decided, its time (device time, ms) and where it stands (a stop:
    /// the centre of its stationary circle; moving: this fix), if any. A stop during an active
    /// trip that is at none of the trip's stops is `unplanned`.
    pub(super) fn observe_movement(
        &self,
        state: &mut DriverState,
        fix: &Fix,
    ) -> Option<(i64, (f64, f64), EventKind)> {
        match state.movement.observe(fix, &self.cfg.arrival)? {
            Movement::Stopped {
                since_ms,
                confirmed_at_ms,
                lat,
                lon,
            } => Some((
                confirmed_at_ms,
                (lat, lon),
                EventKind::DriverStopped {
                    stopped_since_ms: since_ms,
                    unplanned: !state.plans.is_empty() && !state.arrival.covers(lat, lon),
                },
            )),
            Movement::Moving {
                at_ms,
                stopped_since_ms,
            } => Some((
                at_ms,
                (fix.lat, fix.lon),
                EventKind::DriverMoving { stopped_since_ms },
            )),
        }
    }

    /// Queues zone events on the ordered event writer (stored, then announced with ids).
    pub(super) fn record_zone_events(&self, who: &DriverKey, fix: &Fix, events: Vec<ZoneEvent>) {
        for e in events {
            let (ts_ms, kind) = match e {
                ZoneEvent::Entered { zone, at_ms } => {
                    (at_ms, EventKind::GeofenceEntered { geofence_id: zone })
                }
                ZoneEvent::Dwelled {
                    zone,
                    at_ms,
                    entered_at_ms,
                } => (
                    at_ms,
                    EventKind::GeofenceDwelled {
                        geofence_id: zone,
                        entered_at_ms,
                    },
                ),
                ZoneEvent::Exited {
                    zone,
                    at_ms,
                    entered_at_ms,
                } => (
                    at_ms,
                    EventKind::GeofenceExited {
                        geofence_id: zone,
                        entered_at_ms,
                    },
                ),
            };
            self.presence_event(who, ts_ms, Some((fix.lat, fix.lon)), kind);
        }
    }
}
