//! CORS from container metadata: preflights and exposed responses.

use test_utils::TestCloud;

use crate::http::{account_of, call};

#[tokio::test]
async fn containers_allow_origins() {
    let cloud = TestCloud::start().await;
    let (m, anon) = (&cloud.member, &cloud.anonymous);
    let acct = account_of(m);
    let c = format!("{acct}/web");
    let cors = [
        ("X-Container-Meta-Access-Control-Allow-Origin", "http://ok.example http://also.example"),
        ("X-Container-Meta-Access-Control-Max-Age", "600"),
        ("X-Container-Meta-Access-Control-Expose-Headers", "X-Custom"),
    ];
    assert_eq!(call(&cloud, m, "PUT", &c, vec![], &cors).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{c}/o"), b"x".to_vec(), &[("X-Object-Meta-Color", "red")]).await.status, 201);

    // OPTIONS without an origin: what is allowed, no token needed.
    let plain = call(&cloud, anon, "OPTIONS", &acct, vec![], &[]).await;
    assert_eq!(plain.status, 200);
    assert!(plain.h("allow").contains("GET"), "{:?}", plain.headers);
    assert!(call(&cloud, anon, "OPTIONS", &format!("{c}/o"), vec![], &[]).await.h("allow").contains("COPY"));

    // Preflights.
    let pre = [
        ("Origin", "http://ok.example"),
        ("Access-Control-Request-Method", "PUT"),
        ("Access-Control-Request-Headers", "x-auth-token, content-type"),
    ];
    let ok = call(&cloud, anon, "OPTIONS", &format!("{c}/o"), vec![], &pre).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.h("access-control-allow-origin"), "http://ok.example");
    assert_eq!(ok.h("access-control-max-age"), "600");
    assert!(ok.h("access-control-allow-methods").contains("PUT"));
    assert_eq!(ok.h("access-control-allow-headers"), "content-type, x-auth-token");
    let bad_origin = [("Origin", "http://evil.example"), ("Access-Control-Request-Method", "GET")];
    assert_eq!(call(&cloud, anon, "OPTIONS", &format!("{c}/o"), vec![], &bad_origin).await.status, 401);
    let bad_method = [("Origin", "http://ok.example"), ("Access-Control-Request-Method", "PATCH")];
    assert_eq!(call(&cloud, anon, "OPTIONS", &format!("{c}/o"), vec![], &bad_method).await.status, 401);
    let nowhere = [("Origin", "http://ok.example"), ("Access-Control-Request-Method", "GET")];
    assert_eq!(call(&cloud, anon, "OPTIONS", &format!("{acct}/nope/o"), vec![], &nowhere).await.status, 401);

    // Actual requests from an allowed origin see the response; others do not.
    let got = call(&cloud, m, "GET", &format!("{c}/o"), vec![], &[("Origin", "http://also.example")]).await;
    assert_eq!(got.h("access-control-allow-origin"), "http://also.example");
    let exposed = got.h("access-control-expose-headers");
    for h in ["etag", "x-object-meta-color", "x-custom", "x-trans-id"] {
        assert!(exposed.split(", ").any(|e| e == h), "{h} in {exposed}");
    }
    let denied = call(&cloud, m, "GET", &format!("{c}/o"), vec![], &[("Origin", "http://evil.example")]).await;
    assert_eq!(denied.status, 200);
    assert!(denied.headers.get("access-control-allow-origin").is_none());

    // `*` allows any origin, and says so.
    call(&cloud, m, "POST", &c, vec![], &[("X-Container-Meta-Access-Control-Allow-Origin", "*")]).await;
    let any = call(&cloud, m, "HEAD", &format!("{c}/o"), vec![], &[("Origin", "http://anywhere.example")]).await;
    assert_eq!(any.h("access-control-allow-origin"), "*");
    let pre = call(&cloud, anon, "OPTIONS", &c, vec![], &[("Origin", "http://x.example"), ("Access-Control-Request-Method", "GET")]).await;
    assert_eq!((pre.status, pre.h("access-control-allow-origin")), (200, "*"));
    cloud.shutdown().await;
}
