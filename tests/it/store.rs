//! The store on both engines, through the library (no hub): pins bugs that only PostgreSQL had.
//!
//! Track history keeps optional fields (accuracy, speed, heading) present, absent and mixed, on
//! both stores, through one pooled connection: the history writer's INSERT is prepared once per
//! connection, and on PostgreSQL its parameter types used to come from the first batch (issue 16:
//! a fix without accuracy, then one with it, failed with "incorrect binary data format in bind
//! parameter 6" and was dropped after retries). Each batch is awaited through the writer's
//! commit barrier, the one acknowledgements wait on.

use crate::common;

use std::time::Duration;

use trackhub::model::StopKey;
use trackhub::model::{Fix, Motion};
use trackhub::shutdown::ShutdownTrigger;
use trackhub::store::track::{TrackPoint, TrackWriter};
use trackhub::store::Store;

const FLEET: &str = "f1";
const DRIVER: &str = "d1";

fn point(
    ts_ms: i64,
    accuracy: Option<f64>,
    speed: Option<f64>,
    heading: Option<f64>,
) -> TrackPoint {
    TrackPoint {
        fleet: FLEET.into(),
        driver_id: DRIVER.into(),
        fix: Fix {
            accuracy_m: accuracy,
            speed_mps: speed,
            heading_deg: heading,
            ..Fix::at(ts_ms, 47.61 + ts_ms as f64 * 1e-9, -122.33)
        },
        received_ms: ts_ms,
    }
}

/// A stop of a test trip: 50 m around one point, no time window.
fn new_stop(id: &str) -> trackhub::store::NewStop {
    trackhub::store::NewStop {
        id: id.into(),
        name: None,
        lat: 47.61,
        lon: -122.33,
        radius_m: 50.0,
        window_start_ms: None,
        window_end_ms: None,
        service_s: 0.0,
    }
}

/// A manual check-in of `DRIVER` (fleet `FLEET`) at `trip`'s `stop`, arrived and checked in at
/// `at_ms`.
fn manual_checkin(trip: &str, stop: &str, at_ms: i64) -> trackhub::model::Event {
    use trackhub::model::{CheckinSource, Event, EventKind};
    Event {
        id: None,
        fleet: FLEET.into(),
        driver_id: DRIVER.into(),
        ts_ms: at_ms,
        position: None,
        kind: EventKind::StopCheckedIn {
            key: StopKey {
                trip_id: trip.into(),
                stop_id: stop.into(),
            },
            arrived_at_ms: at_ms,
            checked_in_at_ms: at_ms,
            source: CheckinSource::Manual,
        },
    }
}

/// Writes the batches one after the other, through a pool of one connection (so the INSERT
/// prepared by the first batch is the one every later batch runs), and reads every fix back as
/// it was sent.
async fn mixed_batches_round_trip(url: &str) {
    let store = Store::connect_with(url, 1).await.expect("store");
    let stop = ShutdownTrigger::new();
    let (writer, _task) = TrackWriter::spawn(store.clone(), stop.subscribe());
    let t0 = 1_795_000_000_000;
    let batches: Vec<Vec<TrackPoint>> = vec![
        // First: every optional field absent, so the statement is prepared with NULLs.
        vec![point(t0, None, None, None)],
        // Then present: the README's own ping carries `accuracy_m: 8`.
        vec![point(t0 + 1_000, Some(8.0), Some(3.5), Some(270.0))],
        // Mixed within one batch and one transaction.
        vec![
            point(t0 + 2_000, Some(12.0), None, None),
            point(t0 + 3_000, None, Some(0.0), None),
            point(t0 + 4_000, None, None, Some(0.5)),
        ],
        vec![point(t0 + 5_000, None, None, None)],
        // The device's motion state, present and absent in one batch (issue 15).
        vec![
            TrackPoint {
                fix: Fix {
                    motion: Some(Motion::Still),
                    ..point(t0 + 6_000, Some(9.0), None, None).fix
                },
                ..point(t0 + 6_000, None, None, None)
            },
            TrackPoint {
                fix: Fix {
                    motion: Some(Motion::Moving),
                    ..point(t0 + 7_000, None, Some(9.0), None).fix
                },
                ..point(t0 + 7_000, None, None, None)
            },
            point(t0 + 8_000, None, None, None),
        ],
    ];
    let mut sent = Vec::new();
    for (i, batch) in batches.into_iter().enumerate() {
        for p in batch {
            sent.push(p.fix);
            writer.push(p).await.expect("writer running");
        }
        tokio::time::timeout(Duration::from_secs(10), writer.committed())
            .await
            .unwrap_or_else(|_| panic!("batch {i} not committed within 10 s on {url}"))
            .expect("writer running");
    }
    let stored = store
        .track(FLEET, DRIVER, 0, i64::MAX, 100)
        .await
        .expect("read track");
    assert_eq!(stored, sent, "every fix read back as sent on {url}");
    store.close().await;
}

