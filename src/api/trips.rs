//! Trips, stops and check-ins over REST.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, ApiQuery};
use crate::model::now_ms;
use crate::model::StopStatus;
use crate::protocol::time::{format_ts, WireTs};
use crate::state::AppState;
use crate::store::{CheckinFilter, CheckinRecord, NewStop, NewTrip, StopRecord, TripRecord};

/// Default geofence radius, m: geocoded addresses sit a median 48 m (p90 ~480 m) from where
/// couriers really are (LaDe, Jilin sample), so 100 m covers the typical error.
pub const DEFAULT_RADIUS_M: f64 = 100.0;
/// Most stops in one trip.
pub const MAX_STOPS: usize = 1_000;
const MAX_ID_LEN: usize = 128;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TripBody {
    id: Option<String>,
    driver_id: String,
    stops: Vec<StopBody>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    id: Option<String>,
    name: Option<String>,
    lat: f64,
    lon: f64,
    radius_m: Option<f64>,
    /// The stop's time window: not served before `window_start`, late after `window_end`
    /// (RFC 3339 or unix ms; either may be absent).
    #[schema(value_type = Option<String>, format = DateTime)]
    window_start: Option<WireTs>,
    #[schema(value_type = Option<String>, format = DateTime)]
    window_end: Option<WireTs>,
    /// Time spent at the stop, s (0-86,400; default 0): the ETAs of the stops after it count it.
    service_s: Option<f64>,
}

/// Longest service time of a stop, s (a day).
pub const MAX_SERVICE_S: f64 = 86_400.0;

pub(super) fn check_id(field: &str, id: &str, errors: &mut Vec<FieldError>) {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(|c| c.is_control() || c == '/') {
        errors.push(FieldError::new(
            field,
            format!("must be 1-{MAX_ID_LEN} characters, no `/` or control characters"),
        ));
    }
}

