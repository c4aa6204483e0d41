//! Server logic between the API and the conductor: who may see which instance, creation with quota checks,
//! and the state rules of every action (upstream's `check_instance_state`), which set the task state an action
//! starts in before the conductor hands it to the instance's agent.

use std::collections::BTreeMap;

use compute_rpc::{Action, FlavorSpec, task_state, vm_state};
use rand::Rng;

use crate::{
    error::Error,
    service::Compute,
    store::{ActionRow, InstanceFilter, InstanceRow, instances::Value, instances::now_us},
};

/// Who is asking.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: String,
    pub project_id: String,
    pub admin: bool,
}

/// A validated boot request (the API has resolved the flavor and looked the image up).
#[derive(Clone, Debug, Default)]
pub struct Boot {
    pub name: String,
    pub description: Option<String>,
    /// The hostname asked for (2.90), else derived from the name.
    pub hostname: Option<String>,
    /// The host and node asked for (2.74).
    pub destination: Option<Destination>,
    pub flavor: Option<FlavorSpec>,
    pub image_ref: String,
    pub image_properties: BTreeMap<String, serde_json::Value>,
    pub key_name: Option<String>,
    pub user_data: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub availability_zone: Option<String>,
    pub config_drive: bool,
    pub min_count: i64,
    pub max_count: i64,
    pub access_ip_v4: Option<String>,
    pub access_ip_v6: Option<String>,
    pub tags: Vec<String>,
    /// The server group (`os:scheduler_hints` `group`) the instances join.
    pub group: Option<String>,
    /// The networks and ports asked for, resolved (`None`: no network service, nothing recorded).
    pub networks: Option<Vec<crate::network::NetworkRequest>>,
    /// Security group names for the instances' new ports (empty: the project's `default`).
    pub security_groups: Vec<String>,
    /// The volumes the instances boot with (one instance only when there are any), root first, their volumes
    /// made or named; the conductor attaches them in the build's `block_device_mapping` phase.
    pub block_devices: Vec<crate::store::bdm::Bdm>,
}

/// A requested destination of a build: the scheduler only considers this host and/or node.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Destination {
    pub host: Option<String>,
    pub node: Option<String>,
}

/// Per-project limits, as Nova's defaults (`[quota]`): instances 10, cores 20, ram 51200 MB.
#[derive(Clone, Debug)]
pub struct Quotas {
    pub instances: i64,
    pub cores: i64,
    pub ram: i64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { instances: 10, cores: 20, ram: 51200 }
    }
}

/// Upstream's 403 for `(resource, requested, used, limit)` entries over their quota.
fn quota_exceeded(over: &[(&str, i64, i64, i64)]) -> Error {
    let names = over.iter().map(|o| o.0).collect::<Vec<_>>().join(", ");
    let join = |f: fn(&(&str, i64, i64, i64)) -> i64| over.iter().map(|o| f(o).to_string()).collect::<Vec<_>>().join(", ");
    Error::Forbidden(format!(
        "Quota exceeded for {names}: Requested {}, but already used {} of {} {names}",
        join(|o| o.1),
        join(|o| o.2),
        join(|o| o.3),
    ))
}

pub fn instance_not_found(uuid: &str) -> Error {
    Error::NotFound(format!("Instance {uuid} could not be found."))
}

/// Upstream's 409 for an action in the wrong state.
fn invalid_state(action: &str, uuid: &str, attr: &str, state: &str) -> Error {
    Error::Conflict(format!("Cannot '{action}' instance {uuid} while it is in {attr} {state}"))
}

/// An RFC 952/1123 host name from a display name, as upstream sanitises it.
pub fn sanitize_hostname(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else if c == ' ' || c == '_' || c == '.' {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(63).collect();
    let trimmed = trimmed.trim_end_matches('-').to_string();
    if trimmed.is_empty() { "server".into() } else { trimmed }
}

/// `n` random letters and digits without look-alikes (no 0/O, 1/l/I).
pub(crate) fn random_string(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..n).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

/// The states an action is allowed from, the task state it starts in, and its instance-action name.
struct Rule {
    name: &'static str,
    vm_states: &'static [&'static str],
    task_states: &'static [Option<&'static str>],
    starts_in: &'static str,
}

impl Rule {
    /// 409 unless the instance is in one of the states the action starts from.
    fn check(&self, inst: &InstanceRow) -> Result<(), Error> {
        if !self.vm_states.contains(&inst.vm_state.as_str()) {
            return Err(invalid_state(self.name, &inst.uuid, "vm_state", &inst.vm_state));
        }
        if !self.task_states.contains(&inst.task_state.as_deref()) {
            return Err(invalid_state(self.name, &inst.uuid, "task_state", inst.task_state.as_deref().unwrap_or("None")));
        }
        Ok(())
    }
}

