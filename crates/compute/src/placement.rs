//! The conductor's client of the Placement API, over HTTP with the service's own token (as nova's
//! `SchedulerReportClient`): resource providers and their inventory for compute nodes, allocation candidates,
//! and claiming and freeing allocations of instances.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use auth::HttpValidator;
use axum::body::Bytes;
use compute_rpc::NodeResources;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Error;

const MICROVERSION: &str = "placement 1.28";

/// Where placement is and how to authenticate to it.
#[derive(Clone)]
pub struct PlacementClient {
    http: reqwest::Client,
    /// The placement endpoint (e.g. `http://host/placement`).
    url: Arc<str>,
    session: Arc<HttpValidator>,
}

impl std::fmt::Debug for PlacementClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacementClient").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Resources an instance needs, by resource class.
pub type Resources = BTreeMap<String, i64>;

/// One allocation candidate: the provider that would hold the resources (single-provider trees here), with the
/// provider's capacity and use per resource class.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub provider_uuid: String,
    pub resources: Resources,
    /// class → (capacity after ratio and reserved, used)
    pub summary: BTreeMap<String, (i64, i64)>,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("placement: {e}"))
}

impl PlacementClient {
    pub fn new(url: &str, session: Arc<HttpValidator>) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(PlacementClient { http, url: url.trim_end_matches('/').into(), session })
    }

    /// One request with the service token, retried once with a fresh token on 401; the body as JSON (`Null` when
    /// empty or not JSON).
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Value), Error> {
        let (status, bytes) = self.send_raw(method, path, body).await?;
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Ok((status, value))
    }

    /// [`PlacementClient::send`] with the body as received, for answers read into typed structures.
    async fn send_raw(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Bytes), Error> {
        let mut token = self.session.service_token(None).await.map_err(unavailable)?;
        for attempt in 0..2 {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.url))
                .header("x-auth-token", &token)
                .header("openstack-api-version", MICROVERSION)
                .header("accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(unavailable)?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                token = self.session.service_token(Some(&token)).await.map_err(unavailable)?;
                continue;
            }
            let bytes = resp.bytes().await.map_err(unavailable)?;
            return Ok((status, bytes));
        }
        Err(unavailable("the service token was refused twice"))
    }

    fn unexpected(what: &str, status: StatusCode, body: &Value) -> Error {
        Error::Unavailable(format!("placement answered {status} to {what}: {body}"))
    }

    /// Creates the provider of a compute node unless it exists, and sets its inventory from `resources`.
    pub async fn ensure_node_provider(&self, uuid: &str, name: &str, resources: &NodeResources) -> Result<(), Error> {
        let (status, body) = self.send(Method::GET, &format!("/resource_providers/{uuid}"), None).await?;
        if status == StatusCode::NOT_FOUND {
            let (status, body) =
                self.send(Method::POST, "/resource_providers", Some(&json!({"uuid": uuid, "name": name}))).await?;
            if !status.is_success() && status != StatusCode::CONFLICT {
                return Err(Self::unexpected("a provider create", status, &body));
            }
        } else if !status.is_success() {
            return Err(Self::unexpected("a provider lookup", status, &body));
        }
        self.set_inventory(uuid, resources).await
    }

    /// Replaces a provider's VCPU / MEMORY_MB / DISK_GB inventory, retrying generation conflicts.
    pub async fn set_inventory(&self, uuid: &str, r: &NodeResources) -> Result<(), Error> {
        let inventories = inventory_of(r);
        for _ in 0..5 {
            let (status, body) = self.send(Method::GET, &format!("/resource_providers/{uuid}/inventories"), None).await?;
            if !status.is_success() {
                return Err(Self::unexpected("an inventory read", status, &body));
            }
            let generation = body["resource_provider_generation"].as_i64().unwrap_or(0);
            if same_inventory(&body["inventories"], &inventories) {
                return Ok(());
            }
            let put = json!({"resource_provider_generation": generation, "inventories": inventories});
            let (status, body) =
                self.send(Method::PUT, &format!("/resource_providers/{uuid}/inventories"), Some(&put)).await?;
            if status.is_success() {
                return Ok(());
            }
            if status != StatusCode::CONFLICT {
                return Err(Self::unexpected("an inventory update", status, &body));
            }
        }
        Err(Error::Unavailable(format!("placement: inventory of {uuid} kept changing")))
    }

    /// Deletes a provider (its node was removed); a missing one is fine.
    pub async fn delete_provider(&self, uuid: &str) -> Result<(), Error> {
        let (status, body) = self.send(Method::DELETE, &format!("/resource_providers/{uuid}"), None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Self::unexpected("a provider delete", status, &body))
        }
    }

    /// Up to `limit` providers that can hold `resources`.
    pub async fn candidates(&self, resources: &Resources, limit: usize) -> Result<Vec<Candidate>, Error> {
        let wanted: Vec<String> = resources.iter().filter(|(_, n)| **n > 0).map(|(c, n)| format!("{c}:{n}")).collect();
        let path = format!("/allocation_candidates?resources={}&limit={limit}", wanted.join(","));
        let (status, bytes) = self.send_raw(Method::GET, &path, None).await?;
        if !status.is_success() {
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(Self::unexpected("allocation candidates", status, &body));
        }
        parse_candidates(&bytes)
    }

    /// Claims `resources` on `provider` for a new consumer; `Ok(false)` when placement refuses (capacity taken by
    /// a concurrent claim, or the consumer exists).
    pub async fn claim(
        &self,
        consumer: &str,
        provider: &str,
        resources: &Resources,
        project_id: &str,
        user_id: &str,
    ) -> Result<bool, Error> {
        let body = json!({
            "allocations": {provider: {"resources": resources}},
            "project_id": project_id,
            "user_id": user_id,
            "consumer_generation": null,
        });
        let (status, resp) = self.send(Method::PUT, &format!("/allocations/{consumer}"), Some(&body)).await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            s => Err(Self::unexpected("an allocation claim", s, &resp)),
        }
    }

    /// Moves every allocation of consumer `from` to the new consumer `to` in one request (as nova moves an
    /// instance's allocation to its migration during a resize). `Ok(false)` on a conflict.
    pub async fn move_allocations(&self, from: &str, to: &str, project_id: &str, user_id: &str) -> Result<bool, Error> {
        let (status, current) = self.send(Method::GET, &format!("/allocations/{from}"), None).await?;
        if !status.is_success() {
            return Err(Self::unexpected("an allocation read", status, &current));
        }
        let mut moved = serde_json::Map::new();
        for (rp, a) in current["allocations"].as_object().cloned().unwrap_or_default() {
            moved.insert(rp, json!({"resources": a["resources"]}));
        }
        let (status_to, target) = self.send(Method::GET, &format!("/allocations/{to}"), None).await?;
        let to_generation = if status_to.is_success() { target["consumer_generation"].clone() } else { Value::Null };
        let body = json!({
            to: {"allocations": moved, "project_id": project_id, "user_id": user_id, "consumer_generation": to_generation},
            from: {"allocations": {}, "project_id": project_id, "user_id": user_id, "consumer_generation": current["consumer_generation"]},
        });
        let (status, resp) = self.send(Method::POST, "/allocations", Some(&body)).await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            s => Err(Self::unexpected("an allocation move", s, &resp)),
        }
    }

    /// Puts a provider in placement aggregate `aggregate` (or takes it out), as nova mirrors host aggregates;
    /// generation conflicts are retried, a missing provider is fine.
    pub async fn provider_aggregate(&self, provider: &str, aggregate: &str, member: bool) -> Result<(), Error> {
        let path = format!("/resource_providers/{provider}/aggregates");
        for _ in 0..5 {
            let (status, body) = self.send(Method::GET, &path, None).await?;
            if status == StatusCode::NOT_FOUND {
                return Ok(());
            }
            if !status.is_success() {
                return Err(Self::unexpected("an aggregates read", status, &body));
            }
            let mut aggregates: Vec<String> = serde_json::from_value(body["aggregates"].clone()).unwrap_or_default();
            let has = aggregates.iter().any(|a| a == aggregate);
            if has == member {
                return Ok(());
            }
            if member {
                aggregates.push(aggregate.to_string());
            } else {
                aggregates.retain(|a| a != aggregate);
            }
            let put = json!({"aggregates": aggregates, "resource_provider_generation": body["resource_provider_generation"]});
            let (status, body) = self.send(Method::PUT, &path, Some(&put)).await?;
            if status.is_success() {
                return Ok(());
            }
            if status != StatusCode::CONFLICT {
                return Err(Self::unexpected("an aggregates update", status, &body));
            }
        }
        Err(Error::Unavailable(format!("placement: aggregates of {provider} kept changing")))
    }

    /// Frees every allocation of a consumer; none is fine.
    pub async fn free(&self, consumer: &str) -> Result<(), Error> {
        let (status, body) = self.send(Method::DELETE, &format!("/allocations/{consumer}"), None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Self::unexpected("an allocation delete", status, &body))
        }
    }
}

