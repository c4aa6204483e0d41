//! Storage policies: named classes of storage, each with its own object ring (Swift's `storage-policy:N`
//! sections). A container picks one at creation (`X-Storage-Policy`) and keeps it; its objects' data is placed by
//! that policy's ring, under `objects` (policy 0) or `objects-N` on each device.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One policy, as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoragePolicy {
    pub index: u32,
    pub name: String,
    /// Other names clients may use for it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// New containers without `X-Storage-Policy` get the default policy.
    #[serde(default)]
    pub default: bool,
    /// A deprecated policy keeps its containers but takes no new ones and is not advertised.
    #[serde(default)]
    pub deprecated: bool,
}

impl StoragePolicy {
    /// Swift's policy 0 when none is configured.
    pub fn policy_0() -> StoragePolicy {
        StoragePolicy { index: 0, name: "Policy-0".into(), aliases: Vec::new(), default: true, deprecated: false }
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.aliases.iter().map(String::as_str))
    }
}

/// The validated set of policies.
#[derive(Clone, Debug)]
pub struct Policies {
    list: Vec<StoragePolicy>,
}

impl Policies {
    /// Checks Swift's rules: unique indexes and names (aliases included, case-insensitively), names of letters,
    /// digits and dashes, policy 0 present, exactly one default (policy 0 when none is marked), and the default
    /// not deprecated.
    pub fn new(mut list: Vec<StoragePolicy>) -> Result<Policies, Error> {
        let bad = |m: String| Error::Config(format!("storage policies: {m}"));
        if list.is_empty() {
            list.push(StoragePolicy::policy_0());
        }
        list.sort_by_key(|p| p.index);
        if list[0].index != 0 {
            return Err(bad("policy 0 must be configured".into()));
        }
        let mut seen: Vec<String> = Vec::new();
        for (i, p) in list.iter().enumerate() {
            if i > 0 && list[i - 1].index == p.index {
                return Err(bad(format!("index {} is used twice", p.index)));
            }
            for n in p.names() {
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(bad(format!("invalid name {n:?}: letters, digits and '-' only")));
                }
                let key = n.to_ascii_lowercase();
                if seen.contains(&key) {
                    return Err(bad(format!("name {n:?} is used twice")));
                }
                seen.push(key);
            }
        }
        match list.iter().filter(|p| p.default).count() {
            0 => list[0].default = true,
            1 => {}
            _ => return Err(bad("more than one default policy".into())),
        }
        if list.iter().any(|p| p.default && p.deprecated) {
            return Err(bad("the default policy cannot be deprecated".into()));
        }
        Ok(Policies { list })
    }

    pub fn all(&self) -> &[StoragePolicy] {
        &self.list
    }

    pub fn default_policy(&self) -> &StoragePolicy {
        self.list.iter().find(|p| p.default).unwrap_or(&self.list[0])
    }

    pub fn by_index(&self, index: i64) -> Option<&StoragePolicy> {
        self.list.iter().find(|p| i64::from(p.index) == index)
    }

    /// The policy a name or alias means (case-insensitive).
    pub fn by_name(&self, name: &str) -> Option<&StoragePolicy> {
        self.list.iter().find(|p| p.names().any(|n| n.eq_ignore_ascii_case(name)))
    }

    /// The policy an `X-Storage-Policy` header names; 400 for a name no policy has.
    pub fn requested(&self, name: &str) -> Result<&StoragePolicy, Error> {
        self.by_name(name.trim()).ok_or_else(|| Error::BadRequest(format!("Invalid X-Storage-Policy '{}'", name.trim())))
    }

    /// The policy a new container asks for with `X-Storage-Policy`, as Swift's proxy checks it.
    pub fn for_new_container(&self, requested: Option<&str>) -> Result<&StoragePolicy, Error> {
        let Some(name) = requested else { return Ok(self.default_policy()) };
        let p = self.requested(name)?;
        if p.deprecated {
            return Err(Error::BadRequest(format!("Storage Policy '{}' is deprecated", p.name)));
        }
        Ok(p)
    }

    /// `/info`'s `policies`: the policies not deprecated, with their aliases.
    pub fn info(&self) -> serde_json::Value {
        self.list
            .iter()
            .filter(|p| !p.deprecated)
            .map(|p| {
                let mut v = serde_json::json!({"name": p.name, "aliases": p.names().collect::<Vec<_>>().join(", ")});
                if p.default {
                    v["default"] = true.into();
                }
                v
            })
            .collect()
    }
}

/// The directory of a policy's data on a device: `objects`, `objects-1`, …
pub fn data_dir_name(policy: u32) -> String {
    if policy == 0 { "objects".into() } else { format!("objects-{policy}") }
}

/// The ring file of a policy: `object.ring.json`, `object-1.ring.json`, …
pub fn ring_file_name(policy: u32) -> String {
    if policy == 0 { "object.ring.json".into() } else { format!("object-{policy}.ring.json") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol(index: u32, name: &str) -> StoragePolicy {
        StoragePolicy { index, name: name.into(), aliases: Vec::new(), default: false, deprecated: false }
    }

    #[test]
    fn swifts_rules() {
        let p = Policies::new(Vec::new()).unwrap();
        assert_eq!(p.default_policy().name, "Policy-0");
        let p = Policies::new(vec![
            StoragePolicy { aliases: vec!["yellow".into()], default: true, ..pol(1, "gold") },
            pol(0, "silver"),
            StoragePolicy { deprecated: true, ..pol(2, "bronze") },
        ])
        .unwrap();
        assert_eq!(p.default_policy().index, 1);
        assert_eq!(p.for_new_container(None).unwrap().name, "gold");
        assert_eq!(p.for_new_container(Some("YELLOW")).unwrap().index, 1);
        assert_eq!(p.for_new_container(Some("silver")).unwrap().index, 0);
        assert_eq!(p.for_new_container(Some("nope")).unwrap_err().to_string(), Error::BadRequest("Invalid X-Storage-Policy 'nope'".into()).to_string());
        assert!(matches!(p.for_new_container(Some("bronze")), Err(Error::BadRequest(m)) if m.contains("deprecated")));
        assert_eq!(p.by_index(2).unwrap().name, "bronze");
        assert_eq!(
            p.info(),
            serde_json::json!([{"name": "silver", "aliases": "silver"}, {"name": "gold", "aliases": "gold, yellow", "default": true}])
        );

        assert!(Policies::new(vec![pol(1, "a")]).is_err(), "policy 0 is required");
        assert!(Policies::new(vec![pol(0, "a"), pol(0, "b")]).is_err());
        assert!(Policies::new(vec![pol(0, "a"), pol(1, "A")]).is_err());
        assert!(Policies::new(vec![pol(0, "a b")]).is_err());
        assert!(Policies::new(vec![StoragePolicy { default: true, ..pol(0, "a") }, StoragePolicy { default: true, ..pol(1, "b") }]).is_err());
        assert!(Policies::new(vec![StoragePolicy { default: true, deprecated: true, ..pol(0, "a") }]).is_err());
        assert_eq!((data_dir_name(0), data_dir_name(3)), ("objects".to_string(), "objects-3".to_string()));
        assert_eq!(ring_file_name(2), "object-2.ring.json");
    }
}
