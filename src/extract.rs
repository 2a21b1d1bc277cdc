//! Request extractors whose rejections are problem+json ([`ApiError`]) instead of axum's plain
//! text: every REST handler and the stream transports take their body and query through these.

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// JSON body extractor whose rejections are problem+json (400 syntax, 422 fields, 415 type).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| ApiJson(v))
            .map_err(ApiError::from)
    }
}

/// Query extractor whose rejections are problem+json.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(ApiError::from)
    }
}
