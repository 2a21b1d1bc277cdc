//! The dispatcher's live map for admins, served at `/`: a page, its ES modules and style, Leaflet
//! and Leaflet.markercluster (vendored from npm with their licences in `web/vendor/`), all embedded in the binary at build time
//! so the hub stays one file. The driver app (`web/driver/`, an installable web app) is served
//! the same way under `/driver/`.
//!
//! The page signs in with an admin token (pasted, kept in `sessionStorage`, or `/#token=…` for
//! wall screens), follows `/v1/ws/watch` and reads trips, check-ins and tracks over REST.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

/// An embedded file of `web/`: where it is served, its bytes and `Content-Type`.
struct Asset {
    /// `/map/<its path under web/>`.
    route: &'static str,
    bytes: &'static [u8],
    content_type: &'static str,
}

/// `asset!(path, type)`: `web/<path>` served at `/map/<path>`; `asset!(route, dir, path, type)`:
/// `web/<dir><path>` served at `<route><path>`.
macro_rules! asset {
    ($path:literal, $type:literal) => {
        asset!("/map/", "", $path, $type)
    };
    ($route:literal, $dir:literal, $path:literal, $type:literal) => {
        Asset {
            route: concat!($route, $path),
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $dir, $path)),
            content_type: $type,
        }
    };
}

/// A file of the driver app (`web/driver/`), served under `/driver/`: the service worker's scope.
macro_rules! driver_asset {
    ($path:literal, $type:literal) => {
        asset!("/driver/", "driver/", $path, $type)
    };
}

/// The driver app's page, served at `/driver/` with a CSP.
const DRIVER: Asset = driver_asset!("index.html", "text/html; charset=utf-8");

/// The driver app's other files. The service worker must be served from `/driver/` for its
/// scope to cover the page.
static DRIVER_FILES: [Asset; 6] = [
    driver_asset!("app.js", "text/javascript; charset=utf-8"),
    driver_asset!("icon.svg", "image/svg+xml"),
    driver_asset!("outbox.js", "text/javascript; charset=utf-8"),
    driver_asset!("app.css", "text/css; charset=utf-8"),
    driver_asset!("sw.js", "text/javascript; charset=utf-8"),
    driver_asset!("manifest.webmanifest", "application/manifest+json"),
];

/// The page itself, served at `/` (not at its `route`), with a CSP.
const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
/// The customer's tracking page, served at `/t/{token}` (the `customer` module).
const TRACK: Asset = asset!("track.html", "text/html; charset=utf-8");

/// Every file under `/map/`.
static FILES: [Asset; 22] = [
    asset!("track.js", "text/javascript; charset=utf-8"),
    asset!("track.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("live.js", "text/javascript; charset=utf-8"),
    asset!("drivers.js", "text/javascript; charset=utf-8"),
    asset!("trip.js", "text/javascript; charset=utf-8"),
    asset!("feed.js", "text/javascript; charset=utf-8"),
    asset!("history.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!(
        "vendor/markercluster/leaflet.markercluster.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "vendor/markercluster/MarkerCluster.css",
        "text/css; charset=utf-8"
    ),
    asset!(
        "vendor/markercluster/MarkerCluster.Default.css",
        "text/css; charset=utf-8"
    ),
    asset!("vendor/markercluster/LICENSE", "text/plain; charset=utf-8"),
    asset!(
        "vendor/leaflet/leaflet.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("vendor/leaflet/leaflet.css", "text/css; charset=utf-8"),
    asset!("vendor/leaflet/LICENSE", "text/plain; charset=utf-8"),
    asset!("vendor/leaflet/images/layers.png", "image/png"),
    asset!("vendor/leaflet/images/layers-2x.png", "image/png"),
    asset!("vendor/leaflet/images/marker-icon.png", "image/png"),
    asset!("vendor/leaflet/images/marker-icon-2x.png", "image/png"),
    asset!("vendor/leaflet/images/marker-shadow.png", "image/png"),
];

/// The map's routes: `/`, `/map/*` (no authentication: the page holds no data until it has a
/// token).
pub fn routes() -> Router<AppState> {
    let router = Router::new()
        .route("/", get(index))
        .route("/map/config.json", get(config))
        .route("/driver", get(|| async { Redirect::permanent("/driver/") }))
        .route("/driver/", get(driver_app));
    FILES
        .iter()
        .chain(DRIVER_FILES.iter())
        .fold(router, |router, asset| {
            router.route(asset.route, get(move || async move { respond(asset) }))
        })
}

/// The driver app (`/driver/`), with the map's CSP.
async fn driver_app(State(app): State<AppState>) -> Response {
    with_csp(&app, respond(&DRIVER))
}

/// Embedded files change only with the binary: `no-cache` makes browsers revalidate after an
/// upgrade instead of mixing an old script with a new page.
fn respond(asset: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.bytes,
    )
        .into_response()
}

/// The page, with a Content Security Policy: scripts and sockets only from the hub itself,
/// images from the hub and the configured tile server.
async fn index(State(app): State<AppState>) -> Response {
    with_csp(&app, respond(&INDEX))
}

/// The customer's tracking page, with the map's CSP (the token stays in the page's address).
pub fn tracking_page(app: &AppState) -> Response {
    with_csp(app, respond(&TRACK))
}

fn with_csp(app: &AppState, mut response: Response) -> Response {
    let tiles = tile_origin(&app.cfg.map.tile_url).unwrap_or_default();
    let csp = format!(
        "default-src 'self'; img-src 'self' data: {tiles}; connect-src 'self' ws: wss:; \
         style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// `scheme://host[:port]` of a tile URL template, for the CSP; `None` when it has none.
fn tile_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    // `{s}` subdomain templates: allow every subdomain of the host.
    let host = host.replace("{s}.", "*.");
    (!host.is_empty() && (scheme == "https" || scheme == "http"))
        .then(|| format!("{scheme}://{host}"))
}

/// `GET /map/config.json`: what the page needs before it signs in.
async fn config(State(app): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "tile_url": app.cfg.map.tile_url,
        "tile_attribution": app.cfg.map.tile_attribution,
        "flush_interval_ms": app.cfg.flush_interval_ms,
        "presence_timeout_s": app.cfg.hub.presence_timeout_ms / 1000,
    }))
}

#[cfg(test)]
mod tests {
    use super::tile_origin;

    #[test]
    fn tile_origin_of_templates() {
        assert_eq!(
            tile_origin("https://tile.openstreetmap.org/{z}/{x}/{y}.png").as_deref(),
            Some("https://tile.openstreetmap.org")
        );
        assert_eq!(
            tile_origin("https://{s}.tile.example.com:8443/{z}/{x}/{y}.png").as_deref(),
            Some("https://*.tile.example.com:8443")
        );
        assert_eq!(tile_origin(""), None);
        assert_eq!(tile_origin("/tiles/{z}/{x}/{y}.png"), None);
    }
}
