//! Swift's FormPost middleware: a browser `POST`s `multipart/form-data` to `/v1/<account>/<container>[/<prefix>]`
//! and each file of the form becomes the object `<prefix><filename>`, without a token. The form carries `redirect`,
//! `max_file_size`, `max_file_count`, `expires` and `signature`, the HMAC of
//! `<path>\n<redirect>\n<max_file_size>\n<max_file_count>\n<expires>` under a `Temp-URL-Key(-2)` of the account or
//! the container; optionally `x_delete_at`/`x_delete_after` and `content-type`. Fields after a file do not apply to
//! it: the form is read once, as it streams, files straight into the store.
//!
//! The answer is the status line as plain text (with `FormPost: <Message>` on failure), or a 303 to `redirect` with
//! `status` and `message` added to its query. A bad or expired signature is a 401.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::{header_str, percent_encode, tempurl};
use crate::{
    server::ByteStream,
    service::{ObjectStore, PutRequest},
    signature,
    store::{DELETE_AT_KEY, Metadata},
};

/// The longest value kept of a form field; the rest is read and dropped.
const MAX_VALUE_LENGTH: usize = 4096;

pub(super) fn info() -> Value {
    json!({"allowed_digests": signature::ALLOWED_DIGESTS})
}

/// The multipart boundary, when this is a form post (a `POST` of `multipart/form-data`).
pub(super) fn boundary(method: &axum::http::Method, headers: &HeaderMap) -> Option<String> {
    if method != axum::http::Method::POST {
        return None;
    }
    let ct = header_str(headers, "content-type")?;
    if !ct.trim_start().to_ascii_lowercase().starts_with("multipart/form-data") {
        return None;
    }
    multer::parse_boundary(ct).ok()
}

/// Where a form posts to: the account, the container and the object name prefix, and the request paths its
/// signature may cover (as clients see them, and from `/v1` on).
pub(super) struct Target<'a> {
    pub account: &'a str,
    pub container: &'a str,
    pub prefix: &'a str,
    pub paths: Vec<String>,
}

enum Failure {
    /// 401 with `FormPost: <message>`.
    Unauthorized(&'static str),
    /// 400 with `FormPost: <message>`.
    Invalid(String),
}

/// Handles a form post end to end.
pub(super) async fn handle(store: &ObjectStore, target: Target<'_>, boundary: String, body: Body) -> Response {
    match translate(store, &target, boundary, body).await {
        Ok(resp) => resp,
        Err(Failure::Unauthorized(m)) => text(StatusCode::UNAUTHORIZED, format!("FormPost: {m}"), "text/html; charset=UTF-8"),
        Err(Failure::Invalid(m)) => text(StatusCode::BAD_REQUEST, format!("FormPost: {m}"), "text/plain"),
    }
}

/// A response whose body is exactly Swift's (not re-rendered as an HTML error page).
pub(super) fn text(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.extensions_mut().insert(api_common::wire::Verbatim);
    r
}

/// `max file count exceeded` → `Max File Count Exceeded`, as Python's `str.title()`.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        out.push(if start { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() });
        start = !c.is_ascii_alphabetic();
    }
    out
}

async fn translate(store: &ObjectStore, target: &Target<'_>, boundary: String, body: Body) -> Result<Response, Failure> {
    let mut keys = match store.store().account_get(target.account).await {
        Ok(Some(a)) => tempurl::keys(&a.metadata),
        _ => Vec::new(),
    };
    if let Ok(c) = store.container(target.account, target.container).await {
        keys.extend(tempurl::keys(&c.metadata));
    }
    let stream = body.into_data_stream();
    let mut form = multer::Multipart::new(stream, boundary);
    let mut attributes: HashMap<String, String> = HashMap::new();
    let mut outcome: Option<(StatusCode, String)> = None;
    let mut file_count = 0u64;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if file_count == 0 && attributes.is_empty() => {
                tracing::debug!(error = %e, "unreadable form");
                return Err(Failure::Invalid("invalid starting boundary".into()));
            }
            Err(e) => return Err(Failure::Invalid(e.to_string())),
        };
        let filename = field.file_name().filter(|f| !f.is_empty()).map(str::to_string);
        let Some(filename) = filename else {
            let name = field.name().map(str::to_ascii_lowercase);
            let value = read_value(field).await?;
            if let Some(name) = name {
                attributes.insert(name, value.trim_end_matches(['\r', '\n', '-']).to_string());
            }
            continue;
        };
        file_count += 1;
        let max_count: u64 = int_attr(&attributes, "max_file_count").map_err(|_| Failure::Invalid("max_file_count not an integer".into()))?;
        if file_count > max_count {
            outcome = Some((StatusCode::BAD_REQUEST, "max file count exceeded".into()));
            break;
        }
        if !attributes.contains_key("content-type")
            && let Some(ct) = field.content_type()
        {
            attributes.insert("file-content-type".into(), ct.to_string());
        }
        let done = upload(store, target, &keys, &attributes, &filename, field).await?;
        let failed = !done.0.is_success();
        outcome = Some(done);
        attributes.remove("file-content-type");
        if failed {
            break;
        }
    }
    let (status, message) = outcome.unwrap_or((StatusCode::BAD_REQUEST, "no files to process".into()));
    let status_line = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    match attributes.get("redirect").filter(|r| !r.is_empty()) {
        None => {
            let body = if message.is_empty() { status_line } else { format!("{status_line}\r\nFormPost: {}", title(&message)) };
            Ok(text(status, body, "text/plain"))
        }
        Some(redirect) => {
            let sep = if redirect.contains('?') { '&' } else { '?' };
            let location = format!(
                "{redirect}{sep}status={}&message={}",
                status.as_u16(),
                percent_encode(&message).replace('/', "%2F")
            );
            let body = format!("<html><body><p><a href=\"{location}\">Click to continue...</a></p></body></html>");
            let mut r = text(StatusCode::SEE_OTHER, body, "text/html; charset=UTF-8");
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Ok(r)
        }
    }
}

