//! The cached candidate snapshot stays coherent: with this process's own writes (updated in place) and with writes
//! made by another process on the same database (a second `Placement`, seen through the change counter), on every
//! database backend and over HTTP.

use std::collections::{BTreeMap, BTreeSet};

use db::testing::test_databases;
use placement::{
    Placement,
    candidates::{Request, candidates},
    model::Inventory,
    store::ConsumerWrite,
};
use serde_json::{Value, json};
use test_utils::TestCloud;

use crate::call;

fn vcpus(total: i64) -> Inventory {
    Inventory { resource_class: "VCPU".into(), total, reserved: 0, min_unit: 1, max_unit: total, step_size: 1, allocation_ratio: 1.0 }
}

fn claim(consumer: &str, allocations: &[(&str, i64)]) -> ConsumerWrite {
    ConsumerWrite {
        consumer_uuid: consumer.into(),
        project_id: "p".into(),
        user_id: "u".into(),
        expected_generation: None,
        allocations: allocations
            .iter()
            .map(|(rp, n)| (rp.to_string(), BTreeMap::from([("VCPU".to_string(), *n)])))
            .collect(),
    }
}

/// The uuids `p` offers for `request`, and a check that its cached snapshot equals a fresh load.
async fn offered(p: &Placement, request: &Request) -> Vec<String> {
    let cached = p.snapshot().await.unwrap();
    let fresh = p.store().snapshot().await.unwrap();
    assert_eq!(*cached, fresh, "the cached snapshot differs from the database");
    candidates(&cached, request, None).iter().map(|i| cached.providers[*i].row.uuid.clone()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn cache_follows_local_and_other_process_writes_on_every_backend() {
    for db in test_databases().await {
        let local = Placement::new((*db).clone());
        let other = Placement::new((*db).clone());
        local.migrate().await.unwrap();
        let one = Request { resources: vec![("VCPU".into(), 1)], ..Default::default() };

        let a = local.provider_create(None, "a", None).await.unwrap().uuid;
        let b = local.provider_create(None, "b", None).await.unwrap().uuid;
        local.inventories_set(&a, 0, vec![vcpus(2)]).await.unwrap();
        local.inventories_set(&b, 0, vec![vcpus(2)]).await.unwrap();
        assert_eq!(offered(&local, &one).await, sorted(vec![a.clone(), b.clone()]));
        assert_eq!(offered(&other, &one).await, sorted(vec![a.clone(), b.clone()]));

        // Local writes: the full provider drops out at once, in both processes.
        local.allocations_write(vec![claim("c1", &[(&a, 2)])]).await.unwrap();
        assert_eq!(offered(&local, &one).await, std::slice::from_ref(&b));
        assert_eq!(offered(&other, &one).await, std::slice::from_ref(&b));

        // The other process fills b; the local cache sees it.
        other.allocations_write(vec![claim("c2", &[(&b, 1)])]).await.unwrap();
        assert_eq!(offered(&local, &one).await, std::slice::from_ref(&b));
        other.allocations_write(vec![claim("c3", &[(&b, 1)])]).await.unwrap();
        assert!(offered(&local, &one).await.is_empty(), "b is full");
        // A local write right after another process's write (cache one change behind): still exact.
        other.allocations_write(vec![claim("c1", &[])]).await.unwrap();
        local.allocations_write(vec![claim("c4", &[(&a, 1)])]).await.unwrap();
        assert_eq!(offered(&local, &one).await, std::slice::from_ref(&a));

        // Providers, inventories, traits and aggregates written elsewhere.
        let c = other.provider_create(None, "c", None).await.unwrap().uuid;
        other.inventories_set(&c, 0, vec![vcpus(8)]).await.unwrap();
        assert_eq!(offered(&local, &one).await, sorted(vec![a.clone(), c.clone()]));
        let two = Request { resources: vec![("VCPU".into(), 2)], ..Default::default() };
        assert_eq!(offered(&local, &two).await, std::slice::from_ref(&c));
        other.provider_traits_set(&c, 1, BTreeSet::from(["HW_CPU_X86_AVX2".to_string()])).await.unwrap();
        let avx = Request { required: BTreeSet::from(["HW_CPU_X86_AVX2".to_string()]), ..one.clone() };
        assert_eq!(offered(&local, &avx).await, std::slice::from_ref(&c));
        let agg = "aaaaaaaa-0000-4000-8000-000000000001".to_string();
        other.provider_aggregates_set(&a, None, &BTreeSet::from([agg.clone()])).await.unwrap();
        let in_agg = Request { member_of: vec![BTreeSet::from([agg.clone()])], ..one.clone() };
        assert_eq!(offered(&local, &in_agg).await, std::slice::from_ref(&a));
        other.inventory_delete(&c, "VCPU").await.unwrap();
        assert_eq!(offered(&local, &one).await, std::slice::from_ref(&a));
        other.provider_delete(&c).await.unwrap();
        assert!(local.snapshot().await.unwrap().providers.iter().all(|p| p.row.uuid != c));

        // Local provider writes update the cache in place too.
        let d = local.provider_create(None, "d", None).await.unwrap().uuid;
        local.inventories_set(&d, 0, vec![vcpus(1)]).await.unwrap();
        assert_eq!(offered(&local, &one).await, sorted(vec![a.clone(), d.clone()]));
        local.provider_update(&d, "d2", None, None).await.unwrap();
        assert!(local.snapshot().await.unwrap().providers.iter().any(|p| p.row.name == "d2"));
        local.provider_delete(&d).await.unwrap();
        assert_eq!(offered(&local, &one).await, std::slice::from_ref(&a));

        // Both processes writing at once: every committed allocation is accounted for, none over capacity.
        let e = local.provider_create(None, "e", None).await.unwrap().uuid;
        local.inventories_set(&e, 0, vec![vcpus(6)]).await.unwrap();
        let writers = [(0, local.clone()), (1, other.clone())].map(|(w, p)| {
            let e = e.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for i in 0..5 {
                    let consumer = format!("race-{w}-{i}");
                    if p.allocations_write(vec![claim(&consumer, &[(&e, 1)])]).await.is_ok() {
                        ok += 1;
                    }
                    p.snapshot().await.unwrap();
                }
                ok
            })
        });
        let mut granted = 0;
        for w in writers {
            granted += w.await.unwrap();
        }
        assert_eq!(granted, 6, "exactly the capacity is granted");
        let snap = local.snapshot().await.unwrap();
        let e_view = snap.providers.iter().find(|p| p.row.uuid == e).unwrap();
        assert_eq!(e_view.usages.get("VCPU"), Some(&6));
        assert_eq!(offered(&local, &one).await, std::slice::from_ref(&a));
        assert_eq!(offered(&other, &one).await, std::slice::from_ref(&a));
        db.cleanup().await;
    }
}

