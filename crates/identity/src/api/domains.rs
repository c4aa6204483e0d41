//! `/v3/domains`: create, list (filters `name`, `enabled`), show, update, delete. A domain must be disabled before
//! it can be deleted; deleting it removes everything it owns. Disabling one invalidates tokens scoped to it or to
//! its projects (validation refuses disabled domains; the cache is dropped here).
//!
//! Domain-specific configuration (`/v3/domains/{id}/config[/{group}[/{option}]]`, defaults under
//! `/v3/domains/config/…/default`) is stored and served as upstream does for its whitelisted `identity` and `ldap`
//! options (Stratus runs no LDAP driver: the settings are kept, not acted upon); `security_compliance` reads the
//! password rules in force.
//!
//! The operations also serve `/v3/projects` for projects acting as domains (`is_domain: true`), which Stratus keeps
//! in the domain table only.

use api_common::{ApiError, Json, QueryPairs};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::{
    AppState, authorize,
    projects::{Body, extra_map, filter_flag, reject_id_change},
};
use crate::{
    error::Error,
    service::new_id,
    store::{DomainRecord, DomainRow, RevocationRow},
};

/// Default policy rules (upstream names; secure-RBAC defaults plus upstream's `rule:admin_required` alternative).
pub(super) const POLICIES: &[(&str, &str)] = &[
    (
        "identity:get_domain",
        "rule:admin_required or (role:reader and system_scope:all) or domain_id:%(target.domain.id)s or \
         project_domain_id:%(target.domain.id)s",
    ),
    ("identity:list_domains", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:create_domain", "rule:admin_required"),
    ("identity:update_domain", "rule:admin_required"),
    ("identity:delete_domain", "rule:admin_required"),
    ("identity:create_domain_config", "rule:admin_required"),
    ("identity:get_domain_config", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:get_domain_config_default", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:update_domain_config", "rule:admin_required"),
    ("identity:delete_domain_config", "rule:admin_required"),
    ("identity:get_security_compliance_domain_config", ""),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/domains", get(list).post(create))
        .route("/v3/domains/{domain_id}", get(show).patch(update).delete(delete))
        .route("/v3/domains/config/default", get(config_default))
        .route("/v3/domains/config/{group}/default", get(config_default_group))
        .route("/v3/domains/config/{group}/{option}/default", get(config_default_option))
        .route("/v3/domains/{domain_id}/config", get(config_show).put(config_create).patch(config_update).delete(config_delete))
        .route(
            "/v3/domains/{domain_id}/config/{group}",
            get(config_group_show).patch(config_group_update).delete(config_group_delete),
        )
        .route(
            "/v3/domains/{domain_id}/config/{group}/{option}",
            get(config_option_show).patch(config_option_update).delete(config_option_delete),
        )
}

/// A domain as `/v3/domains` shows it.
pub(super) fn domain_json(s: &AppState, d: &DomainRecord, tags: &[String]) -> Value {
    let mut m = extra_map(d.extra.as_deref());
    m.entry("options").or_insert_with(|| json!({}));
    m.insert("id".into(), json!(d.row.id));
    m.insert("name".into(), json!(d.row.name));
    m.insert("description".into(), json!(d.row.description));
    m.insert("enabled".into(), json!(d.row.enabled));
    m.insert("tags".into(), json!(tags));
    m.insert("links".into(), json!({"self": s.url(&format!("domains/{}", d.row.id))}));
    Value::Object(m)
}

async fn with_tags(s: &AppState, d: DomainRecord) -> Result<(DomainRecord, Vec<String>), Error> {
    let tags = s.identity.store().project_tags(&d.row.id).await?;
    Ok((d, tags))
}

/// Creates a domain from a create body (of `/v3/domains`, or of `/v3/projects` with `is_domain: true`).
pub(super) async fn create_domain(s: &AppState, body: &Map<String, Value>) -> Result<(DomainRecord, Vec<String>), Error> {
    let b = Body::parse(body, DOMAIN_FIELDS)?;
    let name = b.name.ok_or_else(|| Error::BadRequest("Invalid input for field 'name': 'name' is a required property".into()))?;
    let id = match body.get("explicit_domain_id").or_else(|| body.get("id")) {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 64 => id.clone(),
        Some(Value::Null) | None => new_id(),
        Some(other) => return Err(Error::BadRequest(format!("Invalid input for field 'explicit_domain_id': {other} is not a valid id"))),
    };
    let store = s.identity.store();
    if store.domain_get_by_name(&name).await?.is_some() {
        return Err(duplicate(&name));
    }
    if store.domain_get(&id).await?.is_some() || store.project_get(&id).await?.is_some() {
        return Err(Error::Conflict { kind: "domain", detail: format!("Duplicate ID, {id}") });
    }
    let record = DomainRecord {
        row: DomainRow {
            id,
            name,
            description: b.description.unwrap_or(Some(String::new())),
            enabled: b.enabled.unwrap_or(true),
        },
        extra: b.extra,
    };
    store.domain_record_create(&record).await.map_err(|e| match e {
        Error::Db(ref d) if d.is_unique_violation() => duplicate(&record.row.name),
        other => other,
    })?;
    let tags = b.tags.unwrap_or_default();
    if !tags.is_empty() {
        store.project_tags_set(&record.row.id, &tags).await?;
    }
    Ok((record, tags))
}

/// Fields that are not extra attributes (a domain-as-project body also carries the project ones).
const DOMAIN_FIELDS: &[&str] =
    &["id", "name", "description", "enabled", "tags", "links", "explicit_domain_id", "domain_id", "parent_id", "is_domain"];

fn duplicate(name: &str) -> Error {
    Error::Conflict {
        kind: "project",
        detail: format!("it is not permitted to have two projects acting as domains with the same name: {name}"),
    }
}

/// Applies an update body to a domain (for `/v3/domains/{id}` and `/v3/projects/{id}` of a domain).
pub(super) async fn update_domain(
    s: &AppState,
    mut d: DomainRecord,
    body: &Map<String, Value>,
) -> Result<(DomainRecord, Vec<String>), Error> {
    reject_id_change(body, &d.row.id)?;
    let b = Body::parse(body, DOMAIN_FIELDS)?;
    if body.get("is_domain").is_some_and(|v| v != &Value::Bool(true)) {
        return Err(Error::BadRequest("Update of `is_domain` is not allowed.".into()));
    }
    if body.get("parent_id").is_some_and(|v| !v.is_null()) {
        return Err(Error::Forbidden("Update of `parent_id` is not allowed.".into()));
    }
    let store = s.identity.store();
    if let Some(name) = b.name {
        if name != d.row.name && store.domain_get_by_name(&name).await?.is_some() {
            return Err(duplicate(&name));
        }
        d.row.name = name;
    }
    if let Some(desc) = b.description {
        d.row.description = desc;
    }
    if let Some(enabled) = b.enabled {
        d.row.enabled = enabled;
    }
    d.extra = merge_extra(d.extra.as_deref(), b.extra.as_deref());
    store.domain_update(&d).await.map_err(|e| match e {
        Error::Db(ref x) if x.is_unique_violation() => duplicate(&d.row.name),
        other => other,
    })?;
    if let Some(tags) = b.tags {
        store.project_tags_set(&d.row.id, &tags).await?;
    }
    // Names show in token bodies and a disabled domain invalidates its tokens: drop cached validations.
    s.identity.changed();
    with_tags(s, d).await
}

/// Extra attributes of an update merged over the stored ones.
pub(super) fn merge_extra(old: Option<&str>, new: Option<&str>) -> Option<String> {
    let Some(new) = new else { return old.map(str::to_string) };
    let mut m = extra_map(old);
    m.extend(extra_map(Some(new)));
    if m.is_empty() { None } else { Some(Value::Object(m).to_string()) }
}

/// Deletes a disabled domain and everything it owns; 403 while it is enabled.
pub(super) async fn delete_domain(s: &AppState, d: &DomainRecord) -> Result<(), Error> {
    if d.row.enabled {
        return Err(Error::Forbidden("Cannot delete a domain that is enabled, please disable it first.".into()));
    }
    let gone = s.identity.store().domain_delete_cascade(&d.row.id).await?;
    let now = Utc::now().timestamp();
    for p in gone.project_ids {
        s.identity
            .revoke_event(RevocationRow { audit_id: None, user_id: None, project_id: Some(p), issued_before: now })
            .await?;
    }
    for u in gone.user_ids {
        s.identity
            .revoke_event(RevocationRow { audit_id: None, user_id: Some(u), project_id: None, issued_before: now })
            .await?;
    }
    s.identity.changed();
    Ok(())
}

fn domain_target(id: &str, d: Option<&DomainRecord>) -> Value {
    match d {
        Some(d) => json!({"domain_id": id, "domain": {"id": d.row.id, "name": d.row.name, "enabled": d.row.enabled}}),
        None => json!({"domain_id": id}),
    }
}

async fn find(s: &AppState, id: &str) -> Result<Option<DomainRecord>, Error> {
    s.identity.store().domain_record_get(id).await
}

async fn create(State(s): State<AppState>, headers: HeaderMap, Json(body): Json<Value>) -> Result<Response, ApiError> {
    let domain = body.get("domain").and_then(Value::as_object).cloned().ok_or_else(|| {
        Error::BadRequest("Invalid input for field 'domain': 'domain' is a required property".into())
    })?;
    authorize(&s, &headers, "identity:create_domain", &json!({"domain": domain})).await?;
    let (d, tags) = create_domain(&s, &domain).await?;
    Ok((StatusCode::CREATED, Json(json!({"domain": domain_json(&s, &d, &tags)}))).into_response())
}

async fn list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let mut target = Map::new();
    for key in ["name", "enabled"] {
        if let Some(v) = q.get(key) {
            target.insert(key.into(), json!(v));
        }
    }
    authorize(&s, &headers, "identity:list_domains", &Value::Object(target)).await?;
    let enabled = q.get("enabled").map(filter_flag);
    let domains = s.identity.store().domain_list(q.get("name"), enabled).await?;
    let mut items = Vec::with_capacity(domains.len());
    for d in domains {
        let (d, tags) = with_tags(&s, d).await?;
        items.push(domain_json(&s, &d, &tags));
    }
    Ok(s.collection("domains", items, "domains"))
}

