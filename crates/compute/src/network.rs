//! The compute service's client of the network service (Neutron's API v2.0), over HTTP only: the API validates
//! requested networks and ports and proxies security groups and floating IPs with the caller's own token (as Nova
//! calls Neutron on the user's behalf); the conductor creates, binds, unbinds and deletes ports with the service's
//! token (an admin: it sets `binding:host_id` and creates ports in the instance's project).
//!
//! What an instance is attached to is kept in the compute tables as Nova's *network info cache* ([`Vif`]s), so
//! server views never ask the network service.

use std::{sync::Arc, time::Duration};

use auth::HttpValidator;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Error;
pub use crate::service_http::As;
use crate::service_http::{ServiceHttp, safe};

/// One entry of a server's `networks` request, resolved by the API: a network to make a port on, or a port to
/// bind, with an optional fixed address and device tag.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// An address of a [`Vif`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VifIp {
    pub address: String,
    pub version: u8,
    /// `fixed` or `floating` (`OS-EXT-IPS:type`).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
}

/// One virtual interface of an instance, as the info cache keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vif {
    pub port_id: String,
    pub network_id: String,
    /// The network's name: the key of `addresses`.
    pub label: String,
    pub mac: String,
    pub ips: Vec<VifIp>,
    /// The port existed before the instance: it is unbound, not deleted, when the instance goes.
    #[serde(default)]
    pub preexisting: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default)]
    pub status: String,
    /// The network's MTU, when the network service said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Where the network service is and how the service authenticates to it.
#[derive(Clone)]
pub struct NetworkClient {
    http: ServiceHttp,
    /// The network endpoint (e.g. `http://host/networking`).
    url: Arc<str>,
}

impl std::fmt::Debug for NetworkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkClient").field("url", &self.url).finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("network service: {e}"))
}

/// The `NeutronError` of an answer: (type, message).
pub fn neutron_error(body: &Value) -> (String, String) {
    let e = &body["NeutronError"];
    (e["type"].as_str().unwrap_or_default().to_string(), e["message"].as_str().unwrap_or_default().to_string())
}

impl NetworkClient {
    /// `url` is the network endpoint; `session` the service's credentials (needed by the conductor).
    pub fn new(url: &str, session: Option<Arc<HttpValidator>>) -> Result<Self, Error> {
        let http = ServiceHttp::new("network", Duration::from_secs(30), session)?;
        Ok(NetworkClient { http, url: url.trim_end_matches('/').into() })
    }

    /// One request under `/v2.0`; with the service token it is retried once with a fresh token on 401.
    pub async fn send(&self, who: As<'_>, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Value), Error> {
        self.http.send(who, method, &format!("{}/v2.0{path}", self.url), path, &[], body).await
    }

    /// One resource (`/networks/{id}` → its `network` member), `None` if the caller cannot see it.
    pub async fn show(&self, who: As<'_>, collection: &str, id: &str) -> Result<Option<Value>, Error> {
        if !safe(id) {
            return Ok(None);
        }
        let (status, v) = self.send(who, Method::GET, &format!("/{collection}/{id}"), None).await?;
        let member = collection.trim_end_matches('s').replace('-', "_");
        match status {
            s if s.is_success() => Ok(Some(v[member.as_str()].clone())),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Ok(None),
            s => Err(unavailable(format!("GET /{collection}/{id} answered {s}"))),
        }
    }

    /// A list (`/ports?device_id=…` → its `ports` member).
    pub async fn list(&self, who: As<'_>, collection: &str, query: &[(&str, &str)]) -> Result<Vec<Value>, Error> {
        let q: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
        let path = if q.is_empty() { format!("/{collection}") } else { format!("/{collection}?{q}") };
        let (status, v) = self.send(who, Method::GET, &path, None).await?;
        if !status.is_success() {
            return Err(unavailable(format!("GET {path} answered {status}: {v}")));
        }
        let key = collection.replace('-', "_");
        Ok(v[key.as_str()].as_array().cloned().unwrap_or_default())
    }

