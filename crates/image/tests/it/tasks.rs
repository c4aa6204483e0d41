//! The legacy tasks API (`/v2/tasks`): `import` tasks that create an image and fetch its data.

use md5::{Digest, Md5};
use serde_json::{Value, json};
use test_utils::TestCloud;

use crate::data::serve;

async fn wait(cloud: &TestCloud, id: &str) -> Value {
    for _ in 0..300 {
        let r = cloud.admin.get(&format!("/image/v2/tasks/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let t = r.json();
        if t["status"] == "success" || t["status"] == "failure" {
            return t;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("task {id} did not finish");
}

fn task(uri: &str, name: &str) -> Value {
    json!({"type": "import", "input": {
        "import_from": uri, "import_from_format": "raw",
        "image_properties": {"name": name, "disk_format": "raw", "container_format": "bare"},
    }})
}

#[tokio::test]
async fn import_tasks_succeed_or_fail_and_are_admin_only() {
    let cloud = TestCloud::start().await;
    // Admin-only by default; a denied task creates nothing.
    let url = serve(b"task disk").await;
    assert_eq!(cloud.member.post("/image/v2/tasks", &task(&url, "denied")).await.status, 403);
    assert_eq!(cloud.member.get("/image/v2/tasks").await.status, 403);
    let images = cloud.admin.get("/image/v2/images?name=denied").await.json();
    assert!(images["images"].as_array().unwrap().is_empty());

    assert_eq!(cloud.admin.post("/image/v2/tasks", &json!({"type": "export", "input": {}})).await.status, 400);
    assert_eq!(cloud.admin.post("/image/v2/tasks", &json!({"type": "import"})).await.status, 400);
    assert_eq!(cloud.admin.post("/image/v2/tasks", &task("file:///etc/passwd", "f")).await.status, 400);

    let r = cloud.admin.post("/image/v2/tasks", &task(&url, "from-task")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json();
    assert_eq!(created["type"], "import");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["input"]["import_from"], url.as_str());
    let id = created["id"].as_str().unwrap();
    let done = wait(&cloud, id).await;
    assert_eq!(done["status"], "success", "{done}");
    let image_id = done["result"]["image_id"].as_str().unwrap();
    let img = cloud.admin.get(&format!("/image/v2/images/{image_id}")).await.json();
    assert_eq!(img["status"], "active");
    assert_eq!(img["name"], "from-task");
    assert_eq!(img["checksum"], Md5::digest(b"task disk").iter().map(|b| format!("{b:02x}")).collect::<String>());

    // An unreachable location: the task fails and its image is gone; the task remains.
    let r = cloud.admin.post("/image/v2/tasks", &task("http://127.0.0.1:1/x.qcow2", "bad")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let failed = wait(&cloud, r.json()["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failure");
    assert!(!failed["message"].as_str().unwrap().is_empty());
    let bad_image = failed["image_id"].as_str().unwrap();
    assert_eq!(cloud.admin.get(&format!("/image/v2/images/{bad_image}")).await.status, 404);

    let list = cloud.admin.get("/image/v2/tasks").await.json();
    assert_eq!(list["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(cloud.admin.get("/image/v2/tasks/nope").await.status, 404);
    cloud.shutdown().await;
}

#[tokio::test]
async fn task_datastore_on_every_backend() {
    use image::store::{ImageRow, Store, TaskRow};
    for db in db::testing::test_databases().await {
        let store = Store::new((*db).clone());
        store.migrate().await.unwrap();
        let t = |id: &str, kind: &str, owner: &str, at: i64| TaskRow {
            id: id.into(),
            image_id: "img".into(),
            kind: kind.into(),
            status: "pending".into(),
            owner: Some(owner.into()),
            user_id: None,
            request_id: None,
            input: "{}".into(),
            message: String::new(),
            created_at: at,
            updated_at: at,
        };
        let img = ImageRow {
            id: "img".into(),
            name: None,
            status: "queued".into(),
            visibility: "private".into(),
            protected: false,
            os_hidden: false,
            owner: Some("p1".into()),
            disk_format: None,
            container_format: None,
            size: None,
            virtual_size: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            min_disk: 0,
            min_ram: 0,
            store_id: None,
            location: None,
            created_at: 1,
            updated_at: 1,
            properties: Default::default(),
            tags: vec![],
        };
        store.image_insert(&img).await.unwrap();
        store.task_insert(&t("t1", "import", "p1", 1)).await.unwrap();
        store.task_insert(&t("t2", "api_image_import", "p2", 2)).await.unwrap();
        assert_eq!(store.task_get("t1").await.unwrap().unwrap(), t("t1", "import", "p1", 1));
        assert_eq!(store.task_get("nope").await.unwrap(), None);
        let all: Vec<String> = store.task_list_all(None).await.unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(all, vec!["t2", "t1"]);
        let mine: Vec<String> = store.task_list_all(Some("p1")).await.unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(mine, vec!["t1"]);
        // Deleting the image keeps the legacy import task only.
        assert!(store.image_delete("img").await.unwrap());
        assert!(store.task_get("t1").await.unwrap().is_some());
        assert!(store.task_get("t2").await.unwrap().is_none());
    }
}
