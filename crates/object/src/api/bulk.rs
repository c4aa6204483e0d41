//! Swift's bulk middleware: bulk delete (`POST` or `DELETE` `?bulk-delete` on the account, a body of
//! newline-separated, URL-encoded `<container>/<object>` or `<container>` paths) and archive extraction (`PUT
//! ?extract-archive=tar|tar.gz|tar.bz2` on the account, a container or a prefix: each file of the archive becomes an
//! object, containers are created as needed). Each item is authorized as if asked for alone.
//!
//! The answer is always 200 with a report (also used for a static large object's deletion): `Key: value` lines
//! then `Errors:` and one `<name>, <status>` line per failure in plain text, or the same as JSON or XML, as
//! `Accept` asks; `Response Status` says how it went.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::{Caller, byte_stream, header_str, percent_encode, xml_escape};
use crate::{
    error::Error,
    large::{BulkOutcome, api_status, percent_decode},
    server::ByteStream,
    service::{ObjectStore, PutRequest, limits},
    store::{DELETE_AT_KEY, Metadata},
    tar::{Compression, TarReader},
};

/// Swift's bulk limits, as `/info` reports them.
pub(super) const MAX_DELETES_PER_REQUEST: usize = 10000;
pub(super) const MAX_FAILED_DELETES: usize = 1000;
pub(super) const MAX_CONTAINERS_PER_EXTRACTION: usize = 10000;
pub(super) const MAX_FAILED_EXTRACTIONS: usize = 1000;

pub(super) fn delete_info() -> Value {
    serde_json::json!({"max_deletes_per_request": MAX_DELETES_PER_REQUEST, "max_failed_deletes": MAX_FAILED_DELETES})
}

pub(super) fn upload_info() -> Value {
    serde_json::json!({
        "max_containers_per_extraction": MAX_CONTAINERS_PER_EXTRACTION,
        "max_failed_extractions": MAX_FAILED_EXTRACTIONS,
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Text,
    Json,
    Xml(&'static str),
}

/// The format `Accept` prefers among plain text, JSON and XML (plain text by default).
fn format(headers: &HeaderMap) -> Format {
    let Some(accept) = header_str(headers, "accept") else { return Format::Text };
    let mut best: Option<(f32, usize, Format)> = None;
    for (i, item) in accept.split(',').enumerate() {
        let mut parts = item.split(';');
        let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q: f32 = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .next()
            .and_then(|q| q.parse().ok())
            .unwrap_or(1.0);
        let f = match mime.as_str() {
            "text/plain" | "*/*" | "text/*" => Format::Text,
            "application/json" => Format::Json,
            "application/xml" => Format::Xml("application/xml"),
            "text/xml" => Format::Xml("text/xml"),
            _ => continue,
        };
        if q > 0.0 && best.as_ref().is_none_or(|(bq, _, _)| q > *bq) {
            best = Some((q, i, f));
        }
    }
    best.map_or(Format::Text, |(_, _, f)| f)
}

/// Renders a report: `fields` in key order, then the errors.
fn render(headers: &HeaderMap, root: &str, fields: Vec<(&str, Value)>, errors: &[(String, String)]) -> Response {
    let (body, content_type) = match format(headers) {
        Format::Json => {
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.to_string(), v);
            }
            let errs: Vec<Value> = errors.iter().map(|(n, s)| Value::Array(vec![n.clone().into(), s.clone().into()])).collect();
            m.insert("Errors".into(), Value::Array(errs));
            (Value::Object(m).to_string(), "application/json")
        }
        Format::Xml(ct) => {
            let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root}>\n");
            for (k, v) in fields {
                let key = k.replace(' ', "_").to_ascii_lowercase();
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                s.push_str(&format!("<{key}>{}</{key}>\n", xml_escape(&v)));
            }
            s.push_str("<errors>\n");
            for (n, st) in errors {
                s.push_str(&format!("<object><name>{}</name><status>{}</status></object>\n", xml_escape(n), xml_escape(st)));
            }
            s.push_str(&format!("</errors>\n</{root}>\n"));
            (s, ct)
        }
        Format::Text => {
            let mut s = String::new();
            for (k, v) in fields {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                s.push_str(&format!("{k}: {v}\n"));
            }
            s.push_str("Errors:\n");
            for (n, st) in errors {
                s.push_str(&format!("{n}, {st}\n"));
            }
            (s, "text/plain")
        }
    };
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The report of a deletion of many objects.
pub(super) fn deleted(headers: &HeaderMap, outcome: &BulkOutcome) -> Response {
    let status = if outcome.errors.is_empty() { "200 OK" } else { "400 Bad Request" };
    deleted_with(headers, outcome, status, "")
}

fn deleted_with(headers: &HeaderMap, outcome: &BulkOutcome, status: &str, body: &str) -> Response {
    let fields = vec![
        ("Number Deleted", Value::from(outcome.deleted)),
        ("Number Not Found", Value::from(outcome.not_found)),
        ("Response Body", Value::from(body)),
        ("Response Status", Value::from(status)),
    ];
    render(headers, "delete", fields, &outcome.errors)
}

fn extracted(headers: &HeaderMap, outcome: &BulkOutcome, status: &str, body: &str) -> Response {
    let fields = vec![
        ("Number Files Created", Value::from(outcome.created)),
        ("Response Body", Value::from(body)),
        ("Response Status", Value::from(status)),
    ];
    render(headers, "extract", fields, &outcome.errors)
}

/// `POST`/`DELETE ?bulk-delete`.
pub(super) async fn delete(store: &ObjectStore, caller: &Caller, account: &str, headers: &HeaderMap, body: Body) -> Response {
    let limit = MAX_DELETES_PER_REQUEST * (limits::MAX_OBJECT_NAME_LENGTH + limits::MAX_CONTAINER_NAME_LENGTH + 8);
    let mut outcome = BulkOutcome::default();
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        let msg = format!("Maximum Bulk Deletes: {MAX_DELETES_PER_REQUEST} per request");
        return deleted_with(headers, &outcome, "413 Request Entity Too Large", &msg);
    };
    let text = String::from_utf8_lossy(&body);
    let paths: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if paths.len() > MAX_DELETES_PER_REQUEST {
        let msg = format!("Maximum Bulk Deletes: {MAX_DELETES_PER_REQUEST} per request");
        return deleted_with(headers, &outcome, "413 Request Entity Too Large", &msg);
    }
    if paths.is_empty() {
        return deleted_with(headers, &outcome, "400 Bad Request", "Invalid bulk delete.");
    }
    for line in paths {
        let path = percent_decode(line);
        let path = path.trim_start_matches('/');
        let result = match path.split_once('/') {
            Some((c, o)) if !o.is_empty() => delete_one(store, caller, account, c, Some(o)).await,
            Some((c, _)) => delete_one(store, caller, account, c, None).await,
            None => delete_one(store, caller, account, path, None).await,
        };
        match result {
            Ok(()) => outcome.deleted += 1,
            Err(Error::NotFound(_)) => outcome.not_found += 1,
            Err(e) => {
                outcome.errors.push((format!("/{}", percent_encode(path)), api_status(&e)));
                if outcome.errors.len() >= MAX_FAILED_DELETES {
                    return deleted_with(headers, &outcome, "400 Bad Request", "Max delete failures exceeded");
                }
            }
        }
    }
    deleted(headers, &outcome)
}

