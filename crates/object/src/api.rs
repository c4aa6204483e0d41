//! The Swift proxy API under `/object-store`: `GET /info` and `GET /healthcheck` (no token) and
//! `/v1/{account}[/{container}[/{object}]]` (also with a trailing slash) with Keystone tokens. Project members own
//! `AUTH_<project_id>` (readers read it), `admin` and `ResellerAdmin` reach every account; container ACLs
//! ([`crate::acl`]) share containers with other identities and, by referrer, with anonymous callers, so requests
//! without a token reach the ACL check; anyone else gets 403 (401 when anonymous). Errors are Swift's short HTML
//! bodies; every response carries Swift's `X-Trans-Id` (`tx…-<time>`) and `X-Openstack-Request-Id`.

mod bulk;
mod cors;
mod formpost;
mod staticweb;
mod tempurl;

use std::sync::Arc;

use ::auth::{AuthLayerState, Context, TokenValidator};
use api_common::{ApiError, ErrorStyle, WireConfig};
use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, OriginalUri, Path, Query, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use chrono::{DateTime, TimeZone as _, Utc};
use futures::StreamExt as _;
use md5::{Digest as _, Md5};
use serde_json::{Value, json};

use crate::{
    acl::{self, Decision},
    error::Error,
    large::{self, percent_decode},
    ring::hex,
    server::{ByteRange, ByteStream},
    service::{Entry, ListQuery, ObjectStore, PutRequest, limits, x_timestamp},
    store::{ContainerRow, DELETE_AT_KEY, Metadata, ObjectRow},
};

#[derive(Clone)]
struct AppState {
    store: ObjectStore,
}

/// The object-store API, to be nested at `/object-store`. `identity_url` is advertised in 401s.
pub fn router(store: ObjectStore, validator: Arc<dyn TokenValidator>, identity_url: &str) -> Router {
    let auth = AuthLayerState::new(validator, identity_url);
    let www_authenticate = HeaderValue::from_str(&format!("Keystone uri=\"{identity_url}\""))
        .unwrap_or(HeaderValue::from_static("Keystone"));
    let storage = Router::new()
        .route("/v1/{account}", any(account))
        .route("/v1/{account}/", any(account))
        .route("/v1/{account}/{container}", any(container))
        .route("/v1/{account}/{container}/", any(container))
        .route("/v1/{account}/{container}/{*object}", any(object))
        .layer(DefaultBodyLimit::disable())
        .route_layer(axum::middleware::from_fn_with_state(auth, ::auth::optional_auth))
        .layer(axum::middleware::map_request(ignore_token_of_signed_requests))
        .layer(axum::middleware::from_fn_with_state(AppState { store: store.clone() }, cors::layer));
    let router = Router::new()
        .route("/info", get(info))
        .route("/healthcheck", get(healthcheck))
        .route("/crossdomain.xml", get(staticweb::crossdomain)).merge(storage).with_state(AppState { store });
    api_common::wire::apply(router, WireConfig::new(ErrorStyle::Swift))
        .layer(axum::middleware::map_response(trans_id))
        .layer(axum::middleware::map_response(move |resp: Response| {
            let value = www_authenticate.clone();
            async move { with_www_authenticate(resp, value) }
        }))
}

/// Temporary URLs and form posts authorize themselves by their signature, whatever token comes along (Swift's
/// middlewares run before authentication): the token is not even validated.
async fn ignore_token_of_signed_requests(mut req: Request) -> Request {
    let signed_url = req.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("temp_url_sig=")));
    if signed_url || formpost::boundary(req.method(), req.headers()).is_some() {
        req.headers_mut().remove(::auth::AUTH_TOKEN_HEADER);
    }
    req
}

/// Where this API is mounted (`/object-store`), from the path clients used and the path it routes on.
fn mount_of(original: &Uri, uri: &Uri) -> String {
    original.path().strip_suffix(uri.path()).unwrap_or_default().to_string()
}

/// Every 401 names where to authenticate, as Keystone's auth_token middleware adds it to Swift's.
fn with_www_authenticate(mut resp: Response, value: HeaderValue) -> Response {
    if resp.status() == StatusCode::UNAUTHORIZED && !resp.headers().contains_key(header::WWW_AUTHENTICATE) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    resp
}

/// Adds Swift's `X-Trans-Id` (`tx` + 21 hex digits + `-` + the time as 10 hex digits), derived from the request id
/// the wire layer chose, so that both headers name the same request.
async fn trans_id(mut resp: Response) -> Response {
    let hex: String = resp
        .headers()
        .get(api_common::wire::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|id| id.chars().filter(char::is_ascii_hexdigit).map(|c| c.to_ascii_lowercase()).collect())
        .unwrap_or_default();
    let hex = if hex.len() >= 21 { hex[hex.len() - 21..].to_string() } else { uuid::Uuid::new_v4().simple().to_string()[..21].to_string() };
    let id = format!("tx{hex}-{:010x}", Utc::now().timestamp());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HeaderName::from_static("x-trans-id"), v);
    }
    resp
}

/// Swift's healthcheck middleware: `200 OK` while the proxy serves.
async fn healthcheck() -> Response {
    let mut r = Body::from("OK").into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

async fn info(State(s): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({
        "swift": {
            "version": "2.35.0",
            "max_file_size": limits::MAX_FILE_SIZE,
            "max_meta_name_length": limits::MAX_META_NAME_LENGTH,
            "max_meta_value_length": limits::MAX_META_VALUE_LENGTH,
            "max_meta_count": limits::MAX_META_COUNT,
            "max_meta_overall_size": limits::MAX_META_OVERALL_SIZE,
            "max_header_size": 8192,
            "max_object_name_length": limits::MAX_OBJECT_NAME_LENGTH,
            "max_container_name_length": limits::MAX_CONTAINER_NAME_LENGTH,
            "max_account_name_length": limits::MAX_ACCOUNT_NAME_LENGTH,
            "container_listing_limit": limits::LISTING_LIMIT,
            "account_listing_limit": limits::LISTING_LIMIT,
            "extra_header_count": 0,
            "strict_cors_mode": true,
            "allow_account_management": false,
            "account_autocreate": true,
            "policies": s.store.policies().info(),
        },
        "account_quotas": {},
        "container_quotas": {},
        "bulk_delete": bulk::delete_info(),
        "bulk_upload": bulk::upload_info(),
        "slo": large::slo_info(),
        "versioned_writes": {"allowed_flags": ["x-versions-location", "x-history-location"]},
        "tempurl": tempurl::info(),
        "formpost": formpost::info(),
        "staticweb": {},
        "crossdomain": {},
    }))
}

