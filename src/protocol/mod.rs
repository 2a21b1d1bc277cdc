//! Wire types (serde JSON). Edges decode into domain types once; the core never sees JSON.
//!
//! Times on the wire are RFC 3339 UTC strings (`2026-11-21T10:00:00.120Z`); unix milliseconds are
//! accepted on input too. See `PROTOCOL.md` for the full protocol.

pub mod codec;
pub mod driver;
pub mod osmand;
pub mod pb;
pub mod time;
pub mod watch;

use serde::Serialize;

use crate::model::Event;
use crate::model::{Battery, LivePosition};
use time::format_ts;

/// One invalid field of a request: `field` as the client named it (`lat`, `stops[1].lat`,
/// `location[2].timestamp`, …), and why. REST answers them in a 422's `errors`; the OsmAnd
/// parser returns them.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A driver's position as sent to watchers and REST clients.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PositionView {
    pub driver_id: String,
    /// Degrees WGS84.
    pub lat: f64,
    pub lon: f64,
    /// Device time of the fix, RFC 3339 UTC.
    pub ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
    /// The phone's battery, `{"level": 0-1, "charging"?}`, on `GET /v1/drivers/{id}` when its
    /// tracking app reports it (Traccar Client, OsmAnd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<BatteryView>,
    /// The driver's next stop and its ETA, when it has an active trip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_stop: Option<NextStopView>,
}

/// `{"trip_id","stop_id","eta"}`: a driver's next stop and its ETA (RFC 3339 UTC).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct NextStopView {
    pub trip_id: String,
    pub stop_id: String,
    pub eta: String,
}

/// A phone's battery on the wire: `level` in [0, 1].
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct BatteryView {
    pub level: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charging: Option<bool>,
}

impl From<Battery> for BatteryView {
    fn from(b: Battery) -> Self {
        Self {
            level: b.level,
            charging: b.charging,
        }
    }
}

impl From<&LivePosition> for PositionView {
    fn from(p: &LivePosition) -> Self {
        Self {
            driver_id: p.driver_id.to_string(),
            lat: p.fix.lat,
            lon: p.fix.lon,
            ts: format_ts(p.fix.ts_ms),
            accuracy_m: p.fix.accuracy_m,
            speed_mps: p.fix.speed_mps,
            heading_deg: p.fix.heading_deg,
            battery: None,
            next_stop: p.next_stop.as_ref().map(|n| NextStopView {
                trip_id: n.key.trip_id.to_string(),
                stop_id: n.key.stop_id.to_string(),
                eta: format_ts(n.eta_ms),
            }),
        }
    }
}

/// An event as it appears on the wire (`/v1/events`, streams, watchers, webhooks):
/// `{"id":42,"type":"stop.checked_in","ts":"2026-…Z","fleet":…,"driver_id":…,…}`. Times RFC 3339
/// UTC, coordinates degrees WGS84. `id` is absent on an event that was not stored.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct EventView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened, RFC 3339 UTC.
    pub ts: String,
    pub fleet: String,
    pub driver_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_in_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `stop.approaching`, `stop.late`: the ETA that crossed, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
    /// `stop.late`: the end of the stop's window, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<String>,
    /// `stop.late`: true when the ETA passed the window's end, false when it is back inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late: Option<bool>,
    /// `stop.approaching`: great-circle distance to the stop, m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    /// `geofence.*`: the fleet geofence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geofence_id: Option<String>,
    /// `geofence.dwelled`, `geofence.exited`: when the driver entered it, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entered_at: Option<String>,
    /// `driver.stopped`, `driver.moving`: when the automatic stop began, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_since: Option<String>,
    /// `driver.stopped`: during an active trip, away from all of its stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplanned: Option<bool>,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        let f = e.kind.fields();
        EventView {
            id: e.id,
            kind: e.kind.name().to_string(),
            ts: format_ts(e.ts_ms),
            fleet: e.fleet.to_string(),
            driver_id: e.driver_id.to_string(),
            lat: e.position.map(|p| p.0),
            lon: e.position.map(|p| p.1),
            trip_id: f.trip_id.map(|t| t.to_string()),
            stop_id: f.stop_id.map(|t| t.to_string()),
            arrived_at: f.arrived_at_ms.map(format_ts),
            checked_in_at: f.checked_in_at_ms.map(format_ts),
            departed_at: f.departed_at_ms.map(format_ts),
            source: f.source.map(|s| s.as_str().to_string()),
            eta: f.eta_ms.map(format_ts),
            window_end: f.window_end_ms.map(format_ts),
            late: f.late,
            distance_m: f.distance_m,
            geofence_id: f.geofence_id.map(|g| g.to_string()),
            entered_at: f.entered_at_ms.map(format_ts),
            stopped_since: f.stopped_since_ms.map(format_ts),
            unplanned: f.unplanned,
        }
    }
}
