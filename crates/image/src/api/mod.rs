//! HTTP layer of the image service: thin handlers that authorize the caller with Glance's policy rules, call
//! [`Image`], and shape responses as Glance's v2 API does. Errors render in Glance's style.
//!
//! Every route but version discovery requires a token (`auth::require_auth`).

mod cache;
mod data;
mod discovery;
mod images;
mod members;
mod metadefs;
mod tasks;

use std::{path::Path, sync::Arc};

use ::auth::{AuthLayerState, Context, Policy, TokenValidator};
use api_common::{ApiError, ErrorStyle, WireConfig};
use axum::Router;
use serde_json::{Map, Value, json};

use crate::{
    error::Error,
    service::{Caller, Image},
    store::ImageRow,
};

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    pub image: Image,
    /// This service's public base URL, e.g. `http://127.0.0.1:8800/image` (no trailing slash).
    pub base_url: Arc<str>,
    pub policy: Arc<Policy>,
}

const ADMIN_OR_MEMBER: &str = "role:admin or (role:member and project_id:%(project_id)s)";
const ADMIN_OR_READER_GET_IMAGE: &str = "role:admin or (role:reader and (project_id:%(project_id)s or \
     project_id:%(member_id)s or 'community':%(visibility)s or 'public':%(visibility)s or \
     'shared':%(visibility)s))";
const ADMIN_OR_READER_OR_SHARED_MEMBER: &str =
    "role:admin or (role:reader and (project_id:%(project_id)s or project_id:%(member_id)s))";

/// Glance's policy rules with their secure-RBAC defaults: project members write their project's images, readers
/// read, admins do everything; only admins publicize.
pub const POLICIES: &[(&str, &str)] = &[
    ("default", "role:admin"),
    ("context_is_admin", "role:admin"),
    ("admin", "role:admin"),
    ("add_image", "role:admin or (role:member and project_id:%(project_id)s and project_id:%(owner)s)"),
    ("get_image", ADMIN_OR_READER_GET_IMAGE),
    ("get_images", "role:admin or (role:reader and project_id:%(project_id)s)"),
    ("modify_image", ADMIN_OR_MEMBER),
    ("delete_image", ADMIN_OR_MEMBER),
    ("publicize_image", "role:admin"),
    ("communitize_image", ADMIN_OR_MEMBER),
    ("upload_image", ADMIN_OR_MEMBER),
    ("download_image", ADMIN_OR_READER_GET_IMAGE),
    ("deactivate", ADMIN_OR_MEMBER),
    ("reactivate", ADMIN_OR_MEMBER),
    ("add_member", ADMIN_OR_MEMBER),
    ("delete_member", ADMIN_OR_MEMBER),
    ("get_member", ADMIN_OR_READER_OR_SHARED_MEMBER),
    ("get_members", ADMIN_OR_READER_OR_SHARED_MEMBER),
    ("modify_member", "role:admin or (role:member and project_id:%(member_id)s)"),
    ("delete_image_location", ADMIN_OR_MEMBER),
    ("copy_image", "role:admin"),
    ("stores_info_detail", "role:admin"),
    ("cache_list", "role:admin"),
    ("cache_image", "role:admin"),
    ("cache_delete", "role:admin"),
    ("tasks_api_access", "role:admin"),
    ("get_task", "rule:default"),
    ("get_tasks", "rule:default"),
    ("add_task", "rule:default"),
    ("modify_task", "rule:default"),
    // Metadata definitions: everyone reads (visibility still applies), admins write.
    ("metadef_default", "@"),
    ("metadef_admin", "role:admin"),
    ("get_metadef_namespace", "rule:metadef_default"),
    ("get_metadef_namespaces", "rule:metadef_default"),
    ("modify_metadef_namespace", "rule:metadef_admin"),
    ("add_metadef_namespace", "rule:metadef_admin"),
    ("delete_metadef_namespace", "rule:metadef_admin"),
    ("get_metadef_object", "rule:metadef_default"),
    ("get_metadef_objects", "rule:metadef_default"),
    ("modify_metadef_object", "rule:metadef_admin"),
    ("add_metadef_object", "rule:metadef_admin"),
    ("delete_metadef_object", "rule:metadef_admin"),
    ("list_metadef_resource_types", "rule:metadef_default"),
    ("get_metadef_resource_type", "rule:metadef_default"),
    ("add_metadef_resource_type_association", "rule:metadef_admin"),
    ("remove_metadef_resource_type_association", "rule:metadef_admin"),
    ("get_metadef_property", "rule:metadef_default"),
    ("get_metadef_properties", "rule:metadef_default"),
    ("modify_metadef_property", "rule:metadef_admin"),
    ("add_metadef_property", "rule:metadef_admin"),
    ("remove_metadef_property", "rule:metadef_admin"),
    ("get_metadef_tag", "rule:metadef_default"),
    ("get_metadef_tags", "rule:metadef_default"),
    ("modify_metadef_tag", "rule:metadef_admin"),
    ("add_metadef_tag", "rule:metadef_admin"),
    ("add_metadef_tags", "rule:metadef_admin"),
    ("delete_metadef_tag", "rule:metadef_admin"),
    ("delete_metadef_tags", "rule:metadef_admin"),
];

