//! The OsmAnd protocol: how the Traccar Client and OsmAnd phone apps report positions over HTTP
//! (<https://www.traccar.org/osmand/>). Two forms, both parsed here into plain reports:
//!
//! - parameters, in the query string or a form body, as Traccar Client ≤ 8 sends them:
//!   `POST /osmand?id=…&timestamp=<unix s>&lat=…&lon=…&speed=<knots>&bearing=…&altitude=…&accuracy=…&batt=…`
//!   (`deviceid` for `id`, `heading` for `bearing`, `location=lat,lon` for `lat`/`lon`);
//! - JSON, as Traccar Client ≥ 9 sends it (its location SDK's native form):
//!   `{"device_id":…,"location":{"timestamp":"<ISO 8601>","coords":{"latitude","longitude",
//!   "accuracy","speed"(m/s),"heading","altitude"},"battery":{…},…}}`, `location` also a list.
//!
//! Units follow Traccar's decoder: parameter speed in knots, JSON speed in m/s; a timestamp is
//! unix seconds (below 2^31), unix milliseconds, or ISO 8601 / `yyyy-MM-dd HH:mm:ss` UTC.
//! Negative speed or heading means "unknown" (the SDK sends -1). Altitude is read past.
//!
//! What each client adds, from its source:
//! - Traccar Client 9 (transistorsoft SDK, `lib/preferences.dart` `_locationTemplate`):
//!   `is_moving`, `event` (`motionchange`, `heartbeat`, …), `activity.type` (`still`,
//!   `in_vehicle`, `on_foot`, …), `battery.level` (0-1) and `battery.is_charging`, `extras`;
//!   a heartbeat may be flagged `"heartbeat": true`.
//! - Traccar Client 10 (traccar-client-sdk, `HttpUploader.kt`): the parameter form again, with
//!   `batt` (%) and `charge`, speed in knots; with `uploadJson`, a JSON *array* of the same
//!   flat objects. While paused (stationary) it sends heartbeats, with the last location or,
//!   when it has none, with no `lat`/`lon` at all (`TrackerEngine.applyHeartbeatTick`).
//! - OsmAnd (`LiveMonitoringHelper`/`LiveSender`): `lat`, `lon`, `timestamp` (ms), `hdop`,
//!   `altitude`, `speed`, `bearing`, ... Its `hdop` slot carries Android's
//!   `Location.getAccuracy()`, metres at 68 % confidence, not a dilution of precision: so it is
//!   read as the accuracy in metres (factor 1), and its `speed` is `Location.getSpeed()` in m/s
//!   (Traccar's decoder reads it as knots; a request with `hdop` and no `accuracy` is OsmAnd's).

use serde::Deserialize;

use crate::model::{Battery, Motion};

pub use super::FieldError;

/// 1 knot in m/s (exactly 1852 m per hour).
pub const MPS_PER_KNOT: f64 = 1852.0 / 3600.0;

/// One report of a device, before validation. Times unix ms UTC; degrees; m; m/s.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// `None` when the request gave no time: the server's receive time is used.
    pub ts_ms: Option<i64>,
    /// `(lat, lon)`; `None` for a heartbeat without coordinates (Traccar Client 10 sends one
    /// while it is paused, stationary): it says the phone is alive, not where it is.
    pub position: Option<(f64, f64)>,
    pub accuracy_m: Option<f64>,
    pub speed_mps: Option<f64>,
    pub heading_deg: Option<f64>,
    /// The phone's motion state: `is_moving`, else `activity.type` (Traccar Client 9).
    pub motion: Option<Motion>,
    /// What made the phone send it: `motionchange`, `heartbeat`, `geofence`, … (Traccar Client
    /// 9's `event`; `heartbeat` too for a report flagged `"heartbeat": true`).
    pub event: Option<String>,
    /// Battery level in [0, 1] and whether it charges, when sent.
    pub battery: Option<Battery>,
}

/// A parsed request: the device id and its reports (one for the parameter form, one or more
/// for JSON), oldest first as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub device_id: String,
    pub reports: Vec<Report>,
}

/// Most reports accepted in one JSON request.
pub const MAX_REPORTS: usize = 1_000;

