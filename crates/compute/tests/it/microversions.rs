//! What each microversion changes, through HTTP: server representations (2.3 … 2.75), the tags API and list
//! filters (2.26), create and list rules (2.37, 2.38, 2.52, 2.75), flavors (2.55, 2.61, 2.75), key pairs (2.2,
//! 2.10, 2.35), server groups (2.13, 2.64), services and hypervisors (2.11, 2.28, 2.53), quotas and limits (2.36,
//! 2.57) and the APIs later versions removed (2.36, 2.43, 2.53).

use reqwest::Method;
use serde_json::{Value, json};
use test_utils::{Client, Response, TestCloud};

use crate::servers::{image, status, wait_agent};

async fn at(c: &Client, mv: &str, method: Method, path: &str, body: Option<&Value>) -> Response {
    let version = format!("compute {mv}");
    c.request(method, &format!("/compute/v2.1{path}"), body, &[("OpenStack-API-Version", version.as_str())]).await
}

async fn get(c: &Client, mv: &str, path: &str) -> Response {
    at(c, mv, Method::GET, path, None).await
}

async fn post(c: &Client, mv: &str, path: &str, body: Value) -> Response {
    at(c, mv, Method::POST, path, Some(&body)).await
}

async fn put(c: &Client, mv: &str, path: &str, body: Value) -> Response {
    at(c, mv, Method::PUT, path, Some(&body)).await
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default()
}

#[tokio::test]
async fn negotiation_advertises_the_range() {
    let cloud = TestCloud::start_without_agent().await;
    let r = cloud.anonymous.get("/compute/v2.1").await;
    assert_eq!(r.json()["version"]["version"], "2.80");
    let r = get(&cloud.member, "latest", "/flavors").await;
    assert_eq!(r.header("openstack-api-version"), Some("compute 2.80"));
    let r = get(&cloud.member, "2.81", "/flavors").await;
    assert_eq!(r.status, 406, "{}", r.text);
    assert_eq!(r.json()["computeFault"]["code"], 406, "{}", r.text);
    cloud.shutdown().await;
}

