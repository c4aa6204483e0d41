//! Data through the `file` driver: an image becomes a volume, a snapshot and a clone keep its bytes, a backup in
//! the object store restores them after the volume is gone, and a volume uploads back into an image.

use reqwest::Method;
use serde_json::json;

use crate::*;

fn pattern() -> Vec<u8> {
    (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect()
}

fn volume_bytes(cloud: &TestCloud, id: &str, len: usize) -> Vec<u8> {
    let path = cloud.running.data_dir.join("volumes").join(format!("volume-{id}"));
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    data[..len].to_vec()
}

#[tokio::test]
async fn image_snapshot_clone_backup_restore_upload() {
    let cloud = TestCloud::start_with(|c| {
        c.volume_agent.report_interval = 1;
        c.volume.backup_object_size = 64 << 20;
    })
    .await;
    let m = &cloud.member;
    wait_backend(&cloud.admin).await;

    // A raw image with a known pattern.
    let r = m.post("/image/v2/images", &json!({"name": "pattern", "disk_format": "raw", "container_format": "bare"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let image = r.json()["id"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/image/v2/images/{image}/file", cloud.url))
        .header("X-Auth-Token", m.token.clone().unwrap())
        .header("Content-Type", "application/octet-stream")
        .body(pattern())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);

    let v = volume(m, json!({"size": 1, "imageRef": image})).await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["bootable"], "true");
    assert_eq!(v["volume_image_metadata"]["image_id"], json!(image));
    assert_eq!(volume_bytes(&cloud, &id, 1 << 20), pattern());

    // Snapshot, then a volume from it; a clone of the volume.
    let r = post(m, "/snapshots", &json!({"snapshot": {"volume_id": id}})).await;
    let sid = r.json()["snapshot"]["id"].as_str().unwrap().to_string();
    wait_status(m, &format!("/snapshots/{sid}"), "snapshot", "available").await;
    let from_snap = volume(m, json!({"snapshot_id": sid, "size": 2})).await;
    assert_eq!(volume_bytes(&cloud, from_snap["id"].as_str().unwrap(), 1 << 20), pattern());
    let clone = volume(m, json!({"source_volid": id})).await;
    assert_eq!(volume_bytes(&cloud, clone["id"].as_str().unwrap(), 1 << 20), pattern());

    // Backup into the member's object-store account, delete the volume, restore into a new one.
    let r = post(m, "/backups", &json!({"backup": {"volume_id": clone["id"], "container": "mybackups"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let bid = r.json()["backup"]["id"].as_str().unwrap().to_string();
    let b = wait_status(m, &format!("/backups/{bid}"), "backup", "available").await;
    assert_eq!(b["object_count"], 16, "1 GiB in 64 MiB objects");
    let account = format!("/object-store/v1/AUTH_{}/mybackups", project(m));
    let objects = m.get(&format!("{account}?format=json")).await.json();
    assert_eq!(objects.as_array().unwrap().len(), 17, "chunks and the metadata object");
    let cid = clone["id"].as_str().unwrap().to_string();
    assert_eq!(delete(m, &format!("/volumes/{cid}")).await.status, 202);
    wait_gone(m, &format!("/volumes/{cid}")).await;
    let r = post(m, &format!("/backups/{bid}/restore"), &json!({"restore": {"name": "restored"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let restored = r.json()["restore"]["volume_id"].as_str().unwrap().to_string();
    wait_status(m, &format!("/volumes/{restored}"), "volume", "available").await;
    assert_eq!(volume_bytes(&cloud, &restored, 1 << 20), pattern());
    assert_eq!(delete(m, &format!("/backups/{bid}")).await.status, 202);
    wait_gone(m, &format!("/backups/{bid}")).await;
    assert_eq!(m.get(&format!("{account}?format=json")).await.json(), json!([]));

    // Upload the restored volume as a qcow2 image.
    let r = post(m, &format!("/volumes/{restored}/action"), &json!({"os-volume_upload_image": {"image_name": "up", "disk_format": "qcow2"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let up = r.json()["os-volume_upload_image"]["image_id"].as_str().unwrap().to_string();
    wait_status(m, &format!("/volumes/{restored}"), "volume", "available").await;
    let img = m.get(&format!("/image/v2/images/{up}")).await.json();
    assert_eq!((img["status"].as_str(), img["disk_format"].as_str()), (Some("active"), Some("qcow2")));
    let r = call(m, Method::GET, "/volumes/detail?name=restored", None, "3.0").await;
    assert_eq!(r.json()["volumes"].as_array().unwrap().len(), 1);
    cloud.shutdown().await;
}

#[tokio::test]
async fn revert_copies_the_snapshot_back_and_keeps_the_size() {
    let cloud = TestCloud::start_with(|c| c.volume_agent.report_interval = 1).await;
    let m = &cloud.member;
    wait_backend(&cloud.admin).await;
    let v = volume(m, json!({"size": 1})).await;
    let id = v["id"].as_str().unwrap().to_string();
    let r = post(m, "/snapshots", &json!({"snapshot": {"volume_id": id}})).await;
    let sid = r.json()["snapshot"]["id"].as_str().unwrap().to_string();
    wait_status(m, &format!("/snapshots/{sid}"), "snapshot", "available").await;

    // The volume changes after the snapshot: new data, and it grows.
    let path = cloud.running.data_dir.join("volumes").join(format!("volume-{id}"));
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&pattern()).unwrap();
    }
    assert_eq!(volume_bytes(&cloud, &id, 1 << 20), pattern());
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &json!({"os-extend": {"new_size": 2}})).await.status, 202);
    wait_status(m, &format!("/volumes/{id}"), "volume", "available").await;

    let r = call(m, Method::POST, &format!("/volumes/{id}/action"), Some(&json!({"revert": {"snapshot_id": sid}})), "3.40").await;
    assert_eq!(r.status, 202, "{}", r.text);
    let v = wait_status(m, &format!("/volumes/{id}"), "volume", "available").await;
    assert_eq!(v["size"], 2);
    assert_eq!(volume_bytes(&cloud, &id, 1 << 20), vec![0u8; 1 << 20], "the snapshot's (empty) data is back");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 << 30, "the volume keeps its size");
    cloud.shutdown().await;
}
