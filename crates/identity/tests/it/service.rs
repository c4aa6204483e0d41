//! Service-level and datastore tests, on every database backend.


use chrono::Utc;
use db::testing::{TestDb, test_databases};
use identity::{
    BootstrapSpec, Error, Identity, IdentityConfig,
    service::{Credentials, DomainRef, ScopeRequest, UserRef},
};

fn spec() -> BootstrapSpec {
    BootstrapSpec {
        admin_password: "secret-admin".into(),
        admin_username: "admin".into(),
        admin_project: "admin".into(),
        region: "RegionOne".into(),
        services: vec![("identity".into(), "keystone".into(), "http://127.0.0.1:1/identity".into())],
        members: vec![("demo".into(), "demo".into(), "secret-demo".into(), "member".into())],
        reset_passwords: false,
    }
}

async fn identity_on(db: &TestDb, keys: &std::path::Path) -> Identity {
    let mut config = IdentityConfig::new(keys.to_path_buf());
    config.password_hash_rounds = 4;
    let identity = Identity::new((**db).clone(), config).await.expect("identity");
    identity.migrate().await.expect("migrate");
    identity
}

fn password(user: &str, pw: &str) -> Credentials {
    Credentials::Password {
        user: UserRef::Name { name: user.into(), domain: DomainRef::Id("default".into()) },
        password: pw.into(),
    }
}

fn project(name: &str) -> ScopeRequest {
    ScopeRequest::ProjectName { name: name.into(), domain: DomainRef::Name("Default".into()) }
}

/// Runs `body` once per backend with a fresh database and key repository.
macro_rules! on_every_backend {
    (|$id:ident| $body:block) => {{
        for db in test_databases().await {
            let keys = tempfile::tempdir().unwrap();
            let $id = identity_on(&db, keys.path()).await;
            let backend = db.backend();
            let run = async { $body };
            run.await;
            eprintln!("passed on {backend:?}");
            db.cleanup().await;
        }
    }};
}

#[tokio::test]
async fn bootstrap_is_idempotent_and_builds_the_catalog() {
    on_every_backend!(|identity| {
        identity.bootstrap(&spec()).await.unwrap();
        identity.bootstrap(&spec()).await.unwrap();
        identity.migrate().await.unwrap();
        let catalog = identity.catalog().await.unwrap();
        assert_eq!(catalog.len(), 1);
        assert_eq!(catalog[0].service.service_type, "identity");
        let mut interfaces: Vec<_> = catalog[0].endpoints.iter().map(|e| e.interface.as_str()).collect();
        interfaces.sort();
        assert_eq!(interfaces, ["admin", "internal", "public"]);
        let roles: Vec<_> = identity.store().role_list().await.unwrap().into_iter().map(|r| r.name).collect();
        for r in ["admin", "manager", "member", "reader"] {
            assert_eq!(roles.iter().filter(|x| *x == r).count(), 1, "{r} exactly once");
        }
    });
}

#[tokio::test]
async fn password_auth_scopes_and_implied_roles() {
    on_every_backend!(|identity| {
        identity.bootstrap(&spec()).await.unwrap();
        let (token, info) = identity.authenticate(password("admin", "secret-admin"), project("admin")).await.unwrap();
        let mut roles: Vec<_> = info.roles.iter().map(|r| r.name.clone()).collect();
        roles.sort();
        assert_eq!(roles, ["admin", "manager", "member", "reader"], "admin implies manager implies member implies reader");
        let validated = identity.validate(&token).await.unwrap();
        assert_eq!(validated.user.name, "admin");
        assert_eq!(validated.project.as_ref().unwrap().0.name, "admin");

        let (_, demo) = identity.authenticate(password("demo", "secret-demo"), project("demo")).await.unwrap();
        let mut roles: Vec<_> = demo.roles.iter().map(|r| r.name.clone()).collect();
        roles.sort();
        assert_eq!(roles, ["member", "reader"]);
        let ctx = demo.context();
        assert_eq!(ctx.project_name.as_deref(), Some("demo"));
        assert!(ctx.system_scope.is_none());

        let (_, system) = identity.authenticate(password("admin", "secret-admin"), ScopeRequest::System).await.unwrap();
        assert_eq!(system.context().system_scope.as_deref(), Some("all"));
        let (_, unscoped) = identity.authenticate(password("admin", "secret-admin"), ScopeRequest::Unscoped).await.unwrap();
        assert!(unscoped.roles.is_empty());
        // No scope asked: the default project.
        let (_, default) = identity.authenticate(password("demo", "secret-demo"), ScopeRequest::Default).await.unwrap();
        assert_eq!(default.project.as_ref().unwrap().0.name, "demo");
    });
}

