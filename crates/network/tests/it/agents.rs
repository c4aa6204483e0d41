//! The service's side of the network agents' bus contract: host state, DHCP ports and change notices.

use std::time::Duration;

use bus::{Dispatcher, RemoteError, Target};
use network_rpc::{
    AGENT_TOPIC, AgentReport, CAP_L3, GetDhcpPort, GetHostState, HostState, NetworkChanged, PLUGIN_TOPIC, ReleaseDhcpPort, RouterChanged,
    SecurityGroupChanged,
};
use serde_json::json;
use test_utils::TestCloud;

use crate::{create, delete, get, put};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn agents_get_their_hosts_state_dhcp_ports_and_change_notices() {
    let cloud = TestCloud::start_without_agent().await;
    let bus = cloud.running.cloud.bus.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = bus
        .serve(
            AGENT_TOPIC,
            "h1",
            Dispatcher::new().on(move |m: NetworkChanged| {
                let _ = tx.send(m.network_id);
                async { Ok::<_, RemoteError>(()) }
            }),
        )
        .await
        .unwrap();
    let admin = &cloud.admin;
    let net = create(admin, "networks", "network", json!({"name": "n"})).await;
    let net_id = net["id"].as_str().unwrap().to_string();
    let notice = tokio::time::timeout(T, rx.recv()).await.expect("a notice").unwrap();
    assert_eq!(notice, net_id);
    let subnet = create(admin, "subnets", "subnet", json!({"network_id": net_id, "cidr": "10.5.0.0/24", "ip_version": 4})).await;
    let p1 = create(admin, "ports", "port", json!({"network_id": net_id, "binding:host_id": "h1"})).await;
    let p2 = create(admin, "ports", "port", json!({"network_id": net_id, "binding:host_id": "h2"})).await;
    // an unbound port elsewhere makes no network of h1's
    let other = create(admin, "networks", "network", json!({"name": "other"})).await;
    create(admin, "ports", "port", json!({"network_id": other["id"]})).await;

    let call = |host: &str, tunnel: Option<&str>| {
        let m = GetHostState { host: host.into(), report: AgentReport { tunnel_ip: tunnel.map(String::from), interface_mappings: vec![], capabilities: vec![] } };
        let bus = bus.clone();
        async move { bus.call(&Target::topic(PLUGIN_TOPIC), &m, T).await.unwrap() }
    };
    call("h2", Some("192.0.2.2")).await;
    let state = call("h1", Some("192.0.2.1")).await;
    assert_eq!(state.networks.len(), 1);
    let n = &state.networks[0];
    assert_eq!(n.id, net_id);
    assert_eq!((n.segment.network_type.as_str(), n.mtu), ("vxlan", 1450));
    assert!(n.segment.segmentation_id.is_some());
    assert_eq!(n.subnets.len(), 1);
    assert_eq!(n.subnets[0].gateway_ip.as_deref(), Some("10.5.0.1"));
    assert_eq!(n.ports.len(), 2);
    // the metadata proxy names an instance's project by its port's
    assert!(n.ports.iter().all(|p| !p.project_id.is_empty() && p.project_id == str_of_json(&p1, "project_id")), "{:?}", n.ports);
    assert_eq!(n.peers.len(), 1);
    assert_eq!((n.peers[0].host.as_str(), n.peers[0].tunnel_ip.as_str()), ("h2", "192.0.2.2"));
    assert_eq!(n.peers[0].macs, vec![p2["mac_address"].as_str().unwrap().to_string()]);

    // the DHCP port: made once, bound to the host, an address on each DHCP subnet
    let ask = GetDhcpPort { network_id: net_id.clone(), host: "h1".into() };
    let dhcp = bus.call(&Target::topic(PLUGIN_TOPIC), &ask, T).await.unwrap();
    assert_eq!((dhcp.device_owner.as_str(), dhcp.host.as_str()), ("network:dhcp", "h1"));
    assert_eq!(dhcp.fixed_ips.len(), 1);
    assert_eq!(bus.call(&Target::topic(PLUGIN_TOPIC), &ask, T).await.unwrap(), dhcp);
    let s2 = create(admin, "subnets", "subnet", json!({"network_id": net_id, "cidr": "10.6.0.0/24", "ip_version": 4})).await;
    create(admin, "subnets", "subnet", json!({"network_id": net_id, "cidr": "10.7.0.0/24", "ip_version": 4, "enable_dhcp": false})).await;
    let again = bus.call(&Target::topic(PLUGIN_TOPIC), &ask, T).await.unwrap();
    assert_eq!(again.id, dhcp.id);
    let subnets: Vec<&str> = again.fixed_ips.iter().map(|f| f.subnet_id.as_str()).collect();
    assert_eq!(subnets, vec![subnet["id"].as_str().unwrap(), s2["id"].as_str().unwrap()]);
    // the DHCP port alone does not make a network the host's
    let state = call("h1", Some("192.0.2.1")).await;
    assert_eq!(state.networks[0].ports.len(), 3);
    let r = delete(admin, &format!("/ports/{}", p1["id"].as_str().unwrap())).await;
    assert_eq!(r.status, 204);
    assert!(call("h1", Some("192.0.2.1")).await.networks.is_empty());
    // the agents are listed with their tunnel endpoints
    let agents = cloud.running.cloud.network.as_ref().unwrap().store().resource_list("agent").await.unwrap();
    assert_eq!(agents.len(), 2);
    assert!(agents.iter().any(|a| a["host"] == "h1" && a["configurations"]["tunneling_ip"] == "192.0.2.1"));

    let release = ReleaseDhcpPort { network_id: net_id.clone(), host: "h1".into() };
    bus.call(&Target::topic(PLUGIN_TOPIC), &release, T).await.unwrap();
    let r = get(admin, &format!("/ports?network_id={net_id}&device_owner=network:dhcp")).await;
    assert_eq!(r.json()["ports"], json!([]));

    // updates and deletes are notices too
    while rx.try_recv().is_ok() {}
    let r = put(admin, &format!("/ports/{}", p2["id"].as_str().unwrap()), &json!({"port": {"name": "x"}})).await;
    assert_eq!(r.status, 200);
    assert_eq!(tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap(), net_id);
    server.stop().await;
    cloud.shutdown().await;
}

