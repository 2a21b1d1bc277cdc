//! Fleet geofences ("zones"): circles and polygons anywhere, with dwell and hysteresis, checked
//! against every fix of every driver of the fleet.
//!
//! - **Shapes**: a circle (centre in degrees, radius in m, great-circle distance) or a
//!   (multi)polygon in WGS84 degrees. The point-in-polygon test is `geo`'s `Contains`; distances
//!   to a polygon's boundary are `geo`'s Euclidean point-to-ring distances on coordinates whose
//!   longitude is scaled by cos(latitude) at the zone's centre, times 111,195 m per degree: an
//!   equirectangular projection, exact to well under 1 % over a city-sized zone.
//! - **Hysteresis** (the margin, m): a driver *enters* when a fix is at least the margin inside
//!   the boundary and *exits* when one is at least the margin outside, each confirmed by a second
//!   fix in a row ([`CONFIRM_FIXES`]). GPS jitter along the boundary (within the margin) and a
//!   route that clips a corner (one fix inside) change nothing: Traccar's geofences, which fire
//!   on a single fix, flap on both (traccar #6019, #2189).
//! - **Dwell**: `geofence.dwelled` once per visit, when the driver has been inside for the
//!   zone's dwell time (device time).
//! - **Index**: each fleet's zones sit in an R-tree over their bounding boxes grown by the
//!   margin, so a fix costs one point query plus the exact test of the few zones around it: 10k
//!   zones cost about what 10 do (`benches/core.rs`). A zone a driver is in is tested on every
//!   fix until it is left, wherever the fix is.
//!
//! Pure and synchronous: no I/O, no clock; the hub owns the state and the events.

use std::collections::HashMap;
use std::sync::Arc;

use geo::{Contains, Coord, Distance, Euclidean, LineString, MultiPolygon, Point, Polygon};
use rstar::{primitives::GeomWithData, primitives::Rectangle, RTree, AABB};

use super::haversine_m;
use crate::model::Fix;

/// Metres per degree of latitude on the mean sphere (2πR/360, R = 6,371,008.8 m).
const M_PER_DEG: f64 = 111_195.08;
/// Fixes in a row a crossing needs (inside past the margin to enter, outside past it to exit).
pub const CONFIRM_FIXES: u32 = 2;

/// A zone's geometry.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Centre (degrees WGS84) and radius (m).
    Circle { lat: f64, lon: f64, radius_m: f64 },
    /// Polygons in degrees WGS84, `x` = longitude, `y` = latitude (RFC 7946 order).
    Polygons(MultiPolygon<f64>),
}

/// One fleet geofence.
#[derive(Debug, Clone)]
pub struct Zone {
    pub id: Arc<str>,
    pub shape: Shape,
    /// Only these drivers are checked against it; `None`: every driver of the fleet.
    pub drivers: Option<Vec<Arc<str>>>,
    /// Time inside before `geofence.dwelled`, ms.
    pub dwell_ms: i64,
    /// Hysteresis margin, m.
    pub margin_m: f64,
    /// Polygons with longitude scaled by `cos_lat` (see the module docs).
    scaled: MultiPolygon<f64>,
    cos_lat: f64,
    /// [west, south, east, north] degrees, grown by the margin.
    envelope: [f64; 4],
}

impl Zone {
    /// Builds a zone (the shape must already be valid: see `validate` in the REST layer).
    pub fn new(
        id: Arc<str>,
        shape: Shape,
        drivers: Option<Vec<Arc<str>>>,
        dwell_ms: i64,
        margin_m: f64,
    ) -> Self {
        let (cos_lat, scaled, bbox) = match &shape {
            Shape::Circle { lat, lon, radius_m } => {
                let dlat = radius_m / M_PER_DEG;
                let dlon = dlat / lat.to_radians().cos().max(0.01);
                (
                    lat.to_radians().cos(),
                    MultiPolygon::new(Vec::new()),
                    [lon - dlon, lat - dlat, lon + dlon, lat + dlat],
                )
            }
            Shape::Polygons(mp) => {
                let bbox = bbox_of(mp);
                let cos_lat = ((bbox[1] + bbox[3]) / 2.0).to_radians().cos().max(0.01);
                let scaled = MultiPolygon::new(
                    mp.0.iter()
                        .map(|p| {
                            let ring = |r: &LineString<f64>| {
                                LineString::new(
                                    r.0.iter()
                                        .map(|c| Coord {
                                            x: c.x * cos_lat,
                                            y: c.y,
                                        })
                                        .collect(),
                                )
                            };
                            Polygon::new(
                                ring(p.exterior()),
                                p.interiors().iter().map(ring).collect(),
                            )
                        })
                        .collect(),
                );
                (cos_lat, scaled, bbox)
            }
        };
        let grow_lat = margin_m / M_PER_DEG;
        let grow_lon = grow_lat / cos_lat.max(0.01);
        Self {
            id,
            shape,
            drivers,
            dwell_ms,
            margin_m,
            scaled,
            cos_lat,
            envelope: [
                bbox[0] - grow_lon,
                bbox[1] - grow_lat,
                bbox[2] + grow_lon,
                bbox[3] + grow_lat,
            ],
        }
    }

