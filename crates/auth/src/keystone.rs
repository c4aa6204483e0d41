//! Validating tokens against a remote identity service over Keystone's v3 API, for split deployments.
//!
//! [`HttpValidator`] asks `GET /v3/auth/tokens` with the subject token in `X-Subject-Token` and its own service
//! token in `X-Auth-Token`, as keystonemiddleware does. It obtains the service token by password authentication,
//! renews it shortly before it expires, and once more whenever identity answers 401 (the service token was revoked
//! or identity restarted with new keys). Identity's 404 means the subject token is invalid; anything else that is
//! not a token body is [`AuthError::Unavailable`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{AuthError, Context, TokenValidator};

const SUBJECT_TOKEN: &str = "x-subject-token";
const AUTH_TOKEN: &str = "x-auth-token";
/// Renew the service token when less than this is left (keystoneauth's `MIN_TOKEN_LIFE_SECONDS`).
const RENEW_BEFORE: chrono::Duration = chrono::Duration::seconds(120);

/// The service user this service authenticates as, like keystonemiddleware's `[keystone_authtoken]` section.
#[derive(Clone, Deserialize)]
pub struct ServiceCredentials {
    /// The identity endpoint, with or without a trailing `/v3` (`http://identity.example:5000`).
    pub auth_url: String,
    pub username: String,
    pub password: String,
    pub user_domain_name: String,
    pub project_name: String,
    pub project_domain_name: String,
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("user_domain_name", &self.user_domain_name)
            .field("project_name", &self.project_name)
            .field("project_domain_name", &self.project_domain_name)
            .finish()
    }
}

struct ServiceToken {
    value: String,
    expires_at: DateTime<Utc>,
}

/// A [`TokenValidator`] that asks a remote identity service. Put a [`crate::CachingValidator`] in front of it.
pub struct HttpValidator {
    client: reqwest::Client,
    /// The identity endpoint without `/v3`.
    identity_url: String,
    credentials: ServiceCredentials,
    service_token: tokio::sync::Mutex<Option<ServiceToken>>,
}

impl HttpValidator {
    pub fn new(credentials: ServiceCredentials) -> Result<Self, AuthError> {
        let trimmed = credentials.auth_url.trim_end_matches('/');
        let identity_url = trimmed.strip_suffix("/v3").unwrap_or(trimmed).to_string();
        let parsed = reqwest::Url::parse(&identity_url)
            .map_err(|e| AuthError::Config(format!("auth_url {:?}: {e}", credentials.auth_url)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AuthError::Config(format!("auth_url {:?} is not an HTTP URL", credentials.auth_url)));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| AuthError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { client, identity_url, credentials, service_token: tokio::sync::Mutex::new(None) })
    }

    /// The identity endpoint (without `/v3`), for `WWW-Authenticate` headers.
    pub fn identity_url(&self) -> &str {
        &self.identity_url
    }

    fn tokens_url(&self) -> String {
        format!("{}/v3/auth/tokens?nocatalog", self.identity_url)
    }

    /// The service's own token (project-scoped, from its credentials), for calling other services' APIs: the
    /// current one, or a new one when there is none, it is about to expire, or it is `rejected` (the caller got a
    /// 401 with it).
    pub async fn service_token(&self, rejected: Option<&str>) -> Result<String, AuthError> {
        let mut current = self.service_token.lock().await;
        if let Some(token) = current.as_ref() {
            let fresh = token.expires_at - Utc::now() > RENEW_BEFORE;
            if fresh && rejected != Some(token.value.as_str()) {
                return Ok(token.value.clone());
            }
        }
        let issued = self.issue_service_token().await?;
        let value = issued.value.clone();
        *current = Some(issued);
        Ok(value)
    }

    async fn issue_service_token(&self) -> Result<ServiceToken, AuthError> {
        let c = &self.credentials;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.user_domain_name}, "password": c.password,
            }}},
            "scope": {"project": {"name": c.project_name, "domain": {"name": c.project_domain_name}}},
        }});
        let response = self
            .client
            .post(self.tokens_url())
            .json(&body)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("cannot reach identity: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            tracing::error!(%status, user = %c.username, "identity refused to issue the service token");
            return Err(AuthError::Unavailable(format!("identity answered {status} to the service credentials")));
        }
        let value = response
            .headers()
            .get(SUBJECT_TOKEN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| AuthError::Unavailable("identity issued a token without X-Subject-Token".into()))?;
        #[derive(Deserialize)]
        struct Issued {
            token: IssuedToken,
        }
        #[derive(Deserialize)]
        struct IssuedToken {
            expires_at: DateTime<Utc>,
        }
        let issued: Issued =
            response.json().await.map_err(|e| AuthError::Unavailable(format!("unreadable service token body: {e}")))?;
        tracing::debug!(expires_at = %issued.token.expires_at, "obtained a service token");
        Ok(ServiceToken { value, expires_at: issued.token.expires_at })
    }

    /// One validation call; `Ok(None)` when identity rejected our service token.
    async fn fetch(&self, subject: &HeaderValue, service_token: &str) -> Result<Option<Context>, AuthError> {
        let response = self
            .client
            .get(self.tokens_url())
            .header(SUBJECT_TOKEN, subject.clone())
            .header(AUTH_TOKEN, service_token)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("cannot reach identity: {e}")))?;
        match response.status() {
            StatusCode::OK => {
                let body: Value =
                    response.json().await.map_err(|e| AuthError::Unavailable(format!("unreadable token body: {e}")))?;
                Context::from_keystone_token(&body).map(Some)
            }
            StatusCode::NOT_FOUND => Err(AuthError::Invalid),
            StatusCode::UNAUTHORIZED => Ok(None),
            status => {
                tracing::error!(%status, "bad response from identity while validating a token");
                Err(AuthError::Unavailable(format!("identity answered {status} while validating a token")))
            }
        }
    }
}

