//! The datastore on every database backend: documents, and the keys that keep addresses, MACs, segments and
//! default groups unique.

use db::testing::test_databases;
use network::store::{IpAllocation, NewPort, PortInsert, Store};
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
        store.ip_delete("n1", "10.0.0.2").await.unwrap();
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

/// A port's MAC, addresses and document are written together or not at all, and a refusal names the claim that
/// another port holds.
#[tokio::test]
async fn a_port_is_stored_whole_or_not_at_all_on_every_backend() {
    for db in test_databases().await {
        let store = Store::new((*db).clone());
        store.migrate().await.unwrap();
        let ip = |port: &str, addr: &str| IpAllocation {
            network_id: "n1".into(),
            ip_address: addr.into(),
            subnet_id: "s1".into(),
            port_id: port.into(),
        };
        let doc = |id: &str| json!({"id": id, "project_id": "p1"});
        let (a_ips, a_doc) = (vec![ip("a", "10.0.0.2"), ip("a", "10.0.0.3")], doc("a"));
        let a = NewPort { id: "a", network_id: "n1", project_id: "p1", mac_address: "fa:16:3e:00:00:01", ips: &a_ips, doc: &a_doc };
        assert_eq!(store.port_insert(&a).await.unwrap(), PortInsert::Done);
        assert_eq!(store.resource_get("port", "a").await.unwrap(), Some(a_doc.clone()));
        assert_eq!(store.ip_list_subnet("s1").await.unwrap().len(), 2);

        // the second address is taken: nothing of port b stays, not even its MAC or its free first address
        let (b_ips, b_doc) = (vec![ip("b", "10.0.0.4"), ip("b", "10.0.0.3")], doc("b"));
        let b = NewPort { id: "b", network_id: "n1", project_id: "p1", mac_address: "fa:16:3e:00:00:02", ips: &b_ips, doc: &b_doc };
        assert_eq!(store.port_insert(&b).await.unwrap(), PortInsert::IpTaken(1));
        assert_eq!(store.resource_get("port", "b").await.unwrap(), None);
        assert_eq!(store.ip_list_subnet("s1").await.unwrap().len(), 2);
        assert!(store.mac_insert("n1", "fa:16:3e:00:00:02", "x").await.unwrap());
        store.mac_delete("n1", "fa:16:3e:00:00:02").await.unwrap();

        // the MAC is taken on this network, not on another
        let b = NewPort { mac_address: "fa:16:3e:00:00:01", ips: &b_ips[..1], ..b };
        assert_eq!(store.port_insert(&b).await.unwrap(), PortInsert::MacTaken);
        assert!(store.ip_taken("n1", &["10.0.0.4".into()]).await.unwrap().is_empty());
        let b = NewPort { mac_address: "fa:16:3e:00:00:02", ..b };
        assert_eq!(store.port_insert(&b).await.unwrap(), PortInsert::Done);
        let c = NewPort { id: "b", mac_address: "fa:16:3e:00:00:03", ips: &[], ..b };
        assert_eq!(store.port_insert(&c).await.unwrap(), PortInsert::IdTaken);
        assert!(store.mac_insert("n1", "fa:16:3e:00:00:03", "x").await.unwrap());

        // deleting a port frees its MAC and addresses for the next one
        store.port_delete("a").await.unwrap();
        assert_eq!(store.resource_get("port", "a").await.unwrap(), None);
        assert_eq!(store.ip_list_subnet("s1").await.unwrap(), vec![ip("b", "10.0.0.4")]);
        let (d_ips, d_doc) = (vec![ip("d", "10.0.0.2"), ip("d", "10.0.0.3")], doc("d"));
        let d = NewPort { id: "d", network_id: "n1", project_id: "p1", mac_address: "fa:16:3e:00:00:01", ips: &d_ips, doc: &d_doc };
        assert_eq!(store.port_insert(&d).await.unwrap(), PortInsert::Done);
        db.cleanup().await;
    }
}
