//! Security groups and their rules: the `default` group each project gets on first use (with upstream's four
//! rules), rule validation (protocols by name or number, port ranges, ICMP type/code, ethertypes, remote prefix or
//! group), duplicate detection, and the in-use rules on deletion.

use serde_json::{Value, json};

use super::{Caller, Network, SECURITY_GROUP, SECURITY_GROUP_RULE, bump, known_attrs, new_id, owner_of, standard, str_of, string_attr};
use crate::{
    error::{Error, Result},
    ipam::Cidr,
};

const SG_ATTRS: &[&str] = &["name", "description", "project_id", "tenant_id", "stateful", "tags"];
const RULE_ATTRS: &[&str] = &[
    "security_group_id",
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
    "remote_address_group_id",
    "description",
    "project_id",
    "tenant_id",
];


/// The protocol as stored (name or decimal string) and its number; `None` for "any".
fn parse_protocol(v: &Value) -> Result<Option<(String, u8)>> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.is_empty() || s.eq_ignore_ascii_case("any") {
        return Ok(None);
    }
    if let Some((name, n)) = network_rpc::IP_PROTOCOLS.iter().find(|(name, _)| name.eq_ignore_ascii_case(&s)) {
        return Ok(Some((name.to_string(), *n)));
    }
    if let Ok(n) = s.parse::<u8>() {
        return Ok(Some((n.to_string(), n)));
    }
    let names: Vec<&str> = network_rpc::IP_PROTOCOLS.iter().map(|(n, _)| *n).collect();
    Err(Error::bad(
        "SecurityGroupRuleInvalidProtocol",
        format!("Security group rule protocol {s} not supported. Only protocol values {names:?} and integer representations [0 to 255] are supported."),
    ))
}

fn parse_port(v: &Value, key: &str) -> Result<Option<i64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().map(Some).ok_or_else(|| Error::invalid(format!("'{v}' is not an integer for {key}"))),
        Value::String(s) => s.parse().map(Some).map_err(|_| Error::invalid(format!("'{s}' is not an integer for {key}"))),
        other => Err(Error::invalid(format!("'{other}' is not an integer for {key}"))),
    }
}

impl Network {
    /// The project's `default` group, created with upstream's four rules on first use.
    pub(crate) async fn ensure_default_sg(&self, project_id: &str) -> Result<String> {
        if project_id.is_empty() {
            return Ok(String::new());
        }
        if let Some(id) = self.store.default_sg_get(project_id).await? {
            return Ok(id);
        }
        let id = new_id();
        if !self.store.default_sg_insert(project_id, &id).await? {
            return Ok(self.store.default_sg_get(project_id).await?.unwrap_or_default());
        }
        let mut sg = standard(&id, project_id, "Default security group");
        sg.insert("name".into(), json!("default"));
        sg.insert("stateful".into(), json!(true));
        sg.insert("tags".into(), json!([]));
        let sg = Value::Object(sg);
        self.insert(SECURITY_GROUP, &sg, "").await?;
        for (direction, ethertype, remote) in
            [("ingress", "IPv4", true), ("ingress", "IPv6", true), ("egress", "IPv4", false), ("egress", "IPv6", false)]
        {
            let rule = rule_doc(project_id, &id, direction, ethertype, None, None, None, None, remote.then_some(id.as_str()), "");
            self.insert(SECURITY_GROUP_RULE, &rule, &id).await?;
        }
        Ok(id)
    }

    pub(crate) async fn decorate_security_groups(&self, docs: Vec<Value>) -> Result<Vec<Value>> {
        let rules = self.store.resource_list("security_group_rule").await?;
        Ok(docs
            .into_iter()
            .map(|mut d| {
                let id = str_of(&d, "id").to_string();
                d["security_group_rules"] = json!(rules.iter().filter(|r| str_of(r, "security_group_id") == id).cloned().collect::<Vec<_>>());
                d
            })
            .collect())
    }

