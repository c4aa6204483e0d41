//! Ring changes on a running store: a rebalanced ring file is loaded, objects stay readable from handoffs while
//! their data moves, and the replicator's pass moves every data file to its partition's primaries. Storage
//! policies: each has its ring; a container keeps the policy it was created in.

use bytes::Bytes;
use test_utils::TestCloud;

use crate::http::{account_of, call};
use futures::TryStreamExt as _;
use object::{
    ObjectConfig, ObjectStore,
    ring::{Device, RingBuilder, hours_now},
    server::{LocalServer, ObjectServer},
    service::PutRequest,
};

async fn store(dir: &std::path::Path) -> (ObjectStore, ObjectConfig, db::testing::TestDb) {
    let t = db::testing::test_database(db::Backend::Sqlite).await.unwrap();
    let db = db::Database::connect(t.url()).await.unwrap();
    let mut config = ObjectConfig::new(dir);
    config.part_power = 6;
    let store = ObjectStore::new(db, &config).unwrap();
    store.migrate().await.unwrap();
    (store, config, t)
}

async fn put(store: &ObjectStore, name: &str) {
    let data = Bytes::from(format!("body of {name}"));
    let body: object::server::ByteStream = Box::pin(futures::stream::once(async move { Ok::<_, std::io::Error>(data) }));
    store.put_object("AUTH_p", "c", name, body, PutRequest { content_type: "text/plain".into(), ..Default::default() }).await.unwrap();
}

async fn read(store: &ObjectStore, name: &str) -> String {
    let row = store.object("AUTH_p", "c", name).await.unwrap();
    let chunks: Vec<Bytes> = store.read_object(&row, None).await.unwrap().try_collect().await.unwrap();
    String::from_utf8(chunks.concat()).unwrap()
}

/// Data files per device, as the storage server sees them.
async fn files(server: &LocalServer, device: &str) -> usize {
    let mut n = 0;
    for p in server.partitions(device, 0).await.unwrap() {
        n += server.data_files(device, 0, p).await.unwrap().len();
    }
    n
}

/// Rewrites the ring file the way `stratus object ring` does.
fn edit_ring(config: &ObjectConfig, edit: impl FnOnce(&mut RingBuilder)) {
    let path = config.ring_file();
    let mut b = RingBuilder::load(&path).unwrap();
    edit(&mut b);
    b.rebalance(hours_now()).unwrap();
    // The file's modification time must differ from the one already loaded.
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.save(&path).unwrap();
}

#[tokio::test]
async fn a_rebalanced_ring_is_loaded_and_data_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, config, _db) = store(dir.path()).await;
    assert!(config.ring_file().exists(), "the first start writes the ring file");
    assert!(!store.reload_ring().unwrap(), "an unchanged file is not reloaded");
    store.put_container("AUTH_p", "c", None, &[]).await.unwrap();
    let names: Vec<String> = (0..60).map(|i| format!("obj-{i}")).collect();
    for n in &names {
        put(&store, n).await;
    }
    let server = LocalServer::new(config.devices_dir.clone());
    assert_eq!(files(&server, "d1").await, 60);

    edit_ring(&config, |b| {
        b.add_device(Device::parse("r1z2-127.0.0.1:6200/d2", 100.0).unwrap()).unwrap();
        b.add_device(Device::parse("r1z3-127.0.0.1:6200/d3", 100.0).unwrap()).unwrap();
    });
    assert_eq!(store.ring().devices().len(), 1, "the running store keeps its ring until it checks the file");
    assert!(store.reload_ring().unwrap());
    assert_eq!(store.ring().devices().len(), 3);
    for n in &names {
        assert_eq!(read(&store, n).await, format!("body of {n}"), "readable from a handoff before the data moves");
    }

    let moved = store.relocate().await.unwrap();
    let (d1, d2, d3) = (files(&server, "d1").await, files(&server, "d2").await, files(&server, "d3").await);
    assert_eq!(d1 + d2 + d3, 60, "every data file exists exactly once");
    assert_eq!(moved, d2 + d3);
    assert!(d2 > 0 && d3 > 0 && d1 < 60, "data spread over the new devices: {d1}/{d2}/{d3}");
    let ring = store.ring();
    for device in ["d1", "d2", "d3"] {
        for p in server.partitions(device, 0).await.unwrap() {
            if server.data_files(device, 0, p).await.unwrap().is_empty() {
                continue;
            }
            assert_eq!(ring.nodes(p)[0].name, device, "partition {p} lives on its primary");
        }
    }
    for n in &names {
        assert_eq!(read(&store, n).await, format!("body of {n}"));
    }
    assert_eq!(store.relocate().await.unwrap(), 0, "nothing left to move");

    // A device marked for removal is drained by the next rebalance and pass.
    edit_ring(&config, |b| {
        b.remove("/d1").unwrap();
    });
    assert!(store.reload_ring().unwrap());
    store.relocate().await.unwrap();
    assert_eq!(files(&server, "d1").await, 0);
    assert_eq!(files(&server, "d2").await + files(&server, "d3").await, 60);
    for n in &names {
        assert_eq!(read(&store, n).await, format!("body of {n}"));
    }
    store.remove_object("AUTH_p", "c", "obj-7").await.unwrap();
    assert_eq!(files(&server, "d2").await + files(&server, "d3").await, 59, "a delete removes the data");

    // A broken ring file keeps the ring in use.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(config.ring_file(), "{").unwrap();
    assert!(store.reload_ring().is_err());
    assert_eq!(read(&store, "obj-8").await, "body of obj-8");
}

