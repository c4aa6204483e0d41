//! Staticweb: containers served as websites to anonymous browsers; the crossdomain policy.

use test_utils::TestCloud;

use crate::http::{account_of, call};

#[tokio::test]
async fn containers_as_websites() {
    let cloud = TestCloud::start().await;
    let m = &cloud.member;
    let anon = &cloud.anonymous;
    let acct = account_of(m);
    let site = format!("{acct}/site");
    assert_eq!(call(&cloud, m, "PUT", &site, vec![], &[("X-Container-Read", ".r:*,.rlistings")]).await.status, 201);
    for (name, body) in [("index.html", "<h1>home</h1>"), ("a/b.txt", "bee"), ("dir/index.html", "dir home"), ("404err.html", "custom 404")] {
        assert_eq!(call(&cloud, m, "PUT", &format!("{site}/{name}"), body.as_bytes().to_vec(), &[]).await.status, 201);
    }

    // No web settings: the API as usual.
    let r = call(&cloud, anon, "GET", &site, vec![], &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("404err.html\na/b.txt\n"), "{}", r.text());

    call(&cloud, m, "POST", &site, vec![], &[("X-Container-Meta-Web-Index", "index.html")]).await;
    let r = call(&cloud, anon, "GET", &site, vec![], &[]).await;
    assert_eq!((r.status, r.h("location")), (301, format!("{site}/").as_str()));
    let r = call(&cloud, anon, "GET", &format!("{site}/"), vec![], &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>"));
    assert_eq!(call(&cloud, anon, "GET", &format!("{site}/dir/"), vec![], &[]).await.text(), "dir home");
    let r = call(&cloud, anon, "GET", &format!("{site}/dir"), vec![], &[]).await;
    assert_eq!((r.status, r.h("location")), (301, format!("{site}/dir/").as_str()));
    assert_eq!(call(&cloud, anon, "HEAD", &format!("{site}/"), vec![], &[]).await.h("content-length"), "13");
    // The owner sees the API unless asking for the website.
    let r = call(&cloud, m, "GET", &format!("{site}/"), vec![], &[]).await;
    assert!(r.text().contains("a/b.txt"), "{}", r.text());
    let r = call(&cloud, m, "GET", &format!("{site}/"), vec![], &[("X-Web-Mode", "true")]).await;
    assert_eq!(r.text(), "<h1>home</h1>");

    // Listings, with a style sheet relative to each directory.
    call(
        &cloud,
        m,
        "POST",
        &site,
        vec![],
        &[("X-Remove-Container-Meta-Web-Index", "x"), ("X-Container-Meta-Web-Listings", "true"), ("X-Container-Meta-Web-Listings-CSS", "listings.css")],
    )
    .await;
    let r = call(&cloud, anon, "GET", &format!("{site}/"), vec![], &[]).await;
    let html = r.text();
    assert_eq!(r.status, 200);
    assert!(r.h("content-type").starts_with("text/html"));
    assert!(html.contains("<link rel=\"stylesheet\" type=\"text/css\" href=\"listings.css\" />"), "{html}");
    assert!(html.contains("href=\"index.html\"") && html.contains("href=\"a/\"") && !html.contains("b.txt"), "{html}");
    let html = call(&cloud, anon, "GET", &format!("{site}/a/"), vec![], &[]).await.text();
    assert!(html.contains("href=\"../listings.css\"") && html.contains("href=\"b.txt\"") && html.contains("href=\"../\""), "{html}");
    assert_eq!(call(&cloud, anon, "GET", &format!("{site}/nothing/"), vec![], &[]).await.status, 404);

    // Error pages.
    let r = call(&cloud, anon, "GET", &format!("{site}/missing"), vec![], &[]).await;
    assert_eq!(r.status, 404);
    call(&cloud, m, "POST", &site, vec![], &[("X-Container-Meta-Web-Error", "err.html")]).await;
    let r = call(&cloud, anon, "GET", &format!("{site}/missing"), vec![], &[]).await;
    assert_eq!((r.status, r.text().as_str()), (404, "custom 404"));
    assert_eq!(call(&cloud, anon, "GET", &format!("{site}/a/b.txt"), vec![], &[]).await.text(), "bee");

    // The public still needs the read ACL.
    call(&cloud, m, "POST", &site, vec![], &[("X-Remove-Container-Read", "x")]).await;
    assert_eq!(call(&cloud, anon, "GET", &format!("{site}/"), vec![], &[]).await.status, 401);

    let r = call(&cloud, anon, "GET", "/object-store/crossdomain.xml", vec![], &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("<?xml version=\"1.0\"?>\n<!DOCTYPE cross-domain-policy") && r.text().ends_with("</cross-domain-policy>"));
    let info = call(&cloud, anon, "GET", "/object-store/info", vec![], &[]).await.json();
    assert!(info.get("staticweb").is_some() && info.get("crossdomain").is_some());
    cloud.shutdown().await;
}
