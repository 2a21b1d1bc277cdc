//! `GET /v1/events`: the durable event log of the caller's fleet, in id order, from a cursor.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError};
use crate::extract::ApiQuery;
use crate::protocol::EventView;
use crate::state::AppState;
use crate::store::events::{EventQuery, MAX_EVENTS_PER_READ};
use crate::stream::query::{check_retained, parse_drivers, parse_types};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsParams {
    since: Option<i64>,
    limit: Option<i64>,
    types: Option<String>,
    drivers: Option<String>,
    /// `asc` (default: the oldest after `since` first, for consumers that page through the
    /// log) or `desc` (the newest first, for a feed that shows the latest; `next_since` is then
    /// the log's head, where a stream resumes live).
    order: Option<String>,
}

/// `GET /v1/events?since=ID&limit=N&types=a,b&drivers=x,y&order=asc|desc` (admin, service) →
/// `{"events":[{"id","type","ts",…}],"next_since":N}`: events with `id > since` (default 0) in id
/// order, at most `limit` (default 100, at most 1,000). Resume with `next_since`: the last id
/// received, or past the events the filters skipped when the page is not full. 410 when `since`
/// is older than retention kept (events after it were deleted): start again from the `detail`'s
/// id.
#[utoipa::path(get, path = "/v1/events", operation_id = "list_events", tag = "events", params(EventsParams), security(("bearer" = [])), responses((status = 200, description = "`{\"events\":[Event],\"next_since\":N}`", body = Object), (status = 410, description = "`since` is older than retention kept", body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventsParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Service])?;
    let mut errors = Vec::new();
    let since = q.since.unwrap_or(0);
    if since < 0 {
        errors.push(FieldError::new("since", "must be an event id ≥ 0"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_EVENTS_PER_READ).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be within [1, {MAX_EVENTS_PER_READ}]"),
        ));
    }
    let types = parse_types(q.types.as_deref(), &mut errors);
    let drivers = parse_drivers(q.drivers.as_deref(), &mut errors);
    let newest_first = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            errors.push(FieldError::new("order", "must be `asc` or `desc`"));
            false
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    check_retained(&app, since).await?;
    let types = match types {
        Some(None) => return Ok(Json(json!({ "events": [], "next_since": since }))), // `types=none`
        Some(list) => list,
        None => None,
    };
    let query = EventQuery {
        since,
        limit,
        types,
        drivers,
        newest_first,
    };
    let page = app.hub.store.events(&caller.0.fleet, &query).await?;
    let events: Vec<EventView> = page.events.iter().map(EventView::from).collect();
    Ok(Json(
        json!({ "events": events, "next_since": page.next_since }),
    ))
}
