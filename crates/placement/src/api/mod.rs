//! HTTP layer of the placement service: thin handlers under `/placement`, microversions 1.0 – [`MAX_VERSION`]
//! (`OpenStack-API-Version: placement 1.x`), Placement's error bodies and policy rules.
//!
//! What a microversion changes is decided here, with [`at_least`]; features of a newer version answer 404 to older
//! requests, as upstream's routes do.

mod allocations;
mod classes;
mod providers;

use std::{path::Path, sync::Arc};

use ::auth::{AuthLayerState, Context, Policy, TokenValidator};
use api_common::{ApiError, ErrorStyle, Microversion, VersionRange, WireConfig, microversion};
use axum::{
    Json, Router,
    extract::Request,
    middleware::Next,
    response::Response,
    routing::get,
};
use http::{HeaderValue, Method, header};
use serde_json::{Value, json};

use crate::{error::Error, service::Placement};

/// The newest microversion this service honours.
pub const MAX_VERSION: Microversion = Microversion::new(1, 28);
pub const MIN_VERSION: Microversion = Microversion::new(1, 0);

/// The version range, as `api_common::microversion` negotiates it.
pub fn version_range() -> VersionRange {
    VersionRange { service_type: "placement", legacy_header: None, min: MIN_VERSION, max: MAX_VERSION }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub placement: Placement,
    /// The path this API is mounted at (e.g. `/placement`), for links as upstream writes them.
    pub prefix: Arc<str>,
    pub policy: Arc<Policy>,
}

const ADMIN_OR_SERVICE: &str = "role:admin or role:service";

/// Placement's policy rules; all default to admin or service, as upstream.
pub const POLICIES: &[(&str, &str)] = &[
    ("admin_api", "role:admin"),
    ("service_api", "role:service"),
    ("admin_or_service_api", ADMIN_OR_SERVICE),
    ("placement:resource_providers:list", ADMIN_OR_SERVICE),
    ("placement:resource_providers:create", ADMIN_OR_SERVICE),
    ("placement:resource_providers:show", ADMIN_OR_SERVICE),
    ("placement:resource_providers:update", ADMIN_OR_SERVICE),
    ("placement:resource_providers:delete", ADMIN_OR_SERVICE),
    ("placement:resource_providers:inventories:list", ADMIN_OR_SERVICE),
    ("placement:resource_providers:inventories:create", ADMIN_OR_SERVICE),
    ("placement:resource_providers:inventories:show", ADMIN_OR_SERVICE),
    ("placement:resource_providers:inventories:update", ADMIN_OR_SERVICE),
    ("placement:resource_providers:inventories:delete", ADMIN_OR_SERVICE),
    ("placement:resource_providers:aggregates:list", ADMIN_OR_SERVICE),
    ("placement:resource_providers:aggregates:update", ADMIN_OR_SERVICE),
    ("placement:resource_providers:usages", ADMIN_OR_SERVICE),
    ("placement:usages", ADMIN_OR_SERVICE),
    ("placement:resource_providers:traits:list", ADMIN_OR_SERVICE),
    ("placement:resource_providers:traits:update", ADMIN_OR_SERVICE),
    ("placement:resource_providers:traits:delete", ADMIN_OR_SERVICE),
    ("placement:resource_providers:allocations:list", ADMIN_OR_SERVICE),
    ("placement:resource_classes:list", ADMIN_OR_SERVICE),
    ("placement:resource_classes:create", ADMIN_OR_SERVICE),
    ("placement:resource_classes:show", ADMIN_OR_SERVICE),
    ("placement:resource_classes:update", ADMIN_OR_SERVICE),
    ("placement:resource_classes:delete", ADMIN_OR_SERVICE),
    ("placement:traits:list", ADMIN_OR_SERVICE),
    ("placement:traits:show", ADMIN_OR_SERVICE),
    ("placement:traits:update", ADMIN_OR_SERVICE),
    ("placement:traits:delete", ADMIN_OR_SERVICE),
    ("placement:allocations:list", ADMIN_OR_SERVICE),
    ("placement:allocations:manage", ADMIN_OR_SERVICE),
    ("placement:allocations:update", ADMIN_OR_SERVICE),
    ("placement:allocations:delete", ADMIN_OR_SERVICE),
    ("placement:allocation_candidates:list", ADMIN_OR_SERVICE),
];

