//! Networks, subnets and ports over HTTP.

use serde_json::json;
use test_utils::TestCloud;

use crate::{V2, create, delete, error_type, get, net_with_subnet, post, put};

#[tokio::test]
async fn versions_extensions_and_the_public_network() {
    let cloud = TestCloud::start().await;
    let r = cloud.anonymous.get("/networking/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["versions"][0]["id"], "v2.0");
    let r = cloud.anonymous.get("/networking/v2.0").await;
    assert!(r.json()["resources"].as_array().unwrap().iter().any(|x| x["name"] == "port"));
    let r = get(&cloud.member, "/extensions").await;
    let aliases: Vec<String> =
        r.json()["extensions"].as_array().unwrap().iter().map(|e| e["alias"].as_str().unwrap().to_string()).collect();
    for a in ["router", "security-group", "external-net", "quotas", "standard-attr-tag"] {
        assert!(aliases.contains(&a.to_string()), "{a}");
    }
    assert_eq!(get(&cloud.member, "/extensions/router").await.status, 200);
    assert_eq!(get(&cloud.member, "/extensions/nope").await.status, 404);
    // bootstrap created the external network, visible to everyone, provider attributes to admins only
    let r = get(&cloud.member, "/networks?router:external=True").await;
    let nets = r.json()["networks"].as_array().unwrap().clone();
    assert_eq!(nets.len(), 1);
    assert_eq!(nets[0]["name"], "public");
    assert!(nets[0].get("provider:network_type").is_none());
    let r = get(&cloud.admin, &format!("/networks/{}", nets[0]["id"].as_str().unwrap())).await;
    assert_eq!(r.json()["network"]["provider:network_type"], "flat");
    assert_eq!(r.json()["network"]["subnets"].as_array().unwrap().len(), 1);
    // unauthenticated calls are refused
    assert_eq!(cloud.anonymous.get(&format!("{V2}/networks")).await.status, 401);
    cloud.shutdown().await;
}

#[tokio::test]
async fn network_lifecycle_filters_fields_paging_and_visibility() {
    let cloud = TestCloud::start().await;
    let net = create(&cloud.member, "networks", "network", json!({"name": "alpha"})).await;
    let id = net["id"].as_str().unwrap();
    assert_eq!(net["mtu"], 1450);
    assert_eq!(net["tenant_id"], net["project_id"]);
    assert_eq!(net["revision_number"], 0);
    assert_eq!(net["status"], "ACTIVE");
    let r = put(&cloud.member, &format!("/networks/{id}"), &json!({"network": {"name": "beta"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["network"]["revision_number"], 1);
    create(&cloud.member, "networks", "network", json!({"name": "gamma"})).await;
    let r = get(&cloud.member, "/networks?name=beta&name=gamma&fields=name&sort_key=name&sort_dir=desc").await;
    let names: Vec<_> = r.json()["networks"].as_array().unwrap().to_vec();
    assert_eq!(names, vec![json!({"name": "gamma"}), json!({"name": "beta"})]);
    let r = get(&cloud.member, "/networks?limit=1&sort_key=name").await;
    assert_eq!(r.json()["networks"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["networks_links"][0]["rel"], "next");
    // shared, external and provider attributes are the admin's
    let r = post(&cloud.member, "/networks", &json!({"network": {"shared": true}})).await;
    assert_eq!(r.status, 403);
    let r = post(&cloud.member, "/networks", &json!({"network": {"provider:network_type": "vlan"}})).await;
    assert_eq!(r.status, 403);
    // the reader sees but may not write
    assert_eq!(get(&cloud.reader, &format!("/networks/{id}")).await.status, 200);
    assert_eq!(post(&cloud.reader, "/networks", &json!({"network": {}})).await.status, 403);
    // another project's private network does not exist for the member; a shared one does
    let private = create(&cloud.admin, "networks", "network", json!({"name": "adm"})).await;
    let r = get(&cloud.member, &format!("/networks/{}", private["id"].as_str().unwrap())).await;
    assert_eq!(r.status, 404);
    assert_eq!(error_type(&r), "NetworkNotFound");
    let shared = create(&cloud.admin, "networks", "network", json!({"name": "sh", "shared": true})).await;
    assert_eq!(get(&cloud.member, &format!("/networks/{}", shared["id"].as_str().unwrap())).await.status, 200);
    // provider networks: vlan ids from the configured range, taken ids conflict
    let v = create(&cloud.admin, "networks", "network", json!({"provider:network_type": "vlan", "provider:physical_network": "public"})).await;
    assert_eq!(v["provider:segmentation_id"], 1000);
    assert_eq!(v["mtu"], 1500);
    let r = post(&cloud.admin, "/networks", &json!({"network": {"provider:network_type": "vlan", "provider:physical_network": "public", "provider:segmentation_id": 1000}})).await;
    assert_eq!(r.status, 409);
    assert_eq!(error_type(&r), "VlanIdInUse");
    let r = post(&cloud.admin, "/networks", &json!({"network": {"provider:network_type": "bogus"}})).await;
    assert_eq!(r.status, 400);
    // the MTU cannot exceed what the type allows
    let r = post(&cloud.member, "/networks", &json!({"network": {"mtu": 9000}})).await;
    assert_eq!(r.status, 400);
    // unknown attributes are refused
    let r = post(&cloud.member, "/networks", &json!({"network": {"colour": "red"}})).await;
    assert_eq!(r.status, 400);
    assert_eq!(delete(&cloud.member, &format!("/networks/{id}")).await.status, 204);
    assert_eq!(delete(&cloud.member, &format!("/networks/{id}")).await.status, 404);
    cloud.shutdown().await;
}

#[tokio::test]
async fn subnet_validation() {
    let cloud = TestCloud::start().await;
    let (net, _sub) = net_with_subnet(&cloud.member, "10.1.0.0/24").await;
    let bad = |body: serde_json::Value| {
        let c = &cloud.member;
        let mut b = body;
        b["network_id"] = json!(net.clone());
        async move { post(c, "/subnets", &json!({"subnet": b})).await }
    };
    let r = bad(json!({"ip_version": 4, "cidr": "10.1.0.128/25"})).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (400, "InvalidInput"), "overlap: {}", r.text);
    assert!(r.text.contains("overlaps with another subnet"));
    assert_eq!(bad(json!({"ip_version": 4, "cidr": "10.2.0.5/24"})).await.status, 400);
    assert_eq!(bad(json!({"ip_version": 4, "cidr": "nonsense"})).await.status, 400);
    assert_eq!(bad(json!({"ip_version": 4, "cidr": "10.2.0.0/24", "gateway_ip": "10.3.0.1"})).await.status, 400);
    let r = bad(json!({"ip_version": 4, "cidr": "10.2.0.0/24", "allocation_pools": [{"start": "10.2.0.1", "end": "10.2.0.10"}]})).await;
    assert_eq!(r.status, 400, "pool holds the gateway");
    assert_eq!(bad(json!({"ip_version": 4, "cidr": "10.2.0.0/24", "allocation_pools": [{"start": "10.2.0.10", "end": "10.2.1.10"}]})).await.status, 400);
    assert_eq!(bad(json!({"ip_version": 6, "cidr": "2001:db8::/64", "ipv6_ra_mode": "slaac", "ipv6_address_mode": "dhcpv6-stateful"})).await.status, 400);
    assert_eq!(bad(json!({"ip_version": 4, "cidr": "10.4.0.0/24", "ipv6_address_mode": "slaac"})).await.status, 400);
    // a subnet without gateway, with pools, DNS and host routes
    let s = create(&cloud.member, "subnets", "subnet", json!({
        "network_id": net, "ip_version": 4, "cidr": "10.5.0.0/24", "gateway_ip": null,
        "allocation_pools": [{"start": "10.5.0.10", "end": "10.5.0.20"}],
        "dns_nameservers": ["8.8.8.8"], "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.5.0.1"}],
    })).await;
    assert_eq!(s["gateway_ip"], json!(null));
    assert_eq!(s["allocation_pools"], json!([{"start": "10.5.0.10", "end": "10.5.0.20"}]));
    let sid = s["id"].as_str().unwrap();
    let r = put(&cloud.member, &format!("/subnets/{sid}"), &json!({"subnet": {"gateway_ip": "10.5.0.1", "dns_nameservers": [], "enable_dhcp": false}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["subnet"]["gateway_ip"], "10.5.0.1");
    // IPv6 with SLAAC: ports get the EUI-64 address of their MAC
    let v6 = create(&cloud.member, "subnets", "subnet", json!({
        "network_id": net, "ip_version": 6, "cidr": "2001:db8:1::/64", "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"})).await;
    let port = create(&cloud.member, "ports", "port", json!({"network_id": net, "mac_address": "fa:16:3e:12:34:56"})).await;
    let ips: Vec<_> = port["fixed_ips"].as_array().unwrap().iter().map(|i| i["ip_address"].as_str().unwrap().to_string()).collect();
    assert!(ips.contains(&"2001:db8:1:0:f816:3eff:fe12:3456".to_string()), "{ips:?}");
    assert_eq!(ips.len(), 2);
    // subnets with ports are in use, networks with ports too
    let r = delete(&cloud.member, &format!("/subnets/{}", _sub)).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (409, "SubnetInUse"));
    let r = delete(&cloud.member, &format!("/networks/{net}")).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (409, "NetworkInUse"));
    // the SLAAC subnet goes without complaint, taking its address off the port
    assert_eq!(delete(&cloud.member, &format!("/subnets/{}", v6["id"].as_str().unwrap())).await.status, 204);
    let p = get(&cloud.member, &format!("/ports/{}", port["id"].as_str().unwrap())).await.json();
    assert_eq!(p["port"]["fixed_ips"].as_array().unwrap().len(), 1);
    assert_eq!(delete(&cloud.member, &format!("/ports/{}", port["id"].as_str().unwrap())).await.status, 204);
    assert_eq!(delete(&cloud.member, &format!("/networks/{net}")).await.status, 204);
    cloud.shutdown().await;
}

#[tokio::test]
async fn subnet_pools_allocate_prefixes() {
    let cloud = TestCloud::start().await;
    let pool = create(&cloud.member, "subnetpools", "subnetpool", json!({"name": "p", "prefixes": ["10.10.0.0/16"], "default_prefixlen": 24})).await;
    let net = create(&cloud.member, "networks", "network", json!({})).await;
    let a = create(&cloud.member, "subnets", "subnet", json!({"network_id": net["id"], "ip_version": 4, "subnetpool_id": pool["id"]})).await;
    assert_eq!(a["cidr"], "10.10.0.0/24");
    let net2 = create(&cloud.member, "networks", "network", json!({})).await;
    let b = create(&cloud.member, "subnets", "subnet", json!({"network_id": net2["id"], "ip_version": 4, "subnetpool_id": pool["id"], "prefixlen": 28})).await;
    assert_eq!(b["cidr"], "10.10.1.0/28");
    let r = delete(&cloud.member, &format!("/subnetpools/{}", pool["id"].as_str().unwrap())).await;
    assert_eq!(r.status, 409);
    // the default pool made on bootstrap (shared, 10.0.0.0/16 in /26s) serves use_default_subnetpool; there is no
    // default IPv6 pool
    let r = post(&cloud.member, "/subnets", &json!({"subnet": {"network_id": net2["id"], "ip_version": 6, "use_default_subnetpool": true}})).await;
    assert_eq!(r.status, 400);
    let c = create(&cloud.member, "subnets", "subnet", json!({"network_id": net2["id"], "ip_version": 4, "use_default_subnetpool": true})).await;
    assert_eq!(c["cidr"], "10.0.0.0/26");
    let pools = get(&cloud.member, "/subnetpools?is_default=true").await.json()["subnetpools"].clone();
    assert_eq!(pools[0]["name"], "shared-default-subnetpool-v4");
    cloud.shutdown().await;
}

#[tokio::test]
async fn ports_fixed_ips_macs_and_bindings() {
    let cloud = TestCloud::start().await;
    let (net, sub) = net_with_subnet(&cloud.member, "10.20.0.0/24").await;
    let p = create(&cloud.member, "ports", "port", json!({"network_id": net, "fixed_ips": [{"subnet_id": sub, "ip_address": "10.20.0.50"}]})).await;
    assert!(p["mac_address"].as_str().unwrap().starts_with("fa:16:3e:"));
    assert_eq!(p["fixed_ips"][0]["ip_address"], "10.20.0.50");
    assert_eq!(p["security_groups"].as_array().unwrap().len(), 1, "the default group");
    assert!(p.get("binding:host_id").is_none(), "binding details are the admin's");
    let r = post(&cloud.member, "/ports", &json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.20.0.50"}]}})).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (409, "IpAddressAlreadyAllocated"));
    let r = post(&cloud.member, "/ports", &json!({"port": {"network_id": net, "mac_address": p["mac_address"]}})).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (409, "MacAddressInUse"));
    let r = post(&cloud.member, "/ports", &json!({"port": {"network_id": net, "fixed_ips": [{"subnet_id": sub, "ip_address": "10.30.0.5"}]}})).await;
    assert_eq!(r.status, 400);
    let r = post(&cloud.member, "/ports", &json!({"port": {"network_id": "nope"}})).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (404, "NetworkNotFound"));
    // port security off refuses address pairs
    let r = post(&cloud.member, "/ports", &json!({"port": {"network_id": net, "port_security_enabled": false, "allowed_address_pairs": [{"ip_address": "10.0.0.9"}]}})).await;
    assert_eq!(r.status, 409);
    let pid = p["id"].as_str().unwrap();
    // change the fixed IP; the old address is free again
    let r = put(&cloud.member, &format!("/ports/{pid}"), &json!({"port": {"fixed_ips": [{"subnet_id": sub, "ip_address": "10.20.0.60"}]}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    create(&cloud.member, "ports", "port", json!({"network_id": net, "fixed_ips": [{"ip_address": "10.20.0.50"}]})).await;
    // the admin binds it to a host through the driver
    let r = put(&cloud.admin, &format!("/ports/{pid}"), &json!({"port": {"binding:host_id": "compute-1"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["port"]["binding:vif_type"], "ovs");
    assert_eq!(r.json()["port"]["status"], "ACTIVE");
    let r = put(&cloud.member, &format!("/ports/{pid}"), &json!({"port": {"binding:host_id": "compute-2"}})).await;
    assert_eq!(r.status, 403);
    // an unbound port's MAC may change (admin); the old one is free again
    let other = create(&cloud.member, "ports", "port", json!({"network_id": net})).await;
    let oid = other["id"].as_str().unwrap();
    let old_mac = other["mac_address"].as_str().unwrap();
    let r = put(&cloud.admin, &format!("/ports/{oid}"), &json!({"port": {"mac_address": "fa:16:3e:aa:bb:cc"}})).await;
    assert_eq!(r.json()["port"]["mac_address"], "fa:16:3e:aa:bb:cc");
    create(&cloud.member, "ports", "port", json!({"network_id": net, "mac_address": old_mac})).await;
    let r = put(&cloud.admin, &format!("/ports/{pid}"), &json!({"port": {"mac_address": "fa:16:3e:aa:bb:cd"}})).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (409, "PortBound"));
    // bulk create
    let r = post(&cloud.member, "/ports", &json!({"ports": [{"network_id": net}, {"network_id": net}]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["ports"].as_array().unwrap().len(), 2);
    // filter by fixed IP
    let r = get(&cloud.member, "/ports?fixed_ips=ip_address%3D10.20.0.60").await;
    assert_eq!(r.json()["ports"].as_array().unwrap().len(), 1);
    // availability
    let r = get(&cloud.admin, &format!("/network-ip-availabilities/{net}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["network_ip_availability"]["used_ips"], 6);
    assert_eq!(r.json()["network_ip_availability"]["total_ips"], 253);
    assert_eq!(get(&cloud.member, &format!("/network-ip-availabilities/{net}")).await.status, 403);
    cloud.shutdown().await;
}

#[tokio::test]
async fn tags_quotas_and_rbac() {
    let cloud = TestCloud::start().await;
    let net = create(&cloud.member, "networks", "network", json!({})).await;
    let id = net["id"].as_str().unwrap();
    let r = put(&cloud.member, &format!("/networks/{id}/tags"), &json!({"tags": ["red", "blue"]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(put(&cloud.member, &format!("/networks/{id}/tags/green"), &json!(null)).await.status, 201);
    assert_eq!(get(&cloud.member, &format!("/networks/{id}/tags/green")).await.status, 204);
    assert_eq!(get(&cloud.member, &format!("/networks/{id}/tags/pink")).await.status, 404);
    assert_eq!(delete(&cloud.member, &format!("/networks/{id}/tags/red")).await.status, 204);
    let r = get(&cloud.member, "/networks?tags=blue,green").await;
    assert_eq!(r.json()["networks"].as_array().unwrap().len(), 1);
    let r = get(&cloud.member, "/networks?not-tags-any=blue").await;
    assert!(r.json()["networks"].as_array().unwrap().iter().all(|n| n["id"] != net["id"]));
    // quotas: the admin lowers the member's network quota; details count usage
    let project = net["project_id"].as_str().unwrap();
    let r = put(&cloud.admin, &format!("/quotas/{project}"), &json!({"quota": {"network": 1}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = post(&cloud.member, "/networks", &json!({"network": {}})).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (409, "OverQuota"));
    let r = get(&cloud.member, &format!("/quotas/{project}/details")).await;
    assert_eq!(r.json()["quota"]["network"], json!({"limit": 1, "used": 1, "reserved": 0}));
    assert_eq!(put(&cloud.member, &format!("/quotas/{project}"), &json!({"quota": {"network": 10}})).await.status, 403);
    assert_eq!(delete(&cloud.admin, &format!("/quotas/{project}")).await.status, 204);
    assert_eq!(get(&cloud.member, &format!("/quotas/{project}")).await.json()["quota"]["network"], 100);
    // RBAC: the admin shares a network with the demo project
    let adm = create(&cloud.admin, "networks", "network", json!({"name": "granted"})).await;
    let aid = adm["id"].as_str().unwrap();
    assert_eq!(get(&cloud.member, &format!("/networks/{aid}")).await.status, 404);
    let rbac = create(&cloud.admin, "rbac-policies", "rbac_policy", json!({
        "object_type": "network", "object_id": aid, "action": "access_as_shared", "target_tenant": project})).await;
    let r = get(&cloud.member, &format!("/networks/{aid}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["network"]["shared"], true);
    assert_eq!(delete(&cloud.admin, &format!("/rbac-policies/{}", rbac["id"].as_str().unwrap())).await.status, 204);
    assert_eq!(get(&cloud.member, &format!("/networks/{aid}")).await.status, 404);
    cloud.shutdown().await;
}
