//! Fan-out of live positions and events to watchers (admin maps, services).
//!
//! Positions are *coalesced* per fleet, not per watcher: ingest records each driver's latest
//! position in the fleet's change set (one map insert per fix, whatever the number of
//! watchers), and a flusher ([`Fanout::run_flusher`]) turns the set into shared [`Change`]s once
//! per flush interval and hands each watcher the ones in its scope. A change is encoded at most
//! once per wire format (JSON, protobuf), by the first watcher that sends it; every other
//! watcher copies the bytes. Each watcher keeps a pending map, driver → latest change, that its
//! socket task drains when woken, so a slow watcher costs at most one entry per driver in scope
//! and neither ingest nor the flusher ever waits for it. Events are never coalesced: each goes,
//! as one [`SharedEvent`] encoded at most once per codec, through a bounded queue per watcher,
//! and a watcher whose queue is full is marked *lagging* and closed, so that it resubscribes and
//! starts again from a fresh snapshot.
//!
//! Service streams in `all` mode ([`Delivery::All`]) get every position instead, in order, through
//! a bounded queue per stream, offered on ingest; a stream whose queue fills is marked lagging and
//! disconnected with a reason, never silently thinned.

pub mod feed;
mod scope;
mod shared;
mod watcher;

pub use scope::{Combine, Scope};
pub use shared::{Change, SharedEvent};
pub use watcher::{Delivery, Watcher, WatcherHandle};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, Notify};

use crate::model::Event;
use crate::model::{DriverId, LivePosition};
use crate::shutdown::Shutdown;

/// Events a watcher may have queued before it counts as too far behind.
pub const EVENT_QUEUE: usize = 1_024;

/// A driver's entry in its fleet's change set.
#[derive(Debug)]
struct Pending {
    position: LivePosition,
    before: Option<[f64; 2]>,
}

/// One fleet's watchers and what changed since the last flush.
#[derive(Debug, Default)]
struct FleetFanout {
    /// Coalesced watchers: maps and `latest` streams.
    latest: HashMap<u64, Arc<Watcher>>,
    /// `all` streams, offered every position on ingest.
    every: HashMap<u64, Arc<Watcher>>,
    /// Latest position per driver since the last flush; empty while nobody coalesces.
    changes: Mutex<HashMap<DriverId, Pending>>,
}

impl FleetFanout {
    fn is_empty(&self) -> bool {
        self.latest.is_empty() && self.every.is_empty()
    }
}

