//! Host aggregates through HTTP: create, list, show, update, delete and the host and metadata actions; the
//! availability zones they make (services, zones, os-hosts, where servers go) and their mirror in placement.

use reqwest::Method;
use serde_json::{Value, json};
use test_utils::{Response, TestCloud};

use crate::servers::{image, status, wait_agent};

fn assert_fault(r: &Response, status: u16, fault: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert_eq!(r.json()[fault]["code"], status, "{}", r.text);
}

async fn compute_host(cloud: &TestCloud) -> String {
    let services = cloud.admin.get("/compute/v2.1/os-services?binary=nova-compute").await.json();
    services["services"][0]["host"].as_str().unwrap().to_string()
}

async fn provider_aggregates(cloud: &TestCloud) -> Vec<String> {
    let hv = cloud.admin.get("/compute/v2.1/os-hypervisors/detail").await.json();
    let name = hv["hypervisors"][0]["hypervisor_hostname"].as_str().unwrap().to_string();
    let rps = cloud.admin.request(Method::GET, &format!("/placement/resource_providers?name={name}"), None, &[]).await.json();
    let rp = rps["resource_providers"][0]["uuid"].as_str().unwrap().to_string();
    let r = cloud
        .admin
        .request(Method::GET, &format!("/placement/resource_providers/{rp}/aggregates"), None, &[("OpenStack-API-Version", "placement 1.19")])
        .await;
    serde_json::from_value(r.json()["aggregates"].clone()).unwrap()
}

async fn act(cloud: &TestCloud, id: i64, body: Value) -> Response {
    cloud.admin.post(&format!("/compute/v2.1/os-aggregates/{id}/action"), &body).await
}