/// Two tests of one async check `$check(url)`: on a fresh SQLite file, and on a fresh database of
/// the PostgreSQL server (dropped afterwards).
macro_rules! on_both_engines {
    ($check:ident => $on_sqlite:ident, $on_postgres:ident) => {
        #[tokio::test]
        async fn $on_sqlite() {
            $check(&sqlite_url()).await;
        }

        #[tokio::test]
        async fn $on_postgres() {
            let server = pg_server();
            let (url, name) = common::create_database(&server).await;
            $check(&url).await;
            common::drop_database(&server, &name).await;
        }
    };
}

fn sqlite_url() -> String {
    let dir = common::temp_dir();
    format!("sqlite://{}?mode=rwc", dir.join("hub.db").display())
}

on_both_engines!(
    mixed_batches_round_trip =>
    history_keeps_optional_fields_mixed_on_sqlite,
    history_keeps_optional_fields_mixed_on_postgres
);

/// The PostgreSQL server these tests need whatever the pass (the bugs they pin were PostgreSQL's
/// alone): `TRACKHUB_TEST_DATABASE_URL`, else `TRACKHUB_PG_URL`, else the machine's local one. An
/// unreachable server fails the test with its URL.
fn pg_server() -> String {
    std::env::var("TRACKHUB_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("TRACKHUB_PG_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Two check-ins of a trip's last two stops, committed concurrently on two connections, complete
/// the trip exactly once: before the trip row was locked, each transaction counted the other's
/// stop as pending, and on PostgreSQL the trip stayed active with no `trip.completed` (issue 16).
async fn concurrent_last_checkins_complete_the_trip(url: &str) {
    use trackhub::store::NewTrip;

    let store = Store::connect(url).await.expect("store");

    const TRIPS: usize = 30;
    for i in 0..TRIPS {
        let trip = format!("race-{i}");
        store
            .insert_trip(
                &NewTrip {
                    id: trip.clone(),
                    fleet: FLEET.into(),
                    driver_id: DRIVER.into(),
                    stops: vec![new_stop("s1"), new_stop("s2")],
                },
                1_795_000_000_000,
            )
            .await
            .expect("trip");
        let at = 1_795_000_000_000;
        let (e1, e2) = (
            manual_checkin(&trip, "s1", at),
            manual_checkin(&trip, "s2", at),
        );
        let (a, b) = tokio::join!(
            store.record_checkin(&e1, None),
            store.record_checkin(&e2, None)
        );
        let completions = [a.expect("check-in s1"), b.expect("check-in s2")]
            .iter()
            .filter(|o| o.trip_completed.is_some())
            .count();
        assert_eq!(
            completions, 1,
            "trip {trip}: one of its last two check-ins completes it"
        );
        let stored = store.trip(FLEET, &trip).await.expect("read").expect("trip");
        assert_eq!(stored.status.as_str(), "completed", "trip {trip}");
    }
    store.close().await;
}

on_both_engines!(
    concurrent_last_checkins_complete_the_trip =>
    concurrent_last_checkins_complete_the_trip_on_sqlite,
    concurrent_last_checkins_complete_the_trip_on_postgres
);

/// Track retention (issue 16: `track_points` was never deleted): fixes stored longer ago than
/// the retention are deleted by the hub's retention task; newer ones stay.
#[tokio::test]
async fn track_retention_deletes_old_fixes_and_keeps_new_ones() {
    use common::*;
    let hub = TestHub::start_with(|c| c.track_retention = Some(Duration::from_secs(2))).await;
    let mut d = hub.driver("D1", "f1").await;
    let t = now_ms() - 60_000;
    d.ping_acked(ping(1, t, 41.15, -8.61)).await;
    d.ping_acked(ping(2, t + 1_000, 41.15, -8.61)).await;
    let path = format!("/v1/drivers/D1/track?from={}", t - 1);
    hub.wait_track(&path, "f1", 2).await;
    // Stored more than 2 s ago: gone within a few retention passes (every 0.5 s).
    hub.wait_track(&path, "f1", 0).await;
    d.ping_acked(ping(3, t + 2_000, 41.15, -8.61)).await;
    hub.wait_track(&path, "f1", 1).await;
    hub.stop().await;
}

/// Stop segments (issue 18) follow the automatic-stop events written with them: a stop opens
/// with `driver.stopped` (a second copy is ignored), closes with its `driver.moving`, and a stop
/// still open when the driver goes offline closes then; a report's span sees the stops that
/// overlap it.
async fn stop_segments_follow_their_events(url: &str) {
    use trackhub::model::{Event, EventKind};
    let store = Store::connect(url).await.expect("store");
    let event = |ts_ms: i64, kind: EventKind| Event {
        id: None,
        fleet: FLEET.into(),
        driver_id: DRIVER.into(),
        ts_ms,
        position: Some((41.15, -8.61)),
        kind,
    };
    let stopped = |since: i64, at: i64| {
        event(
            at,
            EventKind::DriverStopped {
                stopped_since_ms: since,
                unplanned: since == 300_000,
            },
        )
    };
    store
        .record_events(&[
            stopped(100_000, 160_000),
            stopped(100_000, 160_000),
            event(
                200_000,
                EventKind::DriverMoving {
                    stopped_since_ms: 100_000,
                },
            ),
            stopped(300_000, 360_000),
            event(500_000, EventKind::DriverOffline),
            stopped(600_000, 660_000),
        ])
        .await
        .expect("recorded");
    let all = store
        .stop_segments(FLEET, DRIVER, 0, 1_000_000, 100)
        .await
        .expect("read");
    let spans: Vec<(i64, Option<i64>, bool)> = all
        .iter()
        .map(|s| (s.from_ms, s.to_ms, s.unplanned))
        .collect();
    assert_eq!(
        spans,
        [
            (100_000, Some(200_000), false),
            (300_000, Some(500_000), true),
            (600_000, None, false)
        ]
    );
    // A span inside the second stop sees it alone; one after every closed stop, the open one.
    let inside = store
        .stop_segments(FLEET, DRIVER, 400_000, 450_000, 100)
        .await
        .expect("read");
    assert_eq!(inside.len(), 1);
    assert_eq!(inside[0].from_ms, 300_000);
    let late = store
        .stop_segments(FLEET, DRIVER, 900_000, 950_000, 100)
        .await
        .expect("read");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].from_ms, 600_000);
    assert_eq!(store.prune_stop_segments(250_000).await.expect("pruned"), 1);
    store.close().await;
}

