//! HTTP layer of the compute service: Nova's API v2.1 under `/compute`, microversions 2.1 – [`MAX_VERSION`]
//! (`OpenStack-API-Version: compute 2.x` or the legacy `X-OpenStack-Nova-API-Version`), Nova's error bodies,
//! `x-compute-request-id`, and Nova's policy rules with their secure-RBAC defaults.

// Handlers return `ApiError` by value (status, message, code and headers), as axum takes it.
#![allow(clippy::result_large_err)]

mod aggregates;
mod assisted_snapshots;
mod extensions;
mod flavors;
mod hosts;
mod images;
mod interfaces;
mod keypairs;
mod migrations;
mod network;
mod proxies;
mod quotas;
mod server_groups;
mod servers;
mod usage;
mod volumes;

use std::{path::Path, sync::Arc};

use ::auth::{AuthLayerState, Context, Policy, TokenValidator};
use api_common::{ApiError, ErrorStyle, Microversion, VersionRange, WireConfig, microversion};
use axum::{Json, Router, extract::State, routing::get};
use http::HeaderName;
use serde_json::{Value, json};

use crate::{error::Error, service::Compute};

/// The newest microversion this service honours. Every version up to it is honoured where it changes an API this
/// service has; the rest concern APIs not here yet (consoles, migrations, evacuation, shelving, rescue) and change
/// nothing else: 2.4–2.6, 2.8, 2.12, 2.14, 2.18, 2.20, 2.22–2.25, 2.29–2.31, 2.34, 2.56, 2.59, 2.60, 2.65, 2.68,
/// 2.69, 2.72, 2.77 and 2.80. The
/// resource modules decide what each version changes (`server_view`, `FlavorView`, the key pair, server group,
/// service, hypervisor, quota and aggregate views; `until` for the APIs versions removed).
pub const MAX_VERSION: Microversion = Microversion::new(2, 80);

/// Microversion `2.minor`, for comparisons such as `mv >= v(47)`.
pub(crate) const fn v(minor: u32) -> Microversion {
    Microversion::new(2, minor)
}
pub const MIN_VERSION: Microversion = Microversion::new(2, 1);

/// Routes that microversion `removed` took away (upstream's deprecated proxies and APIs): from then on they answer
/// 404 as an unknown URL does.
pub(crate) fn until(router: Router<AppState>, removed: Microversion) -> Router<AppState> {
    router.route_layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            let mv = req.extensions().get::<Microversion>().copied().unwrap_or(MIN_VERSION);
            if mv >= removed {
                return axum::response::IntoResponse::into_response(ApiError::not_found(
                    "The resource could not be found.",
                ));
            }
            next.run(req).await
        },
    ))
}