#[tokio::test]
async fn aggregates_zones_and_placement() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let host = compute_host(&cloud).await;
    let aggs = "/compute/v2.1/os-aggregates";

    assert_fault(&cloud.member.get(aggs).await, 403, "forbidden");
    assert_fault(&cloud.member.post(aggs, &json!({"aggregate": {"name": "x"}})).await, 403, "forbidden");
    for bad in [json!({"aggregate": {"name": ""}}), json!({"aggregate": {"name": "a".repeat(256)}}), json!({"aggregate": {}}),
        json!({"aggregate": {"name": "x", "availability_zone": "a:b"}}), json!({"aggregate": {"name": "x", "y": 1}})]
    {
        assert_fault(&cloud.admin.post(aggs, &bad).await, 400, "badRequest");
    }

    // Create: no hosts or metadata in the answer, integer id, naive timestamps.
    let r = cloud.admin.post(aggs, &json!({"aggregate": {"name": "rack1"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let a = r.json()["aggregate"].clone();
    let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["availability_zone", "created_at", "deleted", "deleted_at", "id", "name", "updated_at"]);
    assert!(a["availability_zone"].is_null() && a["updated_at"].is_null());
    assert_eq!(a["created_at"].as_str().unwrap().len(), 26);
    let id = a["id"].as_i64().unwrap();
    let r = cloud.admin.post(aggs, &json!({"aggregate": {"name": "rack1"}})).await;
    assert_fault(&r, 409, "conflictingRequest");
    assert_eq!(r.json()["conflictingRequest"]["message"], "Aggregate rack1 already exists.");

    let one = format!("{aggs}/{id}");
    let shown = cloud.admin.get(&one).await.json()["aggregate"].clone();
    assert_eq!((shown["hosts"].clone(), shown["metadata"].clone()), (json!([]), json!({})));
    assert_fault(&cloud.admin.get(&format!("{aggs}/-1")).await, 404, "itemNotFound");
    assert_fault(&cloud.admin.get(&format!("{aggs}/x")).await, 400, "badRequest");
    assert_eq!(cloud.admin.get(aggs).await.json()["aggregates"][0]["id"], id);

    // Update the name and zone; metadata merges, null removes a key.
    let r = cloud.admin.request(Method::PUT, &one, Some(&json!({"aggregate": {"name": "rack-1", "availability_zone": "az1"}})), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let u = r.json()["aggregate"].clone();
    assert_eq!((u["name"].as_str(), u["availability_zone"].as_str()), (Some("rack-1"), Some("az1")));
    assert!(u["updated_at"].is_string());
    assert_fault(&cloud.admin.request(Method::PUT, &one, Some(&json!({"aggregate": {}})), &[]).await, 400, "badRequest");
    let r = act(&cloud, id, json!({"set_metadata": {"metadata": {"ssd": "true", "gpu": "no"}}})).await;
    assert_eq!(r.json()["aggregate"]["metadata"], json!({"availability_zone": "az1", "ssd": "true", "gpu": "no"}), "{}", r.text);
    let r = act(&cloud, id, json!({"set_metadata": {"metadata": {"gpu": null}}})).await;
    assert_eq!(r.json()["aggregate"]["metadata"], json!({"availability_zone": "az1", "ssd": "true"}));
    let r = act(&cloud, id, json!({"set_metadata": {"metadata": {"availability_zone": null}}})).await;
    assert_fault(&r, 400, "badRequest");
    assert_eq!(
        r.json()["badRequest"]["message"],
        format!("Cannot update metadata of aggregate {id}. Reason: Aggregate rack-1 does not support empty named availability zone.")
    );

    // Hosts must be compute services; twice is a conflict.
    let r = act(&cloud, id, json!({"add_host": {"host": "nowhere"}})).await;
    assert_fault(&r, 404, "itemNotFound");
    assert_eq!(r.json()["itemNotFound"]["message"], "Compute host nowhere could not be found.");
    let r = act(&cloud, id, json!({"add_host": {"host": host}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["aggregate"]["hosts"], json!([host]));
    assert_fault(&act(&cloud, id, json!({"add_host": {"host": host}})).await, 409, "conflictingRequest");
    assert_fault(&act(&cloud, 999, json!({"add_host": {"host": host}})).await, 404, "itemNotFound");
    assert_fault(&act(&cloud, id, json!({"fly": {}})).await, 400, "badRequest");

    // The host's zone is the aggregate's everywhere; placement has the aggregate on the host's provider.
    let services = cloud.admin.get("/compute/v2.1/os-services?binary=nova-compute").await.json();
    assert_eq!(services["services"][0]["zone"], "az1");
    let zones = cloud.member.get("/compute/v2.1/os-availability-zone").await.json();
    let names: Vec<&str> = zones["availabilityZoneInfo"].as_array().unwrap().iter().map(|z| z["zoneName"].as_str().unwrap()).collect();
    assert_eq!(names, ["az1"], "{zones}");
    let hosts = cloud.admin.get("/compute/v2.1/os-hosts?zone=az1").await.json();
    assert_eq!(hosts["hosts"], json!([{"host_name": host, "service": "compute", "zone": "az1"}]));
    let uuid = cloud.admin.get(&one).await.json();
    assert!(uuid["aggregate"].get("uuid").is_none(), "no uuid before 2.41");
    assert_eq!(provider_aggregates(&cloud).await.len(), 1);

    // Servers go to the zone asked for; the default zone has no host any more.
    let img = image(&cloud.member).await;
    let post = |az: &str| {
        let (c, img, az) = (cloud.member.clone(), img.clone(), az.to_string());
        async move {
            c.post("/compute/v2.1/servers", &json!({"server": {"name": "z", "imageRef": img, "flavorRef": "1", "availability_zone": az}}))
                .await
        }
    };
    let r = post("nova").await;
    assert_fault(&r, 400, "badRequest");
    assert_eq!(r.json()["badRequest"]["message"], "The requested availability zone is not available");
    let r = post("az1").await;
    assert_eq!(r.status, 202, "{}", r.text);
    let sid = r.json()["server"]["id"].as_str().unwrap().to_string();
    let s = status(&cloud.member, &sid, "ACTIVE").await;
    assert_eq!(s["OS-EXT-AZ:availability_zone"], "az1");

    // A host is in one zone; a zone does not change under instances; only empty aggregates go.
    let r = cloud.admin.post(aggs, &json!({"aggregate": {"name": "rack2", "availability_zone": "az2"}})).await;
    let id2 = r.json()["aggregate"]["id"].as_i64().unwrap();
    let r = act(&cloud, id2, json!({"add_host": {"host": host}})).await;
    assert_fault(&r, 409, "conflictingRequest");
    assert_eq!(
        r.json()["conflictingRequest"]["message"],
        format!("Cannot add host to aggregate {id2}. Reason: One or more hosts already in availability zone(s) ['az1'].")
    );
    let r = cloud.admin.request(Method::PUT, &one, Some(&json!({"aggregate": {"availability_zone": "az3"}})), &[]).await;
    assert_fault(&r, 400, "badRequest");
    assert!(r.json()["badRequest"]["message"].as_str().unwrap().ends_with("One or more hosts contain instances in this zone."), "{}", r.text);
    let r = cloud.admin.delete(&one).await;
    assert_fault(&r, 400, "badRequest");

    // Remove the host: zone and placement follow; deleting works now.
    let r = act(&cloud, id, json!({"remove_host": {"host": host}})).await;
    assert_eq!(r.json()["aggregate"]["hosts"], json!([]), "{}", r.text);
    let r = act(&cloud, id, json!({"remove_host": {"host": host}})).await;
    assert_fault(&r, 404, "itemNotFound");
    assert_eq!(r.json()["itemNotFound"]["message"], format!("Cannot remove host {host} in aggregate {id}"));
    assert!(provider_aggregates(&cloud).await.is_empty());
    let services = cloud.admin.get("/compute/v2.1/os-services?binary=nova-compute").await.json();
    assert_eq!(services["services"][0]["zone"], "nova");
    let r = cloud.admin.delete(&one).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_fault(&cloud.admin.get(&one).await, 404, "itemNotFound");
    assert_fault(&cloud.admin.delete(&one).await, 404, "itemNotFound");
    cloud.shutdown().await;
}