async fn show(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let d = find(&s, &id).await?;
    authorize(&s, &headers, "identity:get_domain", &domain_target(&id, d.as_ref())).await?;
    let d = d.ok_or_else(|| Error::not_found("domain", &id))?;
    let (d, tags) = with_tags(&s, d).await?;
    Ok(Json(json!({"domain": domain_json(&s, &d, &tags)})))
}

async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let d = find(&s, &id).await?;
    authorize(&s, &headers, "identity:update_domain", &domain_target(&id, d.as_ref())).await?;
    let d = d.ok_or_else(|| Error::not_found("domain", &id))?;
    let patch = body.get("domain").and_then(Value::as_object).cloned().ok_or_else(|| {
        Error::BadRequest("Invalid input for field 'domain': 'domain' is a required property".into())
    })?;
    if patch.is_empty() {
        return Err(Error::BadRequest("Invalid input for field 'domain': {} does not have enough properties".into()).into());
    }
    let (d, tags) = update_domain(&s, d, &patch).await?;
    Ok(Json(json!({"domain": domain_json(&s, &d, &tags)})))
}

async fn delete(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let d = find(&s, &id).await?;
    authorize(&s, &headers, "identity:delete_domain", &domain_target(&id, d.as_ref())).await?;
    let d = d.ok_or_else(|| Error::not_found("domain", &id))?;
    delete_domain(&s, &d).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- domain-specific configuration

/// The options a domain may set, by group, with upstream's defaults (`ldap.password` may be set too; it is stored
/// but never shown).
fn config_defaults() -> Map<String, Value> {
    let identity = json!({"driver": "sql", "list_limit": null});
    let ldap = json!({
        "url": "ldap://localhost", "user": null, "suffix": "cn=example,cn=com", "query_scope": "one",
        "page_size": 0, "alias_dereferencing": "default", "debug_level": null, "chase_referrals": null,
        "user_tree_dn": null, "user_filter": null, "user_objectclass": "inetOrgPerson", "user_id_attribute": "cn",
        "user_name_attribute": "sn", "user_mail_attribute": "mail", "user_description_attribute": "description",
        "user_pass_attribute": "userPassword", "user_enabled_attribute": "enabled", "user_enabled_invert": false,
        "user_enabled_mask": 0, "user_enabled_default": "True", "user_attribute_ignore": ["default_project_id"],
        "user_default_project_id_attribute": null, "user_enabled_emulation": false,
        "user_enabled_emulation_dn": null, "user_enabled_emulation_use_group_config": false,
        "user_additional_attribute_mapping": [],
    });
    let ldap_groups_and_pool = json!({
        "group_tree_dn": null, "group_filter": null,
        "group_objectclass": "groupOfNames", "group_id_attribute": "cn", "group_name_attribute": "ou",
        "group_members_are_ids": false, "group_member_attribute": "member", "group_desc_attribute": "description",
        "group_attribute_ignore": [], "group_additional_attribute_mapping": [], "tls_cacertfile": null,
        "tls_cacertdir": null, "use_tls": false, "tls_req_cert": "demand", "use_pool": true, "pool_size": 10,
        "pool_retry_max": 3, "pool_retry_delay": 0.1, "pool_connection_timeout": -1,
        "pool_connection_lifetime": 600, "use_auth_pool": true, "auth_pool_size": 100,
        "auth_pool_connection_lifetime": 60,
    });
    let mut ldap = ldap;
    if let (Some(l), Value::Object(more)) = (ldap.as_object_mut(), ldap_groups_and_pool) {
        l.extend(more);
    }
    let mut m = Map::new();
    m.insert("identity".into(), identity);
    m.insert("ldap".into(), ldap);
    m
}

/// Whether `group`/`option` may be set in a domain's configuration.
fn config_option_allowed(group: &str, option: &str) -> bool {
    (group == "ldap" && option == "password")
        || config_defaults().get(group).and_then(Value::as_object).is_some_and(|g| g.contains_key(option))
}

fn invalid_config(reason: impl std::fmt::Display) -> Error {
    Error::Forbidden(format!("Invalid domain specific configuration: {reason}"))
}

fn config_not_found(what: &str, domain_id: &str) -> Error {
    Error::NotFound { kind: "domain configuration", id: format!("{what} for domain {domain_id}") }
}

/// Checks a configuration document: groups of whitelisted options only.
fn validate_config(config: &Map<String, Value>) -> Result<(), Error> {
    if config.is_empty() {
        return Err(invalid_config("No options specified"));
    }
    for (group, options) in config {
        let Some(options) = options.as_object().filter(|o| !o.is_empty()) else {
            return Err(invalid_config(format!(
                "The value of group {group} specified in the config should be a dictionary of options"
            )));
        };
        if !config_defaults().contains_key(group) {
            return Err(invalid_config(format!("Group {group} is not supported for domain specific configurations")));
        }
        for option in options.keys() {
            if !config_option_allowed(group, option) {
                return Err(invalid_config(format!(
                    "Option {option} in group {group} is not supported for domain specific configurations"
                )));
            }
        }
    }
    Ok(())
}

/// The stored document without sensitive options, as upstream shows it.
fn config_visible(mut config: Map<String, Value>) -> Map<String, Value> {
    if let Some(Value::Object(ldap)) = config.get_mut("ldap") {
        ldap.remove("password");
    }
    config.retain(|_, v| v.as_object().is_none_or(|o| !o.is_empty()));
    config
}

fn config_body(body: &Value) -> Result<Map<String, Value>, Error> {
    body.get("config")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| Error::BadRequest("Invalid input for field 'config': 'config' is a required property".into()))
}

