//! Bus payloads ⇄ domain types. Payloads are the `Bus*` protobuf messages of
//! `proto/trackhub.proto`: compact (a position is ~50 bytes) and versionable by field number.

use std::sync::Arc;

use prost::Message;

use super::{Incoming, Outgoing};

use crate::model::Event;
use crate::model::Fix;
use crate::model::{LivePosition, NextStop, StopKey};
use crate::protocol::pb;

/// Channel of a fleet's positions: `trackhub:{fleet}:pos`.
pub fn positions_channel(fleet: &str) -> String {
    format!("trackhub:{fleet}:pos")
}

/// Channel of a fleet's events: `trackhub:{fleet}:events`.
pub fn events_channel(fleet: &str) -> String {
    format!("trackhub:{fleet}:events")
}

/// Node (re)join announcements.
pub const CONTROL_CHANNEL: &str = "trackhub:control";
/// Patterns a node subscribes to: every fleet's positions and events.
pub const PATTERNS: [&str; 2] = ["trackhub:*:pos", "trackhub:*:events"];

/// A payload that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("channel {0:?} is not a trackhub channel")]
    Channel(String),
    #[error(transparent)]
    Event(#[from] pb::EventDecodeError),
}

/// The payloads one flush publishes: `(channel, bytes)`, a positions and an events payload per
/// fleet (each only when non-empty), messages in the order they were queued.
pub fn encode_batch(node_id: &str, batch: Vec<Outgoing>) -> Vec<(String, Vec<u8>)> {
    // A flush rarely spans more than a few fleets: a linear lookup beats hashing here.
    let mut fleets: Vec<(Arc<str>, pb::BusPositions, pb::BusEvents)> = Vec::new();
    for msg in batch {
        let fleet = match &msg {
            Outgoing::Position { fleet, .. }
            | Outgoing::Gone { fleet, .. }
            | Outgoing::Trip { fleet, .. } => fleet.clone(),
            Outgoing::Event(event) => event.fleet.clone(),
        };
        let i = match fleets.iter().position(|(f, _, _)| *f == fleet) {
            Some(i) => i,
            None => {
                fleets.push((fleet, Default::default(), Default::default()));
                fleets.len() - 1
            }
        };
        let (_, positions, events) = &mut fleets[i];
        match msg {
            Outgoing::Position { position, .. } => {
                positions.positions.push(pb::Position::from(&position))
            }
            Outgoing::Gone {
                driver_id,
                last_ts_ms,
                ..
            } => positions.gone.push(pb::BusGone {
                driver_id: driver_id.to_string(),
                last_ts_ms,
            }),
            Outgoing::Event(event) => events.events.push(pb::Event::from(&*event)),
            Outgoing::Trip {
                trip_id, driver_id, ..
            } => events.trips.push(pb::BusTrip { trip_id, driver_id }),
        }
    }
    let mut out = Vec::with_capacity(fleets.len() * 2);
    for (fleet, mut positions, mut events) in fleets {
        if !positions.positions.is_empty() || !positions.gone.is_empty() {
            positions.node_id = node_id.into();
            positions.fleet = fleet.to_string();
            out.push((positions_channel(&fleet), positions.encode_to_vec()));
        }
        if !events.events.is_empty() || !events.trips.is_empty() {
            events.node_id = node_id.into();
            events.fleet = fleet.to_string();
            out.push((events_channel(&fleet), events.encode_to_vec()));
        }
    }
    out
}

/// The control payload announcing that `node_id` (re)joined.
pub fn encode_resync(node_id: &str) -> Vec<u8> {
    pb::BusControl {
        node_id: node_id.into(),
        resync: true,
    }
    .encode_to_vec()
}

