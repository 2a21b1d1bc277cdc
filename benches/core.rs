//! The core's hot paths: live index upsert and queries (10k-1M drivers), the arrival check per
//! fix (1k-1M stops), the geofence check per fix (10 vs 10k zones), the wire codecs, and one
//! coalescing flush to 1k watchers.
//! `cargo bench --bench core`; figures in BENCHMARKS.md, the Redis baseline in `redis_geo`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use trackhub::geo::arrival::{ArrivalConfig, ArrivalTracker, Geofence, StopPhase};
use trackhub::geo::index::LiveIndex;
use trackhub::geo::BBox;

mod common;
use common::points;
use trackhub::model::{Fix, LivePosition, StopKey};

fn fix(lat: f64, lon: f64, ts_ms: i64) -> Fix {
    Fix {
        ts_ms,
        lat,
        lon,
        accuracy_m: Some(8.0),
        speed_mps: None,
        heading_deg: None,
        motion: None,
    }
}

fn live_index(c: &mut Criterion) {
    let mut g = c.benchmark_group("live_index");
    for n in [10_000usize, 100_000, 1_000_000] {
        let pts = points(n);
        let mut idx = LiveIndex::new();
        let ids: Vec<std::sync::Arc<str>> = (0..n).map(|i| format!("d{i}").into()).collect();
        for (i, (lat, lon)) in pts.iter().enumerate() {
            idx.upsert(LivePosition {
                driver_id: ids[i].clone(),
                fix: fix(*lat, *lon, 0),
                received_ms: 0,
                next_stop: None,
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
                    next_stop: None,
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
    for n in [1_000usize, 100_000, 1_000_000] {
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

/// `n` zones at `points`, half circles of 100 m and half 200 m squares.
fn bench_zones(points: Vec<(f64, f64)>) -> trackhub::geo::zones::ZoneIndex {
    use geo::polygon;
    use trackhub::geo::zones::{Shape, Zone, ZoneIndex};
    let zones = points
        .into_iter()
        .enumerate()
        .map(|(i, (lat, lon))| {
            let shape = if i % 2 == 0 {
                Shape::Circle {
                    lat,
                    lon,
                    radius_m: 100.0,
                }
            } else {
                let (dlat, dlon) = (0.0018, 0.0024);
                Shape::Polygons(geo::MultiPolygon::new(vec![polygon![
                    (x: lon, y: lat), (x: lon + dlon, y: lat), (x: lon + dlon, y: lat + dlat),
                    (x: lon, y: lat + dlat), (x: lon, y: lat)
                ]]))
            };
            Zone::new(format!("z{i}").into(), shape, None, 60_000, 20.0)
        })
        .collect();
    ZoneIndex::new(zones)
}

/// `points(n)` squeezed towards the box's south-west corner by `scale` (1: the whole city).
fn scaled_points(n: usize, scale: f64) -> Vec<(f64, f64)> {
    points(n)
        .into_iter()
        .map(|(lat, lon)| (41.0 + (lat - 41.0) * scale, -8.8 + (lon + 8.8) * scale))
        .collect()
}

/// One fix through a driver's fleet geofences (issue 18), 10 vs 10,000 zones.
/// `zones_observe`: the zones spread over the same 50 × 50 km as the fixes, so 10k zones put
/// 1,000 times more zones near a fix (a fix then meets a zone's bbox about 1 time in 4, and
/// pays the exact distance to it). `zones_observe_same_density`: zones and fixes in a box
/// sized for 10,000 zones over 50 × 50 km (10 zones: 1.6 × 1.9 km), so a fix meets as many
/// zones either way and only the index's depth differs.
fn zones(c: &mut Criterion) {
    use trackhub::geo::zones::ZoneTracker;
    for (group, density) in [
        ("zones_observe", false),
        ("zones_observe_same_density", true),
    ] {
        let mut g = c.benchmark_group(group);
        for n in [10usize, 10_000] {
            let scale = if density {
                (n as f64 / 10_000.0).sqrt()
            } else {
                1.0
            };
            let index = bench_zones(scaled_points(n, scale));
            let mut tracker = ZoneTracker::default();
            let route = scaled_points(1_000, scale);
            let mut ts = 0i64;
            g.bench_with_input(BenchmarkId::new("zones", n), &n, |b, _| {
                b.iter(|| {
                    ts += 5_000;
                    let (lat, lon) = route[(ts / 5_000) as usize % route.len()];
                    black_box(tracker.observe(&index, "D", &fix(lat, lon, ts))).len()
                })
            });
        }
        g.finish();
    }
}

/// `n` positions of distinct drivers, as the hub holds them.
fn positions(n: usize) -> Vec<LivePosition> {
    points(n)
        .into_iter()
        .enumerate()
        .map(|(i, (lat, lon))| LivePosition {
            driver_id: format!("driver-{i}").into(),
            fix: Fix {
                ts_ms: 1_790_000_000_000 + i as i64,
                lat,
                lon,
                accuracy_m: Some(8.0),
                speed_mps: Some(9.5),
                heading_deg: Some(271.0),
                motion: None,
            },
            received_ms: 1_790_000_000_000 + i as i64,
            next_stop: None,
        })
        .collect()
}

/// A driver frame of 100 fixes and a watcher frame of 100 positions, both codecs.
fn codecs(c: &mut Criterion) {
    use prost::Message as _;
    use trackhub::protocol::codec::{Codec, Frame, Wire};
    use trackhub::protocol::pb;
    use trackhub::protocol::watch::WatchOut;

    let mut g = c.benchmark_group("codec");
    let fixes = positions(100);
    let json_batch = serde_json::json!({"type": "batch", "pings": fixes.iter().enumerate().map(|(i, p)| serde_json::json!({
        "seq": i, "ts": p.fix.ts_ms, "lat": p.fix.lat, "lon": p.fix.lon,
        "accuracy_m": 8.0, "speed_mps": 9.5, "heading_deg": 271.0,
    })).collect::<Vec<_>>()})
    .to_string();
    let proto_batch = pb::DriverIn {
        msg: Some(pb::driver_in::Msg::Batch(pb::Batch {
            pings: fixes
                .iter()
                .enumerate()
                .map(|(i, p)| pb::Ping {
                    seq: i as u64,
                    ts_ms: p.fix.ts_ms,
                    lat: p.fix.lat,
                    lon: p.fix.lon,
                    accuracy_m: Some(8.0),
                    speed_mps: Some(9.5),
                    heading_deg: Some(271.0),
                    driver_id: None,
                    motion: None,
                })
                .collect(),
        })),
    }
    .encode_to_vec();
    g.bench_function("decode_driver_batch_100/json", |b| {
        b.iter(|| {
            Codec::Json
                .decode_driver(Frame::Text(black_box(&json_batch)))
                .is_ok()
        })
    });
    g.bench_function("decode_driver_batch_100/proto", |b| {
        b.iter(|| {
            Codec::Proto
                .decode_driver(Frame::Binary(black_box(&proto_batch)))
                .is_ok()
        })
    });
    let frame = WatchOut::Positions { positions: fixes };
    let size = |w: Wire| match w {
        Wire::Text(t) => t.len(),
        Wire::Binary(b) => b.len(),
    };
    g.bench_function("encode_positions_100/json", |b| {
        b.iter(|| size(Codec::Json.encode_watch(black_box(&frame))))
    });
    g.bench_function("encode_positions_100/proto", |b| {
        b.iter(|| size(Codec::Proto.encode_watch(black_box(&frame))))
    });
    g.finish();
}

/// One flush interval of a busy fleet: 1,000 fixes offered to 1,000 map watchers whose viewports
/// cover them, one flush, then every watcher takes its coalesced changes and builds its JSON frame
/// from their shared encodings.
fn coalescing_flush(c: &mut Criterion) {
    use trackhub::fanout::{Fanout, Scope};
    use trackhub::protocol::codec::{Codec, Wire};

    let fanout = Fanout::new();
    let fleet: std::sync::Arc<str> = "bench".into();
    let watchers: Vec<_> = (0..1_000)
        .map(|_| {
            let h = fanout.register(fleet.clone());
            h.watcher.set_scope(Scope {
                bbox: Some(BBox::new(-8.8, 41.0, -8.2, 41.45).unwrap()),
                ..Scope::default()
            });
            h
        })
        .collect();
    let fixes = positions(1_000);
    let mut g = c.benchmark_group("coalescing_flush");
    g.sample_size(10);
    g.bench_function("1k_fixes_to_1k_watchers", |b| {
        b.iter(|| {
            for p in &fixes {
                fanout.position(&fleet, p, None);
            }
            fanout.flush();
            let mut bytes = 0;
            for h in &watchers {
                let changes = h.watcher.take_pending();
                if let Wire::Text(t) = Codec::Json.encode_positions(&changes) {
                    bytes += t.len();
                }
            }
            black_box(bytes)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    live_index,
    arrival,
    zones,
    codecs,
    coalescing_flush
);
criterion_main!(benches);
