//! Domain events: what happened to a driver, a stop or a trip.

use std::sync::Arc;

use super::StopKey;

/// How a check-in was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckinSource {
    /// By arrival detection on the driver's fixes.
    Auto,
    /// By an admin or the driver through the REST fallback.
    Manual,
}

impl CheckinSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Manual => "manual",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// First accepted fix after being offline.
    DriverOnline,
    /// Silent past the presence timeout (server time).
    DriverOffline,
    /// Checked in at a stop; times are device time, unix ms UTC.
    StopCheckedIn {
        key: StopKey,
        arrived_at_ms: i64,
        checked_in_at_ms: i64,
        source: CheckinSource,
    },
    /// Left a stop's exit ring after its check-in.
    StopDeparted { key: StopKey, departed_at_ms: i64 },
    /// Every stop of the trip is checked in.
    TripCompleted { trip_id: Arc<str> },
}

/// Every event type, as named on the wire.
pub const EVENT_TYPES: [&str; 5] = [
    "driver.online",
    "driver.offline",
    "stop.checked_in",
    "stop.departed",
    "trip.completed",
];

impl EventKind {
    /// The dotted event name used on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Self::DriverOnline => "driver.online",
            Self::DriverOffline => "driver.offline",
            Self::StopCheckedIn { .. } => "stop.checked_in",
            Self::StopDeparted { .. } => "stop.departed",
            Self::TripCompleted { .. } => "trip.completed",
        }
    }
}

/// The kind-specific fields of an event, flattened, absent ones `None`: the shape both the JSON
/// view (`protocol::EventView`) and the protobuf `Event` carry. Times unix ms UTC.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFields {
    pub trip_id: Option<Arc<str>>,
    pub stop_id: Option<Arc<str>>,
    pub arrived_at_ms: Option<i64>,
    pub checked_in_at_ms: Option<i64>,
    pub departed_at_ms: Option<i64>,
    pub source: Option<CheckinSource>,
}

impl EventKind {
    /// This kind's fields, flattened.
    pub fn fields(&self) -> EventFields {
        match self {
            Self::DriverOnline | Self::DriverOffline => EventFields::default(),
            Self::StopCheckedIn {
                key,
                arrived_at_ms,
                checked_in_at_ms,
                source,
            } => EventFields {
                trip_id: Some(key.trip_id.clone()),
                stop_id: Some(key.stop_id.clone()),
                arrived_at_ms: Some(*arrived_at_ms),
                checked_in_at_ms: Some(*checked_in_at_ms),
                source: Some(*source),
                ..EventFields::default()
            },
            Self::StopDeparted {
                key,
                departed_at_ms,
            } => EventFields {
                trip_id: Some(key.trip_id.clone()),
                stop_id: Some(key.stop_id.clone()),
                departed_at_ms: Some(*departed_at_ms),
                ..EventFields::default()
            },
            Self::TripCompleted { trip_id } => EventFields {
                trip_id: Some(trip_id.clone()),
                ..EventFields::default()
            },
        }
    }
}

/// One event of one fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Position in the durable event log: global across fleets and nodes, increasing in commit
    /// order. `None` until stored (and for a presence event whose write failed).
    pub id: Option<i64>,
    pub fleet: Arc<str>,
    pub driver_id: Arc<str>,
    /// When it happened, unix ms UTC.
    pub ts_ms: i64,
    /// Where the driver was, (lat, lon) degrees, when known.
    pub position: Option<(f64, f64)>,
    pub kind: EventKind,
}
