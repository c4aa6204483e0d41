//! The middleware every service router gets: request ids, request logging, JSON 404/405/413 bodies in the
//! service's error style, a body-size limit, and panic containment.
//!
//! `wire::apply(router, config)` is the one call a service makes; after it, every response carries
//! `x-openstack-request-id`, and every error response (including the ones axum itself produces for unknown paths,
//! wrong methods and extractor failures) has the upstream body for that service.

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderName, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::error::{ApiError, ErrorStyle, PendingError};

/// The header upstream uses for request ids.
pub const REQUEST_ID_HEADER: &str = "x-openstack-request-id";

/// How a service speaks on the wire.
#[derive(Clone, Debug)]
pub struct WireConfig {
    pub style: ErrorStyle,
    /// A second request-id header some services also send (Nova and Cinder: `x-compute-request-id`).
    pub extra_request_id_header: Option<HeaderName>,
    /// Largest request body buffered by extractors, in bytes. Streaming handlers opt out per route.
    pub body_limit: usize,
}

impl WireConfig {
    pub fn new(style: ErrorStyle) -> Self {
        Self { style, extra_request_id_header: None, body_limit: 1024 * 1024 }
    }
}

/// The id of the request being served, available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn generate() -> Self {
        RequestId(format!("req-{}", uuid::Uuid::new_v4()))
    }
}

/// Wraps `router` with the wire layer; unknown paths answer 404 in the service's style.
pub fn apply<S>(router: Router<S>, config: WireConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let limit = config.body_limit;
    let config = Arc::new(config);
    router
        .fallback(|| async { ApiError::not_found(ApiError::default_message(StatusCode::NOT_FOUND)) })
        .layer(DefaultBodyLimit::max(limit))
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            tracing::error!("request handler panicked");
            ApiError::internal(ApiError::default_message(StatusCode::INTERNAL_SERVER_ERROR)).into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(config, wire_middleware))
}

async fn wire_middleware(State(config): State<Arc<WireConfig>>, mut req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    req.extensions_mut().insert(request_id.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id.0,
        method = %req.method(),
        path = %req.uri().path(),
    );
    async move {
        let started = Instant::now();
        let response = next.run(req).await;
        let mut response = render_errors(response, config.style, &request_id.0).await;
        if let Ok(value) = HeaderValue::from_str(&request_id.0) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
            if let Some(extra) = &config.extra_request_id_header {
                response.headers_mut().insert(extra.clone(), value);
            }
        }
        let status = response.status().as_u16();
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::error!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request served");
        }
        response
    }
    .instrument(span)
    .await
}

/// Marks an error response whose body is already the one upstream sends (e.g. Swift middlewares answer some errors
/// in plain text): put it in the response's extensions and the wire layer leaves the body alone.
#[derive(Clone, Copy, Debug)]
pub struct Verbatim;

/// Gives every error response its service-style body: errors raised as [`ApiError`] are rendered as they are; bare
/// or plain-text error responses (axum's 404/405/413 and extractor rejections) are rendered with their text, or the
/// status's default message, keeping their headers (such as `Allow`); [`Verbatim`] responses are kept as they are.
async fn render_errors(response: Response, style: ErrorStyle, request_id: &str) -> Response {
    if response.extensions().get::<Verbatim>().is_some() {
        return response;
    }
    if let Some(PendingError(error)) = response.extensions().get::<PendingError>().cloned() {
        let (parts, _) = response.into_parts();
        let mut rendered = error.render(style, Some(request_id));
        merge_headers(&parts.headers, &mut rendered);
        return rendered;
    }
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(content_type.is_empty() || content_type.starts_with("text/plain")) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match http_body_util::Limited::new(body, 64 * 1024).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() { ApiError::default_message(status).to_string() } else { text };
    let mut rendered = ApiError::new(status, message).render(style, Some(request_id));
    merge_headers(&parts.headers, &mut rendered);
    rendered
}