    pub(crate) async fn create_security_group(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        known_attrs(body, SG_ATTRS)?;
        let owner = owner_of(caller, body)?;
        caller.enforce("create_security_group", &owner)?;
        let name = string_attr(body, "name", 255)?.unwrap_or_default();
        self.ensure_default_sg(&owner).await?;
        if name == "default" {
            return Err(Error::conflict("SecurityGroupDefaultAlreadyExists", "Default security group already exists."));
        }
        self.check_quota(&owner, "security_group").await?;
        let id = new_id();
        let mut sg = standard(&id, &owner, &string_attr(body, "description", 255)?.unwrap_or_default());
        sg.insert("name".into(), json!(name));
        sg.insert("stateful".into(), json!(super::opt_bool(body, "stateful")?.unwrap_or(true)));
        sg.insert("tags".into(), json!([]));
        let sg = Value::Object(sg);
        self.insert(SECURITY_GROUP, &sg, "").await?;
        for ethertype in ["IPv4", "IPv6"] {
            let rule = rule_doc(&owner, &id, "egress", ethertype, None, None, None, None, None, "");
            self.insert(SECURITY_GROUP_RULE, &rule, &id).await?;
        }
        Ok(sg)
    }

    pub(crate) async fn update_security_group(&self, _caller: &Caller<'_>, mut doc: Value, body: &Value) -> Result<Value> {
        known_attrs(body, SG_ATTRS)?;
        if let Some(n) = string_attr(body, "name", 255)? {
            if str_of(&doc, "name") == "default" && n != "default" {
                return Err(Error::conflict("SecurityGroupCannotUpdateDefault", "Updating default security group not allowed."));
            }
            if n == "default" && str_of(&doc, "name") != "default" {
                return Err(Error::conflict("SecurityGroupDefaultAlreadyExists", "Default security group already exists."));
            }
            doc["name"] = json!(n);
        }
        if let Some(d) = string_attr(body, "description", 255)? {
            doc["description"] = json!(d);
        }
        if let Some(s) = super::opt_bool(body, "stateful")? {
            doc["stateful"] = json!(s);
        }
        bump(&mut doc);
        self.save(SECURITY_GROUP, &doc).await?;
        Ok(doc)
    }

    pub(crate) async fn delete_security_group(&self, caller: &Caller<'_>, doc: Value) -> Result<()> {
        let id = str_of(&doc, "id").to_string();
        let owner = str_of(&doc, "project_id").to_string();
        let is_default = self.store.default_sg_get(&owner).await?.as_deref() == Some(id.as_str());
        if is_default && !caller.is_admin() {
            return Err(Error::conflict("SecurityGroupCannotRemoveDefault", "Insufficient rights for removing default security group."));
        }
        let in_use = self
            .store
            .resource_list("port")
            .await?
            .iter()
            .any(|p| p["security_groups"].as_array().is_some_and(|g| g.iter().any(|x| x.as_str() == Some(id.as_str()))));
        if in_use {
            return Err(Error::conflict("SecurityGroupInUse", format!("Security Group {id} in use.")));
        }
        for r in self.store.resource_list("security_group_rule").await? {
            if str_of(&r, "security_group_id") == id || str_of(&r, "remote_group_id") == id {
                self.store.resource_delete("security_group_rule", str_of(&r, "id")).await?;
            }
        }
        if is_default {
            self.store.default_sg_delete(&owner).await?;
        }
        self.store.resource_delete("security_group", &id).await?;
        Ok(())
    }

