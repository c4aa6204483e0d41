//! Transactions and concurrency.

use db::sqlx::Acquire;
use db::testing::test_databases;
use db::{Database, Migration};

const SCHEMA: &[Migration] = &[Migration {
    version: 1,
    name: "counter and log",
    sql: "CREATE TABLE counter (id {id} PRIMARY KEY, n {int} NOT NULL);
          INSERT INTO counter (id, n) VALUES ('c', 0);
          CREATE TABLE log (pk {serial}, worker {int} NOT NULL, seen {int} NOT NULL)",
}];

async fn count_log(db: &Database) -> i64 {
    db.query_scalar("SELECT COUNT(*) FROM log")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

fn insert_log(
    db: &Database,
    worker: i64,
) -> db::sqlx::query::Query<'static, db::sqlx::Any, db::sqlx::any::AnyArguments> {
    db.query("INSERT INTO log (worker, seen) VALUES (?, 0)")
        .bind(worker)
}

#[tokio::test]
async fn commit_and_rollback() {
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("tx", SCHEMA).await.unwrap();

        // Commit through the pool's plain transaction.
        let mut tx = db.pool().begin().await.unwrap();
        insert_log(&db, 1).execute(&mut *tx).await.unwrap();
        insert_log(&db, 1).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count_log(&db).await, 2, "{b}");

        // Explicit rollback.
        let mut tx = db.pool().begin().await.unwrap();
        insert_log(&db, 2).execute(&mut *tx).await.unwrap();
        let inside: i64 = db
            .query_scalar("SELECT COUNT(*) FROM log")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(inside, 3, "{b}");
        tx.rollback().await.unwrap();
        assert_eq!(count_log(&db).await, 2, "{b}");

        // Dropping an uncommitted transaction rolls it back.
        {
            let mut tx = db.begin().await.unwrap();
            insert_log(&db, 3).execute(&mut *tx).await.unwrap();
        }
        assert_eq!(count_log(&db).await, 2, "{b}");

        // Savepoints through nested transactions.
        let mut tx = db.begin().await.unwrap();
        insert_log(&db, 4).execute(&mut *tx).await.unwrap();
        {
            let mut inner = tx.begin().await.unwrap();
            insert_log(&db, 5).execute(&mut *inner).await.unwrap();
            inner.rollback().await.unwrap();
        }
        tx.commit().await.unwrap();
        let workers: Vec<i64> = db
            .query_scalar("SELECT worker FROM log ORDER BY pk")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(workers, [1, 1, 4], "{b}");
        db.cleanup().await;
    }
}

#[tokio::test]
async fn concurrent_inserts() {
    const TASKS: i64 = 8;
    const EACH: i64 = 25;
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("tx", SCHEMA).await.unwrap();
        let mut handles = Vec::new();
        for worker in 0..TASKS {
            let db = (*db).clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..EACH {
                    insert_log(&db, worker).execute(db.pool()).await?;
                }
                Ok::<_, db::sqlx::Error>(())
            }));
        }
        for handle in handles {
            handle.await.unwrap().unwrap_or_else(|e| panic!("{b}: {e}"));
        }
        assert_eq!(count_log(&db).await, TASKS * EACH, "{b}");
        let distinct: i64 = db
            .query_scalar("SELECT COUNT(DISTINCT pk) FROM log")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(distinct, TASKS * EACH, "{b}");
        db.cleanup().await;
    }
}

/// Read-then-write transactions from many tasks: on SQLite these only succeed because
/// `Database::begin` takes the write lock up front (`BEGIN IMMEDIATE`), with or without the in-process turn.
#[tokio::test]
async fn concurrent_read_write_transactions() {
    const TASKS: i64 = 8;
    const EACH: i64 = 10;
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("tx", SCHEMA).await.unwrap();
        let mut handles = Vec::new();
        for worker in 0..TASKS {
            let db = (*db).clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..EACH {
                    // half of the workers queue for the in-process turn first, half go straight to the database
                    let mut tx = if worker % 2 == 0 { db.begin().await? } else { db.begin_unqueued().await? };
                    let seen: i64 = db
                        .query_scalar("SELECT n FROM counter WHERE id = 'c'")
                        .fetch_one(&mut *tx)
                        .await?;
                    db.query("INSERT INTO log (worker, seen) VALUES (?, ?)")
                        .bind(worker)
                        .bind(seen)
                        .execute(&mut *tx)
                        .await?;
                    db.query("UPDATE counter SET n = n + 1 WHERE id = 'c'")
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                }
                Ok::<_, db::Error>(())
            }));
        }
        for handle in handles {
            handle.await.unwrap().unwrap_or_else(|e| panic!("{b}: {e}"));
        }
        let n: i64 = db
            .query_scalar("SELECT n FROM counter")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, TASKS * EACH, "{b}");
        assert_eq!(count_log(&db).await, TASKS * EACH, "{b}");
        db.cleanup().await;
    }
}

/// A write that finds the lock held waits for it, past the busy handler's short steps, and then goes through; it
/// never fails while the holder finishes within the timeout.
#[tokio::test]
async fn a_writer_waits_out_a_long_transaction() {
    for db in test_databases().await {
        let b = db.backend();
        db.migrate("tx", SCHEMA).await.unwrap();
        let mut holder = db.begin().await.unwrap();
        db.query("UPDATE counter SET n = n + 1 WHERE id = 'c'")
            .execute(&mut *holder)
            .await
            .unwrap();
        let waiter = {
            let db = (*db).clone();
            tokio::spawn(async move {
                db.query("UPDATE counter SET n = n * 10 WHERE id = 'c'")
                    .execute(db.pool())
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "{b}: the second writer waits for the first");
        holder.commit().await.unwrap();
        waiter.await.unwrap().unwrap_or_else(|e| panic!("{b}: {e}"));
        let n: i64 = db
            .query_scalar("SELECT n FROM counter WHERE id = 'c'")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 10, "{b}: the waiting write ran after the first committed");
        db.cleanup().await;
    }
}

/// On a SQLite file, transactions waiting for their turn hold no connection: they queue in the process, not in
/// SQLite's lock, and each starts when the one before it ends.
#[tokio::test]
async fn sqlite_transactions_queue_for_their_turn_without_a_connection() {
    for db in test_databases().await {
        if db.backend() != db::Backend::Sqlite {
            db.cleanup().await;
            continue;
        }
        db.migrate("tx", SCHEMA).await.unwrap();
        let mut holder = db.begin().await.unwrap();
        insert_log(&db, 0).execute(&mut *holder).await.unwrap();
        let in_use = |db: &Database| db.pool().size() as usize - db.pool().num_idle();
        assert_eq!(in_use(&db), 1);
        let waiters: Vec<_> = (1..=3)
            .map(|worker| {
                let db = (*db).clone();
                tokio::spawn(async move {
                    let mut tx = db.begin().await?;
                    let before = count_log(&db).await;
                    insert_log(&db, worker).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok::<_, db::Error>(before)
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        assert_eq!(in_use(&db), 1, "waiting for the turn takes no connection");
        holder.commit().await.unwrap();
        let mut before = Vec::new();
        for w in waiters {
            before.push(w.await.unwrap().unwrap());
        }
        before.sort();
        assert_eq!(before, [1, 2, 3], "each transaction saw the ones before it committed");
        assert_eq!(count_log(&db).await, 4);
        db.cleanup().await;
    }
}
