//! `/v2/metadefs/*`: the metadata definitions catalog (namespaces, resource types and their associations,
//! objects, properties, tags) and its `/v2/schemas/metadefs/*` schemas. Reads are open to every authenticated
//! caller (visibility still applies), writes are admin-only by default, as in Glance. The lists of namespaces,
//! objects and tags page as Glance's do: `limit`, `marker` (the last name seen), `sort_key`/`sort_dir` (default
//! newest first), and `first`/`next` links.

use ::auth::Context;
use api_common::{
    ApiError,
    query::{Page, QueryPairs, SortDir, parse_sort},
};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use serde_json::{Value, json};

use super::{AppState, parse_json};
use crate::{
    metadefs::{OBJECT, PROPERTY, TAG, association_json, item_json, properties_json},
    model::format_time,
    store::NamespaceRow,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/metadefs/resource_types", get(list_resource_types))
        .route("/v2/metadefs/namespaces", get(list_namespaces).post(create_namespace))
        .route("/v2/metadefs/namespaces/{ns}", get(show_namespace).put(update_namespace).delete(delete_namespace))
        .route("/v2/metadefs/namespaces/{ns}/resource_types", get(list_associations).post(create_association))
        .route("/v2/metadefs/namespaces/{ns}/resource_types/{name}", axum::routing::delete(delete_association))
        .route("/v2/metadefs/namespaces/{ns}/objects", get(list_objects).post(create_object))
        .route("/v2/metadefs/namespaces/{ns}/objects/{name}", get(show_object).put(update_object).delete(delete_object))
        .route("/v2/metadefs/namespaces/{ns}/properties", get(list_properties).post(create_property))
        .route(
            "/v2/metadefs/namespaces/{ns}/properties/{name}",
            get(show_property).put(update_property).delete(delete_property),
        )
        .route("/v2/metadefs/namespaces/{ns}/tags", get(list_tags).post(create_tags).delete(delete_tags))
        .route(
            "/v2/metadefs/namespaces/{ns}/tags/{name}",
            get(show_tag).post(create_tag).put(update_tag).delete(delete_tag),
        )
        .route("/v2/schemas/metadefs/{name}", get(schema))
}

/// Checks `rule`, then loads the namespace (404 when the caller cannot see it).
async fn namespace(s: &AppState, ctx: &Context, ns: &str, rule: &str) -> Result<NamespaceRow, ApiError> {
    s.enforce(ctx, rule, &json!({"project_id": ctx.project_id, "namespace": ns}))?;
    Ok(s.image.metadef_namespace(&s.caller(ctx), ns).await?)
}

fn body(bytes: &[u8]) -> Result<Value, ApiError> {
    let v = parse_json(bytes)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("The request body must be a JSON object."));
    }
    Ok(v)
}

/// The largest page of a metadefs list (upstream's `api_limit_max`); also the page size when none is asked for.
const MAX_PAGE: usize = 1000;

/// One page of `items` (JSON objects named by their `id_key` field) in the order `q` asks for, and the `next`
/// link when more follow. The marker is a name; an unknown one is a 400.
fn page(items: Vec<Value>, id_key: &str, q: &QueryPairs, base: &str) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let sort = parse_sort(q, &["created_at", "updated_at", id_key], &[("created_at", SortDir::Desc)])?;
    let mut items = items;
    items.sort_by(|a, b| {
        for (key, dir) in &sort {
            let ord = a[key.as_str()].as_str().unwrap_or("").cmp(b[key.as_str()].as_str().unwrap_or(""));
            let ord = if *dir == SortDir::Desc { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        a[id_key].as_str().unwrap_or("").cmp(b[id_key].as_str().unwrap_or(""))
    });
    let page = Page::from_query(q, MAX_PAGE)?;
    let (items, more) = page.apply(items, |v| v[id_key].as_str().unwrap_or(""))?;
    let next = match items.last().and_then(|v| v[id_key].as_str()) {
        Some(last) if more => Some(Page::next_link(base, q, last)),
        _ => None,
    };
    Ok((items, next))
}

/// `first` of a paged list: its URL with the query but no marker.
fn first_link(base: &str, q: &QueryPairs) -> String {
    let rest: Vec<(String, String)> = q.0.iter().filter(|(k, _)| k != "marker").cloned().collect();
    if rest.is_empty() {
        return base.to_string();
    }
    // `with` re-encodes every pair and appends the one it sets: setting the last pair to itself keeps the order.
    let (key, value) = rest[rest.len() - 1].clone();
    format!("{base}?{}", QueryPairs(rest).with(&key, &value))
}

async fn list_resource_types(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "list_metadef_resource_types", &json!({"project_id": ctx.project_id}))?;
    let types = s.image.store().metadef_resource_type_list().await.map_err(ApiError::from)?;
    Ok(Json(json!({
        "resource_types": types.iter().map(|t| json!({
            "name": t.name,
            "created_at": format_time(t.created_at),
            "updated_at": format_time(t.updated_at),
        })).collect::<Vec<_>>(),
    })))
}