    // ----- ports of instances -----

    /// The networks a project may boot on without naming one: its own and the shared ones, not external ones
    /// of other projects (as Nova's `_get_available_networks`).
    pub async fn available_networks(&self, who: As<'_>, project_id: &str) -> Result<Vec<Value>, Error> {
        let mut nets = self.list(who, "networks", &[("project_id", project_id), ("shared", "false")]).await?;
        for n in self.list(who, "networks", &[("shared", "true")]).await? {
            if !nets.iter().any(|x| x["id"] == n["id"]) {
                nets.push(n);
            }
        }
        nets.retain(|n| n["router:external"] != json!(true));
        nets.sort_by(|a, b| a["created_at"].as_str().cmp(&b["created_at"].as_str()));
        Ok(nets)
    }

    /// The project's auto-allocated network (`auto-allocated-topology`), made on first use; `None` when the
    /// network service cannot provide one (no default external network or subnet pool).
    pub async fn auto_allocate(&self, who: As<'_>, project_id: &str) -> Result<Option<String>, Error> {
        if !safe(project_id) {
            return Ok(None);
        }
        let (status, v) = self.send(who, Method::GET, &format!("/auto-allocated-topology/{project_id}"), None).await?;
        if !status.is_success() {
            tracing::info!(project = %project_id, %status, body = %v, "no auto-allocated network");
            return Ok(None);
        }
        Ok(v["auto_allocated_topology"]["id"].as_str().map(str::to_string))
    }

    /// The ids of security groups named (or identified) in `names`, as the caller sees them.
    pub async fn security_group_ids(&self, who: As<'_>, project_id: &str, names: &[String]) -> Result<Vec<String>, Error> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let groups = self.list(who, "security-groups", &[("project_id", project_id)]).await?;
        let mut ids = Vec::new();
        for n in names {
            let found = groups.iter().find(|g| g["id"] == json!(n)).or_else(|| groups.iter().find(|g| g["name"] == json!(n)));
            match found {
                Some(g) => {
                    let id = g["id"].as_str().unwrap_or_default().to_string();
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                None => return Err(Error::BadRequest(format!("Security group {n} not found for project {project_id}."))),
            }
        }
        Ok(ids)
    }

    /// Creates (or binds) the ports of `requests` for an instance on `host`; on any failure the ports made so far
    /// are undone and the error returned.
    pub async fn allocate(
        &self,
        inst: &PortOwner<'_>,
        requests: &[NetworkRequest],
        security_groups: &[String],
    ) -> Result<Vec<Vif>, Error> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        // The project's `default` group is the network service's own default for new ports (and may not exist
        // before the project's first port): only other groups are named.
        let named: Vec<String> = security_groups.iter().filter(|g| g.as_str() != "default").cloned().collect();
        let mut sg_ids = self.security_group_ids(As::Service, inst.project_id, &named).await?;
        if !sg_ids.is_empty() && security_groups.iter().any(|g| g == "default") {
            sg_ids.extend(self.security_group_ids(As::Service, inst.project_id, &["default".to_string()]).await.unwrap_or_default());
        }
        let mut vifs: Vec<Vif> = Vec::new();
        for r in requests {
            match self.allocate_one(inst, r, &sg_ids).await {
                Ok(v) => vifs.push(v),
                Err(e) => {
                    self.deallocate(&vifs).await;
                    return Err(e);
                }
            }
        }
        Ok(vifs)
    }

