//! The hub on real GPS traces from ../shared/data (fails loudly when the data is missing).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::json;
use trackhub::eval::amazon;
use trackhub::geo::arrival::{ArrivalConfig, ArrivalTracker, Decision, StopPhase};
use trackhub::protocol::codec::Codec;
use trackhub::replay::{self, ReplayArgs};

fn replay_args(hub: &TestHub, files: Vec<std::path::PathBuf>, speed: f64) -> ReplayArgs {
    ReplayArgs {
        data_dir: hub.data_dir.clone(),
        jwt_secret: None,
        hub: hub.base.clone(),
        speed,
        fleet: "default".into(),
        origin: None,
        limit: None,
        max_fixes: None,
        amazon_trips: false,
        trips_only: false,
        codec: Codec::Json,
        quiet: true,
        obey_tracking: false,
        files,
    }
}

/// `trackhub replay --obey-tracking` sends what the hub's sampling hints ask for, as our own
/// app would (issue 15): dense near stops, sparse between them, a keep-alive once every stop
/// is done. Fewer fixes go out, and the check-ins are those of every fix within a few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_obeying_the_sampling_hints_sends_less_and_checks_in_alike() {
    let hub = TestHub::start().await;
    let paths: Vec<_> =
        amazon::chunk_paths(&shared_data("amazon_delivery_activity_labels/data_anon")).unwrap()
            [..24]
            .to_vec();
    let expected: usize = paths
        .iter()
        .map(|p| detect_in_process(&amazon::read_chunk(p).unwrap()).len())
        .sum();
    let mut args = replay_args(&hub, paths, 240.0);
    args.amazon_trips = true;
    args.obey_tracking = true;
    args.origin = Some(format!(
        "{},{}",
        amazon::DEFAULT_ORIGIN.0,
        amazon::DEFAULT_ORIGIN.1
    ));
    let summary = replay::run(&args).await.unwrap();
    eprintln!("obeying the hints: {summary}; every fix checks in {expected}");
    assert_eq!(summary.failed_drivers, 0, "{summary}");
    assert_eq!(summary.fixes_acked, summary.fixes_sent, "{summary}");
    assert!(summary.fixes_skipped > 0, "{summary}");
    assert!(
        summary.checkins as usize * 10 >= expected * 9,
        "{summary} vs {expected} with every fix"
    );
    hub.stop().await;
}

/// The fixed evaluation subset: the first 200 chunks, scored in-process.
#[test]
fn amazon_subset_precision_and_recall_at_least_095() {
    let paths =
        amazon::chunk_paths(&shared_data("amazon_delivery_activity_labels/data_anon")).unwrap();
    assert_eq!(paths.len(), 805);
    let s = amazon::evaluate(
        &paths[..200],
        &ArrivalConfig::default(),
        amazon::DEFAULT_ORIGIN,
    )
    .unwrap();
    eprintln!(
        "amazon[0..200]: {s:?} precision {:.4} recall {:.4}",
        s.precision(),
        s.recall()
    );
    assert!(
        s.true_positives + s.false_negatives >= 150,
        "subset has enough real stops: {s:?}"
    );
    assert!(s.precision() >= 0.95, "{s:?}");
    assert!(s.recall() >= 0.95, "{s:?}");
    assert_eq!(s.duplicates, 0);
}

/// Per device behaviour (`eval::profiles`), on the same fixed subset: the figures measured
/// when the evidence model landed (BENCHMARKS.md), as floors a change must not go below, and
/// never a duplicate. Sparse apps are where the gaps are: Traccar Client's defaults and one fix
/// a minute miss a third of the stops (issue 15 asks for more; see BENCHMARKS.md).
#[test]
fn amazon_subset_per_device_profile() {
    use trackhub::eval::profiles::Profile;
    let paths =
        amazon::chunk_paths(&shared_data("amazon_delivery_activity_labels/data_anon")).unwrap();
    // (profile, precision floor, recall floor): measured 0.978/0.996, 0.987/0.996, 0.987/0.676,
    // 0.968/0.680, 0.984/0.796, 0.982/0.991 on these 200 chunks.
    for (name, precision, recall) in [
        ("every", 0.97, 0.99),
        ("every-30s", 0.98, 0.99),
        ("every-60s", 0.98, 0.65),
        ("traccar9", 0.95, 0.65),
        ("traccar10", 0.97, 0.77),
        ("osmand", 0.97, 0.98),
    ] {
        let r = amazon::evaluate_profile(
            &paths[..200],
            &ArrivalConfig::default(),
            amazon::DEFAULT_ORIGIN,
            Profile::parse(name).unwrap(),
        )
        .unwrap();
        let s = r.score;
        eprintln!(
            "{name}: precision {:.4} recall {:.4} median delay {:?} s",
            s.precision(),
            s.recall(),
            r.median_delay_s()
        );
        assert!(s.precision() >= precision, "{name}: {s:?}");
        assert!(s.recall() >= recall, "{name}: {s:?}");
        assert_eq!(s.duplicates, 0, "{name}");
    }
}

