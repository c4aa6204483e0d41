//! Roles (`/v3/roles`, global and domain-specific), implied roles (`/v3/roles/{prior}/implies/{implied}`,
//! `/v3/role_inferences`), grants on projects, domains and the system to users and groups (with OS-INHERIT's
//! inherited forms), and `/v3/role_assignments`.

use std::collections::{HashMap, HashSet};

use api_common::{ApiError, Json, QueryPairs};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Map, Value, json};

use super::{AppState, authorize, enforce};
use crate::{
    error::Error,
    service::new_id,
    store::{AssignmentRow, ProjectNode, RevocationRow, RoleRecord, SYSTEM_ALL, kind},
};

/// Default policy rules (upstream names, secure-RBAC defaults; admin in any scope may do everything).
pub(super) const POLICIES: &[(&str, &str)] = &[
    ("identity:get_role", "rule:admin_required or role:reader"),
    ("identity:list_roles", "rule:admin_required or role:reader"),
    ("identity:create_role", "rule:admin_required"),
    ("identity:update_role", "rule:admin_required"),
    ("identity:delete_role", "rule:admin_required"),
    ("identity:get_domain_role", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:list_domain_roles", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:create_domain_role", "rule:admin_required"),
    ("identity:update_domain_role", "rule:admin_required"),
    ("identity:delete_domain_role", "rule:admin_required"),
    ("identity:get_implied_role", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:list_implied_roles", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:create_implied_role", "rule:admin_required"),
    ("identity:delete_implied_role", "rule:admin_required"),
    ("identity:list_role_inference_rules", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:check_implied_role", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:check_grant", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:list_grants", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:create_grant", "rule:admin_required"),
    ("identity:revoke_grant", "rule:admin_required"),
    ("identity:list_system_grants_for_user", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:check_system_grant_for_user", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:create_system_grant_for_user", "rule:admin_required"),
    ("identity:revoke_system_grant_for_user", "rule:admin_required"),
    ("identity:list_system_grants_for_group", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:check_system_grant_for_group", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:create_system_grant_for_group", "rule:admin_required"),
    ("identity:revoke_system_grant_for_group", "rule:admin_required"),
    (
        "identity:list_role_assignments",
        "rule:admin_required or (role:reader and system_scope:all) or \
         (role:reader and domain_id:%(target.scope.domain.id)s) or user_id:%(target.user.id)s",
    ),
    ("identity:list_role_assignments_for_tree", "rule:admin_required or (role:reader and system_scope:all)"),
];

/// Role names that may never be implied (upstream's `[assignment] prohibited_implied_role`).
const PROHIBITED_IMPLIED_ROLES: &[&str] = &["admin"];

pub(super) fn routes() -> Router<AppState> {
    let mut r = Router::new()
        .route("/v3/roles", get(list_roles).post(create_role))
        .route("/v3/roles/{role_id}", get(get_role).patch(update_role).delete(delete_role))
        .route("/v3/roles/{prior}/implies", get(list_implied))
        .route(
            "/v3/roles/{prior}/implies/{implied}",
            get(get_implied).head(check_implied).put(create_implied).delete(delete_implied),
        )
        .route("/v3/role_inferences", get(list_inferences))
        .route("/v3/role_assignments", get(list_assignments));
    for actor in [Actor::User, Actor::Group] {
        let a = actor.segment();
        for target in [Target::Project, Target::Domain] {
            let t = target.segment();
            r = grant_routes(r, &format!("/v3/{t}/{{target}}/{a}/{{actor}}/roles"), "", Grant { actor, target, inherited: false });
            r = grant_routes(
                r,
                &format!("/v3/OS-INHERIT/{t}/{{target}}/{a}/{{actor}}/roles"),
                "/inherited_to_projects",
                Grant { actor, target, inherited: true },
            );
        }
        r = grant_routes(r, &format!("/v3/system/{a}/{{actor}}/roles"), "", Grant { actor, target: Target::System, inherited: false });
    }
    r
}

/// Adds the list route (`{base}{suffix}`) and the item route (`{base}/{role}{suffix}`) of one grant family.
fn grant_routes(r: Router<AppState>, base: &str, suffix: &str, g: Grant) -> Router<AppState> {
    r.route(
        &format!("{base}{suffix}"),
        get(move |State(s): State<AppState>, h: HeaderMap, Path(p): Path<HashMap<String, String>>| async move {
            grant_list(&s, &h, g, &p).await
        }),
    )
    .route(
        &format!("{base}/{{role}}{suffix}"),
        get(move |State(s): State<AppState>, h: HeaderMap, Path(p): Path<HashMap<String, String>>| async move {
            grant_check(&s, &h, g, &p).await
        })
        .put(move |State(s): State<AppState>, h: HeaderMap, Path(p): Path<HashMap<String, String>>| async move {
            grant_create(&s, &h, g, &p).await
        })
        .delete(move |State(s): State<AppState>, h: HeaderMap, Path(p): Path<HashMap<String, String>>| async move {
            grant_revoke(&s, &h, g, &p).await
        }),
    )
}

// ---- roles

fn bad(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("Invalid input for field '{field}': {msg}"))
}

fn parse_object(text: Option<&str>) -> Map<String, Value> {
    text.and_then(|t| serde_json::from_str::<Map<String, Value>>(t).ok()).unwrap_or_default()
}

