//! Whole-cloud tests through HTTP: the wire layer's promises (JSON 404/400/405, request ids, no panics), the
//! minimal identity path (token issue/validate/revoke, catalog, version discovery), the files `stratus up` writes,
//! restarts on the same data, and token validation over HTTP as split deployments do it.

use auth::TokenValidator;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_utils::{TestCloud, password_auth};

fn assert_keystone_error(r: &test_utils::Response, status: u16) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text);
    let body = r.json();
    assert_eq!(body["error"]["code"], status, "{}", r.text);
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.text);
    assert!(body["error"]["title"].is_string(), "{}", r.text);
}

#[tokio::test]
async fn unknown_paths_are_json_404s_with_request_ids() {
    let cloud = TestCloud::start().await;
    for path in ["/nope", "/identity/v3/nope", "/identity/v2.0", "/orchestration/v1/stacks"] {
        let r = cloud.anonymous.get(path).await;
        assert_keystone_error(&r, 404);
        assert!(r.header("x-openstack-request-id").unwrap().starts_with("req-"), "{path}");
    }
    cloud.shutdown().await;
}

#[tokio::test]
async fn malformed_and_mistyped_json_are_400s_naming_the_problem() {
    let cloud = TestCloud::start().await;
    let r = cloud.anonymous.raw(Method::POST, "/identity/v3/auth/tokens", "{\"auth\": ").await;
    assert_keystone_error(&r, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("Malformed"), "{}", r.text);

    let r = cloud.anonymous.post("/identity/v3/auth/tokens", &json!({"auth": {"identity": {"methods": "password"}}})).await;
    assert_keystone_error(&r, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("auth.identity.methods"), "{}", r.text);

    let r = cloud.anonymous.post("/identity/v3/auth/tokens", &json!({"auth": {}})).await;
    assert_keystone_error(&r, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("identity"), "{}", r.text);
    cloud.shutdown().await;
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let cloud = TestCloud::start().await;
    let r = cloud.anonymous.request(Method::PUT, "/identity/v3/auth/tokens", None, &[]).await;
    assert_keystone_error(&r, 405);
    let allow = r.header("allow").unwrap();
    for m in ["GET", "HEAD", "POST", "DELETE"] {
        assert!(allow.contains(m), "{allow}");
    }
    let r = cloud.anonymous.request(Method::DELETE, "/identity/v3", None, &[]).await;
    assert_keystone_error(&r, 405);
    cloud.shutdown().await;
}

#[tokio::test]
async fn version_discovery() {
    let cloud = TestCloud::start().await;
    let r = cloud.anonymous.get("/identity").await;
    assert_eq!(r.status, StatusCode::MULTIPLE_CHOICES, "{}", r.text);
    let v = &r.json()["versions"]["values"][0];
    assert_eq!(v["status"], "stable");
    assert_eq!(v["links"][0]["href"], format!("{}/identity/v3/", cloud.url));
    // Clients strip the version from the catalog URL and ask the prefix with a trailing slash (Tempest does).
    let r = cloud.anonymous.get("/identity/").await;
    assert_eq!(r.status, StatusCode::MULTIPLE_CHOICES, "{}", r.text);
    assert_eq!(r.json()["versions"]["values"][0]["id"], v["id"]);
    let r = cloud.anonymous.get("/identity/v3").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["version"]["id"].as_str().unwrap().starts_with("v3."));
    cloud.shutdown().await;
}

