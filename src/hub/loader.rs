//! Batched hydration reads. A driver's first fix on this node needs its active trips and its
//! recent track from the database; one driver at a time that was 2 + one query per trip, and a
//! reconnect storm (a node restart: 10,000 drivers back within 5 s) queued 20,000+ queries on
//! the pool, so thousands of drivers waited past the hydration timeout and went on without
//! their trips (measured: 13,435 "driver state not loaded" warnings in a 40 s run of 10,000
//! drivers connecting at 2,000/s, none with this reader; `BENCHMARKS.md`).
//!
//! Here one task reads for all drivers waiting at once: each batch is whatever queued while the
//! previous one was read (up to [`BATCH_DRIVERS`]), grouped by fleet, two statements per few
//! hundred drivers (`Store::active_trips_of_drivers`, `Store::recent_tracks`). A quiet node
//! reads one driver per batch, with no added delay; a storm makes batches large instead of
//! queues long.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::model::{DriverKey, Fix, StopStatus};
use crate::store::{Store, TripRecord};

/// Most drivers one batch reads (a storm's backlog is read in batches of this many).
pub const BATCH_DRIVERS: usize = 500;
/// Most stored fixes read per driver (15 min at 1 fix/s is 900; hydration replays the window
/// `HYDRATE_WINDOW_MS` of them).
pub const MAX_FIXES: i64 = 1_000;

/// What hydration reads for one driver.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// Active trips with their stops, oldest first.
    pub trips: Vec<TripRecord>,
    /// The newest stored fixes, oldest first; empty when no trip has a stop left to detect.
    pub recent: Vec<Fix>,
}

struct Request {
    who: DriverKey,
    reply: oneshot::Sender<Result<Loaded, String>>,
}

/// The hydration reader of one hub: a task started on first use, ending when the hub (and with
/// it the sender) is dropped.
#[derive(Debug)]
pub(super) struct Loader {
    store: Store,
    requests: OnceLock<mpsc::UnboundedSender<Request>>,
}

impl Loader {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            requests: OnceLock::new(),
        }
    }

    /// Reads `who`'s trips and recent track, in a batch with every other driver waiting.
    /// Errors: the database's, as text (the caller retries later).
    pub async fn load(&self, who: &DriverKey) -> Result<Loaded, String> {
        let requests = self.requests.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(serve(self.store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let who = who.clone();
        requests
            .send(Request { who, reply })
            .map_err(|_| "hydration reader stopped".to_string())?;
        answer
            .await
            .map_err(|_| "hydration reader stopped".to_string())?
    }
}

async fn serve(store: Store, mut requests: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH_DRIVERS {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // A caller that gave up (hydration timeout) needs no read.
        batch.retain(|r| !r.reply.is_closed());
        let mut by_fleet: HashMap<Arc<str>, Vec<Request>> = HashMap::new();
        for r in batch {
            by_fleet.entry(r.who.fleet.clone()).or_default().push(r);
        }
        for (fleet, requests) in by_fleet {
            let ids: Vec<&str> = requests.iter().map(|r| &*r.who.driver_id).collect();
            match read(&store, &fleet, &ids).await {
                Ok(mut loaded) => {
                    for r in requests {
                        let one = loaded.remove(&*r.who.driver_id).unwrap_or_default();
                        let _ = r.reply.send(Ok(one));
                    }
                }
                Err(e) => {
                    for r in requests {
                        let _ = r.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// One fleet's part of a batch: trips of all, recent tracks of those with a stop to detect.
async fn read(store: &Store, fleet: &str, ids: &[&str]) -> Result<HashMap<String, Loaded>, String> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let trips = store
        .active_trips_of_drivers(fleet, &ids)
        .await
        .map_err(|e| e.to_string())?;
    let mut loaded: HashMap<String, Loaded> = HashMap::new();
    for trip in trips {
        loaded
            .entry(trip.driver_id.clone())
            .or_default()
            .trips
            .push(trip);
    }
    let detecting: Vec<&str> = loaded
        .iter()
        .filter(|(_, l)| {
            l.trips
                .iter()
                .any(|t| t.stops.iter().any(|s| s.status != StopStatus::Departed))
        })
        .map(|(id, _)| id.as_str())
        .collect();
    let mut tracks = store
        .recent_tracks(fleet, &detecting, MAX_FIXES)
        .await
        .map_err(|e| e.to_string())?;
    for (id, l) in loaded.iter_mut() {
        l.recent = tracks.remove(id).unwrap_or_default();
    }
    Ok(loaded)
}
