//! Account and container quotas: who may set them, and the 413s they cause.

use test_utils::TestCloud;

use crate::http::{account_of, call, chunked_put};

#[tokio::test]
async fn container_quotas_cap_bytes_and_objects() {
    let cloud = TestCloud::start().await;
    let m = &cloud.member;
    let c = format!("{}/capped", account_of(m));
    assert_eq!(call(&cloud, m, "PUT", &c, vec![], &[("X-Container-Meta-Quota-Bytes", "ten")]).await.status, 400);
    assert_eq!(call(&cloud, m, "PUT", &c, vec![], &[("X-Container-Meta-Quota-Bytes", "10")]).await.status, 201);
    assert_eq!(call(&cloud, m, "POST", &c, vec![], &[("X-Container-Meta-Quota-Count", "-1")]).await.status, 400);

    assert_eq!(call(&cloud, m, "PUT", &format!("{c}/a"), b"0123456789".to_vec(), &[]).await.status, 201);
    let over = call(&cloud, m, "PUT", &format!("{c}/b"), b"x".to_vec(), &[]).await;
    assert_eq!(over.status, 413);
    assert!(over.text().contains("Upload exceeds quota."), "{}", over.text());
    let head = call(&cloud, m, "HEAD", &c, vec![], &[]).await;
    assert_eq!((head.h("x-container-bytes-used"), head.h("x-container-object-count")), ("10", "1"));

    // A body without a declared length is stopped as it streams; nothing is listed.
    assert_eq!(call(&cloud, m, "POST", &c, vec![], &[("X-Container-Meta-Quota-Bytes", "1000")]).await.status, 204);
    let head = chunked_put(&cloud, m, &format!("{c}/streamed"), &vec![7u8; 600_000], &[]).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(call(&cloud, m, "HEAD", &format!("{c}/streamed"), vec![], &[]).await.status, 404);

    // Object count; copies count too.
    assert_eq!(call(&cloud, m, "POST", &c, vec![], &[("X-Container-Meta-Quota-Count", "2")]).await.status, 204);
    let empty = [("Content-Length", "0")];
    assert_eq!(call(&cloud, m, "PUT", &format!("{c}/b"), vec![], &empty).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{c}/c"), vec![], &empty).await.status, 413);
    let copy = call(&cloud, m, "COPY", &format!("{c}/a"), vec![], &[("Destination", "capped/d")]).await;
    assert_eq!(copy.status, 413);

    // Removing the quotas lifts them.
    let lift = [("X-Remove-Container-Meta-Quota-Count", "x"), ("X-Container-Meta-Quota-Bytes", "")];
    assert_eq!(call(&cloud, m, "POST", &c, vec![], &lift).await.status, 204);
    assert_eq!(call(&cloud, m, "PUT", &format!("{c}/c"), vec![0; 2000], &[]).await.status, 201);
    cloud.shutdown().await;
}

#[tokio::test]
async fn account_quotas_are_set_by_resellers() {
    let cloud = TestCloud::start().await;
    let info = call(&cloud, &cloud.anonymous, "GET", "/object-store/info", vec![], &[]).await.json();
    assert!(info["account_quotas"].is_object() && info["container_quotas"].is_object(), "{info}");
    let (m, admin) = (&cloud.member, &cloud.admin);
    let acct = account_of(m);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/one"), vec![], &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/two"), vec![], &[]).await.status, 201);

    // The account's members may not set nor lift a quota, not even to nothing.
    for h in [("X-Account-Meta-Quota-Bytes", "100"), ("X-Account-Meta-Quota-Bytes", ""), ("X-Remove-Account-Meta-Quota-Bytes", "x")] {
        assert_eq!(call(&cloud, m, "POST", &acct, vec![], &[h]).await.status, 403, "{h:?}");
    }
    assert_eq!(call(&cloud, admin, "POST", &acct, vec![], &[("X-Account-Meta-Quota-Bytes", "many")]).await.status, 400);
    assert_eq!(call(&cloud, admin, "POST", &acct, vec![], &[("X-Account-Meta-Quota-Bytes", "20")]).await.status, 204);
    assert_eq!(call(&cloud, m, "HEAD", &acct, vec![], &[]).await.h("x-account-meta-quota-bytes"), "20");
    assert_eq!(call(&cloud, m, "POST", &acct, vec![], &[("X-Account-Meta-Other", "ok")]).await.status, 204);

    // The quota counts bytes across containers.
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/one/a"), vec![1; 15], &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/two/b"), vec![1; 6], &[]).await.status, 413);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/two/b"), vec![1; 5], &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "HEAD", &acct, vec![], &[]).await.h("x-account-bytes-used"), "20");

    // An empty value lifts it.
    assert_eq!(call(&cloud, admin, "POST", &acct, vec![], &[("X-Account-Meta-Quota-Bytes", "")]).await.status, 204);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/two/c"), vec![1; 50], &[]).await.status, 201);
    cloud.shutdown().await;
}