fn rule_of(action: &Action) -> Rule {
    use task_state as t;
    use vm_state as v;
    const NONE: &[Option<&str>] = &[None];
    match action {
        Action::Stop => Rule { name: "stop", vm_states: &[v::ACTIVE, v::ERROR], task_states: NONE, starts_in: t::POWERING_OFF },
        Action::Start => Rule { name: "start", vm_states: &[v::STOPPED], task_states: NONE, starts_in: t::POWERING_ON },
        Action::Reboot { hard: false } => {
            Rule { name: "reboot", vm_states: &[v::ACTIVE], task_states: NONE, starts_in: t::REBOOTING }
        }
        Action::Reboot { hard: true } => Rule {
            name: "reboot",
            vm_states: &[v::ACTIVE, v::STOPPED, v::PAUSED, v::SUSPENDED, v::ERROR],
            task_states: &[
                None,
                Some(t::REBOOTING),
                Some(t::REBOOT_PENDING),
                Some(t::REBOOT_STARTED),
                Some(t::REBOOTING_HARD),
                Some(t::REBOOT_PENDING_HARD),
                Some(t::REBOOT_STARTED_HARD),
            ],
            starts_in: t::REBOOTING_HARD,
        },
        Action::Pause => Rule { name: "pause", vm_states: &[v::ACTIVE], task_states: NONE, starts_in: t::PAUSING },
        Action::Unpause => Rule { name: "unpause", vm_states: &[v::PAUSED], task_states: NONE, starts_in: t::UNPAUSING },
        Action::Suspend => Rule { name: "suspend", vm_states: &[v::ACTIVE], task_states: NONE, starts_in: t::SUSPENDING },
        Action::Resume => Rule { name: "resume", vm_states: &[v::SUSPENDED], task_states: NONE, starts_in: t::RESUMING },
        Action::Rebuild { .. } => Rule {
            name: "rebuild",
            vm_states: &[v::ACTIVE, v::STOPPED, v::ERROR],
            task_states: NONE,
            starts_in: t::REBUILDING,
        },
        Action::Resize { .. } => {
            Rule { name: "resize", vm_states: &[v::ACTIVE, v::STOPPED], task_states: NONE, starts_in: t::RESIZE_PREP }
        }
        Action::Snapshot { .. } => Rule {
            name: "createImage",
            vm_states: &[v::ACTIVE, v::STOPPED, v::PAUSED, v::SUSPENDED],
            task_states: NONE,
            starts_in: t::IMAGE_SNAPSHOT,
        },
        Action::RevertResize { .. } => Rule {
            name: "revertResize",
            vm_states: &[v::RESIZED],
            task_states: NONE,
            starts_in: t::RESIZE_REVERTING,
        },
        Action::Shelve { .. } => Rule {
            name: "shelve",
            vm_states: &[v::ACTIVE, v::STOPPED, v::PAUSED, v::SUSPENDED],
            task_states: NONE,
            starts_in: t::SHELVING,
        },
        Action::ShelveOffload => {
            Rule { name: "shelveOffload", vm_states: &[v::SHELVED], task_states: NONE, starts_in: t::SHELVING_OFFLOADING }
        }
        Action::Rescue { .. } => Rule {
            name: "rescue",
            vm_states: &[v::ACTIVE, v::STOPPED, v::ERROR],
            task_states: NONE,
            starts_in: t::RESCUING,
        },
        Action::Unrescue => Rule { name: "unrescue", vm_states: &[v::RESCUED], task_states: NONE, starts_in: t::UNRESCUING },
        Action::Unshelve => Rule {
            name: "unshelve",
            vm_states: &[v::SHELVED, v::SHELVED_OFFLOADED],
            task_states: NONE,
            starts_in: t::UNSHELVING,
        },
    }
}

impl Compute {
    /// The instance limits of a project, or of one user in it: the stored ones, else the defaults.
    async fn quotas(&self, project_id: &str, user_id: Option<&str>) -> Result<Quotas, Error> {
        let l = self.quota_limits(project_id, user_id).await?;
        let d = Quotas::default();
        let get = |k: &str, def: i64| l.get(k).copied().unwrap_or(def);
        Ok(Quotas { instances: get("instances", d.instances), cores: get("cores", d.cores), ram: get("ram", d.ram) })
    }

    /// An instance the caller may see (its project's, or any for admins); deleted ones are not found.
    pub async fn instance(&self, caller: &Caller, uuid: &str) -> Result<InstanceRow, Error> {
        match self.store().instance_get(uuid).await? {
            Some(i) if !i.deleted && (caller.admin || i.project_id == caller.project_id) => Ok(i),
            _ => Err(instance_not_found(uuid)),
        }
    }

    pub async fn instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRow>, Error> {
        self.store().instance_list(filter).await
    }

