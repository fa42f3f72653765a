//! The SQLite state database `.orch/state.db`: instance results, the file digest cache, runs, and output lineage.
//!
//! On-disk schema (version [`SCHEMA_VERSION`], stored in `PRAGMA user_version`; any other
//! version makes [`Store::open`] move the file aside and start fresh, so there are no
//! migrations — everything is a cache that a rebuild recreates; so does a row orch
//! cannot read, see `CHECK_ROWS`). Digests and action keys are 32-byte BLOBs, timestamps
//! INTEGER nanoseconds since the Unix epoch, and `u64` sizes/inodes are stored
//! bit-for-bit as INTEGER (SQLite integers are signed 64-bit).
//! `instances(name TEXT UNIQUE, last_status TEXT 'succeeded'|'failed', last_run_id,
//! last_finished_at_ns, success_action_key BLOB, success_manifest BLOB, success_run_id,
//! success_finished_at_ns)` holds one row per instance: its latest attempt, plus its last
//! *successful* result (the four `success_*` columns, all NULL if it never succeeded; the
//! manifest is planner-owned bytes). `digests(path TEXT PRIMARY KEY, size, mtime_ns, ino,
//! is_dir 0|1, digest BLOB, hashed_at_ns, ctime_ns)` caches content digests of project files
//! keyed by project-relative path, valid while size/mtime/inode/ctime still match (version 3
//! lacked `ctime_ns`: opening one adds the column and empties the table, so no old row is
//! trusted). `outputs(path TEXT
//! UNIQUE, digest BLOB, size, instance, action_key BLOB, run_id, built_from TEXT JSON,
//! recorded_at_ns)` records which instance, action and inputs produced each output file.
//! `runs(run_id TEXT UNIQUE, plan_digest, targets TEXT JSON array, started_at_ns,
//! finished_at_ns, status 'succeeded'|'failed'|'interrupted', summary TEXT JSON)` has one
//! row per build, inserted when it starts and completed when it ends (NULLs while running
//! or if it crashed). `shard_results(shard_key BLOB PRIMARY KEY, instance, output_digest
//! BLOB, size, run_id, discovered BLOB)` remembers what each shard produced, so an
//! instance whose source changed in one record reruns only that record's shard (the
//! output itself lives in `.orch/shards/`); `discovered` is planner-owned bytes (the
//! shard's discovered inputs and their digests; empty without a depfile). Version 4
//! lacked it: opening one adds the column, empty, which is what its rows mean, since
//! no shard then had a depfile. `durations(instance TEXT, shard TEXT, duration_ms,
//! run_id)`, keyed by (instance, shard), holds how long the last successful run of each
//! instance (`shard` empty) and of each shard (`shard` its `{shard.key}`, which outlives
//! content changes, unlike the shard's action key) took, for the scheduler's priorities.
//! Version 5 lacked the table: opening one creates it empty (no history yet).
//! `generation(id BLOB, n INTEGER)` holds one row: a random id given when the table is
//! made and a counter that triggers bump on every insert, update and delete of
//! `instances` and `shard_results`, the tables that decide what is up to date (not
//! `runs` nor `digests`, which a build that runs nothing still writes). Whoever writes
//! them (this orch, an older one, `clean`, a failed build, the sqlite3 shell) moves the
//! counter, so `(id, n)` names one state of the results: `.orch/fresh.bin` is trusted
//! only while it is unchanged (see [`crate::fresh`]). Version 6 lacked the table:
//! opening one creates it, with a new id, so no earlier record can match.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::layout::Layout;
use super::{SqliteContext, StoreError};

/// Version of the on-disk schema below; bump it whenever the schema changes.
pub const SCHEMA_VERSION: i64 = 7;

/// How long a statement waits for another process's write transaction before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the schema of [`SCHEMA_VERSION`] (documented at the top of this file) but the
/// [`DURATIONS_TABLE`] and the [`GENERATION`] counter.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS instances (
    name TEXT NOT NULL UNIQUE,
    last_status TEXT NOT NULL CHECK (last_status IN ('succeeded', 'failed')),
    last_run_id TEXT NOT NULL,
    last_finished_at_ns INTEGER NOT NULL,
    success_action_key BLOB,
    success_manifest BLOB,
    success_run_id TEXT,
    success_finished_at_ns INTEGER,
    CHECK ((success_action_key IS NULL) = (success_manifest IS NULL)
       AND (success_action_key IS NULL) = (success_run_id IS NULL)
       AND (success_action_key IS NULL) = (success_finished_at_ns IS NULL))
);
CREATE TABLE IF NOT EXISTS digests (
    path TEXT NOT NULL PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    is_dir INTEGER NOT NULL,
    digest BLOB NOT NULL,
    hashed_at_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs (
    path TEXT NOT NULL UNIQUE,
    digest BLOB NOT NULL,
    size INTEGER NOT NULL,
    instance TEXT NOT NULL,
    action_key BLOB NOT NULL,
    run_id TEXT NOT NULL,
    built_from TEXT NOT NULL,
    recorded_at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT NOT NULL UNIQUE,
    plan_digest TEXT NOT NULL,
    targets TEXT NOT NULL,
    started_at_ns INTEGER NOT NULL,
    finished_at_ns INTEGER,
    status TEXT,
    summary TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at_ns);
CREATE TABLE IF NOT EXISTS shard_results (
    shard_key BLOB NOT NULL PRIMARY KEY,
    instance TEXT NOT NULL,
    output_digest BLOB NOT NULL,
    size INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    discovered BLOB NOT NULL DEFAULT x''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS shard_results_by_instance ON shard_results (instance);
";

/// The table version 6 added; with [`SCHEMA`], the whole schema.
const DURATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS durations (
    instance TEXT NOT NULL,
    shard TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (instance, shard)
) WITHOUT ROWID;";

// A row of the wrong type is skipped rather than failing the build: a duration only
// orders work, it never decides what runs.
const SELECT_DURATIONS: &str = "SELECT instance, duration_ms FROM durations
    WHERE shard = '' AND typeof(instance) = 'text' AND typeof(duration_ms) = 'integer'
    AND duration_ms >= 0";

const SELECT_SHARD_DURATIONS: &str = "SELECT shard, duration_ms FROM durations
    WHERE instance = ?1 AND shard != '' AND typeof(shard) = 'text'
    AND typeof(duration_ms) = 'integer' AND duration_ms >= 0";

const UPSERT_DURATION: &str = "INSERT INTO durations (instance, shard, duration_ms, run_id)
    VALUES (?1, ?2, ?3, ?4) ON CONFLICT (instance, shard) DO UPDATE SET
    duration_ms = excluded.duration_ms, run_id = excluded.run_id";

const SELECT_DURATION_INSTANCES: &str = "SELECT DISTINCT instance FROM durations";

/// The table and triggers version 7 added: one row, a random id and a counter of changes
/// to the tables the planner reads. SQLite has row triggers only; one bump per row
/// written costs a no-op nothing and a build that records 10,000 results a few ms.
const GENERATION: &str = "CREATE TABLE IF NOT EXISTS generation (
    id BLOB NOT NULL,
    n INTEGER NOT NULL
);
INSERT INTO generation (id, n) SELECT randomblob(16), 0
    WHERE NOT EXISTS (SELECT 1 FROM generation);
CREATE TRIGGER IF NOT EXISTS instances_inserted AFTER INSERT ON instances
    BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS instances_updated AFTER UPDATE ON instances
    BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS instances_deleted AFTER DELETE ON instances
    BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS shard_results_inserted AFTER INSERT ON shard_results
    BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS shard_results_updated AFTER UPDATE ON shard_results
    BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS shard_results_deleted AFTER DELETE ON shard_results
    BEGIN UPDATE generation SET n = n + 1; END;";

const SELECT_GENERATION: &str = "SELECT id, n FROM generation LIMIT 2";

const DELETE_DURATIONS_OF: &str = "DELETE FROM durations WHERE instance = ?1";

const SELECT_SHARDS: &str = "SELECT shard_key, output_digest, size, discovered
    FROM shard_results WHERE instance = ?1";

const UPSERT_SHARD: &str = "INSERT INTO shard_results (shard_key, instance, output_digest,
    size, run_id, discovered) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT (shard_key) DO UPDATE SET instance = excluded.instance,
    output_digest = excluded.output_digest, size = excluded.size, run_id = excluded.run_id,
    discovered = excluded.discovered";

const DELETE_SHARD: &str = "DELETE FROM shard_results WHERE shard_key = ?1";

const SELECT_RESULTS: &str = "SELECT name, last_status, last_run_id, last_finished_at_ns,
    success_action_key, success_manifest, success_run_id, success_finished_at_ns FROM instances";

const SELECT_RESULT: &str = "SELECT name, last_status, last_run_id, last_finished_at_ns,
    success_action_key, success_manifest, success_run_id, success_finished_at_ns FROM instances
    WHERE name = ?1";

const SELECT_DIGESTS: &str =
    "SELECT path, size, mtime_ns, ino, is_dir, digest, hashed_at_ns, ctime_ns FROM digests";

const SELECT_OUTPUT: &str = "SELECT path, digest, size, instance, action_key, run_id, built_from,
    recorded_at_ns FROM outputs WHERE path = ?1";

// Ties on the start time (same nanosecond) fall back to insertion order.
const SELECT_RUNS: &str = "SELECT run_id, plan_digest, targets, started_at_ns, finished_at_ns,
    status, summary FROM runs ORDER BY started_at_ns DESC, rowid DESC LIMIT ?1";

const UPSERT_SUCCESS: &str = "INSERT INTO instances (name, last_status, last_run_id,
    last_finished_at_ns, success_action_key, success_manifest, success_run_id,
    success_finished_at_ns) VALUES (?1, 'succeeded', ?2, ?3, ?4, ?5, ?2, ?3)
    ON CONFLICT (name) DO UPDATE SET last_status = 'succeeded',
    last_run_id = excluded.last_run_id, last_finished_at_ns = excluded.last_finished_at_ns,
    success_action_key = excluded.success_action_key,
    success_manifest = excluded.success_manifest, success_run_id = excluded.success_run_id,
    success_finished_at_ns = excluded.success_finished_at_ns";

