//! Versioned schema migrations per service, recorded in a shared `schema_migrations` table.
//!
//! Every service owns a list of [`Migration`]s. [`Database::migrate`] applies the ones not yet
//! recorded, in version order, and records each as `(service, version, name, applied_at)`.
//!
//! * Concurrency: on PostgreSQL and MariaDB an advisory lock (`pg_advisory_lock` /
//!   `GET_LOCK`) serialises migrating processes; on SQLite each migration runs in a
//!   `BEGIN IMMEDIATE` transaction and re-checks whether it was recorded meanwhile.
//! * Atomicity: on SQLite and PostgreSQL a migration and its record commit together. MariaDB
//!   commits DDL implicitly, so a migration failing halfway leaves its earlier statements
//!   applied and unrecorded; keep MariaDB-facing migrations to one DDL statement where possible,
//!   or make statements idempotent (`IF NOT EXISTS`).
//! * Drift: a recorded migration whose name differs from the code's, or whose version the code
//!   does not know (the database is newer than the code), makes `migrate` refuse with
//!   [`Error::MigrationDrift`] before applying anything.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AnyConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};

use crate::dialect::{expand_tokens, split_statements};
use crate::{Backend, Database, Error};

/// One schema change of a service.
///
/// `sql` is portable DDL/DML: one or more statements separated by `;`, using the `{token}`
/// column types documented at the crate level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Strictly increasing, positive, per service.
    pub version: i64,
    /// Recorded with the version; must never change once released.
    pub name: &'static str,
    pub sql: &'static str,
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
    service {name} NOT NULL, \
    version {int} NOT NULL, \
    name {name} NOT NULL, \
    applied_at {int} NOT NULL, \
    PRIMARY KEY (service, version))";

/// Key of the PostgreSQL advisory lock and name of the MariaDB named lock.
const PG_LOCK_KEY: i64 = 0x0053_5452_4154_5553; // "STRATUS"
const MYSQL_LOCK_NAME: &str = "stratus_schema_migrations";
/// How long (seconds) MariaDB waits for another process's migrations before giving up.
const MYSQL_LOCK_TIMEOUT: i64 = 600;

impl Database {
    /// Applies `service`'s pending migrations in version order; see the [module docs](self).
    ///
    /// Idempotent: with nothing pending it only verifies the recorded history.
    pub async fn migrate(&self, service: &str, migrations: &[Migration]) -> Result<(), Error> {
        validate(service, migrations)?;
        let mut conn = self.pool().acquire().await?;
        // Never hand a connection that may still hold the session lock (after an error, or if
        // this future is dropped midway) back to the pool; migrating is rare, so always close.
        // (SQLite takes no session lock, and closing would lose an in-memory database.)
        if self.backend() != Backend::Sqlite {
            conn.close_on_drop();
        }
        self.lock(&mut conn).await?;
        let result = self.migrate_locked(&mut conn, service, migrations).await;
        let unlocked = self.unlock(&mut conn).await;
        result.and(unlocked)
    }

    async fn lock(&self, conn: &mut AnyConnection) -> Result<(), Error> {
        match self.backend() {
            Backend::Sqlite => {}
            Backend::Postgres => {
                self.query("SELECT pg_advisory_lock(?)")
                    .bind(PG_LOCK_KEY)
                    .execute(&mut *conn)
                    .await?;
            }
            Backend::MySql => {
                let got: Option<i64> = self
                    .query_scalar("SELECT GET_LOCK(?, ?)")
                    .bind(MYSQL_LOCK_NAME)
                    .bind(MYSQL_LOCK_TIMEOUT)
                    .fetch_one(&mut *conn)
                    .await?;
                if got != Some(1) {
                    return Err(Error::MigrationLockTimeout);
                }
            }
        }
        Ok(())
    }

