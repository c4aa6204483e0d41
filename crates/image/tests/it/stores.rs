//! The `object` store against a running cloud's object service, and multiple stores through the image API:
//! `/v2/info/stores`, uploads and imports to named stores, the `stores` attribute, reads falling back across
//! locations, and removal from one store or all.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use image::adapter::{AdapterError, ByteRange, ByteStream, ObjectAdapter, ObjectStoreConfig, StoreAdapter};
use reqwest::Method;
use serde_json::{Value, json};
use test_utils::TestCloud;

use crate::{create_named, get_bytes, project_of, raw, upload};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// `data` as a stream of `piece`-byte chunks.
fn chunks(data: &[u8], piece: usize) -> ByteStream {
    let parts: Vec<Result<Bytes, std::io::Error>> =
        data.chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(futures::stream::iter(parts))
}

async fn read_all(s: ByteStream) -> Vec<u8> {
    s.map(|c| c.expect("chunk").to_vec()).concat().await
}

/// The object names in the admin project's `container`.
async fn objects(cloud: &TestCloud, container: &str) -> Vec<String> {
    let path = format!("/object-store/v1/AUTH_{}/{container}?format=json", project_of(&cloud.admin));
    let r = cloud.admin.get(&path).await;
    if r.status == 404 || r.status == 204 {
        return Vec::new();
    }
    assert_eq!(r.status, 200, "{}", r.text);
    r.json().as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap().to_string()).collect()
}

fn session(cloud: &TestCloud) -> Arc<auth::HttpValidator> {
    let creds = cloud.running.credentials.clone().expect("bootstrapped");
    Arc::new(
        auth::HttpValidator::new(auth::ServiceCredentials {
            auth_url: format!("{}/identity", cloud.url),
            username: "admin".into(),
            password: creds.admin_password,
            user_domain_name: "Default".into(),
            project_name: "admin".into(),
            project_domain_name: "Default".into(),
        })
        .unwrap(),
    )
}

#[tokio::test]
async fn object_adapter_streams_segments_ranges_and_cleans_up() {
    let cloud = TestCloud::start_without_agent().await;
    let session = session(&cloud);
    let mut config = ObjectStoreConfig::new(&format!("{}/object-store", cloud.url));
    config.container = "images".into();
    config.large_object_size = 4000;
    config.chunk_size = 1000;
    let store = ObjectAdapter::new("object", config, session.clone()).unwrap();

    // Small, of known size: one object, named after the image.
    let small = pattern(1500);
    let loc = store.add("small-1", chunks(&small, 333), Some(1500)).await.unwrap();
    let account = project_of(&cloud.admin);
    assert_eq!(loc, format!("swift+{}/object-store/v1/AUTH_{account}/images/small-1", cloud.url));
    assert!(store.owns(&loc));
    assert_eq!(objects(&cloud, "images").await, ["small-1"]);
    assert_eq!(read_all(store.get(&loc, None).await.unwrap()).await, small);
    let part = store.get(&loc, Some(ByteRange { start: 10, end: 19 })).await.unwrap();
    assert_eq!(read_all(part).await, small[10..20]);

    // Unknown size: segments of at most 1000 bytes, then the manifest; ranges across segments.
    let big = pattern(3500);
    let loc = store.add("big-1", chunks(&big, 700), None).await.unwrap();
    let names = objects(&cloud, "images").await;
    assert_eq!(names.len(), 6, "{names:?}");
    let segments: Vec<&String> = names.iter().filter(|n| n.starts_with("big-1-")).collect();
    let prefix = &segments[0][..segments[0].len() - 5];
    let expected: Vec<String> = (1..=4).map(|i| format!("{prefix}{i:05}")).collect();
    assert_eq!(segments, expected.iter().collect::<Vec<_>>());
    assert!(names.contains(&"big-1".to_string()) && names.contains(&"small-1".to_string()));
    assert_eq!(read_all(store.get(&loc, None).await.unwrap()).await, big);
    let part = store.get(&loc, Some(ByteRange { start: 990, end: 2010 })).await.unwrap();
    assert_eq!(read_all(part).await, big[990..=2010]);

    // Exactly one segment's worth, and an empty image.
    let one = pattern(1000);
    let loc_one = store.add("one-1", chunks(&one, 1000), None).await.unwrap();
    assert_eq!(read_all(store.get(&loc_one, None).await.unwrap()).await, one);
    let loc_empty = store.add("empty-1", chunks(&[], 1), None).await.unwrap();
    assert!(read_all(store.get(&loc_empty, None).await.unwrap()).await.is_empty());

    // Deleting a large object deletes its segments; deleting twice is fine.
    store.delete(&loc).await.unwrap();
    store.delete(&loc).await.unwrap();
    assert!(matches!(store.get(&loc, None).await, Err(AdapterError::NotFound(_))));
    for l in [&loc_one, &loc_empty] {
        store.delete(l).await.unwrap();
    }
    assert_eq!(objects(&cloud, "images").await, ["small-1"]);

    // A stream failing midway (after two segments) leaves nothing behind, large or small.
    let failing = |n: usize| -> ByteStream {
        let mut parts: Vec<Result<Bytes, std::io::Error>> =
            (0..n).map(|_| Ok(Bytes::from(pattern(700)))).collect();
        parts.push(Err(std::io::Error::other("client went away")));
        Box::pin(futures::stream::iter(parts))
    };
    assert!(matches!(store.add("broken-1", failing(3), None).await, Err(AdapterError::Source(_))));
    assert!(matches!(store.add("broken-2", failing(1), Some(1500)).await, Err(AdapterError::Source(_))));
    assert_eq!(objects(&cloud, "images").await, ["small-1"]);

    // A revoked service token: the store gets a new one and carries on.
    let token = session.service_token(None).await.unwrap();
    let r = raw(&cloud, &cloud.admin, Method::DELETE, "/identity/v3/auth/tokens", Vec::new(), &[("X-Subject-Token", &token)])
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let loc = format!("swift+{}/object-store/v1/AUTH_{account}/images/small-1", cloud.url);
    assert_eq!(read_all(store.get(&loc, None).await.unwrap()).await, small);
    assert_ne!(session.service_token(None).await.unwrap(), token);

    assert!(!store.owns("file:///tmp/x"));
    assert!(matches!(store.get("file:///tmp/x", None).await, Err(AdapterError::NotFound(_))));
    cloud.shutdown().await;
}