// Leaves the success_* columns alone: explain compares against the last success.
const UPSERT_FAILURE: &str = "INSERT INTO instances (name, last_status, last_run_id,
    last_finished_at_ns) VALUES (?1, 'failed', ?2, ?3)
    ON CONFLICT (name) DO UPDATE SET last_status = 'failed',
    last_run_id = excluded.last_run_id, last_finished_at_ns = excluded.last_finished_at_ns";

const UPSERT_DIGEST: &str = "INSERT INTO digests (path, size, mtime_ns, ino, is_dir, digest,
    hashed_at_ns, ctime_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
    ino = excluded.ino, is_dir = excluded.is_dir, digest = excluded.digest,
    hashed_at_ns = excluded.hashed_at_ns, ctime_ns = excluded.ctime_ns";

const DELETE_DIGEST: &str = "DELETE FROM digests WHERE path = ?1";

const UPSERT_OUTPUT: &str = "INSERT INTO outputs (path, digest, size, instance, action_key,
    run_id, built_from, recorded_at_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (path) DO UPDATE SET digest = excluded.digest, size = excluded.size,
    instance = excluded.instance, action_key = excluded.action_key,
    run_id = excluded.run_id, built_from = excluded.built_from,
    recorded_at_ns = excluded.recorded_at_ns";

const INSERT_RUN: &str = "INSERT INTO runs (run_id, plan_digest, targets, started_at_ns,
    finished_at_ns, status, summary) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const FINISH_RUN: &str =
    "UPDATE runs SET finished_at_ns = ?2, status = ?3, summary = ?4 WHERE run_id = ?1";

const DELETE_INSTANCE: &str = "DELETE FROM instances WHERE name = ?1";

const SELECT_RUN: &str = "SELECT run_id, plan_digest, targets, started_at_ns, finished_at_ns,
    status, summary FROM runs WHERE run_id = ?1";

const DELETE_RUN: &str = "DELETE FROM runs WHERE run_id = ?1";

const SELECT_SHARD_INSTANCES: &str = "SELECT DISTINCT instance FROM shard_results";

const DELETE_SHARDS_OF: &str = "DELETE FROM shard_results WHERE instance = ?1";

/// Every statement the store runs; preparing them all at open proves the schema matches.
const ALL_STATEMENTS: &[&str] = &[
    SELECT_RESULTS,
    SELECT_DIGESTS,
    SELECT_OUTPUT,
    SELECT_RUNS,
    UPSERT_SUCCESS,
    UPSERT_FAILURE,
    UPSERT_DIGEST,
    DELETE_DIGEST,
    UPSERT_OUTPUT,
    INSERT_RUN,
    FINISH_RUN,
    DELETE_INSTANCE,
    SELECT_SHARDS,
    UPSERT_SHARD,
    DELETE_SHARD,
    SELECT_RUN,
    DELETE_RUN,
    SELECT_SHARD_INSTANCES,
    DELETE_SHARDS_OF,
    SELECT_DURATIONS,
    SELECT_SHARD_DURATIONS,
    UPSERT_DURATION,
    SELECT_DURATION_INSTANCES,
    DELETE_DURATIONS_OF,
    SELECT_GENERATION,
];

/// One state of the recorded results (see `generation` at the top of this file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    /// The database's random id, given when its counter was made.
    pub id: [u8; 16],
    /// Changes to `instances` and `shard_results` counted since.
    pub n: i64,
}

/// Status of an instance's latest attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LastStatus {
    /// The latest attempt succeeded.
    Succeeded,
    /// The latest attempt failed.
    Failed,
}

impl LastStatus {
    /// The spelling used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            LastStatus::Succeeded => "succeeded",
            LastStatus::Failed => "failed",
        }
    }

    /// Parses the database spelling.
    fn parse(text: &str) -> Option<LastStatus> {
        match text {
            "succeeded" => Some(LastStatus::Succeeded),
            "failed" => Some(LastStatus::Failed),
            _ => None,
        }
    }
}

/// The last successful result of an instance: its action key and the manifest (bytes owned by the planner, opaque here) describing the key's parts and produced outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuccessRecord {
    /// The action key the successful run computed.
    pub action_key: [u8; 32],
    /// Planner-owned JSON describing the key's parts and the outputs produced.
    pub manifest: Vec<u8>,
    /// The run in which it succeeded.
    pub run_id: String,
    /// When it finished.
    pub finished_at_ns: i64,
}

/// What the store knows about one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Outcome of the latest attempt.
    pub last_status: LastStatus,
    /// Run of the latest attempt.
    pub last_run_id: String,
    /// When the latest attempt finished.
    pub last_finished_at_ns: i64,
    /// The last success, kept across later failures.
    pub success: Option<SuccessRecord>,
}

/// One update to write after an instance finished.
#[derive(Clone, Debug)]
pub enum ResultUpdate {
    /// The instance succeeded: replaces its success record and sets the latest attempt.
    Succeeded {
        /// Instance name.
        instance: String,
        /// The new success.
        record: SuccessRecord,
    },
    /// The instance failed: keeps the previous success record, sets last_status = Failed.
    Failed {
        /// Instance name.
        instance: String,
        /// Run of the failed attempt.
        run_id: String,
        /// When the failed attempt finished.
        finished_at_ns: i64,
    },
}

/// A cached digest row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestRow {
    /// File size in bytes when hashed.
    pub size: u64,
    /// Modification time when hashed.
    pub mtime_ns: i64,
    /// Inode number when hashed.
    pub ino: u64,
    /// Whether the path is a directory (digest over its listing).
    pub is_dir: bool,
    /// The content digest.
    pub digest: [u8; 32],
    /// When the digest was computed (to detect same-timestamp races).
    pub hashed_at_ns: i64,
    /// Status-change time when hashed.
    pub ctime_ns: i64,
}

/// The lineage of one output file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRecord {
    /// Project-relative path of the output.
    pub path: String,
    /// Its content digest.
    pub digest: [u8; 32],
    /// Its size in bytes.
    pub size: u64,
    /// The instance that produced it.
    pub instance: String,
    /// The action key of that production.
    pub action_key: [u8; 32],
    /// The run that produced it.
    pub run_id: String,
    /// JSON text: inputs and upstream outputs with digests.
    pub built_from: String,
    /// When it was recorded.
    pub recorded_at_ns: i64,
}

/// Recorded shard results, by shard key.
pub type ShardResults = HashMap<[u8; 32], RecordedShard>;

/// What a shard produced, as recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedShard {
    /// Digest of its output.
    pub digest: [u8; 32],
    /// Size of its output.
    pub size: u64,
    /// Its discovered inputs, as the planner encoded them (empty: none).
    pub discovered: Vec<u8>,
}

/// The result of one shard, keyed by its shard key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRecord {
    /// The shard's key.
    pub shard_key: [u8; 32],
    /// The instance it belongs to.
    pub instance: String,
    /// Digest of its output.
    pub output_digest: [u8; 32],
    /// Size of its output.
    pub size: u64,
    /// The run that produced it.
    pub run_id: String,
    /// Its discovered inputs, encoded by the planner (empty: none).
    pub discovered: Vec<u8>,
}

/// How long the last successful run of an instance, or of one of its shards, took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationRecord {
    /// The instance.
    pub instance: String,
    /// The shard's `{shard.key}`; empty for the whole instance.
    pub shard: String,
    /// Wall time of the run, in milliseconds.
    pub duration_ms: u64,
    /// The run it was measured in.
    pub run_id: String,
}

/// A run as recorded before its first instance starts, and completed at its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// Unique run id.
    pub run_id: String,
    /// Digest of the plan that was executed.
    pub plan_digest: String,
    /// The targets requested on the command line.
    pub targets: Vec<String>,
    /// When the run started.
    pub started_at_ns: i64,
    /// When it finished (None while running or if it crashed).
    pub finished_at_ns: Option<i64>,
    /// "succeeded" | "failed" | "interrupted".
    pub status: Option<String>,
    /// JSON text summarising the run.
    pub summary: Option<String>,
}

/// The state database of one project.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

/// Why a database file could not be used.
enum OpenFailure {
    /// The file is not ours, corrupt, or of another schema version: move it aside.
    Unusable(String),
    /// Anything else (permissions, I/O, busy): report it, the file may be fine.
    Error(StoreError),
}

impl From<StoreError> for OpenFailure {
    fn from(err: StoreError) -> Self {
        OpenFailure::Error(err)
    }
}

/// Classifies an error met while opening: corruption means "move aside", the rest is reported.
fn open_failure(action: &'static str, source: rusqlite::Error) -> OpenFailure {
    match error_code(&source) {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            OpenFailure::Unusable(source.to_string())
        }
        _ => OpenFailure::Error(StoreError::Sqlite { action, source }),
    }
}

/// The SQLite result code of an error, including errors reported while compiling SQL.
fn error_code(err: &rusqlite::Error) -> Option<ErrorCode> {
    match err {
        rusqlite::Error::SqlInputError { error, .. } => Some(error.code),
        other => other.sqlite_error_code(),
    }
}

impl Store {
    /// Opens (creating) .orch/state.db in WAL mode, creating tables if missing; an unusable file is moved aside with a warning.
    ///
    /// Forgiving: if the file is not a SQLite database, is corrupt, or has another schema
    /// version, it (and its `-wal`/`-shm`) is renamed to `state.db.bad-<unix seconds>` and a
    /// fresh database is created; the second field then holds a warning for the user
    /// (everything will simply rebuild). Permission, I/O and lock-timeout errors are returned.
    pub fn open(layout: &Layout) -> Result<(Store, Option<String>), StoreError> {
        layout.ensure().map_err(|source| StoreError::Io {
            action: "create",
            path: layout.dir.clone(),
            source,
        })?;
        let path = layout.db();
        let reason = match open_file(&path) {
            Ok(conn) => return Ok((Store { conn }, None)),
            Err(OpenFailure::Error(err)) => return Err(err),
            Err(OpenFailure::Unusable(reason)) => reason,
        };
        let (store, warning) = start_fresh(&path, &reason)?;
        Ok((store, Some(warning)))
    }

