//! The axum side: [`require_auth`] middleware and extractors for [`Context`] and [`SubjectToken`].
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use auth::{AuthLayerState, Context, TokenValidator};
//!
//! fn router(validator: Arc<dyn TokenValidator>) -> Router {
//!     let state = AuthLayerState::new(validator, "http://identity.example:5000");
//!     Router::new()
//!         .route("/whoami", get(|ctx: Context| async move { ctx.user_id }))
//!         .route_layer(axum::middleware::from_fn_with_state(state, auth::require_auth))
//! }
//! ```

use std::sync::Arc;

use api_common::ApiError;
use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header, request::Parts};

use crate::{AuthError, Context, TokenValidator};

/// The header carrying the caller's token.
pub const AUTH_TOKEN_HEADER: &str = "x-auth-token";

/// What [`require_auth`] needs.
#[derive(Clone)]
pub struct AuthLayerState {
    pub validator: Arc<dyn TokenValidator>,
    /// The identity endpoint clients should authenticate against, advertised in `WWW-Authenticate` on 401s.
    pub www_authenticate_uri: String,
}

impl AuthLayerState {
    pub fn new(validator: Arc<dyn TokenValidator>, www_authenticate_uri: impl Into<String>) -> Self {
        Self { validator, www_authenticate_uri: www_authenticate_uri.into() }
    }

    fn unauthorized(&self) -> ApiError {
        let error = ApiError::unauthorized(ApiError::default_message(StatusCode::UNAUTHORIZED));
        match HeaderValue::from_str(&format!("Keystone uri=\"{}\"", self.www_authenticate_uri)) {
            Ok(value) => error.with_header(header::WWW_AUTHENTICATE, value),
            Err(_) => error,
        }
    }
}

/// The caller's raw token, for services that call other services on the caller's behalf. Never printed.
#[derive(Clone)]
pub struct SubjectToken(pub String);

impl std::fmt::Debug for SubjectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectToken(<redacted>)")
    }
}

/// Requires `X-Auth-Token`, validates it, and inserts [`Context`] and [`SubjectToken`] into the request extensions.
/// A missing or invalid token is a 401 (`The request you have made requires authentication.`) with
/// `WWW-Authenticate: Keystone uri="<identity url>"`; an unavailable identity service is a 503.
pub async fn require_auth(State(state): State<AuthLayerState>, req: Request, next: Next) -> Response {
    match request_token(&req) {
        Some(token) => authenticate(&state, token, req, next).await,
        None => state.unauthorized().into_response(),
    }
}

/// Like [`require_auth`] for a token that is present, but a request without `X-Auth-Token` goes on anonymously,
/// without [`Context`] (handlers take `Option<Context>` and decide, e.g. by an object store's container ACLs).
pub async fn optional_auth(State(state): State<AuthLayerState>, req: Request, next: Next) -> Response {
    match request_token(&req) {
        Some(token) => authenticate(&state, token, req, next).await,
        None => next.run(req).await,
    }
}

fn request_token(req: &Request) -> Option<String> {
    req.headers()
        .get(AUTH_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

async fn authenticate(state: &AuthLayerState, token: String, mut req: Request, next: Next) -> Response {
    match state.validator.validate(&token).await {
        Ok(context) => {
            req.extensions_mut().insert(context);
            req.extensions_mut().insert(SubjectToken(token));
            next.run(req).await
        }
        Err(AuthError::Invalid) => {
            tracing::info!("rejected a request with an invalid token");
            state.unauthorized().into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot validate a token");
            ApiError::from(e).into_response()
        }
    }
}

fn not_authenticated() -> ApiError {
    ApiError::unauthorized(ApiError::default_message(StatusCode::UNAUTHORIZED))
}

impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Context>().cloned().ok_or_else(not_authenticated)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Context {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Context>().cloned())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SubjectToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<SubjectToken>().cloned().ok_or_else(not_authenticated)
    }
}

#[cfg(test)]
mod tests {
    use api_common::{ErrorStyle, WireConfig, wire};
    use async_trait::async_trait;
    use axum::{Router, body::Body, routing::get};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::context::tests::member;

    struct Fixed;

    #[async_trait]
    impl TokenValidator for Fixed {
        async fn validate(&self, token: &str) -> Result<Context, AuthError> {
            match token {
                "valid" => Ok(member("p1")),
                "down" => Err(AuthError::Unavailable("identity is down".into())),
                _ => Err(AuthError::Invalid),
            }
        }
    }

    fn app() -> Router {
        let state = AuthLayerState::new(Arc::new(Fixed), "http://identity.test:5000");
        let router = Router::new()
            .route(
                "/whoami",
                get(|ctx: Context, token: SubjectToken| async move {
                    format!("{} {} {}", ctx.user_id, ctx.project_id.unwrap_or_default(), token.0)
                }),
            )
            .route_layer(axum::middleware::from_fn_with_state(state, require_auth))
            .route("/open", get(|ctx: Option<Context>| async move { format!("{}", ctx.is_some()) }))
            .route("/misrouted", get(|ctx: Context| async move { ctx.user_id }))
            .merge(
                Router::new()
                    .route(
                        "/maybe",
                        get(|ctx: Option<Context>| async move { ctx.map(|c| c.user_id).unwrap_or("anonymous".into()) }),
                    )
                    .route_layer(axum::middleware::from_fn_with_state(
                        AuthLayerState::new(Arc::new(Fixed), "http://identity.test:5000"),
                        optional_auth,
                    )),
            );
        wire::apply(router, WireConfig::new(ErrorStyle::Keystone))
    }

    async fn call(path: &str, token: Option<&str>) -> (StatusCode, http::HeaderMap, String) {
        let mut req = Request::builder().uri(path);
        if let Some(t) = token {
            req = req.header(AUTH_TOKEN_HEADER, t);
        }
        let response = app().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn message(body: &str) -> String {
        let v: Value = serde_json::from_str(body).unwrap();
        v["error"]["message"].as_str().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn no_token_is_401_with_www_authenticate() {
        for token in [None, Some(""), Some("   ")] {
            let (status, headers, body) = call("/whoami", token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Keystone uri=\"http://identity.test:5000\"");
            assert_eq!(message(&body), "The request you have made requires authentication.");
        }
    }

    #[tokio::test]
    async fn valid_token_reaches_the_handler_with_context() {
        let (status, _, body) = call("/whoami", Some("valid")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "u1 p1 valid");
    }

    #[tokio::test]
    async fn invalid_token_is_401() {
        let (status, headers, body) = call("/whoami", Some("forged")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(message(&body), "The request you have made requires authentication.");
    }

    #[tokio::test]
    async fn identity_outage_is_503() {
        let (status, headers, _) = call("/whoami", Some("down")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!headers.contains_key(header::WWW_AUTHENTICATE));
    }

    #[tokio::test]
    async fn extractor_without_middleware_rejects_with_401() {
        let (status, _, body) = call("/misrouted", Some("valid")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(message(&body), "The request you have made requires authentication.");
        let (status, _, body) = call("/open", Some("valid")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "false"));
    }

    #[tokio::test]
    async fn optional_auth_lets_anonymous_requests_through_but_not_bad_tokens() {
        let (status, _, body) = call("/maybe", None).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "anonymous"));
        let (status, _, body) = call("/maybe", Some("valid")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "u1"));
        let (status, headers, _) = call("/maybe", Some("forged")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(call("/maybe", Some("down")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn subject_token_is_not_debug_printed() {
        assert!(!format!("{:?}", SubjectToken("secret-token".into())).contains("secret"));
    }
}
