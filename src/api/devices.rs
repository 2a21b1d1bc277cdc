//! OsmAnd devices: registration over REST, and the `/osmand` endpoint the phones report to.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, FieldError};
use crate::extract::ApiJson;
use crate::hub::{Commit, IngestStatus};
use crate::model::{now_ms, DriverKey, Fix};
use crate::protocol::osmand::{self, Report};
use crate::protocol::time::format_ts;
use crate::state::AppState;
use crate::store::devices::DeviceRecord;
use crate::store::track::WriterStopped;

/// Shortest device key accepted when the admin chooses one (128 bits as hex).
pub const MIN_KEY_LEN: usize = 32;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    id: String,
    driver_id: String,
    /// Chosen key; generated (192 random bits, hex) when absent.
    key: Option<String>,
}

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// `POST /v1/devices` (admin): registers a device of the caller's fleet for a driver. Answers
/// 201 with the key, shown this once (only its SHA-256 is stored); 409 when the id is taken.
#[utoipa::path(post, path = "/v1/devices", operation_id = "create_device", tag = "devices", request_body = DeviceBody, security(("bearer" = [])), responses((status = 201, description = "The device with its key, shown this once", body = Object), (status = 409, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<DeviceBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    caller.require(&[Role::Admin])?;
    let mut errors = Vec::new();
    super::trips::check_id("id", &body.id, &mut errors);
    super::trips::check_id("driver_id", &body.driver_id, &mut errors);
    if body
        .key
        .as_ref()
        .is_some_and(|k| k.len() < MIN_KEY_LEN || k.len() > 256)
    {
        errors.push(FieldError::new(
            "key",
            format!("must be {MIN_KEY_LEN}-256 characters"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let key = body
        .key
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 24]>()));
    let record = DeviceRecord {
        device_id: body.id,
        fleet: caller.0.fleet.clone(),
        driver_id: body.driver_id,
        key_sha256: sha256_hex(&key),
        created_at: now_ms(),
    };
    app.hub.store.insert_device(&record).await?;
    let server_url = format!("{}/osmand/{key}", public_base(&headers));
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.device_id,
            "driver_id": record.driver_id,
            "fleet": record.fleet,
            "key": key,
            "created_at": format_ts(record.created_at),
            "traccar_client": {
                "server_url": server_url,
                "config_link": format!("{server_url}?id={}&{TRACCAR_CLIENT_SETTINGS}", form_urlencoded::byte_serialize(record.device_id.as_bytes()).collect::<String>()),
            },
        })),
    ))
}

/// The settings a configuration link gives Traccar Client (9+: `ConfigurationService.applyUri`
/// reads them from a link or a QR code, and takes the link's origin and path as its server URL,
/// which is why the key travels in the path). Chosen on `trackhub eval-arrival --profile`
/// (BENCHMARKS.md): at its defaults (accuracy `medium`: no GPS speed; a 75 m distance filter;
/// stop detection that pauses the phone while parked) the app's reports check in 67 % of real
/// stops; sending the newest fix every 15 s whatever the distance, with GPS accuracy and stop
/// detection off, behaves like the `every-15s` profile: 99.3 %. Costs battery: a phone in a
/// delivery van is usually charging. `buffer` keeps reports across dead zones.
pub const TRACCAR_CLIENT_SETTINGS: &str =
    "accuracy=high&distance=0&interval=15&fastest_interval=15&stop_detection=false&buffer=true";

/// `scheme://host` as the client reached us: `X-Forwarded-Proto` (behind a TLS proxy) or http,
/// and the `Host` header. A phone must be given an address it can reach: see README § Phones.
pub(super) fn public_base(headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let scheme = header("x-forwarded-proto")
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    let host = header("host").unwrap_or("127.0.0.1:8080");
    format!("{scheme}://{host}")
}

/// Most devices one list returns.
const MAX_LIST: i64 = 10_000;

/// `GET /v1/devices` (admin): the caller's fleet's devices, oldest first, without keys (only
/// their hashes are stored): `{"devices":[{"id","driver_id","created_at"}]}`.
#[utoipa::path(get, path = "/v1/devices", operation_id = "list_devices", tag = "devices", security(("bearer" = [])), responses((status = 200, description = "`{\"devices\":[…]}` without keys", body = Object), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let devices = app.hub.store.devices(&caller.0.fleet, MAX_LIST).await?;
    let list: Vec<serde_json::Value> = devices
        .iter()
        .map(|d| {
            json!({
                "id": d.device_id,
                "driver_id": d.driver_id,
                "created_at": format_ts(d.created_at),
            })
        })
        .collect();
    Ok(Json(json!({ "devices": list })))
}

/// `DELETE /v1/devices/{id}` (admin): revokes a device of the caller's fleet; 204, or 404.
#[utoipa::path(delete, path = "/v1/devices/{id}", operation_id = "delete_device", tag = "devices", params(("id" = String, Path)), security(("bearer" = [])), responses((status = 204), (status = 404, body = crate::error::Problem), (status = 401, description = "No valid token", body = crate::error::Problem), (status = 403, description = "Another role or fleet", body = crate::error::Problem)))]
pub async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin])?;
    if app.hub.store.delete_device(&caller.0.fleet, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("device `{id}`")))
    }
}

