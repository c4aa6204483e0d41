//! The network service's one error type, and the one place its HTTP statuses and Neutron error types are chosen.

use api_common::ApiError;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404 with Neutron's type (`NetworkNotFound`, `PortNotFound`, …).
    #[error("{message}")]
    NotFound { kind: &'static str, message: String },
    /// 400 (`InvalidInput`, `BadRequest`, …).
    #[error("{message}")]
    BadRequest { kind: &'static str, message: String },
    /// 409 (`NetworkInUse`, `IpAddressAlreadyAllocated`, …).
    #[error("{message}")]
    Conflict { kind: &'static str, message: String },
    /// 403 (`PolicyNotAuthorized`).
    #[error("{0}")]
    Forbidden(String),
    #[error("database: {0}")]
    Db(#[from] db::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("bus: {0}")]
    Bus(#[from] bus::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::BadRequest { kind: "InvalidInput", message: format!("Invalid input for operation: {}", message.into()) }
    }
    pub fn bad(kind: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest { kind, message: message.into() }
    }
    pub fn conflict(kind: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict { kind, message: message.into() }
    }
    pub fn not_found(kind: &'static str, message: impl Into<String>) -> Self {
        Error::NotFound { kind, message: message.into() }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Db(db::Error::from(e))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound { kind, message } => ApiError::not_found(message).with_code(kind),
            Error::BadRequest { kind, message } => ApiError::bad_request(message).with_code(kind),
            Error::Conflict { kind, message } => ApiError::conflict(message).with_code(kind),
            Error::Forbidden(m) => ApiError::forbidden(m).with_code("PolicyNotAuthorized"),
            Error::Db(e) => {
                tracing::error!(error = %e, "network database error");
                ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Error::Config(m) => ApiError::internal(m),
            Error::Bus(e) => {
                tracing::error!(error = %e, "network bus error");
                ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR))
            }
        }
    }
}