/// Every watcher of every fleet on this node.
#[derive(Debug, Default)]
pub struct Fanout {
    fleets: DashMap<Arc<str>, FleetFanout>,
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
            ready: Notify::new(),
        });
        let mut entry = self.fleets.entry(fleet).or_default();
        match delivery {
            Delivery::Latest => entry.latest.insert(watcher.id, watcher.clone()),
            Delivery::All { .. } => entry.every.insert(watcher.id, watcher.clone()),
        };
        drop(entry);
        WatcherHandle {
            watcher,
            events: rx,
            every: every_rx,
            fanout: self.clone(),
        }
    }

    fn remove(&self, watcher: &Watcher) {
        if let Some(mut fleet) = self.fleets.get_mut(&watcher.fleet) {
            fleet.latest.remove(&watcher.id);
            fleet.every.remove(&watcher.id);
        }
        self.fleets.remove_if(&watcher.fleet, |_, f| f.is_empty());
    }

    /// Number of watchers connected on this node.
    pub fn watcher_count(&self) -> usize {
        self.fleets
            .iter()
            .map(|f| f.latest.len() + f.every.len())
            .sum()
    }

    /// Records a new position of a driver (`previous`: where the index had it before). O(1) for
    /// coalesced watchers, whatever their number; `all` streams get it queued now. Never blocks
    /// on a watcher.
    pub fn position(&self, fleet: &str, pos: &LivePosition, previous: Option<&LivePosition>) {
        let Some(f) = self.fleets.get(fleet) else {
            return;
        };
        if !f.latest.is_empty() {
            let mut changes = f.changes.lock().unwrap_or_else(|e| e.into_inner());
            match changes.get_mut(&pos.driver_id) {
                Some(pending) => pending.position = pos.clone(),
                None => {
                    let before = previous.map(|p| [p.fix.lat, p.fix.lon]);
                    changes.insert(
                        pos.driver_id.clone(),
                        Pending {
                            position: pos.clone(),
                            before,
                        },
                    );
                }
            }
        }
        for w in f.every.values() {
            if let Some(queue) = &w.every {
                w.offer_every(pos, queue);
            }
        }
    }

    /// Hands every fleet's changes since the last flush to the coalesced watchers in scope.
    /// Called by [`Fanout::run_flusher`] once per flush interval; tests call it directly.
    pub fn flush(&self) {
        for f in self.fleets.iter() {
            let changes = std::mem::take(&mut *f.changes.lock().unwrap_or_else(|e| e.into_inner()));
            if changes.is_empty() {
                continue;
            }
            let changes: Vec<Arc<Change>> = changes
                .into_values()
                .map(|p| Arc::new(Change::new(p.position, p.before)))
                .collect();
            for w in f.latest.values() {
                w.offer_changes(&changes);
            }
        }
    }

    /// Flushes every `interval` until `shutdown` turns true or the fan-out is dropped. Watchers
    /// all flush on this one clock, so a fix waits at most one interval before it is sent.
    pub async fn run_flusher(fanout: Weak<Self>, interval: Duration, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            let Some(fanout) = fanout.upgrade() else {
                return;
            };
            fanout.flush();
        }
    }

    /// Offers an event to every watcher of its fleet. Never blocks on a watcher.
    pub fn event(&self, event: Arc<Event>) {
        if let Some(f) = self.fleets.get(&*event.fleet) {
            let shared = Arc::new(SharedEvent::new(event));
            // Only maps take live events, and maps are coalesced watchers (streams read the log).
            for w in f.latest.values() {
                w.offer_event(&shared);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::BBox;
    use crate::model::EventKind;
    use crate::model::Fix;
    use crate::protocol::codec::EncodedPosition;

    fn pos(id: &str, lat: f64, lon: f64, ts_ms: i64) -> LivePosition {
        LivePosition {
            driver_id: id.into(),
            fix: Fix::at(ts_ms, lat, lon),
            received_ms: 0,
            next_stop: None,
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
        assert!(
            h.watcher.take_pending().is_empty(),
            "nothing before the flush"
        );
        fanout.flush();
        let got = h.watcher.take_pending();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].position.fix.ts_ms, 99);
        assert!(h.watcher.take_pending().is_empty());
        fanout.flush();
        assert!(
            h.watcher.take_pending().is_empty(),
            "a flush sends a change once"
        );
    }

    #[test]
    fn one_change_is_shared_by_every_watcher_and_leaving_the_viewport_is_news() {
        let fanout = Fanout::new();
        let viewport = Scope {
            bbox: Some(BBox::new(0.0, 0.0, 10.0, 10.0).unwrap()),
            ..Scope::default()
        };
        let a = fanout.register("f".into());
        let b = fanout.register("f".into());
        a.watcher.set_scope(viewport.clone());
        b.watcher.set_scope(viewport);
        let inside = pos("d", 5.0, 5.0, 1);
        // Two fixes in one interval, the last one outside the box: the driver started inside.
        fanout.position("f", &pos("d", 6.0, 6.0, 2), Some(&inside));
        fanout.position("f", &pos("d", 50.0, 50.0, 3), Some(&pos("d", 6.0, 6.0, 2)));
        fanout.flush();
        let (got_a, got_b) = (a.watcher.take_pending(), b.watcher.take_pending());
        assert_eq!((got_a.len(), got_b.len()), (1, 1));
        assert_eq!(got_a[0].position.fix.ts_ms, 3, "latest wins, even outside");
        assert!(Arc::ptr_eq(&got_a[0], &got_b[0]), "one shared change");
        assert!(
            std::ptr::eq(got_a[0].json(), got_b[0].json()),
            "encoded once"
        );
        // Next interval: outside to outside is of no interest to this viewport.
        fanout.position(
            "f",
            &pos("d", 51.0, 51.0, 4),
            Some(&pos("d", 50.0, 50.0, 3)),
        );
        fanout.flush();
        assert!(a.watcher.take_pending().is_empty());
    }

    /// A map watcher of fleet `f` that follows driver `d`.
    fn watching_d(fanout: &Arc<Fanout>) -> WatcherHandle {
        let h = fanout.register("f".into());
        h.watcher.set_scope(Scope {
            drivers: ["d".to_string()].into(),
            ..Scope::default()
        });
        h
    }

    fn online_event_of_d() -> Arc<Event> {
        Arc::new(Event {
            id: None,
            fleet: "f".into(),
            driver_id: "d".into(),
            ts_ms: 1_790_000_000_000,
            position: None,
            kind: EventKind::DriverOnline,
        })
    }

    #[test]
    fn an_event_is_shared_by_every_watcher_and_encoded_once_per_codec() {
        use crate::protocol::codec::Codec;
        use crate::protocol::watch::WatchOut;
        let fanout = Fanout::new();
        let mut handles: Vec<_> = (0..2).map(|_| watching_d(&fanout)).collect();
        let ev = online_event_of_d();
        fanout.event(ev.clone());
        let a = handles[0].events.try_recv().unwrap();
        let b = handles[1].events.try_recv().unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one shared event");
        for codec in [Codec::Json, Codec::Proto] {
            let whole = codec.encode_watch(&WatchOut::Event { event: ev.clone() });
            assert_eq!(a.frame(codec), whole);
            assert_eq!(b.frame(codec), whole);
        }
        handles.clear();
        assert_eq!(fanout.watcher_count(), 0);
    }

    #[test]
    fn full_event_queue_marks_lagging_and_drop_unregisters() {
        let fanout = Fanout::new();
        let h = watching_d(&fanout);
        let ev = online_event_of_d();
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
        fanout.flush();
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
