//! Watcher socket messages (`/v1/ws/watch`), decoded and encoded by `codec`.

use std::sync::Arc;

use crate::model::Event;
use crate::model::LivePosition;

/// A message from a watcher (admin map or service).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchIn {
    /// Sets the scope: positions inside `bbox` (`[west, south, east, north]`, degrees) plus the
    /// listed drivers wherever they are. Sending it again replaces the scope (a viewport move).
    Subscribe {
        #[serde(default)]
        bbox: Option<[f64; 4]>,
        #[serde(default)]
        drivers: Option<Vec<String>>,
    },
}

/// A message to a watcher.
#[derive(Debug, Clone)]
pub enum WatchOut {
    /// Every current position in scope, sent after each `subscribe`.
    Snapshot { positions: Vec<LivePosition> },
    /// Positions that changed since the last flush; latest fix per driver wins.
    Positions { positions: Vec<LivePosition> },
    /// A fleet event (`stop.checked_in`, `stop.departed`, `driver.online`, `driver.offline`, …).
    Event { event: Arc<Event> },
    /// A refused message; the socket stays open unless a close follows.
    Error { code: &'static str, message: String },
}

impl WatchOut {
    /// An error frame.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        WatchOut::Error {
            code,
            message: message.into(),
        }
    }
}