/// In-process check-ins of one chunk: the stop ids detection checks in.
fn detect_in_process(chunk: &amazon::Chunk) -> BTreeSet<String> {
    let cfg = ArrivalConfig::default();
    let mut t = ArrivalTracker::new();
    for f in amazon::geofences(chunk, amazon::DEFAULT_ORIGIN) {
        t.add_stop(f, StopPhase::Pending, &cfg);
    }
    let mut out = BTreeSet::new();
    for fix in chunk.raw_fixes(amazon::DEFAULT_ORIGIN) {
        for d in t.observe(&fix, &cfg) {
            if let Decision::CheckIn { key, .. } = d {
                out.insert(key.stop_id.to_string());
            }
        }
    }
    out
}

/// 24 chunks replayed through a real hub at 240× over WebSockets in the protobuf codec (the
/// other real-trace replays use JSON), trips created over REST: the server's check-ins are
/// exactly the in-process detector's, so the full-set figures hold end to end; and replaying
/// again adds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_chunks_replayed_through_the_hub_check_in_like_the_detector() {
    let hub = TestHub::start().await;
    let paths: Vec<_> =
        amazon::chunk_paths(&shared_data("amazon_delivery_activity_labels/data_anon")).unwrap()
            [..24]
            .to_vec();
    let mut args = replay_args(&hub, paths.clone(), 240.0);
    args.amazon_trips = true;
    args.codec = Codec::Proto;
    args.origin = Some(format!(
        "{},{}",
        amazon::DEFAULT_ORIGIN.0,
        amazon::DEFAULT_ORIGIN.1
    ));
    let summary = replay::run(&args).await.unwrap();
    assert_eq!(summary.failed_drivers, 0, "{summary}");
    assert_eq!(summary.fixes_acked, summary.fixes_sent, "{summary}");
    assert_eq!(summary.fixes_rejected, 0, "{summary}");

    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut score = amazon::Score::default();
    for p in &paths {
        let chunk = amazon::read_chunk(p).unwrap();
        let got = detect_in_process(&chunk);
        let fences = amazon::geofences(&chunk, amazon::DEFAULT_ORIGIN);
        score.add(&amazon::score(
            &fences,
            &got.iter().cloned().collect::<Vec<_>>(),
        ));
        if !got.is_empty() {
            expected.insert(format!("amazon-{}", chunk.name), got);
        }
    }
    // The summary counts the trips the hub really has (issue 20: it counted chunks, trip or not).
    let (_, trips) = hub.get("/v1/trips?limit=1000", "default").await;
    let with_stops = paths
        .iter()
        .filter(|p| {
            let chunk = amazon::read_chunk(p).unwrap();
            !amazon::geofences(&chunk, amazon::DEFAULT_ORIGIN).is_empty()
        })
        .count();
    assert_eq!(
        summary.trips_created,
        trips["trips"].as_array().unwrap().len()
    );
    assert_eq!(summary.trips_created, with_stops, "{summary}");
    let (_, list) = hub.get("/v1/checkins?limit=10000", "default").await;
    let mut served: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in list["checkins"].as_array().unwrap() {
        let stops = served
            .entry(c["driver_id"].as_str().unwrap().to_string())
            .or_default();
        assert!(
            stops.insert(c["stop_id"].as_str().unwrap().to_string()),
            "duplicate check-in {c}"
        );
    }
    assert_eq!(served, expected);
    assert_eq!(
        summary.checkins as usize,
        expected.values().map(|s| s.len()).sum::<usize>()
    );
    eprintln!("amazon[0..24] through the hub: {summary}; {score:?}");
    assert!(score.true_positives >= 10, "{score:?}");

    // Same traces again (same drivers, new seqs: a fresh replay): trips are new, so only the
    // new trips get check-ins, and the old trips none.
    let before = list["checkins"].as_array().unwrap().len();
    let again = replay::run(&ReplayArgs {
        amazon_trips: false,
        ..args
    })
    .await
    .unwrap();
    assert_eq!(again.checkins, 0, "{again}");
    let (_, list) = hub.get("/v1/checkins?limit=10000", "default").await;
    assert_eq!(list["checkins"].as_array().unwrap().len(), before);
    hub.stop().await;
}