    /// Like [`Store::open`], but if the db does not exist returns an empty in-memory store instead of creating files.
    ///
    /// For reading commands (plan, status, explain, history) so that they write nothing in
    /// a fresh project. Writes to the in-memory store are discarded when it is dropped.
    /// Every row is read once ([`Store::check_readable`]): a database with a row that
    /// cannot be read is moved aside like an unusable file. When the database cannot be
    /// opened for writing (a read-only `.orch/`), it is read as an immutable file; if it is
    /// unusable then, it cannot be moved aside, so the store is empty and the second field
    /// says so.
    pub fn open_existing_or_empty(layout: &Layout) -> Result<(Store, Option<String>), StoreError> {
        let path = layout.db();
        let exists = path.try_exists().map_err(|source| StoreError::Io {
            action: "inspect",
            path: path.clone(),
            source,
        })?;
        if !exists {
            return Ok((Store::in_memory()?, None));
        }
        let (store, warning) = match Store::open(layout) {
            Err(err) if cannot_write(&err) => Store::open_immutable(&path).map_err(|_| err)?,
            other => other?,
        };
        // Reading commands read any row, so damage opening cannot see is looked for now.
        match store.check_readable() {
            Ok(()) => Ok((store, warning)),
            Err(err) if err.is_damage() => match store.replace_damaged(layout, &err) {
                Ok((fresh, warning)) => Ok((fresh, Some(warning))),
                Err(_) => Ok((
                    Store::in_memory()?,
                    Some(format!(
                        "{}; it cannot be moved aside, so everything counts as never built",
                        error_chain(&err)
                    )),
                )),
            },
            Err(err) => Err(err),
        }
    }

