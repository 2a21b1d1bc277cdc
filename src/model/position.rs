//! A driver's live position: what the index holds and watchers receive.

use super::{DriverId, Fix, StopKey};

/// The stop a driver is heading to (the first pending stop of its oldest active trip) and its
/// ETA, carried with the driver's live position to watchers, streams and the other nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct NextStop {
    pub key: StopKey,
    /// Estimated arrival, unix ms UTC (estimated by the core's `eta` module).
    pub eta_ms: i64,
}

/// The latest position of one driver together with the server time it was received.
#[derive(Debug, Clone, PartialEq)]
pub struct LivePosition {
    pub driver_id: DriverId,
    pub fix: Fix,
    /// Server receive time, unix ms UTC (used for presence, never for detection).
    pub received_ms: i64,
    /// The driver's next stop and its ETA, when it has one and it has been estimated.
    pub next_stop: Option<NextStop>,
}
