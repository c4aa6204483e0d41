//! Image data: upload and download byte-identical with checksums, ranges, state rules, interrupted uploads, and the
//! size quota.

use md5::{Digest, Md5};
use reqwest::Method;
use serde_json::json;
use sha2::Sha512;
use test_utils::TestCloud;
use tokio::io::AsyncWriteExt;

use crate::{create, create_named, get_bytes, raw, upload};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn data_files(cloud: &TestCloud) -> Vec<String> {
    std::fs::read_dir(cloud.running.data_dir.join("images"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn upload_download_round_trip() {
    let cloud = TestCloud::start().await;
    let img = create_named(&cloud.member, "data").await;
    let id = img["id"].as_str().unwrap();
    let path = format!("/image/v2/images/{id}/file");

    // No data yet: 204.
    let (status, _, body) = get_bytes(&cloud, &cloud.member, &path, &[]).await;
    assert_eq!((status, body.len()), (204, 0));

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let r = upload(&cloud, &cloud.member, id, data.clone()).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let v = cloud.member.get(&format!("/image/v2/images/{id}")).await.json();
    assert_eq!(v["status"], "active");
    assert_eq!(v["size"], data.len());
    assert_eq!(v["virtual_size"], data.len(), "raw images' virtual size is their size");
    assert_eq!(v["checksum"], hex(&Md5::digest(&data)));
    assert_eq!(v["os_hash_algo"], "sha512");
    assert_eq!(v["os_hash_value"], hex(&Sha512::digest(&data)));
    assert_eq!(v["stores"], "file");

    let (status, headers, body) = get_bytes(&cloud, &cloud.member, &path, &[]).await;
    assert_eq!(status, 200);
    assert!(body == data, "downloaded bytes differ");
    assert_eq!(headers["content-md5"], hex(&Md5::digest(&data)).as_str());
    assert_eq!(headers["content-length"], data.len().to_string().as_str());

    // Ranges.
    let (status, headers, body) = get_bytes(&cloud, &cloud.member, &path, &[("Range", "bytes=10-19")]).await;
    assert_eq!(status, 206);
    assert_eq!(body, &data[10..20]);
    assert_eq!(headers["content-range"], format!("bytes 10-19/{}", data.len()).as_str());
    let (status, _, body) = get_bytes(&cloud, &cloud.member, &path, &[("Range", "bytes=-5")]).await;
    assert_eq!((status, body.as_slice()), (206, &data[data.len() - 5..]));
    let (status, _, body) = get_bytes(&cloud, &cloud.member, &path, &[("Range", "bytes=2999990-")]).await;
    assert_eq!((status, body.as_slice()), (206, &data[2_999_990..]));
    let (status, headers, _) = get_bytes(&cloud, &cloud.member, &path, &[("Range", "bytes=5000000-5000001")]).await;
    assert_eq!(status, 416);
    assert_eq!(headers["content-range"], format!("bytes */{}", data.len()).as_str());

    // A second upload is a conflict and changes nothing.
    let r = upload(&cloud, &cloud.member, id, b"other".to_vec()).await;
    assert_eq!(r.status, 409, "{}", r.text);
    let (_, _, body) = get_bytes(&cloud, &cloud.member, &path, &[]).await;
    assert!(body == data);

    // Readers download but do not upload.
    let (status, _, _) = get_bytes(&cloud, &cloud.reader, &path, &[]).await;
    assert_eq!(status, 200);
    let other = create_named(&cloud.member, "other").await;
    let oid = other["id"].as_str().unwrap();
    assert_eq!(upload(&cloud, &cloud.reader, oid, b"x".to_vec()).await.status, 403);

    // Deleting the image removes its data.
    assert_eq!(data_files(&cloud), [id.to_string()]);
    assert_eq!(cloud.member.delete(&format!("/image/v2/images/{id}")).await.status, 204);
    assert!(data_files(&cloud).is_empty());
    cloud.shutdown().await;
}

#[tokio::test]
async fn upload_rules() {
    let cloud = TestCloud::start().await;
    // Formats must be set first.
    let bare = create(&cloud.member, json!({"name": "no-formats"})).await;
    let r = upload(&cloud, &cloud.member, bare["id"].as_str().unwrap(), b"x".to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let img = create_named(&cloud.member, "ct").await;
    let id = img["id"].as_str().unwrap();
    let r = raw(
        &cloud,
        &cloud.member,
        Method::PUT,
        &format!("/image/v2/images/{id}/file"),
        b"x".to_vec(),
        &[("Content-Type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 415);
    // qcow2 virtual size comes from the header.
    let q = create(&cloud.member, json!({"name": "q", "disk_format": "qcow2", "container_format": "bare"})).await;
    let qid = q["id"].as_str().unwrap();
    let mut head = vec![0u8; 1024];
    head[..4].copy_from_slice(b"QFI\xfb");
    head[4..8].copy_from_slice(&3u32.to_be_bytes());
    head[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
    assert_eq!(upload(&cloud, &cloud.member, qid, head).await.status, 204);
    let v = cloud.member.get(&format!("/image/v2/images/{qid}")).await.json();
    assert_eq!(v["virtual_size"], 1u64 << 30);
    assert_eq!(v["size"], 1024);
    // Format changes are refused once there is data.
    let r =
        crate::patch(&cloud, &cloud.member, qid, json!([{"op": "replace", "path": "/disk_format", "value": "raw"}]))
            .await;
    assert_eq!(r.status, 403);
    cloud.shutdown().await;
}

#[tokio::test]
async fn interrupted_upload_leaves_the_image_queued_and_no_file() {
    let cloud = TestCloud::start().await;
    let img = create_named(&cloud.member, "cut").await;
    let id = img["id"].as_str().unwrap();
    let token = cloud.member.token.clone().unwrap();
    let addr = cloud.running.addr;
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /image/v2/images/{id}/file HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&vec![1u8; 300_000]).await.unwrap();
    sock.flush().await.unwrap();
    // Wait until the server is receiving (the image is saving), then hang up mid-body.
    let mut status = String::new();
    for _ in 0..100 {
        status =
            cloud.member.get(&format!("/image/v2/images/{id}")).await.json()["status"].as_str().unwrap().to_string();
        if status == "saving" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, "saving");
    drop(sock);
    for _ in 0..200 {
        status =
            cloud.member.get(&format!("/image/v2/images/{id}")).await.json()["status"].as_str().unwrap().to_string();
        if status == "queued" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, "queued");
    assert!(data_files(&cloud).is_empty(), "left behind: {:?}", data_files(&cloud));
    let v = cloud.member.get(&format!("/image/v2/images/{id}")).await.json();
    assert_eq!(v["size"], json!(null));
    // The image can be uploaded again.
    assert_eq!(upload(&cloud, &cloud.member, id, b"whole".to_vec()).await.status, 204);
    cloud.shutdown().await;
}

#[tokio::test]
async fn size_quota_is_413_and_keeps_nothing() {
    let cloud = TestCloud::start_with(|c| c.image.image_size_total = 1).await;
    let a = create_named(&cloud.member, "a").await;
    let aid = a["id"].as_str().unwrap();
    assert_eq!(upload(&cloud, &cloud.member, aid, vec![0u8; 700 * 1024]).await.status, 204);
    let b = create_named(&cloud.member, "b").await;
    let bid = b["id"].as_str().unwrap();
    let r = upload(&cloud, &cloud.member, bid, vec![0u8; 400 * 1024]).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{bid}")).await.json()["status"], "queued");
    assert_eq!(data_files(&cloud), [aid.to_string()]);
    assert_eq!(upload(&cloud, &cloud.member, bid, vec![0u8; 100 * 1024]).await.status, 204);
    cloud.shutdown().await;
}

#[tokio::test]
async fn glance_direct_import() {
    let cloud = TestCloud::start().await;
    let img = create_named(&cloud.member, "imp").await;
    let id = img["id"].as_str().unwrap();
    let r = raw(
        &cloud,
        &cloud.member,
        Method::PUT,
        &format!("/image/v2/images/{id}/stage"),
        b"staged bytes".to_vec(),
        &[("Content-Type", "application/octet-stream")],
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{id}")).await.json()["status"], "uploading");
    let r =
        cloud.member.post(&format!("/image/v2/images/{id}/import"), &json!({"method": {"name": "web-download"}})).await;
    assert_eq!(r.status, 400);
    let r = cloud
        .member
        .post(&format!("/image/v2/images/{id}/import"), &json!({"method": {"name": "glance-direct"}}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let request_id = r.header("x-openstack-request-id").unwrap().to_string();
    let mut v = serde_json::Value::Null;
    for _ in 0..100 {
        v = cloud.member.get(&format!("/image/v2/images/{id}")).await.json();
        if v["status"] == "active" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(v["status"], "active");
    assert_eq!(v["checksum"], hex(&Md5::digest(b"staged bytes")));
    let (_, _, body) = get_bytes(&cloud, &cloud.member, &format!("/image/v2/images/{id}/file"), &[]).await;
    assert_eq!(body, b"staged bytes");
    // The import is recorded as a task (v2.12), finished by the time the image is active.
    let mut tasks = serde_json::Value::Null;
    for _ in 0..100 {
        tasks = cloud.member.get(&format!("/image/v2/images/{id}/tasks")).await.json()["tasks"].clone();
        if tasks[0]["status"] == "success" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{tasks}");
    assert_eq!(tasks[0]["status"], "success");
    assert_eq!(tasks[0]["type"], "api_image_import");
    assert_eq!(tasks[0]["request_id"], request_id.as_str());
    assert_eq!(tasks[0]["input"]["import_req"]["method"]["name"], "glance-direct");
    // Importing again is refused: the image is active.
    let r = cloud
        .member
        .post(&format!("/image/v2/images/{id}/import"), &json!({"method": {"name": "glance-direct"}}))
        .await;
    assert_eq!(r.status, 409);
    cloud.shutdown().await;
}

/// A loopback HTTP server answering every request with `body`; returns its URL.
pub(crate) async fn serve(body: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body).await;
        }
    });
    format!("http://{addr}/disk.raw")
}

async fn wait_for_task(cloud: &TestCloud, id: &str) -> serde_json::Value {
    for _ in 0..200 {
        let tasks = cloud.member.get(&format!("/image/v2/images/{id}/tasks")).await.json()["tasks"].clone();
        if tasks[0]["status"] == "success" || tasks[0]["status"] == "failure" {
            return tasks[0].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the import task of {id} did not finish");
}

#[tokio::test]
async fn web_download_import_when_enabled() {
    // Off by default.
    let cloud = TestCloud::start().await;
    let img = create_named(&cloud.member, "web").await;
    let id = img["id"].as_str().unwrap();
    let body = json!({"method": {"name": "web-download", "uri": "http://127.0.0.1:1/x"}});
    assert_eq!(cloud.member.post(&format!("/image/v2/images/{id}/import"), &body).await.status, 400);
    cloud.shutdown().await;

    let cloud = TestCloud::start_with(|c| {
        c.image.enabled_import_methods = vec!["glance-direct".into(), "web-download".into()];
    })
    .await;
    let methods = cloud.member.get("/image/v2/info/import").await.json()["import-methods"]["value"].clone();
    assert_eq!(methods, json!(["glance-direct", "web-download"]));
    let url = serve(b"downloaded disk").await;
    let img = create_named(&cloud.member, "web").await;
    let id = img["id"].as_str().unwrap();
    let bad = json!({"method": {"name": "web-download", "uri": "file:///etc/passwd"}});
    assert_eq!(cloud.member.post(&format!("/image/v2/images/{id}/import"), &bad).await.status, 400);
    let body = json!({"method": {"name": "web-download", "uri": url}});
    let r = cloud.member.post(&format!("/image/v2/images/{id}/import"), &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(wait_for_task(&cloud, id).await["status"], "success");
    let v = cloud.member.get(&format!("/image/v2/images/{id}")).await.json();
    assert_eq!(v["status"], "active");
    assert_eq!(v["checksum"], hex(&Md5::digest(b"downloaded disk")));
    let (_, _, data) = get_bytes(&cloud, &cloud.member, &format!("/image/v2/images/{id}/file"), &[]).await;
    assert_eq!(data, b"downloaded disk");

    // An unreachable URL: accepted, then the task fails and the image is back to queued.
    let img = create_named(&cloud.member, "web-bad").await;
    let id = img["id"].as_str().unwrap();
    let body = json!({"method": {"name": "web-download", "uri": "http://127.0.0.1:1/nothing"}});
    assert_eq!(cloud.member.post(&format!("/image/v2/images/{id}/import"), &body).await.status, 202);
    assert_eq!(wait_for_task(&cloud, id).await["status"], "failure");
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{id}")).await.json()["status"], "queued");
    cloud.shutdown().await;
}