async fn two_stores() -> TestCloud {
    TestCloud::start_with(|c| {
        c.image.enabled_backends = vec!["file".into(), "object".into()];
        c.image.enabled_import_methods = vec!["glance-direct".into(), "copy-image".into()];
        c.image.object_large_object_size = 4096;
        c.image.object_chunk_size = 1024;
    })
    .await
}

async fn wait_for(cloud: &TestCloud, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let img = cloud.member.get(&format!("/image/v2/images/{id}")).await.json();
        if done(&img) {
            return img;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("image {id} did not reach the expected state");
}

#[tokio::test]
async fn images_go_to_named_stores_and_leave_them() {
    let cloud = two_stores().await;
    let stores = cloud.member.get("/image/v2/info/stores").await.json();
    assert_eq!(
        stores["stores"],
        json!([
            {"id": "file", "description": "Image data in files on the local disk.", "default": true},
            {"id": "object", "description": "Image data in the object store (Swift API)."},
        ])
    );
    assert_eq!(cloud.member.get("/image/v2/info/stores/detail").await.status, 403);
    let detail = cloud.admin.get("/image/v2/info/stores/detail").await.json();
    assert_eq!(detail["stores"][1]["type"], "swift");
    assert_eq!(detail["stores"][1]["properties"]["container"], "glance");

    // An upload to the object store, of a size that makes it a large object.
    let img = create_named(&cloud.member, "in-object").await;
    let id = img["id"].as_str().unwrap();
    let data = pattern(5000);
    let path = format!("/image/v2/images/{id}/file");
    let ct = ("Content-Type", "application/octet-stream");
    let r = raw(&cloud, &cloud.member, Method::PUT, &path, data.clone(), &[ct, ("X-Image-Meta-Store", "nowhere")]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = raw(&cloud, &cloud.member, Method::PUT, &path, data.clone(), &[ct, ("X-Image-Meta-Store", "object")]).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let shown = cloud.member.get(&format!("/image/v2/images/{id}")).await.json();
    assert_eq!(shown["stores"], "object");
    assert_eq!(shown["size"], 5000);
    let names = objects(&cloud, "glance").await;
    assert_eq!(names.iter().filter(|n| n.starts_with(&format!("{id}-"))).count(), 5, "{names:?}");
    let (status, _, body) = get_bytes(&cloud, &cloud.member, &path, &[("Range", "bytes=1000-2999")]).await;
    assert_eq!(status, 206);
    assert_eq!(body, data[1000..3000]);
    let (status, _, body) = get_bytes(&cloud, &cloud.member, &path, &[]).await;
    assert_eq!((status, body.len()), (200, 5000));
    assert_eq!(body, data);

    // The default store is the file store.
    let plain = create_named(&cloud.member, "in-file").await;
    let plain_id = plain["id"].as_str().unwrap();
    assert_eq!(upload(&cloud, &cloud.member, plain_id, b"file bytes".to_vec()).await.status, 204);
    let shown = cloud.member.get(&format!("/image/v2/images/{plain_id}")).await.json();
    assert_eq!(shown["stores"], "file");

    // copy-image (admins only) into every store the image is not in yet.
    let copy = format!("/image/v2/images/{plain_id}/import");
    let body = json!({"method": {"name": "copy-image"}, "all_stores": true, "all_stores_must_succeed": false});
    assert_eq!(cloud.member.post(&copy, &body).await.status, 403);
    assert_eq!(cloud.admin.post(&copy, &body).await.status, 202);
    let img = wait_for(&cloud, plain_id, |i| i["os_glance_importing_to_stores"] == "").await;
    assert_eq!((img["stores"].as_str(), img["os_glance_failed_import"].as_str()), (Some("file,object"), Some("")));
    assert_eq!(img["status"], "active");
    // Reads fall back across locations: with the file copy lost, the object store's serves.
    std::fs::remove_file(cloud.running.data_dir.join("images").join(plain_id)).unwrap();
    let (status, _, body) = get_bytes(&cloud, &cloud.member, &format!("/image/v2/images/{plain_id}/file"), &[]).await;
    assert_eq!((status, body.as_slice()), (200, &b"file bytes"[..]));

    // glance-direct into every store: active once in the first, then in both.
    let staged = create_named(&cloud.member, "everywhere").await;
    let sid = staged["id"].as_str().unwrap();
    let data = pattern(3000);
    let r = raw(&cloud, &cloud.member, Method::PUT, &format!("/image/v2/images/{sid}/stage"), data.clone(), &[ct]).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let import = format!("/image/v2/images/{sid}/import");
    let bad = json!({"method": {"name": "glance-direct"}, "stores": ["file", "nowhere"]});
    assert_eq!(cloud.member.post(&import, &bad).await.status, 400);
    let both = json!({"method": {"name": "glance-direct"}, "all_stores": true, "stores": ["file"]});
    assert_eq!(cloud.member.post(&import, &both).await.status, 400);
    let body = json!({"method": {"name": "glance-direct"}, "all_stores": true, "all_stores_must_succeed": true});
    assert_eq!(cloud.member.post(&import, &body).await.status, 202);
    let img = wait_for(&cloud, sid, |i| i["status"] == "active" && i["stores"] == "file,object").await;
    assert_eq!(img["size"], 3000);
    let sizes = objects(&cloud, "glance").await;
    assert!(sizes.contains(&sid.to_string()), "{sizes:?}");

    // Removing it from one store: reads come from the other; the last store cannot be removed.
    assert_eq!(cloud.member.delete(&format!("/image/v2/stores/nowhere/{sid}")).await.status, 404);
    assert_eq!(cloud.reader.delete(&format!("/image/v2/stores/file/{sid}")).await.status, 403);
    assert_eq!(cloud.member.delete(&format!("/image/v2/stores/file/{sid}")).await.status, 204);
    let img = cloud.member.get(&format!("/image/v2/images/{sid}")).await.json();
    assert_eq!(img["stores"], "object");
    let spath = format!("/image/v2/images/{sid}/file");
    let (status, _, body) = get_bytes(&cloud, &cloud.member, &spath, &[]).await;
    assert_eq!((status, body == data), (200, true));
    assert_eq!(cloud.member.delete(&format!("/image/v2/stores/file/{sid}")).await.status, 404);
    assert_eq!(cloud.member.delete(&format!("/image/v2/stores/object/{sid}")).await.status, 409);

    // An import into one named store (the header form).
    let named = create_named(&cloud.member, "header-import").await;
    let nid = named["id"].as_str().unwrap();
    let r = raw(&cloud, &cloud.member, Method::PUT, &format!("/image/v2/images/{nid}/stage"), b"x".to_vec(), &[ct]).await;
    assert_eq!(r.status, 204);
    let r = raw(
        &cloud,
        &cloud.member,
        Method::POST,
        &format!("/image/v2/images/{nid}/import"),
        json!({"method": {"name": "glance-direct"}}).to_string().into_bytes(),
        &[("Content-Type", "application/json"), ("X-Image-Meta-Store", "object")],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    wait_for(&cloud, nid, |i| i["status"] == "active" && i["stores"] == "object").await;

    // Deleting the images deletes their data from every store.
    for image in [id, sid, nid, plain_id] {
        assert_eq!(cloud.member.delete(&format!("/image/v2/images/{image}")).await.status, 204);
    }
    assert_eq!(objects(&cloud, "glance").await, Vec::<String>::new());
    cloud.shutdown().await;
}

#[tokio::test]
async fn interrupted_upload_to_the_object_store_keeps_nothing() {
    use tokio::io::AsyncWriteExt;
    let cloud = two_stores().await;
    let img = create_named(&cloud.member, "cut").await;
    let id = img["id"].as_str().unwrap();
    let token = cloud.member.token.clone().unwrap();
    let addr = cloud.running.addr;
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /image/v2/images/{id}/file HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {token}\r\n\
         X-Image-Meta-Store: object\r\nContent-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    // Enough for a few 1 KiB segments to be written before the client hangs up.
    sock.write_all(&pattern(30_000)).await.unwrap();
    sock.flush().await.unwrap();
    for _ in 0..200 {
        if objects(&cloud, "glance").await.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(objects(&cloud, "glance").await.len() >= 3, "segments are written as the data arrives");
    drop(sock);
    let img = wait_for(&cloud, id, |i| i["status"] == "queued").await;
    assert_eq!(img["size"], Value::Null);
    let mut left = objects(&cloud, "glance").await;
    for _ in 0..200 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        left = objects(&cloud, "glance").await;
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_failing_store_fails_imports_that_need_it() {
    // The object store is unreachable: every write to it fails.
    let cloud = TestCloud::start_with(|c| {
        c.image.enabled_backends = vec!["file".into(), "object".into()];
        c.image.object_url = Some("http://127.0.0.1:1/object-store".into());
    })
    .await;
    let ct = ("Content-Type", "application/octet-stream");
    let stage_and_import = |name: &'static str, must: bool| {
        let cloud = &cloud;
        async move {
            let img = create_named(&cloud.member, name).await;
            let id = img["id"].as_str().unwrap().to_string();
            let r = raw(cloud, &cloud.member, Method::PUT, &format!("/image/v2/images/{id}/stage"), b"data".to_vec(), &[ct])
                .await;
            assert_eq!(r.status, 204, "{}", r.text);
            let body = json!({"method": {"name": "glance-direct"}, "all_stores": true, "all_stores_must_succeed": must});
            assert_eq!(cloud.member.post(&format!("/image/v2/images/{id}/import"), &body).await.status, 202);
            wait_for(cloud, &id, |i| i["os_glance_importing_to_stores"] == "" && i["status"] != "importing").await
        }
    };
    // All must succeed: the copy already made is removed and the image is queued again.
    let img = stage_and_import("all-or-nothing", true).await;
    assert_eq!((img["status"].as_str(), img["os_glance_failed_import"].as_str()), (Some("queued"), Some("object")));
    assert_eq!(img["stores"], Value::Null);
    assert_eq!(std::fs::read_dir(cloud.running.data_dir.join("images")).unwrap().filter(|e| {
        e.as_ref().unwrap().file_type().unwrap().is_file()
    }).count(), 0);
    // Otherwise the image is active in the stores that took it.
    let img = stage_and_import("best-effort", false).await;
    assert_eq!((img["status"].as_str(), img["stores"].as_str()), (Some("active"), Some("file")));
    assert_eq!(img["os_glance_failed_import"], "object");
    // An upload to the failing store fails and keeps the image queued.
    let img = create_named(&cloud.member, "direct").await;
    let id = img["id"].as_str().unwrap();
    let path = format!("/image/v2/images/{id}/file");
    let r = raw(&cloud, &cloud.member, Method::PUT, &path, b"x".to_vec(), &[ct, ("X-Image-Meta-Store", "object")]).await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{id}")).await.json()["status"], "queued");
    cloud.shutdown().await;
}
