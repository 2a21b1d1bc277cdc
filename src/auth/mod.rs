//! Bearer tokens (JWT, RFC 7519) with `sub`, `role`, `fleet`, `exp`: who may do what.
//!
//! Keys and verification live in [`keys`]; this module holds the claims, the roles and the
//! request extractor that turns a token into a [`Caller`].

pub mod keys;

pub use keys::{AuthConfig, Keys};

use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The fleet of a token that names none.
pub const DEFAULT_FLEET: &str = "default";
/// File in the data dir holding the generated signing secret (hex, mode 0600).
pub const SECRET_FILE: &str = "jwt_secret";

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Publishes its own fixes on `/v1/ws/driver`.
    Driver,
    /// Reads and manages its fleet: trips, live map, check-ins.
    Admin,
    /// Another system reading its fleet's streams.
    Service,
}

impl Role {
    /// The claim's spelling: `driver`, `admin`, `service`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Driver => "driver",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

fn default_fleet() -> String {
    DEFAULT_FLEET.to_string()
}

/// JWT claims the hub reads. `sub` is the driver id for drivers; times are unix seconds UTC.
/// `nbf` is checked when present; `iss` and `aud` (not kept here) when configured, see [`Keys::verify`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default = "default_fleet")]
    pub fleet: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

impl Claims {
    /// When the token expires, as a timer deadline; capped at a year so an absurd `exp` cannot
    /// overflow the timer. Sessions end there (socket close 4001, SSE `token_expired`).
    pub fn expiry_deadline(&self) -> tokio::time::Instant {
        let left = (self.exp - chrono::Utc::now().timestamp()).clamp(0, 365 * 86_400) as u64;
        tokio::time::Instant::now() + std::time::Duration::from_secs(left)
    }
}

/// Shortest `TRACKHUB_JWT_SECRET` accepted, bytes: HS256 keys must have at least 256 bits
/// (RFC 7518 §3.2). A shorter one, or a well-known default, lets anyone mint tokens.
pub const MIN_SECRET_BYTES: usize = 32;

/// The signing secret: `override_secret` (from `TRACKHUB_JWT_SECRET`) when given, else the one
/// kept in `data_dir/jwt_secret`, generated (32 random bytes) when `create` and absent. Errors
/// for an override shorter than [`MIN_SECRET_BYTES`] and for an unreadable file.
pub fn load_secret(
    data_dir: &Path,
    override_secret: Option<&str>,
    create: bool,
) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = override_secret.filter(|s| !s.is_empty()) {
        if s.len() < MIN_SECRET_BYTES {
            anyhow::bail!(
                "TRACKHUB_JWT_SECRET has {} bytes; HS256 needs at least {MIN_SECRET_BYTES} \
                 (RFC 7518 §3.2: a key of at least 256 bits). Generate one with \
                 `openssl rand -hex 32`, or unset it to use the secret generated in the data dir",
                s.len()
            );
        }
        return Ok(s.as_bytes().to_vec());
    }
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(hex::decode(text.trim()).map_err(|e| anyhow::anyhow!("{} is not hex: {e}", path.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(data_dir)?;
            let secret: [u8; 32] = rand::random();
            write_private(&path, &hex::encode(secret))?;
            Ok(secret.to_vec())
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot read the signing secret {}: {e} (start `trackhub serve` once with this data dir, or set TRACKHUB_JWT_SECRET)",
            path.display()
        )),
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

/// The authenticated caller of a request, from `Authorization: Bearer`, or `?access_token=` on a
/// WebSocket upgrade or an SSE request only (browsers cannot set headers on those; RFC 6750 §2.3
/// advises against tokens in URLs, which proxies log). Rejects with 401 when missing or
/// invalid.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                format!("role `{:?}` may not do this", self.0.role).to_lowercase(),
            ))
        }
    }

    /// 403 unless the caller is an admin or service of its fleet, or is driver `driver_id`.
    pub fn require_reader_of(&self, driver_id: &str) -> Result<(), ApiError> {
        match self.0.role {
            Role::Admin | Role::Service => Ok(()),
            Role::Driver if self.0.sub == driver_id => Ok(()),
            Role::Driver => Err(ApiError::Forbidden(
                "drivers may only read their own data".into(),
            )),
        }
    }
}

/// The credential of an `Authorization: Bearer <credential>` header (RFC 6750 §2.1), if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// A WebSocket upgrade (`Upgrade: websocket`) or an `EventSource` request (`Accept:
/// text/event-stream`): the two kinds of browser request that cannot carry an `Authorization`
/// header. Every other request must use the header (issue 16: tokens in query strings of REST
/// calls end up in proxy logs).
fn may_carry_token_in_query(headers: &axum::http::HeaderMap) -> bool {
    let has = |name: axum::http::HeaderName, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains(want))
    };
    has(axum::http::header::UPGRADE, "websocket")
        || has(axum::http::header::ACCEPT, "text/event-stream")
}

fn token_from(parts: &Parts) -> Option<String> {
    if parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
    {
        return bearer(&parts.headers);
    }
    if !may_carry_token_in_query(&parts.headers) {
        return None;
    }
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

/// Any state that can hand out the verifying keys (`FromRef`): the extractor needs nothing else.
impl<S> FromRequestParts<S> for Caller
where
    Arc<Keys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = token_from(parts)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        let keys = Arc::<Keys>::from_ref(state);
        let claims = keys
            .verify(&token)
            .map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))?;
        Ok(Caller(claims))
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn a_short_or_default_looking_secret_is_refused() {
        let dir = std::env::temp_dir();
        let short = load_secret(&dir, Some("change-me"), false).unwrap_err();
        assert!(short.to_string().contains("at least 32"), "{short}");
        let ok = load_secret(&dir, Some("0123456789abcdef0123456789abcdef"), false).unwrap();
        assert_eq!(ok.len(), 32);
    }
}
