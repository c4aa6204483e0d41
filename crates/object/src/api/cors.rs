//! Cross-origin resource sharing, as Swift's proxy does it, from a container's metadata:
//! `X-Container-Meta-Access-Control-Allow-Origin` (space-separated origins, or `*`), `…-Max-Age` and
//! `…-Expose-Headers`.
//!
//! * `OPTIONS` answers 200 with `Allow`; with an `Origin` (a preflight) on a container or an object, 200 with the
//!   `Access-Control-Allow-*` headers when the container allows the origin and the method, 401 otherwise. No token
//!   is needed (browsers send none).
//! * Other requests with an `Origin` get `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers` when the
//!   container allows the origin (strict mode: nothing otherwise).

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{AppState, header_str, put_header};
use crate::{large::percent_decode, store::Metadata};

const ALLOW_ORIGIN: &str = "access-control-allow-origin";
const MAX_AGE: &str = "access-control-max-age";
const EXPOSE_HEADERS: &str = "access-control-expose-headers";

/// The methods each level answers, as `Allow` lists them.
fn allowed_methods(container: bool, object: bool) -> &'static [&'static str] {
    match (container, object) {
        (_, true) => &["HEAD", "GET", "PUT", "POST", "DELETE", "COPY", "OPTIONS"],
        _ => &["HEAD", "GET", "PUT", "POST", "DELETE", "OPTIONS"],
    }
}

/// Whether the container's `Allow-Origin` lets `origin` in.
fn origin_allowed(meta: &Metadata, origin: &str) -> bool {
    meta.get(ALLOW_ORIGIN).is_some_and(|allowed| allowed.split(' ').map(str::trim).any(|a| a == "*" || a == origin))
}

fn allows_any(meta: &Metadata) -> bool {
    meta.get(ALLOW_ORIGIN).is_some_and(|a| a.trim() == "*")
}

/// `(account, container, object)` of a storage path, `None` for other paths.
fn split(path: &str) -> Option<(String, Option<String>, Option<String>)> {
    let rest = path.strip_prefix("/v1/")?;
    let mut parts = rest.splitn(3, '/');
    let account = percent_decode(parts.next()?);
    let container = parts.next().filter(|c| !c.is_empty()).map(percent_decode);
    let object = parts.next().filter(|o| !o.is_empty()).map(percent_decode);
    Some((account, container, object))
}

/// The CORS layer of the storage routes.
pub(super) async fn layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some((account, container, object)) = split(req.uri().path()) else { return next.run(req).await };
    let origin = header_str(req.headers(), "origin").map(str::to_string);
    if req.method() == Method::OPTIONS {
        return preflight(&s, &account, container.as_deref(), object.is_some(), origin.as_deref(), req.headers()).await;
    }
    let resp = next.run(req).await;
    let (Some(origin), Some(container)) = (origin, container) else { return resp };
    let meta = match s.store.store().container_get(&account, &container).await {
        Ok(Some(row)) => row.metadata,
        _ => return resp,
    };
    actual(resp, &meta, &origin)
}

async fn preflight(
    s: &AppState,
    account: &str,
    container: Option<&str>,
    object: bool,
    origin: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let methods = allowed_methods(container.is_some(), object);
    let mut resp = StatusCode::OK.into_response();
    put_header(&mut resp, "allow", methods.join(", "));
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=UTF-8"));
    let (Some(origin), Some(container)) = (origin, container) else { return resp };
    let meta = match s.store.store().container_get(account, container).await {
        Ok(Some(row)) => row.metadata,
        _ => Metadata::new(),
    };
    let method_ok = header_str(headers, "access-control-request-method").is_some_and(|m| methods.contains(&m));
    if !origin_allowed(&meta, origin) || !method_ok {
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        *resp.body_mut() = Body::empty();
        return resp;
    }
    put_header(&mut resp, ALLOW_ORIGIN, if allows_any(&meta) { "*" } else { origin });
    put_header(&mut resp, "vary", "Origin");
    if let Some(age) = meta.get(MAX_AGE) {
        put_header(&mut resp, MAX_AGE, age);
    }
    put_header(&mut resp, "access-control-allow-methods", methods.join(", "));
    let mut requested: Vec<String> = header_str(headers, "access-control-request-headers")
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    requested.sort();
    requested.dedup();
    if !requested.is_empty() {
        put_header(&mut resp, "access-control-allow-headers", requested.join(", "));
        put_header(&mut resp, "vary", "Origin, Access-Control-Request-Headers");
    }
    resp
}

/// Exposes a response to an allowed origin.
fn actual(mut resp: Response, meta: &Metadata, origin: &str) -> Response {
    if !origin_allowed(meta, origin) {
        return resp;
    }
    if !resp.headers().contains_key(EXPOSE_HEADERS) {
        let mut expose: Vec<String> = [
            "cache-control",
            "content-language",
            "content-type",
            "expires",
            "last-modified",
            "pragma",
            "etag",
            "x-timestamp",
            "x-trans-id",
            "x-openstack-request-id",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect();
        for name in resp.headers().keys() {
            let n = name.as_str();
            if n.starts_with("x-container-meta-") || n.starts_with("x-object-meta-") {
                expose.push(n.to_string());
            }
        }
        if let Some(extra) = meta.get(EXPOSE_HEADERS) {
            expose.extend(extra.split(' ').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()));
        }
        expose.sort();
        expose.dedup();
        put_header(&mut resp, EXPOSE_HEADERS, expose.join(", "));
    }
    if !resp.headers().contains_key(ALLOW_ORIGIN) {
        if allows_any(meta) {
            put_header(&mut resp, ALLOW_ORIGIN, "*");
        } else {
            put_header(&mut resp, ALLOW_ORIGIN, origin);
            put_header(&mut resp, "vary", "Origin");
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_paths() {
        let meta = Metadata::from([(ALLOW_ORIGIN.to_string(), "http://a.example http://b.example".to_string())]);
        assert!(origin_allowed(&meta, "http://b.example"));
        assert!(!origin_allowed(&meta, "http://c.example"));
        assert!(!origin_allowed(&Metadata::new(), "http://a.example"));
        let any = Metadata::from([(ALLOW_ORIGIN.to_string(), "*".to_string())]);
        assert!(origin_allowed(&any, "http://x") && allows_any(&any));
        assert_eq!(split("/v1/AUTH_a/c%20d/o/p"), Some(("AUTH_a".into(), Some("c d".into()), Some("o/p".into()))));
        assert_eq!(split("/v1/AUTH_a/"), Some(("AUTH_a".into(), None, None)));
        assert_eq!(split("/info"), None);
    }
}
