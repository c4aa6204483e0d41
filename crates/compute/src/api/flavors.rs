//! Flavors (`/flavors`, `/flavors/detail`), flavor management, extra specs (`/flavors/{id}/os-extra_specs`) and
//! access to private flavors (`/flavors/{id}/os-flavor-access`, `addTenantAccess`/`removeTenantAccess`).

use std::collections::BTreeMap;

use ::auth::Context;
use api_common::{ApiError, Microversion, Page, QueryPairs};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Map, Value, json};

use super::{AppState, body, invalid, member, only, v};
use crate::{
    service::{FlavorFilter, NewFlavor, Viewer},
    store::FlavorRow,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/flavors", get(list).post(create))
        .route("/v2.1/flavors/detail", get(list_detail))
        .route("/v2.1/flavors/{id}", get(show).put(update).delete(delete))
        .route("/v2.1/flavors/{id}/action", post(action))
        .route("/v2.1/flavors/{id}/os-flavor-access", get(access_list))
        .route("/v2.1/flavors/{id}/os-extra_specs", get(specs_list).post(specs_create))
        .route("/v2.1/flavors/{id}/os-extra_specs/{key}", get(spec_show).put(spec_update).delete(spec_delete))
}

/// Largest page, as Nova's `max_limit`.
const MAX_LIMIT: usize = 1000;

fn viewer(s: &AppState, ctx: &Context) -> Viewer {
    Viewer { admin: s.is_admin(ctx), project_id: ctx.project_id.clone() }
}

/// What a flavor view depends on: the microversion and whether the caller may read extra specs (2.61).
struct FlavorView {
    mv: Microversion,
    extra_specs: bool,
}

impl FlavorView {
    fn new(s: &AppState, ctx: &Context, mv: Microversion) -> Self {
        let target = json!({"project_id": ctx.project_id, "user_id": ctx.user_id});
        FlavorView {
            mv,
            extra_specs: mv >= v(61) && s.policy.check("os_compute_api:os-flavor-extra-specs:index", ctx, &target),
        }
    }

    /// The flavor representation: every microversion-dependent field of a flavor is decided here. `specs` is
    /// given when `extra_specs` is set.
    fn render(&self, s: &AppState, f: &FlavorRow, full: bool, specs: Option<&BTreeMap<String, String>>) -> Value {
        let mut out = json!({"id": f.flavorid, "name": f.name, "links": s.links(&format!("/flavors/{}", f.flavorid))});
        if full {
            merge(
                &mut out,
                json!({
                    "ram": f.memory_mb,
                    "disk": f.root_gb,
                    "vcpus": f.vcpus,
                    // Before 2.75 a swap of 0 is rendered as "".
                    "swap": if f.swap == 0 && self.mv < v(75) { json!("") } else { json!(f.swap) },
                    "OS-FLV-EXT-DATA:ephemeral": f.ephemeral_gb,
                    "OS-FLV-DISABLED:disabled": f.disabled,
                    "os-flavor-access:is_public": f.is_public,
                    "rxtx_factor": f.rxtx_factor,
                }),
            );
            if let Some(specs) = specs.filter(|_| self.extra_specs) {
                out["extra_specs"] = json!(specs);
            }
        }
        if self.mv >= v(55) {
            out["description"] = json!(f.description);
        }
        out
    }

    /// The full view, reading the extra specs when they are shown.
    async fn detail(&self, s: &AppState, f: &FlavorRow) -> Result<Value, ApiError> {
        let specs = if self.extra_specs { Some(s.compute.store().extra_specs(&f.flavorid).await?) } else { None };
        Ok(self.render(s, f, true, specs.as_ref()))
    }
}

fn merge(v: &mut Value, extra: Value) {
    if let (Value::Object(a), Value::Object(b)) = (v, extra) {
        a.extend(b);
    }
}

fn int_filter(q: &QueryPairs, key: &str) -> Result<Option<i64>, ApiError> {
    q.get(key)
        .map(|v| v.trim().parse::<i64>().map_err(|_| ApiError::bad_request(format!("Invalid {key} filter [{v}]"))))
        .transpose()
}

