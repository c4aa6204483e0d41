//! Every column type token round-trips through the `Any` driver on every backend.

use db::sqlx::Row;
use db::testing::test_databases;
use db::{Bool, Migration};

const THINGS: &[Migration] = &[Migration {
    version: 1,
    name: "things",
    sql: "CREATE TABLE things (
              pk {serial},
              id {id} NOT NULL UNIQUE,
              name {name},
              body {text},
              flag {bool},
              n {int},
              data {blob}
          )",
}];

type Thing = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<Bool>,
    Option<i64>,
    Option<Vec<u8>>,
);

const SELECT: &str = "SELECT pk, id, name, body, flag, n, data FROM things WHERE id = ?";
const INSERT: &str = "INSERT INTO things (id, name, body, flag, n, data) VALUES (?, ?, ?, ?, ?, ?)";

#[tokio::test]
async fn every_token_round_trips() {
    // Long text with everything that could confuse a driver or our SQL scanner.
    let body: String = "Zoë's ✓ text; with ? and '' and \\ and \"quotes\"\n".repeat(3000);
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();

    for db in test_databases().await {
        let b = db.backend();
        db.migrate("types", THINGS).await.unwrap();

        // Values, including the extremes.
        db.query(INSERT)
            .bind("full")
            .bind("Zoë ✓")
            .bind(&body)
            .bind(true)
            .bind(i64::MAX)
            .bind(bytes.clone())
            .execute(db.pool())
            .await
            .unwrap();
        // Empty and false/negative values.
        db.query(INSERT)
            .bind("empty")
            .bind("")
            .bind("")
            .bind(false)
            .bind(i64::MIN)
            .bind(Vec::<u8>::new())
            .execute(db.pool())
            .await
            .unwrap();
        // NULLs of every type.
        db.query(INSERT)
            .bind("nulls")
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<bool>)
            .bind(None::<i64>)
            .bind(None::<Vec<u8>>)
            .execute(db.pool())
            .await
            .unwrap();

        let full: Thing = db
            .query_as(SELECT)
            .bind("full")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(full.1, "full", "{b}");
        assert_eq!(full.2.as_deref(), Some("Zoë ✓"), "{b}");
        assert!(
            full.3.as_deref() == Some(body.as_str()),
            "{b}: long text differs"
        );
        assert_eq!(full.4, Some(Bool(true)), "{b}");
        assert_eq!(full.5, Some(i64::MAX), "{b}");
        assert!(
            full.6.as_deref() == Some(bytes.as_slice()),
            "{b}: blob differs"
        );

        let empty: Thing = db
            .query_as(SELECT)
            .bind("empty")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(
            (
                empty.2.as_deref(),
                empty.3.as_deref(),
                empty.4,
                empty.5,
                empty.6.as_deref()
            ),
            (
                Some(""),
                Some(""),
                Some(Bool(false)),
                Some(i64::MIN),
                Some(&[][..])
            ),
            "{b}"
        );

        let nulls: Thing = db
            .query_as(SELECT)
            .bind("nulls")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(
            (nulls.2, nulls.3, nulls.4, nulls.5, nulls.6),
            (None, None, None, None, None),
            "{b}"
        );

        // Serial keys are assigned in order.
        assert!(full.0 < empty.0 && empty.0 < nulls.0, "{b}");

        // The same through `Row::try_get` by column name.
        let row = db
            .query(SELECT)
            .bind("full")
            .fetch_one(db.pool())
            .await
            .unwrap();
        let name: String = row.try_get("name").unwrap();
        let flag: bool = row.try_get::<Bool, _>("flag").unwrap().into();
        let data: Vec<u8> = row.try_get("data").unwrap();
        let n: i64 = row.try_get("n").unwrap();
        let null_body: Option<String> = db
            .query(SELECT)
            .bind("nulls")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .try_get("body")
            .unwrap();
        assert_eq!(
            (name.as_str(), flag, data.len(), n, null_body),
            ("Zoë ✓", true, 70_000, i64::MAX, None),
            "{b}"
        );

        db.cleanup().await;
    }
}

#[tokio::test]
async fn booleans_filter_and_decode_from_expressions() {
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("types", THINGS).await.unwrap();
        for (id, flag) in [("a", true), ("b", false), ("c", true)] {
            db.query("INSERT INTO things (id, flag) VALUES (?, ?)")
                .bind(id)
                .bind(flag)
                .execute(db.pool())
                .await
                .unwrap();
        }
        // Bound and literal booleans compare on every backend.
        let bound: i64 = db
            .query_scalar("SELECT COUNT(*) FROM things WHERE flag = ?")
            .bind(true)
            .fetch_one(db.pool())
            .await
            .unwrap();
        let literal: i64 = db
            .query_scalar("SELECT COUNT(*) FROM things WHERE flag = FALSE")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!((bound, literal), (2, 1), "{b}");

        // Boolean expressions decode as `Bool`.
        for (id, expected) in [("a", true), ("zzz", false)] {
            let exists: Bool = db
                .query_scalar("SELECT EXISTS (SELECT 1 FROM things WHERE id = ?)")
                .bind(id)
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(exists, Bool(expected), "{b}");
        }
        // `Bool` binds like `bool`.
        let n: i64 = db
            .query_scalar("SELECT COUNT(*) FROM things WHERE flag = ?")
            .bind(Bool(false))
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 1, "{b}");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn strings_compare_exactly_on_every_backend() {
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("types", THINGS).await.unwrap();
        // Case and accent variants are distinct unique keys (utf8mb4_bin on MariaDB).
        for id in ["abc", "ABC", "abç"] {
            db.query("INSERT INTO things (id) VALUES (?)")
                .bind(id)
                .execute(db.pool())
                .await
                .unwrap();
        }
        let ids: Vec<String> = db
            .query_scalar("SELECT id FROM things WHERE id = ?")
            .bind("ABC")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(ids, ["ABC"], "{b}");
        for (id, name) in [("n1", "Straße"), ("n2", "STRASSE"), ("n3", "strasse")] {
            db.query("INSERT INTO things (id, name, body) VALUES (?, ?, ?)")
                .bind(id)
                .bind(name)
                .bind(name)
                .execute(db.pool())
                .await
                .unwrap();
        }
        let ids: Vec<String> = db
            .query_scalar("SELECT id FROM things WHERE name = ? OR body = ?")
            .bind("strasse")
            .bind("strasse")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(ids, ["n3"], "{b}");
        db.cleanup().await;
    }
}
