//! The config drive: an ISO 9660 filesystem labelled `config-2` with upstream's `openstack/latest/` layout
//! (`meta_data.json`, `user_data`, `network_data.json`, `vendor_data.json`, `vendor_data2.json`), made with
//! genisoimage as upstream does.

use std::path::Path;

use base64::Engine;
use compute_rpc::InstanceSpec;
use serde_json::{Value, json};

use crate::Error;

/// The label guests look for.
pub(crate) const LABEL: &str = "config-2";

/// `meta_data.json` of `instance`, upstream's members.
pub(crate) fn meta_data(instance: &InstanceSpec) -> Value {
    let mut public_keys = serde_json::Map::new();
    let mut keys = Vec::new();
    if let (Some(name), Some(data)) = (&instance.key_name, &instance.key_data) {
        public_keys.insert(name.clone(), json!(data));
        keys.push(json!({"name": name, "type": "ssh", "data": data}));
    }
    json!({
        "uuid": instance.uuid,
        "name": instance.display_name,
        "hostname": instance.hostname,
        "launch_index": instance.launch_index,
        "availability_zone": instance.availability_zone,
        "project_id": instance.project_id,
        "meta": instance.metadata,
        "public_keys": public_keys,
        "keys": keys,
        "devices": [],
    })
}

/// Writes the drive's files under `dir` (the tree genisoimage packs).
pub(crate) fn write_tree(instance: &InstanceSpec, dir: &Path) -> Result<(), Error> {
    let latest = dir.join("openstack").join("latest");
    let io = |source| Error::Io { context: format!("writing the config drive in {}", latest.display()), source };
    std::fs::create_dir_all(&latest).map_err(io)?;
    let write = |name: &str, data: &[u8]| std::fs::write(latest.join(name), data).map_err(io);
    write("meta_data.json", meta_data(instance).to_string().as_bytes())?;
    write("network_data.json", json!({"links": [], "networks": [], "services": []}).to_string().as_bytes())?;
    write("vendor_data.json", b"{}")?;
    write("vendor_data2.json", b"{}")?;
    if let Some(data) = &instance.user_data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| Error::Hypervisor(format!("the instance's user_data is not base64: {e}")))?;
        write("user_data", &bytes)?;
    }
    Ok(())
}

/// Builds the ISO image `dest` for `instance`.
pub(crate) async fn build(instance: &InstanceSpec, dest: &Path) -> Result<(), Error> {
    let tree = dest.with_extension("tree");
    let _ = std::fs::remove_dir_all(&tree);
    write_tree(instance, &tree)?;
    let out = tokio::process::Command::new("genisoimage")
        .args(["-o"])
        .arg(dest)
        .args(["-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-publisher", "Stratus", "-quiet", "-J", "-r", "-V", LABEL])
        .arg(&tree)
        .output()
        .await;
    let _ = std::fs::remove_dir_all(&tree);
    let out = out.map_err(|source| Error::Io { context: "running genisoimage (scripts/install-qemu installs it)".into(), source })?;
    if !out.status.success() {
        return Err(Error::Hypervisor(format!("genisoimage failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_has_upstreams_layout() {
        let mut instance = crate::qemu::tests::instance("u1");
        instance.user_data = Some(base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho hi\n"));
        instance.key_name = Some("k".into());
        instance.key_data = Some("ssh-ed25519 AAAA k".into());
        let dir = tempfile::tempdir().unwrap();
        write_tree(&instance, dir.path()).unwrap();
        let latest = dir.path().join("openstack/latest");
        let meta: Value = serde_json::from_slice(&std::fs::read(latest.join("meta_data.json")).unwrap()).unwrap();
        assert_eq!(meta["uuid"], "u1");
        assert_eq!(meta["hostname"], "vm-u1");
        assert_eq!(meta["public_keys"]["k"], "ssh-ed25519 AAAA k");
        assert_eq!(std::fs::read(latest.join("user_data")).unwrap(), b"#!/bin/sh\necho hi\n");
        for f in ["network_data.json", "vendor_data.json", "vendor_data2.json"] {
            assert!(latest.join(f).exists(), "{f}");
        }
        instance.user_data = Some("not base64!".into());
        assert!(write_tree(&instance, dir.path()).is_err());
    }
}
