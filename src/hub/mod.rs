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

pub mod presence;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use tokio::sync::OnceCell;

use crate::bus::{Bus, Incoming, Outgoing};
use crate::fanout::feed::EventFeed;
use crate::fanout::{Combine, Fanout, Scope};
use crate::geo::arrival::{ArrivalConfig, ArrivalTracker, Decision, Geofence, StopPhase};
use crate::geo::index::{LiveIndex, Nearby};
use crate::geo::seq_window::SeqWindow;
use crate::geo::BBox;
use crate::metrics as m;
use crate::model::{
    now_ms, CheckinSource, DriverId, DriverKey, Event, EventKind, Fix, LivePosition, StopKey,
    StopStatus,
};
use crate::store::track::{TrackPoint, TrackWriter, WriterStopped};
use crate::store::{CheckinOutcome, Store, StoreError, TripRecord};
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
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            arrival: ArrivalConfig::default(),
            presence_timeout_ms: 120_000,
            max_future_ms: 60_000,
            slot_idle_ms: 3_600_000,
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
}

/// How long a refused seq holds a driver's acks back, ms ([`Hub::note_refused`]): far longer
/// than any retry hint the hub gives (5 s), short enough that a phone that dropped a refused
/// fix is not held back for long.
pub const REFUSED_TTL_MS: i64 = 5 * 60 * 1000;
/// Most refused seqs remembered per driver (a frame holds at most 1,000, a driver's fix burst is
/// 20,000). Past it further seqs are not recorded: acks still stay below the lowest recorded
/// one, but once those are all resent an ack could cover an unrecorded one. That needs more
/// than 20,000 distinct refused fixes outstanding for one driver.
const MAX_REFUSED: usize = 20_000;

/// How far back (device time, before the newest stored fix) hydration replays a driver's track:
/// several dwell times, so a dwell in progress is rebuilt whole. Milliseconds.
pub const HYDRATE_WINDOW_MS: i64 = 15 * 60 * 1000;
/// Most stored fixes hydration replays (15 min at 1 fix/s is 900).
pub const HYDRATE_MAX_FIXES: i64 = 1_000;

/// Longest a fix waits for hydration before it is processed without it, and how long the driver's
/// later fixes skip hydration after such a failure (the database is down or slow). Milliseconds.
///
/// 10 s, was 2 s: with acks that wait for commits, a fix cannot be acked while the database is
/// unreachable anyway, so waiting longer for the driver's trips costs no acks; and on a loaded
/// PostgreSQL the pool took 2-3 s to hand out a connection, so 2 s left a parked driver
/// without its trip, unchecked-in, for a minute (`tests/it/drain.rs` on PostgreSQL).
const HYDRATE_TIMEOUT_MS: u64 = 10_000;
const HYDRATE_RETRY_MS: i64 = 5_000;

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
    arrival: ArrivalTracker,
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
    fix_counters: crate::metrics::FixCounters,
}

