//! `HttpValidator` (and `CachingValidator` in front of it) against the loopback Keystone.

use std::sync::Arc;

use auth::{AuthError, CachingValidator, HttpValidator, ServiceCredentials, TokenValidator};
use chrono::Duration;
use serde_json::{Value, json};

use crate::keystone::{self, Keystone, SERVICE_PASSWORD, SERVICE_USER, timestamp};

fn credentials(url: &str, password: &str) -> ServiceCredentials {
    ServiceCredentials {
        auth_url: format!("{url}/v3"),
        username: SERVICE_USER.into(),
        password: password.into(),
        user_domain_name: "Default".into(),
        project_name: "service".into(),
        project_domain_name: "Default".into(),
    }
}

async fn setup() -> (Arc<Keystone>, HttpValidator) {
    let (ks, url) = keystone::start().await;
    for (token, body) in [
        ("project-token", project_token()),
        ("domain-token", domain_token()),
        ("system-token", system_token()),
        ("trust-token", trust_token()),
    ] {
        ks.add_subject(token, body);
    }
    let validator = HttpValidator::new(credentials(&url, SERVICE_PASSWORD)).unwrap();
    (ks, validator)
}

fn user() -> Value {
    json!({"domain": {"id": "default", "name": "Default"}, "id": "423f19a4ac1e4f48bbb4180756e6eb6c",
           "name": "alice", "password_expires_at": null})
}

fn project_token() -> Value {
    json!({"token": {
        "methods": ["application_credential"],
        "user": user(),
        "audit_ids": ["mAjXQhiYRyKwkB4qygdLVg"],
        "expires_at": "2099-11-06T15:32:17.893769Z",
        "issued_at": "2099-11-06T14:32:17.893797Z",
        "project": {"domain": {"id": "5a75994a383c449184053ff7270c4e91", "name": "Engineering"},
                    "id": "8538a3f13f9541b28c2620eb19065e45", "name": "web"},
        "is_domain": false,
        "roles": [
            {"id": "51cc68287d524c759f47c811e6463340", "name": "member"},
            {"id": "5318e65d75574c17bf5339d3df33a5a3", "name": "reader"}
        ],
        "is_admin_project": false,
        "application_credential": {"id": "aa809205ed614a0e854bac92c0768bb9", "name": "ci",
                                   "restricted": true, "access_rules": []}
    }})
}

fn domain_token() -> Value {
    json!({"token": {
        "methods": ["password"],
        "user": user(),
        "audit_ids": ["Pqh4vZ6XTaWoTm3lK7wR1A"],
        "expires_at": timestamp(Duration::hours(1)),
        "issued_at": timestamp(Duration::zero()),
        "domain": {"id": "5a75994a383c449184053ff7270c4e91", "name": "Engineering"},
        "roles": [{"id": "c703057be878458588961ce9a0ce686b", "name": "admin"},
                  {"id": "51cc68287d524c759f47c811e6463340", "name": "member"}]
    }})
}

fn system_token() -> Value {
    json!({"token": {
        "methods": ["password", "totp"],
        "user": {"domain": {"id": "default", "name": "Default"}, "id": "ee4dfb6e5540447cb3741905149d9b6e",
                 "name": "admin", "password_expires_at": null},
        "audit_ids": ["3T2dc1CGQxyJsHdDu1xkcw", "LH3zqcGhSaeiH0Y5M9CCtA"],
        "expires_at": timestamp(Duration::hours(1)),
        "issued_at": timestamp(Duration::zero()),
        "system": {"all": true},
        "roles": [{"id": "c703057be878458588961ce9a0ce686b", "name": "admin"},
                  {"id": "51cc68287d524c759f47c811e6463340", "name": "member"},
                  {"id": "5318e65d75574c17bf5339d3df33a5a3", "name": "reader"}]
    }})
}

fn trust_token() -> Value {
    json!({"token": {
        "methods": ["password"],
        "user": user(),
        "audit_ids": ["Z0q6q0mGQ9ysz0n0sWJ8Ag"],
        "expires_at": timestamp(Duration::hours(1)),
        "issued_at": timestamp(Duration::zero()),
        "project": {"domain": {"id": "default", "name": "Default"},
                    "id": "263fd9ed9f1a4d7fa1d7d2c6f1a0b3e4", "name": "demo"},
        "is_domain": false,
        "roles": [{"id": "51cc68287d524c759f47c811e6463340", "name": "member"}],
        "OS-TRUST:trust": {"id": "fe0aef5a4ce04b4d8b6e1f34c0d8a4b9", "impersonation": true,
                           "trustee_user": {"id": "423f19a4ac1e4f48bbb4180756e6eb6c"},
                           "trustor_user": {"id": "ee4dfb6e5540447cb3741905149d9b6e"}}
    }})
}

#[tokio::test]
async fn project_scoped_token() {
    let (_ks, v) = setup().await;
    let ctx = v.validate("project-token").await.unwrap();
    assert_eq!(ctx.user_id, "423f19a4ac1e4f48bbb4180756e6eb6c");
    assert_eq!(ctx.user_name, "alice");
    assert_eq!((ctx.user_domain_id.as_str(), ctx.user_domain_name.as_str()), ("default", "Default"));
    assert_eq!(ctx.project_id.as_deref(), Some("8538a3f13f9541b28c2620eb19065e45"));
    assert_eq!(ctx.project_name.as_deref(), Some("web"));
    assert_eq!(ctx.project_domain_id.as_deref(), Some("5a75994a383c449184053ff7270c4e91"));
    assert_eq!(ctx.project_domain_name.as_deref(), Some("Engineering"));
    assert_eq!((ctx.domain_id, ctx.system_scope.clone()), (None, None));
    assert_eq!(ctx.roles, ["member", "reader"]);
    assert_eq!(ctx.role_ids, ["51cc68287d524c759f47c811e6463340", "5318e65d75574c17bf5339d3df33a5a3"]);
    assert!(!ctx.is_admin_project);
    assert_eq!(ctx.audit_ids, ["mAjXQhiYRyKwkB4qygdLVg"]);
    assert_eq!(ctx.expires_at.to_rfc3339(), "2099-11-06T15:32:17.893769+00:00");
    assert_eq!(ctx.auth_methods, ["application_credential"]);
    assert_eq!(ctx.application_credential_id.as_deref(), Some("aa809205ed614a0e854bac92c0768bb9"));
    assert_eq!(ctx.trust_id, None);
}

