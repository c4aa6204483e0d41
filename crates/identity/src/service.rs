//! The identity service's logic: authentication, token issue/validation/revocation, the catalog, bootstrap.
//! HTTP lives in [`crate::api`]; SQL in [`crate::store`].

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use base64::{Engine, engine::general_purpose::URL_SAFE};
use chrono::{DateTime, Duration, TimeZone, Utc};
use db::Database;
use serde_json::{Value, json};

use crate::{
    error::Error,
    store::{
        AppCredRow, DomainRow, EndpointRow, ProjectRow, RevocationRow, RoleRow, SYSTEM_ALL, ServiceRow, Store,
        TrustRow, UserDetail, UserRow, kind,
    },
    token::{Payload, Scope, TokenKeys, new_audit_id},
};

/// The `default` domain every cloud has.
pub const DEFAULT_DOMAIN_ID: &str = "default";

#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// Fernet key repository directory.
    pub key_repository: PathBuf,
    /// Token lifetime, seconds (upstream default: one hour).
    pub token_expiration: i64,
    pub max_active_keys: usize,
    /// bcrypt cost (upstream default 12).
    pub password_hash_rounds: u32,
    /// Account lockout, password history, age, expiry and strength rules.
    pub security: SecurityCompliance,
}

impl IdentityConfig {
    pub fn new(key_repository: PathBuf) -> Self {
        IdentityConfig {
            key_repository,
            token_expiration: 3600,
            max_active_keys: 3,
            password_hash_rounds: 12,
            security: SecurityCompliance::default(),
        }
    }
}

/// Upstream's `[security_compliance]` options. Zero (or `None`) disables a rule, as upstream. The defaults here are
/// upstream's (everything off); deployments choose theirs in the cloud configuration.
#[derive(Clone, Debug, Default)]
pub struct SecurityCompliance {
    /// Consecutive failed password authentications that lock an account (0: never).
    pub lockout_failure_attempts: u32,
    /// Seconds an account stays locked; 0 with a non-zero `lockout_failure_attempts` locks until an admin resets
    /// the password or re-enables the user.
    pub lockout_duration: u32,
    /// A new password (self-service change) must differ from this many most recent passwords (0: no history).
    pub unique_last_password_count: u32,
    /// Days a password must be in use before its owner may change it (0: any time).
    pub minimum_password_age: u32,
    /// Days after which a password expires (`None`: never).
    pub password_expires_days: Option<u32>,
    /// Passwords must match this regular expression (whole string).
    pub password_regex: Option<String>,
    /// Shown to clients whose password does not match `password_regex`.
    pub password_regex_description: Option<String>,
    /// Passwords set by an administrator (create or reset) must be changed by their owner before first use.
    pub change_password_upon_first_use: bool,
}

/// A validated token with everything its body shows.
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub payload: Payload,
    pub issued_at: DateTime<Utc>,
    /// The user the token acts as: for a trust-scoped token with impersonation, the trustor.
    pub user: UserRow,
    pub user_domain: DomainRow,
    pub project: Option<(ProjectRow, DomainRow)>,
    pub domain: Option<DomainRow>,
    pub roles: Vec<RoleRow>,
    /// The credential of an `application_credential` token.
    pub application_credential: Option<AppCredRow>,
    /// The trust of a trust-scoped token.
    pub trust: Option<TrustRow>,
}

impl TokenInfo {
    /// Whether this token came from a restricted application credential, which may not manage application
    /// credentials or trusts.
    pub fn is_restricted_application_credential(&self) -> bool {
        self.application_credential.as_ref().is_some_and(|c| !c.unrestricted)
    }

    pub fn context(&self) -> auth::Context {
        let (project, project_domain) = match &self.project {
            Some((p, d)) => (Some(p), Some(d)),
            None => (None, None),
        };
        auth::Context {
            user_id: self.user.id.clone(),
            user_name: self.user.name.clone(),
            user_domain_id: self.user_domain.id.clone(),
            user_domain_name: self.user_domain.name.clone(),
            project_id: project.map(|p| p.id.clone()),
            project_name: project.map(|p| p.name.clone()),
            project_domain_id: project_domain.map(|d| d.id.clone()),
            project_domain_name: project_domain.map(|d| d.name.clone()),
            domain_id: self.domain.as_ref().map(|d| d.id.clone()),
            domain_name: self.domain.as_ref().map(|d| d.name.clone()),
            system_scope: matches!(self.payload.scope, Scope::System).then(|| "all".to_string()),
            roles: self.roles.iter().map(|r| r.name.clone()).collect(),
            role_ids: self.roles.iter().map(|r| r.id.clone()).collect(),
            // No admin project is configured, so every project counts as one (keystonemiddleware's default).
            is_admin_project: true,
            audit_ids: self.payload.audit_ids.clone(),
            expires_at: self.payload.expires_at,
            auth_methods: self.payload.methods.clone(),
            application_credential_id: match &self.payload.scope {
                Scope::ApplicationCredential { app_cred_id, .. } => Some(app_cred_id.clone()),
                _ => None,
            },
            trust_id: match &self.payload.scope {
                Scope::Trust { trust_id, .. } => Some(trust_id.clone()),
                _ => None,
            },
        }
    }
}

/// What a client asked to authenticate with (already parsed from the request body).
#[derive(Clone, Debug)]
pub enum Credentials {
    Password { user: UserRef, password: String },
    Token { token: String },
    ApplicationCredential { credential: AppCredRef, secret: String },
}

/// How an `application_credential` auth request names the credential: by id, or by name and owner.
#[derive(Clone, Debug)]
pub enum AppCredRef {
    Id(String),
    Name { name: String, user: UserRef },
}

#[derive(Clone, Debug)]
pub enum UserRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

#[derive(Clone, Debug)]
pub enum DomainRef {
    Id(String),
    Name(String),
}

#[derive(Clone, Debug)]
pub enum ScopeRequest {
    /// No scope given: the user's default project if they have a role there, else unscoped.
    Default,
    Unscoped,
    ProjectId(String),
    ProjectName { name: String, domain: DomainRef },
    Domain(DomainRef),
    System,
    /// `{"OS-TRUST:trust": {"id": ...}}`: the trust's project, as its trustee.
    Trust(String),
}

/// A catalog entry as token bodies show it.
#[derive(Clone, Debug)]
pub struct CatalogService {
    pub service: ServiceRow,
    pub endpoints: Vec<EndpointRow>,
}

/// Everything `stratus bootstrap` sets up (as `keystone-manage bootstrap`), plus extra projects/users.
#[derive(Clone, Debug)]
pub struct BootstrapSpec {
    pub admin_password: String,
    pub admin_username: String,
    pub admin_project: String,
    pub region: String,
    /// (type, name, public/internal/admin url) of every service to list in the catalog.
    pub services: Vec<(String, String, String)>,
    /// Extra (project, user, password, role) to create: `stratus up` adds `demo`.
    pub members: Vec<(String, String, String, String)>,
    /// Reset passwords of existing users to the given ones.
    pub reset_passwords: bool,
}

