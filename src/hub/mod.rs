//! The ingest pipeline: order/dedupe → live index → arrival detection → events.
//!
//! One `Hub` per process. Per driver *served by this node* it keeps the anti-replay window, the
//! newest device time and the arrival tracker of its active trips; per fleet, the live R-tree of
//! every driver, its own and (through the bus) other nodes'. Work under a lock is short and never
//! waits (index update, fan-out offers and bus queueing happen under the driver's lock, which is
//! what keeps one driver's positions in order); database writes happen after it is released.
//!
//! Driver state is built lazily from the database when a driver's first fix reaches this node
//! ([`Hub::ingest`] → hydration): its active trips, and the last minutes of its track replayed
//! through arrival detection. That is what lets a driver move to another node, or a node restart,
//! in the middle of a dwell without losing it, and the `UNIQUE (trip_id, stop_id)` of check-ins
//! keeps a race between two nodes to one check-in.

mod decide;
pub mod eta;
mod hydrate;
mod ingest;
mod liveness;
mod loader;
pub mod presence;
mod queries;
mod remote;
mod zones;

use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use tokio::sync::OnceCell;

use crate::bus::Bus;
use crate::fanout::feed::EventFeed;
use crate::fanout::Fanout;
use crate::geo::arrival::{ArrivalConfig, ArrivalTracker};
use crate::geo::index::LiveIndex;
use crate::geo::seq_window::SeqWindow;
use crate::model::{Battery, DriverKey, Event, Fix, StopKey, TrackingHint};
use crate::store::track::TrackWriter;
use crate::store::Store;
use presence::{Emitter, PresenceLog};

/// Tunables of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    pub arrival: ArrivalConfig,
    /// A driver silent (server time) for longer goes offline, ms. Default 120,000.
    pub presence_timeout_ms: i64,
    /// How far ahead of server time a fix's `ts` may be, ms. Default 60,000.
    pub max_future_ms: i64,
    /// An offline driver's in-memory slot (seq window, arrival state) is evicted this long after
    /// its last fix (server time), ms. Default 3,600,000 (1 h). A returning driver is hydrated
    /// again from the database (active trips, recent track), as after a restart; the track's
    /// primary key keeps a resent fix a no-op. Without eviction every driver ever seen stayed in
    /// memory until the node restarted (issue 16).
    pub slot_idle_ms: i64,
    /// The ETA model's tunables.
    pub eta: crate::eta::EtaConfig,
    /// When `stop.approaching` and `stop.late` fire.
    pub alerts: crate::eta::plan::AlertConfig,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            arrival: ArrivalConfig::default(),
            presence_timeout_ms: 120_000,
            max_future_ms: 60_000,
            slot_idle_ms: 3_600_000,
            eta: Default::default(),
            alerts: Default::default(),
        }
    }
}

/// What happened to one fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestStatus {
    /// Newest fix of the driver: moved the live position and ran arrival detection.
    Accepted,
    /// Older than the driver's newest: stored in history only.
    Late,
    /// Its seq was seen before: ignored (still acknowledged).
    Duplicate,
}

/// A check-in the driver should be told about. Times unix ms UTC, device time.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckinNotice {
    pub key: StopKey,
    pub arrived_at_ms: i64,
    pub checked_in_at_ms: i64,
}

/// What waiting for a commit ([`Hub::committed`]) ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Everything queued before the wait is committed: acknowledge it.
    Done,
    /// Not committed yet (storage down or behind): do not acknowledge; retry after this.
    NotYet(std::time::Duration),
    /// The node is draining and its writer has stopped: do not acknowledge.
    Stopped,
}

/// The outcome of one fix.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub status: IngestStatus,
    pub checkins: Vec<CheckinNotice>,
    /// The sampling the driver's phone should use from now on, when it changed with this fix
    /// (the driver socket sends it as a `tracking` message).
    pub tracking: Option<TrackingHint>,
}

/// One driver served by this node: its state, built from the database once (`ready`).
#[derive(Debug, Default)]
struct DriverSlot {
    ready: OnceCell<()>,
    /// Held while one frame of the driver is ingested ([`Hub::frame_order`]), so that every
    /// seq in the window has its fix queued for history before another frame reads the
    /// window's highest seq to acknowledge it.
    frame: Arc<tokio::sync::Mutex<()>>,
    /// Server time (unix ms) before which hydration is not retried after a failure.
    retry_after_ms: std::sync::atomic::AtomicI64,
    state: Mutex<DriverState>,
}

