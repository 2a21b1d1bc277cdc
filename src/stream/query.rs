//! The query both stream transports share: `fleet` (must be the token's), `drivers=a,b`,
//! `bbox=w,s,e,n`, `mode=latest|all|none` (default `latest`), `types=a,b|none` (event types,
//! default every type), `since=ID` (resume the events after this id; for SSE the
//! `Last-Event-ID` header a reconnecting `EventSource` sends wins over it).

use std::time::Duration;

use serde::Deserialize;

use super::producer::{EventFilter, Mode, StreamItem, StreamSettings, StreamSpec};
use crate::auth::Claims;
use crate::error::{ApiError, FieldError};
use crate::fanout::{Combine, Scope};
use crate::geo::BBox;
use crate::model::EVENT_TYPES;
use crate::state::AppState;

/// Most driver ids in one filter.
pub const MAX_FILTER_DRIVERS: usize = 10_000;

/// Query of both stream transports.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    fleet: Option<String>,
    drivers: Option<String>,
    bbox: Option<String>,
    mode: Option<String>,
    types: Option<String>,
    since: Option<i64>,
}

/// A validated stream subscription and the event id a stream without `since` starts after.
pub struct Subscription {
    pub spec: StreamSpec,
    pub start_id: i64,
}

/// Validates a stream query: 403 for another fleet, 422 for bad fields, 410 when `since` (or
/// `last_event_id`, which wins) is older than retention kept.
pub async fn stream_spec(
    app: &AppState,
    claims: &Claims,
    q: StreamParams,
    last_event_id: Option<&str>,
) -> Result<Subscription, ApiError> {
    if q.fleet.as_deref().is_some_and(|f| f != claims.fleet) {
        return Err(ApiError::Forbidden(format!(
            "this token reads fleet `{}` only",
            claims.fleet
        )));
    }
    let mut errors = Vec::new();
    let mode = match q.mode.as_deref().unwrap_or("latest") {
        "latest" => Mode::Latest,
        "all" => Mode::All,
        "none" => Mode::None,
        other => {
            errors.push(FieldError::new(
                "mode",
                format!("`{other}` is not one of latest, all, none"),
            ));
            Mode::None
        }
    };
    let bbox = q.bbox.as_deref().and_then(|text| {
        BBox::parse(text)
            .map_err(|m| errors.push(FieldError::new("bbox", m)))
            .ok()
    });
    let drivers = parse_drivers(q.drivers.as_deref(), &mut errors).unwrap_or_default();
    let types = parse_types(q.types.as_deref(), &mut errors);
    let since = match last_event_id {
        Some(text) => match text.trim().parse::<i64>() {
            Ok(id) if id >= 0 => Some(id),
            _ => {
                errors.push(FieldError::new("Last-Event-ID", "must be an event id ≥ 0"));
                None
            }
        },
        None => q.since,
    };
    if since.is_some_and(|s| s < 0) {
        errors.push(FieldError::new("since", "must be an event id ≥ 0"));
    }
    let events = match types {
        Some(None) => None,
        Some(Some(types)) => Some(EventFilter {
            since,
            types: Some(types),
        }),
        None => Some(EventFilter { since, types: None }),
    };
    if mode == Mode::None && events.is_none() {
        errors.push(FieldError::new(
            "mode",
            "`mode=none` with `types=none` leaves nothing to stream",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let mut start_id = 0;
    if let Some(events) = &events {
        match events.since {
            Some(since) => check_retained(app, since).await?,
            None => start_id = app.hub.store.latest_event_id().await?,
        }
    }
    Ok(Subscription {
        spec: StreamSpec {
            fleet: claims.fleet.as_str().into(),
            filter: Scope {
                bbox,
                drivers: drivers.into_iter().collect(),
                combine: Combine::Intersection,
            },
            mode,
            events,
        },
        start_id,
    })
}

impl Subscription {
    /// Starts the stream's producer; the transport reads the receiver.
    pub fn start(self, app: &AppState) -> tokio::sync::mpsc::Receiver<StreamItem> {
        super::producer::spawn(
            app.hub.clone(),
            settings(app),
            self.spec,
            self.start_id,
            app.shutdown.clone(),
        )
    }
}

/// The runtime settings of streams from the server config.
fn settings(app: &AppState) -> StreamSettings {
    StreamSettings {
        queue: app.cfg.events.stream_queue,
        reread: Duration::from_millis(app.cfg.events.reread_ms),
    }
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