#[tokio::test]
async fn server_representation_follows_the_version() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let body = json!({"server": {"name": "mv", "imageRef": img, "flavorRef": "1", "description": "first",
        "tags": ["a", "b"], "networks": "none"}});
    // Description from 2.19, tags at create from 2.52, `networks` required from 2.37.
    let r = post(&cloud.member, "2.18", "/servers", body.clone()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = post(&cloud.member, "2.51", "/servers", body.clone()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = post(&cloud.member, "2.52", "/servers", body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["server"]["id"].as_str().unwrap().to_string();
    status(&cloud.member, &id, "ACTIVE").await;
    let path = format!("/servers/{id}");

    // 2.1: the flavor is a reference and none of the later fields are there.
    let s = get(&cloud.member, "2.1", &path).await.json()["server"].clone();
    assert_eq!(s["flavor"]["id"], "1");
    for k in
        ["locked", "description", "tags", "host_status", "locked_reason", "server_groups", "trusted_image_certificates"]
    {
        assert!(s.get(k).is_none(), "{k} at 2.1: {s}");
    }
    // 2.47: the flavor is embedded; 2.9 locked, 2.19 description, 2.26 tags.
    let s = get(&cloud.member, "2.47", &path).await.json()["server"].clone();
    assert_eq!(s["flavor"]["original_name"], "m1.tiny");
    assert_eq!(s["flavor"]["ram"], 512);
    assert!(s["flavor"].get("id").is_none());
    assert_eq!(s["flavor"]["extra_specs"], json!({}), "project readers may read extra specs: {s}");
    assert_eq!((s["locked"].clone(), s["description"].clone()), (json!(false), json!("first")));
    assert_eq!(s["tags"], json!(["a", "b"]));
    // Admins see the extended attributes of 2.3 and the host status of 2.16.
    let a = get(&cloud.admin, "2.16", &path).await.json()["server"].clone();
    assert_eq!(a["host_status"], "UP", "{a}");
    assert_eq!(a["OS-EXT-SRV-ATTR:launch_index"], 0);
    assert_eq!(a["OS-EXT-SRV-ATTR:hostname"], "mv");
    let a = get(&cloud.admin, "2.2", &path).await.json()["server"].clone();
    assert!(a.get("OS-EXT-SRV-ATTR:launch_index").is_none() && a.get("host_status").is_none());

    // 2.73: a lock reason, shown in `locked_reason`; 2.71: the server groups in show only.
    let r =
        post(&cloud.member, "2.73", &format!("{path}/action"), json!({"lock": {"locked_reason": "maintenance"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let s = get(&cloud.member, "2.73", &path).await.json()["server"].clone();
    assert_eq!((s["locked"].clone(), s["locked_reason"].clone()), (json!(true), json!("maintenance")));
    assert_eq!(s["server_groups"], json!([]));
    let list = get(&cloud.member, "2.73", "/servers/detail?locked=true").await.json();
    assert_eq!(list["servers"].as_array().unwrap().len(), 1);
    assert!(list["servers"][0].get("server_groups").is_none());
    assert_eq!(get(&cloud.member, "2.73", "/servers/detail?locked=false").await.json()["servers"], json!([]));
    post(&cloud.member, "2.73", &format!("{path}/action"), json!({"unlock": null})).await;

    // Update: the base view before 2.75, everything from 2.75.
    let u =
        put(&cloud.member, "2.74", &path, json!({"server": {"description": "second"}})).await.json()["server"].clone();
    assert_eq!(u["description"], "second");
    assert!(u.get("OS-EXT-STS:vm_state").is_none(), "{u}");
    let u = put(&cloud.member, "2.75", &path, json!({"server": {"name": "mv2"}})).await.json()["server"].clone();
    assert_eq!(u["OS-EXT-STS:vm_state"], "active");
    assert_eq!(u["name"], "mv2");

    // Rebuild: key_name (2.54) and user_data (2.57) in the answer, the full view from 2.75.
    let r = post(
        &cloud.member,
        "2.57",
        &format!("{path}/action"),
        json!({"rebuild": {"imageRef": img, "user_data": "aGk="}}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let rb = r.json()["server"].clone();
    assert_eq!(rb["user_data"], "aGk=");
    assert!(rb.get("key_name").is_some() && rb.get("OS-EXT-STS:vm_state").is_none(), "{rb}");
    status(&cloud.member, &id, "ACTIVE").await;
    let r = post(&cloud.member, "2.75", &format!("{path}/action"), json!({"rebuild": {"imageRef": img}})).await;
    let rb = r.json()["server"].clone();
    assert!(
        rb.get("OS-EXT-STS:vm_state").is_some() && rb.get("user_data").is_some() && rb.get("adminPass").is_some(),
        "{rb}"
    );
    assert!(rb.get("OS-EXT-SRV-ATTR:user_data").is_none());
    status(&cloud.member, &id, "ACTIVE").await;
    // personality left create and rebuild at 2.57.
    let r = post(
        &cloud.member,
        "2.57",
        &format!("{path}/action"),
        json!({"rebuild": {"imageRef": img, "personality": []}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    cloud.shutdown().await;
}

#[tokio::test]
async fn tags_api_and_filters() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let mut ids = Vec::new();
    for (name, tags) in [("one", json!(["red", "blue"])), ("two", json!(["red"])), ("three", json!([]))] {
        let body =
            json!({"server": {"name": name, "imageRef": img, "flavorRef": "1", "networks": "auto", "tags": tags}});
        let r = post(&cloud.member, "2.52", "/servers", body).await;
        assert_eq!(r.status, 202, "{}", r.text);
        ids.push(r.json()["server"]["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        status(&cloud.member, id, "ACTIVE").await;
    }
    let tags = format!("/servers/{}/tags", ids[2]);
    assert_eq!(get(&cloud.member, "2.25", &tags).await.status, 404);
    assert_eq!(get(&cloud.member, "2.26", &tags).await.json(), json!({"tags": []}));
    let r = put(&cloud.member, "2.26", &tags, json!({"tags": ["green", "red"]})).await;
    assert_eq!(r.json(), json!({"tags": ["green", "red"]}), "{}", r.text);
    let r = at(&cloud.member, "2.26", Method::PUT, &format!("{tags}/blue"), None).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.header("location").unwrap().ends_with(&format!("{tags}/blue")));
    assert_eq!(at(&cloud.member, "2.26", Method::PUT, &format!("{tags}/blue"), None).await.status, 204);
    assert_eq!(get(&cloud.member, "2.26", &format!("{tags}/blue")).await.status, 204);
    assert_eq!(at(&cloud.member, "2.26", Method::DELETE, &format!("{tags}/blue"), None).await.status, 204);
    assert_eq!(get(&cloud.member, "2.26", &format!("{tags}/blue")).await.status, 404);
    assert_eq!(at(&cloud.member, "2.26", Method::DELETE, &format!("{tags}/blue"), None).await.status, 404);
    assert_eq!(at(&cloud.member, "2.26", Method::PUT, &format!("{tags}/a,b"), None).await.status, 400);
    let fifty: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
    assert_eq!(put(&cloud.member, "2.26", &tags, json!({"tags": fifty})).await.status, 400);
    // Now: one = red, blue; two = red; three = green, red.
    let names = |r: Response| {
        let mut n: Vec<String> =
            r.json()["servers"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(get(&cloud.member, "2.26", "/servers?tags=red,blue").await), ["one"]);
    assert_eq!(names(get(&cloud.member, "2.26", "/servers?tags-any=blue,green").await), ["one", "three"]);
    assert_eq!(names(get(&cloud.member, "2.26", "/servers?not-tags=red,blue").await), ["three", "two"]);
    assert_eq!(names(get(&cloud.member, "2.26", "/servers?not-tags-any=blue,green").await), ["two"]);
    assert_eq!(names(get(&cloud.member, "2.26", "/servers?tags=red&not-tags-any=green").await), ["one", "two"]);
    // Before 2.26 the filters are not known, and the list is whole.
    assert_eq!(names(get(&cloud.member, "2.25", "/servers?tags=blue").await).len(), 3);
    assert_eq!(at(&cloud.member, "2.26", Method::DELETE, &tags, None).await.status, 204);
    assert_eq!(get(&cloud.member, "2.26", &tags).await.json(), json!({"tags": []}));
    cloud.shutdown().await;
}

#[tokio::test]
async fn create_and_list_rules_by_version() {
    let cloud = TestCloud::start_without_agent().await;
    let m = &cloud.member;
    let img = image(m).await;
    let server = |extra: Value| {
        let mut s = json!({"name": "x", "imageRef": img, "flavorRef": "1"});
        if let (Value::Object(a), Value::Object(b)) = (&mut s, extra) {
            a.extend(b);
        }
        json!({"server": s})
    };
    // 2.37: `networks` is required, `auto`, `none` or a list with uuids.
    let r = post(m, "2.37", "/servers", server(json!({}))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("networks"), "{}", r.text);
    assert_eq!(post(m, "2.37", "/servers", server(json!({"networks": "some"}))).await.status, 400);
    assert_eq!(post(m, "2.37", "/servers", server(json!({"networks": [{"uuid": "not-a-uuid"}]}))).await.status, 400);
    assert_eq!(post(m, "2.36", "/servers", server(json!({"networks": "auto"}))).await.status, 400);
    // 2.90: a hostname, one server at a time.
    let r = post(m, "2.80", "/servers", server(json!({"networks": "none", "hostname": "h"}))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    // 2.74: a requested host is for admins, and must exist.
    let r = post(m, "2.74", "/servers", server(json!({"networks": "none", "host": "nowhere"}))).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = post(&cloud.admin, "2.74", "/servers", server(json!({"networks": "none", "host": "nowhere"}))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    // 2.63: certificates cannot be validated here.
    let r = post(m, "2.63", "/servers", server(json!({"networks": "none", "trusted_image_certificates": ["x"]}))).await;
    assert_eq!(r.status, 400, "{}", r.text);

    // 2.38: an unknown status is a 400 (before, an empty list, for admins too).
    let r = get(m, "2.37", "/servers?status=nonsense").await;
    assert_eq!((r.status.as_u16(), r.json()["servers"].clone()), (200, json!([])), "{}", r.text);
    assert_eq!(get(m, "2.38", "/servers?status=nonsense").await.status, 400);
    assert_eq!(get(&cloud.admin, "2.1", "/servers?status=nonsense").await.json()["servers"], json!([]));
    // 2.75: unknown query parameters are a 400.
    assert_eq!(get(m, "2.74", "/servers?bogus=1").await.status, 200);
    let r = get(m, "2.75", "/servers?bogus=1").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(get(m, "2.75", "/servers?name=x&limit=1").await.status, 200);
    // 2.66: changes-before, not before changes-since.
    assert_eq!(get(m, "2.66", "/servers?changes-before=2000-01-01T00:00:00Z").await.json()["servers"], json!([]));
    let r = get(m, "2.66", "/servers?changes-since=2001-01-01T00:00:00Z&changes-before=2000-01-01T00:00:00Z").await;
    assert_eq!(r.status, 400, "{}", r.text);
    cloud.shutdown().await;
}

#[tokio::test]
async fn flavors_by_version() {
    let cloud = TestCloud::start_without_agent().await;
    let a = &cloud.admin;
    // 2.55: description at create and with PUT.
    let body =
        json!({"flavor": {"name": "mvf", "ram": 64, "vcpus": 1, "disk": 0, "id": "mvf", "description": "small"}});
    assert_eq!(post(a, "2.54", "/flavors", body.clone()).await.status, 400);
    let r = post(a, "2.55", "/flavors", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["flavor"]["description"], "small");
    assert!(r.json()["flavor"].get("extra_specs").is_none());
    assert_eq!(put(a, "2.54", "/flavors/mvf", json!({"flavor": {"description": "x"}})).await.status, 405);
    let r = put(a, "2.55", "/flavors/mvf", json!({"flavor": {"description": "tiny"}})).await;
    assert_eq!(r.json()["flavor"]["description"], "tiny", "{}", r.text);
    assert_eq!(put(a, "2.55", "/flavors/mvf", json!({"flavor": {"name": "x"}})).await.status, 400);
    let list = get(&cloud.member, "2.55", "/flavors").await.json();
    let mine = list["flavors"].as_array().unwrap().iter().find(|f| f["id"] == "mvf").unwrap().clone();
    assert_eq!(keys(&mine).len(), 4, "{mine}");
    // 2.61: extra specs in the flavor for those allowed to read them.
    post(a, "2.61", "/flavors/mvf/os-extra_specs", json!({"extra_specs": {"hw:cpu_policy": "shared"}})).await;
    let f = get(a, "2.61", "/flavors/mvf").await.json()["flavor"].clone();
    assert_eq!(f["extra_specs"], json!({"hw:cpu_policy": "shared"}));
    assert!(get(a, "2.60", "/flavors/mvf").await.json()["flavor"].get("extra_specs").is_none());
    // 2.75: unknown query parameters of `GET /flavors` are a 400 (not of `/flavors/detail`).
    assert_eq!(get(a, "2.74", "/flavors?bogus=1").await.status, 200);
    assert_eq!(get(a, "2.75", "/flavors?bogus=1").await.status, 400);
    assert_eq!(get(a, "2.75", "/flavors/detail?bogus=1").await.status, 200);
    assert_eq!(get(a, "2.75", "/flavors?minRam=1&limit=2").await.status, 200);
    // 2.75: a swap of 0 is 0, not "".
    assert_eq!(get(a, "2.74", "/flavors/mvf").await.json()["flavor"]["swap"], "");
    assert_eq!(get(a, "2.75", "/flavors/mvf").await.json()["flavor"]["swap"], 0);
    cloud.shutdown().await;
}

#[tokio::test]
async fn keypairs_by_version() {
    let cloud = TestCloud::start_without_agent().await;
    let m = &cloud.member;
    let r = post(m, "2.1", "/os-keypairs", json!({"keypair": {"name": "k1"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["keypair"].get("type").is_none());
    // 2.2: a type, 201 on create and 204 on delete.
    let r = post(m, "2.2", "/os-keypairs", json!({"keypair": {"name": "k2", "type": "ssh"}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["keypair"]["type"], "ssh");
    assert_eq!(post(m, "2.2", "/os-keypairs", json!({"keypair": {"name": "k3", "type": "pgp"}})).await.status, 400);
    // An x509 key pair: a generated certificate, or an imported one.
    let r = post(m, "2.2", "/os-keypairs", json!({"keypair": {"name": "x1", "type": "x509"}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cert = r.json()["keypair"]["public_key"].as_str().unwrap().to_string();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(r.json()["keypair"]["private_key"].as_str().unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(r.json()["keypair"]["fingerprint"].as_str().unwrap().split(':').count(), 20);
    let r =
        post(m, "2.2", "/os-keypairs", json!({"keypair": {"name": "x2", "type": "x509", "public_key": cert}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(get(m, "2.2", "/os-keypairs/x2").await.json()["keypair"]["type"], "x509");
    let bad = json!({"keypair": {"name": "x3", "type": "x509", "public_key": "ssh-rsa AAAA"}});
    assert_eq!(post(m, "2.2", "/os-keypairs", bad).await.status, 400);
    for k in ["x1", "x2"] {
        at(m, "2.2", Method::DELETE, &format!("/os-keypairs/{k}"), None).await;
    }
    assert_eq!(get(m, "2.2", "/os-keypairs/k1").await.json()["keypair"]["type"], "ssh");
    // 2.35: pages by name.
    let r = get(m, "2.35", "/os-keypairs?limit=1").await.json();
    assert_eq!(r["keypairs"].as_array().unwrap().len(), 1);
    assert_eq!(r["keypairs"][0]["keypair"]["name"], "k1");
    assert!(r["keypairs_links"][0]["href"].as_str().unwrap().contains("marker=k1"));
    let r = get(m, "2.35", "/os-keypairs?marker=k1").await.json();
    assert_eq!(r["keypairs"][0]["keypair"]["name"], "k2");
    assert_eq!(get(m, "2.34", "/os-keypairs?limit=1").await.json()["keypairs"].as_array().unwrap().len(), 2);
    // 2.10: admins manage other users' key pairs.
    let users = cloud.admin.get("/identity/v3/users?name=demo").await.json();
    let demo = users["users"][0]["id"].as_str().unwrap().to_string();
    let r = post(&cloud.admin, "2.10", "/os-keypairs", json!({"keypair": {"name": "given", "user_id": demo}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["keypair"]["user_id"], demo.as_str());
    assert_eq!(get(m, "2.10", "/os-keypairs/given").await.status, 200);
    let r = at(&cloud.admin, "2.10", Method::DELETE, &format!("/os-keypairs/given?user_id={demo}"), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(at(m, "2.1", Method::DELETE, "/os-keypairs/k1", None).await.status, 202);
    assert_eq!(at(m, "2.2", Method::DELETE, "/os-keypairs/k2", None).await.status, 204);
    cloud.shutdown().await;
}

#[tokio::test]
async fn server_groups_by_version() {
    let cloud = TestCloud::start_without_agent().await;
    let m = &cloud.member;
    let g = post(m, "2.1", "/os-server-groups", json!({"server_group": {"name": "g", "policies": ["affinity"]}})).await;
    assert_eq!(g.status, 200, "{}", g.text);
    let mut k = keys(&g.json()["server_group"]).into_iter().map(str::to_string).collect::<Vec<_>>();
    k.sort();
    assert_eq!(k, ["id", "members", "metadata", "name", "policies"]);
    let id = g.json()["server_group"]["id"].as_str().unwrap().to_string();
    let s = get(m, "2.13", &format!("/os-server-groups/{id}")).await.json()["server_group"].clone();
    assert!(s["user_id"].is_string() && s["project_id"].is_string(), "{s}");
    let s = get(m, "2.64", &format!("/os-server-groups/{id}")).await.json()["server_group"].clone();
    assert_eq!((s["policy"].clone(), s["rules"].clone()), (json!("affinity"), json!({})));
    assert!(s.get("policies").is_none() && s.get("metadata").is_none());
    // Soft policies from 2.15; rules of anti-affinity from 2.64.
    let soft = json!({"server_group": {"name": "s", "policies": ["soft-affinity"]}});
    assert_eq!(post(m, "2.14", "/os-server-groups", soft.clone()).await.status, 400);
    assert_eq!(post(m, "2.15", "/os-server-groups", soft).await.status, 200);
    let r = post(
        m,
        "2.64",
        "/os-server-groups",
        json!({"server_group": {"name": "r", "policy": "anti-affinity",
        "rules": {"max_server_per_host": 3}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["server_group"]["rules"], json!({"max_server_per_host": 3}));
    let r = post(
        m,
        "2.64",
        "/os-server-groups",
        json!({"server_group": {"name": "r", "policy": "affinity",
        "rules": {"max_server_per_host": 3}}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    cloud.shutdown().await;
}

#[tokio::test]
async fn hosts_quotas_and_removed_apis() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let a = &cloud.admin;
    // Services and hypervisors: integer ids before 2.53, uuids from it; forced_down from 2.11.
    let svc = get(a, "2.1", "/os-services?binary=nova-compute").await.json()["services"][0].clone();
    assert!(svc["id"].is_i64() && svc.get("forced_down").is_none(), "{svc}");
    let svc = get(a, "2.53", "/os-services?binary=nova-compute").await.json()["services"][0].clone();
    assert!(svc["id"].is_string() && svc["forced_down"] == json!(false), "{svc}");
    let sid = svc["id"].as_str().unwrap().to_string();
    let r =
        put(a, "2.53", &format!("/os-services/{sid}"), json!({"status": "disabled", "disabled_reason": "test"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["service"]["status"], "disabled");
    assert_eq!(r.json()["service"]["disabled_reason"], "test");
    put(a, "2.53", &format!("/os-services/{sid}"), json!({"status": "enabled"})).await;
    let h = get(a, "2.27", "/os-hypervisors/detail").await.json()["hypervisors"][0].clone();
    assert!(h["cpu_info"].is_string() && h["id"].is_i64(), "{h}");
    let h = get(a, "2.53", "/os-hypervisors/detail?with_servers=true").await.json()["hypervisors"][0].clone();
    assert!(h["cpu_info"].is_object() && h["id"].is_string(), "{h}");
    let hid = h["id"].as_str().unwrap().to_string();
    assert_eq!(get(a, "2.53", &format!("/os-hypervisors/{hid}")).await.status, 200);
    assert_eq!(
        get(a, "2.75", &format!("/os-hypervisors/{hid}?with_servers=1")).await.json()["hypervisor"]["servers"],
        json!([])
    );
    let name = h["hypervisor_hostname"].as_str().unwrap().to_string();
    assert_eq!(get(a, "2.52", &format!("/os-hypervisors/{name}/search")).await.status, 200);
    assert_eq!(get(a, "2.53", &format!("/os-hypervisors/{name}/search")).await.status, 404);
    // 2.74: an admin builds on a named host and node.
    let host = h["service"]["host"].as_str().unwrap().to_string();
    let img = image(a).await;
    let body = json!({"server": {"name": "pinned", "imageRef": img, "flavorRef": "1", "networks": "none",
        "host": host, "hypervisor_hostname": name}});
    let r = post(a, "2.74", "/servers", body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let built = status(a, r.json()["server"]["id"].as_str().unwrap(), "ACTIVE").await;
    assert_eq!(built["OS-EXT-SRV-ATTR:host"], host.as_str());
    // Paging from 2.33.
    assert_eq!(get(a, "2.33", "/os-hypervisors?limit=0").await.json()["hypervisors"], json!([]));
    // os-hosts left at 2.43, the image proxy at 2.36.
    assert_eq!(get(a, "2.42", "/os-hosts").await.status, 200);
    assert_eq!(get(a, "2.43", "/os-hosts").await.status, 404);
    assert_eq!(get(a, "2.35", "/images").await.status, 200);
    assert_eq!(get(a, "2.36", "/images").await.status, 404);
    // Quotas: network quotas leave at 2.36, injected files at 2.57.
    let project = cloud.member.get("/compute/v2.1/limits").await;
    assert_eq!(project.status, 200);
    let q = get(a, "2.35", "/os-quota-sets/demo").await.json()["quota_set"].clone();
    assert!(q.get("floating_ips").is_some() && q.get("injected_files").is_some());
    let q = get(a, "2.36", "/os-quota-sets/demo").await.json()["quota_set"].clone();
    assert!(q.get("floating_ips").is_none() && q.get("security_groups").is_none() && q.get("injected_files").is_some());
    let q = get(a, "2.57", "/os-quota-sets/demo").await.json()["quota_set"].clone();
    assert!(q.get("injected_files").is_none() && q.get("instances").is_some());
    let c = get(a, "2.49", "/os-quota-class-sets/default").await.json()["quota_class_set"].clone();
    assert!(c.get("server_groups").is_none() && c.get("floating_ips").is_some(), "{c}");
    let c = get(a, "2.50", "/os-quota-class-sets/default").await.json()["quota_class_set"].clone();
    assert!(c.get("server_groups").is_some() && c.get("floating_ips").is_none(), "{c}");
    let l = get(&cloud.member, "2.57", "/limits").await.json()["limits"]["absolute"].clone();
    for gone in ["maxTotalFloatingIps", "maxSecurityGroups", "maxImageMeta", "maxPersonality"] {
        assert!(l.get(gone).is_none(), "{gone}: {l}");
    }
    assert!(get(&cloud.member, "2.1", "/limits").await.json()["limits"]["absolute"].get("maxImageMeta").is_some());
    cloud.shutdown().await;
}

#[tokio::test]
async fn backups_rotate_and_answer_by_version() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let m = &cloud.member;
    let img = image(m).await;
    let r = post(
        m,
        "2.37",
        "/servers",
        json!({"server": {"name": "b", "imageRef": img, "flavorRef": "1", "networks": "none"}}),
    )
    .await;
    let id = r.json()["server"]["id"].as_str().unwrap().to_string();
    status(m, &id, "ACTIVE").await;
    let backup = |name: &str, rotation: u64| json!({"createBackup": {"name": name, "backup_type": "daily", "rotation": rotation}});
    let mut made = Vec::new();
    for (i, mv) in ["2.1", "2.45", "2.45"].into_iter().enumerate() {
        let r = post(m, mv, &format!("/servers/{id}/action"), backup(&format!("b{i}"), 2)).await;
        assert_eq!(r.status, 202, "{}", r.text);
        // The image id: in a `Location` header before 2.45, in the body from 2.45.
        let image_id = match mv {
            "2.1" => r.header("location").unwrap().rsplit('/').next().unwrap().to_string(),
            _ => r.json()["image_id"].as_str().unwrap().to_string(),
        };
        made.push(image_id);
        status(m, &id, "ACTIVE").await;
    }
    let list = |q: &'static str| async move {
        let r = m.get(&format!("/image/v2/images?{q}")).await.json();
        r["images"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let q = "image_type=backup&backup_type=daily&sort_key=created_at&sort_dir=asc";
    // Rotation 2 keeps the two newest.
    assert_eq!(list(q).await, made[1..].to_vec());
    // Rotation 0 takes no backup and drops them all.
    let r = post(m, "2.45", &format!("/servers/{id}/action"), backup("none", 0)).await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (202, ""));
    assert!(list(q).await.is_empty());
    let r = post(
        m,
        "2.45",
        &format!("/servers/{id}/action"),
        json!({"createBackup": {"name": "x", "backup_type": "daily"}}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    cloud.shutdown().await;
}
