//! Quotas as upstream's database quota driver has them: a limit per resource for a user, else for the project,
//! else the `default` quota class, else the built-in default; `-1` is unlimited. Usage is counted when checked
//! (instances, cores and ram from live instances; key pairs per user; server groups per project).

use std::collections::BTreeMap;

use crate::{error::Error, service::Compute};

/// Every quota resource with upstream's default limit (`[quota]`), in upstream's order.
pub const RESOURCES: &[(&str, i64)] = &[
    ("instances", 10),
    ("cores", 20),
    ("ram", 51200),
    ("floating_ips", 10),
    ("fixed_ips", -1),
    ("metadata_items", 128),
    ("injected_files", 5),
    ("injected_file_content_bytes", 10240),
    ("injected_file_path_bytes", 255),
    ("security_groups", 10),
    ("security_group_rules", 20),
    ("key_pairs", 100),
    ("server_groups", 10),
    ("server_group_members", 10),
];

/// The quota class every project inherits from.
pub const DEFAULT_CLASS: &str = "default";

/// The largest limit that can be set (upstream's `db.MAX_INT`).
pub const MAX_LIMIT: i64 = 0x7FFF_FFFF;

/// Limits (or usages) by resource name.
pub type Limits = BTreeMap<String, i64>;

pub fn is_resource(name: &str) -> bool {
    RESOURCES.iter().any(|(r, _)| *r == name)
}

/// Whether `used + delta` stays within `limit` (`-1`, or any negative limit, is unlimited).
pub fn fits(limit: i64, used: i64, delta: i64) -> bool {
    limit < 0 || used + delta <= limit
}

/// `overrides` over `base`, for known resources only.
fn layered(base: &Limits, overrides: &Limits) -> Limits {
    base.iter().map(|(k, v)| (k.clone(), overrides.get(k).copied().unwrap_or(*v))).collect()
}

fn builtin() -> Limits {
    RESOURCES.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// One resource of a detailed quota view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaDetail {
    pub limit: i64,
    pub in_use: i64,
}

/// A resource that would go over its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Over {
    pub resource: String,
    pub requested: i64,
    pub used: i64,
    pub limit: i64,
}

fn bad_limit(limit: i64, resource: &str, minimum: i64, maximum: i64) -> Option<Error> {
    let inf = |v: i64| if v == -1 { f64::INFINITY } else { v as f64 };
    if inf(limit) < inf(minimum) {
        return Some(Error::BadRequest(format!(
            "Quota limit {limit} for {resource} must be greater than or equal to already used and reserved {minimum}."
        )));
    }
    if inf(limit) > inf(maximum) {
        return Some(Error::BadRequest(format!(
            "Quota limit {limit} for {resource} must be less than or equal to {maximum}."
        )));
    }
    None
}

impl Compute {
    /// The limits of a quota class: what the class sets over the built-in defaults.
    pub async fn quota_class(&self, class_name: &str) -> Result<Limits, Error> {
        Ok(layered(&builtin(), &self.store().quota_class_get(class_name).await?))
    }

    /// Sets limits of a quota class; returns the class's limits.
    pub async fn quota_class_update(&self, class_name: &str, values: &Limits) -> Result<Limits, Error> {
        self.store().quota_class_set(class_name, values).await?;
        self.quota_class(class_name).await
    }

    /// What every project gets unless told otherwise: the `default` class over the built-in defaults.
    pub async fn quota_defaults(&self) -> Result<Limits, Error> {
        self.quota_class(DEFAULT_CLASS).await
    }

    /// The limits of a project, or of one user in it (the user's own, else the project's).
    pub async fn quota_limits(&self, project_id: &str, user_id: Option<&str>) -> Result<Limits, Error> {
        let project = layered(&self.quota_defaults().await?, &self.store().quota_get(project_id, None).await?);
        match user_id {
            Some(u) => Ok(layered(&project, &self.store().quota_get(project_id, Some(u)).await?)),
            None => Ok(project),
        }
    }

    /// What a project (or one user in it) uses of each resource.
    pub async fn quota_usage(&self, project_id: &str, user_id: Option<&str>) -> Result<Limits, Error> {
        let (instances, cores, ram) = match user_id {
            Some(u) => self.store().instance_usage_of_user(project_id, u).await?,
            None => self.store().instance_usage(project_id).await?,
        };
        let key_pairs = match user_id {
            Some(u) => self.store().keypair_count(u).await?,
            None => 0,
        };
        let server_groups = self.store().server_group_count(project_id, user_id).await?;
        let mut usage: Limits = RESOURCES.iter().map(|(k, _)| (k.to_string(), 0)).collect();
        for (k, v) in [
            ("instances", instances),
            ("cores", cores),
            ("ram", ram),
            ("key_pairs", key_pairs),
            ("server_groups", server_groups),
        ] {
            usage.insert(k.into(), v);
        }
        Ok(usage)
    }

