//! Neutron's "get me a network" (`auto-allocated-topology`): on first request a project gets a network, a subnet
//! carved from the default IPv4 subnet pool and a router with its gateway on the default external network and an
//! interface on the subnet; later requests return the same network. `dry-run` only checks the requirements.

use serde_json::{Value, json};

use super::{Caller, Network, str_of};
use crate::error::{Error, Result};

/// The names upstream gives the resources it makes.
const NETWORK_NAME: &str = "auto_allocated_network";
const SUBNET_NAME: &str = "auto_allocated_subnet_v4";
const ROUTER_NAME: &str = "auto_allocated_router";

fn deployment_error(what: &str) -> Error {
    Error::conflict("AutoAllocationFailure", format!("Deployment error: {what}"))
}

impl Network {
    /// The default external network and the default IPv4 subnet pool, or the reason there are none.
    async fn auto_allocation_requirements(&self) -> Result<(String, String)> {
        let external = self
            .store
            .resource_list("network")
            .await?
            .into_iter()
            .find(|n| n["router:external"] == json!(true) && n["is_default"] == json!(true))
            .ok_or_else(|| deployment_error("No default router:external network."))?;
        let pool = self
            .store
            .resource_list("subnetpool")
            .await?
            .into_iter()
            .find(|p| p["is_default"] == json!(true) && p["ip_version"] == json!(4))
            .ok_or_else(|| deployment_error("No default subnetpools defined."))?;
        Ok((str_of(&external, "id").to_string(), str_of(&pool, "id").to_string()))
    }

    /// `GET /v2.0/auto-allocated-topology/{project_id}`: the project's auto-allocated network, made on first use.
    pub async fn auto_allocated_topology(&self, caller: &Caller<'_>, project_id: &str, dry_run: bool) -> Result<Value> {
        if project_id != caller.project() && !caller.is_admin() {
            return Err(Error::Forbidden("(rule:get_auto_allocated_topology) is disallowed by policy".into()));
        }
        if let Some(net) = self.auto_allocated_network(project_id).await? {
            if dry_run {
                return Ok(json!({"dry-run": "pass"}));
            }
            return Ok(json!({"id": str_of(&net, "id"), "tenant_id": project_id, "project_id": project_id}));
        }
        let (external, pool) = self.auto_allocation_requirements().await?;
        if dry_run {
            return Ok(json!({"dry-run": "pass"}));
        }
        let net = self.create_network(caller, &json!({"name": NETWORK_NAME, "project_id": project_id})).await?;
        let net_id = str_of(&net, "id").to_string();
        let made = async {
            let subnet = self
                .create_subnet(
                    caller,
                    &json!({"name": SUBNET_NAME, "network_id": net_id, "ip_version": 4, "subnetpool_id": pool, "project_id": project_id}),
                )
                .await?;
            let router = self
                .create_router(
                    caller,
                    &json!({"name": ROUTER_NAME, "project_id": project_id, "external_gateway_info": {"network_id": external}}),
                )
                .await?;
            let router_id = str_of(&router, "id").to_string();
            if let Err(e) = self.add_router_interface(caller, &router_id, &json!({"subnet_id": str_of(&subnet, "id")})).await {
                let doc = self.fetch(super::ROUTER, &router_id).await?;
                self.delete_router(caller, doc).await?;
                return Err(e);
            }
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = made {
            let doc = self.fetch(super::NETWORK, &net_id).await?;
            if let Err(cleanup) = self.delete_network(caller, doc).await {
                tracing::warn!(network = %net_id, error = %cleanup, "cannot remove a half-made auto-allocated network");
            }
            return Err(deployment_error(&format!("Unable to provide a network for project {project_id}: {e}")));
        }
        Ok(json!({"id": net_id, "tenant_id": project_id, "project_id": project_id}))
    }

    async fn auto_allocated_network(&self, project_id: &str) -> Result<Option<Value>> {
        Ok(self
            .store
            .resource_list("network")
            .await?
            .into_iter()
            .find(|n| str_of(n, "project_id") == project_id && str_of(n, "name") == NETWORK_NAME))
    }

    /// `DELETE /v2.0/auto-allocated-topology/{project_id}`: removes what auto-allocation made (404 if nothing).
    pub async fn delete_auto_allocated_topology(&self, caller: &Caller<'_>, project_id: &str) -> Result<()> {
        if project_id != caller.project() && !caller.is_admin() {
            return Err(Error::Forbidden("(rule:delete_auto_allocated_topology) is disallowed by policy".into()));
        }
        let net = self.auto_allocated_network(project_id).await?.ok_or_else(|| {
            Error::not_found(
                "AutoAllocatedTopologyNotFound",
                format!("Auto Allocated Topology for project {project_id} could not be found."),
            )
        })?;
        let net_id = str_of(&net, "id").to_string();
        let routers = self.store.resource_list("router").await?;
        if let Some(router) =
            routers.into_iter().find(|r| str_of(r, "project_id") == project_id && str_of(r, "name") == ROUTER_NAME)
        {
            let router_id = str_of(&router, "id").to_string();
            for subnet in self.store.resource_list_by_parent("subnet", &net_id).await? {
                self.remove_router_interface(caller, &router_id, &json!({"subnet_id": str_of(&subnet, "id")})).await?;
            }
            let doc = self.fetch(super::ROUTER, &router_id).await?;
            self.delete_router(caller, doc).await?;
        }
        let doc = self.fetch(super::NETWORK, &net_id).await?;
        self.delete_network(caller, doc).await
    }
}
