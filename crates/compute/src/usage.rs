//! Usage reports computed from instance records (deleted ones are kept): upstream's simple tenant usage (hours
//! each instance ran in a period, and the totals per project) and the instance usage audit log, which is empty
//! here (no audit task runs, as upstream's default `instance_usage_audit = False`).

use std::collections::BTreeMap;

use crate::{error::Error, service::Compute, store::InstanceRow};

/// One instance's usage in a period. Times are unix microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerUsage {
    pub instance_id: String,
    pub name: String,
    pub tenant_id: String,
    pub flavor: String,
    pub hours: f64,
    pub memory_mb: i64,
    pub local_gb: i64,
    pub vcpus: i64,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    /// `terminated`, or the instance's vm_state.
    pub state: String,
    /// Seconds since it started (until it ended).
    pub uptime: i64,
}

/// One project's usage in a period.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantUsage {
    pub tenant_id: String,
    pub start: i64,
    pub stop: i64,
    pub total_hours: f64,
    pub total_local_gb_usage: f64,
    pub total_memory_mb_usage: f64,
    pub total_vcpus_usage: f64,
    pub server_usages: Vec<ServerUsage>,
}

/// Hours an instance ran within `[start, stop]` (upstream's `_hours_for`).
pub fn hours_for(i: &InstanceRow, start: i64, stop: i64) -> f64 {
    let Some(launched) = i.launched_at else { return 0.0 };
    if i.terminated_at.is_some_and(|t| t < start) || launched > stop {
        return 0.0;
    }
    let from = launched.max(start);
    let to = i.terminated_at.map_or(stop, |t| t.min(stop));
    (to - from) as f64 / 3_600_000_000.0
}

/// Usage per project of the instances active in `[start, stop]`, in order of first appearance.
pub fn tenant_usages(instances: &[InstanceRow], start: i64, stop: i64, now: i64) -> Vec<TenantUsage> {
    let mut order: Vec<String> = Vec::new();
    let mut by_project: BTreeMap<String, TenantUsage> = BTreeMap::new();
    for i in instances {
        // Upstream's active window: launched before the end, not terminated before the start.
        let Some(launched) = i.launched_at else { continue };
        if launched >= stop || i.terminated_at.is_some_and(|t| t <= start) {
            continue;
        }
        let hours = hours_for(i, start, stop);
        let ended = i.terminated_at;
        let u = ServerUsage {
            instance_id: i.uuid.clone(),
            name: i.display_name.clone(),
            tenant_id: i.project_id.clone(),
            flavor: i.flavor.name.clone(),
            hours,
            memory_mb: i.flavor.memory_mb,
            local_gb: i.flavor.root_gb + i.flavor.ephemeral_gb,
            vcpus: i.flavor.vcpus,
            started_at: launched,
            ended_at: ended,
            state: if ended.is_some() { "terminated".into() } else { i.vm_state.clone() },
            uptime: (ended.unwrap_or(now) - launched) / 1_000_000,
        };
        let t = by_project.entry(i.project_id.clone()).or_insert_with(|| {
            order.push(i.project_id.clone());
            TenantUsage {
                tenant_id: i.project_id.clone(),
                start,
                stop,
                total_hours: 0.0,
                total_local_gb_usage: 0.0,
                total_memory_mb_usage: 0.0,
                total_vcpus_usage: 0.0,
                server_usages: Vec::new(),
            }
        });
        t.total_local_gb_usage += u.local_gb as f64 * hours;
        t.total_vcpus_usage += u.vcpus as f64 * hours;
        t.total_memory_mb_usage += u.memory_mb as f64 * hours;
        t.total_hours += hours;
        t.server_usages.push(u);
    }
    order.into_iter().filter_map(|p| by_project.remove(&p)).collect()
}

/// The instance usage audit log of one audit period.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditLog {
    /// Naive UTC datetimes, as upstream prints them (`2024-05-01 00:00:00`).
    pub period_beginning: String,
    pub period_ending: String,
    pub hosts: Vec<String>,
}

impl AuditLog {
    /// `ALL hosts done. 0 errors.` or `0 of 2 hosts done. 0 errors.`: no host has run the audit here.
    pub fn overall_status(&self) -> String {
        if self.hosts.is_empty() {
            "ALL hosts done. 0 errors.".into()
        } else {
            format!("0 of {} hosts done. 0 errors.", self.hosts.len())
        }
    }
}

/// The last complete monthly audit period before `before` (upstream's `last_completed_audit_period`, unit month).
pub fn audit_period(before: chrono::NaiveDateTime) -> (chrono::NaiveDateTime, chrono::NaiveDateTime) {
    use chrono::Datelike;
    let first = |y: i32, m: u32| {
        chrono::NaiveDate::from_ymd_opt(y, m, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).unwrap_or(before)
    };
    let end = first(before.year(), before.month());
    let (y, m) = if before.month() == 1 { (before.year() - 1, 12) } else { (before.year(), before.month() - 1) };
    (first(y, m), end)
}