/// Loads the default policy, overridden by `policy_file` (upstream's `policy.yaml`) when given.
pub fn load_policy(policy_file: Option<&Path>) -> Result<Policy, Error> {
    Policy::for_service("image", POLICIES, policy_file).map_err(|e| Error::Config(e.to_string()))
}

/// The image API, to be nested at `/image`. `identity_url` is advertised in 401s.
pub fn router(
    image: Image,
    base_url: &str,
    policy: Policy,
    validator: Arc<dyn TokenValidator>,
    identity_url: &str,
) -> Router {
    let state = AppState { image, base_url: base_url.trim_end_matches('/').into(), policy: Arc::new(policy) };
    let auth = AuthLayerState::new(validator, identity_url);
    let protected = Router::new()
        .merge(discovery::routes())
        .merge(images::routes())
        .merge(data::routes())
        .merge(members::routes())
        .merge(metadefs::routes())
        .merge(tasks::routes())
        .merge(cache::routes())
        .route_layer(axum::middleware::from_fn_with_state(auth, ::auth::require_auth));
    let router = Router::new().merge(discovery::open_routes()).merge(protected).with_state(state);
    api_common::wire::apply(router, WireConfig::new(ErrorStyle::Glance))
}

impl AppState {
    pub(crate) fn caller(&self, ctx: &Context) -> Caller {
        Caller { project_id: ctx.project_id.clone(), is_admin: self.policy.check("context_is_admin", ctx, &json!({})) }
    }

    pub(crate) fn enforce(&self, ctx: &Context, rule: &str, target: &Value) -> Result<(), ApiError> {
        self.policy.enforce(rule, ctx, target)
    }
}

/// The policy target of an image, as Glance builds it: the image's attributes, `project_id` = its owner, and
/// `member_id` = the caller's project when the caller is a member.
pub(crate) fn image_target(img: &ImageRow, member_id: Option<&str>) -> Value {
    let mut t = Map::new();
    for (k, v) in &img.properties {
        t.insert(k.clone(), json!(v));
    }
    t.insert("id".into(), json!(img.id));
    t.insert("project_id".into(), json!(img.owner));
    t.insert("owner".into(), json!(img.owner));
    t.insert("visibility".into(), json!(img.visibility));
    t.insert("protected".into(), json!(img.protected));
    t.insert("member_id".into(), json!(member_id));
    Value::Object(t)
}

/// Loads a visible image and checks `rule` on it: 404 if the caller cannot see it, 403 if policy denies.
pub(crate) async fn authorized_image(
    s: &AppState,
    ctx: &Context,
    id: &str,
    rule: &str,
) -> Result<(Caller, ImageRow), ApiError> {
    let caller = s.caller(ctx);
    let img = s.image.get_visible(&caller, id).await?;
    let membership = s.image.membership(&caller, &img).await?;
    let member_id = membership.and(caller.project_id.as_deref());
    s.enforce(ctx, rule, &image_target(&img, member_id))?;
    Ok((caller, img))
}

pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    api_common::json::parse::<Value>(bytes)
}