    /// Checks the quotas of the project and of the user for `count` more instances of `flavor`.
    async fn check_quota(&self, caller: &Caller, flavor: &FlavorSpec, min: i64, max: i64) -> Result<i64, Error> {
        let project_id = caller.project_id.as_str();
        let mut scopes = Vec::new();
        for user in [None, Some(caller.user_id.as_str())] {
            let used = match user {
                None => self.store().instance_usage(project_id).await?,
                Some(u) => self.store().instance_usage_of_user(project_id, u).await?,
            };
            scopes.push((self.quotas(project_id, user).await?, used));
        }
        // As upstream: the largest count in [min, max] that fits, or 403 naming what min_count exceeds.
        let fits_in = |q: &Quotas, (instances, cores, ram): (i64, i64, i64), n: i64| {
            crate::quotas::fits(q.instances, instances, n)
                && crate::quotas::fits(q.cores, cores, n * flavor.vcpus)
                && crate::quotas::fits(q.ram, ram, n * flavor.memory_mb)
        };
        let fits = |n: i64| scopes.iter().all(|(q, used)| fits_in(q, *used, n));
        if let Some(n) = (min..=max).rev().find(|n| fits(*n)) {
            return Ok(n);
        }
        let (q, (instances, cores, ram)) =
            scopes.iter().find(|(q, used)| !fits_in(q, *used, min)).cloned().unwrap_or_else(|| scopes[0].clone());
        let over: Vec<_> =
            [("cores", cores, flavor.vcpus, q.cores), ("instances", instances, 1, q.instances), ("ram", ram, flavor.memory_mb, q.ram)]
                .into_iter()
                .filter(|(_, have, per, limit)| !crate::quotas::fits(*limit, *have, min * per))
                .map(|(name, have, per, limit)| (name, min * per, have, limit))
                .collect();
        Err(quota_exceeded(&over))
    }

    /// Checks the growth of cores and RAM a resize from `old` to `new` asks of the project's quota.
    async fn check_resize_quota(&self, project_id: &str, old: &FlavorSpec, new: &FlavorSpec) -> Result<(), Error> {
        let q = self.quotas(project_id, None).await?;
        let (_, cores, ram) = self.store().instance_usage(project_id).await?;
        let over: Vec<_> =
            [("cores", cores, new.vcpus - old.vcpus, q.cores), ("ram", ram, new.memory_mb - old.memory_mb, q.ram)]
                .into_iter()
                .filter(|(_, used, delta, limit)| *delta > 0 && !crate::quotas::fits(*limit, *used, *delta))
                .map(|(name, used, delta, limit)| (name, delta, used, limit))
                .collect();
        if over.is_empty() { Ok(()) } else { Err(quota_exceeded(&over)) }
    }

    /// Creates `min_count..=max_count` instances in `building`/`scheduling` and starts their builds. Returns the
    /// instances and the reservation id.
    pub async fn servers_create(
        &self,
        caller: &Caller,
        boot: Boot,
        key_data: Option<String>,
        request_id: &str,
    ) -> Result<(Vec<InstanceRow>, String), Error> {
        let conductor = self.conductor()?;
        let flavor = boot.flavor.clone().ok_or_else(|| Error::BadRequest("Flavor is required".into()))?;
        self.check_metadata_quota(&caller.project_id, boot.metadata.len()).await?;
        let count = self.check_quota(caller, &flavor, boot.min_count, boot.max_count).await?;
        if let Some(group) = &boot.group {
            self.check_group_for_boot(caller, group, count).await?;
        }
        let reservation_id = format!("r-{}", random_string(8).to_lowercase());
        let now = now_us();
        let mut rows = Vec::new();
        for index in 0..count {
            let name = if count > 1 { format!("{}-{}", boot.name, index + 1) } else { boot.name.clone() };
            rows.push(InstanceRow {
                hostname: boot.hostname.clone().unwrap_or_else(|| sanitize_hostname(&name)),
                description: boot.description.clone(),
                scheduling: boot.destination.as_ref().map(|d| serde_json::json!({"destination": d})),
                image_properties: boot.image_properties.clone(),
                key_name: boot.key_name.clone(),
                key_data: key_data.clone(),
                user_data: boot.user_data.clone(),
                config_drive: boot.config_drive,
                availability_zone: boot.availability_zone.clone(),
                launch_index: index,
                reservation_id: reservation_id.clone(),
                access_ip_v4: boot.access_ip_v4.clone(),
                access_ip_v6: boot.access_ip_v6.clone(),
                ..InstanceRow::new(
                    uuid::Uuid::new_v4().to_string(),
                    &name,
                    &caller.project_id,
                    &caller.user_id,
                    flavor.clone(),
                    &boot.image_ref,
                    now,
                )
            });
        }
        self.store().instances_insert(&rows, &boot.metadata, request_id).await?;
        if let Some(requested) = &boot.networks {
            let info = crate::store::netinfo::NetInfo {
                requested: requested.clone(),
                security_groups: boot.security_groups.clone(),
                vifs: Vec::new(),
            };
            for r in &rows {
                self.store().netinfo_insert(&r.uuid, &info).await?;
            }
        }
        for r in &rows {
            for b in &boot.block_devices {
                let mut b = b.clone();
                b.instance_uuid = r.uuid.clone();
                if rows.len() > 1 {
                    b.id = uuid::Uuid::new_v4().to_string();
                }
                self.store().bdm_insert(&b).await?;
            }
        }
        if let Some(group) = &boot.group {
            let uuids: Vec<String> = rows.iter().map(|r| r.uuid.clone()).collect();
            self.store().server_group_add_members(group, &uuids).await?;
        }
        if !boot.tags.is_empty() {
            for r in &rows {
                self.store().tags_set(&r.uuid, &boot.tags).await?;
            }
        }
        conductor.build(rows.iter().map(|r| r.uuid.clone()).collect(), request_id.to_string());
        Ok((rows, reservation_id))
    }

