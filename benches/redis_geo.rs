//! The baseline for the live index: Redis GEOADD / GEOSEARCH on the same points as
//! `benches/core.rs` (10k, 100k, 1M drivers over a 50 × 50 km city), on the Redis at `REDIS_URL`
//! (default `redis://127.0.0.1:6379/`; `scripts/ensure-services.sh` starts one). Keys are
//! `trackhub:bench:geo:<n>`, deleted afterwards.
//!
//! Each query is timed two ways: one round trip per command (what a service calling Redis pays)
//! and pipelined 100 at a time (Redis's best throughput from one connection, per command). The
//! index/Redis ratios in BENCHMARKS.md use the pipelined figure, the kinder one to Redis.
//! `cargo bench --bench redis_geo`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod common;
use common::points;

fn connection() -> redis::Connection {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("Redis at {url} is needed for this baseline ({e}): run `bash scripts/ensure-services.sh`"))
}

const PIPELINE: usize = 100;

fn redis_geo(c: &mut Criterion) {
    let mut con = connection();
    let mut g = c.benchmark_group("redis_geo");
    for n in [10_000usize, 100_000, 1_000_000] {
        let key = format!("trackhub:bench:geo:{n}");
        let pts = points(n);
        let _: () = redis::cmd("DEL").arg(&key).query(&mut con).unwrap();
        for (chunk_no, chunk) in pts.chunks(10_000).enumerate() {
            let mut cmd = redis::cmd("GEOADD");
            cmd.arg(&key);
            for (i, (lat, lon)) in chunk.iter().enumerate() {
                cmd.arg(*lon)
                    .arg(*lat)
                    .arg(format!("d{}", chunk_no * 10_000 + i));
            }
            let _: i64 = cmd.query(&mut con).unwrap();
        }

        let mut k = 0usize;
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("geoadd", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % n;
                let (lat, lon) = pts[(k * 7919) % n];
                let _: i64 = redis::cmd("GEOADD")
                    .arg(&key)
                    .arg(lon)
                    .arg(lat)
                    .arg(format!("d{k}"))
                    .query(&mut con)
                    .unwrap();
            })
        });
        let bbox = || {
            let mut cmd = redis::cmd("GEOSEARCH");
            cmd.arg(&key)
                .arg("FROMLONLAT")
                .arg(-8.61)
                .arg(41.15)
                .arg("BYBOX")
                .arg(2)
                .arg(2)
                .arg("km");
            cmd
        };
        let nearest = || {
            let mut cmd = redis::cmd("GEOSEARCH");
            cmd.arg(&key)
                .arg("FROMLONLAT")
                .arg(-8.61)
                .arg(41.15)
                .arg("BYRADIUS")
                .arg(50)
                .arg("km")
                .arg("ASC")
                .arg("COUNT")
                .arg(10)
                .arg("WITHDIST");
            cmd
        };
        for (name, make) in [
            ("geosearch_bbox_2km", &bbox as &dyn Fn() -> redis::Cmd),
            ("geosearch_nearest_10", &nearest),
        ] {
            g.throughput(Throughput::Elements(1));
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(make().query::<redis::Value>(&mut con).unwrap()))
            });
            g.throughput(Throughput::Elements(PIPELINE as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("{name}_pipelined_x{PIPELINE}"), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        let mut pipe = redis::pipe();
                        for _ in 0..PIPELINE {
                            pipe.add_command(make());
                        }
                        black_box(pipe.query::<Vec<redis::Value>>(&mut con).unwrap())
                    })
                },
            );
        }
        let _: () = redis::cmd("DEL").arg(&key).query(&mut con).unwrap();
    }
    g.finish();
}

criterion_group!(benches, redis_geo);
criterion_main!(benches);
