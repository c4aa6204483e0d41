//! Migrations: ordering, idempotence, per-service history, drift, failure, concurrency.

use db::testing::test_databases;
use db::{Backend, Database, Error, Migration};

const V1: Migration = Migration {
    version: 1,
    name: "create projects",
    sql: "CREATE TABLE project (id {id} PRIMARY KEY, name {name} NOT NULL);
          CREATE INDEX IF NOT EXISTS project_name ON project (name);",
};
const V2: Migration = Migration {
    version: 2,
    name: "project enabled flag and default project",
    sql: "ALTER TABLE project ADD COLUMN enabled {bool} NOT NULL DEFAULT TRUE;
          INSERT INTO project (id, name) VALUES ('default', 'Default; with a semicolon')",
};
const V3: Migration = Migration {
    version: 3,
    name: "project extra",
    sql: "CREATE TABLE project_extra (project_id {id} NOT NULL REFERENCES project (id), extra {text})",
};

async fn history(db: &Database, service: &str) -> Vec<(i64, String, i64)> {
    db.query_as("SELECT version, name, applied_at FROM schema_migrations WHERE service = ? ORDER BY version")
        .bind(service)
        .fetch_all(db.pool())
        .await
        .unwrap()
}

async fn count(db: &Database, sql: &'static str) -> i64 {
    db.query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

async fn table_exists(db: &Database, table: &str) -> bool {
    // Works on all three: a failing SELECT means the table is missing.
    let sql = format!("SELECT COUNT(*) FROM {table}");
    db.query(db::sqlx::AssertSqlSafe(sql))
        .fetch_one(db.pool())
        .await
        .is_ok()
}

#[tokio::test]
async fn applies_in_order_and_is_idempotent() {
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("identity", &[V1, V2]).await.unwrap();
        let first = history(&db, "identity").await;
        assert_eq!(
            first
                .iter()
                .map(|(v, n, _)| (*v, n.as_str()))
                .collect::<Vec<_>>(),
            [(1, V1.name), (2, V2.name)],
            "{b}"
        );
        assert!(first.iter().all(|(_, _, at)| *at > 1_600_000_000), "{b}");
        let (name, enabled): (String, db::Bool) = db
            .query_as("SELECT name, enabled FROM project WHERE id = 'default'")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(
            (name.as_str(), enabled.0),
            ("Default; with a semicolon", true),
            "{b}"
        );

        // Second run: nothing re-applied (the INSERT would add nothing new but fail on the key).
        db.migrate("identity", &[V1, V2]).await.unwrap();
        assert_eq!(history(&db, "identity").await, first, "{b}");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM project").await, 1, "{b}");

        // Later code adds a migration: only that one runs.
        db.migrate("identity", &[V1, V2, V3]).await.unwrap();
        assert_eq!(history(&db, "identity").await.len(), 3, "{b}");
        assert!(table_exists(&db, "project_extra").await, "{b}");

        // Another service keeps its own history with the same version numbers.
        let other = Migration {
            version: 1,
            name: "create images",
            sql: "CREATE TABLE image (id {id} PRIMARY KEY)",
        };
        db.migrate("image", &[other]).await.unwrap();
        assert_eq!(history(&db, "image").await.len(), 1, "{b}");
        assert_eq!(history(&db, "identity").await.len(), 3, "{b}");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn drift_is_refused() {
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("identity", &[V1, V2]).await.unwrap();

        // A recorded migration renamed in code.
        let renamed = Migration {
            name: "something else",
            ..V2
        };
        let err = db
            .migrate("identity", &[V1, renamed, V3])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::MigrationDrift { version: 2, recorded, expected: Some(e), .. }
                if recorded == V2.name && e == "something else"),
            "{b}: {err}"
        );
        // Nothing after the drift was applied.
        assert!(!table_exists(&db, "project_extra").await, "{b}");

        // The database is newer than the code.
        let err = db.migrate("identity", &[V1]).await.unwrap_err();
        assert!(
            matches!(
                &err,
                Error::MigrationDrift {
                    version: 2,
                    expected: None,
                    ..
                }
            ),
            "{b}: {err}"
        );

        // Malformed lists are refused before touching the database.
        let err = db.migrate("identity", &[V2, V1]).await.unwrap_err();
        assert!(matches!(err, Error::InvalidMigrations { .. }), "{b}: {err}");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn failed_migration_is_not_recorded() {
    let broken = Migration {
        version: 3,
        name: "broken",
        sql: "CREATE TABLE half_done (id {id});
              INSERT INTO no_such_table VALUES (1)",
    };
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("identity", &[V1, V2]).await.unwrap();
        let err = db.migrate("identity", &[V1, V2, broken]).await.unwrap_err();
        assert!(
            matches!(&err, Error::MigrationFailed { version: 3, .. }),
            "{b}: {err}"
        );
        assert_eq!(history(&db, "identity").await.len(), 2, "{b}");
        // Transactional DDL rolls the first statement back; MariaDB commits DDL implicitly.
        assert_eq!(
            table_exists(&db, "half_done").await,
            b == Backend::MySql,
            "{b}"
        );

        // Unknown type tokens are reported, not sent to the server.
        let typo = Migration {
            version: 3,
            name: "typo",
            sql: "CREATE TABLE x (a {uuid})",
        };
        let err = db.migrate("identity", &[V1, V2, typo]).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSql(m) if m.contains("{uuid}")),
            "{b}: {err}"
        );
        db.cleanup().await;
    }
}

#[tokio::test]
async fn concurrent_migrators_apply_once() {
    for test in test_databases().await {
        let b = test.backend();
        // Separate pools, as separate processes would have.
        let mut handles = Vec::new();
        for _ in 0..4 {
            let db = Database::connect(test.url()).await.unwrap();
            handles.push(tokio::spawn(async move {
                let result = db.migrate("identity", &[V1, V2, V3]).await;
                db.close().await;
                result
            }));
        }
        for handle in handles {
            handle.await.unwrap().unwrap_or_else(|e| panic!("{b}: {e}"));
        }
        assert_eq!(history(&test, "identity").await.len(), 3, "{b}");
        assert_eq!(count(&test, "SELECT COUNT(*) FROM project").await, 1, "{b}");
        test.cleanup().await;
    }
}
