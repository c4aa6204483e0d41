//! The API's rules: lifecycles, listings, errors in Cinder's shape, quotas, types, attachments.

use reqwest::Method;
use serde_json::json;

use crate::*;

#[tokio::test]
async fn versions_and_discovery() {
    let cloud = fake_cloud().await;
    let r = cloud.anonymous.get("/volume/").await;
    assert_eq!(r.status, 300);
    let v = &r.json()["versions"][0];
    assert_eq!((v["id"].as_str(), v["min_version"].as_str()), (Some("v3.0"), Some("3.0")));
    let r = cloud.anonymous.get("/volume/v3/").await;
    assert_eq!(r.status, 200);
    let r = call(&cloud.member, Method::GET, "/volumes", None, "3.99").await;
    assert_eq!(r.status, 406);
    let r = call(&cloud.member, Method::GET, "/volumes", None, "latest").await;
    assert_eq!(r.header("openstack-api-version"), Some("volume 3.44"));
    let catalog = cloud.admin.get("/identity/v3/auth/catalog").await.json();
    let types: Vec<&str> = catalog["catalog"].as_array().unwrap().iter().filter_map(|s| s["type"].as_str()).collect();
    assert!(types.contains(&"block-storage") && types.contains(&"volumev3"), "{types:?}");
    let exts = get(&cloud.member, "/extensions").await.json();
    assert!(exts["extensions"].as_array().unwrap().len() > 5);
    let zones = get(&cloud.member, "/os-availability-zone").await.json();
    assert_eq!(zones["availabilityZoneInfo"][0]["zoneName"], "nova");
    cloud.shutdown().await;
}