/// Authorizes a configuration call on an existing domain, then loads its stored document (if any).
async fn config_of(
    s: &AppState,
    headers: &HeaderMap,
    rule: &str,
    domain_id: &str,
) -> Result<Option<Map<String, Value>>, ApiError> {
    let d = find(s, domain_id).await?;
    authorize(s, headers, rule, &domain_target(domain_id, d.as_ref())).await?;
    d.ok_or_else(|| Error::not_found("domain", domain_id))?;
    let stored = s.identity.store().domain_config_get(domain_id).await?;
    Ok(stored.map(|c| extra_map(Some(&c))))
}

async fn save_config(s: &AppState, domain_id: &str, config: &Map<String, Value>) -> Result<(), Error> {
    if config.is_empty() {
        s.identity.store().domain_config_delete(domain_id).await?;
    } else {
        s.identity.store().domain_config_set(domain_id, &Value::Object(config.clone()).to_string()).await?;
    }
    Ok(())
}

async fn config_default(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_domain_config_default", &json!({})).await?;
    Ok(Json(json!({"config": config_defaults()})))
}

async fn config_default_group(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_domain_config_default", &json!({})).await?;
    let defaults = config_defaults();
    let g = defaults.get(&group).ok_or_else(|| invalid_config(format!("Group {group} is not supported for domain specific configurations")))?;
    Ok(Json(json!({"config": { group: g }})))
}

