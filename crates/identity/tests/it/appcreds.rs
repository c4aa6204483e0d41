//! Application credentials, access rules and trusts: the datastore and service on every backend, and the HTTP API
//! through the whole-cloud harness.

use db::testing::{TestDb, test_databases};
use identity::{
    BootstrapSpec, Error, Identity, IdentityConfig,
    service::{AppCredRef, Credentials, DomainRef, ScopeRequest, UserRef},
    store::{AccessRuleRow, AppCredRow, TrustRow},
    token::Scope,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_utils::{Client, TestCloud};

// ---- service and datastore, on every backend

fn spec() -> BootstrapSpec {
    BootstrapSpec {
        admin_password: "secret-admin".into(),
        admin_username: "admin".into(),
        admin_project: "admin".into(),
        region: "RegionOne".into(),
        services: vec![],
        members: vec![("demo".into(), "demo".into(), "secret-demo".into(), "member".into())],
        reset_passwords: false,
    }
}

async fn identity_on(db: &TestDb, keys: &std::path::Path) -> Identity {
    let mut config = IdentityConfig::new(keys.to_path_buf());
    config.password_hash_rounds = 4;
    let identity = Identity::new((**db).clone(), config).await.expect("identity");
    identity.migrate().await.expect("migrate");
    identity.bootstrap(&spec()).await.expect("bootstrap");
    identity
}

fn password(user: &str, pw: &str) -> Credentials {
    Credentials::Password {
        user: UserRef::Name { name: user.into(), domain: DomainRef::Id("default".into()) },
        password: pw.into(),
    }
}

struct Ids {
    admin: String,
    demo: String,
    admin_project: String,
    demo_project: String,
    member: String,
    reader: String,
}

async fn ids(identity: &Identity) -> Ids {
    let store = identity.store();
    let user = |n: &'static str| async move { store.user_get_by_name("default", n).await.unwrap().unwrap().id };
    let project = |n: &'static str| async move { store.project_get_by_name("default", n).await.unwrap().unwrap().id };
    let role = |n: &'static str| async move { store.role_get_by_name(n).await.unwrap().unwrap().id };
    Ids {
        admin: user("admin").await,
        demo: user("demo").await,
        admin_project: project("admin").await,
        demo_project: project("demo").await,
        member: role("member").await,
        reader: role("reader").await,
    }
}

#[tokio::test]
async fn store_and_service_on_every_backend() {
    for db in test_databases().await {
        let keys = tempfile::tempdir().unwrap();
        let identity = identity_on(&db, keys.path()).await;
        let ids = ids(&identity).await;
        let store = identity.store();

        // Application credentials: roles and access rules round-trip; identical rules are shared.
        let rule = |id: &str| AccessRuleRow {
            id: id.into(),
            user_id: String::new(),
            service: "compute".into(),
            path: "/v2.1/servers/*/ips".into(),
            method: "GET".into(),
        };
        let mut first = AppCredRow {
            id: "ac-1".into(),
            name: "first".into(),
            user_id: ids.demo.clone(),
            project_id: ids.demo_project.clone(),
            secret_hash: identity.hash_password("s3cret").await.unwrap(),
            description: Some("monitoring".into()),
            expires_at: None,
            unrestricted: false,
            role_ids: vec![ids.reader.clone()],
            access_rules: vec![rule("rule-a")],
        };
        store.application_credential_create(&mut first).await.unwrap();
        let mut second = AppCredRow {
            id: "ac-2".into(),
            name: "second".into(),
            expires_at: Some(1),
            access_rules: vec![rule("rule-b")],
            ..first.clone()
        };
        store.application_credential_create(&mut second).await.unwrap();
        assert_eq!(second.access_rules[0].id, "rule-a", "an identical access rule is reused");
        let got = store.application_credential_get("ac-1").await.unwrap().unwrap();
        assert_eq!(got, first);
        let by_name = store.application_credential_get_by_name(&ids.demo, "second").await.unwrap().unwrap();
        assert_eq!(by_name.expires_at, Some(1));
        assert_eq!(store.application_credential_list(&ids.demo, None).await.unwrap().len(), 2);
        assert_eq!(store.application_credential_list(&ids.demo, Some("first")).await.unwrap().len(), 1);
        assert!(store.application_credential_list(&ids.admin, None).await.unwrap().is_empty());
        let mut dup = AppCredRow { id: "ac-3".into(), access_rules: vec![], ..first.clone() };
        match store.application_credential_create(&mut dup).await {
            Err(Error::Db(e)) => assert!(e.is_unique_violation(), "{e}"),
            other => panic!("duplicate name must be refused: {other:?}"),
        }

        // Authenticating: by id and by name + user; wrong secret and expired credentials are refused.
        let (token, info) = identity
            .authenticate(
                Credentials::ApplicationCredential {
                    credential: AppCredRef::Id("ac-1".into()),
                    secret: "s3cret".into(),
                },
                ScopeRequest::Default,
            )
            .await
            .unwrap();
        assert_eq!(
            info.payload.scope,
            Scope::ApplicationCredential { project_id: ids.demo_project.clone(), app_cred_id: "ac-1".into() }
        );
        assert_eq!(info.roles.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [ids.reader.as_str()]);
        assert_eq!(info.payload.methods, ["application_credential"]);
        assert!(info.context().application_credential_id.is_some());
        let by_name = AppCredRef::Name {
            name: "first".into(),
            user: UserRef::Name { name: "demo".into(), domain: DomainRef::Name("Default".into()) },
        };
        let creds = |c: AppCredRef, s: &str| Credentials::ApplicationCredential { credential: c, secret: s.into() };
        identity.authenticate(creds(by_name.clone(), "s3cret"), ScopeRequest::Default).await.unwrap();
        for (c, secret) in
            [(by_name, "wrong"), (AppCredRef::Id("ac-2".into()), "s3cret"), (AppCredRef::Id("nope".into()), "x")]
        {
            let r = identity.authenticate(creds(c, secret), ScopeRequest::Default).await;
            assert!(matches!(r, Err(Error::Unauthorized)), "{r:?}");
        }
        let scoped = identity
            .authenticate(
                creds(AppCredRef::Id("ac-1".into()), "s3cret"),
                ScopeRequest::ProjectId(ids.demo_project.clone()),
            )
            .await;
        assert!(matches!(scoped, Err(Error::BadRequest(_))), "app creds cannot ask for a scope");
        // Deleting the credential kills its tokens.
        assert!(identity.validate(&token).await.is_ok());
        assert!(store.application_credential_delete("ac-1").await.unwrap());
        identity.reload_revocations().await.unwrap(); // drops cached validations, as the API's delete does
        assert!(matches!(identity.validate(&token).await, Err(Error::InvalidToken)));
        assert!(!store.application_credential_delete("ac-1").await.unwrap());
        assert!(store.access_rule_in_use("rule-a").await.unwrap(), "still used by ac-2");
        store.application_credential_delete("ac-2").await.unwrap();
        assert!(!store.access_rule_in_use("rule-a").await.unwrap());
        assert_eq!(store.access_rule_list(&ids.demo).await.unwrap().len(), 1, "rules outlive credentials");
        assert!(store.access_rule_delete("rule-a").await.unwrap());

        // Trusts: admin delegates member on the admin project to demo, twice at most.
        let trust = TrustRow {
            id: "trust-1".into(),
            trustor_user_id: ids.admin.clone(),
            trustee_user_id: ids.demo.clone(),
            project_id: Some(ids.admin_project.clone()),
            impersonation: true,
            expires_at: None,
            remaining_uses: Some(2),
            allow_redelegation: false,
            redelegation_count: None,
            redelegated_trust_id: None,
            role_ids: vec![ids.member.clone()],
        };
        store.trust_create(&trust).await.unwrap();
        assert_eq!(store.trust_get("trust-1").await.unwrap().unwrap(), trust);
        assert_eq!(store.trust_list(Some(&ids.admin), None).await.unwrap().len(), 1);
        assert_eq!(store.trust_list(None, Some(&ids.demo)).await.unwrap().len(), 1);
        assert!(store.trust_list(None, Some(&ids.admin)).await.unwrap().is_empty());
        assert!(store.trust_list(Some(&ids.admin), Some(&ids.admin)).await.unwrap().is_empty());

        let trust_scope = || ScopeRequest::Trust("trust-1".into());
        let (trust_token, info) = identity.authenticate(password("demo", "secret-demo"), trust_scope()).await.unwrap();
        assert_eq!(info.user.id, ids.admin, "impersonation: the token acts as the trustor");
        assert_eq!(info.payload.user_id, ids.demo, "the payload keeps the trustee");
        assert_eq!(info.roles.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [ids.member.as_str()]);
        assert_eq!(info.context().trust_id.as_deref(), Some("trust-1"));
        // Only the trustee may use it.
        let r = identity.authenticate(password("admin", "secret-admin"), trust_scope()).await;
        assert!(matches!(r, Err(Error::Forbidden(_))), "{r:?}");
        identity.authenticate(password("demo", "secret-demo"), trust_scope()).await.unwrap();
        let r = identity.authenticate(password("demo", "secret-demo"), trust_scope()).await;
        assert!(matches!(r, Err(Error::NotFound { .. })), "uses exhausted: {r:?}");
        assert_eq!(store.trust_get("trust-1").await.unwrap().unwrap().remaining_uses, Some(0));
        assert!(identity.validate(&trust_token).await.is_ok(), "issued tokens outlive the uses");
        // Trust-scoped tokens cannot be rescoped.
        let r = identity.authenticate(Credentials::Token { token: trust_token.clone() }, ScopeRequest::Default).await;
        assert!(matches!(r, Err(Error::Forbidden(_))), "{r:?}");
        assert!(store.trust_delete("trust-1").await.unwrap());
        identity.reload_revocations().await.unwrap();
        assert!(matches!(identity.validate(&trust_token).await, Err(Error::InvalidToken)));
        assert!(store.trust_get("trust-1").await.unwrap().is_none());
        // Clean-up helpers for user and project deletion.
        store.trust_create(&TrustRow { id: "trust-2".into(), ..trust.clone() }).await.unwrap();
        assert_eq!(store.trust_delete_for_user(&ids.demo).await.unwrap(), 1, "as trustee");
        assert!(store.trust_get("trust-2").await.unwrap().is_none());
        for (id, name) in [("ac-4", "four"), ("ac-5", "five")] {
            let mut c = AppCredRow { id: id.into(), name: name.into(), access_rules: vec![], ..first.clone() };
            store.application_credential_create(&mut c).await.unwrap();
        }
        assert_eq!(store.application_credential_delete_for(None, Some(&ids.admin_project)).await.unwrap(), 0);
        assert_eq!(store.application_credential_delete_for(None, Some(&ids.demo_project)).await.unwrap(), 2);
        assert!(store.application_credential_list(&ids.demo, None).await.unwrap().is_empty());
        eprintln!("passed on {:?}", db.backend());
        db.cleanup().await;
    }
}

// ---- HTTP

const APP_CREDS: &str = "/identity/v3/users/{}/application_credentials";

fn user_id(c: &Client) -> String {
    c.token_body["token"]["user"]["id"].as_str().expect("user id").to_string()
}

fn project_id(c: &Client) -> String {
    c.token_body["token"]["project"]["id"].as_str().expect("project id").to_string()
}

fn app_creds_path(c: &Client) -> String {
    APP_CREDS.replace("{}", &user_id(c))
}

async fn app_cred_login(cloud: &TestCloud, cred: Value) -> test_utils::Response {
    let body = json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": cred}}});
    cloud.anonymous.post("/identity/v3/auth/tokens", &body).await
}

fn role_names(token: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        token["token"]["roles"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn application_credentials_over_http() {
    let cloud = TestCloud::start().await;
    let path = app_creds_path(&cloud.member);

    // Create: the secret is generated and shown once; roles default to the token's, here narrowed to reader.
    let r = cloud
        .member
        .post(&path, &json!({"application_credential": {"name": "monitor", "roles": [{"name": "reader"}], "extra": 1}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let created = r.json()["application_credential"].clone();
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 64);
    assert_eq!(created["project_id"], project_id(&cloud.member).as_str());
    assert_eq!(created["unrestricted"], false);
    assert_eq!(created["roles"].as_array().unwrap().len(), 1);
    assert!(created["links"]["self"].as_str().unwrap().ends_with(&format!("application_credentials/{id}")));
    let shown = cloud.member.get(&format!("{path}/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(shown.json()["application_credential"].get("secret").is_none(), "secret is never shown again");
    assert!(!shown.text.contains(&secret));
    let dup = cloud.member.post(&path, &json!({"application_credential": {"name": "monitor"}})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.text);
    let unassigned =
        cloud.member.post(&path, &json!({"application_credential": {"name": "x", "roles": [{"name": "admin"}]}})).await;
    assert_eq!(unassigned.status, StatusCode::BAD_REQUEST, "{}", unassigned.text);

    // Authenticate by id + secret: the credential's project and exactly its roles.
    let r = app_cred_login(&cloud, json!({"id": id, "secret": secret})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = r.header("x-subject-token").unwrap().to_string();
    let body = r.json();
    assert_eq!(body["token"]["project"]["id"], project_id(&cloud.member).as_str());
    assert_eq!(role_names(&body), ["reader"]);
    assert_eq!(body["token"]["methods"], json!(["application_credential"]));
    assert_eq!(body["token"]["application_credential"], json!({"id": id, "name": "monitor", "restricted": true}));
    // And by name + user (name and domain).
    let by_name = json!({"name": "monitor", "secret": secret, "user": {"name": "demo", "domain": {"id": "default"}}});
    assert_eq!(app_cred_login(&cloud, by_name).await.status, StatusCode::CREATED);
    let by_user_id = json!({"name": "monitor", "secret": secret, "user": {"id": user_id(&cloud.member)}});
    assert_eq!(app_cred_login(&cloud, by_user_id).await.status, StatusCode::CREATED);
    assert_eq!(app_cred_login(&cloud, json!({"id": id, "secret": "wrong"})).await.status, StatusCode::UNAUTHORIZED);

    // A restricted credential's token may not create or delete credentials, nor create trusts.
    let restricted = cloud.member.with_token(Some(token.clone()));
    let r = restricted.post(&path, &json!({"application_credential": {"name": "another"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(restricted.delete(&format!("{path}/{id}")).await.status, StatusCode::FORBIDDEN);
    let trust = json!({"trust": {"trustor_user_id": user_id(&cloud.member), "trustee_user_id": user_id(&cloud.admin),
        "impersonation": false, "project_id": project_id(&cloud.member), "roles": [{"name": "reader"}]}});
    assert_eq!(restricted.post("/identity/v3/OS-TRUST/trusts", &trust).await.status, StatusCode::FORBIDDEN);
    assert_eq!(cloud.member.get(&path).await.json()["application_credentials"].as_array().unwrap().len(), 1);

    // Other users may not see or manage it; admins may.
    assert_eq!(cloud.reader.get(&path).await.status, StatusCode::FORBIDDEN);
    assert_eq!(cloud.reader.get(&format!("{path}/{id}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(cloud.reader.delete(&format!("{path}/{id}")).await.status, StatusCode::FORBIDDEN);
    let r = cloud.reader.post(&path, &json!({"application_credential": {"name": "sneaky"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(cloud.admin.get(&path).await.status, StatusCode::OK);

    // List, and filter by name.
    let r = cloud
        .member
        .post(&path, &json!({"application_credential": {"name": "other", "secret": "my-own-secret"}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["application_credential"]["secret"], "my-own-secret");
    assert_eq!(
        role_names(&json!({"token": {"roles": r.json()["application_credential"]["roles"]}})),
        ["member", "reader"]
    );
    let all = cloud.member.get(&path).await.json();
    assert_eq!(all["application_credentials"].as_array().unwrap().len(), 2);
    let one = cloud.member.get(&format!("{path}?name=other")).await.json();
    assert_eq!(one["application_credentials"].as_array().unwrap().len(), 1);
    assert_eq!(one["application_credentials"][0]["name"], "other");

    // Delete: the credential's tokens die with it.
    assert_eq!(restricted.get("/identity/v3/auth/catalog").await.status, StatusCode::OK);
    assert_eq!(cloud.member.delete(&format!("{path}/{id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(restricted.get("/identity/v3/auth/catalog").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(cloud.member.get(&format!("{path}/{id}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(cloud.member.delete(&format!("{path}/{id}")).await.status, StatusCode::NOT_FOUND);

    // The owner losing the role on the project takes the credential's roles, and so its tokens, away.
    let r = cloud.member.post(&path, &json!({"application_credential": {"name": "doomed", "secret": "doomed"}})).await;
    let doomed = json!({"id": r.json()["application_credential"]["id"], "secret": "doomed"});
    let r = app_cred_login(&cloud, doomed.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let doomed_client = cloud.member.with_token(r.header("x-subject-token").map(str::to_string));
    assert_eq!(doomed_client.get("/identity/v3/auth/catalog").await.status, StatusCode::OK);
    unassign_member(&cloud, &cloud.member).await;
    assert_eq!(doomed_client.get("/identity/v3/auth/catalog").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app_cred_login(&cloud, doomed).await.status, StatusCode::UNAUTHORIZED);
    cloud.shutdown().await;
}

/// The admin removes `member` (which implies `reader`) from the client's user on its project.
async fn unassign_member(cloud: &TestCloud, c: &Client) {
    let roles = cloud.admin.get("/identity/v3/roles?name=member").await.json();
    let member = roles["roles"][0]["id"].as_str().expect("member role").to_string();
    let grant = format!("/identity/v3/projects/{}/users/{}/roles/{member}", project_id(c), user_id(c));
    assert_eq!(cloud.admin.delete(&grant).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn expired_credentials_and_access_rules() {
    let cloud = TestCloud::start().await;
    let path = app_creds_path(&cloud.member);
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let rules = json!([{"service": "compute", "path": "/v2.1/servers/*/ips", "method": "GET"}]);
    let r = cloud
        .member
        .post(&path, &json!({"application_credential": {"name": "brief", "expires_at": soon, "access_rules": rules}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let created = r.json()["application_credential"].clone();
    assert_eq!(created["expires_at"], soon.as_str(), "expiry echoed as clients send it");
    let mut rule = created["access_rules"][0].clone();
    let rule_id = rule.as_object_mut().unwrap().remove("id").unwrap();
    assert_eq!(rule, rules[0]);
    let cred = json!({"id": created["id"], "secret": created["secret"]});
    let r = app_cred_login(&cloud, cred.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["token"]["application_credential"]["access_rules"][0]["id"], rule_id);
    let token_expiry = r.json()["token"]["expires_at"].as_str().unwrap().to_string();
    assert!(token_expiry.trim_end_matches('Z') <= soon.as_str(), "the token does not outlive the credential");

    // Access rules: listed for the owner, not deletable while in use.
    let user = user_id(&cloud.member);
    let rules_path = format!("/identity/v3/users/{user}/access_rules");
    let listed = cloud.member.get(&rules_path).await.json();
    assert_eq!(listed["access_rules"].as_array().unwrap().len(), 1);
    let rule_path = format!("{rules_path}/{}", rule_id.as_str().unwrap());
    assert_eq!(cloud.member.get(&rule_path).await.status, StatusCode::OK);
    assert_eq!(cloud.reader.get(&rule_path).await.status, StatusCode::FORBIDDEN);
    assert_eq!(cloud.member.delete(&rule_path).await.status, StatusCode::FORBIDDEN, "in use");

    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(app_cred_login(&cloud, cred).await.status, StatusCode::UNAUTHORIZED, "expired");

    let id = created["id"].as_str().unwrap();
    assert_eq!(cloud.member.delete(&format!("{path}/{id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(cloud.member.get(&rule_path).await.status, StatusCode::OK, "rules outlive the credential");
    assert_eq!(cloud.member.delete(&rule_path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(cloud.member.get(&rule_path).await.status, StatusCode::NOT_FOUND);
    cloud.shutdown().await;
}

async fn trust_login(cloud: &TestCloud, trustee: &Client, trust_id: &str) -> test_utils::Response {
    let body = json!({"auth": {
        "identity": {"methods": ["token"], "token": {"id": trustee.token.clone().unwrap()}},
        "scope": {"OS-TRUST:trust": {"id": trust_id}},
    }});
    cloud.anonymous.post("/identity/v3/auth/tokens", &body).await
}

#[tokio::test]
async fn trusts_over_http() {
    let cloud = TestCloud::start().await;
    let (trustor, trustee) = (&cloud.member, &cloud.admin);
    let (trustor_id, trustee_id, project) = (user_id(trustor), user_id(trustee), project_id(trustor));
    let trust_body = |impersonation: bool, extra: Value| {
        let mut t = json!({"trustor_user_id": trustor_id, "trustee_user_id": trustee_id, "project_id": project,
                           "impersonation": impersonation, "roles": [{"name": "member"}]});
        t.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"trust": t})
    };
    const TRUSTS: &str = "/identity/v3/OS-TRUST/trusts";

    // Only the trustor may create; only roles the trustor holds; a bad expiry is a 400.
    assert_eq!(cloud.reader.post(TRUSTS, &trust_body(false, json!({}))).await.status, StatusCode::FORBIDDEN);
    let r = trustor.post(TRUSTS, &trust_body(false, json!({"roles": [{"name": "admin"}]}))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = trustor.post(TRUSTS, &trust_body(false, json!({"expires_at": "bad.123Z"}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    let r = trustor.post(TRUSTS, &trust_body(false, json!({"expires_at": "2099-01-02T03:04:05Z"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let trust = r.json()["trust"].clone();
    let trust_id = trust["id"].as_str().unwrap().to_string();
    assert_eq!(trust["expires_at"], "2099-01-02T03:04:05.000000Z");
    assert_eq!(trust["roles"][0]["name"], "member");
    assert_eq!(trust["impersonation"], false);
    assert!(trust["links"]["self"].as_str().unwrap().contains("v3/OS-TRUST/trusts"));

    // Reading: trustor and trustee yes, others no; roles of the trust.
    let one = format!("{TRUSTS}/{trust_id}");
    assert_eq!(trustor.get(&one).await.status, StatusCode::OK);
    assert_eq!(trustee.get(&one).await.status, StatusCode::OK);
    assert_eq!(cloud.reader.get(&one).await.status, StatusCode::FORBIDDEN);
    assert_eq!(cloud.reader.get(&format!("{TRUSTS}?trustor_user_id={trustor_id}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(cloud.reader.get(TRUSTS).await.status, StatusCode::FORBIDDEN);
    let listed = trustor.get(&format!("{TRUSTS}/?trustor_user_id={trustor_id}")).await.json();
    assert_eq!(listed["trusts"].as_array().unwrap().len(), 1);
    assert!(listed["trusts"][0].get("roles").is_none(), "lists summarise");
    let roles = trustor.get(&format!("{one}/roles")).await.json();
    let member_id = roles["roles"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(roles["roles"].as_array().unwrap().len(), 1);
    assert_eq!(trustor.get(&format!("{one}/roles/{member_id}")).await.status, StatusCode::OK);
    let head = trustor.request(Method::HEAD, &format!("{one}/roles/{member_id}"), None, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(trustor.get(&format!("{one}/roles/nope")).await.status, StatusCode::NOT_FOUND);

    // The trustee gets a trust-scoped token with the trust's roles, as itself (no impersonation).
    let r = trust_login(&cloud, trustee, &trust_id).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let body = r.json();
    let trust_token = r.header("x-subject-token").unwrap().to_string();
    assert_eq!(body["token"]["user"]["id"], trustee_id.as_str());
    assert_eq!(body["token"]["project"]["id"], project.as_str());
    assert_eq!(role_names(&body), ["member"]);
    assert_eq!(
        body["token"]["OS-TRUST:trust"],
        json!({"id": trust_id, "impersonation": false, "trustee_user": {"id": trustee_id}, "trustor_user": {"id": trustor_id}})
    );
    assert_eq!(trust_login(&cloud, &cloud.reader, &trust_id).await.status, StatusCode::FORBIDDEN, "not the trustee");

    // Deleting: others may not; the trustor may, and the trust's tokens die.
    let with_trust = trustee.with_token(Some(trust_token));
    assert_eq!(with_trust.get("/identity/v3/auth/catalog").await.status, StatusCode::OK);
    assert_eq!(cloud.reader.delete(&one).await.status, StatusCode::FORBIDDEN);
    assert_eq!(trustor.delete(&one).await.status, StatusCode::NO_CONTENT);
    assert_eq!(trustor.get(&one).await.status, StatusCode::NOT_FOUND);
    assert_eq!(with_trust.get("/identity/v3/auth/catalog").await.status, StatusCode::UNAUTHORIZED);

    // Impersonation: the token acts as the trustor. Remaining uses run out.
    let r = trustor.post(TRUSTS, &trust_body(true, json!({"remaining_uses": 1}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let trust_id = r.json()["trust"]["id"].as_str().unwrap().to_string();
    let r = trust_login(&cloud, trustee, &trust_id).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["token"]["user"]["id"], trustor_id.as_str());
    assert_eq!(r.json()["token"]["OS-TRUST:trust"]["impersonation"], true);
    assert_eq!(trust_login(&cloud, trustee, &trust_id).await.status, StatusCode::NOT_FOUND, "uses exhausted");

    // The trustor losing the delegated role takes it away from the trust's tokens.
    let r = trustor.post(TRUSTS, &trust_body(false, json!({}))).await;
    let trust_id = r.json()["trust"]["id"].as_str().unwrap().to_string();
    let r = trust_login(&cloud, trustee, &trust_id).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let with_trust = trustee.with_token(r.header("x-subject-token").map(str::to_string));
    assert_eq!(with_trust.get("/identity/v3/auth/catalog").await.status, StatusCode::OK);
    unassign_member(&cloud, trustor).await;
    assert_eq!(with_trust.get("/identity/v3/auth/catalog").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(trust_login(&cloud, trustee, &trust_id).await.status, StatusCode::UNAUTHORIZED);
    cloud.shutdown().await;
}

/// Upstream's clean-up: a project takes its application credentials with it; a user their credentials and trusts.
#[tokio::test]
async fn deleting_a_user_or_project_removes_what_they_owned() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;
    let r = admin.post("/identity/v3/projects", &json!({"project": {"name": "owned", "domain_id": "default"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let p = r.json()["project"]["id"].as_str().unwrap().to_string();
    let body = json!({"user": {"name": "owner", "password": "Owner-pw-1", "domain_id": "default"}});
    let r = admin.post("/identity/v3/users", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let u = r.json()["user"]["id"].as_str().unwrap().to_string();
    let member_role = admin.get("/identity/v3/roles?name=member").await.json()["roles"][0]["id"].as_str().unwrap().to_string();
    let r = admin.request(Method::PUT, &format!("/identity/v3/projects/{p}/users/{u}/roles/{member_role}"), None, &[]).await;
    assert!(r.status.is_success(), "{}", r.text);
    let owner = cloud.anonymous.login("owner", "Owner-pw-1", "owned").await;

    let r = owner.post(&format!("/identity/v3/users/{u}/application_credentials"), &json!({"application_credential": {"name": "ac"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let blob = json!({"access": "owned-access", "secret": "owned-secret"}).to_string();
    let r = owner
        .post("/identity/v3/credentials", &json!({"credential": {"type": "ec2", "user_id": u, "project_id": p, "blob": blob}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let demo_id = cloud.member.token_body["token"]["user"]["id"].as_str().unwrap().to_string();
    let trust = json!({"trust": {"trustor_user_id": u, "trustee_user_id": demo_id, "project_id": p,
        "impersonation": false, "roles": [{"name": "member"}]}});
    let r = owner.post("/identity/v3/OS-TRUST/trusts", &trust).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let app_creds = format!("/identity/v3/users/{u}/application_credentials");
    let credentials = format!("/identity/v3/credentials?user_id={u}");
    let trusts = format!("/identity/v3/OS-TRUST/trusts?trustor_user_id={u}");
    let count = |r: test_utils::Response, key: &str| r.json()[key].as_array().map(Vec::len).unwrap_or(usize::MAX);
    assert_eq!(count(admin.get(&app_creds).await, "application_credentials"), 1);
    assert_eq!(count(admin.get(&credentials).await, "credentials"), 1);
    assert_eq!(count(admin.get(&trusts).await, "trusts"), 1);

    assert_eq!(admin.delete(&format!("/identity/v3/projects/{p}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(count(admin.get(&app_creds).await, "application_credentials"), 0, "bound to the deleted project");

    assert_eq!(admin.delete(&format!("/identity/v3/users/{u}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(count(admin.get(&credentials).await, "credentials"), 0);
    assert_eq!(count(admin.get(&trusts).await, "trusts"), 0);
    cloud.shutdown().await;
}
