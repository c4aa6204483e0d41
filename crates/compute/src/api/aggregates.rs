//! Host aggregates (`/os-aggregates`): create, list, show, update, delete, and the `add_host`, `remove_host` and
//! `set_metadata` actions (integer ids, the uuid shown from 2.41; 200 everywhere, as upstream).

use std::collections::BTreeMap;

use ::auth::Context;
use api_common::{ApiError, Microversion};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    routing::{get, post},
};
use serde_json::{Map, Value, json};

use super::{AppState, body, invalid, member, naive_time, only, v};
use crate::store::AggregateRow;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-aggregates", get(list).post(create))
        .route("/v2.1/os-aggregates/{id}", get(show).put(update).delete(delete))
        .route("/v2.1/os-aggregates/{id}/action", post(action))
}

fn enforce(s: &AppState, ctx: &Context, action: &str) -> Result<(), ApiError> {
    s.policy.enforce(&format!("os_compute_api:os-aggregates:{action}"), ctx, &json!({}))
}

/// The aggregate representation; the uuid is shown from 2.41.
fn view(a: &AggregateRow, full: bool, mv: Microversion) -> Value {
    let mut out = json!({
        "availability_zone": a.availability_zone(),
        "created_at": naive_time(a.created_at),
        "deleted": false,
        "deleted_at": null,
        "id": a.id,
        "name": a.name,
        "updated_at": a.updated_at.map(naive_time),
    });
    if full {
        out["hosts"] = json!(a.hosts);
        out["metadata"] = json!(a.metadata);
    }
    if mv >= v(41) {
        out["uuid"] = json!(a.uuid);
    }
    out
}

/// An aggregate id: an integer (upstream's `validate_integer`).
fn agg_id(id: &str) -> Result<i64, ApiError> {
    id.trim().parse().map_err(|_| ApiError::bad_request("Invalid input received: id must be an integer"))
}

/// Printable characters without leading or trailing whitespace (`except`: characters refused too), 1–255 long.
fn name_like(m: &Map<String, Value>, field: &str, except: Option<char>, strip: bool) -> Result<Option<String>, ApiError> {
    let Some(v) = m.get(field) else { return Ok(None) };
    let Value::String(n) = v else { return Err(invalid(field, v, &format!("{v} is not of type 'string'"))) };
    let n = if strip { n.trim().to_string() } else { n.clone() };
    if n.is_empty() {
        return Err(invalid(field, v, &format!("{v} is too short")));
    }
    if n.chars().count() > 255 {
        return Err(invalid(field, v, &format!("{v} is too long")));
    }
    let printable = n.chars().all(|c| !c.is_control() && Some(c) != except);
    if !printable || n.trim() != n {
        let what = match except {
            Some(c) => format!("printable characters except {c}"),
            None => "printable characters".into(),
        };
        return Err(ApiError::bad_request(format!(
            "An invalid 'name' value was provided. The name must be: {what}. Can not start or end with whitespace."
        )));
    }
    Ok(Some(n))
}

async fn list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "index")?;
    let all = s.compute.aggregates().await?;
    Ok(Json(json!({"aggregates": all.iter().map(|a| view(a, true, mv)).collect::<Vec<_>>()})))
}

async fn create(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v = body(&bytes)?;
    if let Some(o) = v.as_object() {
        only(o, &["aggregate"])?;
    }
    let m = member(&v, "aggregate")?;
    only(m, &["name", "availability_zone"])?;
    let name = name_like(m, "name", None, false)?.ok_or_else(|| {
        ApiError::bad_request("Invalid input for field/attribute aggregate. Value: None. 'name' is a required property")
    })?;
    let zone = match m.get("availability_zone") {
        None | Some(Value::Null) => None,
        Some(_) => name_like(m, "availability_zone", Some(':'), false)?,
    };
    enforce(&s, &ctx, "create")?;
    let agg = s.compute.aggregate_create(&name, zone.as_deref()).await?;
    Ok(Json(json!({"aggregate": view(&agg, false, mv)})))
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "show")?;
    let agg = s.compute.aggregate(agg_id(&id)?).await?;
    Ok(Json(json!({"aggregate": view(&agg, true, mv)})))
}

async fn update(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v = body(&bytes)?;
    if let Some(o) = v.as_object() {
        only(o, &["aggregate"])?;
    }
    let m = member(&v, "aggregate")?;
    only(m, &["name", "availability_zone"])?;
    if m.is_empty() {
        let o = Value::Object(m.clone());
        return Err(invalid("aggregate", &o, &format!("{o} is not valid under any of the given schemas")));
    }
    let name = name_like(m, "name", None, true)?;
    let zone = match m.get("availability_zone") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(_) => Some(name_like(m, "availability_zone", Some(':'), false)?),
    };
    enforce(&s, &ctx, "update")?;
    let id = agg_id(&id)?;
    let agg = s.compute.aggregate_update(id, name.as_deref(), zone.as_ref().map(|z| z.as_deref())).await?;
    Ok(Json(json!({"aggregate": view(&agg, true, mv)})))
}

