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
//! Negative speed or heading means "unknown" (the SDK sends -1). Altitude and battery are read
//! past: the hub has no use for them yet.

use serde::Deserialize;

/// A parameter or JSON field of a request that cannot be read: `field` as the client named it
/// (`lat`, `timestamp`, `location[2].timestamp`, …). The HTTP edge answers them as a 422.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// 1 knot in m/s (exactly 1852 m per hour).
pub const MPS_PER_KNOT: f64 = 1852.0 / 3600.0;

/// One position report of a device, before validation. Times unix ms UTC; degrees; m; m/s.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `None` when the request gave no time: the server's receive time is used.
    pub ts_ms: Option<i64>,
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: Option<f64>,
    pub speed_mps: Option<f64>,
    pub heading_deg: Option<f64>,
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

/// Parses the parameter form (`application/x-www-form-urlencoded` pairs from the query string
/// and/or the body). Unknown parameters are ignored, as Traccar does. Every bad field is listed.
pub fn parse_params<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Request, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut device_id = None;
    let (mut lat, mut lon, mut ts_ms, mut accuracy, mut speed_kn, mut bearing) =
        (None, None, None, None, None, None);
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
            "speed" => speed_kn = number(key, value, &mut errors),
            "bearing" | "heading" => bearing = number(key, value, &mut errors),
            "valid" => valid = !matches!(value, "false" | "0"),
            _ => {}
        }
    }
    let device_id = device_id.filter(|d| !d.is_empty());
    if device_id.is_none() {
        errors.push(FieldError::new("id", "the device id is required"));
    }
    if lat.is_none()
        && !errors
            .iter()
            .any(|e| e.field == "lat" || e.field == "location")
    {
        errors.push(FieldError::new("lat", "required"));
    }
    if lon.is_none()
        && !errors
            .iter()
            .any(|e| e.field == "lon" || e.field == "location")
    {
        errors.push(FieldError::new("lon", "required"));
    }
    if !valid {
        errors.push(FieldError::new(
            "valid",
            "the device marked this fix invalid",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Request {
        device_id: device_id.unwrap_or_default(),
        reports: vec![Report {
            ts_ms,
            lat: lat.unwrap_or_default(),
            lon: lon.unwrap_or_default(),
            accuracy_m: known(accuracy),
            speed_mps: known(speed_kn).map(|kn| kn * MPS_PER_KNOT),
            heading_deg: heading(bearing),
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
    coords: JsonCoords,
}

#[derive(Deserialize)]
struct JsonCoords {
    latitude: f64,
    longitude: f64,
    accuracy: Option<f64>,
    speed: Option<f64>,
    heading: Option<f64>,
}

/// Parses the JSON form. The device id may be a string or a number.
pub fn parse_json(body: &[u8]) -> Result<Request, Vec<FieldError>> {
    let req: JsonRequest =
        serde_json::from_slice(body).map_err(|e| vec![FieldError::new("body", e.to_string())])?;
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
        reports.push(Report {
            ts_ms,
            lat: l.coords.latitude,
            lon: l.coords.longitude,
            accuracy_m: known(l.coords.accuracy),
            speed_mps: known(l.coords.speed),
            heading_deg: heading(l.coords.heading),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Request { device_id, reports })
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
        let body =
            br#"{"location":{"timestamp":"2025-11-21T10:00:00.000Z","coords":{"latitude":41.15,
            "longitude":-8.61,"accuracy":5,"speed":-1,"heading":-1,"altitude":80},"is_moving":false,
            "odometer":0,"event":"motionchange","battery":{"level":0.87,"is_charging":false},
            "activity":{"type":"still"},"extras":{}},"device_id":"48241179"}"#;
        let r = parse_json(body).unwrap();
        assert_eq!(r.device_id, "48241179");
        assert_eq!(r.reports[0].ts_ms, Some(1_763_719_200_000));
        assert_eq!(
            (r.reports[0].speed_mps, r.reports[0].heading_deg),
            (None, None)
        );
        assert!(parse_json(
            br#"{"device_id":"", "location":{"coords":{"latitude":1,"longitude":2}}}"#
        )
        .is_err());
    }
}
