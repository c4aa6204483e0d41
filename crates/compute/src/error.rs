//! The compute service's one error type, and the one place its HTTP statuses are chosen.

use api_common::ApiError;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404 with upstream's message.
    #[error("{0}")]
    NotFound(String),
    /// 400: invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// 409 with upstream's message.
    #[error("{0}")]
    Conflict(String),
    /// 403 with upstream's message (quota exceeded, policy).
    #[error("{0}")]
    Forbidden(String),
    /// 503: a service this one depends on (placement, an agent, the bus) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Db(#[from] db::Error),
    #[error("bus: {0}")]
    Bus(#[from] bus::Error),
    #[error("configuration: {0}")]
    Config(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(db::Error::from(e))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) => ApiError::not_found(m),
            Error::BadRequest(m) => ApiError::bad_request(m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::Forbidden(m) => ApiError::forbidden(m),
            Error::Unavailable(m) => {
                tracing::error!(error = %m, "compute dependency unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m)
            }
            Error::Bus(e) => {
                tracing::error!(error = %e, "compute bus error");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ApiError::default_message(StatusCode::SERVICE_UNAVAILABLE))
            }
            Error::Db(e) => {
                tracing::error!(error = %e, "compute database error");
                ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Error::Config(m) => ApiError::internal(m),
        }
    }
}
