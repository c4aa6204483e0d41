//! Roles, implied roles, grants and role assignments: over HTTP through the whole-cloud harness (with tokens
//! issued to the users granted), and effective-role computation on every database backend.

use db::testing::test_databases;
use identity::{
    Identity, IdentityConfig,
    service::{Credentials, DomainRef, ScopeRequest, UserRef},
    store::{AssignmentRow, GroupRow, ProjectRow, RoleRow, UserRow, kind},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_utils::{Client, Response, TestCloud};

const V3: &str = "/identity/v3";
const PASSWORD: &str = "roles-test-password";

fn identity(cloud: &TestCloud) -> Identity {
    cloud.running.cloud.identity.clone().expect("identity runs in the test cloud")
}

/// A user in the default domain, created in the datastore (the users API is not part of this module).
async fn new_user(cloud: &TestCloud, name: &str) -> String {
    let id = identity(cloud);
    let user = UserRow {
        id: identity::service::new_id(),
        name: name.into(),
        domain_id: "default".into(),
        enabled: true,
        password_hash: Some(id.hash_password(PASSWORD).await.unwrap()),
        default_project_id: None,
    };
    id.store().user_create(&user).await.unwrap();
    user.id
}

async fn new_group(cloud: &TestCloud, name: &str, members: &[&str]) -> String {
    let id = identity(cloud);
    let group = GroupRow { id: identity::service::new_id(), name: name.into(), domain_id: "default".into(), description: None };
    id.store().group_create(&group).await.unwrap();
    for m in members {
        id.store().group_add_user(&group.id, m).await.unwrap();
    }
    group.id
}

async fn put(c: &Client, path: &str) -> Response {
    c.request(Method::PUT, &format!("{V3}{path}"), None, &[]).await
}

async fn head(c: &Client, path: &str) -> StatusCode {
    c.request(Method::HEAD, &format!("{V3}{path}"), None, &[]).await.status
}

async fn get(c: &Client, path: &str) -> Response {
    c.get(&format!("{V3}{path}")).await
}

async fn delete(c: &Client, path: &str) -> StatusCode {
    c.delete(&format!("{V3}{path}")).await.status
}

async fn create_role(c: &Client, body: Value) -> Value {
    let r = c.post(&format!("{V3}/roles"), &json!({ "role": body })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()["role"].clone()
}

async fn create_project(c: &Client, name: &str, parent: Option<&str>) -> String {
    let mut body = json!({"name": name, "domain_id": "default"});
    if let Some(p) = parent {
        body["parent_id"] = json!(p);
    }
    let r = c.post(&format!("{V3}/projects"), &json!({ "project": body })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()["project"]["id"].as_str().unwrap().to_string()
}

/// Authenticates `user` with `scope`; the token and its role names (sorted), or the refusal's status.
async fn token(cloud: &TestCloud, user: &str, scope: Value) -> Result<(String, Vec<String>), StatusCode> {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"id": user, "password": PASSWORD}}},
        "scope": scope,
    }});
    let r = cloud.anonymous.post(&format!("{V3}/auth/tokens"), &body).await;
    if r.status != StatusCode::CREATED {
        return Err(r.status);
    }
    let mut roles = names(&r.json()["token"]["roles"]);
    roles.sort();
    Ok((r.header("x-subject-token").unwrap().to_string(), roles))
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().into_iter().flatten().filter_map(|r| r["name"].as_str().map(String::from)).collect()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().into_iter().flatten().filter_map(|r| r["id"].as_str().map(String::from)).collect()
}

fn project_scope(id: &str) -> Value {
    json!({"project": {"id": id}})
}

async fn validate(cloud: &TestCloud, token: &str) -> StatusCode {
    cloud.admin.request(Method::GET, &format!("{V3}/auth/tokens"), None, &[("X-Subject-Token", token)]).await.status
}