    /// An empty store in memory: reads find nothing, writes are discarded with it.
    pub fn in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().ctx("creating an in-memory database")?;
        match init(&conn, true) {
            Ok(()) => Ok(Store { conn }),
            Err(OpenFailure::Error(err)) => Err(err),
            Err(OpenFailure::Unusable(detail)) => Err(StoreError::InvalidRow {
                what: "in-memory database",
                detail,
            }),
        }
    }

    /// Reads the database at `path` without writing anything, not even its journal files.
    fn open_immutable(path: &Path) -> Result<(Store, Option<String>), StoreError> {
        const ACTION: &str = "opening the database read-only";
        let url = url::Url::from_file_path(path).map_err(|()| StoreError::InvalidRow {
            what: "database path",
            detail: path.display().to_string(),
        })?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(format!("{url}?immutable=1"), flags).ctx(ACTION)?;
        match init(&conn, false) {
            Ok(()) => Ok((Store { conn }, None)),
            Err(OpenFailure::Error(err)) => Err(err),
            Err(OpenFailure::Unusable(reason)) => Ok((
                Store::in_memory()?,
                Some(format!(
                    "the state database {} is unusable ({reason}) and its directory is read-only, so it stays where it is; everything counts as never built",
                    path.display()
                )),
            )),
        }
    }

    /// Moves the database aside after a row turned out unreadable (`why`), and starts a
    /// fresh one; returns it with the warning for the user. Rows are checked when the
    /// database is opened, but some damage (text that is not UTF-8) shows only when read.
    pub fn replace_damaged(
        self,
        layout: &Layout,
        why: &StoreError,
    ) -> Result<(Store, String), StoreError> {
        // Closed first, so nothing of it is written into the file once moved.
        drop(self);
        start_fresh(&layout.db(), &error_chain(why))
    }

    /// Checks and reads every row of every table, to find damage [`Store::open`] does not
    /// look for (see `CHECK_ROWS`) before a reading command trips on it.
    pub fn check_readable(&self) -> Result<(), StoreError> {
        const ACTION: &str = "checking every row";
        let tables: Vec<&str> = CHECK_ROWS.iter().map(|(t, _)| *t).collect();
        match check_rows(&self.conn, &tables) {
            Ok(()) => {}
            Err(OpenFailure::Error(err)) => return Err(err),
            Err(OpenFailure::Unusable(detail)) => {
                return Err(StoreError::InvalidRow {
                    what: "row",
                    detail,
                });
            }
        }
        self.load_results()?;
        self.load_digests()?;
        self.runs(usize::MAX)?;
        for sql in [
            "SELECT path, digest, size, instance, action_key, run_id, built_from, recorded_at_ns FROM outputs",
            "SELECT shard_key, output_digest, size, instance, run_id FROM shard_results",
        ] {
            let mut stmt = self.conn.prepare(sql).ctx(ACTION)?;
            let mut rows = stmt.query([]).ctx(ACTION)?;
            while let Some(row) = rows.next().ctx(ACTION)? {
                for i in 0..row.as_ref().column_count() {
                    if let rusqlite::types::ValueRef::Text(t) = row.get_ref(i).ctx(ACTION)? {
                        std::str::from_utf8(t).map_err(|e| StoreError::InvalidRow {
                            what: "text",
                            detail: format!("column {i} of `{sql}`: {e}"),
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    /// ONE query: every instance record.
    pub fn load_results(&self) -> Result<BTreeMap<String, InstanceRecord>, StoreError> {
        const ACTION: &str = "loading instance results";
        let mut stmt = self.conn.prepare_cached(SELECT_RESULTS).ctx(ACTION)?;
        let mut rows = stmt.query([]).ctx(ACTION)?;
        let mut out = BTreeMap::new();
        while let Some(row) = rows.next().ctx(ACTION)? {
            let (name, record) = result_from_row(row, ACTION)?;
            out.insert(name, record);
        }
        Ok(out)
    }

    /// The records of the named instances only (one indexed lookup each): what a
    /// session that keeps the others in memory re-reads after a build.
    pub fn load_results_of(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<String, InstanceRecord>, StoreError> {
        const ACTION: &str = "loading instance results";
        let mut stmt = self.conn.prepare_cached(SELECT_RESULT).ctx(ACTION)?;
        let mut out = BTreeMap::new();
        for name in names {
            let mut rows = stmt.query([name]).ctx(ACTION)?;
            if let Some(row) = rows.next().ctx(ACTION)? {
                let (name, record) = result_from_row(row, ACTION)?;
                out.insert(name, record);
            }
        }
        Ok(out)
    }

    /// ONE query: the whole digest cache, keyed by project-relative path (a lookup table, never iterated into output).
    pub fn load_digests(&self) -> Result<HashMap<String, DigestRow>, StoreError> {
        const ACTION: &str = "loading the digest cache";
        let mut stmt = self.conn.prepare_cached(SELECT_DIGESTS).ctx(ACTION)?;
        let mut rows = stmt.query([]).ctx(ACTION)?;
        let mut out = HashMap::new();
        while let Some(row) = rows.next().ctx(ACTION)? {
            let path: String = row.get(0).ctx(ACTION)?;
            let digest_row = DigestRow {
                size: from_db_u64(row.get(1).ctx(ACTION)?),
                mtime_ns: row.get(2).ctx(ACTION)?,
                ino: from_db_u64(row.get(3).ctx(ACTION)?),
                is_dir: row.get(4).ctx(ACTION)?,
                digest: row.get(5).ctx(ACTION)?,
                hashed_at_ns: row.get(6).ctx(ACTION)?,
                ctime_ns: row.get(7).ctx(ACTION)?,
            };
            out.insert(path, digest_row);
        }
        Ok(out)
    }

    /// Writes all updates in one transaction (nothing at all when `updates` is empty).
    pub fn write_results(&mut self, updates: &[ResultUpdate]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.in_transaction("writing instance results", |tx| {
            let mut success = tx.prepare_cached(UPSERT_SUCCESS)?;
            let mut failure = tx.prepare_cached(UPSERT_FAILURE)?;
            for update in updates {
                match update {
                    ResultUpdate::Succeeded { instance, record } => success.execute(params![
                        instance,
                        record.run_id,
                        record.finished_at_ns,
                        record.action_key,
                        record.manifest,
                    ]),
                    ResultUpdate::Failed {
                        instance,
                        run_id,
                        finished_at_ns,
                    } => failure.execute(params![instance, run_id, finished_at_ns]),
                }?;
            }
            Ok(())
        })
    }

    /// Upserts digests (Some) and deletes entries (None) in one transaction.
    pub fn write_digests(
        &mut self,
        rows: &[(String, Option<DigestRow>)],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.in_transaction("writing the digest cache", |tx| {
            let mut upsert = tx.prepare_cached(UPSERT_DIGEST)?;
            let mut delete = tx.prepare_cached(DELETE_DIGEST)?;
            for (path, row) in rows {
                match row {
                    Some(row) => upsert.execute(params![
                        path,
                        to_db_u64(row.size),
                        row.mtime_ns,
                        to_db_u64(row.ino),
                        row.is_dir,
                        row.digest,
                        row.hashed_at_ns,
                        row.ctime_ns,
                    ]),
                    None => delete.execute(params![path]),
                }?;
            }
            Ok(())
        })
    }

    /// Upserts output lineage records (keyed by path) in one transaction.
    pub fn write_outputs(&mut self, outputs: &[OutputRecord]) -> Result<(), StoreError> {
        if outputs.is_empty() {
            return Ok(());
        }
        self.in_transaction("writing output lineage", |tx| {
            let mut upsert = tx.prepare_cached(UPSERT_OUTPUT)?;
            for out in outputs {
                upsert.execute(params![
                    out.path,
                    out.digest,
                    to_db_u64(out.size),
                    out.instance,
                    out.action_key,
                    out.run_id,
                    out.built_from,
                    out.recorded_at_ns,
                ])?;
            }
            Ok(())
        })
    }

    /// The recorded shard results of `instance`, by shard key.
    pub fn shard_results(&self, instance: &str) -> Result<ShardResults, StoreError> {
        const ACTION: &str = "loading shard results";
        let mut stmt = self.conn.prepare_cached(SELECT_SHARDS).ctx(ACTION)?;
        let rows = stmt
            .query_map([instance], |row| {
                Ok((
                    row.get::<_, [u8; 32]>(0)?,
                    RecordedShard {
                        digest: row.get::<_, [u8; 32]>(1)?,
                        size: from_db_u64(row.get(2)?),
                        discovered: row.get::<_, Vec<u8>>(3)?,
                    },
                ))
            })
            .ctx(ACTION)?;
        let mut out = HashMap::new();
        for r in rows {
            let (k, v) = r.ctx(ACTION)?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Upserts shard results and deletes the shard keys in `forget`, in one transaction.
    pub fn write_shard_results(
        &mut self,
        rows: &[ShardRecord],
        forget: &[[u8; 32]],
    ) -> Result<(), StoreError> {
        if rows.is_empty() && forget.is_empty() {
            return Ok(());
        }
        self.in_transaction("writing shard results", |tx| {
            let mut upsert = tx.prepare_cached(UPSERT_SHARD)?;
            for r in rows {
                upsert.execute(params![
                    r.shard_key,
                    r.instance,
                    r.output_digest,
                    to_db_u64(r.size),
                    r.run_id,
                    r.discovered
                ])?;
            }
            let mut delete = tx.prepare_cached(DELETE_SHARD)?;
            for k in forget {
                delete.execute([k])?;
            }
            Ok(())
        })
    }

    /// ONE query: the recorded duration of every instance, in milliseconds, by name.
    pub fn durations(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.duration_rows(SELECT_DURATIONS, None, "loading durations")
    }

    /// The recorded durations of `instance`'s shards, in milliseconds, by `{shard.key}`.
    pub fn shard_durations(&self, instance: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        self.duration_rows(
            SELECT_SHARD_DURATIONS,
            Some(instance),
            "loading shard durations",
        )
    }

    /// Runs a duration query whose rows are (name, milliseconds).
    fn duration_rows(
        &self,
        sql: &str,
        instance: Option<&str>,
        action: &'static str,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).ctx(action)?;
        let mut rows = match instance {
            Some(name) => stmt.query([name]),
            None => stmt.query([]),
        }
        .ctx(action)?;
        let mut out = BTreeMap::new();
        while let Some(row) = rows.next().ctx(action)? {
            let name: String = row.get(0).ctx(action)?;
            let ms: i64 = row.get(1).ctx(action)?;
            out.insert(name, from_db_u64(ms));
        }
        Ok(out)
    }

    /// Upserts durations in one transaction (nothing at all when `rows` is empty).
    pub fn write_durations(&mut self, rows: &[DurationRecord]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.in_transaction("writing durations", |tx| {
            let mut upsert = tx.prepare_cached(UPSERT_DURATION)?;
            for r in rows {
                upsert.execute(params![
                    r.instance,
                    r.shard,
                    to_db_u64(r.duration_ms),
                    r.run_id
                ])?;
            }
            Ok(())
        })
    }

    /// Runs `f` in one immediate transaction and commits it; nothing `f` did is kept
    /// when it fails.
    fn in_transaction(
        &mut self,
        action: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(action)?;
        f(&tx).ctx(action)?;
        tx.commit().ctx(action)
    }

    /// The lineage of the output at project-relative `path`, if recorded.
    pub fn output(&self, path: &str) -> Result<Option<OutputRecord>, StoreError> {
        const ACTION: &str = "reading output lineage";
        let mut stmt = self.conn.prepare_cached(SELECT_OUTPUT).ctx(ACTION)?;
        stmt.query_row([path], |row| {
            Ok(OutputRecord {
                path: row.get(0)?,
                digest: row.get(1)?,
                size: from_db_u64(row.get(2)?),
                instance: row.get(3)?,
                action_key: row.get(4)?,
                run_id: row.get(5)?,
                built_from: row.get(6)?,
                recorded_at_ns: row.get(7)?,
            })
        })
        .optional()
        .ctx(ACTION)
    }

    /// The generation of the recorded results: the database's random id and how many
    /// changes triggers have counted. None when the row is missing or malformed (then
    /// nothing can be vouched for).
    pub fn generation(&self) -> Result<Option<Generation>, StoreError> {
        const ACTION: &str = "reading the generation";
        let mut stmt = self.conn.prepare_cached(SELECT_GENERATION).ctx(ACTION)?;
        let mut rows = stmt.query([]).ctx(ACTION)?;
        let Some(row) = rows.next().ctx(ACTION)? else {
            return Ok(None);
        };
        let id = row
            .get::<_, Vec<u8>>(0)
            .ok()
            .and_then(|v| v.try_into().ok());
        let n = row.get::<_, i64>(1).ok();
        if rows.next().ctx(ACTION)?.is_some() {
            return Ok(None);
        }
        Ok(id.zip(n).map(|(id, n)| Generation { id, n }))
    }

    /// Records a run before its first instance starts (its run_id must be new).
    pub fn begin_run(&mut self, run: &RunRecord) -> Result<(), StoreError> {
        const ACTION: &str = "recording the run start";
        let targets =
            serde_json::to_string(&run.targets).map_err(|err| StoreError::InvalidRow {
                what: "run targets",
                detail: err.to_string(),
            })?;
        let mut stmt = self.conn.prepare_cached(INSERT_RUN).ctx(ACTION)?;
        stmt.execute(params![
            run.run_id,
            run.plan_digest,
            targets,
            run.started_at_ns,
            run.finished_at_ns,
            run.status,
            run.summary,
        ])
        .ctx(ACTION)?;
        Ok(())
    }

    /// Completes the record of a run started with [`Store::begin_run`].
    pub fn finish_run(
        &mut self,
        run_id: &str,
        finished_at_ns: i64,
        status: &str,
        summary: &str,
    ) -> Result<(), StoreError> {
        self.finish_run_forgetting(run_id, finished_at_ns, status, summary, &[])
    }

    /// [`Store::finish_run`], and deletes the records of the runs `forget` (whose events
    /// retention removed) in the same transaction: one commit at the end of a build.
    pub fn finish_run_forgetting(
        &mut self,
        run_id: &str,
        finished_at_ns: i64,
        status: &str,
        summary: &str,
        forget: &[String],
    ) -> Result<(), StoreError> {
        const ACTION: &str = "recording the run end";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(ACTION)?;
        {
            let mut stmt = tx.prepare_cached(FINISH_RUN).ctx(ACTION)?;
            let changed = stmt
                .execute(params![run_id, finished_at_ns, status, summary])
                .ctx(ACTION)?;
            if changed == 0 {
                return Err(StoreError::UnknownRun {
                    run_id: run_id.to_owned(),
                });
            }
            let mut delete = tx.prepare_cached(DELETE_RUN).ctx(ACTION)?;
            for id in forget.iter().filter(|id| *id != run_id) {
                delete.execute([id]).ctx(ACTION)?;
            }
        }
        tx.commit().ctx(ACTION)?;
        Ok(())
    }

    /// Runs newest first (by start time), at most `limit` of them.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        const ACTION: &str = "reading runs";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(SELECT_RUNS).ctx(ACTION)?;
        let mut rows = stmt.query([limit]).ctx(ACTION)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().ctx(ACTION)? {
            out.push(run_from_row(row, ACTION)?);
        }
        Ok(out)
    }

    /// The run with this id, if recorded.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        const ACTION: &str = "reading a run";
        let mut stmt = self.conn.prepare_cached(SELECT_RUN).ctx(ACTION)?;
        let mut rows = stmt.query([run_id]).ctx(ACTION)?;
        match rows.next().ctx(ACTION)? {
            Some(row) => Ok(Some(run_from_row(row, ACTION)?)),
            None => Ok(None),
        }
    }

    /// Deletes the records of these runs in one transaction; returns how many existed.
    pub fn delete_runs(&mut self, run_ids: &[String]) -> Result<usize, StoreError> {
        const ACTION: &str = "deleting runs";
        if run_ids.is_empty() {
            return Ok(0);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(ACTION)?;
        let mut removed = 0;
        {
            let mut delete = tx.prepare_cached(DELETE_RUN).ctx(ACTION)?;
            for id in run_ids {
                removed += delete.execute([id]).ctx(ACTION)?;
            }
        }
        tx.commit().ctx(ACTION)?;
        Ok(removed)
    }

    /// Removes the shard results of instances not in `keep`, in one transaction; returns
    /// how many rows were removed.
    pub fn forget_shard_results_except(
        &mut self,
        keep: &BTreeSet<String>,
    ) -> Result<usize, StoreError> {
        const ACTION: &str = "forgetting shard results of undeclared instances";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(ACTION)?;
        let mut removed = 0;
        {
            let mut names = tx.prepare_cached(SELECT_SHARD_INSTANCES).ctx(ACTION)?;
            let all = names
                .query_map([], |row| row.get::<_, String>(0))
                .ctx(ACTION)?
                .collect::<Result<Vec<String>, _>>()
                .ctx(ACTION)?;
            let mut delete = tx.prepare_cached(DELETE_SHARDS_OF).ctx(ACTION)?;
            for name in all.iter().filter(|name| !keep.contains(*name)) {
                removed += delete.execute([name]).ctx(ACTION)?;
            }
        }
        tx.commit().ctx(ACTION)?;
        Ok(removed)
    }

    /// Removes the records of instances not in `keep`, in one transaction; returns how many were removed.
    ///
    /// Output lineage is left alone: it describes files that may still exist on disk and is
    /// overwritten whenever a path is produced again.
    pub fn forget_instances_except(
        &mut self,
        keep: &BTreeSet<String>,
    ) -> Result<usize, StoreError> {
        const ACTION: &str = "forgetting undeclared instances";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(ACTION)?;
        let mut removed = 0;
        {
            let mut names = tx.prepare("SELECT name FROM instances").ctx(ACTION)?;
            let all = names
                .query_map([], |row| row.get::<_, String>(0))
                .ctx(ACTION)?
                .collect::<Result<Vec<String>, _>>()
                .ctx(ACTION)?;
            let mut delete = tx.prepare_cached(DELETE_INSTANCE).ctx(ACTION)?;
            for name in all.iter().filter(|name| !keep.contains(*name)) {
                removed += delete.execute([name]).ctx(ACTION)?;
            }
            // Durations are not counted: they only order work, and go with their instance.
            let mut names = tx.prepare_cached(SELECT_DURATION_INSTANCES).ctx(ACTION)?;
            let timed = names
                .query_map([], |row| row.get::<_, String>(0))
                .ctx(ACTION)?
                .collect::<Result<Vec<String>, _>>()
                .ctx(ACTION)?;
            let mut delete = tx.prepare_cached(DELETE_DURATIONS_OF).ctx(ACTION)?;
            for name in timed.iter().filter(|name| !keep.contains(*name)) {
                delete.execute([name]).ctx(ACTION)?;
            }
        }
        tx.commit().ctx(ACTION)?;
        Ok(removed)
    }
}

/// Decodes a row of [`SELECT_RESULTS`] / [`SELECT_RESULT`].
fn result_from_row(
    row: &rusqlite::Row<'_>,
    action: &'static str,
) -> Result<(String, InstanceRecord), StoreError> {
    let name: String = row.get(0).ctx(action)?;
    let status: String = row.get(1).ctx(action)?;
    let last_status = LastStatus::parse(&status).ok_or_else(|| StoreError::InvalidRow {
        what: "instance status",
        detail: format!("{status:?} for instance {name}"),
    })?;
    let action_key: Option<[u8; 32]> = row.get(4).ctx(action)?;
    let success = match action_key {
        Some(action_key) => Some(SuccessRecord {
            action_key,
            manifest: row.get(5).ctx(action)?,
            run_id: row.get(6).ctx(action)?,
            finished_at_ns: row.get(7).ctx(action)?,
        }),
        None => None,
    };
    let record = InstanceRecord {
        last_status,
        last_run_id: row.get(2).ctx(action)?,
        last_finished_at_ns: row.get(3).ctx(action)?,
        success,
    };
    Ok((name, record))
}

/// Decodes a row of [`SELECT_RUNS`] / [`SELECT_RUN`].
fn run_from_row(row: &rusqlite::Row<'_>, action: &'static str) -> Result<RunRecord, StoreError> {
    let run_id: String = row.get(0).ctx(action)?;
    let targets_json: String = row.get(2).ctx(action)?;
    let targets = serde_json::from_str(&targets_json).map_err(|err| StoreError::InvalidRow {
        what: "run targets",
        detail: format!("run {run_id}: {err}"),
    })?;
    Ok(RunRecord {
        plan_digest: row.get(1).ctx(action)?,
        targets,
        started_at_ns: row.get(3).ctx(action)?,
        finished_at_ns: row.get(4).ctx(action)?,
        status: row.get(5).ctx(action)?,
        summary: row.get(6).ctx(action)?,
        run_id,
    })
}

/// Opens (creating) the database file at `path` and brings it to the current schema.
fn open_file(path: &Path) -> Result<Connection, OpenFailure> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|err| open_failure("opening the database", err))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|err| open_failure("setting the busy timeout", err))?;
    // journal_mode answers with the resulting mode, so it is read as a query. WAL lets
    // read-only commands (status, explain) run while a build writes. A file system that
    // refuses WAL leaves the old mode, which still works: writers are serialised by the
    // build lock and readers merely wait up to the busy timeout.
    let _mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|err| open_failure("enabling WAL mode", err))?;
    // NORMAL is durable across application crashes in WAL mode; only a power loss can drop
    // the last commits, which merely causes a rebuild.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|err| open_failure("setting synchronous mode", err))?;
    init(&conn, true)?;
    Ok(conn)
}

/// Checks the schema version, creates the schema in an empty database (when `writable`),
/// verifies that every statement compiles and that the rows of [`OPEN_CHECKS`] can be read.
fn init(conn: &Connection, writable: bool) -> Result<(), OpenFailure> {
    // A few more statements than we use, so none is ever evicted from the cache.
    conn.set_prepared_statement_cache_capacity(ALL_STATEMENTS.len() + 8);
    let mut version = user_version(conn)?;
    // Upgrades run one after the other: 3 → 4 → 5 → 6 → 7.
    if version == 3 && writable {
        add_ctime(conn)?;
        version = user_version(conn)?;
    }
    if version == 4 && writable {
        add_discovered(conn)?;
        version = user_version(conn)?;
    }
    if version == 5 && writable {
        add_durations(conn)?;
        version = user_version(conn)?;
    }
    if version == 6 && writable {
        add_generation(conn)?;
        version = user_version(conn)?;
    }
    if version == 0 && writable {
        create_schema(conn)?;
    } else if version != SCHEMA_VERSION {
        return Err(OpenFailure::Unusable(format!(
            "schema version {version}, this orch uses {SCHEMA_VERSION}"
        )));
    }
    for sql in ALL_STATEMENTS {
        if let Err(err) = conn.prepare_cached(sql) {
            return Err(match error_code(&err) {
                // SQLITE_ERROR here means a missing table or column: a foreign schema.
                Some(ErrorCode::Unknown) => {
                    OpenFailure::Unusable(format!("schema does not match: {err}"))
                }
                _ => open_failure("checking the schema", err),
            });
        }
    }
    check_rows(conn, OPEN_CHECKS)
}

/// For each table, a query that finds a row orch could not read back: a value of the
/// wrong type, a digest or key that is not 32 bytes, a NULL where a value belongs, an
/// unknown status, run targets that are not a JSON array of strings.
///
/// The database is untrusted input, and one such row used to stop every command; a
/// database holding one is moved aside like a corrupt file. Opening checks only the
/// tables a build reads row by row without failing on a bad one ([`OPEN_CHECKS`]): a
/// build reads all of `instances` and `digests` anyway, and moves the database aside
/// when one of their rows fails to decode; the reading commands run every check
/// ([`Store::check_readable`]). A pass over 10,000 rows costs about 10 ms, too much
/// for every no-op build.
const CHECK_ROWS: &[(&str, &str)] = &[
    (
        "instances",
        "SELECT 1 FROM instances WHERE typeof(name) != 'text'
            OR typeof(last_status) != 'text' OR last_status NOT IN ('succeeded', 'failed')
            OR typeof(last_run_id) != 'text' OR typeof(last_finished_at_ns) != 'integer'
            OR CASE WHEN success_action_key IS NULL THEN 0
                ELSE typeof(success_action_key) != 'blob' OR length(success_action_key) != 32
                    OR typeof(success_manifest) != 'blob' OR typeof(success_run_id) != 'text'
                    OR typeof(success_finished_at_ns) != 'integer' END
            LIMIT 1",
    ),
    (
        "digests",
        "SELECT 1 FROM digests WHERE typeof(path) != 'text'
            OR typeof(size) != 'integer' OR typeof(mtime_ns) != 'integer'
            OR typeof(ino) != 'integer' OR typeof(is_dir) != 'integer'
            OR typeof(digest) != 'blob' OR length(digest) != 32
            OR typeof(hashed_at_ns) != 'integer'
            LIMIT 1",
    ),
    (
        "outputs",
        "SELECT 1 FROM outputs WHERE typeof(path) != 'text'
            OR typeof(digest) != 'blob' OR length(digest) != 32 OR typeof(size) != 'integer'
            OR typeof(instance) != 'text' OR typeof(action_key) != 'blob'
            OR length(action_key) != 32 OR typeof(run_id) != 'text'
            OR typeof(built_from) != 'text' OR typeof(recorded_at_ns) != 'integer'
            LIMIT 1",
    ),
    (
        "runs",
        "SELECT 1 FROM runs WHERE typeof(run_id) != 'text'
            OR run_id NOT GLOB '[A-Za-z0-9]*' OR run_id GLOB '*[^A-Za-z0-9._-]*'
            OR length(run_id) > 128
            OR typeof(plan_digest) != 'text' OR typeof(started_at_ns) != 'integer'
            OR typeof(finished_at_ns) NOT IN ('integer', 'null')
            OR typeof(status) NOT IN ('text', 'null') OR typeof(summary) NOT IN ('text', 'null')
            OR CASE WHEN typeof(targets) != 'text' THEN 1
                WHEN NOT json_valid(targets) THEN 1
                WHEN json_type(targets) != 'array' THEN 1
                ELSE EXISTS (SELECT 1 FROM json_each(targets) WHERE type != 'text') END
            LIMIT 1",
    ),
    (
        "shard_results",
        "SELECT 1 FROM shard_results WHERE typeof(shard_key) != 'blob'
            OR length(shard_key) != 32 OR typeof(instance) != 'text'
            OR typeof(output_digest) != 'blob' OR length(output_digest) != 32
            OR typeof(size) != 'integer' OR typeof(run_id) != 'text'
            OR typeof(discovered) != 'blob'
            LIMIT 1",
    ),
    (
        "durations",
        "SELECT 1 FROM durations WHERE typeof(instance) != 'text'
            OR typeof(shard) != 'text' OR typeof(duration_ms) != 'integer'
            OR duration_ms < 0 OR typeof(run_id) != 'text'
            LIMIT 1",
    ),
];

/// The tables whose rows [`init`] checks.
const OPEN_CHECKS: &[&str] = &["runs", "shard_results"];

/// Runs the [`CHECK_ROWS`] of `tables`: any row found makes the database unusable.
fn check_rows(conn: &Connection, tables: &[&str]) -> Result<(), OpenFailure> {
    for (table, sql) in CHECK_ROWS.iter().filter(|(t, _)| tables.contains(t)) {
        let found = conn
            .query_row(sql, [], |_| Ok(()))
            .optional()
            .map_err(|err| open_failure("checking the rows", err))?;
        if found.is_some() {
            return Err(OpenFailure::Unusable(format!(
                "a row of table `{table}` cannot be read"
            )));
        }
    }
    Ok(())
}

/// Whether opening failed because the database or its directory cannot be written.
fn cannot_write(err: &StoreError) -> bool {
    match err {
        StoreError::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
        ),
        StoreError::Sqlite { source, .. } => matches!(
            error_code(source),
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied)
        ),
        _ => false,
    }
}

/// An error with its causes, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Creates the schema if the database is still empty.
fn create_schema(conn: &Connection) -> Result<(), OpenFailure> {
    const ACTION: &str = "creating the schema";
    // Re-check under the write lock: another orch may be initialising the same file.
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|err| open_failure(ACTION, err))?;
    let result = (|| -> Result<(), OpenFailure> {
        let version = user_version(conn)?;
        if version == SCHEMA_VERSION {
            return Ok(()); // another process initialised it meanwhile
        }
        if version != 0 {
            return Err(OpenFailure::Unusable(format!(
                "schema version {version}, this orch uses {SCHEMA_VERSION}"
            )));
        }
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(|err| open_failure(ACTION, err))?;
        if tables != 0 {
            return Err(OpenFailure::Unusable(
                "it holds tables but no orch schema version".to_owned(),
            ));
        }
        conn.execute_batch(SCHEMA)
            .and_then(|_| conn.execute_batch(DURATIONS_TABLE))
            .and_then(|_| conn.execute_batch(GENERATION))
            .map_err(|err| open_failure(ACTION, err))?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|err| open_failure(ACTION, err))?;
        Ok(())
    })();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn
        .execute_batch(end)
        .map_err(|err| open_failure(ACTION, err));
    result.and(ended)
}