async fn list_namespaces(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "get_metadef_namespaces", &json!({"project_id": ctx.project_id}))?;
    let types: Vec<String> = q
        .get("resource_types")
        .map(|t| t.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    let list = s.image.metadef_namespaces(&s.caller(&ctx), q.get("visibility"), &types).await?;
    let base = "/v2/metadefs/namespaces";
    let (list, next) = page(list, "namespace", &q, base)?;
    let mut body = json!({
        "namespaces": list,
        "first": first_link(base, &q),
        "schema": "/v2/schemas/metadefs/namespaces",
    });
    if let Some(next) = next {
        body["next"] = json!(next);
    }
    Ok(Json(body))
}

async fn create_namespace(
    State(s): State<AppState>,
    ctx: Context,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let b = body(&bytes)?;
    s.enforce(&ctx, "add_metadef_namespace", &json!({"project_id": ctx.project_id, "owner": b.get("owner")}))?;
    Ok((StatusCode::CREATED, Json(s.image.metadef_namespace_create(&s.caller(&ctx), &b).await?)))
}

async fn show_namespace(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace(&s, &ctx, &ns, "get_metadef_namespace").await?;
    Ok(Json(s.image.metadef_namespace_json(&ns).await?))
}

async fn update_namespace(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace(&s, &ctx, &ns, "modify_metadef_namespace").await?;
    Ok(Json(s.image.metadef_namespace_update(&ns, &body(&bytes)?).await?))
}

