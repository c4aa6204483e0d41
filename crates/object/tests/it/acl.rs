//! Container ACLs: public containers read anonymously, other projects' identities let in by name, operators only
//! for everything else.

use reqwest::Method;
use serde_json::json;
use test_utils::{Client, TestCloud};

use crate::http::{account_of, call};

/// A member of a project of its own (`<name>-project`), as another tenant of the cloud.
pub(crate) async fn outsider(cloud: &TestCloud, name: &str) -> Client {
    let admin = &cloud.admin;
    let project = admin.post("/identity/v3/projects", &json!({"project": {"name": format!("{name}-project")}})).await;
    assert_eq!(project.status, 201, "{}", project.text);
    let project_id = project.json()["project"]["id"].as_str().unwrap().to_string();
    let user = admin.post("/identity/v3/users", &json!({"user": {"name": name, "password": "outsider-pw"}})).await;
    assert_eq!(user.status, 201, "{}", user.text);
    let user_id = user.json()["user"]["id"].as_str().unwrap().to_string();
    let roles = admin.get("/identity/v3/roles?name=member").await.json();
    let role_id = roles["roles"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}");
    assert_eq!(admin.request(Method::PUT, &path, None, &[]).await.status, 204);
    cloud.anonymous.login(name, "outsider-pw", &format!("{name}-project")).await
}

