//! The catalog (regions, services, endpoints), credentials and unified limits over HTTP, through the whole-cloud
//! harness: CRUD, validation, policy (denied calls change nothing), and that tokens' catalogs follow changes.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_utils::{Client, TestCloud};

const V3: &str = "/identity/v3";

async fn patch(c: &Client, path: &str, body: &Value) -> test_utils::Response {
    c.request(Method::PATCH, path, Some(body), &[]).await
}

async fn put(c: &Client, path: &str, body: &Value) -> test_utils::Response {
    c.request(Method::PUT, path, Some(body), &[]).await
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

async fn create_service(c: &Client, ty: &str) -> String {
    let r = c.post(&format!("{V3}/services"), &json!({"service": {"type": ty, "name": format!("{ty}-svc")}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()["service"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn regions_crud_hierarchy_and_rules() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;

    let r = admin.post(&format!("{V3}/regions"), &json!({"region": {"description": "parent", "color": "blue"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let parent = r.json()["region"].clone();
    let parent_id = parent["id"].as_str().unwrap().to_string();
    assert_eq!(parent["description"], "parent");
    assert_eq!(parent["parent_region_id"], Value::Null);
    assert_eq!(parent["color"], "blue", "extra attributes are echoed");
    assert!(parent["links"]["self"].as_str().unwrap().ends_with(&format!("/v3/regions/{parent_id}")));

    // PUT creates with the client's id; a second PUT is a conflict.
    let r = put(admin, &format!("{V3}/regions/child-1"), &json!({"region": {"parent_region_id": parent_id}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["region"]["id"], "child-1");
    assert_eq!(r.json()["region"]["description"], "");
    let r = put(admin, &format!("{V3}/regions/child-1"), &json!({"region": {}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Unknown parent: 404, as upstream.
    let r = put(admin, &format!("{V3}/regions/orphan"), &json!({"region": {"parent_region_id": "nope"}})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // The list equals what create returned, and filters by parent.
    let list = admin.get(&format!("{V3}/regions")).await.json();
    assert!(list["regions"].as_array().unwrap().contains(&parent));
    let children = admin.get(&format!("{V3}/regions?parent_region_id={parent_id}")).await.json();
    assert_eq!(ids(&children, "regions"), vec!["child-1".to_string()]);

    // Cycles are refused: parent under its own child.
    let r =
        patch(admin, &format!("{V3}/regions/{parent_id}"), &json!({"region": {"parent_region_id": "child-1"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("circular"), "{}", r.text);
    let r = patch(admin, &format!("{V3}/regions/child-1"), &json!({"region": {"description": "renamed"}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["region"]["description"], "renamed");
    assert_eq!(r.json()["region"]["parent_region_id"], parent_id.as_str());

    // Anyone authenticated reads regions; members cannot write, and nothing changes.
    assert_eq!(cloud.member.get(&format!("{V3}/regions/child-1")).await.status, StatusCode::OK);
    assert_eq!(cloud.anonymous.get(&format!("{V3}/regions")).await.status, StatusCode::UNAUTHORIZED);
    let r = cloud.member.post(&format!("{V3}/regions"), &json!({"region": {"id": "sneaky"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.get(&format!("{V3}/regions/sneaky")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(cloud.member.delete(&format!("{V3}/regions/child-1")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.get(&format!("{V3}/regions/child-1")).await.status, StatusCode::OK);

    // A region an endpoint uses (or whose sub-region one uses) cannot go: 403.
    let svc = create_service(admin, "regiontest").await;
    let r = admin
        .post(
            &format!("{V3}/endpoints"),
            &json!({"endpoint": {"service_id": svc, "interface": "public", "url": "http://x", "region_id": "child-1"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let ep = r.json()["endpoint"]["id"].as_str().unwrap().to_string();
    assert_eq!(admin.delete(&format!("{V3}/regions/{parent_id}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.delete(&format!("{V3}/endpoints/{ep}")).await.status, StatusCode::NO_CONTENT);
    // Without endpoints, deleting the parent deletes its sub-regions too.
    assert_eq!(admin.delete(&format!("{V3}/regions/{parent_id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{V3}/regions/child-1")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.delete(&format!("{V3}/regions/{parent_id}")).await.status, StatusCode::NOT_FOUND);
    cloud.shutdown().await;
}

#[tokio::test]
async fn services_and_endpoints_crud_validation_and_policy() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;

    let r = admin.post(&format!("{V3}/services"), &json!({"service": {"name": "no-type"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("'type' is a required property"), "{}", r.text);
    let r = admin.post(&format!("{V3}/services"), &json!({"service": {"type": "x", "enabled": "yes"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = admin
        .post(
            &format!("{V3}/services"),
            &json!({"service": {"type": "widget", "name": "w", "description": "d", "tier": 2}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let svc = r.json()["service"].clone();
    let sid = svc["id"].as_str().unwrap().to_string();
    assert_eq!(
        (svc["type"].as_str(), svc["name"].as_str(), svc["enabled"].as_bool()),
        (Some("widget"), Some("w"), Some(true))
    );
    assert_eq!(svc["tier"], 2);
    let r = patch(admin, &format!("{V3}/services/{sid}"), &json!({"service": {"description": "d2", "enabled": false}}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["service"]["description"], "d2");
    assert_eq!(r.json()["service"]["enabled"], false);
    assert_eq!(admin.get(&format!("{V3}/services/{sid}")).await.json()["service"], r.json()["service"]);
    let filtered = admin.get(&format!("{V3}/services?type=widget")).await.json();
    assert_eq!(ids(&filtered, "services"), vec![sid.clone()]);

    // Endpoint validation: interface, url, service, region.
    let ep = |extra: Value| {
        let mut body = json!({"service_id": sid, "interface": "public", "url": "http://w.example"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        json!({"endpoint": body})
    };
    let url = format!("{V3}/endpoints");
    assert_eq!(admin.post(&url, &ep(json!({"interface": "private"}))).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(admin.post(&url, &ep(json!({"enabled": "False"}))).await.status, StatusCode::BAD_REQUEST);
    let r = admin.post(&url, &json!({"endpoint": {"service_id": sid, "interface": "public"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("'url' is a required property"), "{}", r.text);
    let r = admin.post(&url, &ep(json!({"service_id": "missing"}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = admin.post(&url, &ep(json!({"region_id": "no-such-region"}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(admin.get(&format!("{V3}/regions/no-such-region")).await.status, StatusCode::NOT_FOUND);

    // Legacy `region` creates the region; both names are shown.
    let r = admin.post(&url, &ep(json!({"region": "auto-region"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let e = r.json()["endpoint"].clone();
    let eid = e["id"].as_str().unwrap().to_string();
    assert_eq!((e["region"].as_str(), e["region_id"].as_str()), (Some("auto-region"), Some("auto-region")));
    assert_eq!(admin.get(&format!("{V3}/regions/auto-region")).await.status, StatusCode::OK);
    let r = patch(admin, &format!("{url}/{eid}"), &json!({"endpoint": {"interface": "internal", "url": "http://new"}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["endpoint"]["interface"], "internal");
    assert_eq!(
        patch(admin, &format!("{url}/{eid}"), &json!({"endpoint": {"enabled": "True"}})).await.status,
        StatusCode::BAD_REQUEST
    );
    let list = admin.get(&format!("{url}?service_id={sid}&interface=internal")).await.json();
    assert_eq!(ids(&list, "endpoints"), vec![eid.clone()]);
    let list = admin.get(&format!("{url}?service_id={sid}&interface=public")).await.json();
    assert!(ids(&list, "endpoints").is_empty());
    let list = admin.get(&format!("{url}?region_id=auto-region")).await.json();
    assert_eq!(ids(&list, "endpoints"), vec![eid.clone()]);

    // Members neither read nor write services/endpoints (secure RBAC), and nothing changes.
    assert_eq!(cloud.member.get(&format!("{V3}/services")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(cloud.reader.get(&url).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        cloud.member.post(&format!("{V3}/services"), &json!({"service": {"type": "evil"}})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        patch(&cloud.member, &format!("{url}/{eid}"), &json!({"endpoint": {"url": "http://evil"}})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(cloud.member.delete(&format!("{V3}/services/{sid}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.get(&format!("{url}/{eid}")).await.json()["endpoint"]["url"], "http://new");
    assert!(ids(&admin.get(&format!("{V3}/services?type=evil")).await.json(), "services").is_empty());

    // Deleting the service deletes its endpoints.
    assert_eq!(admin.delete(&format!("{V3}/services/{sid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{V3}/services/{sid}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.get(&format!("{url}/{eid}")).await.status, StatusCode::NOT_FOUND);
    cloud.shutdown().await;
}

#[tokio::test]
async fn policy_blobs_and_endpoint_groups() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;

    let url = format!("{V3}/policies");
    assert_eq!(
        admin.post(&url, &json!({"policy": {"type": "application/json"}})).await.status,
        StatusCode::BAD_REQUEST
    );
    let r = admin.post(&url, &json!({"policy": {"type": "application/json", "blob": "{\"a\": 1}"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let pid = r.json()["policy"]["id"].as_str().unwrap().to_string();
    let r = patch(admin, &format!("{url}/{pid}"), &json!({"policy": {"type": "text/yaml"}})).await;
    assert_eq!(r.status, StatusCode::OK);
    let shown = admin.get(&format!("{url}/{pid}")).await.json();
    assert_eq!(
        (shown["policy"]["type"].as_str(), shown["policy"]["blob"].as_str()),
        (Some("text/yaml"), Some("{\"a\": 1}"))
    );
    assert_eq!(
        cloud.member.post(&url, &json!({"policy": {"type": "t", "blob": "b"}})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(cloud.member.delete(&format!("{url}/{pid}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(ids(&admin.get(&url).await.json(), "policies"), vec![pid.clone()]);
    assert_eq!(admin.delete(&format!("{url}/{pid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{url}/{pid}")).await.status, StatusCode::NOT_FOUND);

    let url = format!("{V3}/OS-EP-FILTER/endpoint_groups");
    let bad = json!({"endpoint_group": {"name": "g", "filters": {"colour": "red"}}});
    assert_eq!(admin.post(&url, &bad).await.status, StatusCode::BAD_REQUEST);
    let r = admin
        .post(&url, &json!({"endpoint_group": {"name": "g", "description": "d", "filters": {"interface": "public"}}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let group = r.json()["endpoint_group"].clone();
    let gid = group["id"].as_str().unwrap().to_string();
    assert!(admin.get(&url).await.json()["endpoint_groups"].as_array().unwrap().contains(&group));
    let r = admin.request(Method::HEAD, &format!("{url}/{gid}"), None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = patch(
        admin,
        &format!("{url}/{gid}"),
        &json!({"endpoint_group": {"name": "g2", "filters": {"service_id": "s"}}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["endpoint_group"]["filters"], json!({"service_id": "s"}));
    assert_eq!(cloud.member.get(&url).await.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.delete(&format!("{url}/{gid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.request(Method::HEAD, &format!("{url}/{gid}"), None, &[]).await.status, StatusCode::NOT_FOUND);
    cloud.shutdown().await;
}

fn catalog_types(token_body: &Value) -> Vec<String> {
    token_body["token"]["catalog"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["type"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn token_catalogs_follow_catalog_changes() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;
    assert!(catalog_types(&admin.token_body).contains(&"identity".to_string()));
    let sid = create_service(admin, "gadget").await;
    let r = admin
        .post(
            &format!("{V3}/endpoints"),
            &json!({"endpoint": {"service_id": sid, "interface": "public", "url": "http://gadget.example/v1"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let member = cloud.anonymous.login("demo", &cloud.running.credentials.clone().unwrap().demo_password, "demo").await;
    let catalog = &member.token_body["token"]["catalog"];
    let gadget = catalog.as_array().unwrap().iter().find(|s| s["type"] == "gadget").expect("new service listed");
    assert_eq!(gadget["endpoints"][0]["url"], "http://gadget.example/v1");
    // GET /v3/auth/catalog of an existing token too.
    let types: Vec<String> = member.get(&format!("{V3}/auth/catalog")).await.json()["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["type"].as_str().map(str::to_string))
        .collect();
    assert!(types.contains(&"gadget".to_string()));

    assert_eq!(admin.delete(&format!("{V3}/services/{sid}")).await.status, StatusCode::NO_CONTENT);
    let member = cloud.anonymous.login("demo", &cloud.running.credentials.clone().unwrap().demo_password, "demo").await;
    assert!(!catalog_types(&member.token_body).contains(&"gadget".to_string()));
    assert!(catalog_types(&member.token_body).contains(&"identity".to_string()));
    cloud.shutdown().await;
}

#[tokio::test]
async fn credentials_are_private_encrypted_and_ec2_keyed() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;
    let member = &cloud.member;
    let member_id = member.token_body["token"]["user"]["id"].as_str().unwrap().to_string();
    let admin_id = admin.token_body["token"]["user"]["id"].as_str().unwrap().to_string();
    let project = member.token_body["token"]["project"]["id"].as_str().unwrap().to_string();
    let url = format!("{V3}/credentials");

    // EC2: id from the access key; project required; blob must be JSON with an access key.
    let blob = r#"{"access": "AKIAEXAMPLE", "secret": "s3cr3t"}"#;
    let r = member.post(&url, &json!({"credential": {"user_id": member_id, "type": "ec2", "blob": blob}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = member
        .post(
            &url,
            &json!({"credential": {"user_id": member_id, "type": "ec2", "blob": "nope", "project_id": project}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = member
        .post(&url, &json!({"credential": {"user_id": member_id, "type": "ec2", "blob": blob, "project_id": project}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let cred = r.json()["credential"].clone();
    let ec2_id = cred["id"].as_str().unwrap().to_string();
    assert_eq!(ec2_id, identity::store::ec2_credential_id("AKIAEXAMPLE"));
    assert_eq!(cred["blob"], blob);
    let r = member
        .post(&url, &json!({"credential": {"user_id": member_id, "type": "ec2", "blob": blob, "project_id": project}}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // The S3 look-up finds it by access key; the blob is not stored in clear.
    let identity = cloud.running.cloud.identity.clone().expect("identity service");
    let found = identity.ec2_credential("AKIAEXAMPLE").await.unwrap().expect("found by access key");
    assert_eq!((found.user_id.as_str(), found.secret.as_str()), (member_id.as_str(), "s3cr3t"));
    assert!(identity.ec2_credential("unknown").await.unwrap().is_none());
    let row = identity.store().credential_get(&ec2_id).await.unwrap().unwrap();
    assert!(!row.encrypted_blob.contains("s3cr3t"));

    // A member cannot create for someone else; admin can, for anyone.
    let r = member.post(&url, &json!({"credential": {"user_id": admin_id, "type": "cert", "blob": "x"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = admin.post(&url, &json!({"credential": {"user_id": admin_id, "type": "cert", "blob": "admin-only"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let admin_cred = r.json()["credential"]["id"].as_str().unwrap().to_string();

    // Visibility: members list only their own; admins all; filters by type.
    let mine = ids(&member.get(&url).await.json(), "credentials");
    assert_eq!(mine, vec![ec2_id.clone()]);
    let all = ids(&admin.get(&url).await.json(), "credentials");
    assert!(all.contains(&ec2_id) && all.contains(&admin_cred));
    assert_eq!(ids(&admin.get(&format!("{url}?type=cert")).await.json(), "credentials"), vec![admin_cred.clone()]);
    assert_eq!(
        ids(&admin.get(&format!("{url}?user_id={member_id}")).await.json(), "credentials"),
        vec![ec2_id.clone()]
    );
    assert_eq!(member.get(&format!("{url}/{admin_cred}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(member.delete(&format!("{url}/{admin_cred}")).await.status, StatusCode::FORBIDDEN);
    let r = patch(member, &format!("{url}/{admin_cred}"), &json!({"credential": {"blob": "mine now"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.get(&format!("{url}/{admin_cred}")).await.json()["credential"]["blob"], "admin-only");
    // Handing one's credential to someone else is not allowed either.
    let r = patch(member, &format!("{url}/{ec2_id}"), &json!({"credential": {"user_id": admin_id}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Owner updates: the id stays, the blob changes.
    let blob2 = r#"{"access": "AKIANEW", "secret": "other"}"#;
    let r = patch(member, &format!("{url}/{ec2_id}"), &json!({"credential": {"blob": blob2}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["credential"]["id"], ec2_id.as_str());
    assert_eq!(member.get(&format!("{url}/{ec2_id}")).await.json()["credential"]["blob"], blob2);

    assert_eq!(member.delete(&format!("{url}/{ec2_id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{url}/{ec2_id}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.delete(&format!("{url}/{admin_cred}")).await.status, StatusCode::NO_CONTENT);
    cloud.shutdown().await;
}

#[tokio::test]
async fn os_ec2_credentials_per_user() {
    let cloud = TestCloud::start().await;
    let member = &cloud.member;
    let member_id = member.token_body["token"]["user"]["id"].as_str().unwrap().to_string();
    let admin_id = cloud.admin.token_body["token"]["user"]["id"].as_str().unwrap().to_string();
    let project = member.token_body["token"]["project"]["id"].as_str().unwrap().to_string();
    let base = format!("{V3}/users/{member_id}/credentials/OS-EC2");

    let r = member.post(&base, &json!({"tenant_id": project})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let cred = r.json()["credential"].clone();
    let access = cred["access"].as_str().unwrap().to_string();
    assert_eq!(
        (cred["user_id"].as_str(), cred["tenant_id"].as_str()),
        (Some(member_id.as_str()), Some(project.as_str()))
    );
    assert!(!cred["secret"].as_str().unwrap().is_empty());
    assert_eq!(member.post(&base, &json!({"tenant_id": "nope"})).await.status, StatusCode::NOT_FOUND);

    // The same credential in the generic API and for the S3 look-up.
    let generic = member.get(&format!("{V3}/credentials/{}", identity::store::ec2_credential_id(&access))).await;
    assert_eq!(generic.status, StatusCode::OK);
    assert_eq!(generic.json()["credential"]["type"], "ec2");
    let identity = cloud.running.cloud.identity.clone().expect("identity service");
    let found = identity.ec2_credential(&access).await.unwrap().expect("by access key");
    assert_eq!(found.secret, cred["secret"].as_str().unwrap());

    let shown = member.get(&format!("{base}/{access}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json()["credential"]["secret"], cred["secret"]);
    assert_eq!(ids_of_access(&member.get(&base).await.json()), vec![access.clone()]);

    // Someone else's: 403 for the member; under the wrong user, 404 even for admin.
    let other = format!("{V3}/users/{admin_id}/credentials/OS-EC2");
    assert_eq!(member.post(&other, &json!({"tenant_id": project})).await.status, StatusCode::FORBIDDEN);
    assert_eq!(member.get(&other).await.status, StatusCode::FORBIDDEN);
    assert_eq!(cloud.admin.get(&format!("{other}/{access}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(cloud.admin.get(&format!("{base}/{access}")).await.status, StatusCode::OK);

    assert_eq!(member.delete(&format!("{base}/{access}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(member.get(&format!("{base}/{access}")).await.status, StatusCode::NOT_FOUND);
    assert!(identity.ec2_credential(&access).await.unwrap().is_none());
    cloud.shutdown().await;
}

fn ids_of_access(v: &Value) -> Vec<String> {
    v["credentials"].as_array().unwrap().iter().filter_map(|c| c["access"].as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn limits_follow_the_flat_model_rules() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;
    let svc = create_service(admin, "quota-svc").await;
    let project = cloud.member.token_body["token"]["project"]["id"].as_str().unwrap().to_string();
    let reg = format!("{V3}/registered_limits");
    let lim = format!("{V3}/limits");

    let r = admin.get(&format!("{lim}/model")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["model"]["name"], "flat");

    // A project limit needs a registered limit first: 403.
    let limit =
        json!({"limits": [{"project_id": project, "service_id": svc, "resource_name": "cores", "resource_limit": 8}]});
    assert_eq!(admin.post(&lim, &limit).await.status, StatusCode::FORBIDDEN);

    let body = json!({"registered_limits": [
        {"service_id": svc, "resource_name": "cores", "default_limit": 4, "description": "vCPUs"},
        {"service_id": svc, "resource_name": "ram", "default_limit": 1024},
    ]});
    assert_eq!(cloud.member.post(&reg, &body).await.status, StatusCode::FORBIDDEN);
    assert!(admin.get(&reg).await.json()["registered_limits"].as_array().unwrap().is_empty());
    let r = admin.post(&reg, &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let created = ids(&r.json(), "registered_limits");
    assert_eq!(created.len(), 2);
    // Duplicates: 409, and nothing of the batch is created.
    let dup = json!({"registered_limits": [
        {"service_id": svc, "resource_name": "disk", "default_limit": 10},
        {"service_id": svc, "resource_name": "cores", "default_limit": 5},
    ]});
    assert_eq!(admin.post(&reg, &dup).await.status, StatusCode::CONFLICT);
    assert!(ids(&admin.get(&format!("{reg}?resource_name=disk")).await.json(), "registered_limits").is_empty());
    // Validation: unknown service (400), negative beyond -1 (400), unknown fields (400).
    let bad = |m: Value| json!({"registered_limits": [m]});
    assert_eq!(
        admin.post(&reg, &bad(json!({"service_id": "nope", "resource_name": "x", "default_limit": 1}))).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin.post(&reg, &bad(json!({"service_id": svc, "resource_name": "x", "default_limit": -5}))).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin
            .post(&reg, &bad(json!({"service_id": svc, "resource_name": "x", "default_limit": 1, "foo": 1})))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // Anyone authenticated reads registered limits, filtered.
    let r = cloud.member.get(&format!("{reg}?resource_name=cores")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["registered_limits"][0]["default_limit"], 4);
    let cores_id = r.json()["registered_limits"][0]["id"].as_str().unwrap().to_string();

    // Now the project limit works, once.
    let r = admin.post(&lim, &limit).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let limit_id = r.json()["limits"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["limits"][0]["resource_limit"], 8);
    assert_eq!(admin.post(&lim, &limit).await.status, StatusCode::CONFLICT);
    assert_eq!(cloud.member.post(&lim, &limit).await.status, StatusCode::FORBIDDEN);

    // The member of that project sees its limit; updates are admin-only.
    let r = cloud.member.get(&format!("{lim}/{limit_id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(ids(&cloud.member.get(&lim).await.json(), "limits"), vec![limit_id.clone()]);
    assert_eq!(
        patch(&cloud.member, &format!("{lim}/{limit_id}"), &json!({"limit": {"resource_limit": 99}})).await.status,
        StatusCode::FORBIDDEN
    );
    let r = patch(admin, &format!("{lim}/{limit_id}"), &json!({"limit": {"resource_limit": 16}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["limit"]["resource_limit"], 16);
    assert_eq!(
        patch(admin, &format!("{lim}/{limit_id}"), &json!({"limit": {"service_id": "x"}})).await.status,
        StatusCode::BAD_REQUEST
    );

    // A registered limit in use cannot be deleted; once the project limit is gone it can.
    assert_eq!(admin.delete(&format!("{reg}/{cores_id}")).await.status, StatusCode::FORBIDDEN);
    let r = patch(admin, &format!("{reg}/{cores_id}"), &json!({"registered_limit": {"default_limit": 6}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["registered_limit"]["default_limit"], 6);
    assert_eq!(admin.delete(&format!("{lim}/{limit_id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.delete(&format!("{reg}/{cores_id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{reg}/{cores_id}")).await.status, StatusCode::NOT_FOUND);
    cloud.shutdown().await;
}

/// The catalog, credential and limit queries on every database backend.
#[tokio::test]
async fn datastore_on_every_backend() {
    use identity::{
        Identity, IdentityConfig,
        store::{
            Credential, EndpointGroupRow, EndpointRecord, LimitRow, PolicyRow, RegionRow, RegisteredLimitRow,
            ServiceRecord,
        },
    };
    use serde_json::Map;

    for db in db::testing::test_databases().await {
        let dir = tempfile::tempdir().unwrap();
        let mut config = IdentityConfig::new(dir.path().join("fernet-keys"));
        config.password_hash_rounds = 4;
        let identity = Identity::new((*db).clone(), config).await.unwrap();
        identity.migrate().await.unwrap();
        let store = identity.store();

        let mut extra = Map::new();
        extra.insert("color".into(), json!("blue"));
        let parent = RegionRow { id: "p".into(), description: Some("d".into()), parent_region_id: None, extra };
        store.region_create(&parent).await.unwrap();
        let mut child =
            RegionRow { id: "c".into(), description: None, parent_region_id: Some("p".into()), extra: Map::new() };
        store.region_create(&child).await.unwrap();
        child.description = Some("changed".into());
        store.region_update(&child).await.unwrap();
        assert_eq!(store.region_get("c").await.unwrap(), Some(child.clone()));
        assert_eq!(store.region_get("p").await.unwrap(), Some(parent.clone()));
        store.region_delete_all(&["c".into(), "p".into()]).await.unwrap();
        assert!(store.region_list().await.unwrap().is_empty());

        let mut svc = ServiceRecord {
            id: "s1".into(),
            service_type: "compute".into(),
            name: Some("nova".into()),
            description: None,
            enabled: true,
            extra: Map::new(),
        };
        store.service_insert(&svc).await.unwrap();
        svc.enabled = false;
        svc.description = Some("x".into());
        store.service_update(&svc).await.unwrap();
        assert_eq!(store.service_get("s1").await.unwrap(), Some(svc.clone()));
        let mut ep = EndpointRecord {
            id: "e1".into(),
            service_id: "s1".into(),
            interface: "public".into(),
            region_id: None,
            url: "http://x".into(),
            enabled: true,
            extra: Map::new(),
        };
        store.endpoint_insert(&ep).await.unwrap();
        ep.url = "http://y".into();
        store.endpoint_update(&ep).await.unwrap();
        assert_eq!(store.endpoint_list_full().await.unwrap(), vec![ep.clone()]);
        assert!(store.service_delete("s1").await.unwrap());
        assert!(store.endpoint_get("e1").await.unwrap().is_none(), "endpoints go with their service");
        assert!(!store.endpoint_delete("e1").await.unwrap());

        let mut cred = Credential {
            id: "k1".into(),
            user_id: "u1".into(),
            project_id: None,
            cred_type: "cert".into(),
            blob: "secret-blob".into(),
            extra: Map::new(),
        };
        identity.credential_create(&cred).await.unwrap();
        assert!(!store.credential_get("k1").await.unwrap().unwrap().encrypted_blob.contains("secret-blob"));
        cred.blob = "new-blob".into();
        identity.credential_update(&cred).await.unwrap();
        assert_eq!(identity.credential_list(Some("u1")).await.unwrap(), vec![cred.clone()]);
        assert!(identity.credential_list(Some("u2")).await.unwrap().is_empty());
        assert!(dir.path().join("credential-keys").is_dir(), "credential keys live beside the token keys");
        assert!(store.credential_delete("k1").await.unwrap());

        let reg = RegisteredLimitRow {
            id: "r1".into(),
            service_id: "s".into(),
            region_id: None,
            resource_name: "cores".into(),
            default_limit: 2_147_483_647,
            description: None,
        };
        store.registered_limit_create_all(std::slice::from_ref(&reg)).await.unwrap();
        assert_eq!(store.registered_limit_list().await.unwrap(), vec![reg.clone()]);
        let mut lim = LimitRow {
            id: "l1".into(),
            project_id: Some("p".into()),
            domain_id: None,
            service_id: "s".into(),
            region_id: None,
            resource_name: "cores".into(),
            resource_limit: -1,
            description: Some("d".into()),
        };
        store.limit_create_all(&[lim.clone()]).await.unwrap();
        lim.resource_limit = 3;
        store.limit_update(&lim).await.unwrap();
        assert_eq!(store.limit_get("l1").await.unwrap(), Some(lim));
        assert!(store.limit_delete("l1").await.unwrap());
        assert!(store.registered_limit_delete("r1").await.unwrap());

        let mut pol = PolicyRow { id: "pol".into(), policy_type: "t".into(), blob: "b".into(), extra: Map::new() };
        store.policy_save(&pol, true).await.unwrap();
        pol.blob = "b2".into();
        store.policy_save(&pol, false).await.unwrap();
        assert_eq!(store.policy_list().await.unwrap(), vec![pol]);
        assert!(store.policy_delete("pol").await.unwrap());
        let mut filters = Map::new();
        filters.insert("interface".into(), json!("public"));
        let mut group = EndpointGroupRow { id: "g".into(), name: "n".into(), description: None, filters };
        store.endpoint_group_save(&group, true).await.unwrap();
        group.description = Some("d".into());
        store.endpoint_group_save(&group, false).await.unwrap();
        assert_eq!(store.endpoint_group_get("g").await.unwrap(), Some(group));
        assert!(store.endpoint_group_delete("g").await.unwrap());
        eprintln!("passed on {:?}", db.backend());
        db.cleanup().await;
    }
}
