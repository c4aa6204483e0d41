//! The Swift API over HTTP, as clients use it.

use md5::{Digest as _, Md5};
use reqwest::Method;
use serde_json::Value;
use test_utils::{Client, TestCloud};

pub(crate) struct R {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl R {
    pub fn h(&self, n: &str) -> &str {
        self.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

pub(crate) fn account_of(c: &Client) -> String {
    format!("/object-store/v1/AUTH_{}", c.token_body["token"]["project"]["id"].as_str().expect("project token"))
}

pub(crate) async fn call(cloud: &TestCloud, c: &Client, method: &str, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> R {
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    // Redirects (form posts answer 303) are the answer, not to be followed.
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let mut req = client.request(m, format!("{}{path}", cloud.url)).body(body);
    if let Some(t) = &c.token {
        req = req.header("X-Auth-Token", t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    R { status, headers, body: r.bytes().await.expect("body").to_vec() }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// PUTs `data` with `Transfer-Encoding: chunked` in 300 kB chunks over a raw connection; returns the response head.
pub(crate) async fn chunked_put(cloud: &TestCloud, c: &Client, path: &str, data: &[u8], headers: &[(&str, &str)]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = cloud.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nX-Auth-Token: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
        c.token.clone().unwrap()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in data.chunks(300_000) {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
        s.write_all(chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn info_catalog_and_containers() {
    let cloud = TestCloud::start().await;
    let info = call(&cloud, &cloud.anonymous, "GET", "/object-store/info", vec![], &[]).await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["swift"]["max_container_name_length"], 256);

    // The catalog names this token's account.
    let catalog = &cloud.member.token_body["token"]["catalog"];
    let swift = catalog.as_array().unwrap().iter().find(|s| s["type"] == "object-store").expect("object-store");
    let url = swift["endpoints"][0]["url"].as_str().unwrap();
    assert!(url.ends_with(&account_of(&cloud.member)), "{url}");

    let acct = account_of(&cloud.member);
    assert_eq!(call(&cloud, &cloud.anonymous, "GET", &acct, vec![], &[]).await.status, 401);
    let empty = call(&cloud, &cloud.member, "GET", &acct, vec![], &[]).await;
    assert_eq!(empty.status, 204);
    assert!(!empty.h("x-trans-id").is_empty() && !empty.h("x-openstack-request-id").is_empty());

    let put = call(&cloud, &cloud.member, "PUT", &format!("{acct}/photos"), vec![], &[("X-Container-Meta-Color", "blue")]).await;
    assert_eq!(put.status, 201);
    assert_eq!(call(&cloud, &cloud.member, "PUT", &format!("{acct}/photos"), vec![], &[]).await.status, 202);
    let head = call(&cloud, &cloud.member, "HEAD", &format!("{acct}/photos"), vec![], &[]).await;
    assert_eq!(head.status, 204);
    assert_eq!(head.h("x-container-meta-color"), "blue");
    assert_eq!(head.h("x-container-object-count"), "0");
    let post = call(&cloud, &cloud.member, "POST", &format!("{acct}/photos"), vec![], &[("X-Remove-Container-Meta-Color", "x")]).await;
    assert_eq!(post.status, 204);
    let head = call(&cloud, &cloud.member, "HEAD", &format!("{acct}/photos"), vec![], &[]).await;
    assert!(head.headers.get("x-container-meta-color").is_none());

    let long = "c".repeat(257);
    let bad = call(&cloud, &cloud.member, "PUT", &format!("{acct}/{long}"), vec![], &[]).await;
    assert_eq!(bad.status, 400);
    assert!(bad.h("content-type").starts_with("text/html"), "Swift's HTML error body");

    assert_eq!(call(&cloud, &cloud.member, "POST", &acct, vec![], &[("X-Account-Meta-Owner", "me")]).await.status, 204);
    let head = call(&cloud, &cloud.member, "HEAD", &acct, vec![], &[]).await;
    assert_eq!(head.h("x-account-meta-owner"), "me");
    assert_eq!(head.h("x-account-container-count"), "1");
    let list = call(&cloud, &cloud.member, "GET", &format!("{acct}?format=json"), vec![], &[]).await;
    assert_eq!(list.json()[0]["name"], "photos");

    // Cross-project: 403, and nothing changes; readers read but do not write; admin reaches any account.
    assert_eq!(call(&cloud, &cloud.admin, "GET", &acct, vec![], &[]).await.status, 200);
    let admin_acct = account_of(&cloud.admin);
    assert_eq!(call(&cloud, &cloud.member, "GET", &admin_acct, vec![], &[]).await.status, 403);
    assert_eq!(call(&cloud, &cloud.member, "PUT", &format!("{admin_acct}/x"), vec![], &[]).await.status, 403);
    assert_eq!(call(&cloud, &cloud.admin, "GET", &admin_acct, vec![], &[]).await.status, 204);
    assert_eq!(call(&cloud, &cloud.reader, "GET", &acct, vec![], &[]).await.status, 200);
    assert_eq!(call(&cloud, &cloud.reader, "PUT", &format!("{acct}/r"), vec![], &[]).await.status, 403);

    assert_eq!(call(&cloud, &cloud.member, "DELETE", &format!("{acct}/photos"), vec![], &[]).await.status, 204);
    assert_eq!(call(&cloud, &cloud.member, "DELETE", &format!("{acct}/photos"), vec![], &[]).await.status, 404);
    cloud.shutdown().await;
}

#[tokio::test]
async fn objects_round_trip_and_conditions() {
    let cloud = TestCloud::start().await;
    let acct = account_of(&cloud.member);
    let c = format!("{acct}/box");
    assert_eq!(call(&cloud, &cloud.member, "PUT", &c, vec![], &[]).await.status, 201);

    // A multi-MiB body, streamed in chunks (chunked transfer encoding), comes back byte-identical.
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 17).map(|i| (i * 31 % 251) as u8).collect();
    let etag = hex(&Md5::digest(&data));
    let head = chunked_put(&cloud, &cloud.member, &format!("{c}/big.bin"), &data, &[
        ("X-Object-Meta-Kind", "blob"),
        ("Content-Type", "application/x-test"),
    ])
    .await;
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("etag: {etag}")), "{head}");
    let got = call(&cloud, &cloud.member, "GET", &format!("{c}/big.bin"), vec![], &[]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == data, "byte-identical");
    assert_eq!(got.h("etag"), etag);
    assert_eq!(got.h("content-type"), "application/x-test");
    assert_eq!(got.h("x-object-meta-kind"), "blob");
    assert!(got.h("x-timestamp").contains('.'));
    assert!(got.h("last-modified").ends_with("GMT"));

    // Ranges.
    let part = call(&cloud, &cloud.member, "GET", &format!("{c}/big.bin"), vec![], &[("Range", "bytes=10-19")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, data[10..20]);
    assert_eq!(part.h("content-range"), format!("bytes 10-19/{}", data.len()));
    let far = call(&cloud, &cloud.member, "GET", &format!("{c}/big.bin"), vec![], &[("Range", "bytes=99999999-")]).await;
    assert_eq!(far.status, 416);

    // Conditional GETs.
    let lm = got.h("last-modified").to_string();
    let quoted = format!("\"{etag}\"");
    assert_eq!(call(&cloud, &cloud.member, "GET", &format!("{c}/big.bin"), vec![], &[("If-None-Match", &quoted)]).await.status, 304);
    assert_eq!(call(&cloud, &cloud.member, "GET", &format!("{c}/big.bin"), vec![], &[("If-Match", "nope")]).await.status, 412);
    assert_eq!(call(&cloud, &cloud.member, "GET", &format!("{c}/big.bin"), vec![], &[("If-Modified-Since", &lm)]).await.status, 304);
    let old = "Mon, 01 Jan 2001 00:00:00 GMT";
    assert_eq!(call(&cloud, &cloud.member, "GET", &format!("{c}/big.bin"), vec![], &[("If-Unmodified-Since", old)]).await.status, 412);
    assert_eq!(call(&cloud, &cloud.member, "HEAD", &format!("{c}/big.bin"), vec![], &[("If-Match", &quoted)]).await.status, 200);

    // ETag mismatch: 422 and nothing listed.
    let bad = call(&cloud, &cloud.member, "PUT", &format!("{c}/bad"), b"abc".to_vec(), &[("ETag", "0123")]).await;
    assert_eq!(bad.status, 422);
    assert_eq!(call(&cloud, &cloud.member, "HEAD", &format!("{c}/bad"), vec![], &[]).await.status, 404);

    // Metadata POST replaces; COPY and X-Copy-From copy data and metadata.
    let post = call(&cloud, &cloud.member, "POST", &format!("{c}/big.bin"), vec![], &[("X-Object-Meta-New", "1")]).await;
    assert_eq!(post.status, 202);
    let head = call(&cloud, &cloud.member, "HEAD", &format!("{c}/big.bin"), vec![], &[]).await;
    assert_eq!(head.h("x-object-meta-new"), "1");
    assert!(head.headers.get("x-object-meta-kind").is_none());
    assert_eq!(head.h("content-length"), data.len().to_string());
    let copy = call(&cloud, &cloud.member, "COPY", &format!("{c}/big.bin"), vec![], &[("Destination", "/box/copy1")]).await;
    assert_eq!(copy.status, 201);
    let put_copy = call(&cloud, &cloud.member, "PUT", &format!("{c}/copy2"), vec![], &[("X-Copy-From", "box/big.bin")]).await;
    assert_eq!(put_copy.status, 201);
    let copied = call(&cloud, &cloud.member, "GET", &format!("{c}/copy2"), vec![], &[]).await;
    assert!(copied.body == data);
    assert_eq!(copied.h("x-object-meta-new"), "1");

    // Non-empty container: 409; usage counted.
    assert_eq!(call(&cloud, &cloud.member, "DELETE", &c, vec![], &[]).await.status, 409);
    let head = call(&cloud, &cloud.member, "HEAD", &c, vec![], &[]).await;
    assert_eq!(head.h("x-container-object-count"), "3");
    assert_eq!(head.h("x-container-bytes-used"), (3 * data.len()).to_string());
    for o in ["big.bin", "copy1", "copy2"] {
        assert_eq!(call(&cloud, &cloud.member, "DELETE", &format!("{c}/{o}"), vec![], &[]).await.status, 204);
    }
    assert_eq!(call(&cloud, &cloud.member, "GET", &format!("{c}/big.bin"), vec![], &[]).await.status, 404);
    assert_eq!(call(&cloud, &cloud.member, "DELETE", &c, vec![], &[]).await.status, 204);

    // Without a length nor chunked encoding: 411. Other projects' objects: 403.
    assert_eq!(call(&cloud, &cloud.member, "PUT", &format!("{acct}/nope/o"), b"x".to_vec(), &[]).await.status, 404);
    let admin_acct = account_of(&cloud.admin);
    assert_eq!(call(&cloud, &cloud.admin, "PUT", &format!("{admin_acct}/a"), vec![], &[]).await.status, 201);
    assert_eq!(call(&cloud, &cloud.admin, "PUT", &format!("{admin_acct}/a/o"), b"x".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, &cloud.member, "GET", &format!("{admin_acct}/a/o"), vec![], &[]).await.status, 403);
    assert_eq!(call(&cloud, &cloud.member, "DELETE", &format!("{admin_acct}/a/o"), vec![], &[]).await.status, 403);
    assert_eq!(call(&cloud, &cloud.admin, "GET", &format!("{admin_acct}/a/o"), vec![], &[]).await.body, b"x");
    cloud.shutdown().await;
}

#[tokio::test]
async fn listings() {
    let cloud = TestCloud::start().await;
    let acct = account_of(&cloud.member);
    let c = format!("{acct}/docs");
    assert_eq!(call(&cloud, &cloud.member, "PUT", &c, vec![], &[]).await.status, 201);
    for o in ["a.txt", "b/1", "b/2", "b/c/3", "d.txt", "e"] {
        assert_eq!(call(&cloud, &cloud.member, "PUT", &format!("{c}/{o}"), o.as_bytes().to_vec(), &[]).await.status, 201);
    }
    let plain = |q: &'static str| {
        let (cloud, c) = (&cloud, c.clone());
        async move { call(cloud, &cloud.member, "GET", &format!("{c}?{q}"), vec![], &[]).await.text() }
    };
    assert_eq!(plain("").await, "a.txt\nb/1\nb/2\nb/c/3\nd.txt\ne\n");
    assert_eq!(plain("prefix=b/").await, "b/1\nb/2\nb/c/3\n");
    assert_eq!(plain("delimiter=/").await, "a.txt\nb/\nd.txt\ne\n");
    assert_eq!(plain("prefix=b/&delimiter=/").await, "b/1\nb/2\nb/c/\n");
    assert_eq!(plain("marker=b/2").await, "b/c/3\nd.txt\ne\n");
    assert_eq!(plain("marker=a.txt&end_marker=d.txt").await, "b/1\nb/2\nb/c/3\n");
    assert_eq!(plain("limit=2").await, "a.txt\nb/1\n");
    assert_eq!(plain("reverse=true&limit=3").await, "e\nd.txt\nb/c/3\n");
    assert_eq!(plain("reverse=true&marker=b/2").await, "b/1\na.txt\n");
    assert_eq!(plain("reverse=true&delimiter=/").await, "e\nd.txt\nb/\na.txt\n");
    let json = call(&cloud, &cloud.member, "GET", &format!("{c}?format=json&delimiter=/&prefix=b/"), vec![], &[]).await.json();
    assert_eq!(json[0]["name"], "b/1");
    assert_eq!(json[0]["bytes"], 3);
    assert_eq!(json[0]["hash"], hex(&Md5::digest(b"b/1")));
    assert_eq!(json[2]["subdir"], "b/c/");
    let xml = call(&cloud, &cloud.member, "GET", &format!("{c}?format=xml&limit=1"), vec![], &[]).await;
    assert!(xml.text().starts_with("<?xml"), "{}", xml.text());
    assert!(xml.text().contains("<name>a.txt</name>"));
    assert_eq!(call(&cloud, &cloud.member, "GET", &format!("{c}?limit=10001"), vec![], &[]).await.status, 412);
    let accept = call(&cloud, &cloud.member, "GET", &c, vec![], &[("Accept", "application/json")]).await;
    assert_eq!(accept.json().as_array().unwrap().len(), 6);
    cloud.shutdown().await;
}

#[tokio::test]
async fn swift_conventions_and_reseller_admin() {
    let cloud = TestCloud::start().await;
    let acct = account_of(&cloud.member);

    // X-Trans-Id as Swift forms it, on successes and errors alike.
    let ok = call(&cloud, &cloud.member, "GET", &acct, vec![], &[]).await;
    let missing = call(&cloud, &cloud.member, "HEAD", &format!("{acct}/nope"), vec![], &[]).await;
    assert_eq!(missing.status, 404);
    for r in [&ok, &missing] {
        let id = r.h("x-trans-id");
        let (tx, time) = id.split_once('-').expect("tx…-time");
        assert!(tx.len() == 23 && tx.starts_with("tx") && tx[2..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert!(time.len() == 10 && time.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert!(r.h("x-openstack-request-id").starts_with("req-"));
    }

    let health = call(&cloud, &cloud.anonymous, "GET", "/object-store/healthcheck", vec![], &[]).await;
    assert_eq!((health.status, health.text().as_str()), (200, "OK"));

    // Trailing slashes name the account and the container.
    assert_eq!(call(&cloud, &cloud.member, "PUT", &format!("{acct}/slash/"), vec![], &[]).await.status, 201);
    let listed = call(&cloud, &cloud.member, "GET", &format!("{acct}/?format=json"), vec![], &[]).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()[0]["name"], "slash");
    assert_eq!(call(&cloud, &cloud.member, "PUT", &format!("{acct}/slash/o"), b"x".to_vec(), &[]).await.status, 201);
    let objects = call(&cloud, &cloud.member, "GET", &format!("{acct}/slash/"), vec![], &[]).await;
    assert_eq!((objects.status, objects.text().as_str()), (200, "o\n"));

    // A ResellerAdmin of another project reaches the demo account; a plain member of that project does not.
    let admin = &cloud.admin;
    let role = admin.post("/identity/v3/roles", &serde_json::json!({"role": {"name": "ResellerAdmin"}})).await;
    assert_eq!(role.status, 201, "{}", role.text);
    let role_id = role.json()["role"]["id"].as_str().unwrap().to_string();
    let admin_project = admin.token_body["token"]["project"]["id"].as_str().unwrap().to_string();
    let user = admin
        .post("/identity/v3/users", &serde_json::json!({"user": {"name": "reseller", "password": "reseller-pw"}}))
        .await;
    assert_eq!(user.status, 201, "{}", user.text);
    let user_id = user.json()["user"]["id"].as_str().unwrap().to_string();
    let path = format!("/identity/v3/projects/{admin_project}/users/{user_id}/roles/{role_id}");
    assert_eq!(admin.request(Method::PUT, &path, None, &[]).await.status, 204);
    let reseller = cloud.anonymous.login("reseller", "reseller-pw", "admin").await;
    assert_eq!(call(&cloud, &reseller, "GET", &acct, vec![], &[]).await.status, 200);
    assert_eq!(call(&cloud, &reseller, "PUT", &format!("{acct}/by-reseller"), vec![], &[]).await.status, 201);
    let admin_acct = account_of(&cloud.admin);
    assert_eq!(call(&cloud, &cloud.member, "GET", &admin_acct, vec![], &[]).await.status, 403);
    cloud.shutdown().await;
}

#[tokio::test]
async fn blank_metadata_copies_and_empty_listings() {
    let cloud = TestCloud::start().await;
    let c = &cloud.member;
    let acct = account_of(c);
    assert_eq!(call(&cloud, c, "PUT", &format!("{acct}/m"), vec![], &[]).await.status, 201);
    let put = call(&cloud, c, "PUT", &format!("{acct}/m/src"), b"data".to_vec(), &[("X-Object-Meta-Blank", ""), ("X-Object-Meta-Src", "v")]).await;
    assert_eq!(put.status, 201);
    let head = call(&cloud, c, "HEAD", &format!("{acct}/m/src"), vec![], &[]).await;
    assert_eq!(head.headers.get("x-object-meta-blank").map(|v| v.as_bytes()), Some(&b""[..]), "blank values are kept");

    // COPY answers with the copy's metadata and its origin; X-Fresh-Metadata drops the source's metadata.
    let copy = call(&cloud, c, "COPY", &format!("{acct}/m/src"), vec![], &[("Destination", "m/dst 1"), ("X-Object-Meta-New", "n")]).await;
    assert_eq!(copy.status, 201);
    assert_eq!(copy.h("x-copied-from"), "m/src");
    assert_eq!(copy.h("x-object-meta-src"), "v");
    assert_eq!(copy.h("x-object-meta-new"), "n");
    assert!(!copy.h("x-copied-from-last-modified").is_empty());
    let fresh = call(&cloud, c, "PUT", &format!("{acct}/m/fresh"), vec![], &[("X-Copy-From", "m/src"), ("X-Fresh-Metadata", "true")]).await;
    assert_eq!(fresh.status, 201);
    assert_eq!(fresh.h("x-copied-from"), "m/src");
    let head = call(&cloud, c, "HEAD", &format!("{acct}/m/fresh"), vec![], &[]).await;
    assert!(head.headers.get("x-object-meta-src").is_none());
    assert_eq!(call(&cloud, c, "GET", &format!("{acct}/m/fresh"), vec![], &[]).await.body, b"data");

    // POST replaces the set, blank values included.
    let post = call(&cloud, c, "POST", &format!("{acct}/m/src"), vec![], &[("X-Object-Meta-Only", "")]).await;
    assert_eq!(post.status, 202);
    let head = call(&cloud, c, "HEAD", &format!("{acct}/m/src"), vec![], &[]).await;
    assert!(head.headers.get("x-object-meta-only").is_some() && head.headers.get("x-object-meta-src").is_none());

    // limit=0 lists nothing.
    let none = call(&cloud, c, "GET", &format!("{acct}/m?limit=0"), vec![], &[]).await;
    assert_eq!(none.status, 204);
    let none = call(&cloud, c, "GET", &format!("{acct}?limit=0&format=json"), vec![], &[]).await;
    assert_eq!(none.json(), serde_json::json!([]));
    cloud.shutdown().await;
}

#[tokio::test]
async fn content_disposition_and_encoding_are_kept() {
    let cloud = TestCloud::start().await;
    let c = &cloud.member;
    let acct = account_of(c);
    assert_eq!(call(&cloud, c, "PUT", &format!("{acct}/h"), vec![], &[]).await.status, 201);
    let headers = [("Content-Disposition", "attachment; filename=a.txt"), ("Content-Encoding", "gzip")];
    assert_eq!(call(&cloud, c, "PUT", &format!("{acct}/h/o"), b"zz".to_vec(), &headers).await.status, 201);
    let get = call(&cloud, c, "GET", &format!("{acct}/h/o"), vec![], &[]).await;
    assert_eq!(get.h("content-disposition"), "attachment; filename=a.txt");
    assert_eq!(get.h("content-encoding"), "gzip");
    assert!(get.headers.keys().all(|k| !k.as_str().starts_with("x-object-meta-")), "not user metadata");
    cloud.shutdown().await;
}

#[tokio::test]
async fn expiring_objects_vanish_from_reads() {
    let cloud = TestCloud::start().await;
    let c = &cloud.member;
    let acct = account_of(c);
    assert_eq!(call(&cloud, c, "PUT", &format!("{acct}/e"), vec![], &[]).await.status, 201);
    let o = format!("{acct}/e/o");
    assert_eq!(call(&cloud, c, "PUT", &o, b"x".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, c, "POST", &o, vec![], &[("X-Delete-At", "100")]).await.status, 400, "in the past");
    assert_eq!(call(&cloud, c, "POST", &o, vec![], &[("X-Delete-After", "soon")]).await.status, 400);
    assert_eq!(call(&cloud, c, "POST", &o, vec![], &[("X-Delete-After", "1")]).await.status, 202);
    let head = call(&cloud, c, "HEAD", &o, vec![], &[]).await;
    assert_eq!(head.status, 200);
    let at: i64 = head.h("x-delete-at").parse().expect("x-delete-at");
    assert!(at > chrono::Utc::now().timestamp() - 1);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(call(&cloud, c, "GET", &o, vec![], &[]).await.status, 404);
    assert_eq!(call(&cloud, c, "HEAD", &o, vec![], &[]).await.status, 404);

    // The expirer's pass takes it off the listing and the disk; objects not yet due stay.
    let later = format!("{acct}/e/later");
    assert_eq!(call(&cloud, c, "PUT", &later, b"y".to_vec(), &[("X-Delete-After", "3600")]).await.status, 201);
    let store = cloud.running.cloud.object.clone().expect("object service");
    let devices = cloud.running.data_dir.join("object");
    let files = |dir: &std::path::Path| -> usize {
        fn walk(d: &std::path::Path) -> usize {
            std::fs::read_dir(d).map_or(0, |it| {
                it.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { usize::from(e.path().extension().is_some_and(|x| x == "data")) }).sum()
            })
        }
        walk(dir)
    };
    assert_eq!(files(&devices), 2);
    assert_eq!(store.expire_objects(chrono::Utc::now().timestamp()).await.unwrap(), 1);
    assert_eq!(files(&devices), 1, "the expired object's data is gone");
    let head = call(&cloud, c, "HEAD", &format!("{acct}/e"), vec![], &[]).await;
    assert_eq!(head.h("x-container-object-count"), "1");
    assert_eq!(call(&cloud, c, "GET", &later, vec![], &[]).await.body, b"y");
    assert_eq!(store.expire_objects(chrono::Utc::now().timestamp()).await.unwrap(), 0);
    cloud.shutdown().await;
}