#[async_trait]
impl TokenValidator for HttpValidator {
    async fn validate(&self, token: &str) -> Result<Context, AuthError> {
        let Ok(mut subject) = HeaderValue::from_str(token) else { return Err(AuthError::Invalid) };
        subject.set_sensitive(true);
        let service_token = self.service_token(None).await?;
        if let Some(context) = self.fetch(&subject, &service_token).await? {
            return Ok(context);
        }
        tracing::info!("identity rejected the service token; renewing it");
        let service_token = self.service_token(Some(&service_token)).await?;
        match self.fetch(&subject, &service_token).await? {
            Some(context) => Ok(context),
            None => Err(AuthError::Unavailable("identity rejected a freshly issued service token".into())),
        }
    }
}

#[derive(Deserialize)]
struct TokenDocument {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    user: Owned,
    #[serde(default)]
    project: Option<Owned>,
    #[serde(default)]
    domain: Option<IdName>,
    #[serde(default)]
    system: Option<System>,
    #[serde(default)]
    roles: Vec<IdName>,
    expires_at: DateTime<Utc>,
    #[serde(default)]
    audit_ids: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    /// keystoneauth reads an absent `is_admin_project` as true (no admin project configured).
    #[serde(default = "yes")]
    is_admin_project: bool,
    #[serde(default)]
    application_credential: Option<Id>,
    #[serde(default, rename = "OS-TRUST:trust")]
    trust: Option<Id>,
}

fn yes() -> bool {
    true
}

/// A user or project: id, name and owning domain.
#[derive(Deserialize)]
struct Owned {
    id: String,
    name: String,
    domain: IdName,
}

#[derive(Deserialize)]
struct IdName {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct Id {
    id: String,
}

#[derive(Deserialize)]
struct System {
    #[serde(default)]
    all: bool,
}

impl Context {
    /// Reads a Keystone v3 token document (`{"token": {...}}`, as `GET /v3/auth/tokens` returns it).
    pub fn from_keystone_token(document: &Value) -> Result<Self, AuthError> {
        let TokenDocument { token } = TokenDocument::deserialize(document)
            .map_err(|e| AuthError::Unavailable(format!("unreadable token body: {e}")))?;
        let (project_id, project_name, project_domain_id, project_domain_name) = match token.project {
            Some(p) => (Some(p.id), Some(p.name), Some(p.domain.id), Some(p.domain.name)),
            None => (None, None, None, None),
        };
        let (domain_id, domain_name) = match token.domain {
            Some(d) => (Some(d.id), Some(d.name)),
            None => (None, None),
        };
        let (role_ids, roles) = token.roles.into_iter().map(|r| (r.id, r.name)).unzip();
        Ok(Context {
            user_id: token.user.id,
            user_name: token.user.name,
            user_domain_id: token.user.domain.id,
            user_domain_name: token.user.domain.name,
            project_id,
            project_name,
            project_domain_id,
            project_domain_name,
            domain_id,
            domain_name,
            system_scope: token.system.filter(|s| s.all).map(|_| "all".to_string()),
            roles,
            role_ids,
            is_admin_project: token.is_admin_project,
            audit_ids: token.audit_ids,
            expires_at: token.expires_at,
            auth_methods: token.methods,
            application_credential_id: token.application_credential.map(|a| a.id),
            trust_id: token.trust.map(|t| t.id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(url: &str) -> ServiceCredentials {
        ServiceCredentials {
            auth_url: url.into(),
            username: "nova".into(),
            password: "s3cret".into(),
            user_domain_name: "Default".into(),
            project_name: "service".into(),
            project_domain_name: "Default".into(),
        }
    }

    #[test]
    fn auth_url_is_normalised() {
        assert_eq!(HttpValidator::new(creds("http://id:5000/v3/")).unwrap().identity_url(), "http://id:5000");
        assert_eq!(HttpValidator::new(creds("http://h/identity")).unwrap().identity_url(), "http://h/identity");
        assert!(matches!(HttpValidator::new(creds("not a url")), Err(AuthError::Config(_))));
        assert!(matches!(HttpValidator::new(creds("ftp://h")), Err(AuthError::Config(_))));
    }

    #[test]
    fn password_is_not_debug_printed() {
        let shown = format!("{:?}", creds("http://id"));
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn minimal_unscoped_token() {
        let body = json!({"token": {
            "methods": ["password"],
            "user": {"id": "u", "name": "n", "domain": {"id": "default", "name": "Default"}},
            "expires_at": "2030-01-01T00:00:00.000000Z",
            "audit_ids": ["x"],
        }});
        let ctx = Context::from_keystone_token(&body).unwrap();
        assert_eq!(ctx.project_id, None);
        assert!(ctx.roles.is_empty());
        assert!(ctx.is_admin_project);
        assert_eq!(ctx.expires_at.to_rfc3339(), "2030-01-01T00:00:00+00:00");
        let garbled = json!({"token": {"user": {"id": "u"}}});
        assert!(matches!(Context::from_keystone_token(&garbled), Err(AuthError::Unavailable(_))));
    }
}