async fn read_value(mut field: multer::Field<'static>) -> Result<String, Failure> {
    let mut value = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_VALUE_LENGTH.saturating_sub(value.len());
                value.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(e) => return Err(Failure::Invalid(e.to_string())),
        }
    }
    Ok(String::from_utf8_lossy(&value).into_owned())
}

/// An integer attribute; absent or empty is 0.
fn int_attr(a: &HashMap<String, String>, key: &str) -> Result<u64, std::num::ParseIntError> {
    match a.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        Some(v) => v.parse(),
        None => Ok(0),
    }
}

/// Checks the form's signature and expiry, then stores one file; the status and message it ends with.
async fn upload(
    store: &ObjectStore,
    target: &Target<'_>,
    keys: &[String],
    attributes: &HashMap<String, String>,
    filename: &str,
    field: multer::Field<'static>,
) -> Result<(StatusCode, String), Failure> {
    if keys.is_empty() {
        return Err(Failure::Unauthorized("Invalid Signature"));
    }
    let max_size = int_attr(attributes, "max_file_size").map_err(|_| Failure::Invalid("max_file_size not an integer".into()))?;
    let mut metadata = Metadata::new();
    if let Some(at) = attributes.get("x_delete_at") {
        let at: i64 = at.trim().parse().map_err(|_| Failure::Invalid("x_delete_at not an integer: Unix timestamp required.".into()))?;
        metadata.insert(DELETE_AT_KEY.into(), at.to_string());
    }
    if let Some(after) = attributes.get("x_delete_after") {
        let after: i64 = after
            .trim()
            .parse()
            .map_err(|_| Failure::Invalid("x_delete_after not an integer: Number of seconds required.".into()))?;
        metadata.insert(DELETE_AT_KEY.into(), (chrono::Utc::now().timestamp() + after).to_string());
    }
    let expires: i64 = match attributes.get("expires").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        Some(v) => v.parse().map_err(|_| Failure::Invalid("expired not an integer".into()))?,
        None => 0,
    };
    if expires < chrono::Utc::now().timestamp() {
        return Err(Failure::Unauthorized("Form Expired"));
    }
    let get = |k: &str| attributes.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let signed = |v: Option<&str>, default: &'static str| v.unwrap_or(default).to_string();
    let bodies: Vec<String> = target
        .paths
        .iter()
        .map(|p| {
            format!(
                "{p}\n{}\n{}\n{}\n{}",
                signed(get("redirect"), ""),
                signed(get("max_file_size"), "0"),
                signed(get("max_file_count"), "0"),
                signed(get("expires"), "0")
            )
        })
        .collect();
    let valid = get("signature")
        .and_then(|s| signature::parse(s, true))
        .is_some_and(|(digest, sig)| signature::verify(digest, &sig, keys, &bodies));
    if !valid {
        return Err(Failure::Unauthorized("Invalid Signature"));
    }

    let exceeded = Arc::new(AtomicBool::new(false));
    let flag = exceeded.clone();
    let mut seen = 0u64;
    let body: ByteStream = Box::pin(field.map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > max_size {
            flag.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other("max_file_size exceeded"));
        }
        Ok(chunk)
    }));
    let content_type = get("content-type").or(get("file-content-type")).unwrap_or("application/octet-stream").to_string();
    let req = PutRequest { content_type, metadata, ..Default::default() };
    let name = format!("{}{filename}", target.prefix);
    match store.put_object(target.account, target.container, &name, body, req).await {
        Ok(_) => Ok((StatusCode::CREATED, String::new())),
        Err(_) if exceeded.load(Ordering::SeqCst) => Err(Failure::Invalid("max_file_size exceeded".into())),
        Err(e) => {
            let status = api_common::ApiError::from(e).status;
            Ok((status, String::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_titled_as_python_does() {
        assert_eq!(title("max file count exceeded"), "Max File Count Exceeded");
        assert_eq!(title("max_file_size exceeded"), "Max_File_Size Exceeded");
        assert_eq!(title("no files to process"), "No Files To Process");
    }
}
