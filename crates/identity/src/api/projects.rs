//! `/v3/projects`: create, list (filters `name`, `domain_id`, `enabled`, `parent_id`, `is_domain` and the tag
//! filters `tags`, `tags-any`, `not-tags`, `not-tags-any`), show (with `parents_as_ids`/`parents_as_list`,
//! `subtree_as_ids`/`subtree_as_list`), update, delete; and project tags (`/v3/projects/{id}/tags[/{tag}]`).
//!
//! Projects form a tree per domain through `parent_id`; a top-level project's parent is its domain. Domains are
//! also shown here as projects acting as domains (`is_domain: true`, `?is_domain=true`), served by
//! [`super::domains`]. Disabling or deleting a project revokes its tokens; deleting one removes its role
//! assignments.

use std::collections::HashMap;

use api_common::{ApiError, Json, QueryPairs, query::parse_bool};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header::LOCATION},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::{
    AppState, authorize,
    domains::{create_domain, delete_domain, domain_json, merge_extra, update_domain},
};
use crate::{
    error::Error,
    service::{DEFAULT_DOMAIN_ID, TokenInfo, new_id},
    store::{DomainRecord, ProjectFilter, ProjectRecord, ProjectRow, RevocationRow},
};

/// Project tree depth below the domain (upstream's `max_project_tree_depth` default).
const MAX_TREE_DEPTH: usize = 5;
/// Upstream's limits on tags.
const MAX_TAGS: usize = 80;
const MAX_TAG_LEN: usize = 255;
const MAX_NAME_LEN: usize = 64;

const ADMIN_OR_READER_OR_PROJECT_USER: &str = "rule:admin_required or (role:reader and system_scope:all) or \
     (role:reader and domain_id:%(target.project.domain_id)s) or project_id:%(target.project.id)s";
const ADMIN_OR_DOMAIN_ADMIN: &str = "rule:admin_required or (role:admin and system_scope:all) or \
     (role:admin and domain_id:%(target.project.domain_id)s)";

/// Default policy rules (upstream names; secure-RBAC defaults plus upstream's `rule:admin_required` alternative).
pub(super) const POLICIES: &[(&str, &str)] = &[
    ("identity:get_project", ADMIN_OR_READER_OR_PROJECT_USER),
    (
        "identity:list_projects",
        "rule:admin_required or (role:reader and system_scope:all) or (role:reader and domain_id:%(target.domain_id)s)",
    ),
    ("identity:create_project", ADMIN_OR_DOMAIN_ADMIN),
    ("identity:update_project", ADMIN_OR_DOMAIN_ADMIN),
    ("identity:delete_project", ADMIN_OR_DOMAIN_ADMIN),
    ("identity:list_project_tags", ADMIN_OR_READER_OR_PROJECT_USER),
    ("identity:get_project_tag", ADMIN_OR_READER_OR_PROJECT_USER),
    ("identity:update_project_tags", ADMIN_OR_DOMAIN_ADMIN),
    ("identity:create_project_tag", ADMIN_OR_DOMAIN_ADMIN),
    ("identity:delete_project_tags", ADMIN_OR_DOMAIN_ADMIN),
    ("identity:delete_project_tag", ADMIN_OR_DOMAIN_ADMIN),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/projects", get(list).post(create))
        .route("/v3/projects/{project_id}", get(show).patch(update).delete(delete))
        .route("/v3/projects/{project_id}/tags", get(tags_list).put(tags_replace).delete(tags_clear))
        .route("/v3/projects/{project_id}/tags/{tag}", get(tag_check).put(tag_add).delete(tag_remove))
}

/// Attributes that are not "extra" in a project body.
const PROJECT_FIELDS: &[&str] = &["id", "name", "description", "enabled", "tags", "links", "domain_id", "parent_id", "is_domain"];

// ---- request bodies (shared with domains)

/// The common attributes of a domain or project create/update body, validated as upstream's schema does.
pub(super) struct Body {
    pub name: Option<String>,
    /// `Some(None)`: explicitly null.
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub tags: Option<Vec<String>>,
    /// Every attribute not in `known`, as a JSON object (text); `None` when there are none.
    pub extra: Option<String>,
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("Invalid input for field '{field}': {msg}"))
}

