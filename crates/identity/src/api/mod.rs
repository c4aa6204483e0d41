//! HTTP layer of the identity service: thin handlers that authorize the caller, call [`Identity`] or the store, and
//! shape responses as Keystone's v3 API does. One module per resource family; each contributes its routes and its
//! default policy rules.

mod application_credentials;
mod auth;
mod catalog;
mod credentials;
mod domains;
mod groups;
mod limits;
mod oauth;
mod projects;
mod roles;
mod trusts;
mod users;

use std::{path::Path, sync::Arc};

use ::auth::Policy;
use api_common::{ApiError, ErrorStyle, Json, WireConfig};
use axum::{Router, http::HeaderMap};
use serde_json::{Value, json};

use crate::{
    error::Error,
    service::{Identity, TokenInfo},
};

/// What every handler gets: the service, its public base URL, and the loaded policy.
#[derive(Clone)]
pub(crate) struct AppState {
    pub identity: Identity,
    /// This service's public base URL, e.g. `http://127.0.0.1:8800/identity` (no trailing slash).
    pub base_url: Arc<str>,
    pub policy: Arc<Policy>,
}

/// Rules shared by the identity modules (upstream's names).
const COMMON_POLICIES: &[(&str, &str)] = &[
    ("default", "rule:admin_required"),
    ("owner", "user_id:%(user_id)s"),
    ("admin_or_owner", "rule:admin_required or rule:owner"),
    ("token_subject", "user_id:%(target.token.user_id)s"),
    ("service_admin_or_token_subject", "rule:service_or_admin or rule:token_subject"),
    ("admin_or_token_subject", "rule:admin_required or rule:token_subject"),
];

/// The identity service's own default rules (after the shared base rules), module by module.
pub fn default_policies() -> Vec<(&'static str, &'static str)> {
    let modules: &[&[(&str, &str)]] = &[
        COMMON_POLICIES,
        auth::POLICIES,
        domains::POLICIES,
        projects::POLICIES,
        users::POLICIES,
        groups::POLICIES,
        roles::POLICIES,
        catalog::POLICIES,
        credentials::POLICIES,
        application_credentials::POLICIES,
        trusts::POLICIES,
        limits::POLICIES,
        oauth::POLICIES,
    ];
    modules.iter().flat_map(|m| m.iter().copied()).collect()
}

/// Loads the default policy, overridden by `policy_file` (upstream's `policy.yaml`) when given.
pub fn load_policy(policy_file: Option<&Path>) -> Result<Policy, Error> {
    Policy::for_service("identity", &default_policies(), policy_file).map_err(|e| Error::Config(e.to_string()))
}

/// The identity API with the default policy, to be nested at `/identity`.
pub fn router(identity: Identity, base_url: &str) -> Result<Router, Error> {
    router_with_policy(identity, base_url, load_policy(None)?)
}

pub fn router_with_policy(identity: Identity, base_url: &str, policy: Policy) -> Result<Router, Error> {
    let state = AppState { identity, base_url: base_url.trim_end_matches('/').into(), policy: Arc::new(policy) };
    let router = Router::new()
        .merge(auth::routes())
        .merge(domains::routes())
        .merge(projects::routes())
        .merge(users::routes())
        .merge(groups::routes())
        .merge(roles::routes())
        .merge(catalog::routes())
        .merge(credentials::routes())
        .merge(application_credentials::routes())
        .merge(trusts::routes())
        .merge(limits::routes())
        .merge(oauth::routes())
        .with_state(state);
    Ok(api_common::wire::apply(router, WireConfig::new(ErrorStyle::Keystone)))
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
}

/// The caller (from `X-Auth-Token`); 401 if absent or invalid.
pub(crate) async fn caller(s: &AppState, headers: &HeaderMap) -> Result<Arc<TokenInfo>, Error> {
    let token = header(headers, "x-auth-token").ok_or(Error::Unauthorized)?;
    s.identity.validate(token).await.map_err(|e| match e {
        Error::InvalidToken => Error::Unauthorized,
        other => other,
    })
}

/// Authenticates the caller and enforces policy `rule` against `target`. 401 without a valid token, 403 when denied.
///
/// `target` is a JSON object of what the request touches, as Keystone builds it: path parameters at the top
/// (`{"user_id": "…"}`) and resources by name (`{"user": {"domain_id": "…"}}`). Rules read it both flat
/// (`%(user_id)s`) and under `target.` (`%(target.user.domain_id)s`), as upstream's do.
pub(crate) async fn authorize(
    s: &AppState,
    headers: &HeaderMap,
    rule: &str,
    target: &Value,
) -> Result<Arc<TokenInfo>, ApiError> {
    let info = caller(s, headers).await?;
    enforce(s, &info, rule, target)?;
    Ok(info)
}

/// [`authorize`] for a caller already known.
pub(crate) fn enforce(s: &AppState, info: &TokenInfo, rule: &str, target: &Value) -> Result<(), ApiError> {
    s.policy.enforce(rule, &info.context(), &policy_target(target))
}

fn policy_target(target: &Value) -> Value {
    let mut out = match target {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    out.insert("target".into(), target.clone());
    Value::Object(out)
}

impl AppState {
    /// `{base}/v3/{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/v3/{}", self.base_url, path.trim_start_matches('/'))
    }

    /// A Keystone collection: `{"<name>": [...], "links": {"self", "previous", "next"}}`.
    pub(crate) fn collection(&self, name: &str, items: Vec<Value>, path: &str) -> Json<Value> {
        Json(json!({name: items, "links": {"self": self.url(path), "previous": null, "next": null}}))
    }
}