#[tokio::test]
async fn role_crud_domain_roles_and_options() {
    let cloud = TestCloud::start().await;
    let a = &cloud.admin;
    let role = create_role(a, json!({"name": "observer", "description": "watches", "colour": "blue"})).await;
    assert_eq!(role["name"], "observer");
    assert_eq!(role["domain_id"], Value::Null);
    assert_eq!(role["description"], "watches");
    assert_eq!(role["options"], json!({}));
    assert_eq!(role["colour"], "blue", "extra attributes are echoed");
    let rid = role["id"].as_str().unwrap();
    assert!(role["links"]["self"].as_str().unwrap().ends_with(&format!("/v3/roles/{rid}")));

    let dup = a.post(&format!("{V3}/roles"), &json!({"role": {"name": "observer"}})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.text);
    let missing = a.post(&format!("{V3}/roles"), &json!({"role": {"description": "x"}})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);

    let shown = get(a, &format!("/roles/{rid}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json()["role"], role);
    let listed = get(a, "/roles?name=observer").await.json();
    assert_eq!(ids(&listed["roles"]), vec![rid.to_string()]);
    let all = get(a, "/roles").await.json();
    for builtin in ["admin", "member", "reader", "observer"] {
        assert!(names(&all["roles"]).contains(&builtin.to_string()), "{builtin} listed");
    }

    let r = a.request(Method::PATCH, &format!("{V3}/roles/{rid}"), Some(&json!({"role": {"name": "auditor"}})), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["role"]["name"], "auditor");
    assert_eq!(r.json()["role"]["description"], "watches");
    assert_eq!(get(a, &format!("/roles/{rid}")).await.json()["role"]["name"], "auditor");
    let clash = a.request(Method::PATCH, &format!("{V3}/roles/{rid}"), Some(&json!({"role": {"name": "member"}})), &[]).await;
    assert_eq!(clash.status, StatusCode::CONFLICT);

    // Domain-specific roles: listed only with their domain, same name allowed across domains.
    let d = a.post(&format!("{V3}/domains"), &json!({"domain": {"name": "roles-dom"}})).await.json()["domain"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let drole = create_role(a, json!({"name": "auditor", "domain_id": d})).await;
    assert_eq!(drole["domain_id"], json!(d));
    let in_domain = get(a, &format!("/roles?domain_id={d}")).await.json();
    assert_eq!(in_domain["roles"], json!([drole]));
    assert!(!ids(&get(a, "/roles").await.json()["roles"]).contains(&drole["id"].as_str().unwrap().to_string()));
    let nodomain = a.post(&format!("{V3}/roles"), &json!({"role": {"name": "x", "domain_id": "nope"}})).await;
    assert_eq!(nodomain.status, StatusCode::NOT_FOUND);

    // Immutable roles refuse updates and deletes until unlocked.
    let locked = create_role(a, json!({"name": "locked", "options": {"immutable": true}})).await;
    assert_eq!(locked["options"], json!({"immutable": true}));
    let lid = locked["id"].as_str().unwrap();
    let r = a.request(Method::PATCH, &format!("{V3}/roles/{lid}"), Some(&json!({"role": {"name": "unlocked"}})), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(delete(a, &format!("/roles/{lid}")).await, StatusCode::FORBIDDEN);
    let r = a
        .request(Method::PATCH, &format!("{V3}/roles/{lid}"), Some(&json!({"role": {"options": {"immutable": false}}})), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(delete(a, &format!("/roles/{lid}")).await, StatusCode::NO_CONTENT);
    let bad = a.post(&format!("{V3}/roles"), &json!({"role": {"name": "y", "options": {"sticky": true}}})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Readers read; members and readers may not write, and nothing changes when they try.
    assert_eq!(get(&cloud.reader, "/roles").await.status, StatusCode::OK);
    assert_eq!(get(&cloud.reader, &format!("/roles/{rid}")).await.status, StatusCode::OK);
    let r = cloud.member.post(&format!("{V3}/roles"), &json!({"role": {"name": "sneaky"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(get(a, "/roles?name=sneaky").await.json()["roles"].as_array().unwrap().is_empty());
    let r = cloud
        .member
        .request(Method::PATCH, &format!("{V3}/roles/{rid}"), Some(&json!({"role": {"name": "mine"}})), &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(delete(&cloud.reader, &format!("/roles/{rid}")).await, StatusCode::FORBIDDEN);
    assert_eq!(get(a, &format!("/roles/{rid}")).await.json()["role"]["name"], "auditor");

    assert_eq!(delete(a, &format!("/roles/{rid}")).await, StatusCode::NO_CONTENT);
    assert_eq!(get(a, &format!("/roles/{rid}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(delete(a, &format!("/roles/{rid}")).await, StatusCode::NOT_FOUND);
    assert_eq!(get(&cloud.anonymous, "/roles").await.status, StatusCode::UNAUTHORIZED);
    cloud.shutdown().await;
}

#[tokio::test]
async fn implied_roles_and_tokens() {
    let cloud = TestCloud::start().await;
    let a = &cloud.admin;
    // Bootstrap's chain: admin implies manager implies member implies reader.
    assert_eq!(names(&a.token_body["token"]["roles"]).len(), 4);
    let inferences = get(a, "/role_inferences").await;
    assert_eq!(inferences.status, StatusCode::OK);
    let rules = inferences.json()["role_inferences"].clone();
    let admin_rule = rules.as_array().unwrap().iter().find(|r| r["prior_role"]["name"] == "admin").unwrap();
    assert_eq!(names(&admin_rule["implies"]), vec!["manager"]);

    let prior = create_role(a, json!({"name": "pilot"})).await;
    let implied = create_role(a, json!({"name": "navigator"})).await;
    let further = create_role(a, json!({"name": "lookout"})).await;
    let (p, i, f) = (prior["id"].as_str().unwrap(), implied["id"].as_str().unwrap(), further["id"].as_str().unwrap());
    let r = put(a, &format!("/roles/{p}/implies/{i}")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["role_inference"]["prior_role"]["id"], json!(p));
    assert_eq!(r.json()["role_inference"]["implies"]["name"], "navigator");
    assert_eq!(put(a, &format!("/roles/{i}/implies/{f}")).await.status, StatusCode::CREATED);
    // A cycle is stored (as upstream) and expansion still terminates.
    assert_eq!(put(a, &format!("/roles/{f}/implies/{p}")).await.status, StatusCode::CREATED);
    assert_eq!(get(a, &format!("/roles/{p}/implies/{i}")).await.status, StatusCode::OK);
    assert_eq!(head(a, &format!("/roles/{p}/implies/{i}")).await, StatusCode::NO_CONTENT);
    assert_eq!(head(a, &format!("/roles/{i}/implies/{p}")).await, StatusCode::NOT_FOUND);
    let list = get(a, &format!("/roles/{p}/implies")).await.json();
    assert_eq!(ids(&list["role_inference"]["implies"]), vec![i.to_string()]);
    assert_eq!(put(a, &format!("/roles/{p}/implies/nope")).await.status, StatusCode::NOT_FOUND);

    let admin_id = get(a, "/roles?name=admin").await.json()["roles"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(put(a, &format!("/roles/{p}/implies/{admin_id}")).await.status, StatusCode::FORBIDDEN);
    let d = a.post(&format!("{V3}/domains"), &json!({"domain": {"name": "imp-dom"}})).await.json()["domain"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dr = create_role(a, json!({"name": "local", "domain_id": d})).await;
    let drid = dr["id"].as_str().unwrap();
    assert_eq!(put(a, &format!("/roles/{p}/implies/{drid}")).await.status, StatusCode::FORBIDDEN, "global to domain");
    assert_eq!(put(a, &format!("/roles/{drid}/implies/{p}")).await.status, StatusCode::CREATED, "domain to global");
    assert_eq!(put(&cloud.member, &format!("/roles/{i}/implies/{p}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(head(a, &format!("/roles/{i}/implies/{p}")).await, StatusCode::NOT_FOUND, "denied call changed nothing");

    // Tokens carry implied roles transitively.
    let project = create_project(a, "implied-proj", None).await;
    let user = new_user(&cloud, "implied-user").await;
    assert_eq!(put(a, &format!("/projects/{project}/users/{user}/roles/{p}")).await.status, StatusCode::NO_CONTENT);
    let (_, roles) = token(&cloud, &user, project_scope(&project)).await.unwrap();
    assert_eq!(roles, vec!["lookout", "navigator", "pilot"]);

    assert_eq!(delete(a, &format!("/roles/{i}/implies/{f}")).await, StatusCode::NO_CONTENT);
    assert_eq!(delete(a, &format!("/roles/{i}/implies/{f}")).await, StatusCode::NOT_FOUND);
    let (_, roles) = token(&cloud, &user, project_scope(&project)).await.unwrap();
    assert_eq!(roles, vec!["navigator", "pilot"]);

    // A domain-specific role granted is never in the token itself, only what it implies.
    let dproject = a
        .post(&format!("{V3}/projects"), &json!({"project": {"name": "dp", "domain_id": d}}))
        .await
        .json()["project"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let duser = new_user(&cloud, "domain-role-user").await;
    assert_eq!(put(a, &format!("/projects/{dproject}/users/{duser}/roles/{drid}")).await.status, StatusCode::NO_CONTENT);
    let (_, roles) = token(&cloud, &duser, project_scope(&dproject)).await.unwrap();
    assert_eq!(roles, vec!["navigator", "pilot"], "the domain role itself is not listed");
    // A domain role from another domain cannot be granted on this project.
    assert_eq!(put(a, &format!("/projects/{project}/users/{duser}/roles/{drid}")).await.status, StatusCode::FORBIDDEN);

    // Deleting a role removes its implications.
    assert_eq!(delete(a, &format!("/roles/{p}")).await, StatusCode::NO_CONTENT);
    assert_eq!(head(a, &format!("/roles/{drid}/implies/{p}")).await, StatusCode::NOT_FOUND);
    cloud.shutdown().await;
}

#[tokio::test]
async fn grants_for_users_and_groups_reach_tokens() {
    let cloud = TestCloud::start().await;
    let a = &cloud.admin;
    let role = create_role(a, json!({"name": "operator"})).await;
    let rid = role["id"].as_str().unwrap().to_string();
    let project = create_project(a, "grant-proj", None).await;
    let user = new_user(&cloud, "grant-user").await;
    let member = new_user(&cloud, "group-member").await;
    let group = new_group(&cloud, "grant-group", &[&member]).await;

    // Users on a project.
    let path = format!("/projects/{project}/users/{user}/roles/{rid}");
    assert_eq!(head(a, &path).await, StatusCode::NOT_FOUND);
    assert_eq!(token(&cloud, &user, project_scope(&project)).await.unwrap_err(), StatusCode::UNAUTHORIZED);
    assert_eq!(put(&cloud.member, &path).await.status, StatusCode::FORBIDDEN);
    assert_eq!(head(a, &path).await, StatusCode::NOT_FOUND, "denied grant changed nothing");
    assert_eq!(put(a, &path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(put(a, &path).await.status, StatusCode::NO_CONTENT, "granting twice is fine");
    assert_eq!(head(a, &path).await, StatusCode::NO_CONTENT);
    let listed = get(a, &format!("/projects/{project}/users/{user}/roles")).await.json();
    assert_eq!(ids(&listed["roles"]), vec![rid.clone()]);
    let (tok, roles) = token(&cloud, &user, project_scope(&project)).await.unwrap();
    assert_eq!(roles, vec!["operator"]);
    assert_eq!(validate(&cloud, &tok).await, StatusCode::OK);

    // Unknown user, project, role: 404.
    assert_eq!(put(a, &format!("/projects/{project}/users/nope/roles/{rid}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(put(a, &format!("/projects/nope/users/{user}/roles/{rid}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(put(a, &format!("/projects/{project}/users/{user}/roles/nope")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(put(a, &format!("/projects/{project}/groups/nope/roles/{rid}")).await.status, StatusCode::NOT_FOUND);

    // Member writes are refused and change nothing; unassigning revokes the user's token for the project.
    assert_eq!(delete(&cloud.member, &path).await, StatusCode::FORBIDDEN);
    assert_eq!(validate(&cloud, &tok).await, StatusCode::OK);
    assert_eq!(delete(a, &path).await, StatusCode::NO_CONTENT);
    assert_eq!(validate(&cloud, &tok).await, StatusCode::NOT_FOUND);
    assert_eq!(delete(a, &path).await, StatusCode::NOT_FOUND);
    assert_eq!(token(&cloud, &user, project_scope(&project)).await.unwrap_err(), StatusCode::UNAUTHORIZED);

    // Groups on a project: members get the role; removing it revokes members' tokens.
    let gpath = format!("/projects/{project}/groups/{group}/roles/{rid}");
    assert_eq!(put(a, &gpath).await.status, StatusCode::NO_CONTENT);
    assert_eq!(head(a, &gpath).await, StatusCode::NO_CONTENT);
    assert_eq!(ids(&get(a, &format!("/projects/{project}/groups/{group}/roles")).await.json()["roles"]), vec![rid.clone()]);
    let (gtok, roles) = token(&cloud, &member, project_scope(&project)).await.unwrap();
    assert_eq!(roles, vec!["operator"]);
    assert_eq!(delete(a, &gpath).await, StatusCode::NO_CONTENT);
    assert_eq!(validate(&cloud, &gtok).await, StatusCode::NOT_FOUND);

    // Domains, for users and groups.
    let reader = get(a, "/roles?name=reader").await.json()["roles"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(put(a, &format!("/domains/default/users/{user}/roles/{rid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(put(a, &format!("/domains/default/groups/{group}/roles/{reader}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(head(a, &format!("/domains/default/users/{user}/roles/{rid}")).await, StatusCode::NO_CONTENT);
    assert_eq!(ids(&get(a, &format!("/domains/default/groups/{group}/roles")).await.json()["roles"]), vec![reader.clone()]);
    let (_, roles) = token(&cloud, &user, json!({"domain": {"id": "default"}})).await.unwrap();
    assert_eq!(roles, vec!["operator"]);
    let (mtok, roles) = token(&cloud, &member, json!({"domain": {"id": "default"}})).await.unwrap();
    assert_eq!(roles, vec!["reader"]);
    let scopes = get(&cloud.anonymous.with_token(Some(mtok)), "/auth/domains").await.json();
    assert_eq!(ids(&scopes["domains"]), vec!["default"], "group grants make a domain available");
    assert_eq!(put(a, &format!("/domains/nope/users/{user}/roles/{rid}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(token(&cloud, &user, project_scope(&project)).await.unwrap_err(), StatusCode::UNAUTHORIZED, "domain grants are not inherited");

    // The system, for users and groups.
    assert_eq!(put(a, &format!("/system/users/{user}/roles/{reader}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(put(a, &format!("/system/groups/{group}/roles/{rid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(head(a, &format!("/system/users/{user}/roles/{reader}")).await, StatusCode::NO_CONTENT);
    assert_eq!(head(a, &format!("/system/groups/{group}/roles/{reader}")).await, StatusCode::NOT_FOUND);
    assert_eq!(ids(&get(a, &format!("/system/users/{user}/roles")).await.json()["roles"]), vec![reader.clone()]);
    assert_eq!(ids(&get(a, &format!("/system/groups/{group}/roles")).await.json()["roles"]), vec![rid.clone()]);
    let (_, roles) = token(&cloud, &user, json!({"system": {"all": true}})).await.unwrap();
    assert_eq!(roles, vec!["reader"]);
    let (_, roles) = token(&cloud, &member, json!({"system": {"all": true}})).await.unwrap();
    assert_eq!(roles, vec!["operator"]);
    assert_eq!(put(&cloud.member, &format!("/system/users/{user}/roles/{rid}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(head(a, &format!("/system/users/{user}/roles/{rid}")).await, StatusCode::NOT_FOUND);
    assert_eq!(delete(a, &format!("/system/groups/{group}/roles/{rid}")).await, StatusCode::NO_CONTENT);
    assert_eq!(token(&cloud, &member, json!({"system": {"all": true}})).await.unwrap_err(), StatusCode::UNAUTHORIZED);

    // Deleting a role deletes its grants.
    assert_eq!(delete(a, &format!("/roles/{rid}")).await, StatusCode::NO_CONTENT);
    assert_eq!(token(&cloud, &user, json!({"domain": {"id": "default"}})).await.unwrap_err(), StatusCode::UNAUTHORIZED);
    cloud.shutdown().await;
}

#[tokio::test]
async fn inherited_grants_reach_child_projects() {
    let cloud = TestCloud::start().await;
    let a = &cloud.admin;
    let rid = create_role(a, json!({"name": "heir"})).await["id"].as_str().unwrap().to_string();
    let parent = create_project(a, "inh-parent", None).await;
    let child = create_project(a, "inh-child", Some(&parent)).await;
    let grandchild = create_project(a, "inh-grandchild", Some(&child)).await;
    let user = new_user(&cloud, "inh-user").await;
    let member = new_user(&cloud, "inh-member").await;
    let group = new_group(&cloud, "inh-group", &[&member]).await;

    // Project-level: the subtree, not the project itself.
    let path = format!("/OS-INHERIT/projects/{parent}/users/{user}/roles/{rid}/inherited_to_projects");
    assert_eq!(put(a, &path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(head(a, &path).await, StatusCode::NO_CONTENT);
    assert_eq!(head(a, &format!("/projects/{parent}/users/{user}/roles/{rid}")).await, StatusCode::NOT_FOUND);
    assert_eq!(token(&cloud, &user, project_scope(&parent)).await.unwrap_err(), StatusCode::UNAUTHORIZED);
    assert_eq!(token(&cloud, &user, project_scope(&child)).await.unwrap().1, vec!["heir"]);
    assert_eq!(token(&cloud, &user, project_scope(&grandchild)).await.unwrap().1, vec!["heir"]);
    let (tok, _) = token(&cloud, &user, project_scope(&grandchild)).await.unwrap();
    assert_eq!(delete(a, &path).await, StatusCode::NO_CONTENT);
    assert_eq!(validate(&cloud, &tok).await, StatusCode::NOT_FOUND, "the token lost its only role");

    // Domain-level, to a group: every project of the domain, not the domain itself.
    let dpath = format!("/OS-INHERIT/domains/default/groups/{group}/roles/{rid}/inherited_to_projects");
    assert_eq!(put(a, &dpath).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        ids(&get(a, &format!("/OS-INHERIT/domains/default/groups/{group}/roles/inherited_to_projects")).await.json()["roles"]),
        vec![rid.clone()]
    );
    assert!(get(a, &format!("/domains/default/groups/{group}/roles")).await.json()["roles"].as_array().unwrap().is_empty());
    assert_eq!(token(&cloud, &member, project_scope(&grandchild)).await.unwrap().1, vec!["heir"]);
    assert_eq!(token(&cloud, &member, project_scope(&parent)).await.unwrap().1, vec!["heir"]);
    assert_eq!(token(&cloud, &member, json!({"domain": {"id": "default"}})).await.unwrap_err(), StatusCode::UNAUTHORIZED);
    let (mtok, _) = token(&cloud, &member, project_scope(&child)).await.unwrap();
    let available = ids(&get(&cloud.anonymous.with_token(Some(mtok)), "/auth/projects").await.json()["projects"]);
    for p in [&parent, &child, &grandchild] {
        assert!(available.contains(p), "inherited grants make {p} available: {available:?}");
    }

    // Effective assignments show the inheritance on each project.
    let q = format!("/role_assignments?user.id={member}&scope.project.id={grandchild}&effective");
    let listed = get(a, &q).await.json()["role_assignments"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["scope"]["OS-INHERIT:inherited_to"], "projects");
    assert!(listed[0]["links"]["assignment"].as_str().unwrap().ends_with(&format!(
        "/v3/OS-INHERIT/domains/default/groups/{group}/roles/{rid}/inherited_to_projects"
    )));
    assert!(listed[0]["links"]["membership"].as_str().unwrap().ends_with(&format!("/v3/groups/{group}/users/{member}")));
    assert_eq!(delete(a, &dpath).await, StatusCode::NO_CONTENT);
    assert!(get(a, &q).await.json()["role_assignments"].as_array().unwrap().is_empty());
    cloud.shutdown().await;
}

#[tokio::test]
async fn role_assignments_filters_effective_and_names() {
    let cloud = TestCloud::start().await;
    let a = &cloud.admin;
    let boss = create_role(a, json!({"name": "boss"})).await["id"].as_str().unwrap().to_string();
    let helper = create_role(a, json!({"name": "helper"})).await["id"].as_str().unwrap().to_string();
    assert_eq!(put(a, &format!("/roles/{boss}/implies/{helper}")).await.status, StatusCode::CREATED);
    let project = create_project(a, "ra-proj", None).await;
    let user = new_user(&cloud, "ra-user").await;
    let member = new_user(&cloud, "ra-member").await;
    let group = new_group(&cloud, "ra-group", &[&member]).await;
    put(a, &format!("/projects/{project}/users/{user}/roles/{boss}")).await;
    put(a, &format!("/projects/{project}/groups/{group}/roles/{helper}")).await;

    // Direct listing: exactly the stored grants, upstream's shape.
    let direct = get(a, &format!("/role_assignments?scope.project.id={project}")).await;
    assert_eq!(direct.status, StatusCode::OK);
    let body = direct.json();
    assert!(body["links"]["self"].as_str().unwrap().contains("/v3/role_assignments"));
    let list = body["role_assignments"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{body}");
    let by_user = list.iter().find(|x| x["user"]["id"] == json!(user)).unwrap();
    assert_eq!(
        by_user,
        &json!({
            "role": {"id": boss},
            "user": {"id": user},
            "scope": {"project": {"id": project}},
            "links": {"assignment": format!("{}/identity/v3/projects/{project}/users/{user}/roles/{boss}", cloud.url)},
        })
    );
    assert!(list.iter().any(|x| x["group"]["id"] == json!(group) && x["role"]["id"] == json!(helper)));
    let only_group = get(a, &format!("/role_assignments?group.id={group}")).await.json();
    assert_eq!(only_group["role_assignments"].as_array().unwrap().len(), 1);
    let by_role = get(a, &format!("/role_assignments?role.id={boss}")).await.json();
    assert_eq!(by_role["role_assignments"].as_array().unwrap().len(), 1);

    // Effective: groups expanded to users, implied roles added with their prior role.
    let eff = get(a, &format!("/role_assignments?scope.project.id={project}&effective")).await.json();
    let mut seen: Vec<(String, String)> = eff["role_assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["user"]["id"].as_str().unwrap().to_string(), x["role"]["id"].as_str().unwrap().to_string()))
        .collect();
    seen.sort();
    let mut expected = vec![(user.clone(), boss.clone()), (user.clone(), helper.clone()), (member.clone(), helper.clone())];
    expected.sort();
    assert_eq!(seen, expected);
    let implied = eff["role_assignments"].as_array().unwrap().iter().find(|x| x["user"]["id"] == json!(user) && x["role"]["id"] == json!(helper)).unwrap();
    assert!(implied["links"]["assignment"].as_str().unwrap().ends_with(&format!("/roles/{boss}")));
    assert!(implied["links"]["prior_role"].is_string());

    // Names.
    let named = get(a, &format!("/role_assignments?user.id={user}&include_names")).await.json();
    let x = &named["role_assignments"][0];
    assert_eq!(x["role"]["name"], "boss");
    assert_eq!(x["user"]["name"], "ra-user");
    assert_eq!(x["user"]["domain"]["name"], "Default");
    assert_eq!(x["scope"]["project"]["name"], "ra-proj");
    assert_eq!(x["scope"]["project"]["domain"]["id"], "default");

    // System and subtree filters.
    put(a, &format!("/system/users/{user}/roles/{helper}")).await;
    let sys = get(a, "/role_assignments?scope.system=all").await.json();
    assert!(sys["role_assignments"].as_array().unwrap().iter().any(|x| x["user"]["id"] == json!(user) && x["scope"]["system"]["all"] == json!(true)));
    let child = create_project(a, "ra-child", Some(&project)).await;
    put(a, &format!("/projects/{child}/users/{member}/roles/{boss}")).await;
    let tree = get(a, &format!("/role_assignments?scope.project.id={project}&include_subtree=true")).await.json();
    assert_eq!(tree["role_assignments"].as_array().unwrap().len(), 3);

    // Bad combinations.
    for q in [
        format!("user.id={user}&group.id={group}"),
        format!("scope.project.id={project}&scope.domain.id=default"),
        format!("group.id={group}&effective"),
        "include_subtree=true".to_string(),
    ] {
        assert_eq!(get(a, &format!("/role_assignments?{q}")).await.status, StatusCode::BAD_REQUEST, "{q}");
    }

    // A user may list their own assignments, nobody else's.
    let me = cloud.member.token_body["token"]["user"]["id"].as_str().unwrap().to_string();
    let own = get(&cloud.member, &format!("/role_assignments?user.id={me}")).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    assert!(!own.json()["role_assignments"].as_array().unwrap().is_empty());
    assert_eq!(get(&cloud.member, &format!("/role_assignments?user.id={user}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(get(&cloud.member, "/role_assignments").await.status, StatusCode::FORBIDDEN);
    cloud.shutdown().await;
}

// ---- effective roles on every backend

async fn on_backend(db: &db::testing::TestDb, keys: &std::path::Path) -> Identity {
    let mut config = IdentityConfig::new(keys.to_path_buf());
    config.password_hash_rounds = 4;
    let identity = Identity::new((**db).clone(), config).await.expect("identity");
    identity.migrate().await.expect("migrate");
    identity
}

async fn roles_of(identity: &Identity, user: &str, scope: ScopeRequest) -> Result<Vec<String>, identity::Error> {
    let creds = Credentials::Password { user: UserRef::Id(user.into()), password: PASSWORD.into() };
    let (_, info) = identity.authenticate(creds, scope).await?;
    let mut names: Vec<String> = info.roles.into_iter().map(|r| r.name).collect();
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn effective_roles_on_every_backend() {
    for db in test_databases().await {
        let keys = tempfile::tempdir().unwrap();
        let identity = on_backend(&db, keys.path()).await;
        let store = identity.store();
        let domain = identity::store::DomainRow { id: "default".into(), name: "Default".into(), description: None, enabled: true };
        store.domain_create(&domain).await.unwrap();
        let other = identity::store::DomainRow { id: "other".into(), name: "Other".into(), description: None, enabled: true };
        store.domain_create(&other).await.unwrap();
        let role = |name: &str, domain: Option<&str>| RoleRow { id: format!("r-{name}"), name: name.into(), domain_id: domain.map(String::from) };
        for r in [role("a", None), role("b", None), role("c", None), role("d", None), role("local", Some("default"))] {
            store.role_create(&r).await.unwrap();
        }
        // a → b → c → a (a cycle), local → d.
        for (p, i) in [("r-a", "r-b"), ("r-b", "r-c"), ("r-c", "r-a"), ("r-local", "r-d")] {
            store.implied_role_create(p, i).await.unwrap();
        }
        let project = |id: &str, parent: &str| ProjectRow {
            id: id.into(),
            name: id.into(),
            domain_id: "default".into(),
            parent_id: Some(parent.into()),
            is_domain: false,
            description: None,
            enabled: true,
        };
        for p in [project("top", "default"), project("mid", "top"), project("leaf", "mid")] {
            store.project_create(&p).await.unwrap();
        }
        let user = UserRow {
            id: "u1".into(),
            name: "u1".into(),
            domain_id: "default".into(),
            enabled: true,
            password_hash: Some(identity.hash_password(PASSWORD).await.unwrap()),
            default_project_id: None,
        };
        store.user_create(&user).await.unwrap();
        store.group_create(&GroupRow { id: "g1".into(), name: "g1".into(), domain_id: "default".into(), description: None }).await.unwrap();
        store.group_add_user("g1", "u1").await.unwrap();
        let grant = |k: &str, actor: &str, target: &str, role: &str, inherited: bool| AssignmentRow {
            kind: k.into(),
            actor_id: actor.into(),
            target_id: target.into(),
            role_id: role.into(),
            inherited,
        };
        let pid = |p: &str| ScopeRequest::ProjectId(p.into());

        // Nothing yet.
        assert!(roles_of(&identity, "u1", pid("top")).await.is_err());
        // Direct grant with a cyclic implication chain.
        store.assignment_put(&grant(kind::USER_PROJECT, "u1", "top", "r-a", false)).await.unwrap();
        assert_eq!(roles_of(&identity, "u1", pid("top")).await.unwrap(), ["a", "b", "c"]);
        assert!(roles_of(&identity, "u1", pid("mid")).await.is_err(), "direct grants are not inherited");
        // Project-inherited from the top, via the group: mid and leaf, not top itself.
        store.assignment_put(&grant(kind::GROUP_PROJECT, "g1", "top", "r-local", true)).await.unwrap();
        assert_eq!(roles_of(&identity, "u1", pid("mid")).await.unwrap(), ["d"], "domain roles only imply");
        assert_eq!(roles_of(&identity, "u1", pid("leaf")).await.unwrap(), ["d"]);
        assert_eq!(roles_of(&identity, "u1", pid("top")).await.unwrap(), ["a", "b", "c"]);
        // Domain-inherited: every project; a plain domain grant only the domain.
        store.assignment_put(&grant(kind::USER_DOMAIN, "u1", "default", "r-b", true)).await.unwrap();
        assert_eq!(roles_of(&identity, "u1", pid("leaf")).await.unwrap(), ["a", "b", "c", "d"]);
        assert!(roles_of(&identity, "u1", ScopeRequest::Domain(DomainRef::Id("default".into()))).await.is_err());
        store.assignment_put(&grant(kind::GROUP_DOMAIN, "g1", "default", "r-d", false)).await.unwrap();
        assert_eq!(roles_of(&identity, "u1", ScopeRequest::Domain(DomainRef::Id("default".into()))).await.unwrap(), ["d"]);
        assert!(roles_of(&identity, "u1", ScopeRequest::Domain(DomainRef::Id("other".into()))).await.is_err());
        // System, via the group.
        assert!(roles_of(&identity, "u1", ScopeRequest::System).await.is_err());
        store.assignment_put(&grant(kind::GROUP_SYSTEM, "g1", "system", "r-c", false)).await.unwrap();
        assert_eq!(roles_of(&identity, "u1", ScopeRequest::System).await.unwrap(), ["a", "b", "c"]);
        // Another user sees none of it.
        let mut other_user = user.clone();
        other_user.id = "u2".into();
        other_user.name = "u2".into();
        store.user_create(&other_user).await.unwrap();
        assert!(roles_of(&identity, "u2", pid("leaf")).await.is_err());
        eprintln!("passed on {:?}", db.backend());
        db.cleanup().await;
    }
}
