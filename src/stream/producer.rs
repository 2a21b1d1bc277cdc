//! The producer of one stream: positions from the fan-out, events from the log after a cursor.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::fanout::{Delivery, Scope};

use crate::hub::Hub;
use crate::model::Event;
use crate::model::LivePosition;
use crate::shutdown::Shutdown;
use crate::store::events::EventQuery;

/// Events read from the log per query.
const EVENT_PAGE: i64 = 500;
/// Positions per frame in `all` mode (≈ 70 KB of JSON, well under the socket write buffer).
const POSITIONS_PER_FRAME: usize = 500;
/// Items between the producer and the transport; a slow transport holds the producer here.
const HANDOFF: usize = 4;

/// How a stream receives positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Latest position per driver, once per flush interval (coalesced).
    Latest,
    /// Every accepted fix, in order per driver; too slow a consumer is disconnected.
    All,
    /// No positions: events only.
    None,
}

/// Which durable events a stream carries.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Resume after this log id; `None`: from the stream's start (live only).
    pub since: Option<i64>,
    /// Only these types; `None`: every type.
    pub types: Option<Vec<String>>,
}

/// One stream's subscription.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub fleet: Arc<str>,
    /// Position filter (an intersection: see `fanout::Combine`). Its drivers filter events too.
    pub filter: Scope,
    pub mode: Mode,
    /// `None`: no events.
    pub events: Option<EventFilter>,
}

/// Runtime settings of streams.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// `all` mode queue, positions.
    pub queue: usize,
    /// Re-read of the log without a wake-up.
    pub reread: Duration,
}

/// What the transport sends.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// Current positions matching the filter, first thing on a positions stream.
    Snapshot(Vec<LivePosition>),
    /// Positions since the last frame: latest per driver, or every fix in order (`all`).
    Positions(Vec<LivePosition>),
    /// A durable event, carrying its log id.
    Event(Arc<Event>),
    /// The consumer fell too far behind in `all` mode; the stream ends after this.
    Overflow,
}

/// Starts the producer of a stream; the transport reads the receiver. The producer stops when
/// the receiver is dropped, on overflow, or when `shutdown` turns true (the channel then closes).
/// `start_id` is where a stream without `since` starts reading events: the newest id when it was
/// opened.
pub fn spawn(
    hub: Arc<Hub>,
    settings: StreamSettings,
    spec: StreamSpec,
    start_id: i64,
    shutdown: Shutdown,
) -> mpsc::Receiver<StreamItem> {
    let (tx, rx) = mpsc::channel(HANDOFF);
    tokio::spawn(produce(hub, settings, spec, start_id, tx, shutdown));
    rx
}

async fn produce(
    hub: Arc<Hub>,
    settings: StreamSettings,
    spec: StreamSpec,
    start_id: i64,
    tx: mpsc::Sender<StreamItem>,
    mut shutdown: Shutdown,
) {
    let delivery = match spec.mode {
        Mode::All => Some(Delivery::All {
            queue: settings.queue,
        }),
        Mode::Latest => Some(Delivery::Latest),
        Mode::None => None,
    };
    // Registered before the snapshot: a fix landing in between shows up in both, never neither.
    let mut handle = delivery.map(|d| {
        hub.fanout
            .register_stream(spec.fleet.clone(), spec.filter.clone(), d)
    });
    let watcher = handle.as_ref().map(|h| h.watcher.clone());
    let mut every = handle.as_mut().and_then(|h| h.every.take());
    if handle.is_some() {
        let snapshot = hub.snapshot(&spec.fleet, &spec.filter);
        if tx.send(StreamItem::Snapshot(snapshot)).await.is_err() {
            return;
        }
    }
    let mut log = spec.events.as_ref().map(|f| EventReader {
        query: EventQuery {
            since: f.since.unwrap_or(start_id),
            limit: EVENT_PAGE,
            types: f.types.clone(),
            drivers: (!spec.filter.drivers.is_empty())
                .then(|| spec.filter.drivers.iter().cloned().collect()),
            newest_first: false,
        },
        wake: hub.feed.subscribe(&spec.fleet),
    });
    // A resuming consumer gets its backlog before anything else.
    if let Some(log) = &mut log {
        if !log.send_new(&hub, &spec.fleet, &tx).await {
            return;
        }
    }
    let mut reread = tokio::time::interval(settings.reread);
    reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(POSITIONS_PER_FRAME);
    loop {
        let item = tokio::select! {
            _ = tx.closed() => return,
            _ = shutdown.recv() => return,
            _ = async { watcher.as_ref().unwrap().wake.notified().await }, if watcher.is_some() => {
                StreamItem::Overflow
            }
            n = async { every.as_mut().unwrap().recv_many(&mut batch, POSITIONS_PER_FRAME).await },
                if every.is_some() => {
                if n == 0 {
                    return;
                }
                StreamItem::Positions(std::mem::take(&mut batch))
            }
            _ = async { watcher.as_ref().unwrap().ready.notified().await },
                if spec.mode == Mode::Latest => {
                let changes = watcher.as_ref().map(|w| w.take_pending()).unwrap_or_default();
                if changes.is_empty() {
                    continue;
                }
                StreamItem::Positions(changes.iter().map(|c| c.position.clone()).collect())
            }
            changed = async { log.as_mut().unwrap().wake.changed().await }, if log.is_some() => {
                if changed.is_err() {
                    return;
                }
                if !log.as_mut().unwrap().send_new(&hub, &spec.fleet, &tx).await {
                    return;
                }
                continue;
            }
            _ = reread.tick(), if log.is_some() => {
                if !log.as_mut().unwrap().send_new(&hub, &spec.fleet, &tx).await {
                    return;
                }
                continue;
            }
        };
        let overflow = matches!(item, StreamItem::Overflow);
        if tx.send(item).await.is_err() || overflow {
            drop(handle);
            return;
        }
    }
}

/// The stream's cursor in the event log.
struct EventReader {
    query: EventQuery,
    wake: watch::Receiver<i64>,
}

impl EventReader {
    /// Sends every event after the cursor, advancing it. False when the consumer is gone.
    async fn send_new(&mut self, hub: &Hub, fleet: &str, tx: &mpsc::Sender<StreamItem>) -> bool {
        self.wake.mark_unchanged();
        loop {
            let page = match hub.store.events(fleet, &self.query).await {
                Ok(page) => page,
                Err(e) => {
                    // Retried at the next wake-up or re-read; the cursor has not moved.
                    tracing::warn!(error = %e, "stream: event log not read");
                    return true;
                }
            };
            let full = page.events.len() as i64 == self.query.limit;
            for event in page.events {
                metrics::counter!(crate::metrics::STREAM_EVENTS).increment(1);
                if tx.send(StreamItem::Event(Arc::new(event))).await.is_err() {
                    return false;
                }
            }
            // Past the rows the filter skipped too, not only past the last event sent.
            self.query.since = page.next_since;
            if !full {
                return true;
            }
        }
    }
}
