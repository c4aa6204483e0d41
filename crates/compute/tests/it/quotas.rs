//! Quotas through HTTP: quota sets per project and user (show, detail, defaults, update with usage checks and
//! `force`, delete), the `default` quota class, `/limits`, and their enforcement on servers, server metadata and
//! key pairs.

use reqwest::Method;
use serde_json::{Value, json};
use test_utils::{Client, Response, TestCloud};

use crate::servers::{image, status, wait_agent};

fn ids(c: &Client) -> (String, String) {
    let t = &c.token_body["token"];
    (t["project"]["id"].as_str().unwrap().to_string(), t["user"]["id"].as_str().unwrap().to_string())
}

async fn put(c: &Client, path: &str, body: &Value) -> Response {
    c.request(Method::PUT, path, Some(body), &[]).await
}

fn assert_fault(r: &Response, status: u16, fault: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert_eq!(r.json()[fault]["code"], status, "{}", r.text);
}

const RESOURCES: [&str; 14] = [
    "instances",
    "cores",
    "ram",
    "floating_ips",
    "fixed_ips",
    "metadata_items",
    "injected_files",
    "injected_file_content_bytes",
    "injected_file_path_bytes",
    "security_groups",
    "security_group_rules",
    "key_pairs",
    "server_groups",
    "server_group_members",
];