    /// Limits with their usage, for the detailed view.
    pub async fn quota_detail(&self, project_id: &str, user_id: Option<&str>) -> Result<BTreeMap<String, QuotaDetail>, Error> {
        let limits = self.quota_limits(project_id, user_id).await?;
        let usage = self.quota_usage(project_id, user_id).await?;
        Ok(limits
            .into_iter()
            .map(|(k, limit)| {
                let in_use = usage.get(&k).copied().unwrap_or(0);
                (k, QuotaDetail { limit, in_use })
            })
            .collect())
    }

    /// Sets limits of a project (or of one user in it). Unless `force`, a limit must stay at or above what is
    /// used (and, for a project, what its users were given), and a user's at or below what the project has
    /// left; every value is checked before any is written. Returns the new limits.
    pub async fn quota_update(
        &self,
        project_id: &str,
        user_id: Option<&str>,
        values: &Limits,
        force: bool,
    ) -> Result<Limits, Error> {
        if !force {
            let usage = self.quota_usage(project_id, user_id).await?;
            let project = self.quota_limits(project_id, None).await?;
            for (resource, &limit) in values {
                let in_use = usage.get(resource).copied().unwrap_or(0);
                let (minimum, maximum) = match user_id {
                    Some(u) => {
                        let project_limit = project.get(resource).copied().unwrap_or(-1);
                        let maximum = if project_limit < 0 {
                            -1
                        } else {
                            project_limit - self.store().quota_users_sum(project_id, resource, Some(u)).await?
                        };
                        (in_use, maximum)
                    }
                    None => (in_use.max(self.store().quota_users_sum(project_id, resource, None).await?), -1),
                };
                if let Some(e) = bad_limit(limit, resource, minimum, maximum) {
                    return Err(e);
                }
            }
        }
        self.store().quota_set(project_id, user_id, values).await?;
        self.quota_limits(project_id, user_id).await
    }

    /// Forgets the limits set for a project (and its users), or for one user in it.
    pub async fn quota_delete(&self, project_id: &str, user_id: Option<&str>) -> Result<(), Error> {
        self.store().quota_delete(project_id, user_id).await?;
        Ok(())
    }

    /// Checks that adding `deltas` stays within the limits of the project and of the user; the resources over
    /// their limit otherwise (the project's first).
    pub async fn quota_check(&self, project_id: &str, user_id: &str, deltas: &[(&str, i64)]) -> Result<Vec<Over>, Error> {
        for scope in [None, Some(user_id)] {
            let limits = self.quota_limits(project_id, scope).await?;
            let usage = self.quota_usage(project_id, scope).await?;
            let over: Vec<Over> = deltas
                .iter()
                .filter_map(|(resource, delta)| {
                    let limit = limits.get(*resource).copied().unwrap_or(-1);
                    let used = usage.get(*resource).copied().unwrap_or(0);
                    (!fits(limit, used, *delta)).then(|| Over { resource: resource.to_string(), requested: *delta, used, limit })
                })
                .collect();
            if !over.is_empty() {
                return Ok(over);
            }
        }
        Ok(Vec::new())
    }

    /// The `metadata_items` limit of a project, as a 403 in upstream's words when `count` items exceed it.
    pub async fn check_metadata_quota(&self, project_id: &str, count: usize) -> Result<(), Error> {
        if count == 0 {
            return Ok(());
        }
        let allowed = self.quota_limits(project_id, None).await?.get("metadata_items").copied().unwrap_or(-1);
        if fits(allowed, 0, count as i64) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("Maximum number of metadata items exceeds {allowed}")))
        }
    }

    /// Replaces (`replace`) or merges an instance's metadata, if the result stays within `metadata_items`.
    pub async fn metadata_set(
        &self,
        project_id: &str,
        uuid: &str,
        items: &BTreeMap<String, String>,
        replace: bool,
    ) -> Result<(), Error> {
        let count = if replace {
            items.len()
        } else {
            let mut keys: std::collections::BTreeSet<String> =
                self.store().metadata_of(&[uuid]).await?.remove(uuid).unwrap_or_default().into_keys().collect();
            keys.extend(items.keys().cloned());
            keys.len()
        };
        self.check_metadata_quota(project_id, count).await?;
        self.store().metadata_set(uuid, items, replace).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_and_bounds() {
        assert!(fits(-1, 1_000_000, 5));
        assert!(fits(10, 5, 5));
        assert!(!fits(10, 6, 5));
        assert!(!fits(0, 0, 1));
        assert!(bad_limit(5, "ram", 0, -1).is_none());
        assert!(bad_limit(-1, "ram", 7, -1).is_none(), "unlimited is above any usage");
        let e = bad_limit(3, "cores", 4, -1).unwrap().to_string();
        assert_eq!(e, "Quota limit 3 for cores must be greater than or equal to already used and reserved 4.");
        let e = bad_limit(-1, "ram", 0, 100).unwrap().to_string();
        assert_eq!(e, "Quota limit -1 for ram must be less than or equal to 100.");
    }

    #[test]
    fn layers_override_known_resources_only() {
        let over: Limits = [("ram".to_string(), 1), ("bogus".to_string(), 2)].into();
        let l = layered(&builtin(), &over);
        assert_eq!(l["ram"], 1);
        assert_eq!(l["instances"], 10);
        assert!(!l.contains_key("bogus"));
        assert_eq!(l.len(), RESOURCES.len());
    }
}
