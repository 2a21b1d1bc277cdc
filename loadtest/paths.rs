//! Where simulated drivers go: along real vehicle traces (`--traces`, any format `trackhub
//! replay` reads, e.g. the Porto taxi polylines), or on a random walk when none are given.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trackhub::geo::distance::haversine_m;

/// A polyline with cumulative distances, m.
pub struct Route {
    points: Vec<(f64, f64)>,
    cumulative_m: Vec<f64>,
}

impl Route {
    fn new(points: Vec<(f64, f64)>) -> Option<Self> {
        let mut cumulative_m = Vec::with_capacity(points.len());
        let mut total = 0.0;
        for (i, p) in points.iter().enumerate() {
            if i > 0 {
                let q = points[i - 1];
                total += haversine_m(q.0, q.1, p.0, p.1);
            }
            cumulative_m.push(total);
        }
        (total > 100.0).then_some(Self {
            points,
            cumulative_m,
        })
    }

    fn length_m(&self) -> f64 {
        *self.cumulative_m.last().expect("a route has points")
    }

    /// The point `s` metres along the route, driving back and forth (no jump at the ends).
    fn at(&self, s: f64) -> (f64, f64) {
        let len = self.length_m();
        let s = s.rem_euclid(2.0 * len);
        let s = if s > len { 2.0 * len - s } else { s };
        let i = self.cumulative_m.partition_point(|&c| c <= s).max(1);
        let i = i.min(self.points.len() - 1);
        let (a, b) = (self.points[i - 1], self.points[i]);
        let span = self.cumulative_m[i] - self.cumulative_m[i - 1];
        let k = if span > 0.0 {
            (s - self.cumulative_m[i - 1]) / span
        } else {
            0.0
        };
        (a.0 + (b.0 - a.0) * k, a.1 + (b.1 - a.1) * k)
    }
}

/// Reads routes from trace files; traces shorter than 100 m are skipped. No files: no routes
/// (drivers take random walks).
pub fn load_routes(files: &[PathBuf]) -> anyhow::Result<Vec<Route>> {
    let mut routes = Vec::new();
    for f in files {
        for trace in trackhub::replay::formats::read(f, None)? {
            let points = trace.fixes.iter().map(|x| (x.lat, x.lon)).collect();
            routes.extend(Route::new(points));
        }
    }
    anyhow::ensure!(
        files.is_empty() || !routes.is_empty(),
        "no usable route in {files:?}"
    );
    Ok(routes)
}

/// One driver's path: positions at a steady speed, m/s.
pub enum Path<'a> {
    Route {
        route: &'a Route,
        offset_m: f64,
        speed_mps: f64,
    },
    Walk {
        rng: Box<StdRng>,
        lat: f64,
        lon: f64,
        heading: f64,
        speed_mps: f64,
    },
}

impl<'a> Path<'a> {
    /// Driver `n`'s path: on route `n % routes.len()` from a driver-specific offset, or a random
    /// walk from a point within ~5 km of `center`.
    pub fn new(n: u64, routes: &'a [Route], center: (f64, f64)) -> Self {
        let mut rng = StdRng::seed_from_u64(n);
        let speed_mps = rng.random_range(5.0..15.0);
        if routes.is_empty() {
            return Path::Walk {
                lat: center.0 + rng.random_range(-0.05..0.05),
                lon: center.1 + rng.random_range(-0.05..0.05),
                heading: rng.random_range(0.0..360.0),
                rng: Box::new(rng),
                speed_mps,
            };
        }
        let route = &routes[n as usize % routes.len()];
        Path::Route {
            offset_m: rng.random_range(0.0..2.0 * route.length_m()),
            route,
            speed_mps,
        }
    }

    pub fn speed_mps(&self) -> f64 {
        match self {
            Path::Route { speed_mps, .. } | Path::Walk { speed_mps, .. } => *speed_mps,
        }
    }

    /// The position after `elapsed_s` seconds of driving (a walk advances by `step_s` per call).
    pub fn position(&mut self, elapsed_s: f64, step_s: f64) -> (f64, f64) {
        match self {
            Path::Route {
                route,
                offset_m,
                speed_mps,
            } => route.at(*offset_m + *speed_mps * elapsed_s),
            Path::Walk {
                rng,
                lat,
                lon,
                heading,
                speed_mps,
            } => {
                *heading = (*heading + rng.random_range(-15.0..15.0)).rem_euclid(360.0);
                let step = *speed_mps * step_s;
                *lat += step * heading.to_radians().cos() / 111_195.0;
                *lon += step * heading.to_radians().sin() / (111_195.0 * lat.to_radians().cos());
                (*lat, *lon)
            }
        }
    }
}

/// `[west, south, east, north]` around every route, or ±1° around `center` for random walks.
pub fn bbox(routes: &[Route], center: (f64, f64)) -> [f64; 4] {
    if routes.is_empty() {
        return [
            center.1 - 1.0,
            center.0 - 1.0,
            center.1 + 1.0,
            center.0 + 1.0,
        ];
    }
    let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    for (lat, lon) in routes.iter().flat_map(|r| r.points.iter().copied()) {
        b = [b[0].min(lon), b[1].min(lat), b[2].max(lon), b[3].max(lat)];
    }
    [b[0] - 0.01, b[1] - 0.01, b[2] + 0.01, b[3] + 0.01]
}
