//! The fleet's typical effective speed towards a stop, by distance, learned from its arrivals.

/// Upper edges of the distance bands, m (the last band is open): doubling from 125 m, so each
/// band spans the same ratio of distances and short approaches (where lights, parking and
/// one-way streets dominate) get bands of their own.
const BAND_EDGES_M: [f64; 9] = [
    125.0, 250.0, 500.0, 1_000.0, 2_000.0, 4_000.0, 8_000.0, 16_000.0, 32_000.0,
];
const BANDS: usize = BAND_EDGES_M.len() + 1;

/// Effective speed per band before any arrival is seen, m/s of great-circle distance: the
/// medians measured on the 1,829 usable Porto taxi training trips (`trackhub eval-eta --learn`,
/// BENCHMARKS.md), a city fleet's figures. The two bands past 16 km hold a few dozen samples
/// (25 m/s in the last): they keep the 8-16 km figure until a fleet's own arrivals say more.
pub const PRIOR_MPS: [f64; BANDS] = [3.7, 3.7, 3.7, 4.3, 4.9, 5.6, 7.4, 12.7, 12.7, 12.7];
/// Weight of the prior, in samples: a band follows the fleet's own data once it has seen a few
/// dozen approaches.
const PRIOR_WEIGHT: f64 = 20.0;
/// Samples a band remembers at full weight; past it older samples fade (halved), so the curve
/// follows a fleet whose traffic changes (season, city, vehicle type).
const MEMORY: f64 = 5_000.0;

/// Histogram bins of effective speed per band: log-spaced from [`MIN_MPS`] to [`MAX_MPS`],
/// ~14 % apart, finer than the estimate's own error.
const BINS: usize = 48;
const MIN_MPS: f64 = 0.1;
const MAX_MPS: f64 = 70.0;

fn bin_of(mps: f64) -> usize {
    let t = (mps / MIN_MPS).ln() / (MAX_MPS / MIN_MPS).ln();
    ((t * BINS as f64) as usize).min(BINS - 1)
}

fn mps_of(bin: usize) -> f64 {
    MIN_MPS * (MAX_MPS / MIN_MPS).powf((bin as f64 + 0.5) / BINS as f64)
}

/// Effective speed (great-circle m per s of remaining time) by distance to the stop: the
/// *median* of what the fleet's arrivals showed in each band, starting from [`PRIOR_MPS`]. A
/// median, not a mean: the estimate is scored by absolute error, whose best answer is the
/// median, and a taxi that circled the block once (a sample at 0.2 m/s) must not drag the band.
/// Measured with `eval-eta` five minutes out: the geometric mean tied a fixed 30 km/h on Porto
/// (52 s median error each) and lost to it on Go!Track (76 s against 53 s); the median gives
/// 46 and 53 s (BENCHMARKS.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ApproachCurve {
    counts: [[f32; BINS]; BANDS],
}

impl Default for ApproachCurve {
    fn default() -> Self {
        Self::with_prior(PRIOR_MPS)
    }
}

fn band(distance_m: f64) -> usize {
    BAND_EDGES_M
        .iter()
        .position(|edge| distance_m < *edge)
        .unwrap_or(BANDS - 1)
}

/// Geometric centre of a band, m (the open last band: twice its lower edge).
fn centre_m(band: usize) -> f64 {
    let lower = if band == 0 {
        62.5
    } else {
        BAND_EDGES_M[band - 1]
    };
    let upper = BAND_EDGES_M.get(band).copied().unwrap_or(lower * 2.0);
    (lower * upper).sqrt()
}

impl ApproachCurve {
    /// A curve that starts from the given speeds per band, m/s.
    pub fn with_prior(prior_mps: [f64; BANDS]) -> Self {
        let mut counts = [[0.0; BINS]; BANDS];
        for (b, v) in prior_mps.iter().enumerate() {
            counts[b][bin_of(*v)] = PRIOR_WEIGHT as f32;
        }
        Self { counts }
    }

    /// A curve with no prior: only what it will observe (bands with nothing yet use 5 m/s).
    pub fn empty() -> Self {
        Self {
            counts: [[0.0; BINS]; BANDS],
        }
    }

    /// Learns from one arrival: the vehicle was `distance_m` (great circle) from the stop it
    /// reached `remaining_s` later. Samples under 20 m or 5 s say nothing about driving and are
    /// skipped, as are impossible ones (over 70 m/s).
    pub fn observe(&mut self, distance_m: f64, remaining_s: f64) {
        if !(distance_m >= 20.0 && remaining_s >= 5.0) {
            return;
        }
        let mps = distance_m / remaining_s;
        if mps > MAX_MPS {
            return;
        }
        let counts = &mut self.counts[band(distance_m)];
        if counts.iter().sum::<f32>() >= MEMORY as f32 {
            counts.iter_mut().for_each(|c| *c /= 2.0);
        }
        counts[bin_of(mps)] += 1.0;
    }

    /// The band speeds, m/s (what `eval-eta --learn` prints).
    pub fn speeds_mps(&self) -> [f64; BANDS] {
        std::array::from_fn(|b| self.band_mps(b))
    }

    fn band_mps(&self, b: usize) -> f64 {
        let counts = &self.counts[b];
        let total: f32 = counts.iter().sum();
        if total <= 0.0 {
            return 5.0;
        }
        let mut seen = 0.0;
        for (bin, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= total / 2.0 {
                return mps_of(bin);
            }
        }
        mps_of(BINS - 1)
    }

    /// Effective speed at `distance_m`, m/s: interpolated between band centres in log distance
    /// and log speed, so the estimate has no steps at band edges.
    pub fn speed_at(&self, distance_m: f64) -> f64 {
        let d = distance_m.max(1.0);
        let first = centre_m(0);
        if d <= first {
            return self.band_mps(0);
        }
        for b in 0..BANDS - 1 {
            let (lo, hi) = (centre_m(b), centre_m(b + 1));
            if d <= hi {
                let t = (d / lo).ln() / (hi / lo).ln();
                let (v0, v1) = (self.band_mps(b).ln(), self.band_mps(b + 1).ln());
                return (v0 + t * (v1 - v0)).exp();
            }
        }
        self.band_mps(BANDS - 1)
    }

    /// Seconds to cover `distance_m` of great-circle distance to a stop.
    pub fn seconds_for(&self, distance_m: f64) -> f64 {
        if distance_m <= 0.0 {
            return 0.0;
        }
        distance_m / self.speed_at(distance_m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prior_gives_longer_times_for_longer_distances() {
        let c = ApproachCurve::default();
        let mut last = 0.0;
        for d in [
            10.0, 100.0, 300.0, 1_000.0, 3_000.0, 10_000.0, 50_000.0, 200_000.0,
        ] {
            let t = c.seconds_for(d);
            assert!(t > last, "{d} m: {t} s after {last} s");
            last = t;
        }
    }

    #[test]
    fn observing_arrivals_moves_a_band_towards_them() {
        let mut c = ApproachCurve::default();
        let before = c.speed_at(1_400.0);
        for _ in 0..200 {
            c.observe(1_400.0, 100.0); // 14 m/s: a fast fleet
        }
        let after = c.speed_at(1_400.0);
        // The median moves to the new figure, within one histogram bin (~14 %).
        assert!((after / 14.0 - 1.0).abs() < 0.14, "{before} -> {after}");
        // Nonsense is ignored.
        let frozen = c.clone();
        c.observe(5.0, 100.0);
        c.observe(1_000.0, 1.0);
        c.observe(f64::NAN, 10.0);
        assert_eq!(c, frozen);
    }
}
