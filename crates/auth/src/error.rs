//! The crate's one error type.

use std::path::PathBuf;

use api_common::ApiError;
use http::StatusCode;

/// Everything that can go wrong validating tokens or loading policy.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is unknown, expired, revoked or garbled. Maps to 401.
    #[error("the token is not valid")]
    Invalid,
    /// The identity service could not answer (unreachable, refused our service credentials, or sent something we
    /// cannot read). Maps to 503, as keystonemiddleware does.
    #[error("identity service unavailable: {0}")]
    Unavailable(String),
    /// A configuration value is unusable (for example an unparsable `auth_url`).
    #[error("invalid authentication configuration: {0}")]
    Config(String),
    /// The policy file could not be read or is not a mapping of rule names to check strings.
    #[error("cannot load policy file {path}: {message}")]
    PolicyFile { path: PathBuf, message: String },
    /// A rule's check string does not parse.
    #[error("invalid policy rule {rule:?}: {message}")]
    PolicySyntax { rule: String, message: String },
    /// `rule:` references form a loop.
    #[error("policy rules reference each other in a cycle: {0}")]
    PolicyCycle(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid => ApiError::unauthorized(ApiError::default_message(StatusCode::UNAUTHORIZED)),
            AuthError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ApiError::default_message(StatusCode::SERVICE_UNAVAILABLE),
            ),
            _ => ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR)),
        }
    }
}
