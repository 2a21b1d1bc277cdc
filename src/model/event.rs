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

/// Why arrival detection checked a driver in (issue 15): the evidence it decided on, stored
/// with the check-in and returned by `GET /v1/checkins` so a dispatcher can see *why*. Times are
/// device time, ms; distances m. See `geo::arrival` for each rule and where its threshold comes
/// from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckinEvidence {
    /// Stationary inside the stop: `fixes` fixes spanning `span_ms`, plus `credited_ms` (one
    /// mean interval) for a sparse phone's unseen start and end of the stop.
    Dwell {
        fixes: u32,
        span_ms: i64,
        credited_ms: i64,
    },
    /// After a fix inside the stop the phone went quiet for `gap_ms` and reappeared `moved_m`
    /// from it: what a distance-filtered app does while parked.
    QuietGap { gap_ms: i64, moved_m: f64 },
    /// The phone said it was still (`motion: still`) inside the stop, `fixes` fixes into a dwell.
    DeviceStill { fixes: u32 },
    /// An admin or the driver checked in through the REST fallback.
    Manual,
}

impl CheckinEvidence {
    /// `dwell` | `quiet_gap` | `device_still` | `manual`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dwell { .. } => "dwell",
            Self::QuietGap { .. } => "quiet_gap",
            Self::DeviceStill { .. } => "device_still",
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
    /// The driver's next stop came within the approach threshold (ETA or distance); once per
    /// crossing: again only after the driver went back past the threshold's hysteresis.
    StopApproaching {
        key: StopKey,
        eta_ms: i64,
        distance_m: f64,
    },
    /// A pending stop's ETA passed its window's end (`late: true`), or came back inside it
    /// (`late: false`); once per crossing, with hysteresis.
    StopLate {
        key: StopKey,
        eta_ms: i64,
        window_end_ms: i64,
        late: bool,
    },
    /// Entered a fleet geofence (past its hysteresis margin, confirmed); `ts` is the entry.
    GeofenceEntered { geofence_id: Arc<str> },
    /// Inside a fleet geofence for its dwell time since `entered_at_ms`.
    GeofenceDwelled {
        geofence_id: Arc<str>,
        entered_at_ms: i64,
    },
    /// Left a fleet geofence (past its margin, confirmed) entered at `entered_at_ms`.
    GeofenceExited {
        geofence_id: Arc<str>,
        entered_at_ms: i64,
    },
    /// Stationary anywhere for the arrival dwell (an automatic stop), since `stopped_since_ms`;
    /// `unplanned` during an active trip when no stop of it is there.
    DriverStopped {
        stopped_since_ms: i64,
        unplanned: bool,
    },
    /// Moving again after an automatic stop that began at `stopped_since_ms`.
    DriverMoving { stopped_since_ms: i64 },
}

/// Every event type, as named on the wire.
pub const EVENT_TYPES: [&str; 12] = [
    "driver.online",
    "driver.offline",
    "driver.stopped",
    "driver.moving",
    "stop.checked_in",
    "stop.departed",
    "stop.approaching",
    "stop.late",
    "trip.completed",
    "geofence.entered",
    "geofence.dwelled",
    "geofence.exited",
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
            Self::StopApproaching { .. } => "stop.approaching",
            Self::StopLate { .. } => "stop.late",
            Self::GeofenceEntered { .. } => "geofence.entered",
            Self::GeofenceDwelled { .. } => "geofence.dwelled",
            Self::GeofenceExited { .. } => "geofence.exited",
            Self::DriverStopped { .. } => "driver.stopped",
            Self::DriverMoving { .. } => "driver.moving",
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
    pub eta_ms: Option<i64>,
    pub window_end_ms: Option<i64>,
    pub late: Option<bool>,
    /// m.
    pub distance_m: Option<f64>,
    pub geofence_id: Option<Arc<str>>,
    pub entered_at_ms: Option<i64>,
    pub stopped_since_ms: Option<i64>,
    pub unplanned: Option<bool>,
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
            Self::StopApproaching {
                key,
                eta_ms,
                distance_m,
            } => EventFields {
                trip_id: Some(key.trip_id.clone()),
                stop_id: Some(key.stop_id.clone()),
                eta_ms: Some(*eta_ms),
                distance_m: Some(*distance_m),
                ..EventFields::default()
            },
            Self::StopLate {
                key,
                eta_ms,
                window_end_ms,
                late,
            } => EventFields {
                trip_id: Some(key.trip_id.clone()),
                stop_id: Some(key.stop_id.clone()),
                eta_ms: Some(*eta_ms),
                window_end_ms: Some(*window_end_ms),
                late: Some(*late),
                ..EventFields::default()
            },
            Self::GeofenceEntered { geofence_id } => EventFields {
                geofence_id: Some(geofence_id.clone()),
                ..EventFields::default()
            },
            Self::GeofenceDwelled {
                geofence_id,
                entered_at_ms,
            }
            | Self::GeofenceExited {
                geofence_id,
                entered_at_ms,
            } => EventFields {
                geofence_id: Some(geofence_id.clone()),
                entered_at_ms: Some(*entered_at_ms),
                ..EventFields::default()
            },
            Self::DriverStopped {
                stopped_since_ms,
                unplanned,
            } => EventFields {
                stopped_since_ms: Some(*stopped_since_ms),
                unplanned: Some(*unplanned),
                ..EventFields::default()
            },
            Self::DriverMoving { stopped_since_ms } => EventFields {
                stopped_since_ms: Some(*stopped_since_ms),
                ..EventFields::default()
            },
        }
    }
}