async fn delete(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<(), ApiError> {
    enforce(&s, &ctx, "delete")?;
    s.compute.aggregate_delete(agg_id(&id)?).await?;
    Ok(())
}

/// The `host` of an `add_host`/`remove_host` body.
fn host_of(arg: &Value, action: &str) -> Result<String, ApiError> {
    let m = arg.as_object().ok_or_else(|| invalid(action, arg, &format!("{arg} is not of type 'object'")))?;
    only(m, &["host"])?;
    match m.get("host") {
        Some(Value::String(h)) if !h.is_empty() && h.chars().count() <= 255 => Ok(h.clone()),
        Some(v @ Value::String(_)) => Err(invalid("host", v, &format!("{v} is not a 'hostname'"))),
        Some(v) => Err(invalid("host", v, &format!("{v} is not of type 'string'"))),
        None => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {action}. Value: {arg}. 'host' is a required property"
        ))),
    }
}

/// The metadata of a `set_metadata` body: keys as server metadata, values strings or `null` (remove).
fn metadata_of(arg: &Value) -> Result<BTreeMap<String, Option<String>>, ApiError> {
    let m = arg.as_object().ok_or_else(|| invalid("set_metadata", arg, &format!("{arg} is not of type 'object'")))?;
    only(m, &["metadata"])?;
    let Some(md) = m.get("metadata") else {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute set_metadata. Value: {arg}. 'metadata' is a required property"
        )));
    };
    let Value::Object(md) = md else { return Err(invalid("metadata", md, &format!("{md} is not of type 'object'"))) };
    let mut out = BTreeMap::new();
    for (k, v) in md {
        let key_ok = !k.is_empty()
            && k.chars().count() <= 255
            && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | ' '));
        if !key_ok {
            return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{k}' was unexpected)")));
        }
        match v {
            Value::Null => out.insert(k.clone(), None),
            Value::String(t) if t.chars().count() <= 255 => out.insert(k.clone(), Some(t.clone())),
            Value::String(_) => return Err(invalid(k, v, &format!("{v} is too long"))),
            other => return Err(invalid(k, other, &format!("{other} is not of type 'string', 'null'"))),
        };
    }
    Ok(out)
}

async fn action(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v = body(&bytes)?;
    let o = v.as_object().cloned().unwrap_or_default();
    let Some((name, arg)) = o.iter().next() else {
        return Err(ApiError::bad_request("There is no such action: None"));
    };
    if o.len() > 1 {
        return Err(ApiError::bad_request("Additional properties are not allowed"));
    }
    let agg = match name.as_str() {
        "add_host" => {
            let host = host_of(arg, name)?;
            enforce(&s, &ctx, "add_host")?;
            s.compute.aggregate_add_host(agg_id(&id)?, &host).await?
        }
        "remove_host" => {
            let host = host_of(arg, name)?;
            enforce(&s, &ctx, "remove_host")?;
            s.compute.aggregate_remove_host(agg_id(&id)?, &host).await?
        }
        "set_metadata" => {
            let md = metadata_of(arg)?;
            enforce(&s, &ctx, "set_metadata")?;
            s.compute.aggregate_set_metadata(agg_id(&id)?, &md).await?
        }
        other => return Err(ApiError::bad_request(format!("There is no such action: {other}"))),
    };
    Ok(Json(json!({"aggregate": view(&agg, true, mv)})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_zones() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(name_like(&m(json!({"name": "agg 1"})), "name", None, false).unwrap().as_deref(), Some("agg 1"));
        assert!(name_like(&m(json!({"name": ""})), "name", None, false).is_err());
        assert!(name_like(&m(json!({"name": "a".repeat(256)})), "name", None, false).is_err());
        assert!(name_like(&m(json!({"name": " a"})), "name", None, false).is_err());
        assert_eq!(name_like(&m(json!({"name": " a "})), "name", None, true).unwrap().as_deref(), Some("a"));
        assert!(name_like(&m(json!({"z": "a:b"})), "z", Some(':'), false).is_err());
        assert!(agg_id("x").is_err());
        assert_eq!(agg_id("-1").unwrap(), -1);
        assert_eq!(metadata_of(&json!({"metadata": {"a": "1", "b": null}})).unwrap().len(), 2);
        assert!(metadata_of(&json!({"metadata": {"a/b": "1"}})).is_err());
        assert!(metadata_of(&json!({"metadata": {"a": 1}})).is_err());
        assert!(host_of(&json!({}), "add_host").is_err());
    }
}