    async fn unlock(&self, conn: &mut AnyConnection) -> Result<(), Error> {
        match self.backend() {
            Backend::Sqlite => {}
            Backend::Postgres => {
                self.query("SELECT pg_advisory_unlock(?)")
                    .bind(PG_LOCK_KEY)
                    .execute(&mut *conn)
                    .await?;
            }
            Backend::MySql => {
                self.query("SELECT RELEASE_LOCK(?)")
                    .bind(MYSQL_LOCK_NAME)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    async fn migrate_locked(
        &self,
        conn: &mut AnyConnection,
        service: &str,
        migrations: &[Migration],
    ) -> Result<(), Error> {
        let create = expand_tokens(self.backend(), CREATE_TABLE)?;
        conn.execute(AssertSqlSafe(create)).await?;

        let recorded: Vec<(i64, String)> = self
            .query_as(
                "SELECT version, name FROM schema_migrations WHERE service = ? ORDER BY version",
            )
            .bind(service)
            .fetch_all(&mut *conn)
            .await?;
        for (version, name) in &recorded {
            check_drift(service, migrations, *version, name)?;
        }

        for m in migrations {
            if recorded.iter().any(|(v, _)| *v == m.version) {
                continue;
            }
            self.apply(conn, service, m).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        service: &str,
        m: &Migration,
    ) -> Result<(), Error> {
        let script = expand_tokens(self.backend(), m.sql)?;
        // MariaDB commits DDL implicitly; a transaction would only pretend to be atomic.
        let applied = match self.backend() {
            Backend::MySql => self.apply_on(conn, service, m, &script).await?,
            backend => {
                let mut tx = if backend == Backend::Sqlite {
                    conn.begin_with("BEGIN IMMEDIATE").await?
                } else {
                    conn.begin().await?
                };
                let applied = self.apply_on(&mut tx, service, m, &script).await?;
                tx.commit().await.map_err(|e| failed(service, m, e))?;
                applied
            }
        };
        if applied {
            tracing::info!(
                service,
                version = m.version,
                name = m.name,
                "applied migration"
            );
        }
        Ok(())
    }

    /// Runs one migration's statements and records it; `false` if it was already recorded.
    async fn apply_on(
        &self,
        exec: &mut AnyConnection,
        service: &str,
        m: &Migration,
        script: &str,
    ) -> Result<bool, Error> {
        // Another process may have applied it since we looked (SQLite has no advisory lock).
        let already: Option<String> = self
            .query_scalar("SELECT name FROM schema_migrations WHERE service = ? AND version = ?")
            .bind(service)
            .bind(m.version)
            .fetch_optional(&mut *exec)
            .await?;
        if let Some(name) = already {
            check_drift(service, std::slice::from_ref(m), m.version, &name)?;
            return Ok(false);
        }

        for stmt in split_statements(script) {
            exec.execute(AssertSqlSafe(stmt.to_owned()))
                .await
                .map_err(|e| failed(service, m, e))?;
        }
        let applied_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.query(
            "INSERT INTO schema_migrations (service, version, name, applied_at) VALUES (?, ?, ?, ?)",
        )
        .bind(service)
        .bind(m.version)
        .bind(m.name)
        .bind(applied_at)
        .execute(&mut *exec)
        .await
        .map_err(|e| failed(service, m, e))?;
        Ok(true)
    }
}

fn failed(service: &str, m: &Migration, source: sqlx::Error) -> Error {
    Error::MigrationFailed {
        service: service.to_owned(),
        version: m.version,
        name: m.name.to_owned(),
        source,
    }
}
fn validate(service: &str, migrations: &[Migration]) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidMigrations {
        service: service.to_owned(),
        reason,
    };
    if service.is_empty() {
        return Err(invalid("empty service name".into()));
    }
    let mut previous = 0;
    for m in migrations {
        if m.version <= previous {
            return Err(invalid(format!(
                "version {} must be positive and greater than {previous}",
                m.version
            )));
        }
        if m.name.is_empty() {
            return Err(invalid(format!("version {} has an empty name", m.version)));
        }
        previous = m.version;
    }
    Ok(())
}

fn check_drift(
    service: &str,
    migrations: &[Migration],
    version: i64,
    recorded: &str,
) -> Result<(), Error> {
    let expected = migrations
        .iter()
        .find(|m| m.version == version)
        .map(|m| m.name);
    if expected == Some(recorded) {
        return Ok(());
    }
    Err(Error::MigrationDrift {
        service: service.to_owned(),
        version,
        recorded: recorded.to_owned(),
        expected: expected.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn m(version: i64, name: &'static str) -> Migration {
        Migration {
            version,
            name,
            sql: "",
        }
    }

    #[test]
    fn validation() {
        assert!(validate("identity", &[m(1, "a"), m(2, "b"), m(10, "c")]).is_ok());
        assert!(validate("identity", &[]).is_ok());
        assert!(validate("", &[m(1, "a")]).is_err());
        assert!(validate("identity", &[m(0, "a")]).is_err());
        assert!(validate("identity", &[m(2, "a"), m(1, "b")]).is_err());
        assert!(validate("identity", &[m(1, "a"), m(1, "b")]).is_err());
        assert!(validate("identity", &[m(1, "")]).is_err());
    }

    #[test]
    fn drift() {
        let ms = [m(1, "a"), m(2, "b")];
        assert!(check_drift("s", &ms, 2, "b").is_ok());
        assert!(matches!(
            check_drift("s", &ms, 2, "renamed"),
            Err(Error::MigrationDrift { expected: Some(e), .. }) if e == "b"
        ));
        assert!(matches!(
            check_drift("s", &ms, 3, "c"),
            Err(Error::MigrationDrift { expected: None, .. })
        ));
    }
}