struct Revocations {
    events: Vec<RevocationRow>,
}

/// The identity service. Cheap to clone (`Arc` inside).
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: IdentityConfig,
    keys: RwLock<Arc<TokenKeys>>,
    /// When the key repository was last looked at, and its modification time then: rotations by
    /// `stratus identity fernet-rotate` (another process) are picked up within [`KEY_CHECK_INTERVAL`].
    keys_seen: std::sync::Mutex<(std::time::Instant, Option<std::time::SystemTime>)>,
    revocations: RwLock<Revocations>,
    /// Validated tokens keyed by token. Cleared whenever identity data changes (`generation`).
    cache: RwLock<HashMap<String, (u64, Arc<TokenInfo>)>>,
    generation: AtomicU64,
    catalog: RwLock<Option<Arc<Vec<CatalogService>>>>,
    /// `security.password_regex`, compiled.
    password_regex: Option<regex::Regex>,
    /// Roles and implication rules, tagged with the `generation` they were read at.
    role_graph: RwLock<Option<(u64, Arc<RoleGraph>)>>,
}

/// Every role and implication rule: what effective-role computation expands grants with.
#[derive(Debug, Default)]
pub struct RoleGraph {
    roles: HashMap<String, RoleRow>,
    implies: HashMap<String, Vec<String>>,
}

impl RoleGraph {
    pub fn new(roles: Vec<RoleRow>, rules: Vec<(String, String)>) -> Self {
        let mut implies: HashMap<String, Vec<String>> = HashMap::new();
        for (prior, implied) in rules {
            implies.entry(prior).or_default().push(implied);
        }
        RoleGraph { roles: roles.into_iter().map(|r| (r.id.clone(), r)).collect(), implies }
    }

    pub fn role(&self, id: &str) -> Option<&RoleRow> {
        self.roles.get(id)
    }

    /// Roles `id` implies directly.
    pub fn implied_by(&self, id: &str) -> &[String] {
        self.implies.get(id).map(Vec::as_slice).unwrap_or_default()
    }

    /// `ids` and every role they imply, transitively (cycles are harmless), as (role id, the role that implied it
    /// or `None` for the grant itself), breadth first. Domain-specific roles are included: callers drop them.
    pub fn expand<'a>(&'a self, ids: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, Option<&'a str>)> {
        let mut seen = BTreeSet::new();
        let mut out: Vec<(&str, Option<&str>)> = Vec::new();
        for id in ids {
            if seen.insert(id) {
                out.push((id, None));
            }
        }
        let mut i = 0;
        while i < out.len() {
            let (id, _) = out[i];
            for implied in self.implied_by(id) {
                if seen.insert(implied.as_str()) {
                    out.push((implied.as_str(), Some(id)));
                }
            }
            i += 1;
        }
        out
    }

    /// The roles that end up in a token for these grants: the grants and everything they imply, without
    /// domain-specific roles, ordered by name.
    pub fn effective<'a>(&'a self, ids: impl IntoIterator<Item = &'a str>) -> Vec<RoleRow> {
        let mut roles: Vec<RoleRow> = self
            .expand(ids)
            .into_iter()
            .filter_map(|(id, _)| self.roles.get(id))
            .filter(|r| r.domain_id.is_none())
            .cloned()
            .collect();
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        roles
    }
}

const CACHE_CAPACITY: usize = 50_000;

impl Identity {
    pub async fn new(db: Database, config: IdentityConfig) -> Result<Identity, Error> {
        let keys = TokenKeys::load_or_create(&config.key_repository)?;
        let config_key_dir = config.key_repository.clone();
        let password_regex = match &config.security.password_regex {
            Some(re) => Some(regex::Regex::new(re).map_err(|e| Error::Config(format!("password_regex: {e}")))?),
            None => None,
        };
        let store = Store::new(db);
        let identity = Identity {
            inner: Arc::new(Inner {
                store,
                config,
                keys: RwLock::new(Arc::new(keys)),
                keys_seen: std::sync::Mutex::new((std::time::Instant::now(), key_dir_mtime(&config_key_dir))),
                revocations: RwLock::new(Revocations { events: Vec::new() }),
                cache: RwLock::new(HashMap::new()),
                generation: AtomicU64::new(0),
                catalog: RwLock::new(None),
                password_regex,
                role_graph: RwLock::new(None),
            }),
        };
        Ok(identity)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.inner.config
    }

    /// Creates or upgrades the schema, then loads the revocation list.
    pub async fn migrate(&self) -> Result<(), Error> {
        self.inner.store.migrate().await?;
        self.reload_revocations().await
    }

    pub async fn reload_revocations(&self) -> Result<(), Error> {
        let since = Utc::now().timestamp() - self.inner.config.token_expiration - 60;
        let events = self.inner.store.revocation_list(since).await?;
        write(&self.inner.revocations).events = events;
        self.changed();
        Ok(())
    }

    /// Re-reads the key repository (after `stratus identity fernet-rotate`). Cached validations are dropped: a
    /// pruned key must stop validating its tokens at once.
    pub fn reload_keys(&self) -> Result<(), Error> {
        let keys = TokenKeys::load(&self.inner.config.key_repository)?;
        *write(&self.inner.keys) = Arc::new(keys);
        self.changed();
        Ok(())
    }

    /// The token keys, re-read when the repository changed on disk (checked at most every [`KEY_CHECK_INTERVAL`],
    /// so the hot path costs no system call).
    fn current_keys(&self) -> Result<Arc<TokenKeys>, Error> {
        let changed = {
            let mut seen = self.inner.keys_seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.0.elapsed() < KEY_CHECK_INTERVAL {
                false
            } else {
                let mtime = key_dir_mtime(&self.inner.config.key_repository);
                let changed = mtime != seen.1;
                *seen = (std::time::Instant::now(), mtime);
                changed
            }
        };
        if changed {
            tracing::info!("token key repository changed on disk; reloading keys");
            self.reload_keys()?;
        }
        Ok(read(&self.inner.keys).clone())
    }

    /// Records a revocation event (honoured at once by this process, persisted for others and restarts) and drops
    /// cached validations. Upstream's triggers: explicit revoke (audit id), user disabled/deleted/password changed
    /// (user id), project disabled/deleted (project id), role unassigned (user + project).
    pub(crate) async fn revoke_event(&self, ev: RevocationRow) -> Result<(), Error> {
        self.inner.store.revocation_create(&ev).await?;
        write(&self.inner.revocations).events.push(ev);
        self.changed();
        Ok(())
    }