    /// Signed distance of a point to the zone's boundary, m: negative inside, positive outside.
    pub fn signed_distance_m(&self, lat: f64, lon: f64) -> f64 {
        match &self.shape {
            Shape::Circle {
                lat: clat,
                lon: clon,
                radius_m,
            } => haversine_m(lat, lon, *clat, *clon) - radius_m,
            Shape::Polygons(_) => {
                let p = Point::new(lon * self.cos_lat, lat);
                let to_boundary = self
                    .scaled
                    .0
                    .iter()
                    .flat_map(|poly| std::iter::once(poly.exterior()).chain(poly.interiors()))
                    .map(|ring| Euclidean.distance(&p, ring))
                    .fold(f64::INFINITY, f64::min)
                    * M_PER_DEG;
                if self.scaled.contains(&p) {
                    -to_boundary
                } else {
                    to_boundary
                }
            }
        }
    }

    fn applies_to(&self, driver_id: &str) -> bool {
        self.drivers
            .as_ref()
            .is_none_or(|ds| ds.iter().any(|d| &**d == driver_id))
    }
}

/// [west, south, east, north] of polygons, degrees.
fn bbox_of(mp: &MultiPolygon<f64>) -> [f64; 4] {
    let mut b = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for c in mp.0.iter().flat_map(|p| p.exterior().0.iter()) {
        b = [b[0].min(c.x), b[1].min(c.y), b[2].max(c.x), b[3].max(c.y)];
    }
    b
}

type ZoneEntry = GeomWithData<Rectangle<[f64; 2]>, usize>;

/// One fleet's zones in an R-tree over their grown envelopes. Immutable: a change to the
/// fleet's zones builds a new index (zones change rarely; fixes read it constantly).
#[derive(Debug, Default)]
pub struct ZoneIndex {
    tree: RTree<ZoneEntry>,
    zones: Vec<Zone>,
    by_id: HashMap<Arc<str>, usize>,
}

impl ZoneIndex {
    /// Indexes `zones` (bulk-loaded R-tree).
    pub fn new(zones: Vec<Zone>) -> Self {
        let entries = zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let [w, s, e, n] = z.envelope;
                GeomWithData::new(Rectangle::from_corners([w, s], [e, n]), i)
            })
            .collect();
        let by_id = zones
            .iter()
            .enumerate()
            .map(|(i, z)| (z.id.clone(), i))
            .collect();
        Self {
            tree: RTree::bulk_load(entries),
            zones,
            by_id,
        }
    }

    /// A new index with `zone` added, or replacing the zone with its id.
    pub fn with(&self, zone: Zone) -> Self {
        let mut zones: Vec<Zone> = self
            .zones
            .iter()
            .filter(|z| z.id != zone.id)
            .cloned()
            .collect();
        zones.push(zone);
        Self::new(zones)
    }

    /// A new index without the zone `id`.
    pub fn without(&self, id: &str) -> Self {
        Self::new(
            self.zones
                .iter()
                .filter(|z| &*z.id != id)
                .cloned()
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Zone> {
        self.by_id.get(id).map(|&i| &self.zones[i])
    }

    fn around(&self, lat: f64, lon: f64) -> impl Iterator<Item = &Zone> {
        self.tree
            .locate_in_envelope_intersecting(&AABB::from_point([lon, lat]))
            .map(|e| &self.zones[e.data])
    }
}

/// What a fix caused in a zone. Times device time, unix ms UTC.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoneEvent {
    /// Entered at the first of the confirming fixes.
    Entered { zone: Arc<str>, at_ms: i64 },
    /// Inside for the zone's dwell time since `entered_at_ms`.
    Dwelled {
        zone: Arc<str>,
        at_ms: i64,
        entered_at_ms: i64,
    },
    /// Left at the first of the confirming fixes outside.
    Exited {
        zone: Arc<str>,
        at_ms: i64,
        entered_at_ms: i64,
    },
}