async fn config_default_option(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((group, option)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_domain_config_default", &json!({})).await?;
    let value = config_defaults().get(&group).and_then(|g| g.get(&option)).cloned().ok_or_else(|| {
        invalid_config(format!("Option {option} in group {group} is not supported for domain specific configurations"))
    })?;
    Ok(Json(json!({"config": { option: value }})))
}

async fn config_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let existing = config_of(&s, &headers, "identity:create_domain_config", &id).await?;
    let config = config_body(&body)?;
    validate_config(&config)?;
    save_config(&s, &id, &config).await?;
    let status = if existing.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({"config": config_visible(config)}))).into_response())
}

async fn config_show(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let config = config_of(&s, &headers, "identity:get_domain_config", &id).await?;
    let config = config.ok_or_else(|| config_not_found("configuration", &id))?;
    Ok(Json(json!({"config": config_visible(config)})))
}

/// Merges `patch` (groups of options) into `config`; every group and option must already be there when `strict`.
fn merge_config(config: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (group, options) in patch {
        let entry = config.entry(group.clone()).or_insert_with(|| json!({}));
        if let (Some(target), Some(options)) = (entry.as_object_mut(), options.as_object()) {
            for (k, v) in options {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

async fn config_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let config = config_of(&s, &headers, "identity:update_domain_config", &id).await?;
    let mut config = config.ok_or_else(|| config_not_found("configuration", &id))?;
    let patch = config_body(&body)?;
    validate_config(&patch)?;
    merge_config(&mut config, &patch);
    save_config(&s, &id, &config).await?;
    Ok(Json(json!({"config": config_visible(config)})))
}

async fn config_delete(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let config = config_of(&s, &headers, "identity:delete_domain_config", &id).await?;
    config.ok_or_else(|| config_not_found("configuration", &id))?;
    s.identity.store().domain_config_delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The password rules in force, as `security_compliance` shows them (default domain only, as upstream).
fn security_compliance(s: &AppState, domain_id: &str) -> Result<Map<String, Value>, Error> {
    if domain_id != crate::service::DEFAULT_DOMAIN_ID {
        return Err(Error::Forbidden(
            "Reading security compliance information for any domain other than the default domain is not allowed or              supported."
                .into(),
        ));
    }
    let sc = &s.identity.config().security;
    let mut m = Map::new();
    m.insert("password_regex".into(), json!(sc.password_regex));
    m.insert("password_regex_description".into(), json!(sc.password_regex_description));
    Ok(m)
}

async fn config_group_show(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, group)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if group == "security_compliance" {
        let d = find(&s, &id).await?;
        authorize(&s, &headers, "identity:get_security_compliance_domain_config", &domain_target(&id, d.as_ref())).await?;
        d.ok_or_else(|| Error::not_found("domain", &id))?;
        return Ok(Json(json!({"config": security_compliance(&s, &id)?})));
    }
    let config = config_of(&s, &headers, "identity:get_domain_config", &id).await?;
    let config = config_visible(config.unwrap_or_default());
    let g = config.get(&group).cloned().ok_or_else(|| config_not_found(&format!("group {group}"), &id))?;
    Ok(Json(json!({"config": { group: g }})))
}

async fn config_group_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, group)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let config = config_of(&s, &headers, "identity:update_domain_config", &id).await?;
    let mut config = config.ok_or_else(|| config_not_found("configuration", &id))?;
    let patch = config_body(&body)?;
    if patch.len() != 1 || !patch.contains_key(&group) {
        return Err(invalid_config(format!(
            "Trying to update group {group}, so that, and only that, group must be specified in the config"
        ))
        .into());
    }
    validate_config(&patch)?;
    if !config.contains_key(&group) {
        return Err(config_not_found(&format!("group {group}"), &id).into());
    }
    merge_config(&mut config, &patch);
    save_config(&s, &id, &config).await?;
    Ok(Json(json!({"config": config_visible(config)})))
}

async fn config_group_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, group)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let config = config_of(&s, &headers, "identity:delete_domain_config", &id).await?;
    let mut config = config.ok_or_else(|| config_not_found("configuration", &id))?;
    if config.remove(&group).is_none() {
        return Err(config_not_found(&format!("group {group}"), &id).into());
    }
    save_config(&s, &id, &config).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn config_option_show(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, group, option)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    if group == "security_compliance" {
        let d = find(&s, &id).await?;
        authorize(&s, &headers, "identity:get_security_compliance_domain_config", &domain_target(&id, d.as_ref())).await?;
        d.ok_or_else(|| Error::not_found("domain", &id))?;
        let sc = security_compliance(&s, &id)?;
        let value = sc.get(&option).cloned().ok_or_else(|| {
            invalid_config(format!("Option {option} in group {group} is not supported for domain specific configurations"))
        })?;
        return Ok(Json(json!({"config": { option: value }})));
    }
    let config = config_of(&s, &headers, "identity:get_domain_config", &id).await?;
    let config = config_visible(config.unwrap_or_default());
    let value = config
        .get(&group)
        .and_then(|g| g.get(&option))
        .cloned()
        .ok_or_else(|| config_not_found(&format!("option {option} in group {group}"), &id))?;
    Ok(Json(json!({"config": { option: value }})))
}

