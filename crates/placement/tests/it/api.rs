//! The placement API over HTTP.

use serde_json::{Value, json};
use test_utils::TestCloud;

use crate::call;

const LATEST: &str = "1.28";

async fn provider(cloud: &TestCloud, name: &str) -> String {
    let r = call(&cloud.admin, "POST", "/resource_providers", Some(&json!({"name": name})), LATEST).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["uuid"].as_str().expect("uuid").to_string()
}

async fn set_inventory(cloud: &TestCloud, rp: &str, generation: i64, inventories: Value) -> Value {
    let body = json!({"resource_provider_generation": generation, "inventories": inventories});
    let r = call(&cloud.admin, "PUT", &format!("/resource_providers/{rp}/inventories"), Some(&body), LATEST).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

fn compute_inventory() -> Value {
    json!({
        "VCPU": {"total": 4, "allocation_ratio": 2.0},
        "MEMORY_MB": {"total": 2048, "reserved": 512},
        "DISK_GB": {"total": 100},
    })
}

#[tokio::test]
async fn root_versions_policy_and_errors() {
    let cloud = TestCloud::start_without_agent().await;
    let r = cloud.anonymous.get("/placement/").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["versions"][0]["max_version"], LATEST);
    assert_eq!(r.json()["versions"][0]["min_version"], "1.0");
    assert_eq!(r.header("openstack-api-version"), Some("placement 1.0"));

    // The catalog lists placement.
    let r = cloud.admin.get("/identity/v3/auth/catalog").await;
    assert!(r.text.contains("\"placement\""), "{}", r.text);

    let r = call(&cloud.admin, "GET", "/resource_providers", None, "1.99").await;
    assert_eq!(r.status, 406);
    let r = call(&cloud.anonymous, "GET", "/resource_providers", None, LATEST).await;
    assert_eq!(r.status, 401);
    // Members are not admins or services: placement is closed to them, and nothing changes.
    let r = call(&cloud.member, "POST", "/resource_providers", Some(&json!({"name": "x"})), LATEST).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.json()["errors"][0]["status"], 403);
    let r = call(&cloud.admin, "GET", "/resource_providers", None, LATEST).await;
    assert_eq!(r.json()["resource_providers"], json!([]));
    assert_eq!(r.header("cache-control"), Some("no-cache"));

    // Traits appear at 1.6.
    let r = call(&cloud.admin, "GET", "/traits", None, "1.5").await;
    assert_eq!(r.status, 404);
    let r = call(&cloud.admin, "GET", "/traits?name=startswith:HW_CPU_X86_AVX", None, "1.6").await;
    assert_eq!(r.status, 200);
    assert!(r.json()["traits"].as_array().unwrap().contains(&json!("HW_CPU_X86_AVX2")));
    cloud.shutdown().await;
}

