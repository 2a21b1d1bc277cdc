//! Readers for recorded GPS traces: our CSV, GPX 1.1, and the shared datasets' own formats.

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use chrono::NaiveDateTime;
use serde::Deserialize;

use crate::eval::amazon;
use crate::model::Fix;
use crate::protocol::time::parse_ts;

/// One driver's recorded fixes (time as recorded, before any replay shift), in time order.
#[derive(Debug, Clone)]
pub struct Trace {
    pub driver_id: String,
    pub fixes: Vec<Fix>,
}

/// Formats `trackhub replay` reads; detected from the extension and the header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `driver_id,ts,lat,lon[,accuracy_m,speed_mps,heading_deg]`, ts RFC 3339 or unix ms.
    Csv,
    /// GPX 1.1: one driver per file (the file stem), every track segment in order.
    Gpx,
    /// Go!Track `go_track_trackspoints.csv`: `latitude,longitude,track_id,time`, local time UTC-3.
    GoTrack,
    /// Porto taxi (ECML/PKDD 2015): one trip a row, POLYLINE `[[lon,lat],…]` every 15 s.
    Porto,
    /// Cabspotting: `lat lon occupancy unix_s` per line, one cab per file.
    Cabspotting,
    /// Amazon delivery chunk: `timestamp,x,y,groundtruth`, metres from an unknown origin.
    Amazon,
}

/// Detects the format of a trace file.
pub fn detect(path: &Path) -> anyhow::Result<Format> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "gpx" {
        return Ok(Format::Gpx);
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut first = String::new();
    BufReader::new(file).read_line(&mut first)?;
    let header = first.trim().trim_start_matches('\u{feff}');
    Ok(match header {
        h if h.starts_with("driver_id,") => Format::Csv,
        h if h.starts_with("latitude,longitude,track_id,time") => Format::GoTrack,
        h if h.starts_with("\"TRIP_ID\"") || h.starts_with("TRIP_ID") => Format::Porto,
        h if h.starts_with("timestamp,x,y,groundtruth") => Format::Amazon,
        h if h.split_whitespace().count() == 4
            && h.split_whitespace().all(|t| t.parse::<f64>().is_ok()) =>
        {
            Format::Cabspotting
        }
        _ => bail!(
            "{}: unknown trace format (header `{header}`)",
            path.display()
        ),
    })
}

/// Reads every trace in a file. `origin` (lat, lon) is needed for Amazon chunks, whose
/// coordinates are metres east/north of an unknown point.
pub fn read(path: &Path, origin: Option<(f64, f64)>) -> anyhow::Result<Vec<Trace>> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("trace")
        .to_string();
    let mut traces = match detect(path)? {
        Format::Csv => read_csv(path)?,
        Format::Gpx => read_gpx(path, &stem)?,
        Format::GoTrack => read_gotrack(path)?,
        Format::Porto => read_porto(path, &stem)?,
        Format::Cabspotting => read_cabspotting(path, &stem)?,
        Format::Amazon => {
            let origin = origin.ok_or_else(|| {
                anyhow!("{}: Amazon chunks need --origin lat,lon", path.display())
            })?;
            let chunk = amazon::read_chunk(path)?;
            vec![Trace {
                driver_id: format!("amazon-{stem}"),
                fixes: chunk.raw_fixes(origin),
            }]
        }
    };
    for t in &mut traces {
        t.fixes.sort_by_key(|f| f.ts_ms);
        t.fixes.dedup_by_key(|f| f.ts_ms);
    }
    traces.retain(|t| !t.fixes.is_empty());
    Ok(traces)
}

fn read_csv(path: &Path) -> anyhow::Result<Vec<Trace>> {
    #[derive(Deserialize)]
    struct Row {
        driver_id: String,
        ts: String,
        lat: f64,
        lon: f64,
        accuracy_m: Option<f64>,
        speed_mps: Option<f64>,
        heading_deg: Option<f64>,
    }
    let mut by_driver: std::collections::BTreeMap<String, Vec<Fix>> = Default::default();
    for (i, row) in csv::Reader::from_path(path)?
        .deserialize::<Row>()
        .enumerate()
    {
        let r = row.with_context(|| format!("{} row {}", path.display(), i + 2))?;
        let ts_ms =
            parse_ts(&r.ts).map_err(|e| anyhow!("{} row {}: {e}", path.display(), i + 2))?;
        by_driver.entry(r.driver_id).or_default().push(Fix {
            ts_ms,
            lat: r.lat,
            lon: r.lon,
            accuracy_m: r.accuracy_m,
            speed_mps: r.speed_mps,
            heading_deg: r.heading_deg,
            motion: None,
        });
    }
    Ok(by_driver
        .into_iter()
        .map(|(driver_id, fixes)| Trace { driver_id, fixes })
        .collect())
}

