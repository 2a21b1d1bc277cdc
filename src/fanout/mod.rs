//! Fan-out of live positions and events to watchers (admin maps, services).
//!
//! Positions are *coalesced*: each watcher has a pending map, driver → latest position, that the
//! ingest path overwrites (latest fix wins) and the watcher's own task drains once per flush
//! interval. Superseded positions are simply overwritten, so a slow watcher costs at most one
//! entry per driver in scope and the ingest path never waits for it. Events are never coalesced:
//! they go through a bounded queue, and a watcher whose queue is full is marked *lagging* and
//! closed, so that it resubscribes and starts again from a fresh snapshot.
//!
//! Service streams in `all` mode ([`Delivery::All`]) get every position instead, in order, through
//! a bounded queue per stream; a stream whose queue fills is marked lagging and disconnected with
//! a reason, never silently thinned.

pub mod feed;

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

/// How a [`Scope`]'s bbox and drivers combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Combine {
    /// A map's viewport: inside the bbox, or one of the drivers wherever they are. Nothing when
    /// both are empty (before the first `subscribe`).
    #[default]
    Union,
    /// A stream's filter: inside the bbox (if any) and one of the drivers (if any). Everything of
    /// the fleet when both are empty.
    Intersection,
}

/// What a subscriber wants to see: positions inside `bbox` and/or of the listed drivers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub bbox: Option<BBox>,
    pub drivers: HashSet<String>,
    pub combine: Combine,
}

impl Scope {
    /// True when a driver at (lat, lon) is in scope.
    pub fn matches(&self, driver_id: &str, lat: f64, lon: f64) -> bool {
        let in_box = |b: &BBox| b.contains(lat, lon);
        match self.combine {
            Combine::Union => {
                self.drivers.contains(driver_id) || self.bbox.is_some_and(|b| in_box(&b))
            }
            Combine::Intersection => {
                (self.drivers.is_empty() || self.drivers.contains(driver_id))
                    && self.bbox.is_none_or(|b| in_box(&b))
            }
        }
    }
}

/// How a subscriber receives positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Coalesced: the latest position per driver, drained once per flush interval.
    Latest,
    /// Every position, in order per driver, through a queue of this many positions.
    All { queue: usize },
}

/// The shared half of one watcher: written by the ingest path, drained by the socket task.
#[derive(Debug)]
pub struct Watcher {
    pub id: u64,
    pub fleet: Arc<str>,
    scope: RwLock<Scope>,
    pending: Mutex<HashMap<DriverId, LivePosition>>,
    /// `Delivery::All`: every position goes here instead of `pending`.
    every: Option<mpsc::Sender<LivePosition>>,
    /// Live events (maps); `None` for streams, which read the event log instead.
    events: Option<mpsc::Sender<Arc<Event>>>,
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
        let taken: Vec<LivePosition> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().map(|(_, p)| p).collect()
        };
        if !taken.is_empty() {
            metrics::counter!(crate::metrics::FANOUT_FRAMES).increment(1);
            metrics::counter!(crate::metrics::FANOUT_POSITIONS).increment(taken.len() as u64);
        }
        taken
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
        if !in_scope {
            return;
        }
        match &self.every {
            None => {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(pos.driver_id.clone(), pos.clone());
            }
            Some(queue) => {
                if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(pos.clone()) {
                    if !self.lagging.swap(true, Ordering::Relaxed) {
                        metrics::counter!(crate::metrics::STREAM_OVERFLOWS).increment(1);
                    }
                    self.wake.notify_one();
                }
            }
        }
    }

    fn offer_event(&self, event: &Arc<Event>) {
        let Some(events) = &self.events else { return };
        let in_scope = {
            let scope = self.scope.read().unwrap_or_else(|e| e.into_inner());
            scope.drivers.contains(&*event.driver_id)
                || event
                    .position
                    .is_some_and(|(lat, lon)| scope.bbox.is_some_and(|b| b.contains(lat, lon)))
        };
        if in_scope
            && events.try_send(event.clone()).is_err()
            && !self.lagging.swap(true, Ordering::Relaxed)
        {
            metrics::counter!(crate::metrics::FANOUT_LAGGING).increment(1);
            self.wake.notify_one();
        }
    }
}

