//! Server groups: creation with the `server_groups` quota, members recorded when servers are created with the
//! `group` scheduler hint (within the `server_group_members` quota), and what the scheduler needs of a group
//! (its policy and the hosts of its members).

use crate::{
    error::Error,
    servers::Caller,
    service::Compute,
    store::{ServerGroupRow, instances::now_us},
};

/// The policies a group may have.
pub const POLICIES: &[&str] = &["anti-affinity", "affinity", "soft-anti-affinity", "soft-affinity"];

pub fn group_not_found(uuid: &str) -> Error {
    Error::NotFound(format!("Instance group {uuid} could not be found."))
}

/// What the scheduler is told about the group of an instance being built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupPlacement {
    pub policy: String,
    /// The `max_server_per_host` rule of an anti-affinity group (2.64): that many members may share a host.
    pub max_server_per_host: Option<i64>,
    /// The hosts of the group's other live members, one entry per member.
    pub hosts: Vec<String>,
}

impl Compute {
    /// Creates a group for the caller's project.
    pub async fn server_group_create(
        &self,
        caller: &Caller,
        name: &str,
        policy: &str,
        max_server_per_host: Option<i64>,
    ) -> Result<ServerGroupRow, Error> {
        if !POLICIES.contains(&policy) {
            return Err(Error::BadRequest(format!("Invalid policy: {policy}")));
        }
        let over = self.quota_check(&caller.project_id, &caller.user_id, &[("server_groups", 1)]).await?;
        if !over.is_empty() {
            return Err(Error::Forbidden("Quota exceeded, too many server groups.".into()));
        }
        let group = ServerGroupRow {
            uuid: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            project_id: caller.project_id.clone(),
            user_id: caller.user_id.clone(),
            policy: policy.to_string(),
            max_server_per_host,
            members: Vec::new(),
            created_at: now_us(),
        };
        self.store().server_group_insert(&group).await?;
        Ok(group)
    }

    /// A group by uuid (any project's: the API checks policy against its project).
    pub async fn server_group(&self, uuid: &str) -> Result<ServerGroupRow, Error> {
        self.store().server_group_get(uuid).await?.ok_or_else(|| group_not_found(uuid))
    }

    /// The groups of a project, or of every project.
    pub async fn server_groups(&self, project_id: Option<&str>) -> Result<Vec<ServerGroupRow>, Error> {
        self.store().server_group_list(project_id).await
    }

    pub async fn server_group_delete(&self, uuid: &str) -> Result<(), Error> {
        if self.store().server_group_delete(uuid).await? { Ok(()) } else { Err(group_not_found(uuid)) }
    }

    /// The members of a group that are not deleted, as the API shows them.
    pub async fn server_group_members(&self, uuid: &str) -> Result<Vec<String>, Error> {
        Ok(self.store().server_group_live_members(uuid).await?.into_iter().map(|m| m.instance_uuid).collect())
    }

    /// Checks that `count` new servers may join `group` (it exists, and the member quota allows them).
    pub(crate) async fn check_group_for_boot(&self, caller: &Caller, group: &str, count: i64) -> Result<(), Error> {
        let g = match self.store().server_group_get(group).await? {
            Some(g) if caller.admin || g.project_id == caller.project_id => g,
            _ => return Err(Error::BadRequest(format!("Instance group {group} could not be found."))),
        };
        let limits = self.quota_limits(&caller.project_id, Some(&caller.user_id)).await?;
        let limit = limits.get("server_group_members").copied().unwrap_or(-1);
        let members = self.store().server_group_live_members(&g.uuid).await?;
        let mine = members.iter().filter(|m| m.user_id == caller.user_id).count() as i64;
        if !crate::quotas::fits(limit, mine, count) {
            return Err(Error::Forbidden("Quota exceeded, too many servers in group".into()));
        }
        Ok(())
    }

    /// The policy of the group an instance was created into and the hosts of the group's other members.
    pub async fn group_placement(&self, instance_uuid: &str) -> Result<Option<GroupPlacement>, Error> {
        group_placement(self.store(), instance_uuid).await
    }
}

/// [`Compute::group_placement`] on a store, for the conductor.
pub async fn group_placement(store: &crate::store::Store, instance_uuid: &str) -> Result<Option<GroupPlacement>, Error> {
    let Some(group) = store.server_group_of_instance(instance_uuid).await? else { return Ok(None) };
    let hosts = store
        .server_group_live_members(&group.uuid)
        .await?
        .into_iter()
        .filter(|m| m.instance_uuid != instance_uuid)
        .filter_map(|m| m.host)
        .collect();
    Ok(Some(GroupPlacement { policy: group.policy, max_server_per_host: group.max_server_per_host, hosts }))
}
