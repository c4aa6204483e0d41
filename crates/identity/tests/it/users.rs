//! Users and groups over HTTP (CRUD, filters, memberships, self-service password change, security compliance,
//! policy), and the lockout/history datastore functions on every database backend.

use std::time::Duration;

use db::testing::test_databases;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use test_utils::{Client, Response, TestCloud};

const V3: &str = "/identity/v3";

async fn patch(c: &Client, path: &str, body: &Value) -> Response {
    c.request(Method::PATCH, path, Some(body), &[]).await
}

async fn put(c: &Client, path: &str) -> Response {
    c.request(Method::PUT, path, None, &[]).await
}

async fn head(c: &Client, path: &str) -> Response {
    c.request(Method::HEAD, path, None, &[]).await
}

async fn create_user(c: &Client, body: Value) -> Value {
    let r = c.post(&format!("{V3}/users"), &json!({ "user": body })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()["user"].clone()
}

async fn create_group(c: &Client, body: Value) -> Value {
    let r = c.post(&format!("{V3}/groups"), &json!({ "group": body })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()["group"].clone()
}

fn ids(body: &Value, key: &str) -> Vec<String> {
    body[key].as_array().into_iter().flatten().filter_map(|p| p["id"].as_str().map(String::from)).collect()
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// An unscoped password authentication by user id.
async fn auth(c: &Client, user_id: &str, password: &str) -> Response {
    let body = json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"id": user_id, "password": password}}}}});
    c.post(&format!("{V3}/auth/tokens"), &body).await
}

async fn change_password(c: &Client, user_id: &str, original: &str, new: &str) -> Response {
    let body = json!({"user": {"password": new, "original_password": original}});
    c.post(&format!("{V3}/users/{user_id}/password"), &body).await
}

