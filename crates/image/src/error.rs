//! The image service's one error type, and the one place its HTTP statuses are chosen.

use api_common::ApiError;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 404, with Glance's message (e.g. `No image found with ID X`).
    #[error("{0}")]
    NotFound(String),
    /// 400: invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// 403: forbidden by a rule that is not policy (read-only attributes, protected images, deactivated data).
    #[error("{0}")]
    Forbidden(String),
    /// 409: the image is not in a state that allows the request.
    #[error("{0}")]
    Conflict(String),
    /// 413: a quota or the image size cap would be exceeded.
    #[error("{0}")]
    TooLarge(String),
    /// 415: wrong request media type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 416: the requested byte range lies outside the image data.
    #[error("requested range not satisfiable (image size {size})")]
    RangeNotSatisfiable { size: u64 },
    /// The client went away or sent a broken body while uploading.
    #[error("the upload was interrupted: {0}")]
    UploadInterrupted(String),
    #[error("database: {0}")]
    Db(#[from] db::Error),
    #[error("image data store: {0}")]
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
            Error::Forbidden(m) => ApiError::forbidden(m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            Error::UnsupportedMediaType(m) => ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
            Error::RangeNotSatisfiable { size } => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "Requested range not satisfiable.").with_header(
                    http::header::CONTENT_RANGE,
                    http::HeaderValue::from_str(&format!("bytes */{size}"))
                        .unwrap_or(http::HeaderValue::from_static("bytes */0")),
                )
            }
            Error::UploadInterrupted(m) => ApiError::bad_request(format!("The image upload was interrupted: {m}")),
            Error::Db(e) => {
                tracing::error!(error = %e, "image database error");
                ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Error::Io(e) => {
                tracing::error!(error = %e, "image store error");
                ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Error::Config(m) => ApiError::internal(m),
        }
    }
}