/// Upgrades a version 3 database: its digest rows lack the ctime, so they are dropped
/// (every file is hashed again once) rather than trusted.
fn add_ctime(conn: &Connection) -> Result<(), OpenFailure> {
    upgrade(
        conn,
        "upgrading the digest cache",
        3,
        "DELETE FROM digests;
         ALTER TABLE digests ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;",
    )
}

/// Upgrades a version 4 database: its shard results gain an empty `discovered` column,
/// which is exactly what they record (no shard had a depfile before version 5).
fn add_discovered(conn: &Connection) -> Result<(), OpenFailure> {
    upgrade(
        conn,
        "upgrading the shard results",
        4,
        "ALTER TABLE shard_results ADD COLUMN discovered BLOB NOT NULL DEFAULT x'';",
    )
}

/// Upgrades a version 5 database: it gains an empty durations table, so the first build
/// after the upgrade orders work as if it had no history.
fn add_durations(conn: &Connection) -> Result<(), OpenFailure> {
    upgrade(conn, "adding the durations table", 5, DURATIONS_TABLE)
}

/// Upgrades a version 6 database: it gains the generation counter, with an id no
/// `.orch/fresh.bin` written before holds.
fn add_generation(conn: &Connection) -> Result<(), OpenFailure> {
    upgrade(conn, "adding the generation counter", 6, GENERATION)
}

