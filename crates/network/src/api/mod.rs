//! HTTP layer of the network service: Neutron's v2.0 routes under `/networking`, one generic set of handlers for
//! every resource family (list with filters, fields, sorting and paging; show; create, also in bulk; update;
//! delete), the router interface actions, tags, quotas, IP availability, extensions and version documents.
//! Errors render as `{"NeutronError": {"type", "message", "detail"}}`.

use std::{path::Path, sync::Arc};

use ::auth::{AuthLayerState, Context, Policy, TokenValidator};
use api_common::{ApiError, ErrorStyle, QueryPairs, WireConfig};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, put},
};
use serde_json::{Value, json};

use crate::{
    error::Error,
    listing,
    service::{Caller, EXTENSIONS, KINDS, Kind, Network, TAGGABLE, TagOp, kind_by_collection},
};

#[derive(Clone)]
pub(crate) struct AppState {
    pub network: Network,
    pub base_url: Arc<str>,
    pub policy: Arc<Policy>,
}

const ADMIN: &str = "rule:admin_only";
const ADMIN_OR_MEMBER: &str = "rule:admin_only or (role:member and project_id:%(project_id)s)";
const ADMIN_OR_READER: &str = "rule:admin_only or (role:reader and project_id:%(project_id)s)";

/// Neutron's secure-RBAC defaults, under upstream's rule names.
pub fn policies() -> Vec<(&'static str, &'static str)> {
    let mut p: Vec<(&'static str, &'static str)> = vec![
        ("admin_only", "role:admin"),
        ("context_is_admin", "role:admin"),
        ("admin_or_owner", "rule:context_is_admin or project_id:%(project_id)s"),
        ("default", ADMIN_OR_MEMBER),
    ];
    for kind in KINDS {
        let s = kind.singular;
        let leak = |x: String| -> &'static str { Box::leak(x.into_boxed_str()) };
        p.push((leak(format!("create_{s}")), ADMIN_OR_MEMBER));
        p.push((leak(format!("get_{s}")), ADMIN_OR_READER));
        p.push((leak(format!("update_{s}")), ADMIN_OR_MEMBER));
        p.push((leak(format!("delete_{s}")), ADMIN_OR_MEMBER));
    }
    p.extend([
        ("create_network:shared", ADMIN),
        ("create_network:router:external", ADMIN),
        ("create_network:provider:network_type", ADMIN),
        ("create_network:provider:physical_network", ADMIN),
        ("create_network:provider:segmentation_id", ADMIN),
        ("update_network:shared", ADMIN),
        ("update_network:router:external", ADMIN),
        ("update_network:provider:network_type", ADMIN),
        ("update_network:provider:physical_network", ADMIN),
        ("update_network:provider:segmentation_id", ADMIN),
        ("get_network:provider:network_type", ADMIN),
        ("get_network:provider:physical_network", ADMIN),
        ("get_network:provider:segmentation_id", ADMIN),
        ("create_subnet:network_owner", ADMIN_OR_MEMBER),
        ("create_port:mac_address", ADMIN_OR_MEMBER),
        ("create_port:fixed_ips:ip_address", ADMIN_OR_MEMBER),
        ("create_port:device_owner", ADMIN_OR_MEMBER),
        ("create_port:binding:host_id", ADMIN),
        ("create_port:binding:profile", ADMIN),
        ("update_port:binding:host_id", ADMIN),
        ("update_port:binding:profile", ADMIN),
        ("update_port:mac_address", ADMIN),
        ("update_port:fixed_ips", ADMIN_OR_MEMBER),
        ("get_port:binding:vif_type", ADMIN),
        ("get_port:binding:vif_details", ADMIN),
        ("get_port:binding:host_id", ADMIN),
        ("get_port:binding:profile", ADMIN),
        ("create_router:distributed", ADMIN),
        ("create_router:ha", ADMIN),
        ("create_router:external_gateway_info:enable_snat", ADMIN),
        ("create_router:external_gateway_info:external_fixed_ips", ADMIN),
        ("update_router:external_gateway_info:enable_snat", ADMIN),
        ("update_router:external_gateway_info:external_fixed_ips", ADMIN),
        ("add_router_interface", ADMIN_OR_MEMBER),
        ("remove_router_interface", ADMIN_OR_MEMBER),
        ("create_floatingip:floating_ip_address", ADMIN),
        ("create_subnetpool:shared", ADMIN),
        ("create_subnetpool:is_default", ADMIN),
        ("create_rbac_policy:target_tenant", ADMIN),
        ("get_network_ip_availability", ADMIN),
        ("get_agent", ADMIN),
        ("update_agent", ADMIN),
        ("delete_agent", ADMIN),
        ("get_quota", ADMIN_OR_READER),
        ("update_quota", ADMIN),
        ("delete_quota", ADMIN),
    ]);
    p
}