impl Body {
    pub(super) fn parse(body: &Map<String, Value>, known: &[&str]) -> Result<Body, Error> {
        let name = body.get("name").map(validate_name).transpose()?;
        let description = match body.get("description") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(d)) => Some(Some(d.clone())),
            Some(other) => return Err(invalid("description", format!("{other} is not of type 'string', 'null'"))),
        };
        let enabled = match body.get("enabled") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => return Err(invalid("enabled", format!("{other} is not of type 'boolean'"))),
        };
        let tags = body.get("tags").map(validate_tags).transpose()?;
        if let Some(o) = body.get("options")
            && !o.is_object()
        {
            return Err(invalid("options", format!("{o} is not of type 'object'")));
        }
        let extra: Map<String, Value> =
            body.iter().filter(|(k, _)| !known.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        let extra = (!extra.is_empty()).then(|| Value::Object(extra).to_string());
        Ok(Body { name, description, enabled, tags, extra })
    }
}

fn validate_name(v: &Value) -> Result<String, Error> {
    let Value::String(name) = v else { return Err(invalid("name", format!("{v} is not of type 'string'"))) };
    if name.is_empty() {
        return Err(invalid("name", "'' is too short"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(invalid("name", format!("'{name}' is too long")));
    }
    if name.trim().is_empty() {
        return Err(invalid("name", format!("'{name}' does not match '[\\S]+'")));
    }
    Ok(name.trim().to_string())
}

fn validate_tag(field: &str, tag: &str) -> Result<(), Error> {
    if tag.is_empty() {
        return Err(invalid(field, "'' is too short"));
    }
    if tag.chars().count() > MAX_TAG_LEN {
        return Err(invalid(field, format!("'{tag}' is too long")));
    }
    if tag.contains(['/', ',']) {
        return Err(invalid(field, format!("'{tag}' does not match '^[^,/]*$'")));
    }
    Ok(())
}

fn validate_tags(v: &Value) -> Result<Vec<String>, Error> {
    let Value::Array(items) = v else { return Err(invalid("tags", format!("{v} is not of type 'array'"))) };
    if items.len() > MAX_TAGS {
        return Err(invalid("tags", "is too long (at most 80 tags)"));
    }
    let mut tags: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(t) = item else { return Err(invalid("tags", format!("{item} is not of type 'string'"))) };
        validate_tag("tags", t)?;
        let t = t.trim().to_string();
        if tags.contains(&t) {
            return Err(invalid("tags", format!("{v} has non-unique elements")));
        }
        tags.push(t);
    }
    Ok(tags)
}

/// Stored extra attributes as a JSON object (empty when none or unreadable).
pub(super) fn extra_map(extra: Option<&str>) -> Map<String, Value> {
    extra.and_then(|e| serde_json::from_str::<Map<String, Value>>(e).ok()).unwrap_or_default()
}

/// A boolean query filter as upstream reads them: anything but a false-looking value is true.
pub(super) fn filter_flag(v: &str) -> bool {
    parse_bool(v).unwrap_or(true)
}

/// `?parents_as_ids` and friends: present and not false-looking.
fn query_true(q: &QueryPairs, key: &str) -> bool {
    q.get(key).is_some_and(|v| v.is_empty() || filter_flag(v))
}

/// 400 if the body names another id than the path's, as upstream's `_require_matching_id`.
pub(super) fn reject_id_change(body: &Map<String, Value>, id: &str) -> Result<(), Error> {
    match body.get("id") {
        Some(v) if v.as_str() != Some(id) => Err(Error::BadRequest("Cannot change ID".into())),
        _ => Ok(()),
    }
}

// ---- views

fn project_json(s: &AppState, p: &ProjectRecord) -> Value {
    let mut m = extra_map(p.extra.as_deref());
    m.entry("options").or_insert_with(|| json!({}));
    m.insert("id".into(), json!(p.row.id));
    m.insert("name".into(), json!(p.row.name));
    m.insert("domain_id".into(), json!(p.row.domain_id));
    m.insert("parent_id".into(), json!(p.row.parent_id));
    m.insert("is_domain".into(), json!(p.row.is_domain));
    m.insert("description".into(), json!(p.row.description));
    m.insert("enabled".into(), json!(p.row.enabled));
    m.insert("tags".into(), json!(p.tags));
    m.insert("links".into(), json!({"self": s.url(&format!("projects/{}", p.row.id))}));
    Value::Object(m)
}

/// A domain shown as the project that acts as it.
fn domain_project_json(s: &AppState, d: &DomainRecord, tags: &[String]) -> Value {
    let mut v = domain_json(s, d, tags);
    if let Some(m) = v.as_object_mut() {
        m.insert("domain_id".into(), Value::Null);
        m.insert("parent_id".into(), Value::Null);
        m.insert("is_domain".into(), Value::Bool(true));
        m.insert("links".into(), json!({"self": s.url(&format!("projects/{}", d.row.id))}));
    }
    v
}

/// What a project id names: a project, or a domain (a project acting as a domain).
enum Found {
    Project(ProjectRecord),
    Domain(DomainRecord),
}

impl Found {
    fn json(&self, s: &AppState, domain_tags: &[String]) -> Value {
        match self {
            Found::Project(p) => project_json(s, p),
            Found::Domain(d) => domain_project_json(s, d, domain_tags),
        }
    }

    fn target(&self) -> Value {
        match self {
            Found::Project(p) => json!({
                "project_id": p.row.id,
                "project": {"id": p.row.id, "name": p.row.name, "domain_id": p.row.domain_id, "parent_id": p.row.parent_id},
            }),
            Found::Domain(d) => json!({
                "project_id": d.row.id,
                "project": {"id": d.row.id, "name": d.row.name, "domain_id": null, "is_domain": true},
            }),
        }
    }

    fn id(&self) -> &str {
        match self {
            Found::Project(p) => &p.row.id,
            Found::Domain(d) => &d.row.id,
        }
    }
}

async fn find(s: &AppState, id: &str) -> Result<Option<Found>, Error> {
    let store = s.identity.store();
    if let Some(p) = store.project_record_get(id).await? {
        return Ok(Some(Found::Project(p)));
    }
    Ok(store.domain_record_get(id).await?.map(Found::Domain))
}

/// Looks the project up, enforces `rule` on it (403 before 404, as upstream), then requires it to exist.
async fn authorized(s: &AppState, headers: &HeaderMap, rule: &str, id: &str) -> Result<(Found, std::sync::Arc<TokenInfo>), ApiError> {
    let found = find(s, id).await?;
    let target = found.as_ref().map(Found::target).unwrap_or_else(|| json!({"project_id": id}));
    let info = authorize(s, headers, rule, &target).await?;
    let found = found.ok_or_else(|| Error::not_found("project", id))?;
    Ok((found, info))
}

async fn revoke_project(s: &AppState, project_id: &str) -> Result<(), Error> {
    let ev = RevocationRow {
        audit_id: None,
        user_id: None,
        project_id: Some(project_id.to_string()),
        issued_before: Utc::now().timestamp(),
    };
    s.identity.revoke_event(ev).await
}

fn object_body<'a>(body: &'a Value, key: &str) -> Result<&'a Map<String, Value>, Error> {
    body.get(key).and_then(Value::as_object).ok_or_else(|| invalid(key, format!("'{key}' is a required property")))
}

