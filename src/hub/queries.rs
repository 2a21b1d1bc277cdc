//! Live queries over the fleets' R-trees: one driver, a bbox, the nearest, a watcher's snapshot.

use std::collections::HashMap;

use super::Hub;
use crate::fanout::{Combine, Scope};
use crate::geo::index::Nearby;
use crate::geo::BBox;
use crate::model::LivePosition;

impl Hub {
    /// The live position of one driver of a fleet.
    pub fn position(&self, fleet: &str, driver_id: &str) -> Option<LivePosition> {
        self.index(fleet)?
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(driver_id)
            .cloned()
    }

    /// Live positions of a fleet inside a bbox.
    pub fn in_bbox(&self, fleet: &str, bbox: &BBox) -> Vec<LivePosition> {
        self.index(fleet)
            .map(|i| {
                let index = i.read().unwrap_or_else(|e| e.into_inner());
                index.in_bbox(bbox).into_iter().cloned().collect()
            })
            .unwrap_or_default()
    }

    /// The `limit` nearest live drivers of a fleet by great-circle distance.
    pub fn nearest(
        &self,
        fleet: &str,
        lat: f64,
        lon: f64,
        limit: usize,
        radius_m: Option<f64>,
    ) -> Vec<Nearby> {
        self.index(fleet)
            .map(|i| {
                i.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .nearest(lat, lon, limit, radius_m)
            })
            .unwrap_or_default()
    }

    /// Every live position of a fleet in a watcher's scope (the snapshot after `subscribe`).
    pub fn snapshot(&self, fleet: &str, scope: &Scope) -> Vec<LivePosition> {
        let Some(index) = self.index(fleet) else {
            return Vec::new();
        };
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        if scope.combine == Combine::Intersection {
            // A stream filter: candidates from the narrower of drivers and bbox, then both tests.
            let candidates: Vec<&LivePosition> = if !scope.drivers.is_empty() {
                scope.drivers.iter().filter_map(|d| index.get(d)).collect()
            } else if let Some(b) = &scope.bbox {
                index.in_bbox(b)
            } else {
                index.all().collect()
            };
            return candidates
                .into_iter()
                .filter(|p| scope.matches(&p.driver_id, p.fix.lat, p.fix.lon))
                .cloned()
                .collect();
        }
        let mut found: HashMap<&str, &LivePosition> = HashMap::new();
        if let Some(b) = &scope.bbox {
            index.for_each_in_bbox(b, |p| {
                found.insert(&p.driver_id, p);
            });
        }
        for d in &scope.drivers {
            if let Some(p) = index.get(d) {
                found.insert(&p.driver_id, p);
            }
        }
        found.into_values().cloned().collect()
    }

    /// Number of drivers in this node's live index (its own and other nodes'), all fleets.
    pub fn online_count(&self) -> usize {
        self.fleets
            .iter()
            .map(|f| f.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}
