//! The volume agent's drivers and bus server: the `file` driver through real `qemu-img`, and an agent serving
//! calls and reporting its backend on the in-process bus.

use std::{sync::Arc, time::Duration};

use bus::{Bus, Dispatcher, Target};
use volume_agent::{Agent, AgentConfig, DataSource, FakeDriver, FileConfig, FileDriver, VolumeDriver};
use volume_rpc::{BackendReport, CreateVolume, DeleteVolume, ExtendVolume, InitializeConnection, SCHEDULER_TOPIC, VOLUME_TOPIC, VolumeSource};

const GIB: u64 = 1 << 30;

fn pattern() -> Vec<u8> {
    (0..65536u32).map(|i| (i % 253) as u8).collect()
}

async fn file_driver(dir: &std::path::Path, format: &str) -> FileDriver {
    let mut c = FileConfig::new(dir);
    c.format = format.into();
    FileDriver::new(c).unwrap()
}

#[tokio::test]
async fn file_volumes_are_thin_and_keep_their_data() {
    for format in ["raw", "qcow2"] {
        let dir = tempfile::tempdir().unwrap();
        let d = file_driver(dir.path(), format).await;
        d.create("v1", 2).await.unwrap();
        let path = dir.path().join("volume-v1");
        assert_eq!(d.virtual_size(&path, format).await.unwrap(), 2 * GIB);
        let used = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap()) * 512;
        assert!(used < 16 << 20, "{format}: thin, {used} bytes allocated");
        let c = d.capacity().await.unwrap();
        assert!((c.provisioned_gb - 2.0).abs() < 1e-9, "{c:?}");
        assert!(c.total_gb > 0.0 && c.free_gb <= c.total_gb);

        // Data in, copied by snapshot and clone, exported back out.
        let src = dir.path().join("src.raw");
        std::fs::write(&src, pattern()).unwrap();
        d.import("v1", &src, "raw").await.unwrap();
        assert_eq!(d.virtual_size(&path, format).await.unwrap(), 2 * GIB, "import keeps the size");
        d.create_snapshot("s1", "v1").await.unwrap();
        d.create_from("v2", 3, DataSource::Snapshot("s1")).await.unwrap();
        let e = d.create_from("v3", 2, DataSource::Volume("v2")).await.unwrap_err();
        assert!(e.to_string().contains("doesn't fit"), "{e}");
        d.create_from("v3", 3, DataSource::Volume("v2")).await.unwrap();
        let out = dir.path().join("out.raw");
        d.export(DataSource::Volume("v3"), &out, "raw").await.unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 3 * GIB);
        let mut head = vec![0u8; 65536];
        std::io::Read::read_exact(&mut std::fs::File::open(&out).unwrap(), &mut head).unwrap();
        assert_eq!(head, pattern());

        d.extend("v1", 4).await.unwrap();
        assert_eq!(d.virtual_size(&path, format).await.unwrap(), 4 * GIB);

        // Revert: the snapshot's data comes back over new data, the volume keeps its size; a missing snapshot
        // changes nothing.
        let zeros = dir.path().join("zeros.raw");
        std::fs::write(&zeros, vec![0u8; 65536]).unwrap();
        d.import("v1", &zeros, "raw").await.unwrap();
        assert!(d.revert_to_snapshot("v1", "nope", 4).await.is_err());
        d.revert_to_snapshot("v1", "s1", 4).await.unwrap();
        assert_eq!(d.virtual_size(&path, format).await.unwrap(), 4 * GIB);
        let reverted = dir.path().join("reverted.raw");
        d.export(DataSource::Volume("v1"), &reverted, "raw").await.unwrap();
        let mut head = vec![0u8; 65536];
        std::io::Read::read_exact(&mut std::fs::File::open(&reverted).unwrap(), &mut head).unwrap();
        assert_eq!(head, pattern(), "{format}: reverted");
        let info = d.connection_info("v1", &serde_json::json!({})).await.unwrap();
        assert_eq!(info["driver_volume_type"], "local");
        assert_eq!(info["data"]["format"], format);
        for id in ["v1", "v2", "v3"] {
            d.delete(id).await.unwrap();
        }
        d.delete("v1").await.unwrap();
        d.delete_snapshot("s1").await.unwrap();
        assert!(d.connection_info("v1", &serde_json::json!({})).await.is_err());
        assert_eq!(d.capacity().await.unwrap().provisioned_gb, 0.0);
    }
}