impl Compute {
    /// Usage of one project (`Some`) or of every project in `[start, stop]` (the end capped at now, as upstream).
    pub async fn tenant_usage(
        &self,
        project_id: Option<&str>,
        start: i64,
        stop: i64,
    ) -> Result<Vec<TenantUsage>, Error> {
        Ok(self.tenant_usage_page(project_id, start, stop, None).await?.0)
    }

    /// [`Compute::tenant_usage`] over one page of the instances that count (2.40: `limit`, `marker` an instance
    /// uuid, oldest first); also returns the page's last instance when the page is full.
    pub async fn tenant_usage_page(
        &self,
        project_id: Option<&str>,
        start: i64,
        stop: i64,
        page: Option<&api_common::Page>,
    ) -> Result<(Vec<TenantUsage>, Option<String>), Error> {
        let now = crate::store::instances::now_us();
        let stop = stop.min(now);
        let filter = crate::store::InstanceFilter { project_id: project_id.map(str::to_string), ..Default::default() };
        let mut instances = self.store().instance_list(&filter).await?;
        // Oldest first, as upstream reads them.
        instances.reverse();
        let Some(page) = page else {
            return Ok((tenant_usages(&instances, start, stop, now), None));
        };
        // The instances that count in the period, in order; the page picks among those.
        let counted: std::collections::HashSet<String> = tenant_usages(&instances, start, stop, now)
            .into_iter()
            .flat_map(|t| t.server_usages.into_iter().map(|u| u.instance_id))
            .collect();
        instances.retain(|i| counted.contains(&i.uuid));
        let (instances, _) = page.apply(instances, |i| i.uuid.as_str()).map_err(|e| Error::BadRequest(e.message))?;
        let last = instances.last().filter(|_| instances.len() == page.limit).map(|i| i.uuid.clone());
        Ok((tenant_usages(&instances, start, stop, now), last))
    }

    /// The audit log of the period before `before`: every compute host, none having run the audit.
    pub async fn usage_audit_log(&self, before: chrono::NaiveDateTime) -> Result<AuditLog, Error> {
        let (begin, end) = audit_period(before);
        let mut hosts: Vec<String> = self
            .store()
            .service_list()
            .await?
            .into_iter()
            .filter(|s| s.binary == compute_rpc::COMPUTE_BINARY)
            .map(|s| s.host)
            .collect();
        hosts.sort();
        hosts.dedup();
        let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
        Ok(AuditLog { period_beginning: fmt(begin), period_ending: fmt(end), hosts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;

    fn inst(project: &str, launched: Option<i64>, terminated: Option<i64>) -> InstanceRow {
        let flavor = compute_rpc::FlavorSpec {
            flavorid: "1".into(),
            name: "m1.tiny".into(),
            vcpus: 2,
            memory_mb: 512,
            root_gb: 1,
            ephemeral_gb: 1,
            swap: 0,
            extra_specs: Default::default(),
        };
        InstanceRow {
            vm_state: "active".into(),
            task_state: None,
            power_state: 1,
            launched_at: launched,
            terminated_at: terminated,
            deleted_at: terminated,
            deleted: terminated.is_some(),
            ..InstanceRow::new(format!("{project}-{launched:?}"), "vm", project, "u", flavor, "", 0)
        }
    }

    #[test]
    fn hours_are_clipped_to_the_period() {
        assert_eq!(hours_for(&inst("p", Some(0), None), H, 3 * H), 2.0);
        assert_eq!(hours_for(&inst("p", Some(2 * H), Some(5 * H)), 0, 10 * H), 3.0);
        assert_eq!(hours_for(&inst("p", Some(0), Some(H)), 2 * H, 3 * H), 0.0);
        assert_eq!(hours_for(&inst("p", None, None), 0, H), 0.0);
    }

    #[test]
    fn totals_per_project() {
        let all = [
            inst("a", Some(0), None),
            inst("b", Some(H), Some(2 * H)),
            inst("a", Some(H), None),
            inst("c", None, None),
            inst("c", Some(0), Some(H / 2)),
        ];
        let u = tenant_usages(&all, H, 3 * H, 4 * H);
        assert_eq!(u.iter().map(|t| t.tenant_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(u[0].total_hours, 4.0);
        assert_eq!(u[0].total_vcpus_usage, 8.0);
        assert_eq!(u[0].total_local_gb_usage, 8.0);
        assert_eq!(u[0].server_usages[0].uptime, 4 * 3600);
        assert_eq!(u[1].server_usages[0].state, "terminated");
        assert_eq!(u[1].server_usages[0].uptime, 3600);
    }

    #[test]
    fn audit_periods_are_the_last_complete_month() {
        let t = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(audit_period(t("2024-03-15 10:00:00")), (t("2024-02-01 00:00:00"), t("2024-03-01 00:00:00")));
        assert_eq!(audit_period(t("2024-01-01 00:00:00")), (t("2023-12-01 00:00:00"), t("2024-01-01 00:00:00")));
        let log = AuditLog { period_beginning: String::new(), period_ending: String::new(), hosts: vec!["h".into()] };
        assert_eq!(log.overall_status(), "0 of 1 hosts done. 0 errors.");
    }
}