/// Loads the default policy, overridden by `policy_file` when given.
pub fn load_policy(policy_file: Option<&Path>) -> Result<Policy, Error> {
    Policy::for_service("network", &policies(), policy_file).map_err(|e| Error::Config(e.to_string()))
}

/// The network API, to be nested at the path of `base_url` (e.g. `http://host/networking`).
pub fn router(network: Network, base_url: &str, policy: Policy, validator: Arc<dyn TokenValidator>, identity_url: &str) -> Router {
    let state = AppState { network, base_url: base_url.trim_end_matches('/').into(), policy: Arc::new(policy) };
    let auth = AuthLayerState::new(validator, identity_url);
    let protected = Router::new()
        .route("/v2.0/extensions", get(extensions))
        .route("/v2.0/agents", get(agent_list))
        .route("/v2.0/agents/{id}", get(agent_show).put(agent_update).delete(agent_delete))
        .route("/v2.0/service-providers", get(service_providers))
        .route("/v2.0/extensions/{alias}", get(extension))
        .route("/v2.0/quotas", get(quota_list))
        .route("/v2.0/quotas/{project}", get(quota_show).put(quota_update).delete(quota_delete))
        .route("/v2.0/quotas/{project}/default", get(quota_default))
        .route("/v2.0/quotas/{project}/details", get(quota_details))
        .route("/v2.0/network-ip-availabilities", get(availability_list))
        .route("/v2.0/network-ip-availabilities/{id}", get(availability_show))
        .route("/v2.0/auto-allocated-topology/{project}", get(auto_topology_show).delete(auto_topology_delete))
        .route("/v2.0/routers/{id}/add_router_interface", put(add_interface))
        .route("/v2.0/routers/{id}/remove_router_interface", put(remove_interface))
        .route("/v2.0/{collection}", get(list).post(create))
        .route("/v2.0/{collection}/{id}", get(show).put(update).delete(delete))
        .route("/v2.0/{collection}/{id}/tags", get(tags_get).put(tags_replace).delete(tags_clear))
        .route("/v2.0/{collection}/{id}/tags/{tag}", get(tag_check).put(tag_add).delete(tag_remove))
        .route_layer(axum::middleware::from_fn_with_state(auth, ::auth::require_auth));
    let router = Router::new()
        .route("/", get(versions))
        .route("/v2.0", get(version_resources))
        .route("/v2.0/", get(version_resources))
        .merge(protected)
        .with_state(state);
    api_common::wire::apply(router, WireConfig::new(ErrorStyle::Neutron))
}

impl AppState {
    fn caller<'a>(&'a self, ctx: &'a Context) -> Caller<'a> {
        Caller { ctx, policy: &self.policy }
    }
}

fn kind(collection: &str) -> Result<Kind, Error> {
    kind_by_collection(collection).ok_or_else(|| Error::not_found("HTTPNotFound", "The resource could not be found."))
}