#[tokio::test]
async fn an_image_is_converted_and_checked_against_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = file_driver(dir.path(), "raw").await;
    let img = dir.path().join("img.qcow2");
    let out = tokio::process::Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&img).arg("2G").output().await.unwrap();
    assert!(out.status.success());
    let err = d.create_from_file("small", 1, &img, "qcow2").await.unwrap_err();
    assert!(err.to_string().contains("doesn't fit"), "{err}");
    assert!(!dir.path().join("volume-small").exists(), "nothing half-made");
    d.create_from_file("big", 3, &img, "qcow2").await.unwrap();
    assert_eq!(d.virtual_size(&dir.path().join("volume-big"), "raw").await.unwrap(), 3 * GIB);
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"not an image").unwrap();
    assert!(d.create_from_file("bad", 1, &garbage, "qcow2").await.is_err());
}

#[tokio::test]
async fn the_agent_serves_calls_and_reports_its_backend() {
    let bus = Bus::connect("memory://volume-agent-it").await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let scheduler = bus
        .serve(SCHEDULER_TOPIC, "s1", Dispatcher::new().on(move |r: BackendReport| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(r);
                Ok(())
            }
        }))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeDriver::new(100.0, dir.path()));
    let mut config = AgentConfig::new("h1");
    config.backend_name = "fast".into();
    config.report_interval = Duration::from_millis(50);
    let agent = Agent::start(config, fake.clone(), bus.clone()).await.unwrap();
    assert_eq!(agent.service_host(), "h1@fast");
    let report = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!((report.host.as_str(), report.total_capacity_gb, report.driver.as_str()), ("h1@fast", 100.0, "fake"));

    let target = Target::server(VOLUME_TOPIC, "h1@fast");
    let t = Duration::from_secs(5);
    bus.call(&target, &CreateVolume { volume_id: "v".into(), size_gb: 10, source: VolumeSource::Empty }, t).await.unwrap();
    bus.call(&target, &ExtendVolume { volume_id: "v".into(), new_size_gb: 20 }, t).await.unwrap();
    agent.report_now().await.unwrap();
    let mut last = rx.recv().await.unwrap();
    while let Ok(r) = rx.try_recv() {
        last = r;
    }
    assert_eq!((last.provisioned_capacity_gb, last.free_capacity_gb), (20.0, 80.0));
    let info = bus.call(&target, &InitializeConnection { volume_id: "v".into(), connector: serde_json::json!({}) }, t).await.unwrap();
    assert_eq!(info["driver_volume_type"], "fake");
    let err = bus.call(&target, &ExtendVolume { volume_id: "nope".into(), new_size_gb: 2 }, t).await.unwrap_err();
    assert!(err.to_string().contains("NotFound"), "{err}");
    bus.call(&target, &DeleteVolume { volume_id: "v".into() }, t).await.unwrap();
    assert!(fake.volume_ids().is_empty());
    agent.stop().await;
    scheduler.stop().await;
}

/// Stops the test's own tgt daemon (tgtd ignores SIGTERM; `--op delete --mode system` ends it).
struct Tgtd(u16);

impl Drop for Tgtd {
    /// Refused while targets exist (a failed test leaves some): the daemon is then killed.
    fn drop(&mut self) {
        let _ = std::process::Command::new("tgtadm")
            .args(["-C", &self.0.to_string(), "--op", "delete", "--mode", "system"])
            .output();
        let _ = std::process::Command::new("pkill").args(["-9", "-f", &format!("tgtd -C {} ", self.0)]).output();
    }
}

/// The userspace iSCSI target is there (CI installs it with the QEMU tools and requires it).
fn have_tgt() -> bool {
    let found = std::process::Command::new("tgtadm").arg("--help").output().is_ok();
    if !found && std::env::var("STRATUS_TEST_REQUIRE_QEMU").as_deref() == Ok("1") {
        panic!("tgtadm is required (scripts/host-tools installs tgt)");
    }
    found
}