#[tokio::test]
async fn providers_crud_and_generations() {
    let cloud = TestCloud::start_without_agent().await;
    // Before 1.20 creation answers 201 with a Location only.
    let r = call(&cloud.admin, "POST", "/resource_providers", Some(&json!({"name": "old"})), "1.19").await;
    assert_eq!(r.status, 201);
    assert!(r.header("location").unwrap().starts_with("/placement/resource_providers/"));
    let rp = provider(&cloud, "node1").await;
    let r = call(&cloud.admin, "POST", "/resource_providers", Some(&json!({"name": "node1"})), LATEST).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["errors"][0]["code"], "placement.duplicate_name");

    let r = call(&cloud.admin, "GET", &format!("/resource_providers/{rp}"), None, LATEST).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["generation"], 0);
    assert_eq!(body["root_provider_uuid"], rp.as_str());
    assert!(body["links"].as_array().unwrap().iter().any(|l| l["rel"] == "allocations"));

    // Inventory with a stale generation is a concurrent update; nothing changes.
    let inv = set_inventory(&cloud, &rp, 0, compute_inventory()).await;
    assert_eq!(inv["resource_provider_generation"], 1);
    assert_eq!(inv["inventories"]["VCPU"]["allocation_ratio"], 2.0);
    assert_eq!(inv["inventories"]["VCPU"]["max_unit"], 2147483647);
    let stale = json!({"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 1}}});
    let r = call(&cloud.admin, "PUT", &format!("/resource_providers/{rp}/inventories"), Some(&stale), LATEST).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["errors"][0]["code"], "placement.concurrent_update");
    let r = call(&cloud.admin, "GET", &format!("/resource_providers/{rp}/inventories/VCPU"), None, LATEST).await;
    assert_eq!(r.json()["total"], 4);

    // Bad inventories.
    let bad = json!({"resource_provider_generation": 1, "inventories": {"VCPU": {"total": 1, "reserved": 2}}});
    let r = call(&cloud.admin, "PUT", &format!("/resource_providers/{rp}/inventories"), Some(&bad), LATEST).await;
    assert_eq!(r.status, 400);
    let bad = json!({"resource_provider_generation": 1, "inventories": {"CUSTOM_NOPE": {"total": 1}}});
    let r = call(&cloud.admin, "PUT", &format!("/resource_providers/{rp}/inventories"), Some(&bad), LATEST).await;
    assert_eq!(r.status, 400);

    // Custom classes and traits.
    let r = call(&cloud.admin, "PUT", "/resource_classes/CUSTOM_GOLD", None, LATEST).await;
    assert_eq!(r.status, 201);
    let r = call(&cloud.admin, "PUT", "/resource_classes/CUSTOM_GOLD", None, LATEST).await;
    assert_eq!(r.status, 204);
    let r = call(&cloud.admin, "POST", "/resource_classes", Some(&json!({"name": "GOLD"})), LATEST).await;
    assert_eq!(r.status, 400);
    let r = call(&cloud.admin, "PUT", "/traits/CUSTOM_FAST", None, LATEST).await;
    assert_eq!(r.status, 201);
    let body = json!({"resource_provider_generation": 1, "traits": ["CUSTOM_FAST", "HW_CPU_X86_AVX2"]});
    let r = call(&cloud.admin, "PUT", &format!("/resource_providers/{rp}/traits"), Some(&body), LATEST).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["resource_provider_generation"], 2);
    let r = call(&cloud.admin, "DELETE", "/traits/CUSTOM_FAST", None, LATEST).await;
    assert_eq!(r.status, 409, "a trait in use stays");

    // Aggregates (1.19+: with generation).
    let agg = "2bb6c9a4-6f8e-4c59-8c4b-6b7d3b3d7a10";
    let body = json!({"resource_provider_generation": 2, "aggregates": [agg]});
    let r = call(&cloud.admin, "PUT", &format!("/resource_providers/{rp}/aggregates"), Some(&body), LATEST).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["aggregates"], json!([agg]));
    assert_eq!(r.json()["resource_provider_generation"], 3);
    let r = call(&cloud.admin, "GET", &format!("/resource_providers?member_of=in:{agg}"), None, LATEST).await;
    assert_eq!(r.json()["resource_providers"].as_array().unwrap().len(), 1);

    // Rename; children; delete.
    let r = call(&cloud.admin, "PUT", &format!("/resource_providers/{rp}"), Some(&json!({"name": "renamed"})), LATEST).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "renamed");
    let child = json!({"name": "child", "parent_provider_uuid": rp});
    let r = call(&cloud.admin, "POST", "/resource_providers", Some(&child), LATEST).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["root_provider_uuid"], rp.as_str());
    let child = r.json()["uuid"].as_str().unwrap().to_string();
    let r = call(&cloud.admin, "DELETE", &format!("/resource_providers/{rp}"), None, LATEST).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["errors"][0]["code"], "placement.resource_provider.cannot_delete_parent");
    let r = call(&cloud.admin, "GET", &format!("/resource_providers?in_tree={child}"), None, LATEST).await;
    assert_eq!(r.json()["resource_providers"].as_array().unwrap().len(), 2);
    assert_eq!(call(&cloud.admin, "DELETE", &format!("/resource_providers/{child}"), None, LATEST).await.status, 204);
    assert_eq!(call(&cloud.admin, "DELETE", &format!("/resource_providers/{rp}"), None, LATEST).await.status, 204);
    assert_eq!(call(&cloud.admin, "GET", &format!("/resource_providers/{rp}"), None, LATEST).await.status, 404);
    cloud.shutdown().await;
}