/// Parses a timestamp: unix seconds (< 2^31), unix ms, RFC 3339, or `yyyy-MM-dd HH:mm:ss` (UTC).
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        // Checked: `n * 1000` of a huge negative number overflowed (a panic in debug builds).
        return match n < i64::from(i32::MAX) {
            true => n
                .checked_mul(1000)
                .ok_or_else(|| format!("`{text}` is out of range")),
            false => Ok(n),
        };
    }
    if let Ok(f) = text.parse::<f64>() {
        if f.is_finite() && f > 0.0 && f < 1e13 {
            return Ok(if f < f64::from(i32::MAX) {
                (f * 1000.0) as i64
            } else {
                f as i64
            });
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc().timestamp_millis())
        .map_err(|_| format!("`{text}` is not unix seconds, unix ms or ISO 8601"))
}

/// "unknown" for a negative (or non-finite) speed or heading, as the phone SDKs send it.
fn known(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite() && *x >= 0.0)
}

/// Heading in [0, 360): some devices send 360 for north.
fn heading(v: Option<f64>) -> Option<f64> {
    known(v).map(|h| h.rem_euclid(360.0))
}

/// `true`/`false`/`1`/`0` as a boolean.
fn boolean(value: &str) -> Option<bool> {
    match value.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Motion from the phone's activity recognition (transistorsoft `activity.type`): `still` is
/// still, a travelling activity is moving, `unknown`/`tilting` say nothing.
fn motion_of_activity(activity: &str) -> Option<Motion> {
    match activity {
        "still" => Some(Motion::Still),
        "in_vehicle" | "on_bicycle" | "on_foot" | "walking" | "running" => Some(Motion::Moving),
        _ => None,
    }
}

fn motion_of(is_moving: Option<bool>) -> Option<Motion> {
    is_moving.map(|m| if m { Motion::Moving } else { Motion::Still })
}

/// Parses the parameter form (`application/x-www-form-urlencoded` pairs from the query string
/// and/or the body). Unknown parameters are ignored, as Traccar does. Every bad field is listed.
/// No `lat` and no `lon` is a heartbeat ([`Report::position`] `None`), not an error.
pub fn parse_params<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Request, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut device_id = None;
    let (mut lat, mut lon, mut ts_ms, mut accuracy, mut speed, mut bearing) =
        (None, None, None, None, None, None);
    let (mut hdop, mut batt, mut charge, mut is_moving, mut event) = (None, None, None, None, None);
    let number = |name: &str, value: &str, errors: &mut Vec<FieldError>| -> Option<f64> {
        match value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                errors.push(FieldError::new(name, format!("`{value}` is not a number")));
                None
            }
        }
    };
    let mut valid = true;
    for (key, value) in pairs {
        match key {
            "id" | "deviceid" => device_id = Some(value.to_string()),
            "lat" => lat = number(key, value, &mut errors),
            "lon" => lon = number(key, value, &mut errors),
            "location" => match value.split_once(',') {
                Some((a, b)) => {
                    lat = number("location", a, &mut errors);
                    lon = number("location", b, &mut errors);
                }
                None => errors.push(FieldError::new("location", "must be `lat,lon`")),
            },
            "timestamp" => match parse_timestamp(value) {
                Ok(t) => ts_ms = Some(t),
                Err(m) => errors.push(FieldError::new("timestamp", m)),
            },
            "accuracy" => accuracy = number(key, value, &mut errors),
            "hdop" => hdop = number(key, value, &mut errors),
            "speed" => speed = number(key, value, &mut errors),
            "bearing" | "heading" => bearing = number(key, value, &mut errors),
            "batt" => batt = number(key, value, &mut errors),
            "charge" => charge = boolean(value),
            "is_moving" | "motion" => is_moving = boolean(value),
            "event" => event = Some(value.to_string()).filter(|e| !e.is_empty()),
            "valid" => valid = !matches!(value, "false" | "0"),
            _ => {}
        }
    }
    let device_id = device_id.filter(|d| !d.is_empty());
    if device_id.is_none() {
        errors.push(FieldError::new("id", "the device id is required"));
    }
    let named = |errors: &[FieldError], f: &str| {
        errors.iter().any(|e| e.field == f || e.field == "location")
    };
    // Both absent: a heartbeat. One of them absent: a broken report.
    let heartbeat =
        lat.is_none() && lon.is_none() && !named(&errors, "lat") && !named(&errors, "lon");
    if !heartbeat {
        if lat.is_none() && !named(&errors, "lat") {
            errors.push(FieldError::new("lat", "required with lon"));
        }
        if lon.is_none() && !named(&errors, "lon") {
            errors.push(FieldError::new("lon", "required with lat"));
        }
    }
    if !valid && !heartbeat {
        errors.push(FieldError::new(
            "valid",
            "the device marked this fix invalid",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // OsmAnd sends `hdop` (its accuracy, m) and speed in m/s; Traccar Client sends `accuracy`
    // and speed in knots (see the module docs).
    let osmand = hdop.is_some() && accuracy.is_none();
    Ok(Request {
        device_id: device_id.unwrap_or_default(),
        reports: vec![Report {
            ts_ms,
            position: lat.zip(lon),
            accuracy_m: known(accuracy.or(hdop)),
            speed_mps: known(speed).map(|v| if osmand { v } else { v * MPS_PER_KNOT }),
            heading_deg: heading(bearing),
            motion: motion_of(is_moving),
            event: event.or_else(|| heartbeat.then(|| "heartbeat".to_string())),
            battery: known(batt).map(|pct| Battery {
                level: (pct / 100.0).clamp(0.0, 1.0),
                charging: charge,
            }),
        }],
    })
}

#[derive(Deserialize)]
struct JsonRequest {
    device_id: serde_json::Value,
    location: OneOrMany,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Box<JsonLocation>),
    Many(Vec<JsonLocation>),
}

#[derive(Deserialize)]
struct JsonLocation {
    timestamp: Option<String>,
    coords: Option<JsonCoords>,
    is_moving: Option<bool>,
    event: Option<String>,
    activity: Option<JsonActivity>,
    battery: Option<JsonBattery>,
    #[serde(default)]
    heartbeat: bool,
}

#[derive(Deserialize)]
struct JsonCoords {
    latitude: f64,
    longitude: f64,
    accuracy: Option<f64>,
    speed: Option<f64>,
    heading: Option<f64>,
}

#[derive(Deserialize)]
struct JsonActivity {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct JsonBattery {
    level: Option<f64>,
    is_charging: Option<bool>,
}

/// Parses a JSON body: Traccar Client 9's `{"device_id", "location": {…} | [{…}]}`, or Traccar
/// Client 10's array of flat parameter objects (`[{"id","lat","lon","timestamp",…}]`, read as
/// [`parse_params`] reads each). The device id may be a string or a number.
pub fn parse_json(body: &[u8]) -> Result<Request, Vec<FieldError>> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| vec![FieldError::new("body", e.to_string())])?;
    if let serde_json::Value::Array(items) = value {
        return parse_flat_array(items);
    }
    let req: JsonRequest =
        serde_json::from_value(value).map_err(|e| vec![FieldError::new("body", e.to_string())])?;
    let device_id = match req.device_id {
        serde_json::Value::String(s) if !s.is_empty() => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return Err(vec![FieldError::new(
                "device_id",
                "must be a non-empty string",
            )])
        }
    };
    let locations = match req.location {
        OneOrMany::One(l) => vec![*l],
        OneOrMany::Many(v) => v,
    };
    if locations.is_empty() || locations.len() > MAX_REPORTS {
        return Err(vec![FieldError::new(
            "location",
            format!("must hold 1 to {MAX_REPORTS} locations"),
        )]);
    }
    let mut errors = Vec::new();
    let mut reports = Vec::with_capacity(locations.len());
    for (i, l) in locations.into_iter().enumerate() {
        let ts_ms = match l.timestamp.as_deref().map(parse_timestamp) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(m)) => {
                errors.push(FieldError::new(format!("location[{i}].timestamp"), m));
                None
            }
        };
        let coords = l.coords.as_ref();
        let motion = motion_of(l.is_moving).or_else(|| {
            l.activity
                .as_ref()
                .and_then(|a| a.kind.as_deref())
                .and_then(motion_of_activity)
        });
        let event = l
            .event
            .filter(|e| !e.is_empty())
            .or_else(|| (l.heartbeat || coords.is_none()).then(|| "heartbeat".to_string()));
        reports.push(Report {
            ts_ms,
            position: coords.map(|c| (c.latitude, c.longitude)),
            accuracy_m: known(coords.and_then(|c| c.accuracy)),
            speed_mps: known(coords.and_then(|c| c.speed)),
            heading_deg: heading(coords.and_then(|c| c.heading)),
            motion,
            event,
            battery: l.battery.and_then(|b| {
                known(b.level).map(|level| Battery {
                    level: level.clamp(0.0, 1.0),
                    charging: b.is_charging,
                })
            }),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Request { device_id, reports })
}