/// Reads the first 64 KiB of an iSCSI LUN as `initiator`, trying up to three times a second apart (a fresh target's
/// first login can be turned away while it settles).
fn read_lun_settled(info: &serde_json::Value, initiator: &str, dir: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut last = Err(String::new());
    for _ in 0..3 {
        last = read_lun(info, initiator, dir);
        if last.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    last
}

/// Reads the first 64 KiB of an iSCSI LUN as `initiator`, through QEMU's own initiator.
fn read_lun(info: &serde_json::Value, initiator: &str, dir: &std::path::Path) -> Result<Vec<u8>, String> {
    let d = &info["data"];
    let spec = format!(
        "driver=raw,file.driver=iscsi,file.transport=tcp,file.portal={},file.target={},file.lun={},file.initiator-name={initiator}",
        d["target_portal"].as_str().unwrap(),
        d["target_iqn"].as_str().unwrap(),
        d["target_lun"]
    );
    let out = dir.join(format!("read-{}", initiator.replace(':', "_")));
    let r = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "--image-opts", &spec, "-O", "raw"])
        .arg(&out)
        .output()
        .unwrap();
    if !r.status.success() {
        return Err(String::from_utf8_lossy(&r.stderr).into_owned());
    }
    let mut head = vec![0u8; 65536];
    std::io::Read::read_exact(&mut std::fs::File::open(&out).unwrap(), &mut head).unwrap();
    Ok(head)
}

#[tokio::test]
async fn iscsi_volumes_are_exported_to_the_connected_hosts_only() {
    if !have_tgt() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let control = 100 + (std::process::id() % 800) as u16;
    let _daemon = Tgtd(control);
    let mut c = volume_agent::IscsiConfig::new(FileConfig::new(&dir.path().join("volumes")));
    c.control_port = control;
    c.portal = format!("127.0.0.1:{}", 33000 + control);
    c.target_prefix = format!("iqn.2010-10.org.stratus.test{control}:");
    let d = volume_agent::IscsiDriver::new(c).unwrap();
    assert_eq!((d.name(), d.storage_protocol()), ("iscsi", "iSCSI"));
    d.create("v1", 1).await.unwrap();
    let src = dir.path().join("src.raw");
    std::fs::write(&src, pattern()).unwrap();
    d.import("v1", &src, "raw").await.unwrap();

    let (h1, h2, h3) = ("iqn.2026-11.org.stratus:h1", "iqn.2026-11.org.stratus:h2", "iqn.2026-11.org.stratus:h3");
    assert!(d.connection_info("v1", &serde_json::json!({"host": "h1"})).await.is_err(), "no initiator");
    let info = d.connection_info("v1", &serde_json::json!({"host": "h1", "initiator": h1})).await.unwrap();
    assert_eq!(info["driver_volume_type"], "iscsi");
    assert_eq!(info["data"]["target_lun"], 1);
    assert_eq!(info["data"]["target_iqn"], format!("iqn.2010-10.org.stratus.test{control}:volume-v1"));
    assert_eq!(read_lun_settled(&info, h1, dir.path()).unwrap(), pattern(), "the connected host reads the volume");
    let refused = read_lun(&info, h3, dir.path()).unwrap_err();
    assert!(refused.contains("Failed to log in") || refused.contains("not found"), "{refused}");
    // A second host shares the target; connecting again is idempotent.
    let again = d.connection_info("v1", &serde_json::json!({"initiator": h2})).await.unwrap();
    assert_eq!(again, info);
    d.connection_info("v1", &serde_json::json!({"initiator": h2})).await.unwrap();
    assert!(read_lun_settled(&info, h2, dir.path()).is_ok());

    // h1 disconnects: h2 keeps the target; when h2 goes too the target is gone.
    d.terminate_connection("v1", &serde_json::json!({"initiator": h1})).await.unwrap();
    assert!(read_lun(&info, h1, dir.path()).is_err(), "h1 is out");
    assert!(read_lun_settled(&info, h2, dir.path()).is_ok(), "h2 still in");
    d.terminate_connection("v1", &serde_json::json!({"initiator": h2})).await.unwrap();
    assert!(read_lun(&info, h2, dir.path()).is_err());
    d.terminate_connection("v1", &serde_json::json!({"initiator": h2})).await.unwrap();

    // Deleting an exported volume removes its target with it.
    d.connection_info("v1", &serde_json::json!({"initiator": h1})).await.unwrap();
    d.delete("v1").await.unwrap();
    assert!(read_lun(&info, h1, dir.path()).is_err());
    assert!(!dir.path().join("volumes/volume-v1").exists());
    assert!(d.connection_info("v1", &serde_json::json!({"initiator": h1})).await.is_err(), "no volume, no export");
}