async fn delete_namespace(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ns = namespace(&s, &ctx, &ns, "delete_metadef_namespace").await?;
    s.image.metadef_namespace_delete(&ns).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_associations(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace(&s, &ctx, &ns, "list_metadef_resource_types").await?;
    let list = s.image.store().metadef_association_list(Some(&ns.namespace)).await.map_err(ApiError::from)?;
    Ok(Json(json!({"resource_type_associations": list.iter().map(association_json).collect::<Vec<_>>()})))
}

async fn create_association(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ns = namespace(&s, &ctx, &ns, "add_metadef_resource_type_association").await?;
    Ok((StatusCode::CREATED, Json(s.image.metadef_association_create(&ns, &body(&bytes)?).await?)))
}

async fn delete_association(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ns = namespace(&s, &ctx, &ns, "remove_metadef_resource_type_association").await?;
    s.image.metadef_association_delete(&ns, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The policy rules of one kind of item: (list, show, add, modify, delete).
fn rules(kind: &str) -> [&'static str; 5] {
    match kind {
        OBJECT => [
            "get_metadef_objects",
            "get_metadef_object",
            "add_metadef_object",
            "modify_metadef_object",
            "delete_metadef_object",
        ],
        PROPERTY => [
            "get_metadef_properties",
            "get_metadef_property",
            "add_metadef_property",
            "modify_metadef_property",
            "remove_metadef_property",
        ],
        _ => ["get_metadef_tags", "get_metadef_tag", "add_metadef_tag", "modify_metadef_tag", "delete_metadef_tag"],
    }
}

async fn list_items(
    s: &AppState,
    ctx: &Context,
    ns: &str,
    kind: &str,
    q: &QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace(s, ctx, ns, rules(kind)[0]).await?;
    let items = s.image.store().metadef_item_list(&ns.namespace, kind).await.map_err(ApiError::from)?;
    if kind == PROPERTY {
        // Properties are a map by name, never paged (as upstream).
        return Ok(Json(json!({"properties": properties_json(&items)})));
    }
    let key = if kind == OBJECT { "objects" } else { "tags" };
    let base = format!("/v2/metadefs/namespaces/{}/{key}", ns.namespace);
    let (list, next) = page(items.iter().map(item_json).collect(), "name", q, &base)?;
    let mut body = json!({key: list, "first": first_link(&base, q)});
    if kind == OBJECT {
        body["schema"] = json!("/v2/schemas/metadefs/objects");
    }
    if let Some(next) = next {
        body["next"] = json!(next);
    }
    Ok(Json(body))
}

async fn show_item(s: &AppState, ctx: &Context, ns: &str, kind: &str, name: &str) -> Result<Json<Value>, ApiError> {
    let ns = namespace(s, ctx, ns, rules(kind)[1]).await?;
    Ok(Json(item_json(&s.image.metadef_item(&ns, kind, name).await?)))
}

async fn create_item(
    s: &AppState,
    ctx: &Context,
    ns: &str,
    kind: &str,
    b: Value,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ns = namespace(s, ctx, ns, rules(kind)[2]).await?;
    Ok((StatusCode::CREATED, Json(item_json(&s.image.metadef_item_create(&ns, kind, &b).await?))))
}

async fn update_item(
    s: &AppState,
    ctx: &Context,
    ns: &str,
    kind: &str,
    name: &str,
    b: Value,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace(s, ctx, ns, rules(kind)[3]).await?;
    Ok(Json(item_json(&s.image.metadef_item_update(&ns, kind, name, &b).await?)))
}

async fn delete_item(s: &AppState, ctx: &Context, ns: &str, kind: &str, name: &str) -> Result<StatusCode, ApiError> {
    let ns = namespace(s, ctx, ns, rules(kind)[4]).await?;
    s.image.metadef_item_delete(&ns, kind, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_objects(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    list_items(&s, &ctx, &ns, OBJECT, &q).await
}

async fn create_object(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create_item(&s, &ctx, &ns, OBJECT, body(&bytes)?).await
}

async fn show_object(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    show_item(&s, &ctx, &ns, OBJECT, &name).await
}

async fn update_object(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    update_item(&s, &ctx, &ns, OBJECT, &name, body(&bytes)?).await
}

async fn delete_object(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_item(&s, &ctx, &ns, OBJECT, &name).await
}

async fn list_properties(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
) -> Result<Json<Value>, ApiError> {
    list_items(&s, &ctx, &ns, PROPERTY, &QueryPairs(Vec::new())).await
}

async fn create_property(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create_item(&s, &ctx, &ns, PROPERTY, body(&bytes)?).await
}

async fn show_property(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    show_item(&s, &ctx, &ns, PROPERTY, &name).await
}

async fn update_property(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    update_item(&s, &ctx, &ns, PROPERTY, &name, body(&bytes)?).await
}

async fn delete_property(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_item(&s, &ctx, &ns, PROPERTY, &name).await
}

async fn list_tags(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    list_items(&s, &ctx, &ns, TAG, &q).await
}

/// `POST /tags`: replaces the namespace's tags, or adds to them with `X-Openstack-Append: true`.
async fn create_tags(
    State(s): State<AppState>,
    ctx: Context,
    Path(ns): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ns = namespace(&s, &ctx, &ns, "add_metadef_tags").await?;
    let append =
        headers.get("x-openstack-append").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let tags = s.image.metadef_tags_create(&ns, &body(&bytes)?, append).await?;
    let names: Vec<Value> = tags.iter().map(|t| json!({"name": t.name})).collect();
    Ok((StatusCode::CREATED, Json(json!({"tags": names}))))
}

async fn delete_tags(State(s): State<AppState>, ctx: Context, Path(ns): Path<String>) -> Result<StatusCode, ApiError> {
    let ns = namespace(&s, &ctx, &ns, "delete_metadef_tags").await?;
    s.image.metadef_tags_delete(&ns).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn show_tag(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    show_item(&s, &ctx, &ns, TAG, &name).await
}

/// `POST /tags/{name}` (no body): one tag.
async fn create_tag(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create_item(&s, &ctx, &ns, TAG, json!({"name": name})).await
}

async fn update_tag(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    update_item(&s, &ctx, &ns, TAG, &name, body(&bytes)?).await
}

async fn delete_tag(
    State(s): State<AppState>,
    ctx: Context,
    Path((ns, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_item(&s, &ctx, &ns, TAG, &name).await
}

async fn schema(Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    metadef_schema(&name).map(Json).ok_or_else(|| ApiError::not_found(format!("Schema {name} not found")))
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn timestamps() -> [(&'static str, Value); 2] {
    [
        ("created_at", json!({"type": "string", "readOnly": true, "format": "date-time"})),
        ("updated_at", json!({"type": "string", "readOnly": true, "format": "date-time"})),
    ]
}

fn property_definition() -> Value {
    json!({
        "type": "object",
        "required": ["title", "type"],
        "properties": {
            "name": {"type": "string", "maxLength": 80},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "operators": {"type": "array", "items": {"type": "string"}},
            "type": {"type": "string", "enum": ["array", "boolean", "integer", "number", "object", "string", null]},
            "required": {"type": "array", "items": {"type": "string"}},
            "minimum": {"type": "number"},
            "maximum": {"type": "number"},
            "maxLength": {"type": "integer", "minimum": 0},
            "minLength": {"type": "integer", "minimum": 0},
            "pattern": {"type": "string", "format": "regex"},
            "enum": {"type": "array"},
            "readonly": {"type": "boolean"},
            "default": {},
            "items": {"type": "object"},
            "maxItems": {"type": "integer", "minimum": 0},
            "minItems": {"type": "integer", "minimum": 0},
            "uniqueItems": {"type": "boolean", "default": false},
            "additionalItems": {"type": "boolean"},
        },
    })
}

fn with(mut schema: Value, extra: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    for (k, v) in extra {
        schema["properties"][k] = v;
    }
    schema
}

fn collection(name: &str, item_key: &str, item: Value) -> Value {
    json!({
        "name": name,
        "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"}, {"rel": "describedby", "href": "{schema}"}],
        "properties": {
            item_key: {"type": "array", "items": item},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
    })
}

/// The JSON schemas Glance publishes under `/v2/schemas/metadefs/`.
pub fn metadef_schema(name: &str) -> Option<Value> {
    let association = with(
        json!({
            "name": "resource_type_association",
            "additionalProperties": false,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 80, "description": "Resource type names should be aligned with Heat resource types whenever possible: https://docs.openstack.org/heat/latest/template_guide/openstack.html"},
                "prefix": string("Specifies the prefix to use for the given resource type."),
                "properties_target": string("Some resource types allow more than one key / value pair per instance."),
            },
        }),
        timestamps(),
    );
    let mut property = property_definition();
    property["name"] = json!("property");
    let object = with(
        json!({
            "name": "object",
            "additionalProperties": false,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 80},
                "description": {"type": "string"},
                "required": {"type": "array", "items": {"type": "string"}},
                "properties": {"type": "object", "additionalProperties": property_definition()},
                "schema": {"type": "string", "readOnly": true},
                "self": {"type": "string", "readOnly": true},
            },
        }),
        timestamps(),
    );
    let tag = with(
        json!({
            "name": "tag",
            "additionalProperties": false,
            "required": ["name"],
            "properties": {"name": {"type": "string", "maxLength": 255}},
        }),
        timestamps(),
    );
    let namespace = with(
        json!({
            "name": "namespace",
            "additionalProperties": false,
            "required": ["namespace"],
            "properties": {
                "namespace": {"type": "string", "maxLength": 80, "description": "The unique namespace text."},
                "display_name": {"type": "string", "maxLength": 80, "description": "The user friendly name for the namespace. Used by UI if available."},
                "description": {"type": "string", "maxLength": 500, "description": "Provides a user friendly description of the namespace."},
                "visibility": {"type": "string", "enum": ["public", "private"], "description": "Scope of namespace accessibility."},
                "protected": {"type": "boolean", "description": "If true, namespace will not be deletable."},
                "owner": {"type": "string", "maxLength": 255, "description": "Owner of the namespace."},
                "schema": {"type": "string", "readOnly": true},
                "self": {"type": "string", "readOnly": true},
                "resource_type_associations": {"type": "array", "items": association.clone()},
                "properties": {"type": "object", "additionalProperties": property_definition()},
                "objects": {"type": "array", "items": object.clone()},
                "tags": {"type": "array", "items": tag.clone()},
            },
        }),
        timestamps(),
    );
    Some(match name {
        "namespace" => namespace,
        "namespaces" => collection("namespaces", "namespaces", namespace),
        "resource_type" => association,
        "resource_types" => collection("resource_type_associations", "resource_type_associations", association),
        "object" => object,
        "objects" => collection("objects", "objects", object),
        "property" => property,
        "properties" => {
            let mut c = collection("properties", "properties", property.clone());
            c["properties"]["properties"] = json!({"type": "object", "additionalProperties": property});
            c
        }
        "tag" => tag,
        "tags" => collection("tags", "tags", tag),
        _ => return None,
    })
}
