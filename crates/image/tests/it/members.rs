//! Sharing images across projects: members, their status, and what each side sees.

use reqwest::Method;
use serde_json::json;
use test_utils::TestCloud;

use crate::{create, ids, project_of};

#[tokio::test]
async fn members_flow_across_projects() {
    let cloud = TestCloud::start().await;
    let demo = project_of(&cloud.member);
    let img = create(&cloud.admin, json!({"name": "shared", "visibility": "shared"})).await;
    let id = img["id"].as_str().unwrap();
    let members = format!("/image/v2/images/{id}/members");

    // Not shared yet: invisible to demo.
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{id}")).await.status, 404);

    // Only shared images have members; only the owner adds them.
    let private = create(&cloud.admin, json!({"name": "p", "visibility": "private"})).await;
    let r = cloud
        .admin
        .post(&format!("/image/v2/images/{}/members", private["id"].as_str().unwrap()), &json!({"member": demo}))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);

    let r = cloud.admin.post(&members, &json!({"member": demo})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = r.json();
    assert_eq!(m["status"], "pending");
    assert_eq!(m["member_id"], demo.as_str());
    assert_eq!(m["image_id"], id);
    assert_eq!(m["schema"], "/v2/schemas/member");
    assert_eq!(cloud.admin.post(&members, &json!({"member": demo})).await.status, 409);
    assert_eq!(cloud.admin.post(&members, &json!({})).await.status, 400);

    // Pending: visible by id to the member, not listed by default, listed with member_status=pending.
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{id}")).await.status, 200);
    assert!(!ids(&cloud.member.get("/image/v2/images").await.json()).contains(&id.to_string()));
    let pending = cloud.member.get("/image/v2/images?member_status=pending").await.json();
    assert!(ids(&pending).contains(&id.to_string()));
    let all = cloud.member.get("/image/v2/images?visibility=shared&member_status=all").await.json();
    assert!(ids(&all).contains(&id.to_string()));

    // The member sees its own membership; the owner sees all.
    let r = cloud.member.get(&members).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["members"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["schema"], "/v2/schemas/members");
    cloud.admin.post(&members, &json!({"member": "another-project"})).await;
    assert_eq!(cloud.admin.get(&members).await.json()["members"].as_array().unwrap().len(), 2);
    assert_eq!(cloud.member.get(&members).await.json()["members"].as_array().unwrap().len(), 1);
    assert_eq!(cloud.member.get(&format!("{members}/another-project")).await.status, 404);
    assert_eq!(cloud.member.get(&format!("{members}/{demo}")).await.status, 200);

    // Only the member changes its status; readers of the member project cannot.
    let accept = json!({"status": "accepted"});
    let r = cloud.admin.request(Method::PUT, &format!("{members}/another-project"), Some(&accept), &[]).await;
    assert_eq!(r.status, 200, "admins may do everything: {}", r.text);
    let r = cloud.reader.request(Method::PUT, &format!("{members}/{demo}"), Some(&accept), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r =
        cloud.member.request(Method::PUT, &format!("{members}/{demo}"), Some(&json!({"status": "maybe"})), &[]).await;
    assert_eq!(r.status, 400);
    let r = cloud.member.request(Method::PUT, &format!("{members}/{demo}"), Some(&accept), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "accepted");
    assert!(ids(&cloud.member.get("/image/v2/images").await.json()).contains(&id.to_string()));
    // The member still cannot modify the image or add members.
    assert_eq!(cloud.member.post(&members, &json!({"member": "third"})).await.status, 403);
    assert_eq!(cloud.member.delete(&format!("/image/v2/images/{id}")).await.status, 403);

    // Rejected: no longer listed by default.
    let reject = json!({"status": "rejected"});
    cloud.member.request(Method::PUT, &format!("{members}/{demo}"), Some(&reject), &[]).await;
    assert!(!ids(&cloud.member.get("/image/v2/images").await.json()).contains(&id.to_string()));

    // The owner removes the member: the image disappears for demo.
    assert_eq!(cloud.member.delete(&format!("{members}/{demo}")).await.status, 403);
    assert_eq!(cloud.admin.delete(&format!("{members}/{demo}")).await.status, 204);
    assert_eq!(cloud.admin.delete(&format!("{members}/{demo}")).await.status, 404);
    assert_eq!(cloud.member.get(&format!("/image/v2/images/{id}")).await.status, 404);
    cloud.shutdown().await;
}
