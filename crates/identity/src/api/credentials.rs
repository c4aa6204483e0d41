//! `/v3/credentials`: EC2-style and generic credentials, as Keystone's v3 API.
//!
//! `blob` is a JSON document carried as a string. An `ec2` credential's id is the SHA-256 hex digest of the blob's
//! `access` key (so the key finds it, see [`crate::Identity::ec2_credential`]) and needs a `project_id`. Blobs are
//! encrypted at rest (see `store::credentials`). Owners manage their own credentials; admins any; system readers
//! read. Policy is checked before the credential's existence, as upstream, so a stranger gets 403, not 404.
//!
//! Also the OS-EC2 view, `/v3/users/{user_id}/credentials/OS-EC2[/{access}]`: the server generates the access and
//! secret, and entries are shown as `{user_id, tenant_id, access, secret, trust_id}`.

use api_common::{ApiError, Json, QueryPairs};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Map, Value, json};

use super::{
    AppState, authorize, caller,
    catalog::{entity, expecting, extras, string_field},
    enforce,
};
use crate::{
    error::Error,
    service::new_id,
    store::{Credential, EC2, ec2_credential_id},
};

const ADMIN_OR_SYSTEM_READER_OR_OWNER: &str =
    "rule:admin_required or (role:reader and system_scope:all) or user_id:%(target.credential.user_id)s";
const ADMIN_OR_OWNER: &str = "rule:admin_required or user_id:%(target.credential.user_id)s";

/// Default policy rules (upstream names, secure-RBAC defaults).
pub(super) const POLICIES: &[(&str, &str)] = &[
    ("identity:get_credential", ADMIN_OR_SYSTEM_READER_OR_OWNER),
    ("identity:list_credentials", ADMIN_OR_SYSTEM_READER_OR_OWNER),
    ("identity:create_credential", ADMIN_OR_OWNER),
    ("identity:update_credential", ADMIN_OR_OWNER),
    ("identity:delete_credential", ADMIN_OR_OWNER),
    ("identity:ec2_get_credential", ADMIN_OR_SYSTEM_READER_OR_OWNER),
    ("identity:ec2_list_credentials", "rule:admin_required or (role:reader and system_scope:all) or rule:owner"),
    ("identity:ec2_create_credential", "rule:admin_required or rule:owner"),
    ("identity:ec2_delete_credential", ADMIN_OR_OWNER),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/credentials", get(credential_list).post(credential_create))
        .route(
            "/v3/credentials/{credential_id}",
            get(credential_get).patch(credential_update).delete(credential_delete),
        )
        .route("/v3/users/{user_id}/credentials/OS-EC2", get(ec2_list).post(ec2_create))
        .route("/v3/users/{user_id}/credentials/OS-EC2/{access}", get(ec2_get).delete(ec2_delete))
}

const FIELDS: &[&str] = &["user_id", "project_id", "type", "blob"];

fn credential_json(s: &AppState, c: &Credential) -> Value {
    let mut v = json!({
        "id": c.id,
        "user_id": c.user_id,
        "project_id": c.project_id,
        "type": c.cred_type,
        "blob": c.blob,
        "links": {"self": s.url(&format!("credentials/{}", c.id))},
    });
    if let Value::Object(m) = &mut v {
        for (k, x) in &c.extra {
            m.entry(k.clone()).or_insert_with(|| x.clone());
        }
    }
    v
}

/// What policy rules see of a credential.
fn target_of(c: &Credential) -> Value {
    json!({"id": c.id, "user_id": c.user_id, "project_id": c.project_id, "type": c.cred_type})
}

/// The parsed blob of an EC2 credential, with upstream's checks.
fn ec2_blob(blob: &str) -> Result<Map<String, Value>, Error> {
    let parsed: Value =
        serde_json::from_str(blob).map_err(|_| Error::BadRequest("Invalid blob in credential".into()))?;
    match parsed {
        Value::Object(m) if !m.is_empty() => {
            if m.get("access").is_none_or(Value::is_null) {
                return Err(expecting("access", "credential"));
            }
            Ok(m)
        }
        _ => Err(expecting("blob", "credential")),
    }
}

