//! The fleet's own settings over REST (admin).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError};
use crate::extract::ApiJson;
use crate::model::now_ms;
use crate::state::AppState;
use crate::store::settings::FleetSettings;

/// Largest approach thresholds accepted: 2 h, 50 km.
const MAX_APPROACH_ETA_S: f64 = 7_200.0;
const MAX_APPROACH_DISTANCE_M: f64 = 50_000.0;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// `stop.approaching` when the next stop's ETA is at most this far ahead, s (0-7,200);
    /// absent or null: the node's default (`--approach-eta-s`).
    approach_eta_s: Option<f64>,
    /// … or the driver at most this far from it, m (0-50,000); absent or null: the node's
    /// default (`--approach-distance-m`).
    approach_distance_m: Option<f64>,
}

fn view(app: &AppState, s: FleetSettings) -> serde_json::Value {
    let d = &app.cfg.hub.alerts;
    json!({
        "approach_eta_s": s.approach_eta_s,
        "approach_distance_m": s.approach_distance_m,
        "effective": {
            "approach_eta_s": s.approach_eta_s.unwrap_or(d.approach_eta_s),
            "approach_distance_m": s.approach_distance_m.unwrap_or(d.approach_distance_m),
        },
    })
}

/// `GET /v1/settings` (admin): the fleet's settings (null: the node's default) and the values
/// in force.
#[utoipa::path(get, path = "/v1/settings", operation_id = "get_fleet_settings", tag = "settings", security(("bearer" = [])), responses((status = 200, description = "`{\"approach_eta_s\",\"approach_distance_m\",\"effective\":{…}}`", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn get(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let s = app.hub.store.fleet_settings(&caller.0.fleet).await?;
    Ok(Json(view(&app, s)))
}

/// `PUT /v1/settings` (admin): replaces the fleet's settings; in force at once on this node and
/// within a minute on the others. 422 names each invalid field.
#[utoipa::path(put, path = "/v1/settings", operation_id = "put_fleet_settings", tag = "settings", request_body = SettingsBody, security(("bearer" = [])), responses((status = 200, description = "The settings now stored, and the values in force", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn put(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SettingsBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    let mut check = |field: &str, v: Option<f64>, max: f64| {
        if v.is_some_and(|v| !v.is_finite() || !(0.0..=max).contains(&v)) {
            errors.push(FieldError::new(field, format!("must be within [0, {max}]")));
        }
    };
    check("approach_eta_s", body.approach_eta_s, MAX_APPROACH_ETA_S);
    check(
        "approach_distance_m",
        body.approach_distance_m,
        MAX_APPROACH_DISTANCE_M,
    );
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let settings = FleetSettings {
        approach_eta_s: body.approach_eta_s,
        approach_distance_m: body.approach_distance_m,
    };
    app.hub
        .store
        .put_fleet_settings(&caller.0.fleet, &settings, now_ms())
        .await?;
    app.hub.fleet_settings_changed(&caller.0.fleet, settings);
    Ok(Json(view(&app, settings)))
}
