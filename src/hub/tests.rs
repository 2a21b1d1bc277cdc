//! The hub on its own: a real SQLite store in a temporary directory, the local bus, no edges.
//! What each job of the pipeline promises, one test per job.

use std::sync::Arc;
use std::time::Duration;

use super::presence::{Emitter, PresenceLog};
use super::{Commit, Hub, HubConfig, IngestStatus};
use crate::bus::Bus;
use crate::fanout::feed::EventFeed;
use crate::fanout::{Fanout, Scope};
use crate::geo::BBox;
use crate::model::{now_ms, DriverKey, Fix, StopStatus};
use crate::shutdown::ShutdownTrigger;
use crate::store::track::TrackWriter;
use crate::store::{NewStop, NewTrip, Store};

const LAT: f64 = 41.15;
const LON: f64 = -8.61;

struct TestHub {
    hub: Arc<Hub>,
    _stop: ShutdownTrigger,
    dir: std::path::PathBuf,
}

impl Drop for TestHub {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn hub(cfg: HubConfig) -> TestHub {
    let dir = std::env::temp_dir().join(format!("trackhub-hub-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("hub.db").display());
    let store = Store::connect(&url).await.unwrap();
    let stop = ShutdownTrigger::new();
    let (track, _writer) = TrackWriter::spawn(store.clone(), stop.subscribe());
    let emitter = Emitter {
        fanout: Fanout::new(),
        bus: Bus::local(),
        feed: EventFeed::new(),
    };
    let (presence, _task) = PresenceLog::spawn(store.clone(), emitter.clone(), stop.subscribe());
    TestHub {
        hub: Arc::new(Hub::new(cfg, store, track, presence, emitter)),
        _stop: stop,
        dir,
    }
}

fn driver(id: &str) -> DriverKey {
    DriverKey {
        fleet: "f1".into(),
        driver_id: id.into(),
    }
}

#[tokio::test]
async fn ingest_orders_dedupes_and_commits() {
    let t = hub(HubConfig::default()).await;
    let d = driver("D1");
    let t0 = now_ms() - 60_000;
    let status = |i: Result<super::Ingested, _>| i.unwrap().status;
    assert_eq!(
        status(t.hub.ingest(&d, Some(1), Fix::at(t0, LAT, LON)).await),
        IngestStatus::Accepted
    );
    // A resent seq is a duplicate; an older fix with a new seq is late (history only).
    assert_eq!(
        status(t.hub.ingest(&d, Some(1), Fix::at(t0, LAT, LON)).await),
        IngestStatus::Duplicate
    );
    assert_eq!(
        status(
            t.hub
                .ingest(&d, Some(2), Fix::at(t0 + 5_000, LAT + 0.001, LON))
                .await
        ),
        IngestStatus::Accepted
    );
    assert_eq!(
        status(
            t.hub
                .ingest(&d, Some(3), Fix::at(t0 + 1_000, LAT, LON))
                .await
        ),
        IngestStatus::Late
    );
    assert_eq!(t.hub.highest_seq(&d), Some(3));
    let live = t.hub.position("f1", "D1").unwrap();
    assert_eq!(
        live.fix.ts_ms,
        t0 + 5_000,
        "a late fix never moves the position back"
    );
    assert!(matches!(
        t.hub.committed(Duration::from_secs(10)).await,
        Commit::Done
    ));
    let stored = t
        .hub
        .store
        .track("f1", "D1", t0 - 1, t0 + 10_000, 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3, "accepted and late fixes are both history");
}

#[tokio::test]
async fn live_queries_answer_from_the_index() {
    let t = hub(HubConfig::default()).await;
    let t0 = now_ms() - 1_000;
    for (i, (lat, lon)) in [(LAT, LON), (LAT + 0.5, LON), (LAT, LON + 0.01)]
        .iter()
        .enumerate()
    {
        let d = driver(&format!("D{i}"));
        t.hub
            .ingest(&d, Some(1), Fix::at(t0, *lat, *lon))
            .await
            .unwrap();
    }
    let bbox = BBox::new(LON - 0.1, LAT - 0.1, LON + 0.1, LAT + 0.1).unwrap();
    let mut inside: Vec<String> = t
        .hub
        .in_bbox("f1", &bbox)
        .iter()
        .map(|p| p.driver_id.to_string())
        .collect();
    inside.sort();
    assert_eq!(inside, ["D0", "D2"]);
    let near = t.hub.nearest("f1", LAT, LON, 2, None);
    assert_eq!(near[0].position.driver_id.as_ref(), "D0");
    assert_eq!(near[1].position.driver_id.as_ref(), "D2");
    let scope = Scope {
        drivers: ["D1".to_string()].into_iter().collect(),
        ..Scope::default()
    };
    assert_eq!(t.hub.snapshot("f1", &scope).len(), 1);
    assert!(t.hub.position("f2", "D0").is_none(), "fleets are apart");
    assert_eq!(t.hub.online_count(), 3);
}

#[tokio::test]
async fn a_trip_created_for_a_served_driver_is_detected_and_checked_in_once() {
    let cfg = HubConfig::default();
    let dwell_ms = cfg.arrival.dwell_ms;
    let t = hub(cfg).await;
    let d = driver("D1");
    let t0 = now_ms() - 3_600_000;
    t.hub
        .ingest(&d, Some(1), Fix::at(t0, LAT - 0.01, LON))
        .await
        .unwrap();
    let trip = t
        .hub
        .store
        .insert_trip(
            &NewTrip {
                id: "t1".into(),
                fleet: "f1".into(),
                driver_id: "D1".into(),
                stops: vec![NewStop {
                    id: "s1".into(),
                    name: None,
                    lat: LAT,
                    lon: LON,
                    radius_m: 100.0,
                    window_start_ms: None,
                    window_end_ms: None,
                    service_s: 0.0,
                }],
            },
            now_ms(),
        )
        .await
        .unwrap();
    t.hub.trip_created(&trip).await;
    // Parked 10 m from the stop, a fix every 10 s for twice the dwell.
    let mut checkins = Vec::new();
    let mut seq = 2;
    let mut ts = t0 + 60_000;
    while ts < t0 + 60_000 + 2 * dwell_ms {
        let fix = Fix::at(ts, LAT + 0.00009, LON);
        checkins.extend(t.hub.ingest(&d, Some(seq), fix).await.unwrap().checkins);
        seq += 1;
        ts += 10_000;
    }
    assert_eq!(checkins.len(), 1, "{checkins:?}");
    assert_eq!(checkins[0].key.stop_id.as_ref(), "s1");
    let stored = t.hub.store.trip("f1", "t1").await.unwrap().unwrap();
    assert_eq!(stored.stops[0].status, StopStatus::Arrived);
}

#[tokio::test]
async fn silent_drivers_go_offline_and_idle_slots_are_evicted() {
    let t = hub(HubConfig {
        presence_timeout_ms: 1_000,
        slot_idle_ms: 2_000,
        ..HubConfig::default()
    })
    .await;
    let d = driver("D1");
    t.hub
        .ingest(&d, Some(1), Fix::at(now_ms() - 100, LAT, LON))
        .await
        .unwrap();
    let now = now_ms();
    assert_eq!(t.hub.sweep_presence(now), 0);
    assert_eq!(t.hub.driver_slots(), 1);
    // Offline after the presence timeout: out of the index, slot kept.
    assert_eq!(t.hub.sweep_presence(now + 1_500), 1);
    assert!(t.hub.position("f1", "D1").is_none());
    assert_eq!(t.hub.driver_slots(), 1);
    // Evicted after the idle time.
    t.hub.sweep_presence(now + 2_500);
    assert_eq!(t.hub.driver_slots(), 0);
}

#[test]
fn a_restarted_counter_starts_the_window_again_but_a_resend_stays_a_duplicate() {
    let d = driver("D1");
    let mut state = super::DriverState::default();
    let t0 = 1_790_000_000_000;
    state.seqs.insert(500);
    state.newest_ts_ms = Some(t0);
    // Seq 1 with a newer time: the phone's counter restarted.
    assert!(super::ingest::restarted(
        &d,
        &mut state,
        Some(1),
        &Fix::at(t0 + 1_000, LAT, LON)
    ));
    // Seq 1 with an older time: a resend, not a restart.
    let mut state = super::DriverState::default();
    state.seqs.insert(500);
    state.newest_ts_ms = Some(t0);
    assert!(!super::ingest::restarted(
        &d,
        &mut state,
        Some(1),
        &Fix::at(t0 - 1_000, LAT, LON)
    ));
    // The highest seq itself with a new time: a client reusing its seq, still a duplicate.
    assert!(!super::ingest::restarted(
        &d,
        &mut state,
        Some(500),
        &Fix::at(t0 + 1_000, LAT, LON)
    ));
}

#[test]
fn recent_fixes_are_thinned_and_capped() {
    use super::RecentFixes;
    assert_eq!(
        std::mem::size_of::<Fix>(),
        80,
        "the memory figure in RecentFixes' docs"
    );
    let mut r = RecentFixes::default();
    for s in 0..2_000 {
        r.push(Fix::at(s * 1000, LAT, LON));
    }
    let kept: Vec<i64> = r.iter().map(|f| f.ts_ms).collect();
    assert_eq!(kept.len(), RecentFixes::MAX);
    assert!(kept
        .windows(2)
        .all(|w| w[1] - w[0] == RecentFixes::SPACING_MS));
    assert_eq!(*kept.last().unwrap(), 1_995_000);
}
