//! Swift's container ACLs (`X-Container-Read`, `X-Container-Write`) and who may act on an account.
//!
//! An ACL is a comma-separated list of items. `.r:<host>` items (also spelled `.ref:`, `.referer:`, `.referrer:`)
//! grant reads by the HTTP `Referer`: `*` is any referrer, a leading `.` (or `*.`) a domain, a leading `-` a denial,
//! applied in order; they give object reads only, unless `.rlistings` is also listed. Other items name Keystone
//! identities as `<project>:<user>` (ids, `*` for any, or names when both live in the default domain) or roles that
//! members of the account's own project must hold. Referrers are not allowed in write ACLs.
//!
//! [`decide`] is the keystoneauth decision: operators of the account own it, ACLs share it, everyone else is denied
//! (401 for an anonymous caller, 403 for an authenticated one — the API picks).

use auth::Context;

/// Cleans an ACL header value as Swift does (`bob , sue` → `bob,sue`, `.referrer : *` → `.r:*`); `Err` says why a
/// value is malformed.
pub fn clean_acl(header: &str, value: &str) -> Result<String, String> {
    let write = header.to_ascii_lowercase().contains("write");
    let mut items = Vec::new();
    for raw in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let Some((first, second)) = raw.split_once(':') else {
            items.push(raw.to_string());
            continue;
        };
        let (first, mut second) = (first.trim(), second.trim());
        if !first.starts_with('.') {
            items.push(raw.to_string());
            continue;
        }
        if !matches!(first, ".r" | ".ref" | ".referer" | ".referrer") {
            return Err(format!("Unknown designator '{first}' in ACL: '{raw}'"));
        }
        if write {
            return Err(format!("Referrers not allowed in write ACL: '{raw}'"));
        }
        let negate = second.starts_with('-');
        if negate {
            second = second[1..].trim();
        }
        if second != "*" && second.starts_with('*') {
            second = second[1..].trim();
        }
        if second.is_empty() || second == "." {
            return Err(format!("No host/domain value after referrer designation in ACL: '{raw}'"));
        }
        items.push(format!(".r:{}{second}", if negate { "-" } else { "" }));
    }
    Ok(items.join(","))
}

/// A parsed (clean) ACL: referrer designations (without `.r:`) and groups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Acl {
    pub referrers: Vec<String>,
    pub groups: Vec<String>,
}

impl Acl {
    pub fn parse(acl: &str) -> Acl {
        let mut out = Acl::default();
        for item in acl.split(',').filter(|i| !i.is_empty()) {
            match item.strip_prefix(".r:") {
                Some(r) => out.referrers.push(r.to_string()),
                None => out.groups.push(item.to_string()),
            }
        }
        out
    }

    /// Whether a request with this `Referer` header is let in by the referrer designations.
    pub fn referrer_allowed(&self, referer: Option<&str>) -> bool {
        let host = referer
            .and_then(|r| url::Url::parse(r).ok())
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_else(|| "unknown".into());
        let matches = |m: &str| m == host || (m.starts_with('.') && host.ends_with(m));
        let mut allow = false;
        for m in &self.referrers {
            match m.strip_prefix('-') {
                Some(denied) => {
                    if matches(denied) {
                        allow = false;
                    }
                }
                None => {
                    if m == "*" || matches(m) {
                        allow = true;
                    }
                }
            }
        }
        allow
    }

    /// Whether an item grants a Keystone identity from any project: `project:user` with ids or `*`, or with names
    /// when the user and the project are both in the default domain.
    fn names_identity(&self, ctx: &Context) -> bool {
        let Some(project_id) = ctx.project_id.as_deref() else { return false };
        let names = ctx.user_domain_id == "default" && ctx.project_domain_id.as_deref() == Some("default");
        let mut projects = vec![project_id, "*"];
        let mut users = vec![ctx.user_id.as_str(), "*"];
        if names {
            projects.extend(ctx.project_name.as_deref());
            users.push(&ctx.user_name);
        }
        projects.iter().any(|p| users.iter().any(|u| self.groups.iter().any(|g| *g == format!("{p}:{u}"))))
    }
}

/// How far a caller reaches into an account.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// An operator of the account (Swift's `swift_owner`): everything, ACL and key headers included.
    Owner,
    /// Let in by an ACL (or a temporary URL): the request itself, nothing more.
    Allowed,
    Denied,
}

/// The project an account belongs to (`AUTH_<project_id>`).
pub fn account_project(account: &str) -> Option<&str> {
    account.strip_prefix("AUTH_").filter(|p| !p.is_empty())
}

/// Whether the caller operates the account: `admin` and `ResellerAdmin` operate every account, members their
/// project's, readers read their project's.
pub fn is_owner(ctx: &Context, account: &str, write: bool) -> bool {
    let Some(project) = account_project(account) else { return false };
    if ctx.has_role("admin") || ctx.has_role("ResellerAdmin") {
        return true;
    }
    ctx.project_id.as_deref() == Some(project) && (ctx.has_role("member") || (!write && ctx.has_role("reader")))
}

