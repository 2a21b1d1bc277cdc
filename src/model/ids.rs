//! Identifiers of drivers and stops, shared by every layer without copying strings.

use std::sync::Arc;

/// A driver id shared between the index, fan-out and the hub without copying the string.
pub type DriverId = Arc<str>;

/// Who is sending: the token's fleet and subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DriverKey {
    pub fleet: Arc<str>,
    pub driver_id: DriverId,
}

impl DriverKey {
    /// The driver `driver_id` of `fleet` (a token's `fleet` and `sub`).
    pub fn new(fleet: &str, driver_id: &str) -> Self {
        Self {
            fleet: fleet.into(),
            driver_id: driver_id.into(),
        }
    }
}

/// Identifies one stop of one trip.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StopKey {
    pub trip_id: Arc<str>,
    pub stop_id: Arc<str>,
}
