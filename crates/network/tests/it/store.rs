//! The datastore on every database backend: documents, and the keys that keep addresses, MACs, segments and
//! default groups unique.

use db::testing::test_databases;
use network::store::{IpAllocation, Store};
use serde_json::json;

#[tokio::test]
async fn datastore_round_trips_and_unique_keys_on_every_backend() {
    for db in test_databases().await {
        let store = Store::new((*db).clone());
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        let doc = json!({"id": "n1", "name": "ünïcode", "project_id": "p1"});
        assert!(store.resource_insert("network", "n1", "p1", "", &doc).await.unwrap());
        assert!(!store.resource_insert("network", "n1", "p1", "", &doc).await.unwrap());
        assert_eq!(store.resource_get("network", "n1").await.unwrap(), Some(doc.clone()));
        assert!(store.resource_insert("subnet", "s1", "p1", "n1", &json!({"id": "s1"})).await.unwrap());
        assert_eq!(store.resource_list_by_parent("subnet", "n1").await.unwrap().len(), 1);
        assert_eq!(store.resource_count_by_project("network", "p1").await.unwrap(), 1);
        assert!(store.resource_update("network", "n1", &json!({"id": "n1", "name": "b"})).await.unwrap());
        assert_eq!(store.resource_list("network").await.unwrap()[0]["name"], "b");
        let a = IpAllocation { network_id: "n1".into(), ip_address: "10.0.0.2".into(), subnet_id: "s1".into(), port_id: "p".into() };
        assert!(store.ip_insert(&a).await.unwrap());
        assert!(!store.ip_insert(&IpAllocation { port_id: "q".into(), ..a.clone() }).await.unwrap());
        assert_eq!(store.ip_list_subnet("s1").await.unwrap(), vec![a.clone()]);
        store.ip_delete_port("p").await.unwrap();
        assert!(store.ip_list_subnet("s1").await.unwrap().is_empty());
        assert!(store.mac_insert("n1", "fa:16:3e:00:00:01", "p").await.unwrap());
        assert!(!store.mac_insert("n1", "fa:16:3e:00:00:01", "q").await.unwrap());
        assert!(store.mac_insert("n2", "fa:16:3e:00:00:01", "q").await.unwrap());
        assert!(store.segment_insert("vxlan", "", 5, "n1").await.unwrap());
        assert!(!store.segment_insert("vxlan", "", 5, "n2").await.unwrap());
        assert_eq!(store.segment_used("vxlan", "").await.unwrap(), vec![5]);
        store.segment_delete_network("n1").await.unwrap();
        assert!(store.segment_used("vxlan", "").await.unwrap().is_empty());
        assert!(store.default_sg_insert("p1", "sg1").await.unwrap());
        assert!(!store.default_sg_insert("p1", "sg2").await.unwrap());
        assert_eq!(store.default_sg_get("p1").await.unwrap().as_deref(), Some("sg1"));
        assert!(store.resource_delete("network", "n1").await.unwrap());
        assert!(!store.resource_delete("network", "n1").await.unwrap());
        db.cleanup().await;
    }
}