/// An event that cannot be rebuilt from its name and fields: an unknown name, or a field its
/// kind requires is absent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("event {kind:?} lacks {missing}")]
pub struct EventDecodeError {
    pub kind: String,
    pub missing: &'static str,
}

impl EventKind {
    /// The kind named `name` (as [`EventKind::name`]) with fields `f` (as [`EventKind::fields`]):
    /// the inverse of those two, for every format that stores or carries events flattened.
    /// A check-in without a `source` counts as automatic.
    pub fn from_fields(name: &str, f: EventFields) -> Result<Self, EventDecodeError> {
        let missing = |what| EventDecodeError {
            kind: name.to_string(),
            missing: what,
        };
        let key = |f: &EventFields| -> Result<StopKey, EventDecodeError> {
            Ok(StopKey {
                trip_id: f.trip_id.clone().ok_or_else(|| missing("trip_id"))?,
                stop_id: f.stop_id.clone().ok_or_else(|| missing("stop_id"))?,
            })
        };
        Ok(match name {
            "driver.online" => Self::DriverOnline,
            "driver.offline" => Self::DriverOffline,
            "stop.checked_in" => Self::StopCheckedIn {
                key: key(&f)?,
                arrived_at_ms: f.arrived_at_ms.ok_or_else(|| missing("arrived_at_ms"))?,
                checked_in_at_ms: f
                    .checked_in_at_ms
                    .ok_or_else(|| missing("checked_in_at_ms"))?,
                source: f.source.unwrap_or(CheckinSource::Auto),
            },
            "stop.departed" => Self::StopDeparted {
                key: key(&f)?,
                departed_at_ms: f.departed_at_ms.ok_or_else(|| missing("departed_at_ms"))?,
            },
            "trip.completed" => Self::TripCompleted {
                trip_id: f.trip_id.clone().ok_or_else(|| missing("trip_id"))?,
            },
            "stop.approaching" => Self::StopApproaching {
                key: key(&f)?,
                eta_ms: f.eta_ms.ok_or_else(|| missing("eta_ms"))?,
                distance_m: f.distance_m.ok_or_else(|| missing("distance_m"))?,
            },
            "stop.late" => Self::StopLate {
                key: key(&f)?,
                eta_ms: f.eta_ms.ok_or_else(|| missing("eta_ms"))?,
                window_end_ms: f.window_end_ms.ok_or_else(|| missing("window_end_ms"))?,
                late: f.late.ok_or_else(|| missing("late"))?,
            },
            "geofence.entered" => Self::GeofenceEntered {
                geofence_id: f
                    .geofence_id
                    .clone()
                    .ok_or_else(|| missing("geofence_id"))?,
            },
            "geofence.dwelled" => Self::GeofenceDwelled {
                geofence_id: f
                    .geofence_id
                    .clone()
                    .ok_or_else(|| missing("geofence_id"))?,
                entered_at_ms: f.entered_at_ms.ok_or_else(|| missing("entered_at_ms"))?,
            },
            "driver.stopped" => Self::DriverStopped {
                stopped_since_ms: f
                    .stopped_since_ms
                    .ok_or_else(|| missing("stopped_since_ms"))?,
                unplanned: f.unplanned.unwrap_or(false),
            },
            "driver.moving" => Self::DriverMoving {
                stopped_since_ms: f
                    .stopped_since_ms
                    .ok_or_else(|| missing("stopped_since_ms"))?,
            },
            "geofence.exited" => Self::GeofenceExited {
                geofence_id: f
                    .geofence_id
                    .clone()
                    .ok_or_else(|| missing("geofence_id"))?,
                entered_at_ms: f.entered_at_ms.ok_or_else(|| missing("entered_at_ms"))?,
            },
            _ => return Err(missing("a known type")),
        })
    }
}

impl CheckinSource {
    /// `auto` or `manual` (as [`CheckinSource::as_str`]).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(Self::Auto),
            "manual" => Some(Self::Manual),
            _ => None,
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
