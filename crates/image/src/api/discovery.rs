//! Version discovery (`/`, `/versions`), the JSON schemas clients read (`/v2/schemas/*`), and `/v2/info/*`.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use super::AppState;
use crate::model::{CONTAINER_FORMATS, DISK_FORMATS, MEMBER_STATUSES, VISIBILITIES};

/// The newest minor version of the v2 API this service speaks.
const CURRENT: u32 = 16;

pub(super) fn open_routes() -> Router<AppState> {
    Router::new()
        .route("/", get(versions_multiple))
        .route("/versions", get(versions))
        .route("/v2", get(versions_multiple))
        .route("/v2/", get(versions_multiple))
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/schemas/image", get(|| async { Json(image_schema()) }))
        .route("/v2/schemas/images", get(|| async { Json(images_schema()) }))
        .route("/v2/schemas/member", get(|| async { Json(member_schema()) }))
        .route("/v2/schemas/members", get(|| async { Json(members_schema()) }))
        .route("/v2/info/import", get(info_import))
        .route("/v2/info/stores", get(info_stores))
        .route("/v2/info/stores/detail", get(info_stores_detail))
}

fn version_list(s: &AppState) -> Value {
    let href = format!("{}/v2/", s.base_url);
    let versions: Vec<Value> = (0..=CURRENT)
        .rev()
        .map(|minor| {
            json!({
                "id": format!("v2.{minor}"),
                "status": if minor == CURRENT { "CURRENT" } else { "SUPPORTED" },
                "links": [{"rel": "self", "href": href}],
            })
        })
        .collect();
    json!({"versions": versions})
}

/// Glance answers its root with 300 Multiple Choices.
async fn versions_multiple(State(s): State<AppState>) -> Response {
    (StatusCode::MULTIPLE_CHOICES, Json(version_list(&s))).into_response()
}

async fn versions(State(s): State<AppState>) -> Json<Value> {
    Json(version_list(&s))
}

async fn info_import(State(s): State<AppState>) -> Json<Value> {
    Json(json!({"import-methods": {
        "description": "Import methods available.",
        "type": "array",
        "value": s.image.import_methods(),
    }}))
}

/// The enabled stores, the default one marked `default: true`; with `detail`, their type and properties too.
fn store_list(s: &AppState, detail: bool) -> Value {
    let default = s.image.default_store();
    let stores: Vec<Value> = s
        .image
        .adapters()
        .iter()
        .map(|a| {
            let mut v = json!({"id": a.id(), "description": a.description()});
            if a.id() == default {
                v["default"] = json!(true);
            }
            if a.read_only() {
                v["read-only"] = json!("true");
            }
            if detail {
                v["type"] = json!(a.store_type());
                v["properties"] = a.properties();
            }
            v
        })
        .collect();
    json!({"stores": stores})
}

async fn info_stores(State(s): State<AppState>) -> Json<Value> {
    Json(store_list(&s, false))
}

/// `GET /v2/info/stores/detail` (Image API 2.15): admins only.
async fn info_stores_detail(
    State(s): State<AppState>,
    ctx: ::auth::Context,
) -> Result<Json<Value>, api_common::ApiError> {
    s.enforce(&ctx, "stores_info_detail", &json!({}))?;
    Ok(Json(store_list(&s, true)))
}

fn nullable_enum(values: &[&str]) -> Value {
    let mut all = vec![Value::Null];
    all.extend(values.iter().map(|v| json!(v)));
    json!(all)
}

const UUID_PATTERN: &str = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$";