    pub(crate) async fn create_security_group_rule(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        known_attrs(body, RULE_ATTRS)?;
        let Some(sg_id) = body.get("security_group_id").and_then(Value::as_str) else {
            return Err(Error::bad("BadRequest", "Failed to parse request. Required attribute 'security_group_id' not specified"));
        };
        let not_found = |id: &str| Error::not_found("SecurityGroupNotFound", format!("Security group {id} does not exist"));
        let sg = self.store.resource_get("security_group", sg_id).await?.ok_or_else(|| not_found(sg_id))?;
        if !self.visible(caller, SECURITY_GROUP, &sg).await? {
            return Err(not_found(sg_id));
        }
        let owner = str_of(&sg, "project_id").to_string();
        caller.enforce("create_security_group_rule", &owner)?;
        let direction = match body.get("direction").and_then(Value::as_str) {
            Some(d @ ("ingress" | "egress")) => d.to_string(),
            Some(d) => return Err(Error::invalid(format!("'{d}' is not in ['ingress', 'egress']"))),
            None => return Err(Error::bad("BadRequest", "Failed to parse request. Required attribute 'direction' not specified")),
        };
        let ethertype = match body.get("ethertype") {
            None | Some(Value::Null) => "IPv4".to_string(),
            Some(Value::String(e)) if e.eq_ignore_ascii_case("ipv4") => "IPv4".into(),
            Some(Value::String(e)) if e.eq_ignore_ascii_case("ipv6") => "IPv6".into(),
            Some(e) => {
                return Err(Error::bad(
                    "SecurityGroupRuleInvalidEtherType",
                    format!("Security group rule for ethertype '{}' not supported. Allowed values are ['IPv4', 'IPv6'].", e.as_str().unwrap_or("")),
                ));
            }
        };
        let protocol = parse_protocol(body.get("protocol").unwrap_or(&Value::Null))?;
        let pmin = parse_port(body.get("port_range_min").unwrap_or(&Value::Null), "port_range_min")?;
        let pmax = parse_port(body.get("port_range_max").unwrap_or(&Value::Null), "port_range_max")?;
        match &protocol {
            None if pmin.is_some() || pmax.is_some() => {
                return Err(Error::bad("SecurityGroupProtocolRequiredWithPorts", "Must also specify protocol if port range is given."));
            }
            Some((_, 6 | 17 | 33 | 132 | 136)) => {
                for p in [pmin, pmax].into_iter().flatten() {
                    if !(1..=65535).contains(&p) {
                        return Err(Error::bad("SecurityGroupInvalidPortValue", format!("Invalid value for port {p}")));
                    }
                }
                let inverted = match (pmin, pmax) {
                    (Some(lo), Some(hi)) => lo > hi,
                    (None, Some(_)) => true,
                    _ => false,
                };
                if inverted {
                    return Err(Error::bad("SecurityGroupInvalidPortRange", "For TCP/UDP protocols, port_range_min must be <= port_range_max"));
                }
                for p in [pmin, pmax].into_iter().flatten() {
                    if !(1..=65535).contains(&p) {
                        return Err(Error::bad("SecurityGroupInvalidPortValue", format!("Invalid value for port {p}")));
                    }
                }
            }
            Some((_, 1 | 58)) => {
                for (k, p) in [("type", pmin), ("code", pmax)] {
                    if let Some(p) = p
                        && !(0..=255).contains(&p)
                    {
                        return Err(Error::bad("SecurityGroupInvalidIcmpValue", format!("Invalid value for ICMP {k} (port-range-min): {p}")));
                    }
                }
                if pmax.is_some() && pmin.is_none() {
                    return Err(Error::bad("SecurityGroupMissingIcmpType", format!("ICMP code (port-range-max) {} is provided but ICMP type (port-range-min) is missing.", pmax.unwrap_or(0))));
                }
            }
            Some(_) if pmin.is_some() || pmax.is_some() => {
                return Err(Error::bad("SecurityGroupInvalidProtocolForPort", "Ports may only be given for TCP, UDP, SCTP, DCCP, UDP-Lite and ICMP rules."));
            }
            _ => {}
        }
        if let Some((name, _)) = &protocol
            && ethertype == "IPv4"
            && (name == "ipv6-icmp" || name == "icmpv6")
        {
            return Err(Error::bad("SecurityGroupEthertypeConflictWithProtocol", format!("Invalid ethertype IPv4 for protocol {name}.")));
        }
        let remote_ip = match body.get("remote_ip_prefix") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => {
                let c = Cidr::parse(p).ok_or_else(|| Error::invalid(format!("'{p}' is not a valid IP subnet")))?;
                let want = if ethertype == "IPv4" { 4 } else { 6 };
                if c.version != want {
                    return Err(Error::bad(
                        "SecurityGroupRuleParameterConflict",
                        format!("Conflicting value ethertype {ethertype} for CIDR {p}"),
                    ));
                }
                Some(c.normalized().to_string())
            }
            Some(v) => return Err(Error::invalid(format!("'{v}' is not a valid IP subnet"))),
        };
        let remote_group = match body.get("remote_group_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(g)) => {
                let rg = self.store.resource_get("security_group", g).await?.ok_or_else(|| not_found(g))?;
                if !self.visible(caller, SECURITY_GROUP, &rg).await? {
                    return Err(not_found(g));
                }
                Some(g.clone())
            }
            Some(v) => return Err(Error::invalid(format!("'{v}' is not a valid UUID"))),
        };
        if remote_ip.is_some() && remote_group.is_some() {
            return Err(Error::bad("SecurityGroupRemoteGroupAndRemoteIpPrefix", "Only remote_ip_prefix or remote_group_id may be provided."));
        }
        // a prefix covering everything is the same rule as no prefix
        let remote_ip = remote_ip.filter(|p| p != "0.0.0.0/0" && p != "::/0");
        let proto_name = protocol.as_ref().map(|(n, _)| n.clone());
        let rule = rule_doc(
            &owner,
            sg_id,
            &direction,
            &ethertype,
            proto_name.as_deref(),
            pmin,
            pmax,
            remote_ip.as_deref(),
            remote_group.as_deref(),
            &string_attr(body, "description", 255)?.unwrap_or_default(),
        );
        let same = |r: &Value| {
            ["direction", "ethertype", "port_range_min", "port_range_max", "remote_group_id"].iter().all(|k| r[*k] == rule[*k])
                && protocol_number(&r["protocol"]) == protocol_number(&rule["protocol"])
                && normalized_prefix(&r["remote_ip_prefix"]) == normalized_prefix(&rule["remote_ip_prefix"])
        };
        for r in self.store.resource_list_by_parent("security_group_rule", sg_id).await? {
            if same(&r) {
                return Err(Error::conflict(
                    "SecurityGroupRuleExists",
                    format!("Security group rule already exists. Rule id is {}.", str_of(&r, "id")),
                ));
            }
        }
        self.check_quota(&owner, "security_group_rule").await?;
        // keep the caller's prefix spelling in the response, as upstream does
        let mut rule = rule;
        if let Some(Value::String(p)) = body.get("remote_ip_prefix")
            && let Some(c) = Cidr::parse(p)
        {
            rule["remote_ip_prefix"] = json!(c.normalized().to_string());
            rule["normalized_cidr"] = json!(c.normalized().to_string());
        }
        self.insert(SECURITY_GROUP_RULE, &rule, sg_id).await?;
        let mut sg = sg;
        bump(&mut sg);
        self.save(SECURITY_GROUP, &sg).await?;
        Ok(rule)
    }

    pub(crate) async fn delete_security_group_rule(&self, doc: Value) -> Result<()> {
        self.store.resource_delete("security_group_rule", str_of(&doc, "id")).await?;
        if let Some(mut sg) = self.store.resource_get("security_group", str_of(&doc, "security_group_id")).await? {
            bump(&mut sg);
            self.save(SECURITY_GROUP, &sg).await?;
        }
        Ok(())
    }
}

