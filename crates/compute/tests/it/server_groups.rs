//! Server groups through HTTP: create (validation, quota), list (all projects for admins), show, delete; members
//! from the `group` scheduler hint, and the scheduler honouring affinity and anti-affinity on the one host.

use reqwest::Method;
use serde_json::{Value, json};
use test_utils::{Client, Response, TestCloud};

use crate::servers::{image, status, wait_agent};

fn assert_fault(r: &Response, status: u16, fault: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    assert_eq!(r.json()[fault]["code"], status, "{}", r.text);
}

async fn create(c: &Client, name: &str, policy: &str) -> Response {
    c.post("/compute/v2.1/os-server-groups", &json!({"server_group": {"name": name, "policies": [policy]}})).await
}

async fn boot_in(c: &Client, img: &str, name: &str, group: &str) -> String {
    let r = c
        .post(
            "/compute/v2.1/servers",
            &json!({"server": {"name": name, "imageRef": img, "flavorRef": "1"}, "os:scheduler_hints": {"group": group}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json()["server"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn server_groups_members_and_policies() {
    let cloud = TestCloud::start().await;
    wait_agent(&cloud).await;
    let groups = "/compute/v2.1/os-server-groups";

    let r = create(&cloud.member, "web", "anti-affinity").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let g = r.json()["server_group"].clone();
    let keys: Vec<&String> = g.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "members", "metadata", "name", "policies"]);
    assert_eq!((g["policies"].clone(), g["members"].clone(), g["metadata"].clone()), (json!(["anti-affinity"]), json!([]), json!({})));
    let anti = g["id"].as_str().unwrap().to_string();
    // Same name and policy twice is fine.
    let aff = create(&cloud.member, "db", "affinity").await.json()["server_group"]["id"].as_str().unwrap().to_string();
    assert_eq!(create(&cloud.member, "db", "affinity").await.status, 200);
    // The soft policies came with 2.15.
    assert_eq!(create(&cloud.member, "soft", "soft-anti-affinity").await.status, 400);
    let soft = json!({"server_group": {"name": "soft", "policies": ["soft-anti-affinity"]}});
    let r = cloud
        .member
        .request(
            reqwest::Method::POST,
            "/compute/v2.1/os-server-groups",
            Some(&soft),
            &[("OpenStack-API-Version", "compute 2.15")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for bad in [
        json!({"server_group": {"name": "x", "policies": ["sideways"]}}),
        json!({"server_group": {"name": "x", "policies": []}}),
        json!({"server_group": {"name": "x", "policies": ["affinity", "anti-affinity"]}}),
        json!({"server_group": {"name": "", "policies": ["affinity"]}}),
        json!({"server_group": {"policies": ["affinity"]}}),
    ] {
        assert_fault(&cloud.member.post(groups, &bad).await, 400, "badRequest");
    }
    assert_fault(&create(&cloud.reader, "x", "affinity").await, 403, "forbidden");

    // Lists: the project's groups; all projects for admins only.
    let mine = cloud.member.get(groups).await.json()["server_groups"].as_array().unwrap().len();
    assert_eq!(mine, 4);
    assert_eq!(cloud.reader.get(groups).await.json()["server_groups"].as_array().unwrap().len(), 4);
    assert!(cloud.admin.get(groups).await.json()["server_groups"].as_array().unwrap().is_empty());
    assert_eq!(cloud.admin.get(&format!("{groups}?all_projects=True")).await.json()["server_groups"].as_array().unwrap().len(), 4);
    assert_fault(&cloud.member.get(&format!("{groups}?all_projects=True")).await, 403, "forbidden");
    assert_eq!(cloud.member.get(&format!("{groups}?limit=1&offset=1")).await.json()["server_groups"][0]["id"], aff.as_str());
    assert_fault(&cloud.member.get(&format!("{groups}?limit=x")).await, 400, "badRequest");
    assert_eq!(cloud.member.get(&format!("{groups}/{anti}")).await.json()["server_group"], g);
    assert_fault(&cloud.member.get(&format!("{groups}/{}", uuid_like())).await, 404, "itemNotFound");

    // Members come from the scheduler hint; affinity keeps them together; anti-affinity finds no second host.
    let img = image(&cloud.member).await;
    let a1 = boot_in(&cloud.member, &img, "a1", &aff).await;
    let a2 = boot_in(&cloud.member, &img, "a2", &aff).await;
    let (s1, s2) = (status(&cloud.member, &a1, "ACTIVE").await, status(&cloud.member, &a2, "ACTIVE").await);
    assert_eq!(s1["hostId"], s2["hostId"]);
    let members: Vec<Value> = cloud.member.get(&format!("{groups}/{aff}")).await.json()["server_group"]["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 2);
    assert!(members.contains(&json!(a1)) && members.contains(&json!(a2)));
    let x1 = boot_in(&cloud.member, &img, "x1", &anti).await;
    status(&cloud.member, &x1, "ACTIVE").await;
    let x2 = boot_in(&cloud.member, &img, "x2", &anti).await;
    let s = status(&cloud.member, &x2, "ERROR").await;
    assert!(s["fault"]["message"].as_str().unwrap().starts_with("No valid host was found"), "{s}");

    // Bad hints: not a uuid, or no such group.
    let r = cloud
        .member
        .post("/compute/v2.1/servers", &json!({"server": {"name": "h", "imageRef": img, "flavorRef": "1"}, "os:scheduler_hints": {"group": "nope"}}))
        .await;
    assert_fault(&r, 400, "badRequest");
    let r = cloud
        .member
        .post("/compute/v2.1/servers", &json!({"server": {"name": "h", "imageRef": img, "flavorRef": "1"}, "os:scheduler_hints": {"group": uuid_like()}}))
        .await;
    assert_fault(&r, 400, "badRequest");

    // Deleted servers leave the member list.
    assert_eq!(cloud.member.delete(&format!("/compute/v2.1/servers/{a2}")).await.status, 204);
    crate::servers::wait_for(&cloud.member, &a2, |_| false).await;
    let members = cloud.member.get(&format!("{groups}/{aff}")).await.json()["server_group"]["members"].clone();
    assert_eq!(members, json!([a1]));

    // Quotas: groups per project, members per group.
    let (project, _) = {
        let t = &cloud.member.token_body["token"];
        (t["project"]["id"].as_str().unwrap().to_string(), ())
    };
    let quota = format!("/compute/v2.1/os-quota-sets/{project}");
    let r = cloud.admin.request(Method::PUT, &quota, Some(&json!({"quota_set": {"server_groups": 4, "server_group_members": 1}})), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = create(&cloud.member, "one-too-many", "affinity").await;
    assert_fault(&r, 403, "forbidden");
    assert_eq!(r.json()["forbidden"]["message"], "Quota exceeded, too many server groups.");
    let r = cloud
        .member
        .post("/compute/v2.1/servers", &json!({"server": {"name": "a3", "imageRef": img, "flavorRef": "1"}, "os:scheduler_hints": {"group": aff}}))
        .await;
    assert_fault(&r, 403, "forbidden");
    assert_eq!(r.json()["forbidden"]["message"], "Quota exceeded, too many servers in group");
    let limits = cloud.member.get("/compute/v2.1/limits").await.json()["limits"]["absolute"].clone();
    assert_eq!((limits["maxServerGroups"].as_i64(), limits["totalServerGroupsUsed"].as_i64()), (Some(4), Some(4)));

    // Delete: the owner's project only (others get 403), then gone.
    assert_fault(&cloud.reader.delete(&format!("{groups}/{anti}")).await, 403, "forbidden");
    assert_eq!(cloud.member.delete(&format!("{groups}/{anti}")).await.status, 204);
    assert_fault(&cloud.member.get(&format!("{groups}/{anti}")).await, 404, "itemNotFound");
    assert_fault(&cloud.member.delete(&format!("{groups}/{anti}")).await, 404, "itemNotFound");
    cloud.shutdown().await;
}

fn uuid_like() -> &'static str {
    "9a1c2b3d-0000-4000-8000-00000000abcd"
}