/// Nova's `is_public` query: absent means public, `none` means both.
fn is_public_filter(q: &QueryPairs) -> Result<Option<bool>, ApiError> {
    match q.get("is_public") {
        None => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("none") => Ok(None),
        Some(v) => api_common::query::parse_bool(v)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid is_public filter [{v}]"))),
    }
}

fn sort(items: &mut [FlavorRow], q: &QueryPairs) -> Result<(), ApiError> {
    let key = q.get("sort_key").unwrap_or("flavorid");
    let desc = match q.get("sort_dir").unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        other => return Err(ApiError::bad_request(format!("Invalid sort_dir [{other}]"))),
    };
    match key {
        "flavorid" => items.sort_by(|a, b| a.flavorid.cmp(&b.flavorid)),
        "name" => items.sort_by(|a, b| a.name.cmp(&b.name)),
        "memory_mb" => items.sort_by_key(|f| f.memory_mb),
        "vcpus" => items.sort_by_key(|f| f.vcpus),
        "root_gb" => items.sort_by_key(|f| f.root_gb),
        "ephemeral_gb" => items.sort_by_key(|f| f.ephemeral_gb),
        "swap" => items.sort_by_key(|f| f.swap),
        "rxtx_factor" => items.sort_by(|a, b| a.rxtx_factor.total_cmp(&b.rxtx_factor)),
        "id" | "created_at" => items.sort_by_key(|f| f.created_at),
        other => return Err(ApiError::bad_request(format!("Invalid sort_key [{other}]"))),
    }
    if desc {
        items.reverse();
    }
    Ok(())
}

async fn listing(
    s: &AppState,
    ctx: &Context,
    mv: Microversion,
    q: &QueryPairs,
    path: &str,
    full: bool,
) -> Result<Json<Value>, ApiError> {
    // From 2.75 `GET /flavors` refuses unknown query parameters (upstream left `/flavors/detail` lenient).
    const PARAMS: &[&str] = &["limit", "marker", "is_public", "minRam", "minDisk", "sort_key", "sort_dir"];
    if !full
        && mv >= v(75)
        && let Some((k, _)) = q.0.iter().find(|(k, _)| !PARAMS.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{k}' was unexpected)")));
    }
    let viewer = viewer(s, ctx);
    let filter = FlavorFilter {
        // Non-admins always get public flavors and those shared with their project.
        is_public: if viewer.admin { is_public_filter(q)? } else { Some(true) },
        min_ram: int_filter(q, "minRam")?,
        min_disk: int_filter(q, "minDisk")?,
    };
    let page = page(q)?;
    let mut all = s.compute.flavors(&viewer, &filter).await?;
    sort(&mut all, q)?;
    let (items, _) = page.apply(all, |f| f.flavorid.as_str())?;
    let fv = FlavorView::new(s, ctx, mv);
    let mut rendered = Vec::with_capacity(items.len());
    for f in &items {
        rendered.push(if full { fv.detail(s, f).await? } else { fv.render(s, f, false, None) });
    }
    let mut out = json!({"flavors": rendered});
    // Nova links the next page whenever a page is full.
    if let Some(last) = items.last().filter(|_| items.len() == page.limit) {
        out["flavors_links"] = json!([{"rel": "next", "href": Page::next_link(&s.url(path), q, &last.flavorid)}]);
    }
    Ok(Json(out))
}

fn page(q: &QueryPairs) -> Result<Page, ApiError> {
    super::page(q, MAX_LIMIT)
}

async fn list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    listing(&s, &ctx, mv, &q, "/flavors", false).await
}

async fn list_detail(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    listing(&s, &ctx, mv, &q, "/flavors/detail", true).await
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let f = s.compute.flavor(&viewer(&s, &ctx), &id).await?;
    Ok(Json(json!({"flavor": FlavorView::new(&s, &ctx, mv).detail(&s, &f).await?})))
}

