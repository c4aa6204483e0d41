//! Servers wired to the block storage service, both in one cloud (the volume agent's `file` driver, the compute
//! agent's `fake` one): `os-volume_attachments` through the attachments API and the volume statuses it walks,
//! upstream's error statuses, `volumes_attached` in server views, boot from a volume made from an image with
//! `delete_on_termination`, and the `os-volumes`/`os-snapshots` proxies (gone at 2.36).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use test_utils::{Client, Response, TestCloud};

use crate::servers::{image, status, wait_agent, wait_for};

fn vol_url(c: &Client, path: &str) -> String {
    format!("/volume/v3/{}{path}", c.token_body["token"]["project"]["id"].as_str().unwrap_or_default())
}

async fn compute(c: &Client, method: Method, path: &str, body: Option<Value>, mv: &str) -> Response {
    c.request(method, &format!("/compute/v2.1{path}"), body.as_ref(), &[("OpenStack-API-Version", &format!("compute {mv}"))]).await
}

async fn volume_status(c: &Client, id: &str) -> Option<String> {
    let r = c.get(&vol_url(c, &format!("/volumes/{id}"))).await;
    (r.status == 200).then(|| r.json()["volume"]["status"].as_str().unwrap_or_default().to_string())
}

async fn wait_volume(c: &Client, id: &str, want: Option<&str>) {
    for _ in 0..300 {
        let now = volume_status(c, id).await;
        if now.as_deref() == want {
            return;
        }
        assert!(!now.as_deref().unwrap_or_default().starts_with("error"), "volume {id} went to {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("volume {id} never reached {want:?} (now {:?})", volume_status(c, id).await);
}

async fn wait_backend(admin: &Client) {
    for _ in 0..100 {
        let r = admin.get(&vol_url(admin, "/os-services?binary=cinder-volume")).await;
        if r.json()["services"].as_array().is_some_and(|s| s.iter().any(|s| s["state"] == "up")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no volume backend reported");
}

async fn new_volume(c: &Client, body: Value) -> String {
    let r = c.post(&vol_url(c, "/volumes"), &json!({"volume": body})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["volume"]["id"].as_str().unwrap().to_string();
    wait_volume(c, &id, Some("available")).await;
    id
}

async fn boot(c: &Client, server: Value) -> String {
    let r = compute(c, Method::POST, "/servers", Some(json!({"server": server})), "2.79").await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json()["server"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn attach_list_show_and_detach_a_volume() {
    let cloud = TestCloud::start_with(|c| c.volume_agent.report_interval = 1).await;
    wait_agent(&cloud).await;
    wait_backend(&cloud.admin).await;
    let m = &cloud.member;
    let img = image(m).await;
    let id = boot(m, json!({"name": "vols", "imageRef": img, "flavorRef": "1", "networks": "none"})).await;
    status(m, &id, "ACTIVE").await;
    let vol = new_volume(m, json!({"size": 1})).await;
    let path = format!("/servers/{id}/os-volume_attachments");

    let body = json!({"volumeAttachment": {"volumeId": vol, "device": "/dev/vdb", "tag": "data", "delete_on_termination": true}});
    assert_eq!(compute(m, Method::POST, &path, Some(body.clone()), "2.48").await.status, 400, "tag before 2.49");
    let r = compute(m, Method::POST, &path, Some(body), "2.79").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let att = r.json()["volumeAttachment"].clone();
    assert_eq!(att["volumeId"], vol.as_str());
    assert_eq!(att["serverId"], id.as_str());
    assert_eq!(att["device"], "/dev/vdb");
    assert_eq!(att["tag"], "data");
    assert_eq!(att["delete_on_termination"], true);
    wait_volume(m, &vol, Some("in-use")).await;
    let v = m.get(&vol_url(m, &format!("/volumes/{vol}"))).await.json()["volume"].clone();
    assert_eq!(v["attachments"][0]["server_id"], id.as_str());

    let list = compute(m, Method::GET, &path, None, "2.1").await.json()["volumeAttachments"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("tag").is_none(), "no tag before 2.70: {list}");
    let shown = compute(m, Method::GET, &format!("{path}/{vol}"), None, "2.79").await;
    assert_eq!(shown.json()["volumeAttachment"], att);
    let s = compute(m, Method::GET, &format!("/servers/{id}"), None, "2.3").await.json()["server"].clone();
    assert_eq!(s["os-extended-volumes:volumes_attached"], json!([{"id": vol, "delete_on_termination": true}]));

    // Upstream's errors: attached already (400), unknown volume (404), not attached (404), bad body (400).
    let again = json!({"volumeAttachment": {"volumeId": vol}});
    assert_eq!(compute(m, Method::POST, &path, Some(again), "2.1").await.status, 400);
    let unknown = json!({"volumeAttachment": {"volumeId": "3b2f0000-0000-0000-0000-000000000000"}});
    assert_eq!(compute(m, Method::POST, &path, Some(unknown), "2.1").await.status, 404);
    let bad = json!({"volumeAttachment": {"volumeId": "not-a-uuid"}});
    assert_eq!(compute(m, Method::POST, &path, Some(bad), "2.1").await.status, 400);
    let missing = format!("{path}/3b2f0000-0000-0000-0000-000000000000");
    assert_eq!(compute(m, Method::GET, &missing, None, "2.1").await.status, 404);
    assert_eq!(compute(m, Method::DELETE, &missing, None, "2.1").await.status, 404);
    // The same volume cannot go to a second server.
    let other = boot(m, json!({"name": "other", "imageRef": img, "flavorRef": "1", "networks": "none"})).await;
    status(m, &other, "ACTIVE").await;
    let r = compute(m, Method::POST, &format!("/servers/{other}/os-volume_attachments"), Some(json!({"volumeAttachment": {"volumeId": vol}})), "2.1").await;
    assert_eq!(r.status, 400, "{}", r.text);

    assert_eq!(compute(m, Method::DELETE, &format!("{path}/{vol}"), None, "2.1").await.status, 202);
    wait_volume(m, &vol, Some("available")).await;
    assert_eq!(compute(m, Method::GET, &path, None, "2.1").await.json()["volumeAttachments"], json!([]));
    let s = compute(m, Method::GET, &format!("/servers/{id}"), None, "2.1").await.json()["server"].clone();
    assert_eq!(s["os-extended-volumes:volumes_attached"], json!([]));

    // Attached again and the server deleted: delete_on_termination false keeps the volume, available.
    let r = compute(m, Method::POST, &path, Some(json!({"volumeAttachment": {"volumeId": vol}})), "2.1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait_volume(m, &vol, Some("in-use")).await;
    assert_eq!(compute(m, Method::DELETE, &format!("/servers/{id}"), None, "2.1").await.status, 204);
    assert!(wait_for(m, &id, |_| false).await.is_null());
    wait_volume(m, &vol, Some("available")).await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn boot_from_a_volume_made_from_an_image() {
    let cloud = TestCloud::start_with(|c| c.volume_agent.report_interval = 1).await;
    wait_agent(&cloud).await;
    wait_backend(&cloud.admin).await;
    let m = &cloud.member;
    let img = image(m).await;
    let extra = new_volume(m, json!({"size": 1})).await;
    let bdm = json!([
        {"source_type": "image", "destination_type": "volume", "uuid": img, "volume_size": 1, "boot_index": 0, "delete_on_termination": true},
        {"source_type": "volume", "destination_type": "volume", "uuid": extra, "boot_index": 1},
    ]);
    let id = boot(m, json!({"name": "bfv", "flavorRef": "1", "networks": "none", "block_device_mapping_v2": bdm})).await;
    status(m, &id, "ACTIVE").await;
    let s = compute(m, Method::GET, &format!("/servers/{id}"), None, "2.3").await.json()["server"].clone();
    assert_eq!(s["image"], "", "a volume-backed server has no image");
    let attached = s["os-extended-volumes:volumes_attached"].as_array().unwrap().clone();
    assert_eq!(attached.len(), 2, "{s}");
    let root = attached[0]["id"].as_str().unwrap().to_string();
    assert_eq!(attached[0]["delete_on_termination"], true);
    assert_eq!(attached[1]["id"], extra.as_str());
    wait_volume(m, &root, Some("in-use")).await;
    wait_volume(m, &extra, Some("in-use")).await;
    let list = compute(m, Method::GET, &format!("/servers/{id}/os-volume_attachments"), None, "2.79").await.json();
    assert_eq!(list["volumeAttachments"][0]["device"], "/dev/vda");
    // The root volume cannot be detached.
    let r = compute(m, Method::DELETE, &format!("/servers/{id}/os-volume_attachments/{root}"), None, "2.1").await;
    assert_eq!(r.status, 400, "{}", r.text);

    // A snapshot of a volume-backed server: volume snapshots, and an active image without data that maps them.
    let r = compute(m, Method::POST, &format!("/servers/{id}/action"), Some(json!({"createImage": {"name": "bfv-snap"}})), "2.45").await;
    assert_eq!(r.status, 202, "{}", r.text);
    let image_id = r.json()["image_id"].as_str().unwrap().to_string();
    let snap_image = m.get(&format!("/image/v2/images/{image_id}")).await.json();
    assert_eq!(snap_image["status"], "active", "{snap_image}");
    assert_eq!(snap_image["bdm_v2"], "True");
    let mappings: Value = serde_json::from_str(snap_image["block_device_mapping"].as_str().unwrap()).unwrap();
    assert_eq!(mappings.as_array().unwrap().len(), 2, "{mappings}");
    assert_eq!(mappings[0]["boot_index"], 0);
    let snapshot_id = mappings[0]["snapshot_id"].as_str().unwrap().to_string();
    let snapshot = m.get(&vol_url(m, &format!("/snapshots/{snapshot_id}"))).await.json()["snapshot"].clone();
    assert_eq!(snapshot["volume_id"], root.as_str());
    // A volume with snapshots cannot be deleted: the snapshot goes first.
    let snap_path = vol_url(m, &format!("/snapshots/{snapshot_id}"));
    for _ in 0..100 {
        if m.get(&snap_path).await.json()["snapshot"]["status"] == "available" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(m.delete(&snap_path).await.status, 202);
    for _ in 0..100 {
        if m.get(&snap_path).await.status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad mappings: a volume that is in use, an image volume without a size.
    let in_use = json!([{"source_type": "volume", "destination_type": "volume", "uuid": extra, "boot_index": 0}]);
    let r = compute(m, Method::POST, "/servers", Some(json!({"server": {"name": "x", "flavorRef": "1", "networks": "none", "block_device_mapping_v2": in_use}})), "2.37").await;
    assert_eq!(r.status, 400, "{}", r.text);
    let plain = new_volume(m, json!({"size": 1})).await;
    let not_bootable = json!([{"source_type": "volume", "destination_type": "volume", "uuid": plain, "boot_index": 0}]);
    let r = compute(m, Method::POST, "/servers", Some(json!({"server": {"name": "x", "flavorRef": "1", "networks": "none", "block_device_mapping_v2": not_bootable}})), "2.37").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("is not bootable"), "{}", r.text);
    let no_size = json!([{"source_type": "image", "destination_type": "volume", "uuid": img, "boot_index": 0}]);
    let r = compute(m, Method::POST, "/servers", Some(json!({"server": {"name": "x", "flavorRef": "1", "networks": "none", "block_device_mapping_v2": no_size}})), "2.37").await;
    assert_eq!(r.status, 400, "{}", r.text);

    // Delete: the root volume goes with the server, the other one stays, available.
    assert_eq!(compute(m, Method::DELETE, &format!("/servers/{id}"), None, "2.1").await.status, 204);
    assert!(wait_for(m, &id, |_| false).await.is_null());
    wait_volume(m, &root, None).await;
    wait_volume(m, &extra, Some("available")).await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn volume_and_snapshot_proxies_until_2_36() {
    let cloud = TestCloud::start_with(|c| c.volume_agent.report_interval = 1).await;
    wait_backend(&cloud.admin).await;
    let m = &cloud.member;
    let r = compute(m, Method::POST, "/os-volumes", Some(json!({"volume": {"size": 1, "display_name": "proxied"}})), "2.1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let vol = r.json()["volume"].clone();
    assert_eq!(vol["displayName"], "proxied");
    let id = vol["id"].as_str().unwrap().to_string();
    wait_volume(m, &id, Some("available")).await;
    let shown = compute(m, Method::GET, &format!("/os-volumes/{id}"), None, "2.1").await.json()["volume"].clone();
    assert_eq!(shown["status"], "available");
    assert_eq!(shown["attachments"], json!([{}]));
    let list = compute(m, Method::GET, "/os-volumes/detail", None, "2.35").await.json()["volumes"].clone();
    assert!(list.as_array().unwrap().iter().any(|v| v["id"] == id.as_str()));
    assert_eq!(compute(m, Method::GET, "/os-volumes", None, "2.36").await.status, 404);
    assert_eq!(compute(m, Method::GET, "/os-volumes/3b2f0000-0000-0000-0000-000000000000", None, "2.1").await.status, 404);

    let r = compute(m, Method::POST, "/os-snapshots", Some(json!({"snapshot": {"volume_id": id, "display_name": "snap"}})), "2.1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let snap = r.json()["snapshot"].clone();
    assert_eq!(snap["volumeId"], id.as_str());
    let sid = snap["id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        let s = compute(m, Method::GET, &format!("/os-snapshots/{sid}"), None, "2.1").await.json()["snapshot"].clone();
        if s["status"] == "available" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(compute(m, Method::GET, "/os-snapshots/detail", None, "2.1").await.json()["snapshots"][0]["displayName"], "snap");
    assert_eq!(compute(m, Method::GET, "/os-snapshots", None, "2.36").await.status, 404);
    assert_eq!(compute(m, Method::DELETE, &format!("/os-snapshots/{sid}"), None, "2.1").await.status, 202);
    for _ in 0..100 {
        if compute(m, Method::GET, &format!("/os-snapshots/{sid}"), None, "2.1").await.status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(compute(m, Method::DELETE, &format!("/os-volumes/{id}"), None, "2.1").await.status, 202);
    wait_volume(m, &id, None).await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_build_whose_volume_fails_ends_in_error_and_releases_its_volumes() {
    let cloud = TestCloud::start_with(|c| c.volume_agent.report_interval = 1).await;
    wait_agent(&cloud).await;
    wait_backend(&cloud.admin).await;
    let m = &cloud.member;
    let img = image(m).await;
    // An image that claims to be qcow2 but is not: the volume made from it goes to `error`.
    let r = m.post("/image/v2/images", &json!({"name": "bad", "disk_format": "qcow2", "container_format": "bare"})).await;
    let bad = r.json()["id"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{}/image/v2/images/{bad}/file", cloud.url))
        .header("X-Auth-Token", m.token.clone().unwrap())
        .header("Content-Type", "application/octet-stream")
        .body(vec![7u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    let kept = new_volume(m, json!({"size": 1})).await;
    let bdm = json!([
        {"source_type": "image", "destination_type": "volume", "uuid": img, "volume_size": 1, "boot_index": 0, "delete_on_termination": true},
        {"source_type": "volume", "destination_type": "volume", "uuid": kept, "boot_index": 1},
        {"source_type": "image", "destination_type": "volume", "uuid": bad, "volume_size": 1, "boot_index": 2, "delete_on_termination": true},
    ]);
    let id = boot(m, json!({"name": "doomed", "flavorRef": "1", "networks": "none", "block_device_mapping_v2": bdm})).await;
    let s = status(m, &id, "ERROR").await;
    assert!(s["fault"]["message"].as_str().unwrap().contains("Volume"), "{s}");
    let s = compute(m, Method::GET, &format!("/servers/{id}"), None, "2.3").await.json()["server"].clone();
    assert_eq!(s["os-extended-volumes:volumes_attached"], json!([]), "the mappings are gone: {s}");
    // The volumes compute made are deleted, the user's is free again.
    let r = m.get(&vol_url(m, "/volumes/detail")).await.json()["volumes"].clone();
    for _ in 0..100 {
        let left = m.get(&vol_url(m, "/volumes/detail")).await.json()["volumes"].as_array().unwrap().len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = m.get(&vol_url(m, "/volumes/detail")).await.json()["volumes"].clone();
    assert_eq!(left.as_array().unwrap().len(), 1, "before: {r}\nafter: {left}");
    assert_eq!(left[0]["id"], kept.as_str());
    assert_eq!(left[0]["status"], "available");
    cloud.shutdown().await;
}

/// From 2.20 a shelved-offloaded server (no host) gains and loses volumes: the attachment is only recorded (the
/// volume `in-use`, no device yet) and connected with a device name when the server is unshelved onto a host.
#[tokio::test]
async fn attach_and_detach_volumes_of_an_offloaded_server() {
    let cloud = TestCloud::start_with(|c| c.volume_agent.report_interval = 1).await;
    wait_agent(&cloud).await;
    wait_backend(&cloud.admin).await;
    let m = &cloud.member;
    let img = image(m).await;
    let id = boot(
        m,
        json!({"name": "offl", "imageRef": img, "flavorRef": "1", "networks": "none"}),
    )
    .await;
    status(m, &id, "ACTIVE").await;
    assert_eq!(
        compute(
            m,
            Method::POST,
            &format!("/servers/{id}/action"),
            Some(json!({"shelve": null})),
            "2.1"
        )
        .await
        .status,
        202
    );
    status(m, &id, "SHELVED_OFFLOADED").await;
    let path = format!("/servers/{id}/os-volume_attachments");
    let kept = new_volume(m, json!({"size": 1})).await;
    let dropped = new_volume(m, json!({"size": 1})).await;

    // Before 2.20 a shelved server is in the wrong state.
    let body = json!({"volumeAttachment": {"volumeId": kept}});
    let r = compute(m, Method::POST, &path, Some(body.clone()), "2.19").await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = compute(m, Method::POST, &path, Some(body), "2.20").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json()["volumeAttachment"]["device"].is_null(),
        "no device without a host: {}",
        r.text
    );
    wait_volume(m, &kept, Some("in-use")).await;
    let r = compute(
        m,
        Method::POST,
        &path,
        Some(json!({"volumeAttachment": {"volumeId": dropped}})),
        "2.20",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait_volume(m, &dropped, Some("in-use")).await;

    // Detached while offloaded: available again, the mapping gone.
    assert_eq!(
        compute(
            m,
            Method::DELETE,
            &format!("{path}/{dropped}"),
            None,
            "2.19"
        )
        .await
        .status,
        409
    );
    assert_eq!(
        compute(
            m,
            Method::DELETE,
            &format!("{path}/{dropped}"),
            None,
            "2.20"
        )
        .await
        .status,
        202
    );
    wait_volume(m, &dropped, Some("available")).await;
    let list =
        compute(m, Method::GET, &path, None, "2.20").await.json()["volumeAttachments"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // Unshelved onto a host: the kept volume is connected there and named.
    assert_eq!(
        compute(
            m,
            Method::POST,
            &format!("/servers/{id}/action"),
            Some(json!({"unshelve": null})),
            "2.20"
        )
        .await
        .status,
        202
    );
    status(m, &id, "ACTIVE").await;
    let shown = compute(m, Method::GET, &format!("{path}/{kept}"), None, "2.20").await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(
        shown.json()["volumeAttachment"]["device"],
        "/dev/vdb",
        "{}",
        shown.text
    );
    wait_volume(m, &kept, Some("in-use")).await;
    let v = m.get(&vol_url(m, &format!("/volumes/{kept}"))).await.json()["volume"].clone();
    assert_eq!(v["attachments"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["attachments"][0]["server_id"], id.as_str());
    assert!(
        v["attachments"][0]["host_name"].is_string(),
        "connected to a host: {v}"
    );
    cloud.shutdown().await;
}

/// `os-assisted-volume-snapshots`: for services and administrators; the server is found by the volume's mapping,
/// the agent's driver continues the disk on the new file, and the block storage service's snapshot hears how it
/// went (upstream's `creating` at 90%).
#[tokio::test]
async fn assisted_volume_snapshots() {
    let cloud = TestCloud::start_with(|c| c.volume_agent.report_interval = 1).await;
    wait_agent(&cloud).await;
    wait_backend(&cloud.admin).await;
    let (m, admin) = (&cloud.member, &cloud.admin);
    let img = image(m).await;
    let id = boot(m, json!({"name": "avs", "imageRef": img, "flavorRef": "1", "networks": "none"})).await;
    status(m, &id, "ACTIVE").await;
    let vol = new_volume(m, json!({"size": 1})).await;
    let spare = new_volume(m, json!({"size": 1})).await;
    let r = compute(m, Method::POST, &format!("/servers/{id}/os-volume_attachments"), Some(json!({"volumeAttachment": {"volumeId": vol}})), "2.1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait_volume(m, &vol, Some("in-use")).await;
    let r = m.post(&vol_url(m, "/snapshots"), &json!({"snapshot": {"volume_id": vol, "force": true}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let snap = r.json()["snapshot"]["id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        if m.get(&vol_url(m, &format!("/snapshots/{snap}"))).await.json()["snapshot"]["status"] == "available" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let create = |volume: &str, info: Value| json!({"snapshot": {"volume_id": volume, "create_info": info}});
    let info = json!({"snapshot_id": snap, "type": "qcow2", "new_file": "volume.snap1", "id": snap});
    let r = compute(m, Method::POST, "/os-assisted-volume-snapshots", Some(create(&vol, info.clone())), "2.1").await;
    assert_eq!(r.status, 403, "members may not: {}", r.text);
    let r = compute(admin, Method::POST, "/os-assisted-volume-snapshots", Some(create(&vol, info.clone())), "2.1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({"snapshot": {"id": snap, "volumeId": vol}}));
    let mut progress = Value::Null;
    for _ in 0..100 {
        progress = admin.get(&vol_url(admin, &format!("/snapshots/{snap}"))).await.json()["snapshot"].clone();
        if progress["status"] == "creating" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(progress["status"], "creating", "the snapshot hears of the new file: {progress}");
    assert_eq!(progress["os-extended-snapshot-attributes:progress"], "90%", "{progress}");

    // Bad input: a volume attached to no server, another type, a path, a missing field.
    let r = compute(admin, Method::POST, "/os-assisted-volume-snapshots", Some(create(&spare, info.clone())), "2.1").await;
    assert_eq!(r.status, 400, "{}", r.text);
    let bad = [
        json!({"snapshot_id": snap, "type": "raw", "new_file": "x"}),
        json!({"snapshot_id": snap, "type": "qcow2", "new_file": "../x"}),
        json!({"snapshot_id": snap, "type": "qcow2"}),
    ];
    for b in bad {
        let r = compute(admin, Method::POST, "/os-assisted-volume-snapshots", Some(create(&vol, b.clone())), "2.1").await;
        assert_eq!(r.status, 400, "{b}: {}", r.text);
    }

    // Delete: the file merged away, the snapshot told `deleting`.
    let q = |info: Value| format!("/os-assisted-volume-snapshots/{snap}?delete_info={}", urlencode(&info.to_string()));
    let del = json!({"volume_id": vol, "file_to_merge": "volume.snap1", "merge_target_file": null, "type": "qcow2"});
    assert_eq!(compute(m, Method::DELETE, &q(del.clone()), None, "2.1").await.status, 403);
    let r = compute(admin, Method::DELETE, &q(del), None, "2.1").await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = compute(admin, Method::DELETE, &format!("/os-assisted-volume-snapshots/{snap}"), None, "2.1").await;
    assert_eq!(r.status, 400, "delete_info is required: {}", r.text);
    let r = compute(admin, Method::DELETE, &q(json!({"volume_id": spare})), None, "2.1").await;
    assert_eq!(r.status, 400, "{}", r.text);
    let mut state = Value::Null;
    for _ in 0..100 {
        state = admin.get(&vol_url(admin, &format!("/snapshots/{snap}"))).await.json()["snapshot"]["status"].clone();
        if state == "deleting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "deleting");
    cloud.shutdown().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