#[tokio::test]
async fn candidates_over_http_never_offer_allocated_capacity() {
    let cloud = TestCloud::start_without_agent().await;
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let r = call(&cloud.admin, "POST", "/resource_providers", Some(&json!({"name": name})), "1.28").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let rp = r.json()["uuid"].as_str().unwrap().to_string();
        let body = json!({"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 2}}});
        let r = call(&cloud.admin, "PUT", &format!("/resource_providers/{rp}/inventories"), Some(&body), "1.28").await;
        assert_eq!(r.status, 200, "{}", r.text);
        nodes.push(rp);
    }
    let candidates = || async {
        let r = call(&cloud.admin, "GET", "/allocation_candidates?resources=VCPU:1", None, "1.28").await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    };
    // Take one VCPU at a time on the first candidate offered, until nothing is left: six claims fit exactly.
    for i in 0..6 {
        let body = candidates().await;
        for (rp, summary) in body["provider_summaries"].as_object().unwrap() {
            let vcpu = &summary["resources"]["VCPU"];
            assert!(vcpu["used"].as_i64().unwrap() < vcpu["capacity"].as_i64().unwrap(), "{rp} is offered but full");
        }
        let first: Value = body["allocation_requests"][0]["allocations"].clone();
        let claim = json!({"allocations": first, "project_id": "p", "user_id": "u", "consumer_generation": null});
        let r = call(&cloud.admin, "PUT", &format!("/allocations/00000000-0000-4000-8000-{i:012}"), Some(&claim), "1.28").await;
        assert_eq!(r.status, 204, "claim {i} on an offered provider must fit: {}", r.text);
    }
    assert_eq!(candidates().await["allocation_requests"], json!([]));

    // A write through a second service instance on the same database (another process) is seen too.
    let other = Placement::new(cloud.running.cloud.db.clone());
    other.allocations_write(vec![claim("00000000-0000-4000-8000-000000000000", &[])]).await.unwrap();
    let body = candidates().await;
    assert_eq!(body["allocation_requests"].as_array().unwrap().len(), 1, "{body}");
    let r = call(&cloud.admin, "DELETE", "/allocations/00000000-0000-4000-8000-000000000001", None, "1.28").await;
    assert_eq!(r.status, 204);
    let free: BTreeSet<String> = candidates().await["provider_summaries"].as_object().unwrap().keys().cloned().collect();
    assert!(!free.is_empty() && free.iter().all(|rp| nodes.contains(rp)));
    let gen_n3 = {
        let r = call(&cloud.admin, "GET", &format!("/resource_providers/{}", nodes[2]), None, "1.28").await;
        r.json()["generation"].as_i64().unwrap()
    };
    other.inventories_set(&nodes[2], gen_n3, vec![vcpus(4)]).await.unwrap();
    let body = candidates().await;
    assert_eq!(body["provider_summaries"][&nodes[2]]["resources"]["VCPU"]["capacity"], 4, "{body}");
    cloud.shutdown().await;
}