// ---- hierarchy

/// The chain of ancestors of `p`, nearest first, ending with its domain (when the domain exists).
async fn ancestors(s: &AppState, p: &ProjectRow) -> Result<Vec<Found>, Error> {
    let store = s.identity.store();
    let mut out = Vec::new();
    let mut next = p.parent_id.clone();
    while let Some(id) = next.take() {
        if out.len() > 64 || id == p.id {
            break; // a cycle: never produced by this API, but do not loop on bad data
        }
        if let Some(parent) = store.project_record_get(&id).await? {
            next = parent.row.parent_id.clone();
            out.push(Found::Project(parent));
        } else if let Some(d) = store.domain_record_get(&id).await? {
            out.push(Found::Domain(d));
        }
    }
    Ok(out)
}

/// `{parent: {grandparent: … {domain: null}}}`, or null for a project without parents.
fn parents_as_ids(chain: &[Found]) -> Value {
    chain.iter().rev().fold(Value::Null, |inner, f| json!({ f.id(): inner }))
}

/// The projects below `root` in its domain, in depth-first order.
fn subtree(all: &[ProjectRow], root: &str) -> Vec<ProjectRow> {
    let mut by_parent: HashMap<&str, Vec<&ProjectRow>> = HashMap::new();
    for p in all {
        if let Some(parent) = p.parent_id.as_deref() {
            by_parent.entry(parent).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_string()];
    while let Some(id) = stack.pop() {
        if out.len() > all.len() {
            break;
        }
        for child in by_parent.get(id.as_str()).into_iter().flatten() {
            out.push((*child).clone());
            stack.push(child.id.clone());
        }
    }
    out
}

/// `{child: {grandchild: null}, …}`, or null without children.
fn subtree_as_ids(all: &[ProjectRow], root: &str, depth: usize) -> Value {
    let children: Vec<&ProjectRow> = all.iter().filter(|p| p.parent_id.as_deref() == Some(root)).collect();
    if children.is_empty() || depth > 64 {
        return Value::Null;
    }
    Value::Object(children.iter().map(|c| (c.id.clone(), subtree_as_ids(all, &c.id, depth + 1))).collect())
}

/// Adds `parents`/`subtree` to a shown project as its query asks.
async fn expand(s: &AppState, q: &QueryPairs, info: &TokenInfo, found: &Found, view: &mut Value) -> Result<(), Error> {
    let (parents_list, parents_ids) = (query_true(q, "parents_as_list"), query_true(q, "parents_as_ids"));
    let (subtree_list, subtree_ids) = (query_true(q, "subtree_as_list"), query_true(q, "subtree_as_ids"));
    if parents_list && parents_ids {
        return Err(Error::BadRequest("Cannot use parents_as_list and parents_as_ids query params at the same time.".into()));
    }
    if subtree_list && subtree_ids {
        return Err(Error::BadRequest("Cannot use subtree_as_list and subtree_as_ids query params at the same time.".into()));
    }
    let Some(m) = view.as_object_mut() else { return Ok(()) };
    let store = s.identity.store();
    // The `_as_list` forms show only projects the caller has a role on, as upstream.
    let mine: Vec<String> = if parents_list || subtree_list {
        store.project_list_for_user(&info.user.id).await?.into_iter().map(|p| p.id).collect()
    } else {
        Vec::new()
    };
    if parents_list || parents_ids {
        let chain = match found {
            Found::Project(p) => ancestors(s, &p.row).await?,
            Found::Domain(_) => Vec::new(),
        };
        let value = if parents_ids {
            parents_as_ids(&chain)
        } else {
            let mut list = Vec::new();
            for f in chain.iter().filter(|f| mine.iter().any(|m| m == f.id())) {
                list.push(json!({"project": f.json(s, &store.project_tags(f.id()).await?)}));
            }
            Value::Array(list)
        };
        m.insert("parents".into(), value);
    }
    if subtree_list || subtree_ids {
        let domain_id = match found {
            Found::Project(p) => p.row.domain_id.clone(),
            Found::Domain(d) => d.row.id.clone(),
        };
        let all = store.project_list_in_domain(&domain_id).await?;
        let value = if subtree_ids {
            subtree_as_ids(&all, found.id(), 0)
        } else {
            let mut list = Vec::new();
            for p in subtree(&all, found.id()).into_iter().filter(|p| mine.contains(&p.id)) {
                if let Some(rec) = store.project_record_get(&p.id).await? {
                    list.push(json!({"project": project_json(s, &rec)}));
                }
            }
            Value::Array(list)
        };
        m.insert("subtree".into(), value);
    }
    Ok(())
}

// ---- handlers

/// The domain a new project goes to when the body names none: the caller's domain scope, else the domain of the
/// project it is scoped to, else the default domain.
fn caller_domain(info: &TokenInfo) -> String {
    if let Some(d) = &info.domain {
        return d.id.clone();
    }
    if let Some((_, d)) = &info.project {
        return d.id.clone();
    }
    DEFAULT_DOMAIN_ID.to_string()
}

async fn create(State(s): State<AppState>, headers: HeaderMap, Json(body): Json<Value>) -> Result<Response, ApiError> {
    let project = object_body(&body, "project")?.clone();
    let info = authorize(&s, &headers, "identity:create_project", &json!({"project": project})).await?;
    if project.get("is_domain") == Some(&Value::Bool(true)) {
        if project.get("parent_id").is_some_and(|p| !p.is_null()) {
            return Err(Error::BadRequest("only root projects are allowed to act as domains.".into()).into());
        }
        let (d, tags) = create_domain(&s, &project).await?;
        return Ok((StatusCode::CREATED, Json(json!({"project": domain_project_json(&s, &d, &tags)}))).into_response());
    }
    let b = Body::parse(&project, PROJECT_FIELDS)?;
    let name = b.name.ok_or_else(|| invalid("name", "'name' is a required property"))?;
    if let Some(v) = project.get("is_domain")
        && !v.is_boolean()
    {
        return Err(invalid("is_domain", format!("{v} is not of type 'boolean'")).into());
    }
    let id_field = |key: &str| -> Result<Option<String>, Error> {
        match project.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) if !v.is_empty() && v.len() <= 64 => Ok(Some(v.clone())),
            Some(v) => Err(invalid(key, format!("{v} is not a valid id"))),
        }
    };
    let parent_id = id_field("parent_id")?;
    let store = s.identity.store();
    // Where in the tree: under the parent if given (a project or the domain itself), else at the domain's top.
    let parent = match &parent_id {
        Some(pid) => Some(find(&s, pid).await?.ok_or_else(|| Error::BadRequest(format!("Could not find project: {pid}.")))?),
        None => None,
    };
    let domain_id = match (id_field("domain_id")?, &parent) {
        (Some(d), _) => d,
        (None, Some(Found::Project(p))) => p.row.domain_id.clone(),
        (None, Some(Found::Domain(d))) => d.row.id.clone(),
        (None, None) => caller_domain(&info),
    };
    let domain = store
        .domain_get(&domain_id)
        .await?
        .ok_or_else(|| Error::BadRequest(format!("Could not find domain: {domain_id}.")))?;
    let chain = match &parent {
        Some(Found::Project(p)) => {
            if p.row.domain_id != domain.id {
                return Err(Error::BadRequest(format!(
                    "Cannot create project, since it specifies its domain_id {}, but specifies a parent in a \
                     different domain ({}).",
                    domain.id, p.row.domain_id
                ))
                .into());
            }
            let mut chain = vec![Found::Project(p.clone())];
            chain.extend(ancestors(&s, &p.row).await?);
            chain
        }
        Some(Found::Domain(d)) => {
            if d.row.id != domain.id {
                return Err(Error::BadRequest(format!(
                    "Cannot create project, the parent ({}) is acting as a domain, but this project's domain id ({}) \
                     does not match the parent's id.",
                    d.row.id, domain.id
                ))
                .into());
            }
            vec![Found::Domain(d.clone())]
        }
        None => match store.domain_record_get(&domain.id).await? {
            Some(d) => vec![Found::Domain(d)],
            None => Vec::new(),
        },
    };
    for f in &chain {
        let enabled = match f {
            Found::Project(p) => p.row.enabled,
            Found::Domain(d) => d.row.enabled,
        };
        if !enabled {
            return Err(Error::BadRequest(format!(
                "cannot create a project in a branch containing a disabled project: {}",
                f.id()
            ))
            .into());
        }
    }
    // `chain` holds the domain too; upstream allows the configured depth plus one for it.
    if chain.len() > MAX_TREE_DEPTH {
        let parent = parent_id.clone().unwrap_or_else(|| domain.id.clone());
        return Err(Error::Forbidden(format!("Max hierarchy depth reached for {parent} branch.")).into());
    }
    if store.project_get_by_name(&domain.id, &name).await?.is_some() {
        return Err(duplicate(&name).into());
    }
    let record = ProjectRecord {
        row: ProjectRow {
            id: new_id(),
            name,
            domain_id: domain.id.clone(),
            parent_id: Some(parent_id.unwrap_or_else(|| domain.id.clone())),
            is_domain: false,
            description: b.description.unwrap_or(Some(String::new())),
            enabled: b.enabled.unwrap_or(true),
        },
        extra: b.extra,
        tags: b.tags.unwrap_or_default(),
    };
    store.project_record_create(&record).await.map_err(|e| match e {
        Error::Db(ref d) if d.is_unique_violation() => duplicate(&record.row.name),
        other => other,
    })?;
    Ok((StatusCode::CREATED, Json(json!({"project": project_json(&s, &record)}))).into_response())
}

