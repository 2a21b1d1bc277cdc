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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, Notify};

use crate::geo::BBox;
use crate::model::Event;
use crate::model::{DriverId, LivePosition};
use crate::protocol::codec;
use crate::shutdown::Shutdown;

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
    /// Coalesced: the latest position per driver, once per flush interval.
    Latest,
    /// Every position, in order per driver, through a queue of this many positions.
    All { queue: usize },
}

/// One driver's latest position in a flush interval, shared by every watcher that sees it. Each
/// wire form is encoded once, by the first watcher that sends it.
#[derive(Debug)]
pub struct Change {
    pub position: LivePosition,
    /// Where the driver was when the interval began (`[lat, lon]` degrees; `None`: it was not
    /// in the index): a watcher whose scope held that point learns the driver left it.
    before: Option<[f64; 2]>,
    json: OnceLock<Box<str>>,
    proto: OnceLock<Box<[u8]>>,
}

impl Change {
    /// A change with nothing encoded yet.
    pub fn new(position: LivePosition, before: Option<[f64; 2]>) -> Self {
        Self {
            position,
            before,
            json: OnceLock::new(),
            proto: OnceLock::new(),
        }
    }

    fn in_scope(&self, scope: &Scope) -> bool {
        let p = &self.position;
        scope.matches(&p.driver_id, p.fix.lat, p.fix.lon)
            // Leaving the scope is news too: the watcher learns the marker went out.
            || self
                .before
                .is_some_and(|[lat, lon]| scope.matches(&p.driver_id, lat, lon))
    }
}

/// Each change is encoded at most once per codec, on first use, and shared by every watcher.
impl codec::EncodedPosition for Change {
    fn json(&self) -> &str {
        self.json
            .get_or_init(|| codec::position_json(&self.position))
    }

    fn proto(&self) -> &[u8] {
        self.proto
            .get_or_init(|| codec::position_pb_entry(&self.position))
    }
}

/// One event on its way to every map watcher in scope, encoded at most once per codec (a fleet's
/// connect storm sends a `driver.online` per driver to each whole-city map).
#[derive(Debug)]
pub struct SharedEvent {
    pub event: Arc<Event>,
    /// The `event` frame, by codec: `[json, proto]`.
    frames: [OnceLock<codec::Wire>; 2],
}

impl SharedEvent {
    pub fn new(event: Arc<Event>) -> Self {
        Self {
            event,
            frames: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The `event` frame in `codec`, encoded by the first watcher that asks.
    pub fn frame(&self, codec: codec::Codec) -> codec::Wire {
        let slot = match codec {
            codec::Codec::Json => &self.frames[0],
            codec::Codec::Proto => &self.frames[1],
        };
        slot.get_or_init(|| {
            codec.encode_watch(&crate::protocol::watch::WatchOut::Event {
                event: self.event.clone(),
            })
        })
        .clone()
    }
}

/// The shared half of one watcher: written by the flusher (or ingest, for `all` streams),
/// drained by the socket task.
#[derive(Debug)]
pub struct Watcher {
    pub id: u64,
    pub fleet: Arc<str>,
    scope: RwLock<Scope>,
    pending: Mutex<HashMap<DriverId, Arc<Change>>>,
    /// `Delivery::All`: every position goes here instead of `pending`.
    every: Option<mpsc::Sender<LivePosition>>,
    /// Live events (maps); `None` for streams, which read the event log instead.
    events: Option<mpsc::Sender<Arc<SharedEvent>>>,
    lagging: AtomicBool,
    /// Wakes the socket task when the watcher starts lagging.
    pub wake: Notify,
    /// Wakes the socket task when a flush left changes pending.
    pub ready: Notify,
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

    /// Takes the coalesced changes gathered since the last take.
    pub fn take_pending(&self) -> Vec<Arc<Change>> {
        let taken: Vec<Arc<Change>> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().map(|(_, c)| c).collect()
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

    /// Adds the changes in scope to `pending` (latest wins) and wakes the socket task.
    fn offer_changes(&self, changes: &[Arc<Change>]) {
        let scope = self.scope.read().unwrap_or_else(|e| e.into_inner());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut offered = false;
        for change in changes.iter().filter(|c| c.in_scope(&scope)) {
            pending.insert(change.position.driver_id.clone(), change.clone());
            offered = true;
        }
        if offered {
            self.ready.notify_one();
        }
    }

    /// `Delivery::All`: queues the position if it is in scope; a full queue marks the stream
    /// lagging.
    fn offer_every(&self, pos: &LivePosition, queue: &mpsc::Sender<LivePosition>) {
        let in_scope = self
            .scope
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .matches(&pos.driver_id, pos.fix.lat, pos.fix.lon);
        if !in_scope {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(pos.clone()) {
            if !self.lagging.swap(true, Ordering::Relaxed) {
                metrics::counter!(crate::metrics::STREAM_OVERFLOWS).increment(1);
            }
            self.wake.notify_one();
        }
    }

    fn offer_event(&self, shared: &Arc<SharedEvent>) {
        let Some(events) = &self.events else { return };
        let event = &shared.event;
        let in_scope = {
            let scope = self.scope.read().unwrap_or_else(|e| e.into_inner());
            scope.drivers.contains(&*event.driver_id)
                || event
                    .position
                    .is_some_and(|(lat, lon)| scope.bbox.is_some_and(|b| b.contains(lat, lon)))
        };
        if in_scope
            && events.try_send(shared.clone()).is_err()
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
    pub events: mpsc::Receiver<Arc<SharedEvent>>,
    /// Every position, for `Delivery::All`.
    pub every: Option<mpsc::Receiver<LivePosition>>,
    fanout: Arc<Fanout>,
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.fanout.remove(&self.watcher);
    }
}

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
    use crate::model::EventKind;
    use crate::model::Fix;
    use crate::protocol::codec::EncodedPosition;

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