async fn delete_one(store: &ObjectStore, caller: &Caller, account: &str, container: &str, object: Option<&str>) -> Result<(), Error> {
    match object {
        Some(o) => {
            caller.container_access(store, account, container, true, true).await?;
            store.delete_object(account, container, o).await
        }
        None => {
            caller.owner(account, true)?;
            store.delete_container(account, container).await
        }
    }
}

/// `PUT ?extract-archive=<format>` on `/<account>[/<container>[/<prefix>]]` (`base`: `<container>[/<prefix>]`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn extract(
    store: &ObjectStore,
    caller: &Caller,
    account: &str,
    base: &str,
    format: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let mut outcome = BulkOutcome::default();
    let Some(compression) = Compression::from_param(format.trim().trim_matches('.').to_ascii_lowercase().as_str()) else {
        let mut r = (StatusCode::BAD_REQUEST, "Unsupported archive format").into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r.extensions_mut().insert(api_common::wire::Verbatim);
        return r;
    };
    let base = base.trim_end_matches('/').to_string();
    // Metadata from the request applies to every object.
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        let n = name.as_str();
        if let Some(k) = n.strip_prefix("x-object-meta-") {
            metadata.insert(k.to_string(), String::from_utf8_lossy(value.as_bytes()).trim().to_string());
        }
    }
    let now = chrono::Utc::now().timestamp();
    if let Some(at) = header_str(headers, "x-delete-at").and_then(|v| v.trim().parse::<i64>().ok()) {
        metadata.insert(DELETE_AT_KEY.into(), at.to_string());
    } else if let Some(after) = header_str(headers, "x-delete-after").and_then(|v| v.trim().parse::<i64>().ok()) {
        metadata.insert(DELETE_AT_KEY.into(), (now + after).to_string());
    }
    let reader = Arc::new(Mutex::new(TarReader::new(byte_stream(body), compression)));
    let mut containers: Vec<String> = Vec::new();
    loop {
        let entry = match reader.lock().await.next_entry().await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => return extracted(headers, &outcome, "400 Bad Request", &error_text(&e)),
        };
        if !entry.file {
            continue;
        }
        let rel = entry.path.strip_prefix("./").unwrap_or(&entry.path).trim_start_matches('/').to_string();
        let dest = if base.is_empty() { rel.clone() } else { format!("{base}/{rel}") };
        let dest = dest.replace("//", "/");
        let quoted = percent_encode(&rel);
        let (container, object) = match dest.split_once('/') {
            Some((c, o)) if !c.is_empty() && !o.is_empty() => (c.to_string(), o.to_string()),
            _ => {
                outcome.errors.push((quoted, "400 Bad Request".into()));
                continue;
            }
        };
        if entry.size > limits::MAX_FILE_SIZE {
            outcome.errors.push((quoted, "413 Request Entity Too Large".into()));
            continue;
        }
        if !containers.contains(&container) {
            if containers.len() >= MAX_CONTAINERS_PER_EXTRACTION {
                let msg = format!("More than {MAX_CONTAINERS_PER_EXTRACTION} containers to create from tar.");
                return extracted(headers, &outcome, "400 Bad Request", &msg);
            }
            if let Err(e) = ensure_container(store, caller, account, &container).await {
                outcome.errors.push((quoted, api_status(&e)));
                if outcome.errors.len() >= MAX_FAILED_EXTRACTIONS {
                    return extracted(headers, &outcome, "400 Bad Request", "Max extraction failures exceeded");
                }
                continue;
            }
            containers.push(container.clone());
        }
        let mut meta = metadata.clone();
        let mut content_type = "application/octet-stream".to_string();
        for (k, v) in &entry.xattrs {
            if k == "mime_type" {
                content_type = v.clone();
            } else if let Some(m) = k.strip_prefix("meta.") {
                meta.insert(m.to_ascii_lowercase(), v.clone());
            }
        }
        let result = match caller.container_access(store, account, &container, true, true).await {
            Ok(_) => {
                let req = PutRequest { content_type, expected_etag: None, metadata: meta, length: Some(entry.size), internal: false };
                store.put_object(account, &container, &object, entry_stream(reader.clone()), req).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => outcome.created += 1,
            Err(e @ Error::UploadInterrupted(_)) => return extracted(headers, &outcome, "400 Bad Request", &error_text(&e)),
            Err(e) => {
                outcome.errors.push((quoted, api_status(&e)));
                if outcome.errors.len() >= MAX_FAILED_EXTRACTIONS {
                    return extracted(headers, &outcome, "400 Bad Request", "Max extraction failures exceeded");
                }
            }
        }
    }
    if outcome.created == 0 && outcome.errors.is_empty() {
        return extracted(headers, &outcome, "400 Bad Request", "Invalid Tar File: No Valid Files");
    }
    let status = if outcome.errors.is_empty() { "201 Created" } else { "400 Bad Request" };
    extracted(headers, &outcome, status, "")
}