fn duplicate(name: &str) -> Error {
    Error::Conflict {
        kind: "project",
        detail: format!("it is not permitted to have two projects with the same name in the same domain : {name}"),
    }
}

fn tag_matches(tags: &[String], q: &QueryPairs) -> bool {
    let wanted = |key: &str| -> Option<Vec<&str>> {
        q.get(key).map(|v| v.split(',').map(str::trim).filter(|t| !t.is_empty()).collect())
    };
    let has = |t: &&str| tags.iter().any(|x| x == t);
    if let Some(all) = wanted("tags")
        && !all.iter().all(has)
    {
        return false;
    }
    if let Some(any) = wanted("tags-any")
        && !any.iter().any(has)
    {
        return false;
    }
    if let Some(all) = wanted("not-tags")
        && !all.is_empty()
        && all.iter().all(has)
    {
        return false;
    }
    if let Some(any) = wanted("not-tags-any")
        && any.iter().any(has)
    {
        return false;
    }
    true
}

async fn list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let info = super::caller(&s, &headers).await?;
    let mut target = Map::new();
    for key in ["domain_id", "enabled", "name", "parent_id", "is_domain"] {
        if let Some(v) = q.get(key) {
            target.insert(key.into(), json!(v));
        }
    }
    if let Some(d) = &info.domain {
        target.insert("domain_id".into(), json!(d.id));
    }
    super::enforce(&s, &info, "identity:list_projects", &Value::Object(target))?;
    let store = s.identity.store();
    let enabled = q.get("enabled").map(filter_flag);
    let scoped_domain = info.domain.as_ref().map(|d| d.id.clone());
    let mut items = Vec::new();
    if q.get("is_domain").is_some_and(filter_flag) {
        // Domains have no domain and no parent: such filters match none of them.
        if q.get("domain_id").is_none() && q.get("parent_id").is_none() {
            for d in store.domain_list(q.get("name"), enabled).await? {
                if scoped_domain.as_ref().is_some_and(|sd| sd != &d.row.id) {
                    continue;
                }
                let tags = store.project_tags(&d.row.id).await?;
                if tag_matches(&tags, &q) {
                    items.push(domain_project_json(&s, &d, &tags));
                }
            }
        }
    } else {
        let filter = ProjectFilter {
            name: q.get("name").map(str::to_string),
            domain_id: q.get("domain_id").map(str::to_string),
            parent_id: q.get("parent_id").map(str::to_string),
            enabled,
        };
        for p in store.project_list(&filter).await? {
            if scoped_domain.as_ref().is_some_and(|sd| sd != &p.row.domain_id) || !tag_matches(&p.tags, &q) {
                continue;
            }
            items.push(project_json(&s, &p));
        }
    }
    Ok(s.collection("projects", items, "projects"))
}

