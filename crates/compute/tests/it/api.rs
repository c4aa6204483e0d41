//! The compute API through HTTP: version documents and microversions, flavors (lists, filters, pages, management,
//! extra specs, private flavor access), key pairs.

use reqwest::Method;
use serde_json::{Value, json};
use test_utils::{Response, TestCloud};

fn assert_fault(r: &Response, status: u16, fault: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert_eq!(r.json()[fault]["code"], status, "{}", r.text);
}

fn ids(v: &Value) -> Vec<String> {
    v["flavors"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn version_documents_and_microversions() {
    let cloud = TestCloud::start().await;
    let r = cloud.anonymous.get("/compute/").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["versions"][1]["id"], "v2.1");
    assert_eq!(r.json()["versions"][0]["id"], "v2.0");
    let r = cloud.anonymous.get("/compute/v2.1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = &r.json()["version"];
    assert_eq!((v["min_version"].as_str(), v["version"].as_str()), (Some("2.1"), Some("2.80")));
    assert!(r.header("x-compute-request-id").unwrap().starts_with("req-"));

    // The catalog lists …/compute/v2.1 as type compute, name nova.
    let r = cloud.admin.get("/identity/v3/auth/catalog").await;
    let catalog = r.json()["catalog"].as_array().unwrap().clone();
    let nova = catalog.iter().find(|s| s["type"] == "compute").expect("compute in catalog");
    assert_eq!(nova["name"], "nova");
    assert!(nova["endpoints"][0]["url"].as_str().unwrap().ends_with("/compute/v2.1"));

    let r = cloud.member.request(Method::GET, "/compute/v2.1/flavors", None, &[("X-OpenStack-Nova-API-Version", "2.1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-openstack-nova-api-version"), Some("2.1"));
    assert_eq!(r.header("openstack-api-version"), Some("compute 2.1"));
    let r = cloud
        .member
        .request(Method::GET, "/compute/v2.1/flavors", None, &[("OpenStack-API-Version", "compute 2.81")])
        .await;
    assert_eq!(r.status, 406, "{}", r.text);
    let r = cloud.member.request(Method::GET, "/compute/v2.1/flavors", None, &[("OpenStack-API-Version", "compute x")]).await;
    assert_fault(&r, 400, "badRequest");
    assert_fault(&cloud.anonymous.get("/compute/v2.1/flavors").await, 401, "unauthorized");
    assert_fault(&cloud.member.get("/compute/v2.1/nope").await, 404, "itemNotFound");
    cloud.shutdown().await;
}

#[tokio::test]
async fn flavor_lists_filters_and_pages() {
    let cloud = TestCloud::start().await;
    let r = cloud.member.get("/compute/v2.1/flavors").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let all = ids(&r.json());
    assert!(all.contains(&"1".to_string()) && all.contains(&"42".to_string()), "{all:?}");
    let first = &r.json()["flavors"][0];
    assert!(first.get("ram").is_none());
    assert!(first["links"][0]["href"].as_str().unwrap().ends_with("/compute/v2.1/flavors/1"));
    assert!(first["links"][1]["href"].as_str().unwrap().ends_with("/compute/flavors/1"));

    let r = cloud.member.get("/compute/v2.1/flavors/1").await;
    let tiny = &r.json()["flavor"];
    assert_eq!(tiny["name"], "m1.tiny");
    assert_eq!((tiny["ram"].as_i64(), tiny["disk"].as_i64(), tiny["vcpus"].as_i64()), (Some(512), Some(1), Some(1)));
    assert_eq!(tiny["swap"], "");
    assert_eq!(tiny["OS-FLV-EXT-DATA:ephemeral"], 0);
    assert_eq!(tiny["OS-FLV-DISABLED:disabled"], false);
    assert_eq!(tiny["os-flavor-access:is_public"], true);
    assert_eq!(tiny["rxtx_factor"], 1.0);

    let r = cloud.member.get("/compute/v2.1/flavors/detail?minRam=8192&minDisk=80").await;
    assert_eq!(ids(&r.json()), vec!["4", "5"]);
    assert_fault(&cloud.member.get("/compute/v2.1/flavors/detail?minRam=big").await, 400, "badRequest");

    let r = cloud.member.get("/compute/v2.1/flavors/detail?limit=2").await;
    let page1 = ids(&r.json());
    assert_eq!(page1.len(), 2);
    let next = r.json()["flavors_links"][0]["href"].as_str().unwrap().to_string();
    assert!(next.contains("marker=") && next.contains("/compute/v2.1/flavors/detail"), "{next}");
    let path = &next[next.find("/compute/").unwrap()..];
    let page2 = ids(&cloud.member.get(path).await.json());
    assert_eq!(page2, all[2..4].to_vec());
    let r = cloud.member.get(&format!("/compute/v2.1/flavors?marker={}", all[all.len() - 2])).await;
    assert_eq!(ids(&r.json()), vec![all[all.len() - 1].clone()]);
    assert!(r.json().get("flavors_links").is_none());
    assert_fault(&cloud.member.get("/compute/v2.1/flavors?marker=nope").await, 400, "badRequest");
    assert_fault(&cloud.member.get("/compute/v2.1/flavors?limit=-1").await, 400, "badRequest");
    assert_fault(&cloud.member.get("/compute/v2.1/flavors/nope").await, 404, "itemNotFound");
    cloud.shutdown().await;
}

#[tokio::test]
async fn flavor_management_specs_and_private_access() {
    let cloud = TestCloud::start().await;
    let body = json!({"flavor": {"name": "priv", "ram": 64, "vcpus": 1, "disk": 0, "id": "auto",
        "os-flavor-access:is_public": false, "swap": 16, "OS-FLV-EXT-DATA:ephemeral": 1}});
    let denied = cloud.member.post("/compute/v2.1/flavors", &body).await;
    assert_fault(&denied, 403, "forbidden");
    assert!(!ids(&cloud.admin.get("/compute/v2.1/flavors?is_public=none").await.json()).iter().any(|i| i.len() == 36));

    let r = cloud.admin.post("/compute/v2.1/flavors", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let f = r.json()["flavor"].clone();
    let id = f["id"].as_str().unwrap().to_string();
    assert_eq!((f["swap"].as_i64(), f["OS-FLV-EXT-DATA:ephemeral"].as_i64()), (Some(16), Some(1)));
    assert_eq!(f["os-flavor-access:is_public"], false);
    assert_fault(&cloud.admin.post("/compute/v2.1/flavors", &body).await, 409, "conflictingRequest");
    let bad = json!({"flavor": {"name": "x", "ram": -1, "vcpus": 1, "disk": 0}});
    assert_fault(&cloud.admin.post("/compute/v2.1/flavors", &bad).await, 400, "badRequest");

    // Private: the admin lists it with is_public=false; the demo project does not see it until shared.
    assert!(ids(&cloud.admin.get("/compute/v2.1/flavors?is_public=false").await.json()).contains(&id));
    assert!(!ids(&cloud.admin.get("/compute/v2.1/flavors").await.json()).contains(&id));
    assert!(!ids(&cloud.member.get("/compute/v2.1/flavors?is_public=none").await.json()).contains(&id));
    assert_fault(&cloud.member.get(&format!("/compute/v2.1/flavors/{id}")).await, 404, "itemNotFound");

    let projects = cloud.admin.get("/identity/v3/projects?name=demo").await.json();
    let demo = projects["projects"][0]["id"].as_str().unwrap().to_string();
    let action = format!("/compute/v2.1/flavors/{id}/action");
    let add = json!({"addTenantAccess": {"tenant": demo}});
    assert_fault(&cloud.member.post(&action, &add).await, 403, "forbidden");
    let r = cloud.admin.post(&action, &add).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["flavor_access"], json!([{"flavor_id": id, "tenant_id": demo}]));
    assert_fault(&cloud.admin.post(&action, &add).await, 409, "conflictingRequest");
    assert_eq!(cloud.admin.get(&format!("/compute/v2.1/flavors/{id}/os-flavor-access")).await.json()["flavor_access"][0]["tenant_id"], demo);
    assert_fault(&cloud.member.get(&format!("/compute/v2.1/flavors/{id}/os-flavor-access")).await, 403, "forbidden");
    assert_fault(&cloud.admin.get("/compute/v2.1/flavors/1/os-flavor-access").await, 404, "itemNotFound");
    assert!(ids(&cloud.member.get("/compute/v2.1/flavors/detail").await.json()).contains(&id));
    assert_eq!(cloud.member.get(&format!("/compute/v2.1/flavors/{id}")).await.status, 200);
    let r = cloud.admin.post(&action, &json!({"removeTenantAccess": {"tenant": demo}})).await;
    assert_eq!(r.json()["flavor_access"], json!([]));
    assert!(!ids(&cloud.member.get("/compute/v2.1/flavors/detail").await.json()).contains(&id));

    // Extra specs.
    let specs = format!("/compute/v2.1/flavors/{id}/os-extra_specs");
    let r = cloud.admin.post(&specs, &json!({"extra_specs": {"hw:numa_nodes": 1, "key1": "v1"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["extra_specs"], json!({"hw:numa_nodes": "1", "key1": "v1"}));
    assert_fault(&cloud.member.post(&specs, &json!({"extra_specs": {"a": "b"}})).await, 403, "forbidden");
    assert_eq!(cloud.member.get("/compute/v2.1/flavors/1/os-extra_specs").await.json(), json!({"extra_specs": {}}));
    let r = cloud.admin.request(Method::PUT, &format!("{specs}/key1"), Some(&json!({"key1": "v2"})), &[]).await;
    assert_eq!(r.json(), json!({"key1": "v2"}));
    let r = cloud.admin.request(Method::PUT, &format!("{specs}/key1"), Some(&json!({"key2": "v2"})), &[]).await;
    assert_fault(&r, 400, "badRequest");
    assert_eq!(cloud.admin.get(&format!("{specs}/key1")).await.json(), json!({"key1": "v2"}));
    assert_eq!(cloud.admin.delete(&format!("{specs}/key1")).await.status, 200);
    assert_fault(&cloud.admin.get(&format!("{specs}/key1")).await, 404, "itemNotFound");
    assert_fault(&cloud.admin.post("/compute/v2.1/flavors/nope/os-extra_specs", &json!({"extra_specs": {}})).await, 404, "itemNotFound");

    assert_fault(&cloud.member.delete(&format!("/compute/v2.1/flavors/{id}")).await, 403, "forbidden");
    assert_eq!(cloud.admin.delete(&format!("/compute/v2.1/flavors/{id}")).await.status, 202);
    assert_fault(&cloud.admin.get(&format!("/compute/v2.1/flavors/{id}")).await, 404, "itemNotFound");
    cloud.shutdown().await;
}

#[tokio::test]
async fn keypairs_generate_import_and_belong_to_their_user() {
    let cloud = TestCloud::start().await;
    let r = cloud.member.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "gen"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let k = r.json()["keypair"].clone();
    assert!(k["private_key"].as_str().unwrap().contains("OPENSSH PRIVATE KEY"));
    let public = k["public_key"].as_str().unwrap().to_string();
    let fingerprint = k["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fingerprint.split(':').count(), 16);

    let r = cloud.member.get("/compute/v2.1/os-keypairs/gen").await;
    let shown = &r.json()["keypair"];
    assert_eq!((shown["public_key"].as_str(), shown["fingerprint"].as_str()), (Some(public.as_str()), Some(fingerprint.as_str())));
    assert!(shown.get("private_key").is_none());
    assert_eq!(shown["deleted"], false);

    // Import: the same public key gives the same fingerprint; garbage and bad names are 400s, duplicates 409.
    let r = cloud.member.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "imp", "public_key": public}})).await;
    assert_eq!(r.json()["keypair"]["fingerprint"], fingerprint);
    assert!(r.json()["keypair"].get("private_key").is_none());
    let r = cloud.member.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "bad", "public_key": "ssh-rsa garbage"}})).await;
    assert_fault(&r, 400, "badRequest");
    let r = cloud.member.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "a/b"}})).await;
    assert_fault(&r, 400, "badRequest");
    let r = cloud.member.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "x", "type": "ssh"}})).await;
    assert_fault(&r, 400, "badRequest");
    assert_fault(&cloud.member.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "gen"}})).await, 409, "conflictingRequest");

    let list = cloud.member.get("/compute/v2.1/os-keypairs").await.json();
    let names: Vec<_> = list["keypairs"].as_array().unwrap().iter().map(|k| k["keypair"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["gen", "imp"]);
    // Another user sees none of them.
    assert_eq!(cloud.reader.get("/compute/v2.1/os-keypairs").await.json(), json!({"keypairs": []}));
    assert_fault(&cloud.reader.get("/compute/v2.1/os-keypairs/gen").await, 404, "itemNotFound");
    assert_fault(&cloud.reader.delete("/compute/v2.1/os-keypairs/gen").await, 404, "itemNotFound");

    assert_eq!(cloud.member.delete("/compute/v2.1/os-keypairs/gen").await.status, 202);
    assert_fault(&cloud.member.get("/compute/v2.1/os-keypairs/gen").await, 404, "itemNotFound");
    cloud.shutdown().await;
}