/// One driver in one zone.
#[derive(Debug, Clone, Copy, Default)]
struct Presence {
    inside: bool,
    entered_at_ms: i64,
    dwelled: bool,
    /// Fixes in a row that point to the other state, and the first one's time.
    crossing: u32,
    crossing_since_ms: i64,
}

/// One driver's presence in its fleet's zones.
#[derive(Debug, Default)]
pub struct ZoneTracker {
    states: HashMap<Arc<str>, Presence>,
    last_ts_ms: Option<i64>,
}

impl ZoneTracker {
    /// Zones the driver is inside now.
    pub fn inside(&self) -> impl Iterator<Item = &Arc<str>> {
        self.states
            .iter()
            .filter(|(_, p)| p.inside)
            .map(|(id, _)| id)
    }

    /// Feeds one fix of `driver_id` (device time must increase; older fixes are ignored).
    pub fn observe(&mut self, index: &ZoneIndex, driver_id: &str, fix: &Fix) -> Vec<ZoneEvent> {
        if self.last_ts_ms.is_some_and(|last| fix.ts_ms <= last) {
            return Vec::new();
        }
        self.last_ts_ms = Some(fix.ts_ms);
        // Zones near the fix, and zones the driver is in or crossing (wherever the fix is).
        let mut candidates: Vec<&Zone> = index
            .around(fix.lat, fix.lon)
            .filter(|z| z.applies_to(driver_id))
            .collect();
        for id in self.states.keys() {
            if let Some(z) = index.get(id) {
                if !candidates.iter().any(|c| c.id == z.id) {
                    candidates.push(z);
                }
            }
        }
        // A zone deleted while the driver was in it ends silently.
        self.states.retain(|id, _| index.get(id).is_some());
        let mut events = Vec::new();
        for zone in candidates {
            let d = zone.signed_distance_m(fix.lat, fix.lon);
            let p = self.states.entry(zone.id.clone()).or_default();
            let towards_other = if p.inside {
                d >= zone.margin_m
            } else {
                d <= -zone.margin_m
            };
            if towards_other {
                if p.crossing == 0 {
                    p.crossing_since_ms = fix.ts_ms;
                }
                p.crossing += 1;
            } else {
                // Not past the margin: a crossing needs its fixes in a row.
                p.crossing = 0;
            }
            if p.crossing >= CONFIRM_FIXES {
                p.crossing = 0;
                if p.inside {
                    p.inside = false;
                    events.push(ZoneEvent::Exited {
                        zone: zone.id.clone(),
                        at_ms: p.crossing_since_ms,
                        entered_at_ms: p.entered_at_ms,
                    });
                } else {
                    *p = Presence {
                        inside: true,
                        entered_at_ms: p.crossing_since_ms,
                        ..Presence::default()
                    };
                    events.push(ZoneEvent::Entered {
                        zone: zone.id.clone(),
                        at_ms: p.entered_at_ms,
                    });
                }
            }
            if p.inside && !p.dwelled && fix.ts_ms - p.entered_at_ms >= zone.dwell_ms {
                p.dwelled = true;
                events.push(ZoneEvent::Dwelled {
                    zone: zone.id.clone(),
                    at_ms: fix.ts_ms,
                    entered_at_ms: p.entered_at_ms,
                });
            }
        }
        // Forget zones the driver is clearly out of (keeps the map to the zones it is near).
        self.states.retain(|_, p| p.inside || p.crossing > 0);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::polygon;

    const LAT: f64 = 41.15;
    const LON: f64 = -8.61;

    fn north(m: f64) -> f64 {
        LAT + m / M_PER_DEG
    }

    fn east(m: f64) -> f64 {
        LON + m / (M_PER_DEG * LAT.to_radians().cos())
    }

    /// A 200 m square with its south-west corner at (LAT, LON).
    fn square(id: &str, margin_m: f64) -> Zone {
        let (n, e) = (north(200.0), east(200.0));
        Zone::new(
            id.into(),
            Shape::Polygons(MultiPolygon::new(vec![polygon![
                (x: LON, y: LAT), (x: e, y: LAT), (x: e, y: n), (x: LON, y: n), (x: LON, y: LAT)
            ]])),
            None,
            60_000,
            margin_m,
        )
    }

    fn names(events: &[ZoneEvent]) -> Vec<&'static str> {
        events
            .iter()
            .map(|e| match e {
                ZoneEvent::Entered { .. } => "entered",
                ZoneEvent::Dwelled { .. } => "dwelled",
                ZoneEvent::Exited { .. } => "exited",
            })
            .collect()
    }