/// A flavor description (2.55): up to 65535 printable characters, or null.
fn flavor_description(m: &Map<String, Value>) -> Result<Option<Option<String>>, ApiError> {
    match m.get("description") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(d @ Value::String(t)) => {
            if t.chars().count() > 65535 {
                return Err(invalid("description", d, &format!("{d} is too long")));
            }
            if t.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
                return Err(invalid("description", d, &format!("{d} does not match the printable characters pattern")));
            }
            Ok(Some(Some(t.clone())))
        }
        Some(other) => Err(invalid("description", other, &format!("{other} is not of type 'string', 'null'"))),
    }
}

/// `PUT /flavors/{id}` (2.55): changes the description.
async fn update(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    if mv < v(55) {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "The method is not allowed for the requested URL."));
    }
    s.enforce(&ctx, "os_compute_api:os-flavor-manage:update")?;
    let b = body(&bytes)?;
    let m = member(&b, "flavor")?;
    only(m, &["description"])?;
    let Some(description) = flavor_description(m)? else {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute flavor. Value: {}. 'description' is a required property",
        ));
    };
    let f = s.compute.flavor_update(&id, description.as_deref()).await?;
    Ok(Json(json!({"flavor": FlavorView::new(&s, &ctx, mv).detail(&s, &f).await?})))
}

/// An integer given as a JSON integer or a string of digits, at least `min` (Nova's `flavor_param_*`).
fn int_param(m: &Map<String, Value>, field: &str, min: i64, required: bool) -> Result<Option<i64>, ApiError> {
    let Some(v) = m.get(field) else {
        return if required {
            Err(ApiError::bad_request(format!("Invalid input for field/attribute flavor. Value: {}. '{field}' is a required property", Value::Object(m.clone()))))
        } else {
            Ok(None)
        };
    };
    let n = match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| invalid(field, v, &format!("{v} is not of type 'integer', 'string'")))?,
        Value::String(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
            t.parse::<i64>().map_err(|_| invalid(field, v, &format!("{v} is greater than the maximum of 2147483647")))?
        }
        Value::String(_) => return Err(invalid(field, v, &format!("{v} does not match '^[0-9]*$'"))),
        _ => return Err(invalid(field, v, &format!("{v} is not of type 'integer', 'string'"))),
    };
    if n < min {
        return Err(invalid(field, v, &format!("{n} is less than the minimum of {min}")));
    }
    if n > i64::from(i32::MAX) {
        return Err(invalid(field, v, &format!("{n} is greater than the maximum of 2147483647")));
    }
    Ok(Some(n))
}

fn valid_flavor_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && !id.starts_with(' ')
        && !id.ends_with(' ')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ' ' | '_' | '-'))
}