    /// Something identity-relevant changed: cached validations and the catalog are stale. Every mutation of users,
    /// projects, domains, roles, assignments or the catalog calls this.
    pub(crate) fn changed(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        write(&self.inner.cache).clear();
        *write(&self.inner.catalog) = None;
    }

    // ---- authentication

    /// Authenticates and issues a token for the requested scope.
    pub async fn authenticate(&self, creds: Credentials, scope: ScopeRequest) -> Result<(String, TokenInfo), Error> {
        let now = Utc::now();
        let default_expiry = now + Duration::seconds(self.inner.config.token_expiration);
        let (user, methods, audit_ids, mut expires_at, scope) = match creds {
            Credentials::Password { user, password } => {
                let user = self.check_password(&user, &password).await?;
                (user, vec!["password".to_string()], vec![new_audit_id()], default_expiry, scope)
            }
            Credentials::Token { token } => {
                // Rescoping keeps the original expiry and chains the audit id, as upstream. An invalid (revoked,
                // expired) token is not found (404), as upstream.
                let info = self.validate(&token).await.map_err(|e| match e {
                    Error::InvalidToken => Error::not_found("token", format!("{}…", token.chars().take(8).collect::<String>())),
                    other => other,
                })?;
                match info.payload.scope {
                    Scope::ApplicationCredential { .. } => {
                        return Err(Error::Forbidden("Cannot rescope an application credential token.".into()));
                    }
                    Scope::Trust { .. } => {
                        return Err(Error::Forbidden(
                            "You are not authorized to perform the requested action: rescope a trust-scoped token."
                                .into(),
                        ));
                    }
                    _ => {}
                }
                let mut audit = vec![new_audit_id()];
                audit.extend(info.payload.audit_ids.first().cloned());
                let mut methods = info.payload.methods.clone();
                if !methods.iter().any(|m| m == "token") {
                    methods.push("token".into());
                }
                (info.user.clone(), methods, audit, info.payload.expires_at, scope)
            }
            Credentials::ApplicationCredential { credential, secret } => {
                if !matches!(scope, ScopeRequest::Default) {
                    return Err(Error::BadRequest("Application credentials cannot request a scope.".into()));
                }
                let (user, cred) = self.check_application_credential(&credential, &secret).await?;
                let mut expires = default_expiry;
                if let Some(cap) = cred.expires_at.and_then(|us| Utc.timestamp_micros(us).single()) {
                    expires = expires.min(cap);
                }
                let scope = Scope::ApplicationCredential { project_id: cred.project_id, app_cred_id: cred.id };
                let methods = vec!["application_credential".to_string()];
                return self.issue(user, methods, vec![new_audit_id()], expires, scope).await;
            }
        };
        let scope = match scope {
            ScopeRequest::Trust(trust_id) => {
                let trust = self.trust_for_trustee(&user, &trust_id).await?;
                if let Some(cap) = trust.expires_at.and_then(|us| Utc.timestamp_micros(us).single()) {
                    expires_at = expires_at.min(cap);
                }
                let project_id = trust.project_id.clone().ok_or_else(|| {
                    Error::Forbidden("A trust without a project cannot scope a token.".into())
                })?;
                // Checks the roles still hold before spending a use.
                self.trust_roles(&trust, &project_id).await?;
                if !self.inner.store.trust_consume_use(&trust.id).await? {
                    return Err(Error::not_found("trust", trust.id));
                }
                Scope::Trust { project_id, trust_id: trust.id }
            }
            other => self.resolve_scope(&user, other).await?,
        };
        self.issue(user, methods, audit_ids, expires_at, scope).await
    }

    async fn issue(
        &self,
        user: UserRow,
        methods: Vec<String>,
        audit_ids: Vec<String>,
        expires_at: DateTime<Utc>,
        scope: Scope,
    ) -> Result<(String, TokenInfo), Error> {
        // Tokens carry microseconds; so does the body of the response that issues them.
        let expires_at = Utc.timestamp_micros(expires_at.timestamp_micros()).single().unwrap_or(expires_at);
        let payload = Payload { user_id: user.id.clone(), methods, scope, expires_at, audit_ids };
        let keys = self.current_keys()?;
        let token = keys.issue(&payload)?;
        let info = self.build_info(payload, fernet_issued_at(&token).unwrap_or_else(Utc::now)).await.map_err(|e| match e {
            Error::InvalidToken | Error::NotFound { .. } => Error::Unauthorized,
            other => other,
        })?;
        Ok((token, info))
    }

    /// Checks an application credential's secret and expiry and that its owner may still log in. Any failure is a
    /// plain 401, as upstream.
    async fn check_application_credential(&self, r: &AppCredRef, secret: &str) -> Result<(UserRow, AppCredRow), Error> {
        let store = &self.inner.store;
        let cred = match r {
            AppCredRef::Id(id) => store.application_credential_get(id).await?,
            AppCredRef::Name { name, user } => {
                let owner = match user {
                    UserRef::Id(id) => store.user_get(id).await?,
                    UserRef::Name { name, domain } => match self.find_domain(domain).await? {
                        Some(d) => store.user_get_by_name(&d.id, name).await?,
                        None => None,
                    },
                };
                match owner {
                    Some(u) => store.application_credential_get_by_name(&u.id, name).await?,
                    None => None,
                }
            }
        };
        let Some(cred) = cred else {
            let _ = self.hash_password(secret).await;
            return Err(Error::Unauthorized.with_log("no such application credential"));
        };
        if !bcrypt_verify(secret.to_string(), cred.secret_hash.clone()).await? {
            return Err(Error::Unauthorized.with_log(&format!("wrong secret for application credential {}", cred.id)));
        }
        if cred.expires_at.is_some_and(|e| e <= Utc::now().timestamp_micros()) {
            return Err(Error::Unauthorized.with_log(&format!("application credential {} has expired", cred.id)));
        }
        let user = store.user_get(&cred.user_id).await?.filter(|u| u.enabled).ok_or(Error::Unauthorized)?;
        if !store.domain_get(&user.domain_id).await?.is_some_and(|d| d.enabled) {
            return Err(Error::Unauthorized);
        }
        Ok((user, cred))
    }

    /// A trust that is neither expired nor used up; `None` otherwise (upstream then answers 404).
    pub async fn active_trust(&self, id: &str) -> Result<Option<TrustRow>, Error> {
        let Some(t) = self.inner.store.trust_get(id).await? else { return Ok(None) };
        if t.expires_at.is_some_and(|e| e <= Utc::now().timestamp_micros()) || t.remaining_uses.is_some_and(|n| n <= 0) {
            return Ok(None);
        }
        Ok(Some(t))
    }