on_both_engines!(
    stop_segments_follow_their_events =>
    stop_segments_follow_their_events_on_sqlite,
    stop_segments_follow_their_events_on_postgres
);

/// Hydration reads many drivers at once (`hub::loader`): each driver's trips (with stops, in
/// order) and its newest fixes, oldest first, across more drivers than one statement takes
/// (`RECENT_READ_SLICE`), drivers without trips or fixes absent, other fleets' rows never mixed
/// in.
async fn batched_hydration_reads(url: &str) {
    use trackhub::store::track::RECENT_READ_SLICE;
    use trackhub::store::NewTrip;

    let store = Store::connect(url).await.expect("store");
    let stop = ShutdownTrigger::new();
    let (writer, _task) = TrackWriter::spawn(store.clone(), stop.subscribe());
    let drivers = RECENT_READ_SLICE + 50;
    let t0 = 1_795_000_000_000;
    let id = |i: usize| format!("d{i:03}");
    // Driver i has i % 7 fixes, 1 s apart; every third driver has a trip of two stops (stored
    // in reverse position order); the same ids in fleet "f2" have fixes that must not appear.
    for i in 0..drivers {
        for k in 0..(i % 7) as i64 {
            for fleet in [FLEET, "f2"] {
                let lat = if fleet == FLEET { 47.61 } else { 10.0 };
                let p = TrackPoint {
                    fleet: fleet.into(),
                    driver_id: id(i).as_str().into(),
                    fix: Fix::at(t0 + k * 1_000, lat, -122.33 + i as f64 * 1e-4),
                    received_ms: t0,
                };
                writer.push(p).await.expect("writer running");
            }
        }
        if i % 3 == 0 {
            let trip = NewTrip {
                id: format!("trip-{i}"),
                fleet: FLEET.into(),
                driver_id: id(i),
                stops: vec![new_stop("b"), new_stop("a")],
            };
            store.insert_trip(&trip, t0).await.expect("trip");
        }
    }
    tokio::time::timeout(Duration::from_secs(30), writer.committed())
        .await
        .expect("fixes committed within 30 s")
        .expect("writer running");

    let ids: Vec<String> = (0..drivers).map(id).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let tracks = store
        .recent_tracks(FLEET, &refs, 3)
        .await
        .expect("recent tracks");
    for i in 0..drivers {
        let n = (i % 7) as i64;
        let want: Vec<i64> = ((n - 3).max(0)..n).map(|k| t0 + k * 1_000).collect();
        let got: Vec<i64> = tracks
            .get(&id(i))
            .map(|f| f.iter().map(|f| f.ts_ms).collect())
            .unwrap_or_default();
        assert_eq!(
            got, want,
            "driver {i}'s newest 3 fixes, oldest first, on {url}"
        );
        assert!(tracks
            .get(&id(i))
            .is_none_or(|f| f.iter().all(|f| f.lat == 47.61)));
    }
    assert_eq!(
        tracks.len(),
        (0..drivers).filter(|i| i % 7 != 0).count(),
        "drivers without fixes are absent"
    );
    let trips = store
        .active_trips_of_drivers(FLEET, &refs)
        .await
        .expect("trips");
    assert_eq!(
        trips.len(),
        drivers.div_ceil(3),
        "one trip per third driver"
    );
    for t in &trips {
        let i: usize = t.driver_id[1..].parse().expect("a driver id");
        assert_eq!(t.id, format!("trip-{i}"), "a driver's own trip on {url}");
        let stops: Vec<&str> = t.stops.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(stops, ["b", "a"], "stops in position order on {url}");
    }
    store.close().await;
}