async fn credential_list(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let info = caller(&s, &headers).await?;
    let own = json!({"credential": {"user_id": info.user.id}});
    enforce(&s, &info, "identity:list_credentials", &own)?;
    let creds = s.identity.credential_list(q.get("user_id")).await?;
    let ty = q.get("type");
    let items = creds
        .iter()
        .filter(|c| ty.is_none_or(|t| c.cred_type == t))
        // Only what the caller may see one by one (their own, unless admin or system reader).
        .filter(|c| enforce(&s, &info, "identity:get_credential", &json!({"credential": target_of(c)})).is_ok())
        .map(|c| credential_json(&s, c))
        .collect();
    Ok(s.collection("credentials", items, "credentials"))
}

/// The credential as policy target (`{}` when it does not exist: existence is checked after policy).
async fn existing_target(s: &AppState, id: &str) -> Result<(Option<Credential>, Value), Error> {
    let c = s.identity.credential_get(id).await?;
    let target = match &c {
        Some(c) => json!({"credential_id": id, "credential": target_of(c)}),
        None => json!({"credential_id": id}),
    };
    Ok((c, target))
}

async fn credential_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (c, target) = existing_target(&s, &id).await?;
    authorize(&s, &headers, "identity:get_credential", &target).await?;
    let c = c.ok_or_else(|| Error::not_found("credential", &id))?;
    Ok(Json(json!({"credential": credential_json(&s, &c)})))
}

async fn credential_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let info = caller(&s, &headers).await?;
    let target = match body.get("credential") {
        Some(c @ Value::Object(_)) => json!({"credential": c}),
        _ => json!({}),
    };
    enforce(&s, &info, "identity:create_credential", &target)?;
    let m = entity(body, "credential")?;
    for f in ["blob", "type", "user_id"] {
        super::catalog::required(&m, f)?;
    }
    let blob = string_field(&m, "blob", false, true, usize::MAX)?.flatten().unwrap_or_default();
    let cred_type = string_field(&m, "type", false, false, 255)?.flatten().unwrap_or_default();
    let user_id = string_field(&m, "user_id", false, false, 64)?.flatten().unwrap_or_default();
    let project_id = string_field(&m, "project_id", true, false, 64)?.flatten();
    let id = if cred_type == EC2 {
        if project_id.is_none() {
            return Err(Error::BadRequest("'project_id' is a required property".into()).into());
        }
        let parsed = ec2_blob(&blob)?;
        let access = match parsed.get("access") {
            Some(Value::String(a)) => a.clone(),
            Some(other) => other.to_string(),
            None => return Err(expecting("access", "credential").into()),
        };
        ec2_credential_id(&access)
    } else {
        new_id()
    };
    if s.identity.store().credential_get(&id).await?.is_some() {
        return Err(Error::Conflict { kind: "credential", detail: format!("Duplicate ID, {id}") }.into());
    }
    let c = Credential { id, user_id, project_id, cred_type, blob, extra: extras(&m, FIELDS) };
    s.identity.credential_create(&c).await?;
    Ok((StatusCode::CREATED, Json(json!({"credential": credential_json(&s, &c)}))).into_response())
}

async fn credential_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let (current, target) = existing_target(&s, &id).await?;
    let info = caller(&s, &headers).await?;
    enforce(&s, &info, "identity:update_credential", &target)?;
    let mut c = current.ok_or_else(|| Error::not_found("credential", &id))?;
    let m = entity(body, "credential")?;
    if m.is_empty() {
        return Err(Error::BadRequest("{} does not have enough properties".into()).into());
    }
    if let Some(Value::String(body_id)) = m.get("id")
        && body_id != &id
    {
        return Err(Error::BadRequest("Cannot change credential ID".into()).into());
    }
    if let Some(Some(v)) = string_field(&m, "blob", false, true, usize::MAX)? {
        c.blob = v;
    }
    if let Some(Some(v)) = string_field(&m, "type", false, false, 255)? {
        c.cred_type = v;
    }
    if let Some(Some(v)) = string_field(&m, "user_id", false, false, 64)? {
        c.user_id = v;
    }
    if let Some(v) = string_field(&m, "project_id", true, false, 64)? {
        c.project_id = v;
    }
    if c.cred_type == EC2 {
        ec2_blob(&c.blob)?;
        if c.project_id.is_none() {
            return Err(Error::BadRequest("'project_id' is a required property".into()).into());
        }
    }
    for (k, v) in extras(&m, FIELDS) {
        c.extra.insert(k, v);
    }
    // The new owner must be one the caller may act for too.
    enforce(&s, &info, "identity:update_credential", &json!({"credential_id": id, "credential": target_of(&c)}))?;
    s.identity.credential_update(&c).await?;
    Ok(Json(json!({"credential": credential_json(&s, &c)})))
}

