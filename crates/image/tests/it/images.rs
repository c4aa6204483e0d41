//! Discovery, schemas, image CRUD, list filters/sorting/paging, JSON Patch, tags, deactivation, and policy.

use reqwest::Method;
use serde_json::json;
use test_utils::TestCloud;

use crate::{create, create_named, ids, patch, project_of, raw, upload};

#[tokio::test]
async fn discovery_and_schemas() {
    let cloud = TestCloud::start().await;
    let r = cloud.anonymous.get("/image/").await;
    assert_eq!(r.status, 300, "{}", r.text);
    let versions = r.json()["versions"].as_array().cloned().unwrap();
    assert!(versions.iter().any(|v| v["status"] == "CURRENT" && v["id"].as_str().unwrap().starts_with("v2.")));
    assert!(versions[0]["links"][0]["href"].as_str().unwrap().ends_with("/image/v2/"));
    let r = cloud.anonymous.get("/image/versions").await;
    assert_eq!(r.status, 200);
    // Everything else needs a token.
    assert_eq!(cloud.anonymous.get("/image/v2/images").await.status, 401);
    assert_eq!(cloud.anonymous.get("/image/v2/schemas/image").await.status, 401);
    for (path, name) in [("image", "image"), ("images", "images"), ("member", "member"), ("members", "members")] {
        let r = cloud.reader.get(&format!("/image/v2/schemas/{path}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["name"], name);
    }
    let schema = cloud.reader.get("/image/v2/schemas/image").await.json();
    assert_eq!(schema["additionalProperties"]["type"], "string");
    assert!(schema["properties"]["disk_format"]["enum"].as_array().unwrap().contains(&json!("qcow2")));
    let r = cloud.member.get("/image/v2/info/import").await;
    assert_eq!(r.json()["import-methods"]["value"], json!(["glance-direct"]));
    let r = cloud.member.get("/image/v2/info/stores").await;
    assert_eq!(r.json()["stores"][0]["id"], "file");
    cloud.shutdown().await;
}

#[tokio::test]
async fn create_show_update_delete() {
    let cloud = TestCloud::start().await;
    let id = "00000000-1111-2222-3333-444455556666";
    let img = create(
        &cloud.member,
        json!({"id": id, "name": "cirros", "disk_format": "qcow2", "container_format": "bare",
               "visibility": "private", "min_ram": 64, "tags": ["t1", "t2"], "os_distro": "cirros"}),
    )
    .await;
    assert_eq!(img["id"], id);
    assert_eq!(img["status"], "queued");
    assert_eq!(img["owner"], project_of(&cloud.member));
    assert_eq!(img["os_distro"], "cirros");
    assert_eq!(img["tags"], json!(["t1", "t2"]));
    assert_eq!(img["self"], format!("/v2/images/{id}"));
    assert_eq!(img["size"], json!(null));
    assert!(img["created_at"].as_str().unwrap().ends_with('Z'));
    // Same id again is a conflict.
    let r = cloud.member.post("/image/v2/images", &json!({"id": id})).await;
    assert_eq!(r.status, 409);

    // Invalid input.
    for body in [
        json!({"disk_format": "floppy"}),
        json!({"container_format": "crate"}),
        json!({"visibility": "world"}),
        json!({"min_disk": "ten"}),
        json!({"my_prop": 3}),
    ] {
        let r = cloud.member.post("/image/v2/images", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
    let r = cloud.member.post("/image/v2/images", &json!({"status": "active"})).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.json()["message"].as_str().unwrap().contains("read-only"));

    let r = cloud.member.get(&format!("/image/v2/images/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "cirros");

    // JSON Patch.
    let r = patch(
        &cloud,
        &cloud.member,
        id,
        json!([
            {"op": "replace", "path": "/name", "value": "renamed"},
            {"op": "add", "path": "/hw_disk_bus", "value": "scsi"},
            {"op": "remove", "path": "/os_distro"},
            {"op": "replace", "path": "/tags", "value": ["x"]},
            {"op": "replace", "path": "/protected", "value": true},
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["name"], "renamed");
    assert_eq!(v["hw_disk_bus"], "scsi");
    assert!(v.get("os_distro").is_none());
    assert_eq!(v["tags"], json!(["x"]));
    assert_eq!(v["protected"], true);
    for (op, status) in [
        (json!([{"op": "replace", "path": "/status", "value": "active"}]), 403),
        (json!([{"op": "replace", "path": "/size", "value": 5}]), 403),
        (json!([{"op": "add", "path": "/os_glance_x", "value": "y"}]), 403),
        (json!([{"op": "remove", "path": "/name"}]), 403),
        (json!([{"op": "remove", "path": "/nope"}]), 409),
        (json!([{"op": "replace", "path": "/nope", "value": "x"}]), 409),
        (json!([{"op": "replace", "path": "/min_ram", "value": "lots"}]), 400),
        (json!([{"op": "copy", "path": "/name"}]), 400),
        (json!({"op": "replace"}), 400),
    ] {
        let r = patch(&cloud, &cloud.member, id, op.clone()).await;
        assert_eq!(r.status, status, "{op}: {}", r.text);
    }
    // A failed patch changes nothing.
    let now = cloud.member.get(&format!("/image/v2/images/{id}")).await.json();
    assert_eq!(now["name"], "renamed");
    // The wrong media type is 415.
    let r = raw(
        &cloud,
        &cloud.member,
        Method::PATCH,
        &format!("/image/v2/images/{id}"),
        b"[]".to_vec(),
        &[("Content-Type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 415);
    // Only admins publicize.
    let r =
        patch(&cloud, &cloud.member, id, json!([{"op": "replace", "path": "/visibility", "value": "public"}])).await;
    assert_eq!(r.status, 403, "{}", r.text);

    // Tags.
    let r = cloud.member.request(Method::PUT, &format!("/image/v2/images/{id}/tags/new-tag"), None, &[]).await;
    assert_eq!(r.status, 204);
    let tags = cloud.member.get(&format!("/image/v2/images/{id}")).await.json()["tags"].clone();
    assert_eq!(tags, json!(["new-tag", "x"]));
    assert_eq!(cloud.member.delete(&format!("/image/v2/images/{id}/tags/new-tag")).await.status, 204);
    assert_eq!(cloud.member.delete(&format!("/image/v2/images/{id}/tags/new-tag")).await.status, 404);
    let missing = "/image/v2/images/11111111-2222-3333-4444-555555555555/tags/a";
    assert_eq!(cloud.member.request(Method::PUT, missing, None, &[]).await.status, 404);

    // Protected images cannot be deleted.
    assert_eq!(cloud.member.delete(&format!("/image/v2/images/{id}")).await.status, 403);
    patch(&cloud, &cloud.member, id, json!([{"op": "replace", "path": "/protected", "value": false}])).await;
    assert_eq!(cloud.member.delete(&format!("/image/v2/images/{id}")).await.status, 204);
    let r = cloud.member.get(&format!("/image/v2/images/{id}")).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].as_str().unwrap().contains(id), "{}", r.text);
    assert_eq!(cloud.member.delete(&format!("/image/v2/images/{id}")).await.status, 404);
    assert_eq!(cloud.member.get("/image/v2/images/").await.status, 404);
    cloud.shutdown().await;
}

#[tokio::test]
async fn list_filters_sorting_and_paging() {
    let cloud = TestCloud::start().await;
    let mut made = Vec::new();
    for (i, (disk, container)) in
        [("raw", "bare"), ("qcow2", "bare"), ("raw", "ovf"), ("iso", "bare")].iter().enumerate()
    {
        let img = create(
            &cloud.member,
            json!({"name": format!("img-{i}"), "disk_format": disk,
            "container_format": container, "visibility": "private", "tags": [format!("t{i}"), "common"]}),
        )
        .await;
        let id = img["id"].as_str().unwrap().to_string();
        let r = upload(&cloud, &cloud.member, &id, vec![7u8; 100 * (i + 1)]).await;
        assert_eq!(r.status, 204, "{}", r.text);
        made.push(id);
    }
    let queued = create_named(&cloud.member, "queued-one").await;
    let hidden = create(&cloud.member, json!({"name": "hidden", "os_hidden": true})).await;

    let all = cloud.member.get("/image/v2/images").await.json();
    assert_eq!(all["schema"], "/v2/schemas/images");
    assert_eq!(all["first"], "/v2/images");
    assert_eq!(ids(&all).len(), 5, "hidden images are not listed by default");
    assert!(!ids(&all).contains(&hidden["id"].as_str().unwrap().to_string()));
    // Default order: newest first.
    assert_eq!(ids(&all)[0], queued["id"].as_str().unwrap());
    let only_hidden = cloud.member.get("/image/v2/images?os_hidden=true").await.json();
    assert_eq!(ids(&only_hidden), [hidden["id"].as_str().unwrap()]);

    let q = |s: &'static str| {
        let c = cloud.member.clone();
        async move {
            let r = c.get(&format!("/image/v2/images?{s}")).await;
            assert_eq!(r.status, 200, "{s}: {}", r.text);
            r.json()
        }
    };
    assert_eq!(ids(&q("disk_format=raw").await).len(), 3);
    assert_eq!(ids(&q("container_format=ovf").await), [made[2].clone()]);
    assert_eq!(ids(&q("status=active").await).len(), 4);
    assert_eq!(ids(&q("status=queued").await).len(), 1);
    assert_eq!(ids(&q("name=img-1").await), [made[1].clone()]);
    assert_eq!(ids(&q("name=in:img-1,img-3").await).len(), 2);
    assert_eq!(ids(&q("size=300").await), [made[2].clone()]);
    assert_eq!(ids(&q("size_min=200&size_max=300").await).len(), 2);
    assert_eq!(ids(&q("tag=t0&tag=common").await), [made[0].clone()]);
    assert_eq!(ids(&q("tag=common").await).len(), 4);
    assert_eq!(ids(&q("visibility=private").await).len(), 4);
    assert_eq!(ids(&q("visibility=public").await).len(), 0);
    assert_eq!(ids(&q("created_at=gte:2000-01-01T00:00:00Z").await).len(), 5);
    assert_eq!(ids(&q("created_at=lt:2000-01-01T00:00:00Z").await).len(), 0);
    let owner = project_of(&cloud.member);
    let r = cloud.member.get(&format!("/image/v2/images?owner={owner}")).await.json();
    assert_eq!(ids(&r).len(), 5);

    let sizes = |v: &serde_json::Value| -> Vec<i64> {
        v["images"].as_array().unwrap().iter().filter_map(|i| i["size"].as_i64()).collect()
    };
    assert_eq!(sizes(&q("sort=size:desc").await), [400, 300, 200, 100]);
    assert_eq!(sizes(&q("sort_key=size&sort_dir=asc").await), [100, 200, 300, 400]);
    assert_eq!(sizes(&q("sort_key=size&sort_dir=desc&status=active").await), [400, 300, 200, 100]);
    for bad in [
        "sort_key=color",
        "sort_dir=sideways",
        "visibility=everyone",
        "limit=x",
        "size_min=big",
        "created_at=gt:soon",
        "member_status=maybe",
        "marker=00000000-0000-0000-0000-000000000000",
    ] {
        let r = cloud.member.get(&format!("/image/v2/images?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }

    // Paging walks every image once.
    let mut seen = Vec::new();
    let mut path = "/image/v2/images?limit=2&sort_key=name&sort_dir=asc".to_string();
    loop {
        let page = cloud.member.get(&path).await.json();
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("/image{next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(ids(&q("limit=1").await).len(), 1);
    cloud.shutdown().await;
}

#[tokio::test]
async fn policy_and_visibility() {
    let cloud = TestCloud::start().await;
    // Readers read but cannot create.
    let r = cloud.reader.post("/image/v2/images", &json!({"name": "nope"})).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(cloud.member.get("/image/v2/images").await.json()["images"], json!([]));

    let private = create(&cloud.member, json!({"name": "mine", "visibility": "private"})).await;
    let pid = private["id"].as_str().unwrap();
    // Readers of the project see it but may not change it.
    assert_eq!(cloud.reader.get(&format!("/image/v2/images/{pid}")).await.status, 200);
    let r = patch(&cloud, &cloud.reader, pid, json!([{"op": "replace", "path": "/name", "value": "x"}])).await;
    assert_eq!(r.status, 403);
    assert_eq!(cloud.reader.delete(&format!("/image/v2/images/{pid}")).await.status, 403);

    // Another project cannot see a private image (admin sees everything).
    let other = cloud.admin.clone();
    let admin_img = create(&other, json!({"name": "admin-private", "visibility": "private"})).await;
    let aid = admin_img["id"].as_str().unwrap();
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{aid}")).await.status, 404);
    assert!(!ids(&cloud.member.get("/image/v2/images").await.json()).contains(&aid.to_string()));
    assert_eq!(cloud.admin.get(&format!("/image/v2/images/{pid}")).await.status, 200);
    assert!(ids(&cloud.admin.get("/image/v2/images").await.json()).contains(&pid.to_string()));

    // Public images are listed for everyone; only admins make them.
    let r = cloud.member.post("/image/v2/images", &json!({"name": "pub", "visibility": "public"})).await;
    assert_eq!(r.status, 403);
    let public = create(&cloud.admin, json!({"name": "pub", "visibility": "public"})).await;
    let pubid = public["id"].as_str().unwrap();
    assert!(ids(&cloud.reader.get("/image/v2/images").await.json()).contains(&pubid.to_string()));
    // ... but not modified by others.
    let r = patch(&cloud, &cloud.member, pubid, json!([{"op": "replace", "path": "/name", "value": "mine"}])).await;
    assert_eq!(r.status, 403);
    assert_eq!(cloud.member.delete(&format!("/image/v2/images/{pubid}")).await.status, 403);
    assert_eq!(cloud.admin.get(&format!("/image/v2/images/{pubid}")).await.json()["name"], "pub");

    // Community images: visible by id, listed only when asked for.
    let community = create(&cloud.member, json!({"name": "comm", "visibility": "community"})).await;
    let cid = community["id"].as_str().unwrap();
    assert_eq!(cloud.admin.get(&format!("/image/v2/images/{cid}")).await.status, 200);
    assert!(!ids(&cloud.admin.get("/image/v2/images").await.json()).contains(&cid.to_string()));
    assert!(ids(&cloud.admin.get("/image/v2/images?visibility=community").await.json()).contains(&cid.to_string()));

    // Deactivation: members of the owner project; data download forbidden while deactivated.
    let img = create_named(&cloud.member, "deact").await;
    let id = img["id"].as_str().unwrap();
    let r = cloud.member.post(&format!("/image/v2/images/{id}/actions/deactivate"), &json!({})).await;
    assert_eq!(r.status, 403, "a queued image cannot be deactivated: {}", r.text);
    assert_eq!(upload(&cloud, &cloud.member, id, b"data".to_vec()).await.status, 204);
    let r = cloud.reader.post(&format!("/image/v2/images/{id}/actions/deactivate"), &json!({})).await;
    assert_eq!(r.status, 403);
    let r = cloud.member.post(&format!("/image/v2/images/{id}/actions/deactivate"), &json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{id}")).await.json()["status"], "deactivated");
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{id}/file")).await.status, 403);
    let r = cloud.member.post(&format!("/image/v2/images/{id}/actions/reactivate"), &json!({})).await;
    assert_eq!(r.status, 204);
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{id}/file")).await.text, "data");
    cloud.shutdown().await;
}

#[tokio::test]
async fn image_count_quota() {
    let cloud = TestCloud::start_with(|c| c.image.image_count_total = 2).await;
    create_named(&cloud.member, "a").await;
    create_named(&cloud.member, "b").await;
    let r = cloud.member.post("/image/v2/images", &json!({"name": "c"})).await;
    assert_eq!(r.status, 413, "{}", r.text);
    // Another project has its own quota.
    create_named(&cloud.admin, "a").await;
    cloud.shutdown().await;
}