fn taggable(collection: &str) -> Result<Kind, Error> {
    let k = kind(collection)?;
    if TAGGABLE.contains(&k) { Ok(k) } else { Err(Error::not_found("HTTPNotFound", "The resource could not be found.")) }
}

fn body(bytes: &Bytes) -> Result<Value, Error> {
    if bytes.is_empty() {
        return Err(Error::bad("BadRequest", "Resource body required"));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::bad("BadRequest", format!("Malformed request body: {e}")))
}

fn resource_body<'a>(v: &'a Value, key: &str) -> Result<&'a Value, Error> {
    match v.get(key) {
        Some(b) if b.is_object() => Ok(b),
        _ => Err(Error::bad("BadRequest", format!("Unable to find '{key}' in request body"))),
    }
}

async fn versions(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"versions": [{
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"rel": "self", "href": format!("{}/v2.0/", s.base_url)}],
    }]}))
}

async fn version_resources(State(s): State<AppState>) -> Json<Value> {
    let resources: Vec<Value> = KINDS
        .iter()
        .map(|k| {
            json!({
                "name": k.singular,
                "collection": k.plural_key,
                "links": [{"rel": "self", "href": format!("{}/v2.0/{}", s.base_url, k.collection)}],
            })
        })
        .collect();
    Json(json!({"resources": resources}))
}

fn extension_doc(alias: &str, name: &str, description: &str) -> Value {
    json!({"alias": alias, "name": name, "description": description, "updated": "2013-01-01T10:00:00-00:00", "links": []})
}

async fn agent_list(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let docs = s.network.agent_list(&s.caller(&ctx)).await?;
    let docs: Vec<Value> = listing::filter(docs, &q).into_iter().map(|d| listing::select_fields(d, &q)).collect();
    Ok(Json(json!({"agents": docs})))
}

async fn agent_show(State(s): State<AppState>, ctx: Context, UrlPath(id): UrlPath<String>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let doc = s.network.agent_show(&s.caller(&ctx), &id).await?;
    Ok(Json(json!({"agent": listing::select_fields(doc, &q)})))
}

async fn agent_update(State(s): State<AppState>, ctx: Context, UrlPath(id): UrlPath<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let v = body(&bytes)?;
    let b = resource_body(&v, "agent")?;
    Ok(Json(json!({"agent": s.network.agent_update(&s.caller(&ctx), &id, b).await?})))
}

