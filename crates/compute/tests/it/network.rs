//! Servers wired to the network service, both in one cloud: ports made or bound at boot (in the instance's
//! project, bound to its host), the network chosen when there is one, `addresses` from the info cache (floating IPs
//! included), bad network requests, and ports released on delete.

use serde_json::{Value, json};
use test_utils::{Client, TestCloud};

use crate::servers::{image, status, wait_agent, wait_for};

const NET: &str = "/networking/v2.0";

async fn create(c: &Client, collection: &str, key: &str, body: Value) -> Value {
    let r = c.post(&format!("{NET}/{collection}"), &json!({key: body})).await;
    assert_eq!(r.status, 201, "create {key}: {}", r.text);
    r.json()[key].clone()
}

/// A network named `name` with an IPv4 subnet of `cidr`: (network id, subnet id).
async fn network(c: &Client, name: &str, cidr: &str) -> (String, String) {
    let net = create(c, "networks", "network", json!({"name": name})).await;
    let id = net["id"].as_str().unwrap().to_string();
    let sub = create(c, "subnets", "subnet", json!({"network_id": id, "ip_version": 4, "cidr": cidr})).await;
    (id, sub["id"].as_str().unwrap().to_string())
}

async fn boot(c: &Client, img: &str, name: &str, extra: Value, mv: &str) -> test_utils::Response {
    let mut server = json!({"name": name, "imageRef": img, "flavorRef": "1"});
    if let (Value::Object(s), Value::Object(e)) = (&mut server, extra) {
        s.extend(e);
    }
    c.request(
        reqwest::Method::POST,
        "/compute/v2.1/servers",
        Some(&json!({"server": server})),
        &[("OpenStack-API-Version", &format!("compute {mv}"))],
    )
    .await
}

fn id_of(r: &test_utils::Response) -> String {
    assert_eq!(r.status, 202, "{}", r.text);
    r.json()["server"]["id"].as_str().unwrap().to_string()
}

async fn port(c: &Client, id: &str) -> test_utils::Response {
    c.get(&format!("{NET}/ports/{id}")).await
}

async fn gone(c: &Client, id: &str) {
    assert!(wait_for(c, id, |_| false).await.is_null());
}