/// The version range, as `api_common::microversion` negotiates it.
pub fn version_range() -> VersionRange {
    VersionRange {
        service_type: "compute",
        legacy_header: Some("x-openstack-nova-api-version"),
        min: MIN_VERSION,
        max: MAX_VERSION,
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub compute: Compute,
    /// The public URL this API is mounted at (e.g. `http://host/compute`), for links.
    pub base_url: Arc<str>,
    pub policy: Arc<Policy>,
    /// The image service, for boots and rebuilds.
    pub images: Option<crate::images::ImageClient>,
}

const ADMIN: &str = "rule:context_is_admin";
const READER: &str = "rule:project_reader_or_admin";
const MEMBER: &str = "rule:project_member_or_admin";
const KEYPAIR_OWNER: &str = "(rule:context_is_admin) or user_id:%(user_id)s";

/// Nova's policy rules for what exists here, with upstream's defaults.
pub const POLICIES: &[(&str, &str)] = &[
    ("os_compute_api:os-flavor-manage:create", ADMIN),
    ("os_compute_api:os-flavor-manage:delete", ADMIN),
    ("os_compute_api:os-flavor-manage:update", ADMIN),
    ("os_compute_api:os-flavor-extra-specs:index", "rule:project_reader_or_admin"),
    ("os_compute_api:os-flavor-extra-specs:show", "rule:project_reader_or_admin"),
    ("os_compute_api:os-flavor-extra-specs:create", ADMIN),
    ("os_compute_api:os-flavor-extra-specs:update", ADMIN),
    ("os_compute_api:os-flavor-extra-specs:delete", ADMIN),
    ("os_compute_api:os-flavor-access", ADMIN),
    ("os_compute_api:os-flavor-access:add_tenant_access", ADMIN),
    ("os_compute_api:os-flavor-access:remove_tenant_access", ADMIN),
    ("os_compute_api:os-keypairs:index", KEYPAIR_OWNER),
    ("os_compute_api:os-keypairs:show", KEYPAIR_OWNER),
    ("os_compute_api:os-keypairs:create", KEYPAIR_OWNER),
    ("os_compute_api:os-keypairs:delete", KEYPAIR_OWNER),
    ("os_compute_api:servers:index", READER),
    ("os_compute_api:servers:detail", READER),
    ("os_compute_api:servers:index:get_all_tenants", ADMIN),
    ("os_compute_api:servers:detail:get_all_tenants", ADMIN),
    ("os_compute_api:servers:show", READER),
    ("os_compute_api:ips:index", READER),
    ("os_compute_api:os-volumes-attachments:index", READER),
    ("os_compute_api:os-volumes-attachments:show", READER),
    ("os_compute_api:os-volumes-attachments:create", MEMBER),
    ("os_compute_api:os-assisted-volume-snapshots:create", "role:service or rule:context_is_admin"),
    ("os_compute_api:os-assisted-volume-snapshots:delete", "role:service or rule:context_is_admin"),
    ("os_compute_api:os-volumes-attachments:update", MEMBER),
    ("os_compute_api:os-volumes-attachments:swap", ADMIN),
    ("os_compute_api:os-volumes-attachments:delete", MEMBER),
    ("os_compute_api:os-volumes:list", READER),
    ("os_compute_api:os-volumes:detail", READER),
    ("os_compute_api:os-volumes:show", READER),
    ("os_compute_api:os-volumes:create", MEMBER),
    ("os_compute_api:os-volumes:delete", MEMBER),
    ("os_compute_api:os-volumes:snapshots:list", READER),
    ("os_compute_api:os-volumes:snapshots:detail", READER),
    ("os_compute_api:os-volumes:snapshots:show", READER),
    ("os_compute_api:os-volumes:snapshots:create", MEMBER),
    ("os_compute_api:os-volumes:snapshots:delete", MEMBER),
    ("os_compute_api:os-attach-interfaces:list", READER),
    ("os_compute_api:os-attach-interfaces:show", READER),
    ("os_compute_api:os-attach-interfaces:create", MEMBER),
    ("os_compute_api:os-attach-interfaces:delete", MEMBER),
    ("os_compute_api:os-server-password:show", READER),
    ("os_compute_api:os-server-password:clear", MEMBER),
    ("os_compute_api:os-security-groups:list", READER),
    ("os_compute_api:os-security-groups:add", MEMBER),
    ("os_compute_api:os-security-groups:remove", MEMBER),
    ("os_compute_api:os-floating-ips:add", MEMBER),
    ("os_compute_api:os-floating-ips:remove", MEMBER),
    ("os_compute_api:os-networks:list", READER),
    ("os_compute_api:os-networks:show", READER),
    ("os_compute_api:os-tenant-networks:list", READER),
    ("os_compute_api:os-tenant-networks:show", READER),
    ("os_compute_api:ips:show", READER),
    ("os_compute_api:servers:create", MEMBER),
    ("compute:servers:create:requested_destination", ADMIN),
    ("os_compute_api:servers:create:forced_host", ADMIN),
    ("os_compute_api:servers:show:host_status", ADMIN),
    ("os_compute_api:servers:trigger_crash_dump", MEMBER),
    ("os_compute_api:os-server-tags:index", READER),
    ("os_compute_api:os-server-tags:show", READER),
    ("os_compute_api:os-server-tags:update", MEMBER),
    ("os_compute_api:os-server-tags:update_all", MEMBER),
    ("os_compute_api:os-server-tags:delete", MEMBER),
    ("os_compute_api:os-server-tags:delete_all", MEMBER),
    ("compute:server:topology:index", READER),
    ("compute:server:topology:host:index", ADMIN),
    ("os_compute_api:servers:update", MEMBER),
    ("os_compute_api:servers:delete", MEMBER),
    ("os_compute_api:servers:reboot", MEMBER),
    ("os_compute_api:servers:rebuild", MEMBER),
    ("os_compute_api:servers:resize", MEMBER),
    ("os_compute_api:servers:create_image", MEMBER),
    ("os_compute_api:os-create-backup", MEMBER),
    ("os_compute_api:servers:confirm_resize", MEMBER),
    ("os_compute_api:servers:revert_resize", MEMBER),
    ("os_compute_api:servers:start", MEMBER),
    ("os_compute_api:servers:stop", MEMBER),
    ("os_compute_api:os-pause-server:pause", MEMBER),
    ("os_compute_api:os-pause-server:unpause", MEMBER),
    ("os_compute_api:os-suspend-server:suspend", MEMBER),
    ("os_compute_api:os-suspend-server:resume", MEMBER),
    ("os_compute_api:os-shelve:shelve", MEMBER),
    ("os_compute_api:os-shelve:shelve_offload", ADMIN),
    ("os_compute_api:os-shelve:unshelve", MEMBER),
    ("os_compute_api:os-rescue", MEMBER),
    ("os_compute_api:os-migrations:index", ADMIN),
    ("os_compute_api:servers:migrations:index", ADMIN),
    ("os_compute_api:servers:migrations:show", ADMIN),
    ("os_compute_api:os-unrescue", MEMBER),
    ("os_compute_api:os-lock-server:lock", MEMBER),
    ("os_compute_api:os-lock-server:unlock", MEMBER),
    ("os_compute_api:os-lock-server:unlock:unlock_override", ADMIN),
    ("os_compute_api:os-deferred-delete:force", MEMBER),
    ("os_compute_api:os-admin-actions:reset_state", ADMIN),
    ("os_compute_api:os-admin-actions:inject_network_info", ADMIN),
    ("os_compute_api:os-server-external-events:create", ADMIN),
    ("os_compute_api:os-deferred-delete:restore", MEMBER),
    ("os_compute_api:os-console-output", MEMBER),
    ("os_compute_api:server-metadata:index", READER),
    ("os_compute_api:server-metadata:show", READER),
    ("os_compute_api:server-metadata:create", MEMBER),
    ("os_compute_api:server-metadata:update", MEMBER),
    ("os_compute_api:server-metadata:update_all", MEMBER),
    ("os_compute_api:server-metadata:delete", MEMBER),
    ("os_compute_api:os-instance-actions:list", READER),
    ("os_compute_api:os-instance-actions:show", READER),
    ("os_compute_api:os-instance-actions:events", ADMIN),
    ("os_compute_api:os-services:list", ADMIN),
    ("os_compute_api:os-services:update", ADMIN),
    ("os_compute_api:os-services:delete", ADMIN),
    ("os_compute_api:os-hypervisors:list", ADMIN),
    ("os_compute_api:os-hypervisors:list-detail", ADMIN),
    ("os_compute_api:os-hypervisors:show", ADMIN),
    ("os_compute_api:os-hypervisors:statistics", ADMIN),
    ("os_compute_api:os-hypervisors:servers", ADMIN),
    ("os_compute_api:os-hypervisors:search", ADMIN),
    ("os_compute_api:os-hypervisors:uptime", ADMIN),
    ("os_compute_api:os-server-diagnostics", ADMIN),
    ("os_compute_api:os-availability-zone:list", "@"),
    ("os_compute_api:os-availability-zone:detail", ADMIN),
    ("os_compute_api:os-quota-sets:show", READER),
    ("os_compute_api:os-quota-sets:detail", READER),
    ("os_compute_api:os-quota-sets:defaults", "@"),
    ("os_compute_api:os-quota-sets:update", ADMIN),
    ("os_compute_api:os-quota-sets:delete", ADMIN),
    ("os_compute_api:os-quota-class-sets:show", ADMIN),
    ("os_compute_api:os-quota-class-sets:update", ADMIN),
    ("os_compute_api:limits", "@"),
    ("os_compute_api:limits:other_project", ADMIN),
    ("os_compute_api:os-aggregates:index", ADMIN),
    ("os_compute_api:os-aggregates:create", ADMIN),
    ("os_compute_api:os-aggregates:show", ADMIN),
    ("os_compute_api:os-aggregates:update", ADMIN),
    ("os_compute_api:os-aggregates:delete", ADMIN),
    ("os_compute_api:os-aggregates:add_host", ADMIN),
    ("os_compute_api:os-aggregates:remove_host", ADMIN),
    ("os_compute_api:os-aggregates:set_metadata", ADMIN),
    ("os_compute_api:os-server-groups:create", MEMBER),
    ("os_compute_api:os-server-groups:delete", MEMBER),
    ("os_compute_api:os-server-groups:index", READER),
    ("os_compute_api:os-server-groups:index:all_projects", ADMIN),
    ("os_compute_api:os-server-groups:show", READER),
    ("os_compute_api:os-simple-tenant-usage:show", READER),
    ("os_compute_api:os-simple-tenant-usage:list", ADMIN),
    ("os_compute_api:os-instance-usage-audit-log:list", ADMIN),
    ("os_compute_api:os-instance-usage-audit-log:show", ADMIN),
    ("os_compute_api:os-hosts:list", ADMIN),
    ("os_compute_api:os-hosts:show", ADMIN),
    ("os_compute_api:os-hosts:update", ADMIN),
    ("os_compute_api:os-hosts:reboot", ADMIN),
    ("os_compute_api:os-hosts:shutdown", ADMIN),
    ("os_compute_api:os-hosts:start", ADMIN),
    ("os_compute_api:extensions", "@"),
];

/// Loads the default policy, overridden by `policy_file` when given.
pub fn load_policy(policy_file: Option<&Path>) -> Result<Policy, Error> {
    Policy::for_service("compute", POLICIES, policy_file).map_err(|e| Error::Config(e.to_string()))
}

/// The compute API, to be nested at the path of `base_url` (e.g. `http://host/compute`).
pub fn router(
    compute: Compute,
    base_url: &str,
    policy: Policy,
    validator: Arc<dyn TokenValidator>,
    identity_url: &str,
    images: Option<crate::images::ImageClient>,
) -> Router {
    let state = AppState { compute, base_url: base_url.trim_end_matches('/').into(), policy: Arc::new(policy), images };
    let auth = AuthLayerState::new(validator, identity_url);
    let protected = Router::new()
        .merge(flavors::routes())
        .merge(keypairs::routes())
        .merge(servers::routes())
        .merge(network::routes())
        .merge(proxies::routes())
        .merge(interfaces::routes())
        .merge(volumes::routes())
        .merge(assisted_snapshots::routes())
        .merge(hosts::routes())
        .merge(images::routes())
        .merge(quotas::routes())
        .merge(aggregates::routes())
        .merge(server_groups::routes())
        .merge(usage::routes())
        .merge(migrations::routes())
        .merge(extensions::routes())
        .route_layer(axum::middleware::from_fn_with_state(auth, ::auth::require_auth));
    let router = Router::new()
        .route("/", get(versions))
        .route("/v2.1", get(version))
        .route("/v2.1/", get(version))
        .route("/v2", get(version_v2))
        .route("/v2/", get(version_v2))
        .merge(protected)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(Arc::new(version_range()), microversion::layer));
    let mut wire = WireConfig::new(ErrorStyle::Nova);
    wire.extra_request_id_header = Some(HeaderName::from_static("x-compute-request-id"));
    api_common::wire::apply(router, wire)
}