fn ids(c: &Client) -> (String, String) {
    let t = &c.token_body["token"];
    (t["project"]["id"].as_str().unwrap().to_string(), t["user"]["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn public_containers_are_read_anonymously() {
    let cloud = TestCloud::start().await;
    let (m, anon) = (&cloud.member, &cloud.anonymous);
    let c = format!("{}/pub", account_of(m));
    assert_eq!(call(&cloud, m, "PUT", &c, vec![], &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{c}/o"), b"public data".to_vec(), &[]).await.status, 201);

    // Private: anonymous callers get 401 (with where to authenticate), other projects 403.
    let denied = call(&cloud, anon, "GET", &format!("{c}/o"), vec![], &[]).await;
    assert_eq!(denied.status, 401);
    assert!(denied.h("www-authenticate").starts_with("Keystone uri="), "{:?}", denied.headers);
    let other = outsider(&cloud, "other").await;
    assert_eq!(call(&cloud, &other, "GET", &format!("{c}/o"), vec![], &[]).await.status, 403);

    // `.r:*`: objects for anyone, listings not yet.
    let post = call(&cloud, m, "POST", &c, vec![], &[("X-Container-Read", " .r:* ")]).await;
    assert_eq!(post.status, 204);
    let got = call(&cloud, anon, "GET", &format!("{c}/o"), vec![], &[]).await;
    assert_eq!((got.status, got.body.as_slice()), (200, &b"public data"[..]));
    assert_eq!(call(&cloud, anon, "HEAD", &format!("{c}/o"), vec![], &[]).await.status, 200);
    assert_eq!(call(&cloud, &other, "GET", &format!("{c}/o"), vec![], &[]).await.status, 200);
    assert_eq!(call(&cloud, anon, "GET", &c, vec![], &[]).await.status, 401);
    assert_eq!(call(&cloud, anon, "PUT", &format!("{c}/o"), b"x".to_vec(), &[]).await.status, 401);
    assert_eq!(call(&cloud, anon, "DELETE", &format!("{c}/o"), vec![], &[]).await.status, 401);
    assert_eq!(call(&cloud, anon, "POST", &c, vec![], &[("X-Container-Read", "")]).await.status, 401);
    assert_eq!(call(&cloud, anon, "GET", &account_of(m), vec![], &[]).await.status, 401);

    // `.rlistings` opens the listing; the ACL itself is shown to the owner only.
    call(&cloud, m, "POST", &c, vec![], &[("X-Container-Read", ".r:*,.rlistings")]).await;
    let listed = call(&cloud, anon, "GET", &c, vec![], &[]).await;
    assert_eq!((listed.status, listed.text().as_str()), (200, "o\n"));
    assert!(listed.headers.get("x-container-read").is_none(), "not an operator");
    let head = call(&cloud, m, "HEAD", &c, vec![], &[]).await;
    assert_eq!(head.h("x-container-read"), ".r:*,.rlistings");

    // Referrer designations apply in order.
    call(&cloud, m, "POST", &c, vec![], &[("X-Container-Read", ".r:.example.com,.r:-bad.example.com")]).await;
    let from = |r: &'static str| {
        let (cloud, c) = (&cloud, c.clone());
        async move { call(cloud, &cloud.anonymous, "GET", &format!("{c}/o"), vec![], &[("Referer", r)]).await.status }
    };
    assert_eq!(from("http://www.example.com/page").await, 200);
    assert_eq!(from("http://bad.example.com/page").await, 401);
    assert_eq!(from("http://example.org/").await, 401);

    // Malformed ACLs are refused; X-Remove-Container-Read makes the container private again.
    assert_eq!(call(&cloud, m, "POST", &c, vec![], &[("X-Container-Read", ".r:")]).await.status, 400);
    assert_eq!(call(&cloud, m, "POST", &c, vec![], &[("X-Container-Write", ".r:*")]).await.status, 400);
    assert_eq!(call(&cloud, m, "POST", &c, vec![], &[("X-Remove-Container-Read", "x")]).await.status, 204);
    assert!(call(&cloud, m, "HEAD", &c, vec![], &[]).await.headers.get("x-container-read").is_none());
    assert_eq!(call(&cloud, anon, "GET", &format!("{c}/o"), vec![], &[("Referer", "http://www.example.com/")]).await.status, 401);

    // An ACL given at creation counts too; an invalid token is still a 401, not anonymous access.
    let c2 = format!("{}/pub2", account_of(m));
    assert_eq!(call(&cloud, m, "PUT", &c2, vec![], &[("X-Container-Read", ".r:*")]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{c2}/o"), b"2".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, anon, "GET", &format!("{c2}/o"), vec![], &[]).await.body, b"2");
    let forged = anon.with_token(Some("forged".into()));
    assert_eq!(call(&cloud, &forged, "GET", &format!("{c2}/o"), vec![], &[]).await.status, 401);
    cloud.shutdown().await;
}

#[tokio::test]
async fn other_projects_get_what_acls_grant() {
    let cloud = TestCloud::start().await;
    let m = &cloud.member;
    let other = outsider(&cloud, "alt").await;
    let (project, user) = ids(&other);
    let acct = account_of(m);
    let c = format!("{acct}/shared");
    assert_eq!(call(&cloud, m, "PUT", &c, vec![], &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{c}/o"), b"mine".to_vec(), &[]).await.status, 201);

    // Write access by project:user: objects may be written and deleted, not read, and the container is not theirs.
    let grant = format!("{project}:{user}");
    assert_eq!(call(&cloud, m, "POST", &c, vec![], &[("X-Container-Write", &grant)]).await.status, 204);
    assert_eq!(call(&cloud, &other, "PUT", &format!("{c}/theirs"), b"theirs".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, &other, "POST", &format!("{c}/theirs"), vec![], &[("X-Object-Meta-A", "1")]).await.status, 202);
    assert_eq!(call(&cloud, &other, "GET", &format!("{c}/theirs"), vec![], &[]).await.status, 403);
    assert_eq!(call(&cloud, &other, "GET", &c, vec![], &[]).await.status, 403);
    assert_eq!(call(&cloud, &other, "POST", &c, vec![], &[("X-Container-Meta-X", "1")]).await.status, 403);
    assert_eq!(call(&cloud, &other, "DELETE", &c, vec![], &[]).await.status, 403);
    assert_eq!(call(&cloud, &other, "GET", &acct, vec![], &[]).await.status, 403);
    assert_eq!(call(&cloud, m, "GET", &format!("{c}/theirs"), vec![], &[]).await.body, b"theirs");

    // Read access by project:* lets in listings and object reads, without the ACL headers.
    let grant = format!("{project}:*");
    assert_eq!(call(&cloud, m, "POST", &c, vec![], &[("X-Container-Read", &grant)]).await.status, 204);
    let listed = call(&cloud, &other, "GET", &format!("{c}?format=json"), vec![], &[]).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json().as_array().unwrap().len(), 2);
    assert!(listed.headers.get("x-container-read").is_none() && listed.headers.get("x-container-write").is_none());
    assert_eq!(call(&cloud, &other, "GET", &format!("{c}/o"), vec![], &[]).await.body, b"mine");
    assert_eq!(call(&cloud, &other, "DELETE", &format!("{c}/o"), vec![], &[]).await.status, 204);

    // COPY needs read on the source and write on the destination.
    let dst = format!("{acct}/dst");
    assert_eq!(call(&cloud, m, "PUT", &dst, vec![], &[]).await.status, 201);
    let copy = call(&cloud, &other, "COPY", &format!("{c}/theirs"), vec![], &[("Destination", "dst/copied")]).await;
    assert_eq!(copy.status, 403);
    call(&cloud, m, "POST", &dst, vec![], &[("X-Container-Write", "*:*")]).await;
    let copy = call(&cloud, &other, "COPY", &format!("{c}/theirs"), vec![], &[("Destination", "dst/copied")]).await;
    assert_eq!(copy.status, 201);

    // A manifest may only name segments its writer can read.
    let manifest = format!(r#"[{{"path": "/{}/o", "etag": null, "size_bytes": null}}]"#, "private");
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/private"), vec![], &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/private/o"), b"secret".to_vec(), &[]).await.status, 201);
    let slo = call(&cloud, &other, "PUT", &format!("{acct}/dst/slo?multipart-manifest=put"), manifest.into_bytes(), &[]).await;
    assert_eq!(slo.status, 403);

    // A user of the demo project without the member role gets in by role name in the ACL.
    let reader = &cloud.reader;
    assert_eq!(call(&cloud, reader, "PUT", &format!("{c}/r"), b"r".to_vec(), &[]).await.status, 403);
    call(&cloud, m, "POST", &c, vec![], &[("X-Container-Write", "reader")]).await;
    assert_eq!(call(&cloud, reader, "PUT", &format!("{c}/r"), b"r".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, &other, "PUT", &format!("{c}/x"), b"x".to_vec(), &[]).await.status, 403, "grant replaced");
    cloud.shutdown().await;
}
