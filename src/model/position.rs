//! A driver's live position: what the index holds and watchers receive.

use super::{DriverId, Fix};

/// The latest position of one driver together with the server time it was received.
#[derive(Debug, Clone, PartialEq)]
pub struct LivePosition {
    pub driver_id: DriverId,
    pub fix: Fix,
    /// Server receive time, unix ms UTC (used for presence, never for detection).
    pub received_ms: i64,
}