#[tokio::test]
async fn domain_scoped_token() {
    let (_ks, v) = setup().await;
    let ctx = v.validate("domain-token").await.unwrap();
    assert_eq!(ctx.domain_id.as_deref(), Some("5a75994a383c449184053ff7270c4e91"));
    assert_eq!(ctx.domain_name.as_deref(), Some("Engineering"));
    assert_eq!((ctx.project_id.clone(), ctx.system_scope.clone()), (None, None));
    assert!(ctx.has_role("ADMIN"));
    assert!(!ctx.is_system_admin());
    // Keystone leaves is_admin_project out of non-project tokens; keystoneauth reads that as true.
    assert!(ctx.is_admin_project);
}

#[tokio::test]
async fn system_scoped_token() {
    let (_ks, v) = setup().await;
    let ctx = v.validate("system-token").await.unwrap();
    assert_eq!(ctx.system_scope.as_deref(), Some("all"));
    assert!(ctx.is_system_admin());
    assert_eq!((ctx.project_id.clone(), ctx.domain_id.clone()), (None, None));
    assert_eq!(ctx.auth_methods, ["password", "totp"]);
    assert_eq!(ctx.audit_ids.len(), 2);
}

#[tokio::test]
async fn trust_scoped_token() {
    let (_ks, v) = setup().await;
    let ctx = v.validate("trust-token").await.unwrap();
    assert_eq!(ctx.trust_id.as_deref(), Some("fe0aef5a4ce04b4d8b6e1f34c0d8a4b9"));
    assert_eq!(ctx.project_name.as_deref(), Some("demo"));
}

#[tokio::test]
async fn unknown_token_is_invalid() {
    let (ks, v) = setup().await;
    assert!(matches!(v.validate("no-such-token").await, Err(AuthError::Invalid)));
    // A token that cannot even be sent as a header is invalid without asking identity.
    let before = ks.validations();
    assert!(matches!(v.validate("bad\ntoken").await, Err(AuthError::Invalid)));
    assert_eq!(ks.validations(), before);
}

#[tokio::test]
async fn identity_errors_are_unavailable_not_invalid() {
    let (_ks, v) = setup().await;
    assert!(matches!(v.validate("boom").await, Err(AuthError::Unavailable(_))));
}

#[tokio::test]
async fn service_token_is_reused_while_fresh() {
    let (ks, v) = setup().await;
    for token in ["project-token", "domain-token", "system-token"] {
        v.validate(token).await.unwrap();
    }
    assert_eq!(ks.issued(), 1);
    assert_eq!(ks.validations(), 3);
}

#[tokio::test]
async fn service_token_is_renewed_after_a_401() {
    let (ks, v) = setup().await;
    v.validate("project-token").await.unwrap();
    assert_eq!(ks.issued(), 1);
    ks.revoke_service_tokens();
    let ctx = v.validate("project-token").await.unwrap();
    assert_eq!(ctx.project_name.as_deref(), Some("web"));
    assert_eq!(ks.issued(), 2);
    assert_eq!(ks.validations(), 3, "one rejected attempt, one retry");
    v.validate("project-token").await.unwrap();
    assert_eq!(ks.issued(), 2, "the renewed token is kept");
}

#[tokio::test]
async fn service_token_is_renewed_before_expiry() {
    let (ks, v) = setup().await;
    // Tokens with less than two minutes left are renewed before use.
    *ks.service_token_lifetime.lock().unwrap() = 60;
    v.validate("project-token").await.unwrap();
    v.validate("project-token").await.unwrap();
    assert_eq!(ks.issued(), 2);
    assert_eq!(ks.validations(), 2, "no request went out with a stale token");
}

#[tokio::test]
async fn rejected_service_credentials_are_unavailable() {
    let (ks, url) = keystone::start().await;
    ks.add_subject("project-token", project_token());
    let v = HttpValidator::new(credentials(&url, "wrong-password")).unwrap();
    assert!(matches!(v.validate("project-token").await, Err(AuthError::Unavailable(_))));
    assert_eq!(ks.validations(), 0);
}

#[tokio::test]
async fn unreachable_identity_is_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let v = HttpValidator::new(credentials(&url, SERVICE_PASSWORD)).unwrap();
    assert!(matches!(v.validate("project-token").await, Err(AuthError::Unavailable(_))));
}

#[tokio::test]
async fn cache_in_front_spares_identity() {
    let (ks, v) = setup().await;
    let cached = CachingValidator::new(v);
    for _ in 0..3 {
        cached.validate("system-token").await.unwrap();
        assert!(matches!(cached.validate("forged").await, Err(AuthError::Invalid)));
    }
    assert_eq!(ks.validations(), 2);
    cached.invalidate_all();
    cached.validate("system-token").await.unwrap();
    assert_eq!(ks.validations(), 3);
}
