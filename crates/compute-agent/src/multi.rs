//! A host that runs virtual machines and containers side by side (`driver = "qemu+container"`): one compute node,
//! one network agent, two drivers. A build goes to the container driver when its image's container format is
//! `docker` and to the VM driver otherwise; every later operation goes to the driver that has the instance.
//! The node reports the VM driver's capacity with what both use, and the supported instances of both, so the
//! scheduler's image property filter sends `img_hv_type=docker` images here as well as VM images.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use compute_rpc::{FlavorSpec, InstanceSpec, PowerState};
use serde_json::Value;

use crate::Error;
use crate::hypervisor::{BlockDeviceSpec, GuestContext, GuestInfo, Hypervisor, HypervisorInfo, ImageSource, NetworkInterface, SnapshotFormat};

pub struct MultiDriver {
    vm: Arc<dyn Hypervisor>,
    container: Arc<dyn Hypervisor>,
}

impl MultiDriver {
    pub fn new(vm: Arc<dyn Hypervisor>, container: Arc<dyn Hypervisor>) -> MultiDriver {
        MultiDriver { vm, container }
    }

    /// The driver that has instance `uuid` (the container driver knows its own; the rest are the VM driver's).
    async fn of(&self, uuid: &str) -> &dyn Hypervisor {
        if self.container.expected_power_state(uuid).await.is_some() { self.container.as_ref() } else { self.vm.as_ref() }
    }

    /// The driver a new guest from `context`'s image belongs to.
    fn for_image(&self, context: &GuestContext) -> &dyn Hypervisor {
        let docker = context
            .image
            .as_ref()
            .and_then(|i| i.properties.get("container_format"))
            .and_then(Value::as_str)
            .is_some_and(|f| f == "docker");
        if docker { self.container.as_ref() } else { self.vm.as_ref() }
    }
}

#[async_trait]
impl Hypervisor for MultiDriver {
    fn name(&self) -> &'static str {
        "qemu+container"
    }

    async fn host_info(&self) -> Result<HypervisorInfo, Error> {
        let mut info = self.vm.host_info().await?;
        let other = self.container.host_info().await?;
        info.vcpus_used += other.vcpus_used;
        info.memory_mb_used += other.memory_mb_used;
        info.local_gb_used += other.local_gb_used;
        info.running_vms += other.running_vms;
        Ok(info)
    }

    async fn supported_instances(&self) -> Vec<[String; 3]> {
        let mut out = self.vm.supported_instances().await;
        for s in self.container.supported_instances().await {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    async fn list_guests(&self) -> Result<Vec<GuestInfo>, Error> {
        let mut out = self.vm.list_guests().await?;
        out.extend(self.container.list_guests().await?);
        Ok(out)
    }

    async fn spawn(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error> {
        self.for_image(context).spawn(instance, context).await
    }

    async fn destroy(&self, uuid: &str) -> Result<(), Error> {
        self.of(uuid).await.destroy(uuid).await
    }

    async fn power_off(&self, uuid: &str) -> Result<(), Error> {
        self.of(uuid).await.power_off(uuid).await
    }

    async fn power_on(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error> {
        self.of(&instance.uuid).await.power_on(instance, context).await
    }

    async fn reboot(&self, instance: &InstanceSpec, context: &GuestContext, hard: bool) -> Result<(), Error> {
        self.of(&instance.uuid).await.reboot(instance, context, hard).await
    }

    async fn pause(&self, uuid: &str) -> Result<(), Error> {
        self.of(uuid).await.pause(uuid).await
    }

    async fn unpause(&self, uuid: &str) -> Result<(), Error> {
        self.of(uuid).await.unpause(uuid).await
    }

    async fn suspend(&self, uuid: &str) -> Result<(), Error> {
        self.of(uuid).await.suspend(uuid).await
    }

    async fn resume(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error> {
        self.of(&instance.uuid).await.resume(instance, context).await
    }

    async fn resize(&self, instance: &InstanceSpec, flavor: &FlavorSpec, context: &GuestContext) -> Result<(), Error> {
        self.of(&instance.uuid).await.resize(instance, flavor, context).await
    }

    async fn snapshot(&self, instance: &InstanceSpec, dest: &Path) -> Result<SnapshotFormat, Error> {
        self.of(&instance.uuid).await.snapshot(instance, dest).await
    }

    async fn diagnostics(&self, instance: &InstanceSpec) -> Result<BTreeMap<String, Value>, Error> {
        self.of(&instance.uuid).await.diagnostics(instance).await
    }

    async fn attach_volume(&self, instance: &InstanceSpec, device: &BlockDeviceSpec) -> Result<(), Error> {
        self.of(&instance.uuid).await.attach_volume(instance, device).await
    }

    async fn detach_volume(&self, uuid: &str, volume_id: &str) -> Result<(), Error> {
        self.of(uuid).await.detach_volume(uuid, volume_id).await
    }

    async fn attach_interface(&self, uuid: &str, interface: &NetworkInterface) -> Result<(), Error> {
        self.of(uuid).await.attach_interface(uuid, interface).await
    }

    async fn detach_interface(&self, uuid: &str, port_id: &str) -> Result<(), Error> {
        self.of(uuid).await.detach_interface(uuid, port_id).await
    }

    async fn volume_snapshot_create(&self, uuid: &str, volume_id: &str, create_info: &Value) -> Result<(), Error> {
        self.of(uuid).await.volume_snapshot_create(uuid, volume_id, create_info).await
    }

    async fn volume_snapshot_delete(&self, uuid: &str, volume_id: &str, delete_info: &Value) -> Result<(), Error> {
        self.of(uuid).await.volume_snapshot_delete(uuid, volume_id, delete_info).await
    }

    async fn power_state(&self, uuid: &str) -> Result<PowerState, Error> {
        self.of(uuid).await.power_state(uuid).await
    }

    async fn console_output(&self, uuid: &str) -> Result<String, Error> {
        self.of(uuid).await.console_output(uuid).await
    }

    async fn expected_power_state(&self, uuid: &str) -> Option<PowerState> {
        self.of(uuid).await.expected_power_state(uuid).await
    }

    async fn maintain(&self) {
        self.vm.maintain().await;
        self.container.maintain().await;
    }

    async fn rescue(&self, instance: &InstanceSpec, rescue: &ImageSource, context: &GuestContext) -> Result<(), Error> {
        self.of(&instance.uuid).await.rescue(instance, rescue, context).await
    }

    async fn unrescue(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error> {
        self.of(&instance.uuid).await.unrescue(instance, context).await
    }
}
