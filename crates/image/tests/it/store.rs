//! Datastore and service tests on every database backend.

use std::collections::BTreeMap;

use bytes::Bytes;
use db::testing::test_databases;
use image::{
    Caller, Image, ImageConfig,
    adapter::ByteStream,
    model::ListQuery,
    store::{ImageRow, MemberRow, Store},
};

fn row(id: &str, owner: &str, visibility: &str, created_at: i64) -> ImageRow {
    ImageRow {
        id: id.into(),
        name: Some(format!("name-{id}")),
        status: "queued".into(),
        visibility: visibility.into(),
        protected: false,
        os_hidden: false,
        owner: Some(owner.into()),
        disk_format: Some("raw".into()),
        container_format: Some("bare".into()),
        size: None,
        virtual_size: None,
        checksum: None,
        os_hash_algo: None,
        os_hash_value: None,
        min_disk: 0,
        min_ram: 0,
        store_id: None,
        location: None,
        created_at,
        updated_at: created_at,
        properties: BTreeMap::from([("os_distro".to_string(), "debian ✓".to_string())]),
        tags: vec!["a".into(), "b".into()],
    }
}

fn bytes(data: &'static [u8]) -> ByteStream {
    Box::pin(futures::stream::iter([Ok(Bytes::from_static(data))]))
}

#[tokio::test]
async fn datastore_round_trips_on_every_backend() {
    for db in test_databases().await {
        let store = Store::new((*db).clone());
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        let a = row("img-a", "p1", "private", 1);
        store.image_insert(&a).await.unwrap();
        assert!(matches!(store.image_insert(&a).await, Err(image::Error::Conflict(_))));
        assert_eq!(store.image_get("img-a").await.unwrap().unwrap(), a);
        assert_eq!(store.image_get("nope").await.unwrap(), None);

        store.image_insert(&row("img-b", "p2", "shared", 2)).await.unwrap();
        store.image_insert(&row("img-c", "p2", "public", 3)).await.unwrap();
        store.image_insert(&row("img-d", "p2", "private", 4)).await.unwrap();
        let member = MemberRow {
            image_id: "img-b".into(),
            member_id: "p1".into(),
            status: "pending".into(),
            created_at: 5,
            updated_at: 5,
        };
        store.member_insert(&member).await.unwrap();
        assert!(matches!(store.member_insert(&member).await, Err(image::Error::Conflict(_))));
        let mut seen: Vec<String> = store.image_list(Some("p1")).await.unwrap().into_iter().map(|i| i.id).collect();
        seen.sort();
        assert_eq!(seen, ["img-a", "img-b", "img-c"]);
        assert_eq!(store.image_list(None).await.unwrap().len(), 4);
        let listed = store.image_list(Some("p1")).await.unwrap();
        assert!(listed.iter().all(|i| i.tags == ["a", "b"] && i.properties["os_distro"] == "debian ✓"));

        assert!(store.member_update("img-b", "p1", "accepted").await.unwrap());
        assert_eq!(store.member_statuses("p1").await.unwrap()["img-b"], "accepted");
        assert_eq!(store.member_list("img-b").await.unwrap().len(), 1);

        let mut changed = a.clone();
        changed.name = None;
        changed.protected = true;
        changed.tags = vec!["z".into()];
        changed.properties.clear();
        assert!(store.image_update(&changed, "queued").await.unwrap());
        assert!(!store.image_update(&changed, "active").await.unwrap());
        let got = store.image_get("img-a").await.unwrap().unwrap();
        assert_eq!((got.name, got.protected, got.tags, got.properties.len()), (None, true, vec!["z".to_string()], 0));

        assert!(store.image_transition("img-a", "queued", "saving").await.unwrap());
        assert!(!store.image_transition("img-a", "queued", "saving").await.unwrap());
        assert_eq!(store.project_usage("p2").await.unwrap(), (3, 0));

        store.tag_add("img-c", "new").await.unwrap();
        store.tag_add("img-c", "new").await.unwrap();
        assert!(store.tag_delete("img-c", "new").await.unwrap());
        assert!(!store.tag_delete("img-c", "new").await.unwrap());

        assert!(store.image_delete("img-b").await.unwrap());
        assert!(!store.image_delete("img-b").await.unwrap());
        assert!(store.member_list("img-b").await.unwrap().is_empty());
        eprintln!("datastore passed on {:?}", db.backend());
        db.cleanup().await;
    }
}

#[tokio::test]
async fn service_upload_and_visibility_on_every_backend() {
    for db in test_databases().await {
        let dir = tempfile::tempdir().unwrap();
        let svc = Image::new((*db).clone(), ImageConfig::new(dir.path())).unwrap();
        svc.migrate().await.unwrap();
        let owner = Caller { project_id: Some("p1".into()), is_admin: false };
        let other = Caller { project_id: Some("p2".into()), is_admin: false };
        let img = svc.create(row("11111111-2222-3333-4444-555555555555", "p1", "private", 1)).await.unwrap();
        svc.upload(&img, bytes(b"0123456789"), None, None).await.unwrap();
        let active = svc.get_visible(&owner, &img.id).await.unwrap();
        assert_eq!((active.status.as_str(), active.size), ("active", Some(10)));
        assert_eq!(active.checksum.as_deref(), Some("781e5e245d69b566979b86e28d23f2c7"));
        assert!(matches!(svc.get_visible(&other, &img.id).await, Err(image::Error::NotFound(_))));
        assert!(matches!(svc.upload(&active, bytes(b"again"), None, None).await, Err(image::Error::Conflict(_))));

        // A crash mid-upload: recover() puts the image back to queued.
        let stuck = svc.create(row("21111111-2222-3333-4444-555555555555", "p1", "private", 2)).await.unwrap();
        svc.store().image_transition(&stuck.id, "queued", "saving").await.unwrap();
        svc.recover().await.unwrap();
        assert_eq!(svc.get_visible(&owner, &stuck.id).await.unwrap().status, "queued");

        let q = ListQuery::parse(&api_common::query::QueryPairs::parse(Some("status=active"))).unwrap();
        let (page, more) = svc.list(&owner, &q).await.unwrap();
        assert_eq!((page.len(), more), (1, false));
        let (page, _) = svc.list(&other, &q).await.unwrap();
        assert!(page.is_empty());
        svc.delete(&active).await.unwrap();
        eprintln!("service passed on {:?}", db.backend());
        db.cleanup().await;
    }
}
