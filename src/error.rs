//! REST errors as RFC 9457 problem details (`application/problem+json`).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;

pub use crate::protocol::FieldError;

/// An error answered to a REST client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body or query could not be parsed at all.
    #[error("{0}")]
    BadRequest(String),
    /// 422: parsed, but fields are invalid.
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    /// 401: no valid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token without the right.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 413: the body is over the limit (1 MiB).
    #[error("{0}")]
    TooLarge(String),
    /// 429: over a rate limit.
    #[error("{0}")]
    TooManyRequests(String),
    /// 429 with `Retry-After` (whole seconds, at least 1): over a rate limit that refills.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    /// 410: what was asked for existed but is gone for good (events past retention).
    #[error("{0}")]
    Gone(String),
    /// 503 with `Retry-After` (whole seconds): storage is behind or unreachable, or the node
    /// drains. The client keeps what it sent and retries after the hint; nothing was acked.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: std::time::Duration,
    },
    /// 500: our fault; details go to the log, not the client.
    #[error("internal error")]
    Internal(String),
}

/// An RFC 9457 problem details body (`application/problem+json`): every REST error. `errors`
/// names each invalid field of a 422.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad Request"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Unprocessable Content"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "Not Found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
            }
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "Content Too Large"),
            ApiError::Gone(_) => (StatusCode::GONE, "Gone"),
            ApiError::TooManyRequests(_) | ApiError::RateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            }
            ApiError::Unavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        };
        let errors = match &self {
            ApiError::Invalid(list) => Some(list.as_slice()),
            _ => None,
        };
        let detail = match &self {
            ApiError::Invalid(list) => format!("{} invalid field(s)", list.len()),
            other => other.to_string(),
        };
        let body = Problem {
            kind: "about:blank",
            title,
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/problem+json".parse().expect("static header"),
        );
        if let ApiError::Unavailable { retry_after, .. }
        | ApiError::RateLimited { retry_after, .. } = &self
        {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(
                header::RETRY_AFTER,
                seconds.to_string().parse().expect("digits"),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => {
                ApiError::Invalid(vec![FieldError::new("body", e.body_text())])
            }
            JsonRejection::MissingJsonContentType(e) => {
                ApiError::UnsupportedMediaType(e.body_text())
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge(other.body_text())
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(rejection.body_text())
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<StoreError> for ApiError {
    /// A database that cannot be reached is a 503 with `Retry-After` (the client keeps what it
    /// sent and retries), not a 500: an OsmAnd phone's report during an outage must be kept.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::Db(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed,
            ) => ApiError::Unavailable {
                message: "the database is unreachable; retry later".into(),
                retry_after: std::time::Duration::from_secs(5),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}
