//! Usage and host reports through HTTP: simple tenant usage, the instance usage audit log, the deprecated
//! `os-hosts` (with the conductor's own service), and `/extensions`.

use reqwest::Method;
use serde_json::json;
use test_utils::{Response, TestCloud};

use crate::servers::{boot, image, status, wait_agent, wait_for};

fn assert_fault(r: &Response, status: u16, fault: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert_eq!(r.json()[fault]["code"], status, "{}", r.text);
}

fn period() -> String {
    let now = chrono::Utc::now();
    let f = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    format!("start={}&end={}", f(now - chrono::Duration::days(1)), f(now + chrono::Duration::days(1)))
}

#[tokio::test]
async fn tenant_usage_and_audit_log() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let project = cloud.member.token_body["token"]["project"]["id"].as_str().unwrap().to_string();
    let img = image(&cloud.member).await;
    let id = boot(&cloud.member, &img, "used").await.json()["server"]["id"].as_str().unwrap().to_string();
    status(&cloud.member, &id, "ACTIVE").await;
    let q = period();

    let r = cloud.admin.get(&format!("/compute/v2.1/os-simple-tenant-usage?{q}&detailed=1")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let all = r.json()["tenant_usages"].clone();
    assert_eq!(all.as_array().unwrap().len(), 1);
    let t = &all[0];
    assert_eq!(t.as_object().unwrap().len(), 8, "{t}");
    assert_eq!(t["tenant_id"], project.as_str());
    let s = &t["server_usages"][0];
    assert_eq!((s["instance_id"].as_str(), s["flavor"].as_str(), s["state"].as_str()), (Some(id.as_str()), Some("m1.tiny"), Some("active")));
    assert_eq!((s["memory_mb"].as_i64(), s["local_gb"].as_i64(), s["vcpus"].as_i64()), (Some(512), Some(1), Some(1)));
    assert!(s["ended_at"].is_null() && s["hours"].as_f64().unwrap() >= 0.0);
    let r = cloud.admin.get(&format!("/compute/v2.1/os-simple-tenant-usage?{q}")).await;
    assert!(r.json()["tenant_usages"][0].get("server_usages").is_none(), "{}", r.text);

    // A project's own usage; others' for admins only; bad periods are 400s.
    let r = cloud.member.get(&format!("/compute/v2.1/os-simple-tenant-usage/{project}?{q}")).await;
    assert_eq!(r.json()["tenant_usage"].as_object().unwrap().len(), 8, "{}", r.text);
    assert_fault(&cloud.member.get(&format!("/compute/v2.1/os-simple-tenant-usage?{q}")).await, 403, "forbidden");
    assert_fault(&cloud.member.get(&format!("/compute/v2.1/os-simple-tenant-usage/other?{q}")).await, 403, "forbidden");
    assert_eq!(cloud.admin.get(&format!("/compute/v2.1/os-simple-tenant-usage/other?{q}")).await.json(), json!({"tenant_usage": {}}));
    let r = cloud.admin.get("/compute/v2.1/os-simple-tenant-usage?start=2030-01-02T00:00:00&end=2030-01-01T00:00:00").await;
    assert_fault(&r, 400, "badRequest");
    assert_eq!(r.json()["badRequest"]["message"], "Invalid start time. The start time cannot occur after the end time.");
    assert_fault(&cloud.admin.get("/compute/v2.1/os-simple-tenant-usage?start=yesterday").await, 400, "badRequest");
    assert_fault(&cloud.admin.get(&format!("/compute/v2.1/os-simple-tenant-usage/?{q}")).await, 404, "itemNotFound");

    // Deleted servers still count, terminated.
    assert_eq!(cloud.member.delete(&format!("/compute/v2.1/servers/{id}")).await.status, 204);
    wait_for(&cloud.member, &id, |_| false).await;
    let r = cloud.member.get(&format!("/compute/v2.1/os-simple-tenant-usage/{project}?{q}")).await;
    let s = &r.json()["tenant_usage"]["server_usages"][0];
    assert_eq!(s["state"], "terminated", "{}", r.text);
    assert!(s["ended_at"].is_string());

    // The audit log: every compute host, none having run the audit.
    let r = cloud.admin.get("/compute/v2.1/os-instance_usage_audit_log").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let log = r.json()["instance_usage_audit_logs"].clone();
    assert_eq!((log["num_hosts"].as_i64(), log["num_hosts_not_run"].as_i64()), (Some(1), Some(1)));
    assert_eq!(log["overall_status"], "0 of 1 hosts done. 0 errors.");
    assert_eq!(log["log"], json!({}));
    let r = cloud.admin.get("/compute/v2.1/os-instance_usage_audit_log/2024-01-15%2010:00:00").await;
    let log = r.json()["instance_usage_audit_log"].clone();
    assert_eq!((log["period_beginning"].as_str(), log["period_ending"].as_str()), (Some("2023-12-01 00:00:00"), Some("2024-01-01 00:00:00")), "{}", r.text);
    assert_fault(&cloud.admin.get("/compute/v2.1/os-instance_usage_audit_log/invalid_time").await, 400, "badRequest");
    assert_fault(&cloud.member.get("/compute/v2.1/os-instance_usage_audit_log").await, 403, "forbidden");
    cloud.shutdown().await;
}

