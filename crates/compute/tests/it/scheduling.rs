//! The scheduler through the whole cloud, some tests with two fake compute hosts in one process: flavor extra
//! specs matched against aggregate metadata and the host's capabilities, image properties against the host's
//! supported instances, and hosts whose builds fail weighed down.

use compute_agent::{FakeConfig, FakeFailures};
use serde_json::{Value, json};
use test_utils::{Client, TestCloud};

use crate::servers::{image, status, wait_agent};

/// The in-process agent's host.
fn main_host(cloud: &TestCloud) -> String {
    cloud.running.agent.as_ref().expect("an in-process agent").host().to_string()
}

async fn flavor(cloud: &TestCloud, id: &str, extra_specs: Value) {
    let r = cloud
        .admin
        .post("/compute/v2.1/flavors", &json!({"flavor": {"name": id, "id": id, "ram": 512, "vcpus": 1, "disk": 1}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = cloud.admin.post(&format!("/compute/v2.1/flavors/{id}/os-extra_specs"), &json!({"extra_specs": extra_specs})).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn boot(c: &Client, image: &str, name: &str, flavor: &str) -> String {
    let r = c.post("/compute/v2.1/servers", &json!({"server": {"name": name, "imageRef": image, "flavorRef": flavor}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json()["server"]["id"].as_str().unwrap().to_string()
}

/// The host of an ACTIVE server, as the admin sees it.
async fn active_on(cloud: &TestCloud, id: &str) -> String {
    let s = status(&cloud.admin, id, "ACTIVE").await;
    s["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn aggregate_extra_specs_pick_the_aggregate_hosts() {
    let cloud = TestCloud::start_with(|c| c.compute.enabled_filters.push("AggregateInstanceExtraSpecsFilter".into())).await;
    wait_agent(&cloud).await;
    let main = main_host(&cloud);
    // The second host is smaller: the RAM, CPU and disk weighers prefer the main one.
    let small = FakeConfig { vcpus: 4, memory_mb: 8192, local_gb: 100, ..FakeConfig::default() };
    let (_agent, _) = cloud.start_fake_agent("ssd-host", small).await;
    let img = image(&cloud.member).await;

    let r = cloud.admin.post("/compute/v2.1/os-aggregates", &json!({"aggregate": {"name": "fast"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let agg = r.json()["aggregate"]["id"].as_i64().unwrap();
    let act = |body: Value| {
        let admin = cloud.admin.clone();
        async move { admin.post(&format!("/compute/v2.1/os-aggregates/{agg}/action"), &body).await }
    };
    assert_eq!(act(json!({"add_host": {"host": "ssd-host"}})).await.status, 200);
    let r = act(json!({"set_metadata": {"metadata": {"ssd": "true"}}})).await;
    assert_eq!(r.status, 200, "{}", r.text);

    flavor(&cloud, "ssd", json!({"aggregate_instance_extra_specs:ssd": "true"})).await;
    flavor(&cloud, "ssd-or", json!({"aggregate_instance_extra_specs:ssd": "<or> yes <or> true"})).await;
    flavor(&cloud, "hdd", json!({"aggregate_instance_extra_specs:ssd": "false"})).await;

    // Without extra specs the weighers choose the main host.
    let plain = boot(&cloud.member, &img, "plain", "1").await;
    assert_eq!(active_on(&cloud, &plain).await, main);
    // With them, only the aggregate's host passes, whatever the weights.
    for (name, flavor) in [("fast-1", "ssd"), ("fast-2", "ssd"), ("fast-3", "ssd-or")] {
        let id = boot(&cloud.member, &img, name, flavor).await;
        assert_eq!(active_on(&cloud, &id).await, "ssd-host", "{name}");
    }
    // No host has `ssd=false`: no valid host, the server ends in ERROR with the fault.
    let none = boot(&cloud.member, &img, "slow", "hdd").await;
    let s = status(&cloud.member, &none, "ERROR").await;
    assert!(s["fault"]["message"].as_str().unwrap().starts_with("No valid host was found"), "{s}");
    // The metadata changes: the main host joins, with `ssd=false` in a second aggregate.
    let r = cloud.admin.post("/compute/v2.1/os-aggregates", &json!({"aggregate": {"name": "slow"}})).await;
    let slow = r.json()["aggregate"]["id"].as_i64().unwrap();
    let path = format!("/compute/v2.1/os-aggregates/{slow}/action");
    assert_eq!(cloud.admin.post(&path, &json!({"add_host": {"host": main}})).await.status, 200);
    assert_eq!(cloud.admin.post(&path, &json!({"set_metadata": {"metadata": {"ssd": "false"}}})).await.status, 200);
    let id = boot(&cloud.member, &img, "slow-2", "hdd").await;
    assert_eq!(active_on(&cloud, &id).await, main);
    cloud.shutdown().await;
}

#[tokio::test]
async fn hosts_whose_builds_fail_are_avoided() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let main = main_host(&cloud);
    // The flaky host is the biggest, so the weighers prefer it, but every spawn there fails.
    let big = FakeConfig {
        vcpus: 64,
        memory_mb: 262144,
        local_gb: 4000,
        failures: FakeFailures { spawn: true, ..FakeFailures::default() },
    };
    let (_agent, driver) = cloud.start_fake_agent("flaky", big).await;
    let img = image(&cloud.member).await;

    // Tried on the flaky host first, rescheduled to the main one.
    let first = boot(&cloud.member, &img, "first", "1").await;
    assert_eq!(active_on(&cloud, &first).await, main);
    let actions = cloud.admin.get(&format!("/compute/v2.1/servers/{first}/os-instance-actions")).await.json();
    let req = actions["instanceActions"][0]["request_id"].as_str().unwrap().to_string();
    let events = cloud
        .admin
        .request(
            reqwest::Method::GET,
            &format!("/compute/v2.1/servers/{first}/os-instance-actions/{req}"),
            None,
            &[("X-OpenStack-Nova-API-Version", "2.62")],
        )
        .await
        .json();
    let tries: Vec<(&str, &str)> = events["instanceAction"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "compute__do_build_and_run_instance")
        .map(|e| (e["host"].as_str().unwrap_or_default(), e["result"].as_str().unwrap_or_default()))
        .collect();
    // A try failed (only the flaky host fails) before the build succeeded on the main host. Which event row
    // records which try depends on the order the agents' reports arrive in, so only the outcomes are checked.
    assert!(tries.iter().any(|(_, result)| *result == "Error"), "{events}");
    assert!(tries.iter().any(|(_, result)| *result == "Success"), "{events}");

    // The flaky host works again, and still has the most room, but its failed build weighs it down.
    driver.set_failures(FakeFailures::default());
    for name in ["second", "third"] {
        let id = boot(&cloud.member, &img, name, "1").await;
        assert_eq!(active_on(&cloud, &id).await, main, "{name}");
    }
    cloud.shutdown().await;
}

/// An active image with extra properties; returns its id.
async fn image_with(c: &Client, properties: Value) -> String {
    let mut body = json!({"name": "props", "disk_format": "raw", "container_format": "bare"});
    body.as_object_mut().unwrap().extend(properties.as_object().unwrap().clone());
    let r = c.post("/image/v2/images", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = c
        .request(reqwest::Method::PUT, &format!("/image/v2/images/{id}/file"), None, &[("content-type", "application/octet-stream")])
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    id
}

#[tokio::test]
async fn image_properties_and_capabilities_match_what_the_host_reports() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    // The fake driver supports x86_64/fake/hvm.
    for (props, ok) in [
        (json!({"hw_architecture": "x86_64", "img_hv_type": "fake", "hw_vm_mode": "hvm"}), true),
        (json!({"architecture": "amd64"}), true),
        (json!({"hw_architecture": "aarch64"}), false),
        (json!({"img_hv_type": "qemu"}), false),
    ] {
        let img = image_with(&cloud.member, props.clone()).await;
        let id = boot(&cloud.member, &img, "props", "1").await;
        let s = status(&cloud.member, &id, if ok { "ACTIVE" } else { "ERROR" }).await;
        if !ok {
            assert!(s["fault"]["message"].as_str().unwrap().starts_with("No valid host was found"), "{props}: {s}");
        }
    }
    // Capabilities: the node's hypervisor type and cpu_info.
    let img = image(&cloud.member).await;
    for (id, specs, ok) in [
        ("cap-fake", json!({"capabilities:hypervisor_type": "s== fake"}), true),
        ("cap-arch", json!({"capabilities:cpu_info:arch": "x86_64"}), true),
        ("cap-qemu", json!({"capabilities:hypervisor_type": "QEMU"}), false),
        ("cap-big", json!({"vcpus_total": ">= 1000"}), false),
    ] {
        flavor(&cloud, id, specs.clone()).await;
        let server = boot(&cloud.member, &img, id, id).await;
        status(&cloud.member, &server, if ok { "ACTIVE" } else { "ERROR" }).await;
    }
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_zone_with_a_host_forces_the_host_for_admins() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let main = main_host(&cloud);
    // The second host is smaller: the weighers alone choose the main one.
    let small = FakeConfig { vcpus: 2, memory_mb: 4096, local_gb: 50, ..FakeConfig::default() };
    let (_agent, _) = cloud.start_fake_agent("small-host", small).await;
    let img = image(&cloud.member).await;
    let create = |c: &Client, name: &str, zone: &str| {
        let (c, body) = (c.clone(), json!({"server": {"name": name, "imageRef": img, "flavorRef": "1", "availability_zone": zone}}));
        async move { c.post("/compute/v2.1/servers", &body).await }
    };

    let r = create(&cloud.admin, "forced", "nova:small-host").await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["server"]["id"].as_str().unwrap().to_string();
    assert_eq!(active_on(&cloud, &id).await, "small-host");
    let s = status(&cloud.admin, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-AZ:availability_zone"], "nova", "{s}");
    let r = create(&cloud.admin, "zone-only", "nova:").await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(active_on(&cloud, r.json()["server"]["id"].as_str().unwrap()).await, main);

    // Members may not force a host; an unknown host, or a zone host with the 2.74 fields, is a 400.
    assert_eq!(create(&cloud.member, "m", "nova:small-host").await.status, 403);
    let r = create(&cloud.admin, "nowhere", "nova:nowhere").await;
    assert_eq!(r.status, 400, "{}", r.text);
    let body = json!({"server": {"name": "both", "imageRef": img, "flavorRef": "1", "networks": "none",
        "availability_zone": "nova:small-host", "host": "small-host"}});
    let r = cloud.admin.request(reqwest::Method::POST, "/compute/v2.1/servers", Some(&body), &[("OpenStack-API-Version", "compute 2.74")]).await;
    assert_eq!(r.status, 400, "{}", r.text);
    cloud.shutdown().await;
}

/// The hosts of the servers of one reservation, as the admin sees them.
async fn hosts_of_reservation(cloud: &TestCloud, reservation: &str, n: usize) -> Vec<String> {
    let r = cloud.admin.get(&format!("/compute/v2.1/servers/detail?all_tenants=1&reservation_id={reservation}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ids: Vec<String> = r.json()["servers"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), n, "{}", r.text);
    let mut hosts = Vec::new();
    for id in ids {
        hosts.push(active_on(cloud, &id).await);
    }
    hosts.sort();
    hosts
}

/// A multi-create asks placement once and weighs each instance over the hosts as the request's earlier claims
/// left them: on two equal hosts the RAM weigher alternates, and an anti-affinity group gets one host each.
#[tokio::test]
async fn a_multi_create_is_weighed_against_its_own_claims() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let main = main_host(&cloud);
    let f = &cloud.running.cloud.config.compute_agent.fake;
    let twin = FakeConfig { vcpus: f.vcpus, memory_mb: f.memory_mb, local_gb: f.local_gb, ..FakeConfig::default() };
    let (_agent, _) = cloud.start_fake_agent("twin-host", twin).await;
    let img = image(&cloud.member).await;

    let many = json!({"server": {"name": "many", "imageRef": img, "flavorRef": "1", "min_count": 4, "return_reservation_id": true}});
    let r = cloud.member.post("/compute/v2.1/servers", &many).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let reservation = r.json()["reservation_id"].as_str().unwrap().to_string();
    let mut expected = vec![main.clone(), main.clone(), "twin-host".to_string(), "twin-host".to_string()];
    expected.sort();
    assert_eq!(hosts_of_reservation(&cloud, &reservation, 4).await, expected);

    let r = cloud.member.post("/compute/v2.1/os-server-groups", &json!({"server_group": {"name": "apart", "policies": ["anti-affinity"]}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let group = r.json()["server_group"]["id"].as_str().unwrap().to_string();
    let apart = json!({
        "server": {"name": "apart", "imageRef": img, "flavorRef": "1", "min_count": 2, "return_reservation_id": true},
        "os:scheduler_hints": {"group": group},
    });
    let r = cloud.member.post("/compute/v2.1/servers", &apart).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let reservation = r.json()["reservation_id"].as_str().unwrap().to_string();
    let mut expected = vec![main, "twin-host".to_string()];
    expected.sort();
    assert_eq!(hosts_of_reservation(&cloud, &reservation, 2).await, expected);
    cloud.shutdown().await;
}