fn parse_new_flavor(b: &Value, mv: Microversion) -> Result<NewFlavor, ApiError> {
    let m = member(b, "flavor")?;
    let mut allowed = vec![
        "name",
        "id",
        "ram",
        "vcpus",
        "disk",
        "OS-FLV-EXT-DATA:ephemeral",
        "swap",
        "rxtx_factor",
        "os-flavor-access:is_public",
    ];
    if mv >= v(55) {
        allowed.push("description");
    }
    only(m, &allowed)?;
    let name = match m.get("name") {
        Some(Value::String(n)) => n.clone(),
        Some(other) => return Err(invalid("name", other, &format!("{other} is not of type 'string'"))),
        None => return Err(ApiError::bad_request(format!("Invalid input for field/attribute flavor. Value: {}. 'name' is a required property", Value::Object(m.clone())))),
    };
    if name.trim().is_empty() || name.chars().count() > 255 || name.trim() != name {
        return Err(invalid("name", &json!(name), "Invalid flavor name: it must be 1 to 255 characters without leading or trailing whitespace"));
    }
    let id = match m.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(i)) if i == "auto" => None,
        Some(Value::String(i)) if valid_flavor_id(i) => Some(i.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(invalid("id", other, &format!("{other} does not match '^(?! )[a-zA-Z0-9. _-]+(?<! )$'"))),
    };
    let rxtx_factor = match m.get("rxtx_factor") {
        None => 1.0,
        Some(v) => match v.as_f64() {
            Some(f) if f > 0.0 && f <= 3.40282e38 => f,
            Some(f) => return Err(invalid("rxtx_factor", v, &format!("{f} is less than or equal to the minimum of 0"))),
            None => return Err(invalid("rxtx_factor", v, &format!("{v} is not of type 'number'"))),
        },
    };
    let is_public = match m.get("os-flavor-access:is_public") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v @ Value::String(t)) => api_common::query::parse_bool(t)
            .ok_or_else(|| invalid("os-flavor-access:is_public", v, &format!("{v} is not of type 'boolean'")))?,
        Some(v) => return Err(invalid("os-flavor-access:is_public", v, &format!("{v} is not of type 'boolean'"))),
    };
    Ok(NewFlavor {
        id,
        name,
        memory_mb: int_param(m, "ram", 1, true)?.unwrap_or(0),
        vcpus: int_param(m, "vcpus", 1, true)?.unwrap_or(0),
        root_gb: int_param(m, "disk", 0, true)?.unwrap_or(0),
        ephemeral_gb: int_param(m, "OS-FLV-EXT-DATA:ephemeral", 0, false)?.unwrap_or(0),
        swap: int_param(m, "swap", 0, false)?.unwrap_or(0),
        rxtx_factor,
        is_public,
        description: flavor_description(m)?.flatten(),
    })
}

async fn create(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-flavor-manage:create")?;
    let new = parse_new_flavor(&body(&bytes)?, mv)?;
    let f = s.compute.flavor_create(new).await?;
    Ok(Json(json!({"flavor": FlavorView::new(&s, &ctx, mv).detail(&s, &f).await?})))
}

async fn delete(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-flavor-manage:delete")?;
    s.compute.flavor_delete(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

// ----- flavor access -----

fn access_json(id: &str, projects: &[String]) -> Value {
    json!({"flavor_access": projects.iter().map(|p| json!({"flavor_id": id, "tenant_id": p})).collect::<Vec<_>>()})
}

async fn access_list(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-flavor-access")?;
    let projects = s.compute.access_list(&id).await?;
    Ok(Json(access_json(&id, &projects)))
}

fn tenant_of<'a>(v: &'a Value, action: &str) -> Result<&'a str, ApiError> {
    let m = member(v, action)?;
    match m.get("tenant") {
        Some(Value::String(t)) if !t.is_empty() && t.len() <= 255 => Ok(t),
        Some(other) => Err(invalid("tenant", other, "Invalid tenant: a project id of 1 to 255 characters")),
        None => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {action}. Value: {}. 'tenant' is a required property",
            Value::Object(m.clone())
        ))),
    }
}

async fn action(State(s): State<AppState>, ctx: Context, Path(id): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let v = body(&bytes)?;
    let projects = if v.get("addTenantAccess").is_some() {
        s.enforce(&ctx, "os_compute_api:os-flavor-access:add_tenant_access")?;
        let tenant = tenant_of(&v, "addTenantAccess")?;
        s.compute.access_add(&id, tenant).await?
    } else if v.get("removeTenantAccess").is_some() {
        s.enforce(&ctx, "os_compute_api:os-flavor-access:remove_tenant_access")?;
        let tenant = tenant_of(&v, "removeTenantAccess")?;
        s.compute.access_remove(&id, tenant).await?
    } else {
        return Err(ApiError::bad_request("There is no such action"));
    };
    Ok(Json(access_json(&id, &projects)))
}

// ----- extra specs -----

fn valid_spec_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 255
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | ' '))
}

/// Extra specs as Nova accepts them: keys of `[a-zA-Z0-9-_:. ]{1,255}`, values strings (≤ 255), numbers or
/// booleans (stored as their text).
fn parse_specs(m: &Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        if !valid_spec_key(k) {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute extra_specs. Value: {}. Additional properties are not allowed ('{k}' was unexpected)",
                Value::Object(m.clone())
            )));
        }
        let text = match v {
            Value::String(t) if t.chars().count() <= 255 => t.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => if *b { "True".into() } else { "False".into() },
            other => return Err(invalid(k, other, &format!("{other} is not valid under any of the given schemas"))),
        };
        out.insert(k.clone(), text);
    }
    Ok(out)
}