#[tokio::test]
async fn hosts_and_extensions() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;

    // The compute host and the conductor, each with its topic and zone.
    let r = cloud.admin.get("/compute/v2.1/os-hosts").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let hosts = r.json()["hosts"].as_array().unwrap().clone();
    let compute = hosts.iter().find(|h| h["service"] == "compute").expect("a compute host").clone();
    assert_eq!(compute["zone"], "nova");
    assert!(hosts.iter().any(|h| h["service"] == "conductor" && h["zone"] == "internal"), "{hosts:?}");
    assert_eq!(cloud.admin.get("/compute/v2.1/os-hosts?zone=xxx").await.json()["hosts"], json!([]));
    assert_eq!(cloud.admin.get("/compute/v2.1/os-hosts?zone=").await.json()["hosts"].as_array().unwrap().len(), hosts.len());
    assert_fault(&cloud.member.get("/compute/v2.1/os-hosts").await, 403, "forbidden");
    let conductor = cloud.admin.get("/compute/v2.1/os-services?binary=nova-conductor").await.json();
    assert_eq!(conductor["services"][0]["state"], "up", "{conductor}");

    let name = compute["host_name"].as_str().unwrap().to_string();
    let r = cloud.admin.get(&format!("/compute/v2.1/os-hosts/{name}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let projects: Vec<String> =
        r.json()["host"].as_array().unwrap().iter().take(3).map(|x| x["resource"]["project"].as_str().unwrap().to_string()).collect();
    assert_eq!(projects, ["(total)", "(used_now)", "(used_max)"]);
    assert_eq!(r.json()["host"][0]["resource"]["host"], name.as_str());
    assert_fault(&cloud.admin.get("/compute/v2.1/os-hosts/nonexistent").await, 404, "itemNotFound");
    assert_fault(&cloud.member.get(&format!("/compute/v2.1/os-hosts/{name}")).await, 403, "forbidden");

    // Update: status switches the compute service; maintenance mode and power actions are not supported.
    let put = |body: serde_json::Value, host: String| {
        let c = cloud.admin.clone();
        async move { c.request(Method::PUT, &format!("/compute/v2.1/os-hosts/{host}"), Some(&body), &[]).await }
    };
    let r = put(json!({"status": "disable"}), name.clone()).await;
    assert_eq!(r.json(), json!({"host": name, "status": "disabled"}), "{}", r.text);
    let svc = cloud.admin.get("/compute/v2.1/os-services?binary=nova-compute").await.json();
    assert_eq!(svc["services"][0]["status"], "disabled");
    assert_eq!(put(json!({"status": "Enable"}), name.clone()).await.json()["status"], "enabled");
    assert_fault(&put(json!({"maintenance_mode": "enable"}), name.clone()).await, 501, "notImplemented");
    assert_fault(&put(json!({"status": "invalid"}), name.clone()).await, 400, "badRequest");
    assert_fault(&put(json!({}), name.clone()).await, 400, "badRequest");
    assert_fault(&put(json!({"status": "enable"}), "nonexistent".into()).await, 404, "itemNotFound");
    for action in ["startup", "shutdown", "reboot"] {
        assert_fault(&cloud.admin.get(&format!("/compute/v2.1/os-hosts/{name}/{action}")).await, 501, "notImplemented");
        assert_fault(&cloud.admin.get(&format!("/compute/v2.1/os-hosts/nonexistent/{action}")).await, 404, "itemNotFound");
        assert_fault(&cloud.member.get(&format!("/compute/v2.1/os-hosts/{name}/{action}")).await, 403, "forbidden");
    }

    // Extensions: the 2.1 list, one by alias.
    let r = cloud.member.get("/compute/v2.1/extensions").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let exts = r.json()["extensions"].as_array().unwrap().clone();
    assert!(exts.iter().any(|e| e["name"] == "Hosts"));
    assert_eq!(exts[0].as_object().unwrap().len(), 6);
    let r = cloud.member.get("/compute/v2.1/extensions/os-consoles").await;
    assert_eq!(r.json()["extension"]["alias"], "os-consoles");
    assert_fault(&cloud.member.get("/compute/v2.1/extensions/nope").await, 404, "itemNotFound");
    cloud.shutdown().await;
}
