//! The object service's one error type, and the one place its HTTP statuses are chosen.

use api_common::ApiError;
use http::{HeaderValue, StatusCode, header};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 400: invalid input (names, headers, query parameters).
    #[error("{0}")]
    BadRequest(String),
    /// 401: an anonymous caller (or a bad temporary URL or form signature) was refused.
    #[error("{0}")]
    Unauthorized(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 405.
    #[error("The method is not allowed for this resource.")]
    MethodNotAllowed,
    /// 409: e.g. deleting a container that still holds objects.
    #[error("{0}")]
    Conflict(String),
    /// 411: a PUT without `Content-Length` nor chunked transfer encoding.
    #[error("{0}")]
    LengthRequired(String),
    /// 412: a failed `If-Match`/`If-Unmodified-Since`, or a listing limit over the maximum.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: an object or metadata over the limits.
    #[error("{0}")]
    TooLarge(String),
    /// 416.
    #[error("Requested range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    /// 422: the body does not match the `ETag` the client sent.
    #[error("{0}")]
    Unprocessable(String),
    /// 499/400: the client's body broke off.
    #[error("the upload was interrupted: {0}")]
    UploadInterrupted(String),
    /// 503: fewer replicas than the write quorum could be written or none could be read.
    #[error("{0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Db(#[from] db::Error),
    #[error("object data: {0}")]
    Io(#[from] std::io::Error),
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
            Error::Unauthorized(m) => ApiError::unauthorized(m),
            Error::Forbidden(m) => ApiError::forbidden(m),
            Error::MethodNotAllowed => ApiError::new(StatusCode::METHOD_NOT_ALLOWED, Error::MethodNotAllowed.to_string()),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::LengthRequired(m) => ApiError::new(StatusCode::LENGTH_REQUIRED, m),
            Error::PreconditionFailed(m) => ApiError::new(StatusCode::PRECONDITION_FAILED, m),
            Error::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            Error::RangeNotSatisfiable { size } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "The Range requested is not available.",
            )
            .with_header(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).unwrap_or(HeaderValue::from_static("bytes */0")),
            ),
            Error::Unprocessable(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            Error::UploadInterrupted(m) => ApiError::new(StatusCode::BAD_REQUEST, format!("Upload interrupted: {m}")),
            Error::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
            Error::Db(e) => {
                tracing::error!(error = %e, "object database error");
                ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Error::Io(e) => {
                tracing::error!(error = %e, "object data error");
                ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Error::Config(m) => ApiError::internal(m),
        }
    }
}