on_both_engines!(
    batched_hydration_reads =>
    batched_hydration_reads_on_sqlite,
    batched_hydration_reads_on_postgres
);

/// ETAs are written many rows per statement (`Store::update_etas`): every pending stop named
/// gets its ETA, across more rows than one statement takes and two fleets; a checked-in stop
/// and another fleet's stop of the same ids keep theirs.
async fn etas_are_stored_in_slices(url: &str) {
    use trackhub::store::etas::{EtaRow, ETA_WRITE_SLICE};
    use trackhub::store::NewTrip;
    let store = Store::connect(url).await.expect("store");
    let stops = ETA_WRITE_SLICE + 20;
    for fleet in [FLEET, "f2"] {
        let trip = NewTrip {
            id: "t".into(),
            fleet: fleet.into(),
            driver_id: DRIVER.into(),
            stops: (0..stops).map(|i| new_stop(&format!("s{i}"))).collect(),
        };
        store.insert_trip(&trip, 1_000).await.expect("trip");
    }
    let key = |i: usize| StopKey {
        trip_id: "t".into(),
        stop_id: format!("s{i}").as_str().into(),
    };
    let checkin = manual_checkin("t", "s0", 2_000);

    store
        .record_checkin(&checkin, None)
        .await
        .expect("check-in");
    let rows: Vec<EtaRow> = (0..stops)
        .map(|i| EtaRow {
            fleet: FLEET.into(),
            key: key(i),
            eta_ms: 1_800_000_000_000 + i as i64,
            updated_at_ms: 3_000,
        })
        .collect();
    store.update_etas(&rows).await.expect("ETAs stored");
    let trip = store.trip(FLEET, "t").await.expect("read").expect("trip");
    for (i, s) in trip.stops.iter().enumerate() {
        let want = (i > 0).then_some(1_800_000_000_000 + i as i64);
        assert_eq!(s.eta, want, "stop {i} on {url}");
        assert_eq!(s.eta_updated_at, want.map(|_| 3_000), "stop {i} on {url}");
    }
    let other = store.trip("f2", "t").await.expect("read").expect("trip");
    assert!(
        other.stops.iter().all(|s| s.eta.is_none()),
        "other fleet untouched"
    );
    store.close().await;
}

on_both_engines!(
    etas_are_stored_in_slices =>
    etas_are_stored_in_slices_on_sqlite,
    etas_are_stored_in_slices_on_postgres
);
