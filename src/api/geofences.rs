//! Fleet geofences over REST (admin): circles and GeoJSON polygons with dwell and hysteresis.
//! Their events (`geofence.entered`, `geofence.dwelled`, `geofence.exited`) are in the event log
//! like every other; see `geo::zones` for how they are decided.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use geo::{Coord, LineString, MultiPolygon, Polygon, Validation};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError};
use crate::extract::ApiJson;
use crate::geo::zones::Shape;
use crate::model::now_ms;
use crate::protocol::time::format_ts;
use crate::state::AppState;
use crate::store::geofences::GeofenceRecord;

/// Most geofences per fleet (the index is measured at 10,000 in BENCHMARKS.md).
pub const MAX_PER_FLEET: i64 = 20_000;
/// Most vertices of one geofence's polygons, all rings together.
pub const MAX_VERTICES: usize = 10_000;
/// Largest extent of a polygon (the diagonal of its bounding box), m: a metropolitan area.
pub const MAX_EXTENT_M: f64 = 200_000.0;
/// Default dwell before `geofence.dwelled`, s.
pub const DEFAULT_DWELL_S: f64 = 60.0;
/// Default hysteresis margin, m: about one GPS error of a phone in a city (p90 ~20 m).
pub const DEFAULT_MARGIN_M: f64 = 20.0;

/// `{"center":[lon,lat],"radius_m":R}`.
#[derive(Deserialize, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CircleBody {
    center: [f64; 2],
    radius_m: f64,
}

/// A GeoJSON (RFC 7946) `Polygon` or `MultiPolygon` geometry, `[lon, lat]` positions.
#[derive(Deserialize, Clone, utoipa::ToSchema)]
pub struct GeometryBody {
    #[serde(rename = "type")]
    kind: String,
    #[schema(value_type = Object)]
    coordinates: serde_json::Value,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GeofenceBody {
    /// Generated when absent.
    id: Option<String>,
    name: Option<String>,
    /// Exactly one of `circle` and `geometry`.
    circle: Option<CircleBody>,
    geometry: Option<GeometryBody>,
    /// Only these drivers are checked against it (absent: every driver of the fleet).
    drivers: Option<Vec<String>>,
    /// Time inside before `geofence.dwelled`, s (0-86,400; default 60).
    dwell_s: Option<f64>,
    /// Hysteresis margin, m (0-1,000; default 20): entry and exit each need fixes this far past
    /// the boundary.
    margin_m: Option<f64>,
}

/// `PATCH` body: any of the fields; `drivers: null` removes the filter.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GeofencePatch {
    name: Option<String>,
    circle: Option<CircleBody>,
    geometry: Option<GeometryBody>,
    #[serde(default, deserialize_with = "serde_with_none::deserialize")]
    #[schema(value_type = Option<Vec<String>>)]
    drivers: Option<Option<Vec<String>>>,
    dwell_s: Option<f64>,
    margin_m: Option<f64>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
mod serde_with_none {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

fn position(field: &str, v: &serde_json::Value, errors: &mut Vec<FieldError>) -> Option<Coord> {
    let pair = v.as_array().filter(|a| a.len() >= 2);
    let (x, y) = match pair {
        Some(a) => (a[0].as_f64(), a[1].as_f64()),
        None => (None, None),
    };
    match (x, y) {
        (Some(x), Some(y)) if (-180.0..=180.0).contains(&x) && (-90.0..=90.0).contains(&y) => {
            Some(Coord { x, y })
        }
        _ => {
            errors.push(FieldError::new(
                field,
                "positions are [lon, lat] with lon within [-180, 180] and lat within [-90, 90]",
            ));
            None
        }
    }
}

fn polygon(field: &str, v: &serde_json::Value, errors: &mut Vec<FieldError>) -> Option<Polygon> {
    let Some(rings) = v.as_array().filter(|r| !r.is_empty()) else {
        errors.push(FieldError::new(
            field,
            "a polygon is a non-empty array of rings",
        ));
        return None;
    };
    let mut out = Vec::with_capacity(rings.len());
    for (i, ring) in rings.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(points) = ring.as_array() else {
            errors.push(FieldError::new(at, "a ring is an array of positions"));
            return None;
        };
        let coords: Option<Vec<Coord>> = points.iter().map(|p| position(&at, p, errors)).collect();
        let coords = coords?;
        if coords.len() < 4 {
            errors.push(FieldError::new(at, "a ring has at least 4 positions"));
            return None;
        }
        if coords.first() != coords.last() {
            errors.push(FieldError::new(
                at,
                "a ring must be closed: its last position equals its first (RFC 7946 §3.1.6)",
            ));
            return None;
        }
        out.push(LineString::new(coords));
    }
    let exterior = out.remove(0);
    Some(Polygon::new(exterior, out))
}

/// Checks a circle or a GeoJSON geometry and builds the shape; every problem is named.
fn shape(
    circle: Option<CircleBody>,
    geometry: Option<GeometryBody>,
    errors: &mut Vec<FieldError>,
) -> Option<Shape> {
    match (circle, geometry) {
        (Some(c), None) => {
            let [lon, lat] = c.center;
            let mut ok = true;
            if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
                errors.push(FieldError::new("circle.center", "[lon, lat] within range"));
                ok = false;
            }
            if !c.radius_m.is_finite() || !(5.0..=50_000.0).contains(&c.radius_m) {
                errors.push(FieldError::new(
                    "circle.radius_m",
                    "must be within [5, 50000] metres",
                ));
                ok = false;
            }
            ok.then_some(Shape::Circle {
                lat,
                lon,
                radius_m: c.radius_m,
            })
        }
        (None, Some(g)) => {
            let polygons = match g.kind.as_str() {
                "Polygon" => vec![polygon("geometry.coordinates", &g.coordinates, errors)?],
                "MultiPolygon" => {
                    let Some(list) = g.coordinates.as_array().filter(|l| !l.is_empty()) else {
                        errors.push(FieldError::new(
                            "geometry.coordinates",
                            "a non-empty array of polygons",
                        ));
                        return None;
                    };
                    let mut out = Vec::new();
                    for (i, p) in list.iter().enumerate() {
                        out.push(polygon(&format!("geometry.coordinates[{i}]"), p, errors)?);
                    }
                    out
                }
                other => {
                    errors.push(FieldError::new(
                        "geometry.type",
                        format!("`{other}`: must be `Polygon` or `MultiPolygon`"),
                    ));
                    return None;
                }
            };
            let mp = MultiPolygon::new(polygons);
            let vertices: usize = mp
                .0
                .iter()
                .map(|p| {
                    p.exterior().0.len() + p.interiors().iter().map(|r| r.0.len()).sum::<usize>()
                })
                .sum();
            if vertices > MAX_VERTICES {
                errors.push(FieldError::new(
                    "geometry",
                    format!("{vertices} vertices: at most {MAX_VERTICES}"),
                ));
                return None;
            }
            if let Err(e) = mp.check_validation() {
                errors.push(FieldError::new(
                    "geometry",
                    format!("not a valid polygon: {e}"),
                ));
                return None;
            }
            let (mut w, mut s, mut e, mut n) = (180.0f64, 90.0f64, -180.0f64, -90.0f64);
            for c in mp.0.iter().flat_map(|p| p.exterior().0.iter()) {
                (w, s, e, n) = (w.min(c.x), s.min(c.y), e.max(c.x), n.max(c.y));
            }
            if crate::geo::haversine_m(s, w, n, e) > MAX_EXTENT_M {
                errors.push(FieldError::new(
                    "geometry",
                    format!("spans more than {} km", MAX_EXTENT_M / 1000.0),
                ));
                return None;
            }
            Some(Shape::Polygons(mp))
        }
        _ => {
            errors.push(FieldError::new(
                "circle",
                "give exactly one of `circle` and `geometry`",
            ));
            None
        }
    }
}