/// A seq below the highest that the window has seen (or finds too old to tell), on a fix newer,
/// by device time, than every fix the driver has sent, is no resend: a resent fix carries its
/// original time. The phone's counter restarted (reinstall, cleared storage, or a wild seq that
/// pushed the window far ahead): the window starts again at this seq instead of dropping every
/// later fix as a duplicate (issue 16). Returns true when it did. The highest seq itself with a
/// new time stays a duplicate: that is a client reusing its last seq, not a restart.
fn restarted(who: &DriverKey, state: &mut DriverState, seq: Option<u64>, fix: &Fix) -> bool {
    let (Some(seq), Some(newest), Some(highest)) = (seq, state.newest_ts_ms, state.seqs.highest())
    else {
        return false;
    };
    if seq >= highest || fix.ts_ms <= newest {
        return false;
    }
    tracing::info!(
        driver = %who.driver_id,
        fleet = %who.fleet,
        seq,
        previous_highest = state.seqs.highest(),
        "driver's seq counter restarted (a seen seq on a newer fix): the anti-replay window starts again"
    );
    state.seqs.restart_at(seq);
    state.refused.clear();
    true
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
            fix_counters: crate::metrics::FixCounters::new(),
        }
    }

    fn slot(&self, key: &DriverKey) -> Arc<DriverSlot> {
        if let Some(d) = self.drivers.get(key) {
            return d.clone();
        }
        self.drivers.entry(key.clone()).or_default().clone()
    }

    /// The slot of a driver this node serves, hydrated from the database on first use. When the
    /// database cannot be read the fix is still processed (live position, history queue) and the
    /// next fix tries again.
    /// Also returns the check-ins that hydration's replay decided, for the frame that caused it
    /// to tell the driver (issue 16: a check-in decided while loading a driver, e.g. after a
    /// slow first load, was stored but never announced to the phone).
    async fn ready_slot(&self, who: &DriverKey) -> (Arc<DriverSlot>, Vec<CheckinNotice>) {
        use std::sync::atomic::Ordering::Relaxed;
        let slot = self.slot(who);
        if slot.ready.initialized() || now_ms() < slot.retry_after_ms.load(Relaxed) {
            return (slot, Vec::new());
        }
        let told = Mutex::new(Vec::new());
        let hydrated = slot
            .ready
            .get_or_try_init(|| async {
                let notices = self.hydrate(who, &slot).await?;
                *lock(&told) = notices;
                Ok::<(), String>(())
            })
            .await;
        if let Err(e) = hydrated {
            slot.retry_after_ms
                .store(now_ms() + HYDRATE_RETRY_MS, Relaxed);
            tracing::warn!(error = %e, driver = %who.driver_id, "driver state not loaded from the database; fixes go on without trips until it is");
        }
        let told = told.into_inner().unwrap_or_else(|e| e.into_inner());
        (slot, told)
    }

    /// Loads a driver's active trips and replays its recent track through arrival detection, so a
    /// dwell begun on another node (or before a restart) continues here. Decisions the replay
    /// reaches are applied like live ones: the store makes them idempotent.
    async fn hydrate(
        &self,
        who: &DriverKey,
        slot: &DriverSlot,
    ) -> Result<Vec<CheckinNotice>, String> {
        // Only the reads are bounded in time: once they are in, the replay and its decisions run
        // to the end, so no decision is lost half-way.
        let limit = std::time::Duration::from_millis(HYDRATE_TIMEOUT_MS);
        let load = async {
            let trips = self
                .store
                .active_trips_of(&who.fleet, &who.driver_id)
                .await?;
            let detecting = trips
                .iter()
                .any(|t| t.stops.iter().any(|s| s.status != StopStatus::Departed));
            let recent = if detecting {
                self.store
                    .recent_track(&who.fleet, &who.driver_id, HYDRATE_MAX_FIXES)
                    .await?
            } else {
                Vec::new()
            };
            Ok::<_, StoreError>((trips, recent))
        };
        let (trips, recent) = match tokio::time::timeout(limit, load).await {
            Ok(loaded) => loaded.map_err(|e| e.to_string())?,
            Err(_) => return Err(format!("no answer within {HYDRATE_TIMEOUT_MS} ms")),
        };
        let decisions = {
            let mut state = lock(&slot.state);
            for trip in &trips {
                add_trip_to(&mut state, trip, &self.cfg.arrival);
            }
            let mut decisions = Vec::new();
            if let Some(newest) = recent.last().map(|f| f.ts_ms) {
                for fix in recent
                    .iter()
                    .filter(|f| f.ts_ms >= newest - HYDRATE_WINDOW_MS)
                {
                    for d in state.arrival.observe(fix, &self.cfg.arrival) {
                        decisions.push((d, *fix));
                    }
                }
                // Fixes already stored (resent after a reconnect) are late, not new.
                state.newest_ts_ms = state.newest_ts_ms.max(Some(newest));
            }
            decisions
        };
        let mut notices = Vec::new();
        for (decision, fix) in decisions {
            notices.extend(self.apply_decision(who, &fix, decision).await);
        }
        Ok(notices)
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

    /// A trip was just stored: detection starts for it here if this node serves its driver, and
    /// the other nodes are told so that the node serving the driver loads it.
    pub fn trip_created(&self, trip: &TripRecord) {
        self.add_trip(trip);
        self.bus.publish(Outgoing::Trip {
            fleet: trip.fleet.as_str().into(),
            trip_id: trip.id.clone(),
            driver_id: trip.driver_id.clone(),
        });
    }

    /// Starts detecting arrivals for a stored trip's stops, if this node serves its driver (a
    /// driver not served yet gets its trips when it is hydrated).
    fn add_trip(&self, trip: &TripRecord) {
        let key = DriverKey {
            fleet: trip.fleet.as_str().into(),
            driver_id: trip.driver_id.as_str().into(),
        };
        if let Some(slot) = self.drivers.get(&key).map(|s| s.clone()) {
            add_trip_to(&mut lock(&slot.state), trip, &self.cfg.arrival);
        }
    }

    /// Marks a seq as processed without a fix (the fix was invalid: resending it cannot help),
    /// so the ack covers it. Returns false when the seq was seen before.
    pub fn note_seq(&self, who: &DriverKey, seq: u64) -> bool {
        let slot = self.slot(who);
        let mut state = lock(&slot.state);
        state.refused.remove(&seq);
        state.seqs.insert(seq)
    }

    /// Records the seqs of a frame refused whole, for the phone to resend (storage pressure,
    /// fix budget). Acks are cumulative ("drop everything up to `seq`"), so until these are
    /// processed every ack of the driver stays below the lowest of them: a later frame's ack
    /// must not tell the phone to drop fixes the hub never took. A refused seq not resent
    /// within [`REFUSED_TTL_MS`] stops holding acks back (a phone that dropped it anyway).
    pub fn note_refused(&self, who: &DriverKey, seqs: impl IntoIterator<Item = u64>) {
        let slot = self.slot(who);
        let mut state = lock(&slot.state);
        let at = now_ms();
        for seq in seqs {
            if state.refused.len() >= MAX_REFUSED {
                break;
            }
            state.refused.insert(seq, at);
        }
    }

    /// Taken by a socket for the whole of one frame: frames of one driver (on any of its
    /// sockets) are ingested one at a time, so [`Hub::highest_seq`] read before the guard is
    /// dropped names only seqs whose fixes are queued for history, and a [`Hub::committed`]
    /// barrier after it covers them all.
    pub async fn frame_order(&self, who: &DriverKey) -> tokio::sync::OwnedMutexGuard<()> {
        let frame = self.slot(who).frame.clone();
        frame.lock_owned().await
    }

    /// Waits until every fix queued so far is committed (group commit): what an
    /// acknowledgement waits for. Gives up as soon as the writer is under pressure (the
    /// database is down or far behind: a watch, not a poll), or after `limit`, with the retry
    /// hint to give the client; the fixes stay queued and are written when the database is
    /// back.
    pub async fn committed(&self, limit: std::time::Duration) -> Commit {
        tokio::select! {
            done = self.track.committed() => match done {
                Ok(()) => Commit::Done,
                Err(WriterStopped) => Commit::Stopped,
            },
            retry = self.track.under_pressure() => Commit::NotYet(retry),
            _ = tokio::time::sleep(limit) => Commit::NotYet(limit),
        }
    }

    /// `Some(retry after)` when the edges should refuse new fixes instead of taking them: the
    /// history queue is nearly full or the database refuses writes (see
    /// [`TrackWriter::pressure`]).
    pub fn pressure(&self) -> Option<std::time::Duration> {
        self.track.pressure()
    }

    /// What `ack` reports: the highest seq processed for the driver, held below the lowest seq
    /// of a refused frame not yet resent (see [`Hub::note_refused`]); `None` when there is
    /// nothing to acknowledge.
    pub fn highest_seq(&self, who: &DriverKey) -> Option<u64> {
        let slot = self.drivers.get(who)?.clone();
        let mut state = lock(&slot.state);
        let highest = state.seqs.highest()?;
        if state.refused.is_empty() {
            return Some(highest);
        }
        let now = now_ms();
        state.refused.retain(|_, at| now - *at < REFUSED_TTL_MS);
        match state.refused.keys().next() {
            Some(&lowest) if lowest <= highest => lowest.checked_sub(1),
            _ => Some(highest),
        }
    }

    /// Runs one validated fix through the pipeline. Waits for the database only when the driver
    /// is new to this node (hydration, once) and when the fix checks the driver in (rare, and it
    /// must be durable before the phone is told). History and the bus are queues that never wait.
    ///
    /// `seq` is the client's sequence number (duplicates are acked and dropped); `None` for
    /// sources without one (OsmAnd), where a resent fix is recognised by its device time.
    /// Errors only when the history writer has stopped (the node drains): the fix is not stored
    /// and must not be acknowledged.
    pub async fn ingest(
        &self,
        who: &DriverKey,
        seq: Option<u64>,
        fix: Fix,
    ) -> Result<Ingested, WriterStopped> {
        let (slot, mut checkins) = self.ready_slot(who).await;
        let received_ms = now_ms();
        let (status, came_online, decisions) = {
            let mut state = lock(&slot.state);
            if let Some(seq) = seq {
                state.refused.remove(&seq);
            }
            if seq.is_some_and(|seq| !state.seqs.insert(seq))
                && !restarted(who, &mut state, seq, &fix)
            {
                self.fix_counters.duplicate.increment(1);
                return Ok(Ingested {
                    status: IngestStatus::Duplicate,
                    checkins,
                });
            }
            let newest = state.newest_ts_ms.is_none_or(|n| fix.ts_ms > n);
            if !newest {
                self.fix_counters.late.increment(1);
                (IngestStatus::Late, false, Vec::new())
            } else {
                state.newest_ts_ms = Some(fix.ts_ms);
                state.last_seen_ms = received_ms;
                let came_online = !state.online;
                state.online = true;
                let decisions = state.arrival.observe(&fix, &self.cfg.arrival);
                // Still under the driver's lock, so that two sockets of one driver cannot
                // publish its fixes out of order (streams in `all` mode promise the order).
                self.publish_position(who, fix, received_ms);
                self.fix_counters.accepted.increment(1);
                m::activity()
                    .fixes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
            .await?;
        if status != IngestStatus::Accepted {
            return Ok(Ingested { status, checkins });
        }
        if came_online {
            self.presence_event(
                who,
                received_ms,
                Some((fix.lat, fix.lon)),
                EventKind::DriverOnline,
            );
        }

        for decision in decisions {
            if let Some(notice) = self.apply_decision(who, &fix, decision).await {
                checkins.push(notice);
            }
        }
        Ok(Ingested { status, checkins })
    }

    /// Moves the driver in the live index and offers the position to watchers, streams and the
    /// other nodes. Nothing here waits.
    fn publish_position(&self, who: &DriverKey, fix: Fix, received_ms: i64) {
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
        self.bus.publish(Outgoing::Position {
            fleet: who.fleet.clone(),
            position,
        });
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
        // The driver's `driver.online` (queued by this very batch, maybe) goes in the log first.
        self.presence.barrier().await;
        match decision {
            Decision::CheckIn {
                key,
                arrived_at_ms,
                confirmed_at_ms,
            } => {
                let event = Event {
                    id: None,
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
                        lock(&self.slot(who).state)
                            .arrival
                            .set_phase(&key, StopPhase::Pending);
                        None
                    }
                }
            }
            Decision::Departure {
                key,
                departed_at_ms,
            } => {
                let event = Event {
                    id: None,
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
                    Ok(Some(id)) => self.emit(Arc::new(Event {
                        id: Some(id),
                        ..event
                    })),
                    Ok(None) => {}
                    Err(e) => {
                        // Not dropped (issue 16): the stop goes back to arrived, so the next
                        // fixes outside its ring decide the departure again and retry the write.
                        tracing::error!(error = %e, trip = %key.trip_id, stop = %key.stop_id, "departure not stored; will retry on the next fixes outside the stop");
                        lock(&self.slot(who).state).arrival.set_phase(
                            &key,
                            StopPhase::Arrived {
                                arrived_at_ms: departed_at_ms,
                            },
                        );
                        return None;
                    }
                }
                lock(&self.slot(who).state)
                    .arrival
                    .remove_stop(&key, &self.cfg.arrival);
                None
            }
        }
    }

    fn publish_checkin(&self, event: Event, outcome: CheckinOutcome) {
        if let Some(c) = &outcome.checkin {
            let source = c.source.as_str();
            metrics::counter!(crate::metrics::CHECKINS, "source" => source).increment(1);
            tracing::info!(
                driver = %c.driver_id,
                trip = %c.trip_id,
                stop = %c.stop_id,
                source,
                "checked in"
            );
            self.emit(Arc::new(Event {
                id: outcome.event_id,
                ..event
            }));
        }
        if let Some(done) = outcome.trip_completed {
            self.emit(Arc::new(done));
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
            id: None,
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
        self.presence.barrier().await;
        let outcome = self.store.record_checkin(&event).await?;
        if outcome.checkin.is_some() {
            if let Some(slot) = self.drivers.get(&who).map(|s| s.clone()) {
                lock(&slot.state).arrival.mark_arrived(&key, now);
            }
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

    /// Drops the slots of drivers offline and silent for [`HubConfig::slot_idle_ms`] that nobody
    /// holds (no frame in progress: the map's is the only reference; `retain` holds the shard's
    /// lock, so none is taken meanwhile). Returns how many were dropped.
    fn evict_idle_slots(&self, now_ms: i64) -> usize {
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
    /// [`HubConfig::slot_idle_ms`]).
    pub fn driver_slots(&self) -> usize {
        self.drivers.len()
    }

    fn sweep_remote(&self, now_ms: i64) {
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
                        Ok(Some(trip)) => self.add_trip(&trip),
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

    fn apply_remote_positions(
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
                if index
                    .get(&pos.driver_id)
                    .is_some_and(|cur| cur.fix.ts_ms >= pos.fix.ts_ms)
                {
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
    fn note_remote_event(&self, event: &Event) {
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
            .map(|i| {
                let index = i.read().unwrap_or_else(|e| e.into_inner());
                index.in_bbox(bbox).into_iter().cloned().collect()
            })
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
        if scope.combine == Combine::Intersection {
            // A stream filter: candidates from the narrower of drivers and bbox, then both tests.
            let candidates: Vec<&LivePosition> = if !scope.drivers.is_empty() {
                scope.drivers.iter().filter_map(|d| index.get(d)).collect()
            } else if let Some(b) = &scope.bbox {
                index.in_bbox(b)
            } else {
                index.all().collect()
            };
            return candidates
                .into_iter()
                .filter(|p| scope.matches(&p.driver_id, p.fix.lat, p.fix.lon))
                .cloned()
                .collect();
        }
        let mut found: HashMap<&str, &LivePosition> = HashMap::new();
        if let Some(b) = &scope.bbox {
            index.for_each_in_bbox(b, |p| {
                found.insert(&p.driver_id, p);
            });
        }
        for d in &scope.drivers {
            if let Some(p) = index.get(d) {
                found.insert(&p.driver_id, p);
            }
        }
        found.into_values().cloned().collect()
    }

    /// Number of drivers in this node's live index (its own and other nodes'), all fleets.
    pub fn online_count(&self) -> usize {
        self.fleets
            .iter()
            .map(|f| f.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Adds a stored trip's stops to a driver's detector, in their stored phase. Stops already tracked
/// keep their state (hydration and a bus announcement may both bring the same trip).
fn add_trip_to(state: &mut DriverState, trip: &TripRecord, cfg: &ArrivalConfig) {
    let trip_id: Arc<str> = trip.id.as_str().into();
    for s in &trip.stops {
        let phase = match (s.status, s.arrived_at) {
            (StopStatus::Pending, _) => StopPhase::Pending,
            (StopStatus::Arrived, Some(at)) => StopPhase::Arrived { arrived_at_ms: at },
            _ => continue, // departed: nothing left to detect
        };
        let key = StopKey {
            trip_id: trip_id.clone(),
            stop_id: s.id.as_str().into(),
        };
        if state.arrival.phase(&key).is_some() {
            continue;
        }
        let fence = Geofence {
            key,
            lat: s.lat,
            lon: s.lon,
            radius_m: s.radius_m,
        };
        state.arrival.add_stop(fence, phase, cfg);
    }
}