/// Go!Track (Aracaju cars and buses) and Porto taxis replayed with all drivers at once: every
/// fix acked, positions live over REST and on a watcher, history queryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gotrack_and_porto_replay_with_all_drivers_at_once() {
    let hub = TestHub::start().await;
    let mut w = hub.watcher("default").await;
    w.send(&json!({"type":"subscribe","bbox":[-37.2, -11.1, -36.9, -10.8]}))
        .await;
    assert_eq!(w.json().await["type"], "snapshot");

    let gotrack = shared_data("gotrack_car_bus_brazil/go_track_trackspoints.csv");
    let mut args = replay_args(&hub, vec![gotrack.clone()], 200.0);
    args.max_fixes = Some(60);
    let s = replay::run(&args).await.unwrap();
    eprintln!("gotrack: {s}");
    assert_eq!(s.drivers, 163);
    assert_eq!(s.failed_drivers, 0, "{s}");
    assert_eq!(s.fixes_acked, s.fixes_sent, "{s}");
    let expected: u64 = trackhub::replay::formats::read(&gotrack, None)
        .unwrap()
        .iter()
        .map(|t| t.fixes.len().min(60) as u64)
        .sum();
    assert_eq!(s.fixes_sent, expected);

    // Live: every Aracaju driver is in the index (3 tracks were recorded in Florianópolis).
    let (_, live) = hub
        .get("/v1/drivers?bbox=-37.2,-11.1,-36.9,-10.8", "default")
        .await;
    let n = live["drivers"].as_array().unwrap().len();
    assert!(n >= 150, "{n} live drivers in Aracaju");
    let frame = w.until(|f| f["type"] == "positions").await;
    assert!(!frame["positions"].as_array().unwrap().is_empty());

    let porto = shared_data("porto_taxi/test.csv");
    let mut args = replay_args(&hub, vec![porto], 200.0);
    args.max_fixes = Some(60);
    let s = replay::run(&args).await.unwrap();
    eprintln!("porto test.csv: {s}");
    assert_eq!(s.drivers, 320);
    assert_eq!(s.failed_drivers, 0, "{s}");
    assert_eq!(s.fixes_acked, s.fixes_sent, "{s}");
    let (_, near) = hub
        .get(
            "/v1/drivers/nearby?lat=41.15&lon=-8.61&limit=20&radius_m=20000",
            "default",
        )
        .await;
    assert_eq!(near["drivers"].as_array().unwrap().len(), 20);

    // History: one Go!Track driver's stored track matches what was sent.
    let trace = &trackhub::replay::formats::read(&gotrack, None).unwrap()[0];
    let path = format!("/v1/drivers/{}/track?from=0", trace.driver_id);
    let track = hub
        .wait_track(&path, "default", trace.fixes.len().min(60) as u64)
        .await;
    assert_eq!(
        track["geometry"]["coordinates"][0],
        json!([trace.fixes[0].lon, trace.fixes[0].lat])
    );
    hub.stop().await;
}

