//! Glance's image model on the wire: validation of create bodies and JSON Patch documents, the image and member
//! JSON representations, and list-query parsing. Pure functions over [`ImageRow`]; no I/O.

use std::collections::BTreeMap;

use api_common::query::{QueryPairs, SortDir, parse_bool, parse_sort};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};

use crate::{
    error::Error,
    store::{ImageRow, MemberRow, TaskRow},
};

/// Disk formats Glance accepts by default.
pub const DISK_FORMATS: &[&str] = &["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"];
/// Container formats Glance accepts by default.
pub const CONTAINER_FORMATS: &[&str] = &["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"];
pub const VISIBILITIES: &[&str] = &["public", "private", "shared", "community"];
pub const MEMBER_STATUSES: &[&str] = &["pending", "accepted", "rejected"];
/// Attributes only the service sets.
pub const READ_ONLY: &[&str] = &[
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "created_at",
    "updated_at",
    "status",
    "size",
    "virtual_size",
    "direct_url",
    "self",
    "file",
    "schema",
    "stores",
];
/// Attributes no client may set.
pub const RESERVED: &[&str] = &["location", "deleted", "deleted_at", "locations"];
/// Property namespace the service keeps for itself.
pub const RESERVED_PREFIX: &str = "os_glance";

const MAX_STRING: usize = 255;
const MAX_PROPERTY_VALUE: usize = 65535;

/// Renders a timestamp (Unix microseconds) as Glance does: `2026-11-25T13:02:01Z`.
pub fn format_time(micros: i64) -> String {
    match Utc.timestamp_micros(micros).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => String::new(),
    }
}

