//! A loopback server implementing just the two Keystone calls `HttpValidator` makes: password authentication
//! (`POST /v3/auth/tokens`) and token validation (`GET /v3/auth/tokens`), with Keystone's status codes and bodies.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

pub const SERVICE_USER: &str = "nova";
pub const SERVICE_PASSWORD: &str = "nova-service-password";

#[derive(Default)]
pub struct Keystone {
    /// Service tokens identity currently honours.
    pub service_tokens: Mutex<HashSet<String>>,
    /// Subject tokens and the token body each validates to.
    pub subjects: Mutex<HashMap<String, Value>>,
    pub issued: AtomicUsize,
    pub validations: AtomicUsize,
    /// Lifetime of issued service tokens, in seconds.
    pub service_token_lifetime: Mutex<i64>,
}

impl Keystone {
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
    pub fn validations(&self) -> usize {
        self.validations.load(Ordering::SeqCst)
    }
    /// Forgets every service token, as after a revocation or a key rotation.
    pub fn revoke_service_tokens(&self) {
        self.service_tokens.lock().unwrap().clear();
    }
    pub fn add_subject(&self, token: &str, body: Value) {
        self.subjects.lock().unwrap().insert(token.to_string(), body);
    }
}

/// Serves a fresh Keystone on 127.0.0.1; returns its state and `http://` base URL.
pub async fn start() -> (Arc<Keystone>, String) {
    let keystone = Arc::new(Keystone { service_token_lifetime: Mutex::new(3600), ..Keystone::default() });
    let app = Router::new().route("/v3/auth/tokens", post(issue).get(validate)).with_state(keystone.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (keystone, format!("http://{addr}"))
}

fn error(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    (status, Json(json!({"error": {"code": status.as_u16(), "message": message, "title": title}}))).into_response()
}

pub fn timestamp(offset: Duration) -> String {
    (Utc::now() + offset).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

async fn issue(State(ks): State<Arc<Keystone>>, Json(body): Json<Value>) -> Response {
    let auth = &body["auth"];
    let user = &auth["identity"]["password"]["user"];
    let project = &auth["scope"]["project"];
    let accepted = auth["identity"]["methods"] == json!(["password"])
        && user["name"] == SERVICE_USER
        && user["domain"]["name"] == "Default"
        && user["password"] == SERVICE_PASSWORD
        && project["name"] == "service"
        && project["domain"]["name"] == "Default";
    if !accepted {
        return error(StatusCode::UNAUTHORIZED, "The request you have made requires authentication.");
    }
    let n = ks.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("gAAAAABservice{n}");
    ks.service_tokens.lock().unwrap().insert(token.clone());
    let lifetime = *ks.service_token_lifetime.lock().unwrap();
    let body = json!({"token": {
        "methods": ["password"],
        "user": {"domain": {"id": "default", "name": "Default"}, "id": "9c1d7bd5e1a94e3c8ee0bd7be1ed4b5c",
                 "name": SERVICE_USER, "password_expires_at": null},
        "audit_ids": [format!("audit-service-{n}")],
        "expires_at": timestamp(Duration::seconds(lifetime)),
        "issued_at": timestamp(Duration::zero()),
        "project": {"domain": {"id": "default", "name": "Default"}, "id": "5b2a1c4e0d3f4a8b9c7d6e5f4a3b2c1d",
                    "name": "service"},
        "is_domain": false,
        "roles": [{"id": "3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c", "name": "service"}],
    }});
    let mut headers = HeaderMap::new();
    headers.insert("x-subject-token", token.parse().unwrap());
    (StatusCode::CREATED, headers, Json(body)).into_response()
}

async fn validate(State(ks): State<Arc<Keystone>>, headers: HeaderMap) -> Response {
    ks.validations.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    if !ks.service_tokens.lock().unwrap().contains(&header("x-auth-token")) {
        return error(StatusCode::UNAUTHORIZED, "The request you have made requires authentication.");
    }
    let subject = header("x-subject-token");
    if subject == "boom" {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unexpected error prevented the server from fulfilling your request.",
        );
    }
    match ks.subjects.lock().unwrap().get(&subject) {
        Some(body) => (StatusCode::OK, Json(body.clone())).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("Could not find token: {subject}.")),
    }
}
