//! Requests from compute to another service's public API (network, block storage): as the caller, with their
//! token, or as compute itself, with the service token, which is renewed and the request retried once when the
//! other service refuses it (401).

use std::{sync::Arc, time::Duration};

use auth::HttpValidator;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::error::Error;

/// How a call authenticates.
#[derive(Clone, Copy, Debug)]
pub enum As<'a> {
    /// The caller's own token.
    User(&'a str),
    /// The compute service's token.
    Service,
}

/// A path segment from a client: ids never contain these.
pub fn safe(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '?', '#', '%', '&'])
}

/// The HTTP side of a service client: the connection pool, the service's credentials and the service's name for
/// error messages.
#[derive(Clone)]
pub(crate) struct ServiceHttp {
    http: reqwest::Client,
    session: Option<Arc<HttpValidator>>,
    /// `network`, `block storage`: errors read "<name> service: …".
    name: &'static str,
}

impl ServiceHttp {
    pub(crate) fn new(name: &'static str, timeout: Duration, session: Option<Arc<HttpValidator>>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(ServiceHttp { http, session, name })
    }

    /// The other service cannot be used: 503 to compute's caller.
    pub(crate) fn unavailable(&self, e: impl std::fmt::Display) -> Error {
        Error::Unavailable(format!("{} service: {e}", self.name))
    }

    /// One request to `url` (`path` names it in errors) with `headers`; with the service token it is retried once
    /// with a fresh token on 401. A 5xx answer is an error; any other answer is returned with its JSON body (`Null`
    /// when empty or not JSON).
    pub(crate) async fn send(
        &self,
        who: As<'_>,
        method: Method,
        url: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Error> {
        let mut token = match who {
            As::User(t) => t.to_string(),
            As::Service => {
                let s = self.session.as_ref().ok_or_else(|| self.unavailable("no service credentials"))?;
                s.service_token(None).await.map_err(|e| self.unavailable(e))?
            }
        };
        for attempt in 0..2 {
            let mut req = self.http.request(method.clone(), url).header("x-auth-token", &token).header("accept", "application/json");
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| self.unavailable(e))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED
                && attempt == 0
                && let (As::Service, Some(s)) = (who, &self.session)
            {
                token = s.service_token(Some(&token)).await.map_err(|e| self.unavailable(e))?;
                continue;
            }
            let bytes = resp.bytes().await.map_err(|e| self.unavailable(e))?;
            let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
            if status.is_server_error() {
                return Err(self.unavailable(format!("{method} {path} answered {status}: {value}")));
            }
            return Ok((status, value));
        }
        Err(self.unavailable("the service token was refused twice"))
    }
}
