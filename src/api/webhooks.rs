//! Webhook management (admin): subscribe a URL to event types, list, delete, and inspect or
//! redeliver its deliveries (the dead-letter list is `?status=dead`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, ApiQuery};
use crate::model::now_ms;
use crate::model::EVENT_TYPES;
use crate::protocol::time::format_ts;
use crate::state::AppState;
use crate::store::webhooks::{DeliveryRecord, WebhookRecord};
use crate::webhooks::target;

/// Shortest secret accepted, bytes: 128 bits of a random hex or base64 string.
pub const MIN_SECRET: usize = 16;
/// Longest URL and secret accepted.
const MAX_FIELD: usize = 2_048;
/// Most deliveries one list returns.
const MAX_DELIVERIES: i64 = 1_000;

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct NewWebhook {
    url: String,
    events: Vec<String>,
    secret: Option<String>,
}

fn view(w: &WebhookRecord) -> serde_json::Value {
    json!({
        "id": w.id,
        "url": w.url,
        "events": w.events,
        "created_at": format_ts(w.created_at),
    })
}

fn delivery_view(d: &DeliveryRecord) -> serde_json::Value {
    json!({
        "id": d.id,
        "webhook_id": d.webhook_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": (d.status == "pending").then(|| format_ts(d.next_attempt_at)),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "delivered_at": d.delivered_at.map(format_ts),
    })
}

/// `POST /v1/webhooks` `{"url","events":["stop.checked_in",…]|["*"],"secret"?}` → 201 with the
/// webhook. Without `secret` one is generated and returned in this answer only (it signs every
/// delivery: see `webhooks::signature`). 422 for a URL that is not absolute http(s), an unknown
/// event type, or a secret under 16 characters.
#[utoipa::path(post, path = "/v1/webhooks", operation_id = "create_webhook", tag = "webhooks", request_body = NewWebhook, security(("bearer" = [])), responses((status = 201, description = "The webhook (with `secret` when generated)", body = Object), (status = 409, description = "The fleet has 16 webhooks", body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    match reqwest::Url::parse(&body.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if let Err(refused) = target::check_target(&u, app.cfg.webhooks.allow_private).await {
                errors.push(FieldError::new(
                    "url",
                    format!("{refused}: webhooks go to public addresses only"),
                ));
            }
        }
        _ => errors.push(FieldError::new(
            "url",
            "must be an absolute http or https URL",
        )),
    }
    if body.url.len() > MAX_FIELD {
        errors.push(FieldError::new(
            "url",
            format!("at most {MAX_FIELD} characters"),
        ));
    }
    if body.events.is_empty() {
        errors.push(FieldError::new(
            "events",
            "must list event types, or [\"*\"] for all",
        ));
    }
    for (i, e) in body.events.iter().enumerate() {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            errors.push(FieldError::new(
                format!("events[{i}]"),
                format!(
                    "unknown event type `{e}`; known: {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    if let Some(s) = &body.secret {
        if s.len() < MIN_SECRET || s.len() > MAX_FIELD {
            errors.push(FieldError::new(
                "secret",
                format!("must be {MIN_SECRET} to {MAX_FIELD} characters"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let generated = body.secret.is_none();
    let mut events = body.events;
    events.sort();
    events.dedup();
    let record = WebhookRecord {
        id: uuid::Uuid::new_v4().to_string(),
        fleet: caller.0.fleet.clone(),
        url: body.url,
        events,
        secret: body
            .secret
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 32]>())),
        created_at: now_ms(),
    };
    app.hub.store.insert_webhook(&record).await?;
    let mut answer = view(&record);
    if generated {
        answer["secret"] = json!(record.secret);
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /v1/webhooks` → `{"webhooks":[…]}` of the caller's fleet (secrets are not shown).
#[utoipa::path(get, path = "/v1/webhooks", operation_id = "list_webhooks", tag = "webhooks", security(("bearer" = [])), responses((status = 200, description = "`{\"webhooks\":[…]}` without secrets", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let hooks = app.hub.store.webhooks(&caller.0.fleet).await?;
    Ok(Json(
        json!({ "webhooks": hooks.iter().map(view).collect::<Vec<_>>() }),
    ))
}

/// `DELETE /v1/webhooks/{id}` → 204; its pending deliveries are dropped. 404 if unknown.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks", params(("id" = String, Path)), security(("bearer" = [])), responses((status = 204), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin])?;
    if app.hub.store.delete_webhook(&caller.0.fleet, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no webhook `{id}`")))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    status: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/webhooks/{id}/deliveries?status=pending|delivered|dead&limit=` → `{"deliveries":[…]}`,
/// newest first (default limit 100). `status=dead` is the dead-letter list.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks", params(("id" = String, Path), DeliveriesQuery), security(("bearer" = [])), responses((status = 200, description = "`{\"deliveries\":[…]}` newest first", body = Object), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn deliveries(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    if q.status
        .as_deref()
        .is_some_and(|s| !matches!(s, "pending" | "delivered" | "dead"))
    {
        errors.push(FieldError::new(
            "status",
            "must be pending, delivered or dead",
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_DELIVERIES).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be within [1, {MAX_DELIVERIES}]"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let fleet = &caller.0.fleet;
    if app.hub.store.webhook(fleet, &id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no webhook `{id}`")));
    }
    let list = app
        .hub
        .store
        .deliveries(fleet, &id, q.status.as_deref(), limit)
        .await?;
    Ok(Json(
        json!({ "deliveries": list.iter().map(delivery_view).collect::<Vec<_>>() }),
    ))
}

/// `POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver` → 202 with the delivery, queued
/// now with a fresh retry window (from the dead-letter list, or a replay of a delivered one).
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", operation_id = "redeliver_webhook_delivery", tag = "webhooks", params(("id" = String, Path), ("delivery_id" = i64, Path)), security(("bearer" = [])), responses((status = 202, description = "Queued with a fresh 24 h window", body = Object), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn redeliver(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let not_found = || ApiError::NotFound(format!("no delivery {delivery_id} of webhook `{id}`"));
    let number: i64 = delivery_id.parse().map_err(|_| not_found())?;
    let Some(d) = app
        .hub
        .store
        .redeliver(&caller.0.fleet, &id, number, now_ms())
        .await?
    else {
        return Err(not_found());
    };
    // Wake the dispatchers now rather than at their next poll.
    app.hub.feed.nudge();
    Ok((StatusCode::ACCEPTED, Json(delivery_view(&d))))
}
