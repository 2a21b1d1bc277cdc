//! Trip and driver reports, as JSON, GeoJSON (RFC 7946), GPX 1.1 or CSV (`format=` or `Accept`),
//! with the track simplified for display on request (`simplify_m=`, Douglas-Peucker from `geo`).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use geo::{Coord, LineString, SimplifyIdx};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::{ApiError, FieldError};
use crate::extract::ApiQuery;
use crate::model::{now_ms, Fix, StopSegment};
use crate::protocol::time::{format_ts, parse_ts};
use crate::report::{distance_m, on_time, online_ms, stopped_ms};
use crate::state::AppState;
use crate::store::StopRecord;

/// Most fixes a report reads (the track endpoint's cap).
const MAX_FIXES: i64 = super::MAX_TRACK_POINTS;
/// Most events a report reads.
const MAX_EVENTS: i64 = 100_000;
/// Most stop segments a report reads.
const MAX_SEGMENTS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Json,
    GeoJson,
    Gpx,
    Csv,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` (default), `geojson`, `gpx` or `csv`; else from `Accept`
    /// (`application/geo+json`, `application/gpx+xml`, `text/csv`).
    format: Option<String>,
    /// Simplify the track (Douglas-Peucker) to this tolerance, m (1-1,000).
    simplify_m: Option<f64>,
    /// The span, RFC 3339 or unix ms. Driver reports: default the last 24 h. Trip reports:
    /// default from the trip's creation to its completion (or now).
    from: Option<String>,
    to: Option<String>,
}

fn format_of(q: &ReportQuery, headers: &HeaderMap, errors: &mut Vec<FieldError>) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match q.format.as_deref() {
        Some("json") => Format::Json,
        Some("geojson") => Format::GeoJson,
        Some("gpx") => Format::Gpx,
        Some("csv") => Format::Csv,
        Some(_) => {
            errors.push(FieldError::new(
                "format",
                "must be json, geojson, gpx or csv",
            ));
            Format::Json
        }
        None if accept.contains("application/geo+json") => Format::GeoJson,
        None if accept.contains("application/gpx+xml") => Format::Gpx,
        None if accept.contains("text/csv") => Format::Csv,
        None => Format::Json,
    }
}

fn simplify_of(q: &ReportQuery, errors: &mut Vec<FieldError>) -> Option<f64> {
    let m = q.simplify_m?;
    if !m.is_finite() || !(1.0..=1_000.0).contains(&m) {
        errors.push(FieldError::new(
            "simplify_m",
            "must be within [1, 1000] metres",
        ));
        return None;
    }
    Some(m)
}

/// `from`/`to` when given (unix ms), each problem named.
fn span_of(q: &ReportQuery, errors: &mut Vec<FieldError>) -> (Option<i64>, Option<i64>) {
    let mut time_of = |field: &str, v: &Option<String>| {
        v.as_deref().and_then(|t| {
            parse_ts(t)
                .map_err(|e| errors.push(FieldError::new(field, e)))
                .ok()
        })
    };
    (time_of("from", &q.from), time_of("to", &q.to))
}

/// The fixes Douglas-Peucker keeps at `tolerance_m`, on coordinates with longitude scaled by
/// cos(latitude) (equirectangular), so the tolerance is in metres in every direction.
pub fn simplify(track: &[Fix], tolerance_m: f64) -> Vec<Fix> {
    let Some(first) = track.first() else {
        return Vec::new();
    };
    let k = first.lat.to_radians().cos();
    let line = LineString::new(
        track
            .iter()
            .map(|f| Coord {
                x: f.lon * k,
                y: f.lat,
            })
            .collect(),
    );
    line.simplify_idx(tolerance_m / 111_195.0)
        .into_iter()
        .map(|i| track[i])
        .collect()
}

fn stop_json(s: &StopRecord, now: i64) -> serde_json::Value {
    json!({
        "id": s.id,
        "name": s.name,
        "lat": s.lat,
        "lon": s.lon,
        "status": s.status.as_str(),
        "window_start": s.window_start.map(format_ts),
        "window_end": s.window_end.map(format_ts),
        "arrived_at": s.arrived_at.map(format_ts),
        "checked_in_at": s.checked_in_at.map(format_ts),
        "departed_at": s.departed_at.map(format_ts),
        "dwell_s": s.arrived_at.zip(s.departed_at).map(|(a, d)| (d - a) as f64 / 1000.0),
        "on_time": on_time(s, now),
    })
}

fn segment_json(s: &StopSegment) -> serde_json::Value {
    json!({
        "from": format_ts(s.from_ms),
        "to": s.to_ms.map(format_ts),
        "lat": s.lat,
        "lon": s.lon,
        "unplanned": s.unplanned,
    })
}

/// A report in the asked format: `summary` (JSON), the track, point features (each a JSON
/// object with `lat`/`lon`, for GeoJSON and GPX waypoints) and CSV rows (header first).
struct Report {
    summary: serde_json::Value,
    track: Vec<Fix>,
    points: Vec<serde_json::Value>,
    csv: Vec<Vec<String>>,
    name: String,
}

fn respond(report: Report, format: Format) -> Result<Response, ApiError> {
    match format {
        Format::Json => Ok(Json(report.summary).into_response()),
        Format::GeoJson => {
            let line: Vec<[f64; 2]> = report.track.iter().map(|f| [f.lon, f.lat]).collect();
            let times: Vec<String> = report.track.iter().map(|f| format_ts(f.ts_ms)).collect();
            let mut features = vec![json!({
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": line},
                "properties": {"report": report.summary, "timestamps": times},
            })];
            for p in &report.points {
                features.push(json!({
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [p["lon"], p["lat"]]},
                    "properties": p,
                }));
            }
            let body = json!({"type": "FeatureCollection", "features": features});
            Ok((
                [(header::CONTENT_TYPE, "application/geo+json")],
                body.to_string(),
            )
                .into_response())
        }
        Format::Gpx => {
            let time = |ms: i64| {
                time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                    .ok()
                    .map(gpx::Time::from)
            };
            let mut segment = gpx::TrackSegment::new();
            for f in &report.track {
                let mut w = gpx::Waypoint::new(geo::Point::new(f.lon, f.lat));
                w.time = time(f.ts_ms);
                w.speed = f.speed_mps;
                segment.points.push(w);
            }
            let mut track = gpx::Track::new();
            track.name = Some(report.name.clone());
            track.segments.push(segment);
            let waypoints = report
                .points
                .iter()
                .filter_map(|p| {
                    let mut w =
                        gpx::Waypoint::new(geo::Point::new(p["lon"].as_f64()?, p["lat"].as_f64()?));
                    w.name = p["id"].as_str().or(p["from"].as_str()).map(String::from);
                    w.description = p["name"].as_str().map(String::from);
                    w.time = p["arrived_at"]
                        .as_str()
                        .or(p["from"].as_str())
                        .and_then(|t| parse_ts(t).ok())
                        .and_then(time);
                    Some(w)
                })
                .collect();
            let doc = gpx::Gpx {
                version: gpx::GpxVersion::Gpx11,
                creator: Some("trackhub".into()),
                waypoints,
                tracks: vec![track],
                ..Default::default()
            };
            let mut out = Vec::new();
            gpx::write(&doc, &mut out)
                .map_err(|e| ApiError::Internal(format!("GPX not written: {e}")))?;
            Ok(([(header::CONTENT_TYPE, "application/gpx+xml")], out).into_response())
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            for row in &report.csv {
                w.write_record(row)
                    .map_err(|e| ApiError::Internal(format!("CSV not written: {e}")))?;
            }
            let out = w
                .into_inner()
                .map_err(|e| ApiError::Internal(format!("CSV not written: {e}")))?;
            Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response())
        }
    }
}

fn cell<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// `GET /v1/trips/{id}/report` (admin, service, its driver): distance driven (stored track),
/// driving and stopped time (automatic stops), each stop's window against its arrival, dwell
/// and departure, the unplanned stops and the on-time share. CSV: one row per stop.
#[utoipa::path(get, path = "/v1/trips/{id}/report", operation_id = "trip_report", tag = "reports", params(("id" = String, Path), ReportQuery), security(("bearer" = [])), responses((status = 200, description = "The report: JSON, GeoJSON FeatureCollection, GPX 1.1 or CSV", body = Object), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn trip(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let format = format_of(&q, &headers, &mut errors);
    let tolerance = simplify_of(&q, &mut errors);
    let span = span_of(&q, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let t = app
        .hub
        .store
        .trip(&caller.0.fleet, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("trip `{id}` not found")))?;
    caller.require_reader_of(&t.driver_id)?;
    let now = now_ms();
    let from = span.0.unwrap_or(t.created_at);
    let to = span.1.unwrap_or(t.completed_at.unwrap_or(now));
    let store = &app.hub.store;
    let track = store
        .track(&t.fleet, &t.driver_id, from, to, MAX_FIXES)
        .await?;
    let segments = store
        .stop_segments(&t.fleet, &t.driver_id, from, to, MAX_SEGMENTS)
        .await?;
    let stopped = stopped_ms(&segments, from, to);
    let driving = (to - from - stopped).max(0);
    let judged: Vec<bool> = t.stops.iter().filter_map(|s| on_time(s, now)).collect();
    let on_time_share = (!judged.is_empty())
        .then(|| judged.iter().filter(|b| **b).count() as f64 / judged.len() as f64);
    let unplanned: Vec<&StopSegment> = segments.iter().filter(|s| s.unplanned).collect();
    let stops: Vec<serde_json::Value> = t.stops.iter().map(|s| stop_json(s, now)).collect();
    let summary = json!({
        "trip_id": t.id,
        "driver_id": t.driver_id,
        "status": t.status.as_str(),
        "from": format_ts(from),
        "to": format_ts(to),
        "duration_s": (to - from) as f64 / 1000.0,
        "distance_m": distance_m(&track).round(),
        "driving_s": driving as f64 / 1000.0,
        "stopped_s": stopped as f64 / 1000.0,
        "on_time_share": on_time_share,
        "stops": stops,
        "unplanned_stops": unplanned.iter().map(|s| segment_json(s)).collect::<Vec<_>>(),
        "fixes": track.len(),
    });
    let mut csv = vec![[
        "stop_id",
        "name",
        "lat",
        "lon",
        "status",
        "window_start",
        "window_end",
        "arrived_at",
        "checked_in_at",
        "departed_at",
        "dwell_s",
        "on_time",
    ]
    .map(String::from)
    .to_vec()];
    for s in &stops {
        let text = |k: &str| s[k].as_str().map(String::from).unwrap_or_default();
        csv.push(vec![
            text("id"),
            text("name"),
            s["lat"].to_string(),
            s["lon"].to_string(),
            text("status"),
            text("window_start"),
            text("window_end"),
            text("arrived_at"),
            text("checked_in_at"),
            text("departed_at"),
            cell(s["dwell_s"].as_f64()),
            cell(s["on_time"].as_bool()),
        ]);
    }
    let mut points = stops.clone();
    points.extend(unplanned.iter().map(|s| segment_json(s)));
    let track = match tolerance {
        Some(m) => simplify(&track, m),
        None => track,
    };
    respond(
        Report {
            summary,
            track,
            points,
            csv,
            name: t.id.clone(),
        },
        format,
    )
}

/// `GET /v1/drivers/{id}/report?from=&to=` (admin, service, that driver; default the last
/// 24 h): distance, automatic stops, stopped time and time online. CSV: one row per stop.
#[utoipa::path(get, path = "/v1/drivers/{id}/report", operation_id = "driver_report", tag = "reports", params(("id" = String, Path), ReportQuery), security(("bearer" = [])), responses((status = 200, description = "The report: JSON, GeoJSON FeatureCollection, GPX 1.1 or CSV", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn driver(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    caller.require_reader_of(&id)?;
    let mut errors = Vec::new();
    let format = format_of(&q, &headers, &mut errors);
    let tolerance = simplify_of(&q, &mut errors);
    let now = now_ms();
    let span = span_of(&q, &mut errors);
    let (from, to) = (span.0.unwrap_or(now - 86_400_000), span.1.unwrap_or(now));
    if from >= to {
        errors.push(FieldError::new("to", "must be after from"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let fleet = &caller.0.fleet;
    let store = &app.hub.store;
    let track = store.track(fleet, &id, from, to, MAX_FIXES).await?;
    let events = store
        .driver_events(fleet, &id, from, to, MAX_EVENTS)
        .await?;
    let segments = store
        .stop_segments(fleet, &id, from, to, MAX_SEGMENTS)
        .await?;
    let summary = json!({
        "driver_id": id,
        "from": format_ts(from),
        "to": format_ts(to),
        "distance_m": distance_m(&track).round(),
        "online_s": online_ms(&events, from, to) as f64 / 1000.0,
        "stopped_s": stopped_ms(&segments, from, to) as f64 / 1000.0,
        "stops": segments.iter().map(segment_json).collect::<Vec<_>>(),
        "unplanned_stops": segments.iter().filter(|s| s.unplanned).count(),
        "fixes": track.len(),
    });
    let mut csv = vec![["from", "to", "lat", "lon", "unplanned"]
        .map(String::from)
        .to_vec()];
    for s in &segments {
        csv.push(vec![
            format_ts(s.from_ms),
            cell(s.to_ms.map(format_ts)),
            s.lat.to_string(),
            s.lon.to_string(),
            s.unplanned.to_string(),
        ]);
    }
    let points = segments.iter().map(segment_json).collect();
    let track = match tolerance {
        Some(m) => simplify(&track, m),
        None => track,
    };
    respond(
        Report {
            summary,
            track,
            points,
            csv,
            name: id.clone(),
        },
        format,
    )
}
