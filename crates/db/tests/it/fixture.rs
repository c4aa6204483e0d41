//! The `db::testing` fixture itself.

use db::testing::{test_database, test_databases};
use db::{Backend, Database};

#[tokio::test]
async fn databases_are_isolated_and_dropped() {
    let first = test_databases().await;
    let second = test_databases().await;
    assert_eq!(first[0].backend(), Backend::Sqlite);
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.backend(), b.backend());
        assert_ne!(a.url(), b.url());
        a.query("CREATE TABLE only_here (x BIGINT)")
            .execute(a.pool())
            .await
            .unwrap();
        let seen = b
            .query("SELECT COUNT(*) FROM only_here")
            .execute(b.pool())
            .await;
        assert!(seen.is_err(), "{}: databases are shared", a.backend());
    }
    let urls: Vec<(Backend, String)> = first
        .iter()
        .map(|db| (db.backend(), db.url().to_owned()))
        .collect();
    for db in first.into_iter().chain(second) {
        db.cleanup().await;
    }
    for (backend, url) in urls.into_iter().filter(|(b, _)| *b != Backend::Sqlite) {
        assert!(
            Database::connect(&url).await.is_err(),
            "{backend}: database still exists"
        );
    }
}

#[tokio::test]
async fn dropping_without_cleanup_still_drops_the_database() {
    for backend in [Backend::Postgres, Backend::MySql] {
        let Some(db) = test_database(backend).await else {
            continue;
        };
        let url = db.url().to_owned();
        db.query("SELECT 1").execute(db.pool()).await.unwrap();
        drop(db);
        assert!(
            Database::connect(&url).await.is_err(),
            "{backend}: database still exists"
        );
    }
}