async fn show(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let (found, info) = authorized(&s, &headers, "identity:get_project", &id).await?;
    let tags = s.identity.store().project_tags(found.id()).await?;
    let mut view = found.json(&s, &tags);
    expand(&s, &q, &info, &found, &mut view).await?;
    Ok(Json(json!({ "project": view })))
}

async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let (found, _) = authorized(&s, &headers, "identity:update_project", &id).await?;
    let patch = object_body(&body, "project")?;
    if patch.is_empty() {
        return Err(invalid("project", "{} does not have enough properties").into());
    }
    let mut p = match found {
        Found::Domain(d) => {
            let (d, tags) = update_domain(&s, d, patch).await?;
            return Ok(Json(json!({"project": domain_project_json(&s, &d, &tags)})));
        }
        Found::Project(p) => p,
    };
    reject_id_change(patch, &p.row.id)?;
    let b = Body::parse(patch, PROJECT_FIELDS)?;
    if let Some(v) = patch.get("domain_id")
        && v.as_str() != Some(p.row.domain_id.as_str())
    {
        return Err(Error::BadRequest("Cannot change Domain ID".into()).into());
    }
    if let Some(v) = patch.get("parent_id")
        && v.as_str() != p.row.parent_id.as_deref()
    {
        return Err(Error::Forbidden("Update of `parent_id` is not allowed.".into()).into());
    }
    if let Some(v) = patch.get("is_domain")
        && v != &Value::Bool(false)
    {
        return Err(Error::BadRequest("Update of `is_domain` is not allowed.".into()).into());
    }
    let store = s.identity.store();
    let was_enabled = p.row.enabled;
    if let Some(enabled) = b.enabled {
        if enabled && !was_enabled {
            let disabled_parent = ancestors(&s, &p.row).await?.iter().any(|f| matches!(f, Found::Project(x) if !x.row.enabled));
            if disabled_parent {
                return Err(Error::Forbidden(format!("Cannot enable project {} since it has disabled parents", p.row.id)).into());
            }
        }
        if !enabled && was_enabled {
            let all = store.project_list_in_domain(&p.row.domain_id).await?;
            if subtree(&all, &p.row.id).iter().any(|c| c.enabled) {
                return Err(Error::Forbidden(format!(
                    "Cannot disable project {} since its subtree contains enabled projects.",
                    p.row.id
                ))
                .into());
            }
        }
        p.row.enabled = enabled;
    }
    if let Some(name) = b.name {
        if name != p.row.name && store.project_get_by_name(&p.row.domain_id, &name).await?.is_some() {
            return Err(duplicate(&name).into());
        }
        p.row.name = name;
    }
    if let Some(desc) = b.description {
        p.row.description = desc;
    }
    p.extra = merge_extra(p.extra.as_deref(), b.extra.as_deref());
    store.project_update(&p).await.map_err(|e| match e {
        Error::Db(ref d) if d.is_unique_violation() => duplicate(&p.row.name),
        other => other,
    })?;
    if let Some(tags) = b.tags {
        store.project_tags_set(&p.row.id, &tags).await?;
        p.tags = tags;
    }
    if was_enabled && !p.row.enabled {
        revoke_project(&s, &p.row.id).await?;
    }
    // Names show in token bodies: drop cached validations.
    s.identity.changed();
    Ok(Json(json!({"project": project_json(&s, &p)})))
}

