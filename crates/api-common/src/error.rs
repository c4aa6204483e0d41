//! The one error type every HTTP handler returns, and its rendering in each service's upstream style.
//!
//! A handler returns `Err(ApiError)`. `ApiError::into_response` does not pick a body format: it stores itself in the
//! response extensions, and the service's wire layer (see [`crate::wire`]) renders it in that service's style. That
//! keeps the status-code mapping in each service's error type and the body format in exactly one place.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::json;

/// How a service writes its error bodies, as upstream does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"error": {"code": 404, "title": "Not Found", "message": "..."}}`
    Keystone,
    /// `{"itemNotFound": {"code": 404, "message": "..."}}` (Nova and Cinder).
    Nova,
    /// `{"NeutronError": {"type": "NetworkNotFound", "message": "...", "detail": ""}}`
    Neutron,
    /// webob's JSON body: `{"code": "404 Not Found", "title": "Not Found", "message": "..."}` (Glance).
    Glance,
    /// `{"errors": [{"status": 404, "title": "Not Found", "detail": "...", "code": "...", "request_id": "..."}]}`
    Placement,
    /// Swift's short HTML bodies: `<html><h1>Not Found</h1><p>...</p></html>`.
    Swift,
}

/// An error on its way to the client: a status, a message, and an optional machine-readable code
/// (Neutron's `type`, Placement's `code`).
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub code: Option<Cow<'static, str>>,
    pub headers: HeaderMap,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), code: None, headers: HeaderMap::new() }
    }
    /// Sets the machine-readable code (Neutron's error `type`, Placement's error `code`).
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = Some(code.into());
        self
    }
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, message)
    }

    /// The message a bare status gets when nothing more specific is known (webob's wording, which upstream keeps).
    pub fn default_message(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 => "The server could not comply with the request since it is either malformed or otherwise incorrect.",
            401 => "The request you have made requires authentication.",
            403 => "You are not authorized to perform the requested action.",
            404 => "The resource could not be found.",
            405 => "The method is not allowed for the requested URL.",
            406 => "The requested version is not supported by the API.",
            409 => "There was a conflict when trying to complete your request.",
            413 => "The request body is too large.",
            415 => "The request media type is not supported by this server.",
            501 => "The requested function is not implemented.",
            503 => "The service is unavailable.",
            _ => "An unexpected error prevented the server from fulfilling your request.",
        }
    }

    /// Renders this error as a response in `style`. `request_id` goes where upstream puts it (Placement's body).
    pub fn render(&self, style: ErrorStyle, request_id: Option<&str>) -> Response {
        let status = self.status;
        let title = status.canonical_reason().unwrap_or("Error");
        let (content_type, body) = match style {
            ErrorStyle::Keystone => (
                "application/json",
                json!({"error": {"code": status.as_u16(), "title": title, "message": self.message}}).to_string(),
            ),
            ErrorStyle::Nova => {
                let key = nova_fault_name(status);
                ("application/json", json!({key: {"code": status.as_u16(), "message": self.message}}).to_string())
            }
            ErrorStyle::Neutron => {
                let kind = self.code.as_deref().unwrap_or_else(|| neutron_default_type(status));
                (
                    "application/json",
                    json!({"NeutronError": {"type": kind, "message": self.message, "detail": ""}}).to_string(),
                )
            }
            ErrorStyle::Glance => (
                "application/json",
                json!({"code": format!("{} {}", status.as_u16(), title), "title": title, "message": self.message})
                    .to_string(),
            ),
            ErrorStyle::Placement => (
                "application/json",
                json!({"errors": [{
                    "status": status.as_u16(),
                    "title": title,
                    "detail": self.message,
                    "code": self.code.as_deref().unwrap_or("placement.undefined_code"),
                    "request_id": request_id,
                }]})
                .to_string(),
            ),
            ErrorStyle::Swift => (
                "text/html; charset=UTF-8",
                format!("<html><h1>{}</h1><p>{}</p></html>", title, html_escape(&self.message)),
            ),
        };
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        for (name, value) in &self.headers {
            response.headers_mut().insert(name, value.clone());
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Marker placed in response extensions so the wire layer knows the body still has to be rendered.
#[derive(Clone, Debug)]
pub(crate) struct PendingError(pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(PendingError(self));
        response
    }
}

/// Nova's (and Cinder's) fault names, keyed by status, as in upstream's `_fault_names`.
fn nova_fault_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

fn neutron_default_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "HTTPBadRequest",
        401 => "HTTPUnauthorized",
        403 => "HTTPForbidden",
        404 => "HTTPNotFound",
        405 => "HTTPMethodNotAllowed",
        409 => "HTTPConflict",
        413 => "HTTPRequestEntityTooLarge",
        _ => "HTTPInternalServerError",
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(r: Response) -> serde_json::Value {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn keystone_style() {
        let r = ApiError::not_found("Could not find user: x.").render(ErrorStyle::Keystone, None);
        assert_eq!(r.status(), 404);
        let v = body_json(r).await;
        assert_eq!(v["error"]["code"], 404);
        assert_eq!(v["error"]["title"], "Not Found");
        assert_eq!(v["error"]["message"], "Could not find user: x.");
    }

    #[tokio::test]
    async fn nova_style_uses_fault_names() {
        let v = body_json(ApiError::conflict("busy").render(ErrorStyle::Nova, None)).await;
        assert_eq!(v["conflictingRequest"]["code"], 409);
        let v = body_json(ApiError::internal("boom").render(ErrorStyle::Nova, None)).await;
        assert_eq!(v["computeFault"]["message"], "boom");
    }

    #[tokio::test]
    async fn neutron_and_placement_carry_codes() {
        let e = ApiError::not_found("Network x could not be found.").with_code("NetworkNotFound");
        let v = body_json(e.render(ErrorStyle::Neutron, None)).await;
        assert_eq!(v["NeutronError"]["type"], "NetworkNotFound");
        let v = body_json(ApiError::bad_request("bad").render(ErrorStyle::Placement, Some("req-1"))).await;
        assert_eq!(v["errors"][0]["status"], 400);
        assert_eq!(v["errors"][0]["code"], "placement.undefined_code");
        assert_eq!(v["errors"][0]["request_id"], "req-1");
    }

    #[tokio::test]
    async fn swift_style_is_escaped_html() {
        let r = ApiError::not_found("<x>").render(ErrorStyle::Swift, None);
        assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"<html><h1>Not Found</h1><p>&lt;x&gt;</p></html>");
    }
}