#[tokio::test]
async fn quota_sets_classes_and_limits() {
    let cloud = TestCloud::start().await;
    let (demo, demo_user) = ids(&cloud.member);
    let base = format!("/compute/v2.1/os-quota-sets/{demo}");

    // Defaults and a project's quotas are Nova's defaults at first, every 2.1 resource present.
    let r = cloud.member.get(&format!("{base}/defaults")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let defaults = r.json()["quota_set"].clone();
    assert_eq!(defaults["id"], demo.as_str());
    for k in RESOURCES {
        assert!(defaults[k].is_i64(), "{k}: {defaults}");
    }
    assert_eq!((defaults["instances"].as_i64(), defaults["cores"].as_i64(), defaults["ram"].as_i64()), (Some(10), Some(20), Some(51200)));
    assert_eq!((defaults["fixed_ips"].as_i64(), defaults["key_pairs"].as_i64()), (Some(-1), Some(100)));
    let shown = cloud.member.get(&base).await.json()["quota_set"].clone();
    assert_eq!(shown, defaults);
    assert_eq!(cloud.member.get(&format!("{base}?user_id={demo_user}")).await.json()["quota_set"], defaults);
    // Another project's quotas are not the member's to read; only admins change quotas.
    let (admin_project, _) = ids(&cloud.admin);
    assert_fault(&cloud.member.get(&format!("/compute/v2.1/os-quota-sets/{admin_project}")).await, 403, "forbidden");
    assert_fault(&put(&cloud.member, &base, &json!({"quota_set": {"ram": 0}})).await, 403, "forbidden");

    // Update: the answer has no id; strings of digits are numbers; bad values and keys are 400s.
    let r = put(&cloud.admin, &base, &json!({"quota_set": {"ram": "5120", "cores": 4}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let q = r.json()["quota_set"].clone();
    assert!(q.get("id").is_none());
    assert_eq!((q["ram"].as_i64(), q["cores"].as_i64(), q["instances"].as_i64()), (Some(5120), Some(4), Some(10)));
    for bad in [json!({"quota_set": {"ram": -2}}), json!({"quota_set": {"ram": "x"}}), json!({"quota_set": {"bogus": 1}}), json!({"ram": 1})] {
        assert_fault(&put(&cloud.admin, &base, &bad).await, 400, "badRequest");
    }
    // A user's quota is within what the project has; it shows for that user only.
    let user_base = format!("{base}?user_id={demo_user}");
    let r = put(&cloud.admin, &user_base, &json!({"quota_set": {"ram": 2048}})).await;
    assert_eq!(r.json()["quota_set"]["ram"], 2048, "{}", r.text);
    assert_eq!(cloud.admin.get(&user_base).await.json()["quota_set"]["ram"], 2048);
    assert_eq!(cloud.admin.get(&base).await.json()["quota_set"]["ram"], 5120);
    let r = put(&cloud.admin, &user_base, &json!({"quota_set": {"ram": 6000}})).await;
    assert_fault(&r, 400, "badRequest");
    assert_eq!(r.json()["badRequest"]["message"], "Quota limit 6000 for ram must be less than or equal to 5120.");
    // The project cannot go below what its users were given, unless forced.
    let r = put(&cloud.admin, &base, &json!({"quota_set": {"ram": 1024}})).await;
    assert_eq!(
        r.json()["badRequest"]["message"],
        "Quota limit 1024 for ram must be greater than or equal to already used and reserved 2048."
    );
    assert_eq!(put(&cloud.admin, &base, &json!({"quota_set": {"ram": 1024, "force": "True"}})).await.status, 200);

    // Detail: limit, in_use, reserved.
    let d = cloud.member.get(&format!("{base}/detail")).await.json()["quota_set"].clone();
    assert_eq!(d["id"], demo.as_str());
    assert_eq!(d["ram"], json!({"limit": 1024, "in_use": 0, "reserved": 0}));
    assert_eq!(d["key_pairs"]["in_use"], 0);
    cloud.member.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "k1"}})).await;
    let d = cloud.member.get(&format!("{base}/detail?user_id={demo_user}")).await;
    assert_eq!(d.json()["quota_set"]["key_pairs"]["in_use"], 1, "{}", d.text);

    // Delete: back to the defaults (202), for a user or the whole project.
    let r = cloud.admin.delete(&user_base).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(cloud.admin.get(&user_base).await.json()["quota_set"]["ram"], 1024);
    assert_eq!(cloud.admin.delete(&base).await.status, 202);
    assert_eq!(cloud.admin.get(&base).await.json()["quota_set"], defaults);
    assert_fault(&cloud.member.delete(&base).await, 403, "forbidden");

    // Quota classes: admins read and change `default`, which every project inherits.
    let class = "/compute/v2.1/os-quota-class-sets/default";
    assert_fault(&cloud.member.get(class).await, 403, "forbidden");
    let r = cloud.admin.get(class).await;
    assert_eq!(r.json()["quota_class_set"]["id"], "default", "{}", r.text);
    assert_eq!(r.json()["quota_class_set"]["cores"], 20);
    let r = put(&cloud.admin, class, &json!({"quota_class_set": {"cores": 30, "fixed_ips": 99}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["quota_class_set"].get("id").is_none());
    assert_eq!(r.json()["quota_class_set"]["cores"], 30);
    assert_eq!(cloud.member.get(&format!("{base}/defaults")).await.json()["quota_set"]["cores"], 30);
    assert_eq!(cloud.member.get(&base).await.json()["quota_set"]["fixed_ips"], 99);
    assert_fault(&put(&cloud.admin, class, &json!({"quota_class_set": {"force": true}})).await, 400, "badRequest");

    // Limits: every absolute limit and total; no rate limits; other projects for admins only.
    let r = cloud.member.get("/compute/v2.1/limits").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let l = r.json()["limits"].clone();
    assert_eq!(l["rate"], json!([]));
    let a = &l["absolute"];
    assert_eq!(a.as_object().unwrap().len(), 19, "{a}");
    assert_eq!((a["maxTotalCores"].as_i64(), a["maxServerMeta"].as_i64(), a["maxImageMeta"].as_i64()), (Some(30), Some(128), Some(128)));
    assert_eq!((a["maxTotalKeypairs"].as_i64(), a["maxServerGroups"].as_i64(), a["totalInstancesUsed"].as_i64()), (Some(100), Some(10), Some(0)));
    assert_fault(&cloud.member.get(&format!("/compute/v2.1/limits?tenant_id={admin_project}")).await, 403, "forbidden");
    let r = cloud.admin.get(&format!("/compute/v2.1/limits?tenant_id={demo}")).await;
    assert_eq!(r.json()["limits"]["absolute"]["maxTotalCores"], 30, "{}", r.text);
    cloud.shutdown().await;
}

#[tokio::test]
async fn quotas_are_enforced_on_servers_metadata_and_keypairs() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let (demo, _) = ids(&cloud.member);
    let base = format!("/compute/v2.1/os-quota-sets/{demo}");
    let img = image(&cloud.member).await;
    let boot = |body: Value| {
        let c = cloud.member.clone();
        async move { c.post("/compute/v2.1/servers", &body).await }
    };

    // Stored limits drive the server quota check, with the same message as before.
    put(&cloud.admin, &base, &json!({"quota_set": {"instances": 1, "metadata_items": 2, "key_pairs": 1}})).await;
    let r = boot(json!({"server": {"name": "a", "imageRef": img, "flavorRef": "1", "min_count": 2}})).await;
    assert_fault(&r, 403, "forbidden");
    assert_eq!(r.json()["forbidden"]["message"], "Quota exceeded for instances: Requested 2, but already used 0 of 1 instances");
    // max_count is trimmed to what fits.
    let r = boot(json!({"server": {"name": "a", "imageRef": img, "flavorRef": "1", "max_count": 3}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["server"]["id"].as_str().unwrap().to_string();
    let list = cloud.member.get("/compute/v2.1/servers").await.json();
    assert_eq!(list["servers"].as_array().unwrap().len(), 1);
    let limits = cloud.member.get("/compute/v2.1/limits").await.json()["limits"]["absolute"].clone();
    assert_eq!((limits["totalInstancesUsed"].as_i64(), limits["totalRAMUsed"].as_i64()), (Some(1), Some(512)));

    // Unlimited (-1) lifts the check.
    put(&cloud.admin, &base, &json!({"quota_set": {"instances": -1}})).await;
    let r = boot(json!({"server": {"name": "b", "imageRef": img, "flavorRef": "1", "metadata": {"a": "1", "b": "2", "c": "3"}}})).await;
    assert_fault(&r, 403, "forbidden");
    assert_eq!(r.json()["forbidden"]["message"], "Maximum number of metadata items exceeds 2");

    // Server metadata: the merged result counts.
    status(&cloud.member, &id, "ACTIVE").await;
    let meta = format!("/compute/v2.1/servers/{id}/metadata");
    assert_eq!(cloud.member.post(&meta, &json!({"metadata": {"a": "1", "b": "2"}})).await.status, 200);
    assert_fault(&cloud.member.post(&meta, &json!({"metadata": {"c": "3"}})).await, 403, "forbidden");
    assert_eq!(cloud.member.post(&meta, &json!({"metadata": {"a": "x"}})).await.status, 200, "replacing a key adds none");
    assert_fault(&put(&cloud.member, &format!("{meta}/z"), &json!({"meta": {"z": "1"}})).await, 403, "forbidden");
    assert_eq!(put(&cloud.member, &meta, &json!({"metadata": {"z": "1"}})).await.status, 200);

    // Key pairs: one per user here.
    assert_eq!(cloud.member.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "k1"}})).await.status, 200);
    let r = cloud.member.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "k2"}})).await;
    assert_fault(&r, 403, "forbidden");
    assert_eq!(r.json()["forbidden"]["message"], "Maximum number of key pairs exceeded");

    // Cores: none left means no server.
    assert_fault(&put(&cloud.admin, &base, &json!({"quota_set": {"cores": 0}})).await, 400, "badRequest");
    let r = put(&cloud.admin, &base, &json!({"quota_set": {"cores": 0, "force": true}})).await;
    assert_eq!(r.json()["quota_set"]["cores"], 0);
    let r = boot(json!({"server": {"name": "c", "imageRef": img, "flavorRef": "1"}})).await;
    assert_fault(&r, 403, "forbidden");
    assert!(r.json()["forbidden"]["message"].as_str().unwrap().starts_with("Quota exceeded for cores"), "{}", r.text);
    cloud.shutdown().await;
}