async fn delete(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let (found, _) = authorized(&s, &headers, "identity:delete_project", &id).await?;
    let p = match found {
        Found::Domain(d) => {
            delete_domain(&s, &d).await?;
            return Ok(StatusCode::NO_CONTENT);
        }
        Found::Project(p) => p,
    };
    let store = s.identity.store();
    if store.project_has_children(&p.row.id).await? {
        return Err(Error::Forbidden(format!(
            "Cannot delete the project {} since it is not a leaf in the hierarchy. Use the cascade option if you \
             want to delete a whole subtree.",
            p.row.id
        ))
        .into());
    }
    store.project_delete(&p.row.id).await?;
    revoke_project(&s, &p.row.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- tags

fn tags_body(s: &AppState, id: &str, tags: &[String]) -> Json<Value> {
    Json(json!({"tags": tags, "links": {"self": s.url(&format!("projects/{id}/tags"))}}))
}

async fn tags_list(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (found, _) = authorized(&s, &headers, "identity:list_project_tags", &id).await?;
    let tags = s.identity.store().project_tags(found.id()).await?;
    Ok(tags_body(&s, found.id(), &tags))
}

async fn tags_replace(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let (found, _) = authorized(&s, &headers, "identity:update_project_tags", &id).await?;
    let tags = validate_tags(body.get("tags").unwrap_or(&Value::Null))?;
    s.identity.store().project_tags_set(found.id(), &tags).await?;
    Ok(tags_body(&s, found.id(), &tags))
}

async fn tags_clear(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let (found, _) = authorized(&s, &headers, "identity:delete_project_tags", &id).await?;
    s.identity.store().project_tags_set(found.id(), &[]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tag_check(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (found, _) = authorized(&s, &headers, "identity:get_project_tag", &id).await?;
    if !s.identity.store().project_tags(found.id()).await?.contains(&tag) {
        return Err(Error::not_found("project tag", tag).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn tag_add(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (found, _) = authorized(&s, &headers, "identity:create_project_tag", &id).await?;
    validate_tag("tag", &tag)?;
    let tag = tag.trim().to_string();
    let store = s.identity.store();
    let tags = store.project_tags(found.id()).await?;
    if !tags.contains(&tag) && tags.len() >= MAX_TAGS {
        return Err(invalid("tags", "is too long (at most 80 tags)").into());
    }
    store.project_tag_add(found.id(), &tag).await?;
    let mut response = StatusCode::CREATED.into_response();
    let location = s.url(&format!("projects/{}/tags/{}", found.id(), utf8_path_segment(&tag)));
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, v);
    }
    Ok(response)
}

/// Percent-encodes what a path segment cannot hold as is.
fn utf8_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn tag_remove(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (found, _) = authorized(&s, &headers, "identity:delete_project_tag", &id).await?;
    if !s.identity.store().project_tag_delete(found.id(), &tag).await? {
        return Err(Error::not_found("project tag", tag).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, parent: &str) -> ProjectRow {
        ProjectRow {
            id: id.into(),
            name: id.into(),
            domain_id: "d".into(),
            parent_id: Some(parent.into()),
            is_domain: false,
            description: None,
            enabled: true,
        }
    }

    #[test]
    fn subtree_ids_nest_by_parent() {
        let all = vec![row("a", "d"), row("b", "a"), row("c", "b"), row("e", "a"), row("x", "d")];
        assert_eq!(subtree_as_ids(&all, "a", 0), json!({"b": {"c": null}, "e": null}));
        assert_eq!(subtree_as_ids(&all, "c", 0), Value::Null);
        let mut ids: Vec<_> = subtree(&all, "a").into_iter().map(|p| p.id).collect();
        ids.sort();
        assert_eq!(ids, ["b", "c", "e"]);
    }

    #[test]
    fn tag_rules() {
        assert!(validate_tags(&json!(["a", "b c"])).is_ok());
        assert!(validate_tags(&json!(["a/b"])).is_err());
        assert!(validate_tags(&json!(["a,b"])).is_err());
        assert!(validate_tags(&json!(["a", "a"])).is_err());
        assert!(validate_tags(&json!([""])).is_err());
        assert!(validate_tags(&json!(["x".repeat(256)])).is_err());
        let many: Vec<String> = (0..81).map(|i| format!("t{i}")).collect();
        assert!(validate_tags(&json!(many)).is_err());
    }

    #[test]
    fn tag_filters() {
        let tags = vec!["a".to_string(), "b".to_string()];
        let q = |s: &str| QueryPairs::parse(Some(s));
        assert!(tag_matches(&tags, &q("tags=a,b")));
        assert!(!tag_matches(&tags, &q("tags=a,c")));
        assert!(tag_matches(&tags, &q("tags-any=c,b")));
        assert!(!tag_matches(&tags, &q("not-tags=a,b")));
        assert!(tag_matches(&tags, &q("not-tags=a,c")));
        assert!(!tag_matches(&tags, &q("not-tags-any=c,a")));
    }

    #[test]
    fn names_are_validated_like_upstream() {
        assert!(validate_name(&json!("")).is_err());
        assert!(validate_name(&json!("a".repeat(65))).is_err());
        assert!(validate_name(&json!("   ")).is_err());
        assert!(validate_name(&json!(5)).is_err());
        assert_eq!(validate_name(&json!(" p ")).unwrap(), "p");
    }
}
