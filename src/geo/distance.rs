//! Great-circle distances and bounding boxes.

use geo::{Distance, Haversine, Point};

/// Mean Earth radius used by `geo`'s haversine (IUGG R1 = 6,371,008.8 m).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance in metres between two WGS84 points given as (lat, lon) degrees,
/// by the haversine formula (`geo::Haversine`, mean Earth radius). Error vs. the WGS84 ellipsoid is
/// below 0.5 %, far under GPS error.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    Haversine.distance(Point::new(lon1, lat1), Point::new(lon2, lat2))
}

/// A WGS84 bounding box in degrees, `[west, south, east, north]` as in GeoJSON (RFC 7946 §5).
/// `west > east` means the box crosses the antimeridian.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub west: f64,
    pub south: f64,
    pub east: f64,
    pub north: f64,
}

impl BBox {
    /// Builds a box, checking ranges: longitudes in [-180, 180], latitudes in [-90, 90] with
    /// `south <= north`. Errors with a human-readable reason.
    pub fn new(west: f64, south: f64, east: f64, north: f64) -> Result<Self, String> {
        let all = [west, south, east, north];
        if all.iter().any(|v| !v.is_finite()) {
            return Err("bbox values must be finite numbers".into());
        }
        if !(-180.0..=180.0).contains(&west) || !(-180.0..=180.0).contains(&east) {
            return Err("bbox longitudes must be within [-180, 180]".into());
        }
        if !(-90.0..=90.0).contains(&south) || !(-90.0..=90.0).contains(&north) {
            return Err("bbox latitudes must be within [-90, 90]".into());
        }
        if south > north {
            return Err("bbox south must not exceed north".into());
        }
        Ok(Self {
            west,
            south,
            east,
            north,
        })
    }

    /// Parses `"w,s,e,n"` (degrees), as used by `?bbox=` query parameters.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<f64> = text
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| "bbox must be four numbers: west,south,east,north".to_string())?;
        match parts.as_slice() {
            [w, s, e, n] => Self::new(*w, *s, *e, *n),
            _ => Err("bbox must be four numbers: west,south,east,north".into()),
        }
    }

    /// True when the point lies inside (edges included), honouring antimeridian crossing.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        if lat < self.south || lat > self.north {
            return false;
        }
        if self.west <= self.east {
            lon >= self.west && lon <= self.east
        } else {
            lon >= self.west || lon <= self.east
        }
    }

    /// The box as one or two plain (non-wrapping) `[min_lon, min_lat] .. [max_lon, max_lat]` boxes.
    pub fn parts(&self) -> Vec<([f64; 2], [f64; 2])> {
        if self.west <= self.east {
            vec![([self.west, self.south], [self.east, self.north])]
        } else {
            vec![
                ([self.west, self.south], [180.0, self.north]),
                ([-180.0, self.south], [self.east, self.north]),
            ]
        }
    }

    /// A box that contains every point within `radius_m` of (lat, lon). Conservative (it may be
    /// larger than needed, never smaller); near the poles it widens to all longitudes.
    pub fn around(lat: f64, lon: f64, radius_m: f64) -> Self {
        let dlat = (radius_m / EARTH_RADIUS_M).to_degrees();
        let south = (lat - dlat).max(-90.0);
        let north = (lat + dlat).min(90.0);
        // Longitude span grows with 1/cos(lat); take the widest latitude the circle reaches.
        let max_abs_lat = south.abs().max(north.abs());
        let cos = max_abs_lat.to_radians().cos();
        if cos < 1e-9 || radius_m / (EARTH_RADIUS_M * cos) >= std::f64::consts::PI {
            return Self {
                west: -180.0,
                south,
                east: 180.0,
                north,
            };
        }
        let dlon = (radius_m / (EARTH_RADIUS_M * cos)).to_degrees();
        let mut west = lon - dlon;
        let mut east = lon + dlon;
        if west < -180.0 {
            west += 360.0;
        }
        if east > 180.0 {
            east -= 360.0;
        }
        Self {
            west,
            south,
            east,
            north,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_known_distance() {
        // Paris (48.8566, 2.3522) to London (51.5074, -0.1278): ~343.5 km great-circle.
        let d = haversine_m(48.8566, 2.3522, 51.5074, -0.1278);
        assert!((d - 343_500.0).abs() < 1_500.0, "{d}");
    }

    #[test]
    fn bbox_parse_and_contains_with_antimeridian() {
        let b = BBox::parse("170,-10,-170,10").unwrap();
        assert!(b.contains(0.0, 175.0));
        assert!(b.contains(0.0, -175.0));
        assert!(!b.contains(0.0, 0.0));
        assert_eq!(b.parts().len(), 2);
        assert!(BBox::parse("1,2,3").is_err());
        assert!(BBox::parse("0,10,1,5").is_err());
        assert!(BBox::parse("0,0,200,1").is_err());
    }

    #[test]
    fn around_contains_circle() {
        for lat in [0.0, 45.0, 70.0, -60.0] {
            let b = BBox::around(lat, 10.0, 1000.0);
            for bearing in 0..36 {
                let a = (bearing as f64 * 10.0).to_radians();
                // Points 999 m away in each direction (small-distance approximation).
                let dlat = (999.0 * a.cos() / EARTH_RADIUS_M).to_degrees();
                let dlon =
                    (999.0 * a.sin() / (EARTH_RADIUS_M * lat.to_radians().cos())).to_degrees();
                assert!(
                    b.contains(lat + dlat, 10.0 + dlon),
                    "lat {lat} bearing {bearing}"
                );
            }
        }
    }
}