#[derive(Debug, Default)]
struct DriverState {
    seqs: SeqWindow,
    /// Seqs of frames refused whole (storage pressure, fix budget), with the server time of the
    /// refusal: acks stay below the lowest until the phone resends it (see [`Hub::highest_seq`]).
    refused: std::collections::BTreeMap<u64, i64>,
    newest_ts_ms: Option<i64>,
    /// Server time of the last accepted fix (presence).
    last_seen_ms: i64,
    online: bool,
    /// The phone's battery, as its tracking app last reported it.
    battery: Option<Battery>,
    /// The sampling last asked of the driver's phone.
    tracking: Option<TrackingHint>,
    /// The driver's newest accepted fixes, oldest first (see [`RecentFixes`]): what the stops of
    /// a trip created while the driver is already there are run against.
    recent: RecentFixes,
    arrival: ArrivalTracker,
    /// The newest accepted fix and its server receive time (ms): what ETAs start from.
    last_fix: Option<(Fix, i64)>,
    /// The driver's recent travelled speed (updated per fix: the only ETA work on ingest).
    pace: crate::eta::Pace,
    /// The driver's active trips as the ETA refresh sees them, oldest first.
    plans: Vec<crate::eta::plan::TripPlan>,
    /// The next stop and its ETA, carried on the driver's published positions.
    next_stop: Option<crate::model::NextStop>,
    /// (device time of the fix, server time) of the last ETA estimate.
    eta_basis: Option<(i64, i64)>,
    /// The driver's presence in its fleet's geofences.
    zones: crate::geo::zones::ZoneTracker,
    /// Automatic stops (stationary anywhere).
    movement: crate::geo::stops::StopDetector,
}

/// A driver's newest accepted fixes, thinned to one per [`RecentFixes::SPACING_MS`] and at most
/// [`RecentFixes::MAX`] (15 minutes at that spacing, the hydration window), so that a trip given
/// to a driver already parked at its first stop is checked in from what the node has already
/// seen (issue 15). 14 KiB per driver at the cap (180 fixes of 80 bytes).
#[derive(Debug, Default)]
pub(crate) struct RecentFixes(std::collections::VecDeque<Fix>);

impl RecentFixes {
    /// Fewest ms between two kept fixes: a 1 Hz phone keeps one in five.
    pub(crate) const SPACING_MS: i64 = 5_000;
    /// Most fixes kept.
    pub(crate) const MAX: usize = 180;

    pub(crate) fn push(&mut self, fix: Fix) {
        if self
            .0
            .back()
            .is_some_and(|last| fix.ts_ms - last.ts_ms < Self::SPACING_MS)
        {
            return;
        }
        if self.0.len() == Self::MAX {
            self.0.pop_front();
        }
        self.0.push_back(fix);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Fix> {
        self.0.iter()
    }
}

/// The hub: live state of every driver and fleet on this node.
#[derive(Debug)]
pub struct Hub {
    pub cfg: HubConfig,
    pub fanout: Arc<Fanout>,
    /// Wake-ups for event-log readers (streams, webhooks).
    pub feed: Arc<EventFeed>,
    pub store: Store,
    pub bus: Bus,
    track: TrackWriter,
    presence: PresenceLog,
    fleets: DashMap<Arc<str>, Arc<RwLock<LiveIndex>>>,
    drivers: DashMap<DriverKey, Arc<DriverSlot>>,
    fleet_etas: DashMap<Arc<str>, Arc<Mutex<eta::FleetEta>>>,
    zones: DashMap<Arc<str>, zones::FleetZones>,
    /// Held while a fleet's zones are first read (see `Hub::ensure_zones`).
    zones_loading: DashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>,
    /// Reads hydration's trips and tracks for many drivers at once.
    loader: loader::Loader,
    fix_counters: crate::metrics::FixCounters,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// `presence` must publish through an [`Emitter`] over the same `fanout`, `bus` and `feed`.
    pub fn new(
        cfg: HubConfig,
        store: Store,
        track: TrackWriter,
        presence: PresenceLog,
        emitter: Emitter,
    ) -> Self {
        let Emitter { fanout, bus, feed } = emitter;
        let loader = loader::Loader::new(store.clone());
        Self {
            cfg,
            fanout,
            feed,
            store,
            bus,
            track,
            presence,
            fleets: DashMap::new(),
            drivers: DashMap::new(),
            fleet_etas: DashMap::new(),
            zones: DashMap::new(),
            zones_loading: DashMap::new(),
            loader,
            fix_counters: crate::metrics::FixCounters::new(),
        }
    }

    fn slot(&self, key: &DriverKey) -> Arc<DriverSlot> {
        if let Some(d) = self.drivers.get(key) {
            return d.clone();
        }
        self.drivers.entry(key.clone()).or_default().clone()
    }

    fn index(&self, fleet: &str) -> Option<Arc<RwLock<LiveIndex>>> {
        self.fleets.get(fleet).map(|i| i.clone())
    }

    fn index_or_create(&self, fleet: &Arc<str>) -> Arc<RwLock<LiveIndex>> {
        if let Some(i) = self.fleets.get(&**fleet) {
            return i.clone();
        }
        self.fleets.entry(fleet.clone()).or_default().clone()
    }

    /// A new (unstored) event of a driver at `ts_ms`, placed where the live index has it.
    fn event_at_live_position(
        &self,
        who: &DriverKey,
        ts_ms: i64,
        kind: crate::model::EventKind,
    ) -> Event {
        Event {
            id: None,
            fleet: who.fleet.clone(),
            driver_id: who.driver_id.clone(),
            ts_ms,
            position: self
                .position(&who.fleet, &who.driver_id)
                .map(|p| (p.fix.lat, p.fix.lon)),
            kind,
        }
    }

    /// Delivers a stored event to this node's watchers and log readers, and to the other nodes.
    fn emit(&self, event: Arc<Event>) {
        self.emitter().emit(event);
    }

    fn emitter(&self) -> Emitter {
        Emitter {
            fanout: self.fanout.clone(),
            bus: self.bus.clone(),
            feed: self.feed.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