/// Amazon chunks 24..48 reported over the OsmAnd protocol (the OsmAnd app's GET form, one
/// request per fix, ms timestamps) by registered devices: the hub checks in exactly where the
/// in-process detector does, as for socket fixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_chunks_reported_over_osmand_check_in_like_the_detector() {
    let hub = TestHub::start().await;
    let paths: Vec<_> =
        amazon::chunk_paths(&shared_data("amazon_delivery_activity_labels/data_anon")).unwrap()
            [24..48]
            .to_vec();
    let (mut expected, mut served) = (BTreeMap::new(), BTreeMap::new());
    let mut reports = 0;
    for p in &paths {
        let chunk = amazon::read_chunk(p).unwrap();
        let driver = format!("amazon-{}", chunk.name);
        let stops: Vec<_> = amazon::geofences(&chunk, amazon::DEFAULT_ORIGIN)
            .iter()
            .map(|g| json!({"id": &*g.key.stop_id, "lat": g.lat, "lon": g.lon, "radius_m": g.radius_m}))
            .collect();
        if stops.is_empty() {
            continue;
        }
        let got = detect_in_process(&chunk);
        if !got.is_empty() {
            expected.insert(driver.clone(), got);
        }
        let trip = json!({"id": format!("trip-{driver}"), "driver_id": driver, "stops": stops});
        assert_eq!(hub.post("/v1/trips", "default", &trip).await.0, 201);
        let (status, device) = hub
            .post(
                "/v1/devices",
                "default",
                &json!({"id": driver, "driver_id": driver}),
            )
            .await;
        assert_eq!(status, 201, "{device}");
        let key = device["key"].as_str().unwrap();
        let fixes = chunk.raw_fixes(amazon::DEFAULT_ORIGIN);
        let shift = now_ms() - 1000 - fixes.last().unwrap().ts_ms;
        for f in &fixes {
            let url = format!(
                "{}/osmand?key={key}&id={driver}&lat={}&lon={}&timestamp={}",
                hub.base,
                f.lat,
                f.lon,
                f.ts_ms + shift
            );
            let r = hub.http.get(url).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            reports += 1;
        }
    }
    let (_, list) = hub.get("/v1/checkins?limit=10000", "default").await;
    for c in list["checkins"].as_array().unwrap() {
        let stops: &mut BTreeSet<String> = served
            .entry(c["driver_id"].as_str().unwrap().to_string())
            .or_default();
        assert!(
            stops.insert(c["stop_id"].as_str().unwrap().to_string()),
            "duplicate {c}"
        );
    }
    eprintln!(
        "amazon[24..48] over OsmAnd: {reports} reports, {} check-ins",
        served.values().map(|s| s.len()).sum::<usize>()
    );
    assert!(!expected.is_empty());
    assert_eq!(served, expected);
    hub.stop().await;
}

/// The ETA model on a fixed set of real trips (issue 17): the Porto taxi training trips and the
/// Go!Track trips, two folds, as `trackhub eval-eta` scores them (a fraction of a second; a
/// subset of 600 Porto trips is too small for the 15-30 minute horizon, where it has ~40 trips). The model's
/// median error beats both baselines the issue names (a fixed 30 km/h, the trip's own average
/// speed so far) at every horizon (BENCHMARKS.md).
#[test]
fn the_eta_model_beats_the_naive_baselines_on_real_trips() {
    use trackhub::eta::EtaConfig;
    use trackhub::eval::eta::{evaluate, prepare};
    let read = |rel: &str, n: usize| {
        let traces = trackhub::replay::formats::read(&shared_data(rel), None).unwrap();
        prepare(traces.into_iter().take(n).map(|t| t.fixes))
    };
    let porto = read("porto_taxi/train_first1999trips.csv", usize::MAX);
    let gotrack = read(
        "gotrack_car_bus_brazil/go_track_trackspoints.csv",
        usize::MAX,
    );
    for (name, trips, from_prior) in [("porto", &porto, false), ("gotrack", &gotrack, true)] {
        let s = evaluate(&EtaConfig::default(), trips, from_prior);
        for h in 0..3 {
            let ours = s.quantiles(0, h).unwrap().0;
            let fixed = s.quantiles(1, h).unwrap().0;
            let so_far = s.quantiles(3, h).unwrap().0;
            eprintln!(
                "{name} horizon {h}: ours {ours:.0} s, fixed {fixed:.0} s, so far {so_far:.0} s"
            );
            assert!(
                ours < fixed && ours < so_far,
                "{name} horizon {h}: ours {ours:.0} s vs fixed {fixed:.0} s, so far {so_far:.0} s"
            );
        }
    }
}