#[tokio::test]
async fn volume_and_snapshot_lifecycle() {
    let cloud = fake_cloud().await;
    let m = &cloud.member;
    wait_backend(&cloud.admin).await;
    let v = volume(m, json!({"size": 1, "name": "one", "metadata": {"a": "1"}})).await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!((v["bootable"].as_str(), v["volume_type"].as_str()), (Some("false"), Some("__DEFAULT__")));
    assert!(v.get("os-vol-host-attr:host").is_none(), "members do not see the host");
    let admin_view = get(&cloud.admin, &format!("/volumes/{id}")).await.json();
    assert!(admin_view["volume"]["os-vol-host-attr:host"].as_str().unwrap().contains('@'));

    // Listing: filters, detail, paging.
    volume(m, json!({"size": 2, "name": "two"})).await;
    let r = get(m, "/volumes?name=one").await.json();
    assert_eq!(r["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(r["volumes"][0].as_object().unwrap().len(), 3, "id, name, links");
    let r = get(m, "/volumes/detail?limit=1").await.json();
    assert_eq!(r["volumes"].as_array().unwrap().len(), 1);
    assert!(r["volumes_links"][0]["href"].as_str().unwrap().contains("marker="));
    assert_eq!(get(m, "/volumes/detail?status=bogus").await.json()["volumes"], json!([]));
    assert_eq!(get(m, "/volumes/detail?metadata=%7B%27a%27%3A+%271%27%7D").await.json()["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(get(m, "/volumes?sort=size:asc").await.json()["volumes"][0]["name"], "one");

    // Update, metadata, flags.
    let r = put(m, &format!("/volumes/{id}"), &json!({"volume": {"name": "uno", "description": "d"}})).await;
    assert_eq!((r.status.as_u16(), r.json()["volume"]["name"].as_str()), (200, Some("uno")));
    let r = post(m, &format!("/volumes/{id}/metadata"), &json!({"metadata": {"b": "2"}})).await;
    assert_eq!(r.json()["metadata"], json!({"a": "1", "b": "2"}));
    let r = put(m, &format!("/volumes/{id}/metadata/b"), &json!({"meta": {"b": "3"}})).await;
    assert_eq!(r.json()["meta"], json!({"b": "3"}));
    assert_eq!(delete(m, &format!("/volumes/{id}/metadata/a")).await.status, 200);
    assert_eq!(get(m, &format!("/volumes/{id}/metadata/a")).await.status, 404);
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &json!({"os-set_bootable": {"bootable": true}})).await.status, 200);
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &json!({"os-update_readonly_flag": {"readonly": true}})).await.status, 202);
    let v = get(m, &format!("/volumes/{id}")).await.json()["volume"].clone();
    assert_eq!((v["bootable"].as_str(), v["metadata"]["readonly"].as_str()), (Some("true"), Some("True")));

    // Extend: bigger only.
    let r = post(m, &format!("/volumes/{id}/action"), &json!({"os-extend": {"new_size": 1}})).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["badRequest"]["message"].as_str().unwrap().contains("greater than current size"), "{}", r.text);
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &json!({"os-extend": {"new_size": 3}})).await.status, 202);
    let v = wait_status(m, &format!("/volumes/{id}"), "volume", "available").await;
    assert_eq!(v["size"], 3);

    // Snapshots and a volume from one.
    let r = post(m, "/snapshots", &json!({"snapshot": {"volume_id": id, "name": "s1", "metadata": {"k": "v"}}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let sid = r.json()["snapshot"]["id"].as_str().unwrap().to_string();
    let s = wait_status(m, &format!("/snapshots/{sid}"), "snapshot", "available").await;
    assert_eq!((s["size"].as_i64(), s["os-extended-snapshot-attributes:progress"].as_str()), (Some(3), Some("100%")));
    let r = post(m, &format!("/snapshots/{sid}/metadata"), &json!({"metadata": {"k2": "v2"}})).await;
    assert_eq!(r.json()["metadata"], json!({"k": "v", "k2": "v2"}));
    let r = post(m, "/volumes", &json!({"volume": {"size": 1, "snapshot_id": sid}})).await;
    assert_eq!(r.status, 400, "smaller than the snapshot: {}", r.text);
    let from_snap = volume(m, json!({"snapshot_id": sid})).await;
    assert_eq!((from_snap["size"].as_i64(), from_snap["snapshot_id"].as_str()), (Some(3), Some(sid.as_str())));
    let r = delete(m, &format!("/volumes/{id}")).await;
    assert_eq!(r.status, 400, "a volume with snapshots stays: {}", r.text);
    assert_eq!(delete(m, &format!("/snapshots/{sid}")).await.status, 202);
    wait_gone(m, &format!("/snapshots/{sid}")).await;
    assert_eq!(delete(m, &format!("/volumes/{id}")).await.status, 202);
    wait_gone(m, &format!("/volumes/{id}")).await;

    // Another project's volume is not there.
    let other = from_snap["id"].as_str().unwrap();
    assert_eq!(get(&cloud.reader, &format!("/volumes/{other}")).await.status, 200, "same project, reader");
    let admin_view = cloud.admin.get(&format!("/volume/v3/{}/volumes/{other}", project(&cloud.admin))).await;
    assert_eq!(admin_view.status, 200, "admins see every project's volumes");
    cloud.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_cinders_errors_and_changes_nothing() {
    let cloud = fake_cloud().await;
    let m = &cloud.member;
    wait_backend(&cloud.admin).await;
    for size in [json!(0), json!(-1), json!("abc"), json!("")] {
        let r = post(m, "/volumes", &json!({"volume": {"size": size}})).await;
        assert_eq!(r.status, 400, "{size}");
        assert_eq!(r.json()["badRequest"]["code"], 400);
    }
    let r = get(m, "/volumes/00000000-0000-0000-0000-000000000000").await;
    assert_eq!((r.status.as_u16(), r.json()["itemNotFound"]["code"].as_i64()), (404, Some(404)));
    for (key, value) in [("snapshot_id", "nope"), ("source_volid", "nope"), ("volume_type", "nope")] {
        let r = post(m, "/volumes", &json!({"volume": {"size": 1, key: value}})).await;
        assert_eq!(r.status, 404, "{key}: {}", r.text);
    }
    assert_eq!(post(m, "/snapshots", &json!({"snapshot": {"volume_id": "nope"}})).await.status, 404);
    assert_eq!(post(m, "/snapshots", &json!({"snapshot": {}})).await.status, 404, "no volume_id: upstream answers 404");

    // An attached volume cannot be deleted; the attempt leaves it as it was.
    let v = volume(m, json!({"size": 1})).await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &json!({"os-reserve": {}})).await.status, 202);
    assert_eq!(get(m, &format!("/volumes/{id}")).await.json()["volume"]["status"], "attaching");
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &json!({"os-reserve": {}})).await.status, 400, "reserved twice");
    let attach = json!({"os-attach": {"instance_uuid": "1e8b5a4c-0b6f-4c62-9b2a-6a3f7f5d6a11", "mountpoint": "/dev/vdb"}});
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &attach).await.status, 202);
    let v = get(m, &format!("/volumes/{id}")).await.json()["volume"].clone();
    assert_eq!(v["status"], "in-use");
    assert_eq!(v["attachments"][0]["device"], "/dev/vdb");
    let r = delete(m, &format!("/volumes/{id}")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = post(m, &format!("/volumes/{id}/action"), &json!({"os-extend": {"new_size": 2}})).await;
    assert_eq!(r.status, 400, "in-use extend needs 3.42");
    let v = get(m, &format!("/volumes/{id}")).await.json()["volume"].clone();
    assert_eq!((v["status"].as_str(), v["size"].as_i64()), (Some("in-use"), Some(1)));
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &json!({"os-begin_detaching": {}})).await.status, 202);
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &json!({"os-roll_detaching": {}})).await.status, 202);
    let aid = v["attachments"][0]["attachment_id"].as_str().unwrap();
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &json!({"os-detach": {"attachment_id": aid}})).await.status, 202);
    assert_eq!(get(m, &format!("/volumes/{id}")).await.json()["volume"]["status"], "available");

    // Members may not act as admins.
    assert_eq!(post(m, &format!("/volumes/{id}/action"), &json!({"os-reset_status": {"status": "error"}})).await.status, 403);
    assert_eq!(post(m, "/types", &json!({"volume_type": {"name": "x"}})).await.status, 403);

    // Beyond quota: 413, and nothing is created.
    let demo = project(m);
    let r = call(&cloud.admin, Method::PUT, &format!("/os-quota-sets/{demo}"), Some(&json!({"quota_set": {"volumes": 1}})), "3.0").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before = get(m, "/volumes").await.json()["volumes"].as_array().unwrap().len();
    let r = post(m, "/volumes", &json!({"volume": {"size": 1}})).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.json()["overLimit"]["message"].as_str().unwrap().contains("volumes"));
    assert_eq!(get(m, "/volumes").await.json()["volumes"].as_array().unwrap().len(), before);
    let usage = call(&cloud.admin, Method::GET, &format!("/os-quota-sets/{demo}?usage=true"), None, "3.0").await.json();
    assert_eq!(usage["quota_set"]["volumes"]["in_use"], 1);
    let limits = get(m, "/limits").await.json();
    assert_eq!(limits["limits"]["absolute"]["maxTotalVolumes"], 1);
    cloud.shutdown().await;
}