/// The image schema: base attributes with their types; any other property is a string.
pub fn image_schema() -> Value {
    let ro = |description: &str, ty: Value| json!({"description": description, "readOnly": true, "type": ty});
    json!({
        "name": "image",
        "additionalProperties": {"type": "string"},
        "links": [
            {"href": "{self}", "rel": "self"},
            {"href": "{file}", "rel": "enclosure"},
            {"href": "{schema}", "rel": "describedby"},
        ],
        "properties": {
            "id": {"description": "An identifier for the image", "pattern": UUID_PATTERN, "type": "string"},
            "name": {"description": "Descriptive name for the image", "maxLength": 255, "type": ["null", "string"]},
            "status": {"description": "Status of the image", "readOnly": true, "type": "string",
                "enum": ["queued", "saving", "active", "killed", "deleted", "pending_delete", "deactivated",
                         "uploading", "importing"]},
            "visibility": {"description": "Scope of image accessibility", "type": "string", "enum": VISIBILITIES},
            "protected": {"description": "If true, image will not be deletable.", "type": "boolean"},
            "os_hidden": {"description": "If true, image will not appear in default image list response.",
                          "type": "boolean"},
            "checksum": {"description": "md5 hash of image contents.", "maxLength": 32, "readOnly": true,
                         "type": ["null", "string"]},
            "os_hash_algo": {"description": "Algorithm to calculate the os_hash_value", "maxLength": 64,
                             "readOnly": true, "type": ["null", "string"]},
            "os_hash_value": {"description": "Hexdigest of the image contents using the algorithm specified by \
                              the os_hash_algo", "maxLength": 128, "readOnly": true, "type": ["null", "string"]},
            "owner": {"description": "Owner of the image", "maxLength": 255, "type": ["null", "string"]},
            "size": ro("Size of image file in bytes", json!(["null", "integer"])),
            "virtual_size": ro("Virtual size of image in bytes", json!(["null", "integer"])),
            "container_format": {"description": "Format of the container", "type": ["null", "string"],
                                 "enum": nullable_enum(CONTAINER_FORMATS)},
            "disk_format": {"description": "Format of the disk", "type": ["null", "string"],
                            "enum": nullable_enum(DISK_FORMATS)},
            "created_at": ro("Date and time of image registration", json!("string")),
            "updated_at": ro("Date and time of the last image modification", json!("string")),
            "tags": {"description": "List of strings related to the image", "type": "array",
                     "items": {"type": "string", "maxLength": 255}},
            "direct_url": ro("URL to access the image file kept in external store", json!("string")),
            "min_ram": {"description": "Amount of ram (in MB) required to boot image.", "type": "integer"},
            "min_disk": {"description": "Amount of disk space (in GB) required to boot image.", "type": "integer"},
            "self": ro("An image self url", json!("string")),
            "file": ro("An image file url", json!("string")),
            "stores": ro("Store in which image data resides.  Only present when the operator has enabled \
                          multiple stores.  May be a comma-separated list of store identifiers.", json!("string")),
            "schema": ro("An image schema url", json!("string")),
            "locations": {"description": "A set of URLs to access the image file kept in external store",
                          "type": "array", "items": {"type": "object", "required": ["url", "metadata"],
                          "properties": {"url": {"type": "string", "maxLength": 255},
                                         "metadata": {"type": "object"}}}},
            "kernel_id": {"description": "ID of image stored in Glance that should be used as the kernel when \
                          booting an AMI-style image.", "pattern": UUID_PATTERN, "type": ["null", "string"],
                          "is_base": false},
            "ramdisk_id": {"description": "ID of image stored in Glance that should be used as the ramdisk when \
                           booting an AMI-style image.", "pattern": UUID_PATTERN, "type": ["null", "string"],
                           "is_base": false},
            "instance_uuid": {"description": "Metadata which can be used to record which instance this image is \
                              associated with.", "type": "string", "is_base": false},
            "architecture": {"description": "Operating system architecture", "type": "string", "is_base": false},
            "os_distro": {"description": "Common name of operating system distribution", "type": "string",
                          "is_base": false},
            "os_version": {"description": "Operating system version as specified by the distributor",
                           "type": "string", "is_base": false},
        },
    })
}

pub fn images_schema() -> Value {
    json!({
        "name": "images",
        "links": [
            {"href": "{first}", "rel": "first"},
            {"href": "{next}", "rel": "next"},
            {"href": "{schema}", "rel": "describedby"},
        ],
        "properties": {
            "first": {"type": "string"},
            "images": {"type": "array", "items": image_schema()},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
    })
}

pub fn member_schema() -> Value {
    json!({
        "name": "member",
        "properties": {
            "created_at": {"description": "Date and time of image member creation", "type": "string"},
            "image_id": {"description": "An identifier for the image", "pattern": UUID_PATTERN, "type": "string"},
            "member_id": {"description": "An identifier for the image member (tenantId)", "type": "string"},
            "schema": {"readOnly": true, "type": "string"},
            "status": {"description": "The status of this image member", "enum": MEMBER_STATUSES, "type": "string"},
            "updated_at": {"description": "Date and time of last modification of image member", "type": "string"},
        },
    })
}

pub fn members_schema() -> Value {
    json!({
        "name": "members",
        "links": [{"href": "{schema}", "rel": "describedby"}],
        "properties": {
            "members": {"type": "array", "items": member_schema()},
            "schema": {"type": "string"},
        },
    })
}
