//! The service's side of the network agents' bus contract: host state, DHCP ports and change notices.

use std::time::Duration;

use bus::{Dispatcher, RemoteError, Target};
use network_rpc::{AGENT_TOPIC, AgentReport, GetDhcpPort, GetHostState, NetworkChanged, PLUGIN_TOPIC, ReleaseDhcpPort};
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
