//! Customer tracking links over REST (admin): a capability URL per stop, revocable.
//!
//! The token is 256 random bits (base64url, 43 characters); only its SHA-256 is stored, so a
//! copy of the database opens no page. The public side is `crate::customer`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError};
use crate::model::now_ms;
use crate::protocol::time::format_ts;
use crate::state::AppState;
use crate::store::links::{token_hash, LinkRecord};

/// Default lifetime of a link, s: a delivery day.
pub const DEFAULT_TTL_S: i64 = 86_400;
/// Longest lifetime of a link, s (30 days).
pub const MAX_TTL_S: i64 = 30 * 86_400;

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// Lifetime, s (60 to 2,592,000; default 86,400). The link also ends a grace period after
    /// the stop's check-in (`--link-grace-s`).
    ttl_s: Option<i64>,
}

/// `POST /v1/trips/{trip_id}/stops/{stop_id}/links` (admin): a tracking link for one stop's
/// customer → 201 `{"id","token","url":"/t/{token}","expires_at"}`; the token is shown this
/// once. 404 when the trip or stop does not exist.
#[utoipa::path(post, path = "/v1/trips/{trip_id}/stops/{stop_id}/links", operation_id = "create_tracking_link", tag = "links", params(("trip_id" = String, Path), ("stop_id" = String, Path)), request_body(content = LinkBody, description = "Optional; `{}` or no body for the defaults"), security(("bearer" = [])), responses((status = 201, description = "The link with its token, shown this once", body = Object), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((trip_id, stop_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(&[Role::Admin])?;
    // The body is optional: no body (or `{}`) takes the defaults.
    let body: LinkBody = if body.iter().all(u8::is_ascii_whitespace) {
        LinkBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("body is not a link request: {e}")))?
    };
    let ttl_s = body.ttl_s.unwrap_or(DEFAULT_TTL_S);
    if !(60..=MAX_TTL_S).contains(&ttl_s) {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "ttl_s",
            format!("must be within [60, {MAX_TTL_S}] seconds"),
        )]));
    }
    stop_exists(&app, &caller, &trip_id, &stop_id).await?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let now = now_ms();
    let link = LinkRecord {
        id: format!("link-{}", uuid::Uuid::new_v4()),
        token_hash: token_hash(&token),
        fleet: caller.0.fleet.clone(),
        trip_id,
        stop_id,
        created_at: now,
        expires_at: now + ttl_s * 1000,
        revoked_at: None,
    };
    app.hub.store.insert_link(&link).await?;
    let path = format!("/t/{token}");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": link.id,
            "token": token,
            "url": format!("{}{path}", super::devices::public_base(&headers)),
            "path": path,
            "trip_id": link.trip_id,
            "stop_id": link.stop_id,
            "created_at": format_ts(link.created_at),
            "expires_at": format_ts(link.expires_at),
        })),
    ))
}

async fn stop_exists(
    app: &AppState,
    caller: &Caller,
    trip_id: &str,
    stop_id: &str,
) -> Result<(), ApiError> {
    let trip = app
        .hub
        .store
        .trip(&caller.0.fleet, trip_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("trip `{trip_id}` not found")))?;
    if !trip.stops.iter().any(|s| s.id == stop_id) {
        return Err(ApiError::NotFound(format!(
            "stop `{stop_id}` not found in trip `{trip_id}`"
        )));
    }
    Ok(())
}

/// `GET /v1/trips/{trip_id}/stops/{stop_id}/links` (admin): the stop's links without tokens,
/// newest first: `{"links":[{"id","created_at","expires_at","revoked_at"}]}`.
#[utoipa::path(get, path = "/v1/trips/{trip_id}/stops/{stop_id}/links", operation_id = "list_tracking_links", tag = "links", params(("trip_id" = String, Path), ("stop_id" = String, Path)), security(("bearer" = [])), responses((status = 200, description = "`{\"links\":[…]}` without tokens", body = Object), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Path((trip_id, stop_id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    stop_exists(&app, &caller, &trip_id, &stop_id).await?;
    let links = app
        .hub
        .store
        .links_of_stop(&caller.0.fleet, &trip_id, &stop_id)
        .await?;
    let links: Vec<_> = links
        .iter()
        .map(|l| {
            json!({
                "id": l.id,
                "created_at": format_ts(l.created_at),
                "expires_at": format_ts(l.expires_at),
                "revoked_at": l.revoked_at.map(format_ts),
            })
        })
        .collect();
    Ok(Json(json!({ "links": links })))
}

/// `DELETE /v1/trips/{trip_id}/stops/{stop_id}/links/{link_id}` (admin): revokes a link now →
/// 204; its page answers 410 from then on. 404 when the stop has no such live link.
#[utoipa::path(delete, path = "/v1/trips/{trip_id}/stops/{stop_id}/links/{link_id}", operation_id = "revoke_tracking_link", tag = "links", params(("trip_id" = String, Path), ("stop_id" = String, Path), ("link_id" = String, Path)), security(("bearer" = [])), responses((status = 204, description = "Revoked"), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    Path((trip_id, stop_id, link_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin])?;
    let revoked = app
        .hub
        .store
        .revoke_link(&caller.0.fleet, &trip_id, &stop_id, &link_id, now_ms())
        .await?;
    if !revoked {
        return Err(ApiError::NotFound(format!(
            "no live link `{link_id}` on stop `{stop_id}` of trip `{trip_id}`"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
