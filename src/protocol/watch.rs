//! Watcher socket messages (`/v1/ws/watch`).

use serde::{Deserialize, Serialize};

use super::{EventView, PositionView};

/// A message from a watcher (admin map or service).
#[derive(Debug, Deserialize)]
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
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchOut {
    /// Every current position in scope, sent after each `subscribe`.
    Snapshot { positions: Vec<PositionView> },
    /// Positions that changed since the last flush; latest fix per driver wins.
    Positions { positions: Vec<PositionView> },
    /// A fleet event (`stop.checked_in`, `stop.departed`, `driver.online`, `driver.offline`, …).
    Event { event: Box<EventView> },
    /// A refused message; the socket stays open.
    Error { code: &'static str, message: String },
}
