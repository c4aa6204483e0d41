//! The interface to the data plane. The service tells a [`NetworkDriver`] what the agents must make true —
//! a port bound to a host on a network with a segment, a router's interfaces and gateway, a floating IP's NAT —
//! as typed [`PortBinding`]/[`RouterState`] records; a later agent implementation carries them over the bus to the
//! per-host network agents. [`FakeDriver`] records what it was told and binds every port with the `ovs` VIF type,
//! which is what the API and its tests need.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// A network's one segment, as the agent wires it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub network_type: String,
    pub physical_network: Option<String>,
    pub segmentation_id: Option<i64>,
}

/// A port bound to a host: what the host's agent must plug.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub port_id: String,
    pub network_id: String,
    pub host: String,
    pub mac_address: String,
    pub fixed_ips: Vec<String>,
    pub vnic_type: String,
    pub segment: Segment,
    pub admin_state_up: bool,
}

/// What a binding attempt decided (`binding:vif_type`, `binding:vif_details`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindResult {
    pub vif_type: String,
    pub vif_details: serde_json::Value,
}

/// A router as the L3 agent realises it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterState {
    pub router_id: String,
    pub interfaces: Vec<String>,
    pub gateway_ips: Vec<String>,
    pub enable_snat: bool,
    pub floating_ips: Vec<(String, String)>,
}

/// The service's view of the data plane.
pub trait NetworkDriver: Send + Sync {
    /// Binds a port to `binding.host`; `None` means no agent on that host can bind it (`binding_failed`).
    fn bind_port(&self, binding: &PortBinding) -> Option<BindResult>;
    /// The port is gone or no longer bound.
    fn unbind_port(&self, port_id: &str);
    /// A router's interfaces, gateway or floating IPs changed.
    fn router_updated(&self, router: &RouterState);
    fn router_deleted(&self, router_id: &str);
}

/// Binds everything in memory and remembers the latest state, for the API and its tests.
#[derive(Clone, Default)]
pub struct FakeDriver {
    pub bindings: Arc<Mutex<Vec<PortBinding>>>,
    pub routers: Arc<Mutex<Vec<RouterState>>>,
}

impl NetworkDriver for FakeDriver {
    fn bind_port(&self, binding: &PortBinding) -> Option<BindResult> {
        let mut b = self.bindings.lock().unwrap_or_else(|e| e.into_inner());
        b.retain(|x| x.port_id != binding.port_id);
        b.push(binding.clone());
        Some(BindResult {
            vif_type: "ovs".into(),
            vif_details: serde_json::json!({"port_filter": true, "connectivity": "l2", "bridge_name": "br-int"}),
        })
    }
    fn unbind_port(&self, port_id: &str) {
        self.bindings.lock().unwrap_or_else(|e| e.into_inner()).retain(|x| x.port_id != port_id);
    }
    fn router_updated(&self, router: &RouterState) {
        let mut r = self.routers.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|x| x.router_id != router.router_id);
        r.push(router.clone());
    }
    fn router_deleted(&self, router_id: &str) {
        self.routers.lock().unwrap_or_else(|e| e.into_inner()).retain(|x| x.router_id != router_id);
    }
}