/// Who is asking: the token's context (none when anonymous) and the `Referer` referrer ACLs look at.
struct Caller {
    ctx: Option<Context>,
    referer: Option<String>,
}

impl Caller {
    fn new(ctx: Option<Context>, headers: &HeaderMap) -> Caller {
        Caller { ctx, referer: header_str(headers, "referer").map(str::to_string) }
    }

    /// 401 for an anonymous caller, 403 for an authenticated one.
    fn denied(&self) -> Error {
        match self.ctx {
            None => Error::Unauthorized("This server could not verify that you are authorized to access the document you requested.".into()),
            Some(_) => Error::Forbidden("Access was denied to this resource.".into()),
        }
    }

    /// Account requests and container changes: operators of the account only.
    fn owner(&self, account: &str, write: bool) -> Result<(), Error> {
        match acl::decide(self.ctx.as_ref(), account, write, None, false, None) {
            Decision::Owner => Ok(()),
            _ => Err(self.denied()),
        }
    }

    /// A request on a container (`object` false: its listing or metadata) or on an object in it: operators, or
    /// whoever the container's read (`write` false) or write ACL lets in.
    async fn container_access(
        &self,
        store: &ObjectStore,
        account: &str,
        container: &str,
        write: bool,
        object: bool,
    ) -> Result<Decision, Error> {
        Ok(self.container_access_read(store, account, container, write, object).await?.0)
    }

    /// [`Caller::container_access`], with the container's row when deciding needed it (not for operators).
    async fn container_access_read(
        &self,
        store: &ObjectStore,
        account: &str,
        container: &str,
        write: bool,
        object: bool,
    ) -> Result<(Decision, Option<ContainerRow>), Error> {
        if let Some(ctx) = &self.ctx
            && acl::is_owner(ctx, account, write)
        {
            return Ok((Decision::Owner, None));
        }
        let row = match store.container(account, container).await {
            Ok(row) => row,
            Err(Error::NotFound(_)) => return Err(self.denied()),
            Err(e) => return Err(e),
        };
        let decision = self.access_to(account, &row, write, object)?;
        Ok((decision, Some(row)))
    }

    /// The decision on a container already read.
    fn access_to(&self, account: &str, row: &ContainerRow, write: bool, object: bool) -> Result<Decision, Error> {
        let key = if write { ACL_WRITE } else { ACL_READ };
        let acl = row.metadata.get(key).map(String::as_str);
        match acl::decide(self.ctx.as_ref(), account, write, acl, object, self.referer.as_deref()) {
            Decision::Denied => Err(self.denied()),
            d => Ok(d),
        }
    }
}

/// Where a container keeps its ACLs: with its metadata, as headers it answers with (to operators only).
const ACL_READ: &str = "header:x-container-read";
const ACL_WRITE: &str = "header:x-container-write";

/// Headers only operators of an account see (Swift's `swift_owner_headers`).
const OWNER_HEADERS: &[&str] = &[
    "x-container-read",
    "x-container-write",
    "x-container-sync-key",
    "x-container-sync-to",
    "x-account-meta-temp-url-key",
    "x-account-meta-temp-url-key-2",
    "x-container-meta-temp-url-key",
    "x-container-meta-temp-url-key-2",
    "x-account-access-control",
];

fn strip_owner_headers(resp: &mut Response) {
    for h in OWNER_HEADERS {
        resp.headers_mut().remove(*h);
    }
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

// ---- helpers: headers

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `X-<kind>-Meta-K: v` and `X-Remove-<kind>-Meta-K` as (k, v) updates, `v` empty for removal.
fn meta_updates(h: &HeaderMap, kind: &str) -> Vec<(String, String)> {
    let set = format!("x-{kind}-meta-");
    let remove = format!("x-remove-{kind}-meta-");
    let mut out = Vec::new();
    for (name, value) in h {
        let n = name.as_str();
        let v = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
        if let Some(k) = n.strip_prefix(&set) {
            out.push((k.to_string(), v));
        } else if let Some(k) = n.strip_prefix(&remove) {
            out.push((k.to_string(), String::new()));
        }
    }
    out
}

/// Swift's account_quotas: only resellers (`ResellerAdmin`, or `admin` here) set or remove an account's byte quota,
/// a non-negative integer.
fn check_account_quota_change(caller: &Caller, h: &HeaderMap) -> Result<(), Error> {
    let set = header_str(h, "x-account-meta-quota-bytes");
    if set.is_none() && !h.contains_key("x-remove-account-meta-quota-bytes") {
        return Ok(());
    }
    let reseller = caller.ctx.as_ref().is_some_and(|c| c.has_role("ResellerAdmin") || c.has_role("admin"));
    if !reseller {
        return Err(Error::Forbidden("Only a reseller may change an account's quota.".into()));
    }
    match set.map(str::trim) {
        Some(v) if !v.is_empty() && !v.bytes().all(|b| b.is_ascii_digit()) => {
            Err(Error::BadRequest("Invalid quota value.".into()))
        }
        _ => Ok(()),
    }
}

/// Swift's container_quotas: quota values are non-negative integers.
fn check_container_quotas(h: &HeaderMap) -> Result<(), Error> {
    for (name, what) in [("x-container-meta-quota-bytes", "bytes"), ("x-container-meta-quota-count", "count")] {
        if let Some(v) = header_str(h, name).map(str::trim)
            && !v.is_empty()
            && !v.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Error::BadRequest(format!("Invalid {what} quota.")));
        }
    }
    Ok(())
}

