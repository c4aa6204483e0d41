//! Test fixtures: a fresh, isolated database on every reachable backend, so the same datastore
//! test runs on SQLite, PostgreSQL and MariaDB.
//!
//! ```ignore
//! #[tokio::test]
//! async fn creates_users() {
//!     for db in db::testing::test_databases().await {
//!         db.migrate("identity", MIGRATIONS).await.unwrap();
//!         // ... exercise the datastore on `*db` ...
//!         db.cleanup().await;
//!     }
//! }
//! ```
//!
//! * SQLite: a file in a temporary directory.
//! * PostgreSQL: a new database `stratus_test_<unix time>_<random>` on the server named by
//!   `STRATUS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! * MariaDB: the same on `STRATUS_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`;
//!   the path is ignored), created with `utf8mb4` and the server's default collation, as an
//!   operator would, so tests see what the `{token}` column collations do.
//!
//! An unreachable server is skipped with a note on stderr, unless
//! `STRATUS_TEST_REQUIRE_ALL_DBS=1` (as in CI), which makes the fixture panic instead.
//!
//! [`TestDb::cleanup`] drops the database; dropping a `TestDb` without it (for example when a
//! test panics) drops the database from a helper thread. Databases left behind by killed test
//! processes are dropped by the first fixture call of a later run once they are an hour old.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};
use tempfile::TempDir;
use url::Url;

use crate::{Backend, Database};

pub const POSTGRES_URL_ENV: &str = "STRATUS_TEST_POSTGRES_URL";
pub const MYSQL_URL_ENV: &str = "STRATUS_TEST_MYSQL_URL";
pub const REQUIRE_ALL_ENV: &str = "STRATUS_TEST_REQUIRE_ALL_DBS";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

const PREFIX: &str = "stratus_test_";
const STALE_AFTER: Duration = Duration::from_secs(3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh database for one test. Derefs to [`Database`].
pub struct TestDb {
    db: Database,
    url: String,
    guard: Option<Guard>,
}

enum Guard {
    Sqlite(TempDir),
    Server(ServerDb),
}

/// A database created on a server, and how to reach the server to drop it.
struct ServerDb {
    backend: Backend,
    admin_url: String,
    name: String,
}

impl Deref for TestDb {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.db
    }
}

impl TestDb {
    /// The connection URL of this test database (for a second pool or a whole test cloud).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes the pool and drops the database.
    pub async fn cleanup(mut self) {
        self.db.close().await;
        match self.guard.take() {
            Some(Guard::Server(server)) => server.drop_database().await,
            Some(Guard::Sqlite(dir)) => drop(dir),
            None => {}
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(Guard::Server(server)) = self.guard.take() {
            // Async work from a synchronous drop: run it on a private runtime in a helper
            // thread, so this also works inside the test's own (possibly single-thread) runtime.
            let done =
                std::thread::spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(server.drop_database()),
                        Err(e) => eprintln!("note: cannot drop test database {}: {e}", server.name),
                    }
                })
                .join();
            if done.is_err() {
                eprintln!("note: dropping a test database panicked");
            }
        }
    }
}

/// One fresh database per reachable backend: always SQLite, plus PostgreSQL and MariaDB when
/// their servers answer (see the [module docs](self)).
pub async fn test_databases() -> Vec<TestDb> {
    let mut dbs = Vec::with_capacity(3);
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        dbs.extend(test_database(backend).await);
    }
    dbs
}

/// A fresh database on `backend`, or `None` if its server is unreachable and not required.
pub async fn test_database(backend: Backend) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => Some(sqlite().await),
        Backend::Postgres | Backend::MySql => server(backend).await,
    }
}

async fn sqlite() -> TestDb {
    let dir = tempfile::Builder::new()
        .prefix("stratus-test-db-")
        .tempdir()
        .expect("create a temporary directory for a SQLite test database");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let db = Database::connect(&url)
        .await
        .expect("open a SQLite test database");
    TestDb {
        db,
        url,
        guard: Some(Guard::Sqlite(dir)),
    }
}