/// The device key of a request: `key` in the query string (append `?key=…` to the server URL
/// in the phone app) or `Authorization: Bearer <key>`.
fn key_of(query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    let from_query = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "key")
            .map(|(_, v)| v.into_owned())
    });
    from_query.or_else(|| crate::auth::bearer(headers))
}

fn parse(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<osmand::Request, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parsed = if content_type.starts_with("application/json") {
        osmand::parse_json(body)
    } else {
        // Parameters in the query string and, for a form POST, in the body too.
        let mut pairs: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        if content_type.starts_with("application/x-www-form-urlencoded") {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        osmand::parse_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    };
    parsed.map_err(ApiError::Invalid)
}

/// `GET|POST /osmand`: a registered device reports positions (OsmAnd protocol, see
/// [`crate::protocol::osmand`]). Each report is validated like a socket ping and takes the same pipeline.
/// 200 `{"accepted","late"}`; 401 for an unknown device or a wrong key (the same answer, so ids
/// cannot be probed); 422 with the field errors for an invalid report.
async fn report(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    path_key: Option<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request = parse(query.as_deref(), &headers, &body?)?;
    let refused = || ApiError::Unauthorized("unknown device or wrong key".into());
    let key = path_key
        .or_else(|| key_of(query.as_deref(), &headers))
        .ok_or_else(refused)?;
    let device = app
        .hub
        .store
        .device(&request.device_id)
        .await?
        .ok_or_else(refused)?;
    if !bool::from(
        sha256_hex(&key)
            .as_bytes()
            .ct_eq(device.key_sha256.as_bytes()),
    ) {
        return Err(refused());
    }
    // After the key check, so that nobody else can spend a device's budget.
    if let Err(retry_after) = app.limits.admit_device_request(&request.device_id) {
        crate::metrics::fix_rejected("rate_limited");
        return Err(ApiError::RateLimited {
            message: format!("device `{}` is over its request rate", request.device_id),
            retry_after,
        });
    }
    let now = now_ms();
    let mut fixes = Vec::with_capacity(request.reports.len());
    let mut errors = Vec::new();
    let mut heartbeats = 0;
    let battery = request.reports.iter().rev().find_map(|r| r.battery);
    for (i, r) in request.reports.iter().enumerate() {
        // A heartbeat without coordinates says the phone is alive, not where it is: it answers
        // 200 and never an error, which would make the client resend it forever.
        let Some(fix) = to_fix(r, now) else {
            heartbeats += 1;
            continue;
        };
        match fix.validate(now, app.hub.cfg.max_future_ms) {
            Ok(()) => fixes.push(fix),
            Err(rejection) => {
                crate::metrics::fix_rejected(rejection.code);
                // Named as the client sent it (issue 20: the code used to stand as the field).
                let field = osmand_field(rejection.field);
                errors.push(FieldError::new(
                    if request.reports.len() == 1 {
                        field.to_string()
                    } else {
                        format!("location[{i}].{field}")
                    },
                    format!("{} ({})", rejection.message, rejection.code),
                ))
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    // Refused before anything is taken: the phone keeps its reports and retries (503).
    if let Some(retry_after) = app.hub.pressure() {
        crate::metrics::fix_rejected("unavailable");
        return Err(ApiError::Unavailable {
            message:
                "history storage is behind or unreachable; keep these reports and resend them later"
                    .into(),
            retry_after,
        });
    }
    let who = DriverKey::new(&device.fleet, &device.driver_id);
    app.hub.note_device(&who, battery, heartbeats > 0);
    if fixes.is_empty() {
        return Ok(Json(
            json!({"accepted": 0, "late": 0, "heartbeats": heartbeats}),
        ));
    }
    if let Err(retry_after) = app.limits.admit_fixes(&who, fixes.len()) {
        crate::metrics::fix_rejected("rate_limited");
        return Err(ApiError::RateLimited {
            message: "this driver is over its fix rate; resend these reports later".into(),
            retry_after,
        });
    }
    let (mut accepted, mut late) = (0, 0);
    let draining = |_| ApiError::Unavailable {
        message: "this node is shutting down; resend these reports".into(),
        retry_after: COMMIT_WAIT,
    };
    for fix in fixes {
        match app
            .hub
            .ingest(&who, None, fix)
            .await
            .map_err(draining)?
            .status
        {
            IngestStatus::Accepted => accepted += 1,
            _ => late += 1,
        }
    }
    // 200 means committed: the phone deletes the report from its queue on it.
    match app.hub.committed(COMMIT_WAIT).await {
        Commit::Done => {}
        Commit::Stopped => return Err(draining(WriterStopped)),
        Commit::NotYet(retry_after) => {
            crate::metrics::fix_rejected("unavailable");
            return Err(ApiError::Unavailable {
                message: "these reports are not committed yet; resend them later".into(),
                retry_after,
            });
        }
    }
    Ok(Json(
        json!({"accepted": accepted, "late": late, "heartbeats": heartbeats}),
    ))
}

/// `GET|POST /osmand/{key}`: the same with the device key in the path, the server URL a
/// Traccar Client configuration link sets (the app keeps a link's origin and path only).
#[utoipa::path(get, path = "/osmand/{key}", operation_id = "osmand_keyed_report_get", params(("key" = String, Path, description = "The device key")), tag = "devices", description = "OsmAnd protocol (Traccar Client, OsmAnd): parameters in the query or a form body (`id`, `key`, `lat`, `lon`, `timestamp`, `speed` in knots, `bearing`, `accuracy`, …) or Traccar Client 9 JSON. See PROTOCOL.md.", responses((status = 200, description = "Committed: `{\"accepted\",\"late\"}`", body = Object), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem), (status = 429, description = "Over the device's rate; `Retry-After`", body = crate::error::Problem), (status = 503, description = "Storage behind or unreachable; `Retry-After`", body = crate::error::Problem)))]
pub async fn keyed_report_get(
    state: State<AppState>,
    Path(key): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    report(state, query, headers, body, Some(key)).await
}

/// `POST /osmand/{key}`: see [`keyed_report_get`].
#[utoipa::path(post, path = "/osmand/{key}", operation_id = "osmand_keyed_report_post", params(("key" = String, Path, description = "The device key")), tag = "devices", description = "OsmAnd protocol (Traccar Client, OsmAnd): parameters in the query or a form body (`id`, `key`, `lat`, `lon`, `timestamp`, `speed` in knots, `bearing`, `accuracy`, …) or Traccar Client 9 JSON. See PROTOCOL.md.", responses((status = 200, description = "Committed: `{\"accepted\",\"late\"}`", body = Object), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem), (status = 429, description = "Over the device's rate; `Retry-After`", body = crate::error::Problem), (status = 503, description = "Storage behind or unreachable; `Retry-After`", body = crate::error::Problem)))]
pub async fn keyed_report_post(
    state: State<AppState>,
    Path(key): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    report(state, query, headers, body, Some(key)).await
}

/// `GET /osmand`: a report in the query string (Traccar Client ≤ 8, OsmAnd).
#[utoipa::path(get, path = "/osmand", operation_id = "osmand_report_get", tag = "devices", description = "OsmAnd protocol (Traccar Client, OsmAnd): parameters in the query or a form body (`id`, `key`, `lat`, `lon`, `timestamp`, `speed` in knots, `bearing`, `accuracy`, …) or Traccar Client 9 JSON. See PROTOCOL.md.", responses((status = 200, description = "Committed: `{\"accepted\",\"late\",\"heartbeats\"}`", body = Object), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem), (status = 429, description = "Over the device's rate; `Retry-After`", body = crate::error::Problem), (status = 503, description = "Storage behind or unreachable; `Retry-After`", body = crate::error::Problem)))]
pub async fn report_get(
    state: State<AppState>,
    query: RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    report(state, query, headers, body, None).await
}

/// `POST /osmand`: a report in the query, a form body, or Traccar Client 9 JSON.
#[utoipa::path(post, path = "/osmand", operation_id = "osmand_report_post", tag = "devices", description = "OsmAnd protocol (Traccar Client, OsmAnd): parameters in the query or a form body (`id`, `key`, `lat`, `lon`, `timestamp`, `speed` in knots, `bearing`, `accuracy`, …) or Traccar Client 9 JSON. See PROTOCOL.md.", responses((status = 200, description = "Committed: `{\"accepted\",\"late\",\"heartbeats\"}`", body = Object), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem), (status = 429, description = "Over the device's rate; `Retry-After`", body = crate::error::Problem), (status = 503, description = "Storage behind or unreachable; `Retry-After`", body = crate::error::Problem)))]
pub async fn report_post(
    state: State<AppState>,
    query: RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    report(state, query, headers, body, None).await
}

/// Longest an OsmAnd request waits for its reports to be committed before answering 503 (the
/// client keeps the report and resends it; the copy already queued is written, and the resent
/// one is then a duplicate).
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The OsmAnd parameter for a ping field (the JSON form's `coords` use the same meanings).
fn osmand_field(ping_field: &'static str) -> &'static str {
    match ping_field {
        "ts" => "timestamp",
        "accuracy_m" => "accuracy",
        "speed_mps" => "speed",
        "heading_deg" => "bearing",
        other => other,
    }
}

/// A report as a fix, validated by the same rules as socket fixes ([`Fix::validate`]); a report
/// without a time is taken at the server's receive time. `None` for a heartbeat without
/// coordinates.
fn to_fix(r: &Report, now_ms: i64) -> Option<Fix> {
    let (lat, lon) = r.position?;
    Some(Fix {
        ts_ms: r.ts_ms.unwrap_or(now_ms),
        lat,
        lon,
        accuracy_m: r.accuracy_m,
        speed_mps: r.speed_mps,
        heading_deg: r.heading_deg,
        motion: r.motion,
    })
}
