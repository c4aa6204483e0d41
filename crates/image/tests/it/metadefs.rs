//! Metadata definitions: namespaces and their contents over HTTP, and the datastore on every backend.

use db::testing::test_databases;
use image::store::{AssociationRow, ItemRow, NamespaceRow, Store};
use reqwest::Method;
use serde_json::{Value, json};
use test_utils::TestCloud;

use crate::{project_of, raw};

const NS: &str = "/image/v2/metadefs/namespaces";

fn names(list: &Value, key: &str) -> Vec<String> {
    list[key].as_array().expect(key).iter().map(|i| i["name"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn namespaces_life_cycle_visibility_and_protection() {
    let cloud = TestCloud::start().await;
    let types = cloud.member.get("/image/v2/metadefs/resource_types").await;
    assert_eq!(types.status, 200, "{}", types.text);
    let rt = names(&types.json(), "resource_types");
    assert!(rt.contains(&"OS::Glance::Image".to_string()), "{rt:?}");

    let body = json!({
        "namespace": "OS::Test::Public", "display_name": "Public", "description": "d", "visibility": "public",
        "protected": true, "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "hw_"}],
        "properties": {"cpu": {"title": "CPU", "type": "integer"}},
        "objects": [{"name": "obj", "properties": {"x": {"title": "X", "type": "string"}}}],
        "tags": [{"name": "t1"}],
    });
    // Only admins write; a denied create leaves nothing behind.
    assert_eq!(cloud.member.post(NS, &body).await.status, 403);
    assert_eq!(cloud.admin.get(&format!("{NS}/OS::Test::Public")).await.status, 404);
    let r = cloud.admin.post(NS, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ns = r.json();
    assert_eq!(ns["namespace"], "OS::Test::Public");
    assert_eq!(ns["protected"], true);
    assert_eq!(ns["owner"], project_of(&cloud.admin).as_str());
    assert_eq!(ns["schema"], "/v2/schemas/metadefs/namespace");
    assert_eq!(ns["resource_type_associations"][0]["prefix"], "hw_");
    assert_eq!(ns["properties"]["cpu"]["type"], "integer");
    assert_eq!(ns["objects"][0]["name"], "obj");
    assert_eq!(ns["tags"][0]["name"], "t1");
    assert_eq!(cloud.admin.post(NS, &body).await.status, 409);
    assert_eq!(cloud.admin.post(NS, &json!({"namespace": "x", "visibility": "secret"})).await.status, 400);
    assert_eq!(cloud.admin.post(NS, &json!({"display_name": "x"})).await.status, 400);
    let unknown = json!({"namespace": "OS::Bad", "resource_type_associations": [{"name": "OS::Nope"}]});
    assert_eq!(cloud.admin.post(NS, &unknown).await.status, 404);

    let private = cloud.admin.post(NS, &json!({"namespace": "OS::Test::Private"})).await;
    assert_eq!(private.status, 201, "{}", private.text);
    assert_eq!(private.json()["visibility"], "private");

    // Members see public namespaces only; admins see all; filters apply.
    let listed = |v: Value| -> Vec<String> {
        v["namespaces"].as_array().unwrap().iter().map(|n| n["namespace"].as_str().unwrap().to_string()).collect()
    };
    let member_list = cloud.member.get(NS).await.json();
    assert_eq!(member_list["schema"], "/v2/schemas/metadefs/namespaces");
    assert_eq!(listed(member_list), vec!["OS::Test::Public"]);
    assert_eq!(cloud.member.get(&format!("{NS}/OS::Test::Private")).await.status, 404);
    assert_eq!(listed(cloud.admin.get(NS).await.json()).len(), 2);
    assert_eq!(listed(cloud.admin.get(&format!("{NS}?visibility=private")).await.json()), vec!["OS::Test::Private"]);
    let by_type = cloud.admin.get(&format!("{NS}?resource_types=OS::Glance::Image")).await.json();
    assert_eq!(listed(by_type), vec!["OS::Test::Public"]);

    // Protected: no delete until unprotected; renaming carries the contents along.
    assert_eq!(cloud.admin.delete(&format!("{NS}/OS::Test::Public")).await.status, 403);
    assert_eq!(
        cloud
            .member
            .request(Method::PUT, &format!("{NS}/OS::Test::Public"), Some(&json!({"protected": false})), &[])
            .await
            .status,
        403
    );
    let r = cloud
        .admin
        .request(
            Method::PUT,
            &format!("{NS}/OS::Test::Public"),
            Some(&json!({"namespace": "OS::Test::Renamed", "visibility": "private", "protected": false})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["visibility"], "private");
    assert_eq!(r.json()["protected"], false);
    let shown = cloud.admin.get(&format!("{NS}/OS::Test::Renamed")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["objects"][0]["name"], "obj");
    assert_eq!(cloud.member.get(&format!("{NS}/OS::Test::Renamed")).await.status, 404);
    assert_eq!(cloud.admin.delete(&format!("{NS}/OS::Test::Renamed")).await.status, 204);
    assert_eq!(cloud.admin.get(&format!("{NS}/OS::Test::Renamed")).await.status, 404);
    assert_eq!(cloud.admin.get(&format!("{NS}/OS::Test::Renamed/objects/obj")).await.status, 404);
}

#[tokio::test]
async fn objects_properties_tags_and_associations() {
    let cloud = TestCloud::start().await;
    let r = cloud.admin.post(NS, &json!({"namespace": "ns1", "visibility": "public"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ns = format!("{NS}/ns1");

    // Associations.
    let r = cloud.admin.post(&format!("{ns}/resource_types"), &json!({"name": "OS::Nova::Flavor"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["name"], "OS::Nova::Flavor");
    assert_eq!(
        cloud.admin.post(&format!("{ns}/resource_types"), &json!({"name": "OS::Nova::Flavor"})).await.status,
        409
    );
    let list = cloud.member.get(&format!("{ns}/resource_types")).await.json();
    assert_eq!(names(&list, "resource_type_associations"), vec!["OS::Nova::Flavor"]);
    assert_eq!(cloud.member.delete(&format!("{ns}/resource_types/OS::Nova::Flavor")).await.status, 403);
    assert_eq!(cloud.admin.delete(&format!("{ns}/resource_types/OS::Nova::Flavor")).await.status, 204);
    assert_eq!(cloud.admin.delete(&format!("{ns}/resource_types/OS::Nova::Flavor")).await.status, 404);

    // Objects.
    let objects = format!("{ns}/objects");
    assert_eq!(cloud.member.post(&objects, &json!({"name": "o"})).await.status, 403);
    let r = cloud.admin.post(&objects, &json!({"name": "o", "description": "d", "required": []})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["self"], "/v2/metadefs/namespaces/ns1/objects/o");
    assert_eq!(cloud.admin.post(&objects, &json!({"name": "o"})).await.status, 409);
    let r = cloud.admin.request(Method::PUT, &format!("{objects}/o"), Some(&json!({"name": "o2"})), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["name"], "o2");
    assert_eq!(cloud.member.get(&format!("{objects}/o2")).await.json()["name"], "o2");
    assert_eq!(cloud.member.get(&format!("{objects}/o")).await.status, 404);
    assert_eq!(names(&cloud.member.get(&objects).await.json(), "objects"), vec!["o2"]);
    assert_eq!(cloud.admin.delete(&format!("{objects}/o2")).await.status, 204);
    assert!(names(&cloud.member.get(&objects).await.json(), "objects").is_empty());

    // Properties.
    let props = format!("{ns}/properties");
    assert_eq!(cloud.admin.post(&props, &json!({"name": "p", "type": "string"})).await.status, 400);
    assert_eq!(cloud.admin.post(&props, &json!({"name": "p", "title": "P", "type": "nope"})).await.status, 400);
    let r = cloud.admin.post(&props, &json!({"name": "p", "title": "P", "type": "string", "enum": ["a", "b"]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["title"], "P");
    let r = cloud
        .admin
        .request(Method::PUT, &format!("{props}/p"), Some(&json!({"name": "p", "title": "Q", "type": "string"})), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(cloud.member.get(&format!("{props}/p")).await.json()["title"], "Q");
    assert_eq!(cloud.member.get(&props).await.json()["properties"]["p"]["title"], "Q");
    assert_eq!(cloud.admin.delete(&format!("{props}/p")).await.status, 204);
    assert_eq!(cloud.member.get(&props).await.json()["properties"], json!({}));

    // Tags: bulk replace, append, single, rename, delete all.
    let tags = format!("{ns}/tags");
    // The list's default order is newest first, which ties within a second: compare in name order.
    let by_name = format!("{tags}?sort_key=name&sort_dir=asc");
    let r = cloud.admin.post(&tags, &json!({"tags": [{"name": "a"}, {"name": "b"}]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(names(&r.json(), "tags"), vec!["a", "b"]);
    assert_eq!(cloud.admin.post(&tags, &json!({"tags": [{"name": "c"}, {"name": "c"}]})).await.status, 409);
    let r = cloud
        .admin
        .request(Method::POST, &tags, Some(&json!({"tags": [{"name": "c"}]})), &[("X-Openstack-Append", "true")])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(names(&cloud.member.get(&by_name).await.json(), "tags"), vec!["a", "b", "c"]);
    let r = raw(&cloud, &cloud.admin, Method::POST, &format!("{tags}/d"), Vec::new(), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["name"], "d");
    let r = cloud.admin.request(Method::PUT, &format!("{tags}/d"), Some(&json!({"name": "e"})), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(cloud.member.get(&format!("{tags}/e")).await.json()["name"], "e");
    assert_eq!(cloud.member.delete(&format!("{tags}/e")).await.status, 403);
    assert_eq!(cloud.admin.delete(&format!("{tags}/e")).await.status, 204);
    assert_eq!(cloud.admin.delete(&format!("{tags}/e")).await.status, 404);
    assert_eq!(cloud.member.delete(&tags).await.status, 403);
    assert_eq!(names(&cloud.member.get(&by_name).await.json(), "tags"), vec!["a", "b", "c"]);
    assert_eq!(cloud.admin.delete(&tags).await.status, 204);
    assert!(names(&cloud.member.get(&tags).await.json(), "tags").is_empty());

    assert_eq!(cloud.admin.get(&format!("{NS}/missing/objects")).await.status, 404);
    assert_eq!(cloud.admin.delete(&ns).await.status, 204);
}

/// Follows `next` links from `path` (relative to `/image`), collecting the names under `key`.
async fn walk(cloud: &TestCloud, path: &str, key: &str, id: &str) -> (Vec<String>, usize) {
    let (mut seen, mut pages, mut next) = (Vec::new(), 0, Some(path.to_string()));
    while let Some(path) = next.take() {
        let r = cloud.admin.get(&format!("/image{path}")).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        let body = r.json();
        seen.extend(body[key].as_array().unwrap().iter().map(|i| i[id].as_str().unwrap().to_string()));
        next = body["next"].as_str().map(str::to_string);
        pages += 1;
    }
    (seen, pages)
}

#[tokio::test]
async fn metadef_lists_page() {
    let cloud = TestCloud::start().await;
    for n in ["OS::Page::B", "OS::Page::A", "OS::Page::C"] {
        let body = json!({"namespace": n, "visibility": "public",
            "objects": [{"name": "o2"}, {"name": "o1"}, {"name": "o3"}], "tags": [{"name": "t2"}, {"name": "t1"}]});
        assert_eq!(cloud.admin.post(NS, &body).await.status, 201);
    }
    // Namespaces: by name, two per page, `first` keeps the query without the marker.
    let path = "/v2/metadefs/namespaces?sort_key=namespace&sort_dir=asc&limit=2";
    let first = cloud.admin.get(&format!("/image{path}")).await.json();
    assert_eq!(first["first"], "/v2/metadefs/namespaces?sort_key=namespace&sort_dir=asc&limit=2");
    let next = first["next"].as_str().unwrap();
    assert!(next.contains("marker="), "{next}");
    let (all, pages) = walk(&cloud, path, "namespaces", "namespace").await;
    let ours: Vec<&String> = all.iter().filter(|n| n.starts_with("OS::Page::")).collect();
    assert_eq!(ours, ["OS::Page::A", "OS::Page::B", "OS::Page::C"]);
    assert_eq!(pages, all.len().div_ceil(2).max(1));
    let desc = cloud.admin.get(&format!("{NS}?sort_key=namespace&sort_dir=desc&limit=1")).await.json();
    assert_eq!(desc["namespaces"].as_array().unwrap().len(), 1);
    // Unknown markers and bad limits or sort keys are 400s.
    for bad in ["marker=OS::Nope", "limit=-1", "sort_key=owner", "sort_dir=up"] {
        assert_eq!(cloud.admin.get(&format!("{NS}?{bad}")).await.status, 400, "{bad}");
    }

    // Objects and tags of a namespace page the same way; properties are a map, never paged.
    let objects = "/v2/metadefs/namespaces/OS::Page::A/objects?sort_key=name&sort_dir=asc&limit=1";
    assert_eq!(walk(&cloud, objects, "objects", "name").await, (vec!["o1".into(), "o2".into(), "o3".into()], 3));
    let tags = "/v2/metadefs/namespaces/OS::Page::A/tags?sort_key=name&sort_dir=desc&limit=1";
    assert_eq!(walk(&cloud, tags, "tags", "name").await, (vec!["t2".into(), "t1".into()], 2));
    let all_objects = cloud.admin.get(&format!("{NS}/OS::Page::A/objects")).await.json();
    assert_eq!(all_objects["first"], "/v2/metadefs/namespaces/OS::Page::A/objects");
    assert!(all_objects.get("next").is_none());
    assert_eq!(all_objects["objects"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn metadef_schemas() {
    let cloud = TestCloud::start().await;
    for (path, name) in [
        ("namespace", "namespace"),
        ("namespaces", "namespaces"),
        ("resource_type", "resource_type_association"),
        ("resource_types", "resource_type_associations"),
        ("object", "object"),
        ("objects", "objects"),
        ("property", "property"),
        ("properties", "properties"),
        ("tag", "tag"),
        ("tags", "tags"),
    ] {
        let r = cloud.member.get(&format!("/image/v2/schemas/metadefs/{path}")).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.json()["name"], name);
    }
    assert_eq!(cloud.member.get("/image/v2/schemas/metadefs/nope").await.status, 404);
    assert_eq!(cloud.anonymous.get("/image/v2/schemas/metadefs/tag").await.status, 401);
}

#[tokio::test]
async fn metadef_datastore_on_every_backend() {
    for db in test_databases().await {
        let store = Store::new((*db).clone());
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        assert!(store.metadef_resource_type_list().await.unwrap().iter().any(|t| t.name == "OS::Glance::Image"));
        let ns = NamespaceRow {
            namespace: "ns".into(),
            display_name: Some("N ✓".into()),
            description: None,
            visibility: "public".into(),
            protected: true,
            owner: Some("p1".into()),
            created_at: 1,
            updated_at: 1,
        };
        store.metadef_namespace_insert(&ns).await.unwrap();
        assert!(matches!(store.metadef_namespace_insert(&ns).await, Err(image::Error::Conflict(_))));
        assert_eq!(store.metadef_namespace_get("ns").await.unwrap().unwrap(), ns);
        let assoc = AssociationRow {
            namespace: "ns".into(),
            name: "OS::Glance::Image".into(),
            prefix: Some("hw_".into()),
            properties_target: None,
            created_at: 2,
            updated_at: 2,
        };
        store.metadef_association_insert(&assoc).await.unwrap();
        assert!(matches!(store.metadef_association_insert(&assoc).await, Err(image::Error::Conflict(_))));
        let item = |kind: &str, name: &str| ItemRow {
            namespace: "ns".into(),
            kind: kind.into(),
            name: name.into(),
            body: "{\"title\":\"T\"}".into(),
            created_at: 3,
            updated_at: 3,
        };
        store.metadef_item_insert(&item("object", "o")).await.unwrap();
        store.metadef_item_insert(&item("tag", "o")).await.unwrap();
        assert!(matches!(store.metadef_item_insert(&item("object", "o")).await, Err(image::Error::Conflict(_))));
        store.metadef_item_replace_all("ns", "tag", &[item("tag", "a"), item("tag", "b")]).await.unwrap();
        let tags: Vec<String> =
            store.metadef_item_list("ns", "tag").await.unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(tags, vec!["a", "b"]);
        assert!(matches!(store.metadef_item_update("a", &item("tag", "b")).await, Err(image::Error::Conflict(_))));
        assert!(store.metadef_item_update("a", &item("tag", "c")).await.unwrap());

        // Renaming carries contents; deleting removes them.
        let renamed = NamespaceRow { namespace: "ns2".into(), protected: false, updated_at: 4, ..ns.clone() };
        assert!(store.metadef_namespace_update("ns", &renamed).await.unwrap());
        assert_eq!(store.metadef_namespace_get("ns").await.unwrap(), None);
        assert_eq!(store.metadef_item_get("ns2", "object", "o").await.unwrap().unwrap().body, "{\"title\":\"T\"}");
        assert_eq!(store.metadef_association_list(Some("ns2")).await.unwrap()[0].prefix.as_deref(), Some("hw_"));
        assert!(store.metadef_namespace_delete("ns2").await.unwrap());
        assert!(!store.metadef_namespace_delete("ns2").await.unwrap());
        assert!(store.metadef_item_list("ns2", "tag").await.unwrap().is_empty());
        assert!(store.metadef_association_list(None).await.unwrap().is_empty());
    }
}