async fn server(backend: Backend) -> Option<TestDb> {
    let (env, default) = match backend {
        Backend::Postgres => (POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL),
        _ => (MYSQL_URL_ENV, DEFAULT_MYSQL_URL),
    };
    let configured = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    let mut admin =
        Url::parse(&configured).unwrap_or_else(|e| panic!("{env} is not a valid URL: {e}"));
    if backend == Backend::MySql {
        // Connect without selecting a database: it may not exist.
        admin.set_path("");
    }
    let admin_url = admin.to_string();

    if let Err(e) = ping(backend, &admin_url).await {
        if std::env::var(REQUIRE_ALL_ENV).is_ok_and(|v| v == "1") {
            panic!("{backend} test server ({env}) unreachable and {REQUIRE_ALL_ENV}=1: {e}");
        }
        eprintln!("note: skipping {backend} tests: test server ({env}) unreachable: {e}");
        return None;
    }
    drop_stale_databases(backend, &admin_url).await;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let random = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("{PREFIX}{now}_{}", &random[..12]);
    let create = match backend {
        Backend::Postgres => format!("CREATE DATABASE \"{name}\""),
        _ => format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"),
    };
    admin_execute(backend, &admin_url, &create)
        .await
        .unwrap_or_else(|e| panic!("create {backend} test database: {e}"));
    let server = ServerDb {
        backend,
        admin_url,
        name,
    };

    let mut url = admin.clone();
    url.set_path(&format!("/{}", server.name));
    let url = url.to_string();
    let db = match Database::connect(&url).await {
        Ok(db) => db,
        Err(e) => {
            server.drop_database().await;
            panic!("connect to {backend} test database: {e}");
        }
    };
    Some(TestDb {
        db,
        url,
        guard: Some(Guard::Server(server)),
    })
}

impl ServerDb {
    async fn drop_database(self) {
        let sql = match self.backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS `{}`", self.name),
        };
        if let Err(e) = admin_execute(self.backend, &self.admin_url, &sql).await {
            eprintln!("note: cannot drop test database {}: {e}", self.name);
        }
    }
}

async fn ping(backend: Backend, admin_url: &str) -> Result<(), sqlx::Error> {
    admin_execute(backend, admin_url, "SELECT 1").await
}

/// Runs one statement we generated ourselves on a short-lived native admin connection.
async fn admin_execute(backend: Backend, admin_url: &str, sql: &str) -> Result<(), sqlx::Error> {
    let sql = AssertSqlSafe(sql.to_owned());
    let work = async {
        match backend {
            Backend::Postgres => {
                let mut conn = PgConnection::connect(admin_url).await?;
                conn.execute(sql).await?;
                conn.close().await
            }
            _ => {
                let mut conn = MySqlConnection::connect(admin_url).await?;
                conn.execute(sql).await?;
                conn.close().await
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// Drops test databases older than [`STALE_AFTER`], once per process and backend. On
/// PostgreSQL a database still in use refuses to be dropped, which is what we want.
async fn drop_stale_databases(backend: Backend, admin_url: &str) {
    static PG_DONE: AtomicBool = AtomicBool::new(false);
    static MYSQL_DONE: AtomicBool = AtomicBool::new(false);
    let done = if backend == Backend::Postgres {
        &PG_DONE
    } else {
        &MYSQL_DONE
    };
    if done.swap(true, Ordering::SeqCst) {
        return;
    }
    let names: Result<Vec<String>, sqlx::Error> = async {
        match backend {
            Backend::Postgres => {
                let mut conn = PgConnection::connect(admin_url).await?;
                sqlx::query_scalar(
                    "SELECT datname::text FROM pg_database WHERE datname LIKE 'stratus%'",
                )
                .fetch_all(&mut conn)
                .await
            }
            _ => {
                let mut conn = MySqlConnection::connect(admin_url).await?;
                sqlx::query_scalar(
                    "SELECT schema_name FROM information_schema.schemata \
                     WHERE schema_name LIKE 'stratus%'",
                )
                .fetch_all(&mut conn)
                .await
            }
        }
    }
    .await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for name in names.unwrap_or_default() {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        let Some(created) = created else { continue };
        if now.saturating_sub(created) < STALE_AFTER.as_secs() {
            continue;
        }
        let sql = match backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS \"{name}\""),
            _ => format!("DROP DATABASE IF EXISTS `{name}`"),
        };
        if admin_execute(backend, admin_url, &sql).await.is_ok() {
            eprintln!("note: dropped stale {backend} test database {name}");
        }
    }
}
