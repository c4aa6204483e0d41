//! The compute agent: the per-host service of the compute service, upstream's `nova-compute`.
//!
//! An [`Agent`] owns one host's guests through a [`Hypervisor`] driver. It registers its node with the
//! conductor, serves the compute topic as server `<host>` (building, deleting and acting on instances, reading
//! their consoles), and reports its liveness and resources. It never touches the database: every change to an
//! instance goes through the conductor over the bus contract in `compute-rpc`.
//!
//! Drivers: [`fake`] (guests in memory), [`qemu`] (one QEMU process per instance, over QMP) and [`container`]
//! (Linux containers from Docker images, run by an OCI runtime); [`multi`] runs a VM driver and the container
//! driver on one node.

mod agent;
mod base;
mod config;
mod config_drive;
pub mod container;
mod error;
mod events;
mod guest_dir;
pub mod fake;
pub mod hypervisor;
mod images;
mod manager;
pub mod multi;
pub mod qemu;

pub use compute_rpc::iscsi_initiator;
pub use agent::{Agent, AgentHandle};
pub use config::{AgentConfig, ContainerSettings, DriverConfig, QemuSettings, default_ip, hostname};
pub use error::Error;
pub use fake::{FakeConfig, FakeDriver, FakeFailures};
pub use container::{ContainerConfig, ContainerDriver};
pub use hypervisor::{GuestContext, GuestInfo, Hypervisor, HypervisorInfo, ImageSource, NetworkInterface, SnapshotFormat};
pub use manager::{BUILD_EVENT, TERMINATE_EVENT};
pub use multi::MultiDriver;
pub use qemu::{ImageService, QemuConfig, QemuDriver, VirtType};
