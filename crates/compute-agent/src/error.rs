//! The crate's error type, and its one mapping to bus errors.

use bus::RemoteError;
use compute_rpc::PowerState;

/// What can go wrong in a hypervisor driver or in the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hypervisor has no guest for this instance.
    #[error("instance {0} has no guest on this host")]
    NotFound(String),
    /// Spawning an instance that already has a guest here.
    #[error("instance {0} already has a guest on this host")]
    AlreadyExists(String),
    /// The guest is not in a power state the operation can start from.
    #[error("cannot {operation} instance {uuid} while its power state is {state:?}")]
    InvalidState { uuid: String, operation: &'static str, state: PowerState },
    /// The hypervisor failed the operation.
    #[error("hypervisor: {0}")]
    Hypervisor(String),
    /// The agent's or the driver's configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(transparent)]
    Bus(#[from] bus::Error),
}

impl Error {
    /// The error as the caller of a bus method sees it; kinds follow upstream's exception names.
    pub fn to_remote(&self) -> RemoteError {
        let kind = match self {
            Error::NotFound(_) => "InstanceNotFound",
            Error::AlreadyExists(_) => "InstanceExists",
            Error::InvalidState { .. } => "InstanceInvalidState",
            Error::Hypervisor(_) | Error::Io { .. } => "HypervisorError",
            Error::Config(_) => "InvalidConfiguration",
            Error::Bus(_) => "MessagingError",
        };
        RemoteError::new(kind, self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_kinds_follow_upstream_names() {
        assert_eq!(Error::NotFound("u".into()).to_remote().kind, "InstanceNotFound");
        let e = Error::InvalidState { uuid: "u".into(), operation: "pause", state: PowerState::Shutdown };
        let remote = e.to_remote();
        assert_eq!(remote.kind, "InstanceInvalidState");
        assert!(remote.message.contains("pause"), "{}", remote.message);
    }
}