#[tokio::test]
async fn token_issue_carries_catalog_roles_and_scope() {
    let cloud = TestCloud::start().await;
    let token = &cloud.admin.token_body["token"];
    assert_eq!(token["project"]["name"], "admin");
    assert_eq!(token["user"]["name"], "admin");
    assert_eq!(token["methods"], json!(["password"]));
    let mut roles: Vec<_> = token["roles"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    roles.sort();
    assert_eq!(roles, ["admin", "manager", "member", "reader"]);
    let catalog = token["catalog"].as_array().unwrap();
    let identity = catalog.iter().find(|s| s["type"] == "identity").expect("identity in catalog");
    let urls: Vec<_> = identity["endpoints"].as_array().unwrap().iter().map(|e| e["url"].as_str().unwrap()).collect();
    assert_eq!(urls.len(), 3);
    assert!(urls.iter().all(|u| *u == format!("{}/identity", cloud.url)));
    assert!(token["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(token["audit_ids"].as_array().unwrap()[0].as_str().unwrap().len(), 22);

    // nocatalog
    let r = cloud.anonymous.post("/identity/v3/auth/tokens?nocatalog", &password_auth("demo", &demo_password(&cloud), "demo")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.json()["token"].get("catalog").is_none());
    // the member's token is scoped to demo with member+reader
    let member = &cloud.member.token_body["token"];
    assert_eq!(member["project"]["name"], "demo");
    cloud.shutdown().await;
}

fn demo_password(cloud: &TestCloud) -> String {
    cloud.running.credentials.as_ref().unwrap().demo_password.clone()
}

#[tokio::test]
async fn wrong_password_is_401() {
    let cloud = TestCloud::start().await;
    let r = cloud.anonymous.post("/identity/v3/auth/tokens", &password_auth("admin", "wrong", "admin")).await;
    assert_keystone_error(&r, 401);
    let r = cloud.anonymous.post("/identity/v3/auth/tokens", &password_auth("demo", &demo_password(&cloud), "admin")).await;
    assert_keystone_error(&r, 401);
    cloud.shutdown().await;
}

#[tokio::test]
async fn validate_check_and_revoke() {
    let cloud = TestCloud::start().await;
    let subject = cloud.member.token.clone().unwrap();
    let h = [("X-Subject-Token", subject.as_str())];
    let r = cloud.admin.request(Method::GET, "/identity/v3/auth/tokens", None, &h).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.header("x-subject-token"), Some(subject.as_str()));
    assert_eq!(r.json()["token"]["user"]["name"], "demo");
    let r = cloud.admin.request(Method::HEAD, "/identity/v3/auth/tokens", None, &h).await;
    assert_eq!(r.status, StatusCode::OK);
    // A member may validate their own token but not someone else's.
    let own = cloud.member.request(Method::GET, "/identity/v3/auth/tokens", None, &h).await;
    assert_eq!(own.status, StatusCode::OK);
    let admin_token = cloud.admin.token.clone().unwrap();
    let r = cloud.member.request(Method::GET, "/identity/v3/auth/tokens", None, &[("X-Subject-Token", &admin_token)]).await;
    assert_keystone_error(&r, 403);
    // Without a token at all: 401.
    let r = cloud.anonymous.request(Method::GET, "/identity/v3/auth/tokens", None, &h).await;
    assert_keystone_error(&r, 401);
    // Revoke, then the token neither validates nor authenticates.
    let r = cloud.admin.request(Method::DELETE, "/identity/v3/auth/tokens", None, &h).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = cloud.admin.request(Method::GET, "/identity/v3/auth/tokens", None, &h).await;
    assert_keystone_error(&r, 404);
    let r = cloud.member.get("/identity/v3/auth/catalog").await;
    assert_keystone_error(&r, 401);
    // Garbage token: 401.
    let r = cloud.anonymous.with_token(Some("gAAAAAgarbage".into())).get("/identity/v3/auth/catalog").await;
    assert_keystone_error(&r, 401);
    cloud.shutdown().await;
}

#[tokio::test]
async fn auth_catalog_projects_and_system() {
    let cloud = TestCloud::start().await;
    let r = cloud.member.get("/identity/v3/auth/catalog").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.json()["catalog"].as_array().unwrap().iter().any(|s| s["type"] == "identity"));
    let r = cloud.member.get("/identity/v3/auth/projects").await;
    let names: Vec<_> = r.json()["projects"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, vec![Value::from("demo")], "a member sees only their projects");
    let r = cloud.admin.get("/identity/v3/auth/system").await;
    assert_eq!(r.json()["system"], json!([{"all": true}]));
    let r = cloud.member.get("/identity/v3/auth/system").await;
    assert_eq!(r.json()["system"], json!([]));
    cloud.shutdown().await;
}

#[tokio::test]
async fn hostile_requests_never_panic_or_500() {
    let cloud = TestCloud::start().await;
    let bodies = [
        "", "null", "[]", "\"x\"", "{\"auth\": null}", "{\"auth\": {\"identity\": {\"methods\": []}}}",
        "{\"auth\": {\"identity\": {\"methods\": [\"password\"], \"password\": {\"user\": {\"password\": \"x\"}}}}}",
        "{\"auth\": {\"identity\": {\"methods\": [\"token\"], \"token\": {\"id\": \"\"}}}}",
        "{\"auth\": {\"identity\": {\"methods\": [\"password\"], \"password\": {\"user\": {\"id\": 1, \"password\": \"x\"}}}}}",
        "{\"auth\": {\"identity\": {\"methods\": [\"password\"], \"password\": {\"user\": {\"name\": \"admin\", \"password\": \"x\"}}}}}",
        "{\"auth\": {\"identity\": {\"methods\": [\"x\"]}, \"scope\": {\"project\": {}, \"domain\": {}}}}",
        "\u{0}\u{1}\u{2}", "{\"a\":\"\\ud800\"}",
    ];
    for body in bodies {
        let r = cloud.anonymous.raw(Method::POST, "/identity/v3/auth/tokens", body).await;
        assert!(r.status.is_client_error(), "{body:?} -> {} {}", r.status, r.text);
        assert!(r.json().is_object(), "{body:?} -> non-JSON body {}", r.text);
    }
    let huge = format!("{{\"auth\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = cloud.anonymous.raw(Method::POST, "/identity/v3/auth/tokens", &huge).await;
    assert_keystone_error(&r, 413);
    for path in ["/identity/v3/auth/tokens/..", "/%ff", "/identity//v3", "/identity/v3/auth/tokens?nocatalog=%zz"] {
        let r = cloud.anonymous.get(path).await;
        assert!(r.status.as_u16() < 500, "{path} -> {}", r.status);
    }
    // Still serving after all that.
    assert_eq!(cloud.anonymous.get("/identity/v3").await.status, StatusCode::OK);
    cloud.shutdown().await;
}

#[tokio::test]
async fn client_files_are_written_private_and_restart_reuses_data() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let cloud = TestCloud::start_with(|c| c.data_dir = path.clone()).await;
    for f in ["clouds.yaml", "openrc", "credentials.toml"] {
        let meta = std::fs::metadata(dir.path().join(f)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
    }
    let yaml = std::fs::read_to_string(dir.path().join("clouds.yaml")).unwrap();
    let creds = cloud.running.credentials.clone().unwrap();
    assert!(yaml.contains("stratus-admin:") && yaml.contains("stratus:"), "{yaml}");
    assert!(yaml.contains(&creds.admin_password));
    assert!(yaml.contains(&format!("{}/identity", cloud.url)));
    cloud.shutdown().await;

    // Second start on the same data dir: same passwords, nothing recreated, everything still works.
    let again = TestCloud::start_with(|c| c.data_dir = path.clone()).await;
    assert_eq!(again.running.credentials.as_ref().unwrap().admin_password, creds.admin_password);
    let r = again.admin.get("/identity/v3/auth/catalog").await;
    let catalog = r.json()["catalog"].as_array().unwrap().clone();
    assert_eq!(catalog.iter().filter(|s| s["type"] == "identity").count(), 1, "no duplicate services");
    let identity = catalog.iter().find(|s| s["type"] == "identity").unwrap();
    assert!(identity["endpoints"].as_array().unwrap().iter().all(|e| e["url"] == format!("{}/identity", again.url)),
        "endpoints follow the new listener");
    again.shutdown().await;
}

#[tokio::test]
async fn tokens_validate_over_http_as_split_services_do() {
    let cloud = TestCloud::start().await;
    let creds = cloud.running.credentials.clone().unwrap();
    let validator = auth::HttpValidator::new(auth::ServiceCredentials {
        auth_url: format!("{}/identity", cloud.url),
        username: "admin".into(),
        password: creds.admin_password.clone(),
        user_domain_name: "Default".into(),
        project_name: "admin".into(),
        project_domain_name: "Default".into(),
    })
    .unwrap();
    let ctx = validator.validate(cloud.member.token.as_deref().unwrap()).await.expect("member token validates");
    assert_eq!(ctx.project_name.as_deref(), Some("demo"));
    assert!(ctx.roles.iter().any(|r| r == "member") && ctx.roles.iter().any(|r| r == "reader"));
    assert!(!ctx.roles.iter().any(|r| r == "admin"));
    assert!(validator.validate("not-a-token").await.is_err());
    cloud.shutdown().await;
}

#[tokio::test]
async fn reader_holds_only_reader() {
    let cloud = TestCloud::start().await;
    let roles: Vec<_> =
        cloud.reader.token_body["token"]["roles"].as_array().unwrap().iter().map(|r| r["name"].clone()).collect();
    assert_eq!(roles, vec![Value::from("reader")]);
    cloud.shutdown().await;
}

/// A split deployment as `stratus serve` runs it: identity on PostgreSQL and MariaDB with the AMQP bus, and a
/// second process without identity that validates tokens over HTTP through its `[auth]` credentials.
#[tokio::test]
async fn split_deployment_on_server_databases_and_amqp() {
    let amqp = std::env::var("STRATUS_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    for backend in [db::Backend::Postgres, db::Backend::MySql] {
        let Some(test_db) = db::testing::test_database(backend).await else { continue };
        let dir = tempfile::tempdir().unwrap();
        let mut config = cloud::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.database.url = Some(test_db.url().to_string());
        config.bus.url = amqp.clone();
        config.identity.password_hash_rounds = 4;
        let opts = cloud::StartOptions { compute_agent: false, ..cloud::StartOptions::all_in_one() };
        let identity = cloud::start(config.clone(), opts).await.expect("identity process");
        let creds = identity.credentials.clone().unwrap();
        let admin = test_utils::Client::new(&identity.url, None).login("admin", &creds.admin_password, "admin").await;
        let member = test_utils::Client::new(&identity.url, None).login("demo", &creds.demo_password, "demo").await;

        // The other process: no identity in it, tokens validated over HTTP.
        let mut other = config.clone();
        other.auth = Some(cloud::config::ServiceAuth {
            url: format!("{}/identity", identity.url),
            username: "admin".into(),
            password: creds.admin_password.clone(),
            user_domain_name: "Default".into(),
            project_name: "admin".into(),
            project_domain_name: "Default".into(),
        });
        let remote = cloud::start(other, cloud::StartOptions { services: vec![], migrate: false, bootstrap: false, compute_agent: false, volume_agent: false, network_agent: false })
            .await
            .expect("second process");
        assert!(remote.cloud.identity.is_none());
        let ctx = remote.cloud.validator.validate(member.token.as_deref().unwrap()).await.expect("validates over HTTP");
        assert_eq!(ctx.project_name.as_deref(), Some("demo"), "{backend:?}");
        assert!(remote.cloud.validator.validate("garbage").await.is_err());
        // The second process serves its root and styled 404s too.
        let r = test_utils::Client::new(&remote.url, None).get("/identity/v3").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(admin.get("/identity/v3/auth/catalog").await.status.is_success());
        remote.shutdown().await.unwrap();
        identity.shutdown().await.unwrap();
        test_db.cleanup().await;
    }
}
