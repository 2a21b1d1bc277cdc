//! The live index: the latest fix of every online driver of one fleet, in an R-tree.

use std::collections::HashMap;

use rstar::{primitives::GeomWithData, Envelope, RTree, SelectionFunction, AABB};

use super::{haversine_m, BBox};
use crate::model::{DriverId, LivePosition};

/// A tree leaf: the driver's `[lon, lat]` (degrees) with its whole position, so a query answers
/// borrowed positions straight from the leaves, with no second lookup per result.
type Entry = GeomWithData<[f64; 2], LivePosition>;

/// A position with its great-circle distance from a query point, in metres.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearby {
    pub position: LivePosition,
    pub distance_m: f64,
}

/// Latest fix per driver of one fleet, with an `rstar` R-tree over `[lon, lat]` degrees for
/// bbox and k-nearest queries. Not synchronised: the hub wraps one per fleet in a lock.
///
/// The positions live in the tree's leaves; `at` maps each driver to its leaf's point, which is
/// how a driver's position is found again (a point lookup, O(log n)).
#[derive(Debug, Default)]
pub struct LiveIndex {
    tree: RTree<Entry>,
    at: HashMap<DriverId, [f64; 2]>,
}

/// Selects the one leaf of `driver_id` at `point`: parents whose envelope holds the point, then
/// the leaf with that id. Matching on the id (not on the whole position) finds the leaf even if
/// a field compares unequal to itself.
struct DriverAt<'a> {
    point: [f64; 2],
    driver_id: &'a str,
}

impl SelectionFunction<Entry> for DriverAt<'_> {
    fn should_unpack_parent(&self, envelope: &AABB<[f64; 2]>) -> bool {
        envelope.contains_point(&self.point)
    }

    fn should_unpack_leaf(&self, leaf: &Entry) -> bool {
        *leaf.geom() == self.point && &*leaf.data.driver_id == self.driver_id
    }
}

impl LiveIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of drivers in the index.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Moves `position.driver_id` to its new fix; returns the previous position if there was one.
    /// O(log n): one R-tree removal and one insertion.
    pub fn upsert(&mut self, position: LivePosition) -> Option<LivePosition> {
        let point = [position.fix.lon, position.fix.lat];
        let previous = self
            .at
            .insert(position.driver_id.clone(), point)
            .and_then(|was| {
                self.tree.remove_with_selection_function(DriverAt {
                    point: was,
                    driver_id: &position.driver_id,
                })
            })
            .map(|leaf| leaf.data);
        self.tree.insert(Entry::new(point, position));
        previous
    }

    /// Removes a driver (gone offline); returns its last position.
    pub fn remove(&mut self, driver_id: &str) -> Option<LivePosition> {
        let point = self.at.remove(driver_id)?;
        self.tree
            .remove_with_selection_function(DriverAt { point, driver_id })
            .map(|leaf| leaf.data)
    }

    /// The latest position of one driver.
    pub fn get(&self, driver_id: &str) -> Option<&LivePosition> {
        let point = *self.at.get(driver_id)?;
        self.tree
            .locate_with_selection_function(DriverAt { point, driver_id })
            .next()
            .map(|leaf| &leaf.data)
    }

    /// Calls `visit` with every driver inside the bbox (edges included; antimeridian-crossing
    /// boxes supported), borrowed from the tree: nothing is copied or allocated per result.
    pub fn for_each_in_bbox<'a>(&'a self, bbox: &BBox, mut visit: impl FnMut(&'a LivePosition)) {
        for (lo, hi) in bbox.parts() {
            for leaf in self.tree.locate_in_envelope(&AABB::from_corners(lo, hi)) {
                visit(&leaf.data);
            }
        }
    }

    /// Every driver inside the bbox, borrowed (see [`LiveIndex::for_each_in_bbox`]).
    pub fn in_bbox(&self, bbox: &BBox) -> Vec<&LivePosition> {
        let mut out = Vec::new();
        self.for_each_in_bbox(bbox, |p| out.push(p));
        out
    }

    /// The `limit` drivers nearest to (lat, lon) by great-circle distance, nearest first, no
    /// farther than `radius_m` when given.
    ///
    /// The tree is in degrees, where Euclidean order is not great-circle order (a degree of
    /// longitude shrinks with cos(lat)), so this searches a conservative box around a circle of
    /// growing radius, ranks candidates by haversine distance, and stops once `limit` drivers lie
    /// within the circle: anything outside it is farther than all of them.
    pub fn nearest(&self, lat: f64, lon: f64, limit: usize, radius_m: Option<f64>) -> Vec<Nearby> {
        if limit == 0 || self.is_empty() {
            return Vec::new();
        }
        const HALF_CIRCUMFERENCE_M: f64 = 20_016_000.0;
        let max_radius = radius_m
            .unwrap_or(HALF_CIRCUMFERENCE_M)
            .min(HALF_CIRCUMFERENCE_M);
        let mut search = max_radius.min(1_000.0);
        loop {
            let mut found: Vec<(f64, &LivePosition)> = Vec::new();
            self.for_each_in_bbox(&BBox::around(lat, lon, search), |p| {
                let d = haversine_m(lat, lon, p.fix.lat, p.fix.lon);
                if d <= search {
                    found.push((d, p));
                }
            });
            if found.len() >= limit || search >= max_radius {
                found.sort_by(|a, b| a.0.total_cmp(&b.0));
                return found
                    .into_iter()
                    .take(limit)
                    .map(|(distance_m, p)| Nearby {
                        position: p.clone(),
                        distance_m,
                    })
                    .collect();
            }
            search = (search * 4.0).min(max_radius);
        }
    }

    /// Every position, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = &LivePosition> {
        self.tree.iter().map(|leaf| &leaf.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Fix;

    fn pos(id: &str, lat: f64, lon: f64) -> LivePosition {
        LivePosition {
            driver_id: id.into(),
            fix: Fix::at(0, lat, lon),
            received_ms: 0,
            next_stop: None,
        }
    }

    #[test]
    fn upsert_moves_the_driver() {
        let mut idx = LiveIndex::new();
        idx.upsert(pos("a", 10.0, 10.0));
        let prev = idx.upsert(pos("a", 20.0, 20.0)).unwrap();
        assert_eq!(prev.fix.lat, 10.0);
        assert_eq!(idx.len(), 1);
        assert!(idx
            .in_bbox(&BBox::new(9.0, 9.0, 11.0, 11.0).unwrap())
            .is_empty());
        assert_eq!(
            idx.in_bbox(&BBox::new(19.0, 19.0, 21.0, 21.0).unwrap())
                .len(),
            1
        );
        assert!(idx.remove("a").is_some());
        assert!(idx.is_empty());
        assert_eq!(idx.tree.size(), 0);
    }

    #[test]
    fn nearest_uses_great_circle_not_degrees() {
        // At 60°N a degree of longitude is ~55.6 km, a degree of latitude ~111 km. In degrees the
        // east driver (0.9° lon away) looks farther than the north one (0.6° lat away), but on the
        // ground it is nearer: ~50 km vs ~67 km.
        let mut idx = LiveIndex::new();
        idx.upsert(pos("north", 60.6, 10.0));
        idx.upsert(pos("east", 60.0, 10.9));
        let got = idx.nearest(60.0, 10.0, 1, None);
        assert_eq!(&*got[0].position.driver_id, "east");
        let both = idx.nearest(60.0, 10.0, 5, None);
        assert_eq!(both.len(), 2);
        assert!(both[0].distance_m < both[1].distance_m);
        assert!(idx.nearest(60.0, 10.0, 5, Some(40_000.0)).is_empty());
    }
}
