//! Servers end to end in one process: the API, the conductor, placement and the in-process compute agent with the
//! `fake` driver. Builds, state rules, actions, metadata, instance actions, deletes that free placement, services
//! and hypervisors.

use std::time::Duration;

use serde_json::{Value, json};
use test_utils::{Client, Response, TestCloud};

/// Uploads a small active image as the member; returns its id.
pub(crate) async fn image(c: &Client) -> String {
    let r = c.post("/image/v2/images", &json!({"name": "boot", "disk_format": "raw", "container_format": "bare"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = c
        .request(
            reqwest::Method::PUT,
            &format!("/image/v2/images/{id}/file"),
            None,
            &[("content-type", "application/octet-stream")],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    id
}

pub(crate) async fn wait_for(c: &Client, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let r = c.get(&format!("/compute/v2.1/servers/{id}")).await;
        if r.status == 404 {
            return Value::Null;
        }
        let s = r.json()["server"].clone();
        if pred(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server {id} never reached the expected state");
}

pub(crate) async fn status(c: &Client, id: &str, want: &str) -> Value {
    wait_for(c, id, |s| s["status"] == want && s["OS-EXT-STS:task_state"].is_null()).await
}

pub(crate) async fn boot(c: &Client, image: &str, name: &str) -> Response {
    c.post("/compute/v2.1/servers", &json!({"server": {"name": name, "imageRef": image, "flavorRef": "1"}})).await
}

async fn action(c: &Client, id: &str, body: Value) -> Response {
    c.post(&format!("/compute/v2.1/servers/{id}/action"), &body).await
}

pub(crate) async fn wait_agent(cloud: &TestCloud) {
    for _ in 0..200 {
        let r = cloud.admin.get("/compute/v2.1/os-hypervisors").await;
        if r.json()["hypervisors"].as_array().is_some_and(|h| !h.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the compute agent never registered");
}

#[tokio::test]
async fn boot_act_and_delete_through_the_fake_driver() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;

    let r = boot(&cloud.member, &img, "web").await;
    assert_eq!(r.status, 202, "{}", r.text);
    let created = r.json()["server"].clone();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["adminPass"].as_str().unwrap().len(), 12);
    assert!(r.header("location").unwrap().ends_with(&format!("/servers/{id}")));

    let s = status(&cloud.member, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    assert_eq!(s["OS-EXT-STS:vm_state"], "active");
    assert_eq!(s["flavor"]["id"], "1");
    assert_eq!(s["image"]["id"], img.as_str());
    assert!(!s["hostId"].as_str().unwrap().is_empty());
    assert!(s.get("OS-EXT-SRV-ATTR:host").is_none(), "host attributes are for admins");
    let admin_view = cloud.admin.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
    assert!(admin_view["OS-EXT-SRV-ATTR:host"].is_string());

    // The build went through placement: the consumer holds the flavor's resources.
    let allocs = cloud.admin.request(reqwest::Method::GET, &format!("/placement/allocations/{id}"), None, &[]).await;
    let allocations = allocs.json()["allocations"].clone();
    let rp = allocations.as_object().unwrap().values().next().expect("an allocation").clone();
    assert_eq!(rp["resources"], json!({"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}));

    // Lists: summary, detail, filters; other projects and readers.
    let list = cloud.member.get("/compute/v2.1/servers").await.json();
    assert_eq!(list["servers"][0]["id"], id.as_str());
    assert!(list["servers"][0].get("status").is_none());
    let detail = cloud.member.get("/compute/v2.1/servers/detail?status=ACTIVE&name=^we").await.json();
    assert_eq!(detail["servers"].as_array().unwrap().len(), 1);
    let none = cloud.member.get("/compute/v2.1/servers/detail?status=SHUTOFF").await.json();
    assert!(none["servers"].as_array().unwrap().is_empty());
    assert!(cloud.admin.get("/compute/v2.1/servers").await.json()["servers"].as_array().unwrap().is_empty(), "admin's own project");
    let all = cloud.admin.get("/compute/v2.1/servers?all_tenants=1").await.json();
    assert_eq!(all["servers"].as_array().unwrap().len(), 1);
    assert_eq!(cloud.member.get("/compute/v2.1/servers?all_tenants=1").await.status, 403);
    assert_eq!(cloud.reader.get(&format!("/compute/v2.1/servers/{id}")).await.status, 200);
    assert_eq!(action(&cloud.reader, &id, json!({"os-stop": null})).await.status, 403);

    // Actions walk the states; the wrong state is a 409 with upstream's message.
    assert_eq!(action(&cloud.member, &id, json!({"os-stop": null})).await.status, 202);
    let s = status(&cloud.member, &id, "SHUTOFF").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    let r = action(&cloud.member, &id, json!({"os-stop": null})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.json()["conflictingRequest"]["message"], format!("Cannot 'stop' instance {id} while it is in vm_state stopped"));
    assert_eq!(action(&cloud.member, &id, json!({"os-start": null})).await.status, 202);
    status(&cloud.member, &id, "ACTIVE").await;
    for (act, want) in [("pause", "PAUSED"), ("unpause", "ACTIVE"), ("suspend", "SUSPENDED"), ("resume", "ACTIVE")] {
        let r = action(&cloud.member, &id, json!({act: null})).await;
        assert_eq!(r.status, 202, "{act}: {}", r.text);
        status(&cloud.member, &id, want).await;
    }
    assert_eq!(action(&cloud.member, &id, json!({"reboot": {"type": "HARD"}})).await.status, 202);
    status(&cloud.member, &id, "ACTIVE").await;
    assert_eq!(action(&cloud.member, &id, json!({"reboot": {"type": "sideways"}})).await.status, 400);
    let r = action(&cloud.member, &id, json!({"os-getConsoleOutput": {"length": 3}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["output"].as_str().unwrap().lines().count() <= 3);
    assert_eq!(action(&cloud.member, &id, json!({"fly": null})).await.status, 400);
    let r = cloud.admin.get(&format!("/compute/v2.1/servers/{id}/diagnostics")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["memory"], 512 * 1024);
    assert_eq!(cloud.member.get(&format!("/compute/v2.1/servers/{id}/diagnostics")).await.status, 403);

    // Lock: the owner's actions are refused until unlocked.
    assert_eq!(action(&cloud.member, &id, json!({"lock": null})).await.status, 202);
    let r = action(&cloud.member, &id, json!({"os-stop": null})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(action(&cloud.member, &id, json!({"unlock": null})).await.status, 202);

    // Metadata and update.
    let r = cloud.member.post(&format!("/compute/v2.1/servers/{id}/metadata"), &json!({"metadata": {"a": "1", "b": "2"}})).await;
    assert_eq!(r.json()["metadata"], json!({"a": "1", "b": "2"}));
    let r = cloud.member.request(reqwest::Method::PUT, &format!("/compute/v2.1/servers/{id}/metadata/a"), Some(&json!({"meta": {"b": "x"}})), &[]).await;
    assert_eq!(r.status, 400);
    let r = cloud.member.delete(&format!("/compute/v2.1/servers/{id}/metadata/b")).await;
    assert_eq!(r.status, 204);
    let r = cloud.member.request(reqwest::Method::PUT, &format!("/compute/v2.1/servers/{id}"), Some(&json!({"server": {"name": "renamed"}})), &[]).await;
    assert_eq!(r.json()["server"]["name"], "renamed");
    assert_eq!(r.json()["server"]["metadata"], json!({"a": "1"}));

    // Instance actions, with events for admins.
    let r = cloud.member.get(&format!("/compute/v2.1/servers/{id}/os-instance-actions")).await;
    let actions: Vec<String> = r.json()["instanceActions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap().to_string()).collect();
    assert!(actions.contains(&"create".to_string()) && actions.contains(&"stop".to_string()), "{actions:?}");
    let create = r.json()["instanceActions"].as_array().unwrap().iter().find(|a| a["action"] == "create").unwrap().clone();
    let req = create["request_id"].as_str().unwrap();
    let r = cloud.admin.get(&format!("/compute/v2.1/servers/{id}/os-instance-actions/{req}")).await;
    let events = r.json()["instanceAction"]["events"].clone();
    assert!(events.as_array().unwrap().iter().any(|e| e["event"] == "compute__do_build_and_run_instance" && e["result"] == "Success"), "{events}");

    // Delete frees the allocation; the server is gone.
    assert_eq!(cloud.member.delete(&format!("/compute/v2.1/servers/{id}")).await.status, 204);
    assert!(wait_for(&cloud.member, &id, |_| false).await.is_null());
    let allocs = cloud.admin.request(reqwest::Method::GET, &format!("/placement/allocations/{id}"), None, &[]).await;
    assert_eq!(allocs.json()["allocations"], json!({}));
    // From 2.21 the actions outlive the server; before, a deleted server has none to show.
    assert_eq!(cloud.member.get(&format!("/compute/v2.1/servers/{id}/os-instance-actions")).await.status, 404);
    let r = cloud
        .member
        .request(
            reqwest::Method::GET,
            &format!("/compute/v2.1/servers/{id}/os-instance-actions"),
            None,
            &[("OpenStack-API-Version", "compute 2.21")],
        )
        .await;
    assert_eq!(r.status, 200, "actions outlive the server");
    cloud.shutdown().await;
}

#[tokio::test]
async fn bad_boots_quotas_and_multi_create() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let post = |body: Value| {
        let c = cloud.member.clone();
        async move { c.post("/compute/v2.1/servers", &body).await }
    };
    for (body, fragment) in [
        (json!({"server": {"name": "x", "imageRef": img, "flavorRef": "nope"}}), "Flavor nope could not be found."),
        (json!({"server": {"name": "x", "imageRef": "6b2a4d4c-0000-0000-0000-000000000000", "flavorRef": "1"}}), "could not be found."),
        (json!({"server": {"name": "x".repeat(256), "imageRef": img, "flavorRef": "1"}}), "is too long"),
        (json!({"server": {"name": " x", "imageRef": img, "flavorRef": "1"}}), "Leading/trailing whitespace"),
        (json!({"server": {"imageRef": img, "flavorRef": "1"}}), "'name' is a required property"),
        (json!({"server": {"name": "x", "imageRef": img, "flavorRef": "1", "key_name": "nokey"}}), "Invalid key_name provided."),
        (json!({"server": {"name": "x", "imageRef": img, "flavorRef": "1", "bogus": 1}}), "Additional properties are not allowed"),
        (json!({"server": {"name": "x", "imageRef": img, "flavorRef": "1", "min_count": 2, "max_count": 1}}), "min_count must be <= max_count"),
        (json!({"server": {"name": "x", "imageRef": img, "flavorRef": "1", "user_data": "not base64!"}}), "User data needs to be valid base 64."),
    ] {
        let r = post(body).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(r.json()["badRequest"]["message"].as_str().unwrap().contains(fragment), "{fragment}: {}", r.text);
    }
    // Quota: 10 instances, 20 cores, 51200 MB by default.
    let r = post(json!({"server": {"name": "x", "imageRef": img, "flavorRef": "1", "min_count": 11}})).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        r.json()["forbidden"]["message"],
        "Quota exceeded for instances: Requested 11, but already used 0 of 10 instances"
    );
    // Multi-create: names get suffixes, one reservation.
    let r = post(json!({"server": {"name": "many", "imageRef": img, "flavorRef": "1", "min_count": 2, "max_count": 3, "return_reservation_id": true}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let rid = r.json()["reservation_id"].as_str().unwrap().to_string();
    let list = cloud.member.get(&format!("/compute/v2.1/servers/detail?reservation_id={rid}")).await.json();
    let mut names: Vec<String> = list["servers"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["many-1", "many-2", "many-3"]);
    for s in list["servers"].as_array().unwrap() {
        status(&cloud.member, s["id"].as_str().unwrap(), "ACTIVE").await;
    }
    // Paging through the listing.
    let page = cloud.member.get("/compute/v2.1/servers?limit=2").await.json();
    assert_eq!(page["servers"].as_array().unwrap().len(), 2);
    assert!(page["servers_links"][0]["href"].as_str().unwrap().contains("marker="));
    assert_eq!(cloud.member.get("/compute/v2.1/servers?marker=nope").await.status, 400);
    cloud.shutdown().await;
}

#[tokio::test]
async fn services_hypervisors_and_zones() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let r = cloud.admin.get("/compute/v2.1/os-services").await;
    let services = r.json()["services"].clone();
    let compute = services.as_array().unwrap().iter().find(|s| s["binary"] == "nova-compute").expect("agent service").clone();
    assert_eq!((compute["state"].as_str(), compute["status"].as_str()), (Some("up"), Some("enabled")));
    assert_eq!(cloud.member.get("/compute/v2.1/os-services").await.status, 403);
    let host = compute["host"].as_str().unwrap().to_string();
    let r = cloud
        .admin
        .request(reqwest::Method::PUT, "/compute/v2.1/os-services/disable-log-reason", Some(&json!({"host": host, "binary": "nova-compute", "disabled_reason": "maintenance"})), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["service"]["status"], "disabled");
    // A disabled host gets no new servers.
    let img = image(&cloud.member).await;
    let id = boot(&cloud.member, &img, "nowhere").await.json()["server"]["id"].as_str().unwrap().to_string();
    let s = status(&cloud.member, &id, "ERROR").await;
    assert!(s["fault"]["message"].as_str().unwrap().starts_with("No valid host was found"), "{s}");
    let r = cloud.admin.request(reqwest::Method::PUT, "/compute/v2.1/os-services/enable", Some(&json!({"host": host, "binary": "nova-compute"})), &[]).await;
    assert_eq!(r.json()["service"]["status"], "enabled");
    // An ERROR server without a host deletes locally.
    assert_eq!(cloud.member.delete(&format!("/compute/v2.1/servers/{id}")).await.status, 204);
    assert!(wait_for(&cloud.member, &id, |_| false).await.is_null());

    let r = cloud.admin.get("/compute/v2.1/os-hypervisors/detail").await;
    let h = r.json()["hypervisors"][0].clone();
    assert_eq!(h["hypervisor_type"], "fake");
    assert_eq!(h["state"], "up");
    let hid = h["id"].as_i64().unwrap();
    assert_eq!(cloud.admin.get(&format!("/compute/v2.1/os-hypervisors/{hid}")).await.status, 200);
    assert_eq!(cloud.admin.get("/compute/v2.1/os-hypervisors/999999").await.status, 404);
    let r = cloud.admin.get(&format!("/compute/v2.1/os-hypervisors/{hid}/uptime")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["hypervisor"]["uptime"].as_str().unwrap().contains("load average"), "{}", r.text);
    assert_eq!(cloud.member.get(&format!("/compute/v2.1/os-hypervisors/{hid}/uptime")).await.status, 403);
    let stats = cloud.admin.get("/compute/v2.1/os-hypervisors/statistics").await.json();
    assert_eq!(stats["hypervisor_statistics"]["count"], 1);
    let zones = cloud.member.get("/compute/v2.1/os-availability-zone").await.json();
    assert_eq!(zones["availabilityZoneInfo"][0]["zoneName"], "nova");
    assert_eq!(zones["availabilityZoneInfo"][0]["zoneState"]["available"], true);
    cloud.shutdown().await;
}

#[tokio::test]
async fn image_proxy_lists_shows_and_sets_metadata() {
    let cloud = TestCloud::start().await;
    let img = image(&cloud.member).await;
    let list = cloud.member.get("/compute/v2.1/images").await.json();
    assert!(list["images"].as_array().unwrap().iter().any(|i| i["id"] == img.as_str()), "{list}");
    let r = cloud.member.get(&format!("/compute/v2.1/images/{img}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let i = r.json()["image"].clone();
    assert_eq!((i["status"].as_str(), i["progress"].as_i64()), (Some("ACTIVE"), Some(100)));
    let r = cloud.member.post(&format!("/compute/v2.1/images/{img}/metadata"), &json!({"metadata": {"os_distro": "cirros"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["metadata"]["os_distro"], "cirros");
    let r = cloud.member.get(&format!("/compute/v2.1/images/{img}/metadata/os_distro")).await;
    assert_eq!(r.json()["meta"]["os_distro"], "cirros");
    assert_eq!(cloud.member.delete(&format!("/compute/v2.1/images/{img}/metadata/os_distro")).await.status, 204);
    let detail = cloud.member.get("/compute/v2.1/images/detail?status=ACTIVE").await.json();
    assert!(detail["images"].as_array().unwrap().iter().all(|i| i["status"] == "ACTIVE"));
    assert_eq!(cloud.member.get("/compute/v2.1/images/nope").await.status, 404);
    assert_eq!(cloud.member.delete(&format!("/compute/v2.1/images/{img}")).await.status, 204);
    assert_eq!(cloud.member.get(&format!("/compute/v2.1/images/{img}")).await.status, 404);
    cloud.shutdown().await;
}

async fn allocation(cloud: &TestCloud, id: &str) -> Value {
    let r = cloud.admin.request(reqwest::Method::GET, &format!("/placement/allocations/{id}"), None, &[]).await;
    r.json()["allocations"].as_object().unwrap().values().next().map(|a| a["resources"].clone()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn resize_confirm_and_revert() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let id = boot(&cloud.member, &img, "grow").await.json()["server"]["id"].as_str().unwrap().to_string();
    status(&cloud.member, &id, "ACTIVE").await;

    assert_eq!(action(&cloud.member, &id, json!({"resize": {"flavorRef": "1"}})).await.status, 400, "same flavor");
    assert_eq!(action(&cloud.member, &id, json!({"resize": {"flavorRef": "nope"}})).await.status, 400);
    let r = action(&cloud.member, &id, json!({"confirmResize": null})).await;
    assert_eq!(r.status, 409, "{}", r.text);

    let r = action(&cloud.member, &id, json!({"resize": {"flavorRef": "2"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let s = status(&cloud.member, &id, "VERIFY_RESIZE").await;
    assert_eq!(s["flavor"]["id"], "2");
    assert_eq!(allocation(&cloud, &id).await, json!({"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}));
    let r = action(&cloud.member, &id, json!({"confirmResize": null})).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let s = status(&cloud.member, &id, "ACTIVE").await;
    assert_eq!(s["flavor"]["id"], "2");
    // Only the new flavor's allocation is left: the usage of the project is one m1.small.
    let usages = cloud.admin.request(reqwest::Method::GET, &format!("/placement/usages?project_id={}", cloud.member.token_body["token"]["project"]["id"].as_str().unwrap()), None, &[("OpenStack-API-Version", "placement 1.9")]).await;
    assert_eq!(usages.json()["usages"]["MEMORY_MB"], 2048, "{}", usages.text);

    // Revert puts the old flavor and its allocation back.
    assert_eq!(action(&cloud.member, &id, json!({"resize": {"flavorRef": "3"}})).await.status, 202);
    status(&cloud.member, &id, "VERIFY_RESIZE").await;
    assert_eq!(allocation(&cloud, &id).await, json!({"VCPU": 2, "MEMORY_MB": 4096, "DISK_GB": 40}));
    let r = action(&cloud.member, &id, json!({"revertResize": null})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let s = status(&cloud.member, &id, "ACTIVE").await;
    assert_eq!(s["flavor"]["id"], "2");
    assert_eq!(allocation(&cloud, &id).await, json!({"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}));
    let usages = cloud.admin.request(reqwest::Method::GET, &format!("/placement/usages?project_id={}", cloud.member.token_body["token"]["project"]["id"].as_str().unwrap()), None, &[("OpenStack-API-Version", "placement 1.9")]).await;
    assert_eq!(usages.json()["usages"]["MEMORY_MB"], 2048, "no allocation is left behind: {}", usages.text);
    let actions = cloud.member.get(&format!("/compute/v2.1/servers/{id}/os-instance-actions")).await.json();
    let names: Vec<&str> = actions["instanceActions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert!(names.contains(&"resize") && names.contains(&"confirmResize") && names.contains(&"revertResize"), "{names:?}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn create_image_uploads_a_snapshot() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let id = boot(&cloud.member, &img, "snap").await.json()["server"]["id"].as_str().unwrap().to_string();
    status(&cloud.member, &id, "ACTIVE").await;
    let r = action(&cloud.member, &id, json!({"createImage": {"name": "snap-1", "metadata": {"purpose": "backup"}}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let image_id = r.header("location").unwrap().rsplit('/').next().unwrap().to_string();
    let mut shown = Value::Null;
    for _ in 0..200 {
        shown = cloud.member.get(&format!("/image/v2/images/{image_id}")).await.json();
        if shown["status"] == "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!((shown["image_type"].as_str(), shown["instance_uuid"].as_str()), (Some("snapshot"), Some(id.as_str())));
    assert_eq!(shown["purpose"], "backup");
    assert!(shown["size"].as_i64().unwrap() > 0);
    let s = status(&cloud.member, &id, "ACTIVE").await;
    assert!(s["OS-EXT-STS:task_state"].is_null());
    // The snapshot boots a new server.
    let r = boot(&cloud.member, &image_id, "from-snap").await;
    assert_eq!(r.status, 202, "{}", r.text);
    status(&cloud.member, r.json()["server"]["id"].as_str().unwrap(), "ACTIVE").await;
    assert_eq!(action(&cloud.member, &id, json!({"createImage": {}})).await.status, 400);
    cloud.shutdown().await;
}

#[tokio::test]
async fn disk_config_and_server_password() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    let r = m
        .post("/compute/v2.1/servers", &json!({"server": {"name": "d", "imageRef": img, "flavorRef": "1", "OS-DCF:diskConfig": "AUTO"}}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["server"]["OS-DCF:diskConfig"], "AUTO");
    let id = r.json()["server"]["id"].as_str().unwrap().to_string();
    assert_eq!(status(m, &id, "ACTIVE").await["OS-DCF:diskConfig"], "AUTO");
    let bad = m
        .post("/compute/v2.1/servers", &json!({"server": {"name": "d", "imageRef": img, "flavorRef": "1", "OS-DCF:diskConfig": "SIDEWAYS"}}))
        .await;
    assert_eq!(bad.status, 400);
    let r = m
        .request(reqwest::Method::PUT, &format!("/compute/v2.1/servers/{id}"), Some(&json!({"server": {"OS-DCF:diskConfig": "MANUAL"}})), &[])
        .await;
    assert_eq!(r.json()["server"]["OS-DCF:diskConfig"], "MANUAL");
    let r = action(m, &id, json!({"rebuild": {"imageRef": img, "OS-DCF:diskConfig": "AUTO"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(status(m, &id, "ACTIVE").await["OS-DCF:diskConfig"], "AUTO");
    let detail = m.get("/compute/v2.1/servers/detail").await.json();
    assert_eq!(detail["servers"][0]["OS-DCF:diskConfig"], "AUTO");

    let r = m.get(&format!("/compute/v2.1/servers/{id}/os-server-password")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"password": ""}));
    assert_eq!(m.delete(&format!("/compute/v2.1/servers/{id}/os-server-password")).await.status, 204);
    assert_eq!(cloud.reader.delete(&format!("/compute/v2.1/servers/{id}/os-server-password")).await.status, 403);
    cloud.shutdown().await;
}

/// Waits until `image_id` is gone from the image service (404 to the member).
async fn image_gone(c: &Client, image_id: &str) -> bool {
    for _ in 0..200 {
        if c.get(&format!("/image/v2/images/{image_id}")).await.status == 404 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn shelve_offload_and_unshelve() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    let id = boot(m, &img, "shelf").await.json()["server"]["id"].as_str().unwrap().to_string();
    status(m, &id, "ACTIVE").await;
    let held = allocation(&cloud, &id).await;
    assert!(held.is_object(), "{held}");

    // Shelving saves the disk to `<name>-shelved` and, with an offload time of 0, frees the host at once.
    let r = action(m, &id, json!({"shelve": null})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let s = status(m, &id, "SHELVED_OFFLOADED").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 0);
    let shown = cloud.admin.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
    assert!(shown["OS-EXT-SRV-ATTR:host"].is_null(), "{shown}");
    assert_eq!(allocation(&cloud, &id).await, Value::Null, "the offloaded server holds no resources");
    let images = m.get("/image/v2/images?name=shelf-shelved").await.json()["images"].clone();
    assert_eq!(images.as_array().map(Vec::len), Some(1), "{images}");
    let shelved = images[0]["id"].as_str().unwrap().to_string();
    assert_eq!((images[0]["status"].as_str(), images[0]["instance_uuid"].as_str()), (Some("active"), Some(id.as_str())));

    // Actions that need a running guest, and a second shelve, are refused.
    assert_eq!(action(m, &id, json!({"shelve": null})).await.status, 409);
    assert_eq!(action(m, &id, json!({"os-stop": null})).await.status, 409);
    // Offloading again is for administrators, and only from SHELVED.
    assert_eq!(action(m, &id, json!({"shelveOffload": null})).await.status, 403);
    assert_eq!(action(&cloud.admin, &id, json!({"shelveOffload": null})).await.status, 409);

    // Unshelving schedules it again, builds it from the shelved image and deletes that image.
    let r = action(m, &id, json!({"unshelve": null})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    status(m, &id, "ACTIVE").await;
    assert_eq!(allocation(&cloud, &id).await, held);
    assert!(image_gone(m, &shelved).await, "the shelved image is deleted after the unshelve");
    assert_eq!(action(m, &id, json!({"unshelve": null})).await.status, 409, "an active server cannot be unshelved");
    let actions = m.get(&format!("/compute/v2.1/servers/{id}/os-instance-actions")).await.json();
    let names: Vec<&str> = actions["instanceActions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert!(names.contains(&"shelve") && names.contains(&"unshelve"), "{names:?}");

    // A paused server shelves too; deleting a shelved server deletes its image.
    assert_eq!(action(m, &id, json!({"pause": null})).await.status, 202);
    status(m, &id, "PAUSED").await;
    assert_eq!(action(m, &id, json!({"shelve": {}})).await.status, 202);
    status(m, &id, "SHELVED_OFFLOADED").await;
    let images = m.get("/image/v2/images?name=shelf-shelved").await.json()["images"].clone();
    let shelved = images[0]["id"].as_str().unwrap().to_string();
    assert_eq!(m.delete(&format!("/compute/v2.1/servers/{id}")).await.status, 204);
    assert!(wait_for(m, &id, |_| false).await.is_null());
    assert!(image_gone(m, &shelved).await, "the shelved image goes with its server");
    cloud.shutdown().await;
}

#[tokio::test]
async fn shelved_servers_keep_their_host_when_offloading_waits() {
    let cloud = TestCloud::start_with(|c| c.compute.shelved_offload_time = -1).await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    let id = boot(m, &img, "kept").await.json()["server"]["id"].as_str().unwrap().to_string();
    status(m, &id, "ACTIVE").await;
    assert_eq!(action(m, &id, json!({"shelve": null})).await.status, 202);
    let s = status(m, &id, "SHELVED").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4, "the guest is off but still on its host");
    assert!(allocation(&cloud, &id).await.is_object());
    // A zone may only be chosen for an offloaded server (2.77).
    let az = m
        .request(reqwest::Method::POST, &format!("/compute/v2.1/servers/{id}/action"), Some(&json!({"unshelve": {"availability_zone": "nova"}})), &[("OpenStack-API-Version", "compute 2.77")])
        .await;
    assert_eq!(az.status, 409, "{}", az.text);
    // Unshelving a shelved server powers it on where it is.
    assert_eq!(action(m, &id, json!({"unshelve": null})).await.status, 202);
    status(m, &id, "ACTIVE").await;
    assert!(allocation(&cloud, &id).await.is_object());
    // The administrator offloads a shelved server by hand.
    assert_eq!(action(m, &id, json!({"shelve": null})).await.status, 202);
    status(m, &id, "SHELVED").await;
    assert_eq!(action(&cloud.admin, &id, json!({"shelveOffload": null})).await.status, 202);
    status(m, &id, "SHELVED_OFFLOADED").await;
    assert_eq!(allocation(&cloud, &id).await, Value::Null);
    let bad_zone = m
        .request(reqwest::Method::POST, &format!("/compute/v2.1/servers/{id}/action"), Some(&json!({"unshelve": {"availability_zone": "elsewhere"}})), &[("OpenStack-API-Version", "compute 2.77")])
        .await;
    assert_eq!(bad_zone.status, 400, "{}", bad_zone.text);
    let r = m
        .request(reqwest::Method::POST, &format!("/compute/v2.1/servers/{id}/action"), Some(&json!({"unshelve": {"availability_zone": "nova"}})), &[("OpenStack-API-Version", "compute 2.77")])
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    status(m, &id, "ACTIVE").await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn rescue_and_unrescue() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let rescue_img = image(&cloud.member).await;
    let m = &cloud.member;
    let id = boot(m, &img, "lost").await.json()["server"]["id"].as_str().unwrap().to_string();
    status(m, &id, "ACTIVE").await;

    // Rescue boots the guest from a rescue image and answers with the rescue password.
    let r = action(m, &id, json!({"rescue": {"adminPass": "s3cret", "rescue_image_ref": rescue_img}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["adminPass"], "s3cret");
    let s = status(m, &id, "RESCUE").await;
    assert_eq!((s["OS-EXT-STS:vm_state"].as_str(), s["OS-EXT-STS:power_state"].as_i64()), (Some("rescued"), Some(1)));
    let r = action(m, &id, json!({"os-getConsoleOutput": {"length": 50}})).await;
    let console = r.json()["output"].as_str().map(str::to_string).unwrap_or_else(|| panic!("{} {}", r.status, r.text));
    assert!(console.contains(&format!("booted from image {rescue_img}")), "{console}");
    // A rescued server is rescued once, and is not rebooted or resized.
    assert_eq!(action(m, &id, json!({"rescue": null})).await.status, 409);
    assert_eq!(action(m, &id, json!({"reboot": {"type": "HARD"}})).await.status, 409);
    assert_eq!(action(m, &id, json!({"resize": {"flavorRef": "2"}})).await.status, 409);
    let r = action(m, &id, json!({"unrescue": null})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let s = status(m, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:vm_state"], "active");
    assert_eq!(action(m, &id, json!({"unrescue": null})).await.status, 409, "only a rescued server is unrescued");

    // Without a body the instance's own image rescues it, with a generated password.
    let r = action(m, &id, json!({"rescue": null})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["adminPass"].as_str().is_some_and(|p| p.len() >= 8), "{}", r.text);
    status(m, &id, "RESCUE").await;
    assert_eq!(action(m, &id, json!({"unrescue": null})).await.status, 202);
    status(m, &id, "ACTIVE").await;

    // Bad requests: unknown fields or images, a paused server.
    assert_eq!(action(m, &id, json!({"rescue": {"flavor": "1"}})).await.status, 400);
    assert_eq!(action(m, &id, json!({"rescue": {"rescue_image_ref": "not-a-uuid"}})).await.status, 400);
    let missing = "8f2a6a8c-0000-4000-8000-000000000000";
    assert_eq!(action(m, &id, json!({"rescue": {"rescue_image_ref": missing}})).await.status, 400);
    assert_eq!(action(m, &id, json!({"pause": null})).await.status, 202);
    status(m, &id, "PAUSED").await;
    assert_eq!(action(m, &id, json!({"rescue": null})).await.status, 409);
    let actions = m.get(&format!("/compute/v2.1/servers/{id}/os-instance-actions")).await.json();
    let names: Vec<&str> = actions["instanceActions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert!(names.contains(&"rescue") && names.contains(&"unrescue"), "{names:?}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn resizes_are_listed_as_migrations() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let (m, a) = (&cloud.member, &cloud.admin);
    let id = boot(m, &img, "mover").await.json()["server"]["id"].as_str().unwrap().to_string();
    status(m, &id, "ACTIVE").await;
    let mv = |v: &'static str| [("OpenStack-API-Version", v)];
    let list = |q: String, v: &'static str| async move {
        a.request(reqwest::Method::GET, &format!("/compute/v2.1/os-migrations{q}"), None, &mv(v)).await
    };
    assert_eq!(list(String::new(), "compute 2.1").await.json()["migrations"], json!([]));

    // A resize is recorded, finished while it waits for confirmation, then confirmed.
    assert_eq!(action(m, &id, json!({"resize": {"flavorRef": "2"}})).await.status, 202);
    status(m, &id, "VERIFY_RESIZE").await;
    let r = list(String::new(), "compute 2.1").await;
    let first = r.json()["migrations"][0].clone();
    assert_eq!((first["instance_uuid"].as_str(), first["status"].as_str()), (Some(id.as_str()), Some("finished")), "{}", r.text);
    assert_eq!((first["old_instance_type_id"].as_i64(), first["new_instance_type_id"].as_i64()), (Some(1), Some(2)));
    assert!(first["source_compute"].is_string() && first["source_compute"] == first["dest_compute"], "{first}");
    assert!(first.get("migration_type").is_none() && first.get("uuid").is_none(), "newer fields stay hidden at 2.1");
    assert_eq!(action(m, &id, json!({"confirmResize": null})).await.status, 204);
    status(m, &id, "ACTIVE").await;
    let r = list(format!("?instance_uuid={id}"), "compute 2.80").await;
    let confirmed = r.json()["migrations"][0].clone();
    assert_eq!((confirmed["status"].as_str(), confirmed["migration_type"].as_str()), (Some("confirmed"), Some("resize")));
    assert_eq!(confirmed["project_id"], m.token_body["token"]["project"]["id"]);

    // A reverted one; filters and paging.
    assert_eq!(action(m, &id, json!({"resize": {"flavorRef": "3"}})).await.status, 202);
    status(m, &id, "VERIFY_RESIZE").await;
    assert_eq!(action(m, &id, json!({"revertResize": null})).await.status, 202);
    status(m, &id, "ACTIVE").await;
    let all = list(String::new(), "compute 2.59").await.json()["migrations"].clone();
    let statuses: Vec<&str> = all.as_array().unwrap().iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["reverted", "confirmed"], "newest first");
    assert_eq!(list("?status=reverted".into(), "compute 2.1").await.json()["migrations"].as_array().unwrap().len(), 1);
    assert_eq!(list("?host=elsewhere".into(), "compute 2.1").await.json()["migrations"], json!([]));
    let page = list("?limit=1".into(), "compute 2.59").await.json();
    assert_eq!(page["migrations"].as_array().unwrap().len(), 1);
    let next = page["migrations_links"][0]["href"].as_str().unwrap().to_string();
    let marker = next.split("marker=").nth(1).unwrap().to_string();
    let rest = list(format!("?marker={marker}"), "compute 2.59").await.json();
    assert_eq!(rest["migrations"][0]["status"], "confirmed");
    assert_eq!(list("?marker=nope".into(), "compute 2.59").await.status, 400);

    // Administrators only; the per-server list holds live migrations in progress, of which there are none.
    assert_eq!(m.get("/compute/v2.1/os-migrations").await.status, 403);
    let r = a.request(reqwest::Method::GET, &format!("/compute/v2.1/servers/{id}/migrations"), None, &mv("compute 2.23")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["migrations"], json!([]));
    assert_eq!(a.get(&format!("/compute/v2.1/servers/{id}/migrations")).await.status, 404, "before 2.23");
    cloud.shutdown().await;
}
