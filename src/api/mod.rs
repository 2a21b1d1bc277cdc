//! REST: live positions, trips and stops, check-ins, track history, readiness.
//! Every read is scoped to the caller's fleet; errors are problem+json (see `error`).

mod devices;
mod events;
mod fleet;
mod geofences;
pub mod links;
pub mod openapi;
mod reports;
mod settings;
mod trips;
mod webhooks;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// The REST routes, each from its documented handler (so the OpenAPI document lists every one),
/// under a 1 MiB body limit. `app::router` adds CORS, the operations and socket routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(drivers_in_bbox))
        .routes(routes!(drivers_nearby))
        .routes(routes!(driver))
        .routes(routes!(fleet::drivers))
        .routes(routes!(track))
        .routes(routes!(trips::create, trips::list))
        .routes(routes!(trips::get))
        .routes(routes!(trips::of_driver))
        .routes(routes!(reports::trip))
        .routes(routes!(reports::driver))
        .routes(routes!(trips::manual_checkin))
        .routes(routes!(trips::checkins))
        .routes(routes!(links::create, links::list))
        .routes(routes!(links::revoke))
        .routes(routes!(settings::get, settings::put))
        .routes(routes!(geofences::create, geofences::list))
        .routes(routes!(
            geofences::get,
            geofences::update,
            geofences::delete
        ))
        .routes(routes!(devices::create, devices::list))
        .routes(routes!(devices::delete))
        .routes(routes!(devices::report_get, devices::report_post))
        .routes(routes!(
            devices::keyed_report_get,
            devices::keyed_report_post
        ))
        .routes(routes!(events::list))
        .routes(routes!(crate::stream::sse::sse))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::redeliver))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
}

/// Liveness, readiness, metrics and the three socket upgrades (no CORS: not for browsers' REST).
pub fn edge_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(livez))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(crate::ws::driver::upgrade))
        .routes(routes!(crate::ws::watch::upgrade))
        .routes(routes!(crate::stream::ws::upgrade))
        .routes(routes!(crate::customer::page))
        .routes(routes!(crate::customer::status))
        .routes(routes!(crate::customer::live))
}

/// `GET /livez`: 200 while the process serves requests.
#[utoipa::path(get, path = "/livez", operation_id = "livez", tag = "operations", responses((status = 200, description = "`{\"status\":\"ok\"}`", body = Object)))]
pub async fn livez() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the database answers, else 503.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations", responses((status = 200, description = "Ready (`status`: `ready`, or `degraded` without the Redis bus)", body = Object), (status = 503, description = "Database down, or draining", body = Object)))]
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
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain")))]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct BBoxQuery {
    bbox: Option<String>,
}

/// `GET /v1/drivers?bbox=w,s,e,n` (admin, service): live drivers of the caller's fleet in the box.
#[utoipa::path(get, path = "/v1/drivers", operation_id = "list_drivers_in_bbox", tag = "drivers", params(BBoxQuery), security(("bearer" = [])), responses((status = 200, description = "`{\"drivers\":[Position]}`", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct NearbyQuery {
    lat: f64,
    lon: f64,
    limit: Option<usize>,
    radius_m: Option<f64>,
}

/// `GET /v1/drivers/nearby?lat=&lon=&limit=&radius_m=` (admin, service): the nearest live
/// drivers by great-circle distance, nearest first, each with `distance_m`.
#[utoipa::path(get, path = "/v1/drivers/nearby", operation_id = "list_drivers_nearby", tag = "drivers", params(NearbyQuery), security(("bearer" = [])), responses((status = 200, description = "`{\"drivers\":[Position + distance_m]}`, nearest first", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
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
#[utoipa::path(get, path = "/v1/drivers/{id}", operation_id = "get_driver", tag = "drivers", params(("id" = String, Path, description = "Driver id (the token `sub` of its phone)")), security(("bearer" = [])), responses((status = 200, body = crate::protocol::PositionView), (status = 404, description = "Not online", body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
async fn driver(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PositionView>, ApiError> {
    caller.require_reader_of(&id)?;
    let position = app
        .hub
        .position(&caller.0.fleet, &id)
        .ok_or_else(|| ApiError::NotFound(format!("driver `{id}` is not online")))?;
    let who = crate::model::DriverKey::new(&caller.0.fleet, &id);
    Ok(Json(PositionView {
        battery: app.hub.battery(&who).map(Into::into),
        ..PositionView::from(&position)
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TrackQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/drivers/{id}/track?from=&to=&limit=`: stored history as a GeoJSON Feature (RFC 7946)
/// with a `LineString` of `[lon, lat]` and `properties.timestamps` (RFC 3339, one per point).
/// `from`/`to` are RFC 3339 or unix ms; default the last 24 h.
#[utoipa::path(get, path = "/v1/drivers/{id}/track", operation_id = "get_driver_track", tag = "drivers", params(("id" = String, Path, description = "Driver id"), TrackQuery), security(("bearer" = [])), responses((status = 200, description = "GeoJSON Feature (RFC 7946) with a LineString of [lon, lat] and properties.timestamps", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
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
