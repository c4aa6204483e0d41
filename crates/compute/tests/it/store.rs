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
        let a = c.keypair_create("p1", "u1", "k", "ssh", None).await.unwrap();
        assert!(a.private_key.is_some());
        let b = c.keypair_create("p1", "u2", "k", "ssh", Some(&a.keypair.public_key)).await.unwrap();
        assert!(b.private_key.is_none());
        assert_eq!(a.keypair.fingerprint, b.keypair.fingerprint);
        assert!(matches!(c.keypair_create("p1", "u1", "k", "ssh", None).await, Err(Error::Conflict(_))));
        assert!(matches!(c.keypair_create("p1", "u1", "x", "ssh", Some("ssh-rsa nonsense")).await, Err(Error::BadRequest(_))));
        assert_eq!(c.keypairs("u1").await.unwrap().len(), 1);
        c.keypair_delete("u1", "k").await.unwrap();
        assert!(matches!(c.keypair("u1", "k").await, Err(Error::NotFound(_))));
        assert!(c.keypair("u2", "k").await.is_ok());
        db.cleanup().await;
    }
}

fn instance(uuid: &str, project: &str, created_at: i64) -> compute::store::InstanceRow {
    let flavor = compute_rpc::FlavorSpec {
        flavorid: "1".into(),
        name: "m1.tiny".into(),
        vcpus: 1,
        memory_mb: 512,
        root_gb: 1,
        ephemeral_gb: 0,
        swap: 0,
        extra_specs: BTreeMap::new(),
    };
    compute::store::InstanceRow {
        reservation_id: "r-1".into(),
        ..compute::store::InstanceRow::new(uuid.into(), &format!("vm-{uuid}"), project, "u1", flavor, "img", created_at)
    }
}

