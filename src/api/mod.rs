//! REST: live positions, trips and stops, check-ins, track history, readiness.
//! Every read is scoped to the caller's fleet; errors are problem+json (see `error`).

mod devices;
mod events;
mod trips;
mod webhooks;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::bus::BusStatus;
use crate::error::{ApiError, FieldError};
use crate::extract::ApiQuery;
use crate::geo::BBox;
use crate::model::now_ms;
use crate::protocol::time::{format_ts, parse_ts};
use crate::protocol::PositionView;
use crate::state::AppState;

/// Most drivers one nearby query returns.
pub const MAX_NEARBY: usize = 1_000;
/// Most points one track query returns.
pub const MAX_TRACK_POINTS: i64 = 50_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/drivers", get(drivers_in_bbox))
        .route("/v1/drivers/nearby", get(drivers_nearby))
        .route("/v1/drivers/{id}", get(driver))
        .route("/v1/drivers/{id}/track", get(track))
        .route("/v1/trips", post(trips::create).get(trips::list))
        .route("/v1/trips/{id}", get(trips::get))
        .route(
            "/v1/trips/{trip_id}/stops/{stop_id}/checkin",
            post(trips::manual_checkin),
        )
        .route("/v1/checkins", get(trips::checkins))
        .route("/v1/devices", post(devices::create).get(devices::list))
        .route("/v1/devices/{id}", axum::routing::delete(devices::delete))
        .route("/osmand", get(devices::report).post(devices::report))
        .route("/v1/events", get(events::list))
        .route("/v1/stream", get(crate::stream::sse::sse))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhooks/{id}", axum::routing::delete(webhooks::delete))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route(
            "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            post(webhooks::redeliver),
        )
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
}

/// `GET /readyz`: 200 when the database answers, else 503.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let bus = app.hub.bus.status();
    let database = app.hub.store.ping().await;
    if let Err(e) = &database {
        tracing::warn!(error = %e, "readiness: database down");
    }
    let draining = app.shutdown.is_shutdown();
    // A node without Redis still serves its own drivers and watchers: degraded, yet ready.
    let (code, status) = match (&database, draining, bus) {
        (Err(_), _, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (Ok(()), true, _) => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        (Ok(()), false, BusStatus::Down) => (StatusCode::OK, "degraded"),
        (Ok(()), false, _) => (StatusCode::OK, "ready"),
    };
    let body = json!({
        "status": status,
        "database": if database.is_ok() { "ok" } else { "down" },
        "bus": bus.as_str(),
        "node_id": app.hub.bus.node_id(),
    });
    (code, Json(body))
}

/// `GET /metrics`: Prometheus text exposition format 0.0.4.
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    metrics::gauge!(crate::metrics::DRIVERS_ONLINE).set(app.hub.online_count() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

#[derive(Deserialize)]
struct BBoxQuery {
    bbox: Option<String>,
}

/// `GET /v1/drivers?bbox=w,s,e,n` (admin, service): live drivers of the caller's fleet in the box.
async fn drivers_in_bbox(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BBoxQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Service])?;
    let bbox = match q.bbox.as_deref() {
        Some(text) => {
            BBox::parse(text).map_err(|m| ApiError::Invalid(vec![FieldError::new("bbox", m)]))?
        }
        None => BBox::new(-180.0, -90.0, 180.0, 90.0).expect("whole world is valid"),
    };
    let drivers: Vec<PositionView> = app
        .hub
        .in_bbox(&caller.0.fleet, &bbox)
        .iter()
        .map(PositionView::from)
        .collect();
    Ok(Json(json!({ "drivers": drivers })))
}

#[derive(Deserialize)]
struct NearbyQuery {
    lat: f64,
    lon: f64,
    limit: Option<usize>,
    radius_m: Option<f64>,
}

/// `GET /v1/drivers/nearby?lat=&lon=&limit=&radius_m=` (admin, service): the nearest live
/// drivers by great-circle distance, nearest first, each with `distance_m`.
async fn drivers_nearby(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<NearbyQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Service])?;
    let mut errors = Vec::new();
    if !q.lat.is_finite() || !(-90.0..=90.0).contains(&q.lat) {
        errors.push(FieldError::new("lat", "must be within [-90, 90]"));
    }
    if !q.lon.is_finite() || !(-180.0..=180.0).contains(&q.lon) {
        errors.push(FieldError::new("lon", "must be within [-180, 180]"));
    }
    let limit = q.limit.unwrap_or(10);
    if limit == 0 || limit > MAX_NEARBY {
        errors.push(FieldError::new(
            "limit",
            format!("must be within [1, {MAX_NEARBY}]"),
        ));
    }
    if q.radius_m.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        errors.push(FieldError::new(
            "radius_m",
            "must be a positive number of metres",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let found = app
        .hub
        .nearest(&caller.0.fleet, q.lat, q.lon, limit, q.radius_m);
    let drivers: Vec<serde_json::Value> = found
        .iter()
        .map(|n| {
            let mut v = serde_json::to_value(PositionView::from(&n.position)).unwrap_or_default();
            v["distance_m"] = json!((n.distance_m * 10.0).round() / 10.0);
            v
        })
        .collect();
    Ok(Json(json!({ "drivers": drivers })))
}

/// `GET /v1/drivers/{id}`: the live position (admin, service, or the driver itself); 404 offline.
async fn driver(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PositionView>, ApiError> {
    caller.require_reader_of(&id)?;
    app.hub
        .position(&caller.0.fleet, &id)
        .map(|p| Json(PositionView::from(&p)))
        .ok_or_else(|| ApiError::NotFound(format!("driver `{id}` is not online")))
}

#[derive(Deserialize)]
struct TrackQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/drivers/{id}/track?from=&to=&limit=`: stored history as a GeoJSON Feature (RFC 7946)
/// with a `LineString` of `[lon, lat]` and `properties.timestamps` (RFC 3339, one per point).
/// `from`/`to` are RFC 3339 or unix ms; default the last 24 h.
async fn track(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TrackQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_reader_of(&id)?;
    let mut errors = Vec::new();
    let mut time = |name: &str, v: &Option<String>, default: i64| match v.as_deref().map(parse_ts) {
        None => default,
        Some(Ok(ms)) => ms,
        Some(Err(m)) => {
            errors.push(FieldError::new(name, m));
            default
        }
    };
    let now = now_ms();
    let to = time("to", &q.to, now + 60_000);
    let from = time("from", &q.from, now - 86_400_000);
    let limit = q.limit.unwrap_or(10_000);
    if !(1..=MAX_TRACK_POINTS).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be within [1, {MAX_TRACK_POINTS}]"),
        ));
    }
    if from > to {
        errors.push(FieldError::new("from", "must not be after `to`"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let fixes = app
        .hub
        .store
        .track(&caller.0.fleet, &id, from, to, limit)
        .await?;
    let coordinates: Vec<[f64; 2]> = fixes.iter().map(|f| [f.lon, f.lat]).collect();
    let timestamps: Vec<String> = fixes.iter().map(|f| format_ts(f.ts_ms)).collect();
    let accuracy: Vec<Option<f64>> = fixes.iter().map(|f| f.accuracy_m).collect();
    let speed: Vec<Option<f64>> = fixes.iter().map(|f| f.speed_mps).collect();
    Ok(Json(json!({
        "type": "Feature",
        "geometry": { "type": "LineString", "coordinates": coordinates },
        "properties": {
            "driver_id": id,
            "from": format_ts(from),
            "to": format_ts(to),
            "count": fixes.len(),
            "timestamps": timestamps,
            "accuracy_m": accuracy,
            "speed_mps": speed,
        }
    })))
}
