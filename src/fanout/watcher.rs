//! One watcher: its scope, its pending positions and events, and the handle its socket task
//! owns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, Notify};

use super::{Change, Fanout, Scope, SharedEvent};
use crate::model::{DriverId, LivePosition};

/// How a subscriber receives positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Coalesced: the latest position per driver, once per flush interval.
    Latest,
    /// Every position, in order per driver, through a queue of this many positions.
    All { queue: usize },
}

/// The shared half of one watcher: written by the flusher (or ingest, for `all` streams),
/// drained by the socket task.
#[derive(Debug)]
pub struct Watcher {
    pub id: u64,
    pub fleet: Arc<str>,
    pub(super) scope: RwLock<Scope>,
    pub(super) pending: Mutex<HashMap<DriverId, Arc<Change>>>,
    /// `Delivery::All`: every position goes here instead of `pending`.
    pub(super) every: Option<mpsc::Sender<LivePosition>>,
    /// Live events (maps); `None` for streams, which read the event log instead.
    pub(super) events: Option<mpsc::Sender<Arc<SharedEvent>>>,
    pub(super) lagging: AtomicBool,
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
    pub(super) fn offer_changes(&self, changes: &[Arc<Change>]) {
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
    pub(super) fn offer_every(&self, pos: &LivePosition, queue: &mpsc::Sender<LivePosition>) {
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

    pub(super) fn offer_event(&self, shared: &Arc<SharedEvent>) {
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
    pub(super) fanout: Arc<Fanout>,
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.fanout.remove(&self.watcher);
    }
}
