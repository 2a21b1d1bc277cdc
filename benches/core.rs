//! The core's hot paths: live index upsert and queries, and the arrival check per fix.
//! `cargo bench --bench core`; figures in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use trackhub::geo::arrival::{ArrivalConfig, ArrivalTracker, Geofence, StopKey, StopPhase};
use trackhub::geo::index::{LiveIndex, LivePosition};
use trackhub::geo::{BBox, Fix};

/// Deterministic pseudo-random points over a ~50 × 50 km city (xorshift; no RNG dependency).
fn points(n: usize) -> Vec<(f64, f64)> {
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

fn fix(lat: f64, lon: f64, ts_ms: i64) -> Fix {
    Fix {
        ts_ms,
        lat,
        lon,
        accuracy_m: Some(8.0),
        speed_mps: None,
        heading_deg: None,
    }
}

fn live_index(c: &mut Criterion) {
    let mut g = c.benchmark_group("live_index");
    for n in [10_000usize, 100_000] {
        let pts = points(n);
        let mut idx = LiveIndex::new();
        let ids: Vec<std::sync::Arc<str>> = (0..n).map(|i| format!("d{i}").into()).collect();
        for (i, (lat, lon)) in pts.iter().enumerate() {
            idx.upsert(LivePosition {
                driver_id: ids[i].clone(),
                fix: fix(*lat, *lon, 0),
                received_ms: 0,
            });
        }
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::new("upsert", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % n;
                let (lat, lon) = pts[(k * 7919) % n];
                idx.upsert(LivePosition {
                    driver_id: ids[k].clone(),
                    fix: fix(lat, lon, 1),
                    received_ms: 0,
                })
            })
        });
        let bbox = BBox::new(-8.62, 41.14, -8.60, 41.16).unwrap();
        g.bench_with_input(BenchmarkId::new("bbox_2km", n), &n, |b, _| {
            b.iter(|| black_box(idx.in_bbox(&bbox)).len())
        });
        g.bench_with_input(BenchmarkId::new("nearest_10", n), &n, |b, _| {
            b.iter(|| black_box(idx.nearest(41.15, -8.61, 10, None)).len())
        });
    }
    g.finish();
}

fn arrival(c: &mut Criterion) {
    let mut g = c.benchmark_group("arrival_observe");
    let cfg = ArrivalConfig::default();
    for n in [10usize, 1_000, 100_000] {
        let mut t = ArrivalTracker::new();
        for (i, (lat, lon)) in points(n).into_iter().enumerate() {
            let key = StopKey {
                trip_id: "t".into(),
                stop_id: format!("s{i}").into(),
            };
            t.add_stop(
                Geofence {
                    key,
                    lat,
                    lon,
                    radius_m: 100.0,
                },
                StopPhase::Pending,
                &cfg,
            );
        }
        let route = points(1_000);
        let mut ts = 0i64;
        g.bench_with_input(BenchmarkId::new("stops", n), &n, |b, _| {
            b.iter(|| {
                ts += 5_000;
                let (lat, lon) = route[(ts / 5_000) as usize % route.len()];
                black_box(t.observe(&fix(lat, lon, ts), &cfg)).len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, live_index, arrival);
criterion_main!(benches);
