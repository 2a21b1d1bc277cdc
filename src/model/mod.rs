//! The domain model: the types every layer may import, and that import nothing of the crate
//! but each other. Coordinates are WGS84 degrees, distances metres, times unix ms UTC.
//!
//! The layers above it are listed in `lib.rs` and checked by `tests/it/layers.rs`.

pub mod clock;
pub mod event;
pub mod fix;
pub mod ids;
pub mod position;
pub mod segment;
pub mod status;
pub mod tracking;

pub use clock::now_ms;
pub use event::{CheckinEvidence, CheckinSource, Event, EventFields, EventKind, EVENT_TYPES};
pub use fix::{Battery, Fix, Motion};
pub use ids::{DriverId, DriverKey, StopKey};
pub use position::{LivePosition, NextStop};
pub use segment::StopSegment;
pub use status::{StopStatus, TripStatus};
pub use tracking::{Sampling, TrackingHint};