fn role_json(s: &AppState, r: &RoleRecord) -> Value {
    let mut obj = parse_object(r.extra.as_deref());
    obj.insert("id".into(), json!(r.id));
    obj.insert("name".into(), json!(r.name));
    obj.insert("domain_id".into(), json!(r.domain_id));
    obj.insert("description".into(), json!(r.description));
    obj.insert("options".into(), Value::Object(parse_object(r.options.as_deref())));
    obj.insert("links".into(), json!({"self": s.url(&format!("roles/{}", r.id))}));
    Value::Object(obj)
}

fn is_immutable(r: &RoleRecord) -> bool {
    parse_object(r.options.as_deref()).get("immutable").and_then(Value::as_bool) == Some(true)
}

fn role_target(r: &RoleRecord) -> Value {
    json!({"role_id": r.id, "role": {"id": r.id, "name": r.name, "domain_id": r.domain_id}})
}

/// A string-or-null attribute; `Ok(None)` when absent or null.
fn opt_string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, Error> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) => Ok(Some(v.clone())),
        Some(other) => Err(bad(field, format!("{other} is not of type 'string', 'null'"))),
    }
}

fn check_name(v: &Value) -> Result<String, Error> {
    let name = v.as_str().ok_or_else(|| bad("name", format!("{v} is not of type 'string'")))?;
    if name.trim().is_empty() {
        return Err(bad("name", format!("'{name}' is too short")));
    }
    if name.chars().count() > 255 {
        return Err(bad("name", format!("'{name}' is too long")));
    }
    Ok(name.to_string())
}

fn check_description(obj: &Map<String, Value>) -> Result<Option<String>, Error> {
    opt_string(obj, "description")
}

/// `options`: an object of known resource options (`immutable`, boolean or null).
fn check_options(v: &Value) -> Result<Map<String, Value>, Error> {
    let obj = v.as_object().ok_or_else(|| bad("options", format!("{v} is not of type 'object'")))?;
    let mut out = Map::new();
    for (k, val) in obj {
        match (k.as_str(), val) {
            ("immutable", Value::Bool(_)) => {
                out.insert(k.clone(), val.clone());
            }
            ("immutable", Value::Null) => {}
            ("immutable", other) => return Err(bad("options/immutable", format!("{other} is not of type 'boolean', 'null'"))),
            (other, _) => return Err(bad("options", format!("Additional properties are not allowed ('{other}' was unexpected)"))),
        }
    }
    Ok(out)
}

const ROLE_FIELDS: &[&str] = &["id", "name", "domain_id", "description", "options", "links"];

fn extra_of(obj: &Map<String, Value>, base: Map<String, Value>) -> Option<String> {
    let mut extra = base;
    for (k, v) in obj {
        if !ROLE_FIELDS.contains(&k.as_str()) {
            extra.insert(k.clone(), v.clone());
        }
    }
    (!extra.is_empty()).then(|| Value::Object(extra).to_string())
}

fn role_body(body: &Value) -> Result<&Map<String, Value>, Error> {
    match body.get("role") {
        Some(Value::Object(o)) => Ok(o),
        Some(other) => Err(bad("role", format!("{other} is not of type 'object'"))),
        None => Err(Error::BadRequest("Invalid input for field 'role': 'role' is a required property".into())),
    }
}

async fn find_role(s: &AppState, id: &str) -> Result<RoleRecord, Error> {
    s.identity.store().role_get(id).await?.ok_or_else(|| Error::not_found("role", id))
}

async fn list_roles(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let domain_id = q.get("domain_id").filter(|d| !d.is_empty());
    let rule = if domain_id.is_some() { "identity:list_domain_roles" } else { "identity:list_roles" };
    authorize(&s, &headers, rule, &json!({"domain_id": domain_id})).await?;
    let roles = s.identity.store().role_list_in(domain_id, q.get("name")).await?;
    let items = roles.iter().map(|r| role_json(&s, r)).collect();
    Ok(s.collection("roles", items, "roles"))
}

async fn get_role(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let role = s.identity.store().role_get(&id).await?;
    let rule = if role.as_ref().is_some_and(|r| r.domain_id.is_some()) { "identity:get_domain_role" } else { "identity:get_role" };
    let target = role.as_ref().map(role_target).unwrap_or_else(|| json!({"role_id": id}));
    authorize(&s, &headers, rule, &target).await?;
    let role = role.ok_or_else(|| Error::not_found("role", &id))?;
    Ok(Json(json!({"role": role_json(&s, &role)})))
}

