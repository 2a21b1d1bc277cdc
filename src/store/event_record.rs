//! How the event log stores an event (`events.payload`, and `webhook_deliveries.body` with the
//! id): the store's own JSON, so the log does not change when the wire format does.
//!
//! Its shape is the one the log has had since it was introduced, so rows written before this
//! module existed read back unchanged: `{"type":"stop.checked_in","ts":"<RFC 3339 UTC>",
//! "fleet","driver_id","lat"?,"lon"?,"trip_id"?,"stop_id"?,"arrived_at"?,"checked_in_at"?,
//! "departed_at"?,"source"?,"id"?}`, and since issue 17-18 `"eta"?,"window_end"?,"late"?,
//! "distance_m"?,"geofence_id"?,"entered_at"?,"stopped_since"?,"unplanned"?` (absent on older
//! rows, which read back unchanged). Times RFC 3339 UTC with milliseconds, coordinates WGS84
//! degrees.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::model::{CheckinSource, Event, EventFields, EventKind};

#[derive(Debug, Serialize, Deserialize)]
struct StoredEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    #[serde(rename = "type")]
    kind: String,
    ts: String,
    fleet: String,
    driver_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lat: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trip_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arrived_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checked_in_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    departed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eta: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    late: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    distance_m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    geofence_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entered_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stopped_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unplanned: Option<bool>,
}

fn format_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

fn parse_time(text: &str) -> Result<i64, StoreError> {
    text.parse::<i64>()
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.timestamp_millis())
        })
        .ok_or(StoreError::Invalid("stored event time is not RFC 3339"))
}

/// `event` as stored, with `id` when given (delivery bodies carry it, the log row does not).
pub fn encode(event: &Event, id: Option<i64>) -> Result<String, StoreError> {
    let f = event.kind.fields();
    let stored = StoredEvent {
        id,
        kind: event.kind.name().to_string(),
        ts: format_time(event.ts_ms),
        fleet: event.fleet.to_string(),
        driver_id: event.driver_id.to_string(),
        lat: event.position.map(|p| p.0),
        lon: event.position.map(|p| p.1),
        trip_id: f.trip_id.map(|t| t.to_string()),
        stop_id: f.stop_id.map(|t| t.to_string()),
        arrived_at: f.arrived_at_ms.map(format_time),
        checked_in_at: f.checked_in_at_ms.map(format_time),
        departed_at: f.departed_at_ms.map(format_time),
        source: f.source.map(|s| s.as_str().to_string()),
        eta: f.eta_ms.map(format_time),
        window_end: f.window_end_ms.map(format_time),
        late: f.late,
        distance_m: f.distance_m,
        geofence_id: f.geofence_id.map(|g| g.to_string()),
        entered_at: f.entered_at_ms.map(format_time),
        stopped_since: f.stopped_since_ms.map(format_time),
        unplanned: f.unplanned,
    };
    serde_json::to_string(&stored).map_err(|_| StoreError::Invalid("event not serializable"))
}

/// Reads back what [`encode`] wrote; `id` from the JSON when present.
pub fn decode(text: &str) -> Result<Event, StoreError> {
    let bad = StoreError::Invalid("stored event payload is not an event");
    let s: StoredEvent = serde_json::from_str(text).map_err(|_| bad)?;
    let time = |t: Option<String>| t.as_deref().map(parse_time).transpose();
    let fields = EventFields {
        trip_id: s.trip_id.as_deref().map(Into::into),
        stop_id: s.stop_id.as_deref().map(Into::into),
        arrived_at_ms: time(s.arrived_at)?,
        checked_in_at_ms: time(s.checked_in_at)?,
        departed_at_ms: time(s.departed_at)?,
        source: s.source.as_deref().and_then(CheckinSource::parse),
        eta_ms: time(s.eta)?,
        window_end_ms: time(s.window_end)?,
        late: s.late,
        distance_m: s.distance_m,
        geofence_id: s.geofence_id.as_deref().map(Into::into),
        entered_at_ms: time(s.entered_at)?,
        stopped_since_ms: time(s.stopped_since)?,
        unplanned: s.unplanned,
    };
    let kind = EventKind::from_fields(&s.kind, fields)
        .map_err(|_| StoreError::Invalid("stored event payload is not an event"))?;
    Ok(Event {
        id: s.id,
        fleet: s.fleet.as_str().into(),
        driver_id: s.driver_id.as_str().into(),
        ts_ms: parse_time(&s.ts)?,
        position: s.lat.zip(s.lon),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StopKey;

    #[test]
    fn every_kind_round_trips_and_rows_of_the_old_format_still_read() {
        let key = StopKey {
            trip_id: "t1".into(),
            stop_id: "s1".into(),
        };
        let kinds = [
            EventKind::DriverOnline,
            EventKind::StopCheckedIn {
                key: key.clone(),
                arrived_at_ms: 1_790_000_000_000,
                checked_in_at_ms: 1_790_000_075_000,
                source: CheckinSource::Manual,
            },
            EventKind::StopDeparted {
                key,
                departed_at_ms: 1_790_000_100_000,
            },
            EventKind::TripCompleted {
                trip_id: "t1".into(),
            },
            EventKind::StopApproaching {
                key: StopKey {
                    trip_id: "t1".into(),
                    stop_id: "s2".into(),
                },
                eta_ms: 1_790_000_300_000,
                distance_m: 950.5,
            },
            EventKind::StopLate {
                key: StopKey {
                    trip_id: "t1".into(),
                    stop_id: "s2".into(),
                },
                eta_ms: 1_790_000_900_000,
                window_end_ms: 1_790_000_600_000,
                late: true,
            },
            EventKind::GeofenceEntered {
                geofence_id: "depot".into(),
            },
            EventKind::DriverStopped {
                stopped_since_ms: 1_790_000_000_000,
                unplanned: true,
            },
            EventKind::DriverMoving {
                stopped_since_ms: 1_790_000_000_000,
            },
            EventKind::GeofenceExited {
                geofence_id: "depot".into(),
                entered_at_ms: 1_790_000_000_000,
            },
        ];
        for kind in kinds {
            let event = Event {
                id: Some(7),
                fleet: "f1".into(),
                driver_id: "D1".into(),
                ts_ms: 1_790_000_000_123,
                position: Some((41.15, -8.61)),
                kind,
            };
            assert_eq!(decode(&encode(&event, Some(7)).unwrap()).unwrap(), event);
        }
        // A row as the log stored it before the store had its own format (the wire view).
        let old = r#"{"type":"stop.checked_in","ts":"2026-11-21T10:00:00.120Z","fleet":"f1","driver_id":"D1","lat":41.15,"lon":-8.61,"trip_id":"t1","stop_id":"s1","arrived_at":"2026-11-21T09:58:45.000Z","checked_in_at":"2026-11-21T10:00:00.120Z","source":"auto"}"#;
        let e = decode(old).unwrap();
        assert_eq!(e.ts_ms, 1_795_255_200_120);
        assert!(matches!(
            e.kind,
            EventKind::StopCheckedIn {
                source: CheckinSource::Auto,
                ..
            }
        ));
    }
}