    async fn allocate_one(&self, inst: &PortOwner<'_>, r: &NetworkRequest, sg_ids: &[String]) -> Result<Vif, Error> {
        let binding = json!({
            "device_id": inst.uuid,
            "device_owner": format!("compute:{}", inst.zone),
            "binding:host_id": inst.host,
        });
        let (port, preexisting) = if let Some(port_id) = &r.port_id {
            let (status, v) =
                self.send(As::Service, Method::PUT, &format!("/ports/{port_id}"), Some(&json!({"port": binding}))).await?;
            if !status.is_success() {
                return Err(port_error(status, &v));
            }
            (v["port"].clone(), true)
        } else {
            let network_id = r.network_id.clone().unwrap_or_default();
            let mut port = binding;
            port["network_id"] = json!(network_id);
            port["project_id"] = json!(inst.project_id);
            if let Some(ip) = &r.fixed_ip {
                port["fixed_ips"] = json!([{"ip_address": ip}]);
            }
            let net = self.show(As::Service, "networks", &network_id).await?;
            // Security groups apply where port security does (as Nova, which leaves them off otherwise).
            if net.as_ref().is_none_or(|n| n["port_security_enabled"] != json!(false)) && !sg_ids.is_empty() {
                port["security_groups"] = json!(sg_ids);
            }
            let (status, v) = self.send(As::Service, Method::POST, "/ports", Some(&json!({"port": port}))).await?;
            if !status.is_success() {
                return Err(port_error(status, &v));
            }
            (v["port"].clone(), false)
        };
        let mut vif = self.vif_of(&port, preexisting).await?;
        vif.tag = r.tag.clone();
        Ok(vif)
    }

    /// The cache entry of a port (its network's name looked up).
    pub async fn vif_of(&self, port: &Value, preexisting: bool) -> Result<Vif, Error> {
        let network_id = port["network_id"].as_str().unwrap_or_default().to_string();
        let network = self.show(As::Service, "networks", &network_id).await?;
        let label = network.as_ref().and_then(|n| n["name"].as_str().map(str::to_string)).unwrap_or_default();
        let mtu = network.as_ref().and_then(|n| n["mtu"].as_u64()).and_then(|m| u32::try_from(m).ok());
        let fixed = port["fixed_ips"].as_array().cloned().unwrap_or_default();
        let ips = fixed
            .iter()
            .filter_map(|f| {
                let address = f["ip_address"].as_str()?.to_string();
                let version = if address.contains(':') { 6 } else { 4 };
                Some(VifIp { address, version, kind: "fixed".into(), subnet_id: f["subnet_id"].as_str().map(str::to_string) })
            })
            .collect();
        Ok(Vif {
            port_id: port["id"].as_str().unwrap_or_default().to_string(),
            network_id,
            label,
            mac: port["mac_address"].as_str().unwrap_or_default().to_string(),
            ips,
            preexisting,
            tag: None,
            status: port["status"].as_str().unwrap_or_default().to_string(),
            mtu,
        })
    }

    /// Deletes the ports compute made and unbinds the others; failures are logged (a port already gone is fine).
    pub async fn deallocate(&self, vifs: &[Vif]) {
        for v in vifs {
            if let Err(e) = self.release(v).await {
                tracing::warn!(port = %v.port_id, error = %e, "cannot release a port");
            }
        }
    }