#[tokio::test]
async fn allocations_capacity_consumers_and_usages() {
    let cloud = TestCloud::start_without_agent().await;
    let rp = provider(&cloud, "node1").await;
    set_inventory(&cloud, &rp, 0, compute_inventory()).await;
    let consumer = "11111111-1111-4111-8111-111111111111";
    let project = "22222222-2222-4222-8222-222222222222";
    let alloc = |vcpu: i64, mem: i64, generation: Value| {
        json!({
            "allocations": {rp.clone(): {"resources": {"VCPU": vcpu, "MEMORY_MB": mem}}},
            "project_id": project, "user_id": "u1", "consumer_generation": generation,
        })
    };
    // 4 VCPU × 2.0 = 8; 2048 - 512 reserved = 1536 MB.
    let r = call(&cloud.admin, "PUT", &format!("/allocations/{consumer}"), Some(&alloc(9, 512, Value::Null)), LATEST).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.json()["errors"][0]["detail"].as_str().unwrap().contains("exceed the capacity"));
    let r = call(&cloud.admin, "PUT", &format!("/allocations/{consumer}"), Some(&alloc(2, 1600, Value::Null)), LATEST).await;
    assert_eq!(r.status, 409, "reserved memory is not allocatable");
    let r = call(&cloud.admin, "GET", &format!("/resource_providers/{rp}/usages"), None, LATEST).await;
    assert_eq!(r.json()["usages"], json!({"DISK_GB": 0, "MEMORY_MB": 0, "VCPU": 0}), "failed writes leave nothing");

    let r = call(&cloud.admin, "PUT", &format!("/allocations/{consumer}"), Some(&alloc(6, 1024, Value::Null)), LATEST).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = call(&cloud.admin, "GET", &format!("/allocations/{consumer}"), None, LATEST).await;
    let body = r.json();
    assert_eq!(body["consumer_generation"], 1);
    assert_eq!(body["project_id"], project);
    assert_eq!(body["allocations"][&rp]["resources"]["VCPU"], 6);
    assert_eq!(body["allocations"][&rp]["generation"], 2);

    // A stale or missing consumer generation is a conflict.
    let r = call(&cloud.admin, "PUT", &format!("/allocations/{consumer}"), Some(&alloc(1, 1, Value::Null)), LATEST).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["errors"][0]["code"], "placement.concurrent_update");
    let r = call(&cloud.admin, "PUT", &format!("/allocations/{consumer}"), Some(&alloc(1, 1, json!(1))), LATEST).await;
    assert_eq!(r.status, 204, "{}", r.text);

    // A second consumer, written with the pre-1.12 list format, competes for the rest.
    let other = "33333333-3333-4333-8333-333333333333";
    let list = json!({"allocations": [{"resource_provider": {"uuid": rp}, "resources": {"VCPU": 8}}],
                      "project_id": project, "user_id": "u2"});
    let r = call(&cloud.admin, "PUT", &format!("/allocations/{other}"), Some(&list), "1.8").await;
    assert_eq!(r.status, 409, "1 + 8 > 8");
    let list = json!({"allocations": [{"resource_provider": {"uuid": rp}, "resources": {"VCPU": 7}}],
                      "project_id": project, "user_id": "u2"});
    let r = call(&cloud.admin, "PUT", &format!("/allocations/{other}"), Some(&list), "1.8").await;
    assert_eq!(r.status, 204, "{}", r.text);

    let r = call(&cloud.admin, "GET", &format!("/usages?project_id={project}"), None, LATEST).await;
    assert_eq!(r.json()["usages"], json!({"MEMORY_MB": 1, "VCPU": 8}));
    let r = call(&cloud.admin, "GET", &format!("/usages?project_id={project}&user_id=u2"), None, LATEST).await;
    assert_eq!(r.json()["usages"], json!({"VCPU": 7}));
    let r = call(&cloud.admin, "GET", &format!("/resource_providers/{rp}/allocations"), None, LATEST).await;
    assert_eq!(r.json()["allocations"].as_object().unwrap().len(), 2);

    // Inventory in use cannot go away; the provider cannot be deleted.
    let r = call(&cloud.admin, "DELETE", &format!("/resource_providers/{rp}/inventories/VCPU"), None, LATEST).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["errors"][0]["code"], "placement.inventory.inuse");
    let r = call(&cloud.admin, "DELETE", &format!("/resource_providers/{rp}"), None, LATEST).await;
    assert_eq!(r.status, 409);

    // POST /allocations moves resources between consumers atomically.
    let body = json!({
        consumer: {"allocations": {}, "project_id": project, "user_id": "u1", "consumer_generation": 2},
        other: {"allocations": {rp.clone(): {"resources": {"VCPU": 8}}}, "project_id": project, "user_id": "u2",
                "consumer_generation": 1},
    });
    let r = call(&cloud.admin, "POST", "/allocations", Some(&body), LATEST).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = call(&cloud.admin, "GET", &format!("/allocations/{consumer}"), None, LATEST).await;
    assert_eq!(r.json(), json!({"allocations": {}}));
    assert_eq!(call(&cloud.admin, "DELETE", &format!("/allocations/{consumer}"), None, LATEST).await.status, 404);
    assert_eq!(call(&cloud.admin, "DELETE", &format!("/allocations/{other}"), None, LATEST).await.status, 204);
    let r = call(&cloud.admin, "GET", &format!("/resource_providers/{rp}/usages"), None, LATEST).await;
    assert_eq!(r.json()["usages"]["VCPU"], 0);
    cloud.shutdown().await;
}

