//! Security groups and rules over HTTP.

use serde_json::json;
use test_utils::TestCloud;

use crate::{create, delete, error_type, get, post, put};

#[tokio::test]
async fn default_group_rules_and_validation() {
    let cloud = TestCloud::start().await;
    let r = get(&cloud.member, "/security-groups?name=default").await;
    let groups = r.json()["security_groups"].as_array().unwrap().clone();
    assert_eq!(groups.len(), 1);
    let rules = groups[0]["security_group_rules"].as_array().unwrap();
    assert_eq!(rules.len(), 4);
    let ingress: Vec<_> = rules.iter().filter(|r| r["direction"] == "ingress").collect();
    assert_eq!(ingress.len(), 2);
    assert!(ingress.iter().all(|r| r["remote_group_id"] == groups[0]["id"]));
    // only one default group
    let r = post(&cloud.member, "/security-groups", &json!({"security_group": {"name": "default"}})).await;
    assert_eq!(r.status, 409);
    let sg = create(&cloud.member, "security-groups", "security_group", json!({"name": "web"})).await;
    assert_eq!(sg["security_group_rules"].as_array().unwrap().len(), 2, "egress v4 and v6");
    let sid = sg["id"].as_str().unwrap();
    let rule = |body: serde_json::Value| {
        let mut b = body;
        b["security_group_id"] = json!(sid);
        let c = cloud.member.clone();
        async move { post(&c, "/security-group-rules", &json!({"security_group_rule": b})).await }
    };
    let r = rule(json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.0.0.0/8"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rid = r.json()["security_group_rule"]["id"].as_str().unwrap().to_string();
    let r = rule(json!({"direction": "ingress", "protocol": "6", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.0.0.0/8"})).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (409, "SecurityGroupRuleExists"));
    let r = rule(json!({"direction": "ingress", "protocol": 17})).await;
    assert_eq!(r.json()["security_group_rule"]["protocol"], "17");
    for (body, kind) in [
        (json!({"direction": "ingress", "protocol": "bogus"}), "SecurityGroupRuleInvalidProtocol"),
        (json!({"direction": "ingress", "ethertype": "IPv5"}), "SecurityGroupRuleInvalidEtherType"),
        (json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 90, "port_range_max": 80}), "SecurityGroupInvalidPortRange"),
        (json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 70000}), "SecurityGroupInvalidPortValue"),
        (json!({"direction": "ingress", "port_range_min": 80}), "SecurityGroupProtocolRequiredWithPorts"),
        (json!({"direction": "ingress", "protocol": "icmp", "port_range_max": 3}), "SecurityGroupMissingIcmpType"),
        (json!({"direction": "ingress", "remote_ip_prefix": "2001:db8::/64"}), "SecurityGroupRuleParameterConflict"),
    ] {
        let r = rule(body.clone()).await;
        assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (400, kind), "{body}: {}", r.text);
    }
    let r = rule(json!({"direction": "ingress", "remote_group_id": "nope"})).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (404, "SecurityGroupNotFound"));
    let r = post(&cloud.member, "/security-group-rules", &json!({"security_group_rule": {"security_group_id": "nope", "direction": "ingress"}})).await;
    assert_eq!(r.status, 404);
    // renaming and in-use groups
    let r = put(&cloud.member, &format!("/security-groups/{sid}"), &json!({"security_group": {"name": "www", "description": "d"}})).await;
    assert_eq!(r.status, 200);
    let net = create(&cloud.member, "networks", "network", json!({})).await;
    let port = create(&cloud.member, "ports", "port", json!({"network_id": net["id"], "security_groups": [sid]})).await;
    let r = delete(&cloud.member, &format!("/security-groups/{sid}")).await;
    assert_eq!((r.status.as_u16(), error_type(&r).as_str()), (409, "SecurityGroupInUse"));
    delete(&cloud.member, &format!("/ports/{}", port["id"].as_str().unwrap())).await;
    assert_eq!(delete(&cloud.member, &format!("/security-group-rules/{rid}")).await.status, 204);
    assert_eq!(delete(&cloud.member, &format!("/security-groups/{sid}")).await.status, 204);
    cloud.shutdown().await;
}