/// Checks a trip body; every problem is reported, with its field path.
fn validate(body: TripBody, fleet: &str) -> Result<NewTrip, ApiError> {
    let mut errors = Vec::new();
    let id = body
        .id
        .unwrap_or_else(|| format!("trip-{}", uuid::Uuid::new_v4()));
    check_id("id", &id, &mut errors);
    check_id("driver_id", &body.driver_id, &mut errors);
    if body.stops.is_empty() || body.stops.len() > MAX_STOPS {
        errors.push(FieldError::new(
            "stops",
            format!("must hold 1-{MAX_STOPS} stops"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut stops = Vec::with_capacity(body.stops.len());
    for (i, s) in body.stops.into_iter().enumerate() {
        let at = |f: &str| format!("stops[{i}].{f}");
        let id = s.id.unwrap_or_else(|| format!("stop-{}", i + 1));
        check_id(&at("id"), &id, &mut errors);
        if !seen.insert(id.clone()) {
            errors.push(FieldError::new(
                at("id"),
                format!("`{id}` appears twice in this trip"),
            ));
        }
        if !s.lat.is_finite() || !(-90.0..=90.0).contains(&s.lat) {
            errors.push(FieldError::new(at("lat"), "must be within [-90, 90]"));
        }
        if !s.lon.is_finite() || !(-180.0..=180.0).contains(&s.lon) {
            errors.push(FieldError::new(at("lon"), "must be within [-180, 180]"));
        }
        let radius_m = s.radius_m.unwrap_or(DEFAULT_RADIUS_M);
        if !radius_m.is_finite() || !(10.0..=5_000.0).contains(&radius_m) {
            errors.push(FieldError::new(
                at("radius_m"),
                "must be within [10, 5000] metres",
            ));
        }
        let service_s = s.service_s.unwrap_or(0.0);
        if !service_s.is_finite() || !(0.0..=MAX_SERVICE_S).contains(&service_s) {
            errors.push(FieldError::new(
                at("service_s"),
                format!("must be within [0, {MAX_SERVICE_S}] seconds"),
            ));
        }
        let (window_start_ms, window_end_ms) =
            (s.window_start.map(|t| t.0), s.window_end.map(|t| t.0));
        if let (Some(a), Some(b)) = (window_start_ms, window_end_ms) {
            if a > b {
                errors.push(FieldError::new(
                    at("window_end"),
                    "must not be before window_start",
                ));
            }
        }
        if s.name.as_ref().is_some_and(|n| n.len() > 512) {
            errors.push(FieldError::new(at("name"), "must be at most 512 bytes"));
        }
        stops.push(NewStop {
            id,
            name: s.name,
            lat: s.lat,
            lon: s.lon,
            radius_m,
            window_start_ms,
            window_end_ms,
            service_s,
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    Ok(NewTrip {
        id,
        fleet: fleet.to_string(),
        driver_id: body.driver_id,
        stops,
    })
}

#[derive(Serialize)]
struct StopView<'a> {
    id: &'a str,
    name: Option<&'a str>,
    lat: f64,
    lon: f64,
    radius_m: f64,
    status: &'a str,
    arrived_at: Option<String>,
    checked_in_at: Option<String>,
    departed_at: Option<String>,
    window_start: Option<String>,
    window_end: Option<String>,
    service_s: f64,
    /// Pending stops: the latest ETA, RFC 3339 UTC, and when it was computed.
    eta: Option<String>,
    eta_updated_at: Option<String>,
    /// Pending stops with a window: the ETA is past its end (`stop.late` announced).
    late: bool,
    /// Pending stops: `stop.approaching` announced and not yet taken back.
    approaching: bool,
}

fn trip_json(t: &TripRecord) -> serde_json::Value {
    let stops: Vec<StopView> = t.stops.iter().map(stop_view).collect();
    json!({
        "id": t.id,
        "driver_id": t.driver_id,
        "fleet": t.fleet,
        "status": t.status.as_str(),
        "created_at": format_ts(t.created_at),
        "completed_at": t.completed_at.map(format_ts),
        "stops": stops,
    })
}

fn stop_view(s: &StopRecord) -> StopView<'_> {
    StopView {
        id: &s.id,
        name: s.name.as_deref(),
        lat: s.lat,
        lon: s.lon,
        radius_m: s.radius_m,
        status: s.status.as_str(),
        arrived_at: s.arrived_at.map(format_ts),
        checked_in_at: s.checked_in_at.map(format_ts),
        departed_at: s.departed_at.map(format_ts),
        window_start: s.window_start.map(format_ts),
        window_end: s.window_end.map(format_ts),
        service_s: s.service_s,
        eta: s
            .eta
            .filter(|_| s.status == StopStatus::Pending)
            .map(format_ts),
        eta_updated_at: s
            .eta_updated_at
            .filter(|_| s.status == StopStatus::Pending)
            .map(format_ts),
        late: s.late && s.status == StopStatus::Pending,
        approaching: s.approaching && s.status == StopStatus::Pending,
    }
}

fn checkin_json(c: &CheckinRecord) -> serde_json::Value {
    json!({
        "id": c.id,
        "trip_id": c.trip_id,
        "stop_id": c.stop_id,
        "driver_id": c.driver_id,
        "arrived_at": format_ts(c.arrived_at),
        "checked_in_at": format_ts(c.checked_in_at),
        "departed_at": c.departed_at.map(format_ts),
        "source": c.source.as_str(),
        "evidence": c.evidence.as_ref().map(crate::store::evidence::to_json),
    })
}

/// `POST /v1/trips` (admin): creates a trip for a driver of the caller's fleet → 201 with the
/// trip; 409 when the id is taken; 400/422 for bad bodies.
#[utoipa::path(post, path = "/v1/trips", operation_id = "create_trip", tag = "trips", request_body = TripBody, security(("bearer" = [])), responses((status = 201, description = "The trip with its stops", body = Object), (status = 409, description = "The fleet has a trip with this id", body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<TripBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(&[Role::Admin])?;
    let trip = validate(body, &caller.0.fleet)?;
    let stored = app.hub.store.insert_trip(&trip, now_ms()).await?;
    app.hub.trip_created(&stored).await;
    Ok((StatusCode::CREATED, Json(trip_json(&stored))))
}

async fn load_trip(app: &AppState, caller: &Caller, id: &str) -> Result<TripRecord, ApiError> {
    let trip = app
        .hub
        .store
        .trip(&caller.0.fleet, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("trip `{id}` not found")))?;
    caller.require_reader_of(&trip.driver_id)?;
    Ok(trip)
}

/// `GET /v1/trips/{id}`: the trip with each stop's status (`pending` | `arrived` | `departed`).
#[utoipa::path(get, path = "/v1/trips/{id}", operation_id = "get_trip", tag = "trips", params(("id" = String, Path, description = "Trip id")), security(("bearer" = [])), responses((status = 200, description = "The trip with each stop's status", body = Object), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(trip_json(&load_trip(&app, &caller, &id).await?)))
}

/// `GET /v1/drivers/{id}/trips` (admin, service, or the driver itself) → `{"trips":[…]}`: the
/// driver's active trips, oldest first, each with its stops (what the driver app shows).
#[utoipa::path(get, path = "/v1/drivers/{id}/trips", operation_id = "list_driver_trips", tag = "trips", params(("id" = String, Path, description = "Driver id")), security(("bearer" = [])), responses((status = 200, description = "`{\"trips\":[…]}`, active, oldest first", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another driver, role or fleet", body = crate::error::Problem)))]
pub async fn of_driver(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_reader_of(&id)?;
    let trips = app.hub.store.active_trips_of(&caller.0.fleet, &id).await?;
    Ok(Json(
        json!({ "trips": trips.iter().map(trip_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TripListQuery {
    status: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/trips?status=active|completed&limit=100` (admin, service) → `{"trips":[…]}`, newest
/// first, each with its stops and their statuses (what the live map draws).
#[utoipa::path(get, path = "/v1/trips", operation_id = "list_trips", tag = "trips", params(TripListQuery), security(("bearer" = [])), responses((status = 200, description = "`{\"trips\":[…]}`, newest first", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TripListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Service])?;
    let mut errors = Vec::new();
    if let Some(s) = q.status.as_deref() {
        if s != "active" && s != "completed" {
            errors.push(FieldError::new("status", "must be `active` or `completed`"));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        errors.push(FieldError::new("limit", "must be within [1, 1000]"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let trips = app
        .hub
        .store
        .trips(&caller.0.fleet, q.status.as_deref(), limit)
        .await?;
    Ok(Json(
        json!({ "trips": trips.iter().map(trip_json).collect::<Vec<_>>() }),
    ))
}

/// `POST /v1/trips/{trip_id}/stops/{stop_id}/checkin` (admin, or the trip's driver): the manual
/// fallback when detection cannot decide (no GPS indoors, say). 201 with the check-in; 409 when
/// the stop is already checked in.
#[utoipa::path(post, path = "/v1/trips/{trip_id}/stops/{stop_id}/checkin", operation_id = "check_in_manually", tag = "trips", params(("trip_id" = String, Path), ("stop_id" = String, Path)), security(("bearer" = [])), responses((status = 201, description = "The check-in (source `manual`)", body = Object), (status = 404, body = crate::error::Problem), (status = 409, description = "Already checked in", body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn manual_checkin(
    State(app): State<AppState>,
    caller: Caller,
    Path((trip_id, stop_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(&[Role::Admin, Role::Driver])?;
    let trip = load_trip(&app, &caller, &trip_id).await?;
    if !trip.stops.iter().any(|s| s.id == stop_id) {
        return Err(ApiError::NotFound(format!(
            "stop `{stop_id}` not found in trip `{trip_id}`"
        )));
    }
    let outcome = app.hub.manual_checkin(&trip, &stop_id).await?;
    match outcome.checkin {
        Some(c) => Ok((StatusCode::CREATED, Json(checkin_json(&c)))),
        None => Err(ApiError::Conflict(format!(
            "stop `{stop_id}` of trip `{trip_id}` is already checked in"
        ))),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckinQuery {
    trip_id: Option<String>,
    driver_id: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/checkins?trip_id=&driver_id=&limit=` → `{"checkins":[…]}`, newest first. Drivers see
/// only their own.
#[utoipa::path(get, path = "/v1/checkins", operation_id = "list_checkins", tag = "trips", params(CheckinQuery), security(("bearer" = [])), responses((status = 200, description = "`{\"checkins\":[…]}`, newest first", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn checkins(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CheckinQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let driver_id = match caller.0.role {
        Role::Driver => Some(caller.0.sub.clone()),
        _ => q.driver_id,
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "limit",
            "must be within [1, 10000]",
        )]));
    }
    let list = app
        .hub
        .store
        .checkins(
            &caller.0.fleet,
            &CheckinFilter {
                trip_id: q.trip_id,
                driver_id,
                limit,
            },
        )
        .await?;
    Ok(Json(
        json!({ "checkins": list.iter().map(checkin_json).collect::<Vec<_>>() }),
    ))
}
