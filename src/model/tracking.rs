//! How often a driver's phone should report now: the hub tells our own app (`tracking`
//! messages on the driver socket), as Radar's remote tracking options and HyperTrack's SDK
//! control do, so that it samples densely only where arrival detection needs it.

/// The sampling the hub needs from a phone now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sampling {
    /// Near a pending stop (within [`TrackingHint::NEAR_M`]) or with a dwell in progress: every
    /// fix counts for the check-in.
    Dense,
    /// Stops ahead, none near: the live map and ETAs need a position now and then.
    Sparse,
    /// No stop to detect: a keep-alive now and then is enough (the phone may stop).
    Off,
}

/// A `tracking` message: the sampling, and what it means for the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackingHint {
    pub sampling: Sampling,
    /// Send a fix at least this often, s.
    pub interval_s: u32,
    /// And whenever the phone moved this far, m (0: on the interval only).
    pub distance_m: u32,
}

impl TrackingHint {
    /// Within this distance of a pending stop's centre the phone samples densely, m: ~40 s at
    /// city speed before the stop's 100 m zone, time for the dwell's first fixes.
    pub const NEAR_M: f64 = 500.0;

    /// The hint for a sampling. Intervals from `eval-arrival --profile` (BENCHMARKS.md): every
    /// 5 s near stops (the every-fix figures), every 30 s elsewhere (a 30 s phone still checks
    /// in 98.5 % of stops, so nothing is lost if a stop comes sooner than expected), one
    /// keep-alive in 5 minutes without stops.
    pub fn of(sampling: Sampling) -> Self {
        let (interval_s, distance_m) = match sampling {
            Sampling::Dense => (5, 0),
            Sampling::Sparse => (30, 100),
            Sampling::Off => (300, 0),
        };
        Self {
            sampling,
            interval_s,
            distance_m,
        }
    }
}

impl Sampling {
    /// `dense` | `sparse` | `off`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::Sparse => "sparse",
            Self::Off => "off",
        }
    }
}
