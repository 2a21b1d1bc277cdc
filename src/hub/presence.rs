//! Presence events (`driver.online`, `driver.offline`), and the other events decided on the
//! ingest path that need no state change of their own in the database (`geofence.*`,
//! `driver.stopped`, `driver.moving`): stored in order, in batches, off the ingest path, then
//! published with their log ids.
//!
//! A driver's first fix and the presence sweep only queue the event; one task appends whatever
//! has queued in a single transaction (a burst of 10,000 drivers coming online is a few dozen
//! transactions, not 10,000 serialized ones) and then hands the events, now carrying ids, to the
//! [`Emitter`]. One task keeps a driver's online and offline in the order they happened, and
//! [`PresenceLog::barrier`] lets a check-in wait until the presence events queued before it are
//! in the log, so that no consumer reads a driver's check-in before its `driver.online`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bus::{Bus, Outgoing};
use crate::fanout::feed::EventFeed;
use crate::fanout::Fanout;
use crate::model::Event;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Most events appended in one transaction.
const BATCH: usize = 500;
/// Backoff between attempts at a batch that failed: 200 ms doubling to 5 s, with jitter, for as
/// long as the database refuses it. A presence event is announced only once stored, so it is
/// never given up on (issue 16: they used to be published without ids after 5 attempts).
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Publishes an event to this node's watchers, the other nodes and the event-log readers.
#[derive(Debug, Clone)]
pub struct Emitter {
    pub fanout: Arc<Fanout>,
    pub bus: Bus,
    pub feed: Arc<EventFeed>,
}

impl Emitter {
    pub fn emit(&self, event: Arc<Event>) {
        if let Some(id) = event.id {
            self.feed.published(&event.fleet, id);
        }
        self.fanout.event(event.clone());
        self.bus.publish(Outgoing::Event(event));
    }
}

/// Sending half of the presence writer.
#[derive(Debug, Clone)]
pub struct PresenceLog {
    // Unbounded on purpose: a presence event is durable (never shed), and there are at most two
    // per driver state change, so the queue is bounded by the number of drivers.
    tx: mpsc::UnboundedSender<Queued>,
}

enum Queued {
    Event(Event),
    /// Answered once every event queued before it is stored (or given up on).
    Barrier(oneshot::Sender<()>),
}

impl PresenceLog {
    /// Starts the writer. When `stop` turns true it stores what is queued and ends.
    pub fn spawn(store: Store, emitter: Emitter, stop: Shutdown) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, tokio::spawn(run(store, emitter, rx, stop)))
    }

    /// Queues a presence event; never waits.
    pub fn record(&self, event: Event) {
        if self.tx.send(Queued::Event(event)).is_err() {
            tracing::warn!("presence writer stopped; a presence event was not stored");
        }
    }

    /// Resolves once every presence event queued before this call is stored. Usually at once:
    /// the queue is empty but for a driver that came online in the same batch of fixes.
    pub async fn barrier(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Queued::Barrier(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(
    store: Store,
    emitter: Emitter,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    mut stop: Shutdown,
) {
    let mut queued = Vec::with_capacity(BATCH);
    let mut events = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut queued, BATCH) => n,
            _ = stop.recv(), if !rx.is_closed() => { rx.close(); continue; }
        };
        if received == 0 {
            return;
        }
        for item in queued.drain(..) {
            match item {
                Queued::Event(e) => events.push(e),
                Queued::Barrier(done) => {
                    store_and_emit(&store, &emitter, &mut events).await;
                    let _ = done.send(());
                }
            }
        }
        store_and_emit(&store, &emitter, &mut events).await;
    }
}

/// Appends `events` in one transaction, retrying with backoff until the database takes them,
/// then publishes them with their ids; empties `events`.
async fn store_and_emit(store: &Store, emitter: &Emitter, events: &mut Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let mut backoff = crate::store::retry_delays(RETRY_MIN, RETRY_MAX);
    let mut attempt = 0u64;
    let ids = loop {
        attempt += 1;
        let started = std::time::Instant::now();
        match store.record_events(events).await {
            Ok(ids) => {
                metrics::histogram!(crate::metrics::EVENT_BATCH_ROWS).record(events.len() as f64);
                metrics::histogram!(crate::metrics::EVENT_BATCH_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                if attempt > 1 {
                    tracing::info!(
                        attempts = attempt,
                        events = events.len(),
                        "presence events stored after the database came back"
                    );
                }
                break ids;
            }
            Err(e) => {
                if attempt == 1 || attempt % 20 == 0 {
                    tracing::warn!(error = %e, attempt, events = events.len(), "presence events not stored; retrying until the database takes them");
                }
                tokio::time::sleep(backoff.next().unwrap_or(RETRY_MAX)).await;
            }
        }
    };
    for (mut event, id) in events.drain(..).zip(ids) {
        event.id = Some(id);
        emitter.emit(Arc::new(event));
    }
}