    /// The trust `trust_id`, checked for use by `user` as its trustee.
    async fn trust_for_trustee(&self, user: &UserRow, trust_id: &str) -> Result<TrustRow, Error> {
        let trust = self.active_trust(trust_id).await?.ok_or_else(|| Error::not_found("trust", trust_id))?;
        if trust.trustee_user_id != user.id {
            return Err(Error::Forbidden("You are not authorized to perform the requested action: user is not a trustee.".into()));
        }
        let trustor = self.inner.store.user_get(&trust.trustor_user_id).await?;
        if !trustor.is_some_and(|u| u.enabled) {
            return Err(Error::Forbidden("You are not authorized to perform the requested action: trustor is disabled.".into()));
        }
        Ok(trust)
    }

    /// The roles a trust confers on `project_id` now: its roles the trustor still holds there. Empty is an error.
    async fn trust_roles(&self, trust: &TrustRow, project_id: &str) -> Result<Vec<RoleRow>, Error> {
        let held = self.roles_on(&trust.trustor_user_id, kind::USER_PROJECT, project_id).await?;
        let roles: Vec<RoleRow> = held.into_iter().filter(|r| trust.role_ids.contains(&r.id)).collect();
        if roles.is_empty() {
            return Err(Error::InvalidToken);
        }
        Ok(roles)
    }

    /// Checks a password as upstream's password method does: account lockout first (a locked account is refused
    /// even with the right password), then the password (a failure counts towards lockout, a success resets the
    /// count), then that user and domain are enabled and the password has not expired.
    async fn check_password(&self, user: &UserRef, password: &str) -> Result<UserRow, Error> {
        let row = match user {
            UserRef::Id(id) => self.inner.store.user_detail_get(id).await?,
            UserRef::Name { name, domain } => match self.find_domain(domain).await? {
                Some(d) => match self.inner.store.user_get_by_name(&d.id, name).await? {
                    Some(u) => self.inner.store.user_detail_get(&u.id).await?,
                    None => None,
                },
                None => None,
            },
        };
        let Some(detail) = row else {
            // Spend the same effort as a real check so user existence does not leak through timing.
            let _ = self.hash_password(password).await;
            return Err(Error::Unauthorized);
        };
        self.verify_current_password(&detail, password).await?;
        let row = detail.user.clone();
        if !row.enabled {
            return Err(Error::Unauthorized.with_log(&format!("user {} is disabled", row.id)));
        }
        let domain = self.inner.store.domain_get(&row.domain_id).await?;
        if !domain.is_some_and(|d| d.enabled) {
            return Err(Error::Unauthorized);
        }
        if self.password_expired(&detail) {
            return Err(Error::AuthRefused(format!(
                "The password is expired and needs to be changed for user: {}.",
                row.id
            )));
        }
        Ok(row)
    }

    /// Lockout and password verification shared by authentication and self-service password change.
    async fn verify_current_password(&self, detail: &UserDetail, password: &str) -> Result<(), Error> {
        let sc = &self.inner.config.security;
        let store = &self.inner.store;
        let now = Utc::now().timestamp();
        let lockout = sc.lockout_failure_attempts > 0 && !option_set(detail, "ignore_lockout_failure_attempts");
        if lockout && detail.failed_auth_count >= i64::from(sc.lockout_failure_attempts) {
            let until = detail.failed_auth_at.unwrap_or(now) + i64::from(sc.lockout_duration);
            if sc.lockout_duration == 0 || until > now {
                tracing::info!(user_id = %detail.user.id, "authentication refused: account locked");
                return Err(Error::AuthRefused(format!("The account is locked for user: {}.", detail.user.id)));
            }
            store.user_auth_failure_reset(&detail.user.id).await?;
        }
        let ok = match detail.user.password_hash.clone() {
            Some(hash) => bcrypt_verify(password.to_string(), hash).await?,
            None => false,
        };
        if !ok {
            if lockout {
                store.user_auth_failure_record(&detail.user.id, now).await?;
            }
            return Err(Error::Unauthorized.with_log(&format!("wrong password for user {}", detail.user.id)));
        }
        if detail.failed_auth_count > 0 {
            store.user_auth_failure_reset(&detail.user.id).await?;
        }
        Ok(())
    }

    fn password_expired(&self, detail: &UserDetail) -> bool {
        !option_set(detail, "ignore_password_expiry")
            && detail.password_expires_at.is_some_and(|t| t <= Utc::now().timestamp())
    }

    /// Upstream's `validate_password`: the configured regular expression must match at the start of the password.
    pub fn validate_password_rules(&self, password: &str) -> Result<(), Error> {
        if let Some(re) = &self.inner.password_regex
            && re.find(password).is_none_or(|m| m.start() != 0)
        {
            let detail = self
                .inner
                .config
                .security
                .password_regex_description
                .clone()
                .unwrap_or_else(|| "the password does not match the required pattern".into());
            return Err(Error::BadRequest(format!("The password does not meet the requirements: {detail}.")));
        }
        Ok(())
    }

    /// When a password set now expires: at once when an administrator set it and owners must change such passwords
    /// on first use; after `password_expires_days` otherwise; never when the user's options exempt them.
    pub fn password_expiry(&self, options: &serde_json::Map<String, Value>, by_admin: bool) -> Option<i64> {
        let sc = &self.inner.config.security;
        let flag = |name: &str| options.get(name).and_then(Value::as_bool).unwrap_or(false);
        let now = Utc::now().timestamp();
        if by_admin && sc.change_password_upon_first_use && !flag("ignore_change_password_upon_first_use") {
            return Some(now);
        }
        match sc.password_expires_days {
            Some(days) if days > 0 && !flag("ignore_password_expiry") => Some(now + i64::from(days) * 86_400),
            _ => None,
        }
    }

    /// How many passwords the history keeps.
    fn history_len(&self) -> usize {
        usize::try_from(self.inner.config.security.unique_last_password_count).unwrap_or(usize::MAX).max(1)
    }

    /// Sets a password on an administrator's behalf (create or reset): strength rules apply, history and minimum
    /// age do not (as upstream). The caller revokes tokens and calls `changed()`.
    pub async fn set_password_by_admin(&self, detail: &UserDetail, password: &str) -> Result<(), Error> {
        self.validate_password_rules(password)?;
        let hash = self.hash_password(password).await?;
        let expires = self.password_expiry(&detail.options, true);
        self.inner.store.user_password_set(&detail.user.id, &hash, expires, false, self.history_len()).await
    }

