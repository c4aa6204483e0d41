//! OAuth 1.0a consumers through the HTTP API.

use reqwest::{Method, StatusCode};
use serde_json::json;
use test_utils::TestCloud;

#[tokio::test]
async fn consumer_lifecycle_and_policy() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;
    let r = admin.post("/identity/v3/OS-OAUTH1/consumers", &json!({"consumer": {"description": "a consumer"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let created = r.json()["consumer"].clone();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(created["secret"].as_str().is_some_and(|s| s.len() >= 32), "{created}");

    let path = format!("/identity/v3/OS-OAUTH1/consumers/{id}");
    let shown = admin.get(&path).await.json()["consumer"].clone();
    assert_eq!(shown["description"], "a consumer");
    assert!(shown.get("secret").is_none(), "the secret is shown once");
    let listed = admin.get("/identity/v3/OS-OAUTH1/consumers").await.json();
    assert!(listed["consumers"].as_array().unwrap().iter().any(|c| c["id"] == id.as_str()));

    let r = admin.request(Method::PATCH, &path, Some(&json!({"consumer": {"description": "renamed"}})), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["consumer"]["description"], "renamed");
    let r = admin.request(Method::PATCH, &path, Some(&json!({"consumer": {"secret": "mine"}})), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = admin.post("/identity/v3/OS-OAUTH1/consumers", &json!({"consumer": {"secret": "mine"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Members neither see nor change consumers, and their attempt changes nothing.
    assert_eq!(cloud.member.get(&path).await.status, StatusCode::FORBIDDEN);
    assert_eq!(cloud.member.delete(&path).await.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.get(&path).await.json()["consumer"]["description"], "renamed");

    assert_eq!(admin.delete(&path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.delete(&path).await.status, StatusCode::NOT_FOUND);
    cloud.shutdown().await;
}