/// Runs `sql` on a database of version `from` and marks it `from + 1`, in one
/// transaction; a database another process upgraded meanwhile is left alone.
fn upgrade(
    conn: &Connection,
    action: &'static str,
    from: i64,
    sql: &str,
) -> Result<(), OpenFailure> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|err| open_failure(action, err))?;
    let result = (|| -> Result<(), OpenFailure> {
        if user_version(conn)? != from {
            return Ok(());
        }
        conn.execute_batch(sql)
            .map_err(|err| open_failure(action, err))?;
        conn.pragma_update(None, "user_version", from + 1)
            .map_err(|err| open_failure(action, err))
    })();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn
        .execute_batch(end)
        .map_err(|err| open_failure(action, err));
    result.and(ended)
}

/// Reads `PRAGMA user_version`.
fn user_version(conn: &Connection) -> Result<i64, OpenFailure> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|err| open_failure("reading the schema version", err))
}

/// Moves the unusable database at `path` aside and opens a fresh one in its place;
/// returns it with the warning that says so.
fn start_fresh(path: &Path, reason: &str) -> Result<(Store, String), StoreError> {
    let aside = move_aside(path)?;
    let conn = match open_file(path) {
        Ok(conn) => conn,
        Err(OpenFailure::Error(err)) => return Err(err),
        // A brand-new file that is unusable means something outside orch interferes.
        Err(OpenFailure::Unusable(again)) => {
            return Err(StoreError::InvalidRow {
                what: "freshly created database",
                detail: again,
            });
        }
    };
    let warning = format!(
        "the state database {} was unusable ({reason}); moved it to {} and started a fresh one, so everything will rebuild",
        path.display(),
        aside.display()
    );
    Ok((Store { conn }, warning))
}

/// Renames `path` and its `-wal`/`-shm` companions to `<path>.bad-<unix seconds>[...]`, returning the new main path.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let with_suffix = |base: &Path, suffix: &str| {
        let mut name = base.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let mut aside = with_suffix(path, &format!(".bad-{secs}"));
    // Two failures within one second must not overwrite the first evidence.
    let mut n = 1;
    while aside.try_exists().unwrap_or(true) && n < 1000 {
        aside = with_suffix(path, &format!(".bad-{secs}.{n}"));
        n += 1;
    }
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|source| StoreError::Io {
            action: "move aside",
            path: from.to_path_buf(),
            source,
        })
    };
    rename(path, &aside)?;
    // SQLite pairs a database with "<name>-wal"/"<name>-shm", so keep that naming: the
    // moved-aside file can still be opened with its journal for inspection.
    for suffix in ["-wal", "-shm"] {
        let from = with_suffix(path, suffix);
        if from.try_exists().unwrap_or(false) {
            rename(&from, &with_suffix(&aside, suffix))?;
        }
    }
    Ok(aside)
}

/// Stores a `u64` in SQLite's signed INTEGER bit-for-bit (values above `i64::MAX` wrap).
fn to_db_u64(value: u64) -> i64 {
    value as i64
}

