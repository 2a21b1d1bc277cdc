//! The bus between hub nodes: the only module that knows about Redis pub/sub.
//!
//! Each node publishes the positions it accepts and the events it makes; every other node applies
//! them to its own live index and watchers, so a watcher or a REST query on any node sees every
//! driver of its fleet. In embedded mode (no `REDIS_URL`) there is one node and the bus is
//! [`Bus::local`], which publishes nothing: the node's own fan-out already reached everyone.
//!
//! Publishing never waits: messages go to a bounded queue that a background task drains in
//! batches of a few ms, one pipelined round trip per batch (see [`redis`]). When the queue is full
//! (Redis unreachable or slower than ingest) positions and live events are shed and counted in
//! `trackhub_bus_dropped_total`; durable events are in the database already, and positions
//! converge again through the resync a node asks for when it reconnects.

pub mod codec;
pub mod redis;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::model::Event;
use crate::model::{DriverId, LivePosition};

/// What a node tells the others.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// An accepted fix: the driver's new live position on the sending node.
    Position {
        fleet: Arc<str>,
        position: LivePosition,
    },
    /// The driver left the sending node's live index (offline); `last_ts_ms` is the device time of
    /// its last position there, unix ms UTC.
    Gone {
        fleet: Arc<str>,
        driver_id: DriverId,
        last_ts_ms: i64,
    },
    /// An event, already stored if durable.
    Event(Arc<Event>),
    /// A trip was created (stored): the node serving its driver loads it.
    Trip {
        fleet: Arc<str>,
        trip_id: String,
        driver_id: String,
    },
}

/// What a node hears from the others (never its own messages).
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Positions of one fleet, oldest first, and drivers that went offline on another node.
    Positions {
        fleet: Arc<str>,
        positions: Vec<LivePosition>,
        gone: Vec<(DriverId, i64)>,
    },
    /// Events of one fleet in order, and trips created on another node: `(trip_id, driver_id)`.
    Events {
        fleet: Arc<str>,
        events: Vec<Event>,
        trips: Vec<(String, String)>,
    },
    /// This node's subscription is (re)established: republish our drivers' positions.
    Connected,
    /// Another node (re)joined: republish our drivers' positions so its index converges.
    ResyncRequested,
}

/// Health of the bus, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusStatus {
    /// Single node, in-process fan-out only.
    Local,
    /// Subscribed to Redis.
    Connected,
    /// Redis configured but unreachable: this node serves its own drivers and watchers only.
    Down,
}

impl BusStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Connected => "connected",
            Self::Down => "down",
        }
    }
}

/// Publishing half of the bus; cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    link: Option<Arc<Link>>,
}

#[derive(Debug)]
struct Link {
    node_id: String,
    tx: mpsc::Sender<Outgoing>,
    connected: Arc<AtomicBool>,
}

impl Bus {
    /// The single-node bus: publishes nothing.
    pub fn local() -> Self {
        Self { link: None }
    }

    /// This node's id on the bus (random per process); `None` for the local bus.
    pub fn node_id(&self) -> Option<&str> {
        self.link.as_ref().map(|l| l.node_id.as_str())
    }

    /// True when other nodes exist to tell (a Redis bus, connected or not).
    pub fn is_shared(&self) -> bool {
        self.link.is_some()
    }

    pub fn status(&self) -> BusStatus {
        match &self.link {
            None => BusStatus::Local,
            Some(l) if l.connected.load(Ordering::Relaxed) => BusStatus::Connected,
            Some(_) => BusStatus::Down,
        }
    }

    /// Queues a message for the other nodes. Never waits; sheds (and counts) when the queue is full.
    pub fn publish(&self, msg: Outgoing) {
        let Some(link) = &self.link else { return };
        if link.tx.try_send(msg).is_err() {
            metrics::counter!(crate::metrics::BUS_DROPPED).increment(1);
        }
    }
}
