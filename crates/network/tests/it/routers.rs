//! Routers and floating IPs over HTTP.

use serde_json::{Value, json};
use test_utils::TestCloud;

use crate::{create, delete, error_type, get, net_with_subnet, post, put};

async fn public_id(cloud: &TestCloud) -> String {
    let r = get(&cloud.member, "/networks?router:external=True").await;
    r.json()["networks"][0]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn routers_gateways_interfaces_and_routes() {
    let cloud = TestCloud::start().await;
    let public = public_id(&cloud).await;
    let (net, sub) = net_with_subnet(&cloud.member, "10.40.0.0/24").await;
    let router = create(&cloud.member, "routers", "router", json!({"name": "r", "external_gateway_info": {"network_id": public}})).await;
    let rid = router["id"].as_str().unwrap().to_string();
    let gw = &router["external_gateway_info"];
    assert_eq!(gw["enable_snat"], true);
    assert!(gw["external_fixed_ips"][0]["ip_address"].as_str().unwrap().starts_with("172.24.4."));
    // SNAT is the admin's to choose
    let r = put(&cloud.member, &format!("/routers/{rid}"), &json!({"router": {"external_gateway_info": {"network_id": public, "enable_snat": false}}})).await;
    assert_eq!(r.status, 403);
    // a gateway needs an external network
    let r = put(&cloud.member, &format!("/routers/{rid}"), &json!({"router": {"external_gateway_info": {"network_id": net}}})).await;
    assert_eq!(r.status, 400);
    let r = put(&cloud.member, &format!("/routers/{rid}"), &json!({"router": {"external_gateway_info": {"network_id": "nope"}}})).await;
    assert_eq!(r.status, 404);
    let r = put(&cloud.member, &format!("/routers/{rid}/add_router_interface"), &json!({"subnet_id": sub})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let port_id = r.json()["port_id"].as_str().unwrap().to_string();
    let port = get(&cloud.member, &format!("/ports/{port_id}")).await.json()["port"].clone();
    assert_eq!(port["fixed_ips"][0]["ip_address"], "10.40.0.1");
    assert_eq!(port["device_owner"], "network:router_interface");
    let r = get(&cloud.member, &format!("/ports?device_id={rid}&device_owner=network:router_interface")).await;
    assert_eq!(r.json()["ports"].as_array().unwrap().len(), 1);
    // the same subnet twice, or an overlapping one, is refused
    let r = put(&cloud.member, &format!("/routers/{rid}/add_router_interface"), &json!({"subnet_id": sub})).await;
    assert_eq!(r.status, 400);
    let (_net2, sub2) = net_with_subnet(&cloud.member, "10.40.0.0/25").await;
    let r = put(&cloud.member, &format!("/routers/{rid}/add_router_interface"), &json!({"subnet_id": sub2})).await;
    assert_eq!(r.status, 400);
    // router ports go through the router API, and a router with interfaces stays
    assert_eq!(error_type(&delete(&cloud.member, &format!("/ports/{port_id}")).await), "L3PortInUse");
    assert_eq!(delete(&cloud.member, &format!("/routers/{rid}")).await.status, 409);
    // static routes need a connected next hop; an interface a route needs stays
    let r = put(&cloud.member, &format!("/routers/{rid}"), &json!({"router": {"routes": [{"destination": "10.99.0.0/16", "nexthop": "10.77.0.5"}]}})).await;
    assert_eq!(r.status, 400);
    let r = put(&cloud.member, &format!("/routers/{rid}"), &json!({"router": {"routes": [{"destination": "10.99.0.0/16", "nexthop": "10.40.0.5"}]}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = put(&cloud.member, &format!("/routers/{rid}/remove_router_interface"), &json!({"subnet_id": sub})).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (409, "RouterInterfaceInUseByRoute"));
    put(&cloud.member, &format!("/routers/{rid}"), &json!({"router": {"routes": []}})).await;
    let r = put(&cloud.member, &format!("/routers/{rid}/remove_router_interface"), &json!({"port_id": port_id})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = put(&cloud.member, &format!("/routers/{rid}/remove_router_interface"), &json!({"subnet_id": sub})).await;
    assert_eq!(r.status, 404);
    // unset the gateway, delete
    let r = put(&cloud.member, &format!("/routers/{rid}"), &json!({"router": {"external_gateway_info": {}}})).await;
    assert_eq!(r.json()["router"]["external_gateway_info"], Value::Null);
    assert_eq!(delete(&cloud.member, &format!("/routers/{rid}")).await.status, 204);
    assert_eq!(error_type(&get(&cloud.member, &format!("/routers/{rid}")).await), "RouterNotFound");
    cloud.shutdown().await;
}

#[tokio::test]
async fn floating_ips_need_a_router_to_the_external_network() {
    let cloud = TestCloud::start().await;
    let public = public_id(&cloud).await;
    let (net, sub) = net_with_subnet(&cloud.member, "10.50.0.0/24").await;
    let port = create(&cloud.member, "ports", "port", json!({"network_id": net})).await;
    let pid = port["id"].as_str().unwrap();
    // a private network cannot hold floating IPs
    let r = post(&cloud.member, "/floatingips", &json!({"floatingip": {"floating_network_id": net}})).await;
    assert_eq!(r.status, 400);
    // unreachable port
    let r = post(&cloud.member, "/floatingips", &json!({"floatingip": {"floating_network_id": public, "port_id": pid}})).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (404, "ExternalGatewayForFloatingIPNotFound"));
    let router = create(&cloud.member, "routers", "router", json!({"external_gateway_info": {"network_id": public}})).await;
    let rid = router["id"].as_str().unwrap();
    put(&cloud.member, &format!("/routers/{rid}/add_router_interface"), &json!({"subnet_id": sub})).await;
    let fip = create(&cloud.member, "floatingips", "floatingip", json!({"floating_network_id": public, "port_id": pid})).await;
    assert_eq!(fip["router_id"], json!(rid));
    assert_eq!(fip["port_details"]["network_id"], json!(net));
    assert_eq!(fip["fixed_ip_address"], port["fixed_ips"][0]["ip_address"]);
    assert!(fip["floating_ip_address"].as_str().unwrap().starts_with("172.24.4."));
    let fid = fip["id"].as_str().unwrap();
    // the gateway is needed while the floating IP uses it
    let r = put(&cloud.member, &format!("/routers/{rid}"), &json!({"router": {"external_gateway_info": {}}})).await;
    assert_eq!(r.status, 409);
    // disassociate, reassociate, and deleting the port disassociates
    let r = put(&cloud.member, &format!("/floatingips/{fid}"), &json!({"floatingip": {"port_id": null}})).await;
    assert_eq!(r.json()["floatingip"]["port_id"], Value::Null);
    put(&cloud.member, &format!("/floatingips/{fid}"), &json!({"floatingip": {"port_id": pid}})).await;
    assert_eq!(delete(&cloud.member, &format!("/ports/{pid}")).await.status, 204);
    let r = get(&cloud.member, &format!("/floatingips/{fid}")).await;
    assert_eq!(r.json()["floatingip"]["port_id"], Value::Null);
    assert_eq!(delete(&cloud.member, &format!("/floatingips/{fid}")).await.status, 204);
    assert_eq!(error_type(&get(&cloud.member, &format!("/floatingips/{fid}")).await), "FloatingIPNotFound");
    cloud.shutdown().await;
}

#[tokio::test]
async fn auto_allocated_topology_is_made_once_and_deleted() {
    let cloud = test_utils::TestCloud::start().await;
    let project = crate::create(&cloud.member, "networks", "network", serde_json::json!({"name": "probe"})).await["project_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/auto-allocated-topology/{project}");
    let first = crate::get(&cloud.member, &path).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let id = first.json()["auto_allocated_topology"]["id"].clone();
    assert_eq!(crate::get(&cloud.member, &path).await.json()["auto_allocated_topology"]["id"], id, "the same network");
    let subnets = crate::get(&cloud.member, &format!("/subnets?network_id={}", id.as_str().unwrap())).await.json();
    assert!(subnets["subnets"][0]["cidr"].as_str().unwrap().ends_with("/26"), "{subnets}");
    assert_eq!(crate::get(&cloud.reader, "/auto-allocated-topology/someone-else").await.status, 403);
    let r = crate::delete(&cloud.member, &path).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(crate::get(&cloud.member, &format!("/networks/{}", id.as_str().unwrap())).await.status, 404);
    assert_eq!(crate::delete(&cloud.member, &path).await.status, 404);
    let ext = crate::get(&cloud.member, "/extensions/auto-allocated-topology").await;
    assert_eq!(ext.status, 200);
    cloud.shutdown().await;
}