/// `X-Versions-Location` or `X-History-Location` (one at most; setting one drops the other; blank or
/// `X-Remove-…` removes it), as container metadata updates.
fn versioning_updates(h: &HeaderMap) -> Result<Vec<(String, String)>, Error> {
    use crate::versions::{HISTORY_LOCATION, VERSIONS_LOCATION, check_location};
    let value = |n: &str| header_str(h, n).map(|v| percent_decode(v.trim()));
    let (versions, history) = (value("x-versions-location"), value("x-history-location"));
    let mut out = Vec::new();
    for (name, key) in [("x-remove-versions-location", VERSIONS_LOCATION), ("x-remove-history-location", HISTORY_LOCATION)] {
        if h.contains_key(name) {
            out.push((key.to_string(), String::new()));
        }
    }
    match (versions.filter(|v| !v.is_empty()), history.filter(|v| !v.is_empty())) {
        (Some(_), Some(_)) => {
            return Err(Error::BadRequest(
                "Only one of X-Versions-Location or X-History-Location may be specified".into(),
            ));
        }
        (Some(v), None) => {
            check_location(&v)?;
            out.push((VERSIONS_LOCATION.into(), v));
            out.push((HISTORY_LOCATION.into(), String::new()));
        }
        (None, Some(v)) => {
            check_location(&v)?;
            out.push((HISTORY_LOCATION.into(), v));
            out.push((VERSIONS_LOCATION.into(), String::new()));
        }
        (None, None) => {
            for (n, key) in [("x-versions-location", VERSIONS_LOCATION), ("x-history-location", HISTORY_LOCATION)] {
                if h.contains_key(n) {
                    out.push((key.into(), String::new()));
                }
            }
        }
    }
    Ok(out)
}

/// A container PUT's or POST's metadata updates: `X-Container-Meta-*` and the ACL headers (cleaned; a blank value or
/// `X-Remove-Container-Read`/`-Write` removes one), as (key, value) pairs, an empty value for removal.
fn container_updates(h: &HeaderMap) -> Result<Vec<(String, String)>, Error> {
    check_container_quotas(h)?;
    let mut out = meta_updates(h, "container");
    out.extend(versioning_updates(h)?);
    for (name, key) in [("x-container-read", ACL_READ), ("x-container-write", ACL_WRITE)] {
        if h.contains_key(format!("x-remove-{}", &name[2..]).as_str()) {
            out.push((key.to_string(), String::new()));
        }
        if let Some(value) = h.get(name) {
            let value = String::from_utf8_lossy(value.as_bytes());
            let cleaned = acl::clean_acl(name, &value).map_err(Error::BadRequest)?;
            out.push((key.to_string(), cleaned));
        }
    }
    Ok(out)
}

/// The object headers other than `X-Object-Meta-*` that Swift stores with an object and returns on GET/HEAD. They
/// are kept in its metadata under `header:<name>` (no user key has a `:`, a header name cannot hold one).
const STORED_HEADERS: &[&str] = &[
    "content-disposition",
    "content-encoding",
    "x-object-manifest",
    "cache-control",
    "content-language",
    "expires",
    "x-robots-tag",
];
const STORED_HEADER_KEY: &str = "header:";

/// An object's metadata as a PUT, POST or COPY sets it: every `X-Object-Meta-*`, blank values included (Swift keeps
/// them), the [`STORED_HEADERS`] and the expiry (`X-Delete-At`, or `X-Delete-After` seconds from now, kept as
/// `header:x-delete-at`); `X-Remove-Object-Meta-*` simply leaves a key out, since the request replaces the whole set.
fn object_metadata(h: &HeaderMap) -> Result<Metadata, Error> {
    let now = Utc::now().timestamp();
    let delete_at = match (header_str(h, "x-delete-at"), header_str(h, "x-delete-after")) {
        (Some(at), _) => {
            let at: i64 = at.trim().parse().map_err(|_| Error::BadRequest("Non-integer X-Delete-At".into()))?;
            if at <= now {
                return Err(Error::BadRequest("X-Delete-At in past".into()));
            }
            Some(at)
        }
        (None, Some(after)) => {
            let after: i64 = after.trim().parse().map_err(|_| Error::BadRequest("Non-integer X-Delete-After".into()))?;
            if after < 0 {
                return Err(Error::BadRequest("X-Delete-After in past".into()));
            }
            Some(now + after)
        }
        (None, None) => None,
    };
    let mut m: Metadata = h
        .iter()
        .filter_map(|(name, value)| {
            let n = name.as_str();
            let key = match n.strip_prefix("x-object-meta-") {
                Some(k) => k.to_string(),
                None if STORED_HEADERS.contains(&n) => format!("{STORED_HEADER_KEY}{n}"),
                None => return None,
            };
            Some((key, String::from_utf8_lossy(value.as_bytes()).trim().to_string()))
        })
        .collect();
    if let Some(at) = delete_at {
        m.insert(DELETE_AT_KEY.into(), at.to_string());
    }
    if let Some(manifest) = m.get(large::DLO) {
        large::check_dlo_manifest(manifest)?;
    }
    Ok(m)
}

/// Whether the object's `X-Delete-At` has come: it is then gone for readers at once.
fn expired(row: &ObjectRow) -> bool {
    row.metadata
        .get(DELETE_AT_KEY)
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|at| at <= Utc::now().timestamp())
}

fn is_true(v: Option<&str>) -> bool {
    v.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on" | "t" | "y"))
}

fn http_date(micros: i64) -> String {
    // Swift rounds up to whole seconds.
    let secs = (micros + 999_999).div_euclid(1_000_000);
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default().format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn parse_http_date(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc2822(s.trim()).ok().map(|d| d.timestamp())
}

fn put_header(resp: &mut Response, name: &str, value: impl AsRef<str>) {
    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.as_ref())) {
        resp.headers_mut().insert(n, v);
    }
}