    /// Self-service password change (`POST /v3/users/{id}/password`): the original password authenticates (an
    /// expired one is fine, as upstream, so expired users can recover), then `lock_password`, minimum age, the
    /// strength rules and the history apply. Revokes the user's tokens.
    pub async fn change_password(&self, user_id: &str, original: &str, new: &str) -> Result<(), Error> {
        let store = &self.inner.store;
        let Some(detail) = store.user_detail_get(user_id).await? else {
            let _ = self.hash_password(original).await;
            return Err(Error::Unauthorized);
        };
        self.verify_current_password(&detail, original).await.map_err(|e| match e {
            Error::Unauthorized => Error::AuthRefused("Error when changing user password: Invalid user / password".into()),
            other => other,
        })?;
        if !detail.user.enabled {
            return Err(Error::Unauthorized);
        }
        if option_set(&detail, "lock_password") {
            return Err(Error::Forbidden(
                "You cannot change your password at this time due to password policy disallowing password changes. \
                 Please contact your administrator to reset your password."
                    .into(),
            ));
        }
        let sc = &self.inner.config.security;
        if sc.minimum_password_age > 0
            && detail.password_self_service
            && let Some(created) = detail.password_created_at
        {
            let min_age = i64::from(sc.minimum_password_age) * 86_400;
            let left = created + min_age - Utc::now().timestamp();
            if left > 0 {
                let days_left = (left + 86_399) / 86_400;
                return Err(Error::BadRequest(format!(
                    "You cannot change your password at this time due to the minimum password age. Once you change \
                     your password, it must be used for {} day(s) before it can be changed. Please try again in \
                     {days_left} day(s) or contact your administrator to reset your password.",
                    sc.minimum_password_age
                )));
            }
        }
        self.validate_password_rules(new)?;
        let unique = sc.unique_last_password_count;
        if unique > 0 {
            for hash in store.user_password_history(user_id, self.history_len()).await? {
                if bcrypt_verify(new.to_string(), hash).await? {
                    return Err(Error::BadRequest(format!(
                        "The new password cannot be identical to a previous password. The total number which \
                         includes the new password must be unique is {unique}."
                    )));
                }
            }
        }
        let hash = self.hash_password(new).await?;
        let expires = self.password_expiry(&detail.options, false);
        store.user_password_set(user_id, &hash, expires, true, self.history_len()).await?;
        self.revoke_user(user_id).await
    }

    /// Revokes every token of a user issued until now (disabled, deleted, password changed, removed from a group).
    pub async fn revoke_user(&self, user_id: &str) -> Result<(), Error> {
        let ev = RevocationRow {
            audit_id: None,
            user_id: Some(user_id.to_string()),
            project_id: None,
            issued_before: Utc::now().timestamp(),
        };
        self.revoke_event(ev).await
    }

    async fn find_domain(&self, d: &DomainRef) -> Result<Option<DomainRow>, Error> {
        match d {
            DomainRef::Id(id) => self.inner.store.domain_get(id).await,
            DomainRef::Name(name) => self.inner.store.domain_get_by_name(name).await,
        }
    }

    async fn resolve_scope(&self, user: &UserRow, scope: ScopeRequest) -> Result<Scope, Error> {
        let no_access = |what: &str| Error::Unauthorized.with_log(&format!("user {} has no access to {what}", user.id));
        match scope {
            ScopeRequest::Unscoped => Ok(Scope::Unscoped),
            ScopeRequest::Default => {
                if let Some(pid) = &user.default_project_id
                    && !self.roles_on(&user.id, kind::USER_PROJECT, pid).await?.is_empty()
                {
                    return Ok(Scope::Project(pid.clone()));
                }
                Ok(Scope::Unscoped)
            }
            ScopeRequest::ProjectId(id) => {
                let p = self.inner.store.project_get(&id).await?.ok_or_else(|| no_access("project"))?;
                self.check_project_scope(user, &p).await
            }
            ScopeRequest::ProjectName { name, domain } => {
                let d = self.find_domain(&domain).await?.ok_or_else(|| no_access("domain"))?;
                let p = self.inner.store.project_get_by_name(&d.id, &name).await?.ok_or_else(|| no_access("project"))?;
                self.check_project_scope(user, &p).await
            }
            ScopeRequest::Domain(d) => {
                let d = self.find_domain(&d).await?.ok_or_else(|| no_access("domain"))?;
                if !d.enabled || self.roles_on(&user.id, kind::USER_DOMAIN, &d.id).await?.is_empty() {
                    return Err(no_access("domain"));
                }
                Ok(Scope::Domain(d.id))
            }
            ScopeRequest::Trust(_) => Err(Error::Internal("trust scope resolved elsewhere".into())),
            ScopeRequest::System => {
                if self.roles_on(&user.id, kind::USER_SYSTEM, SYSTEM_ALL).await?.is_empty() {
                    return Err(no_access("the system scope"));
                }
                Ok(Scope::System)
            }
        }
    }

    async fn check_project_scope(&self, user: &UserRow, p: &ProjectRow) -> Result<Scope, Error> {
        let enabled_domain = self.inner.store.domain_get(&p.domain_id).await?.is_some_and(|d| d.enabled);
        if !p.enabled || !enabled_domain || self.roles_on(&user.id, kind::USER_PROJECT, &p.id).await?.is_empty() {
            return Err(Error::Unauthorized.with_log(&format!("user {} has no access to project {}", user.id, p.id)));
        }
        Ok(Scope::Project(p.id.clone()))
    }

    /// Effective roles of a user on a target (`kind` is [`kind::USER_PROJECT`], [`kind::USER_DOMAIN`] or
    /// [`kind::USER_SYSTEM`]): grants to the user and to their groups, on a project also those inherited from its
    /// ancestors and its domain, then implied roles transitively. Domain-specific roles only contribute what they
    /// imply. One database round trip; the role graph is cached until identity data changes.
    pub(crate) async fn roles_on(&self, user_id: &str, kind: &str, target: &str) -> Result<Vec<RoleRow>, Error> {
        let store = &self.inner.store;
        let direct = match kind {
            kind::USER_PROJECT => store.assignment_role_ids_on_project(user_id, target).await?,
            kind::USER_DOMAIN => store.assignment_role_ids_on(user_id, kind::USER_DOMAIN, kind::GROUP_DOMAIN, target).await?,
            kind::USER_SYSTEM => store.assignment_role_ids_on(user_id, kind::USER_SYSTEM, kind::GROUP_SYSTEM, target).await?,
            other => return Err(Error::Internal(format!("roles_on: unknown assignment kind {other}"))),
        };
        if direct.is_empty() {
            return Ok(Vec::new());
        }
        let graph = self.role_graph().await?;
        Ok(graph.effective(direct.iter().map(String::as_str)))
    }

    /// Every role and implication rule, cached until identity data changes.
    pub(crate) async fn role_graph(&self) -> Result<Arc<RoleGraph>, Error> {
        let generation = self.inner.generation.load(Ordering::SeqCst);
        if let Some((g, graph)) = read(&self.inner.role_graph).clone()
            && g == generation
        {
            return Ok(graph);
        }
        let roles = self.inner.store.role_list().await?;
        let rules = self.inner.store.implied_role_list().await?;
        let graph = Arc::new(RoleGraph::new(roles, rules));
        if self.inner.generation.load(Ordering::SeqCst) == generation {
            *write(&self.inner.role_graph) = Some((generation, graph.clone()));
        }
        Ok(graph)
    }

