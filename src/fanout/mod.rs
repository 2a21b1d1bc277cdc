//! Fan-out of live positions and events to watchers (admin maps, services).
//!
//! Positions are *coalesced*: each watcher has a pending map, driver → latest position, that the
//! ingest path overwrites (latest fix wins) and the watcher's own task drains once per flush
//! interval. Superseded positions are simply overwritten, so a slow watcher costs at most one
//! entry per driver in scope and the ingest path never waits for it. Events are never coalesced:
//! they go through a bounded queue, and a watcher whose queue is full is marked *lagging* and
//! closed, so that it resubscribes and starts again from a fresh snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use tokio::sync::{mpsc, Notify};

use crate::geo::index::{DriverId, LivePosition};
use crate::geo::BBox;
use crate::hub::events::Event;

/// Events a watcher may have queued before it counts as too far behind.
pub const EVENT_QUEUE: usize = 1_024;

/// What a watcher wants to see: positions inside `bbox` plus the listed drivers wherever they
/// are (a union). An empty scope (before the first `subscribe`) matches nothing.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub bbox: Option<BBox>,
    pub drivers: HashSet<String>,
}

impl Scope {
    /// True when a driver at (lat, lon) is in scope.
    pub fn matches(&self, driver_id: &str, lat: f64, lon: f64) -> bool {
        self.drivers.contains(driver_id) || self.bbox.is_some_and(|b| b.contains(lat, lon))
    }
}

/// The shared half of one watcher: written by the ingest path, drained by the socket task.
#[derive(Debug)]
pub struct Watcher {
    pub id: u64,
    pub fleet: Arc<str>,
    scope: RwLock<Scope>,
    pending: Mutex<HashMap<DriverId, LivePosition>>,
    events: mpsc::Sender<Arc<Event>>,
    lagging: AtomicBool,
    /// Wakes the socket task when the watcher starts lagging.
    pub wake: Notify,
}

impl Watcher {
    /// Replaces the scope and forgets pending positions (a snapshot follows).
    pub fn set_scope(&self, scope: Scope) {
        *self.scope.write().unwrap_or_else(|e| e.into_inner()) = scope;
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub fn scope(&self) -> Scope {
        self.scope.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes the coalesced positions gathered since the last flush.
    pub fn take_pending(&self) -> Vec<LivePosition> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.drain().map(|(_, p)| p).collect()
    }

    /// True once an event could not be queued: the watcher must be closed.
    pub fn is_lagging(&self) -> bool {
        self.lagging.load(Ordering::Relaxed)
    }

    fn offer_position(&self, pos: &LivePosition, previous: Option<&LivePosition>) {
        let in_scope = {
            let scope = self.scope.read().unwrap_or_else(|e| e.into_inner());
            scope.matches(&pos.driver_id, pos.fix.lat, pos.fix.lon)
                // Leaving the viewport is news too: the watcher learns the marker went out.
                || previous.is_some_and(|p| scope.matches(&p.driver_id, p.fix.lat, p.fix.lon))
        };
        if in_scope {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pos.driver_id.clone(), pos.clone());
        }
    }

    fn offer_event(&self, event: &Arc<Event>) {
        let in_scope = {
            let scope = self.scope.read().unwrap_or_else(|e| e.into_inner());
            scope.drivers.contains(&*event.driver_id)
                || event
                    .position
                    .is_some_and(|(lat, lon)| scope.bbox.is_some_and(|b| b.contains(lat, lon)))
        };
        if in_scope && self.events.try_send(event.clone()).is_err() {
            self.lagging.store(true, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }
}

/// The receiving half of a watcher, owned by its socket task.
pub struct WatcherHandle {
    pub watcher: Arc<Watcher>,
    pub events: mpsc::Receiver<Arc<Event>>,
    fanout: Arc<Fanout>,
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.fanout.remove(&self.watcher);
    }
}

/// Every watcher of every fleet on this node.
#[derive(Debug, Default)]
pub struct Fanout {
    fleets: DashMap<Arc<str>, HashMap<u64, Arc<Watcher>>>,
    next_id: AtomicU64,
}

impl Fanout {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a watcher of `fleet` with an empty scope; it is removed when the handle drops.
    pub fn register(self: &Arc<Self>, fleet: Arc<str>) -> WatcherHandle {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let watcher = Arc::new(Watcher {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            fleet: fleet.clone(),
            scope: RwLock::new(Scope::default()),
            pending: Mutex::new(HashMap::new()),
            events: tx,
            lagging: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.fleets
            .entry(fleet)
            .or_default()
            .insert(watcher.id, watcher.clone());
        WatcherHandle {
            watcher,
            events: rx,
            fanout: self.clone(),
        }
    }

    fn remove(&self, watcher: &Watcher) {
        if let Some(mut fleet) = self.fleets.get_mut(&watcher.fleet) {
            fleet.remove(&watcher.id);
        }
        self.fleets.remove_if(&watcher.fleet, |_, m| m.is_empty());
    }

    /// Number of watchers connected on this node.
    pub fn watcher_count(&self) -> usize {
        self.fleets.iter().map(|f| f.len()).sum()
    }

    /// Offers a new position to every watcher of its fleet. Never blocks on a watcher.
    pub fn position(&self, fleet: &str, pos: &LivePosition, previous: Option<&LivePosition>) {
        if let Some(watchers) = self.fleets.get(fleet) {
            for w in watchers.values() {
                w.offer_position(pos, previous);
            }
        }
    }

    /// Offers an event to every watcher of its fleet. Never blocks on a watcher.
    pub fn event(&self, event: Arc<Event>) {
        if let Some(watchers) = self.fleets.get(&*event.fleet) {
            for w in watchers.values() {
                w.offer_event(&event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::Fix;
    use crate::hub::events::EventKind;

    fn pos(id: &str, lat: f64, lon: f64, ts_ms: i64) -> LivePosition {
        LivePosition {
            driver_id: id.into(),
            fix: Fix::at(ts_ms, lat, lon),
            received_ms: 0,
        }
    }

    #[test]
    fn coalesces_latest_wins_and_scopes_by_fleet() {
        let fanout = Fanout::new();
        let h = fanout.register("f1".into());
        h.watcher.set_scope(Scope {
            bbox: Some(BBox::new(0.0, 0.0, 10.0, 10.0).unwrap()),
            drivers: HashSet::new(),
        });
        for ts in 0..100 {
            fanout.position("f1", &pos("d1", 5.0, 5.0, ts), None);
        }
        fanout.position("f2", &pos("d2", 5.0, 5.0, 0), None);
        fanout.position("f1", &pos("far", 50.0, 50.0, 0), None);
        let got = h.watcher.take_pending();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].fix.ts_ms, 99);
        assert!(h.watcher.take_pending().is_empty());
    }

    #[test]
    fn full_event_queue_marks_lagging_and_drop_unregisters() {
        let fanout = Fanout::new();
        let h = fanout.register("f".into());
        h.watcher.set_scope(Scope {
            bbox: None,
            drivers: ["d".to_string()].into(),
        });
        let ev = Arc::new(Event {
            fleet: "f".into(),
            driver_id: "d".into(),
            ts_ms: 0,
            position: None,
            kind: EventKind::DriverOnline,
        });
        for _ in 0..EVENT_QUEUE {
            fanout.event(ev.clone());
        }
        assert!(!h.watcher.is_lagging());
        fanout.event(ev);
        assert!(h.watcher.is_lagging());
        assert_eq!(fanout.watcher_count(), 1);
        drop(h);
        assert_eq!(fanout.watcher_count(), 0);
    }
}
