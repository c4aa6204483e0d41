//! The agent's one error type, and what the service sees of it on the bus.

use bus::RemoteError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    /// A volume, snapshot or object the request names does not exist on this backend.
    #[error("{0}")]
    NotFound(String),
    /// The backend cannot do what was asked (a `qemu-img` failure, an I/O error, no space).
    #[error("{0}")]
    Backend(String),
    /// Another service (image, object store) refused or failed.
    #[error("{0}")]
    Remote(String),
    #[error("bus: {0}")]
    Bus(#[from] bus::Error),
}

impl Error {
    pub(crate) fn io(context: impl std::fmt::Display, e: std::io::Error) -> Self {
        Error::Backend(format!("{context}: {e}"))
    }
}

impl From<Error> for RemoteError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) => RemoteError::new("NotFound", m),
            Error::Remote(m) => RemoteError::new("RemoteServiceError", m),
            other => RemoteError::new("VolumeBackendAPIException", other.to_string()),
        }
    }
}
