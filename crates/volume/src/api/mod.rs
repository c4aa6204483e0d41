//! HTTP layer of the volume service: Cinder's Block Storage API v3 under `/volume`, every resource route under
//! `/v3/{project_id}` as the catalog lists it, microversions 3.0–[`MAX_VERSION`], Cinder's error bodies
//! (`{"itemNotFound": {"message": …, "code": 404}}`) and policy rule names.

mod groups;
mod listing;
mod resources;
mod views;
mod volumes;

use std::{collections::HashMap, path::Path, sync::Arc};

use ::auth::{AuthLayerState, Context, Policy, TokenValidator};
use api_common::{ApiError, ErrorStyle, Microversion, VersionRange, WireConfig, microversion};
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderName, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use crate::{Error, Volume, service::Caller};

pub const MIN_VERSION: Microversion = Microversion::new(3, 0);
/// The highest microversion served: 3.27 brings the attachments API and 3.44 its `os-complete`, the flow Nova
/// uses.
pub const MAX_VERSION: Microversion = Microversion::new(3, 44);

pub fn version_range() -> VersionRange {
    VersionRange { service_type: "volume", legacy_header: None, min: MIN_VERSION, max: MAX_VERSION }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub volume: Volume,
    pub base_url: Arc<str>,
    pub policy: Arc<Policy>,
}

const ADMIN: &str = "rule:admin_api";
const MEMBER: &str = "rule:project_member_or_admin";
const READER: &str = "rule:project_reader_or_admin";

/// Cinder's rule names with secure-RBAC defaults.
pub const POLICIES: &[(&str, &str)] = &[
    ("volume:create", MEMBER),
    ("volume:get", READER),
    ("volume:get_all", READER),
    ("volume:update", MEMBER),
    ("volume:delete", MEMBER),
    ("volume:extend", MEMBER),
    ("volume:extend_attached_volume", MEMBER),
    ("volume:retype", MEMBER),
    ("volume:update_readonly_flag", MEMBER),
    ("volume_extension:volume_actions:upload_image", MEMBER),
    ("volume_extension:volume_admin_actions:reset_status", ADMIN),
    ("volume_extension:volume_admin_actions:force_delete", ADMIN),
    ("volume_extension:volume_admin_actions:force_detach", ADMIN),
    ("volume_extension:snapshot_admin_actions:reset_status", ADMIN),
    ("volume_extension:snapshot_admin_actions:force_delete", ADMIN),
    ("volume_extension:backup_admin_actions:reset_status", ADMIN),
    ("volume_extension:backup_admin_actions:force_delete", ADMIN),
    ("volume_extension:types_manage", ADMIN),
    ("volume_extension:types_extra_specs:create", ADMIN),
    ("volume_extension:types_extra_specs:update", ADMIN),
    ("volume_extension:types_extra_specs:delete", ADMIN),
    ("volume_extension:types_extra_specs:index", READER),
    ("volume_extension:types_extra_specs:show", READER),
    ("volume_extension:volume_type_access:addProjectAccess", ADMIN),
    ("volume_extension:volume_type_access:removeProjectAccess", ADMIN),
    ("volume_extension:volume_type_access:get_all_for_type", ADMIN),
    ("volume_extension:qos_specs_manage:create", ADMIN),
    ("volume_extension:qos_specs_manage:get", ADMIN),
    ("volume_extension:qos_specs_manage:get_all", ADMIN),
    ("volume_extension:qos_specs_manage:update", ADMIN),
    ("volume_extension:qos_specs_manage:delete", ADMIN),
    ("volume_extension:quotas:show", READER),
    ("volume_extension:quotas:update", ADMIN),
    ("volume_extension:quotas:delete", ADMIN),
    ("volume_extension:quota_classes", ADMIN),
    ("volume_extension:quota_classes:update", ADMIN),
    ("volume_extension:services:index", ADMIN),
    ("volume_extension:services:update", ADMIN),
    ("volume_extension:capabilities", ADMIN),
    ("volume_extension:scheduler_stats:get_pools", ADMIN),
    ("backup:create", MEMBER),
    ("backup:get", READER),
    ("backup:get_all", READER),
    ("backup:delete", MEMBER),
    ("backup:update", MEMBER),
    ("volume:create_transfer", MEMBER),
    ("volume:accept_transfer", "rule:project_member_or_admin"),
    ("snapshot_extension:snapshot_actions:update_snapshot_status", MEMBER),
    ("backup:restore", MEMBER),
    ("volume:attachment_create", MEMBER),
    ("volume:attachment_update", MEMBER),
    ("volume:attachment_delete", MEMBER),
    ("volume:attachment_complete", MEMBER),
    ("volume:revert_to_snapshot", MEMBER),
    ("group:group_types_manage", ADMIN),
    ("group:group_types_specs", ADMIN),
    ("group:create", MEMBER),
    ("group:get", READER),
    ("group:get_all", READER),
    ("group:update", MEMBER),
    ("group:delete", MEMBER),
    ("group:reset_status", ADMIN),
    ("group:create_group_snapshot", MEMBER),
    ("group:get_group_snapshot", READER),
    ("group:get_all_group_snapshots", READER),
    ("group:delete_group_snapshot", MEMBER),
    ("group:reset_group_snapshot_status", ADMIN),
    ("volume_extension:volume_type_encryption:create", ADMIN),
    ("volume_extension:volume_type_encryption:get", ADMIN),
    ("volume_extension:volume_type_encryption:update", ADMIN),
    ("volume_extension:volume_type_encryption:delete", ADMIN),
    ("backup:export-import", ADMIN),
    ("backup:backup-import", ADMIN),
];

