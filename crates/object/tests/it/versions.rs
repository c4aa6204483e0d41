//! Object versioning: stack (X-Versions-Location) and history (X-History-Location) modes.

use test_utils::TestCloud;

use crate::http::{account_of, call};

#[tokio::test]
async fn versions_stack_up_and_come_back() {
    let cloud = TestCloud::start().await;
    let m = &cloud.member;
    let acct = account_of(m);
    let info = call(&cloud, &cloud.anonymous, "GET", "/object-store/info", vec![], &[]).await.json();
    assert_eq!(info["versioned_writes"]["allowed_flags"], serde_json::json!(["x-versions-location", "x-history-location"]));
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/old"), vec![], &[]).await.status, 201);
    let both = [("X-Versions-Location", "old"), ("X-History-Location", "old")];
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/base"), vec![], &both).await.status, 400);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/base"), vec![], &[("X-Versions-Location", "a/b")]).await.status, 412);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/base"), vec![], &[("X-Versions-Location", "old")]).await.status, 201);
    assert_eq!(call(&cloud, m, "HEAD", &format!("{acct}/base"), vec![], &[]).await.h("x-versions-location"), "old");

    let o = format!("{acct}/base/obj");
    for v in ["one", "two", "three"] {
        let meta = [("X-Object-Meta-Version", v)];
        assert_eq!(call(&cloud, m, "PUT", &o, v.as_bytes().to_vec(), &meta).await.status, 201);
    }
    let listed = call(&cloud, m, "GET", &format!("{acct}/old?format=json"), vec![], &[]).await.json();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("003obj/")), "{names:?}");
    assert_eq!(call(&cloud, m, "GET", &o, vec![], &[]).await.body, b"three");

    // Each DELETE brings the previous version back, metadata included, until none is left.
    assert_eq!(call(&cloud, m, "DELETE", &o, vec![], &[]).await.status, 204);
    let back = call(&cloud, m, "GET", &o, vec![], &[]).await;
    assert_eq!((back.body.as_slice(), back.h("x-object-meta-version")), (&b"two"[..], "two"));
    assert_eq!(call(&cloud, m, "DELETE", &o, vec![], &[]).await.status, 204);
    assert_eq!(call(&cloud, m, "GET", &o, vec![], &[]).await.body, b"one");
    let head = call(&cloud, m, "HEAD", &format!("{acct}/old"), vec![], &[]).await;
    assert_eq!(head.h("x-container-object-count"), "0");
    assert_eq!(call(&cloud, m, "DELETE", &o, vec![], &[]).await.status, 204);
    assert_eq!(call(&cloud, m, "DELETE", &o, vec![], &[]).await.status, 404);

    // Removing the header stops versioning.
    assert_eq!(call(&cloud, m, "POST", &format!("{acct}/base"), vec![], &[("X-Remove-Versions-Location", "x")]).await.status, 204);
    assert!(call(&cloud, m, "HEAD", &format!("{acct}/base"), vec![], &[]).await.headers.get("x-versions-location").is_none());
    call(&cloud, m, "PUT", &o, b"a".to_vec(), &[]).await;
    call(&cloud, m, "PUT", &o, b"b".to_vec(), &[]).await;
    assert_eq!(call(&cloud, m, "HEAD", &format!("{acct}/old"), vec![], &[]).await.h("x-container-object-count"), "0");

    // A versions container that does not exist stops overwrites rather than losing the old data.
    call(&cloud, m, "POST", &format!("{acct}/base"), vec![], &[("X-Versions-Location", "missing")]).await;
    assert_eq!(call(&cloud, m, "PUT", &o, b"c".to_vec(), &[]).await.status, 412);
    assert_eq!(call(&cloud, m, "GET", &o, vec![], &[]).await.body, b"b");
    cloud.shutdown().await;
}

#[tokio::test]
async fn history_keeps_every_version_and_deletes_really_delete() {
    let cloud = TestCloud::start().await;
    let m = &cloud.member;
    let acct = account_of(m);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/hist"), vec![], &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/docs"), vec![], &[("X-History-Location", "hist")]).await.status, 201);
    let o = format!("{acct}/docs/readme");
    assert_eq!(call(&cloud, m, "PUT", &o, b"v1".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &o, b"v2".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "DELETE", &o, vec![], &[]).await.status, 204);
    assert_eq!(call(&cloud, m, "GET", &o, vec![], &[]).await.status, 404);
    let listed = call(&cloud, m, "GET", &format!("{acct}/hist"), vec![], &[]).await.text();
    let names: Vec<&str> = listed.lines().collect();
    assert_eq!(names.len(), 2);
    assert_eq!(call(&cloud, m, "GET", &format!("{acct}/hist/{}", names[0]), vec![], &[]).await.body, b"v1");
    assert_eq!(call(&cloud, m, "GET", &format!("{acct}/hist/{}", names[1]), vec![], &[]).await.body, b"v2");
    assert_eq!(call(&cloud, m, "DELETE", &o, vec![], &[]).await.status, 404);

    // Switching modes replaces one header by the other.
    call(&cloud, m, "POST", &format!("{acct}/docs"), vec![], &[("X-Versions-Location", "hist")]).await;
    let head = call(&cloud, m, "HEAD", &format!("{acct}/docs"), vec![], &[]).await;
    assert_eq!(head.h("x-versions-location"), "hist");
    assert!(head.headers.get("x-history-location").is_none());
    cloud.shutdown().await;
}
