//! What a watcher follows: a bbox and/or a list of drivers, and how the two combine.

use std::collections::HashSet;

use crate::geo::BBox;

/// How a [`Scope`]'s bbox and drivers combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Combine {
    /// A map's viewport: inside the bbox, or one of the drivers wherever they are. Nothing when
    /// both are empty (before the first `subscribe`).
    #[default]
    Union,
    /// A stream's filter: inside the bbox (if any) and one of the drivers (if any). Everything of
    /// the fleet when both are empty.
    Intersection,
}

/// What a subscriber wants to see: positions inside `bbox` and/or of the listed drivers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub bbox: Option<BBox>,
    pub drivers: HashSet<String>,
    pub combine: Combine,
}

impl Scope {
    /// True when a driver at (lat, lon) is in scope.
    pub fn matches(&self, driver_id: &str, lat: f64, lon: f64) -> bool {
        let in_box = |b: &BBox| b.contains(lat, lon);
        match self.combine {
            Combine::Union => {
                self.drivers.contains(driver_id) || self.bbox.is_some_and(|b| in_box(&b))
            }
            Combine::Intersection => {
                (self.drivers.is_empty() || self.drivers.contains(driver_id))
                    && self.bbox.is_none_or(|b| in_box(&b))
            }
        }
    }
}
