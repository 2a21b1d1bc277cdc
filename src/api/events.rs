//! `GET /v1/events`: the durable event log of the caller's fleet, in id order, from a cursor.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::ApiQuery;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError};
use crate::model::EVENT_TYPES;
use crate::protocol::EventView;
use crate::state::AppState;
use crate::store::events::{EventQuery, MAX_EVENTS_PER_READ};

/// Most driver ids in one filter.
pub const MAX_FILTER_DRIVERS: usize = 10_000;

#[derive(Deserialize)]
pub(crate) struct EventsParams {
    since: Option<i64>,
    limit: Option<i64>,
    types: Option<String>,
    drivers: Option<String>,
}

/// `GET /v1/events?since=ID&limit=N&types=a,b&drivers=x,y` (admin, service) →
/// `{"events":[{"id","type","ts",…}],"next_since":N}`: events with `id > since` (default 0) in id
/// order, at most `limit` (default 100, at most 1,000). Resume with `next_since`: the last id
/// received, or past the events the filters skipped when the page is not full. 410 when `since`
/// is older than retention kept (events after it were deleted): start again from the `detail`'s
/// id.
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
    };
    let page = app.hub.store.events(&caller.0.fleet, &query).await?;
    let events: Vec<EventView> = page.events.iter().map(EventView::from).collect();
    Ok(Json(
        json!({ "events": events, "next_since": page.next_since }),
    ))
}

/// 410 when events after `since` may have been deleted by retention.
pub(crate) async fn check_retained(app: &AppState, since: i64) -> Result<(), ApiError> {
    let pruned = app.hub.store.pruned_through().await?;
    if since < pruned {
        return Err(ApiError::Gone(format!(
            "events up to id {pruned} were deleted by retention; resume from since={pruned} \
             knowing that events before it are lost"
        )));
    }
    Ok(())
}

/// `types=a,b`: `None` absent (every type), `Some(None)` for `none` (no events), else the list.
pub(crate) fn parse_types(
    text: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<Option<Vec<String>>> {
    let text = text?;
    if text.trim() == "none" {
        return Some(None);
    }
    let types = split_list(text);
    for t in &types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            errors.push(FieldError::new(
                "types",
                format!(
                    "unknown event type `{t}`; known: {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    if types.is_empty() {
        errors.push(FieldError::new(
            "types",
            "must name at least one event type, or `none`",
        ));
    }
    Some(Some(types))
}

/// `drivers=a,b`: the listed driver ids, `None` when absent.
pub(crate) fn parse_drivers(
    text: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<String>> {
    let drivers = split_list(text?);
    if drivers.is_empty() || drivers.len() > MAX_FILTER_DRIVERS {
        errors.push(FieldError::new(
            "drivers",
            format!("must list 1 to {MAX_FILTER_DRIVERS} driver ids, comma-separated"),
        ));
    }
    Some(drivers)
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}