/// The image as `GET /v2/images/{id}` shows it.
pub fn image_json(img: &ImageRow) -> Value {
    let mut m = Map::new();
    for (k, v) in &img.properties {
        m.insert(k.clone(), json!(v));
    }
    let base = json!({
        "id": img.id,
        "name": img.name,
        "status": img.status,
        "visibility": img.visibility,
        "protected": img.protected,
        "os_hidden": img.os_hidden,
        "owner": img.owner,
        "disk_format": img.disk_format,
        "container_format": img.container_format,
        "size": img.size,
        "virtual_size": img.virtual_size,
        "checksum": img.checksum,
        "os_hash_algo": img.os_hash_algo,
        "os_hash_value": img.os_hash_value,
        "min_disk": img.min_disk,
        "min_ram": img.min_ram,
        "tags": img.tags,
        "created_at": format_time(img.created_at),
        "updated_at": format_time(img.updated_at),
        "self": format!("/v2/images/{}", img.id),
        "file": format!("/v2/images/{}/file", img.id),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(base) = base {
        m.extend(base);
    }
    if let Some(store) = img.store_id.as_ref().filter(|_| img.status == "active" || img.status == "deactivated") {
        m.insert("stores".into(), json!(store));
    }
    Value::Object(m)
}

pub fn member_json(m: &MemberRow) -> Value {
    json!({
        "image_id": m.image_id,
        "member_id": m.member_id,
        "status": m.status,
        "created_at": format_time(m.created_at),
        "updated_at": format_time(m.updated_at),
        "schema": "/v2/schemas/member",
    })
}

/// A task as `GET /v2/images/{id}/tasks` shows it.
pub fn task_json(t: &TaskRow) -> Value {
    json!({
        "id": t.id,
        "image_id": t.image_id,
        "type": t.kind,
        "status": t.status,
        "owner": t.owner,
        "user_id": t.user_id,
        "request_id": t.request_id,
        "input": serde_json::from_str::<Value>(&t.input).unwrap_or(Value::Null),
        "result": null,
        "message": t.message,
        "created_at": format_time(t.created_at),
        "updated_at": format_time(t.updated_at),
        "expires_at": null,
    })
}

fn invalid(field: &str, value: &Value, why: &str) -> Error {
    Error::BadRequest(format!("Invalid input for field/attribute {field}. Value: {value}. {why}"))
}

fn uuid_like(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn check_writable(key: &str) -> Result<(), Error> {
    if READ_ONLY.contains(&key) {
        return Err(Error::Forbidden(format!("Attribute '{key}' is read-only.")));
    }
    if RESERVED.contains(&key) || key.starts_with(RESERVED_PREFIX) {
        return Err(Error::Forbidden(format!("Attribute '{key}' is reserved.")));
    }
    Ok(())
}

fn opt_string(field: &str, v: &Value) -> Result<Option<String>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.chars().count() <= MAX_STRING => Ok(Some(s.clone())),
        Value::String(_) => Err(invalid(field, v, "The value is longer than 255 characters.")),
        _ => Err(invalid(field, v, &format!("{v} is not of type 'null', 'string'"))),
    }
}

fn enum_of(field: &str, v: &Value, allowed: &[&str], nullable: bool) -> Result<Option<String>, Error> {
    match v {
        Value::Null if nullable => Ok(None),
        Value::String(s) if allowed.contains(&s.as_str()) => Ok(Some(s.clone())),
        _ => Err(invalid(field, v, &format!("{v} is not one of {allowed:?}"))),
    }
}

fn boolean(field: &str, v: &Value) -> Result<bool, Error> {
    v.as_bool().ok_or_else(|| invalid(field, v, &format!("{v} is not of type 'boolean'")))
}

fn non_negative(field: &str, v: &Value) -> Result<i64, Error> {
    match v.as_i64() {
        Some(n) if n >= 0 => Ok(n),
        Some(_) => Err(invalid(field, v, "The value must be 0 or greater.")),
        None => Err(invalid(field, v, &format!("{v} is not of type 'integer'"))),
    }
}

fn tags(v: &Value) -> Result<Vec<String>, Error> {
    let items = v.as_array().ok_or_else(|| invalid("tags", v, &format!("{v} is not of type 'array'")))?;
    let mut out: Vec<String> = Vec::new();
    for item in items {
        match item.as_str() {
            Some(s) if s.chars().count() <= MAX_STRING => {
                if !out.iter().any(|t| t == s) {
                    out.push(s.to_string());
                }
            }
            _ => return Err(invalid("tags", v, "Tags must be strings of at most 255 characters.")),
        }
    }
    out.sort();
    Ok(out)
}

/// Validates a tag given in a path (`PUT /v2/images/{id}/tags/{tag}`).
pub fn check_tag(tag: &str) -> Result<(), Error> {
    if tag.is_empty() || tag.chars().count() > MAX_STRING {
        return Err(Error::BadRequest("Tags must be between 1 and 255 characters long.".into()));
    }
    Ok(())
}

/// Sets one client-writable attribute (base or free-form property) on `img`, validating it as Glance's schema does.
pub fn set_attribute(img: &mut ImageRow, key: &str, value: &Value) -> Result<(), Error> {
    check_writable(key)?;
    match key {
        "id" => return Err(Error::Forbidden("Attribute 'id' is read-only.".into())),
        "name" => img.name = opt_string(key, value)?,
        "visibility" => {
            img.visibility = enum_of(key, value, VISIBILITIES, false)?.unwrap_or_else(|| "shared".into());
        }
        "protected" => img.protected = boolean(key, value)?,
        "os_hidden" => img.os_hidden = boolean(key, value)?,
        "disk_format" => img.disk_format = enum_of(key, value, DISK_FORMATS, true)?,
        "container_format" => img.container_format = enum_of(key, value, CONTAINER_FORMATS, true)?,
        "min_disk" => img.min_disk = non_negative(key, value)?,
        "min_ram" => img.min_ram = non_negative(key, value)?,
        "tags" => img.tags = tags(value)?,
        "owner" => img.owner = opt_string(key, value)?,
        _ => {
            if key.is_empty() || key.chars().count() > MAX_STRING {
                return Err(Error::BadRequest(format!("Invalid property name '{key}'.")));
            }
            match value {
                Value::String(s) if s.len() <= MAX_PROPERTY_VALUE => {
                    img.properties.insert(key.to_string(), s.clone());
                }
                _ => return Err(invalid(key, value, &format!("{value} is not of type 'string'"))),
            }
        }
    }
    Ok(())
}

/// Whether `key` is one of the image's base attributes (which cannot be removed, only replaced).
pub fn is_base_attribute(key: &str) -> bool {
    matches!(
        key,
        "id" | "name"
            | "visibility"
            | "protected"
            | "os_hidden"
            | "disk_format"
            | "container_format"
            | "min_disk"
            | "min_ram"
            | "tags"
            | "owner"
    ) || READ_ONLY.contains(&key)
}

/// A new image from a `POST /v2/images` body; `owner` is the caller's project unless the body names one.
pub fn new_image(body: &Value, owner: Option<String>, now: i64) -> Result<ImageRow, Error> {
    let obj = body.as_object().ok_or_else(|| Error::BadRequest("Body expected in request.".into()))?;
    let mut img = ImageRow {
        id: uuid::Uuid::new_v4().to_string(),
        name: None,
        status: "queued".into(),
        visibility: "shared".into(),
        protected: false,
        os_hidden: false,
        owner,
        disk_format: None,
        container_format: None,
        size: None,
        virtual_size: None,
        checksum: None,
        os_hash_algo: None,
        os_hash_value: None,
        min_disk: 0,
        min_ram: 0,
        store_id: None,
        location: None,
        created_at: now,
        updated_at: now,
        properties: BTreeMap::new(),
        tags: Vec::new(),
    };
    for (key, value) in obj {
        if key == "id" {
            match value.as_str() {
                Some(id) if uuid_like(id) => img.id = id.to_lowercase(),
                _ => return Err(invalid("id", value, "The id must be a UUID.")),
            }
            continue;
        }
        set_attribute(&mut img, key, value)?;
    }
    Ok(img)
}

/// One JSON Patch operation, in either of Glance's media types.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchOp {
    pub op: String,
    /// The path's segments, unescaped (`/a~1b` → `["a/b"]`).
    pub path: Vec<String>,
    pub value: Option<Value>,
}

