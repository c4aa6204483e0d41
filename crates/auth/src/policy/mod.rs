//! The policy enforcer: named rules in oslo.policy's check-string language, defaults in code, overrides from a
//! `policy.yaml` (or JSON) file.
//!
//! Everything is parsed when the [`Policy`] is built: a syntax error, a non-string value in the overrides, or a loop
//! of `rule:` references is an error naming the rule; `rule:` references to undefined rules and `http:` checks are
//! reported as warnings (and evaluate false).

mod rule;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use api_common::ApiError;
use serde_json::{Map, Value};

use crate::{AuthError, Context};
use rule::Check;

/// The secure-RBAC base rules services share, under their upstream names. A service appends its own defaults
/// (later definitions of a name replace earlier ones). `admin` implies `member` implies `reader` through identity's
/// implied roles, which tokens already carry, so rules name only the least role they need.
pub const BASE_RULES: &[(&str, &str)] = &[
    ("context_is_admin", "role:admin"),
    ("admin_required", "role:admin"),
    ("admin_api", "is_admin:True"),
    ("admin_or_owner", "is_admin:True or project_id:%(project_id)s"),
    ("service_role", "role:service"),
    ("service_api", "role:service"),
    ("service_or_admin", "rule:service_api or rule:context_is_admin"),
    ("system_admin", "role:admin and system_scope:all"),
    ("system_reader", "role:reader and system_scope:all"),
    ("project_member_api", "role:member and project_id:%(project_id)s"),
    ("project_reader_api", "role:reader and project_id:%(project_id)s"),
    ("project_member_or_admin", "rule:project_member_api or rule:context_is_admin"),
    ("project_reader_or_admin", "rule:project_reader_api or rule:context_is_admin"),
];

/// Name of the rule used for names that have no rule of their own, as oslo.policy's `default_rule`.
pub const DEFAULT_RULE: &str = "default";

/// Name of the rule that decides the `is_admin` credential, as Nova, Cinder and Neutron compute `context.is_admin`.
pub const ADMIN_RULE: &str = "context_is_admin";

/// A loaded, checked set of policy rules.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: HashMap<String, Check>,
    warnings: Vec<String>,
}

impl Policy {
    /// Rules from the defaults alone.
    pub fn new(defaults: &[(&str, &str)]) -> Result<Self, AuthError> {
        Self::build(defaults.iter().map(|(n, r)| (n.to_string(), r.to_string())).collect())
    }