    /// Releases one port: deleted if compute made it, else unbound.
    pub async fn release(&self, v: &Vif) -> Result<(), Error> {
        let path = format!("/ports/{}", v.port_id);
        let (status, body) = if v.preexisting {
            let unbind = json!({"port": {"device_id": "", "device_owner": "", "binding:host_id": ""}});
            self.send(As::Service, Method::PUT, &path, Some(&unbind)).await?
        } else {
            self.send(As::Service, Method::DELETE, &path, None).await?
        };
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(unavailable(format!("releasing port {} answered {status}: {body}", v.port_id)))
        }
    }

    /// Moves an instance's ports to another host (a reschedule).
    pub async fn rebind(&self, vifs: &mut [Vif], host: &str) -> Result<(), Error> {
        for v in vifs {
            let body = json!({"port": {"binding:host_id": host}});
            let (status, b) = self.send(As::Service, Method::PUT, &format!("/ports/{}", v.port_id), Some(&body)).await?;
            if !status.is_success() && status != StatusCode::NOT_FOUND {
                return Err(port_error(status, &b));
            }
            if let Some(s) = b["port"]["status"].as_str() {
                v.status = s.to_string();
            }
        }
        Ok(())
    }

    /// The instance's interfaces as the network service has them now (fixed and floating addresses), in the order
    /// of `known` (new ports last): the info cache refresh.
    pub async fn refresh(&self, device_id: &str, known: &[Vif]) -> Result<Vec<Vif>, Error> {
        let ports = self.list(As::Service, "ports", &[("device_id", device_id)]).await?;
        let mut out: Vec<Vif> = Vec::new();
        let mut labels: std::collections::HashMap<String, String> =
            known.iter().map(|v| (v.network_id.clone(), v.label.clone())).collect();
        let mut ordered: Vec<&Value> = Vec::new();
        for k in known {
            if let Some(p) = ports.iter().find(|p| p["id"] == json!(k.port_id)) {
                ordered.push(p);
            }
        }
        for p in &ports {
            if !known.iter().any(|k| p["id"] == json!(k.port_id)) {
                ordered.push(p);
            }
        }
        // The floating IPs of all the ports in one request (repeated keys match any of their values).
        let port_ids: Vec<(&str, &str)> = ordered.iter().map(|p| ("port_id", p["id"].as_str().unwrap_or_default())).collect();
        let floating = if port_ids.is_empty() { Vec::new() } else { self.list(As::Service, "floatingips", &port_ids).await? };
        for p in ordered {
            let pid = p["id"].as_str().unwrap_or_default();
            let old = known.iter().find(|k| k.port_id == pid);
            let net = p["network_id"].as_str().unwrap_or_default().to_string();
            let mut vif = match labels.get(&net) {
                Some(label) => {
                    let mut v = self.vif_without_label(p);
                    v.label = label.clone();
                    v
                }
                None => {
                    let v = self.vif_of(p, false).await?;
                    labels.insert(net.clone(), v.label.clone());
                    v
                }
            };
            if let Some(o) = old {
                vif.preexisting = o.preexisting;
                vif.tag = o.tag.clone();
            } else {
                // A port bound from outside (an interface attach elsewhere): it is not compute's to delete.
                vif.preexisting = true;
            }
            for f in floating.iter().filter(|f| f["port_id"].as_str() == Some(pid)) {
                if let Some(a) = f["floating_ip_address"].as_str() {
                    let version = if a.contains(':') { 6 } else { 4 };
                    vif.ips.push(VifIp { address: a.to_string(), version, kind: "floating".into(), subnet_id: None });
                }
            }
            out.push(vif);
        }
        Ok(out)
    }

    fn vif_without_label(&self, port: &Value) -> Vif {
        let fixed = port["fixed_ips"].as_array().cloned().unwrap_or_default();
        Vif {
            port_id: port["id"].as_str().unwrap_or_default().to_string(),
            network_id: port["network_id"].as_str().unwrap_or_default().to_string(),
            label: String::new(),
            mac: port["mac_address"].as_str().unwrap_or_default().to_string(),
            ips: fixed
                .iter()
                .filter_map(|f| {
                    let address = f["ip_address"].as_str()?.to_string();
                    let version = if address.contains(':') { 6 } else { 4 };
                    Some(VifIp { address, version, kind: "fixed".into(), subnet_id: f["subnet_id"].as_str().map(str::to_string) })
                })
                .collect(),
            preexisting: false,
            tag: None,
            status: port["status"].as_str().unwrap_or_default().to_string(),
            mtu: None,
        }
    }
}

/// Whose ports these are: the instance, its project, zone and host.
#[derive(Clone, Debug)]
pub struct PortOwner<'a> {
    pub uuid: &'a str,
    pub project_id: &'a str,
    pub zone: &'a str,
    pub host: &'a str,
}