async fn agent_delete(State(s): State<AppState>, ctx: Context, UrlPath(id): UrlPath<String>) -> Result<StatusCode, ApiError> {
    s.network.agent_delete(&s.caller(&ctx), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The advanced services (L3 routers) and their providers.
async fn service_providers(_ctx: Context) -> Json<Value> {
    Json(json!({"service_providers": [{"service_type": "L3_ROUTER_NAT", "name": "stratus", "default": true}]}))
}

async fn extensions(_ctx: Context) -> Json<Value> {
    Json(json!({"extensions": EXTENSIONS.iter().map(|(a, n, d)| extension_doc(a, n, d)).collect::<Vec<_>>()}))
}

async fn extension(_ctx: Context, UrlPath(alias): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    EXTENSIONS
        .iter()
        .find(|(a, _, _)| *a == alias)
        .map(|(a, n, d)| Json(json!({"extension": extension_doc(a, n, d)})))
        .ok_or_else(|| ApiError::not_found(format!("Extension with alias {alias} does not exist")).with_code("HTTPNotFound"))
}

async fn list(State(s): State<AppState>, ctx: Context, UrlPath(collection): UrlPath<String>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let k = kind(&collection)?;
    let docs = s.network.list(&s.caller(&ctx), k).await?;
    let docs = listing::filter(docs, &q);
    let (page, links) = listing::page(docs, &q, &format!("{}/v2.0/{}", s.base_url, k.collection))?;
    let page: Vec<Value> = page.into_iter().map(|d| listing::select_fields(d, &q)).collect();
    let mut out = serde_json::Map::new();
    out.insert(k.plural_key.into(), json!(page));
    if !links.is_empty() {
        out.insert(format!("{}_links", k.plural_key), json!(links));
    }
    Ok(Json(Value::Object(out)))
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    UrlPath((collection, id)): UrlPath<(String, String)>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let k = kind(&collection)?;
    let doc = s.network.show(&s.caller(&ctx), k, &id).await?;
    Ok(Json(json!({k.singular: listing::select_fields(doc, &q)})))
}

async fn create(State(s): State<AppState>, ctx: Context, UrlPath(collection): UrlPath<String>, bytes: Bytes) -> Result<Response, ApiError> {
    let k = kind(&collection)?;
    let v = body(&bytes)?;
    let caller = s.caller(&ctx);
    if let Some(items) = v.get(k.plural_key).and_then(Value::as_array) {
        let mut created: Vec<Value> = Vec::new();
        for item in items {
            match s.network.create(&caller, k, item).await {
                Ok(d) => created.push(d),
                Err(e) => {
                    for d in &created {
                        let _ = s.network.delete(&caller, k, d["id"].as_str().unwrap_or("")).await;
                    }
                    return Err(e.into());
                }
            }
        }
        return Ok((StatusCode::CREATED, Json(json!({k.plural_key: created})) ).into_response());
    }
    let b = resource_body(&v, k.singular)?;
    let doc = s.network.create(&caller, k, b).await?;
    Ok((StatusCode::CREATED, Json(json!({k.singular: doc}))).into_response())
}

async fn update(
    State(s): State<AppState>,
    ctx: Context,
    UrlPath((collection, id)): UrlPath<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let k = kind(&collection)?;
    let v = body(&bytes)?;
    let b = resource_body(&v, k.singular)?;
    let doc = s.network.update(&s.caller(&ctx), k, &id, b).await?;
    Ok(Json(json!({k.singular: doc})))
}

async fn delete(State(s): State<AppState>, ctx: Context, UrlPath((collection, id)): UrlPath<(String, String)>) -> Result<StatusCode, ApiError> {
    let k = kind(&collection)?;
    s.network.delete(&s.caller(&ctx), k, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn auto_topology_show(
    State(s): State<AppState>,
    ctx: Context,
    UrlPath(project): UrlPath<String>,
    q: api_common::QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let dry_run = q.get_all("fields").any(|f| f == "dry-run");
    Ok(Json(json!({"auto_allocated_topology": s.network.auto_allocated_topology(&s.caller(&ctx), &project, dry_run).await?})))
}

async fn auto_topology_delete(
    State(s): State<AppState>,
    ctx: Context,
    UrlPath(project): UrlPath<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    s.network.delete_auto_allocated_topology(&s.caller(&ctx), &project).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

async fn add_interface(State(s): State<AppState>, ctx: Context, UrlPath(id): UrlPath<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let v = body(&bytes)?;
    Ok(Json(s.network.add_router_interface(&s.caller(&ctx), &id, &v).await?))
}

async fn remove_interface(State(s): State<AppState>, ctx: Context, UrlPath(id): UrlPath<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let v = body(&bytes)?;
    Ok(Json(s.network.remove_router_interface(&s.caller(&ctx), &id, &v).await?))
}

async fn tags_get(State(s): State<AppState>, ctx: Context, UrlPath((collection, id)): UrlPath<(String, String)>) -> Result<Json<Value>, ApiError> {
    let k = taggable(&collection)?;
    Ok(Json(json!({"tags": s.network.tags_get(&s.caller(&ctx), k, &id).await?})))
}

async fn tags_replace(
    State(s): State<AppState>,
    ctx: Context,
    UrlPath((collection, id)): UrlPath<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let k = taggable(&collection)?;
    let v = body(&bytes)?;
    let Some(list) = v.get("tags").and_then(Value::as_array) else {
        return Err(Error::bad("BadRequest", "Invalid tags body").into());
    };
    let tags: Vec<String> = list.iter().map(|t| t.as_str().map(str::to_string).unwrap_or_default()).collect();
    Ok(Json(json!({"tags": s.network.tags_set(&s.caller(&ctx), k, &id, TagOp::Replace(tags)).await?})))
}

async fn tags_clear(State(s): State<AppState>, ctx: Context, UrlPath((collection, id)): UrlPath<(String, String)>) -> Result<StatusCode, ApiError> {
    let k = taggable(&collection)?;
    s.network.tags_set(&s.caller(&ctx), k, &id, TagOp::Clear).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tag_check(
    State(s): State<AppState>,
    ctx: Context,
    UrlPath((collection, id, tag)): UrlPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let k = taggable(&collection)?;
    s.network.tag_exists(&s.caller(&ctx), k, &id, &tag).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn tag_add(
    State(s): State<AppState>,
    ctx: Context,
    UrlPath((collection, id, tag)): UrlPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let k = taggable(&collection)?;
    s.network.tags_set(&s.caller(&ctx), k, &id, TagOp::Add(tag)).await?;
    Ok(StatusCode::CREATED)
}

async fn tag_remove(
    State(s): State<AppState>,
    ctx: Context,
    UrlPath((collection, id, tag)): UrlPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let k = taggable(&collection)?;
    s.network.tags_set(&s.caller(&ctx), k, &id, TagOp::Remove(tag)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn quota_json(limits: std::collections::BTreeMap<String, i64>) -> Value {
    json!(limits)
}

async fn quota_list(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.caller(&ctx).enforce("update_quota", "")?;
    Ok(Json(json!({"quotas": s.network.quota_list().await?})))
}

async fn quota_show(State(s): State<AppState>, ctx: Context, UrlPath(project): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    s.caller(&ctx).enforce("get_quota", &project)?;
    Ok(Json(json!({"quota": quota_json(s.network.quota_limits(&project).await?)})))
}

async fn quota_default(State(s): State<AppState>, ctx: Context, UrlPath(project): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    s.caller(&ctx).enforce("get_quota", &project)?;
    let defaults: std::collections::BTreeMap<String, i64> =
        crate::service::QUOTA_RESOURCES.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    Ok(Json(json!({"quota": quota_json(defaults)})))
}

async fn quota_details(State(s): State<AppState>, ctx: Context, UrlPath(project): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    s.caller(&ctx).enforce("get_quota", &project)?;
    Ok(Json(json!({"quota": s.network.quota_details(&project).await?})))
}

async fn quota_update(
    State(s): State<AppState>,
    ctx: Context,
    UrlPath(project): UrlPath<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    s.caller(&ctx).enforce("update_quota", &project)?;
    let v = body(&bytes)?;
    let b = resource_body(&v, "quota")?;
    Ok(Json(json!({"quota": quota_json(s.network.quota_update(&project, b).await?)})))
}

async fn quota_delete(State(s): State<AppState>, ctx: Context, UrlPath(project): UrlPath<String>) -> Result<StatusCode, ApiError> {
    s.caller(&ctx).enforce("delete_quota", &project)?;
    s.network.quota_delete(&project).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn availability_list(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let docs = s.network.ip_availability(&s.caller(&ctx), None).await?;
    let docs: Vec<Value> = listing::filter(docs, &q).into_iter().map(|d| listing::select_fields(d, &q)).collect();
    Ok(Json(json!({"network_ip_availabilities": docs})))
}

async fn availability_show(State(s): State<AppState>, ctx: Context, UrlPath(id): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    let mut docs = s.network.ip_availability(&s.caller(&ctx), Some(&id)).await?;
    Ok(Json(json!({"network_ip_availability": docs.pop()})))
}