    /// Defaults overridden by a policy file (YAML or JSON mapping rule names to check strings).
    pub fn load(defaults: &[(&str, &str)], path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::PolicyFile { path: path.to_path_buf(), message: e.to_string() })?;
        let overrides = parse_overrides(&text).map_err(|e| match e {
            OverrideError::Document(message) => AuthError::PolicyFile { path: path.to_path_buf(), message },
            OverrideError::Rule(rule, message) => AuthError::PolicySyntax { rule, message },
        })?;
        Self::with_overrides(defaults, overrides)
    }

    /// A service's policy: the shared [`BASE_RULES`], then the service's own `defaults`, overridden by
    /// `policy_file` (upstream's `policy.yaml`) when given. Load-time warnings are logged under `service`.
    pub fn for_service(service: &str, defaults: &[(&str, &str)], policy_file: Option<&Path>) -> Result<Self, AuthError> {
        let all: Vec<(&str, &str)> = BASE_RULES.iter().chain(defaults).copied().collect();
        let policy = match policy_file {
            Some(path) => Self::load(&all, path)?,
            None => Self::new(&all)?,
        };
        for w in policy.warnings() {
            tracing::warn!(service, warning = %w, "policy");
        }
        Ok(policy)
    }

    /// Defaults overridden by the contents of a policy file.
    pub fn from_overrides_text(defaults: &[(&str, &str)], text: &str) -> Result<Self, AuthError> {
        let overrides = parse_overrides(text).map_err(|e| match e {
            OverrideError::Document(message) => AuthError::PolicyFile { path: "(inline)".into(), message },
            OverrideError::Rule(rule, message) => AuthError::PolicySyntax { rule, message },
        })?;
        Self::with_overrides(defaults, overrides)
    }

    fn with_overrides(defaults: &[(&str, &str)], overrides: Vec<(String, String)>) -> Result<Self, AuthError> {
        let mut all: Vec<(String, String)> = defaults.iter().map(|(n, r)| (n.to_string(), r.to_string())).collect();
        all.extend(overrides);
        Self::build(all)
    }

    fn build(definitions: Vec<(String, String)>) -> Result<Self, AuthError> {
        let mut rules = HashMap::new();
        for (name, text) in definitions {
            let check =
                rule::parse(&text).map_err(|message| AuthError::PolicySyntax { rule: name.clone(), message })?;
            rules.insert(name, check);
        }
        let mut warnings = Vec::new();
        let mut names: Vec<&String> = rules.keys().collect();
        names.sort();
        for name in names {
            rules[name].walk(&mut |c| match c {
                Check::Rule(target) if !rules.contains_key(target) => {
                    warnings.push(format!("policy rule {name:?} references undefined rule {target:?}; it is false"))
                }
                Check::Unsupported(check) => {
                    warnings.push(format!("policy rule {name:?} uses unsupported check {check:?}; it is false"))
                }
                _ => {}
            });
        }
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        find_cycle(&rules)?;
        Ok(Self { rules, warnings })
    }

    /// What loading found suspicious (also logged): references to undefined rules and unsupported checks.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether a rule of this name is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.rules.contains_key(name)
    }

    /// Whether `ctx` may do `name` to `target`. Unknown names use the `default` rule, or are denied without one.
    pub fn check(&self, name: &str, ctx: &Context, target: &Value) -> bool {
        self.check_credentials(name, &self.credentials(ctx), target)
    }

    /// Like [`Policy::check`], but a denial is the 403 upstream answers.
    pub fn enforce(&self, name: &str, ctx: &Context, target: &Value) -> Result<(), ApiError> {
        if self.check(name, ctx, target) {
            Ok(())
        } else {
            tracing::debug!(rule = name, user_id = %ctx.user_id, "policy denied");
            Err(ApiError::forbidden(format!("Policy doesn't allow {name} to be performed.")))
        }
    }

    /// The credentials rules see: the context's policy values plus `is_admin`, the outcome of `context_is_admin`
    /// (or, without that rule, whether the caller has the `admin` role).
    pub fn credentials(&self, ctx: &Context) -> Map<String, Value> {
        let mut creds = ctx.credentials();
        let is_admin = match self.rules.get(ADMIN_RULE) {
            Some(_) => self.check_credentials(ADMIN_RULE, &creds, &Value::Object(Map::new())),
            None => ctx.has_role("admin"),
        };
        creds.insert("is_admin".into(), Value::Bool(is_admin));
        creds
    }

    fn check_credentials(&self, name: &str, creds: &Map<String, Value>, target: &Value) -> bool {
        let Some(check) = self.rules.get(name).or_else(|| self.rules.get(DEFAULT_RULE)) else {
            return false;
        };
        check.eval(creds, target, &|n| self.rules.get(n))
    }
}

enum OverrideError {
    Document(String),
    Rule(String, String),
}

/// A policy file: a mapping of rule names to check strings. An empty file overrides nothing.
fn parse_overrides(text: &str) -> Result<Vec<(String, String)>, OverrideError> {
    let doc: Option<BTreeMap<String, serde_norway::Value>> =
        serde_norway::from_str(text).map_err(|e| OverrideError::Document(e.to_string()))?;
    doc.unwrap_or_default()
        .into_iter()
        .map(|(name, value)| match value {
            serde_norway::Value::String(s) => Ok((name, s)),
            _ => Err(OverrideError::Rule(name, "the check string must be a string".into())),
        })
        .collect()
}