fn str_of_json(v: &serde_json::Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn routers_go_to_an_l3_host_with_their_networks_and_changes_are_noticed() {
    let cloud = TestCloud::start_without_agent().await;
    let bus = cloud.running.cloud.bus.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = bus
        .serve(
            AGENT_TOPIC,
            "l3a",
            Dispatcher::new().on(move |m: RouterChanged| {
                let _ = tx.send(m.router_id);
                async { Ok::<_, RemoteError>(()) }
            }),
        )
        .await
        .unwrap();
    let state = |host: &'static str, l3: bool| {
        let caps = if l3 { vec![CAP_L3.to_string()] } else { vec![] };
        let m = GetHostState { host: host.into(), report: AgentReport { tunnel_ip: Some(format!("192.0.2.{}", host.len())), interface_mappings: vec![], capabilities: caps } };
        let bus = bus.clone();
        async move { bus.call(&Target::topic(PLUGIN_TOPIC), &m, T).await.unwrap() }
    };
    // one host with the l3 capability, one without
    state("l3a", true).await;
    assert!(state("compute", false).await.routers.is_empty());
    let admin = &cloud.admin;
    let ext = create(admin, "networks", "network", json!({"name": "ext", "router:external": true})).await;
    let ext_id = ext["id"].as_str().unwrap().to_string();
    create(admin, "subnets", "subnet", json!({"network_id": ext_id, "cidr": "172.30.0.0/24", "ip_version": 4, "gateway_ip": "172.30.0.1"})).await;
    let net = create(admin, "networks", "network", json!({"name": "in"})).await;
    let net_id = net["id"].as_str().unwrap().to_string();
    let subnet = create(admin, "subnets", "subnet", json!({"network_id": net_id, "cidr": "10.31.0.0/24", "ip_version": 4})).await;
    let vm = create(admin, "ports", "port", json!({"network_id": net_id, "binding:host_id": "compute"})).await;
    let router = create(admin, "routers", "router", json!({"name": "r", "external_gateway_info": {"network_id": ext_id}})).await;
    let rid = router["id"].as_str().unwrap().to_string();
    assert_eq!(tokio::time::timeout(T, rx.recv()).await.expect("a notice").unwrap(), rid);
    let r = put(admin, &format!("/routers/{rid}/add_router_interface"), &json!({"subnet_id": subnet["id"]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(tokio::time::timeout(T, rx.recv()).await.expect("a notice").unwrap(), rid);
    let r = put(admin, &format!("/routers/{rid}"), &json!({"router": {"routes": [{"destination": "10.99.0.0/16", "nexthop": "10.31.0.254"}]}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let fip = create(admin, "floatingips", "floatingip", json!({"floating_network_id": ext_id, "port_id": vm["id"]})).await;
    while rx.try_recv().is_ok() {}

    let s: HostState = state("l3a", true).await;
    assert_eq!(s.routers.len(), 1);
    let r = &s.routers[0];
    assert_eq!((r.id.as_str(), r.admin_state_up, r.enable_snat), (rid.as_str(), true, true));
    assert_eq!(r.interfaces.len(), 1);
    let itf = &r.interfaces[0];
    assert_eq!((itf.network_id.as_str(), itf.addresses[0].ip_address.as_str(), itf.addresses[0].prefixlen), (net_id.as_str(), "10.31.0.1", 24));
    let gw = r.gateway.as_ref().expect("a gateway");
    assert_eq!(gw.network_id, ext_id);
    assert_eq!(gw.addresses[0].gateway_ip.as_deref(), Some("172.30.0.1"));
    assert_eq!(gw.addresses[0].ip_address, router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"].as_str().unwrap());
    assert_eq!(r.routes.len(), 1);
    assert_eq!(r.floating_ips.len(), 1);
    assert_eq!(r.floating_ips[0].floating_ip_address, fip["floating_ip_address"].as_str().unwrap());
    assert_eq!(r.floating_ips[0].fixed_ip_address, vm["fixed_ips"][0]["ip_address"].as_str().unwrap());
    // both of the router's networks are the host's, its ports bound there; the compute host sees the router
    // host as a tunnel peer of the tenant network
    let mut nets: Vec<&str> = s.networks.iter().map(|n| n.id.as_str()).collect();
    nets.sort();
    let mut want = vec![ext_id.as_str(), net_id.as_str()];
    want.sort();
    assert_eq!(nets, want);
    let inside = s.networks.iter().find(|n| n.id == net_id).unwrap();
    assert!(inside.ports.iter().any(|p| p.device_owner == "network:router_interface" && p.host == "l3a"));
    let c = state("compute", false).await;
    assert!(c.routers.is_empty());
    assert_eq!(c.networks.len(), 1);
    assert_eq!(c.networks[0].peers.iter().map(|p| p.host.as_str()).collect::<Vec<_>>(), vec!["l3a"]);
    // the L3 agent is listed
    let agents = cloud.running.cloud.network.as_ref().unwrap().store().resource_list("agent").await.unwrap();
    assert!(agents.iter().any(|a| a["host"] == "l3a" && a["agent_type"] == "L3 agent"));
    assert!(!agents.iter().any(|a| a["host"] == "compute" && a["agent_type"] == "L3 agent"));
    // a host that stops reporting l3 gives its routers up (here: to no one), and takes them back
    assert!(state("l3a", false).await.routers.is_empty());
    assert!(state("compute", false).await.networks.iter().all(|n| n.peers.is_empty()));
    assert_eq!(state("l3a", true).await.routers.len(), 1);

    // a disassociated floating IP, a router set down and a deleted router are noticed and leave the host's state
    let r = put(admin, &format!("/floatingips/{}", fip["id"].as_str().unwrap()), &json!({"floatingip": {"port_id": null}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(tokio::time::timeout(T, rx.recv()).await.expect("a notice").unwrap(), rid);
    assert!(state("l3a", true).await.routers[0].floating_ips.is_empty());
    let r = put(admin, &format!("/routers/{rid}"), &json!({"router": {"admin_state_up": false}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = state("l3a", true).await;
    assert!(!s.routers[0].admin_state_up);
    assert!(s.networks.is_empty(), "a router that is down needs no networks");
    let r = put(admin, &format!("/routers/{rid}"), &json!({"router": {"routes": []}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = put(admin, &format!("/routers/{rid}/remove_router_interface"), &json!({"subnet_id": subnet["id"]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = delete(admin, &format!("/floatingips/{}", fip["id"].as_str().unwrap())).await;
    assert_eq!(r.status, 204, "{}", r.text);
    while rx.try_recv().is_ok() {}
    let r = delete(admin, &format!("/routers/{rid}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(tokio::time::timeout(T, rx.recv()).await.expect("a notice").unwrap(), rid);
    assert!(state("l3a", true).await.routers.is_empty());
    server.stop().await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn agents_get_their_ports_security_groups_with_remote_members_and_group_notices() {
    let cloud = TestCloud::start_without_agent().await;
    let bus = cloud.running.cloud.bus.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = bus
        .serve(
            AGENT_TOPIC,
            "sg-h1",
            Dispatcher::new().on(move |m: SecurityGroupChanged| {
                let _ = tx.send(m.security_group_id);
                async { Ok::<_, RemoteError>(()) }
            }),
        )
        .await
        .unwrap();
    let admin = &cloud.admin;
    let net = create(admin, "networks", "network", json!({"name": "n"})).await;
    let net_id = net["id"].as_str().unwrap().to_string();
    create(admin, "subnets", "subnet", json!({"network_id": net_id, "cidr": "10.8.0.0/24", "ip_version": 4})).await;
    let web = create(admin, "security-groups", "security_group", json!({"name": "web"})).await;
    let web_id = web["id"].as_str().unwrap().to_string();
    let clients = create(admin, "security-groups", "security_group", json!({"name": "clients"})).await;
    let clients_id = clients["id"].as_str().unwrap().to_string();
    let rule = json!({"security_group_id": web_id, "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
        "port_range_min": 80, "port_range_max": 80, "remote_group_id": clients_id});
    let rule = create(admin, "security-group-rules", "security_group_rule", rule).await;
    assert_eq!(tokio::time::timeout(T, rx.recv()).await.expect("a notice").unwrap(), web_id);

    let p1 = create(admin, "ports", "port", json!({"network_id": net_id, "binding:host_id": "sg-h1", "security_groups": [web_id],
        "allowed_address_pairs": [{"ip_address": "10.8.1.0/24"}]}))
    .await;
    // a member of the remote group on another host and network
    let other = create(admin, "networks", "network", json!({"name": "other"})).await;
    create(admin, "subnets", "subnet", json!({"network_id": other["id"], "cidr": "10.9.0.0/24", "ip_version": 4})).await;
    let p2 = create(admin, "ports", "port", json!({"network_id": other["id"], "binding:host_id": "sg-h2", "security_groups": [clients_id],
        "allowed_address_pairs": [{"ip_address": "10.9.5.5", "mac_address": "fa:16:3e:aa:bb:cc"}]}))
    .await;
    let open = create(admin, "ports", "port", json!({"network_id": net_id, "binding:host_id": "sg-h1", "port_security_enabled": false})).await;

    let m = GetHostState { host: "sg-h1".into(), report: AgentReport::default() };
    let state = bus.call(&Target::topic(PLUGIN_TOPIC), &m, T).await.unwrap();
    let port = |id: &serde_json::Value| state.networks[0].ports.iter().find(|p| p.id == id.as_str().unwrap()).unwrap().clone();
    let mine = port(&p1["id"]);
    assert!(mine.port_security_enabled);
    assert_eq!(mine.security_groups, vec![web_id.clone()]);
    assert_eq!(mine.allowed_address_pairs[0].ip_address, "10.8.1.0/24");
    assert_eq!(mine.allowed_address_pairs[0].mac_address, p1["mac_address"].as_str().unwrap());
    let unfiltered = port(&open["id"]);
    assert!(!unfiltered.port_security_enabled && unfiltered.security_groups.is_empty());
    let ids: Vec<&str> = state.security_groups.iter().map(|g| g.id.as_str()).collect();
    let mut want = vec![web_id.as_str(), clients_id.as_str()];
    want.sort();
    assert_eq!(ids, want, "the port's group and the group its rule names");
    let g = state.security_groups.iter().find(|g| g.id == web_id).unwrap();
    assert!(g.stateful);
    let r = g.rules.iter().find(|r| r.id == rule["id"].as_str().unwrap()).unwrap();
    assert_eq!((r.direction.as_str(), r.ethertype.as_str(), r.protocol.as_deref()), ("ingress", "IPv4", Some("tcp")));
    assert_eq!((r.port_range_min, r.port_range_max, r.remote_group_id.as_deref()), (Some(80), Some(80), Some(clients_id.as_str())));
    assert_eq!(g.rules.iter().filter(|r| r.direction == "egress").count(), 2);
    let c = state.security_groups.iter().find(|g| g.id == clients_id).unwrap();
    assert!(c.rules.is_empty(), "a group needed only as a remote group comes without rules");
    let p2_ip = p2["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    let mut members = vec![p2_ip, "10.9.5.5".to_string()];
    members.sort();
    assert_eq!(c.members, members);

    // deleting the rule and the group are notices too
    while rx.try_recv().is_ok() {}
    let r = delete(admin, &format!("/security-group-rules/{}", rule["id"].as_str().unwrap())).await;
    assert_eq!(r.status, 204);
    assert_eq!(tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap(), web_id);
    let r = delete(admin, &format!("/ports/{}", p2["id"].as_str().unwrap())).await;
    assert_eq!(r.status, 204);
    let r = delete(admin, &format!("/security-groups/{clients_id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap(), clients_id);
    server.stop().await;
    cloud.shutdown().await;
}

#[tokio::test]
async fn the_agents_api_lists_shows_updates_and_deletes_what_agents_report() {
    let cloud = TestCloud::start_without_agent().await;
    let bus = cloud.running.cloud.bus.clone();
    let report = |host: &str, caps: Vec<String>| {
        let m = GetHostState {
            host: host.into(),
            report: AgentReport { tunnel_ip: Some("192.0.2.9".into()), interface_mappings: vec![], capabilities: caps },
        };
        let bus = bus.clone();
        async move { bus.call(&Target::topic(PLUGIN_TOPIC), &m, T).await.unwrap() }
    };
    report("ha", vec![CAP_L3.into()]).await;
    report("hb", vec![]).await;

    let agents = get(&cloud.admin, "/agents").await.json()["agents"].as_array().unwrap().clone();
    let mut rows: Vec<(String, String)> =
        agents.iter().map(|a| (a["host"].as_str().unwrap().into(), a["agent_type"].as_str().unwrap().into())).collect();
    rows.sort();
    assert_eq!(rows, [("ha".into(), "L3 agent".into()), ("ha".into(), "Linux bridge agent".into()), ("hb".into(), "Linux bridge agent".into())]);
    assert!(agents.iter().all(|a| a["alive"] == true && a["admin_state_up"] == true), "{agents:?}");
    let bridge = agents.iter().find(|a| a["host"] == "hb").unwrap();
    assert_eq!(bridge["configurations"]["tunneling_ip"], "192.0.2.9");
    let filtered = get(&cloud.admin, "/agents?agent_type=L3%20agent").await.json()["agents"].as_array().unwrap().len();
    assert_eq!(filtered, 1);
    // Agents have no owner: others see none, and none by id.
    assert_eq!(get(&cloud.member, "/agents").await.json()["agents"], json!([]));
    let path = format!("/agents/{}", bridge["id"].as_str().unwrap());
    assert_eq!(get(&cloud.member, &path).await.status, 404);
    assert_eq!(get(&cloud.admin, &path).await.json()["agent"]["host"], "hb");

    let updated = put(&cloud.admin, &path, &json!({"agent": {"description": "rack 4", "admin_state_up": false}})).await.json();
    assert_eq!((updated["agent"]["description"].clone(), updated["agent"]["admin_state_up"].clone()), (json!("rack 4"), json!(false)));
    let r = put(&cloud.admin, &path, &json!({"agent": {"host": "elsewhere"}})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(put(&cloud.member, &path, &json!({"agent": {"description": "x"}})).await.status, 404);

    // A deleted agent's record goes; the agent records itself again on its next report.
    assert_eq!(delete(&cloud.admin, &path).await.status, 204);
    assert_eq!(get(&cloud.admin, &path).await.status, 404);
    report("hb", vec![]).await;
    let hosts = get(&cloud.admin, "/agents?agent_type=Linux%20bridge%20agent&fields=host").await.json();
    assert_eq!(hosts["agents"].as_array().unwrap().len(), 2, "{hosts}");
    assert!(get(&cloud.admin, "/extensions").await.text.contains("\"alias\":\"agent\""));
    cloud.shutdown().await;
}