async fn create_role(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let domain_in_body = body.get("role").and_then(|r| r.get("domain_id")).and_then(Value::as_str);
    let rule = if domain_in_body.is_some() { "identity:create_domain_role" } else { "identity:create_role" };
    authorize(&s, &headers, rule, &json!({"role": body.get("role")})).await?;
    let obj = role_body(&body)?;
    let name = check_name(obj.get("name").ok_or_else(|| bad("name", "'name' is a required property"))?)?;
    let description = check_description(obj)?;
    let domain_id = opt_string(obj, "domain_id")?;
    let options = match obj.get("options") {
        Some(v) => check_options(v)?,
        None => Map::new(),
    };
    let store = s.identity.store();
    if let Some(d) = &domain_id
        && store.domain_get(d).await?.is_none()
    {
        return Err(Error::not_found("domain", d).into());
    }
    if !store.role_list_in(domain_id.as_deref(), Some(&name)).await?.is_empty() {
        return Err(Error::Conflict { kind: "role", detail: format!("Duplicate entry found with name {name}") }.into());
    }
    let role = RoleRecord {
        id: new_id(),
        name,
        domain_id,
        description,
        options: (!options.is_empty()).then(|| Value::Object(options).to_string()),
        extra: extra_of(obj, Map::new()),
    };
    store.role_insert(&role).await.map_err(|e| duplicate_role(e, &role.name))?;
    s.identity.changed();
    Ok((StatusCode::CREATED, Json(json!({"role": role_json(&s, &role)})))
        .into_response())
}

fn duplicate_role(e: Error, name: &str) -> Error {
    match e {
        Error::Db(inner) if inner.is_unique_violation() => {
            Error::Conflict { kind: "role", detail: format!("Duplicate entry found with name {name}") }
        }
        other => other,
    }
}

async fn update_role(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let store = s.identity.store();
    let current = store.role_get(&id).await?;
    let rule = if current.as_ref().is_some_and(|r| r.domain_id.is_some()) {
        "identity:update_domain_role"
    } else {
        "identity:update_role"
    };
    let target = current.as_ref().map(role_target).unwrap_or_else(|| json!({"role_id": id}));
    authorize(&s, &headers, rule, &target).await?;
    let obj = role_body(&body)?;
    let mut role = current.ok_or_else(|| Error::not_found("role", &id))?;
    let mut options = parse_object(role.options.as_deref());
    let new_options = match obj.get("options") {
        Some(v) => Some(check_options(v)?),
        None => None,
    };
    if is_immutable(&role) {
        // Only `{"options": {"immutable": false|null}}` may touch an immutable role.
        let unlocking = obj.len() == 1
            && obj.get("options").and_then(|o| o.get("immutable")).is_some_and(|v| matches!(v, Value::Null | Value::Bool(false)));
        if !unlocking {
            return Err(Error::Forbidden(format!(
                "Unable to update immutable role resource: `{id}`. Set resource option \"immutable\" to false first."
            ))
            .into());
        }
    }
    if let Some(v) = obj.get("domain_id")
        && v.as_str() != role.domain_id.as_deref()
    {
        return Err(Error::BadRequest("Update of `domain_id` is not allowed.".into()).into());
    }
    if let Some(v) = obj.get("name") {
        let name = check_name(v)?;
        if name != role.name && !store.role_list_in(role.domain_id.as_deref(), Some(&name)).await?.is_empty() {
            return Err(Error::Conflict { kind: "role", detail: format!("Duplicate entry found with name {name}") }.into());
        }
        role.name = name;
    }
    if obj.contains_key("description") {
        role.description = check_description(obj)?;
    }
    if let Some(new) = new_options {
        if obj.get("options").and_then(|o| o.get("immutable")).is_some_and(Value::is_null) {
            options.remove("immutable");
        }
        options.extend(new);
        role.options = (!options.is_empty()).then(|| Value::Object(options).to_string());
    }
    role.extra = extra_of(obj, parse_object(role.extra.as_deref()));
    store.role_update(&role).await.map_err(|e| duplicate_role(e, &role.name))?;
    s.identity.changed();
    Ok(Json(json!({"role": role_json(&s, &role)})))
}

