//! The crate's error type.

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bus URL is malformed or names an unsupported transport.
    #[error("invalid bus URL: {0}")]
    InvalidUrl(String),
    /// A topic, server or pool name is empty, too long, or contains whitespace or AMQP wildcards.
    #[error("invalid {0}")]
    InvalidName(String),
    /// The broker cannot be reached (at connect time, or for longer than a publish may wait).
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
    /// The broker or the connection to it failed while handling a request.
    #[error("message bus transport error: {0}")]
    Transport(String),
    /// Nothing serves the target.
    #[error("no server listening on {0}")]
    NoListener(String),
    /// No reply arrived within the call's timeout.
    #[error("timed out waiting for a reply")]
    Timeout,
    /// The remote handler returned an error.
    #[error("remote error {kind}: {message}")]
    Remote {
        /// Error class chosen by the handler (e.g. `NotFound`), or by the bus (`NoSuchMethod`,
        /// `InvalidArguments`, `InternalError`).
        kind: String,
        /// Human-readable detail.
        message: String,
    },
    /// A message or reply could not be encoded or decoded.
    #[error("message encoding: {0}")]
    Codec(#[from] serde_json::Error),
    /// The bus was closed.
    #[error("message bus is closed")]
    Closed,
}