/// Metadata the service keeps for itself (an SLO's size and ETag), never shown.
const SYSMETA_KEY: &str = "sysmeta:";

fn with_meta(resp: &mut Response, kind: &str, m: &Metadata) {
    for (k, v) in m.iter().filter(|(k, _)| !k.starts_with(SYSMETA_KEY)) {
        match k.strip_prefix(STORED_HEADER_KEY) {
            Some(h) => put_header(resp, h, v),
            None => put_header(resp, &format!("x-{kind}-meta-{k}"), v),
        }
    }
}

fn status(code: StatusCode) -> Response {
    let mut r = Body::empty().into_response();
    *r.status_mut() = code;
    if code != StatusCode::NOT_MODIFIED {
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=UTF-8"));
    }
    r
}

// ---- listings

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Plain,
    Json,
    Xml,
}

fn listing_query(q: &std::collections::HashMap<String, String>) -> Result<(ListQuery, Format), Error> {
    let limit = match q.get("limit") {
        Some(l) => {
            let n: i64 = l.parse().map_err(|_| Error::PreconditionFailed("Value of limit must be a positive integer".into()))?;
            if n < 0 {
                return Err(Error::PreconditionFailed("Value of limit must be a positive integer".into()));
            }
            if n as usize > limits::LISTING_LIMIT {
                return Err(Error::PreconditionFailed(format!("Maximum limit is {}", limits::LISTING_LIMIT)));
            }
            n as usize
        }
        None => limits::LISTING_LIMIT,
    };
    let reverse = is_true(q.get("reverse").map(String::as_str));
    let format = match q.get("format").map(String::as_str) {
        Some("json") => Format::Json,
        Some("xml") => Format::Xml,
        _ => Format::Plain,
    };
    Ok((
        ListQuery {
            prefix: q.get("prefix").cloned().unwrap_or_default(),
            delimiter: q.get("delimiter").cloned(),
            marker: q.get("marker").cloned(),
            end_marker: q.get("end_marker").cloned().filter(|m| !m.is_empty()),
            limit,
            reverse,
        },
        format,
    ))
}

fn format_from_accept(format: Format, q: &std::collections::HashMap<String, String>, h: &HeaderMap) -> Format {
    if q.contains_key("format") {
        return format;
    }
    match header_str(h, "accept") {
        Some(a) if a.contains("application/json") => Format::Json,
        Some(a) if a.contains("application/xml") || a.contains("text/xml") => Format::Xml,
        _ => Format::Plain,
    }
}