async fn config_option_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, group, option)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let config = config_of(&s, &headers, "identity:update_domain_config", &id).await?;
    let mut config = config.ok_or_else(|| config_not_found("configuration", &id))?;
    let patch = config_body(&body)?;
    if patch.len() != 1 || !patch.contains_key(&option) {
        return Err(invalid_config(format!(
            "Trying to update option {option} in group {group}, so that, and only that, option must be specified in              the config"
        ))
        .into());
    }
    let mut grouped = Map::new();
    grouped.insert(group.clone(), Value::Object(patch));
    validate_config(&grouped)?;
    if config.get(&group).and_then(|g| g.get(&option)).is_none() {
        return Err(config_not_found(&format!("option {option} in group {group}"), &id).into());
    }
    merge_config(&mut config, &grouped);
    save_config(&s, &id, &config).await?;
    Ok(Json(json!({"config": config_visible(config)})))
}

async fn config_option_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, group, option)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let config = config_of(&s, &headers, "identity:delete_domain_config", &id).await?;
    let mut config = config.ok_or_else(|| config_not_found("configuration", &id))?;
    let removed = config.get_mut(&group).and_then(Value::as_object_mut).and_then(|g| g.remove(&option));
    if removed.is_none() {
        return Err(config_not_found(&format!("option {option} in group {group}"), &id).into());
    }
    if config.get(&group).and_then(Value::as_object).is_some_and(Map::is_empty) {
        config.remove(&group);
    }
    save_config(&s, &id, &config).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_documents_are_validated() {
        let ok = json!({"identity": {"driver": "ldap"}, "ldap": {"url": "ldap://x", "password": "p"}});
        assert!(validate_config(ok.as_object().unwrap()).is_ok());
        for bad in [json!({}), json!({"identity": {}}), json!({"nova": {"x": 1}}), json!({"ldap": {"nope": 1}}), json!({"ldap": 1})] {
            assert!(validate_config(bad.as_object().unwrap()).is_err(), "{bad}");
        }
        let shown = config_visible(ok.as_object().unwrap().clone());
        assert_eq!(Value::Object(shown), json!({"identity": {"driver": "ldap"}, "ldap": {"url": "ldap://x"}}));
    }

    #[test]
    fn extra_merges_over_stored_values() {
        let merged = merge_extra(Some(r#"{"a":1,"b":2}"#), Some(r#"{"b":3}"#)).unwrap();
        let v: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(v, json!({"a": 1, "b": 3}));
        assert_eq!(merge_extra(Some(r#"{"a":1}"#), None).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(merge_extra(None, None), None);
    }
}