#[tokio::test]
async fn refusals_are_unauthorized() {
    on_every_backend!(|identity| {
        identity.bootstrap(&spec()).await.unwrap();
        for (user, pw, scope) in [
            ("admin", "wrong", project("admin")),
            ("nobody", "secret-admin", project("admin")),
            ("demo", "secret-demo", project("admin")), // no role there
            ("demo", "secret-demo", ScopeRequest::System),
            ("demo", "secret-demo", project("no-such-project")),
        ] {
            let r = identity.authenticate(password(user, pw), scope).await;
            assert!(matches!(r, Err(Error::Unauthorized)), "{user}: {r:?}");
        }
    });
}

#[tokio::test]
async fn revocation_and_rescoping() {
    on_every_backend!(|identity| {
        identity.bootstrap(&spec()).await.unwrap();
        let (token, first) = identity.authenticate(password("admin", "secret-admin"), ScopeRequest::Unscoped).await.unwrap();
        let (scoped, info) =
            identity.authenticate(Credentials::Token { token: token.clone() }, project("admin")).await.unwrap();
        assert_eq!(info.payload.expires_at, first.payload.expires_at, "rescoping keeps the expiry");
        assert_eq!(info.payload.audit_ids[1], first.payload.audit_ids[0], "audit chain");
        assert!(info.payload.methods.contains(&"token".to_string()));
        identity.revoke(&scoped).await.unwrap();
        assert!(matches!(identity.validate(&scoped).await, Err(Error::InvalidToken)));
        assert!(identity.validate(&token).await.is_ok(), "revoking one token leaves others alone");
        // Revocations survive a restart: a new service instance on the same database still refuses the token.
        identity.reload_revocations().await.unwrap();
        assert!(matches!(identity.validate(&scoped).await, Err(Error::InvalidToken)));
    });
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    for db in test_databases().await {
        let keys = tempfile::tempdir().unwrap();
        let mut config = IdentityConfig::new(keys.path().to_path_buf());
        config.password_hash_rounds = 4;
        config.token_expiration = 1;
        let identity = Identity::new((*db).clone(), config).await.unwrap();
        identity.migrate().await.unwrap();
        identity.bootstrap(&spec()).await.unwrap();
        let (token, info) = identity.authenticate(password("admin", "secret-admin"), project("admin")).await.unwrap();
        assert!(info.payload.expires_at <= Utc::now() + chrono::Duration::seconds(1));
        assert!(identity.validate(&token).await.is_ok());
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert!(matches!(identity.validate(&token).await, Err(Error::InvalidToken)));
        db.cleanup().await;
    }
}

#[tokio::test]
async fn a_rotation_by_another_process_is_picked_up() {
    for db in test_databases().await {
        let keys = tempfile::tempdir().unwrap();
        let identity = identity_on(&db, keys.path()).await;
        identity.bootstrap(&spec()).await.unwrap();
        let (old, _) = identity.authenticate(password("admin", "secret-admin"), project("admin")).await.unwrap();
        assert!(identity.validate(&old).await.is_ok());
        // The primary alone, before the rotation (no staged key).
        let before = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(keys.path()).unwrap().flatten() {
            if entry.file_name() != "0" {
                std::fs::copy(entry.path(), before.path().join(entry.file_name())).unwrap();
            }
        }
        // One rotation (as `stratus identity fernet-rotate` does, from another process): old tokens stay valid.
        identity::token::TokenKeys::rotate(keys.path(), 3).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (newer, _) = identity.authenticate(password("admin", "secret-admin"), project("admin")).await.unwrap();
        assert!(identity.validate(&old).await.is_ok(), "the previous primary still validates");
        // Tokens issued after the rotation are signed by the new primary, which the old primary cannot read.
        let old_primary = identity::token::TokenKeys::load(before.path()).unwrap();
        assert!(old_primary.open(&old).is_ok());
        assert!(old_primary.open(&newer).is_err(), "issued with the rotated-in primary");
        // Two more rotations prune the key `old` was signed with: it stops validating, cache or not.
        identity::token::TokenKeys::rotate(keys.path(), 3).unwrap();
        identity::token::TokenKeys::rotate(keys.path(), 3).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert!(matches!(identity.validate(&old).await, Err(Error::InvalidToken)));
        db.cleanup().await;
    }
}
