//! Domains and projects over HTTP: CRUD, filters, hierarchy, tags, conflicts, policy, and the effect of disabling
//! or deleting on tokens.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_utils::{Client, TestCloud};

const V3: &str = "/identity/v3";

async fn patch(c: &Client, path: &str, body: &Value) -> test_utils::Response {
    c.request(Method::PATCH, path, Some(body), &[]).await
}

async fn put(c: &Client, path: &str, body: Option<&Value>) -> test_utils::Response {
    c.request(Method::PUT, path, body, &[]).await
}

async fn create_project(c: &Client, body: Value) -> Value {
    let r = c.post(&format!("{V3}/projects"), &json!({ "project": body })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()["project"].clone()
}

async fn create_domain(c: &Client, name: &str) -> Value {
    let r = c.post(&format!("{V3}/domains"), &json!({"domain": {"name": name}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json()["domain"].clone()
}

fn ids(body: &Value, key: &str) -> Vec<String> {
    body[key].as_array().into_iter().flatten().filter_map(|p| p["id"].as_str().map(String::from)).collect()
}

fn demo_project_id(cloud: &TestCloud) -> String {
    cloud.member.token_body["token"]["project"]["id"].as_str().expect("member token is project-scoped").to_string()
}

#[tokio::test]
async fn domain_crud_filters_and_delete_rules() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;

    let d = create_domain(admin, "dom-one").await;
    assert_eq!(d["enabled"], true);
    assert_eq!(d["description"], "");
    assert_eq!(d["tags"], json!([]));
    assert!(d["links"]["self"].as_str().unwrap().ends_with(&format!("/v3/domains/{}", d["id"].as_str().unwrap())));
    let id = d["id"].as_str().unwrap();

    // Duplicate names conflict; bad names are refused.
    let r = admin.post(&format!("{V3}/domains"), &json!({"domain": {"name": "dom-one"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = admin.post(&format!("{V3}/domains"), &json!({"domain": {"name": ""}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Show and the list agree; filters work.
    let shown = admin.get(&format!("{V3}/domains/{id}")).await.json()["domain"].clone();
    assert_eq!(shown, d);
    let all = admin.get(&format!("{V3}/domains")).await.json();
    assert!(ids(&all, "domains").contains(&id.to_string()));
    assert!(ids(&all, "domains").contains(&"default".to_string()));
    let by_name = admin.get(&format!("{V3}/domains?name=dom-one")).await.json();
    assert_eq!(ids(&by_name, "domains"), [id]);

    // An enabled domain cannot be deleted; nothing changes.
    let r = admin.delete(&format!("{V3}/domains/{id}")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.json()["error"]["message"], "Cannot delete a domain that is enabled, please disable it first.");
    assert_eq!(admin.get(&format!("{V3}/domains/{id}")).await.status, StatusCode::OK);
    let r = admin.delete(&format!("{V3}/domains/default")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.get(&format!("{V3}/domains/default")).await.json()["domain"]["enabled"], true);
    assert_eq!(admin.get(&format!("{V3}/projects/{}", demo_project_id(&cloud))).await.status, StatusCode::OK);

    let p = create_project(admin, json!({"name": "in-dom", "domain_id": id})).await;
    let p_id = p["id"].as_str().unwrap().to_string();
    let sub = create_project(admin, json!({"name": "sub", "parent_id": p_id})).await;

    // Update, then the enabled filter.
    let r = patch(admin, &format!("{V3}/domains/{id}"), &json!({"domain": {"description": "d1", "enabled": false, "color": "red"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let updated = r.json()["domain"].clone();
    assert_eq!((updated["description"].as_str(), updated["enabled"].as_bool()), (Some("d1"), Some(false)));
    assert_eq!(updated["color"], "red", "extra attributes are echoed");
    let enabled = admin.get(&format!("{V3}/domains?enabled=true")).await.json();
    assert!(!ids(&enabled, "domains").contains(&id.to_string()));
    assert!(enabled["domains"].as_array().unwrap().iter().all(|d| d["enabled"] == true));
    let disabled = admin.get(&format!("{V3}/domains?enabled=false")).await.json();
    assert!(ids(&disabled, "domains").contains(&id.to_string()));

    // Deleting a disabled domain cascades to its projects.
    // (No new projects in a disabled domain.)
    let r = admin.post(&format!("{V3}/projects"), &json!({"project": {"name": "x", "domain_id": id}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(admin.delete(&format!("{V3}/domains/{id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{V3}/domains/{id}")).await.status, StatusCode::NOT_FOUND);
    for gone in [&p_id, sub["id"].as_str().unwrap()] {
        assert_eq!(admin.get(&format!("{V3}/projects/{gone}")).await.status, StatusCode::NOT_FOUND);
    }
    let r = admin.delete(&format!("{V3}/domains/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["message"], format!("Could not find domain: {id}."));

    cloud.shutdown().await;
}

#[tokio::test]
async fn project_crud_hierarchy_and_filters() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;

    let top = create_project(admin, json!({"name": "top", "description": "t", "tags": ["a", "b"], "shoe": 9})).await;
    let top_id = top["id"].as_str().unwrap().to_string();
    assert_eq!(top["domain_id"], "default");
    assert_eq!(top["parent_id"], "default", "a top-level project's parent is its domain");
    assert_eq!(top["is_domain"], false);
    assert_eq!(top["shoe"], 9);
    let child = create_project(admin, json!({"name": "child", "parent_id": top_id})).await;
    let child_id = child["id"].as_str().unwrap().to_string();
    assert_eq!(child["parent_id"], top_id.as_str());
    assert_eq!(child["domain_id"], "default");
    let grandchild = create_project(admin, json!({"name": "grandchild", "parent_id": child_id, "enabled": false})).await;
    let gc_id = grandchild["id"].as_str().unwrap().to_string();

    // Show equals the list entry.
    let shown = admin.get(&format!("{V3}/projects/{top_id}")).await.json()["project"].clone();
    let listed = admin.get(&format!("{V3}/projects")).await.json();
    let entry = listed["projects"].as_array().unwrap().iter().find(|p| p["id"] == top_id.as_str()).unwrap().clone();
    assert_eq!(shown, entry);

    // Hierarchy views.
    let r = admin.get(&format!("{V3}/projects/{top_id}?subtree_as_ids")).await.json();
    assert_eq!(r["project"]["subtree"], json!({ child_id.clone(): { gc_id.clone(): null } }));
    let r = admin.get(&format!("{V3}/projects/{gc_id}?parents_as_ids")).await.json();
    assert_eq!(r["project"]["parents"], json!({ child_id.clone(): { top_id.clone(): { "default": null } } }));
    let r = admin.get(&format!("{V3}/projects/{top_id}?parents_as_ids&parents_as_list")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Filters.
    let by_parent = admin.get(&format!("{V3}/projects?parent_id={top_id}")).await.json();
    assert_eq!(ids(&by_parent, "projects"), [child_id.clone()]);
    let disabled = admin.get(&format!("{V3}/projects?enabled=false")).await.json();
    assert_eq!(ids(&disabled, "projects"), [gc_id.clone()]);
    let by_name = admin.get(&format!("{V3}/projects?name=child&domain_id=default")).await.json();
    assert_eq!(ids(&by_name, "projects"), [child_id.clone()]);
    let domains = admin.get(&format!("{V3}/projects?is_domain=true")).await.json();
    assert!(ids(&domains, "projects").contains(&"default".to_string()));
    assert!(domains["projects"].as_array().unwrap().iter().all(|p| p["is_domain"] == true));
    let plain = ids(&listed, "projects");
    assert!(!plain.contains(&"default".to_string()), "domains are not listed as projects by default");
    for (q, expect_top) in [("tags=a,b", true), ("tags=a,c", false), ("tags-any=c,b", true), ("not-tags=a,b", false), ("not-tags-any=z", true)] {
        let got = ids(&admin.get(&format!("{V3}/projects?{q}")).await.json(), "projects");
        assert_eq!(got.contains(&top_id), expect_top, "{q}");
    }

    // Duplicates conflict, in the same domain only; bad input is refused.
    let r = admin.post(&format!("{V3}/projects"), &json!({"project": {"name": "top"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    for bad in [json!({"name": ""}), json!({"name": "a".repeat(65)}), json!({"name": "x", "enabled": "yes"}), json!({"name": "x", "tags": ["a/b"]})] {
        let r = admin.post(&format!("{V3}/projects"), &json!({ "project": bad })).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let r = admin.post(&format!("{V3}/projects"), &json!({"project": {"name": "y", "parent_id": "nope"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // A child under a disabled parent is refused.
    let r = admin.post(&format!("{V3}/projects"), &json!({"project": {"name": "z", "parent_id": gc_id}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Updates.
    let r = patch(admin, &format!("{V3}/projects/{child_id}"), &json!({"project": {"name": "child2", "description": "c"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["project"]["name"], "child2");
    let r = patch(admin, &format!("{V3}/projects/{child_id}"), &json!({"project": {"name": "top"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = patch(admin, &format!("{V3}/projects/{child_id}"), &json!({"project": {"parent_id": "default"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A project with an enabled subtree cannot be disabled; a leaf with a disabled parent cannot be enabled.
    let r = patch(admin, &format!("{V3}/projects/{top_id}"), &json!({"project": {"enabled": false}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = patch(admin, &format!("{V3}/projects/{child_id}"), &json!({"project": {"enabled": false}})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = patch(admin, &format!("{V3}/projects/{gc_id}"), &json!({"project": {"enabled": true}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Deletes: not while children exist; leaves first.
    let r = admin.delete(&format!("{V3}/projects/{top_id}")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.get(&format!("{V3}/projects/{top_id}")).await.status, StatusCode::OK);
    for id in [&gc_id, &child_id, &top_id] {
        assert_eq!(admin.delete(&format!("{V3}/projects/{id}")).await.status, StatusCode::NO_CONTENT);
    }
    let r = admin.get(&format!("{V3}/projects/{top_id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["message"], format!("Could not find project: {top_id}."));
    assert_eq!(admin.delete(&format!("{V3}/projects/{top_id}")).await.status, StatusCode::NOT_FOUND);

    // A project acting as a domain is a domain.
    let pd = create_project(admin, json!({"name": "as-domain", "is_domain": true})).await;
    let pd_id = pd["id"].as_str().unwrap();
    assert_eq!((pd["is_domain"].as_bool(), pd["domain_id"].is_null()), (Some(true), true));
    assert_eq!(admin.get(&format!("{V3}/domains/{pd_id}")).await.status, StatusCode::OK);
    assert_eq!(admin.delete(&format!("{V3}/projects/{pd_id}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(patch(admin, &format!("{V3}/projects/{pd_id}"), &json!({"project": {"enabled": false}})).await.status, StatusCode::OK);
    assert_eq!(admin.delete(&format!("{V3}/projects/{pd_id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{V3}/domains/{pd_id}")).await.status, StatusCode::NOT_FOUND);

    cloud.shutdown().await;
}

#[tokio::test]
async fn project_tags() {
    let cloud = TestCloud::start().await;
    let admin = &cloud.admin;
    let p = create_project(admin, json!({"name": "tagged"})).await;
    let base = format!("{V3}/projects/{}/tags", p["id"].as_str().unwrap());

    let r = put(admin, &format!("{base}/one"), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.header("location").unwrap().ends_with("/tags/one"));
    assert_eq!(admin.get(&format!("{base}/one")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{base}/two")).await.status, StatusCode::NOT_FOUND);

    let r = put(admin, &base, Some(&json!({"tags": ["x", "y", "z"]}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["tags"], json!(["x", "y", "z"]));
    let mut listed: Vec<String> = serde_json::from_value(admin.get(&base).await.json()["tags"].clone()).unwrap();
    listed.sort();
    assert_eq!(listed, ["x", "y", "z"]);

    assert_eq!(admin.delete(&format!("{base}/x")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&format!("{base}/x")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.delete(&format!("{base}/x")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(put(admin, &format!("{base}/a,b"), None).await.status, StatusCode::BAD_REQUEST);
    let too_many: Vec<String> = (0..81).map(|i| format!("t{i}")).collect();
    assert_eq!(put(admin, &base, Some(&json!({ "tags": too_many }))).await.status, StatusCode::BAD_REQUEST);

    // Tags show in the project body and can be set through it.
    let shown = admin.get(&format!("{V3}/projects/{}", p["id"].as_str().unwrap())).await.json();
    assert_eq!(shown["project"]["tags"], json!(["y", "z"]));

    assert_eq!(admin.delete(&base).await.status, StatusCode::NO_CONTENT);
    assert_eq!(admin.get(&base).await.json()["tags"], json!([]));
    assert_eq!(admin.get(&format!("{V3}/projects/nope/tags")).await.status, StatusCode::NOT_FOUND);

    // Members read the tags of their own project, and change nothing.
    let demo = demo_project_id(&cloud);
    let demo_tags = format!("{V3}/projects/{demo}/tags");
    assert_eq!(cloud.member.get(&demo_tags).await.status, StatusCode::OK);
    assert_eq!(put(&cloud.member, &format!("{demo_tags}/mine"), None).await.status, StatusCode::FORBIDDEN);
    assert_eq!(put(&cloud.reader, &demo_tags, Some(&json!({"tags": ["r"]}))).await.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.get(&demo_tags).await.json()["tags"], json!([]));
    cloud.shutdown().await;
}

#[tokio::test]
async fn policy_for_members_and_readers() {
    let cloud = TestCloud::start().await;
    let demo = demo_project_id(&cloud);
    let other = create_project(&cloud.admin, json!({"name": "other"})).await;
    let other_id = other["id"].as_str().unwrap();

    for c in [&cloud.member, &cloud.reader] {
        assert_eq!(c.get(&format!("{V3}/projects/{demo}")).await.status, StatusCode::OK);
        assert_eq!(c.get(&format!("{V3}/projects/{other_id}")).await.status, StatusCode::FORBIDDEN);
        assert_eq!(c.get(&format!("{V3}/projects")).await.status, StatusCode::FORBIDDEN);
        assert_eq!(c.get(&format!("{V3}/domains/default")).await.status, StatusCode::OK);
        assert_eq!(c.get(&format!("{V3}/domains")).await.status, StatusCode::FORBIDDEN);
        let r = c.post(&format!("{V3}/projects"), &json!({"project": {"name": "sneaky"}})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = c.post(&format!("{V3}/domains"), &json!({"domain": {"name": "sneaky"}})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = patch(c, &format!("{V3}/projects/{demo}"), &json!({"project": {"name": "renamed"}})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(c.delete(&format!("{V3}/projects/{other_id}")).await.status, StatusCode::FORBIDDEN);
        let r = patch(c, &format!("{V3}/domains/default"), &json!({"domain": {"enabled": false}})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(cloud.anonymous.get(&format!("{V3}/projects/{demo}")).await.status, StatusCode::UNAUTHORIZED);
    // Nothing changed.
    let names = cloud.admin.get(&format!("{V3}/projects?name=sneaky")).await.json();
    assert_eq!(ids(&names, "projects"), Vec::<String>::new());
    assert_eq!(cloud.admin.get(&format!("{V3}/projects/{demo}")).await.json()["project"]["name"], "demo");
    assert_eq!(cloud.admin.get(&format!("{V3}/projects/{other_id}")).await.status, StatusCode::OK);
    assert_eq!(cloud.admin.get(&format!("{V3}/domains/default")).await.json()["domain"]["enabled"], true);
    cloud.shutdown().await;
}

#[tokio::test]
async fn disabled_or_deleted_project_tokens_are_refused() {
    let cloud = TestCloud::start().await;
    let demo = demo_project_id(&cloud);
    let own = format!("{V3}/projects/{demo}");
    assert_eq!(cloud.member.get(&own).await.status, StatusCode::OK);

    let r = patch(&cloud.admin, &own, &json!({"project": {"enabled": false}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(cloud.member.get(&own).await.status, StatusCode::UNAUTHORIZED);
    let subject = cloud.member.token.clone().unwrap();
    let r = cloud.admin.request(Method::GET, &format!("{V3}/auth/tokens"), None, &[("X-Subject-Token", &subject)]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // No new token for a disabled project either.
    let r = cloud.anonymous.post(&format!("{V3}/auth/tokens"), &test_utils::password_auth("reader", "reader-password", "demo")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Re-enabled: the old token stays revoked, new ones work.
    let r = patch(&cloud.admin, &own, &json!({"project": {"enabled": true}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(cloud.member.get(&own).await.status, StatusCode::UNAUTHORIZED);
    // Revocation events and token timestamps have one-second resolution (as upstream's): tokens issued in the
    // second of the event count as revoked.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reader = cloud.anonymous.login("reader", "reader-password", "demo").await;
    assert_eq!(reader.get(&own).await.status, StatusCode::OK);

    // Deleting the project ends its tokens and its role assignments.
    assert_eq!(cloud.admin.delete(&own).await.status, StatusCode::NO_CONTENT);
    assert_eq!(reader.get(&own).await.status, StatusCode::UNAUTHORIZED);
    cloud.shutdown().await;
}

/// The domain/project queries on every database backend.
#[tokio::test]
async fn store_queries_on_every_backend() {
    use identity::store::{DomainRecord, DomainRow, ProjectFilter, ProjectRecord, ProjectRow, Store, kind};

    for db in db::testing::test_databases().await {
        let backend = db.backend();
        let store = Store::new((*db).clone());
        store.migrate().await.unwrap();
        let dom = DomainRecord {
            row: DomainRow { id: "d1".into(), name: "D1".into(), description: Some(String::new()), enabled: true },
            extra: Some(r#"{"k":"v"}"#.into()),
        };
        store.domain_record_create(&dom).await.unwrap();
        let project = |id: &str, parent: &str, enabled: bool| ProjectRecord {
            row: ProjectRow {
                id: id.into(),
                name: format!("name-{id}"),
                domain_id: "d1".into(),
                parent_id: Some(parent.into()),
                is_domain: false,
                description: None,
                enabled,
            },
            extra: None,
            tags: vec!["t1".into(), "t2".into()],
        };
        store.project_record_create(&project("p1", "d1", true)).await.unwrap();
        store.project_record_create(&project("p2", "p1", false)).await.unwrap();
        store.assignment_create(kind::USER_PROJECT, "u1", "p2", "r1").await.unwrap();

        let got = store.domain_list(Some("D1"), Some(true)).await.unwrap();
        assert_eq!((got.len(), got[0].extra.as_deref()), (1, Some(r#"{"k":"v"}"#)), "{backend:?}");
        assert!(store.domain_list(None, Some(false)).await.unwrap().is_empty());
        let f = ProjectFilter { parent_id: Some("p1".into()), enabled: Some(false), ..Default::default() };
        let listed = store.project_list(&f).await.unwrap();
        assert_eq!(listed.iter().map(|p| p.row.id.as_str()).collect::<Vec<_>>(), ["p2"], "{backend:?}");
        assert_eq!(listed[0].tags, ["t1", "t2"]);
        assert!(store.project_has_children("p1").await.unwrap());

        store.project_tag_add("p1", "t3").await.unwrap();
        store.project_tag_add("p1", "t3").await.unwrap();
        assert!(store.project_tag_delete("p1", "t1").await.unwrap());
        assert!(!store.project_tag_delete("p1", "t1").await.unwrap());
        assert_eq!(store.project_tags("p1").await.unwrap(), ["t2", "t3"]);
        store.project_tags_set("p1", &["z".into()]).await.unwrap();
        assert_eq!(store.project_tags("p1").await.unwrap(), ["z"]);

        let mut p1 = store.project_record_get("p1").await.unwrap().unwrap();
        p1.row.name = "renamed".into();
        p1.extra = Some("{}".into());
        store.project_update(&p1).await.unwrap();
        assert_eq!(store.project_record_get("p1").await.unwrap().unwrap().row.name, "renamed");

        let gone = store.domain_delete_cascade("d1").await.unwrap();
        let mut ids = gone.project_ids.clone();
        ids.sort();
        assert_eq!(ids, ["p1", "p2"]);
        assert!(store.project_record_get("p2").await.unwrap().is_none());
        assert!(store.domain_record_get("d1").await.unwrap().is_none());
        assert!(store.assignment_role_ids(kind::USER_PROJECT, "u1", "p2").await.unwrap().is_empty());
        assert!(store.project_tags("p1").await.unwrap().is_empty());
        eprintln!("passed on {backend:?}");
        db.cleanup().await;
    }
}
