//! HTTP layer of the identity service: thin handlers that parse, call [`Identity`], and shape responses as
//! Keystone's v3 API does.

use std::sync::Arc;

use api_common::{ApiError, Json, QueryPairs, version::VersionDoc};
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, caller, header};
use crate::{
    error::Error,
    service::{AppCredRef, Credentials, DomainRef, ScopeRequest, TokenInfo, UserRef},
};

const SUBJECT_TOKEN: &str = "x-subject-token";
const V3_UPDATED: &str = "2020-04-07T00:00:00Z";
const V3_ID: &str = "v3.14";

pub(super) const POLICIES: &[(&str, &str)] = &[
    ("identity:validate_token", "rule:service_admin_or_token_subject"),
    ("identity:check_token", "rule:admin_or_token_subject"),
    ("identity:revoke_token", "rule:admin_or_token_subject"),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(versions))
        .route("/v3", get(version_v3))
        .route("/v3/", get(version_v3))
        .route("/v3/auth/tokens", get(token_validate).head(token_check).post(token_issue).delete(token_revoke))
        .route("/v3/auth/catalog", get(auth_catalog))
        .route("/v3/auth/projects", get(auth_projects))
        .route("/v3/auth/domains", get(auth_domains))
        .route("/v3/auth/system", get(auth_system))
}

fn v3_doc(base: &str) -> VersionDoc {
    let mut doc = VersionDoc::current(V3_ID, V3_UPDATED, &format!("{base}/v3/"), "application/vnd.openstack.identity-v3+json");
    doc.status = "stable".into();
    doc
}

async fn versions(State(s): State<AppState>) -> Response {
    let body = json!({"versions": {"values": [v3_doc(&s.base_url)]}});
    (StatusCode::MULTIPLE_CHOICES, Json(body)).into_response()
}

async fn version_v3(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({"version": v3_doc(&s.base_url)}))
}

// ---- request bodies

#[derive(Deserialize)]
struct AuthRequest {
    auth: AuthBody,
}

#[derive(Deserialize)]
struct AuthBody {
    identity: IdentityBody,
    #[serde(default)]
    scope: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IdentityBody {
    methods: Vec<String>,
    #[serde(default)]
    password: Option<PasswordBody>,
    #[serde(default)]
    token: Option<TokenBody>,
    #[serde(default)]
    application_credential: Option<AppCredBody>,
}

#[derive(Deserialize)]
struct AppCredBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user: Option<AppCredUser>,
    secret: String,
}

#[derive(Deserialize)]
struct AppCredUser {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<NamedRef>,
}

#[derive(Deserialize)]
struct PasswordBody {
    user: PasswordUser,
}

#[derive(Deserialize)]
struct PasswordUser {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<NamedRef>,
    password: String,
}

#[derive(Deserialize)]
struct TokenBody {
    id: String,
}

