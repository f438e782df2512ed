//! The ledger: one SQLite row per granule (DESIGN.md "Daemon"), in WAL mode so that
//! `s2edge ledger …` and `sqlite3` can read it while the daemon writes.
//!
//! Synchronous on purpose: the daemon calls it from `spawn_blocking`, the CLI directly.
//! One [`Ledger`] holds one connection behind a std `Mutex`; the lock is never held
//! across an `.await` (callers are blocking code), so a std mutex is the right tool.
//!
//! Invariants:
//! - a granule id has at most one row; a re-delivery updates it (`deliveries` counts);
//! - every state change is one statement, so a crash leaves the previous or the new
//!   state, never a mix;
//! - the schema version lives in `PRAGMA user_version`; [`Ledger::open`] migrates older
//!   files forward and refuses newer ones;
//! - `synchronous = FULL`: a commit is on disk before the call returns, so a terminal
//!   state (`done`, `quarantined`) is durable before the input is disposed of, and a power
//!   cut cannot revert a row whose input is already gone;
//! - `attempts` counts the attempts that ended in a failure of the granule's own;
//!   `crashes` counts attempts cut off by the daemon stopping (SIGKILL, OOM kill, power
//!   cut), found at the next start. The two have separate limits, so a good granule is
//!   not quarantined because the machine kept losing power.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::error::LedgerError;

/// The ledger file name under `[paths] state`.
pub const LEDGER_FILE: &str = "ledger.sqlite";

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 2;

/// Migrations, index `i` taking the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE granules (
        id          TEXT PRIMARY KEY,
        source      TEXT NOT NULL,
        work_path   TEXT,
        state       TEXT NOT NULL CHECK (state IN ('queued','processing','done','failed','quarantined')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT,
        deliveries  INTEGER NOT NULL DEFAULT 1,
        ready_at    TEXT,
        claimed_at  TEXT,
        started_at  TEXT,
        finished_at TEXT,
        product     TEXT,
        models      TEXT,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX granules_state ON granules (state);",
    "ALTER TABLE granules ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;",
];

/// A granule's state in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GranuleState {
    /// Claimed (or requeued), waiting for the worker.
    Queued,
    /// The worker is on it.
    Processing,
    /// Its product is published.
    Done,
    /// A transient failure; it will be retried.
    Failed,
    /// Moved to `[paths] quarantine` with a `reason.txt`.
    Quarantined,
}

impl GranuleState {
    /// Every state, in lifecycle order.
    pub const ALL: [GranuleState; 5] = [
        GranuleState::Queued,
        GranuleState::Processing,
        GranuleState::Done,
        GranuleState::Failed,
        GranuleState::Quarantined,
    ];

    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            GranuleState::Queued => "queued",
            GranuleState::Processing => "processing",
            GranuleState::Done => "done",
            GranuleState::Failed => "failed",
            GranuleState::Quarantined => "quarantined",
        }
    }
}

impl fmt::Display for GranuleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GranuleState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GranuleState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}"))
    }
}

/// One granule's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GranuleRow {
    /// Granule id.
    pub id: String,
    /// Where the input was delivered (in the ingest directory).
    pub source: PathBuf,
    /// Where the claimed input lies while it is being worked on.
    pub work_path: Option<PathBuf>,
    /// Current state.
    pub state: GranuleState,
    /// Processing attempts of the current delivery (crashed ones excepted).
    pub attempts: u32,
    /// Attempts of the current delivery cut off by the daemon stopping or crashing.
    pub crashes: u32,
    /// The last error, with its chain.
    pub last_error: Option<String>,
    /// How many times the granule was delivered (duplicates included).
    pub deliveries: u32,
    /// When the input became complete (for `marker`: the marker's mtime).
    pub ready_at: Option<DateTime<Utc>>,
    /// When it was claimed into `work`.
    pub claimed_at: Option<DateTime<Utc>>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached `done` or `quarantined`.
    pub finished_at: Option<DateTime<Utc>>,
    /// The published product directory.
    pub product: Option<PathBuf>,
    /// Model versions (`name@version`) of the product.
    pub models: Vec<String>,
    /// Last change of the row.
    pub updated_at: DateTime<Utc>,
}