async fn delete_role(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = s.identity.store();
    let role = store.role_get(&id).await?;
    let rule = if role.as_ref().is_some_and(|r| r.domain_id.is_some()) {
        "identity:delete_domain_role"
    } else {
        "identity:delete_role"
    };
    let target = role.as_ref().map(role_target).unwrap_or_else(|| json!({"role_id": id}));
    authorize(&s, &headers, rule, &target).await?;
    let role = role.ok_or_else(|| Error::not_found("role", &id))?;
    if is_immutable(&role) {
        return Err(Error::Forbidden(format!(
            "Unable to delete immutable role resource: `{id}`. Set resource option \"immutable\" to false first."
        ))
        .into());
    }
    let assignments = store.assignment_list_for_role(&id).await?;
    store.role_delete(&id).await?;
    s.identity.changed();
    for a in &assignments {
        revoke_for(&s, a).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---- implied roles

fn role_ref(s: &AppState, r: &RoleRecord) -> Value {
    json!({"id": r.id, "name": r.name, "links": {"self": s.url(&format!("roles/{}", r.id))}})
}

fn inference_json(s: &AppState, prior: &RoleRecord, implied: &RoleRecord) -> Value {
    json!({
        "role_inference": {"prior_role": role_ref(s, prior), "implies": role_ref(s, implied)},
        "links": {"self": s.url(&format!("roles/{}/implies/{}", prior.id, implied.id))},
    })
}

/// Authorizes an implied-role call, then finds both roles (404 for either).
async fn implied_pair(
    s: &AppState,
    headers: &HeaderMap,
    rule: &str,
    prior: &str,
    implied: &str,
) -> Result<(RoleRecord, RoleRecord), ApiError> {
    authorize(s, headers, rule, &json!({"prior_role_id": prior, "implied_role_id": implied})).await?;
    Ok((find_role(s, prior).await?, find_role(s, implied).await?))
}

async fn create_implied(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (p, i) = implied_pair(&s, &headers, "identity:create_implied_role", &prior, &implied).await?;
    if PROHIBITED_IMPLIED_ROLES.contains(&i.name.as_str()) {
        return Err(Error::Forbidden(format!("{} is not a valid implied role: {} is prohibited.", i.id, i.name)).into());
    }
    if p.domain_id.is_none() && i.domain_id.is_some() {
        return Err(Error::Forbidden(format!(
            "{} is not a valid implied role: Global role cannot imply a domain-specific role",
            i.id
        ))
        .into());
    }
    let store = s.identity.store();
    if !store.implied_role_exists(&prior, &implied).await? {
        store.implied_role_create(&prior, &implied).await?;
        s.identity.changed();
    }
    Ok((StatusCode::CREATED, Json(inference_json(&s, &p, &i))).into_response())
}

async fn get_implied(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (p, i) = implied_pair(&s, &headers, "identity:get_implied_role", &prior, &implied).await?;
    if !s.identity.store().implied_role_exists(&prior, &implied).await? {
        return Err(implied_not_found(&prior, &implied).into());
    }
    Ok(Json(inference_json(&s, &p, &i)))
}

fn implied_not_found(prior: &str, implied: &str) -> Error {
    Error::not_found("implied role", format!("{prior} implies {implied}"))
}

async fn check_implied(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    implied_pair(&s, &headers, "identity:check_implied_role", &prior, &implied).await?;
    if !s.identity.store().implied_role_exists(&prior, &implied).await? {
        return Err(implied_not_found(&prior, &implied).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_implied(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    implied_pair(&s, &headers, "identity:delete_implied_role", &prior, &implied).await?;
    if !s.identity.store().implied_role_delete(&prior, &implied).await? {
        return Err(implied_not_found(&prior, &implied).into());
    }
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_implied(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(prior): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:list_implied_roles", &json!({"prior_role_id": prior})).await?;
    let p = find_role(&s, &prior).await?;
    let graph = s.identity.role_graph().await?;
    let implies: Vec<Value> = graph
        .implied_by(&prior)
        .iter()
        .filter_map(|id| graph.role(id))
        .map(|r| json!({"id": r.id, "name": r.name, "links": {"self": s.url(&format!("roles/{}", r.id))}}))
        .collect();
    Ok(Json(json!({
        "role_inference": {"prior_role": role_ref(&s, &p), "implies": implies},
        "links": {"self": s.url(&format!("roles/{prior}/implies"))},
    })))
}

async fn list_inferences(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:list_role_inference_rules", &json!({})).await?;
    let roles: HashMap<String, RoleRecord> =
        s.identity.store().role_list_all().await?.into_iter().map(|r| (r.id.clone(), r)).collect();
    let mut rules: Vec<(String, Vec<Value>)> = Vec::new();
    for (prior, implied) in s.identity.store().implied_role_list().await? {
        let Some(i) = roles.get(&implied) else { continue };
        match rules.iter_mut().find(|(p, _)| *p == prior) {
            Some((_, list)) => list.push(role_ref(&s, i)),
            None => rules.push((prior, vec![role_ref(&s, i)])),
        }
    }
    let items: Vec<Value> = rules
        .into_iter()
        .filter_map(|(prior, implies)| {
            roles.get(&prior).map(|p| json!({"prior_role": role_ref(&s, p), "implies": implies}))
        })
        .collect();
    Ok(Json(json!({
        "role_inferences": items,
        "links": {"self": s.url("role_inferences"), "previous": null, "next": null},
    })))
}

// ---- grants

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Actor {
    User,
    Group,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Project,
    Domain,
    System,
}

/// One family of grant routes: who, on what, inherited or not.
#[derive(Clone, Copy, Debug)]
struct Grant {
    actor: Actor,
    target: Target,
    inherited: bool,
}

impl Actor {
    fn segment(self) -> &'static str {
        match self {
            Actor::User => "users",
            Actor::Group => "groups",
        }
    }
}

impl Target {
    fn segment(self) -> &'static str {
        match self {
            Target::Project => "projects",
            Target::Domain => "domains",
            Target::System => "system",
        }
    }
}

impl Grant {
    fn kind(self) -> &'static str {
        match (self.actor, self.target) {
            (Actor::User, Target::Project) => kind::USER_PROJECT,
            (Actor::User, Target::Domain) => kind::USER_DOMAIN,
            (Actor::User, Target::System) => kind::USER_SYSTEM,
            (Actor::Group, Target::Project) => kind::GROUP_PROJECT,
            (Actor::Group, Target::Domain) => kind::GROUP_DOMAIN,
            (Actor::Group, Target::System) => kind::GROUP_SYSTEM,
        }
    }

    /// The policy rule for `verb` (`check`, `list`, `create`, `revoke`).
    fn rule(self, verb: &str) -> String {
        match (self.target, self.actor) {
            (Target::System, Actor::User) if verb == "list" => "identity:list_system_grants_for_user".into(),
            (Target::System, Actor::Group) if verb == "list" => "identity:list_system_grants_for_group".into(),
            (Target::System, Actor::User) => format!("identity:{verb}_system_grant_for_user"),
            (Target::System, Actor::Group) => format!("identity:{verb}_system_grant_for_group"),
            _ if verb == "list" => "identity:list_grants".into(),
            _ => format!("identity:{verb}_grant"),
        }
    }
}

/// What a grant call resolved: the assignment row and the entities, looked up before policy as upstream does.
struct Resolved {
    actor_domain: Option<String>,
    actor_found: bool,
    target_domain: Option<String>,
    target_found: bool,
}

async fn resolve(s: &AppState, g: Grant, actor: &str, target: &str) -> Result<Resolved, Error> {
    let store = s.identity.store();
    let actor_domain = match g.actor {
        Actor::User => store.user_get(actor).await?.map(|u| u.domain_id),
        Actor::Group => store.group_get(actor).await?.map(|g| g.domain_id),
    };
    let target_domain = match g.target {
        Target::Project => store.project_get(target).await?.map(|p| p.domain_id),
        Target::Domain => store.domain_get(target).await?.map(|d| d.id),
        Target::System => Some(String::new()),
    };
    Ok(Resolved {
        actor_found: actor_domain.is_some(),
        actor_domain,
        target_found: target_domain.is_some(),
        target_domain: target_domain.filter(|d| !d.is_empty()),
    })
}

fn grant_target(g: Grant, actor: &str, target: &str, role: Option<&RoleRecord>, r: &Resolved) -> Value {
    let mut t = Map::new();
    let (actor_key, actor_obj) = match g.actor {
        Actor::User => ("user", "user_id"),
        Actor::Group => ("group", "group_id"),
    };
    t.insert(actor_obj.into(), json!(actor));
    t.insert(actor_key.into(), json!({"id": actor, "domain_id": r.actor_domain}));
    match g.target {
        Target::Project => {
            t.insert("project_id".into(), json!(target));
            t.insert("project".into(), json!({"id": target, "domain_id": r.target_domain}));
        }
        Target::Domain => {
            t.insert("domain_id".into(), json!(target));
            t.insert("domain".into(), json!({"id": target}));
        }
        Target::System => {}
    }
    if let Some(role) = role {
        t.insert("role_id".into(), json!(role.id));
        t.insert("role".into(), json!({"id": role.id, "domain_id": role.domain_id}));
    }
    Value::Object(t)
}

fn param<'a>(p: &'a HashMap<String, String>, key: &str) -> &'a str {
    p.get(key).map(String::as_str).unwrap_or(SYSTEM_ALL)
}

/// Authorizes a grant call and returns the assignment it names; 404 for an unknown role, actor or target.
async fn grant_row(
    s: &AppState,
    headers: &HeaderMap,
    g: Grant,
    verb: &str,
    p: &HashMap<String, String>,
) -> Result<(AssignmentRow, RoleRecord, Resolved), ApiError> {
    let (actor, target, role_id) = (param(p, "actor"), param(p, "target"), param(p, "role"));
    let resolved = resolve(s, g, actor, target).await?;
    let role = s.identity.store().role_get(role_id).await?;
    let info = super::caller(s, headers).await?;
    enforce(s, &info, &g.rule(verb), &grant_target(g, actor, target, role.as_ref(), &resolved))?;
    let role = role.ok_or_else(|| Error::not_found("role", role_id))?;
    check_found(g, actor, target, &resolved)?;
    let row = AssignmentRow {
        kind: g.kind().into(),
        actor_id: actor.into(),
        target_id: target.into(),
        role_id: role.id.clone(),
        inherited: g.inherited,
    };
    Ok((row, role, resolved))
}

fn check_found(g: Grant, actor: &str, target: &str, r: &Resolved) -> Result<(), Error> {
    if !r.actor_found {
        return Err(Error::not_found(if g.actor == Actor::User { "user" } else { "group" }, actor));
    }
    if !r.target_found {
        return Err(Error::not_found(if g.target == Target::Project { "project" } else { "domain" }, target));
    }
    Ok(())
}

fn assignment_not_found(a: &AssignmentRow) -> Error {
    Error::not_found(
        "role assignment",
        format!("role {}, actor {}, target {}", a.role_id, a.actor_id, a.target_id),
    )
}

async fn grant_check(s: &AppState, headers: &HeaderMap, g: Grant, p: &HashMap<String, String>) -> Result<StatusCode, ApiError> {
    let (row, _, _) = grant_row(s, headers, g, "check", p).await?;
    if !s.identity.store().assignment_exists(&row).await? {
        return Err(assignment_not_found(&row).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn grant_create(s: &AppState, headers: &HeaderMap, g: Grant, p: &HashMap<String, String>) -> Result<StatusCode, ApiError> {
    let (row, role, resolved) = grant_row(s, headers, g, "create", p).await?;
    if let Some(role_domain) = &role.domain_id {
        match g.target {
            Target::System => {
                return Err(Error::BadRequest(format!(
                    "Role {} is a domain-specific role. Only global roles may be granted on the system.",
                    role.id
                ))
                .into());
            }
            _ if resolved.target_domain.as_ref() != Some(role_domain) => {
                return Err(Error::Forbidden(format!(
                    "{} {} must be in the same domain as the role {} being assigned.",
                    if g.target == Target::Project { "Project" } else { "Domain" },
                    row.target_id,
                    role.id
                ))
                .into());
            }
            _ => {}
        }
    }
    s.identity.store().assignment_put(&row).await?;
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

async fn grant_revoke(s: &AppState, headers: &HeaderMap, g: Grant, p: &HashMap<String, String>) -> Result<StatusCode, ApiError> {
    let (row, _, _) = grant_row(s, headers, g, "revoke", p).await?;
    if !s.identity.store().assignment_delete(&row).await? {
        return Err(assignment_not_found(&row).into());
    }
    s.identity.changed();
    revoke_for(s, &row).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revocation events for a removed assignment, as upstream: tokens of the user (each member, for a group) scoped
/// to the project lose their validity. Other scopes need no event: validation recomputes roles, and a token left
/// without any role is refused.
async fn revoke_for(s: &AppState, a: &AssignmentRow) -> Result<(), Error> {
    if a.inherited || !(a.kind == kind::USER_PROJECT || a.kind == kind::GROUP_PROJECT) {
        return Ok(());
    }
    let users = if a.kind == kind::USER_PROJECT {
        vec![a.actor_id.clone()]
    } else {
        s.identity.store().membership_user_ids(&a.actor_id).await?
    };
    let now = chrono::Utc::now().timestamp();
    for user in users {
        let ev = RevocationRow {
            audit_id: None,
            user_id: Some(user),
            project_id: Some(a.target_id.clone()),
            issued_before: now,
        };
        s.identity.revoke_event(ev).await?;
    }
    Ok(())
}

async fn grant_list(s: &AppState, headers: &HeaderMap, g: Grant, p: &HashMap<String, String>) -> Result<Json<Value>, ApiError> {
    let (actor, target) = (param(p, "actor"), param(p, "target"));
    let resolved = resolve(s, g, actor, target).await?;
    let info = super::caller(s, headers).await?;
    enforce(s, &info, &g.rule("list"), &grant_target(g, actor, target, None, &resolved))?;
    check_found(g, actor, target, &resolved)?;
    let store = s.identity.store();
    let rows = store.assignment_list_for(g.kind(), actor, target, g.inherited).await?;
    let mut items = Vec::new();
    for row in rows {
        if let Some(role) = store.role_get(&row.role_id).await? {
            items.push(role_json(s, &role));
        }
    }
    let mut path = match g.target {
        Target::System => format!("system/{}/{actor}/roles", g.actor.segment()),
        t => format!("{}/{target}/{}/{actor}/roles", t.segment(), g.actor.segment()),
    };
    if g.inherited {
        path = format!("OS-INHERIT/{path}/inherited_to_projects");
    }
    Ok(s.collection("roles", items, &path))
}

// ---- role assignments

/// The filters of `GET /v3/role_assignments`.
#[derive(Default)]
struct Filters {
    user: Option<String>,
    group: Option<String>,
    role: Option<String>,
    project: Option<String>,
    domain: Option<String>,
    system: bool,
    inherited: bool,
    effective: bool,
    names: bool,
    subtree: bool,
}

/// A key-only flag (`?effective`) or a boolean value.
fn flag(q: &QueryPairs, key: &str) -> bool {
    q.contains(key) && q.get(key).is_none_or(|v| v.is_empty() || api_common::query::parse_bool(v) != Some(false))
}

fn filters(q: &QueryPairs) -> Result<Filters, Error> {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).map(str::to_string);
    let f = Filters {
        user: get("user.id"),
        group: get("group.id"),
        role: get("role.id"),
        project: get("scope.project.id"),
        domain: get("scope.domain.id"),
        system: q.get("scope.system").is_some_and(|v| v == "all"),
        inherited: q.get("scope.OS-INHERIT:inherited_to").is_some_and(|v| v == "projects"),
        effective: flag(q, "effective"),
        names: flag(q, "include_names"),
        subtree: flag(q, "include_subtree"),
    };
    if f.user.is_some() && f.group.is_some() {
        return Err(Error::BadRequest("Specify a user or group, not both".into()));
    }
    if f.project.is_some() && f.domain.is_some() {
        return Err(Error::BadRequest("Specify a domain or project, not both".into()));
    }
    if f.system && f.project.is_some() {
        return Err(Error::BadRequest("Specify system or project, not both".into()));
    }
    if f.system && f.domain.is_some() {
        return Err(Error::BadRequest("Specify system or domain, not both".into()));
    }
    if f.effective && f.group.is_some() {
        return Err(Error::BadRequest(
            "Combining effective and group filter will always result in an empty list.".into(),
        ));
    }
    if f.effective && f.inherited && f.domain.is_some() {
        return Err(Error::BadRequest(
            "Combining effective, domain and inherited filters will always result in an empty list.".into(),
        ));
    }
    if f.subtree && f.project.is_none() {
        return Err(Error::BadRequest("scope.project.id must be specified if include_subtree is also specified".into()));
    }
    Ok(f)
}

/// One listed assignment: the row it shows, and how an effective listing derived it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Listed {
    row: AssignmentRow,
    /// The group the user is in, when derived from a group grant.
    via_group: Option<String>,
    /// The inherited grant's target kind and id, when derived through inheritance.
    via_inherited: Option<(String, String)>,
    /// The role that implied this one, when derived by implication.
    prior_role: Option<String>,
}

fn is_user(kind: &str) -> bool {
    kind.starts_with("User")
}

fn scope_of(kind: &str) -> Target {
    if kind.ends_with("Project") {
        Target::Project
    } else if kind.ends_with("Domain") {
        Target::Domain
    } else {
        Target::System
    }
}

/// Every project below `root` (not itself), given each project's children.
fn descendants(children: &HashMap<&str, Vec<&str>>, root: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    while let Some(id) = stack.pop() {
        for child in children.get(id).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(*child) {
                out.push(child.to_string());
                stack.push(child);
            }
        }
    }
    out
}

async fn list_assignments(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let info = super::caller(&s, &headers).await?;
    let f = filters(&q)?;
    let target = json!({
        "user": f.user.as_ref().map(|u| json!({"id": u})),
        "group": f.group.as_ref().map(|g| json!({"id": g})),
        "role": f.role.as_ref().map(|r| json!({"id": r})),
        "scope": {
            "project": f.project.as_ref().map(|p| json!({"id": p})),
            "domain": f.domain.as_ref().map(|d| json!({"id": d})),
        },
        "project": f.project.as_ref().map(|p| json!({"id": p})),
    });
    let rule = if f.subtree { "identity:list_role_assignments_for_tree" } else { "identity:list_role_assignments" };
    enforce(&s, &info, rule, &target)?;

    let store = s.identity.store();
    let graph = s.identity.role_graph().await?;
    let nodes = store.project_nodes().await?;
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for n in &nodes {
        if let Some(parent) = &n.parent_id {
            children.entry(parent.as_str()).or_default().push(n.id.as_str());
        }
    }
    // Projects the scope filter accepts.
    let projects_in_scope: Option<HashSet<String>> = f.project.as_ref().map(|p| {
        let mut set: HashSet<String> = HashSet::from([p.clone()]);
        if f.subtree {
            set.extend(descendants(&children, p));
        }
        set
    });

    let raw = if f.effective {
        store.assignment_list_all(None).await?
    } else {
        store.assignment_list_all(f.user.as_deref().or(f.group.as_deref())).await?
    };
    let mut listed: Vec<Listed> = Vec::new();
    if !f.effective {
        listed.extend(raw.into_iter().map(|row| Listed { row, via_group: None, via_inherited: None, prior_role: None }));
    } else {
        // Groups to users.
        let memberships = store.membership_list(f.user.as_deref()).await?;
        let mut members: HashMap<&str, Vec<&str>> = HashMap::new();
        for (u, g) in &memberships {
            members.entry(g.as_str()).or_default().push(u.as_str());
        }
        let mut per_user = Vec::new();
        for row in raw {
            if is_user(&row.kind) {
                per_user.push(Listed { row, via_group: None, via_inherited: None, prior_role: None });
                continue;
            }
            let user_kind = match scope_of(&row.kind) {
                Target::Project => kind::USER_PROJECT,
                Target::Domain => kind::USER_DOMAIN,
                Target::System => kind::USER_SYSTEM,
            };
            for user in members.get(row.actor_id.as_str()).map(Vec::as_slice).unwrap_or_default() {
                per_user.push(Listed {
                    row: AssignmentRow { kind: user_kind.into(), actor_id: user.to_string(), ..row.clone() },
                    via_group: Some(row.actor_id.clone()),
                    via_inherited: None,
                    prior_role: None,
                });
            }
        }
        // Inheritance to projects.
        let mut direct = Vec::new();
        for l in per_user {
            if !l.row.inherited {
                direct.push(l);
                continue;
            }
            let targets: Vec<String> = match scope_of(&l.row.kind) {
                Target::Domain => nodes.iter().filter(|n| n.domain_id == l.row.target_id).map(|n| n.id.clone()).collect(),
                Target::Project => descendants(&children, &l.row.target_id),
                Target::System => Vec::new(),
            };
            for project in targets {
                direct.push(Listed {
                    row: AssignmentRow {
                        kind: kind::USER_PROJECT.into(),
                        target_id: project,
                        inherited: false,
                        ..l.row.clone()
                    },
                    via_inherited: Some((l.row.kind.clone(), l.row.target_id.clone())),
                    ..l.clone()
                });
            }
        }
        // Implied roles; domain-specific roles only contribute what they imply.
        for l in direct {
            for (role, prior) in graph.expand([l.row.role_id.as_str()]) {
                if graph.role(role).is_none_or(|r| r.domain_id.is_some()) {
                    continue;
                }
                listed.push(Listed {
                    row: AssignmentRow { role_id: role.to_string(), ..l.row.clone() },
                    prior_role: prior.map(str::to_string),
                    ..l.clone()
                });
            }
        }
    }

    listed.retain(|l| {
        let r = &l.row;
        let scope = scope_of(&r.kind);
        let actor_ok = match (&f.user, &f.group) {
            (Some(u), _) => is_user(&r.kind) && &r.actor_id == u,
            (_, Some(g)) => !is_user(&r.kind) && &r.actor_id == g,
            _ => true,
        };
        let scope_ok = if let Some(projects) = &projects_in_scope {
            scope == Target::Project && projects.contains(&r.target_id)
        } else if let Some(d) = &f.domain {
            scope == Target::Domain && &r.target_id == d
        } else if f.system {
            scope == Target::System
        } else {
            true
        };
        actor_ok
            && scope_ok
            && f.role.as_ref().is_none_or(|role| &r.role_id == role)
            && (!f.inherited || r.inherited || l.via_inherited.is_some())
    });
    let mut seen = HashSet::new();
    listed.retain(|l| seen.insert(l.clone()));

    let names = if f.names { Some(Names::load(&s, &nodes).await?) } else { None };
    let items: Vec<Value> = listed.iter().map(|l| assignment_json(&s, l, &graph, names.as_ref())).collect();
    let mut self_link = s.url("role_assignments");
    if !q.0.is_empty() {
        let query: Vec<String> = q
            .0
            .iter()
            .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
            .collect();
        self_link = format!("{self_link}?{}", query.join("&"));
    }
    Ok(Json(json!({"role_assignments": items, "links": {"self": self_link, "previous": null, "next": null}})))
}

/// Names for `include_names`.
struct Names {
    users: HashMap<String, (String, String)>,
    groups: HashMap<String, (String, String)>,
    domains: HashMap<String, String>,
    projects: HashMap<String, (String, String)>,
}

impl Names {
    async fn load(s: &AppState, nodes: &[ProjectNode]) -> Result<Names, Error> {
        let store = s.identity.store();
        Ok(Names {
            users: store.user_names().await?.into_iter().map(|(id, n, d)| (id, (n, d))).collect(),
            groups: store.group_names().await?.into_iter().map(|(id, n, d)| (id, (n, d))).collect(),
            domains: store.domain_names().await?.into_iter().collect(),
            projects: nodes.iter().map(|n| (n.id.clone(), (n.name.clone(), n.domain_id.clone()))).collect(),
        })
    }

    fn domain(&self, id: &str) -> Value {
        json!({"id": id, "name": self.domains.get(id)})
    }

    fn actor(&self, id: &str, user: bool) -> Value {
        let entry = if user { self.users.get(id) } else { self.groups.get(id) };
        match entry {
            Some((name, domain)) => json!({"id": id, "name": name, "domain": self.domain(domain)}),
            None => json!({"id": id}),
        }
    }
}

fn assignment_json(s: &AppState, l: &Listed, graph: &crate::service::RoleGraph, names: Option<&Names>) -> Value {
    let r = &l.row;
    let user = is_user(&r.kind);
    let mut out = Map::new();
    let mut links = Map::new();

    let mut scope = match scope_of(&r.kind) {
        Target::Project => {
            let project = match names.and_then(|n| n.projects.get(&r.target_id).map(|p| (n, p))) {
                Some((n, (name, domain))) => json!({"id": r.target_id, "name": name, "domain": n.domain(domain)}),
                None => json!({"id": r.target_id}),
            };
            json!({"project": project})
        }
        Target::Domain => match names {
            Some(n) => json!({"domain": n.domain(&r.target_id)}),
            None => json!({"domain": {"id": r.target_id}}),
        },
        Target::System => json!({"system": {"all": true}}),
    };
    // The assignment link names the grant as stored: its target, its actor, the role granted.
    let (link_target, inherited) = match &l.via_inherited {
        Some((k, t)) => (format!("/{}/{t}", scope_of(k).segment()), true),
        None => match scope_of(&r.kind) {
            Target::System => ("/system".to_string(), r.inherited),
            t => (format!("/{}/{}", t.segment(), r.target_id), r.inherited),
        },
    };
    let link_actor = match (&l.via_group, user) {
        (Some(g), _) => {
            links.insert("membership".into(), json!(s.url(&format!("groups/{g}/users/{}", r.actor_id))));
            format!("/groups/{g}")
        }
        (None, true) => format!("/users/{}", r.actor_id),
        (None, false) => format!("/groups/{}", r.actor_id),
    };
    let granted = l.prior_role.as_deref().unwrap_or(&r.role_id);
    let mut link = format!("{link_target}{link_actor}/roles/{granted}");
    if inherited {
        if let Some(obj) = scope.as_object_mut() {
            obj.insert("OS-INHERIT:inherited_to".into(), json!("projects"));
        }
        link = format!("/OS-INHERIT{link}/inherited_to_projects");
    }
    links.insert("assignment".into(), json!(s.url(&link)));
    if let Some(prior) = &l.prior_role {
        links.insert("prior_role".into(), json!(s.url(&format!("prior_role/{}/implies/{prior}", r.role_id))));
    }

    let role = match (names, graph.role(&r.role_id)) {
        (Some(n), Some(role)) => {
            let mut v = json!({"id": role.id, "name": role.name});
            if let (Some(d), Some(obj)) = (&role.domain_id, v.as_object_mut()) {
                obj.insert("domain".into(), n.domain(d));
            }
            v
        }
        _ => json!({"id": r.role_id}),
    };
    out.insert("role".into(), role);
    let actor = match names {
        Some(n) => n.actor(&r.actor_id, user),
        None => json!({"id": r.actor_id}),
    };
    out.insert(if user { "user" } else { "group" }.into(), actor);
    out.insert("scope".into(), scope);
    out.insert("links".into(), Value::Object(links));
    Value::Object(out)
}