async fn credential_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (_, target) = existing_target(&s, &id).await?;
    authorize(&s, &headers, "identity:delete_credential", &target).await?;
    if !s.identity.store().credential_delete(&id).await? {
        return Err(Error::not_found("credential", &id).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---- OS-EC2: EC2 credentials under the user, by access key (what `openstack ec2 credentials` uses)

/// Upstream's EC2 view of a credential: `{user_id, tenant_id, access, secret, trust_id, links}`.
fn ec2_json(s: &AppState, c: &Credential) -> Value {
    let blob: Value = serde_json::from_str(&c.blob).unwrap_or_default();
    let access = blob.get("access").cloned().unwrap_or(Value::Null);
    let link = s.url(&format!("users/{}/credentials/OS-EC2/{}", c.user_id, access.as_str().unwrap_or_default()));
    json!({
        "user_id": c.user_id,
        "tenant_id": c.project_id,
        "access": access,
        "secret": blob.get("secret").cloned().unwrap_or(Value::Null),
        "trust_id": blob.get("trust_id").cloned().unwrap_or(Value::Null),
        "links": {"self": link},
    })
}

async fn ec2_list(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:ec2_list_credentials", &json!({"user_id": user_id})).await?;
    s.identity.store().user_get(&user_id).await?.ok_or_else(|| Error::not_found("user", &user_id))?;
    let creds = s.identity.credential_list(Some(&user_id)).await?;
    let items = creds.iter().filter(|c| c.cred_type == EC2).map(|c| ec2_json(&s, c)).collect();
    Ok(s.collection("credentials", items, &format!("users/{user_id}/credentials/OS-EC2")))
}

async fn ec2_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, "identity:ec2_create_credential", &json!({"user_id": user_id})).await?;
    let store = s.identity.store();
    store.user_get(&user_id).await?.ok_or_else(|| Error::not_found("user", &user_id))?;
    let tenant_id = match body.get("tenant_id") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err(Error::BadRequest("'tenant_id' is a required property".into()).into()),
    };
    store.project_get(&tenant_id).await?.ok_or_else(|| Error::not_found("project", &tenant_id))?;
    let access = new_id();
    let blob = json!({"access": access, "secret": new_id(), "trust_id": null}).to_string();
    let c = Credential {
        id: ec2_credential_id(&access),
        user_id,
        project_id: Some(tenant_id),
        cred_type: EC2.into(),
        blob,
        extra: Map::new(),
    };
    s.identity.credential_create(&c).await?;
    Ok((StatusCode::CREATED, Json(json!({"credential": ec2_json(&s, &c)}))).into_response())
}

/// The user's EC2 credential with this access key. As upstream, a missing one is a 404 before policy (the target
/// is built from it); one under another user is a 404 after.
async fn ec2_lookup(
    s: &AppState,
    headers: &HeaderMap,
    rule: &str,
    user_id: &str,
    access: &str,
) -> Result<Credential, ApiError> {
    let info = caller(s, headers).await?;
    let id = ec2_credential_id(access);
    let c = match s.identity.credential_get(&id).await? {
        Some(c) if c.cred_type == EC2 => c,
        _ => return Err(Error::not_found("credential", id).into()),
    };
    enforce(s, &info, rule, &json!({"user_id": user_id, "credential_id": id, "credential": target_of(&c)}))?;
    if c.user_id != user_id {
        return Err(Error::not_found("credential", id).into());
    }
    Ok(c)
}

async fn ec2_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((user_id, access)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let c = ec2_lookup(&s, &headers, "identity:ec2_get_credential", &user_id, &access).await?;
    Ok(Json(json!({"credential": ec2_json(&s, &c)})))
}

async fn ec2_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((user_id, access)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let c = ec2_lookup(&s, &headers, "identity:ec2_delete_credential", &user_id, &access).await?;
    s.identity.store().credential_delete(&c.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_blobs_need_an_access_key() {
        assert!(ec2_blob(r#"{"access": "a", "secret": "s"}"#).is_ok());
        assert_eq!(ec2_blob("not json").unwrap_err().to_string(), "Invalid blob in credential");
        assert!(ec2_blob(r#"{"secret": "s"}"#).unwrap_err().to_string().starts_with("Expecting to find access"));
        assert!(ec2_blob("[]").is_err());
    }

    #[test]
    fn ec2_ids_are_sha256_of_the_access_key() {
        assert_eq!(ec2_credential_id("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