/// The receiving half of a watcher, owned by its socket task.
pub struct WatcherHandle {
    pub watcher: Arc<Watcher>,
    /// Live events; closed at once for a stream (it reads the event log).
    pub events: mpsc::Receiver<Arc<Event>>,
    /// Every position, for `Delivery::All`.
    pub every: Option<mpsc::Receiver<LivePosition>>,
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

    /// Registers a map watcher of `fleet`: empty scope, coalesced positions, live events. It is
    /// removed when the handle drops.
    pub fn register(self: &Arc<Self>, fleet: Arc<str>) -> WatcherHandle {
        self.add(fleet, Scope::default(), Delivery::Latest, true)
    }

    /// Registers a service stream of `fleet` with its filter; no live events (streams read the
    /// durable event log). Removed when the handle drops.
    pub fn register_stream(
        self: &Arc<Self>,
        fleet: Arc<str>,
        scope: Scope,
        delivery: Delivery,
    ) -> WatcherHandle {
        self.add(fleet, scope, delivery, false)
    }

    fn add(
        self: &Arc<Self>,
        fleet: Arc<str>,
        scope: Scope,
        delivery: Delivery,
        live_events: bool,
    ) -> WatcherHandle {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let (every_tx, every_rx) = match delivery {
            Delivery::Latest => (None, None),
            Delivery::All { queue } => {
                let (tx, rx) = mpsc::channel(queue.max(1));
                (Some(tx), Some(rx))
            }
        };
        let watcher = Arc::new(Watcher {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            fleet: fleet.clone(),
            scope: RwLock::new(scope),
            pending: Mutex::new(HashMap::new()),
            every: every_tx,
            events: live_events.then_some(tx),
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
            every: every_rx,
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
            ..Scope::default()
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
            drivers: ["d".to_string()].into(),
            ..Scope::default()
        });
        let ev = Arc::new(Event {
            id: None,
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

    #[test]
    fn all_delivery_keeps_every_position_in_order_and_overflow_marks_lagging() {
        let fanout = Fanout::new();
        let filter = Scope {
            drivers: ["d1".to_string()].into(),
            combine: Combine::Intersection,
            ..Scope::default()
        };
        let mut h = fanout.register_stream("f".into(), filter, Delivery::All { queue: 3 });
        for ts in 0..3 {
            fanout.position("f", &pos("d1", 5.0, 5.0, ts), None);
            fanout.position("f", &pos("d2", 5.0, 5.0, ts), None);
        }
        assert!(!h.watcher.is_lagging());
        let every = h.every.as_mut().unwrap();
        let got: Vec<i64> = (0..3)
            .map(|_| every.try_recv().unwrap().fix.ts_ms)
            .collect();
        assert_eq!(got, [0, 1, 2]);
        for ts in 3..7 {
            fanout.position("f", &pos("d1", 5.0, 5.0, ts), None);
        }
        assert!(h.watcher.is_lagging());
        assert!(h.watcher.take_pending().is_empty());
    }

    #[test]
    fn a_stream_filter_is_an_intersection_and_empty_means_the_whole_fleet() {
        let b = BBox::new(0.0, 0.0, 10.0, 10.0).unwrap();
        let everything = Scope {
            combine: Combine::Intersection,
            ..Scope::default()
        };
        assert!(everything.matches("any", 50.0, 50.0));
        let both = Scope {
            bbox: Some(b),
            drivers: ["d1".to_string()].into(),
            combine: Combine::Intersection,
        };
        assert!(both.matches("d1", 5.0, 5.0));
        assert!(!both.matches("d1", 50.0, 50.0));
        assert!(!both.matches("d2", 5.0, 5.0));
        let viewport = Scope {
            combine: Combine::Union,
            ..both
        };
        assert!(viewport.matches("d1", 50.0, 50.0) && viewport.matches("d2", 5.0, 5.0));
        assert!(!Scope::default().matches("d1", 5.0, 5.0));
    }
}