fn protocol_number(v: &Value) -> Option<u8> {
    parse_protocol(v).ok().flatten().map(|(_, n)| n)
}

fn normalized_prefix(v: &Value) -> Option<String> {
    match v.as_str() {
        None => None,
        Some("0.0.0.0/0") | Some("::/0") => None,
        Some(p) => Cidr::parse(p).map(|c| c.normalized().to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
fn rule_doc(
    project: &str,
    sg_id: &str,
    direction: &str,
    ethertype: &str,
    protocol: Option<&str>,
    pmin: Option<i64>,
    pmax: Option<i64>,
    remote_ip: Option<&str>,
    remote_group: Option<&str>,
    description: &str,
) -> Value {
    let mut r = standard(&new_id(), project, description);
    r.insert("security_group_id".into(), json!(sg_id));
    r.insert("direction".into(), json!(direction));
    r.insert("ethertype".into(), json!(ethertype));
    r.insert("protocol".into(), json!(protocol));
    r.insert("port_range_min".into(), json!(pmin));
    r.insert("port_range_max".into(), json!(pmax));
    r.insert("remote_ip_prefix".into(), json!(remote_ip));
    r.insert("normalized_cidr".into(), json!(remote_ip));
    r.insert("remote_group_id".into(), json!(remote_group));
    r.insert("remote_address_group_id".into(), json!(null));
    Value::Object(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_by_name_or_number() {
        assert_eq!(parse_protocol(&json!("TCP")).unwrap(), Some(("tcp".into(), 6)));
        assert_eq!(parse_protocol(&json!(17)).unwrap(), Some(("17".into(), 17)));
        assert_eq!(parse_protocol(&json!("any")).unwrap(), None);
        assert!(parse_protocol(&json!("bad")).is_err());
        assert!(parse_protocol(&json!(300)).is_err());
    }
}