/// An allocation candidates answer, read straight into the candidates the scheduler uses (no intermediate
/// JSON tree: with upstream's default of 1,000 candidates the answer is a few hundred kilobytes). Fields the
/// conductor does not read (traits, generations) are skipped.
fn parse_candidates(bytes: &[u8]) -> Result<Vec<Candidate>, Error> {
    #[derive(Deserialize)]
    struct Body {
        allocation_requests: Vec<Req>,
        #[serde(default)]
        provider_summaries: HashMap<String, Summary>,
    }
    #[derive(Deserialize)]
    struct Req {
        allocations: BTreeMap<String, ReqAlloc>,
    }
    #[derive(Deserialize)]
    struct ReqAlloc {
        resources: Resources,
    }
    #[derive(Deserialize)]
    struct Summary {
        #[serde(default)]
        resources: BTreeMap<String, Usage>,
    }
    #[derive(Deserialize)]
    struct Usage {
        #[serde(default)]
        capacity: i64,
        #[serde(default)]
        used: i64,
    }
    let body: Body = serde_json::from_slice(bytes).map_err(unavailable)?;
    let mut summaries = body.provider_summaries;
    let mut out = Vec::with_capacity(body.allocation_requests.len());
    for req in body.allocation_requests {
        // Single-provider candidates: compute nodes hold all three classes themselves.
        let Some((provider_uuid, alloc)) = req.allocations.into_iter().next() else { continue };
        let summary = summaries
            .remove(&provider_uuid)
            .map(|s| s.resources.into_iter().map(|(class, u)| (class, (u.capacity, u.used))).collect())
            .unwrap_or_default();
        out.push(Candidate { provider_uuid, resources: alloc.resources, summary });
    }
    Ok(out)
}

