//! The datastore on every database backend: documents, compare-and-swap status changes, project moves and the
//! services' reports.

use db::testing::test_databases;
use serde_json::json;
use volume::store::Store;

#[tokio::test]
async fn datastore_round_trips_and_status_swaps_on_every_backend() {
    for db in test_databases().await {
        let store = Store::new((*db).clone());
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        let doc = json!({"id": "v1", "name": "ünïcode", "status": "creating", "project_id": "p1"});
        assert!(store.resource_insert("volume", "v1", "p1", "", &doc).await.unwrap());
        assert!(!store.resource_insert("volume", "v1", "p1", "", &doc).await.unwrap());
        assert_eq!(store.resource_get("volume", "v1").await.unwrap(), Some(doc.clone()));
        assert!(store.resource_insert("snapshot", "s1", "p1", "v1", &json!({"id": "s1", "status": "available"})).await.unwrap());
        assert_eq!(store.resource_list_by_parent("snapshot", "v1").await.unwrap().len(), 1);
        assert_eq!(store.resource_list("volume", Some("p1")).await.unwrap().len(), 1);
        assert!(store.resource_list("volume", Some("p2")).await.unwrap().is_empty());

        // Only the writer that saw the current status wins.
        let available = json!({"id": "v1", "status": "available", "project_id": "p1"});
        assert!(store.resource_transition("volume", "v1", "creating", &available).await.unwrap());
        let deleting = json!({"id": "v1", "status": "deleting", "project_id": "p1"});
        assert!(!store.resource_transition("volume", "v1", "creating", &deleting).await.unwrap());
        assert!(store.resource_transition("volume", "v1", "available", &deleting).await.unwrap());

        assert!(store.resource_set_project("volume", "v1", "p2", &json!({"id": "v1", "status": "available"})).await.unwrap());
        assert_eq!(store.resource_list("volume", Some("p2")).await.unwrap().len(), 1);
        assert!(store.resource_delete("volume", "v1").await.unwrap());
        assert!(!store.resource_delete("volume", "v1").await.unwrap());

        store.service_upsert("cinder-volume", "h@file", &json!({"free_capacity_gb": 1.0})).await.unwrap();
        store.service_upsert("cinder-volume", "h@file", &json!({"free_capacity_gb": 2.0})).await.unwrap();
        assert!(store.service_set_body("cinder-volume", "h@file", &json!({"disabled": true})).await.unwrap());
        let rows = store.service_list().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].body, json!({"disabled": true}));
        db.cleanup().await;
    }
}

#[tokio::test]
async fn group_documents_on_every_backend() {
    for db in test_databases().await {
        let store = Store::new((*db).clone());
        store.migrate().await.unwrap();
        // A group snapshot is listed under its group; an encryption record is keyed by its volume type.
        let gs = json!({"id": "gs1", "group_id": "g1", "status": "creating", "project_id": "p1"});
        assert!(store.resource_insert("group", "g1", "p1", "", &json!({"id": "g1", "status": "available"})).await.unwrap());
        assert!(store.resource_insert("group_snapshot", "gs1", "p1", "g1", &gs).await.unwrap());
        assert!(store.resource_insert("encryption", "t1", "", "t1", &json!({"encryption_id": "e1", "status": "active"})).await.unwrap());
        assert_eq!(store.resource_list_by_parent("group_snapshot", "g1").await.unwrap(), vec![gs.clone()]);
        assert_eq!(store.resource_list("group", Some("p1")).await.unwrap().len(), 1);
        let done = json!({"id": "gs1", "group_id": "g1", "status": "available", "project_id": "p1"});
        assert!(store.resource_transition("group_snapshot", "gs1", "creating", &done).await.unwrap());
        assert!(!store.resource_transition("group_snapshot", "gs1", "creating", &gs).await.unwrap());
        assert_eq!(store.resource_get("encryption", "t1").await.unwrap().unwrap()["encryption_id"], "e1");
        assert!(store.resource_delete("encryption", "t1").await.unwrap());
        db.cleanup().await;
    }
}