/// The SQLite ledger; see the module docs.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// `(st_dev, st_ino)` of the file when it was opened, to notice it being deleted or
    /// replaced under a running daemon.
    identity: Option<(u64, u64)>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| {
        DateTime::parse_from_rfc3339(&s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

const COLUMNS: &str = "id, source, work_path, state, attempts, last_error, deliveries, ready_at, \
                       claimed_at, started_at, finished_at, product, models, updated_at, crashes";

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Ledger {
    /// Opens (creating if needed) `<state_dir>/ledger.sqlite`.
    ///
    /// # Errors
    /// As [`Ledger::open_file`].
    pub fn open_in(state_dir: &Path) -> Result<Ledger, LedgerError> {
        std::fs::create_dir_all(state_dir).map_err(|source| LedgerError::Dir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        Ledger::open_file(&state_dir.join(LEDGER_FILE))
    }

    /// Opens (creating if needed) the ledger file at `path`, in WAL mode, migrating its
    /// schema to [`SCHEMA_VERSION`].
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`] when SQLite cannot open or migrate it;
    /// [`LedgerError::NewerSchema`] when a newer s2edge wrote it.
    pub fn open_file(path: &Path) -> Result<Ledger, LedgerError> {
        let sql = |source| LedgerError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(sql)?;
        // Another instance or the CLI may hold the write lock for a moment.
        conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        // FULL: a terminal state must be on disk before the input is disposed of (NORMAL
        // in WAL mode may lose the last commits to a power cut, reverting a `done` row
        // whose input is already deleted).
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = conn.transaction().map_err(sql)?;
            tx.execute_batch(migration).map_err(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
        }
        Ok(Ledger {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            identity: identity(path),
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA synchronous` of the connection (2 = FULL).
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`].
    pub fn synchronous(&self) -> Result<i64, LedgerError> {
        self.with(|c| c.pragma_query_value(None, "synchronous", |r| r.get(0)))
    }

    /// Whether the file opened is still the one at [`Ledger::path`]: `false` once it was
    /// deleted or replaced under the daemon (whose writes would then go nowhere, and
    /// whose next start would reprocess every finished granule).
    pub fn file_intact(&self) -> bool {
        self.identity.is_some() && identity(&self.path) == self.identity
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        f(&conn).map_err(|source| LedgerError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    fn row(&self, r: &Row<'_>) -> rusqlite::Result<Result<GranuleRow, LedgerError>> {
        let id: String = r.get(0)?;
        let state: String = r.get(3)?;
        let models: Option<String> = r.get(12)?;
        let bad = |reason: String| LedgerError::BadRow {
            path: self.path.clone(),
            id: id.clone(),
            reason,
        };
        let state = match state.parse() {
            Ok(s) => s,
            Err(e) => return Ok(Err(bad(e))),
        };
        let models = match models.map(|m| serde_json::from_str::<Vec<String>>(&m)) {
            None => Vec::new(),
            Some(Ok(m)) => m,
            Some(Err(e)) => return Ok(Err(bad(format!("models: {e}")))),
        };
        let updated: String = r.get(13)?;
        let crashes: u32 = r.get(14)?;
        Ok(Ok(GranuleRow {
            source: PathBuf::from(r.get::<_, String>(1)?),
            work_path: r.get::<_, Option<String>>(2)?.map(PathBuf::from),
            state,
            attempts: r.get(4)?,
            crashes,
            last_error: r.get(5)?,
            deliveries: r.get(6)?,
            ready_at: parse_ts(r.get(7)?),
            claimed_at: parse_ts(r.get(8)?),
            started_at: parse_ts(r.get(9)?),
            finished_at: parse_ts(r.get(10)?),
            product: r.get::<_, Option<String>>(11)?.map(PathBuf::from),
            models,
            updated_at: parse_ts(Some(updated)).unwrap_or_default(),
            id,
        }))
    }

    /// The row of granule `id`, if any.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`] or [`LedgerError::BadRow`].
    pub fn get(&self, id: &str) -> Result<Option<GranuleRow>, LedgerError> {
        let row = self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM granules WHERE id = ?1"),
                [id],
                |r| self.row(r),
            )
            .optional()
        })?;
        row.transpose()
    }

    /// Every row, oldest change first.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`] or [`LedgerError::BadRow`].
    pub fn list(&self) -> Result<Vec<GranuleRow>, LedgerError> {
        self.select("1 = 1")
    }

    /// Rows of granules claimed but not finished (`queued`, `processing`, `failed`)
    /// whose input is in `work`: what a restart resumes.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`] or [`LedgerError::BadRow`].
    pub fn unfinished(&self) -> Result<Vec<GranuleRow>, LedgerError> {
        self.select("state IN ('queued','processing','failed') AND work_path IS NOT NULL")
    }

    fn select(&self, filter: &str) -> Result<Vec<GranuleRow>, LedgerError> {
        let rows = self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM granules WHERE {filter} ORDER BY updated_at, id"
            ))?;
            let rows = st.query_map([], |r| self.row(r))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter().collect()
    }

    /// Records a claim: the input moved from `source` to `work_path`. A new row, or a
    /// re-delivery of a known id (its attempts restart, `deliveries` counts up).
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`].
    pub fn claimed(
        &self,
        id: &str,
        source: &Path,
        work_path: &Path,
        ready_at: Option<DateTime<Utc>>,
    ) -> Result<(), LedgerError> {
        let now = ts(Utc::now());
        self.with(|c| {
            c.execute(
                "INSERT INTO granules (id, source, work_path, state, attempts, ready_at, claimed_at, updated_at)
                 VALUES (?1, ?2, ?3, 'queued', 0, ?4, ?5, ?5)
                 ON CONFLICT(id) DO UPDATE SET source = ?2, work_path = ?3, state = 'queued',
                   attempts = 0, crashes = 0, last_error = NULL, deliveries = deliveries + 1, ready_at = ?4,
                   claimed_at = ?5, started_at = NULL, finished_at = NULL, updated_at = ?5",
                params![
                    id,
                    source.to_string_lossy(),
                    work_path.to_string_lossy(),
                    ready_at.map(ts),
                    now
                ],
            )
        })?;
        Ok(())
    }

    /// Re-queues a granule found in `work` at startup. An attempt that was running
    /// (`processing`) when the daemon stopped is moved from `attempts` to `crashes`, so
    /// an input that crashes the daemon every time still reaches a limit, while power
    /// cuts do not use up the retries of the granule's own failures. Creates the row
    /// when the crash came between the claim and its ledger write. Returns the crashes.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`].
    pub fn resume(&self, id: &str, work_path: &Path) -> Result<u32, LedgerError> {
        let now = ts(Utc::now());
        let crashes = self.with(|c| {
            c.query_row(
                "INSERT INTO granules (id, source, work_path, state, attempts, claimed_at, updated_at)
                 VALUES (?1, ?2, ?2, 'queued', 0, ?3, ?3)
                 ON CONFLICT(id) DO UPDATE SET state = 'queued', work_path = ?2, updated_at = ?3,
                   crashes = crashes + (state = 'processing'),
                   attempts = max(0, attempts - (state = 'processing'))
                 RETURNING crashes",
                params![id, work_path.to_string_lossy(), now],
                |r| r.get::<_, u32>(0),
            )
        })?;
        Ok(crashes)
    }

    /// Takes back the attempt just started (it ended for a reason outside the granule,
    /// such as a full output disk) and records `error`; the row is `failed`.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`].
    pub fn refund(&self, id: &str, error: &str) -> Result<(), LedgerError> {
        let now = ts(Utc::now());
        self.with(|c| {
            c.execute(
                "UPDATE granules SET state = 'failed', attempts = max(0, attempts - 1),
                   last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, error, now],
            )
        })?;
        Ok(())
    }

    /// Records that an unfinished granule's input is no longer in `work` (removed by
    /// hand): the row leaves the unfinished set as `failed` with `work_path` cleared.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`].
    pub fn lost(&self, id: &str, error: &str) -> Result<(), LedgerError> {
        let now = ts(Utc::now());
        self.with(|c| {
            c.execute(
                "UPDATE granules SET state = 'failed', work_path = NULL, last_error = ?2,
                   updated_at = ?3 WHERE id = ?1",
                params![id, error, now],
            )
        })?;
        Ok(())
    }

    /// Records a duplicate delivery of a `done` granule: counted, not reprocessed.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`].
    pub fn duplicate(&self, id: &str) -> Result<(), LedgerError> {
        let now = ts(Utc::now());
        self.with(|c| {
            c.execute(
                "UPDATE granules SET deliveries = deliveries + 1, updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )
        })?;
        Ok(())
    }

    /// Marks the start of an attempt; returns the attempt number (1 for the first).
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`]; [`LedgerError::NotFound`] without a row.
    pub fn start(&self, id: &str) -> Result<u32, LedgerError> {
        let now = ts(Utc::now());
        let attempts = self.with(|c| {
            c.query_row(
                "UPDATE granules SET state = 'processing', attempts = attempts + 1, started_at = ?2,
                   updated_at = ?2 WHERE id = ?1 RETURNING attempts",
                params![id, now],
                |r| r.get::<_, u32>(0),
            )
            .optional()
        })?;
        attempts.ok_or_else(|| LedgerError::NotFound(id.to_string()))
    }

    /// Marks a granule `done` with its product and model versions.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`].
    pub fn done(&self, id: &str, product: &Path, models: &[String]) -> Result<(), LedgerError> {
        let now = ts(Utc::now());
        let models = serde_json::to_string(models).unwrap_or_else(|_| "[]".into());
        self.with(|c| {
            c.execute(
                "UPDATE granules SET state = 'done', product = ?2, models = ?3, last_error = NULL,
                   work_path = NULL, finished_at = ?4, updated_at = ?4 WHERE id = ?1",
                params![id, product.to_string_lossy(), models, now],
            )
        })?;
        Ok(())
    }

    /// Marks a transient failure (to be retried).
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`].
    pub fn failed(&self, id: &str, error: &str) -> Result<(), LedgerError> {
        let now = ts(Utc::now());
        self.with(|c| {
            c.execute(
                "UPDATE granules SET state = 'failed', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, error, now],
            )
        })?;
        Ok(())
    }

    /// Marks a granule quarantined; creates the row when the input never got one (an
    /// input without a usable id, or one that stayed incomplete).
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`].
    pub fn quarantined(&self, id: &str, source: &Path, error: &str) -> Result<(), LedgerError> {
        let now = ts(Utc::now());
        self.with(|c| {
            c.execute(
                "INSERT INTO granules (id, source, state, last_error, finished_at, updated_at)
                 VALUES (?1, ?2, 'quarantined', ?3, ?4, ?4)
                 ON CONFLICT(id) DO UPDATE SET state = 'quarantined', last_error = ?3,
                   work_path = NULL, finished_at = ?4, updated_at = ?4",
                params![id, source.to_string_lossy(), error, now],
            )
        })?;
        Ok(())
    }

    /// Sets a granule back to `queued` with no attempts (`s2edge ledger requeue`).
    ///
    /// # Errors
    /// [`LedgerError::NotFound`] without a row; [`LedgerError::Sqlite`].
    pub fn requeue(&self, id: &str, work_path: Option<&Path>) -> Result<(), LedgerError> {
        let now = ts(Utc::now());
        let n = self.with(|c| {
            c.execute(
                "UPDATE granules SET state = 'queued', attempts = 0, crashes = 0, last_error = NULL,
                   work_path = ?2, finished_at = NULL, updated_at = ?3 WHERE id = ?1",
                params![id, work_path.map(|p| p.to_string_lossy().into_owned()), now],
            )
        })?;
        if n == 0 {
            return Err(LedgerError::NotFound(id.to_string()));
        }
        Ok(())
    }

    /// Deletes a granule's row; returns whether there was one.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`].
    pub fn purge(&self, id: &str) -> Result<bool, LedgerError> {
        let n = self.with(|c| c.execute("DELETE FROM granules WHERE id = ?1", [id]))?;
        Ok(n > 0)
    }

    /// Number of granules in each state (every state present, zero included).
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`] or [`LedgerError::BadRow`].
    pub fn counts(&self) -> Result<BTreeMap<GranuleState, u64>, LedgerError> {
        let pairs = self.with(|c| {
            let mut st = c.prepare("SELECT state, COUNT(*) FROM granules GROUP BY state")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut out: BTreeMap<GranuleState, u64> =
            GranuleState::ALL.iter().map(|s| (*s, 0)).collect();
        for (state, n) in pairs {
            let state = state.parse().map_err(|reason| LedgerError::BadRow {
                path: self.path.clone(),
                id: "*".into(),
                reason,
            })?;
            out.insert(state, n.max(0) as u64);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open_in(&dir.path().join("state")).unwrap();
        (dir, l)
    }

    #[test]
    fn lifecycle_and_redelivery() {
        let (_d, l) = ledger();
        l.claimed("g1", Path::new("/in/g1"), Path::new("/work/g1"), None)
            .unwrap();
        assert_eq!(l.get("g1").unwrap().unwrap().state, GranuleState::Queued);
        assert_eq!(l.start("g1").unwrap(), 1);
        l.failed("g1", "io: busy").unwrap();
        assert_eq!(l.start("g1").unwrap(), 2);
        let models = vec!["a@1".to_string()];
        l.done("g1", Path::new("/out/g1"), &models).unwrap();
        let row = l.get("g1").unwrap().unwrap();
        assert_eq!(row.state, GranuleState::Done);
        assert_eq!(row.models, models);
        assert_eq!(row.attempts, 2);
        assert_eq!(row.work_path, None);
        assert!(row.finished_at.is_some());
        l.duplicate("g1").unwrap();
        assert_eq!(l.get("g1").unwrap().unwrap().deliveries, 2);
        // A claim of a known id restarts its attempts.
        l.claimed("g1", Path::new("/in/g1"), Path::new("/work/g1"), None)
            .unwrap();
        let row = l.get("g1").unwrap().unwrap();
        assert_eq!(
            (row.state, row.attempts, row.deliveries),
            (GranuleState::Queued, 0, 3)
        );
        assert_eq!(l.unfinished().unwrap().len(), 1);
    }

    #[test]
    fn counts_requeue_purge() {
        let (_d, l) = ledger();
        l.quarantined("bad", Path::new("/in/bad"), "garbage")
            .unwrap();
        l.claimed("g", Path::new("/in/g"), Path::new("/work/g"), None)
            .unwrap();
        let c = l.counts().unwrap();
        assert_eq!(c[&GranuleState::Quarantined], 1);
        assert_eq!(c[&GranuleState::Queued], 1);
        assert_eq!(c[&GranuleState::Done], 0);
        l.requeue("bad", None).unwrap();
        assert_eq!(l.get("bad").unwrap().unwrap().state, GranuleState::Queued);
        assert!(matches!(
            l.requeue("nope", None),
            Err(LedgerError::NotFound(_))
        ));
        assert!(l.purge("bad").unwrap());
        assert!(!l.purge("bad").unwrap());
        assert!(l.get("bad").unwrap().is_none());
    }

    #[test]
    fn schema_version_is_recorded_and_newer_files_are_refused() {
        let (d, l) = ledger();
        let path = l.path().to_path_buf();
        drop(l);
        let c = Connection::open(&path).unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(c);
        assert!(matches!(
            Ledger::open_file(&path),
            Err(LedgerError::NewerSchema { .. })
        ));
        drop(d);
    }

    #[test]
    fn commits_are_full_sync_and_crashes_count_apart() {
        let (_d, l) = ledger();
        assert_eq!(l.synchronous().unwrap(), 2, "synchronous = FULL");
        l.claimed("g", Path::new("/in/g"), Path::new("/work/g"), None)
            .unwrap();
        assert_eq!(l.start("g").unwrap(), 1);
        // The daemon died during the attempt: it is a crash, not an attempt.
        assert_eq!(l.resume("g", Path::new("/work/g")).unwrap(), 1);
        let row = l.get("g").unwrap().unwrap();
        assert_eq!((row.attempts, row.crashes), (0, 1));
        // Queued (not processing) at the stop: nothing counted.
        assert_eq!(l.resume("g", Path::new("/work/g")).unwrap(), 1);
        assert_eq!(l.start("g").unwrap(), 1);
        l.refund("g", "No space left on device").unwrap();
        let row = l.get("g").unwrap().unwrap();
        assert_eq!((row.state, row.attempts), (GranuleState::Failed, 0));
        l.lost("g", "gone").unwrap();
        assert!(l.unfinished().unwrap().is_empty());
    }

    #[test]
    fn a_deleted_ledger_file_is_noticed() {
        let (_d, l) = ledger();
        assert!(l.file_intact());
        std::fs::remove_file(l.path()).unwrap();
        assert!(!l.file_intact());
    }
}