/// A failed port create or update, in compute's words.
fn port_error(status: StatusCode, body: &Value) -> Error {
    let (kind, message) = neutron_error(body);
    match (status, kind.as_str()) {
        (StatusCode::NOT_FOUND, _) => Error::BadRequest(message),
        (StatusCode::CONFLICT, "IpAddressGenerationFailure") => {
            Error::Conflict(format!("No more fixed IP addresses are available: {message}"))
        }
        (StatusCode::CONFLICT, _) => Error::Conflict(message),
        (StatusCode::FORBIDDEN, _) => Error::Forbidden(message),
        _ => Error::BadRequest(if message.is_empty() { format!("The network service answered {status}") } else { message }),
    }
}

/// Nova's `addresses` of a server: by network name, each address with its version, and with `extended` its type
/// and MAC (`OS-EXT-IPS`, `OS-EXT-IPS-MAC`: shown by `GET` and lists, not by update and rebuild responses).
pub fn addresses(vifs: &[Vif]) -> Value {
    addresses_view(vifs, true)
}

/// [`addresses`], with or without the extended attributes.
pub fn addresses_view(vifs: &[Vif], extended: bool) -> Value {
    let mut out = serde_json::Map::new();
    for v in vifs {
        let list = out.entry(v.label.clone()).or_insert_with(|| json!([]));
        if let Value::Array(items) = list {
            for ip in &v.ips {
                items.push(if extended {
                    json!({
                        "version": ip.version,
                        "addr": ip.address,
                        "OS-EXT-IPS:type": ip.kind,
                        "OS-EXT-IPS-MAC:mac_addr": v.mac,
                    })
                } else {
                    json!({"version": ip.version, "addr": ip.address})
                });
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vif(label: &str, mac: &str, ips: &[(&str, &str)]) -> Vif {
        Vif {
            port_id: format!("p-{mac}"),
            network_id: format!("n-{label}"),
            label: label.into(),
            mac: mac.into(),
            ips: ips
                .iter()
                .map(|(a, k)| VifIp {
                    address: a.to_string(),
                    version: if a.contains(':') { 6 } else { 4 },
                    kind: k.to_string(),
                    subnet_id: None,
                })
                .collect(),
            preexisting: false,
            tag: None,
            status: "ACTIVE".into(),
            mtu: None,
        }
    }

    #[test]
    fn addresses_group_by_network_name() {
        let a = addresses(&[
            vif("private", "fa:16:3e:00:00:01", &[("10.0.0.5", "fixed"), ("fd00::5", "fixed"), ("172.24.4.9", "floating")]),
            vif("other", "fa:16:3e:00:00:02", &[("192.168.1.3", "fixed")]),
        ]);
        assert_eq!(a["private"].as_array().unwrap().len(), 3);
        assert_eq!(a["private"][1]["version"], 6);
        assert_eq!(a["private"][2]["OS-EXT-IPS:type"], "floating");
        assert_eq!(a["private"][2]["OS-EXT-IPS-MAC:mac_addr"], "fa:16:3e:00:00:01");
        assert_eq!(a["other"][0]["addr"], "192.168.1.3");
        assert_eq!(addresses(&[]), json!({}));
        let plain = addresses_view(&[vif("p", "fa:16:3e:00:00:03", &[("10.0.0.7", "fixed")])], false);
        assert_eq!(plain, json!({"p": [{"version": 4, "addr": "10.0.0.7"}]}));
    }

    #[test]
    fn stored_vif_round_trips() {
        let v = vif("private", "fa:16:3e:00:00:01", &[("10.0.0.5", "fixed")]);
        let s = serde_json::to_value(&v).unwrap();
        assert_eq!(s["ips"][0]["type"], "fixed");
        assert_eq!(serde_json::from_value::<Vif>(s).unwrap(), v);
    }

    #[test]
    fn port_errors_map_to_compute_statuses() {
        let body = json!({"NeutronError": {"type": "IpAddressGenerationFailure", "message": "No more IP addresses"}});
        assert!(matches!(port_error(StatusCode::CONFLICT, &body), Error::Conflict(_)));
        assert!(matches!(port_error(StatusCode::NOT_FOUND, &json!({})), Error::BadRequest(_)));
    }
}
