//! The image service's tables and every query on them. Handlers never run SQL; the service logic calls these
//! methods, named `resource_verb`. All tables are prefixed `image_`; no other service reads them.
//!
//! Image metadata lives in `image_image`; free-form properties, tags and members in their own tables. Timestamps
//! are Unix microseconds.

use std::collections::BTreeMap;

use db::{Bool, Database, Migration};
use sqlx::{Row, any::AnyRow};

use crate::error::Error;

mod metadefs;
pub use metadefs::{AssociationRow, ItemRow, NamespaceRow, ResourceTypeRow};

/// Every image migration, in order.
pub const MIGRATIONS: &[Migration] = &[INITIAL, TASKS, metadefs::METADEFS];

const INITIAL: Migration = Migration {
    version: 1,
    name: "initial image schema",
    sql: "
CREATE TABLE image_image (
    id {id} PRIMARY KEY,
    name {name},
    status {id} NOT NULL,
    visibility {id} NOT NULL,
    protected {bool} NOT NULL,
    os_hidden {bool} NOT NULL,
    owner {id},
    disk_format {id},
    container_format {id},
    size {int},
    virtual_size {int},
    checksum {id},
    os_hash_algo {id},
    os_hash_value {name},
    min_disk {int} NOT NULL,
    min_ram {int} NOT NULL,
    store_id {id},
    location {text},
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE INDEX image_image_owner ON image_image (owner);
CREATE TABLE image_property (
    image_id {id} NOT NULL,
    name {name} NOT NULL,
    value {text} NOT NULL,
    PRIMARY KEY (image_id, name)
);
CREATE TABLE image_tag (
    image_id {id} NOT NULL,
    value {name} NOT NULL,
    PRIMARY KEY (image_id, value)
);
CREATE TABLE image_member (
    image_id {id} NOT NULL,
    member_id {name} NOT NULL,
    status {id} NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL,
    PRIMARY KEY (image_id, member_id)
);
CREATE INDEX image_member_member ON image_member (member_id)",
};

const TASKS: Migration = Migration {
    version: 2,
    name: "image import tasks",
    sql: "
CREATE TABLE image_task (
    id {id} PRIMARY KEY,
    image_id {id} NOT NULL,
    type {name} NOT NULL,
    status {id} NOT NULL,
    owner {id},
    user_id {id},
    request_id {name},
    input {text} NOT NULL,
    message {text} NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE INDEX image_task_image ON image_task (image_id)",
};

/// An asynchronous task on an image (an import), as `GET /v2/images/{id}/tasks` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    pub id: String,
    pub image_id: String,
    pub kind: String,
    /// `pending`, `processing`, `success` or `failure`.
    pub status: String,
    pub owner: Option<String>,
    pub user_id: Option<String>,
    pub request_id: Option<String>,
    /// The request body that started the task, as JSON text.
    pub input: String,
    pub message: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One image: its row plus properties and tags.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRow {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub visibility: String,
    pub protected: bool,
    pub os_hidden: bool,
    pub owner: Option<String>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub min_disk: i64,
    pub min_ram: i64,
    /// The stores holding the data, comma-separated and sorted as the API's `stores` attribute shows them, and
    /// the data's location in each, one per line in the same order (set once the image is active).
    /// [`ImageRow::locations`] reads them as pairs.
    pub store_id: Option<String>,
    pub location: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub properties: BTreeMap<String, String>,
    pub tags: Vec<String>,
}

impl ImageRow {
    /// Where the data lives: `(store id, location)` pairs, sorted by store id.
    pub fn locations(&self) -> Vec<(String, String)> {
        match (&self.store_id, &self.location) {
            (Some(stores), Some(locations)) if !stores.is_empty() => stores
                .split(',')
                .zip(locations.split('\n'))
                .map(|(s, l)| (s.to_string(), l.to_string()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The `store_id` and `location` columns for a set of locations (sorted by store; `None` when empty).
pub fn encode_locations(locations: &[(String, String)]) -> (Option<String>, Option<String>) {
    if locations.is_empty() {
        return (None, None);
    }
    let mut sorted = locations.to_vec();
    sorted.sort();
    sorted.dedup_by(|a, b| a.0 == b.0);
    let stores: Vec<&str> = sorted.iter().map(|(s, _)| s.as_str()).collect();
    let locs: Vec<&str> = sorted.iter().map(|(_, l)| l.as_str()).collect();
    (Some(stores.join(",")), Some(locs.join("\n")))
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemberRow {
    pub image_id: String,
    pub member_id: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What an upload or import found out about the data, written when the image becomes active.
#[derive(Clone, Debug, PartialEq)]
pub struct DataRecord {
    pub size: i64,
    pub virtual_size: Option<i64>,
    pub checksum: String,
    pub os_hash_algo: String,
    pub os_hash_value: String,
    pub store_id: String,
    pub location: String,
}

macro_rules! image_cols {
    () => {
        "i.id, i.name, i.status, i.visibility, i.protected, i.os_hidden, i.owner, i.disk_format, i.container_format, \
         i.size, i.virtual_size, i.checksum, i.os_hash_algo, i.os_hash_value, i.min_disk, i.min_ram, i.store_id, \
         i.location, i.created_at, i.updated_at"
    };
}

/// The images a non-admin project may possibly see (refined by the service): public and community images, its own,
/// and those it is a member of.
macro_rules! visible_to_project {
    () => {
        "(i.visibility IN ('public', 'community') OR i.owner = ? \
          OR EXISTS (SELECT 1 FROM image_member m WHERE m.image_id = i.id AND m.member_id = ?))"
    };
}

fn image_from_row(row: &AnyRow) -> Result<ImageRow, sqlx::Error> {
    Ok(ImageRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        visibility: row.try_get("visibility")?,
        protected: row.try_get::<Bool, _>("protected")?.into(),
        os_hidden: row.try_get::<Bool, _>("os_hidden")?.into(),
        owner: row.try_get("owner")?,
        disk_format: row.try_get("disk_format")?,
        container_format: row.try_get("container_format")?,
        size: row.try_get("size")?,
        virtual_size: row.try_get("virtual_size")?,
        checksum: row.try_get("checksum")?,
        os_hash_algo: row.try_get("os_hash_algo")?,
        os_hash_value: row.try_get("os_hash_value")?,
        min_disk: row.try_get("min_disk")?,
        min_ram: row.try_get("min_ram")?,
        store_id: row.try_get("store_id")?,
        location: row.try_get("location")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        properties: BTreeMap::new(),
        tags: Vec::new(),
    })
}

fn task_from_row(r: &AnyRow) -> Result<TaskRow, sqlx::Error> {
    Ok(TaskRow {
        id: r.try_get("id")?,
        image_id: r.try_get("image_id")?,
        kind: r.try_get("type")?,
        status: r.try_get("status")?,
        owner: r.try_get("owner")?,
        user_id: r.try_get("user_id")?,
        request_id: r.try_get("request_id")?,
        input: r.try_get("input")?,
        message: r.try_get("message")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn member_from_row(row: &AnyRow) -> Result<MemberRow, sqlx::Error> {
    Ok(MemberRow {
        image_id: row.try_get("image_id")?,
        member_id: row.try_get("member_id")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Now, in Unix microseconds.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The image service's datastore.
#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Store { db }
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    pub async fn migrate(&self) -> Result<(), Error> {
        self.db.migrate("image", MIGRATIONS).await?;
        self.metadef_seed_resource_types().await?;
        Ok(())
    }

    /// Inserts a new image with its properties and tags. A duplicate id is a conflict.
    pub async fn image_insert(&self, image: &ImageRow) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        let inserted = self
            .db
            .query(
                "INSERT INTO image_image (id, name, status, visibility, protected, os_hidden, owner, disk_format, \
                 container_format, size, virtual_size, checksum, os_hash_algo, os_hash_value, min_disk, min_ram, \
                 store_id, location, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&image.id)
            .bind(&image.name)
            .bind(&image.status)
            .bind(&image.visibility)
            .bind(image.protected)
            .bind(image.os_hidden)
            .bind(&image.owner)
            .bind(&image.disk_format)
            .bind(&image.container_format)
            .bind(image.size)
            .bind(image.virtual_size)
            .bind(&image.checksum)
            .bind(&image.os_hash_algo)
            .bind(&image.os_hash_value)
            .bind(image.min_disk)
            .bind(image.min_ram)
            .bind(&image.store_id)
            .bind(&image.location)
            .bind(image.created_at)
            .bind(image.updated_at)
            .execute(&mut *tx)
            .await;
        if let Err(e) = inserted {
            let e = db::Error::from(e);
            if e.is_unique_violation() {
                return Err(Error::Conflict(format!("Image with identifier {} already exists!", image.id)));
            }
            return Err(e.into());
        }
        self.write_children(&mut tx, image).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn write_children(
        &self,
        tx: &mut db::Tx,
        image: &ImageRow,
    ) -> Result<(), Error> {
        for (name, value) in &image.properties {
            self.db
                .query("INSERT INTO image_property (image_id, name, value) VALUES (?, ?, ?)")
                .bind(&image.id)
                .bind(name)
                .bind(value)
                .execute(&mut **tx)
                .await?;
        }
        for tag in &image.tags {
            self.db
                .query("INSERT INTO image_tag (image_id, value) VALUES (?, ?)")
                .bind(&image.id)
                .bind(tag)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// One image with its properties and tags.
    pub async fn image_get(&self, id: &str) -> Result<Option<ImageRow>, Error> {
        let row = self
            .db
            .query(concat!("SELECT ", image_cols!(), " FROM image_image i WHERE i.id = ?"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut image = image_from_row(&row)?;
        for row in self
            .db
            .query("SELECT name, value FROM image_property WHERE image_id = ?")
            .bind(id)
            .fetch_all(self.db.pool())
            .await?
        {
            image.properties.insert(row.try_get("name")?, row.try_get("value")?);
        }
        image.tags = self
            .db
            .query_scalar("SELECT value FROM image_tag WHERE image_id = ? ORDER BY value")
            .bind(id)
            .fetch_all(self.db.pool())
            .await?;
        Ok(Some(image))
    }

    /// Every image `project` could see (`None`: every image, for admins), with properties and tags. The service
    /// applies the exact visibility rules and the filters.
    pub async fn image_list(&self, project: Option<&str>) -> Result<Vec<ImageRow>, Error> {
        let pool = self.db.pool();
        let (rows, props, tags) = match project {
            None => (
                self.db.query(concat!("SELECT ", image_cols!(), " FROM image_image i")).fetch_all(pool).await?,
                self.db.query("SELECT image_id, name, value FROM image_property").fetch_all(pool).await?,
                self.db.query("SELECT image_id, value FROM image_tag ORDER BY value").fetch_all(pool).await?,
            ),
            Some(p) => (
                self.db
                    .query(concat!("SELECT ", image_cols!(), " FROM image_image i WHERE ", visible_to_project!()))
                    .bind(p)
                    .bind(p)
                    .fetch_all(pool)
                    .await?,
                self.db
                    .query(concat!(
                        "SELECT image_id, name, value FROM image_property WHERE image_id IN ",
                        "(SELECT i.id FROM image_image i WHERE ",
                        visible_to_project!(),
                        ")"
                    ))
                    .bind(p)
                    .bind(p)
                    .fetch_all(pool)
                    .await?,
                self.db
                    .query(concat!(
                        "SELECT image_id, value FROM image_tag WHERE image_id IN ",
                        "(SELECT i.id FROM image_image i WHERE ",
                        visible_to_project!(),
                        ") ORDER BY value"
                    ))
                    .bind(p)
                    .bind(p)
                    .fetch_all(pool)
                    .await?,
            ),
        };
        let mut images: Vec<ImageRow> = rows.iter().map(image_from_row).collect::<Result<_, _>>()?;
        let index: std::collections::HashMap<String, usize> =
            images.iter().enumerate().map(|(i, img)| (img.id.clone(), i)).collect();
        for row in props {
            let id: String = row.try_get("image_id")?;
            if let Some(&i) = index.get(&id) {
                images[i].properties.insert(row.try_get("name")?, row.try_get("value")?);
            }
        }
        for row in tags {
            let id: String = row.try_get("image_id")?;
            if let Some(&i) = index.get(&id) {
                images[i].tags.push(row.try_get("value")?);
            }
        }
        Ok(images)
    }

    /// Writes every metadata column, properties and tags of an existing image, if its status is still
    /// `expected_status` (so a concurrent upload's transition is not overwritten). Returns whether it was written.
    pub async fn image_update(&self, image: &ImageRow, expected_status: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        let done = self
            .db
            .query(
                "UPDATE image_image SET name = ?, visibility = ?, protected = ?, os_hidden = ?, owner = ?, \
                 disk_format = ?, container_format = ?, min_disk = ?, min_ram = ?, updated_at = ? \
                 WHERE id = ? AND status = ?",
            )
            .bind(&image.name)
            .bind(&image.visibility)
            .bind(image.protected)
            .bind(image.os_hidden)
            .bind(&image.owner)
            .bind(&image.disk_format)
            .bind(&image.container_format)
            .bind(image.min_disk)
            .bind(image.min_ram)
            .bind(image.updated_at)
            .bind(&image.id)
            .bind(expected_status)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        self.db.query("DELETE FROM image_property WHERE image_id = ?").bind(&image.id).execute(&mut *tx).await?;
        self.db.query("DELETE FROM image_tag WHERE image_id = ?").bind(&image.id).execute(&mut *tx).await?;
        self.write_children(&mut tx, image).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Moves an image from status `from` to `to`; false if it was not in `from` (someone else moved it first).
    pub async fn image_transition(&self, id: &str, from: &str, to: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("UPDATE image_image SET status = ?, updated_at = ? WHERE id = ? AND status = ?")
            .bind(to)
            .bind(now_micros())
            .bind(id)
            .bind(from)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Records the data of an image and makes it active, if it is still in status `from`.
    pub async fn image_activate(&self, id: &str, from: &str, data: &DataRecord) -> Result<bool, Error> {
        let n = self
            .db
            .query(
                "UPDATE image_image SET status = 'active', size = ?, virtual_size = ?, checksum = ?, \
                 os_hash_algo = ?, os_hash_value = ?, store_id = ?, location = ?, updated_at = ? \
                 WHERE id = ? AND status = ?",
            )
            .bind(data.size)
            .bind(data.virtual_size)
            .bind(&data.checksum)
            .bind(&data.os_hash_algo)
            .bind(&data.os_hash_value)
            .bind(&data.store_id)
            .bind(&data.location)
            .bind(now_micros())
            .bind(id)
            .bind(from)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Replaces the locations of an active (or deactivated) image, if they are still `seen` (another request did
    /// not change them meanwhile). Returns whether they were written.
    pub async fn image_set_locations(
        &self,
        img: &ImageRow,
        locations: &[(String, String)],
    ) -> Result<bool, Error> {
        let (stores, locs) = encode_locations(locations);
        let n = self
            .db
            .query(
                "UPDATE image_image SET store_id = ?, location = ?, updated_at = ? \
                 WHERE id = ? AND store_id = ? AND location = ? AND status IN ('active', 'deactivated')",
            )
            .bind(&stores)
            .bind(&locs)
            .bind(now_micros())
            .bind(&img.id)
            .bind(&img.store_id)
            .bind(&img.location)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Forgets an active image's data (its import failed in a store that had to succeed): back to `queued`.
    pub async fn image_reset_data(&self, id: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query(
                "UPDATE image_image SET status = 'queued', size = NULL, virtual_size = NULL, checksum = NULL, \
                 os_hash_algo = NULL, os_hash_value = NULL, store_id = NULL, location = NULL, updated_at = ? \
                 WHERE id = ? AND status = 'active'",
            )
            .bind(now_micros())
            .bind(id)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Every image left in `status` (for recovery after a crash).
    pub async fn image_ids_with_status(&self, status: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .db
            .query_scalar("SELECT id FROM image_image WHERE status = ?")
            .bind(status)
            .fetch_all(self.db.pool())
            .await?)
    }

    /// Deletes an image and everything hanging off it. Returns whether it existed.
    pub async fn image_delete(&self, id: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM image_member WHERE image_id = ?").bind(id).execute(&mut *tx).await?;
        // Legacy `import` tasks outlive their image (they report its failure).
        self.db
            .query("DELETE FROM image_task WHERE image_id = ? AND type <> 'import'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.db.query("DELETE FROM image_tag WHERE image_id = ?").bind(id).execute(&mut *tx).await?;
        self.db.query("DELETE FROM image_property WHERE image_id = ?").bind(id).execute(&mut *tx).await?;
        let n = self.db.query("DELETE FROM image_image WHERE id = ?").bind(id).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Image count and total data size of a project's images.
    pub async fn project_usage(&self, owner: &str) -> Result<(i64, i64), Error> {
        let sizes: Vec<Option<i64>> = self
            .db
            .query_scalar("SELECT size FROM image_image WHERE owner = ?")
            .bind(owner)
            .fetch_all(self.db.pool())
            .await?;
        let total = sizes.iter().flatten().sum();
        Ok((sizes.len() as i64, total))
    }

    /// Sets one property of an image (the service's own `os_glance_*` bookkeeping), outside of metadata updates.
    pub async fn property_put(&self, image_id: &str, name: &str, value: &str) -> Result<(), Error> {
        self.properties_put(image_id, &[(name, value)]).await
    }

    /// Sets several properties in one transaction, so a reader sees all of them change or none.
    pub async fn properties_put(&self, image_id: &str, properties: &[(&str, &str)]) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        for (name, value) in properties {
            self.db
                .query("DELETE FROM image_property WHERE image_id = ? AND name = ?")
                .bind(image_id)
                .bind(*name)
                .execute(&mut *tx)
                .await?;
            // Only while the image exists: a property must not outlive its image.
            self.db
                .query("INSERT INTO image_property (image_id, name, value) SELECT ?, ?, ? FROM image_image WHERE id = ?")
                .bind(image_id)
                .bind(*name)
                .bind(*value)
                .bind(image_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds a tag; adding one that exists is a no-op.
    pub async fn tag_add(&self, image_id: &str, tag: &str) -> Result<(), Error> {
        let r = self
            .db
            .query("INSERT INTO image_tag (image_id, value) VALUES (?, ?)")
            .bind(image_id)
            .bind(tag)
            .execute(self.db.pool())
            .await;
        self.touch(image_id).await?;
        db::insert_unless_duplicate(r)?;
        Ok(())
    }

    /// Removes a tag; false if the image had no such tag.
    pub async fn tag_delete(&self, image_id: &str, tag: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM image_tag WHERE image_id = ? AND value = ?")
            .bind(image_id)
            .bind(tag)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        if n > 0 {
            self.touch(image_id).await?;
        }
        Ok(n > 0)
    }

    async fn touch(&self, image_id: &str) -> Result<(), Error> {
        self.db
            .query("UPDATE image_image SET updated_at = ? WHERE id = ?")
            .bind(now_micros())
            .bind(image_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn task_insert(&self, t: &TaskRow) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO image_task (id, image_id, type, status, owner, user_id, request_id, input, message, \
                 created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&t.id)
            .bind(&t.image_id)
            .bind(&t.kind)
            .bind(&t.status)
            .bind(&t.owner)
            .bind(&t.user_id)
            .bind(&t.request_id)
            .bind(&t.input)
            .bind(&t.message)
            .bind(t.created_at)
            .bind(t.updated_at)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Ends a task with `status` and a message.
    pub async fn task_finish(&self, id: &str, status: &str, message: &str) -> Result<(), Error> {
        self.db
            .query("UPDATE image_task SET status = ?, message = ?, updated_at = ? WHERE id = ?")
            .bind(status)
            .bind(message)
            .bind(now_micros())
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn task_get(&self, id: &str) -> Result<Option<TaskRow>, Error> {
        let row = self
            .db
            .query(
                "SELECT id, image_id, type, status, owner, user_id, request_id, input, message, created_at, \
                 updated_at FROM image_task WHERE id = ?",
            )
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.as_ref().map(task_from_row).transpose()?)
    }

    /// Every task, or those of one owner, newest first.
    pub async fn task_list_all(&self, owner: Option<&str>) -> Result<Vec<TaskRow>, Error> {
        let rows = match owner {
            Some(o) => {
                self.db
                    .query(
                        "SELECT id, image_id, type, status, owner, user_id, request_id, input, message, \
                         created_at, updated_at FROM image_task WHERE owner = ? ORDER BY created_at DESC, id",
                    )
                    .bind(o)
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => {
                self.db
                    .query(
                        "SELECT id, image_id, type, status, owner, user_id, request_id, input, message, \
                         created_at, updated_at FROM image_task ORDER BY created_at DESC, id",
                    )
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        Ok(rows.iter().map(task_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn task_list(&self, image_id: &str) -> Result<Vec<TaskRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT id, image_id, type, status, owner, user_id, request_id, input, message, created_at, \
                 updated_at FROM image_task WHERE image_id = ? ORDER BY created_at, id",
            )
            .bind(image_id)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(task_from_row).collect::<Result<_, _>>()?)
    }

    /// Adds a member (status `pending`); a duplicate is a conflict.
    pub async fn member_insert(&self, member: &MemberRow) -> Result<(), Error> {
        let r = self
            .db
            .query(
                "INSERT INTO image_member (image_id, member_id, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&member.image_id)
            .bind(&member.member_id)
            .bind(&member.status)
            .bind(member.created_at)
            .bind(member.updated_at)
            .execute(self.db.pool())
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = db::Error::from(e);
                if e.is_unique_violation() {
                    Err(Error::Conflict(format!(
                        "Member {} already exists for image {}.",
                        member.member_id, member.image_id
                    )))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    pub async fn member_get(&self, image_id: &str, member_id: &str) -> Result<Option<MemberRow>, Error> {
        let row = self
            .db
            .query(
                "SELECT image_id, member_id, status, created_at, updated_at FROM image_member \
                 WHERE image_id = ? AND member_id = ?",
            )
            .bind(image_id)
            .bind(member_id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.as_ref().map(member_from_row).transpose()?)
    }

    pub async fn member_list(&self, image_id: &str) -> Result<Vec<MemberRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT image_id, member_id, status, created_at, updated_at FROM image_member \
                 WHERE image_id = ? ORDER BY created_at, member_id",
            )
            .bind(image_id)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(member_from_row).collect::<Result<_, _>>()?)
    }

    /// Every membership of one project: image id → status.
    pub async fn member_statuses(&self, member_id: &str) -> Result<BTreeMap<String, String>, Error> {
        let rows = self
            .db
            .query("SELECT image_id, status FROM image_member WHERE member_id = ?")
            .bind(member_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get("image_id")?, r.try_get("status")?))).collect()
    }

    /// Sets a member's status; false if there is no such member.
    pub async fn member_update(&self, image_id: &str, member_id: &str, status: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("UPDATE image_member SET status = ?, updated_at = ? WHERE image_id = ? AND member_id = ?")
            .bind(status)
            .bind(now_micros())
            .bind(image_id)
            .bind(member_id)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    pub async fn member_delete(&self, image_id: &str, member_id: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM image_member WHERE image_id = ? AND member_id = ?")
            .bind(image_id)
            .bind(member_id)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}