pub const PATCH_V21: &str = "application/openstack-images-v2.1-json-patch";
pub const PATCH_V20: &str = "application/openstack-images-v2.0-json-patch";

/// Parses a patch document: `[{"op": "replace", "path": "/name", "value": …}]` (v2.1) or
/// `[{"replace": "/name", "value": …}]` (v2.0).
pub fn parse_patch(body: &Value) -> Result<Vec<PatchOp>, Error> {
    let items = body
        .as_array()
        .ok_or_else(|| Error::BadRequest("Request body must be a JSON array of operation objects.".into()))?;
    items
        .iter()
        .map(|item| {
            let obj = item.as_object().ok_or_else(|| Error::BadRequest("Operations must be JSON objects.".into()))?;
            let (op, path) = match (obj.get("op"), obj.get("path")) {
                (Some(op), Some(path)) => (op.as_str(), path.as_str()),
                _ => {
                    let found: Vec<_> =
                        ["add", "replace", "remove"].into_iter().filter(|k| obj.contains_key(*k)).collect();
                    match found.as_slice() {
                        [k] => (Some(*k), obj.get(*k).and_then(Value::as_str)),
                        _ => {
                            return Err(Error::BadRequest(
                                "Operation objects must contain exactly one member named \"add\", \"remove\", or \
                                 \"replace\"."
                                    .into(),
                            ));
                        }
                    }
                }
            };
            let op = op.ok_or_else(|| Error::BadRequest("Operation must be a string.".into()))?;
            if !["add", "replace", "remove"].contains(&op) {
                return Err(Error::BadRequest(format!("Invalid operation: `{op}`.")));
            }
            let path = path.ok_or_else(|| Error::BadRequest("Unable to find `path` in operation.".into()))?;
            let segments: Vec<String> = match path.strip_prefix('/') {
                Some(rest) => rest.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect(),
                None => return Err(Error::BadRequest(format!("Pointer `{path}` does not start with \"/\"."))),
            };
            if segments.iter().any(String::is_empty) {
                return Err(Error::BadRequest(format!("Pointer `{path}` contains adjacent \"/\".")));
            }
            let value = obj.get("value").cloned();
            if op != "remove" && value.is_none() {
                return Err(Error::BadRequest(format!("Operation \"{op}\" requires a member named \"value\".")));
            }
            Ok(PatchOp { op: op.to_string(), path: segments, value })
        })
        .collect()
}