fn read_gpx(path: &Path, stem: &str) -> anyhow::Result<Vec<Trace>> {
    let file = std::fs::File::open(path)?;
    let gpx = gpx::read(BufReader::new(file)).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut fixes = Vec::new();
    for track in &gpx.tracks {
        for segment in &track.segments {
            for p in &segment.points {
                let Some(time) = &p.time else { continue };
                let text = time
                    .format()
                    .map_err(|e| anyhow!("{}: bad time: {e}", path.display()))?;
                let point = p.point();
                let mut fix = Fix::at(
                    parse_ts(&text).map_err(|e| anyhow!(e))?,
                    point.y(),
                    point.x(),
                );
                fix.speed_mps = p.speed.filter(|s| *s >= 0.0);
                fixes.push(fix);
            }
        }
    }
    Ok(vec![Trace {
        driver_id: format!("gpx-{stem}"),
        fixes,
    }])
}

fn read_gotrack(path: &Path) -> anyhow::Result<Vec<Trace>> {
    #[derive(Deserialize)]
    struct Row {
        latitude: f64,
        longitude: f64,
        track_id: String,
        time: String,
    }
    const UTC_OFFSET_MS: i64 = 3 * 3_600_000; // Aracaju local time is UTC-3
    let mut by_track: std::collections::BTreeMap<String, Vec<Fix>> = Default::default();
    for (i, row) in csv::Reader::from_path(path)?
        .deserialize::<Row>()
        .enumerate()
    {
        let r = row.with_context(|| format!("{} row {}", path.display(), i + 2))?;
        let local = NaiveDateTime::parse_from_str(r.time.trim(), "%Y-%m-%d %H:%M:%S")
            .with_context(|| format!("{} row {}: time `{}`", path.display(), i + 2, r.time))?;
        let ts_ms = local.and_utc().timestamp_millis() + UTC_OFFSET_MS;
        by_track
            .entry(r.track_id)
            .or_default()
            .push(Fix::at(ts_ms, r.latitude, r.longitude));
    }
    Ok(by_track
        .into_iter()
        .map(|(id, fixes)| Trace {
            driver_id: format!("gotrack-{id}"),
            fixes,
        })
        .collect())
}

fn read_porto(path: &Path, stem: &str) -> anyhow::Result<Vec<Trace>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "UPPERCASE")]
    struct Row {
        taxi_id: String,
        timestamp: i64,
        polyline: String,
    }
    let mut traces = Vec::new();
    for (i, row) in csv::Reader::from_path(path)?
        .deserialize::<Row>()
        .enumerate()
    {
        let r = row.with_context(|| format!("{} row {}", path.display(), i + 2))?;
        let points: Vec<[f64; 2]> = serde_json::from_str(&r.polyline)
            .with_context(|| format!("{} row {}: POLYLINE", path.display(), i + 2))?;
        let fixes = points
            .iter()
            .enumerate()
            .map(|(k, [lon, lat])| Fix::at((r.timestamp + 15 * k as i64) * 1000, *lat, *lon))
            .collect();
        // TRIP_ID is mangled in the training subset, so the file and row name the trip.
        traces.push(Trace {
            driver_id: format!("porto-{stem}-{}-{}", i + 1, r.taxi_id),
            fixes,
        });
    }
    Ok(traces)
}

fn read_cabspotting(path: &Path, stem: &str) -> anyhow::Result<Vec<Trace>> {
    let text = std::fs::read_to_string(path)?;
    let mut fixes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [lat, lon, _occupancy, unix_s] = cols.as_slice() else {
            bail!(
                "{} line {}: expected `lat lon occupancy unix_time`",
                path.display(),
                i + 1
            );
        };
        let parse = |s: &str| {
            s.parse::<f64>()
                .with_context(|| format!("{} line {}", path.display(), i + 1))
        };
        fixes.push(Fix::at(
            parse(unix_s)? as i64 * 1000,
            parse(lat)?,
            parse(lon)?,
        ));
    }
    Ok(vec![Trace {
        driver_id: format!("cab-{}", stem.trim_start_matches("new_")),
        fixes,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_csv() {
        let dir = std::env::temp_dir().join(format!("trackhub-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.csv");
        std::fs::write(
            &path,
            "driver_id,ts,lat,lon,accuracy_m,speed_mps,heading_deg\n\
             d1,2026-11-21T10:00:05Z,47.6,-122.3,5,,\n\
             d1,1795255200000,47.7,-122.3,,1.5,90\n\
             d2,2026-11-21T10:00:00Z,1,2,,,\n",
        )
        .unwrap();
        assert_eq!(detect(&path).unwrap(), Format::Csv);
        let traces = read(&path, None).unwrap();
        assert_eq!(traces.len(), 2);
        assert_eq!(traces[0].driver_id, "d1");
        assert_eq!(traces[0].fixes.len(), 2);
        assert!(traces[0].fixes[0].ts_ms < traces[0].fixes[1].ts_ms);
        assert_eq!(traces[0].fixes[0].speed_mps, Some(1.5));
    }
}
