//! Portable query features: placeholders, quoting, RETURNING, pagination, constraint errors.

use std::borrow::Cow;

use db::sqlx::AssertSqlSafe;
use db::testing::test_databases;
use db::{Backend, Error, Migration};

const SCHEMA: &[Migration] = &[Migration {
    version: 1,
    name: "users and keys",
    sql: "CREATE TABLE \"user\" (
              pk {serial},
              id {id} NOT NULL,
              \"key\" {name} NOT NULL,
              note {text}
          );
          CREATE UNIQUE INDEX IF NOT EXISTS user_id ON \"user\" (id);
          CREATE TABLE grant_ (
              user_id {id} NOT NULL REFERENCES \"user\" (id),
              role {name} NOT NULL,
              PRIMARY KEY (user_id, role)
          )",
}];

#[tokio::test]
async fn placeholders_are_rewritten_outside_literals() {
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("q", SCHEMA).await.unwrap();

        let rewritten = db.sql("SELECT '?' FROM t WHERE a = ?");
        match b {
            Backend::Postgres => assert_eq!(rewritten, "SELECT '?' FROM t WHERE a = $1"),
            _ => assert!(matches!(
                rewritten,
                Cow::Borrowed("SELECT '?' FROM t WHERE a = ?")
            )),
        }

        db.query("INSERT INTO \"user\" (id, \"key\", note) VALUES (?, 'what?', 'it''s ?')")
            .bind("u1")
            .execute(db.pool())
            .await
            .unwrap();
        let (key, note): (String, String) = db
            .query_as(
                "SELECT \"key\", note FROM \"user\" /* ? */ WHERE \"key\" <> '?' AND id = ? -- ?\n",
            )
            .bind("u1")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!((key.as_str(), note.as_str()), ("what?", "it's ?"), "{b}");

        // Concatenation, backslashes in literals and many placeholders.
        let s: String = db
            .query_scalar("SELECT 'a\\b' || ? || ?")
            .bind("?")
            .bind("c")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(s, "a\\b?c", "{b}");

        // Runtime-built SQL (an IN list) goes through AssertSqlSafe.
        let ids = ["u1", "nope", "u1", "x", "y", "z", "a", "b", "c", "d", "e"];
        let sql = format!(
            "SELECT COUNT(*) FROM \"user\" WHERE id IN ({})",
            vec!["?"; ids.len()].join(", ")
        );
        let mut q = db.query_scalar::<i64>(AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id);
        }
        assert_eq!(q.fetch_one(db.pool()).await.unwrap(), 1, "{b}");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn returning_and_pagination() {
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("q", SCHEMA).await.unwrap();
        let mut pks = Vec::new();
        for i in 0..5 {
            let pk: i64 = db
                .query_scalar("INSERT INTO \"user\" (id, \"key\") VALUES (?, ?) RETURNING pk")
                .bind(format!("u{i}"))
                .bind("k")
                .fetch_one(db.pool())
                .await
                .unwrap();
            pks.push(pk);
        }
        assert!(pks.windows(2).all(|w| w[0] < w[1]), "{b}: {pks:?}");

        let page: Vec<String> = db
            .query_scalar("SELECT id FROM \"user\" ORDER BY id LIMIT ? OFFSET ?")
            .bind(2_i64)
            .bind(1_i64)
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(page, ["u1", "u2"], "{b}");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn constraint_violations_are_classified() {
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("q", SCHEMA).await.unwrap();
        let insert_user = |id: &'static str| {
            db.query("INSERT INTO \"user\" (id, \"key\") VALUES (?, 'k')")
                .bind(id)
        };
        insert_user("u1").execute(db.pool()).await.unwrap();

        // Unique index.
        let err = Error::from(insert_user("u1").execute(db.pool()).await.unwrap_err());
        assert!(err.is_unique_violation(), "{b}: {err}");
        assert!(!err.is_foreign_key_violation(), "{b}: {err}");

        // Composite primary key.
        let grant = |user: &'static str| {
            db.query("INSERT INTO grant_ (user_id, role) VALUES (?, 'admin')")
                .bind(user)
        };
        grant("u1").execute(db.pool()).await.unwrap();
        let err = Error::from(grant("u1").execute(db.pool()).await.unwrap_err());
        assert!(err.is_unique_violation(), "{b}: {err}");
        // Inserts where an existing row will do: the duplicate is reported, not raised; other errors still are.
        assert!(!db::insert_unless_duplicate(grant("u1").execute(db.pool()).await).unwrap(), "{b}");
        assert!(db::insert_unless_duplicate(insert_user("u9").execute(db.pool()).await).unwrap(), "{b}");
        assert!(db::insert_unless_duplicate(grant("ghost").execute(db.pool()).await).is_err(), "{b}");

        // Foreign key (SQLite enforces it only with the pragma set by `connect`).
        let err = Error::from(grant("ghost").execute(db.pool()).await.unwrap_err());
        assert!(err.is_foreign_key_violation(), "{b}: {err}");
        assert!(!err.is_unique_violation(), "{b}: {err}");

        // Other errors are neither.
        let err = Error::from(
            db.query("SELECT nope FROM nowhere")
                .execute(db.pool())
                .await
                .unwrap_err(),
        );
        assert!(
            !err.is_unique_violation() && !err.is_foreign_key_violation(),
            "{b}: {err}"
        );
        db.cleanup().await;
    }
}
