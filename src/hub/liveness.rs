//! Presence: drivers going offline after silence, and the slots of long-idle drivers evicted.

use std::sync::Arc;

use super::{lock, Hub};
use crate::bus::Outgoing;
use crate::model::{now_ms, Battery, DriverKey, Event, EventKind};

impl Hub {
    pub(super) fn presence_event(
        &self,
        who: &DriverKey,
        ts_ms: i64,
        position: Option<(f64, f64)>,
        kind: EventKind,
    ) {
        // Stored first (in order, batched), published with its id by the presence writer.
        self.presence.record(Event {
            id: None,
            fleet: who.fleet.clone(),
            driver_id: who.driver_id.clone(),
            ts_ms,
            position,
            kind,
        });
    }

    /// Takes drivers silent for longer than the presence timeout offline: out of the live index,
    /// with a `driver.offline` event. Returns how many of this node's drivers went offline.
    /// Positions learnt from other nodes that are as old are dropped too, silently: their node is
    /// gone or cut off, and it owns their events.
    pub fn sweep_presence(&self, now_ms: i64) -> usize {
        let mut gone = Vec::new();
        for entry in self.drivers.iter() {
            let mut state = lock(&entry.value().state);
            if state.online && now_ms - state.last_seen_ms > self.cfg.presence_timeout_ms {
                state.online = false;
                gone.push(entry.key().clone());
            }
        }
        for who in &gone {
            let last = self.index(&who.fleet).and_then(|i| {
                i.write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&who.driver_id)
            });
            if let Some(last) = &last {
                self.bus.publish(Outgoing::Gone {
                    fleet: who.fleet.clone(),
                    driver_id: who.driver_id.clone(),
                    last_ts_ms: last.fix.ts_ms,
                });
            }
            self.presence_event(
                who,
                now_ms,
                last.map(|p| (p.fix.lat, p.fix.lon)),
                EventKind::DriverOffline,
            );
        }
        if self.bus.is_shared() {
            self.sweep_remote(now_ms);
        }
        self.evict_idle_slots(now_ms);
        gone.len()
    }

    /// Drops the slots of drivers offline and silent for [`HubConfig::slot_idle_ms`](super::HubConfig::slot_idle_ms) that nobody
    /// holds (no frame in progress: the map's is the only reference; `retain` holds the shard's
    /// lock, so none is taken meanwhile). Returns how many were dropped.
    pub(super) fn evict_idle_slots(&self, now_ms: i64) -> usize {
        let before = self.drivers.len();
        self.drivers.retain(|_, slot| {
            // A frame holds the slot, or only its order lock (taken before the slot is read).
            if Arc::strong_count(slot) > 1 || Arc::strong_count(&slot.frame) > 1 {
                return true;
            }
            let state = lock(&slot.state);
            state.online || now_ms - state.last_seen_ms <= self.cfg.slot_idle_ms
        });
        let evicted = before.saturating_sub(self.drivers.len());
        if evicted > 0 {
            tracing::debug!(evicted, "idle driver slots evicted");
        }
        evicted
    }

    /// Drivers this node holds in memory (online, or offline for less than
    /// [`HubConfig::slot_idle_ms`](super::HubConfig::slot_idle_ms)).
    pub fn driver_slots(&self) -> usize {
        self.drivers.len()
    }

    /// What a device said besides its fixes: its battery (kept for `GET /v1/drivers/{id}`),
    /// and, for a heartbeat (`alive`), that it is there: an online driver stays online (a phone
    /// paused while stationary only sends heartbeats), without its live position moving. A
    /// heartbeat never brings an offline driver online: that takes a position.
    pub fn note_device(&self, who: &DriverKey, battery: Option<Battery>, alive: bool) {
        if battery.is_none() && !alive {
            return;
        }
        let slot = self.slot(who);
        let mut state = lock(&slot.state);
        if battery.is_some() {
            state.battery = battery;
        }
        if alive && state.online {
            state.last_seen_ms = now_ms();
        }
    }

    /// The battery a driver's phone last reported, if it did.
    pub fn battery(&self, who: &DriverKey) -> Option<Battery> {
        self.drivers
            .get(who)
            .and_then(|slot| lock(&slot.state).battery)
    }
}