    fn run(index: &ZoneIndex, path: &[(f64, f64)], step_ms: i64) -> Vec<ZoneEvent> {
        let mut t = ZoneTracker::default();
        let mut out = Vec::new();
        for (i, (lat, lon)) in path.iter().enumerate() {
            out.extend(t.observe(index, "D", &Fix::at(i as i64 * step_ms, *lat, *lon)));
        }
        out
    }

    #[test]
    fn signed_distances_of_a_polygon_and_a_circle() {
        let z = square("sq", 20.0);
        let inside = z.signed_distance_m(north(100.0), east(100.0));
        assert!((inside + 100.0).abs() < 1.0, "{inside}");
        let outside = z.signed_distance_m(north(100.0), east(250.0));
        assert!((outside - 50.0).abs() < 1.0, "{outside}");
        let c = Zone::new(
            "c".into(),
            Shape::Circle {
                lat: LAT,
                lon: LON,
                radius_m: 100.0,
            },
            None,
            0,
            10.0,
        );
        assert!((c.signed_distance_m(north(150.0), LON) - 50.0).abs() < 0.5);
    }

    #[test]
    fn entering_dwelling_and_exiting_once_each() {
        let index = ZoneIndex::new(vec![square("sq", 20.0)]);
        // From 100 m west to the middle, 3 minutes there, out 100 m east; a fix every 10 s.
        let mut path = vec![(north(100.0), east(-100.0)), (north(100.0), east(-50.0))];
        path.extend((0..18).map(|_| (north(100.0), east(100.0))));
        path.extend([(north(100.0), east(250.0)), (north(100.0), east(300.0))]);
        let events = run(&index, &path, 10_000);
        assert_eq!(names(&events), vec!["entered", "dwelled", "exited"]);
        assert_eq!(
            events[0],
            ZoneEvent::Entered {
                zone: "sq".into(),
                at_ms: 20_000
            }
        );
    }

    #[test]
    fn jitter_on_the_boundary_and_a_clipped_corner_give_no_events() {
        let index = ZoneIndex::new(vec![square("sq", 20.0)]);
        // ±15 m around the west edge for 5 minutes: inside the margin band.
        let jitter: Vec<_> = (0..60)
            .map(|i| (north(100.0), east(if i % 2 == 0 { -15.0 } else { 15.0 })))
            .collect();
        assert!(run(&index, &jitter, 5_000).is_empty());
        // A diagonal cutting the south-west corner: one fix 30 m inside, then out.
        let corner = [
            (north(-60.0), east(0.0)),
            (north(-20.0), east(30.0)),
            (north(30.0), east(30.0)),
            (north(30.0), east(-40.0)),
            (north(40.0), east(-80.0)),
        ];
        assert!(run(&index, &corner, 5_000).is_empty());
    }

    #[test]
    fn driver_filters_apply_and_ten_thousand_zones_index() {
        let mut only_e = square("only-e", 20.0);
        only_e.drivers = Some(vec!["E".into()]);
        let index = ZoneIndex::new(vec![only_e]);
        let path = vec![(north(100.0), east(100.0)); 3];
        assert!(
            run(&index, &path, 1_000).is_empty(),
            "D is not in the filter"
        );
        // 10k circles on a 100 × 100 grid 500 m apart: a fix finds its own.
        let zones: Vec<Zone> = (0..10_000)
            .map(|i| {
                Zone::new(
                    format!("z{i}").into(),
                    Shape::Circle {
                        lat: north((i / 100) as f64 * 500.0),
                        lon: east((i % 100) as f64 * 500.0),
                        radius_m: 100.0,
                    },
                    None,
                    30_000,
                    10.0,
                )
            })
            .collect();
        let index = ZoneIndex::new(zones);
        let at = (north(37.0 * 500.0), east(42.0 * 500.0 + 20.0));
        let events = run(&index, &[at, at], 1_000);
        assert_eq!(
            events,
            vec![ZoneEvent::Entered {
                zone: "z3742".into(),
                at_ms: 0
            }]
        );
    }
}