#[tokio::test]
async fn storage_policies_choose_the_ring_and_the_data_directory() {
    let devices = tempfile::tempdir().unwrap();
    let root = devices.path().to_path_buf();
    let cloud = TestCloud::start_with(|c| {
        c.object.devices_dir = Some(root.clone());
        c.object.policies = vec![
            object::policy::StoragePolicy { index: 0, name: "silver".into(), aliases: vec![], default: true, deprecated: false },
            object::policy::StoragePolicy { index: 1, name: "gold".into(), aliases: vec!["yellow".into()], default: false, deprecated: false },
            object::policy::StoragePolicy { index: 2, name: "bronze".into(), aliases: vec![], default: false, deprecated: true },
        ];
    })
    .await;
    let m = &cloud.member;
    let acct = account_of(m);
    let info = call(&cloud, &cloud.anonymous, "GET", "/object-store/info", vec![], &[]).await.json();
    assert_eq!(
        info["swift"]["policies"],
        serde_json::json!([{"name": "silver", "aliases": "silver", "default": true}, {"name": "gold", "aliases": "gold, yellow"}])
    );

    let r = call(&cloud, m, "PUT", &format!("{acct}/g"), vec![], &[("X-Storage-Policy", "Yellow")]).await;
    assert_eq!(r.status, 201);
    assert_eq!(call(&cloud, m, "HEAD", &format!("{acct}/g"), vec![], &[]).await.h("x-storage-policy"), "gold");
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/g"), vec![], &[("X-Storage-Policy", "gold")]).await.status, 202);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/g"), vec![], &[]).await.status, 202, "no header keeps the policy");
    let r = call(&cloud, m, "PUT", &format!("{acct}/g"), vec![], &[("X-Storage-Policy", "silver")]).await;
    assert_eq!(r.status, 409, "a container keeps its policy");
    let r = call(&cloud, m, "PUT", &format!("{acct}/x"), vec![], &[("X-Storage-Policy", "platinum")]).await;
    assert_eq!((r.status, r.text().contains("Invalid X-Storage-Policy 'platinum'")), (400, true), "{}", r.text());
    let r = call(&cloud, m, "PUT", &format!("{acct}/x"), vec![], &[("X-Storage-Policy", "bronze")]).await;
    assert_eq!((r.status, r.text().contains("deprecated")), (400, true), "{}", r.text());
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/s"), vec![], &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "HEAD", &format!("{acct}/s"), vec![], &[]).await.h("x-storage-policy"), "silver");

    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/g/o"), b"golden".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "PUT", &format!("{acct}/s/o"), b"silvery!".to_vec(), &[]).await.status, 201);
    assert_eq!(call(&cloud, m, "GET", &format!("{acct}/g/o"), vec![], &[]).await.text(), "golden");
    let server = LocalServer::new(root.clone());
    let count = |policy: u32| {
        let server = server.clone();
        async move {
            let mut n = 0;
            for p in server.partitions("d1", policy).await.unwrap() {
                n += server.data_files("d1", policy, p).await.unwrap().len();
            }
            n
        }
    };
    assert_eq!((count(0).await, count(1).await), (1, 1), "each policy's data under its own directory");
    assert!(root.join("d1/objects-1").is_dir());

    let a = call(&cloud, m, "HEAD", &acct, vec![], &[]).await;
    assert_eq!(a.h("x-account-storage-policy-gold-object-count"), "1");
    assert_eq!(a.h("x-account-storage-policy-gold-bytes-used"), "6");
    assert_eq!(a.h("x-account-storage-policy-silver-bytes-used"), "8");
    assert_eq!(a.h("x-account-storage-policy-silver-container-count"), "1");
    assert_eq!(a.h("x-account-bytes-used"), "14");
    assert_eq!(call(&cloud, m, "DELETE", &format!("{acct}/g/o"), vec![], &[]).await.status, 204);
    assert_eq!(count(1).await, 0);
    cloud.shutdown().await;
}
