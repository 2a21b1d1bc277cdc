//! Shared by the benches: the same data for the live index and for its Redis baseline.

/// Deterministic pseudo-random points `(lat, lon)` over a ~50 × 50 km city around Porto
/// (xorshift; no RNG dependency).
pub fn points(n: usize) -> Vec<(f64, f64)> {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let a = (x & 0xFFFF_FFFF) as f64 / u32::MAX as f64;
            let b = (x >> 32) as f64 / u32::MAX as f64;
            (41.0 + a * 0.45, -8.8 + b * 0.6)
        })
        .collect()
}