#[tokio::test]
async fn allocation_candidates() {
    let cloud = TestCloud::start_without_agent().await;
    let big = provider(&cloud, "big").await;
    let small = provider(&cloud, "small").await;
    set_inventory(&cloud, &big, 0, json!({"VCPU": {"total": 16}, "MEMORY_MB": {"total": 8192, "allocation_ratio": 1.5}})).await;
    set_inventory(&cloud, &small, 0, json!({"VCPU": {"total": 2}, "MEMORY_MB": {"total": 1024}})).await;
    let body = json!({"resource_provider_generation": 1, "traits": ["HW_CPU_X86_AVX2"]});
    assert_eq!(call(&cloud.admin, "PUT", &format!("/resource_providers/{big}/traits"), Some(&body), LATEST).await.status, 200);

    let r = call(&cloud.admin, "GET", "/allocation_candidates?resources=VCPU:1,MEMORY_MB:512", None, LATEST).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    assert_eq!(body["allocation_requests"].as_array().unwrap().len(), 2);
    assert_eq!(body["provider_summaries"][&big]["resources"]["MEMORY_MB"]["capacity"], 12288);
    assert_eq!(body["provider_summaries"][&big]["traits"], json!(["HW_CPU_X86_AVX2"]));

    let r = call(&cloud.admin, "GET", "/allocation_candidates?resources=VCPU:4", None, LATEST).await;
    let reqs = r.json()["allocation_requests"].clone();
    assert_eq!(reqs, json!([{"allocations": {big.clone(): {"resources": {"VCPU": 4}}}}]));
    let r = call(&cloud.admin, "GET", "/allocation_candidates?resources=VCPU:1&required=!HW_CPU_X86_AVX2", None, LATEST).await;
    assert_eq!(r.json()["allocation_requests"].as_array().unwrap().len(), 1);
    assert!(r.json()["provider_summaries"].get(&small).is_some());
    let r = call(&cloud.admin, "GET", "/allocation_candidates?resources=VCPU:1&limit=1", None, LATEST).await;
    assert_eq!(r.json()["allocation_requests"].as_array().unwrap().len(), 1);
    // Pre-1.12 list format.
    let r = call(&cloud.admin, "GET", "/allocation_candidates?resources=VCPU:4", None, "1.10").await;
    assert_eq!(r.json()["allocation_requests"][0]["allocations"][0]["resource_provider"]["uuid"], big.as_str());

    // Claim the small node fully; it drops out of the candidates.
    let consumer = "44444444-4444-4444-8444-444444444444";
    let claim = json!({"allocations": {small.clone(): {"resources": {"VCPU": 2}}}, "project_id": "p", "user_id": "u",
                       "consumer_generation": null});
    assert_eq!(call(&cloud.admin, "PUT", &format!("/allocations/{consumer}"), Some(&claim), LATEST).await.status, 204);
    let r = call(&cloud.admin, "GET", "/allocation_candidates?resources=VCPU:1", None, LATEST).await;
    assert_eq!(r.json()["allocation_requests"].as_array().unwrap().len(), 1);

    // Bad queries.
    for q in ["", "?resources=VCPU", "?resources=NOPE:1", "?resources=VCPU:1&required=CUSTOM_UNKNOWN",
              "?resources=VCPU:1&member_of=not-a-uuid", "?resources=VCPU:1&limit=0", "?resources=VCPU:1&bogus=1",
              "?resources1=VCPU:1&resources2=MEMORY_MB:1"] {
        let r = call(&cloud.admin, "GET", &format!("/allocation_candidates{q}"), None, LATEST).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text);
    }
    let r = call(&cloud.admin, "GET", "/allocation_candidates?resources=VCPU:1", None, "1.9").await;
    assert_eq!(r.status, 404);
    cloud.shutdown().await;
}
