//! The authenticated caller of a request.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Who is calling, and in what scope, as established by a validated token.
///
/// The auth middleware inserts it into the request extensions; handlers take it as an extractor argument.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Context {
    pub user_id: String,
    pub user_name: String,
    pub user_domain_id: String,
    pub user_domain_name: String,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub project_domain_id: Option<String>,
    pub project_domain_name: Option<String>,
    /// Set for domain-scoped tokens.
    pub domain_id: Option<String>,
    pub domain_name: Option<String>,
    /// `Some("all")` for system-scoped tokens.
    pub system_scope: Option<String>,
    /// Role names, already expanded by implied roles.
    pub roles: Vec<String>,
    pub role_ids: Vec<String>,
    pub is_admin_project: bool,
    pub audit_ids: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub auth_methods: Vec<String>,
    pub application_credential_id: Option<String>,
    pub trust_id: Option<String>,
}

impl Context {
    /// Whether the token carries role `role` (case-insensitive, as oslo.policy compares roles).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }

    /// Whether the token is system-scoped (`system: {"all": true}`).
    pub fn is_system_scoped(&self) -> bool {
        self.system_scope.as_deref() == Some("all")
    }

    /// A system-scoped token with the `admin` role.
    pub fn is_system_admin(&self) -> bool {
        self.is_system_scoped() && self.has_role("admin")
    }

    /// The credentials policy checks see: the context as a flat map, as oslo.context's `to_policy_values()`.
    /// Unset optional fields are absent, so checks against them are false.
    pub fn credentials(&self) -> Map<String, Value> {
        let mut creds = Map::new();
        let mut put = |key: &str, value: Value| {
            creds.insert(key.to_string(), value);
        };
        put("user_id", json!(self.user_id));
        put("user_name", json!(self.user_name));
        put("user_domain_id", json!(self.user_domain_id));
        put("user_domain_name", json!(self.user_domain_name));
        put("roles", json!(self.roles));
        put("role_ids", json!(self.role_ids));
        put("is_admin_project", json!(self.is_admin_project));
        put("auth_methods", json!(self.auth_methods));
        let optional = [
            ("project_id", &self.project_id),
            ("project_name", &self.project_name),
            ("project_domain_id", &self.project_domain_id),
            ("project_domain_name", &self.project_domain_name),
            ("domain_id", &self.domain_id),
            ("domain_name", &self.domain_name),
            ("system_scope", &self.system_scope),
            ("application_credential_id", &self.application_credential_id),
            ("trust_id", &self.trust_id),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                put(key, json!(v));
            }
        }
        creds
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A project-scoped member context for tests across the crate.
    pub(crate) fn member(project_id: &str) -> Context {
        Context {
            user_id: "u1".into(),
            user_name: "alice".into(),
            user_domain_id: "default".into(),
            user_domain_name: "Default".into(),
            project_id: Some(project_id.into()),
            project_name: Some("demo".into()),
            project_domain_id: Some("default".into()),
            project_domain_name: Some("Default".into()),
            domain_id: None,
            domain_name: None,
            system_scope: None,
            roles: vec!["Member".into(), "reader".into()],
            role_ids: vec!["r-member".into(), "r-reader".into()],
            is_admin_project: false,
            audit_ids: vec!["a1".into()],
            expires_at: Utc::now() + chrono::Duration::hours(1),
            auth_methods: vec!["password".into()],
            application_credential_id: None,
            trust_id: None,
        }
    }

    #[test]
    fn roles_are_case_insensitive() {
        let ctx = member("p1");
        assert!(ctx.has_role("member"));
        assert!(ctx.has_role("READER"));
        assert!(!ctx.has_role("admin"));
        assert!(!ctx.is_system_admin());
    }

    #[test]
    fn system_admin_needs_scope_and_role() {
        let mut ctx = member("p1");
        ctx.roles.push("admin".into());
        assert!(!ctx.is_system_admin());
        ctx.project_id = None;
        ctx.system_scope = Some("all".into());
        assert!(ctx.is_system_admin());
    }

    #[test]
    fn credentials_omit_unset_fields() {
        let creds = member("p1").credentials();
        assert_eq!(creds["project_id"], "p1");
        assert_eq!(creds["is_admin_project"], false);
        assert!(!creds.contains_key("domain_id"));
        assert!(!creds.contains_key("system_scope"));
    }
}
