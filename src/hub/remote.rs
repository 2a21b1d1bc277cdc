//! Other nodes' positions and events, received through the bus, and our own re-published
//! after a bus outage.

use std::sync::{Arc, RwLock};

use super::{lock, Hub};
use crate::bus::{Incoming, Outgoing};
use crate::geo::arrival::StopPhase;
use crate::geo::index::LiveIndex;
use crate::metrics as m;
use crate::model::{now_ms, DriverId, DriverKey, Event, EventKind, LivePosition};

impl Hub {
    pub(super) fn sweep_remote(&self, now_ms: i64) {
        let fleets: Vec<(Arc<str>, Arc<RwLock<LiveIndex>>)> = self
            .fleets
            .iter()
            .map(|f| (f.key().clone(), f.value().clone()))
            .collect();
        for (fleet, index) in fleets {
            let stale: Vec<DriverId> = index
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .all()
                .filter(|p| now_ms - p.received_ms > self.cfg.presence_timeout_ms)
                .map(|p| p.driver_id.clone())
                .collect();
            if stale.is_empty() {
                continue;
            }
            let mut index = index.write().unwrap_or_else(|e| e.into_inner());
            for driver_id in stale {
                let who = DriverKey {
                    fleet: fleet.clone(),
                    driver_id,
                };
                if !self.drivers.contains_key(&who) {
                    index.remove(&who.driver_id);
                }
            }
        }
    }

    /// Applies what another node published.
    pub async fn apply_remote(&self, incoming: Incoming) {
        match incoming {
            Incoming::Positions {
                fleet,
                positions,
                gone,
            } => self.apply_remote_positions(&fleet, positions, gone),
            Incoming::Events {
                fleet,
                events,
                trips,
            } => {
                for event in events {
                    self.note_remote_event(&event);
                    if let Some(id) = event.id {
                        self.feed.published(&event.fleet, id);
                    }
                    self.fanout.event(Arc::new(event));
                }
                for (trip_id, driver_id) in trips {
                    let who = DriverKey {
                        fleet: fleet.clone(),
                        driver_id: driver_id.as_str().into(),
                    };
                    if !self.drivers.contains_key(&who) {
                        continue; // not served here: loaded at hydration if it comes
                    }
                    match self.store.trip(&fleet, &trip_id).await {
                        Ok(Some(trip)) => self.add_trip(&trip).await,
                        Ok(None) => tracing::warn!(trip = %trip_id, "announced trip not found"),
                        Err(e) => {
                            tracing::warn!(error = %e, trip = %trip_id, "announced trip not loaded")
                        }
                    }
                }
            }
            Incoming::Connected | Incoming::ResyncRequested => {
                self.republish_own();
            }
        }
    }

    pub(super) fn apply_remote_positions(
        &self,
        fleet: &Arc<str>,
        positions: Vec<LivePosition>,
        gone: Vec<(DriverId, i64)>,
    ) {
        let now = now_ms();
        let index = self.index_or_create(fleet);
        for pos in positions {
            metrics::histogram!(m::BUS_LAG_SECONDS)
                .record((now - pos.received_ms).max(0) as f64 / 1000.0);
            let who = DriverKey {
                fleet: fleet.clone(),
                driver_id: pos.driver_id.clone(),
            };
            if let Some(slot) = self.drivers.get(&who).map(|s| s.clone()) {
                let newest = lock(&slot.state).newest_ts_ms;
                if newest.is_some_and(|n| n >= pos.fix.ts_ms) {
                    continue; // ours is as new: a stale republish
                }
                // The driver moved to another node. Forget our copy of its state; should it come
                // back, hydration rebuilds it from the database.
                self.drivers.remove(&who);
            }
            let previous = {
                let mut index = index.write().unwrap_or_else(|e| e.into_inner());
                // Older, or the same fix again: skipped. The same fix with another next stop or
                // ETA is the serving node's ETA refresh, and is taken.
                if index.get(&pos.driver_id).is_some_and(|cur| {
                    cur.fix.ts_ms > pos.fix.ts_ms
                        || (cur.fix.ts_ms == pos.fix.ts_ms && cur.next_stop == pos.next_stop)
                }) {
                    continue;
                }
                index.upsert(pos.clone())
            };
            self.fanout.position(fleet, &pos, previous.as_ref());
        }
        for (driver_id, last_ts_ms) in gone {
            let who = DriverKey {
                fleet: fleet.clone(),
                driver_id,
            };
            if self.drivers.contains_key(&who) {
                continue;
            }
            let mut index = index.write().unwrap_or_else(|e| e.into_inner());
            if index
                .get(&who.driver_id)
                .is_some_and(|p| p.fix.ts_ms <= last_ts_ms)
            {
                index.remove(&who.driver_id);
            }
        }
    }

    /// Keeps the detector of a driver served here in step with check-ins and departures made
    /// elsewhere (a manual check-in on another node, say).
    pub(super) fn note_remote_event(&self, event: &Event) {
        let who = DriverKey {
            fleet: event.fleet.clone(),
            driver_id: event.driver_id.clone(),
        };
        let Some(slot) = self.drivers.get(&who).map(|s| s.clone()) else {
            return;
        };
        let mut state = lock(&slot.state);
        match &event.kind {
            EventKind::StopCheckedIn {
                key, arrived_at_ms, ..
            } if state.arrival.phase(key) == Some(StopPhase::Pending) => {
                state.arrival.mark_arrived(key, *arrived_at_ms);
            }
            EventKind::StopDeparted { key, .. } => {
                state.arrival.remove_stop(key, &self.cfg.arrival)
            }
            _ => {}
        }
    }

    /// Publishes the latest position of every driver this node serves (after a bus reconnect, or
    /// when another node asks), so that every node's index converges.
    pub fn republish_own(&self) -> usize {
        let online: Vec<DriverKey> = self
            .drivers
            .iter()
            .filter(|e| lock(&e.value().state).online)
            .map(|e| e.key().clone())
            .collect();
        let mut sent = 0;
        for who in online {
            if let Some(position) = self.position(&who.fleet, &who.driver_id) {
                self.bus.publish(Outgoing::Position {
                    fleet: who.fleet,
                    position,
                });
                sent += 1;
            }
        }
        tracing::info!(drivers = sent, "republished own positions to the bus");
        sent
    }
}
