//! Encodings shared by every watcher: a driver's latest position in a flush interval and an
//! event, each encoded at most once per codec, by the first watcher that sends it.

use std::sync::{Arc, OnceLock};

use super::Scope;
use crate::model::{Event, LivePosition};
use crate::protocol::codec;

/// One driver's latest position in a flush interval, shared by every watcher that sees it. Each
/// wire form is encoded once, by the first watcher that sends it.
#[derive(Debug)]
pub struct Change {
    pub position: LivePosition,
    /// Where the driver was when the interval began (`[lat, lon]` degrees; `None`: it was not
    /// in the index): a watcher whose scope held that point learns the driver left it.
    before: Option<[f64; 2]>,
    json: OnceLock<Box<str>>,
    proto: OnceLock<Box<[u8]>>,
}

impl Change {
    /// A change with nothing encoded yet.
    pub fn new(position: LivePosition, before: Option<[f64; 2]>) -> Self {
        Self {
            position,
            before,
            json: OnceLock::new(),
            proto: OnceLock::new(),
        }
    }

    pub(super) fn in_scope(&self, scope: &Scope) -> bool {
        let p = &self.position;
        scope.matches(&p.driver_id, p.fix.lat, p.fix.lon)
            // Leaving the scope is news too: the watcher learns the marker went out.
            || self
                .before
                .is_some_and(|[lat, lon]| scope.matches(&p.driver_id, lat, lon))
    }
}

/// Each change is encoded at most once per codec, on first use, and shared by every watcher.
impl codec::EncodedPosition for Change {
    fn json(&self) -> &str {
        self.json
            .get_or_init(|| codec::position_json(&self.position))
    }

    fn proto(&self) -> &[u8] {
        self.proto
            .get_or_init(|| codec::position_pb_entry(&self.position))
    }
}

/// One event on its way to every map watcher in scope, encoded at most once per codec (a fleet's
/// connect storm sends a `driver.online` per driver to each whole-city map).
#[derive(Debug)]
pub struct SharedEvent {
    pub event: Arc<Event>,
    /// The `event` frame, by codec: `[json, proto]`.
    frames: [OnceLock<codec::Wire>; 2],
}

impl SharedEvent {
    pub fn new(event: Arc<Event>) -> Self {
        Self {
            event,
            frames: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The `event` frame in `codec`, encoded by the first watcher that asks.
    pub fn frame(&self, codec: codec::Codec) -> codec::Wire {
        let slot = match codec {
            codec::Codec::Json => &self.frames[0],
            codec::Codec::Proto => &self.frames[1],
        };
        slot.get_or_init(|| {
            codec.encode_watch(&crate::protocol::watch::WatchOut::Event {
                event: self.event.clone(),
            })
        })
        .clone()
    }
}