/// Decodes one message received on `channel`. `Ok(None)` for this node's own echo.
pub fn decode(
    node_id: &str,
    channel: &str,
    payload: &[u8],
) -> Result<Option<Incoming>, DecodeError> {
    if channel == CONTROL_CHANNEL {
        let m = pb::BusControl::decode(payload)?;
        return Ok((m.node_id != node_id && m.resync).then_some(Incoming::ResyncRequested));
    }
    if channel.ends_with(":pos") {
        let m = pb::BusPositions::decode(payload)?;
        if m.node_id == node_id {
            return Ok(None);
        }
        return Ok(Some(Incoming::Positions {
            fleet: m.fleet.as_str().into(),
            positions: m.positions.iter().map(position_from_pb).collect(),
            gone: m
                .gone
                .into_iter()
                .map(|g| (Arc::from(g.driver_id.as_str()), g.last_ts_ms))
                .collect(),
        }));
    }
    if channel.ends_with(":events") {
        let m = pb::BusEvents::decode(payload)?;
        if m.node_id == node_id {
            return Ok(None);
        }
        let events = m
            .events
            .into_iter()
            .map(Event::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(Incoming::Events {
            fleet: m.fleet.as_str().into(),
            events,
            trips: m
                .trips
                .into_iter()
                .map(|t| (t.trip_id, t.driver_id))
                .collect(),
        }));
    }
    Err(DecodeError::Channel(channel.to_string()))
}

fn position_from_pb(p: &pb::Position) -> LivePosition {
    LivePosition {
        driver_id: p.driver_id.as_str().into(),
        fix: Fix {
            ts_ms: p.ts_ms,
            lat: p.lat,
            lon: p.lon,
            accuracy_m: p.accuracy_m,
            speed_mps: p.speed_mps,
            heading_deg: p.heading_deg,
            motion: None,
        },
        received_ms: p.received_ms.unwrap_or(p.ts_ms),
        next_stop: match (&p.next_trip_id, &p.next_stop_id, p.next_eta_ms) {
            (Some(trip), Some(stop), Some(eta_ms)) => Some(NextStop {
                key: StopKey {
                    trip_id: trip.as_str().into(),
                    stop_id: stop.as_str().into(),
                },
                eta_ms,
            }),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::{CheckinSource, EventKind, StopKey};

    fn pos(id: &str, ts_ms: i64) -> LivePosition {
        LivePosition {
            driver_id: id.into(),
            fix: Fix {
                accuracy_m: Some(8.0),
                speed_mps: Some(3.5),
                heading_deg: None,
                ..Fix::at(ts_ms, 41.15, -8.61)
            },
            received_ms: ts_ms + 5,
            next_stop: None,
        }
    }

    #[test]
    fn round_trips_one_payload_per_fleet_and_kind_and_skips_own_echo() {
        let checkin = Arc::new(Event {
            id: Some(41),
            fleet: "f1".into(),
            driver_id: "d1".into(),
            ts_ms: 10,
            position: Some((41.0, -8.0)),
            kind: EventKind::StopCheckedIn {
                key: StopKey {
                    trip_id: "t".into(),
                    stop_id: "s".into(),
                },
                arrived_at_ms: 1,
                checked_in_at_ms: 10,
                source: CheckinSource::Manual,
            },
        });
        let batch = vec![
            Outgoing::Position {
                fleet: "f1".into(),
                position: pos("d1", 1),
            },
            Outgoing::Position {
                fleet: "f2".into(),
                position: pos("d2", 2),
            },
            Outgoing::Event(checkin.clone()),
            Outgoing::Position {
                fleet: "f1".into(),
                position: pos("d1", 3),
            },
            Outgoing::Gone {
                fleet: "f1".into(),
                driver_id: "d9".into(),
                last_ts_ms: 7,
            },
        ];
        let payloads = encode_batch("node-a", batch);
        let channels: Vec<&str> = payloads.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            channels,
            ["trackhub:f1:pos", "trackhub:f1:events", "trackhub:f2:pos"]
        );
        assert!(decode("node-a", &payloads[0].0, &payloads[0].1)
            .unwrap()
            .is_none());
        match decode("node-b", &payloads[0].0, &payloads[0].1).unwrap() {
            Some(Incoming::Positions {
                fleet,
                positions,
                gone,
            }) => {
                assert_eq!(&*fleet, "f1");
                assert_eq!(positions, vec![pos("d1", 1), pos("d1", 3)]);
                assert_eq!(gone, vec![(Arc::from("d9"), 7)]);
            }
            other => panic!("unexpected {other:?}"),
        }
        match decode("node-b", &payloads[1].0, &payloads[1].1).unwrap() {
            Some(Incoming::Events { events, .. }) => assert_eq!(events, vec![(*checkin).clone()]),
            other => panic!("unexpected {other:?}"),
        }
        assert!(decode("node-b", "other", b"").is_err());
        assert!(decode("node-b", "trackhub:f1:pos", b"\xff\xff").is_err());
    }
}
