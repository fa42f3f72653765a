//! Everything orch keeps in `.orch/`: where files live (layout), the SQLite state database (results, digest cache, runs, output lineage), the build lock, and how many runs are kept (retention).

pub mod db;
pub mod layout;
pub mod lock;
pub mod retention;

use std::path::PathBuf;

pub use db::{
    DigestRow, DurationRecord, Generation, InstanceRecord, LastStatus, OutputRecord, RecordedShard,
    ResultUpdate, RunRecord, SCHEMA_VERSION, ShardRecord, ShardResults, Store, SuccessRecord,
};
pub use layout::Layout;
pub use lock::BuildLock;

/// Failures of the state store and the build lock.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StoreError {
    /// A file-system operation under `.orch/` failed.
    #[error("cannot {action} {}", path.display())]
    #[diagnostic(
        code(orch::store::io),
        help("check the permissions of the project's .orch/ directory and the free disk space")
    )]
    Io {
        /// What orch was doing, e.g. "create".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The SQLite state database reported an error.
    #[error("state database error while {action}")]
    #[diagnostic(
        code(orch::store::sqlite),
        help(
            "if this persists, delete .orch/state.db (orch keeps nothing there that a rebuild cannot recreate)"
        )
    )]
    Sqlite {
        /// What orch was doing, e.g. "loading results".
        action: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },

    /// SQLite found the state database corrupt after it was opened.
    #[error("the state database is corrupt (found while {action})")]
    #[diagnostic(
        code(orch::store::corrupt),
        help(
            "delete .orch/state.db and its -wal/-shm files; orch keeps nothing there that a rebuild cannot recreate"
        )
    )]
    Corrupt {
        /// What orch was doing, e.g. "loading results".
        action: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },

    /// A row of the state database holds a value orch cannot decode.
    #[error("state database holds an invalid {what}: {detail}")]
    #[diagnostic(
        code(orch::store::invalid_row),
        help(
            "the state database was modified outside orch; delete .orch/state.db and everything will rebuild"
        )
    )]
    InvalidRow {
        /// Which kind of value, e.g. "run targets".
        what: &'static str,
        /// Why it could not be decoded.
        detail: String,
    },

    /// A row's value could not be read as what orch stored there (wrong type, wrong
    /// length, text that is not UTF-8).
    #[error("the state database holds a row orch cannot read (found while {action})")]
    #[diagnostic(
        code(orch::store::unreadable_row),
        help(
            "the state database was modified outside orch; delete .orch/state.db and everything will rebuild"
        )
    )]
    UnreadableRow {
        /// What orch was doing, e.g. "loading results".
        action: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },

    /// `finish_run` named a run that `begin_run` never recorded.
    #[error("run {run_id} was never started in the state database")]
    #[diagnostic(
        code(orch::store::unknown_run),
        help("this is a bug in orch: a run must be recorded with begin_run before it is finished")
    )]
    UnknownRun {
        /// The run id passed to `finish_run`.
        run_id: String,
    },

    /// The build lock could not be opened or taken.
    #[error("cannot take the build lock {}", path.display())]
    #[diagnostic(
        code(orch::store::lock),
        help(
            "check the permissions of .orch/lock; the file may be removed safely when no orch is running"
        )
    )]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the database itself is damaged (a corrupt page, a row that cannot be
    /// read), so that moving it aside and starting afresh is the way on.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. }
                | StoreError::InvalidRow { .. }
                | StoreError::UnreadableRow { .. }
        )
    }
}

/// Whether a SQLite error is about a value that does not decode, not about the database.
fn is_decode_error(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
    )
}

/// Attaches what the store was doing to a SQLite error.
pub(crate) trait SqliteContext<T> {
    /// Wraps the error into [`StoreError::Sqlite`] with `action`.
    fn ctx(self, action: &'static str) -> Result<T, StoreError>;
}

impl<T> SqliteContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, action: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| match source.sqlite_error_code() {
            // Open moves a corrupt file aside, but damage deeper in the file only shows up
            // when a page is read; checking every page at open would slow no-op builds.
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                StoreError::Corrupt { action, source }
            }
            _ if is_decode_error(&source) => StoreError::UnreadableRow { action, source },
            _ => StoreError::Sqlite { action, source },
        })
    }
}