/// Traccar Client 10's JSON upload: an array of flat objects with the parameter form's names.
fn parse_flat_array(items: Vec<serde_json::Value>) -> Result<Request, Vec<FieldError>> {
    if items.is_empty() || items.len() > MAX_REPORTS {
        return Err(vec![FieldError::new(
            "body",
            format!("must hold 1 to {MAX_REPORTS} reports"),
        )]);
    }
    let mut device_id: Option<String> = None;
    let mut reports = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let serde_json::Value::Object(fields) = item else {
            errors.push(FieldError::new(format!("[{i}]"), "must be an object"));
            continue;
        };
        let pairs: Vec<(String, String)> = fields
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                serde_json::Value::Number(n) => Some((k, n.to_string())),
                serde_json::Value::Bool(b) => Some((k, b.to_string())),
                _ => None,
            })
            .collect();
        match parse_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(mut r) => {
                match &device_id {
                    None => device_id = Some(r.device_id),
                    Some(d) if *d != r.device_id => errors.push(FieldError::new(
                        format!("[{i}].id"),
                        "every report of one request must be of one device",
                    )),
                    Some(_) => {}
                }
                reports.append(&mut r.reports);
            }
            Err(e) => errors.extend(
                e.into_iter()
                    .map(|e| FieldError::new(format!("[{i}].{}", e.field), e.message)),
            ),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Request {
        device_id: device_id.unwrap_or_default(),
        reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Result<Request, Vec<FieldError>> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        parse_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    #[test]
    fn traccar_client_parameters() {
        // Exactly what Traccar Client for Android (≤ 8) appends to the server URL.
        let r = params(
            "id=48241179&timestamp=1763719200&lat=41.15&lon=-8.61&speed=10.0&bearing=360.0\
             &altitude=80.5&accuracy=12.0&batt=87.0&charge=true",
        )
        .unwrap();
        assert_eq!(r.device_id, "48241179");
        let rep = &r.reports[0];
        assert_eq!(rep.ts_ms, Some(1_763_719_200_000));
        assert!((rep.speed_mps.unwrap() - 5.144).abs() < 1e-3, "10 kn");
        assert_eq!(rep.heading_deg, Some(0.0));
        assert_eq!(rep.accuracy_m, Some(12.0));
        let errs = params("lat=x&timestamp=yesterday").unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["lat", "timestamp", "id", "lon"]);
    }

    #[test]
    fn timestamps_out_of_range_are_errors_not_overflows() {
        assert!(parse_timestamp("-9223372036854775808").is_err());
        assert!(parse_timestamp("-9223372036854776").is_err());
        assert_eq!(parse_timestamp("-1"), Ok(-1_000));
    }

    #[test]
    fn timestamps_in_every_form() {
        assert_eq!(parse_timestamp("1763719200").unwrap(), 1_763_719_200_000);
        assert_eq!(parse_timestamp("1763719200123").unwrap(), 1_763_719_200_123);
        assert_eq!(
            parse_timestamp("2025-11-21T10:00:00.123Z").unwrap(),
            1_763_719_200_123
        );
        assert_eq!(
            parse_timestamp("2025-11-21 10:00:00").unwrap(),
            1_763_719_200_000
        );
        assert!(parse_timestamp("soon").is_err());
    }

    #[test]
    fn traccar_client_json() {
        // Traccar Client 9's template (lib/preferences.dart), a stationary motionchange.
        let body =
            br#"{"location":{"timestamp":"2025-11-21T10:00:00.000Z","coords":{"latitude":41.15,
            "longitude":-8.61,"accuracy":5,"speed":-1,"heading":-1,"altitude":80},"is_moving":false,
            "odometer":0,"event":"motionchange","battery":{"level":0.87,"is_charging":false},
            "activity":{"type":"still"},"extras":{}},"device_id":"48241179"}"#;
        let r = parse_json(body).unwrap();
        assert_eq!(r.device_id, "48241179");
        let rep = &r.reports[0];
        assert_eq!(rep.ts_ms, Some(1_763_719_200_000));
        assert_eq!((rep.speed_mps, rep.heading_deg), (None, None));
        assert_eq!(rep.position, Some((41.15, -8.61)));
        assert_eq!(rep.motion, Some(Motion::Still));
        assert_eq!(rep.event.as_deref(), Some("motionchange"));
        assert_eq!(
            rep.battery,
            Some(Battery {
                level: 0.87,
                charging: Some(false)
            })
        );
        assert!(parse_json(
            br#"{"device_id":"", "location":{"coords":{"latitude":1,"longitude":2}}}"#
        )
        .is_err());
        // Moving by activity alone; a heartbeat without coords has no position.
        let r = parse_json(
            br#"{"device_id":7,"location":[{"coords":{"latitude":1,"longitude":2},"activity":{"type":"in_vehicle"}},
            {"timestamp":"2025-11-21T10:00:00Z","heartbeat":true}]}"#,
        )
        .unwrap();
        assert_eq!(r.device_id, "7");
        assert_eq!(r.reports[0].motion, Some(Motion::Moving));
        assert_eq!(r.reports[1].position, None);
        assert_eq!(r.reports[1].event.as_deref(), Some("heartbeat"));
    }

    #[test]
    fn traccar_client_10_forms_arrays_and_heartbeats() {
        // HttpUploader.kt's form: speed in knots, battery in %.
        let r = params(
            "id=48241179&lat=41.15&lon=-8.61&timestamp=1763719200&accuracy=12.0&altitude=80.0\
             &speed=1.94&bearing=90.0&batt=41&charge=true",
        )
        .unwrap();
        let rep = &r.reports[0];
        assert!((rep.speed_mps.unwrap() - 0.998).abs() < 1e-3);
        assert_eq!(
            rep.battery,
            Some(Battery {
                level: 0.41,
                charging: Some(true)
            })
        );
        // A heartbeat with no location: no position, no error.
        let hb = params("id=48241179&timestamp=1763719200&batt=40&charge=false").unwrap();
        assert_eq!(hb.reports[0].position, None);
        assert_eq!(hb.reports[0].event.as_deref(), Some("heartbeat"));
        // Half a position is an error.
        let errs = params("id=1&lat=41.15&timestamp=1763719200").unwrap_err();
        assert_eq!(errs[0].field, "lon");
        // uploadJson: an array of the same flat objects.
        let r = parse_json(
            br#"[{"id":"48241179","lat":41.15,"lon":-8.61,"timestamp":1763719200,"speed":1.94},
                 {"id":"48241179","timestamp":1763719260,"batt":40}]"#,
        )
        .unwrap();
        assert_eq!(r.device_id, "48241179");
        assert_eq!(r.reports.len(), 2);
        assert_eq!(r.reports[1].position, None);
        let mixed =
            parse_json(br#"[{"id":"a","lat":1,"lon":2},{"id":"b","lat":1,"lon":2}]"#).unwrap_err();
        assert_eq!(mixed[0].field, "[1].id");
    }

    #[test]
    fn osmand_hdop_is_its_accuracy_and_its_speed_is_metres_per_second() {
        // LiveSender's template: lat={0}&lon={1}&timestamp={2}&hdop={3}&altitude={4}&speed={5}
        // &bearing={6}, with Location.getAccuracy() in the hdop slot and getSpeed() in m/s.
        let r = params(
            "id=dev&lat=41.15&lon=-8.61&timestamp=1763719200123&hdop=6.5&altitude=80.0\
             &speed=12.5&bearing=90.0",
        )
        .unwrap();
        let rep = &r.reports[0];
        assert_eq!(rep.accuracy_m, Some(6.5));
        assert_eq!(rep.speed_mps, Some(12.5));
        assert_eq!(rep.ts_ms, Some(1_763_719_200_123));
    }
}