    fn check_lock(&self, caller: &Caller, inst: &InstanceRow) -> Result<(), Error> {
        if inst.locked_by.is_some() && !caller.admin {
            return Err(Error::Conflict(format!("Instance {} is locked", inst.uuid)));
        }
        Ok(())
    }

    async fn record_action(&self, caller: &Caller, inst: &InstanceRow, name: &str, request_id: &str) -> Result<(), Error> {
        let now = now_us();
        self.store()
            .action_start(&ActionRow {
                id: 0,
                instance_uuid: inst.uuid.clone(),
                request_id: request_id.to_string(),
                action: name.to_string(),
                project_id: caller.project_id.clone(),
                user_id: caller.user_id.clone(),
                start_time: now,
                finish_time: None,
                message: None,
                updated_at: now,
            })
            .await?;
        Ok(())
    }

    /// Deletes an instance (`force` as `forceDelete`; both skip soft delete, which is not configured).
    pub async fn server_delete(&self, caller: &Caller, uuid: &str, request_id: &str) -> Result<(), Error> {
        let inst = self.instance(caller, uuid).await?;
        self.check_lock(caller, &inst)?;
        self.record_action(caller, &inst, "delete", request_id).await?;
        self.conductor()?.delete(&inst, request_id).await
    }

    /// Starts a lifecycle action after checking the instance's state.
    pub async fn server_action(
        &self,
        caller: &Caller,
        uuid: &str,
        action: Action,
        request_id: &str,
    ) -> Result<(), Error> {
        let inst = self.instance(caller, uuid).await?;
        self.check_lock(caller, &inst)?;
        let rule = rule_of(&action);
        rule.check(&inst)?;
        if let Action::Resize { flavor } = &action {
            self.check_resize_quota(&inst.project_id, &inst.flavor, flavor).await?;
        }
        // A volume-backed server keeps its root volume: a rebuild may only name the image the volume came from
        // (as upstream before 2.93), and the server stays without an image.
        let volume_backed = inst.image_ref.is_empty()
            && self.store().bdm_list(uuid).await?.iter().any(|b| b.boot_index == Some(0) && b.volume_id.is_some());
        if volume_backed
            && let Action::Rebuild { image_ref, .. } = &action
        {
            let root = self.store().bdm_list(uuid).await?.into_iter().find(|b| b.boot_index == Some(0));
            if root.and_then(|b| b.image_id).as_deref() != Some(image_ref.as_str()) {
                return Err(Error::BadRequest("Unable to rebuild with a different image for a volume-backed server.".into()));
            }
        }
        let expected: Vec<Option<String>> = rule.task_states.iter().map(|t| t.map(str::to_string)).collect();
        let mut set = vec![("task_state", Value::S(Some(rule.starts_in.to_string())))];
        // A rebuild shows its new image at once, as upstream records it before casting.
        if let Action::Rebuild { image_ref, .. } = &action
            && !volume_backed
        {
            set.push(("image_ref", Value::S(Some(image_ref.clone()))));
        }
        let action = match action {
            Action::Rebuild { image_ref, block_devices } => Action::Rebuild {
                image_ref: if volume_backed { String::new() } else { image_ref },
                block_devices,
            },
            other => other,
        };
        if !self.store().instance_update(uuid, Some(&expected), &set).await? {
            let now = self.instance(caller, uuid).await?;
            return Err(invalid_state(rule.name, uuid, "task_state", now.task_state.as_deref().unwrap_or("None")));
        }
        self.record_action(caller, &inst, rule.name, request_id).await?;
        let inst = self.instance(caller, uuid).await?;
        let conductor = self.conductor()?;
        match action {
            Action::Resize { flavor } => conductor.resize(&inst, flavor, request_id).await,
            Action::RevertResize { .. } => conductor.revert_resize(&inst, request_id).await,
            Action::Unshelve => conductor.unshelve(&inst, request_id).await,
            other => conductor.action(&inst, other, request_id).await,
        }
    }

    /// Snapshots an instance into a new private image (`createImage`): the image is created queued as the caller,
    /// and the instance's agent uploads the root disk with the caller's token. Returns the image id.
    #[allow(clippy::too_many_arguments)]
    pub async fn server_snapshot(
        &self,
        caller: &Caller,
        uuid: &str,
        images: &crate::images::ImageClient,
        token: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
        request_id: &str,
    ) -> Result<String, Error> {
        self.server_image(caller, uuid, images, token, name, metadata, None, request_id).await
    }