/// Gives `user_id` the member role on the demo project and logs in there.
async fn member_login(cloud: &TestCloud, user_id: &str, name: &str, password: &str) -> Client {
    let project = cloud.member.token_body["token"]["project"]["id"].as_str().expect("demo project").to_string();
    let roles = cloud.admin.get(&format!("{V3}/roles?name=member")).await.json();
    let role = roles["roles"][0]["id"].as_str().expect("member role").to_string();
    let r = put(&cloud.admin, &format!("{V3}/projects/{project}/users/{user_id}/roles/{role}")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    cloud.anonymous.login(name, password, "demo").await
}

#[tokio::test]
async fn user_crud_filters_and_extra_attributes() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;

    let u = create_user(
        admin,
        json!({"name": "alice", "password": "alice-pw-1", "description": "first", "email": "alice@example.org",
               "project_id": "legacy", "enabled": false, "options": {"ignore_password_expiry": true}}),
    )
    .await;
    let uid = id(&u);
    assert_eq!(u["domain_id"], "default");
    assert_eq!(u["enabled"], false);
    assert_eq!(u["description"], "first");
    assert_eq!(u["email"], "alice@example.org");
    assert_eq!(u["project_id"], "legacy", "unknown attributes are kept as extras");
    assert_eq!(u["options"], json!({"ignore_password_expiry": true}));
    assert_eq!(u["password_expires_at"], Value::Null);
    assert!(u.get("password").is_none(), "passwords are never shown");
    assert!(u["links"]["self"].as_str().unwrap().ends_with(&format!("/v3/users/{uid}")));

    // Show and list agree with create, byte for byte.
    assert_eq!(admin.get(&format!("{V3}/users/{uid}")).await.json()["user"], u);
    let all = admin.get(&format!("{V3}/users")).await.json();
    let listed: Vec<&Value> = all["users"].as_array().unwrap().iter().filter(|x| x["id"] == u["id"]).collect();
    assert_eq!(listed, vec![&u]);
    assert!(all["links"]["self"].is_string());

    // Filters.
    let bob = create_user(admin, json!({"name": "bob"})).await;
    assert_eq!(ids(&admin.get(&format!("{V3}/users?name=alice")).await.json(), "users"), vec![uid.clone()]);
    let disabled = ids(&admin.get(&format!("{V3}/users?enabled=false")).await.json(), "users");
    assert!(disabled.contains(&uid) && !disabled.contains(&id(&bob)));
    let enabled = ids(&admin.get(&format!("{V3}/users?enabled=true")).await.json(), "users");
    assert!(enabled.contains(&id(&bob)) && !enabled.contains(&uid));
    assert!(ids(&admin.get(&format!("{V3}/users?domain_id=nope")).await.json(), "users").is_empty());
    let never_expiring = admin.get(&format!("{V3}/users?password_expires_at=lt:2100-01-01T00:00:00Z")).await;
    assert_eq!(never_expiring.status, StatusCode::OK);
    assert!(ids(&never_expiring.json(), "users").is_empty(), "no password expires here");

    // Update: attributes, extras and options merge; the domain cannot change.
    let r = patch(admin, &format!("{V3}/users/{uid}"), &json!({"user": {"name": "alice2", "email": "a2@example.org",
        "enabled": true, "options": {"lock_password": true, "ignore_password_expiry": null}}}))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let updated = r.json()["user"].clone();
    assert_eq!(updated["name"], "alice2");
    assert_eq!(updated["email"], "a2@example.org");
    assert_eq!(updated["description"], "first");
    assert_eq!(updated["enabled"], true);
    assert_eq!(updated["options"], json!({"lock_password": true}));
    assert_eq!(admin.get(&format!("{V3}/users/{uid}")).await.json()["user"], updated);
    let r = patch(admin, &format!("{V3}/users/{uid}"), &json!({"user": {"domain_id": "other"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Conflicts and validation.
    let r = admin.post(&format!("{V3}/users"), &json!({"user": {"name": "bob"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = patch(admin, &format!("{V3}/users/{uid}"), &json!({"user": {"name": "bob"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = admin.post(&format!("{V3}/users"), &json!({"user": {"name": "carol", "domain_id": "missing"}})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = admin.post(&format!("{V3}/users"), &json!({"user": {"name": ""}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = admin.post(&format!("{V3}/users"), &json!({"user": {"name": "x", "enabled": "yes"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = admin.post(&format!("{V3}/users"), &json!({"user": {"name": "x", "options": {"bogus": true}}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(ids(&admin.get(&format!("{V3}/users?name=x")).await.json(), "users").is_empty());

    // Delete.
    assert_eq!(admin.delete(&format!("{V3}/users/{uid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{V3}/users/{uid}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.delete(&format!("{V3}/users/{uid}")).await.status, StatusCode::NOT_FOUND);
    cloud.shutdown().await;
}

#[tokio::test]
async fn groups_memberships_and_user_projects() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;

    let g = create_group(admin, json!({"name": "ops", "description": "operators"})).await;
    let gid = id(&g);
    assert_eq!(g["domain_id"], "default");
    assert_eq!(g["description"], "operators");
    assert_eq!(admin.get(&format!("{V3}/groups/{gid}")).await.json()["group"], g);
    let r = admin.post(&format!("{V3}/groups"), &json!({"group": {"name": "ops"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let other = create_group(admin, json!({"name": "devs"})).await;
    assert_eq!(ids(&admin.get(&format!("{V3}/groups?name=ops")).await.json(), "groups"), vec![gid.clone()]);
    assert_eq!(ids(&admin.get(&format!("{V3}/groups?domain_id=default")).await.json(), "groups").len(), 2);

    let r = patch(admin, &format!("{V3}/groups/{gid}"), &json!({"group": {"name": "operators"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["group"]["description"], "operators", "unchanged fields stay");
    let r = patch(admin, &format!("{V3}/groups/{gid}"), &json!({"group": {"name": "devs"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // Membership: add, check, list both ways.
    let u = create_user(admin, json!({"name": "dave", "password": "dave-pw-1"})).await;
    let uid = id(&u);
    assert_eq!(put(admin, &format!("{V3}/groups/{gid}/users/{uid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(put(admin, &format!("{V3}/groups/{gid}/users/missing")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(head(admin, &format!("{V3}/groups/{gid}/users/{uid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(head(admin, &format!("{V3}/groups/{}/users/{uid}", id(&other))).await.status, StatusCode::NOT_FOUND);
    let members = admin.get(&format!("{V3}/groups/{gid}/users")).await.json();
    assert_eq!(members["users"], json!([u]));
    let groups = admin.get(&format!("{V3}/users/{uid}/groups")).await.json();
    assert_eq!(ids(&groups, "groups"), vec![gid.clone()]);

    // Projects of a user: direct grants and grants to their groups.
    let dave = member_login(&cloud, &uid, "dave", "dave-pw-1").await;
    let demo = dave.token_body["token"]["project"]["id"].as_str().unwrap().to_string();
    let p = admin.post(&format!("{V3}/projects"), &json!({"project": {"name": "ops-project"}})).await.json();
    let pid = id(&p["project"]);
    let role = admin.get(&format!("{V3}/roles?name=reader")).await.json()["roles"][0]["id"].as_str().unwrap().to_string();
    let r = put(admin, &format!("{V3}/projects/{pid}/groups/{gid}/roles/{role}")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let mut projects = ids(&dave.get(&format!("{V3}/users/{uid}/projects")).await.json(), "projects");
    projects.sort();
    let mut want = vec![demo, pid];
    want.sort();
    assert_eq!(projects, want, "own projects, via groups too");
    assert_eq!(dave.get(&format!("{V3}/users/{uid}/groups")).await.status, StatusCode::OK, "own groups");

    // Removing the member revokes their tokens; the membership is gone.
    assert_eq!(admin.delete(&format!("{V3}/groups/{gid}/users/{uid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(dave.get(&format!("{V3}/users/{uid}")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(head(admin, &format!("{V3}/groups/{gid}/users/{uid}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.delete(&format!("{V3}/groups/{gid}/users/{uid}")).await.status, StatusCode::NOT_FOUND);

    // Deleting a group deletes its memberships.
    assert_eq!(put(admin, &format!("{V3}/groups/{gid}/users/{uid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.delete(&format!("{V3}/groups/{gid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{V3}/groups/{gid}")).await.status, StatusCode::NOT_FOUND);
    assert!(ids(&admin.get(&format!("{V3}/users/{uid}/groups")).await.json(), "groups").is_empty());
    cloud.shutdown().await;
}

#[tokio::test]
async fn self_service_password_change_and_history() {
    let cloud = TestCloud::start_with(|c| {
        c.identity.unique_last_password_count = 2;
        c.identity.minimum_password_age = 0;
    })
    .await;
    let u = create_user(&cloud.admin, json!({"name": "erin", "password": "erin-pw-0"})).await;
    let uid = id(&u);
    let erin = member_login(&cloud, &uid, "erin", "erin-pw-0").await;

    // The original password is required and checked.
    let r = change_password(&erin, &uid, "wrong", "erin-pw-1").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = erin.post(&format!("{V3}/users/{uid}/password"), &json!({"user": {"password": "erin-pw-1"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // Someone else's token may not change it.
    let r = change_password(&cloud.member, &uid, "erin-pw-0", "erin-pw-1").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(auth(&cloud.anonymous, &uid, "erin-pw-0").await.status, StatusCode::CREATED);

    let r = change_password(&erin, &uid, "erin-pw-0", "erin-pw-1").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    // Tokens issued before the change die; the old password no longer works, the new one does.
    assert_eq!(erin.get(&format!("{V3}/users/{uid}")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(auth(&cloud.anonymous, &uid, "erin-pw-0").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(auth(&cloud.anonymous, &uid, "erin-pw-1").await.status, StatusCode::CREATED);

    // History: neither the current nor the previous password may be reused.
    for reused in ["erin-pw-1", "erin-pw-0"] {
        let r = change_password(&cloud.anonymous, &uid, "erin-pw-1", reused).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(r.text.contains("cannot be identical to a previous password"), "{}", r.text);
    }
    assert_eq!(change_password(&cloud.anonymous, &uid, "erin-pw-1", "erin-pw-2").await.status, StatusCode::NO_CONTENT);
    // erin-pw-0 has left the two-password history.
    assert_eq!(change_password(&cloud.anonymous, &uid, "erin-pw-2", "erin-pw-0").await.status, StatusCode::NO_CONTENT);
    // Administrators resetting a password are not bound by the history.
    let r = patch(&cloud.admin, &format!("{V3}/users/{uid}"), &json!({"user": {"password": "erin-pw-0"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(auth(&cloud.anonymous, &uid, "erin-pw-0").await.status, StatusCode::CREATED);

    // lock_password forbids self-service changes.
    let r = patch(&cloud.admin, &format!("{V3}/users/{uid}"), &json!({"user": {"options": {"lock_password": true}}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(change_password(&cloud.anonymous, &uid, "erin-pw-0", "erin-pw-9").await.status, StatusCode::FORBIDDEN);
    assert_eq!(auth(&cloud.anonymous, &uid, "erin-pw-0").await.status, StatusCode::CREATED);
    cloud.shutdown().await;
}

#[tokio::test]
async fn minimum_password_age_regex_and_first_use() {
    let cloud = TestCloud::start_with(|c| {
        c.identity.minimum_password_age = 1;
        c.identity.password_regex = Some("^.{10,}$".into());
        c.identity.password_regex_description = Some("at least ten characters".into());
        c.identity.change_password_upon_first_use = true;
    })
    .await;
    let admin = &cloud.admin;

    // Strength rules on create and change.
    let r = admin.post(&format!("{V3}/users"), &json!({"user": {"name": "fay", "password": "short"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("at least ten characters"), "{}", r.text);
    assert!(ids(&admin.get(&format!("{V3}/users?name=fay")).await.json(), "users").is_empty());

    // An administrator-set password must be changed on first use: expired at once.
    let u = create_user(admin, json!({"name": "fay", "password": "fay-password-0"})).await;
    let uid = id(&u);
    assert!(u["password_expires_at"].is_string(), "{u}");
    let r = auth(&cloud.anonymous, &uid, "fay-password-0").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("expired"), "{}", r.text);

    // The owner may change it (no minimum age for an administrator-set password), but not to a weak one.
    let r = change_password(&cloud.anonymous, &uid, "fay-password-0", "weak").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = change_password(&cloud.anonymous, &uid, "fay-password-0", "fay-password-1").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(auth(&cloud.anonymous, &uid, "fay-password-1").await.status, StatusCode::CREATED);
    assert_eq!(admin.get(&format!("{V3}/users/{uid}")).await.json()["user"]["password_expires_at"], Value::Null);

    // A self-chosen password must be kept for a day.
    let r = change_password(&cloud.anonymous, &uid, "fay-password-1", "fay-password-2").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("minimum password age"), "{}", r.text);
    assert_eq!(auth(&cloud.anonymous, &uid, "fay-password-1").await.status, StatusCode::CREATED);

    // Users exempt from first-use changes can log in at once.
    let v = create_user(
        admin,
        json!({"name": "gil", "password": "gil-password-0", "options": {"ignore_change_password_upon_first_use": true}}),
    )
    .await;
    assert_eq!(v["password_expires_at"], Value::Null);
    assert_eq!(auth(&cloud.anonymous, &id(&v), "gil-password-0").await.status, StatusCode::CREATED);
    cloud.shutdown().await;
}

#[tokio::test]
async fn lockout_after_failures_then_unlock() {
    let cloud = TestCloud::start_with(|c| {
        c.identity.lockout_failure_attempts = 3;
        c.identity.lockout_duration = 2;
    })
    .await;
    let anon = &cloud.anonymous;
    let u = create_user(&cloud.admin, json!({"name": "hal", "password": "hal-pw"})).await;
    let uid = id(&u);

    // A success resets the count.
    for _ in 0..2 {
        assert_eq!(auth(anon, &uid, "bad").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(auth(anon, &uid, "hal-pw").await.status, StatusCode::CREATED);
    for _ in 0..2 {
        assert_eq!(auth(anon, &uid, "bad").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(auth(anon, &uid, "hal-pw").await.status, StatusCode::CREATED);

    // Three consecutive failures lock the account, even against the right password.
    for _ in 0..3 {
        assert_eq!(auth(anon, &uid, "bad").await.status, StatusCode::UNAUTHORIZED);
    }
    let r = auth(anon, &uid, "hal-pw").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("locked"), "{}", r.text);
    // The self-service password change is locked too.
    assert_eq!(change_password(anon, &uid, "hal-pw", "hal-pw-2").await.status, StatusCode::UNAUTHORIZED);

    // Exempt users never lock.
    let v = create_user(
        &cloud.admin,
        json!({"name": "ida", "password": "ida-pw", "options": {"ignore_lockout_failure_attempts": true}}),
    )
    .await;
    for _ in 0..4 {
        assert_eq!(auth(anon, &id(&v), "bad").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(auth(anon, &id(&v), "ida-pw").await.status, StatusCode::CREATED);

    // After the lockout duration the right password works again.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(auth(anon, &uid, "hal-pw").await.status, StatusCode::CREATED);
    cloud.shutdown().await;
}

#[tokio::test]
async fn disabled_or_deleted_user_tokens_die() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;
    let u = create_user(admin, json!({"name": "jo", "password": "jo-pw"})).await;
    let uid = id(&u);
    let jo = member_login(&cloud, &uid, "jo", "jo-pw").await;
    assert_eq!(jo.get(&format!("{V3}/users/{uid}")).await.status, StatusCode::OK, "own user");

    let r = patch(admin, &format!("{V3}/users/{uid}"), &json!({"user": {"enabled": false}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(jo.get(&format!("{V3}/users/{uid}")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(auth(&cloud.anonymous, &uid, "jo-pw").await.status, StatusCode::UNAUTHORIZED);
    // Re-enabling does not resurrect old tokens.
    let r = patch(admin, &format!("{V3}/users/{uid}"), &json!({"user": {"enabled": true}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(jo.get(&format!("{V3}/users/{uid}")).await.status, StatusCode::UNAUTHORIZED);

    let jo = cloud.anonymous.login("jo", "jo-pw", "demo").await;
    assert_eq!(admin.delete(&format!("{V3}/users/{uid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(jo.get(&format!("{V3}/auth/projects")).await.status, StatusCode::UNAUTHORIZED);
    cloud.shutdown().await;
}

#[tokio::test]
async fn members_and_readers_cannot_write() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;
    let u = create_user(admin, json!({"name": "kim", "password": "kim-pw"})).await;
    let uid = id(&u);
    let g = create_group(admin, json!({"name": "team"})).await;
    let gid = id(&g);
    let admin_id = admin.token_body["token"]["user"]["id"].as_str().unwrap().to_string();

    for c in [&cloud.member, &cloud.reader] {
        let r = c.post(&format!("{V3}/users"), &json!({"user": {"name": "mallory"}})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(patch(c, &format!("{V3}/users/{uid}"), &json!({"user": {"name": "x"}})).await.status, StatusCode::FORBIDDEN);
        let r = patch(c, &format!("{V3}/users/{admin_id}"), &json!({"user": {"password": "owned"}})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(c.delete(&format!("{V3}/users/{uid}")).await.status, StatusCode::FORBIDDEN);
        assert_eq!(c.get(&format!("{V3}/users/{uid}")).await.status, StatusCode::FORBIDDEN);
        assert_eq!(c.get(&format!("{V3}/users")).await.status, StatusCode::FORBIDDEN);
        assert_eq!(c.post(&format!("{V3}/groups"), &json!({"group": {"name": "g"}})).await.status, StatusCode::FORBIDDEN);
        assert_eq!(put(c, &format!("{V3}/groups/{gid}/users/{uid}")).await.status, StatusCode::FORBIDDEN);
        assert_eq!(c.delete(&format!("{V3}/groups/{gid}")).await.status, StatusCode::FORBIDDEN);
        assert_eq!(c.get(&format!("{V3}/users/{uid}/projects")).await.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(cloud.anonymous.get(&format!("{V3}/users")).await.status, StatusCode::UNAUTHORIZED);

    // Nothing changed.
    assert_eq!(admin.get(&format!("{V3}/users/{uid}")).await.json()["user"], u);
    assert!(ids(&admin.get(&format!("{V3}/users?name=mallory")).await.json(), "users").is_empty());
    assert_eq!(ids(&admin.get(&format!("{V3}/groups")).await.json(), "groups"), vec![gid.clone()]);
    assert_eq!(admin.get(&format!("{V3}/groups/{gid}/users")).await.json()["users"], json!([]));
    assert!(cloud.anonymous.login("admin", &admin_password(&cloud), "admin").await.token.is_some());
    cloud.shutdown().await;
}

fn admin_password(cloud: &TestCloud) -> String {
    cloud.running.credentials.as_ref().expect("credentials").admin_password.clone()
}

#[tokio::test]
async fn lockout_and_history_store_functions_on_every_backend() {
    use identity::store::{Store, UserDetail, UserFilter, UserRow};
    for db in test_databases().await {
        let store = Store::new((*db).clone());
        store.migrate().await.unwrap();
        let user = UserDetail {
            user: UserRow {
                id: "u1".into(),
                name: "lena".into(),
                domain_id: "default".into(),
                enabled: true,
                password_hash: Some("h0".into()),
                default_project_id: None,
            },
            extra: Map::from_iter([("email".to_string(), json!("l@example.org"))]),
            options: Map::from_iter([("lock_password".to_string(), json!(true))]),
            password_created_at: Some(1),
            password_expires_at: Some(2_000_000_000),
            password_self_service: false,
            failed_auth_count: 0,
            failed_auth_at: None,
        };
        store.user_detail_create(&user).await.unwrap();
        let got = store.user_detail_get("u1").await.unwrap().unwrap();
        assert_eq!(got.extra, user.extra);
        assert_eq!(got.options, user.options);
        assert_eq!(got.password_expires_at, Some(2_000_000_000));
        let filter = UserFilter { name: Some("lena".into()), ..Default::default() };
        assert_eq!(store.user_detail_list(&filter).await.unwrap().len(), 1);
        let filter = UserFilter { domain_id: Some("other".into()), ..Default::default() };
        assert!(store.user_detail_list(&filter).await.unwrap().is_empty());

        // Failure counting and reset.
        assert_eq!(store.user_auth_failure_record("u1", 100).await.unwrap(), 1);
        assert_eq!(store.user_auth_failure_record("u1", 101).await.unwrap(), 2);
        let got = store.user_detail_get("u1").await.unwrap().unwrap();
        assert_eq!((got.failed_auth_count, got.failed_auth_at), (2, Some(101)));
        store.user_auth_failure_reset("u1").await.unwrap();
        let got = store.user_detail_get("u1").await.unwrap().unwrap();
        assert_eq!((got.failed_auth_count, got.failed_auth_at), (0, None));

        // History keeps the newest `keep`; setting a password clears failures and records who set it.
        store.user_auth_failure_record("u1", 102).await.unwrap();
        for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
            store.user_password_set("u1", h, None, i == 2, 2).await.unwrap();
        }
        assert_eq!(store.user_password_history("u1", 10).await.unwrap(), vec!["h3".to_string(), "h2".to_string()]);
        assert_eq!(store.user_password_history("u1", 1).await.unwrap(), vec!["h3".to_string()]);
        let got = store.user_detail_get("u1").await.unwrap().unwrap();
        assert_eq!(got.user.password_hash.as_deref(), Some("h3"));
        assert_eq!(got.failed_auth_count, 0);
        assert!(got.password_self_service);
        assert_eq!(got.password_expires_at, None);

        // Deleting a user takes its history and memberships along.
        store
            .group_create(&identity::store::GroupRow {
                id: "g1".into(),
                name: "grp".into(),
                domain_id: "default".into(),
                description: None,
            })
            .await
            .unwrap();
        store.group_add_user("g1", "u1").await.unwrap();
        assert_eq!(store.user_list_in_group("g1").await.unwrap().len(), 1);
        assert!(store.user_delete("u1").await.unwrap());
        assert!(!store.user_delete("u1").await.unwrap());
        assert!(store.user_password_history("u1", 10).await.unwrap().is_empty());
        assert!(store.user_list_in_group("g1").await.unwrap().is_empty());
        assert!(store.group_list_for_user("u1").await.unwrap().is_empty());
        assert!(store.group_delete("g1").await.unwrap());
        assert!(store.group_list(None, None).await.unwrap().is_empty());
        eprintln!("passed on {:?}", db.backend());
        db.cleanup().await;
    }
}
