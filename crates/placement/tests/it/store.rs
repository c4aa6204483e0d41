//! The placement datastore on every database backend: generations, capacity, consumers, snapshots.

use std::collections::{BTreeMap, BTreeSet};

use db::testing::test_databases;
use placement::{
    Placement,
    candidates::{Request, candidates},
    model::Inventory,
    store::ConsumerWrite,
};

fn inv(class: &str, total: i64, ratio: f64) -> Inventory {
    Inventory {
        resource_class: class.into(),
        total,
        reserved: 0,
        min_unit: 1,
        max_unit: 100,
        step_size: 1,
        allocation_ratio: ratio,
    }
}

fn write(consumer: &str, rp: &str, vcpu: i64, expected: Option<Option<i64>>) -> ConsumerWrite {
    ConsumerWrite {
        consumer_uuid: consumer.into(),
        project_id: "p".into(),
        user_id: "u".into(),
        expected_generation: expected,
        allocations: BTreeMap::from([(rp.to_string(), BTreeMap::from([("VCPU".to_string(), vcpu)]))]),
    }
}

#[tokio::test]
async fn placement_datastore_on_every_backend() {
    for db in test_databases().await {
        let p = Placement::new((*db).clone());
        p.migrate().await.unwrap();
        p.migrate().await.unwrap();
        let a = p.provider_create(None, "a", None).await.unwrap();
        let b = p.provider_create(None, "b", None).await.unwrap();
        assert!(p.provider_create(None, "a", None).await.is_err());
        assert_eq!(p.inventories_set(&a.uuid, 0, vec![inv("VCPU", 4, 1.5)]).await.unwrap(), 1);
        assert!(p.inventories_set(&a.uuid, 0, vec![inv("VCPU", 8, 1.0)]).await.unwrap_err().to_string().contains("generation conflict"));
        p.inventories_set(&b.uuid, 0, vec![inv("VCPU", 2, 1.0)]).await.unwrap();
        assert_eq!(p.store().inventories_get(&a.uuid).await.unwrap(), vec![inv("VCPU", 4, 1.5)]);

        // Capacity: 4 × 1.5 = 6.
        assert!(p.allocations_write(vec![write("c1", &a.uuid, 7, None)]).await.is_err());
        p.allocations_write(vec![write("c1", &a.uuid, 4, Some(None))]).await.unwrap();
        assert!(p.allocations_write(vec![write("c2", &a.uuid, 3, None)]).await.is_err());
        assert_eq!(p.consumer("c1").await.unwrap().unwrap().generation, 1);
        // Consumer generations.
        assert!(p.allocations_write(vec![write("c1", &a.uuid, 1, Some(None))]).await.is_err());
        p.allocations_write(vec![write("c1", &a.uuid, 2, Some(Some(1)))]).await.unwrap();
        // Moving in one write: c1 leaves a, c2 takes all of a.
        let mut leave = write("c1", &a.uuid, 0, None);
        leave.allocations.clear();
        p.allocations_write(vec![leave, write("c2", &a.uuid, 6, None)]).await.unwrap();
        assert!(p.consumer("c1").await.unwrap().is_none());
        assert_eq!(p.store().provider_usages(&a.uuid).await.unwrap(), BTreeMap::from([("VCPU".to_string(), 6)]));
        assert_eq!(p.store().project_usages("p", None).await.unwrap(), BTreeMap::from([("VCPU".to_string(), 6)]));

        // Traits and aggregates feed the snapshot.
        p.store().custom_trait_insert("CUSTOM_X").await.unwrap();
        let gen_b = p.provider(&b.uuid).await.unwrap().generation;
        p.provider_traits_set(&b.uuid, gen_b, BTreeSet::from(["CUSTOM_X".to_string()])).await.unwrap();
        let snap = p.snapshot().await.unwrap();
        let req = Request { resources: vec![("VCPU".into(), 1)], ..Default::default() };
        let found: Vec<&str> = candidates(&snap, &req, None).iter().map(|i| snap.providers[*i].row.uuid.as_str()).collect();
        assert_eq!(found, [b.uuid.as_str()], "a is full");
        assert!(snap.providers.iter().any(|v| v.traits.contains("CUSTOM_X")));

        assert!(p.provider_delete(&a.uuid).await.is_err(), "a has allocations");
        p.provider_delete(&b.uuid).await.unwrap();
        db.cleanup().await;
    }
}