fn error_text(e: &Error) -> String {
    match e {
        Error::BadRequest(m) => m.clone(),
        other => format!("Invalid Tar File: {other}"),
    }
}

/// Creates the container unless it exists (which takes an operator of the account).
async fn ensure_container(store: &ObjectStore, caller: &Caller, account: &str, container: &str) -> Result<(), Error> {
    match store.container(account, container).await {
        Ok(_) => Ok(()),
        Err(Error::NotFound(_)) => {
            caller.owner(account, true)?;
            store.put_container(account, container, None, &[]).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// The current entry's data as a stream, read through the shared reader.
fn entry_stream(reader: Arc<Mutex<TarReader>>) -> ByteStream {
    Box::pin(futures::stream::try_unfold(reader, |reader| async move {
        let chunk = reader.lock().await.read().await.map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(chunk.map(|c| (c, reader)))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_format() {
        let mut h = HeaderMap::new();
        assert_eq!(format(&h), Format::Text);
        h.insert("accept", HeaderValue::from_static("application/json"));
        assert_eq!(format(&h), Format::Json);
        h.insert("accept", HeaderValue::from_static("text/plain;q=0.5, application/xml"));
        assert_eq!(format(&h), Format::Xml("application/xml"));
        h.insert("accept", HeaderValue::from_static("image/png"));
        assert_eq!(format(&h), Format::Text);
    }
}