#[tokio::test]
async fn instances_updates_actions_services_and_nodes_on_every_database() {
    use compute::store::instances::Value;
    for db in test_databases().await {
        let c = Compute::new((*db).clone());
        c.migrate().await.unwrap();
        let s = c.store();
        let md: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
        s.instances_insert(&[instance("a", "p1", 10), instance("b", "p1", 20), instance("c", "p2", 30)], &md, "req-1")
            .await
            .unwrap();
        let p1 = s
            .instance_list(&compute::store::InstanceFilter { project_id: Some("p1".into()), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(p1.iter().map(|i| i.uuid.as_str()).collect::<Vec<_>>(), ["b", "a"], "{:?}", db.backend());
        assert_eq!(p1[0].flavor.memory_mb, 512);
        assert_eq!(s.metadata_of(&["a", "c"]).await.unwrap()["c"]["k"], "v");

        // Compare-and-set on the task state: NULL and named states both match.
        let to_net = [("task_state", Value::S(Some("networking".into())))];
        assert!(!s.instance_update("a", Some(&[Some("spawning".into())]), &to_net).await.unwrap());
        assert!(s.instance_update("a", Some(&[None, Some("scheduling".into())]), &to_net).await.unwrap());
        let clear = [("task_state", Value::S(None)), ("vm_state", Value::S(Some("active".into())))];
        assert!(s.instance_update("a", Some(&[Some("networking".into())]), &clear).await.unwrap());
        assert!(s.instance_update("a", Some(&[None]), &[("power_state", Value::I(Some(1)))]).await.unwrap());
        let a = s.instance_get("a").await.unwrap().unwrap();
        assert_eq!((a.vm_state.as_str(), a.task_state.as_deref(), a.power_state), ("active", None, 1));
        let filter = compute::store::InstanceFilter { vm_states: Some(vec!["active".into()]), ..Default::default() };
        assert_eq!(s.instance_list(&filter).await.unwrap().len(), 1);
        assert_eq!(s.instance_usage("p1").await.unwrap(), (2, 2, 1024));

        // Actions and events.
        s.action_event("a", "req-1", "compute__do_build_and_run_instance", "h1", None).await.unwrap();
        s.action_event("a", "req-1", "compute__do_build_and_run_instance", "h1", Some((true, None))).await.unwrap();
        let actions = s.actions("a").await.unwrap();
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0].action, "create");
        let events = s.action_events(actions[0].id).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].result.as_deref(), Some("Success"));

        // Tags, and deletion keeps the row but not its metadata.
        assert!(s.tag_add("a", "t1").await.unwrap());
        assert!(!s.tag_add("a", "t1").await.unwrap());
        assert!(s.instance_mark_deleted("a").await.unwrap());
        assert!(!s.instance_mark_deleted("a").await.unwrap());
        assert!(s.instance_get("a").await.unwrap().unwrap().deleted);
        assert!(s.metadata_of(&["a"]).await.unwrap().is_empty());
        assert!(!s.instance_update("a", None, &to_net).await.unwrap(), "deleted instances do not change");

        // Services and nodes.
        let svc = s.service_ensure("h1", "nova-compute", "compute").await.unwrap();
        assert_eq!(s.service_ensure("h1", "nova-compute", "compute").await.unwrap().uuid, svc.uuid);
        assert!(s.service_heartbeat("h1", "nova-compute").await.unwrap());
        assert!(!s.service_heartbeat("h9", "nova-compute").await.unwrap());
        let info = compute_rpc::NodeInfo {
            host: "h1".into(),
            node: "h1".into(),
            hypervisor_type: "fake".into(),
            hypervisor_version: 1000,
            host_ip: "127.0.0.1".into(),
            cpu_info: serde_json::json!({"arch": "x86_64"}),
            resources: compute_rpc::NodeResources { vcpus: 8, memory_mb: 4096, ..Default::default() },
        };
        let node = s.node_upsert(&svc.uuid, &info).await.unwrap();
        assert_eq!(s.node_upsert(&svc.uuid, &info).await.unwrap().uuid, node.uuid, "node uuids are stable");
        assert_eq!(s.node_get(node.id).await.unwrap().unwrap().info.resources.vcpus, 8);
        assert!(s.service_set(&svc.uuid, Some((true, Some("maintenance".into()))), None).await.unwrap());
        assert!(s.service_get(svc.id).await.unwrap().unwrap().disabled);
        assert!(s.service_delete(&svc.uuid).await.unwrap());
        assert!(s.node_list().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn quotas_aggregates_and_server_groups_on_every_database() {
    use compute::servers::Caller;
    for db in test_databases().await {
        let c = Compute::new((*db).clone());
        c.migrate().await.unwrap();
        let s = c.store();

        // Quotas: user → project → class `default` → built-in.
        assert_eq!(c.quota_limits("p1", None).await.unwrap()["ram"], 51200, "{:?}", db.backend());
        c.quota_class_update("default", &[("ram".to_string(), 4096)].into()).await.unwrap();
        assert_eq!(c.quota_defaults().await.unwrap()["ram"], 4096);
        c.quota_update("p1", None, &[("ram".to_string(), 2048), ("cores".to_string(), -1)].into(), false).await.unwrap();
        c.quota_update("p1", Some("u1"), &[("ram".to_string(), 1024)].into(), false).await.unwrap();
        assert_eq!(c.quota_limits("p1", Some("u1")).await.unwrap()["ram"], 1024);
        assert_eq!(c.quota_limits("p1", Some("u2")).await.unwrap()["ram"], 2048);
        assert_eq!(c.quota_limits("p2", None).await.unwrap()["ram"], 4096);
        assert_eq!(s.quota_users_sum("p1", "ram", None).await.unwrap(), 1024);
        assert!(matches!(c.quota_update("p1", Some("u2"), &[("ram".to_string(), 1025)].into(), false).await, Err(Error::BadRequest(_))));
        assert!(matches!(c.quota_update("p1", None, &[("ram".to_string(), 1000)].into(), false).await, Err(Error::BadRequest(_))));
        s.instances_insert(&[instance("q1", "p1", 1)], &BTreeMap::new(), "req-q").await.unwrap();
        let usage = c.quota_usage("p1", None).await.unwrap();
        assert_eq!((usage["instances"], usage["cores"], usage["ram"]), (1, 1, 512));
        assert_eq!(c.quota_usage("p1", Some("u9")).await.unwrap()["instances"], 0);
        let over = c.quota_check("p1", "u1", &[("ram", 600)]).await.unwrap();
        assert_eq!(over.len(), 1, "the user's 1024 MB are exceeded");
        assert!(c.quota_check("p1", "u2", &[("ram", 600), ("cores", 1000)]).await.unwrap().is_empty());
        c.quota_delete("p1", Some("u1")).await.unwrap();
        assert_eq!(c.quota_limits("p1", Some("u1")).await.unwrap()["ram"], 2048);
        c.quota_delete("p1", None).await.unwrap();
        assert_eq!(c.quota_limits("p1", None).await.unwrap()["ram"], 4096);
        c.keypair_create("p1", "u1", "k", "ssh", None).await.unwrap();
        assert_eq!(s.keypair_count("u1").await.unwrap(), 1);

        // Aggregates: unique names, hosts, metadata merges, zones per host.
        let svc = s.service_ensure("h1", "nova-compute", "compute").await.unwrap();
        assert!(!svc.disabled);
        let a = c.aggregate_create("rack1", Some("az1")).await.unwrap();
        assert_eq!(a.availability_zone(), Some("az1"));
        assert!(matches!(c.aggregate_create("rack1", None).await, Err(Error::Conflict(_))));
        let b = c.aggregate_create("rack2", None).await.unwrap();
        assert!(c.host_zones().await.unwrap().zones.is_empty());
        assert!(matches!(c.aggregate_add_host(a.id, "h9").await, Err(Error::NotFound(_))));
        let a = c.aggregate_add_host(a.id, "h1").await.unwrap();
        assert_eq!(a.hosts, vec!["h1".to_string()]);
        assert!(matches!(c.aggregate_add_host(a.id, "h1").await, Err(Error::Conflict(_))));
        c.aggregate_add_host(b.id, "h1").await.unwrap();
        assert_eq!(c.host_zones().await.unwrap().of("h1"), "az1");
        assert_eq!(c.available_zones().await.unwrap().into_iter().collect::<Vec<_>>(), ["az1"]);
        // h1 is in az1 already: b cannot become az2, but may say az1.
        let to_az2 = BTreeMap::from([("availability_zone".to_string(), Some("az2".to_string()))]);
        assert!(matches!(c.aggregate_set_metadata(b.id, &to_az2).await, Err(Error::BadRequest(m)) if m.contains("['az1']")));
        let meta = BTreeMap::from([("availability_zone".to_string(), Some("az1".to_string())), ("k".to_string(), Some("v".to_string()))]);
        let b2 = c.aggregate_set_metadata(b.id, &meta).await.unwrap();
        assert_eq!(b2.metadata.len(), 2);
        assert!(b2.updated_at.is_some());
        let b3 = c.aggregate_set_metadata(b.id, &BTreeMap::from([("k".to_string(), None)])).await.unwrap();
        assert_eq!(b3.metadata.len(), 1);
        let renamed = c.aggregate_update(a.id, Some("rack-1"), None).await.unwrap();
        assert_eq!(renamed.name, "rack-1");
        assert!(matches!(c.aggregate_update(a.id, Some("rack2"), None).await, Err(Error::Conflict(_))));
        assert!(matches!(c.aggregate_delete(a.id).await, Err(Error::BadRequest(_))));
        c.aggregate_remove_host(a.id, "h1").await.unwrap();
        assert!(matches!(c.aggregate_remove_host(a.id, "h1").await, Err(Error::NotFound(_))));
        c.aggregate_delete(a.id).await.unwrap();
        assert!(matches!(c.aggregate(a.id).await, Err(Error::NotFound(_))));
        assert_eq!(c.aggregates().await.unwrap().len(), 1);

        // Server groups: members, live members with hosts, placement for the scheduler.
        let caller = Caller { user_id: "u1".into(), project_id: "p1".into(), admin: false };
        let g = c.server_group_create(&caller, "web", "anti-affinity", None).await.unwrap();
        assert!(matches!(c.server_group_create(&caller, "x", "sideways", None).await, Err(Error::BadRequest(_))));
        let mut placed = instance("g1", "p1", 2);
        placed.host = Some("h1".into());
        s.instances_insert(&[placed, instance("g2", "p1", 3)], &BTreeMap::new(), "req-g").await.unwrap();
        s.server_group_add_members(&g.uuid, &["g1".to_string(), "g2".to_string()]).await.unwrap();
        assert_eq!(c.server_group(&g.uuid).await.unwrap().members.len(), 2);
        let p = c.group_placement("g2").await.unwrap().unwrap();
        assert_eq!((p.policy.as_str(), p.hosts.clone()), ("anti-affinity", vec!["h1".to_string()]));
        assert!(c.group_placement("q1").await.unwrap().is_none());
        s.instance_mark_deleted("g1").await.unwrap();
        assert_eq!(c.server_group_members(&g.uuid).await.unwrap(), vec!["g2".to_string()]);
        assert_eq!(s.server_group_count("p1", None).await.unwrap(), 1);
        assert_eq!(s.server_group_count("p1", Some("u2")).await.unwrap(), 0);
        assert_eq!(c.server_groups(None).await.unwrap().len(), 1);
        assert!(c.server_groups(Some("p2")).await.unwrap().is_empty());
        c.server_group_delete(&g.uuid).await.unwrap();
        assert!(matches!(c.server_group_delete(&g.uuid).await, Err(Error::NotFound(_))));
        assert!(c.group_placement("g2").await.unwrap().is_none());
        db.cleanup().await;
    }
}

#[tokio::test]
async fn network_info_and_system_metadata_on_every_database() {
    use compute::network::{NetworkRequest, Vif, VifIp};
    use compute::store::{netinfo::NetInfo, sysmeta};
    for db in test_databases().await {
        let c = Compute::new((*db).clone());
        c.migrate().await.unwrap();
        let s = c.store();
        let requested = vec![NetworkRequest { network_id: Some("n1".into()), fixed_ip: Some("10.0.0.5".into()), ..Default::default() }];
        let info = NetInfo { requested: requested.clone(), security_groups: vec!["default".into()], vifs: Vec::new() };
        s.netinfo_insert("i1", &info).await.unwrap();
        assert_eq!(s.netinfo_get("i1").await.unwrap(), Some(info.clone()), "{:?}", db.backend());
        let vif = Vif {
            port_id: "p1".into(),
            network_id: "n1".into(),
            label: "private".into(),
            mac: "fa:16:3e:00:00:01".into(),
            ips: vec![VifIp { address: "10.0.0.5".into(), version: 4, kind: "fixed".into(), subnet_id: Some("s1".into()) }],
            preexisting: false,
            tag: Some("t".into()),
            status: "ACTIVE".into(),
            mtu: Some(1450),
        };
        s.netinfo_set_vifs("i1", std::slice::from_ref(&vif)).await.unwrap();
        s.netinfo_set_groups("i1", &["web".into()]).await.unwrap();
        // An instance recorded without a request gets a row on first write.
        s.netinfo_set_vifs("i2", &[]).await.unwrap();
        let many = s.netinfo_of(&["i1", "i2", "i3"]).await.unwrap();
        assert_eq!(many["i1"].vifs, vec![vif]);
        assert_eq!(many["i1"].requested, requested);
        assert_eq!(many["i1"].security_groups, vec!["web".to_string()]);
        assert!(many["i2"].vifs.is_empty() && !many.contains_key("i3"));

        s.sysmeta_set("i1", sysmeta::AUTO_DISK_CONFIG, Some("True")).await.unwrap();
        s.sysmeta_set("i1", sysmeta::AUTO_DISK_CONFIG, Some("False")).await.unwrap();
        s.sysmeta_set("i1", sysmeta::PASSWORD, Some("secret")).await.unwrap();
        s.sysmeta_set("i1", sysmeta::PASSWORD, None).await.unwrap();
        let meta = s.sysmeta_of(&["i1"]).await.unwrap();
        assert_eq!(meta["i1"], BTreeMap::from([(sysmeta::AUTO_DISK_CONFIG.to_string(), "False".to_string())]));
    }
}

#[tokio::test]
async fn block_device_mappings_on_every_database() {
    use compute::store::bdm::Bdm;
    for db in test_databases().await {
        let c = Compute::new((*db).clone());
        c.migrate().await.unwrap();
        let s = c.store();
        let mapping = |id: &str, uuid: &str, volume: Option<&str>, boot: Option<i64>, created: i64| Bdm {
            id: id.into(),
            instance_uuid: uuid.into(),
            volume_id: volume.map(str::to_string),
            boot_index: boot,
            source_type: "volume".into(),
            destination_type: "volume".into(),
            created_at: created,
            ..Default::default()
        };
        let data = Bdm { tag: Some("data".into()), delete_on_termination: true, ..mapping("b2", "i1", Some("v2"), None, 1) };
        assert!(s.bdm_insert(&data).await.unwrap(), "{:?}", db.backend());
        assert!(s.bdm_insert(&mapping("b1", "i1", Some("v1"), Some(0), 2)).await.unwrap());
        // Volumes made from images have none yet; two such rows are fine.
        assert!(s.bdm_insert(&mapping("b3", "i2", None, Some(0), 1)).await.unwrap());
        assert!(s.bdm_insert(&mapping("b4", "i2", None, None, 2)).await.unwrap());
        // One volume is attached to an instance once.
        assert!(!s.bdm_insert(&mapping("b5", "i1", Some("v2"), None, 3)).await.unwrap(), "{:?}", db.backend());

        let list = s.bdm_list("i1").await.unwrap();
        assert_eq!(list.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), vec!["b1", "b2"], "root first");
        assert_eq!(list[1], data);
        let mut root = list[0].clone();
        root.attachment_id = Some("a1".into());
        root.device_name = Some("/dev/vda".into());
        root.connection_info = Some(serde_json::json!({"driver_volume_type": "local", "data": {"device_path": "/v/x"}}));
        s.bdm_update(&root).await.unwrap();
        s.bdm_set_delete_on_termination("b1", true).await.unwrap();
        root.delete_on_termination = true;
        let all = s.bdms_of(&["i1", "i2", "i3"]).await.unwrap();
        assert_eq!(all["i1"][0], root);
        assert_eq!(all["i2"].len(), 2);
        assert!(!all.contains_key("i3"));
        s.bdm_delete("b2").await.unwrap();
        assert_eq!(s.bdm_list("i1").await.unwrap(), vec![root]);
    }
}