fn check_common(
    name: &Option<String>,
    drivers: Option<&Vec<String>>,
    dwell_s: f64,
    margin_m: f64,
    errors: &mut Vec<FieldError>,
) {
    if name.as_ref().is_some_and(|n| n.len() > 512) {
        errors.push(FieldError::new("name", "must be at most 512 bytes"));
    }
    if let Some(ds) = drivers {
        if ds.is_empty() || ds.len() > 10_000 {
            errors.push(FieldError::new(
                "drivers",
                "must list 1-10000 drivers, or be absent",
            ));
        }
        for (i, d) in ds.iter().enumerate() {
            super::trips::check_id(&format!("drivers[{i}]"), d, errors);
        }
    }
    if !dwell_s.is_finite() || !(0.0..=86_400.0).contains(&dwell_s) {
        errors.push(FieldError::new(
            "dwell_s",
            "must be within [0, 86400] seconds",
        ));
    }
    if !margin_m.is_finite() || !(0.0..=1_000.0).contains(&margin_m) {
        errors.push(FieldError::new(
            "margin_m",
            "must be within [0, 1000] metres",
        ));
    }
}

/// The wire view: the shape back in the form it was given.
pub fn geofence_json(g: &GeofenceRecord) -> serde_json::Value {
    let mut v = json!({
        "id": g.id,
        "name": g.name,
        "drivers": g.drivers,
        "dwell_s": g.dwell_s,
        "margin_m": g.margin_m,
        "created_at": format_ts(g.created_at),
        "updated_at": format_ts(g.updated_at),
    });
    match &g.shape {
        Shape::Circle { lat, lon, radius_m } => {
            v["circle"] = json!({"center": [lon, lat], "radius_m": radius_m});
        }
        Shape::Polygons(mp) => {
            let polys: Vec<Vec<Vec<[f64; 2]>>> =
                mp.0.iter()
                    .map(|p| {
                        std::iter::once(p.exterior())
                            .chain(p.interiors())
                            .map(|r| r.0.iter().map(|c| [c.x, c.y]).collect())
                            .collect()
                    })
                    .collect();
            v["geometry"] = if polys.len() == 1 {
                json!({"type": "Polygon", "coordinates": polys[0]})
            } else {
                json!({"type": "MultiPolygon", "coordinates": polys})
            };
        }
    }
    v
}