    /// `createBackup`: a snapshot marked as a backup of `backup_type`, after which only the newest `rotation`
    /// backups of that type are kept (with a rotation of 0 no snapshot is taken and every such backup goes).
    /// Returns the new image, if one was made.
    #[allow(clippy::too_many_arguments)]
    pub async fn server_backup(
        &self,
        caller: &Caller,
        uuid: &str,
        images: &crate::images::ImageClient,
        token: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
        backup_type: &str,
        rotation: u64,
        request_id: &str,
    ) -> Result<Option<String>, Error> {
        let image = if rotation > 0 {
            Some(self.server_image(caller, uuid, images, token, name, metadata, Some(backup_type), request_id).await?)
        } else {
            let inst = self.instance(caller, uuid).await?;
            self.check_lock(caller, &inst)?;
            None
        };
        let query: Vec<(String, String)> = [
            ("instance_uuid", uuid),
            ("image_type", "backup"),
            ("backup_type", backup_type),
            ("sort_key", "created_at"),
            ("sort_dir", "desc"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let backups = images.list(token, &query).await?;
        for old in backups.iter().skip(usize::try_from(rotation).unwrap_or(usize::MAX)) {
            if let Some(id) = old["id"].as_str()
                && Some(id) != image.as_deref()
            {
                images.delete(token, id).await?;
            }
        }
        Ok(image)
    }

    /// A snapshot (`backup_type: None`) or a backup of an instance.
    #[allow(clippy::too_many_arguments)]
    async fn server_image(
        &self,
        caller: &Caller,
        uuid: &str,
        images: &crate::images::ImageClient,
        token: &str,
        name: &str,
        metadata: &BTreeMap<String, String>,
        backup_type: Option<&str>,
        request_id: &str,
    ) -> Result<String, Error> {
        let action = if backup_type.is_some() { "createBackup" } else { "createImage" };
        let inst = self.instance(caller, uuid).await?;
        self.check_lock(caller, &inst)?;
        let allowed = [vm_state::ACTIVE, vm_state::STOPPED, vm_state::PAUSED, vm_state::SUSPENDED];
        if !allowed.contains(&inst.vm_state.as_str()) {
            return Err(invalid_state(action, uuid, "vm_state", &inst.vm_state));
        }
        if inst.task_state.is_some() {
            return Err(invalid_state(action, uuid, "task_state", inst.task_state.as_deref().unwrap_or("None")));
        }
        let mut body = serde_json::json!({
            "name": name,
            "container_format": "bare",
            "disk_format": "qcow2",
            "visibility": "private",
            "instance_uuid": inst.uuid,
            "image_type": if backup_type.is_some() { "backup" } else { "snapshot" },
            "base_image_ref": inst.image_ref,
            "user_id": caller.user_id,
        });
        if let Some(t) = backup_type {
            body["backup_type"] = serde_json::json!(t);
        }
        for (k, v) in metadata {
            body[k] = serde_json::json!(v);
        }
        if inst.image_ref.is_empty() {
            let bdms = self.store().bdm_list(uuid).await?;
            if bdms.iter().any(|b| b.boot_index == Some(0) && b.volume_id.is_some()) {
                self.record_action(caller, &inst, action, request_id).await?;
                return self.snapshot_volume_backed(&inst, &bdms, images, token, body).await;
            }
        }
        let image = images.create(token, &body).await?;
        let image_id = image["id"].as_str().unwrap_or_default().to_string();
        let set = [("task_state", Value::S(Some(task_state::IMAGE_SNAPSHOT.into())))];
        if !self.store().instance_update(uuid, Some(&[None]), &set).await? {
            return Err(invalid_state(action, uuid, "task_state", "busy"));
        }
        self.record_action(caller, &inst, action, request_id).await?;
        let action = Action::Snapshot {
            image_id: image_id.clone(),
            image_url: images.url().to_string(),
            auth_token: compute_rpc::Secret(token.to_string()),
        };
        let inst = self.instance(caller, uuid).await?;
        self.conductor()?.action(&inst, action, request_id).await?;
        Ok(image_id)
    }

    /// Shelves an instance: its root disk is saved to a new private image `<name>-shelved` (created as the
    /// caller, uploaded by the agent with the caller's token), and it is offloaded from its host at once when
    /// `shelved_offload_time` is 0. Returns the image id.
    pub async fn server_shelve(
        &self,
        caller: &Caller,
        uuid: &str,
        images: &crate::images::ImageClient,
        token: &str,
        request_id: &str,
    ) -> Result<String, Error> {
        let inst = self.instance(caller, uuid).await?;
        self.check_lock(caller, &inst)?;
        let probe = Action::Shelve { image_id: String::new(), image_url: String::new(), auth_token: compute_rpc::Secret(String::new()), offload: false };
        rule_of(&probe).check(&inst)?;
        let body = serde_json::json!({
            "name": format!("{}-shelved", inst.display_name),
            "container_format": "bare",
            "disk_format": "qcow2",
            "visibility": "private",
            "instance_uuid": inst.uuid,
            "image_type": "snapshot",
            "base_image_ref": inst.image_ref,
            "user_id": caller.user_id,
        });
        let image = images.create(token, &body).await?;
        let image_id = image["id"].as_str().unwrap_or_default().to_string();
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
        let records = [("shelved_at", now.as_str()), ("shelved_image_id", image_id.as_str()), ("shelved_host", inst.host.as_deref().unwrap_or_default())];
        for (key, value) in records {
            self.store().sysmeta_set(uuid, key, Some(value)).await?;
        }
        let offload = self.conductor()?.settings().shelved_offload_time == 0;
        let action = Action::Shelve {
            image_id: image_id.clone(),
            image_url: images.url().to_string(),
            auth_token: compute_rpc::Secret(token.to_string()),
            offload,
        };
        if let Err(e) = self.server_action(caller, uuid, action, request_id).await {
            // Lost a race with another action: the image made for it goes.
            let _ = images.delete(token, &image_id).await;
            for key in crate::conductor::SHELVE_KEYS {
                self.store().sysmeta_set(uuid, key, None).await?;
            }
            return Err(e);
        }
        Ok(image_id)
    }

    /// Unshelves an instance, into `availability_zone` if given (only an offloaded instance may change zone).
    pub async fn server_unshelve(
        &self,
        caller: &Caller,
        uuid: &str,
        availability_zone: Option<String>,
        request_id: &str,
    ) -> Result<(), Error> {
        let inst = self.instance(caller, uuid).await?;
        if let Some(zone) = availability_zone {
            if inst.vm_state != vm_state::SHELVED_OFFLOADED {
                return Err(Error::Conflict(format!(
                    "The availability_zone parameter can only be given to unshelve a shelved_offloaded server; \
                     instance {uuid} is {}.",
                    inst.vm_state
                )));
            }
            if !self.available_zones().await?.contains(&zone) {
                return Err(Error::BadRequest(format!("The requested availability zone is not available: {zone}")));
            }
            let set = [("availability_zone", Value::S(Some(zone)))];
            self.store().instance_update(uuid, Some(&[None]), &set).await?;
        }
        self.server_action(caller, uuid, Action::Unshelve, request_id).await
    }

    /// Migrations (resizes) matching `filter`, newest first (`/os-migrations`, admins only).
    pub async fn migrations(&self, filter: &crate::store::MigrationFilter) -> Result<Vec<crate::store::MigrationRow>, Error> {
        self.store().migration_list(filter).await
    }

    /// One migration by uuid.
    pub async fn migration(&self, uuid: &str) -> Result<Option<crate::store::MigrationRow>, Error> {
        self.store().migration_get(uuid).await
    }

    /// The snapshot of a volume-backed server (upstream's `snapshot_volume_backed`): each volume is snapshotted
    /// in the block storage service (forced, as it is in use) with the caller's token, and the image holds no
    /// data, only the `block_device_mapping` that boots a new server from those snapshots; it is active at once.
    async fn snapshot_volume_backed(
        &self,
        inst: &InstanceRow,
        bdms: &[crate::store::bdm::Bdm],
        images: &crate::images::ImageClient,
        token: &str,
        mut body: serde_json::Value,
    ) -> Result<String, Error> {
        use serde_json::json;
        let volumes = self
            .volume()
            .ok_or_else(|| Error::Unavailable("The block storage service is not available to compute.".into()))?;
        let name = body["name"].as_str().unwrap_or_default().to_string();
        let mut mappings = Vec::new();
        for b in bdms {
            let Some(vid) = &b.volume_id else { continue };
            let vol = volumes.get(crate::volume::As::User(token), &inst.project_id, vid).await?;
            if b.boot_index == Some(0)
                && let Some(meta) = vol.as_ref().and_then(|v| v["volume_image_metadata"].as_object())
            {
                for key in ["disk_format", "container_format", "min_ram"] {
                    if let Some(x) = meta.get(key).and_then(|x| x.as_str()) {
                        body[key] = if key == "min_ram" { json!(x.parse::<i64>().unwrap_or(0)) } else { json!(x) };
                    }
                }
            }
            let snap = json!({"snapshot": {"volume_id": vid, "force": true, "name": format!("snapshot for {name}")}});
            let (status, v) =
                volumes.send(crate::volume::As::User(token), reqwest::Method::POST, &inst.project_id, "/snapshots", Some(&snap)).await?;
            if !status.is_success() {
                return Err(Error::BadRequest(crate::volume::error_message(&v)));
            }
            mappings.push(json!({
                "source_type": "snapshot",
                "destination_type": "volume",
                "snapshot_id": v["snapshot"]["id"],
                "volume_size": vol.as_ref().map(|v| v["size"].clone()).unwrap_or(serde_json::Value::Null),
                "boot_index": b.boot_index,
                "delete_on_termination": b.delete_on_termination,
                "device_name": b.device_name,
                "tag": b.tag,
                "volume_id": null,
                "image_id": null,
                "no_device": null,
                "disk_bus": "virtio",
                "device_type": "disk",
                "guest_format": null,
                "connection_info": null,
            }));
        }
        if body.get("disk_format").is_none_or(|d| d.is_null()) {
            body["disk_format"] = json!("raw");
        }
        body["block_device_mapping"] = json!(serde_json::Value::Array(mappings).to_string());
        body["bdm_v2"] = json!("True");
        body["root_device_name"] = json!("/dev/vda");
        if let Some(o) = body.as_object_mut() {
            o.remove("base_image_ref");
        }
        let image = images.create(token, &body).await?;
        let image_id = image["id"].as_str().unwrap_or_default().to_string();
        images.activate_empty(token, &image_id).await?;
        Ok(image_id)
    }

    /// Confirms a resize (the instance is in `resized`, VERIFY_RESIZE).
    pub async fn server_confirm_resize(&self, caller: &Caller, uuid: &str, request_id: &str) -> Result<(), Error> {
        let inst = self.instance(caller, uuid).await?;
        self.check_lock(caller, &inst)?;
        if inst.vm_state != vm_state::RESIZED {
            return Err(invalid_state("confirmResize", uuid, "vm_state", &inst.vm_state));
        }
        if inst.task_state.is_some() {
            return Err(invalid_state("confirmResize", uuid, "task_state", inst.task_state.as_deref().unwrap_or("None")));
        }
        self.record_action(caller, &inst, "confirmResize", request_id).await?;
        self.conductor()?.confirm_resize(&inst).await
    }

    /// Locks or unlocks an instance (`locked_by` is `admin` or `owner`, as upstream).
    pub async fn server_lock(
        &self,
        caller: &Caller,
        uuid: &str,
        lock: bool,
        reason: Option<String>,
        request_id: &str,
    ) -> Result<(), Error> {
        let inst = self.instance(caller, uuid).await?;
        if !lock && inst.locked_by.as_deref() == Some("admin") && !caller.admin {
            return Err(Error::Forbidden("Unlocking an instance locked by an administrator requires an admin.".into()));
        }
        let by = if caller.admin && caller.project_id != inst.project_id { "admin" } else { "owner" };
        let set = if lock {
            [("locked_by", Value::S(Some(by.into()))), ("locked_reason", Value::S(reason))]
        } else {
            [("locked_by", Value::S(None)), ("locked_reason", Value::S(None))]
        };
        self.store().instance_update(uuid, None, &set).await?;
        self.record_action(caller, &inst, if lock { "lock" } else { "unlock" }, request_id).await?;
        Ok(())
    }

    /// An administrator forces an instance's vm_state (`active` or `error`) and clears its task (`os-resetState`).
    pub async fn server_reset_state(&self, caller: &Caller, uuid: &str, state: &str, request_id: &str) -> Result<(), Error> {
        let inst = self.instance(caller, uuid).await?;
        let set = [("vm_state", Value::S(Some(state.to_string()))), ("task_state", Value::S(None))];
        self.store().instance_update(uuid, None, &set).await?;
        self.record_action(caller, &inst, "reset_state", request_id).await?;
        Ok(())
    }

    /// Updates name, description and access addresses.
    pub async fn server_update(
        &self,
        caller: &Caller,
        uuid: &str,
        name: Option<String>,
        description: Option<Option<String>>,
        access_ip_v4: Option<Option<String>>,
        access_ip_v6: Option<Option<String>>,
    ) -> Result<InstanceRow, Error> {
        self.instance(caller, uuid).await?;
        let mut set = Vec::new();
        if let Some(n) = name {
            set.push(("display_name", Value::S(Some(n))));
        }
        if let Some(d) = description {
            set.push(("description", Value::S(d)));
        }
        if let Some(a) = access_ip_v4 {
            set.push(("access_ip_v4", Value::S(a)));
        }
        if let Some(a) = access_ip_v6 {
            set.push(("access_ip_v6", Value::S(a)));
        }
        self.store().instance_update(uuid, None, &set).await?;
        self.instance(caller, uuid).await
    }

    /// Sets the hostname the guest is told (2.90).
    pub async fn server_set_hostname(&self, caller: &Caller, uuid: &str, hostname: &str) -> Result<InstanceRow, Error> {
        self.instance(caller, uuid).await?;
        self.store().instance_update(uuid, None, &[("hostname", Value::S(Some(hostname.to_string())))]).await?;
        self.instance(caller, uuid).await
    }

    /// Replaces the key pair (`Some(None)` removes it; 2.54) and the user data (2.57) of a server being rebuilt.
    pub async fn server_set_boot_data(
        &self,
        caller: &Caller,
        uuid: &str,
        key: Option<Option<(String, String)>>,
        user_data: Option<Option<String>>,
    ) -> Result<(), Error> {
        self.instance(caller, uuid).await?;
        let mut set = Vec::new();
        if let Some(k) = key {
            let (name, data) = k.map(|(n, d)| (Some(n), Some(d))).unwrap_or((None, None));
            set.push(("key_name", Value::S(name)));
            set.push(("key_data", Value::S(data)));
        }
        if let Some(u) = user_data {
            set.push(("user_data", Value::S(u)));
        }
        self.store().instance_update(uuid, None, &set).await?;
        Ok(())
    }

    /// The state rules of `trigger_crash_dump` (2.17): active, paused, rescued, resized or error, not locked.
    pub fn server_crash_dump_check(&self, caller: &Caller, inst: &InstanceRow) -> Result<(), Error> {
        self.check_lock(caller, inst)?;
        if !["active", "paused", "rescued", "resized", "error"].contains(&inst.vm_state.as_str())
            || inst.task_state.is_some()
        {
            return Err(invalid_state("trigger_crash_dump", &inst.uuid, "vm_state", &inst.vm_state));
        }
        Ok(())
    }

    pub async fn console_output(&self, caller: &Caller, uuid: &str, length: Option<u64>) -> Result<String, Error> {
        let inst = self.instance(caller, uuid).await?;
        // A rescued guest's console is the rescue system's.
        if inst.vm_state != vm_state::ACTIVE && inst.vm_state != vm_state::RESCUED {
            return Err(invalid_state("get_console_output", uuid, "vm_state", &inst.vm_state));
        }
        self.conductor()?.console_output(&inst, length).await
    }
}

/// Nova's API status of a vm_state/task_state pair (`nova.api.openstack.common._STATE_MAP`).
pub fn status_of(vm: &str, task: Option<&str>) -> &'static str {
    use task_state as t;
    match (vm, task) {
        (vm_state::ACTIVE, Some(t::REBOOTING | t::REBOOT_PENDING | t::REBOOT_STARTED)) => "REBOOT",
        (vm_state::ACTIVE, Some(t::REBOOTING_HARD | t::REBOOT_PENDING_HARD | t::REBOOT_STARTED_HARD)) => "HARD_REBOOT",
        (vm_state::ACTIVE, Some(t::UPDATING_PASSWORD)) => "PASSWORD",
        (
            vm_state::ACTIVE | vm_state::STOPPED | vm_state::ERROR,
            Some(t::REBUILDING | t::REBUILD_BLOCK_DEVICE_MAPPING | t::REBUILD_SPAWNING),
        ) => "REBUILD",
        (
            vm_state::ACTIVE | vm_state::STOPPED,
            Some(t::RESIZE_PREP | t::RESIZE_MIGRATING | t::RESIZE_MIGRATED | t::RESIZE_FINISH),
        ) => "RESIZE",
        (vm_state::RESIZED, Some(t::RESIZE_REVERTING)) => "REVERT_RESIZE",
        (vm_state::ACTIVE, _) => "ACTIVE",
        (vm_state::BUILDING, _) => "BUILD",
        (vm_state::STOPPED, _) => "SHUTOFF",
        (vm_state::RESIZED, _) => "VERIFY_RESIZE",
        (vm_state::PAUSED, _) => "PAUSED",
        (vm_state::SUSPENDED, _) => "SUSPENDED",
        (vm_state::RESCUED, _) => "RESCUE",
        (vm_state::ERROR, _) => "ERROR",
        (vm_state::DELETED, _) => "DELETED",
        (vm_state::SOFT_DELETED, _) => "SOFT_DELETED",
        (vm_state::SHELVED, _) => "SHELVED",
        (vm_state::SHELVED_OFFLOADED, _) => "SHELVED_OFFLOADED",
        _ => "UNKNOWN",
    }
}

/// The vm_states an API status filter means (upstream's `task_and_vm_state_from_status`); `None` if the
/// status is unknown.
pub fn vm_states_of_status(status: &str) -> Option<Vec<&'static str>> {
    let all = [
        vm_state::ACTIVE,
        vm_state::BUILDING,
        vm_state::STOPPED,
        vm_state::RESIZED,
        vm_state::PAUSED,
        vm_state::SUSPENDED,
        vm_state::RESCUED,
        vm_state::ERROR,
        vm_state::DELETED,
        vm_state::SOFT_DELETED,
        vm_state::SHELVED,
        vm_state::SHELVED_OFFLOADED,
    ];
    let upper = status.to_uppercase();
    let states: Vec<&str> = all
        .into_iter()
        .filter(|vm| {
            // A vm_state matches when its plain status or any task-specific one is the asked status.
            status_of(vm, None) == upper
                || matches!(
                    (upper.as_str(), *vm),
                    ("REBOOT" | "HARD_REBOOT" | "PASSWORD", vm_state::ACTIVE)
                        | ("REBUILD", vm_state::ACTIVE | vm_state::STOPPED | vm_state::ERROR)
                        | ("RESIZE", vm_state::ACTIVE | vm_state::STOPPED)
                        | ("REVERT_RESIZE", vm_state::RESIZED)
                )
        })
        .collect();
    if states.is_empty() { None } else { Some(states) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_upstreams_map() {
        assert_eq!(status_of("active", None), "ACTIVE");
        assert_eq!(status_of("building", Some("spawning")), "BUILD");
        assert_eq!(status_of("active", Some("rebooting_hard")), "HARD_REBOOT");
        assert_eq!(status_of("stopped", Some("powering-on")), "SHUTOFF");
        assert_eq!(status_of("error", Some("rebuilding")), "REBUILD");
        assert_eq!(status_of("weird", None), "UNKNOWN");
        assert_eq!(vm_states_of_status("shutoff"), Some(vec!["stopped"]));
        assert_eq!(vm_states_of_status("ACTIVE"), Some(vec!["active"]));
        assert_eq!(vm_states_of_status("REBUILD"), Some(vec!["active", "stopped", "error"]));
        assert_eq!(vm_states_of_status("nonsense"), None);
    }

    #[test]
    fn hostnames_are_sanitised() {
        assert_eq!(sanitize_hostname("My Server_1.example"), "my-server-1-example");
        assert_eq!(sanitize_hostname("--x--"), "x");
        assert_eq!(sanitize_hostname("!!!"), "server");
        assert_eq!(sanitize_hostname(&"a".repeat(100)).len(), 63);
    }

    #[test]
    fn action_rules() {
        let stop = rule_of(&Action::Stop);
        assert!(stop.vm_states.contains(&"active") && !stop.vm_states.contains(&"stopped"));
        assert_eq!(stop.starts_in, "powering-off");
        assert_eq!(rule_of(&Action::Reboot { hard: true }).starts_in, "rebooting_hard");
        assert!(rule_of(&Action::Reboot { hard: true }).vm_states.contains(&"stopped"));
        assert!(!rule_of(&Action::Reboot { hard: false }).vm_states.contains(&"stopped"));
    }
}