fn merge_headers(from: &http::HeaderMap, into: &mut Response) {
    for (name, value) in from {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH && !into.headers().contains_key(name) {
            into.headers_mut().insert(name, value.clone());
        }
    }
}

/// An empty body, for handlers that answer with headers only.
pub fn empty() -> Body {
    Body::empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app() -> Router {
        let router = Router::new()
            .route("/ok", get(|| async { "fine" }).post(|crate::Json(v): crate::Json<serde_json::Value>| async move {
                axum::Json(v)
            }))
            .route("/fail", get(|| async { Err::<(), _>(ApiError::conflict("in use")) }))
            .route(
                "/verbatim",
                get(|| async {
                    let mut r = (StatusCode::BAD_REQUEST, "as upstream says it").into_response();
                    r.extensions_mut().insert(Verbatim);
                    r
                }),
            )
            .route("/panic", get(|| async {
                let v: Vec<u8> = Vec::new();
                #[allow(clippy::indexing_slicing)]
                let _ = v[1];
                "unreachable"
            }));
        apply(router, WireConfig::new(ErrorStyle::Nova))
    }

    async fn call(req: Request) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let r = app().oneshot(req).await.unwrap();
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (parts.status, parts.headers, json)
    }

    fn req(method: &str, uri: &str, body: &str) -> Request {
        Request::builder().method(method).uri(uri).body(Body::from(body.to_string())).unwrap()
    }

    #[tokio::test]
    async fn verbatim_errors_keep_their_body() {
        let r = app().oneshot(req("GET", "/verbatim", "")).await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.headers().contains_key(REQUEST_ID_HEADER));
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"as upstream says it");
    }

    #[tokio::test]
    async fn success_carries_request_id() {
        let (status, headers, _) = call(req("GET", "/ok", "")).await;
        assert_eq!(status, 200);
        assert!(headers[REQUEST_ID_HEADER].to_str().unwrap().starts_with("req-"));
    }

    #[tokio::test]
    async fn unknown_path_is_json_404() {
        let (status, headers, body) = call(req("GET", "/nope", "")).await;
        assert_eq!(status, 404);
        assert_eq!(body["itemNotFound"]["code"], 404);
        assert!(headers.contains_key(REQUEST_ID_HEADER));
    }

    #[tokio::test]
    async fn wrong_method_is_405_with_allow() {
        let (status, headers, body) = call(req("DELETE", "/ok", "")).await;
        assert_eq!(status, 405);
        let allow = headers[header::ALLOW].to_str().unwrap();
        assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
        assert_eq!(body["badMethod"]["code"], 405);
    }

    #[tokio::test]
    async fn handler_error_is_rendered_in_style() {
        let (status, _, body) = call(req("GET", "/fail", "")).await;
        assert_eq!(status, 409);
        assert_eq!(body["conflictingRequest"]["message"], "in use");
    }

    #[tokio::test]
    async fn bad_json_is_400_naming_the_problem() {
        let (status, _, body) = call(req("POST", "/ok", "{not json")).await;
        assert_eq!(status, 400);
        assert!(body["badRequest"]["message"].as_str().unwrap().contains("Malformed"), "{body}");
    }

    #[tokio::test]
    async fn oversize_body_is_413() {
        let big = format!("\"{}\"", "x".repeat(2 * 1024 * 1024));
        let (status, _, body) = call(req("POST", "/ok", &big)).await;
        assert_eq!(status, 413);
        assert_eq!(body["overLimit"]["code"], 413);
    }

    #[tokio::test]
    async fn panic_becomes_500_not_a_dropped_connection() {
        let (status, headers, body) = call(req("GET", "/panic", "")).await;
        assert_eq!(status, 500);
        assert_eq!(body["computeFault"]["code"], 500);
        assert!(headers.contains_key(REQUEST_ID_HEADER));
    }
}
