//! `cargo xtask image build`: the Stratus test VM image, a CirrOS-like guest made of Debian's cloud kernel and
//! busybox-static, built by `scripts/build-test-image` from Debian packages only and cached in
//! `target/test-image/` (rebuilt only when the script, the guest's files or the packages' versions change).
//! The same build also writes the test container, `stratus-test-container.tar`: a `docker save` archive of one
//! busybox-static layer whose PID 1 is `scripts/test-image/container-init`.
//! `scripts/upload-test-image` uploads the result to a running cloud.

use std::path::PathBuf;
use std::process::Command as Process;

use anyhow::{Context, Result, bail};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Builds (or finds cached) the bootable qcow2 disk, the kernel/ramdisk pair for direct kernel boot and the
    /// test container's `docker save` archive.
    Build {
        /// Where to put the image files (default: target/test-image).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The directory the images are built into by default.
pub fn default_dir() -> PathBuf {
    super::workspace_root().join("target").join("test-image")
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Build { out } => {
            build(&out.unwrap_or_else(default_dir))?;
            Ok(())
        }
    }
}

/// Builds the images into `out` unless they are current; returns the bootable disk's path.
pub fn build(out: &std::path::Path) -> Result<PathBuf> {
    let script = super::workspace_root().join("scripts").join("build-test-image");
    let status = Process::new(&script).arg(out).status().with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(out.join("stratus-test-vm.qcow2"))
}