/// A compute node's inventory as nova's resource tracker reports it.
pub fn inventory_of(r: &NodeResources) -> Value {
    json!({
        "VCPU": {
            "total": r.vcpus, "reserved": r.reserved_host_cpus, "min_unit": 1, "max_unit": r.vcpus.max(1),
            "step_size": 1, "allocation_ratio": r.cpu_allocation_ratio,
        },
        "MEMORY_MB": {
            "total": r.memory_mb, "reserved": r.reserved_host_memory_mb, "min_unit": 1,
            "max_unit": r.memory_mb.max(1), "step_size": 1, "allocation_ratio": r.ram_allocation_ratio,
        },
        "DISK_GB": {
            "total": r.local_gb, "reserved": (r.reserved_host_disk_mb + 1023) / 1024, "min_unit": 1,
            "max_unit": r.local_gb.max(1), "step_size": 1, "allocation_ratio": r.disk_allocation_ratio,
        },
    })
}

fn same_inventory(current: &Value, wanted: &Value) -> bool {
    let (Some(c), Some(w)) = (current.as_object(), wanted.as_object()) else { return false };
    c.len() == w.len()
        && w.iter().all(|(class, inv)| {
            c.get(class).is_some_and(|have| {
                inv.as_object().is_some_and(|fields| {
                    fields.iter().all(|(k, v)| match (have.get(k).and_then(Value::as_f64), v.as_f64()) {
                        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                        _ => false,
                    })
                })
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_follows_the_node() {
        let r = NodeResources {
            vcpus: 8,
            memory_mb: 16384,
            local_gb: 100,
            cpu_allocation_ratio: 16.0,
            ram_allocation_ratio: 1.5,
            disk_allocation_ratio: 1.0,
            reserved_host_memory_mb: 512,
            reserved_host_disk_mb: 1025,
            ..Default::default()
        };
        let inv = inventory_of(&r);
        assert_eq!(inv["MEMORY_MB"]["reserved"], 512);
        assert_eq!(inv["DISK_GB"]["reserved"], 2);
        assert_eq!(inv["VCPU"]["allocation_ratio"], 16.0);
        assert!(same_inventory(&inv, &inv));
        let mut other = inv.clone();
        other["VCPU"]["total"] = json!(4);
        assert!(!same_inventory(&other, &inv));
        assert!(!same_inventory(&json!({}), &inv));
    }

    #[test]
    fn candidates_are_read_from_the_answer() {
        let answer = json!({
            "allocation_requests": [
                {"allocations": {"rp-b": {"resources": {"VCPU": 1, "MEMORY_MB": 512}}}},
                {"allocations": {"rp-a": {"resources": {"VCPU": 1, "MEMORY_MB": 512}}}},
                {"allocations": {}},
            ],
            "provider_summaries": {
                "rp-a": {"resources": {"VCPU": {"capacity": 64, "used": 3}, "MEMORY_MB": {"capacity": 1024, "used": 0}},
                         "traits": ["HW_CPU_X86_AVX2"]},
                "rp-b": {"resources": {"VCPU": {"capacity": 8, "used": 8}}, "traits": []},
            },
        });
        let got = parse_candidates(answer.to_string().as_bytes()).unwrap();
        let resources: Resources = [("MEMORY_MB".to_string(), 512), ("VCPU".to_string(), 1)].into();
        assert_eq!(
            got,
            [
                Candidate {
                    provider_uuid: "rp-b".into(),
                    resources: resources.clone(),
                    summary: [("VCPU".to_string(), (8, 8))].into(),
                },
                Candidate {
                    provider_uuid: "rp-a".into(),
                    resources,
                    summary: [("MEMORY_MB".to_string(), (1024, 0)), ("VCPU".to_string(), (64, 3))].into(),
                },
            ]
        );
        // A candidate without a summary has an empty one; an answer that is not one is an error.
        let bare = json!({"allocation_requests": [{"allocations": {"rp-c": {"resources": {"VCPU": 1}}}}], "provider_summaries": {}});
        assert!(parse_candidates(bare.to_string().as_bytes()).unwrap()[0].summary.is_empty());
        assert!(parse_candidates(b"{}").is_err());
    }
}
