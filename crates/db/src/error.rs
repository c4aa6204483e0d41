//! The crate's error type.

use sqlx::error::{DatabaseError, ErrorKind};

/// Errors from connecting, querying and migrating.
///
/// Messages never contain connection URLs (they may carry passwords).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL scheme is not one of `sqlite`, `postgres`/`postgresql`, `mysql`/`mariadb`.
    #[error("unsupported database URL scheme {0:?} (expected sqlite, postgres, mysql or mariadb)")]
    UnsupportedUrl(String),
    /// The URL has a supported scheme but cannot be used.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// Creating the directory of a SQLite database file failed.
    #[error("cannot create the SQLite database directory: {0}")]
    Io(#[from] std::io::Error),
    /// An error reported by sqlx or the database server.
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// Portable SQL that cannot be translated (unknown `{token}`, unterminated token).
    #[error("invalid SQL: {0}")]
    InvalidSql(String),
    /// The migration list given in code is malformed (versions not strictly increasing, ...).
    #[error("invalid migrations for service {service}: {reason}")]
    InvalidMigrations { service: String, reason: String },
    /// A migration recorded in the database does not match the code: its name differs, or the
    /// code does not know its version at all (`expected` is `None`; the database is newer).
    #[error(
        "migration drift for service {service} version {version}: database has {recorded:?}, \
         code has {expected:?}"
    )]
    MigrationDrift {
        service: String,
        version: i64,
        recorded: String,
        expected: Option<String>,
    },
    /// Another process held the MariaDB migration lock for too long.
    #[error("timed out waiting for another process to finish migrating")]
    MigrationLockTimeout,
    /// Applying one migration failed.
    #[error("migration {service} {version} ({name}) failed: {source}")]
    MigrationFailed {
        service: String,
        version: i64,
        name: String,
        #[source]
        source: sqlx::Error,
    },
}

impl Error {
    /// The database server's error, if this is one.
    pub fn database_error(&self) -> Option<&dyn DatabaseError> {
        match self {
            Error::Sqlx(sqlx::Error::Database(e))
            | Error::MigrationFailed {
                source: sqlx::Error::Database(e),
                ..
            } => Some(e.as_ref()),
            _ => None,
        }
    }

    /// A unique or primary key constraint was violated (HTTP 409 Conflict in the APIs).
    pub fn is_unique_violation(&self) -> bool {
        self.database_error()
            .is_some_and(|e| e.kind() == ErrorKind::UniqueViolation)
    }

    /// A foreign key constraint was violated.
    pub fn is_foreign_key_violation(&self) -> bool {
        self.database_error()
            .is_some_and(|e| e.kind() == ErrorKind::ForeignKeyViolation)
    }
}