/// Applies patch operations to an image as Glance does. `v20` selects the older media type's stricter `add`.
pub fn apply_patch(img: &mut ImageRow, ops: &[PatchOp], v20: bool) -> Result<(), Error> {
    for op in ops {
        let root = op.path[0].as_str();
        if root == "locations" {
            return Err(Error::Forbidden("It's not allowed to update locations if locations are invisible.".into()));
        }
        if op.path.len() > 1 {
            return Err(Error::BadRequest(format!("Invalid JSON pointer for this resource: '/{}'", op.path.join("/"))));
        }
        check_writable(root)?;
        let value = op.value.clone().unwrap_or(Value::Null);
        match op.op.as_str() {
            "replace" => {
                if is_base_attribute(root) || img.properties.contains_key(root) {
                    set_attribute(img, root, &value)?;
                } else {
                    return Err(Error::Conflict(format!("Property {root} does not exist.")));
                }
            }
            "add" => {
                if v20 && (is_base_attribute(root) || img.properties.contains_key(root)) {
                    return Err(Error::Conflict(format!("Property {root} already present.")));
                }
                set_attribute(img, root, &value)?;
            }
            _ => {
                if is_base_attribute(root) {
                    return Err(Error::Forbidden(format!("Property {root} may not be removed.")));
                }
                if img.properties.remove(root).is_none() {
                    return Err(Error::Conflict(format!("Property {root} does not exist.")));
                }
            }
        }
    }
    Ok(())
}

/// A timestamp filter: `created_at=gte:2026-01-01T00:00:00Z`.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeFilter {
    pub field: &'static str,
    pub op: String,
    pub micros: i64,
}

/// A parsed `GET /v2/images` query.
#[derive(Clone, Debug)]
pub struct ListQuery {
    /// `None`: the default view; `Some("all")` or a visibility.
    pub visibility: Option<String>,
    /// `accepted` by default, or `pending`, `rejected`, `all`.
    pub member_status: String,
    pub tags: Vec<String>,
    pub size_min: Option<i64>,
    pub size_max: Option<i64>,
    pub times: Vec<TimeFilter>,
    /// Equality (or `in:`) filters on any other attribute or property, compared as strings.
    pub equals: Vec<(String, Vec<String>)>,
    pub sort: Vec<(String, SortDir)>,
    pub limit: usize,
    pub marker: Option<String>,
}

pub const DEFAULT_LIMIT: usize = 25;
pub const MAX_LIMIT: usize = 1000;
pub const SORT_KEYS: &[&str] = &[
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "virtual_size",
    "id",
    "created_at",
    "updated_at",
    "min_disk",
    "min_ram",
    "visibility",
    "owner",
];

fn parse_time(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for f in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    None
}

fn parse_int(key: &str, v: &str) -> Result<i64, Error> {
    v.trim().parse().map_err(|_| Error::BadRequest(format!("Invalid value '{v}' for '{key}': expected an integer.")))
}