/// Fleet geofences on real traces (issue 18): Porto's 63 taxi stands (the dataset's own list)
/// as 50 m circles, 600 Porto training trips replayed through a real hub. Every
/// `exited` and `dwelled` follows an `entered` of the same driver and stand, and no stand is
/// entered twice in a row without an exit between. The counts are printed for BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn porto_taxi_stands_as_geofences_on_a_replay_of_real_trips() {
    // Hundreds of drivers connect at once from one address.
    let hub = TestHub::start_with(|c| c.limits.conns_per_ip_per_s = 0).await;
    let stands = std::fs::read_to_string(shared_data(
        "porto_taxi/metaData_taxistandsID_name_GPSlocation.csv",
    ))
    .unwrap();
    let mut n = 0;
    for line in stands.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let (lat, lon): (f64, f64) = (cols[2].parse().unwrap(), cols[3].parse().unwrap());
        let body = json!({"id": format!("stand-{}", cols[0]), "name": cols[1],
            "circle": {"center": [lon, lat], "radius_m": 50}, "dwell_s": 60, "margin_m": 10});
        let (status, created) = hub.post("/v1/geofences", "default", &body).await;
        assert_eq!(status, 201, "{created}");
        n += 1;
    }
    assert_eq!(n, 63);
    let mut args = replay_args(
        &hub,
        vec![shared_data("porto_taxi/train_first1999trips.csv")],
        200.0,
    );
    args.max_fixes = Some(240); // an hour of each trip at most
                                // The first 600 trips: all 1,999 at once overload a debug build on 2 cores (sockets time
                                // out); BENCHMARKS.md has the full run against a release build.
    args.limit = Some(600);
    let summary = replay::run(&args).await.unwrap();
    assert_eq!(summary.failed_drivers, 0, "{summary}");

    // Read the whole log of zone events once the replay is acked (the writer may still be
    // appending the last ones: read until two reads agree).
    let read_all = || async {
        let mut since = 0;
        let mut all = Vec::new();
        loop {
            let (_, page) = hub
                .get(&format!("/v1/events?types=geofence.entered,geofence.dwelled,geofence.exited&since={since}&limit=1000"), "default")
                .await;
            let events = page["events"].as_array().unwrap().clone();
            if events.is_empty() {
                return all;
            }
            since = events.last().unwrap()["id"].as_i64().unwrap();
            all.extend(events);
        }
    };
    let mut events = read_all().await;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let again = read_all().await;
        if again.len() == events.len() {
            break;
        }
        events = again;
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut inside: BTreeSet<(String, String)> = BTreeSet::new();
    let mut dwelled = BTreeSet::new();
    for e in &events {
        let kind = e["type"].as_str().unwrap().to_string();
        let key = (
            e["driver_id"].as_str().unwrap().to_string(),
            e["geofence_id"].as_str().unwrap().to_string(),
        );
        match kind.as_str() {
            "geofence.entered" => assert!(inside.insert(key.clone()), "entered twice: {e}"),
            "geofence.dwelled" => {
                assert!(inside.contains(&key), "dwelled outside: {e}");
                dwelled.insert(key.clone());
            }
            "geofence.exited" => assert!(inside.remove(&key), "exited without entering: {e}"),
            other => panic!("{other}"),
        }
        *counts.entry(kind).or_default() += 1;
    }
    eprintln!(
        "porto stands: {} drivers, {} fixes | zone events {counts:?} | distinct (taxi, stand) dwells {}",
        summary.drivers,
        summary.fixes_sent,
        dwelled.len()
    );
    assert!(
        counts.get("geofence.entered").copied().unwrap_or(0) >= 20,
        "{counts:?}"
    );
}

/// Automatic stops on every Amazon chunk against the `OnFoot` labels (issue 18): the figures
/// of BENCHMARKS.md (precision 0.963, recall 0.820 at the default dwell) hold.
#[test]
fn automatic_stops_on_the_amazon_labels() {
    let paths =
        amazon::chunk_paths(&shared_data("amazon_delivery_activity_labels/data_anon")).unwrap();
    let s =
        trackhub::eval::stops::evaluate(&paths, &ArrivalConfig::default(), amazon::DEFAULT_ORIGIN)
            .unwrap();
    eprintln!(
        "{s:?} precision {:.4} recall {:.4}",
        s.precision(),
        s.recall()
    );
    assert!(s.precision() >= 0.95 && s.recall() >= 0.80, "{s:?}");
}