#[derive(Deserialize, Default)]
struct NamedRef {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct ProjectScope {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<NamedRef>,
}

#[derive(Deserialize)]
struct ScopeBody {
    #[serde(default)]
    project: Option<ProjectScope>,
    #[serde(default)]
    domain: Option<NamedRef>,
    #[serde(default)]
    system: Option<serde_json::Value>,
    #[serde(default, rename = "OS-TRUST:trust")]
    trust: Option<NamedRef>,
}

fn domain_ref(d: Option<NamedRef>, what: &str) -> Result<DomainRef, Error> {
    match d {
        Some(NamedRef { id: Some(id), .. }) => Ok(DomainRef::Id(id)),
        Some(NamedRef { name: Some(name), .. }) => Ok(DomainRef::Name(name)),
        _ => Err(Error::BadRequest(format!("Expecting to find domain in {what}. The server could not comply with the request since it is either malformed or otherwise incorrect. The client is assumed to be in error."))),
    }
}

fn parse_credentials(identity: IdentityBody) -> Result<Credentials, Error> {
    if identity.methods.is_empty() {
        return Err(Error::BadRequest("Invalid input for field 'identity/methods': [] is too short".into()));
    }
    if identity.methods.iter().any(|m| m == "password") {
        let p = identity
            .password
            .ok_or_else(|| Error::BadRequest("Invalid input for field 'identity': 'password' is a required property".into()))?;
        let user = match (p.user.id, p.user.name) {
            (Some(id), _) => UserRef::Id(id),
            (None, Some(name)) => UserRef::Name { name, domain: domain_ref(p.user.domain, "user")? },
            (None, None) => return Err(Error::BadRequest("Invalid input for field 'user': an id or a name is required".into())),
        };
        return Ok(Credentials::Password { user, password: p.user.password });
    }
    if identity.methods.iter().any(|m| m == "application_credential") {
        let a = identity.application_credential.ok_or_else(|| {
            Error::BadRequest("Invalid input for field 'identity': 'application_credential' is a required property".into())
        })?;
        let credential = match (a.id, a.name) {
            (Some(id), _) => AppCredRef::Id(id),
            (None, Some(name)) => {
                let u = a.user.ok_or_else(|| {
                    Error::BadRequest("Could not find user for application credential: a user is required with a name.".into())
                })?;
                let user = match (u.id, u.name) {
                    (Some(id), _) => UserRef::Id(id),
                    (None, Some(name)) => UserRef::Name { name, domain: domain_ref(u.domain, "user")? },
                    (None, None) => {
                        return Err(Error::BadRequest("Invalid input for field 'user': an id or a name is required".into()));
                    }
                };
                AppCredRef::Name { name, user }
            }
            (None, None) => {
                return Err(Error::BadRequest(
                    "Invalid input for field 'application_credential': an id or a name is required".into(),
                ));
            }
        };
        return Ok(Credentials::ApplicationCredential { credential, secret: a.secret });
    }
    if identity.methods.iter().any(|m| m == "token") {
        let t = identity
            .token
            .ok_or_else(|| Error::BadRequest("Invalid input for field 'identity': 'token' is a required property".into()))?;
        return Ok(Credentials::Token { token: t.id });
    }
    Err(Error::Unauthorized)
}

fn parse_scope(scope: Option<serde_json::Value>) -> Result<ScopeRequest, Error> {
    let Some(scope) = scope else { return Ok(ScopeRequest::Default) };
    if scope.as_str() == Some("unscoped") {
        return Ok(ScopeRequest::Unscoped);
    }
    let body: ScopeBody = serde_json::from_value(scope).map_err(|e| Error::BadRequest(format!("Invalid input for field 'scope': {e}")))?;
    let given = [body.project.is_some(), body.domain.is_some(), body.system.is_some(), body.trust.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given > 1 {
        return Err(Error::BadRequest("Specifying more than one scope is not allowed.".into()));
    }
    if let Some(t) = body.trust {
        return match t.id {
            Some(id) => Ok(ScopeRequest::Trust(id)),
            None => Err(Error::BadRequest("Invalid input for field 'scope/OS-TRUST:trust': 'id' is a required property".into())),
        };
    }
    if let Some(p) = body.project {
        return match (p.id, p.name) {
            (Some(id), _) => Ok(ScopeRequest::ProjectId(id)),
            (None, Some(name)) => Ok(ScopeRequest::ProjectName { name, domain: domain_ref(p.domain, "project")? }),
            _ => Err(Error::BadRequest("Invalid input for field 'scope/project': an id or a name is required".into())),
        };
    }
    if let Some(d) = body.domain {
        return Ok(ScopeRequest::Domain(domain_ref(Some(d), "scope")?));
    }
    if let Some(system) = body.system {
        if system.get("all").and_then(|v| v.as_bool()) == Some(true) {
            return Ok(ScopeRequest::System);
        }
        return Err(Error::BadRequest("Invalid input for field 'scope/system': only 'all' is supported".into()));
    }
    Ok(ScopeRequest::Default)
}

fn nocatalog(q: &QueryPairs) -> bool {
    q.contains("nocatalog") && q.get("nocatalog").is_none_or(|v| v.is_empty() || api_common::query::parse_bool(v) != Some(false))
}

fn token_response(status: StatusCode, token: &str, body: serde_json::Value) -> Result<Response, ApiError> {
    let value = HeaderValue::from_str(token).map_err(|_| ApiError::internal("unprintable token"))?;
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(SUBJECT_TOKEN, value);
    Ok(response)
}

async fn token_issue(State(s): State<AppState>, q: QueryPairs, Json(req): Json<AuthRequest>) -> Result<Response, ApiError> {
    let creds = parse_credentials(req.auth.identity)?;
    let scope = parse_scope(req.auth.scope)?;
    let (token, info) = s.identity.authenticate(creds, scope).await?;
    let body = s.identity.token_body(&info, !nocatalog(&q)).await?;
    token_response(StatusCode::CREATED, &token, body)
}

/// Validates `X-Subject-Token` on behalf of the caller, as policy `rule` allows (admins and services any token,
/// anyone their own).
async fn subject(s: &AppState, headers: &HeaderMap, rule: &str) -> Result<Arc<TokenInfo>, ApiError> {
    let caller = caller(s, headers).await?;
    let subject_token = header(headers, SUBJECT_TOKEN)
        .ok_or_else(|| Error::BadRequest("X-Subject-Token header is required.".into()))?;
    let subject = s.identity.validate(subject_token).await.map_err(|e| match e {
        Error::InvalidToken => Error::not_found("token", subject_token_hint(subject_token)),
        other => other,
    })?;
    super::enforce(s, &caller, rule, &json!({"token": {"user_id": subject.user.id}}))?;
    Ok(subject)
}

/// Tokens never appear in full in responses or logs.
fn subject_token_hint(token: &str) -> String {
    let head: String = token.chars().take(8).collect();
    format!("{head}…")
}

async fn token_validate(State(s): State<AppState>, q: QueryPairs, headers: HeaderMap) -> Result<Response, ApiError> {
    let info = subject(&s, &headers, "identity:validate_token").await?;
    let body = s.identity.token_body(&info, !nocatalog(&q)).await?;
    let token = header(&headers, SUBJECT_TOKEN).unwrap_or_default();
    token_response(StatusCode::OK, token, body)
}

async fn token_check(State(s): State<AppState>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    subject(&s, &headers, "identity:check_token").await?;
    Ok(StatusCode::OK)
}

async fn token_revoke(State(s): State<AppState>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    subject(&s, &headers, "identity:revoke_token").await?;
    let token = header(&headers, SUBJECT_TOKEN).unwrap_or_default();
    s.identity.revoke(token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn auth_catalog(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let info = caller(&s, &headers).await?;
    if info.roles.is_empty() {
        return Err(Error::Forbidden("The service catalog is not available for unscoped tokens.".into()).into());
    }
    let catalog = s.identity.catalog_json(&info).await?;
    Ok(Json(json!({"catalog": catalog, "links": {"self": format!("{}/v3/auth/catalog", s.base_url), "previous": null, "next": null}})))
}

async fn auth_projects(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let info = caller(&s, &headers).await?;
    let projects = s.identity.store().project_list_for_user(&info.user.id).await?;
    let projects: Vec<_> = projects
        .iter()
        .filter(|p| p.enabled)
        .map(|p| json!({
            "id": p.id, "name": p.name, "domain_id": p.domain_id, "enabled": p.enabled,
            "is_domain": p.is_domain, "parent_id": p.parent_id, "description": p.description.clone().unwrap_or_default(),
            "links": {"self": format!("{}/v3/projects/{}", s.base_url, p.id)},
        }))
        .collect();
    Ok(Json(json!({"projects": projects, "links": {"self": format!("{}/v3/auth/projects", s.base_url), "previous": null, "next": null}})))
}

async fn auth_domains(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let info = caller(&s, &headers).await?;
    let domains = s.identity.store().domain_list_for_user(&info.user.id).await?;
    let domains: Vec<_> = domains
        .iter()
        .filter(|d| d.enabled)
        .map(|d| json!({
            "id": d.id, "name": d.name, "enabled": d.enabled, "description": d.description.clone().unwrap_or_default(),
            "links": {"self": format!("{}/v3/domains/{}", s.base_url, d.id)},
        }))
        .collect();
    Ok(Json(json!({"domains": domains, "links": {"self": format!("{}/v3/auth/domains", s.base_url), "previous": null, "next": null}})))
}

async fn auth_system(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let info = caller(&s, &headers).await?;
    let has_system = s
        .identity
        .store()
        .assignment_role_ids(crate::store::kind::USER_SYSTEM, &info.user.id, crate::store::SYSTEM_ALL)
        .await?;
    let system = if has_system.is_empty() { json!([]) } else { json!([{"all": true}]) };
    Ok(Json(json!({"system": system, "links": {"self": format!("{}/v3/auth/system", s.base_url), "previous": null, "next": null}})))
}