impl ListQuery {
    pub fn parse(q: &QueryPairs) -> Result<ListQuery, Error> {
        let visibility = match q.get("visibility") {
            None => None,
            Some(v) if v == "all" || VISIBILITIES.contains(&v) => Some(v.to_string()),
            Some(v) => return Err(Error::BadRequest(format!("Invalid visibility value: {v}"))),
        };
        let member_status = match q.get("member_status") {
            None => "accepted".to_string(),
            Some(v) if v == "all" || MEMBER_STATUSES.contains(&v) => v.to_string(),
            Some(v) => return Err(Error::BadRequest(format!("Invalid status value: {v}"))),
        };
        let limit = match q.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => {
                let n = parse_int("limit", v)?;
                if n < 0 {
                    return Err(Error::BadRequest("limit param must be positive".into()));
                }
                usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)
            }
        };
        let sort =
            parse_sort(q, SORT_KEYS, &[("created_at", SortDir::Desc)]).map_err(|e| Error::BadRequest(e.message))?;
        let mut times = Vec::new();
        for field in ["created_at", "updated_at"] {
            for v in q.get_all(field) {
                let (op, value) = v
                    .split_once(':')
                    .filter(|(op, _)| ["gt", "gte", "lt", "lte", "eq", "neq"].contains(op))
                    .unwrap_or(("eq", v));
                let micros =
                    parse_time(value).ok_or_else(|| Error::BadRequest(format!("Invalid time format for {field}.")))?;
                times.push(TimeFilter { field, op: op.to_string(), micros });
            }
        }
        const SPECIAL: &[&str] = &[
            "visibility",
            "member_status",
            "limit",
            "marker",
            "sort",
            "sort_key",
            "sort_dir",
            "tag",
            "size_min",
            "size_max",
            "created_at",
            "updated_at",
        ];
        let mut equals: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in &q.0 {
            if SPECIAL.contains(&k.as_str()) {
                continue;
            }
            let values = match v.strip_prefix("in:") {
                Some(list) => list.split(',').map(|s| s.trim().trim_matches('"').to_string()).collect(),
                None => vec![v.clone()],
            };
            let values = if k == "protected" || k == "os_hidden" {
                values
                    .iter()
                    .map(|x| {
                        parse_bool(x)
                            .map(|b| b.to_string())
                            .ok_or_else(|| Error::BadRequest(format!("Invalid value '{x}' for '{k}'.")))
                    })
                    .collect::<Result<_, _>>()?
            } else {
                values
            };
            equals.retain(|(key, _)| key != k);
            equals.push((k.clone(), values));
        }
        if !equals.iter().any(|(k, _)| k == "os_hidden") {
            equals.push(("os_hidden".into(), vec!["false".into()]));
        }
        Ok(ListQuery {
            visibility,
            member_status,
            tags: q.get_all("tag").map(str::to_string).collect(),
            size_min: q.get("size_min").map(|v| parse_int("size_min", v)).transpose()?,
            size_max: q.get("size_max").map(|v| parse_int("size_max", v)).transpose()?,
            times,
            equals,
            sort,
            limit,
            marker: q.get("marker").filter(|m| !m.is_empty()).map(str::to_string),
        })
    }

    /// Whether `img` passes every attribute filter (visibility is decided by the service).
    pub fn matches(&self, img: &ImageRow) -> bool {
        if !self.tags.iter().all(|t| img.tags.contains(t)) {
            return false;
        }
        if self.size_min.is_some_and(|min| img.size.is_none_or(|s| s < min)) {
            return false;
        }
        if self.size_max.is_some_and(|max| img.size.is_none_or(|s| s > max)) {
            return false;
        }
        for t in &self.times {
            let have = if t.field == "created_at" { img.created_at } else { img.updated_at };
            // Stored with microseconds, shown (and so compared) in whole seconds.
            let have = have.div_euclid(1_000_000) * 1_000_000;
            let ok = match t.op.as_str() {
                "gt" => have > t.micros,
                "gte" => have >= t.micros,
                "lt" => have < t.micros,
                "lte" => have <= t.micros,
                "neq" => have != t.micros,
                _ => have == t.micros,
            };
            if !ok {
                return false;
            }
        }
        if self.equals.is_empty() {
            return true;
        }
        let rendered = image_json(img);
        self.equals.iter().all(|(k, values)| {
            let have = match rendered.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => return false,
                Some(other) => other.to_string(),
            };
            values.contains(&have)
        })
    }
}