/// Loads the default policy, overridden by `policy_file` when given.
pub fn load_policy(policy_file: Option<&Path>) -> Result<Policy, Error> {
    Policy::for_service("volume", POLICIES, policy_file).map_err(|e| Error::Config(e.to_string()))
}

/// Route paths under the per-project prefix.
fn p(path: &str) -> String {
    format!("/v3/{{project_id}}{path}")
}

/// The volume API, to be nested at the path of `base_url` (e.g. `http://host/volume`).
pub fn router(volume: Volume, base_url: &str, policy: Policy, validator: Arc<dyn TokenValidator>, identity_url: &str) -> Router {
    let state = AppState { volume, base_url: base_url.trim_end_matches('/').into(), policy: Arc::new(policy) };
    let auth = AuthLayerState::new(validator, identity_url);
    let protected = Router::new()
        .merge(volumes::routes())
        .merge(resources::routes())
        .merge(groups::routes())
        .route(&p(""), get(version_v3))
        .route(&p("/"), get(version_v3))
        .route_layer(axum::middleware::from_fn_with_state(auth, ::auth::require_auth));
    let router = Router::new()
        .route("/", get(versions))
        .route("/v3", get(version_v3))
        .route("/v3/", get(version_v3))
        .merge(protected)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(Arc::new(version_range()), microversion::layer));
    let mut wire = WireConfig::new(ErrorStyle::Nova);
    wire.extra_request_id_header = Some(HeaderName::from_static("x-openstack-request-id"));
    api_common::wire::apply(router, wire)
}

const UPDATED: &str = "2023-08-31T00:00:00Z";

fn version_doc(s: &AppState) -> Value {
    json!({
        "id": "v3.0",
        "status": "CURRENT",
        "version": MAX_VERSION.to_string(),
        "min_version": MIN_VERSION.to_string(),
        "updated": UPDATED,
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": format!("{}/v3/", s.base_url)},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    })
}

/// `GET /volume/`: the version list, with 300 Multiple Choices as upstream.
async fn versions(State(s): State<AppState>) -> Response {
    (StatusCode::MULTIPLE_CHOICES, Json(json!({"versions": [version_doc(&s)]}))).into_response()
}

/// `GET /volume/v3/`: the one version's document.
async fn version_v3(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"versions": [version_doc(&s)]}))
}

/// The path parameters of a route.
pub(crate) type Params = axum::extract::Path<HashMap<String, String>>;

pub(crate) fn param<'a>(p: &'a HashMap<String, String>, key: &str) -> &'a str {
    p.get(key).map(String::as_str).unwrap_or("")
}

impl AppState {
    pub(crate) fn caller<'a>(&self, ctx: &'a Context, headers: &HeaderMap) -> Caller<'a> {
        let token = headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default();
        Caller::new(ctx, token, &self.policy)
    }

    /// Checks `rule` against a resource owned by `project` (the caller's own project when `None`).
    pub(crate) fn enforce(&self, ctx: &Context, rule: &str, project: Option<&str>) -> Result<(), ApiError> {
        let project = project.or(ctx.project_id.as_deref()).unwrap_or("");
        self.policy.enforce(rule, ctx, &json!({"project_id": project, "user_id": ctx.user_id}))
    }

    pub(crate) fn link(&self, project: &str, collection: &str, id: &str) -> Value {
        json!([
            {"href": format!("{}/v3/{project}/{collection}/{id}", self.base_url), "rel": "self"},
            {"href": format!("{}/{project}/{collection}/{id}", self.base_url), "rel": "bookmark"},
        ])
    }
}

/// Parses a JSON body; 400 in Cinder's words when it is missing or malformed.
pub(crate) fn body(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("The server could not comply with the request since it is either malformed or otherwise incorrect."));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("Malformed request body: {e}")))
}

/// The object under `key`; 400 when absent.
pub(crate) fn entity<'a>(v: &'a Value, key: &str) -> Result<&'a Value, ApiError> {
    match v.get(key) {
        Some(b) if b.is_object() => Ok(b),
        _ => Err(ApiError::bad_request(format!("Missing required element '{key}' in request body."))),
    }
}
