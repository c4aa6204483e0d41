//! The compute datastore on every database backend: default flavors, flavor constraints, extra specs, access,
//! key pairs per user.

use std::collections::BTreeMap;

use compute::{
    Compute, Error,
    service::{FlavorFilter, NewFlavor, Viewer},
};
use db::testing::test_databases;

fn flavor(id: Option<&str>, name: &str, public: bool) -> NewFlavor {
    NewFlavor {
        id: id.map(str::to_string),
        name: name.into(),
        memory_mb: 64,
        vcpus: 1,
        root_gb: 0,
        ephemeral_gb: 0,
        swap: 0,
        rxtx_factor: 1.5,
        is_public: public,
        description: None,
    }
}

#[tokio::test]
async fn flavors_specs_access_and_keypairs_on_every_database() {
    for db in test_databases().await {
        let c = Compute::new((*db).clone());
        c.migrate().await.unwrap();
        c.migrate().await.unwrap();
        let admin = Viewer { admin: true, project_id: Some("padmin".into()) };
        let user = Viewer { admin: false, project_id: Some("p1".into()) };

        // Default flavors come once with the schema.
        let all = c.flavors(&admin, &FlavorFilter::default()).await.unwrap();
        assert!(all.iter().any(|f| f.flavorid == "1" && f.name == "m1.tiny" && f.memory_mb == 512), "{:?}", db.backend());
        assert!(all.iter().any(|f| f.flavorid == "42" && f.name == "m1.nano"));
        let n = all.len();

        let private = c.flavor_create(flavor(Some("p-1"), "private", false)).await.unwrap();
        assert!(!private.is_public);
        let stored = c.flavor(&admin, "p-1").await.unwrap();
        assert_eq!(stored.rxtx_factor, 1.5);
        assert!(matches!(c.flavor_create(flavor(Some("p-1"), "other", true)).await, Err(Error::Conflict(m)) if m.contains("ID p-1")));
        assert!(matches!(c.flavor_create(flavor(None, "private", true)).await, Err(Error::Conflict(m)) if m.contains("name private")));
        let auto = c.flavor_create(flavor(None, "auto", true)).await.unwrap();
        assert_eq!(auto.flavorid.len(), 36);

        // Private flavors: invisible to other projects until shared.
        assert!(matches!(c.flavor(&user, "p-1").await, Err(Error::NotFound(_))));
        assert_eq!(c.flavors(&admin, &FlavorFilter::default()).await.unwrap().len(), n + 2);
        let public_only = FlavorFilter { is_public: Some(true), ..Default::default() };
        assert!(!c.flavors(&user, &public_only).await.unwrap().iter().any(|f| f.flavorid == "p-1"));
        assert_eq!(c.access_add("p-1", "p1").await.unwrap(), vec!["p1".to_string()]);
        assert!(matches!(c.access_add("p-1", "p1").await, Err(Error::Conflict(_))));
        assert!(matches!(c.access_add("1", "p1").await, Err(Error::Conflict(_))));
        assert!(c.flavors(&user, &public_only).await.unwrap().iter().any(|f| f.flavorid == "p-1"));
        assert!(c.flavor(&user, "p-1").await.is_ok());
        assert!(c.access_remove("p-1", "p1").await.unwrap().is_empty());
        assert!(matches!(c.access_remove("p-1", "p1").await, Err(Error::NotFound(_))));
        assert!(matches!(c.access_list("1").await, Err(Error::NotFound(_))));

        let big = FlavorFilter { is_public: None, min_ram: Some(8192), min_disk: Some(80) };
        let ids: Vec<_> = c.flavors(&admin, &big).await.unwrap().into_iter().map(|f| f.flavorid).collect();
        assert_eq!(ids, vec!["4", "5"]);

        // Extra specs replace by key and go with the flavor.
        let mut specs = BTreeMap::from([("hw:cpu_policy".to_string(), "dedicated".to_string())]);
        c.extra_specs_set("p-1", &specs).await.unwrap();
        specs.insert("hw:cpu_policy".into(), "shared".into());
        specs.insert("k".into(), "v".into());
        c.extra_specs_set("p-1", &specs).await.unwrap();
        assert_eq!(c.extra_specs("p-1").await.unwrap(), specs);
        c.extra_spec_delete("p-1", "k").await.unwrap();
        assert!(matches!(c.extra_spec("p-1", "k").await, Err(Error::NotFound(_))));
        c.access_add("p-1", "p2").await.unwrap();
        c.flavor_delete("p-1").await.unwrap();
        assert!(matches!(c.flavor_delete("p-1").await, Err(Error::NotFound(_))));
        assert!(c.store().extra_specs("p-1").await.unwrap().is_empty());
        assert!(c.store().access_list("p-1").await.unwrap().is_empty());

        // Key pairs belong to users: the same name for two users, not twice for one.
        let a = c.keypair_create("u1", "k", "ssh", None).await.unwrap();
        assert!(a.private_key.is_some());
        let b = c.keypair_create("u2", "k", "ssh", Some(&a.keypair.public_key)).await.unwrap();
        assert!(b.private_key.is_none());
        assert_eq!(a.keypair.fingerprint, b.keypair.fingerprint);
        assert!(matches!(c.keypair_create("u1", "k", "ssh", None).await, Err(Error::Conflict(_))));
        assert!(matches!(c.keypair_create("u1", "x", "ssh", Some("ssh-rsa nonsense")).await, Err(Error::BadRequest(_))));
        assert_eq!(c.keypairs("u1").await.unwrap().len(), 1);
        c.keypair_delete("u1", "k").await.unwrap();
        assert!(matches!(c.keypair("u1", "k").await, Err(Error::NotFound(_))));
        assert!(c.keypair("u2", "k").await.is_ok());
        db.cleanup().await;
    }
}
