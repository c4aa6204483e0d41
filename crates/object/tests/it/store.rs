//! The account and container databases on every backend.

use std::collections::BTreeMap;

use db::testing::test_databases;
use object::store::{ObjectRow, Page, Store};

fn row(container: &str, name: &str, size: i64, ts: &str) -> ObjectRow {
    ObjectRow {
        account: "AUTH_p".into(),
        container: container.into(),
        name: name.into(),
        size,
        etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
        content_type: "text/plain".into(),
        last_modified: 1_700_000_000_000_000,
        timestamp: ts.into(),
        metadata: BTreeMap::from([("k".to_string(), "✓ v".to_string())]),
        policy_index: 0,
    }
}

#[tokio::test]
async fn accounts_containers_objects_on_every_database() {
    for t in test_databases().await {
        let db = db::Database::connect(t.url()).await.unwrap();
        let store = Store::new(db.clone());
        store.migrate().await.unwrap();

        let a = store.account_ensure("AUTH_p", 1).await.unwrap();
        assert_eq!(store.account_ensure("AUTH_p", 2).await.unwrap(), a, "idempotent");
        store.account_set_metadata("AUTH_p", &BTreeMap::from([("x".into(), "y".into())]), 3).await.unwrap();
        assert_eq!(store.account_get("AUTH_p").await.unwrap().unwrap().metadata["x"], "y");

        let long = "c".repeat(256);
        assert!(store.container_create("AUTH_p", &long, &BTreeMap::new(), 0, 1).await.unwrap());
        assert!(store.container_create("AUTH_p", "B", &BTreeMap::new(), 0, 1).await.unwrap());
        assert!(store.container_create("AUTH_p", "b", &BTreeMap::new(), 0, 1).await.unwrap(), "names are case-sensitive");
        assert!(!store.container_create("AUTH_p", "b", &BTreeMap::new(), 0, 1).await.unwrap());

        let name = format!("dir/{}", "o".repeat(1000));
        assert_eq!(store.object_put(&row("b", &name, 10, "1.000001")).await.unwrap(), None);
        let old = store.object_put(&row("b", &name, 4, "2.000000")).await.unwrap().unwrap();
        assert_eq!(old.timestamp, "1.000001");
        store.object_put(&row("b", "a", 5, "1.0")).await.unwrap();
        assert!(store.object_put(&row("missing", "a", 5, "1.0")).await.is_err(), "container must exist");
        let c = store.container_get("AUTH_p", "b").await.unwrap().unwrap();
        assert_eq!((c.object_count, c.bytes_used), (2, 9));
        assert_eq!(store.account_usage("AUTH_p").await.unwrap(), (3, 2, 9));
        assert_eq!(store.object_get("AUTH_p", "b", &name).await.unwrap().unwrap(), row("b", &name, 4, "2.000000"));

        let page = |after, reverse| Page { after, from: "", reverse, limit: 10 };
        let names: Vec<_> =
            store.object_page("AUTH_p", "b", &page(None, false)).await.unwrap().into_iter().map(|o| o.name).collect();
        assert_eq!(names, vec!["a".to_string(), name.clone()]);
        let rev: Vec<_> =
            store.object_page("AUTH_p", "b", &page(Some(name.as_str()), true)).await.unwrap().into_iter().map(|o| o.name).collect();
        assert_eq!(rev, vec!["a".to_string()]);
        let containers: Vec<_> =
            store.container_page("AUTH_p", &page(None, false)).await.unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(containers, vec!["B".to_string(), "b".to_string(), long.clone()], "byte order");

        assert!(matches!(store.container_delete("AUTH_p", "b").await, Err(object::Error::Conflict(_))));
        assert!(store.object_set_metadata("AUTH_p", "b", "a", "x/y", &BTreeMap::new(), 5).await.unwrap());
        assert_eq!(store.object_get("AUTH_p", "b", "a").await.unwrap().unwrap().content_type, "x/y");
        assert!(store.object_delete("AUTH_p", "b", "a").await.unwrap().is_some());
        assert!(store.object_delete("AUTH_p", "b", "a").await.unwrap().is_none());
        store.object_delete("AUTH_p", "b", &name).await.unwrap();

        // Expiry: due objects are found with their container's name; a version condition keeps newer data.
        let mut due = row("b", "due", 3, "3.0");
        due.metadata.insert(object::store::DELETE_AT_KEY.into(), "100".into());
        store.object_put(&due).await.unwrap();
        let mut later = row("b", "later", 3, "3.0");
        later.metadata.insert(object::store::DELETE_AT_KEY.into(), "200".into());
        store.object_put(&later).await.unwrap();
        let found: Vec<_> = store.object_expired_page(150, 10).await.unwrap().into_iter().map(|o| (o.container, o.name)).collect();
        assert_eq!(found, vec![("b".to_string(), "due".to_string())]);
        assert_eq!(store.object_expired_page(250, 10).await.unwrap().len(), 2);
        assert!(store.object_set_metadata("AUTH_p", "b", "later", "t", &BTreeMap::new(), 6).await.unwrap());
        assert_eq!(store.object_expired_page(250, 10).await.unwrap().len(), 1, "a POST without X-Delete-At clears it");
        assert!(store.object_delete_version("AUTH_p", "b", "due", Some("9.9")).await.unwrap().is_none());
        assert!(store.object_delete_version("AUTH_p", "b", "due", Some("3.0")).await.unwrap().is_some());
        store.object_delete("AUTH_p", "b", "later").await.unwrap();
        let c = store.container_get("AUTH_p", "b").await.unwrap().unwrap();
        assert_eq!((c.object_count, c.bytes_used), (0, 0));
        store.container_delete("AUTH_p", "b").await.unwrap();
        assert!(matches!(store.container_delete("AUTH_p", "b").await, Err(object::Error::NotFound(_))));
        db.close().await;
        t.cleanup().await;
    }
}
