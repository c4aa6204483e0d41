//! The whole-cloud test harness: boots every implemented service in-process, on port 0, with a fresh temporary
//! database, through the same [`cloud::start`] as `stratus up`, and hands tests an authenticated client per role.
//!
//! ```ignore
//! let cloud = test_utils::TestCloud::start().await;
//! let r = cloud.admin.get("/identity/v3/auth/catalog").await;
//! cloud.shutdown().await;
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use cloud::{Config, RunningCloud, StartOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Password of the extra `reader` user the harness creates in the demo project.
const READER_PASSWORD: &str = "reader-password";

pub struct TestCloud {
    pub running: RunningCloud,
    /// Base URL of the listener, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// Admin of the `admin` project (roles admin, member, reader).
    pub admin: Client,
    /// Member of the `demo` project.
    pub member: Client,
    /// Reader of the `demo` project.
    pub reader: Client,
    /// An HTTP client with no token.
    pub anonymous: Client,
    _dir: tempfile::TempDir,
}

impl TestCloud {
    /// A fresh cloud on SQLite in a temporary directory.
    pub async fn start() -> TestCloud {
        Self::start_with(|_| {}).await
    }

    /// A fresh cloud without the in-process compute agent, for tests that count placement's providers.
    pub async fn start_without_agent() -> TestCloud {
        Self::start_opts(|_| {}, StartOptions { compute_agent: false, ..StartOptions::all_in_one() }).await
    }

    /// A fresh cloud; `adjust` may change the configuration (database URL, bus URL, …) before start.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestCloud {
        Self::start_opts(adjust, StartOptions::all_in_one()).await
    }

    /// A fresh cloud started with `opts` (for example with the in-process network agent).
    pub async fn start_with_options(adjust: impl FnOnce(&mut Config), opts: StartOptions) -> TestCloud {
        Self::start_opts(adjust, opts).await
    }

    async fn start_opts(adjust: impl FnOnce(&mut Config), opts: StartOptions) -> TestCloud {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::default();
        config.data_dir = dir.path().to_path_buf();
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.identity.password_hash_rounds = 4; // bcrypt's minimum: tests need speed, not strength
        adjust(&mut config);
        let running = cloud::start(config.clone(), opts).await.expect("cloud starts");
        let creds = running.credentials.clone().expect("bootstrapped");
        let mut spec = creds.bootstrap_spec(&config, running.cloud.catalog_entries());
        spec.members = vec![("demo".into(), "reader".into(), READER_PASSWORD.into(), "reader".into())];
        running.cloud.bootstrap(spec).await.expect("reader user");

        let url = running.url.clone();
        let anonymous = Client::new(&url, None);
        let admin = anonymous.login("admin", &creds.admin_password, "admin").await;
        let member = anonymous.login("demo", &creds.demo_password, "demo").await;
        let reader = anonymous.login("reader", READER_PASSWORD, "demo").await;
        TestCloud { running, url, admin, member, reader, anonymous, _dir: dir }
    }

    /// Starts one more compute agent, as host `host`, with the fake driver `fake` on the cloud's bus (a second
    /// compute host in the same process); returns once it has registered. The driver is returned so the test can
    /// inject failures; dropping the handle stops the agent.
    pub async fn start_fake_agent(
        &self,
        host: &str,
        fake: compute_agent::FakeConfig,
    ) -> (compute_agent::AgentHandle, Arc<compute_agent::FakeDriver>) {
        let mut config = cloud::agent::agent_config(&self.running.cloud.config);
        config.host = host.to_string();
        let driver = Arc::new(compute_agent::FakeDriver::new(fake));
        let agent = compute_agent::Agent::start(config, driver.clone(), self.running.cloud.bus.clone()).expect("agent starts");
        agent.registered().await.expect("the agent registers");
        (agent, driver)
    }

    pub async fn shutdown(self) {
        self.running.shutdown().await.expect("clean shutdown");
    }
}

/// An HTTP client bound to the cloud's base URL, with an optional token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    pub token: Option<String>,
    /// The token body this client authenticated with (`{"token": {...}}`).
    pub token_body: Value,
}

/// A response with its body already read.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Response {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_string(), token, token_body: Value::Null }
    }

    /// Logs in with a password, scoped to a project in the default domain; panics if that fails.
    pub async fn login(&self, user: &str, password: &str, project: &str) -> Client {
        let r = self.post("/identity/v3/auth/tokens", &password_auth(user, password, project)).await;
        assert_eq!(r.status, StatusCode::CREATED, "login as {user} failed: {}", r.text);
        let token = r.header("x-subject-token").expect("X-Subject-Token").to_string();
        Client { http: self.http.clone(), base: self.base.clone(), token: Some(token), token_body: r.json() }
    }

    pub fn with_token(&self, token: Option<String>) -> Client {
        Client { token, token_body: Value::Null, ..self.clone() }
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Response {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.header("X-Auth-Token", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b.to_string());
        }
        let r = req.send().await.expect("request sent");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        Response { status, headers, text }
    }

    /// Sends a raw body (for malformed-input tests).
    pub async fn raw(&self, method: Method, path: &str, body: &str) -> Response {
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).body(body.to_string());
        req = req.header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("X-Auth-Token", t);
        }
        let r = req.send().await.expect("request sent");
        Response { status: r.status(), headers: r.headers().clone(), text: r.text().await.unwrap_or_default() }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path, Some(body), &[]).await
    }
    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path, None, &[]).await
    }
}

/// A password authentication body scoped to a project, all in the default domain.
pub fn password_auth(user: &str, password: &str, project: &str) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}
    }})
}
