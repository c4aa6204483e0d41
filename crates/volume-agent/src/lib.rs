//! The per-host volume agent (upstream's `cinder-volume` and `cinder-backup`): it owns one storage backend
//! through a [`VolumeDriver`], serves the `cinder-volume` topic as server `<host>@<backend>`, and reports the
//! backend's capacity and capabilities to the scheduler every report interval. It never touches a database.
//!
//! * [`driver`] — the [`VolumeDriver`] trait every backend implements;
//! * [`file`] — raw or qcow2 files in a directory, created, copied, converted and resized with `qemu-img`
//!   (thin: files are sparse or qcow2);
//! * [`iscsi`] — the `file` driver's raw files exported to other hosts by the userspace iSCSI target `tgt`;
//! * [`fake`] — volumes in memory, for API tests;
//! * [`transfer`] — image data to and from the image service, backup chunks to and from the object store, both
//!   over their public HTTP APIs with the caller's token;
//! * [`agent`] — the bus server and the reporting loop.

pub mod agent;
pub mod driver;
mod error;
pub mod fake;
pub mod file;
pub mod iscsi;
pub mod transfer;

pub use agent::{Agent, AgentConfig, AgentHandle};
pub use driver::{Capacity, DataSource, VolumeDriver};
pub use error::Error;
pub use fake::FakeDriver;
pub use file::{FileConfig, FileDriver};
pub use iscsi::{IscsiConfig, IscsiDriver};

/// This machine's host name (the default `host` of an agent).
pub fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}