/// `POST /v1/geofences` (admin) → 201 with the geofence; 409 when the id is taken, or the fleet
/// has [`MAX_PER_FLEET`]; 422 names each invalid field.
#[utoipa::path(post, path = "/v1/geofences", operation_id = "create_geofence", tag = "geofences", request_body = GeofenceBody, security(("bearer" = [])), responses((status = 201, description = "The geofence", body = Object), (status = 409, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<GeofenceBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    let id = body
        .id
        .unwrap_or_else(|| format!("geofence-{}", uuid::Uuid::new_v4()));
    super::trips::check_id("id", &id, &mut errors);
    let dwell_s = body.dwell_s.unwrap_or(DEFAULT_DWELL_S);
    let margin_m = body.margin_m.unwrap_or(DEFAULT_MARGIN_M);
    check_common(
        &body.name,
        body.drivers.as_ref(),
        dwell_s,
        margin_m,
        &mut errors,
    );
    let shape = shape(body.circle, body.geometry, &mut errors);
    let Some(shape) = shape.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Invalid(errors));
    };
    let fleet = caller.0.fleet.clone();
    if app.hub.store.geofence_count(&fleet).await? >= MAX_PER_FLEET {
        return Err(ApiError::Conflict(format!(
            "the fleet has {MAX_PER_FLEET} geofences, the most it may have"
        )));
    }
    let now = now_ms();
    let record = GeofenceRecord {
        fleet: fleet.clone(),
        id,
        name: body.name,
        shape,
        drivers: body.drivers,
        dwell_s,
        margin_m,
        created_at: now,
        updated_at: now,
    };
    app.hub.store.insert_geofence(&record).await?;
    app.hub.zone_upserted(&fleet, record.zone());
    Ok((StatusCode::CREATED, Json(geofence_json(&record))))
}

/// `GET /v1/geofences` (admin, service) → `{"geofences":[…]}` by id.
#[utoipa::path(get, path = "/v1/geofences", operation_id = "list_geofences", tag = "geofences", security(("bearer" = [])), responses((status = 200, description = "`{\"geofences\":[…]}`", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Service])?;
    let all = app.hub.store.geofences(&caller.0.fleet).await?;
    Ok(Json(
        json!({ "geofences": all.iter().map(geofence_json).collect::<Vec<_>>() }),
    ))
}

async fn load(app: &AppState, fleet: &str, id: &str) -> Result<GeofenceRecord, ApiError> {
    app.hub
        .store
        .geofence(fleet, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("geofence `{id}` not found")))
}

/// `GET /v1/geofences/{id}` (admin, service).
#[utoipa::path(get, path = "/v1/geofences/{id}", operation_id = "get_geofence", tag = "geofences", params(("id" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "The geofence", body = Object), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Service])?;
    Ok(Json(geofence_json(
        &load(&app, &caller.0.fleet, &id).await?,
    )))
}

/// `PATCH /v1/geofences/{id}` (admin): changes the given fields → 200 with the geofence.
#[utoipa::path(patch, path = "/v1/geofences/{id}", operation_id = "update_geofence", tag = "geofences", params(("id" = String, Path)), request_body = GeofencePatch, security(("bearer" = [])), responses((status = 200, description = "The geofence", body = Object), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn update(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<GeofencePatch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let fleet = caller.0.fleet.clone();
    let mut g = load(&app, &fleet, &id).await?;
    let mut errors = Vec::new();
    if patch.name.is_some() {
        g.name = patch.name;
    }
    if let Some(drivers) = patch.drivers {
        g.drivers = drivers;
    }
    g.dwell_s = patch.dwell_s.unwrap_or(g.dwell_s);
    g.margin_m = patch.margin_m.unwrap_or(g.margin_m);
    check_common(
        &g.name,
        g.drivers.as_ref(),
        g.dwell_s,
        g.margin_m,
        &mut errors,
    );
    if patch.circle.is_some() || patch.geometry.is_some() {
        if let Some(s) = shape(patch.circle, patch.geometry, &mut errors) {
            g.shape = s;
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    g.updated_at = now_ms();
    if !app.hub.store.update_geofence(&g).await? {
        return Err(ApiError::NotFound(format!("geofence `{id}` not found")));
    }
    app.hub.zone_upserted(&fleet, g.zone());
    Ok(Json(geofence_json(&g)))
}

/// `DELETE /v1/geofences/{id}` (admin) → 204; drivers inside it get no `geofence.exited`.
#[utoipa::path(delete, path = "/v1/geofences/{id}", operation_id = "delete_geofence", tag = "geofences", params(("id" = String, Path)), security(("bearer" = [])), responses((status = 204, description = "Deleted"), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin])?;
    if !app.hub.store.delete_geofence(&caller.0.fleet, &id).await? {
        return Err(ApiError::NotFound(format!("geofence `{id}` not found")));
    }
    app.hub.zone_removed(&caller.0.fleet, &id);
    Ok(StatusCode::NO_CONTENT)
}