/// keystoneauth's decision for a request on `account` guarded by `acl` (the container's read ACL for reads, its
/// write ACL for writes, none for account and container changes). `object` says whether the request names an
/// object: referrer ACLs let in object reads, and container listings only with `.rlistings`.
pub fn decide(ctx: Option<&Context>, account: &str, write: bool, acl: Option<&str>, object: bool, referer: Option<&str>) -> Decision {
    if account_project(account).is_none() {
        return Decision::Denied;
    }
    if let Some(ctx) = ctx
        && is_owner(ctx, account, write)
    {
        return Decision::Owner;
    }
    let Some(acl) = acl.map(Acl::parse) else { return Decision::Denied };
    if let Some(ctx) = ctx
        && acl.names_identity(ctx)
    {
        return Decision::Allowed;
    }
    if acl.referrer_allowed(referer) && (object || acl.groups.iter().any(|g| g == ".rlistings")) {
        return Decision::Allowed;
    }
    if let Some(ctx) = ctx {
        let same_project = ctx.project_id.as_deref() == account_project(account);
        if same_project && ctx.roles.iter().any(|r| acl.groups.iter().any(|g| g.eq_ignore_ascii_case(r))) {
            return Decision::Allowed;
        }
    }
    Decision::Denied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(project: &str, user: &str, roles: &[&str]) -> Context {
        Context {
            user_id: user.into(),
            user_name: format!("{user}-name"),
            user_domain_id: "default".into(),
            user_domain_name: "Default".into(),
            project_id: Some(project.into()),
            project_name: Some(format!("{project}-name")),
            project_domain_id: Some("default".into()),
            project_domain_name: Some("Default".into()),
            domain_id: None,
            domain_name: None,
            system_scope: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            role_ids: vec![],
            is_admin_project: false,
            audit_ids: vec![],
            expires_at: chrono::Utc::now(),
            auth_methods: vec!["password".into()],
            application_credential_id: None,
            trust_id: None,
        }
    }

    #[test]
    fn acls_are_cleaned_as_swift_does() {
        let r = "X-Container-Read";
        assert_eq!(clean_acl(r, "bob, sue").unwrap(), "bob,sue");
        assert_eq!(clean_acl(r, "bob,,,sue").unwrap(), "bob,sue");
        assert_eq!(clean_acl(r, ".referrer : *").unwrap(), ".r:*");
        assert_eq!(clean_acl(r, ".ref:*.example.com").unwrap(), ".r:.example.com");
        assert_eq!(clean_acl(r, ".r:*, .rlistings").unwrap(), ".r:*,.rlistings");
        assert_eq!(clean_acl(r, ".r:- thief.com").unwrap(), ".r:-thief.com");
        assert_eq!(clean_acl(r, "p1:u1").unwrap(), "p1:u1");
        assert!(clean_acl(r, ".r:").is_err());
        assert!(clean_acl(r, ".r:-").is_err());
        assert!(clean_acl(r, ".x:y").is_err());
        assert!(clean_acl("X-Container-Write", ".r:*").is_err());
        assert_eq!(clean_acl("X-Container-Write", "p:*").unwrap(), "p:*");
    }

    #[test]
    fn referrers_apply_in_order() {
        let acl = Acl::parse(".r:.example.com,.r:-thief.example.com");
        assert!(acl.referrer_allowed(Some("http://www.example.com/page")));
        assert!(!acl.referrer_allowed(Some("http://thief.example.com/")));
        assert!(!acl.referrer_allowed(Some("http://other.org/")));
        assert!(!acl.referrer_allowed(None));
        let any = Acl::parse(".r:*");
        assert!(any.referrer_allowed(None) && any.referrer_allowed(Some("garbage")));
        let host = Acl::parse(".r:Example.com");
        assert!(!host.referrer_allowed(Some("http://example.com")), "hosts in ACLs are matched as written");
    }

    #[test]
    fn keystoneauth_decisions() {
        let a = "AUTH_p1";
        let owner = ctx("p1", "u1", &["member"]);
        let other = ctx("p2", "u2", &["member"]);
        let reader = ctx("p1", "u3", &["reader"]);
        let guest = ctx("p1", "u4", &["guest"]);
        assert_eq!(decide(Some(&owner), a, true, None, true, None), Decision::Owner);
        assert_eq!(decide(Some(&ctx("p9", "x", &["ResellerAdmin"])), a, true, None, false, None), Decision::Owner);
        assert_eq!(decide(Some(&reader), a, false, None, true, None), Decision::Owner);
        assert_eq!(decide(Some(&reader), a, true, None, true, None), Decision::Denied);
        assert_eq!(decide(Some(&other), a, false, None, true, None), Decision::Denied);
        assert_eq!(decide(None, a, false, None, true, None), Decision::Denied);

        // Public reads: objects for anyone, listings only with .rlistings.
        assert_eq!(decide(None, a, false, Some(".r:*"), true, None), Decision::Allowed);
        assert_eq!(decide(None, a, false, Some(".r:*"), false, None), Decision::Denied);
        assert_eq!(decide(None, a, false, Some(".r:*,.rlistings"), false, None), Decision::Allowed);
        assert_eq!(decide(Some(&other), a, false, Some(".r:*"), true, None), Decision::Allowed);

        // Identities from other projects: ids, wildcards, names in the default domain.
        for item in ["p2:u2", "p2:*", "*:u2", "*:*", "p2-name:u2-name"] {
            assert_eq!(decide(Some(&other), a, true, Some(item), true, None), Decision::Allowed, "{item}");
        }
        assert_eq!(decide(Some(&other), a, true, Some("p2:u9"), true, None), Decision::Denied);
        assert_eq!(decide(None, a, true, Some("*:*"), true, None), Decision::Denied);

        // Roles count for the account's own project only.
        assert_eq!(decide(Some(&guest), a, true, Some("guest"), true, None), Decision::Allowed);
        assert_eq!(decide(Some(&ctx("p2", "u5", &["guest"])), a, true, Some("guest"), true, None), Decision::Denied);
        assert_eq!(decide(Some(&owner), "not-an-account", false, None, true, None), Decision::Denied);
    }
}
