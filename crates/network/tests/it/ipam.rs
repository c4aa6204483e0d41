//! IP address management under concurrency: parallel port creates on a small subnet never share an address, and
//! exhaustion is a clean 409.

use std::collections::HashSet;

use serde_json::json;
use test_utils::TestCloud;

use crate::{create, error_type, post};

#[tokio::test]
async fn parallel_port_creates_never_duplicate_addresses() {
    let cloud = TestCloud::start().await;
    parallel_creates(&cloud).await;
    cloud.shutdown().await;
}

/// The same race on the server databases, where transactions run at READ COMMITTED.
#[tokio::test]
async fn parallel_port_creates_on_server_databases() {
    for backend in [db::Backend::Postgres, db::Backend::MySql] {
        let Some(test_db) = db::testing::test_database(backend).await else { continue };
        let url = test_db.url().to_string();
        let cloud = TestCloud::start_with(|c| c.database.url = Some(url)).await;
        parallel_creates(&cloud).await;
        cloud.shutdown().await;
        test_db.cleanup().await;
    }
}

async fn parallel_creates(cloud: &TestCloud) {
    let net = create(&cloud.member, "networks", "network", json!({})).await;
    // a /28: 13 addresses in the pool once the gateway is set aside
    create(&cloud.member, "subnets", "subnet", json!({"network_id": net["id"], "ip_version": 4, "cidr": "10.60.0.0/28"})).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = cloud.member.clone();
            let net = net["id"].clone();
            tokio::spawn(async move { post(&c, "/ports", &json!({"port": {"network_id": net}})).await })
        })
        .collect();
    let mut ips = HashSet::new();
    let mut refused = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            201 => {
                let ip = r.json()["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
                assert!(ips.insert(ip.clone()), "{ip} handed out twice");
            }
            409 => {
                assert_eq!(error_type(&r), "IpAddressGenerationFailure", "{}", r.text);
                refused += 1;
            }
            s => panic!("unexpected {s}: {}", r.text),
        }
    }
    assert_eq!(ips.len(), 13);
    assert_eq!(refused, 7);
    assert!(!ips.contains("10.60.0.1"), "the gateway is never handed out");
}

/// On a large subnet, addresses come from the low end of the pools (as upstream's pick among the first free
/// addresses), never the gateway, and never twice.
#[tokio::test]
async fn large_subnets_fill_from_the_low_end() {
    let cloud = TestCloud::start().await;
    let net = create(&cloud.member, "networks", "network", json!({})).await;
    create(&cloud.member, "subnets", "subnet", json!({"network_id": net["id"], "ip_version": 4, "cidr": "10.64.0.0/16"})).await;
    let mut ips = HashSet::new();
    for _ in 0..40 {
        let r = post(&cloud.member, "/ports", &json!({"port": {"network_id": net["id"]}})).await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.text);
        let ip: std::net::Ipv4Addr = r.json()["port"]["fixed_ips"][0]["ip_address"].as_str().unwrap().parse().unwrap();
        let offset = u32::from(ip) - u32::from(std::net::Ipv4Addr::new(10, 64, 0, 0));
        // the pool starts at .2 (.1 is the gateway): the first window is its lowest 1,024 addresses
        assert!((2..1026).contains(&offset), "{ip} is not among the lowest addresses");
        assert!(ips.insert(ip), "{ip} handed out twice");
    }
    cloud.shutdown().await;
}
