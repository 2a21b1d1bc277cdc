//! Pure geometry and decisions: no I/O, no async, no clocks of its own.
//!
//! Everything here takes fixes (with their own device timestamps) and returns decisions, so it can
//! be unit-tested and benchmarked in isolation. Coordinates are WGS84 (EPSG:4326) degrees,
//! distances metres, times unix milliseconds UTC.

pub mod arrival;
pub mod arrival_invariants;
pub mod distance;
pub mod index;
pub mod seq_window;
pub mod stops;
pub mod zones;

pub use distance::{haversine_m, BBox};