async fn specs_list(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-flavor-extra-specs:index")?;
    Ok(Json(json!({"extra_specs": s.compute.extra_specs(&id).await?})))
}

async fn specs_create(State(s): State<AppState>, ctx: Context, Path(id): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-flavor-extra-specs:create")?;
    let v = body(&bytes)?;
    let specs = parse_specs(member(&v, "extra_specs")?)?;
    s.compute.extra_specs_set(&id, &specs).await?;
    Ok(Json(json!({"extra_specs": specs})))
}

async fn spec_show(State(s): State<AppState>, ctx: Context, Path((id, key)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-flavor-extra-specs:show")?;
    let value = s.compute.extra_spec(&id, &key).await?;
    Ok(Json(json!({ key: value })))
}

async fn spec_update(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, key)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-flavor-extra-specs:update")?;
    let v = body(&bytes)?;
    let m = v.as_object().cloned().unwrap_or_default();
    if m.len() > 1 {
        return Err(ApiError::bad_request("Request body contains too many items"));
    }
    if !m.contains_key(&key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    let specs = parse_specs(&m)?;
    s.compute.extra_specs_set(&id, &specs).await?;
    Ok(Json(json!(specs)))
}

async fn spec_delete(State(s): State<AppState>, ctx: Context, Path((id, key)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-flavor-extra-specs:delete")?;
    s.compute.extra_spec_delete(&id, &key).await?;
    // Nova answers 200 here, unlike the 202 of deleting a flavor.
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_new_flavor_at(b: &Value) -> Result<NewFlavor, ApiError> {
        parse_new_flavor(b, Microversion::new(2, 1))
    }

    #[test]
    fn flavor_bodies() {
        let f = parse_new_flavor_at(&json!({"flavor": {"name": "f", "ram": "512", "vcpus": 1, "disk": 0, "id": 7}}))
            .unwrap();
        assert_eq!((f.id.as_deref(), f.memory_mb, f.is_public), (Some("7"), 512, true));
        assert!(
            parse_new_flavor_at(&json!({"flavor": {"name": "f", "ram": 512, "vcpus": 1, "disk": 0, "id": "auto"}}))
                .unwrap()
                .id
                .is_none()
        );
        for bad in [
            json!({"flavor": {"name": "f", "ram": 0, "vcpus": 1, "disk": 0}}),
            json!({"flavor": {"name": "f", "ram": 1, "vcpus": 1, "disk": -1}}),
            json!({"flavor": {"name": " f", "ram": 1, "vcpus": 1, "disk": 0}}),
            json!({"flavor": {"name": "f", "ram": 1, "vcpus": 1}}),
            json!({"flavor": {"name": "f", "ram": 1, "vcpus": 1, "disk": 0, "rxtx_factor": 0}}),
            json!({"flavor": {"name": "f", "ram": 1, "vcpus": 1, "disk": 0, "id": "a/b"}}),
            json!({"flavor": {"name": "f", "ram": 1, "vcpus": 1, "disk": 0, "bogus": 1}}),
            json!({"flavor": {"name": "f", "ram": "1a", "vcpus": 1, "disk": 0}}),
        ] {
            assert_eq!(parse_new_flavor_at(&bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn spec_values_become_text() {
        let m = json!({"a": 1, "b": true, "c": "x"});
        let specs = parse_specs(m.as_object().unwrap()).unwrap();
        assert_eq!(specs["a"], "1");
        assert_eq!(specs["b"], "True");
        assert!(parse_specs(json!({"a/b": "x"}).as_object().unwrap()).is_err());
        assert!(parse_specs(json!({"a": {"x": 1}}).as_object().unwrap()).is_err());
    }
}