/// Orders images by the requested keys, then by `created_at` and `id` (descending) as upstream does.
pub fn sort_images(images: &mut [ImageRow], sort: &[(String, SortDir)]) {
    use std::cmp::Ordering;
    fn key(img: &ImageRow, k: &str) -> (Option<i64>, Option<String>) {
        match k {
            "size" => (img.size, None),
            "virtual_size" => (img.virtual_size, None),
            "min_disk" => (Some(img.min_disk), None),
            "min_ram" => (Some(img.min_ram), None),
            "created_at" => (Some(img.created_at), None),
            "updated_at" => (Some(img.updated_at), None),
            "name" => (None, img.name.clone()),
            "status" => (None, Some(img.status.clone())),
            "container_format" => (None, img.container_format.clone()),
            "disk_format" => (None, img.disk_format.clone()),
            "visibility" => (None, Some(img.visibility.clone())),
            "owner" => (None, img.owner.clone()),
            _ => (None, Some(img.id.clone())),
        }
    }
    let mut keys: Vec<(String, SortDir)> = sort.to_vec();
    for k in ["created_at", "id"] {
        if !keys.iter().any(|(key, _)| key == k) {
            keys.push((k.to_string(), SortDir::Desc));
        }
    }
    images.sort_by(|a, b| {
        for (k, dir) in &keys {
            let ord = key(a, k).cmp(&key(b, k));
            let ord = if *dir == SortDir::Desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ImageRow {
        new_image(&json!({"name": "x"}), Some("p1".into()), 1_700_000_000_000_000).unwrap()
    }

    #[test]
    fn create_validates_like_glance() {
        let img = new_image(
            &json!({"name": "a", "disk_format": "qcow2", "container_format": "bare", "tags": ["b", "a", "b"],
                    "os_distro": "debian", "id": "00000000-1111-2222-3333-444455556666"}),
            Some("p".into()),
            0,
        )
        .unwrap();
        assert_eq!(img.tags, ["a", "b"]);
        assert_eq!(img.properties["os_distro"], "debian");
        assert_eq!(img.visibility, "shared");
        assert_eq!(img.id, "00000000-1111-2222-3333-444455556666");
        let bad = |body: Value| new_image(&body, None, 0).unwrap_err();
        assert!(matches!(bad(json!({"disk_format": "floppy"})), Error::BadRequest(_)));
        assert!(matches!(bad(json!({"container_format": "box"})), Error::BadRequest(_)));
        assert!(matches!(bad(json!({"visibility": "everyone"})), Error::BadRequest(_)));
        assert!(matches!(bad(json!({"min_ram": -1})), Error::BadRequest(_)));
        assert!(matches!(bad(json!({"id": "nope"})), Error::BadRequest(_)));
        assert!(matches!(bad(json!({"extra": 5})), Error::BadRequest(_)));
        assert!(matches!(bad(json!({"status": "active"})), Error::Forbidden(_)));
        assert!(matches!(bad(json!({"os_glance_import_task": "x"})), Error::Forbidden(_)));
        assert!(matches!(bad(json!({"locations": []})), Error::Forbidden(_)));
    }

    #[test]
    fn patch_both_media_types() {
        let ops = parse_patch(&json!([{"op": "replace", "path": "/name", "value": "n"},
                                      {"add": "/foo~1bar", "value": "v"}]))
        .unwrap();
        let mut img = base();
        apply_patch(&mut img, &ops, false).unwrap();
        assert_eq!(img.name.as_deref(), Some("n"));
        assert_eq!(img.properties["foo/bar"], "v");
        let remove = parse_patch(&json!([{"op": "remove", "path": "/foo~1bar"}])).unwrap();
        apply_patch(&mut img, &remove, false).unwrap();
        assert!(img.properties.is_empty());
        assert!(matches!(apply_patch(&mut img, &remove, false), Err(Error::Conflict(_))));
        let ro = parse_patch(&json!([{"op": "replace", "path": "/status", "value": "active"}])).unwrap();
        assert!(matches!(apply_patch(&mut img, &ro, false), Err(Error::Forbidden(_))));
        let rm_base = parse_patch(&json!([{"op": "remove", "path": "/name"}])).unwrap();
        assert!(matches!(apply_patch(&mut img, &rm_base, false), Err(Error::Forbidden(_))));
        let missing = parse_patch(&json!([{"op": "replace", "path": "/nothing", "value": "x"}])).unwrap();
        assert!(matches!(apply_patch(&mut img, &missing, false), Err(Error::Conflict(_))));
        assert!(parse_patch(&json!([{"op": "move", "path": "/name"}])).is_err());
        assert!(parse_patch(&json!([{"op": "add", "path": "/name"}])).is_err());
        assert!(parse_patch(&json!({"op": "add"})).is_err());
    }

    #[test]
    fn list_filters() {
        let q = ListQuery::parse(&QueryPairs::parse(Some(
            "name=in:x,y&size_min=1&created_at=gte:2023-11-14T22:13:20Z&sort=size:asc",
        )))
        .unwrap();
        let mut img = base();
        img.size = Some(5);
        assert!(q.matches(&img));
        img.size = Some(0);
        assert!(!q.matches(&img));
        img.size = Some(5);
        img.os_hidden = true;
        assert!(!q.matches(&img));
        assert!(ListQuery::parse(&QueryPairs::parse(Some("visibility=bogus"))).is_err());
        assert!(ListQuery::parse(&QueryPairs::parse(Some("created_at=gt:yesterday"))).is_err());
        assert!(ListQuery::parse(&QueryPairs::parse(Some("sort_key=color"))).is_err());
    }
}