#[tokio::test]
async fn migrations_on_every_database() {
    use compute::store::{MigrationFilter, MigrationRow};
    for db in test_databases().await {
        let c = Compute::new((*db).clone());
        c.migrate().await.unwrap();
        let s = c.store();
        let row = |uuid: &str, instance: &str, host: &str, created_at: i64| MigrationRow {
            id: 0,
            uuid: uuid.into(),
            instance_uuid: instance.into(),
            project_id: "p1".into(),
            user_id: "u1".into(),
            migration_type: "resize".into(),
            status: "migrating".into(),
            source_compute: Some(host.into()),
            source_node: Some(host.into()),
            dest_compute: Some(host.into()),
            dest_node: Some(host.into()),
            dest_host: None,
            old_flavorid: Some("1".into()),
            new_flavorid: Some("2".into()),
            created_at,
            updated_at: None,
        };
        let first = s.migration_create(&row("m1", "i1", "h1", 100)).await.unwrap();
        let second = s.migration_create(&row("m2", "i2", "h2", 200)).await.unwrap();
        assert!(second.id > first.id, "{:?}", db.backend());
        assert_eq!(first.old_flavorid.as_deref(), Some("1"));
        assert!(s.migration_set_status("m1", &["migrating"], "finished").await.unwrap());
        assert!(!s.migration_set_status("m1", &["migrating"], "error").await.unwrap(), "guarded by the current status");
        assert!(s.migration_get("m1").await.unwrap().unwrap().updated_at.is_some());
        let all = s.migration_list(&MigrationFilter::default()).await.unwrap();
        assert_eq!(all.iter().map(|m| m.uuid.as_str()).collect::<Vec<_>>(), ["m2", "m1"]);
        let by_host = MigrationFilter { host: Some("h1".into()), status: Some("finished".into()), ..Default::default() };
        assert_eq!(s.migration_list(&by_host).await.unwrap().len(), 1);
        let page = MigrationFilter { marker_id: Some(second.id), limit: Some(1), ..Default::default() };
        assert_eq!(s.migration_list(&page).await.unwrap()[0].uuid, "m1");
        let recent = MigrationFilter { changes_since: Some(150), changes_before: Some(250), ..Default::default() };
        assert_eq!(s.migration_list(&recent).await.unwrap().iter().map(|m| m.uuid.as_str()).collect::<Vec<_>>(), ["m2"]);
    }
}
