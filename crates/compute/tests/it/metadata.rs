//! The metadata service for instances on its own listener: requests signed as the metadata proxy signs them get
//! the instance's OpenStack and EC2 metadata; a bad signature is a 403, another project's instance a 404.

use serde_json::{Value, json};
use test_utils::TestCloud;

use crate::servers::{image, status, wait_agent};

const SECRET: &str = "proxy-secret";

async fn fetch(base: &str, path: &str, instance: &str, tenant: &str, signature: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("X-Instance-ID", instance)
        .header("X-Tenant-ID", tenant)
        .header("X-Instance-ID-Signature", signature)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn metadata_for_a_signed_instance() {
    let cloud = TestCloud::start_with(|c| {
        c.compute.metadata_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        c.compute.metadata_proxy_shared_secret = SECRET.into();
    })
    .await;
    wait_agent(&cloud).await;
    let base = format!("http://{}", cloud.running.metadata_addr.expect("a metadata listener"));
    let img = image(&cloud.member).await;
    let m = &cloud.member;
    let net = m.post("/networking/v2.0/networks", &json!({"network": {"name": "md"}})).await.json()["network"]["id"].clone();
    m.post("/networking/v2.0/subnets", &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.4.0.0/24"}})).await;
    let kp = m.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "k"}})).await.json()["keypair"].clone();
    let body = json!({"server": {"name": "md-vm", "imageRef": img, "flavorRef": "1", "key_name": "k",
        "user_data": "IyFjbG91ZC1jb25maWcK", "metadata": {"role": "web"}}});
    let r = m.post("/compute/v2.1/servers", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["server"]["id"].as_str().unwrap().to_string();
    let s = status(m, &id, "ACTIVE").await;
    let tenant = s["tenant_id"].as_str().unwrap().to_string();
    let sig = compute::metadata::sign(SECRET, &id);

    let (code, versions) = fetch(&base, "/openstack", &id, &tenant, &sig).await;
    assert_eq!(code, 200);
    assert!(versions.lines().any(|l| l == "latest") && versions.contains("2018-08-27"), "{versions}");
    let (code, md) = fetch(&base, "/openstack/latest/meta_data.json", &id, &tenant, &sig).await;
    assert_eq!(code, 200, "{md}");
    let md: Value = serde_json::from_str(&md).unwrap();
    assert_eq!(md["uuid"], id.as_str());
    assert_eq!(md["name"], "md-vm");
    assert_eq!(md["meta"], json!({"role": "web"}));
    assert_eq!(md["public_keys"]["k"], kp["public_key"]);
    assert_eq!(fetch(&base, "/openstack/2012-08-10/user_data", &id, &tenant, &sig).await, (200, "#!cloud-config\n".into()));
    let (_, nd) = fetch(&base, "/openstack/latest/network_data.json", &id, &tenant, &sig).await;
    let nd: Value = serde_json::from_str(&nd).unwrap();
    assert_eq!(nd["links"].as_array().unwrap().len(), 1, "{nd}");
    assert_eq!(nd["networks"][0]["network_id"], net);
    assert_eq!(fetch(&base, "/openstack/latest/vendor_data2.json", &id, &tenant, &sig).await.1, "{}");

    // EC2.
    let (_, list) = fetch(&base, "/latest/meta-data/", &id, &tenant, &sig).await;
    assert!(list.lines().any(|l| l == "local-ipv4") && list.lines().any(|l| l == "placement/"), "{list}");
    let (_, ip) = fetch(&base, "/latest/meta-data/local-ipv4", &id, &tenant, &sig).await;
    assert!(ip.starts_with("10.4.0."), "{ip}");
    assert_eq!(fetch(&base, "/2009-04-04/meta-data/hostname", &id, &tenant, &sig).await.1, "md-vm");
    assert_eq!(fetch(&base, "/latest/meta-data/public-keys/", &id, &tenant, &sig).await.1, "0=k");
    assert_eq!(fetch(&base, "/latest/user-data", &id, &tenant, &sig).await.1, "#!cloud-config\n");

    // The guest leaves its password once; os-server-password shows it.
    let post = reqwest::Client::new()
        .post(format!("{base}/openstack/latest/password"))
        .header("X-Instance-ID", &id)
        .header("X-Tenant-ID", &tenant)
        .header("X-Instance-ID-Signature", &sig)
        .body("ZW5jcnlwdGVk")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 200);
    let pw = m.get(&format!("/compute/v2.1/servers/{id}/os-server-password")).await.json();
    assert_eq!(pw["password"], "ZW5jcnlwdGVk");

    // Bad requests.
    assert_eq!(fetch(&base, "/openstack/latest/meta_data.json", &id, &tenant, "00ff").await.0, 403);
    assert_eq!(fetch(&base, "/openstack/latest/meta_data.json", &id, "someone-else", &sig).await.0, 404);
    assert_eq!(fetch(&base, "/openstack/1999-01-01/meta_data.json", &id, &tenant, &sig).await.0, 404);
    let bare = reqwest::get(format!("{base}/openstack/latest/meta_data.json")).await.unwrap();
    assert_eq!(bare.status().as_u16(), 400);
    // The compute API's listener does not serve it.
    assert_eq!(m.get("/openstack/latest/meta_data.json").await.status, 404);
    cloud.shutdown().await;
}