const UPDATED: &str = "2013-07-23T11:33:21Z";

fn version_doc(s: &AppState) -> Value {
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": MAX_VERSION.to_string(),
        "min_version": MIN_VERSION.to_string(),
        "updated": UPDATED,
        "links": [{"rel": "self", "href": format!("{}/v2.1/", s.base_url)}],
    })
}

/// `GET /compute/`: the versions list (200, as Nova answers it).
async fn versions(State(s): State<AppState>) -> Json<Value> {
    // The legacy v2.0 API is listed first, as upstream lists it.
    Json(json!({"versions": [v2_doc(&s), version_doc(&s)]}))
}

fn v2_doc(s: &AppState) -> Value {
    json!({
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{}/v2/", s.base_url)}],
    })
}

/// `GET /compute/v2`: the legacy API's version document (its requests are not served).
async fn version_v2(State(s): State<AppState>) -> Json<Value> {
    let mut doc = v2_doc(&s);
    doc["links"] = json!([
        {"rel": "self", "href": format!("{}/v2/", s.base_url)},
        {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
    ]);
    doc["media-types"] = json!([{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}]);
    Json(json!({"version": doc}))
}

/// `GET /compute/v2.1`: the version document with the microversion range.
async fn version(State(s): State<AppState>) -> Json<Value> {
    let mut doc = version_doc(&s);
    doc["links"] = json!([
        {"rel": "self", "href": format!("{}/v2.1/", s.base_url)},
        {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
    ]);
    doc["media-types"] =
        json!([{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]);
    Json(json!({"version": doc}))
}

impl AppState {
    /// Checks `rule` with Nova's usual target (the caller's project and user).
    pub(crate) fn enforce(&self, ctx: &Context, rule: &str) -> Result<(), ApiError> {
        let target = json!({"project_id": ctx.project_id, "user_id": ctx.user_id});
        self.policy.enforce(rule, ctx, &target)
    }

    /// Whether the caller is an admin (`context_is_admin`, as Nova computes `context.is_admin`).
    pub(crate) fn is_admin(&self, ctx: &Context) -> bool {
        self.policy.check(::auth::policy::ADMIN_RULE, ctx, &json!({"project_id": ctx.project_id}))
    }

    /// `self` and `bookmark` links of a resource at `path` (e.g. `/flavors/1`).
    pub(crate) fn links(&self, path: &str) -> Value {
        json!([
            {"rel": "self", "href": format!("{}/v2.1{path}", self.base_url)},
            {"rel": "bookmark", "href": format!("{}{path}", self.base_url)},
        ])
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/v2.1{path}", self.base_url)
    }
}

/// `limit`/`marker` with Nova's messages for a bad limit.
pub(crate) fn page(q: &api_common::QueryPairs, max: usize) -> Result<api_common::Page, ApiError> {
    if let Some(v) = q.get("limit") {
        match v.trim().parse::<i64>() {
            Err(_) => return Err(ApiError::bad_request("limit param must be an integer")),
            Ok(n) if n < 0 => return Err(ApiError::bad_request("limit param must be positive")),
            Ok(_) => {}
        }
    }
    api_common::Page::from_query(q, max)
}

/// 400 in Nova's schema-validation wording.
/// A time as upstream serialises naive UTC datetimes, with microseconds (`2013-10-29T13:42:02.000000`).
pub(crate) fn naive_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()).unwrap_or_default()
}

pub(crate) fn invalid(field: &str, value: &Value, reason: &str) -> ApiError {
    ApiError::bad_request(format!("Invalid input for field/attribute {field}. Value: {value}. {reason}"))
}

/// Parses a JSON object body.
pub(crate) fn body(bytes: &[u8]) -> Result<Value, ApiError> {
    let v: Value = api_common::json::parse(bytes)?;
    if v.is_object() { Ok(v) } else { Err(invalid("body", &v, &format!("{v} is not of type 'object'"))) }
}

/// The object under `key` of a body (`{"flavor": {...}}`).
pub(crate) fn member<'a>(v: &'a Value, key: &str) -> Result<&'a serde_json::Map<String, Value>, ApiError> {
    match v.get(key) {
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(invalid(key, other, &format!("{other} is not of type 'object'"))),
        None => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value: None. '{key}' is a required property"
        ))),
    }
}

/// Rejects members outside `allowed` (Nova's schemas forbid additional properties).
pub(crate) fn only(m: &serde_json::Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    if let Some(extra) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn policy_loads() {
        let p = super::load_policy(None).unwrap();
        assert!(p.contains("os_compute_api:os-keypairs:create"));
    }
}
