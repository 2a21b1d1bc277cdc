//! The ingest pipeline: order/dedupe → live index → arrival detection → events.
//!
//! One `Hub` per process. Per driver it keeps the anti-replay window, the newest device time and
//! the arrival tracker of its active trips; per fleet, the live R-tree. Work under a lock is pure
//! and short; database writes happen after the locks are released.

pub mod events;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;

use crate::fanout::{Fanout, Scope};
use crate::geo::arrival::{ArrivalConfig, ArrivalTracker, Decision, Geofence, StopKey, StopPhase};
use crate::geo::index::{DriverId, LiveIndex, LivePosition, Nearby};
use crate::geo::seq_window::SeqWindow;
use crate::geo::{BBox, Fix};
use crate::protocol::time::now_ms;
use crate::store::track::{TrackPoint, TrackWriter};
use crate::store::{CheckinOutcome, Store, StoreError, TripRecord};
use events::{CheckinSource, Event, EventKind};

/// Tunables of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    pub arrival: ArrivalConfig,
    /// A driver silent (server time) for longer goes offline, ms. Default 120,000.
    pub presence_timeout_ms: i64,
    /// How far ahead of server time a fix's `ts` may be, ms. Default 60,000.
    pub max_future_ms: i64,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            arrival: ArrivalConfig::default(),
            presence_timeout_ms: 120_000,
            max_future_ms: 60_000,
        }
    }
}

/// Who is sending: the token's fleet and subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DriverKey {
    pub fleet: Arc<str>,
    pub driver_id: DriverId,
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

/// The outcome of one fix.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub status: IngestStatus,
    pub checkins: Vec<CheckinNotice>,
}

#[derive(Debug, Default)]
struct DriverState {
    seqs: SeqWindow,
    newest_ts_ms: Option<i64>,
    /// Server time of the last accepted fix (presence).
    last_seen_ms: i64,
    online: bool,
    arrival: ArrivalTracker,
}

/// The hub: live state of every driver and fleet on this node.
#[derive(Debug)]
pub struct Hub {
    pub cfg: HubConfig,
    pub fanout: Arc<Fanout>,
    pub store: Store,
    track: TrackWriter,
    fleets: DashMap<Arc<str>, Arc<RwLock<LiveIndex>>>,
    drivers: DashMap<DriverKey, Arc<Mutex<DriverState>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn new(cfg: HubConfig, store: Store, track: TrackWriter, fanout: Arc<Fanout>) -> Self {
        Self {
            cfg,
            fanout,
            store,
            track,
            fleets: DashMap::new(),
            drivers: DashMap::new(),
        }
    }

