//! Connecting: URL forms and per-backend session setup.

use db::testing::{test_database, test_databases};
use db::{Backend, Database, Error};

#[tokio::test]
async fn sqlite_file_and_directories_are_created_with_wal_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("deeper").join("stratus.db");
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(db.backend(), Backend::Sqlite);
    assert!(path.is_file());

    let mode: String = db
        .query_scalar("PRAGMA journal_mode")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = db
        .query_scalar("PRAGMA foreign_keys")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    // The busy handler is installed on every connection (it answers 1 when it took the place of the pragma's).
    let installed: i64 = db
        .query_scalar("SELECT stratus_busy_handler()")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(installed, 1);
    let pragma: i64 = db
        .query_scalar("PRAGMA busy_timeout")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(pragma, 0, "the pragma's handler is gone");
    db.close().await;

    // Reopening finds the data.
    let db = Database::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    db.query("CREATE TABLE t (x BIGINT)")
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;
    let db = Database::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let n: i64 = db
        .query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    db.close().await;
}

#[tokio::test]
async fn sqlite_memory_is_one_database_across_queries() {
    let db = Database::connect("sqlite::memory:").await.unwrap();
    let schema = db::Migration {
        version: 1,
        name: "t",
        sql: "CREATE TABLE t (x {int})",
    };
    db.migrate("memory", &[schema]).await.unwrap();
    db.migrate("memory", &[schema]).await.unwrap();
    for i in 0..5_i64 {
        db.query("INSERT INTO t VALUES (?)")
            .bind(i)
            .execute(db.pool())
            .await
            .unwrap();
    }
    let n: i64 = db
        .query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 5);
    let fk: i64 = db
        .query_scalar("PRAGMA foreign_keys")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    db.close().await;
}

#[tokio::test]
async fn mariadb_scheme_is_mysql() {
    let Some(test) = test_database(Backend::MySql).await else {
        return;
    };
    let url = test.url().replacen("mysql://", "mariadb://", 1);
    let db = Database::connect(&url).await.unwrap();
    assert_eq!(db.backend(), Backend::MySql);
    let one: i64 = db
        .query_scalar("SELECT 1")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(one, 1);
    db.close().await;
    test.cleanup().await;
}

#[tokio::test]
async fn server_session_settings_are_applied() {
    for db in test_databases().await {
        match db.backend() {
            Backend::MySql => {
                let mode: String = db
                    .query_scalar("SELECT @@SESSION.sql_mode")
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
                for flag in [
                    "ANSI_QUOTES",
                    "NO_BACKSLASH_ESCAPES",
                    "STRICT_ALL_TABLES",
                    "PIPES_AS_CONCAT",
                ] {
                    assert!(mode.contains(flag), "sql_mode {mode} lacks {flag}");
                }
                // MariaDB < 11.1 and MySQL < 8 name the variable `tx_isolation`.
                let mut iso = db
                    .query_scalar::<String>("SELECT @@SESSION.transaction_isolation")
                    .fetch_one(db.pool())
                    .await;
                if iso.is_err() {
                    iso = db
                        .query_scalar("SELECT @@SESSION.tx_isolation")
                        .fetch_one(db.pool())
                        .await;
                }
                let iso = iso.unwrap();
                assert_eq!(iso, "READ-COMMITTED");
            }
            Backend::Postgres => {
                let iso: String = db
                    .query_scalar("SELECT current_setting('default_transaction_isolation')")
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
                assert_eq!(iso, "read committed");
                let cost: String = db
                    .query_scalar("SELECT current_setting('random_page_cost')")
                    .fetch_one(db.pool())
                    .await
                    .unwrap();
                assert_eq!(cost, "1.1");
            }
            Backend::Sqlite => {}
        }
        db.cleanup().await;
    }
}

#[tokio::test]
async fn bad_urls_are_errors() {
    assert!(matches!(
        Database::connect("oracle://u:secret@h/x").await,
        Err(Error::UnsupportedUrl(s)) if s == "oracle"
    ));
    assert!(matches!(
        Database::connect("sqlite://").await,
        Err(Error::InvalidUrl(_))
    ));
}

#[tokio::test]
async fn server_errors_do_not_leak_credentials() {
    // (Unreachable servers are retried until the pool's acquire timeout, by design.)
    for test in test_databases().await {
        if test.backend() == Backend::Sqlite {
            test.cleanup().await;
            continue;
        }
        let mut url = url::Url::parse(test.url()).unwrap();
        url.set_username("stratus_no_such_role").unwrap();
        url.set_password(Some("pa55word")).unwrap();
        let err = Database::connect(url.as_str()).await.unwrap_err();
        assert!(matches!(err, Error::Sqlx(_)), "{err}");
        assert!(!err.to_string().contains("pa55word"), "{err}");
        test.cleanup().await;
    }
}