/// Errors if `rule:` references loop, naming the loop.
fn find_cycle(rules: &HashMap<String, Check>) -> Result<(), AuthError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn refs(check: &Check) -> Vec<String> {
        let mut out = Vec::new();
        check.walk(&mut |c| {
            if let Check::Rule(n) = c {
                out.push(n.clone());
            }
        });
        out
    }
    fn visit<'a>(
        name: &'a str,
        rules: &'a HashMap<String, Check>,
        marks: &mut HashMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Result<(), AuthError> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<&str> = stack[start..].to_vec();
                cycle.push(name);
                return Err(AuthError::PolicyCycle(cycle.join(" -> ")));
            }
            None => {}
        }
        let Some((key, check)) = rules.get_key_value(name) else { return Ok(()) };
        marks.insert(key, Mark::Visiting);
        stack.push(key);
        for next in refs(check) {
            if let Some((next_key, _)) = rules.get_key_value(&next) {
                visit(next_key, rules, marks, stack)?;
            }
        }
        stack.pop();
        marks.insert(key, Mark::Done);
        Ok(())
    }
    let mut names: Vec<&String> = rules.keys().collect();
    names.sort();
    let mut marks = HashMap::new();
    for name in names {
        visit(name, rules, &mut marks, &mut Vec::new())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use http::StatusCode;
    use serde_json::json;

    use super::*;
    use crate::context::tests::member;

    #[test]
    fn for_service_layers_base_rules_service_rules_and_the_file() {
        let own = [("svc:read", "rule:project_reader_or_admin"), ("svc:write", "rule:project_member_or_admin")];
        let policy = Policy::for_service("svc", &own, None).unwrap();
        let ctx = member("p1");
        assert!(policy.check("svc:write", &ctx, &json!({"project_id": "p1"})), "base rules are there");
        assert!(!policy.check("svc:write", &ctx, &json!({"project_id": "p2"})));
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "\"svc:write\": \"!\"").unwrap();
        let policy = Policy::for_service("svc", &own, Some(file.path())).unwrap();
        assert!(!policy.check("svc:write", &ctx, &json!({"project_id": "p1"})), "the file overrides");
        assert!(policy.check("svc:read", &ctx, &json!({"project_id": "p1"})));
    }

    fn defaults() -> Vec<(&'static str, &'static str)> {
        let mut d = BASE_RULES.to_vec();
        d.extend([
            ("os_compute_api:servers:index", "rule:project_reader_or_admin"),
            ("os_compute_api:servers:create", "rule:project_member_or_admin"),
            ("os_compute_api:os-hypervisors:list", "rule:system_reader"),
            ("os_compute_api:servers:show:host_status", "rule:admin_api"),
        ]);
        d
    }

    fn admin(project_id: &str) -> Context {
        let mut ctx = member(project_id);
        ctx.roles = vec!["admin".into(), "member".into(), "reader".into()];
        ctx
    }

    #[test]
    fn base_rules_grant_as_upstream() {
        let policy = Policy::new(&defaults()).unwrap();
        assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());
        let own = json!({"project_id": "p1"});
        let other = json!({"project_id": "p2"});
        let m = member("p1");
        assert!(policy.check("os_compute_api:servers:index", &m, &own));
        assert!(policy.check("os_compute_api:servers:create", &m, &own));
        assert!(!policy.check("os_compute_api:servers:create", &m, &other));
        assert!(!policy.check("os_compute_api:servers:show:host_status", &m, &own));
        assert!(policy.check("admin_or_owner", &m, &own));
        assert!(!policy.check("admin_or_owner", &m, &other));

        let a = admin("p1");
        assert!(policy.check("os_compute_api:servers:create", &a, &other));
        assert!(policy.check("os_compute_api:servers:show:host_status", &a, &other));
        assert!(policy.check("admin_or_owner", &a, &other));
        assert!(!policy.check("os_compute_api:os-hypervisors:list", &a, &other), "project-scoped admin");

        let mut sys = admin("p1");
        sys.project_id = None;
        sys.system_scope = Some("all".into());
        assert!(policy.check("os_compute_api:os-hypervisors:list", &sys, &json!({})));
        assert!(policy.check("system_admin", &sys, &json!({})));
    }

    #[test]
    fn enforce_denies_with_upstream_message() {
        let policy = Policy::new(&defaults()).unwrap();
        let err = policy.enforce("os_compute_api:servers:create", &member("p1"), &json!({"project_id": "p2"}));
        let err = err.unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert_eq!(err.message, "Policy doesn't allow os_compute_api:servers:create to be performed.");
        assert!(policy.enforce("os_compute_api:servers:create", &member("p1"), &json!({"project_id": "p1"})).is_ok());
    }

    #[test]
    fn unknown_names_use_default_or_are_denied() {
        let policy = Policy::new(&defaults()).unwrap();
        assert!(!policy.check("no:such:rule", &admin("p1"), &json!({})));
        let mut with_default = defaults();
        with_default.push(("default", "rule:admin_required"));
        let policy = Policy::new(&with_default).unwrap();
        assert!(policy.check("no:such:rule", &admin("p1"), &json!({})));
        assert!(!policy.check("no:such:rule", &member("p1"), &json!({})));
    }

    #[test]
    fn later_definitions_replace_earlier() {
        let mut d = defaults();
        d.push(("context_is_admin", "role:superuser"));
        let policy = Policy::new(&d).unwrap();
        assert!(!policy.check("admin_api", &admin("p1"), &json!({})));
        let mut su = member("p1");
        su.roles.push("SuperUser".into());
        assert!(policy.check("admin_api", &su, &json!({})), "is_admin follows context_is_admin");
    }

    #[test]
    fn overrides_from_a_yaml_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "# operator overrides\n\
             \"os_compute_api:servers:create\": \"role:creator and project_id:%(project_id)s\"\n\
             \"os_compute_api:servers:delete\": \"rule:admin_api\"\n\
             \"open\": \"\"\n\
             \"closed\": \"!\""
        )
        .unwrap();
        let policy = Policy::load(&defaults(), file.path()).unwrap();
        let target = json!({"project_id": "p1"});
        assert!(!policy.check("os_compute_api:servers:create", &member("p1"), &target));
        let mut creator = member("p1");
        creator.roles.push("creator".into());
        assert!(policy.check("os_compute_api:servers:create", &creator, &target));
        assert!(policy.check("os_compute_api:servers:delete", &admin("p1"), &target));
        assert!(policy.check("open", &member("p1"), &target));
        assert!(!policy.check("closed", &admin("p1"), &target));
        // Untouched defaults stay.
        assert!(policy.check("os_compute_api:servers:index", &member("p1"), &target));
    }

    #[test]
    fn overrides_in_json_and_empty_files() {
        let policy =
            Policy::from_overrides_text(&defaults(), r#"{"os_compute_api:servers:index": "role:admin"}"#).unwrap();
        assert!(!policy.check("os_compute_api:servers:index", &member("p1"), &json!({"project_id": "p1"})));
        let policy = Policy::from_overrides_text(&defaults(), "# nothing overridden\n").unwrap();
        assert!(policy.check("os_compute_api:servers:index", &member("p1"), &json!({"project_id": "p1"})));
    }

    #[test]
    fn override_errors_name_the_rule() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "\"good\": \"role:a\"\n\"broken\": \"role:a and (role:b\"").unwrap();
        match Policy::load(&defaults(), file.path()) {
            Err(AuthError::PolicySyntax { rule, message }) => {
                assert_eq!(rule, "broken");
                assert!(message.contains("')'"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        match Policy::from_overrides_text(&defaults(), "\"numeric\": 5") {
            Err(AuthError::PolicySyntax { rule, .. }) => assert_eq!(rule, "numeric"),
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert!(matches!(Policy::from_overrides_text(&defaults(), "- a\n- b"), Err(AuthError::PolicyFile { .. })));
        let missing = Policy::load(&defaults(), Path::new("/nonexistent/policy.yaml"));
        assert!(matches!(missing, Err(AuthError::PolicyFile { .. })));
    }

    #[test]
    fn undefined_references_warn_and_are_false() {
        let policy = Policy::new(&[("a", "rule:missing or role:x"), ("b", "http://example.com")]).unwrap();
        assert_eq!(policy.warnings().len(), 2, "{:?}", policy.warnings());
        assert!(policy.warnings()[0].contains("\"missing\""));
        let mut ctx = member("p1");
        assert!(!policy.check("a", &ctx, &json!({})));
        ctx.roles.push("x".into());
        assert!(policy.check("a", &ctx, &json!({})));
        assert!(!policy.check("b", &ctx, &json!({})));
    }

    #[test]
    fn cycles_are_rejected_at_load() {
        match Policy::new(&[("a", "rule:b"), ("b", "role:x or rule:c"), ("c", "not rule:a"), ("d", "rule:a")]) {
            Err(AuthError::PolicyCycle(cycle)) => assert_eq!(cycle, "a -> b -> c -> a"),
            other => panic!("expected a cycle, got {other:?}"),
        }
        assert!(matches!(Policy::new(&[("self", "rule:self")]), Err(AuthError::PolicyCycle(_))));
        // A cycle introduced by an override is caught too.
        let err = Policy::from_overrides_text(&defaults(), "\"context_is_admin\": \"rule:project_member_or_admin\"");
        assert!(matches!(err, Err(AuthError::PolicyCycle(_))), "{err:?}");
        // Shared sub-rules are not cycles.
        assert!(Policy::new(&[("a", "rule:c and rule:b"), ("b", "rule:c"), ("c", "@")]).is_ok());
    }
}