pub(crate) fn iso(micros: i64) -> String {
    Utc.timestamp_micros(micros).single().unwrap_or_default().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The size a listing shows: an SLO's is its assembled size, not its manifest's.
fn listed_size(o: &ObjectRow) -> i64 {
    o.metadata.get(large::SLO_SIZE).and_then(|v| v.parse().ok()).unwrap_or(o.size)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn listing_response<T>(
    format: Format,
    root: (&str, &str),
    entries: &[Entry<T>],
    name: impl Fn(&T) -> &str,
    to_json: impl Fn(&T) -> Value,
    to_xml: impl Fn(&T) -> String,
) -> Response {
    let (body, ct) = match format {
        Format::Json => {
            let items: Vec<Value> = entries
                .iter()
                .map(|e| match e {
                    Entry::Item(t) => to_json(t),
                    Entry::Subdir(s) => json!({"subdir": s}),
                })
                .collect();
            (Value::Array(items).to_string(), "application/json; charset=utf-8")
        }
        Format::Xml => {
            let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{} name=\"{}\">", root.0, xml_escape(root.1));
            for e in entries {
                match e {
                    Entry::Item(t) => s.push_str(&to_xml(t)),
                    Entry::Subdir(d) => s.push_str(&format!("<subdir name=\"{0}\"><name>{0}</name></subdir>", xml_escape(d))),
                }
            }
            s.push_str(&format!("</{}>", root.0));
            (s, "application/xml; charset=utf-8")
        }
        Format::Plain => {
            if entries.is_empty() {
                return status(StatusCode::NO_CONTENT);
            }
            let mut s = String::new();
            for e in entries {
                match e {
                    Entry::Item(t) => s.push_str(name(t)),
                    Entry::Subdir(d) => s.push_str(d),
                }
                s.push('\n');
            }
            (s, "text/plain; charset=utf-8")
        }
    };
    let mut r = Body::from(body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

// ---- accounts

async fn account(
    State(s): State<AppState>,
    ctx: Option<Context>,
    method: Method,
    Path(account): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = Caller::new(ctx, &headers);
    if q.contains_key("bulk-delete") && matches!(method, Method::POST | Method::DELETE) {
        return Ok(bulk::delete(&s.store, &caller, &account, &headers, body).await);
    }
    if method == Method::PUT
        && let Some(format) = q.get("extract-archive")
    {
        return Ok(bulk::extract(&s.store, &caller, &account, "", format, &headers, body).await);
    }
    caller.owner(&account, !is_read(&method))?;
    match method {
        Method::GET | Method::HEAD => {
            let (row, by_policy) = s.store.account(&account).await?;
            let (containers, objects, bytes) =
                by_policy.iter().fold((0, 0, 0), |(c, o, b), (_, pc, po, pb)| (c + pc, o + po, b + pb));
            let mut resp = if method == Method::GET {
                let (lq, f) = listing_query(&q)?;
                let f = format_from_accept(f, &q, &headers);
                let entries = s.store.list_containers(&account, &lq).await?;
                listing_response(
                    f,
                    ("account", &account),
                    &entries,
                    |c| &c.name,
                    |c| json!({"name": c.name, "count": c.object_count, "bytes": c.bytes_used, "last_modified": iso(c.updated_at)}),
                    |c| format!(
                        "<container><name>{}</name><count>{}</count><bytes>{}</bytes><last_modified>{}</last_modified></container>",
                        xml_escape(&c.name), c.object_count, c.bytes_used, iso(c.updated_at)
                    ),
                )
            } else {
                status(StatusCode::NO_CONTENT)
            };
            put_header(&mut resp, "x-account-container-count", containers.to_string());
            put_header(&mut resp, "x-account-object-count", objects.to_string());
            put_header(&mut resp, "x-account-bytes-used", bytes.to_string());
            let created = row.as_ref().map(|r| r.created_at).unwrap_or_else(crate::service::now_micros);
            put_header(&mut resp, "x-timestamp", x_timestamp(created));
            put_header(&mut resp, "x-put-timestamp", x_timestamp(created));
            for (index, containers, objects, bytes) in by_policy {
                let Some(p) = s.store.policies().by_index(index) else { continue };
                let prefix = format!("x-account-storage-policy-{}", p.name.to_ascii_lowercase());
                put_header(&mut resp, &format!("{prefix}-container-count"), containers.to_string());
                put_header(&mut resp, &format!("{prefix}-object-count"), objects.to_string());
                put_header(&mut resp, &format!("{prefix}-bytes-used"), bytes.to_string());
            }
            if let Some(r) = &row {
                with_meta(&mut resp, "account", &r.metadata);
            }
            Ok(resp)
        }
        Method::POST => {
            check_account_quota_change(&caller, &headers)?;
            s.store.update_account_metadata(&account, &meta_updates(&headers, "account")).await?;
            Ok(status(StatusCode::NO_CONTENT))
        }
        _ => Err(Error::MethodNotAllowed.into()),
    }
}

// ---- containers

#[allow(clippy::too_many_arguments)]
async fn container(
    State(s): State<AppState>,
    ctx: Option<Context>,
    method: Method,
    Path((account, container)): Path<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(boundary) = formpost::boundary(&method, &headers) {
        let path = percent_decode(uri.path());
        let target = formpost::Target {
            account: &account,
            container: &container,
            prefix: "",
            paths: signed_paths(&mount_of(&original, &uri), &path),
        };
        return Ok(formpost::handle(&s.store, target, boundary, body).await);
    }
    let caller = Caller::new(ctx, &headers);
    if method == Method::PUT
        && let Some(format) = q.get("extract-archive")
    {
        return Ok(bulk::extract(&s.store, &caller, &account, &container, format, &headers, body).await);
    }
    if matches!(method, Method::GET | Method::HEAD)
        && staticweb::web_mode(caller.ctx.is_none(), &headers)
        && let Ok(row) = s.store.container(&account, &container).await
    {
        let site = staticweb::Site::of(&row.metadata);
        if site.enabled() {
            caller.access_to(&account, &row, false, true)?;
            if !original.path().ends_with('/') {
                return Ok(staticweb::redirect_to_dir(original.path()));
            }
            return Ok(web_dir(&s, &caller, &method, (&account, &container), "", original.path(), &site, &headers).await?);
        }
        if is_true(header_str(&headers, "x-web-mode")) {
            return Err(Error::NotFound("Not Found".into()).into());
        }
    }
    let access = if is_read(&method) {
        caller.container_access(&s.store, &account, &container, false, false).await?
    } else {
        caller.owner(&account, true)?;
        Decision::Owner
    };
    match method {
        Method::PUT => {
            let policy = header_str(&headers, "x-storage-policy");
            let created = s.store.put_container(&account, &container, policy, &container_updates(&headers)?).await?;
            Ok(status(if created { StatusCode::CREATED } else { StatusCode::ACCEPTED }))
        }
        Method::GET | Method::HEAD => {
            let row = s.store.container(&account, &container).await?;
            let mut resp = if method == Method::GET {
                let (lq, f) = listing_query(&q)?;
                let f = format_from_accept(f, &q, &headers);
                let entries = s.store.list_objects(&account, &container, &lq).await?;
                listing_response(
                    f,
                    ("container", &container),
                    &entries,
                    |o: &ObjectRow| &o.name,
                    |o| {
                        let mut j = json!({"name": o.name, "hash": o.etag, "bytes": listed_size(o), "content_type": o.content_type, "last_modified": iso(o.last_modified)});
                        if let Some(e) = o.metadata.get(large::SLO_ETAG) {
                            j["slo_etag"] = Value::String(large::quoted(e));
                        }
                        j
                    },
                    |o| format!(
                        "<object><name>{}</name><hash>{}</hash><bytes>{}</bytes><content_type>{}</content_type><last_modified>{}</last_modified></object>",
                        xml_escape(&o.name), o.etag, listed_size(o), xml_escape(&o.content_type), iso(o.last_modified)
                    ),
                )
            } else {
                status(StatusCode::NO_CONTENT)
            };
            put_header(&mut resp, "x-container-object-count", row.object_count.to_string());
            put_header(&mut resp, "x-container-bytes-used", row.bytes_used.to_string());
            put_header(&mut resp, "x-timestamp", x_timestamp(row.created_at));
            put_header(&mut resp, "x-put-timestamp", x_timestamp(row.created_at));
            put_header(&mut resp, "last-modified", http_date(row.updated_at));
            if let Some(p) = s.store.policies().by_index(row.policy_index) {
                put_header(&mut resp, "x-storage-policy", &p.name);
            }
            with_meta(&mut resp, "container", &row.metadata);
            if access != Decision::Owner {
                strip_owner_headers(&mut resp);
            }
            Ok(resp)
        }
        Method::POST => {
            s.store.update_container_metadata(&account, &container, &container_updates(&headers)?).await?;
            Ok(status(StatusCode::NO_CONTENT))
        }
        Method::DELETE => {
            s.store.delete_container(&account, &container).await?;
            Ok(status(StatusCode::NO_CONTENT))
        }
        _ => Err(Error::MethodNotAllowed.into()),
    }
}

// ---- objects

fn byte_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map(|c| c.map_err(std::io::Error::other)))
}

/// `/container/object` (a leading slash optional) split in two, as `X-Copy-From` and `Destination` give it.
fn split_copy_path(v: &str) -> Result<(String, String), Error> {
    let bad = || Error::PreconditionFailed("X-Copy-From header must be of the form <container name>/<object name>".into());
    let v = v.trim().trim_start_matches('/');
    let (c, o) = v.split_once('/').ok_or_else(bad)?;
    if c.is_empty() || o.is_empty() {
        return Err(bad());
    }
    Ok((percent_decode(c), percent_decode(o)))
}


fn parse_range(h: &HeaderMap, size: u64) -> Result<Option<ByteRange>, Error> {
    let Some(value) = header_str(h, "range") else { return Ok(None) };
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = || Error::RangeNotSatisfiable { size };
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else { return Ok(None) };
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        return Ok(Some(ByteRange { start: size.saturating_sub(n), end: size - 1 }));
    }
    let Ok(start) = a.parse::<u64>() else { return Ok(None) };
    let end = if b.is_empty() {
        size.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return Ok(None),
        }
    };
    if start >= size {
        return Err(unsatisfiable());
    }
    Ok(Some(ByteRange { start, end: end.min(size - 1) }))
}

fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',').map(|t| t.trim().trim_start_matches("W/").trim_matches('"')).any(|t| t == "*" || t == etag)
}

/// 304/412 for conditional requests, `None` to go on.
fn conditional(h: &HeaderMap, row: &ObjectRow) -> Result<Option<Response>, Error> {
    let last_modified = (row.last_modified + 999_999).div_euclid(1_000_000);
    if let Some(m) = header_str(h, "if-match")
        && !etag_matches(m, &row.etag)
    {
        return Err(Error::PreconditionFailed("A precondition for this request was not met.".into()));
    }
    if let Some(since) = header_str(h, "if-unmodified-since").and_then(parse_http_date)
        && last_modified > since
    {
        return Err(Error::PreconditionFailed("A precondition for this request was not met.".into()));
    }
    let mut not_modified = false;
    if let Some(m) = header_str(h, "if-none-match") {
        not_modified = etag_matches(m, &row.etag);
    } else if let Some(since) = header_str(h, "if-modified-since").and_then(parse_http_date) {
        not_modified = last_modified <= since;
    }
    if not_modified {
        let mut r = status(StatusCode::NOT_MODIFIED);
        object_headers(&mut r, row);
        r.headers_mut().remove(header::CONTENT_LENGTH);
        return Ok(Some(r));
    }
    Ok(None)
}

fn object_headers(r: &mut Response, row: &ObjectRow) {
    put_header(r, "etag", &row.etag);
    put_header(r, "last-modified", http_date(row.last_modified));
    put_header(r, "x-timestamp", x_timestamp(row.last_modified));
    put_header(r, "accept-ranges", "bytes");
    put_header(r, "content-type", &row.content_type);
    with_meta(r, "object", &row.metadata);
}

fn content_type_of(h: &HeaderMap, name: &str) -> Option<String> {
    let ct = header_str(h, "content-type").map(str::trim).filter(|c| !c.is_empty())?;
    if ct.eq_ignore_ascii_case("application/x-www-form-urlencoded") && h.get("content-length").is_none() {
        return None;
    }
    let _ = name;
    Some(ct.to_string())
}

/// The answer to a server-side copy: 201 with the copy's headers and where it came from.
fn copied(account: &str, (source, copy): &(ObjectRow, ObjectRow), from: (&str, &str)) -> Response {
    let mut r = created(copy);
    put_header(&mut r, "content-type", &copy.content_type);
    with_meta(&mut r, "object", &copy.metadata);
    put_header(&mut r, "x-copied-from", format!("{}/{}", percent_encode(from.0), percent_encode(from.1)));
    put_header(&mut r, "x-copied-from-account", account);
    put_header(&mut r, "x-copied-from-last-modified", http_date(source.last_modified));
    r
}

/// Percent-encodes all but unreserved characters and `/`, as Swift quotes names in headers.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn created(row: &ObjectRow) -> Response {
    let mut r = status(StatusCode::CREATED);
    put_header(&mut r, "etag", &row.etag);
    put_header(&mut r, "last-modified", http_date(row.last_modified));
    r
}

/// The paths a signature may cover: the one clients see (under the mount) and the one from `/v1` on.
fn signed_paths(mount: &str, path: &str) -> Vec<String> {
    if mount.is_empty() { vec![path.to_string()] } else { vec![format!("{mount}{path}"), path.to_string()] }
}

