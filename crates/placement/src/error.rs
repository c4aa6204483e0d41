//! The placement service's one error type, and the one place its HTTP statuses and error codes are chosen.

use api_common::ApiError;
use http::StatusCode;

/// Placement's machine-readable error codes (`errors[].code`).
pub mod code {
    pub const CONCURRENT_UPDATE: &str = "placement.concurrent_update";
    pub const DUPLICATE_NAME: &str = "placement.duplicate_name";
    pub const INVENTORY_INUSE: &str = "placement.inventory.inuse";
    pub const PROVIDER_INUSE: &str = "placement.resource_provider.inuse";
    pub const CANNOT_DELETE_PARENT: &str = "placement.resource_provider.cannot_delete_parent";
    pub const UNDEFINED: &str = "placement.undefined_code";
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404 with upstream's message.
    #[error("{0}")]
    NotFound(String),
    /// 400: invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// 409 with one of the [`code`]s.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("database: {0}")]
    Db(#[from] db::Error),
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict { code, message: message.into() }
    }
    /// The resource provider's generation moved: somebody else changed it first.
    pub fn generation_conflict(uuid: &str) -> Self {
        Error::conflict(
            code::CONCURRENT_UPDATE,
            format!(
                "resource provider generation conflict: The resource provider {uuid} was updated by another \
                 request. Please refresh and try again."
            ),
        )
    }
    /// Whether this is a provider generation conflict, which an allocation write may retry (a consumer
    /// generation conflict is the client's to resolve).
    pub fn is_provider_race(&self) -> bool {
        matches!(self, Error::Conflict { code, message } if *code == code::CONCURRENT_UPDATE
            && message.starts_with("resource provider generation conflict"))
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
            Error::NotFound(m) => ApiError::not_found(m).with_code(code::UNDEFINED),
            Error::BadRequest(m) => ApiError::bad_request(m).with_code(code::UNDEFINED),
            Error::Conflict { code, message } => ApiError::conflict(message).with_code(code),
            Error::Db(e) => {
                tracing::error!(error = %e, "placement database error");
                ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Error::Config(m) => ApiError::internal(m),
        }
    }
}
