//! The volume service's one error type, and the one place its HTTP statuses are chosen. Bodies are rendered in
//! Cinder's style (`{"badRequest": {"message": …, "code": 400}}`, `itemNotFound`, …) by the wire layer.

use api_common::ApiError;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// Upstream answers most invalid-state errors with 400 (`InvalidVolume`) …
    #[error("{0}")]
    Invalid(String),
    /// … and some with 409.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// 413: quota exceeded (upstream's `OverQuota`).
    #[error("{0}")]
    OverQuota(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Db(#[from] db::Error),
    #[error("bus: {0}")]
    Bus(#[from] bus::Error),
    #[error("configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(db::Error::from(e))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) => ApiError::not_found(m),
            Error::BadRequest(m) | Error::Invalid(m) => ApiError::bad_request(m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::Forbidden(m) => ApiError::forbidden(m),
            Error::OverQuota(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            Error::Unavailable(m) => {
                tracing::error!(error = %m, "volume dependency unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m)
            }
            Error::Bus(e) => {
                tracing::error!(error = %e, "volume bus error");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ApiError::default_message(StatusCode::SERVICE_UNAVAILABLE))
            }
            Error::Db(e) => {
                tracing::error!(error = %e, "volume database error");
                ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Error::Config(m) => ApiError::internal(m),
        }
    }
}