#[tokio::test]
async fn types_specs_access_and_scheduling() {
    let cloud = fake_cloud().await;
    let (a, m) = (&cloud.admin, &cloud.member);
    wait_backend(a).await;
    let r = post(a, "/types", &json!({"volume_type": {"name": "gold", "extra_specs": {"volume_backend_name": "nowhere"}}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let gold = r.json()["volume_type"]["id"].as_str().unwrap().to_string();
    assert_eq!(post(a, "/types", &json!({"volume_type": {"name": "gold"}})).await.status, 409);
    // No backend has that name: the volume goes to error, as upstream's "No valid backend".
    let r = post(m, "/volumes", &json!({"volume": {"size": 1, "volume_type": "gold"}})).await;
    assert_eq!(r.status, 202);
    let vid = r.json()["volume"]["id"].as_str().unwrap().to_string();
    wait_status(m, &format!("/volumes/{vid}"), "volume", "error").await;
    assert_eq!(delete(a, &format!("/types/{gold}")).await.status, 400, "in use");
    assert_eq!(delete(m, &format!("/volumes/{vid}")).await.status, 202);
    wait_gone(m, &format!("/volumes/{vid}")).await;
    // The backend's own name passes the capabilities filter.
    let r = post(a, &format!("/types/{gold}/extra_specs"), &json!({"extra_specs": {"volume_backend_name": "file"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = volume(m, json!({"size": 1, "volume_type": gold})).await;
    assert_eq!(v["volume_type"], "gold");
    assert_eq!(get(m, &format!("/types/{gold}/extra_specs")).await.json()["extra_specs"], json!({}), "users see no scheduler specs");

    // Private types: visible to granted projects only.
    let r = post(a, "/types", &json!({"volume_type": {"name": "private", "os-volume-type-access:is_public": false}})).await;
    let private = r.json()["volume_type"]["id"].as_str().unwrap().to_string();
    assert_eq!(get(m, &format!("/types/{private}")).await.status, 404);
    let demo = project(m);
    assert_eq!(post(a, &format!("/types/{private}/action"), &json!({"addProjectAccess": {"project": demo}})).await.status, 202);
    assert_eq!(get(m, &format!("/types/{private}")).await.status, 200);
    let access = get(a, &format!("/types/{private}/os-volume-type-access")).await.json();
    assert_eq!(access["volume_type_access"][0]["project_id"], json!(demo));

    // QoS specs and their association.
    let r = post(a, "/qos-specs", &json!({"qos_specs": {"name": "fast", "consumer": "back-end", "read_iops_sec": "1000"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let qos = r.json()["qos_specs"]["id"].as_str().unwrap().to_string();
    assert_eq!(get(a, &format!("/qos-specs/{qos}/associate?vol_type_id={private}")).await.status, 202);
    assert_eq!(get(a, &format!("/qos-specs/{qos}/associations")).await.json()["qos_associations"][0]["id"], json!(private));
    assert_eq!(delete(a, &format!("/qos-specs/{qos}")).await.status, 400);
    assert_eq!(delete(a, &format!("/qos-specs/{qos}?force=True")).await.status, 202);
    cloud.shutdown().await;
}

#[tokio::test]
async fn attachments_api_hands_out_connection_info() {
    let cloud = fake_cloud().await;
    let m = &cloud.member;
    wait_backend(&cloud.admin).await;
    let v = volume(m, json!({"size": 1})).await;
    let id = v["id"].as_str().unwrap();
    let server = "4f0e8a3c-5e0a-4b5f-8f3b-3c1b2b6a9d10";
    assert_eq!(call(m, Method::POST, "/attachments", Some(&json!({"attachment": {"volume_uuid": id}})), "3.0").await.status, 404);
    let r = call(m, Method::POST, "/attachments", Some(&json!({"attachment": {"volume_uuid": id, "instance_uuid": server}})), "3.27").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let a = r.json()["attachment"].clone();
    assert_eq!(a["status"], "reserved");
    assert_eq!(get(m, &format!("/volumes/{id}")).await.json()["volume"]["status"], "reserved");
    let aid = a["id"].as_str().unwrap();
    let connector = json!({"attachment": {"connector": {"host": "cn1", "ip": "192.0.2.1", "initiator": "iqn.x"}}});
    let r = call(m, Method::PUT, &format!("/attachments/{aid}"), Some(&connector), "3.27").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let info = &r.json()["attachment"]["connection_info"];
    assert_eq!((info["driver_volume_type"].as_str(), info["data"]["volume_id"].as_str()), (Some("fake"), Some(id)));
    // A second server may not attach a volume that is not multiattach.
    let other = json!({"attachment": {"volume_uuid": id, "instance_uuid": "9a5e5b0e-2c1d-4f5e-8a7b-1c2d3e4f5a6b"}});
    assert_eq!(call(m, Method::POST, "/attachments", Some(&other), "3.27").await.status, 400);
    let list = call(m, Method::GET, "/attachments", None, "3.27").await.json();
    assert_eq!(list["attachments"][0]["id"], json!(aid));
    // Nova's flow: the host connected, then the attachment completes (3.44) and the volume is in use.
    let complete = json!({"os-complete": null});
    assert_eq!(call(m, Method::POST, &format!("/attachments/{aid}/action"), Some(&complete), "3.27").await.status, 404);
    assert_eq!(call(m, Method::POST, &format!("/attachments/{aid}/action"), Some(&complete), "3.44").await.status, 204);
    let v = get(m, &format!("/volumes/{id}")).await.json()["volume"].clone();
    assert_eq!((v["status"].as_str(), v["attachments"][0]["server_id"].as_str()), (Some("in-use"), Some(server)));
    assert_eq!(call(m, Method::DELETE, &format!("/attachments/{aid}"), None, "3.27").await.status, 200);
    assert_eq!(get(m, &format!("/volumes/{id}")).await.json()["volume"]["status"], "available");
    cloud.shutdown().await;
}