/// Loads the default policy, overridden by `policy_file` when given.
pub fn load_policy(policy_file: Option<&Path>) -> Result<Policy, Error> {
    Policy::for_service("placement", POLICIES, policy_file).map_err(|e| Error::Config(e.to_string()))
}

/// The placement API, to be nested at the path of `base_url` (e.g. `http://host/placement`).
pub fn router(
    placement: Placement,
    base_url: &str,
    policy: Policy,
    validator: Arc<dyn TokenValidator>,
    identity_url: &str,
) -> Router {
    let prefix = url_path(base_url);
    let state = AppState { placement, prefix: prefix.into(), policy: Arc::new(policy) };
    let auth = AuthLayerState::new(validator, identity_url);
    let protected = Router::new()
        .merge(providers::routes())
        .merge(classes::routes())
        .merge(allocations::routes())
        .route_layer(axum::middleware::from_fn_with_state(auth, ::auth::require_auth));
    let router = Router::new()
        .route("/", get(root))
        .merge(protected)
        .with_state(state)
        .layer(axum::middleware::from_fn(cache_headers))
        .layer(axum::middleware::from_fn_with_state(Arc::new(version_range()), microversion::layer));
    api_common::wire::apply(router, WireConfig::new(ErrorStyle::Placement))
}

fn url_path(base_url: &str) -> String {
    let after_scheme = base_url.split_once("://").map_or(base_url, |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(i) => after_scheme[i..].trim_end_matches('/').to_string(),
        None => String::new(),
    }
}

/// The version document, open to anyone.
async fn root() -> Json<Value> {
    Json(json!({"versions": [{
        "id": "v1.0",
        "max_version": MAX_VERSION.to_string(),
        "min_version": MIN_VERSION.to_string(),
        "status": "CURRENT",
        "links": [{"rel": "self", "href": ""}],
    }]}))
}

/// Since 1.15, successful GETs carry `Cache-Control: no-cache` and a `Last-Modified` date.
async fn cache_headers(req: Request, next: Next) -> Response {
    let version = req.extensions().get::<Microversion>().copied();
    let is_get = req.method() == Method::GET && req.uri().path() != "/";
    let mut response = next.run(req).await;
    if is_get && response.status().is_success() && version.is_some_and(|v| v >= Microversion::new(1, 15)) {
        let now = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(v) = HeaderValue::from_str(&now) {
            response.headers_mut().insert(header::LAST_MODIFIED, v);
        }
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

impl AppState {
    /// Checks `rule` for the caller, with upstream's target (the caller's own project and user).
    pub(crate) fn enforce(&self, ctx: &Context, rule: &str) -> Result<(), ApiError> {
        let target = json!({"project_id": ctx.project_id, "user_id": ctx.user_id});
        self.policy.enforce(rule, ctx, &target)
    }

    pub(crate) fn link(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

/// 404 unless the request's microversion is at least `major.minor` (upstream's routes appear at a version).
pub(crate) fn at_least(v: Microversion, major: u32, minor: u32) -> Result<(), ApiError> {
    if v >= Microversion::new(major, minor) {
        Ok(())
    } else {
        Err(ApiError::not_found(ApiError::default_message(http::StatusCode::NOT_FOUND)).with_code("placement.undefined_code"))
    }
}

/// 400 in Placement's style (bad query or body).
pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message).with_code(crate::error::code::UNDEFINED)
}

/// Parses a JSON body into `T` with Placement's 400 wording.
pub(crate) fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    api_common::json::parse::<T>(bytes).map_err(|e| bad(format!("JSON does not validate: {}", e.message)))
}

pub(crate) fn required_generation(v: &Value) -> Result<i64, ApiError> {
    v.get("resource_provider_generation")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("JSON does not validate: 'resource_provider_generation' is a required property"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_paths() {
        assert_eq!(super::url_path("http://h:1/placement"), "/placement");
        assert_eq!(super::url_path("http://h:1/placement/"), "/placement");
        assert_eq!(super::url_path("http://h:1"), "");
    }
}
