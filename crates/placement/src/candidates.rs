//! Allocation candidates and provider filters: pure functions over a [`Snapshot`] of every provider's
//! inventories, usages, traits and aggregates. No IO happens here, so the snapshot may come from the database (as
//! now) or from a cache kept current by the writers, and one decision over 10,000 providers is a linear scan of
//! in-memory maps.
//!
//! Scope of this version: every requested resource and trait must be satisfied by one provider (a flat compute
//! node, as upstream before nested and sharing providers); granular groups are merged into one.

use std::collections::{BTreeMap, BTreeSet};

use crate::{model::Inventory, store::ProviderRow};

/// One provider as candidates see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderView {
    pub row: ProviderRow,
    pub inventories: BTreeMap<String, Inventory>,
    pub usages: BTreeMap<String, i64>,
    pub traits: BTreeSet<String>,
    pub aggregates: BTreeSet<String>,
}

impl ProviderView {
    pub fn new(row: ProviderRow) -> Self {
        ProviderView {
            row,
            inventories: BTreeMap::new(),
            usages: BTreeMap::new(),
            traits: BTreeSet::new(),
            aggregates: BTreeSet::new(),
        }
    }

    fn used(&self, class: &str) -> i64 {
        self.usages.get(class).copied().unwrap_or(0)
    }

    /// Whether this provider can take every requested amount on top of its current usage.
    pub fn has_capacity(&self, resources: &[(String, i64)]) -> bool {
        resources.iter().all(|(class, amount)| self.inventories.get(class).is_some_and(|inv| inv.fits(self.used(class), *amount)))
    }
}

/// Every provider, at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub providers: Vec<ProviderView>,
}

/// What a candidate request asks for (all groups merged).
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub resources: Vec<(String, i64)>,
    pub required: BTreeSet<String>,
    pub forbidden: BTreeSet<String>,
    /// Each entry is a set of aggregates of which the provider must be in at least one; all entries must hold.
    pub member_of: Vec<BTreeSet<String>>,
    /// Aggregates the provider must not be in.
    pub forbidden_aggregates: BTreeSet<String>,
    /// Only providers of this tree.
    pub in_tree: Option<String>,
}

impl Request {
    /// Whether `p` satisfies everything but resources.
    pub fn matches_qualitative(&self, p: &ProviderView) -> bool {
        self.required.iter().all(|t| p.traits.contains(t))
            && !self.forbidden.iter().any(|t| p.traits.contains(t))
            && self.member_of.iter().all(|any| any.iter().any(|a| p.aggregates.contains(a)))
            && !self.forbidden_aggregates.iter().any(|a| p.aggregates.contains(a))
            && self.in_tree.as_deref().is_none_or(|root| p.row.root_uuid == root)
    }

    pub fn matches(&self, p: &ProviderView) -> bool {
        self.matches_qualitative(p) && p.has_capacity(&self.resources)
    }
}

/// Positions in `snapshot.providers` of the providers satisfying `request`, in snapshot order, at most `limit`.
pub fn candidates(snapshot: &Snapshot, request: &Request, limit: Option<usize>) -> Vec<usize> {
    snapshot
        .providers
        .iter()
        .enumerate()
        .filter(|(_, p)| request.matches(p))
        .map(|(i, _)| i)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(uuid: &str, vcpu: i64, ratio: f64, used: i64) -> ProviderView {
        let mut p = ProviderView::new(ProviderRow {
            uuid: uuid.into(),
            name: uuid.into(),
            generation: 0,
            parent_uuid: None,
            root_uuid: uuid.into(),
            updated_at: 0,
        });
        p.inventories.insert(
            "VCPU".into(),
            Inventory {
                resource_class: "VCPU".into(),
                total: vcpu,
                reserved: 0,
                min_unit: 1,
                max_unit: vcpu,
                step_size: 1,
                allocation_ratio: ratio,
            },
        );
        p.usages.insert("VCPU".into(), used);
        p
    }

    #[test]
    fn filters_by_capacity_traits_and_aggregates() {
        let mut a = provider("a", 4, 1.0, 4);
        let mut b = provider("b", 4, 2.0, 4);
        let c = provider("c", 4, 1.0, 0);
        b.traits.insert("HW_CPU_X86_AVX2".into());
        b.aggregates.insert("agg1".into());
        a.aggregates.insert("agg1".into());
        let snap = Snapshot { providers: vec![a, b, c] };
        let mut req = Request { resources: vec![("VCPU".into(), 2)], ..Default::default() };
        let ids = |v: Vec<usize>| v.iter().map(|i| snap.providers[*i].row.uuid.clone()).collect::<Vec<_>>();
        assert_eq!(ids(candidates(&snap, &req, None)), ["b", "c"]); // a is full; b overcommits 2x
        assert_eq!(ids(candidates(&snap, &req, Some(1))), ["b"]);
        req.required.insert("HW_CPU_X86_AVX2".into());
        assert_eq!(ids(candidates(&snap, &req, None)), ["b"]);
        req.required.clear();
        req.forbidden.insert("HW_CPU_X86_AVX2".into());
        assert_eq!(ids(candidates(&snap, &req, None)), ["c"]);
        req.forbidden.clear();
        req.member_of.push(BTreeSet::from(["agg1".to_string(), "agg2".to_string()]));
        assert_eq!(ids(candidates(&snap, &req, None)), ["b"]);
        req.resources = vec![("MEMORY_MB".into(), 1)];
        assert!(candidates(&snap, &req, None).is_empty());
    }
}
