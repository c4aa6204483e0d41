//! Group types, generic volume groups, group snapshots, volume type encryption, backup records and revert.

use reqwest::Method;
use serde_json::{Value, json};

use crate::*;

const V: &str = "3.44";

async fn vget(c: &test_utils::Client, path: &str) -> test_utils::Response {
    call(c, Method::GET, path, None, V).await
}

async fn vpost(c: &test_utils::Client, path: &str, body: &Value) -> test_utils::Response {
    call(c, Method::POST, path, Some(body), V).await
}

async fn vput(c: &test_utils::Client, path: &str, body: &Value) -> test_utils::Response {
    call(c, Method::PUT, path, Some(body), V).await
}

async fn vdelete(c: &test_utils::Client, path: &str) -> test_utils::Response {
    call(c, Method::DELETE, path, None, V).await
}

async fn wait_v(c: &test_utils::Client, path: &str, key: &str, status: &str) -> Value {
    for _ in 0..600 {
        let doc = vget(c, path).await.json()[key].clone();
        if doc["status"] == json!(status) {
            return doc;
        }
        let now = doc["status"].as_str().unwrap_or("");
        assert!(!now.starts_with("error") || status.starts_with("error"), "{path} went to {now}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{path} never reached {status}");
}

async fn wait_gone_v(c: &test_utils::Client, path: &str) {
    for _ in 0..600 {
        if vget(c, path).await.status == 404 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{path} never went away");
}

async fn volume_in(c: &test_utils::Client, body: Value) -> Value {
    let r = vpost(c, "/volumes", &json!({"volume": body})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["volume"]["id"].as_str().unwrap().to_string();
    wait_v(c, &format!("/volumes/{id}"), "volume", "available").await
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn group_types_and_specs() {
    let cloud = fake_cloud().await;
    let (a, m) = (&cloud.admin, &cloud.member);
    assert_eq!(call(a, Method::GET, "/group_types", None, "3.10").await.status, 404, "from 3.11 on");
    let default = vget(a, "/group_types/default").await;
    assert_eq!((default.status.as_u16(), default.json()["group_type"]["name"].as_str()), (200, Some("default_group_type")));

    let body = json!({"group_type": {"name": "b-type", "description": "d", "is_public": false, "group_specs": {"consistent_group_snapshot_enabled": "<is> False"}}});
    assert_eq!(vpost(m, "/group_types", &body).await.status, 403, "administrators manage group types");
    let r = vpost(a, "/group_types", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let private = r.json()["group_type"].clone();
    assert_eq!((private["is_public"].as_bool(), private["group_specs"]["consistent_group_snapshot_enabled"].as_str()), (Some(false), Some("<is> False")));
    assert_eq!(vpost(a, "/group_types", &body).await.status, 409, "names are unique");
    let public = vpost(a, "/group_types", &json!({"group_type": {"name": "a-type"}})).await.json()["group_type"].clone();

    // Listing: sorted, `is_public` filters (and `None` means all) for administrators; users see public ones.
    let names = |v: Value| v["group_types"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let all = names(vget(a, "/group_types?sort=name:desc&is_public=None").await.json());
    assert!(all.iter().position(|n| n == "b-type") < all.iter().position(|n| n == "a-type"), "{all:?}");
    let private_only = names(vget(a, "/group_types?is_public=False").await.json());
    assert!(private_only.contains(&"b-type".to_string()) && !private_only.contains(&"a-type".to_string()));
    let users = vget(m, "/group_types").await.json();
    assert!(!names(users.clone()).contains(&"b-type".to_string()));
    assert!(users["group_types"][0].get("group_specs").is_none(), "users do not see specs");
    assert_eq!(vget(m, &format!("/group_types/{}", id(&private))).await.status, 404);

    // Update, specs.
    let r = vput(a, &format!("/group_types/{}", id(&public)), &json!({"group_type": {"name": "a2", "description": "new"}})).await;
    assert_eq!((r.status.as_u16(), r.json()["group_type"]["name"].as_str()), (200, Some("a2")));
    let specs = format!("/group_types/{}/group_specs", id(&public));
    let r = vpost(a, &specs, &json!({"group_specs": {"k1": "v1", "k2": "v2"}})).await;
    assert_eq!((r.status.as_u16(), r.json()["group_specs"].clone()), (202, json!({"k1": "v1", "k2": "v2"})));
    let r = vput(a, &format!("{specs}/k2"), &json!({"k2": "v2b"})).await;
    assert_eq!(r.json(), json!({"k2": "v2b"}));
    assert_eq!(vput(a, &format!("{specs}/k2"), &json!({"k3": "x"})).await.status, 400, "body and URI mismatch");
    assert_eq!(vget(a, &format!("{specs}/k2")).await.json(), json!({"k2": "v2b"}));
    assert_eq!(vget(a, &specs).await.json()["group_specs"], json!({"k1": "v1", "k2": "v2b"}));
    assert_eq!(vdelete(a, &format!("{specs}/k1")).await.status, 202);
    assert_eq!(vget(a, &format!("{specs}/k1")).await.status, 404);
    assert_eq!(vdelete(a, &format!("{specs}/k1")).await.status, 404);

    let default_id = default.json()["group_type"]["id"].as_str().unwrap().to_string();
    assert_eq!(vdelete(a, &format!("/group_types/{default_id}")).await.status, 400);
    assert_eq!(vdelete(a, &format!("/group_types/{}", id(&public))).await.status, 202);
    assert_eq!(vget(a, &format!("/group_types/{}", id(&public))).await.status, 404);
    cloud.shutdown().await;
}

#[tokio::test]
async fn groups_group_snapshots_and_groups_from_sources() {
    let cloud = fake_cloud().await;
    let (a, m) = (&cloud.admin, &cloud.member);
    wait_backend(a).await;
    let vt = vpost(a, "/types", &json!({"volume_type": {"name": "grouped"}})).await.json()["volume_type"].clone();
    let gt = vpost(a, "/group_types", &json!({"group_type": {"name": "gt"}})).await.json()["group_type"].clone();

    // Creation needs a group type and volume types.
    assert_eq!(vpost(m, "/groups", &json!({"group": {"volume_types": [id(&vt)]}})).await.status, 400);
    assert_eq!(vpost(m, "/groups", &json!({"group": {"group_type": id(&gt)}})).await.status, 400);
    assert_eq!(vpost(m, "/groups", &json!({"group": {"group_type": id(&gt), "volume_types": ["nope"]}})).await.status, 404);
    assert_eq!(call(m, Method::POST, "/groups", Some(&json!({"group": {"group_type": id(&gt), "volume_types": [id(&vt)]}})), "3.12").await.status, 404);
    let r = vpost(m, "/groups", &json!({"group": {"group_type": id(&gt), "volume_types": [id(&vt)], "name": "g1"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["group"].as_object().unwrap().len(), 2, "id and name");
    let g = wait_v(m, &format!("/groups/{}", id(&r.json()["group"])), "group", "available").await;
    let gid = id(&g);
    assert_eq!((g["group_type"].clone(), g["volume_types"].clone()), (gt["id"].clone(), json!([vt["id"]])));
    assert!(g["group_snapshot_id"].is_null() && g["source_group_id"].is_null() && g["replication_status"] == "disabled");

    // Volumes go into the group at creation; only of the group's types.
    let r = vpost(m, "/volumes", &json!({"volume": {"size": 1, "group_id": gid}})).await;
    assert_eq!(r.status, 400, "the default type is not the group's: {}", r.text);
    let v1 = volume_in(m, json!({"size": 1, "volume_type": id(&vt), "group_id": gid})).await;
    let v2 = volume_in(m, json!({"size": 1, "volume_type": id(&vt), "group_id": gid})).await;
    assert_eq!(v1["group_id"], json!(gid));
    let loose = volume_in(m, json!({"size": 1, "volume_type": id(&vt)})).await;
    assert!(loose["group_id"].is_null());
    assert!(get(m, &format!("/volumes/{}", id(&v1))).await.json()["volume"].get("group_id").is_none(), "before 3.13");
    let shown = vget(m, &format!("/groups/{gid}?list_volume=True")).await.json()["group"].clone();
    assert_eq!(shown["volumes"].as_array().unwrap().len(), 2);
    let listed = vget(m, "/groups/detail").await.json()["groups"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("volumes").is_none());
    assert_eq!(vget(m, "/groups").await.json()["groups"][0].as_object().unwrap().len(), 2);

    // Update: rename, remove and add volumes.
    let path = format!("/groups/{gid}");
    assert_eq!(vput(m, &path, &json!({"group": {}})).await.status, 400);
    let r = vput(m, &path, &json!({"group": {"name": "g1b", "description": "d", "remove_volumes": id(&v2)}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let in_group = |vols: Value| vols["volumes"].as_array().unwrap().iter().filter(|v| v["group_id"] == json!(gid)).count();
    assert_eq!(in_group(vget(m, "/volumes/detail").await.json()), 1);
    assert_eq!(vget(m, &path).await.json()["group"]["name"], "g1b");
    assert_eq!(vput(m, &path, &json!({"group": {"remove_volumes": id(&v2)}})).await.status, 400, "not in the group");
    assert_eq!(vput(m, &path, &json!({"group": {"add_volumes": format!("{},{}", id(&v2), id(&loose))}})).await.status, 202);
    assert_eq!(in_group(vget(m, "/volumes/detail").await.json()), 3);
    assert_eq!(vput(m, &path, &json!({"group": {"add_volumes": "nope"}})).await.status, 400);
    assert_eq!(vput(m, &path, &json!({"group": {"remove_volumes": id(&loose)}})).await.status, 202);

    // A group snapshot snapshots every volume of the group.
    let r = vpost(m, "/group_snapshots", &json!({"group_snapshot": {"group_id": gid, "name": "gs"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["group_snapshot"]["group_type_id"], gt["id"]);
    let gsid = id(&r.json()["group_snapshot"]);
    let gs = wait_v(m, &format!("/group_snapshots/{gsid}"), "group_snapshot", "available").await;
    assert_eq!((gs["group_id"].as_str(), gs["name"].as_str()), (Some(gid.as_str()), Some("gs")));
    let snaps: Vec<Value> = vget(m, "/snapshots/detail").await.json()["snapshots"].as_array().unwrap().iter().filter(|s| s["group_snapshot_id"] == json!(gsid)).cloned().collect();
    assert_eq!(snaps.len(), 2);
    assert!(snaps.iter().all(|s| s["status"] == "available"));
    assert_eq!(vdelete(m, &format!("/snapshots/{}", id(&snaps[0]))).await.status, 400, "a member goes with its group snapshot");
    assert_eq!(vget(m, "/group_snapshots").await.json()["group_snapshots"][0].as_object().unwrap().len(), 2);
    assert_eq!(vget(m, "/group_snapshots/detail").await.json()["group_snapshots"][0]["group_id"], json!(gid));
    let r = vpost(m, &format!("/groups/{gid}/action"), &json!({"delete": {"delete-volumes": true}})).await;
    assert_eq!(r.status, 400, "a group with group snapshots stays: {}", r.text);

    // Groups from the group snapshot and from the group.
    let r = vpost(m, "/groups/action", &json!({"create-from-src": {"name": "none"}})).await;
    assert_eq!(r.status, 400);
    let r = vpost(m, "/groups/action", &json!({"create-from-src": {"group_snapshot_id": gsid, "name": "from-gs"}})).await;
    assert_eq!((r.status.as_u16(), r.json()["group"]["name"].as_str()), (202, Some("from-gs")), "{}", r.text);
    let from_gs = wait_v(m, &format!("/groups/{}", id(&r.json()["group"])), "group", "available").await;
    assert_eq!(from_gs["group_snapshot_id"], json!(gsid));
    let r = vpost(m, "/groups/action", &json!({"create-from-src": {"source_group_id": gid, "name": "from-g"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let from_g = wait_v(m, &format!("/groups/{}", id(&r.json()["group"])), "group", "available").await;
    assert_eq!((from_g["source_group_id"].as_str(), from_g["volume_types"].clone()), (Some(gid.as_str()), json!([vt["id"]])));
    let vols = vget(m, "/volumes/detail").await.json();
    for new in [&from_gs, &from_g] {
        let members: Vec<&Value> = vols["volumes"].as_array().unwrap().iter().filter(|v| v["group_id"] == new["id"]).collect();
        assert_eq!(members.len(), 2);
        assert!(members.iter().all(|v| v["status"] == "available"));
    }

    // Reset status (administrators, 3.19 / 3.20).
    let reset = json!({"reset_status": {"status": "error"}});
    assert_eq!(vpost(m, &format!("/groups/{gid}/action"), &reset).await.status, 403);
    assert_eq!(call(a, Method::POST, &format!("/groups/{gid}/action"), Some(&reset), "3.19").await.status, 404);
    let as_admin = |p: &str| format!("/volume/v3/{}{p}", project(m));
    let r = a.request(Method::POST, &as_admin(&format!("/groups/{gid}/action")), Some(&reset), &[("OpenStack-API-Version", "volume 3.20")]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(vget(m, &path).await.json()["group"]["status"], "error");
    let bad = json!({"reset_status": {"status": "bogus"}});
    assert_eq!(a.request(Method::POST, &as_admin(&format!("/groups/{gid}/action")), Some(&bad), &[("OpenStack-API-Version", "volume 3.20")]).await.status, 400);
    let back = json!({"reset_status": {"status": "available"}});
    a.request(Method::POST, &as_admin(&format!("/groups/{gid}/action")), Some(&back), &[("OpenStack-API-Version", "volume 3.20")]).await;
    let r = a.request(Method::POST, &as_admin(&format!("/group_snapshots/{gsid}/action")), Some(&reset), &[("OpenStack-API-Version", "volume 3.19")]).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(vget(m, &format!("/group_snapshots/{gsid}")).await.json()["group_snapshot"]["status"], "error");

    // Deleting: the group snapshot with its snapshots; groups with their volumes, or empty ones without.
    assert_eq!(vdelete(m, &format!("/group_snapshots/{gsid}")).await.status, 202);
    wait_gone_v(m, &format!("/group_snapshots/{gsid}")).await;
    for s in &snaps {
        wait_gone_v(m, &format!("/snapshots/{}", id(s))).await;
    }
    let r = vpost(m, &format!("/groups/{gid}/action"), &json!({"delete": {"delete-volumes": false}})).await;
    assert_eq!(r.status, 400, "not empty: {}", r.text);
    for g in [&gid, &id(&from_gs), &id(&from_g)] {
        let r = vpost(m, &format!("/groups/{g}/action"), &json!({"delete": {"delete-volumes": true}})).await;
        assert_eq!(r.status, 202, "{}", r.text);
        wait_gone_v(m, &format!("/groups/{g}")).await;
    }
    wait_gone_v(m, &format!("/volumes/{}", id(&v1))).await;
    let left: Vec<String> = vget(m, "/volumes/detail").await.json()["volumes"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(left, vec![id(&loose)], "only the volume outside the groups is left");
    let empty = vpost(m, "/groups", &json!({"group": {"group_type": id(&gt), "volume_types": [id(&vt)]}})).await.json()["group"].clone();
    wait_v(m, &format!("/groups/{}", id(&empty)), "group", "available").await;
    assert_eq!(vdelete(a, &format!("/group_types/{}", id(&gt))).await.status, 400, "in use");
    assert_eq!(vpost(m, &format!("/groups/{}/action", id(&empty)), &json!({"delete": {"delete-volumes": false}})).await.status, 202);
    wait_gone_v(m, &format!("/groups/{}", id(&empty))).await;
    assert_eq!(vget(m, "/groups").await.json()["groups"], json!([]));

    // The groups quota counts groups.
    let q = a.get(&format!("/volume/v3/{}/os-quota-sets/{}?usage=True", project(a), project(m))).await.json();
    assert_eq!(q["quota_set"]["groups"]["in_use"], 0);
    cloud.shutdown().await;
}

#[tokio::test]
async fn encryption_types_are_records_of_volume_types() {
    let cloud = fake_cloud().await;
    let (a, m) = (&cloud.admin, &cloud.member);
    wait_backend(a).await;
    let vt = vpost(a, "/types", &json!({"volume_type": {"name": "luks"}})).await.json()["volume_type"].clone();
    let enc = format!("/types/{}/encryption", id(&vt));
    assert_eq!(vget(a, &enc).await.json(), json!({}), "none yet");
    let spec = json!({"encryption": {"provider": "luks", "key_size": 256, "cipher": "aes-xts-plain64", "control_location": "front-end"}});
    assert_eq!(vpost(m, &enc, &spec).await.status, 403);
    assert_eq!(vpost(a, "/types/nope/encryption", &spec).await.status, 404);
    assert_eq!(vpost(a, &enc, &json!({"encryption": {"control_location": "middle", "provider": "p"}})).await.status, 400);
    assert_eq!(vpost(a, &enc, &json!({"encryption": {"cipher": "x"}})).await.status, 400, "provider is required");
    let r = vpost(a, &enc, &spec).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let e = r.json()["encryption"].clone();
    assert_eq!((e["provider"].as_str(), e["key_size"].as_i64(), e["volume_type_id"].clone()), (Some("luks"), Some(256), vt["id"].clone()));
    let eid = e["encryption_id"].as_str().unwrap().to_string();
    assert_eq!(vpost(a, &enc, &spec).await.status, 400, "one per type");
    let shown = vget(a, &enc).await.json();
    assert_eq!((shown["cipher"].as_str(), shown["deleted"].as_bool()), (Some("aes-xts-plain64"), Some(false)));
    assert_eq!(vget(a, &format!("{enc}/cipher")).await.json(), json!({"cipher": "aes-xts-plain64"}));
    assert_eq!(vget(a, &format!("{enc}/nope")).await.status, 404);
    let r = vput(a, &format!("{enc}/{eid}"), &json!({"encryption": {"key_size": 128, "control_location": "back-end"}})).await;
    assert_eq!((r.status.as_u16(), r.json()["encryption"].clone()), (200, json!({"key_size": 128, "control_location": "back-end"})));
    assert_eq!(vget(a, &enc).await.json()["key_size"], 128);

    // Volumes of the type are encrypted; while they exist the record stays.
    let v = volume_in(m, json!({"size": 1, "volume_type": "luks"})).await;
    assert_eq!(v["encrypted"], true);
    assert_eq!(vdelete(a, &format!("{enc}/{eid}")).await.status, 400, "type in use");
    assert_eq!(vdelete(m, &format!("/volumes/{}", id(&v))).await.status, 202);
    wait_gone_v(m, &format!("/volumes/{}", id(&v))).await;
    assert_eq!(vdelete(a, &format!("{enc}/wrong")).await.status, 404);
    assert_eq!(vdelete(a, &format!("{enc}/{eid}")).await.status, 202);
    assert_eq!(vget(a, &enc).await.json(), json!({}));
    cloud.shutdown().await;
}

#[tokio::test]
async fn backup_records_export_and_import() {
    let cloud = fake_cloud().await;
    let (a, m) = (&cloud.admin, &cloud.member);
    wait_backend(a).await;
    let v = volume_in(m, json!({"size": 1})).await;
    let r = vpost(m, "/backups", &json!({"backup": {"volume_id": id(&v), "name": "b"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let bid = id(&r.json()["backup"]);
    wait_v(m, &format!("/backups/{bid}"), "backup", "available").await;
    assert_eq!(vget(m, &format!("/backups/{bid}/export_record")).await.status, 403, "administrators only");
    let as_admin = |p: &str| format!("/volume/v3/{}{p}", project(a));
    let r = a.request(Method::GET, &as_admin(&format!("/backups/{bid}/export_record")), None, &[("OpenStack-API-Version", "volume 3.44")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let record = r.json()["backup-record"].clone();
    assert!(record["backup_service"].as_str().unwrap().starts_with("cinder.backup.drivers"));

    // The record under another id imports as a new backup of the importing project.
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut doc: Value = serde_json::from_slice(&engine.decode(record["backup_url"].as_str().unwrap()).unwrap()).unwrap();
    let new_id = "0b1f5f9e-5e0b-4a4e-9d53-1f7d4cdb2c11";
    doc["id"] = json!(new_id);
    let import = |url: String| json!({"backup-record": {"backup_service": record["backup_service"], "backup_url": url}});
    let path = as_admin("/backups/import_record");
    let hdr = [("OpenStack-API-Version", "volume 3.44")];
    assert_eq!(a.request(Method::POST, &path, Some(&import("not base64!".into())), &hdr).await.status, 400);
    assert_eq!(a.request(Method::POST, &path, Some(&import(record["backup_url"].as_str().unwrap().into())), &hdr).await.status, 400, "the id is taken");
    let r = a.request(Method::POST, &path, Some(&import(engine.encode(doc.to_string()))), &hdr).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!((r.json()["backup"]["id"].as_str(), r.json()["backup"]["name"].as_str()), (Some(new_id), Some("b")));
    let imported = a.request(Method::GET, &as_admin(&format!("/backups/{new_id}")), None, &hdr).await.json()["backup"].clone();
    assert_eq!((imported["status"].as_str(), imported["volume_id"].clone()), (Some("available"), v["id"].clone()));

    // Both records point at the same objects; deleting both leaves no error behind.
    assert_eq!(a.request(Method::DELETE, &as_admin(&format!("/backups/{new_id}")), None, &hdr).await.status, 202);
    assert_eq!(vdelete(m, &format!("/backups/{bid}")).await.status, 202);
    wait_gone_v(m, &format!("/backups/{bid}")).await;
    for _ in 0..600 {
        if a.request(Method::GET, &as_admin(&format!("/backups/{new_id}")), None, &hdr).await.status == 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(a.request(Method::GET, &as_admin(&format!("/backups/{new_id}")), None, &hdr).await.status, 404);
    cloud.shutdown().await;
}

#[tokio::test]
async fn revert_to_the_latest_snapshot() {
    let cloud = fake_cloud().await;
    let m = &cloud.member;
    wait_backend(&cloud.admin).await;
    let v = volume_in(m, json!({"size": 1})).await;
    let vid = id(&v);
    let snap = |name: &'static str| {
        let vid = vid.clone();
        async move {
            let r = vpost(m, "/snapshots", &json!({"snapshot": {"volume_id": vid, "name": name}})).await;
            assert_eq!(r.status, 202, "{}", r.text);
            wait_v(m, &format!("/snapshots/{}", id(&r.json()["snapshot"])), "snapshot", "available").await
        }
    };
    let s1 = snap("s1").await;
    let s2 = snap("s2").await;
    let action = format!("/volumes/{vid}/action");
    let revert = |s: &Value| json!({"revert": {"snapshot_id": s["id"]}});
    assert_eq!(call(m, Method::POST, &action, Some(&revert(&s2)), "3.39").await.status, 400, "from 3.40 on");
    let r = vpost(m, &action, &revert(&s1)).await;
    assert_eq!(r.status, 400, "only the latest: {}", r.text);
    assert_eq!(vpost(m, &action, &json!({"revert": {}})).await.status, 400);
    let r = vpost(m, &action, &revert(&s2)).await;
    assert_eq!(r.status, 202, "{}", r.text);
    wait_v(m, &format!("/volumes/{vid}"), "volume", "available").await;
    wait_v(m, &format!("/snapshots/{}", id(&s2)), "snapshot", "available").await;
    cloud.shutdown().await;
}
