//! `GET /v1/fleet/drivers`: every driver of the caller's fleet with what a dispatcher's drivers
//! panel shows (issue 19): status, position, battery, trip progress, next stop and its ETA.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::geo::BBox;
use crate::model::{now_ms, DriverKey, LivePosition, StopStatus};
use crate::protocol::time::format_ts;
use crate::protocol::PositionView;
use crate::state::AppState;
use crate::store::TripRecord;

/// Most active trips and devices read for one answer; a larger fleet's panel lists its online
/// drivers and the first this many of the others.
const MAX_LISTED: i64 = 10_000;
/// Drivers seen (a presence event) this recently are listed without a trip or device, ms (24 h: a
/// dispatcher's day).
const OFFLINE_LISTED_MS: i64 = 86_400_000;
/// Most offline drivers whose last stored fix is looked up (one indexed read each).
const MAX_LAST_FIX_LOOKUPS: usize = 1_000;

/// One row of the drivers panel.
#[derive(Serialize)]
struct DriverRow {
    driver_id: String,
    /// `moving` (online, no stop in progress), `stopped` (an automatic stop is open), or
    /// `offline` (silent past the presence timeout).
    status: &'static str,
    /// Since when: the stop's start (`stopped`), or the last stored fix (`offline`), RFC 3339
    /// UTC; absent for `moving` and for offline drivers with no stored fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    /// The live position (online), or the last stored fix (offline), with `next_stop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<PositionView>,
    /// The driver's oldest active trip: `{"id","done","total","next_stop":{"id","name","eta"}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    trip: Option<serde_json::Value>,
    /// Active trips beyond the first.
    more_trips: usize,
}

/// `{"id","done","total","next_stop"}` of a trip: stops checked in (or departed) of all, and
/// the first pending stop with its ETA (RFC 3339 UTC) and `late` flag.
fn progress(trip: &TripRecord) -> serde_json::Value {
    let done = trip
        .stops
        .iter()
        .filter(|s| s.status != StopStatus::Pending)
        .count();
    let next = trip.stops.iter().find(|s| s.status == StopStatus::Pending);
    json!({
        "id": trip.id,
        "done": done,
        "total": trip.stops.len(),
        "next_stop": next.map(|s| json!({
            "id": s.id,
            "name": s.name,
            "eta": s.eta.map(format_ts),
            "late": s.late,
        })),
    })
}

/// `GET /v1/fleet/drivers` (admin, service) → `{"drivers":[…]}` sorted by id: every driver the
/// fleet knows of (online anywhere in the cluster, with an active trip, with a registered
/// device, or online or offline in the last 24 h). Online positions come from the live index
/// (every node's drivers); battery is known for drivers this node serves whose app reports it.
#[utoipa::path(get, path = "/v1/fleet/drivers", operation_id = "list_fleet_drivers", tag = "drivers", security(("bearer" = [])), responses((status = 200, description = "`{\"drivers\":[{driver_id, status: moving|stopped|offline, since?, position?, trip?, more_trips}]}`", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn drivers(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Service])?;
    let fleet = caller.0.fleet.as_str();
    let world = BBox::new(-180.0, -90.0, 180.0, 90.0).expect("whole world is valid");
    let online: HashMap<String, PositionView> = app
        .hub
        .in_bbox(fleet, &world)
        .iter()
        .map(|p| (p.driver_id.to_string(), PositionView::from(p)))
        .collect();
    let store = &app.hub.store;
    let stopped = store.open_stop_segments(fleet).await?;
    let mut trips: BTreeMap<String, Vec<TripRecord>> = BTreeMap::new();
    // Newest first from the store: reversed, so each driver's oldest active trip comes first.
    for trip in store
        .trips(fleet, Some("active"), MAX_LISTED)
        .await?
        .into_iter()
        .rev()
    {
        trips.entry(trip.driver_id.clone()).or_default().push(trip);
    }
    let mut ids: Vec<String> = online.keys().cloned().collect();
    ids.extend(trips.keys().cloned());
    ids.extend(
        store
            .devices(fleet, MAX_LISTED)
            .await?
            .into_iter()
            .map(|d| d.driver_id),
    );
    let offline: HashMap<String, i64> = store
        .recently_present(fleet, now_ms() - OFFLINE_LISTED_MS, MAX_LISTED)
        .await?
        .into_iter()
        .collect();
    ids.extend(offline.keys().cloned());
    ids.sort_unstable();
    ids.dedup();

    let mut rows = Vec::with_capacity(ids.len());
    let mut lookups = 0;
    for id in ids {
        let who = DriverKey::new(fleet, &id);
        let (status, since, position) = match online.get(&id) {
            Some(p) => {
                let position = PositionView {
                    battery: app.hub.battery(&who).map(Into::into),
                    ..p.clone()
                };
                match stopped.get(&id) {
                    Some(&since) => ("stopped", Some(format_ts(since)), Some(position)),
                    None => ("moving", None, Some(position)),
                }
            }
            None if lookups < MAX_LAST_FIX_LOOKUPS => {
                lookups += 1;
                let last = store.recent_track(fleet, &id, 1).await?.pop();
                // The wire view of a stored fix is that of a live one without a next stop.
                let position = last.map(|fix| PositionView {
                    battery: app.hub.battery(&who).map(Into::into),
                    ..PositionView::from(&LivePosition {
                        driver_id: id.as_str().into(),
                        fix,
                        received_ms: fix.ts_ms,
                        next_stop: None,
                    })
                });
                let since = last.map(|f| f.ts_ms).or_else(|| offline.get(&id).copied());
                ("offline", since.map(format_ts), position)
            }
            None => ("offline", offline.get(&id).copied().map(format_ts), None),
        };
        let of_driver = trips.get(&id);
        rows.push(DriverRow {
            driver_id: id.clone(),
            status,
            since,
            position,
            trip: of_driver.and_then(|t| t.first()).map(progress),
            more_trips: of_driver.map_or(0, |t| t.len().saturating_sub(1)),
        });
    }
    Ok(Json(json!({ "drivers": rows })))
}