#[tokio::test]
async fn ports_at_boot_addresses_and_release_on_delete() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    let (net, subnet) = network(m, "private", "10.9.0.0/24").await;

    // No network named, exactly one visible: Nova picks it and makes a port there.
    let id = id_of(&boot(m, &img, "one", json!({}), "2.1").await);
    let s = status(m, &id, "ACTIVE").await;
    let addrs = s["addresses"]["private"].as_array().expect("an address on the project's network").clone();
    assert_eq!(addrs.len(), 1, "{s}");
    assert_eq!(addrs[0]["version"], 4);
    assert_eq!(addrs[0]["OS-EXT-IPS:type"], "fixed");
    assert!(addrs[0]["addr"].as_str().unwrap().starts_with("10.9.0."));
    let mac = addrs[0]["OS-EXT-IPS-MAC:mac_addr"].as_str().unwrap().to_string();
    let ports = cloud.admin.get(&format!("{NET}/ports?device_id={id}")).await.json()["ports"].clone();
    let p = &ports[0];
    assert_eq!(ports.as_array().unwrap().len(), 1);
    assert_eq!(p["mac_address"], mac.as_str());
    assert_eq!(p["network_id"], net.as_str());
    assert_eq!(p["device_owner"], "compute:nova");
    assert_eq!(p["project_id"], s["tenant_id"]);
    let host = cloud.admin.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"]["OS-EXT-SRV-ATTR:host"].clone();
    assert_eq!(p["binding:host_id"], host, "the port is bound to the instance's host");
    let created_port = p["id"].as_str().unwrap().to_string();
    // The same addresses through /ips, and in the detailed list.
    let ips = m.get(&format!("/compute/v2.1/servers/{id}/ips")).await.json();
    assert_eq!(ips["addresses"]["private"][0]["addr"], addrs[0]["addr"]);
    assert_eq!(m.get(&format!("/compute/v2.1/servers/{id}/ips/private")).await.status, 200);
    assert_eq!(m.get(&format!("/compute/v2.1/servers/{id}/ips/nowhere")).await.status, 404);
    let detail = m.get("/compute/v2.1/servers/detail").await.json();
    assert_eq!(detail["servers"][0]["addresses"]["private"][0]["addr"], addrs[0]["addr"]);
    let by_ip = m.get(&format!("/compute/v2.1/servers?ip={}", addrs[0]["addr"].as_str().unwrap())).await.json();
    assert_eq!(by_ip["servers"].as_array().unwrap().len(), 1);
    let by_ip = m.get("/compute/v2.1/servers?ip=^192%5C.").await.json();
    assert_eq!(by_ip["servers"], json!([]));

    // A floating IP associated in the network service shows up in the server's addresses.
    let public = cloud.admin.get(&format!("{NET}/networks?name=public")).await.json()["networks"][0]["id"].clone();
    let router = create(m, "routers", "router", json!({"name": "r", "external_gateway_info": {"network_id": public}})).await;
    let rid = router["id"].as_str().unwrap();
    let r = m
        .request(reqwest::Method::PUT, &format!("{NET}/routers/{rid}/add_router_interface"), Some(&json!({"subnet_id": subnet})), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let fip = create(m, "floatingips", "floatingip", json!({"floating_network_id": public, "port_id": created_port})).await;
    // A network-changed event refreshes the info cache the lists read.
    let ev = json!({"events": [{"name": "network-changed", "server_uuid": id, "tag": created_port}]});
    assert_eq!(cloud.admin.post("/compute/v2.1/os-server-external-events", &ev).await.status, 200);
    let detail = m.get("/compute/v2.1/servers/detail").await.json();
    let listed = detail["servers"][0]["addresses"]["private"].as_array().unwrap().clone();
    assert!(listed.iter().any(|a| a["addr"] == fip["floating_ip_address"]), "{listed:?}");
    let s = m.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
    let addrs = s["addresses"]["private"].as_array().unwrap().clone();
    assert_eq!(addrs.len(), 2, "{s}");
    assert_eq!(addrs[1]["OS-EXT-IPS:type"], "floating");
    assert_eq!(addrs[1]["addr"], fip["floating_ip_address"]);

    // A port made beforehand is bound, and only unbound when the server goes.
    let own = create(m, "ports", "port", json!({"network_id": net, "name": "mine"})).await;
    let own_id = own["id"].as_str().unwrap().to_string();
    let with_port = id_of(&boot(m, &img, "two", json!({"networks": [{"port": own_id}]}), "2.37").await);
    let s = status(m, &with_port, "ACTIVE").await;
    assert_eq!(s["addresses"]["private"][0]["addr"], own["fixed_ips"][0]["ip_address"]);
    assert_eq!(port(m, &own_id).await.json()["port"]["device_id"], with_port.as_str());

    // Bad requests: in-use port, unknown port and network, several networks to choose from.
    let r = boot(m, &img, "x", json!({"networks": [{"port": own_id}]}), "2.37").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("is still in use"), "{}", r.text);
    let r = boot(m, &img, "x", json!({"networks": [{"port": "3b2f0000-0000-0000-0000-000000000000"}]}), "2.37").await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = boot(m, &img, "x", json!({"networks": [{"uuid": "3b2f0000-0000-0000-0000-000000000000"}]}), "2.37").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("could not be found"), "{}", r.text);
    let r = boot(m, &img, "x", json!({"security_groups": [{"name": "nosuch"}]}), "2.1").await;
    assert_eq!(r.status, 400, "{}", r.text);
    let (net2, _) = network(m, "second", "10.8.0.0/24").await;
    let r = boot(m, &img, "x", json!({"networks": "auto"}), "2.37").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("Multiple possible networks found"), "{}", r.text);

    // Two NICs, one with a fixed address; "none" makes none.
    let multi = id_of(
        &boot(m, &img, "multi", json!({"networks": [{"uuid": net}, {"uuid": net2, "fixed_ip": "10.8.0.50"}]}), "2.37").await,
    );
    let s = status(m, &multi, "ACTIVE").await;
    assert_eq!(s["addresses"]["second"][0]["addr"], "10.8.0.50", "{s}");
    assert!(s["addresses"]["private"].is_array());
    let bare = id_of(&boot(m, &img, "bare", json!({"networks": "none"}), "2.37").await);
    assert_eq!(status(m, &bare, "ACTIVE").await["addresses"], json!({}));

    // Deletes: the port compute made is gone, the pre-existing one is unbound and kept.
    for s in [&id, &with_port, &multi, &bare] {
        assert_eq!(m.delete(&format!("/compute/v2.1/servers/{s}")).await.status, 204);
        gone(m, s).await;
    }
    assert_eq!(port(m, &created_port).await.status, 404);
    let kept = port(m, &own_id).await.json()["port"].clone();
    assert_eq!(kept["device_id"], "");
    assert_eq!(kept["device_owner"], "");
    let left = cloud.admin.get(&format!("{NET}/ports?device_id={multi}")).await.json()["ports"].clone();
    assert_eq!(left, json!([]));
    cloud.shutdown().await;
}