#[allow(clippy::too_many_arguments)]
async fn object(
    State(s): State<AppState>,
    ctx: Option<Context>,
    method: Method,
    Path((account, container, object)): Path<(String, String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mount = mount_of(&original, &uri);
    if let Some(boundary) = formpost::boundary(&method, &headers) {
        let path = percent_decode(uri.path());
        let target = formpost::Target { account: &account, container: &container, prefix: &object, paths: signed_paths(&mount, &path) };
        return Ok(formpost::handle(&s.store, target, boundary, body).await);
    }
    let caller = Caller::new(ctx, &headers);
    if method == Method::PUT
        && let Some(format) = q.get("extract-archive")
    {
        let base = format!("{container}/{object}");
        return Ok(bulk::extract(&s.store, &caller, &account, &base, format, &headers, body).await);
    }
    match tempurl::TempUrl::from_query(&q) {
        Some(temp) => {
            temp.authorize(&s.store, &method, (&account, &container, &object), &mount, &headers).await?;
            let mut resp = object_request(&s, &caller, &method, (&account, &container, &object), &q, &headers, body).await?;
            temp.finish(&mut resp, &method, &object);
            Ok(resp)
        }
        None => {
            // A COPY reads its source here; its destination is checked below.
            let write = !(is_read(&method) || method.as_str() == "COPY");
            let (_, row) = caller.container_access_read(&s.store, &account, &container, write, true).await?;
            if matches!(method, Method::GET | Method::HEAD) && staticweb::web_mode(caller.ctx.is_none(), &headers) {
                let row = match row {
                    Some(row) => row,
                    None => s.store.container(&account, &container).await?,
                };
                let site = staticweb::Site::of(&row.metadata);
                if site.enabled() || site.error.is_some() {
                    return Ok(web_object(&s, &caller, &method, (&account, &container, &object), original.path(), &site, &headers).await?);
                }
            }
            Ok(object_request(&s, &caller, &method, (&account, &container, &object), &q, &headers, body).await?)
        }
    }
}

/// Staticweb's answer for a pseudo-directory (`prefix` empty for the container): its index object, else its
/// listing, else the error page.
#[allow(clippy::too_many_arguments)]
async fn web_dir(
    s: &AppState,
    caller: &Caller,
    method: &Method,
    (account, container): (&str, &str),
    prefix: &str,
    path: &str,
    site: &staticweb::Site,
    headers: &HeaderMap,
) -> Result<Response, Error> {
    if let Some(index) = &site.index {
        let name = format!("{prefix}{index}");
        match web_get(s, caller, method, (account, container, &name), headers).await {
            Err(Error::NotFound(_)) => {}
            other => return other,
        }
    }
    if site.listings {
        caller.container_access(&s.store, account, container, false, false).await?;
        match staticweb::listing(&s.store, (account, container), prefix, &percent_decode(path), site).await {
            Err(Error::NotFound(_)) => {}
            other => return other,
        }
    }
    web_error(s, caller, method, (account, container), site).await
}

/// Staticweb's answer for an object: the object; for a missing one, a redirect into the pseudo-directory of that
/// name if there is one, else the error page.
async fn web_object(
    s: &AppState,
    caller: &Caller,
    method: &Method,
    (account, container, object): (&str, &str, &str),
    path: &str,
    site: &staticweb::Site,
    headers: &HeaderMap,
) -> Result<Response, Error> {
    if object.ends_with('/') && site.enabled() {
        return web_dir(s, caller, method, (account, container), object, path, site, headers).await;
    }
    match web_get(s, caller, method, (account, container, object), headers).await {
        Err(Error::NotFound(_)) => {
            if site.enabled() {
                let q = ListQuery { prefix: format!("{object}/"), limit: 1, ..Default::default() };
                if !s.store.list_objects(account, container, &q).await?.is_empty() {
                    return Ok(staticweb::redirect_to_dir(path));
                }
            }
            web_error(s, caller, method, (account, container), site).await
        }
        other => other,
    }
}

async fn web_get(
    s: &AppState,
    caller: &Caller,
    method: &Method,
    target: (&str, &str, &str),
    headers: &HeaderMap,
) -> Result<Response, Error> {
    object_request(s, caller, method, target, &std::collections::HashMap::new(), headers, Body::empty()).await
}

/// A 404, with the body of the object `404<web-error>` when the container names one.
async fn web_error(
    s: &AppState,
    caller: &Caller,
    method: &Method,
    (account, container): (&str, &str),
    site: &staticweb::Site,
) -> Result<Response, Error> {
    if let Some(error) = &site.error {
        let name = format!("404{error}");
        if let Ok(mut page) = web_get(s, caller, method, (account, container, &name), &HeaderMap::new()).await {
            *page.status_mut() = StatusCode::NOT_FOUND;
            return Ok(page);
        }
    }
    Err(Error::NotFound("Not Found".into()))
}

/// An object request its caller may make.
#[allow(clippy::too_many_arguments)]
async fn object_request(
    s: &AppState,
    caller: &Caller,
    method: &Method,
    (account, container, object): (&str, &str, &str),
    q: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let manifest = q.get("multipart-manifest").map(String::as_str);
    match method.as_str() {
        "PUT" => {
            if let Some(src) = header_str(headers, "x-copy-from") {
                let (sc, so) = split_copy_path(src)?;
                caller.container_access(&s.store, account, &sc, false, true).await?;
                let rows = s
                    .store
                    .copy_object(
                        (account, &sc, &so),
                        (account, container, object),
                        content_type_of(headers, object),
                        object_metadata(headers)?,
                        is_true(header_str(headers, "x-fresh-metadata")),
                        manifest == Some("get"),
                    )
                    .await?;
                return Ok(copied(account, &rows, (&sc, &so)));
            }
            let chunked = header_str(headers, "transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
            let length = header_str(headers, "content-length").map(|l| l.trim().parse::<u64>());
            match length {
                Some(Err(_)) => return Err(Error::BadRequest("Invalid Content-Length".into())),
                Some(Ok(n)) if n > limits::MAX_FILE_SIZE => {
                    return Err(Error::TooLarge("Your request is too large.".into()));
                }
                None if !chunked => return Err(Error::LengthRequired("Length Required".into())),
                _ => {}
            }
            let req = PutRequest {
                content_type: content_type_of(headers, object).unwrap_or_else(|| "application/octet-stream".into()),
                expected_etag: header_str(headers, "etag").map(str::to_string),
                metadata: object_metadata(headers)?,
                length: length.and_then(Result::ok),
                internal: false,
            };
            if manifest == Some("put") {
                let limit = large::MAX_MANIFEST_SIZE;
                let data = axum::body::to_bytes(body, limit + 1)
                    .await
                    .map_err(|_| Error::TooLarge(format!("Manifest File > {limit} bytes")))?;
                // Segments are looked up as their reader: only in containers the caller may read.
                for c in large::manifest_containers(&data) {
                    caller.container_access(&s.store, account, &c, false, true).await?;
                }
                let (row, slo_etag) = s.store.put_slo(account, container, object, &data, req).await?;
                let mut r = created(&row);
                put_header(&mut r, "etag", large::quoted(&slo_etag));
                return Ok(r);
            }
            if headers.contains_key("x-static-large-object") {
                return Err(Error::BadRequest(
                    "X-Static-Large-Object is a reserved header. To create a static large object add query param \
                     multipart-manifest=put."
                        .into(),
                ));
            }
            let row = s.store.put_object(account, container, object, byte_stream(body), req).await?;
            Ok(created(&row))
        }
        "COPY" => {
            let dest = header_str(headers, "destination")
                .ok_or_else(|| Error::PreconditionFailed("You must specify a Destination header".into()))?;
            let (dc, dob) = split_copy_path(dest)?;
            caller.container_access(&s.store, account, &dc, true, true).await?;
            let rows = s
                .store
                .copy_object(
                    (account, container, object),
                    (account, &dc, &dob),
                    content_type_of(headers, &dob),
                    object_metadata(headers)?,
                    is_true(header_str(headers, "x-fresh-metadata")),
                    manifest == Some("get"),
                )
                .await?;
            Ok(copied(account, &rows, (container, object)))
        }
        "GET" | "HEAD" => {
            let row = s.store.object(account, container, object).await?;
            if expired(&row) {
                return Err(Error::NotFound("The resource could not be found.".into()));
            }
            if manifest == Some("get") {
                return manifest_get(s, method, &row, q, headers).await;
            }
            if let Some(large) = s.store.large_object(&row).await? {
                for c in &large.containers {
                    caller.container_access(&s.store, account, c, false, true).await?;
                }
                return large_get(s, method, row, large, headers);
            }
            if let Some(r) = conditional(headers, &row)? {
                return Ok(r);
            }
            let size = row.size as u64;
            let range = parse_range(headers, size)?;
            let mut resp = if *method == Method::HEAD {
                Body::empty().into_response()
            } else {
                Body::from_stream(s.store.read_object(&row, range).await?).into_response()
            };
            object_headers(&mut resp, &row);
            sized(&mut resp, range, size);
            Ok(resp)
        }
        "POST" => {
            let ct = content_type_of(headers, object);
            s.store.post_object(account, container, object, ct.as_deref(), &object_metadata(headers)?).await?;
            Ok(status(StatusCode::ACCEPTED))
        }
        "DELETE" => {
            if manifest == Some("delete") {
                let outcome = s.store.delete_slo(account, container, object).await?;
                return Ok(bulk::deleted(headers, &outcome));
            }
            s.store.delete_object(account, container, object).await?;
            Ok(status(StatusCode::NO_CONTENT))
        }
        _ => Err(Error::MethodNotAllowed),
    }
}

/// Content-Length, and for a range 206 with Content-Range.
fn sized(resp: &mut Response, range: Option<ByteRange>, size: u64) {
    match range {
        Some(r) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(r.len()));
            put_header(resp, "content-range", format!("bytes {}-{}/{size}", r.start, r.end));
        }
        None => {
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
    }
}

/// GET/HEAD of a large object: its segments' bytes, its own ETag (quoted) and length.
fn large_get(
    s: &AppState,
    method: &Method,
    row: ObjectRow,
    large: large::LargeObject,
    headers: &HeaderMap,
) -> Result<Response, Error> {
    let slo = large::is_slo(&row);
    let manifest_etag = row.etag.clone();
    let view = ObjectRow { etag: large.etag.clone(), size: large.size as i64, ..row };
    if let Some(mut r) = conditional(headers, &view)? {
        put_header(&mut r, "etag", large::quoted(&large.etag));
        return Ok(r);
    }
    let range = parse_range(headers, large.size)?;
    let mut resp = if *method == Method::HEAD {
        Body::empty().into_response()
    } else {
        Body::from_stream(s.store.read_large(&large, range)).into_response()
    };
    object_headers(&mut resp, &view);
    put_header(&mut resp, "etag", large::quoted(&large.etag));
    if slo {
        put_header(&mut resp, "x-static-large-object", "True");
        put_header(&mut resp, "x-manifest-etag", manifest_etag);
    }
    sized(&mut resp, range, large.size);
    Ok(resp)
}

/// `?multipart-manifest=get`: the manifest object itself; an SLO's as JSON (`&format=raw`: as a PUT takes it).
async fn manifest_get(
    s: &AppState,
    method: &Method,
    row: &ObjectRow,
    q: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, Error> {
    if !large::is_slo(row) {
        if let Some(r) = conditional(headers, row)? {
            return Ok(r);
        }
        let mut resp = if *method == Method::HEAD {
            Body::empty().into_response()
        } else {
            Body::from_stream(s.store.read_object(row, None).await?).into_response()
        };
        object_headers(&mut resp, row);
        sized(&mut resp, None, row.size as u64);
        return Ok(resp);
    }
    let data = s.store.slo_manifest(row).await?;
    let (data, etag) = if q.get("format").map(String::as_str) == Some("raw") {
        let raw = large::raw_manifest(&data)?.to_string().into_bytes();
        let etag = hex(&Md5::digest(&raw));
        (raw, etag)
    } else {
        (data, row.etag.clone())
    };
    let len = data.len() as u64;
    let mut resp = if *method == Method::HEAD { Body::empty().into_response() } else { Body::from(data).into_response() };
    object_headers(&mut resp, row);
    put_header(&mut resp, "etag", etag);
    put_header(&mut resp, "content-type", "application/json; charset=utf-8");
    put_header(&mut resp, "x-static-large-object", "True");
    sized(&mut resp, None, len);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        h.insert("range", HeaderValue::from_static("bytes=2-5"));
        assert_eq!(parse_range(&h, 10).unwrap(), Some(ByteRange { start: 2, end: 5 }));
        h.insert("range", HeaderValue::from_static("bytes=-3"));
        assert_eq!(parse_range(&h, 10).unwrap(), Some(ByteRange { start: 7, end: 9 }));
        h.insert("range", HeaderValue::from_static("bytes=8-"));
        assert_eq!(parse_range(&h, 10).unwrap(), Some(ByteRange { start: 8, end: 9 }));
        h.insert("range", HeaderValue::from_static("bytes=10-20"));
        assert!(matches!(parse_range(&h, 10), Err(Error::RangeNotSatisfiable { size: 10 })));
    }

    #[test]
    fn copy_paths() {
        assert_eq!(split_copy_path("/c/o/p%20q").unwrap(), ("c".into(), "o/p q".into()));
        assert!(split_copy_path("c").is_err());
    }
}