    fn driver(&self, key: &DriverKey) -> Arc<Mutex<DriverState>> {
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

    /// Loads every active trip from the store into arrival detection (at start-up).
    pub async fn restore(&self) -> Result<usize, StoreError> {
        let trips = self.store.active_trips().await?;
        for trip in &trips {
            self.add_trip(trip);
        }
        Ok(trips.len())
    }

    /// Starts detecting arrivals for a stored trip's stops (in their stored phase).
    pub fn add_trip(&self, trip: &TripRecord) {
        let key = DriverKey {
            fleet: trip.fleet.as_str().into(),
            driver_id: trip.driver_id.as_str().into(),
        };
        let state = self.driver(&key);
        let mut state = lock(&state);
        let trip_id: Arc<str> = trip.id.as_str().into();
        for s in &trip.stops {
            let phase = match (s.status.as_str(), s.arrived_at) {
                ("pending", _) => StopPhase::Pending,
                ("arrived", Some(at)) => StopPhase::Arrived { arrived_at_ms: at },
                _ => continue, // departed: nothing left to detect
            };
            let fence = Geofence {
                key: StopKey {
                    trip_id: trip_id.clone(),
                    stop_id: s.id.as_str().into(),
                },
                lat: s.lat,
                lon: s.lon,
                radius_m: s.radius_m,
            };
            state.arrival.add_stop(fence, phase, &self.cfg.arrival);
        }
    }

    /// Marks a seq as processed without a fix (the fix was refused), so the ack covers it.
    /// Returns false when the seq was seen before.
    pub fn note_seq(&self, who: &DriverKey, seq: u64) -> bool {
        lock(&self.driver(who)).seqs.insert(seq)
    }

    /// Highest seq processed for the driver (what `ack` reports).
    pub fn highest_seq(&self, who: &DriverKey) -> Option<u64> {
        self.drivers.get(who).and_then(|d| lock(&d).seqs.highest())
    }

    /// Runs one validated fix through the pipeline. Waits only for the history queue when it is
    /// full and for the database when the fix checks the driver in (rare, and it must be durable
    /// before the phone is told).
    pub async fn ingest(&self, who: &DriverKey, seq: u64, fix: Fix) -> Ingested {
        let received_ms = now_ms();
        let (status, came_online, decisions) = {
            let state = self.driver(who);
            let mut state = lock(&state);
            if !state.seqs.insert(seq) {
                return Ingested {
                    status: IngestStatus::Duplicate,
                    checkins: Vec::new(),
                };
            }
            let newest = state.newest_ts_ms.is_none_or(|n| fix.ts_ms > n);
            if !newest {
                (IngestStatus::Late, false, Vec::new())
            } else {
                state.newest_ts_ms = Some(fix.ts_ms);
                state.last_seen_ms = received_ms;
                let came_online = !state.online;
                state.online = true;
                let decisions = state.arrival.observe(&fix, &self.cfg.arrival);
                (IngestStatus::Accepted, came_online, decisions)
            }
        };

        self.track
            .push(TrackPoint {
                fleet: who.fleet.clone(),
                driver_id: who.driver_id.clone(),
                fix,
                received_ms,
            })
            .await;
        if status != IngestStatus::Accepted {
            return Ingested {
                status,
                checkins: Vec::new(),
            };
        }

        let position = LivePosition {
            driver_id: who.driver_id.clone(),
            fix,
            received_ms,
        };
        let previous = self
            .index_or_create(&who.fleet)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .upsert(position.clone());
        self.fanout
            .position(&who.fleet, &position, previous.as_ref());
        if came_online {
            self.presence_event(
                who,
                received_ms,
                Some((fix.lat, fix.lon)),
                EventKind::DriverOnline,
            );
        }

        let mut checkins = Vec::new();
        for decision in decisions {
            if let Some(notice) = self.apply_decision(who, &fix, decision).await {
                checkins.push(notice);
            }
        }
        Ingested { status, checkins }
    }

    /// Persists a detector decision, then publishes it. A check-in that cannot be stored is
    /// handed back to detection (stop pending again) so a later fix retries it.
    async fn apply_decision(
        &self,
        who: &DriverKey,
        fix: &Fix,
        decision: Decision,
    ) -> Option<CheckinNotice> {
        let position = Some((fix.lat, fix.lon));
        match decision {
            Decision::CheckIn {
                key,
                arrived_at_ms,
                confirmed_at_ms,
            } => {
                let event = Event {
                    fleet: who.fleet.clone(),
                    driver_id: who.driver_id.clone(),
                    ts_ms: confirmed_at_ms,
                    position,
                    kind: EventKind::StopCheckedIn {
                        key: key.clone(),
                        arrived_at_ms,
                        checked_in_at_ms: confirmed_at_ms,
                        source: CheckinSource::Auto,
                    },
                };
                let stored = self.store.record_checkin(&event).await;
                match stored {
                    Ok(outcome) => {
                        let inserted = outcome.checkin.is_some();
                        self.publish_checkin(event, outcome);
                        inserted.then_some(CheckinNotice {
                            key,
                            arrived_at_ms,
                            checked_in_at_ms: confirmed_at_ms,
                        })
                    }
                    Err(e) => {
                        tracing::error!(error = %e, trip = %key.trip_id, stop = %key.stop_id, "check-in not stored; will retry");
                        let state = self.driver(who);
                        lock(&state).arrival.set_phase(&key, StopPhase::Pending);
                        None
                    }
                }
            }
            Decision::Departure {
                key,
                departed_at_ms,
            } => {
                let event = Event {
                    fleet: who.fleet.clone(),
                    driver_id: who.driver_id.clone(),
                    ts_ms: departed_at_ms,
                    position,
                    kind: EventKind::StopDeparted {
                        key: key.clone(),
                        departed_at_ms,
                    },
                };
                match self
                    .store
                    .record_departure(&key, departed_at_ms, &event)
                    .await
                {
                    Ok(true) => self.fanout.event(Arc::new(event)),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, trip = %key.trip_id, stop = %key.stop_id, "departure not stored")
                    }
                }
                let state = self.driver(who);
                lock(&state).arrival.remove_stop(&key, &self.cfg.arrival);
                None
            }
        }
    }

    fn publish_checkin(&self, event: Event, outcome: CheckinOutcome) {
        if outcome.checkin.is_some() {
            self.fanout.event(Arc::new(event));
        }
        if let Some(done) = outcome.trip_completed {
            self.fanout.event(Arc::new(done));
        }
    }

    /// The REST fallback: checks a driver in at a stop now (server time). `Ok(None)` when the stop
    /// was already checked in.
    pub async fn manual_checkin(
        &self,
        trip: &TripRecord,
        stop_id: &str,
    ) -> Result<CheckinOutcome, StoreError> {
        let who = DriverKey {
            fleet: trip.fleet.as_str().into(),
            driver_id: trip.driver_id.as_str().into(),
        };
        let key = StopKey {
            trip_id: trip.id.as_str().into(),
            stop_id: stop_id.into(),
        };
        let now = now_ms();
        let position = self
            .position(&trip.fleet, &trip.driver_id)
            .map(|p| (p.fix.lat, p.fix.lon));
        let event = Event {
            fleet: who.fleet.clone(),
            driver_id: who.driver_id.clone(),
            ts_ms: now,
            position,
            kind: EventKind::StopCheckedIn {
                key: key.clone(),
                arrived_at_ms: now,
                checked_in_at_ms: now,
                source: CheckinSource::Manual,
            },
        };
        let outcome = self.store.record_checkin(&event).await?;
        if outcome.checkin.is_some() {
            lock(&self.driver(&who)).arrival.mark_arrived(&key, now);
        }
        self.publish_checkin(event, outcome.clone());
        Ok(outcome)
    }

    fn presence_event(
        &self,
        who: &DriverKey,
        ts_ms: i64,
        position: Option<(f64, f64)>,
        kind: EventKind,
    ) {
        let event = Arc::new(Event {
            fleet: who.fleet.clone(),
            driver_id: who.driver_id.clone(),
            ts_ms,
            position,
            kind,
        });
        self.fanout.event(event.clone());
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.record_event(&event).await {
                tracing::warn!(error = %e, "presence event not stored");
            }
        });
    }

    /// Takes drivers silent for longer than the presence timeout offline: out of the live index,
    /// with a `driver.offline` event. Returns how many went offline.
    pub fn sweep_presence(&self, now_ms: i64) -> usize {
        let mut gone = Vec::new();
        for entry in self.drivers.iter() {
            let mut state = lock(entry.value());
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
            self.presence_event(
                who,
                now_ms,
                last.map(|p| (p.fix.lat, p.fix.lon)),
                EventKind::DriverOffline,
            );
        }
        gone.len()
    }

    /// The live position of one driver of a fleet.
    pub fn position(&self, fleet: &str, driver_id: &str) -> Option<LivePosition> {
        self.index(fleet)?
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(driver_id)
            .cloned()
    }

    /// Live positions of a fleet inside a bbox.
    pub fn in_bbox(&self, fleet: &str, bbox: &BBox) -> Vec<LivePosition> {
        self.index(fleet)
            .map(|i| i.read().unwrap_or_else(|e| e.into_inner()).in_bbox(bbox))
            .unwrap_or_default()
    }

    /// The `limit` nearest live drivers of a fleet by great-circle distance.
    pub fn nearest(
        &self,
        fleet: &str,
        lat: f64,
        lon: f64,
        limit: usize,
        radius_m: Option<f64>,
    ) -> Vec<Nearby> {
        self.index(fleet)
            .map(|i| {
                i.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .nearest(lat, lon, limit, radius_m)
            })
            .unwrap_or_default()
    }

    /// Every live position of a fleet in a watcher's scope (the snapshot after `subscribe`).
    pub fn snapshot(&self, fleet: &str, scope: &Scope) -> Vec<LivePosition> {
        let Some(index) = self.index(fleet) else {
            return Vec::new();
        };
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        let mut found: HashMap<DriverId, LivePosition> = HashMap::new();
        if let Some(b) = &scope.bbox {
            found.extend(
                index
                    .in_bbox(b)
                    .into_iter()
                    .map(|p| (p.driver_id.clone(), p)),
            );
        }
        for d in &scope.drivers {
            if let Some(p) = index.get(d) {
                found.insert(p.driver_id.clone(), p.clone());
            }
        }
        found.into_values().collect()
    }

    /// Number of drivers currently online on this node, all fleets.
    pub fn online_count(&self) -> usize {
        self.fleets
            .iter()
            .map(|f| f.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}