async fn at(c: &Client, method: reqwest::Method, path: &str, body: Option<Value>, mv: &str) -> test_utils::Response {
    c.request(method, &format!("/compute/v2.1{path}"), body.as_ref(), &[("OpenStack-API-Version", &format!("compute {mv}"))]).await
}

#[tokio::test]
async fn security_group_and_floating_ip_proxies() {
    use reqwest::Method;
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    let (_, subnet) = network(m, "private", "10.7.0.0/24").await;

    // Security groups in Nova's shape, through the network service.
    let r = at(m, Method::POST, "/os-security-groups", Some(json!({"security_group": {"name": "web", "description": "d"}})), "2.1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sg = r.json()["security_group"].clone();
    let sg_id = sg["id"].as_str().unwrap().to_string();
    assert_eq!(sg["rules"], json!([]), "egress rules are not shown");
    for bad in [json!({"name": "", "description": "d"}), json!({"name": " ", "description": "d"}), json!({"name": "x".repeat(256), "description": "d"})] {
        let r = at(m, Method::POST, "/os-security-groups", Some(json!({"security_group": bad})), "2.1").await;
        assert_eq!(r.status, 400, "{}", r.text);
    }
    let rule = |body: Value| at(m, Method::POST, "/os-security-group-rules", Some(json!({"security_group_rule": body})), "2.1");
    let r = rule(json!({"parent_group_id": sg_id, "ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "10.0.0.0/8"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rule_id = r.json()["security_group_rule"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["security_group_rule"]["ip_range"], json!({"cidr": "10.0.0.0/8"}));
    let dup = rule(json!({"parent_group_id": sg_id, "ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "10.0.0.0/8"})).await;
    assert_eq!(dup.status, 400, "{}", dup.text);
    for (bad, want) in [
        (json!({"parent_group_id": sg_id, "ip_protocol": "tcp", "from_port": 30, "to_port": 22}), 400),
        (json!({"parent_group_id": sg_id, "ip_protocol": "bogus", "from_port": 22, "to_port": 22}), 400),
        (json!({"parent_group_id": sg_id, "ip_protocol": "tcp", "from_port": 70000, "to_port": 22}), 400),
        (json!({"parent_group_id": "not-a-uuid", "ip_protocol": "tcp", "from_port": 22, "to_port": 22}), 400),
        (json!({"parent_group_id": "3b2f0000-0000-0000-0000-000000000000", "ip_protocol": "tcp", "from_port": 22, "to_port": 22}), 404),
    ] {
        let r = rule(bad.clone()).await;
        assert_eq!(r.status, want, "{bad}: {}", r.text);
    }
    let shown = at(m, Method::GET, &format!("/os-security-groups/{sg_id}"), None, "2.1").await.json();
    assert_eq!(shown["security_group"]["rules"][0]["from_port"], 22);
    let groups = at(m, Method::GET, "/os-security-groups", None, "2.1").await.json();
    let default = groups["security_groups"].as_array().unwrap().iter().find(|g| g["name"] == "default").unwrap()["id"].clone();
    let r = at(m, Method::DELETE, &format!("/os-security-groups/{}", default.as_str().unwrap()), None, "2.1").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(at(m, Method::GET, "/os-security-groups", None, "2.36").await.status, 404, "removed at 2.36");
    assert_eq!(at(m, Method::GET, &format!("/os-security-groups/{}", "3b2f0000-0000-0000-0000-000000000000"), None, "2.1").await.status, 404);

    // A server boots with a named group; groups are added and removed on its ports.
    let r = boot(m, &img, "sg", json!({"security_groups": [{"name": "web"}]}), "2.1").await;
    let id = id_of(&r);
    assert_eq!(r.json()["server"]["security_groups"], json!([{"name": "web"}]));
    status(m, &id, "ACTIVE").await;
    let on = at(m, Method::GET, &format!("/servers/{id}/os-security-groups"), None, "2.1").await.json();
    assert_eq!(on["security_groups"][0]["name"], "web");
    let action_path = format!("/servers/{id}/action");
    let act = |body: Value, mv: &'static str| at(m, Method::POST, &action_path, Some(body), mv);
    assert_eq!(act(json!({"addSecurityGroup": {"name": "default"}}), "2.1").await.status, 202);
    let on = at(m, Method::GET, &format!("/servers/{id}/os-security-groups"), None, "2.1").await.json();
    assert_eq!(on["security_groups"].as_array().unwrap().len(), 2);
    assert_eq!(act(json!({"removeSecurityGroup": {"name": "web"}}), "2.1").await.status, 202);
    assert_eq!(act(json!({"removeSecurityGroup": {"name": "web"}}), "2.1").await.status, 400, "no longer there");
    assert_eq!(act(json!({"addSecurityGroup": {"name": "nosuch"}}), "2.1").await.status, 404);
    let s = m.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
    assert_eq!(s["security_groups"], json!([{"name": "default"}]));

    // Floating IPs: pools, allocate, associate through the server action, show, disassociate, release.
    let public = cloud.admin.get(&format!("{NET}/networks?name=public")).await.json()["networks"][0]["id"].clone();
    let router = create(m, "routers", "router", json!({"external_gateway_info": {"network_id": public}})).await;
    let rid = router["id"].as_str().unwrap();
    m.request(reqwest::Method::PUT, &format!("{NET}/routers/{rid}/add_router_interface"), Some(&json!({"subnet_id": subnet})), &[]).await;
    let pools = at(m, Method::GET, "/os-floating-ip-pools", None, "2.1").await.json();
    assert_eq!(pools["floating_ip_pools"], json!([{"name": "public"}]));
    assert_eq!(at(m, Method::POST, "/os-floating-ips", Some(json!({"pool": "nowhere"})), "2.1").await.status, 404);
    let r = at(m, Method::POST, "/os-floating-ips", Some(json!({"pool": "public"})), "2.1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let fip = r.json()["floating_ip"].clone();
    assert_eq!(fip["pool"], "public");
    assert!(fip["instance_id"].is_null());
    let address = fip["ip"].as_str().unwrap().to_string();
    let fid = fip["id"].as_str().unwrap().to_string();
    assert_eq!(act(json!({"addFloatingIp": {"address": address}}), "2.43").await.status, 202);
    let shown = at(m, Method::GET, &format!("/os-floating-ips/{fid}"), None, "2.1").await.json()["floating_ip"].clone();
    assert_eq!(shown["instance_id"], id.as_str());
    assert!(shown["fixed_ip"].as_str().unwrap().starts_with("10.7.0."));
    let s = m.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
    assert!(s["addresses"]["private"].as_array().unwrap().iter().any(|a| a["addr"] == address.as_str() && a["OS-EXT-IPS:type"] == "floating"), "{s}");
    let list = at(m, Method::GET, "/os-floating-ips", None, "2.1").await.json();
    assert_eq!(list["floating_ips"][0]["ip"], address.as_str());
    assert_eq!(act(json!({"addFloatingIp": {"address": "203.0.113.1"}}), "2.43").await.status, 404);
    assert_eq!(act(json!({"addFloatingIp": {"address": address}}), "2.44").await.status, 404, "removed at 2.44");
    assert_eq!(act(json!({"removeFloatingIp": {"address": address}}), "2.43").await.status, 202);
    assert_eq!(act(json!({"removeFloatingIp": {"address": address}}), "2.43").await.status, 409);
    assert_eq!(at(m, Method::DELETE, &format!("/os-floating-ips/{fid}"), None, "2.1").await.status, 202);
    assert_eq!(at(m, Method::GET, &format!("/os-floating-ips/{fid}"), None, "2.1").await.status, 404);
    assert_eq!(at(m, Method::GET, "/os-floating-ips", None, "2.36").await.status, 404);

    // The networks proxies.
    let nets = at(m, Method::GET, "/os-tenant-networks", None, "2.1").await.json();
    assert_eq!(nets["networks"][0]["label"], "private");
    assert_eq!(nets["networks"][0]["cidr"], "10.7.0.0/24");
    assert_eq!(at(m, Method::DELETE, &format!("/os-security-group-rules/{rule_id}"), None, "2.1").await.status, 202);
    assert_eq!(at(m, Method::DELETE, &format!("/os-security-group-rules/{rule_id}"), None, "2.1").await.status, 404);
    cloud.shutdown().await;
}

#[tokio::test]
async fn auto_allocated_network_for_a_project_without_one() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    let project = m.get("/compute/v2.1/servers").await; // a token check; the project comes from the network API
    assert_eq!(project.status, 200);

    let first = id_of(&boot(m, &img, "auto-1", json!({"networks": "auto"}), "2.37").await);
    let s = status(m, &first, "ACTIVE").await;
    let addrs = s["addresses"]["auto_allocated_network"].as_array().expect("an auto-allocated network").clone();
    assert!(addrs[0]["addr"].as_str().unwrap().starts_with("10.0."), "{s}");
    let tenant = s["tenant_id"].as_str().unwrap().to_string();
    let topo = m.get(&format!("{NET}/auto-allocated-topology/{tenant}")).await;
    assert_eq!(topo.status, 200, "{}", topo.text);
    let net_id = topo.json()["auto_allocated_topology"]["id"].clone();
    let dry = m.get(&format!("{NET}/auto-allocated-topology/{tenant}?fields=dry-run")).await;
    assert_eq!(dry.json()["auto_allocated_topology"]["dry-run"], "pass");
    // The router routes it to the default external network.
    let routers = m.get(&format!("{NET}/routers?name=auto_allocated_router")).await.json()["routers"].clone();
    assert!(routers[0]["external_gateway_info"]["network_id"].is_string(), "{routers}");

    // The next boot finds the one network and uses it.
    let second = id_of(&boot(m, &img, "auto-2", json!({"networks": "auto"}), "2.37").await);
    status(m, &second, "ACTIVE").await;
    let ports = cloud.admin.get(&format!("{NET}/ports?device_id={second}")).await.json()["ports"].clone();
    assert_eq!(ports[0]["network_id"], net_id);
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_build_the_network_cannot_serve_ends_in_error_without_ports() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    // A /30: one address besides the gateway.
    let (net, _) = network(m, "tiny", "10.6.0.0/30").await;
    let first = id_of(&boot(m, &img, "fits", json!({"networks": [{"uuid": net}]}), "2.37").await);
    status(m, &first, "ACTIVE").await;
    let second = id_of(&boot(m, &img, "no-room", json!({"networks": [{"uuid": net}]}), "2.37").await);
    let s = status(m, &second, "ERROR").await;
    assert!(s["fault"]["message"].as_str().unwrap().contains("No more"), "{s}");
    assert_eq!(s["addresses"], json!({}));
    let ports = cloud.admin.get(&format!("{NET}/ports?device_id={second}")).await.json()["ports"].clone();
    assert_eq!(ports, json!([]));
    // Deleting the failed server is clean; the placement claim was given back.
    assert_eq!(m.delete(&format!("/compute/v2.1/servers/{second}")).await.status, 204);
    gone(m, &second).await;
    let allocs = cloud.admin.get(&format!("/placement/allocations/{second}")).await;
    assert_eq!(allocs.json()["allocations"], json!({}));
    cloud.shutdown().await;
}

#[tokio::test]
async fn interfaces_attach_and_detach() {
    use reqwest::Method;
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    let (net, _) = network(m, "first", "10.5.0.0/24").await;
    let (net2, _) = network(m, "second", "10.5.1.0/24").await;
    let id = id_of(&boot(m, &img, "nics", json!({"networks": [{"uuid": net}]}), "2.37").await);
    status(m, &id, "ACTIVE").await;
    let path = format!("/servers/{id}/os-interface");
    let list = at(m, Method::GET, &path, None, "2.70").await.json()["interfaceAttachments"].clone();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["net_id"], net.as_str());

    let r = at(m, Method::POST, &path, Some(json!({"interfaceAttachment": {"net_id": net2, "tag": "data"}})), "2.70").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let att = r.json()["interfaceAttachment"].clone();
    assert_eq!(att["tag"], "data");
    let pid = att["port_id"].as_str().unwrap().to_string();
    assert!(att["fixed_ips"][0]["ip_address"].as_str().unwrap().starts_with("10.5.1."));
    let s = m.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
    assert!(s["addresses"]["second"].is_array(), "{s}");
    let shown = at(m, Method::GET, &format!("{path}/{pid}"), None, "2.70").await;
    assert_eq!(shown.json()["interfaceAttachment"]["mac_addr"], att["mac_addr"]);
    // The agent plugged it into the guest before the API answered (the fake guest logs it on its console).
    let console = |c: &test_utils::Client| {
        let c = c.clone();
        let id = id.clone();
        async move {
            let r = c.post(&format!("/compute/v2.1/servers/{id}/action"), &json!({"os-getConsoleOutput": {}})).await;
            r.json()["output"].as_str().unwrap_or_default().to_string()
        }
    };
    let mac = att["mac_addr"].as_str().unwrap().to_string();
    assert!(console(m).await.contains(&format!("virtio_net: {mac} attached ({pid})")), "{}", console(m).await);

    let own = create(m, "ports", "port", json!({"network_id": net2})).await;
    let own_id = own["id"].as_str().unwrap().to_string();
    let r = at(m, Method::POST, &path, Some(json!({"interfaceAttachment": {"port_id": own_id}})), "2.1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(at(m, Method::GET, &path, None, "2.1").await.json()["interfaceAttachments"].as_array().unwrap().len(), 3);

    let both = json!({"interfaceAttachment": {"port_id": own_id, "net_id": net2}});
    assert_eq!(at(m, Method::POST, &path, Some(both), "2.1").await.status, 400);
    let missing = json!({"interfaceAttachment": {"port_id": "3b2f0000-0000-0000-0000-000000000000"}});
    assert_eq!(at(m, Method::POST, &path, Some(missing), "2.1").await.status, 404);
    let used = json!({"interfaceAttachment": {"port_id": own_id}});
    assert_eq!(at(m, Method::POST, &path, Some(used), "2.1").await.status, 409);

    // Detach: the port compute made is deleted, the user's is unbound and kept.
    assert_eq!(at(m, Method::DELETE, &format!("{path}/{pid}"), None, "2.1").await.status, 202);
    assert_eq!(m.get(&format!("{NET}/ports/{pid}")).await.status, 404);
    assert!(console(m).await.contains(&format!("virtio_net: {pid} detached")));
    assert_eq!(at(m, Method::DELETE, &format!("{path}/{own_id}"), None, "2.1").await.status, 202);
    assert_eq!(m.get(&format!("{NET}/ports/{own_id}")).await.json()["port"]["device_id"], "");
    assert_eq!(at(m, Method::DELETE, &format!("{path}/{own_id}"), None, "2.1").await.status, 404);
    let s = m.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
    assert!(s["addresses"].get("second").is_none(), "{s}");
    cloud.shutdown().await;
}

#[tokio::test]
async fn unknown_status_filters_match_nothing_before_2_38() {
    use reqwest::Method;
    let cloud = TestCloud::start().await;
    let r = at(&cloud.admin, Method::GET, "/servers/detail?status=invalid_status", None, "2.37").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["servers"], json!([]));
    let r = at(&cloud.admin, Method::GET, "/servers/detail?status=invalid_status", None, "2.38").await;
    assert_eq!(r.status, 400);
    cloud.shutdown().await;
}

/// A port bound to a host with a network agent is `DOWN` until the agent reports its device plugged
/// (`update_device_up`, over the agents' bus contract as a network agent sends it); then the network service sets
/// it `ACTIVE` and sends compute `network-vif-plugged` through `os-server-external-events`, which ends the build's
/// wait: the server goes ACTIVE only then. A report from another host changes nothing; a device gone makes the
/// port `DOWN` again.
#[tokio::test]
async fn a_build_waits_for_network_vif_plugged_of_ports_a_network_agent_plugs() {
    use network_rpc::{AgentReport, GetHostState, PLUGIN_TOPIC, UpdateDeviceDown, UpdateDeviceUp};
    const T: std::time::Duration = std::time::Duration::from_secs(10);
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let host = cloud.running.agent.as_ref().unwrap().host().to_string();
    let bus = cloud.running.cloud.bus.clone();
    let plugin = bus::Target::topic(PLUGIN_TOPIC);
    // the host's network agent reports in
    let report = GetHostState { host: host.clone(), report: AgentReport::default() };
    bus.call(&plugin, &report, T).await.unwrap();
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    let (net, _) = network(m, "plugged", "10.19.0.0/24").await;

    let id = id_of(&boot(m, &img, "waits", json!({"networks": [{"uuid": net}]}), "2.1").await);
    let port_of = || async {
        let ports = cloud.admin.get(&format!("{NET}/ports?device_id={id}")).await.json()["ports"].clone();
        ports.as_array().and_then(|p| p.first().cloned())
    };
    let mut port = None;
    for _ in 0..200 {
        port = port_of().await;
        if port.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let port = port.expect("the server's port");
    assert_eq!(port["status"], "DOWN", "{port}");
    assert_eq!(port["binding:vif_type"], "bridge", "{port}");
    let port_id = port["id"].as_str().unwrap().to_string();
    // the build waits in spawning
    let s = wait_for(m, &id, |s| s["OS-EXT-STS:task_state"] == "spawning").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let s2 = cloud.member.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
    assert_eq!((s2["status"].as_str(), s2["OS-EXT-STS:task_state"].as_str()), (Some("BUILD"), Some("spawning")), "{s} {s2}");

    // a report from a host the port is not bound to changes nothing
    bus.call(&plugin, &UpdateDeviceUp { port_id: port_id.clone(), host: "elsewhere".into() }, T).await.unwrap();
    assert_eq!(port_of().await.unwrap()["status"], "DOWN");
    // the agent plugs it: the port goes ACTIVE, compute hears of it, the server goes ACTIVE
    bus.call(&plugin, &UpdateDeviceUp { port_id: port_id.clone(), host: host.clone() }, T).await.unwrap();
    assert_eq!(port_of().await.unwrap()["status"], "ACTIVE");
    let s = status(m, &id, "ACTIVE").await;
    assert_eq!(s["addresses"]["plugged"].as_array().map(Vec::len), Some(1), "{s}");
    let events = cloud.admin.get(&format!("/compute/v2.1/servers/{id}/os-instance-actions")).await;
    assert_eq!(events.status, 200);
    // the device goes: DOWN (compute hears network-vif-unplugged; the server stays ACTIVE)
    bus.call(&plugin, &UpdateDeviceDown { port_id: port_id.clone(), host: host.clone() }, T).await.unwrap();
    assert_eq!(port_of().await.unwrap()["status"], "DOWN");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(cloud.member.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"]["status"], "ACTIVE");

    // a server deleted while its build waits goes at once (its wait ends), with its port
    let id = id_of(&boot(m, &img, "deleted", json!({"networks": [{"uuid": net}]}), "2.1").await);
    wait_for(m, &id, |s| s["OS-EXT-STS:task_state"] == "spawning").await;
    let port_id = port_of_server(&cloud, &id).await;
    let started = std::time::Instant::now();
    assert_eq!(m.delete(&format!("/compute/v2.1/servers/{id}")).await.status, 204);
    gone(m, &id).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the delete waited for the build: {:?}", started.elapsed());
    assert_eq!(cloud.admin.get(&format!("{NET}/ports/{port_id}")).await.status, 404);

    // without an agent on the host, ports are ACTIVE at binding and builds do not wait (as before)
    let (other, _) = network(m, "unwired", "10.20.0.0/24").await;
    let r = cloud.admin.post(&format!("{NET}/ports"), &json!({"port": {"network_id": other, "binding:host_id": "no-agent-here"}})).await;
    assert_eq!(r.json()["port"]["status"], "ACTIVE", "{}", r.text);
    cloud.shutdown().await;
}

async fn port_of_server(cloud: &TestCloud, id: &str) -> String {
    let ports = cloud.admin.get(&format!("{NET}/ports?device_id={id}")).await.json()["ports"].clone();
    ports[0]["id"].as_str().expect("the server's port").to_string()
}

/// With `vif_plugging_is_fatal` off, a port nobody reports plugged only delays the build by
/// `vif_plugging_timeout`: the server goes ACTIVE with its port still `DOWN`.
#[tokio::test]
async fn without_vif_plugging_is_fatal_a_build_goes_on_after_the_timeout() {
    use network_rpc::{AgentReport, GetHostState, PLUGIN_TOPIC};
    let cloud = TestCloud::start_with(|c| {
        c.compute_agent.vif_plugging_timeout = 1;
        c.compute_agent.vif_plugging_is_fatal = false;
    })
    .await;
    wait_agent(&cloud).await;
    let host = cloud.running.agent.as_ref().unwrap().host().to_string();
    let bus = cloud.running.cloud.bus.clone();
    let report = GetHostState { host, report: AgentReport::default() };
    bus.call(&bus::Target::topic(PLUGIN_TOPIC), &report, std::time::Duration::from_secs(10)).await.unwrap();
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    let (net, _) = network(m, "unplugged", "10.21.0.0/24").await;
    let started = std::time::Instant::now();
    let id = id_of(&boot(m, &img, "goes-on", json!({"networks": [{"uuid": net}]}), "2.1").await);
    status(m, &id, "ACTIVE").await;
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "ACTIVE before the timeout: {:?}", started.elapsed());
    let ports = cloud.admin.get(&format!("{NET}/ports?device_id={id}")).await.json()["ports"].clone();
    assert_eq!(ports[0]["status"], "DOWN", "{ports}");
    cloud.shutdown().await;
}