    // ---- validation

    /// Validates a token: signature, expiry, revocation, and that its user, project and roles still hold.
    /// Cached per token until identity data changes.
    pub async fn validate(&self, token: &str) -> Result<Arc<TokenInfo>, Error> {
        let keys = self.current_keys()?;
        let generation = self.inner.generation.load(Ordering::SeqCst);
        if let Some((g, info)) = read(&self.inner.cache).get(token).cloned()
            && g == generation
        {
            return if info.payload.expires_at > Utc::now() { Ok(info) } else { Err(Error::InvalidToken) };
        }
        let payload = keys.open(token)?;
        if payload.expires_at <= Utc::now() {
            return Err(Error::InvalidToken);
        }
        let issued_at = fernet_issued_at(token).ok_or(Error::InvalidToken)?;
        if self.is_revoked(&payload, issued_at) {
            return Err(Error::InvalidToken);
        }
        let info = Arc::new(self.build_info(payload, issued_at).await.map_err(|e| match e {
            Error::NotFound { .. } | Error::Unauthorized => Error::InvalidToken,
            other => other,
        })?);
        let mut cache = write(&self.inner.cache);
        if cache.len() >= CACHE_CAPACITY {
            let now = Utc::now();
            cache.retain(|_, (_, i)| i.payload.expires_at > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        if self.inner.generation.load(Ordering::SeqCst) == generation {
            cache.insert(token.to_string(), (generation, info.clone()));
        }
        Ok(info)
    }

    fn is_revoked(&self, payload: &Payload, issued_at: DateTime<Utc>) -> bool {
        let issued = issued_at.timestamp();
        let project_id = match &payload.scope {
            Scope::Project(p)
            | Scope::ApplicationCredential { project_id: p, .. }
            | Scope::Trust { project_id: p, .. } => Some(p.as_str()),
            _ => None,
        };
        read(&self.inner.revocations).events.iter().any(|ev| {
            if let Some(a) = &ev.audit_id {
                return payload.audit_ids.iter().any(|x| x == a);
            }
            let user_match = ev.user_id.as_deref().is_none_or(|u| u == payload.user_id);
            let project_match = ev.project_id.as_deref().is_none_or(|p| Some(p) == project_id);
            user_match && project_match && issued <= ev.issued_before
        })
    }

    async fn build_info(&self, payload: Payload, issued_at: DateTime<Utc>) -> Result<TokenInfo, Error> {
        let store = &self.inner.store;
        let mut user =
            store.user_get(&payload.user_id).await?.ok_or_else(|| Error::not_found("user", &payload.user_id))?;
        if !user.enabled {
            return Err(Error::InvalidToken);
        }
        let mut application_credential = None;
        let mut trust = None;
        let (project, domain, roles) = match &payload.scope {
            Scope::Unscoped => (None, None, Vec::new()),
            Scope::Project(pid) | Scope::ApplicationCredential { project_id: pid, .. } | Scope::Trust { project_id: pid, .. } => {
                let p = store.project_get(pid).await?.ok_or_else(|| Error::not_found("project", pid))?;
                let d = store.domain_get(&p.domain_id).await?.ok_or_else(|| Error::not_found("domain", &p.domain_id))?;
                if !p.enabled || !d.enabled {
                    return Err(Error::InvalidToken);
                }
                let roles = match &payload.scope {
                    Scope::ApplicationCredential { app_cred_id, .. } => {
                        // Deleted, expired or moved credentials take their tokens with them; the roles are those
                        // the credential was given that the user still holds.
                        let cred = store.application_credential_get(app_cred_id).await?.ok_or(Error::InvalidToken)?;
                        if cred.user_id != user.id
                            || &cred.project_id != pid
                            || cred.expires_at.is_some_and(|e| e <= Utc::now().timestamp_micros())
                        {
                            return Err(Error::InvalidToken);
                        }
                        let held = self.roles_on(&user.id, kind::USER_PROJECT, pid).await?;
                        let roles = held.into_iter().filter(|r| cred.role_ids.contains(&r.id)).collect();
                        application_credential = Some(cred);
                        roles
                    }
                    Scope::Trust { trust_id, .. } => {
                        // Issued tokens outlive the trust's remaining uses, not the trust itself.
                        let t = store.trust_get(trust_id).await?.ok_or(Error::InvalidToken)?;
                        if t.trustee_user_id != user.id
                            || t.project_id.as_deref() != Some(pid.as_str())
                            || t.expires_at.is_some_and(|e| e <= Utc::now().timestamp_micros())
                        {
                            return Err(Error::InvalidToken);
                        }
                        let trustor = store.user_get(&t.trustor_user_id).await?.filter(|u| u.enabled);
                        let trustor = trustor.ok_or(Error::InvalidToken)?;
                        let roles = self.trust_roles(&t, pid).await?;
                        if t.impersonation {
                            user = trustor;
                        }
                        trust = Some(t);
                        roles
                    }
                    _ => self.roles_on(&user.id, kind::USER_PROJECT, pid).await?,
                };
                (Some((p, d)), None, roles)
            }
            Scope::Domain(did) => {
                let d = store.domain_get(did).await?.ok_or_else(|| Error::not_found("domain", did))?;
                if !d.enabled {
                    return Err(Error::InvalidToken);
                }
                let roles = self.roles_on(&user.id, kind::USER_DOMAIN, did).await?;
                (None, Some(d), roles)
            }
            Scope::System => (None, None, self.roles_on(&user.id, kind::USER_SYSTEM, SYSTEM_ALL).await?),
        };
        if !matches!(payload.scope, Scope::Unscoped) && roles.is_empty() {
            return Err(Error::InvalidToken);
        }
        let user_domain =
            store.domain_get(&user.domain_id).await?.ok_or_else(|| Error::not_found("domain", &user.domain_id))?;
        // A disabled domain disables its users, and with them their tokens.
        if !user_domain.enabled {
            return Err(Error::InvalidToken);
        }
        Ok(TokenInfo { payload, issued_at, user, user_domain, project, domain, roles, application_credential, trust })
    }

    /// Revokes one token (by its audit id), as `DELETE /v3/auth/tokens`.
    pub async fn revoke(&self, token: &str) -> Result<(), Error> {
        let info = self.validate(token).await?;
        let audit = info.payload.audit_ids.first().cloned().ok_or(Error::InvalidToken)?;
        let ev = RevocationRow { audit_id: Some(audit), user_id: None, project_id: None, issued_before: Utc::now().timestamp() };
        self.revoke_event(ev).await
    }

    // ---- catalog

    pub async fn catalog(&self) -> Result<Arc<Vec<CatalogService>>, Error> {
        if let Some(c) = read(&self.inner.catalog).clone() {
            return Ok(c);
        }
        let services = self.inner.store.service_list().await?;
        let endpoints = self.inner.store.endpoint_list().await?;
        let catalog: Vec<CatalogService> = services
            .into_iter()
            .filter(|s| s.enabled)
            .map(|s| {
                let eps = endpoints.iter().filter(|e| e.service_id == s.id && e.enabled).cloned().collect();
                CatalogService { service: s, endpoints: eps }
            })
            .collect();
        let catalog = Arc::new(catalog);
        *write(&self.inner.catalog) = Some(catalog.clone());
        Ok(catalog)
    }

    /// The catalog in token-body form.
    ///
    /// Endpoint URLs are rendered for the token as Keystone does: `%(project_id)s`/`$(project_id)s` (and the older
    /// `tenant_id`) become the token's project, `%(user_id)s` its user; an endpoint naming a value the token does not
    /// have (a project in an unscoped, domain or system token) is left out.
    pub async fn catalog_json(&self, info: &TokenInfo) -> Result<Value, Error> {
        let catalog = self.catalog().await?;
        let project_id = info.project.as_ref().map(|(p, _)| p.id.as_str());
        Ok(Value::Array(
            catalog
                .iter()
                .map(|c| {
                    json!({
                        "id": c.service.id,
                        "type": c.service.service_type,
                        "name": c.service.name.clone().unwrap_or_default(),
                        "endpoints": c.endpoints.iter().filter_map(|e| {
                            let url = render_endpoint_url(&e.url, project_id, &info.user.id)?;
                            Some(json!({
                                "id": e.id,
                                "interface": e.interface,
                                "region": e.region_id,
                                "region_id": e.region_id,
                                "url": url,
                            }))
                        }).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        ))
    }

    /// The token body (`{"token": {...}}`) for a validated token.
    pub async fn token_body(&self, info: &TokenInfo, with_catalog: bool) -> Result<Value, Error> {
        let password_expires_at = self
            .inner
            .store
            .user_detail_get(&info.user.id)
            .await?
            .and_then(|u| u.password_expires_at)
            .and_then(|t| Utc.timestamp_opt(t, 0).single())
            .map(format_time);
        let mut token = json!({
            "methods": info.payload.methods,
            "user": {
                "id": info.user.id,
                "name": info.user.name,
                "domain": {"id": info.user_domain.id, "name": info.user_domain.name},
                "password_expires_at": password_expires_at,
            },
            "audit_ids": info.payload.audit_ids,
            "expires_at": format_time(info.payload.expires_at),
            "issued_at": format_time(info.issued_at),
        });
        let obj = token.as_object_mut().ok_or_else(|| Error::Internal("token body".into()))?;
        if let Some((p, d)) = &info.project {
            obj.insert("project".into(), json!({"id": p.id, "name": p.name, "domain": {"id": d.id, "name": d.name}}));
            obj.insert("is_domain".into(), Value::Bool(false));
        }
        if let Some(d) = &info.domain {
            obj.insert("domain".into(), json!({"id": d.id, "name": d.name}));
        }
        if matches!(info.payload.scope, Scope::System) {
            obj.insert("system".into(), json!({"all": true}));
        }
        if let Some(c) = &info.application_credential {
            let mut block = json!({"id": c.id, "name": c.name, "restricted": !c.unrestricted});
            if !c.access_rules.is_empty() {
                block["access_rules"] = Value::Array(
                    c.access_rules
                        .iter()
                        .map(|r| json!({"id": r.id, "service": r.service, "path": r.path, "method": r.method}))
                        .collect(),
                );
            }
            obj.insert("application_credential".into(), block);
        }
        if let Some(t) = &info.trust {
            obj.insert(
                "OS-TRUST:trust".into(),
                json!({
                    "id": t.id,
                    "impersonation": t.impersonation,
                    "trustee_user": {"id": t.trustee_user_id},
                    "trustor_user": {"id": t.trustor_user_id},
                }),
            );
        }
        if !matches!(info.payload.scope, Scope::Unscoped) {
            obj.insert(
                "roles".into(),
                Value::Array(info.roles.iter().map(|r| json!({"id": r.id, "name": r.name})).collect()),
            );
            if with_catalog {
                obj.insert("catalog".into(), self.catalog_json(info).await?);
            }
        }
        Ok(json!({ "token": token }))
    }

    // ---- bootstrap

    /// Idempotent cloud bootstrap, like `keystone-manage bootstrap`: default domain, roles admin/member/reader
    /// (admin implies member implies reader), admin project and user with `admin` on it and on the system, the
    /// region, and a catalog entry (public/internal/admin) for each listed service.
    pub async fn bootstrap(&self, spec: &BootstrapSpec) -> Result<(), Error> {
        let store = &self.inner.store;
        if store.domain_get(DEFAULT_DOMAIN_ID).await?.is_none() {
            store
                .domain_create(&DomainRow {
                    id: DEFAULT_DOMAIN_ID.into(),
                    name: "Default".into(),
                    description: Some("The default domain".into()),
                    enabled: true,
                })
                .await?;
        }
        let mut role_ids = HashMap::new();
        // Keystone's bootstrap roles, `manager` (the project-manager persona) included since 2024.2.
        for name in ["admin", "manager", "member", "reader", "service"] {
            let id = match store.role_get_by_name(name).await? {
                Some(r) => r.id,
                None => {
                    let r = RoleRow { id: new_id(), name: name.into(), domain_id: None };
                    store.role_create(&r).await?;
                    r.id
                }
            };
            role_ids.insert(name, id);
        }
        let existing: Vec<(String, String)> = store.implied_role_list().await?;
        for (prior, implied) in [("admin", "manager"), ("manager", "member"), ("member", "reader")] {
            let pair = (role_ids[prior].clone(), role_ids[implied].clone());
            if !existing.contains(&pair) {
                store.implied_role_create(&pair.0, &pair.1).await?;
            }
        }
        let admin_project = self.ensure_project(&spec.admin_project).await?;
        let admin = self.ensure_user(&spec.admin_username, &spec.admin_password, &admin_project, spec.reset_passwords).await?;
        store.assignment_create(kind::USER_PROJECT, &admin, &admin_project, &role_ids["admin"]).await?;
        store.assignment_create(kind::USER_SYSTEM, &admin, SYSTEM_ALL, &role_ids["admin"]).await?;
        store.assignment_create(kind::USER_DOMAIN, &admin, DEFAULT_DOMAIN_ID, &role_ids["admin"]).await?;
        for (project, user, password, role) in &spec.members {
            let pid = self.ensure_project(project).await?;
            let uid = self.ensure_user(user, password, &pid, spec.reset_passwords).await?;
            let rid = role_ids.get(role.as_str()).ok_or_else(|| Error::BadRequest(format!("unknown role {role}")))?;
            store.assignment_create(kind::USER_PROJECT, &uid, &pid, rid).await?;
        }
        store.region_ensure(&spec.region).await?;
        let services = store.service_list().await?;
        let endpoints = store.endpoint_list().await?;
        for (service_type, name, url) in &spec.services {
            let service_id = match services.iter().find(|s| &s.service_type == service_type) {
                Some(s) => s.id.clone(),
                None => {
                    let s = ServiceRow {
                        id: new_id(),
                        service_type: service_type.clone(),
                        name: Some(name.clone()),
                        enabled: true,
                    };
                    store.service_create(&s).await?;
                    s.id
                }
            };
            for interface in ["public", "internal", "admin"] {
                match endpoints.iter().find(|e| e.service_id == service_id && e.interface == interface) {
                    Some(e) if &e.url != url => store.endpoint_set_url(&e.id, url).await?,
                    Some(_) => {}
                    None => {
                        store
                            .endpoint_create(&EndpointRow {
                                id: new_id(),
                                service_id: service_id.clone(),
                                interface: interface.into(),
                                region_id: Some(spec.region.clone()),
                                url: url.clone(),
                                enabled: true,
                            })
                            .await?
                    }
                }
            }
        }
        self.changed();
        Ok(())
    }

    async fn ensure_project(&self, name: &str) -> Result<String, Error> {
        let store = &self.inner.store;
        if let Some(p) = store.project_get_by_name(DEFAULT_DOMAIN_ID, name).await? {
            return Ok(p.id);
        }
        let p = ProjectRow {
            id: new_id(),
            name: name.into(),
            domain_id: DEFAULT_DOMAIN_ID.into(),
            parent_id: Some(DEFAULT_DOMAIN_ID.into()),
            is_domain: false,
            description: Some(format!("Bootstrap project {name}")),
            enabled: true,
        };
        store.project_create(&p).await?;
        Ok(p.id)
    }

    async fn ensure_user(&self, name: &str, password: &str, project: &str, reset: bool) -> Result<String, Error> {
        let store = &self.inner.store;
        if let Some(u) = store.user_get_by_name(DEFAULT_DOMAIN_ID, name).await? {
            if reset {
                let hash = self.hash_password(password).await?;
                store.user_password_set(&u.id, &hash, None, false, self.history_len()).await?;
            }
            return Ok(u.id);
        }
        let u = UserDetail {
            user: UserRow {
                id: new_id(),
                name: name.into(),
                domain_id: DEFAULT_DOMAIN_ID.into(),
                enabled: true,
                password_hash: Some(self.hash_password(password).await?),
                default_project_id: Some(project.into()),
            },
            extra: serde_json::Map::new(),
            options: serde_json::Map::new(),
            password_created_at: Some(Utc::now().timestamp()),
            password_expires_at: None,
            password_self_service: false,
            failed_auth_count: 0,
            failed_auth_at: None,
        };
        store.user_detail_create(&u).await?;
        Ok(u.user.id)
    }

    pub async fn hash_password(&self, password: &str) -> Result<String, Error> {
        let rounds = self.inner.config.password_hash_rounds;
        let password = password.to_string();
        tokio::task::spawn_blocking(move || bcrypt::hash(password, rounds))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

#[async_trait::async_trait]
impl auth::TokenValidator for Identity {
    async fn validate(&self, token: &str) -> Result<auth::Context, auth::AuthError> {
        match Identity::validate(self, token).await {
            Ok(info) => Ok(info.context()),
            Err(Error::InvalidToken) | Err(Error::Unauthorized) => Err(auth::AuthError::Invalid),
            Err(e) => Err(auth::AuthError::Unavailable(e.to_string())),
        }
    }
}

/// Whether a boolean resource option is set on the user.
fn option_set(detail: &UserDetail, name: &str) -> bool {
    detail.options.get(name).and_then(Value::as_bool).unwrap_or(false)
}

async fn bcrypt_verify(password: String, hash: String) -> Result<bool, Error> {
    tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
        .await
        .map_err(|e| Error::Internal(e.to_string()))
}

/// How often the key repository is checked for a rotation made by another process.
const KEY_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn key_dir_mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

/// Fernet tokens carry their creation time in clear (bytes 1..9, big-endian seconds).
fn fernet_issued_at(token: &str) -> Option<DateTime<Utc>> {
    let mut padded = token.to_string();
    while padded.len() % 4 != 0 {
        padded.push('=');
    }
    let bytes = URL_SAFE.decode(padded).ok()?;
    let ts: [u8; 8] = bytes.get(1..9)?.try_into().ok()?;
    Utc.timestamp_opt(i64::try_from(u64::from_be_bytes(ts)).ok()?, 0).single()
}

/// Renders an endpoint URL template for one token, as Keystone's `format_url`: `%(name)s` and `$(name)s` with
/// `project_id`/`tenant_id` and `user_id`. `None` when the template names a value the token lacks or an unknown one.
pub fn render_endpoint_url(template: &str, project_id: Option<&str>, user_id: &str) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    loop {
        let next = [rest.find("%("), rest.find("$(")].into_iter().flatten().min();
        let Some(start) = next else {
            out.push_str(rest);
            return Some(out);
        };
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find(")s") else {
            out.push_str(&rest[start..]);
            return Some(out);
        };
        let value = match &after[..end] {
            "project_id" | "tenant_id" => project_id?,
            "user_id" => user_id,
            _ => return None,
        };
        out.push_str(value);
        rest = &after[end + 2..];
    }
}

/// Upstream's timestamp format: microseconds, `Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Error {
    /// Logs why authentication failed (the client only sees a generic 401, as upstream).
    fn with_log(self, why: &str) -> Self {
        tracing::info!(reason = why, "authentication refused");
        self
    }
}

#[cfg(test)]
mod tests {
    use super::render_endpoint_url;

    #[test]
    fn endpoint_urls_are_rendered_per_token() {
        let t = "http://h/object-store/v1/AUTH_%(project_id)s";
        assert_eq!(render_endpoint_url(t, Some("p1"), "u").as_deref(), Some("http://h/object-store/v1/AUTH_p1"));
        assert_eq!(render_endpoint_url("http://h/v1/$(tenant_id)s/x", Some("p1"), "u").as_deref(), Some("http://h/v1/p1/x"));
        assert_eq!(render_endpoint_url("http://h/%(user_id)s", None, "u1").as_deref(), Some("http://h/u1"));
        assert_eq!(render_endpoint_url(t, None, "u"), None, "no project in scope: left out");
        assert_eq!(render_endpoint_url("http://h/%(other)s", Some("p"), "u"), None);
        assert_eq!(render_endpoint_url("http://h/image", None, "u").as_deref(), Some("http://h/image"));
        assert_eq!(render_endpoint_url("http://h/%(x", None, "u").as_deref(), Some("http://h/%(x"));
    }
}