/// Inverse of [`to_db_u64`].
fn from_db_u64(value: i64) -> u64 {
    value as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn key(byte: u8) -> [u8; 32] {
        [byte; 32]
    }

    fn success(byte: u8, run: &str, at: i64) -> SuccessRecord {
        SuccessRecord {
            action_key: key(byte),
            manifest: format!(r#"{{"key":{byte}}}"#).into_bytes(),
            run_id: run.to_owned(),
            finished_at_ns: at,
        }
    }

    fn run(id: &str, started: i64) -> RunRecord {
        RunRecord {
            run_id: id.to_owned(),
            plan_digest: format!("plan-{id}"),
            targets: vec!["b".to_owned(), "a[x=1]".to_owned()],
            started_at_ns: started,
            finished_at_ns: None,
            status: None,
            summary: None,
        }
    }

    fn open_fresh() -> Result<(tempfile::TempDir, Layout, Store), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        let (store, warning) = Store::open(&layout)?;
        assert_eq!(warning, None);
        Ok((tmp, layout, store))
    }

    /// Files in `.orch/` other than the database, its journals, and the .gitignore.
    fn bad_files(layout: &Layout) -> Result<Vec<String>, std::io::Error> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&layout.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("state.db.bad-") {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    #[test]
    fn results_round_trip_and_failure_keeps_success() -> TestResult {
        let (_tmp, layout, mut store) = open_fresh()?;
        store.write_results(&[
            ResultUpdate::Succeeded {
                instance: "a".to_owned(),
                record: success(1, "r1", 10),
            },
            ResultUpdate::Failed {
                instance: "b".to_owned(),
                run_id: "r1".to_owned(),
                finished_at_ns: 11,
            },
        ])?;
        store.write_results(&[ResultUpdate::Failed {
            instance: "a".to_owned(),
            run_id: "r2".to_owned(),
            finished_at_ns: 20,
        }])?;
        drop(store);

        let (store, warning) = Store::open(&layout)?;
        assert_eq!(warning, None);
        let results = store.load_results()?;
        assert_eq!(results.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            results["a"],
            InstanceRecord {
                last_status: LastStatus::Failed,
                last_run_id: "r2".to_owned(),
                last_finished_at_ns: 20,
                success: Some(success(1, "r1", 10)),
            }
        );
        assert_eq!(
            results["b"],
            InstanceRecord {
                last_status: LastStatus::Failed,
                last_run_id: "r1".to_owned(),
                last_finished_at_ns: 11,
                success: None,
            }
        );

        let (mut store, _) = Store::open(&layout)?;
        store.write_results(&[ResultUpdate::Succeeded {
            instance: "a".to_owned(),
            record: success(2, "r3", 30),
        }])?;
        let a = &store.load_results()?["a"];
        assert_eq!(a.last_status, LastStatus::Succeeded);
        assert_eq!(a.last_run_id, "r3");
        assert_eq!(a.last_finished_at_ns, 30);
        assert_eq!(a.success, Some(success(2, "r3", 30)));
        Ok(())
    }

    #[test]
    fn last_status_serializes_snake_case() -> TestResult {
        assert_eq!(
            serde_json::to_string(&LastStatus::Succeeded)?,
            r#""succeeded""#
        );
        assert_eq!(LastStatus::Failed.as_str(), "failed");
        Ok(())
    }

    #[test]
    fn digests_round_trip_upsert_and_delete() -> TestResult {
        let (_tmp, _layout, mut store) = open_fresh()?;
        let file = DigestRow {
            size: 42,
            mtime_ns: 1_700_000_000_123_456_789,
            ino: u64::MAX - 3, // above i64::MAX: must survive the signed column
            is_dir: false,
            digest: key(7),
            hashed_at_ns: 5,
            ctime_ns: 1_700_000_001_000_000_007,
        };
        let dir = DigestRow {
            size: u64::MAX,
            is_dir: true,
            digest: key(8),
            ..file
        };
        store.write_digests(&[
            ("src/a.txt".to_owned(), Some(file)),
            ("src".to_owned(), Some(dir)),
            ("gone".to_owned(), Some(file)),
        ])?;
        let changed = DigestRow {
            size: 43,
            digest: key(9),
            ..file
        };
        store.write_digests(&[
            ("src/a.txt".to_owned(), Some(changed)),
            ("gone".to_owned(), None),
            ("never-existed".to_owned(), None),
        ])?;
        let digests = store.load_digests()?;
        assert_eq!(digests.len(), 2);
        assert_eq!(digests.get("src/a.txt"), Some(&changed));
        assert_eq!(digests.get("src"), Some(&dir));
        Ok(())
    }

    #[test]
    fn outputs_round_trip_and_overwrite() -> TestResult {
        let (_tmp, _layout, mut store) = open_fresh()?;
        let first = OutputRecord {
            path: "out/fr.txt".to_owned(),
            digest: key(1),
            size: 100,
            instance: "translate[lang=fr]".to_owned(),
            action_key: key(2),
            run_id: "r1".to_owned(),
            built_from: r#"{"inputs":{}}"#.to_owned(),
            recorded_at_ns: 9,
        };
        store.write_outputs(std::slice::from_ref(&first))?;
        assert_eq!(store.output("out/fr.txt")?, Some(first.clone()));
        assert_eq!(store.output("out/de.txt")?, None);

        let second = OutputRecord {
            digest: key(3),
            run_id: "r2".to_owned(),
            recorded_at_ns: 19,
            ..first
        };
        store.write_outputs(std::slice::from_ref(&second))?;
        assert_eq!(store.output("out/fr.txt")?, Some(second));
        Ok(())
    }

    #[test]
    fn runs_round_trip_newest_first() -> TestResult {
        let (_tmp, layout, mut store) = open_fresh()?;
        store.begin_run(&run("r1", 100))?;
        store.begin_run(&run("r3", 300))?;
        store.begin_run(&run("r2", 200))?;
        store.finish_run("r1", 150, "succeeded", r#"{"ran":3}"#)?;
        assert!(
            store.begin_run(&run("r1", 400)).is_err(),
            "run ids are unique"
        );
        assert!(matches!(
            store.finish_run("nope", 1, "failed", "{}"),
            Err(StoreError::UnknownRun { .. })
        ));
        drop(store);

        let (store, _) = Store::open(&layout)?;
        let runs = store.runs(10)?;
        let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["r3", "r2", "r1"]);
        assert_eq!(runs[1], run("r2", 200));
        assert_eq!(
            runs[2],
            RunRecord {
                finished_at_ns: Some(150),
                status: Some("succeeded".to_owned()),
                summary: Some(r#"{"ran":3}"#.to_owned()),
                ..run("r1", 100)
            }
        );
        assert_eq!(store.runs(2)?.len(), 2);
        assert_eq!(store.runs(0)?.len(), 0);
        assert_eq!(store.runs(usize::MAX)?.len(), 3);
        Ok(())
    }

    #[test]
    fn run_by_id_and_delete_runs() -> TestResult {
        let (_tmp, _layout, mut store) = open_fresh()?;
        store.begin_run(&run("r1", 100))?;
        store.begin_run(&run("r2", 200))?;
        store.begin_run(&run("r3", 300))?;
        store.finish_run("r2", 250, "failed", "{}")?;
        assert_eq!(store.run("r1")?, Some(run("r1", 100)));
        assert_eq!(
            store.run("r2")?.and_then(|r| r.status),
            Some("failed".into())
        );
        assert_eq!(store.run("nope")?, None);
        assert_eq!(store.delete_runs(&[])?, 0);
        let gone = ["r1".to_owned(), "r2".to_owned(), "never".to_owned()];
        assert_eq!(store.delete_runs(&gone)?, 2);
        let ids: Vec<String> = store.runs(10)?.into_iter().map(|r| r.run_id).collect();
        assert_eq!(ids, ["r3"]);
        assert_eq!(store.run("r1")?, None);
        Ok(())
    }

    #[test]
    fn finishing_a_run_forgets_trimmed_runs_but_never_itself() -> TestResult {
        let (_tmp, _layout, mut store) = open_fresh()?;
        for (id, t) in [("r1", 100), ("r2", 200), ("r3", 300)] {
            store.begin_run(&run(id, t))?;
        }
        let forget = ["r1".to_owned(), "r3".to_owned()];
        store.finish_run_forgetting("r3", 350, "succeeded", "{}", &forget)?;
        let ids: Vec<String> = store.runs(10)?.into_iter().map(|r| r.run_id).collect();
        assert_eq!(ids, ["r3", "r2"]);
        assert_eq!(
            store.run("r3")?.and_then(|r| r.status),
            Some("succeeded".into())
        );
        // An unknown run deletes nothing.
        assert!(
            store
                .finish_run_forgetting("nope", 1, "failed", "{}", &["r2".to_owned()])
                .is_err()
        );
        assert!(store.run("r2")?.is_some());
        Ok(())
    }

    #[test]
    fn forget_shard_results_except_keeps_declared_instances() -> TestResult {
        let (_tmp, _layout, mut store) = open_fresh()?;
        let shard = |k: u8, inst: &str| ShardRecord {
            shard_key: key(k),
            instance: inst.to_owned(),
            output_digest: key(k + 100),
            size: u64::from(k),
            run_id: "r1".to_owned(),
            discovered: Vec::new(),
        };
        store.write_shard_results(&[shard(1, "a"), shard(2, "a"), shard(3, "gone")], &[])?;
        let keep: BTreeSet<String> = ["a".to_owned(), "z".to_owned()].into();
        assert_eq!(store.forget_shard_results_except(&keep)?, 1);
        assert_eq!(store.shard_results("a")?.len(), 2);
        assert!(store.shard_results("gone")?.is_empty());
        assert_eq!(store.forget_shard_results_except(&keep)?, 0);
        Ok(())
    }

    #[test]
    fn forget_instances_except_removes_only_undeclared() -> TestResult {
        let (_tmp, _layout, mut store) = open_fresh()?;
        let updates: Vec<ResultUpdate> = ["a", "b", "c", "d"]
            .iter()
            .map(|name| ResultUpdate::Succeeded {
                instance: (*name).to_owned(),
                record: success(1, "r1", 1),
            })
            .collect();
        store.write_results(&updates)?;
        let keep: BTreeSet<String> = ["b", "d", "z"].iter().map(|s| s.to_string()).collect();
        assert_eq!(store.forget_instances_except(&keep)?, 2);
        assert_eq!(store.load_results()?.keys().collect::<Vec<_>>(), ["b", "d"]);
        assert_eq!(store.forget_instances_except(&keep)?, 0);
        Ok(())
    }

    #[test]
    fn garbage_file_is_moved_aside() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        layout.ensure()?;
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(layout.db(), &garbage)?;

        let (mut store, warning) = Store::open(&layout)?;
        let warning = warning.ok_or("expected a warning")?;
        assert!(warning.contains("moved it to"), "{warning}");

        // (SQLite itself discards the -wal/-shm it made while probing the garbage.)
        let bad = bad_files(&layout)?;
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(std::fs::read(layout.dir.join(&bad[0]))?, garbage);
        assert!(warning.contains(&bad[0]), "{warning}");

        // The fresh database works and persists.
        store.begin_run(&run("r1", 1))?;
        drop(store);
        let (store, warning) = Store::open(&layout)?;
        assert_eq!(warning, None);
        assert_eq!(store.runs(5)?.len(), 1);
        Ok(())
    }

    #[test]
    fn short_garbage_file_is_moved_aside() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        layout.ensure()?;
        std::fs::write(layout.db(), b"hello")?;
        let (store, warning) = Store::open(&layout)?;
        assert!(warning.is_some());
        assert!(store.load_results()?.is_empty());
        assert_eq!(bad_files(&layout)?.len(), 1);
        Ok(())
    }

    #[test]
    fn damaged_pages_are_reported_as_corrupt_not_panics() -> TestResult {
        let (_tmp, layout, mut store) = open_fresh()?;
        let updates: Vec<ResultUpdate> = (0..2_000u32)
            .map(|i| ResultUpdate::Succeeded {
                instance: format!("task[i={i}]"),
                record: success(3, "r1", 1),
            })
            .collect();
        store.write_results(&updates)?;
        drop(store); // the last connection checkpoints the WAL into state.db
        let mut bytes = std::fs::read(layout.db())?;
        let len = bytes.len();
        assert!(len > 16 * 4096, "fixture too small: {len}");
        bytes[len / 2..].fill(0xA5);
        std::fs::write(layout.db(), &bytes)?;

        let (store, warning) = Store::open(&layout)?;
        match (warning, store.load_results()) {
            (Some(_), Ok(results)) => assert!(results.is_empty()),
            (None, Err(StoreError::Corrupt { .. })) => {}
            (warning, other) => panic!("unexpected: {warning:?} {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn wrong_schema_version_is_moved_aside() -> TestResult {
        let (_tmp, layout, mut store) = open_fresh()?;
        store.begin_run(&run("old", 1))?;
        drop(store);
        // Kept open so the change stays in state.db-wal: moving aside must carry it along.
        let other = Connection::open(layout.db())?;
        other.pragma_update(None, "wal_autocheckpoint", 0)?;
        other.pragma_update(None, "user_version", 99)?;

        let (store, warning) = Store::open(&layout)?;
        let warning = warning.ok_or("expected a warning")?;
        assert!(warning.contains("schema version 99"), "{warning}");
        assert!(store.runs(5)?.is_empty());
        let bad = bad_files(&layout)?;
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(
            bad[1].ends_with("-shm") && bad[2].ends_with("-wal"),
            "{bad:?}"
        );
        drop(store);

        let old = Connection::open(layout.dir.join(&bad[0]))?;
        let version: i64 = old.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        assert_eq!(version, 99);
        let runs: i64 = old.query_row("SELECT count(*) FROM runs", [], |row| row.get(0))?;
        assert_eq!(runs, 1);
        drop(other);
        Ok(())
    }

    #[test]
    fn foreign_database_is_moved_aside() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        layout.ensure()?;
        {
            let conn = Connection::open(layout.db())?;
            conn.execute_batch("CREATE TABLE something_else (x INTEGER)")?;
        }
        let (_store, warning) = Store::open(&layout)?;
        assert!(warning.is_some());
        assert_eq!(bad_files(&layout)?.len(), 1);
        Ok(())
    }

    #[test]
    fn version_3_digest_rows_are_dropped_not_trusted() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        layout.ensure()?;
        {
            let conn = Connection::open(layout.db())?;
            conn.execute_batch(
                &SCHEMA
                    .replace(",\n    ctime_ns INTEGER NOT NULL", "")
                    .replace(",\n    discovered BLOB NOT NULL DEFAULT x''", ""),
            )?;
            conn.execute(
                "INSERT INTO digests VALUES ('a', 1, 2, 3, 0, ?1, 4)",
                params![key(1)],
            )?;
            conn.pragma_update(None, "user_version", 3)?;
        }
        let (store, warning) = Store::open(&layout)?;
        assert_eq!(warning, None);
        assert!(store.load_digests()?.is_empty());
        Ok(())
    }

    #[test]
    fn version_4_shard_results_are_kept_with_no_discovered_inputs() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        layout.ensure()?;
        {
            let conn = Connection::open(layout.db())?;
            conn.execute_batch(&SCHEMA.replace(",\n    discovered BLOB NOT NULL DEFAULT x''", ""))?;
            conn.execute(
                "INSERT INTO shard_results VALUES (?1, 'a', ?2, 7, 'r1')",
                params![key(1), key(2)],
            )?;
            conn.pragma_update(None, "user_version", 4)?;
        }
        let (store, warning) = Store::open(&layout)?;
        assert_eq!(warning, None);
        let rows = store.shard_results("a")?;
        assert_eq!(
            rows.get(&key(1)),
            Some(&RecordedShard {
                digest: key(2),
                size: 7,
                discovered: Vec::new(),
            })
        );
        Ok(())
    }

    #[test]
    fn version_5_gains_an_empty_durations_table() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        layout.ensure()?;
        {
            let conn = Connection::open(layout.db())?;
            conn.execute_batch(SCHEMA)?;
            conn.execute(
                "INSERT INTO shard_results VALUES (?1, 'a', ?2, 7, 'r1', x'')",
                params![key(1), key(2)],
            )?;
            conn.pragma_update(None, "user_version", 5)?;
        }
        let (mut store, warning) = Store::open(&layout)?;
        assert_eq!(warning, None);
        assert!(store.durations()?.is_empty());
        assert_eq!(store.shard_results("a")?.len(), 1);
        store.write_durations(&[duration("a", "", 5)])?;
        assert_eq!(store.durations()?, BTreeMap::from([("a".to_owned(), 5)]));
        Ok(())
    }

    #[test]
    fn version_6_gains_a_generation_with_a_new_id() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        layout.ensure()?;
        {
            let conn = Connection::open(layout.db())?;
            conn.execute_batch(SCHEMA)?;
            conn.execute_batch(DURATIONS_TABLE)?;
            conn.pragma_update(None, "user_version", 6)?;
        }
        let (store, warning) = Store::open(&layout)?;
        assert_eq!(warning, None);
        let g = store.generation()?.ok_or("no generation")?;
        assert_eq!(g.n, 0);
        let (_t, _l, other) = open_fresh()?;
        assert_ne!(other.generation()?.ok_or("no generation")?.id, g.id);
        Ok(())
    }

    #[test]
    fn the_generation_counts_result_writes_only() -> TestResult {
        let (_tmp, _layout, mut store) = open_fresh()?;
        let start = store.generation()?.ok_or("no generation")?;
        store.begin_run(&run("r1", 1))?;
        store.finish_run("r1", 2, "succeeded", "{}")?;
        store.write_digests(&[(
            "a".to_owned(),
            Some(DigestRow {
                size: 1,
                mtime_ns: 1,
                ino: 1,
                ctime_ns: 1,
                is_dir: false,
                digest: key(3),
                hashed_at_ns: 1,
            }),
        )])?;
        assert_eq!(store.generation()?, Some(start));
        store.write_results(&[ResultUpdate::Succeeded {
            instance: "a".to_owned(),
            record: success(1, "r1", 10),
        }])?;
        let after_result = store.generation()?.ok_or("no generation")?;
        assert!(after_result.n > start.n);
        assert_eq!(after_result.id, start.id);
        store.write_shard_results(
            &[ShardRecord {
                shard_key: key(4),
                instance: "a".to_owned(),
                output_digest: key(5),
                size: 1,
                run_id: "r1".to_owned(),
                discovered: Vec::new(),
            }],
            &[],
        )?;
        let after_shard = store.generation()?.ok_or("no generation")?;
        assert!(after_shard.n > after_result.n);
        store.forget_instances_except(&BTreeSet::new())?;
        assert!(store.generation()?.ok_or("no generation")?.n > after_shard.n);
        Ok(())
    }

    fn duration(instance: &str, shard: &str, ms: u64) -> DurationRecord {
        DurationRecord {
            instance: instance.to_owned(),
            shard: shard.to_owned(),
            duration_ms: ms,
            run_id: "r1".to_owned(),
        }
    }

    #[test]
    fn durations_round_trip_apart_from_shards_and_go_with_their_instance() -> TestResult {
        let (_tmp, _layout, mut store) = open_fresh()?;
        store.write_durations(&[
            duration("a", "", 10),
            duration("a", "x.txt", 3),
            duration("a", "y.txt", 4),
            duration("b", "", 20),
        ])?;
        // The last run wins.
        store.write_durations(&[duration("a", "", 12)])?;
        assert_eq!(
            store.durations()?,
            BTreeMap::from([("a".to_owned(), 12), ("b".to_owned(), 20)])
        );
        assert_eq!(
            store.shard_durations("a")?,
            BTreeMap::from([("x.txt".to_owned(), 3), ("y.txt".to_owned(), 4)])
        );
        assert!(store.shard_durations("b")?.is_empty());
        store.forget_instances_except(&BTreeSet::from(["b".to_owned()]))?;
        assert_eq!(store.durations()?, BTreeMap::from([("b".to_owned(), 20)]));
        assert!(store.shard_durations("a")?.is_empty());
        Ok(())
    }

    #[test]
    fn a_duration_of_the_wrong_type_is_skipped_by_builds() -> TestResult {
        let (_tmp, layout, mut store) = open_fresh()?;
        store.write_durations(&[duration("a", "", 10)])?;
        {
            let conn = Connection::open(layout.db())?;
            conn.execute(
                "INSERT INTO durations VALUES ('b', '', 'slow', 'r1'), ('c', '', -4, 'r1')",
                [],
            )?;
        }
        assert_eq!(store.durations()?, BTreeMap::from([("a".to_owned(), 10)]));
        assert!(store.check_readable().is_err());
        Ok(())
    }

    #[test]
    fn mismatched_schema_with_right_version_is_moved_aside() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        layout.ensure()?;
        {
            let conn = Connection::open(layout.db())?;
            conn.execute_batch("CREATE TABLE instances (name TEXT)")?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        let (store, warning) = Store::open(&layout)?;
        assert!(warning.ok_or("expected a warning")?.contains("schema"));
        assert!(store.load_results()?.is_empty());
        Ok(())
    }

    #[test]
    fn a_wrong_length_shard_key_is_moved_aside_at_open() -> TestResult {
        let (_tmp, layout, mut store) = open_fresh()?;
        let shard = ShardRecord {
            shard_key: key(1),
            instance: "a".to_owned(),
            output_digest: key(2),
            size: 3,
            run_id: "r1".to_owned(),
            discovered: Vec::new(),
        };
        store.write_shard_results(&[shard], &[])?;
        store
            .conn
            .execute("UPDATE shard_results SET output_digest = x'0102'", [])?;
        drop(store);
        let (store, warning) = Store::open(&layout)?;
        let warning = warning.ok_or("expected a warning")?;
        assert!(warning.contains("`shard_results`"), "{warning}");
        assert!(store.shard_results("a")?.is_empty());
        assert_eq!(bad_files(&layout)?.len(), 1);
        Ok(())
    }

    #[test]
    fn rows_that_do_not_decode_are_damage() -> TestResult {
        let (_tmp, _layout, mut store) = open_fresh()?;
        store.write_results(&[ResultUpdate::Succeeded {
            instance: "a".to_owned(),
            record: success(1, "r1", 10),
        }])?;
        store
            .conn
            .execute("UPDATE instances SET success_action_key = x'01'", [])?;
        let err = store.load_results().err().ok_or("expected an error")?;
        assert!(matches!(err, StoreError::UnreadableRow { .. }), "{err:?}");
        assert!(err.is_damage());
        assert!(store.check_readable().is_err_and(|e| e.is_damage()));
        Ok(())
    }

    #[test]
    fn reading_commands_move_aside_text_that_is_not_utf8() -> TestResult {
        let (_tmp, layout, mut store) = open_fresh()?;
        store.begin_run(&run("r1", 1))?;
        store
            .conn
            .execute("UPDATE runs SET plan_digest = CAST(x'ff' AS TEXT)", [])?;
        drop(store);
        let (store, warning) = Store::open_existing_or_empty(&layout)?;
        assert!(warning.ok_or("expected a warning")?.contains("moved it to"));
        assert!(store.runs(10)?.is_empty());
        assert_eq!(bad_files(&layout)?.len(), 1);
        Ok(())
    }

    #[test]
    fn open_existing_or_empty_creates_no_files() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let layout = Layout::new(tmp.path());
        let (mut store, warning) = Store::open_existing_or_empty(&layout)?;
        assert_eq!(warning, None);
        assert!(store.load_results()?.is_empty());
        assert!(store.load_digests()?.is_empty());
        assert!(store.runs(10)?.is_empty());
        // Writes work but stay in memory.
        store.begin_run(&run("r1", 1))?;
        drop(store);
        assert_eq!(std::fs::read_dir(tmp.path())?.count(), 0);

        // Once the database exists, its content is read.
        let (mut store, _) = Store::open(&layout)?;
        store.begin_run(&run("r2", 2))?;
        drop(store);
        let (store, warning) = Store::open_existing_or_empty(&layout)?;
        assert_eq!(warning, None);
        assert_eq!(store.runs(10)?.len(), 1);
        Ok(())
    }

    #[test]
    fn two_connections_share_the_database() -> TestResult {
        let (_tmp, layout, mut writer) = open_fresh()?;
        let (reader, warning) = Store::open_existing_or_empty(&layout)?;
        assert_eq!(warning, None);
        writer.begin_run(&run("r1", 1))?;
        assert_eq!(reader.runs(1)?.len(), 1);
        let mode: String = reader
            .conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        assert_eq!(mode, "wal");
        Ok(())
    }

    #[test]
    fn empty_writes_touch_nothing() -> TestResult {
        let (_tmp, _layout, mut store) = open_fresh()?;
        let before = store.conn.total_changes();
        store.write_results(&[])?;
        store.write_digests(&[])?;
        store.write_outputs(&[])?;
        assert_eq!(store.conn.total_changes(), before);
        Ok(())
    }

    #[test]
    fn bulk_write_and_load_round_trips() -> TestResult {
        let (_tmp, layout, mut store) = open_fresh()?;
        let updates: Vec<ResultUpdate> = (0..10_000u32)
            .map(|i| ResultUpdate::Succeeded {
                instance: format!("task[i={i}]"),
                record: SuccessRecord {
                    action_key: *blake3::hash(&i.to_le_bytes()).as_bytes(),
                    manifest: format!(r#"{{"outputs":["out/{i}.txt"],"inputs":["src/{i}.txt"]}}"#)
                        .into_bytes(),
                    run_id: "r1".to_owned(),
                    finished_at_ns: i64::from(i),
                },
            })
            .collect();
        let digests: Vec<(String, Option<DigestRow>)> = (0..20_000u32)
            .map(|i| {
                let row = DigestRow {
                    size: u64::from(i),
                    mtime_ns: i64::from(i) * 1000,
                    ino: u64::from(i) + 1,
                    is_dir: i % 10 == 0,
                    digest: *blake3::hash(&i.to_be_bytes()).as_bytes(),
                    hashed_at_ns: 7,
                    ctime_ns: i64::from(i) * 1000,
                };
                (format!("src/dir{}/file{i}.txt", i % 100), Some(row))
            })
            .collect();
        store.write_results(&updates)?;
        store.write_digests(&digests)?;
        drop(store);

        let (store, _) = Store::open(&layout)?;
        let results = store.load_results()?;
        let loaded = store.load_digests()?;
        assert_eq!(results.len(), 10_000);
        assert_eq!(loaded.len(), 20_000);
        let Some(ResultUpdate::Succeeded { instance, record }) = updates.get(1234) else {
            panic!("fixture shape");
        };
        assert_eq!(results[instance].success.as_ref(), Some(record));
        let (path, row) = &digests[4321];
        assert_eq!(loaded.get(path), row.as_ref());
        Ok(())
    }
}
