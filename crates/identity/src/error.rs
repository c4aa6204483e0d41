//! The identity service's one error type, and its single mapping to HTTP.

use api_common::ApiError;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request was authenticated by nothing we accept.
    #[error("The request you have made requires authentication.")]
    Unauthorized,
    /// Authentication refused for a reason upstream tells the client (account locked, password expired).
    #[error("{0}")]
    AuthRefused(String),
    /// A subject token that is garbled, expired, revoked or signed by a key we don't hold.
    #[error("The token is invalid or has expired.")]
    InvalidToken,
    #[error("{0}")]
    Forbidden(String),
    #[error("Could not find {kind}: {id}.")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("Conflict occurred attempting to store {kind} - {detail}.")]
    Conflict { kind: &'static str, detail: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Db(#[from] db::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound { kind, id: id.into() }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(db::Error::from(e))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match &e {
            Error::Unauthorized | Error::InvalidToken | Error::AuthRefused(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
            }
            Error::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            Error::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            Error::BadRequest(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            Error::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            Error::Db(inner) if inner.is_unique_violation() => {
                ApiError::new(StatusCode::CONFLICT, "Conflict occurred attempting to store the resource.")
            }
            Error::Config(_) | Error::Db(_) | Error::Internal(_) => {
                tracing::error!(error = %e, "identity request failed");
                ApiError::internal("An unexpected error prevented the server from fulfilling your request.")
            }
        }
    }
}

impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(self).into_response()
    }
}
