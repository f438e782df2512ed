//! Typed errors of the daemon. Each names what it concerns (path, granule id, key), so
//! a log line or a `reason.txt` says what to look at without a backtrace.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::model::ModelError;

/// Why the daemon could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration does not load or validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ledger could not be opened or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The models could not be loaded at startup.
    #[error("loading models: {0}")]
    Models(#[source] ModelError),
    /// A file system operation on a daemon directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `[paths] work` is not on the file system of `[paths] ingest`, so claims could not
    /// be atomic renames.
    #[error("paths.work = {work} is not on the file system of paths.ingest = {ingest}: claims are renames")]
    CrossDevice {
        /// `[paths] ingest`.
        ingest: PathBuf,
        /// `[paths] work`.
        work: PathBuf,
    },
    /// The HTTP endpoint could not be bound.
    #[error("binding [http] listen = {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime, a signal handler or a thread could not be started.
    #[error("starting {what}: {source}")]
    Start {
        /// What failed to start.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task panicked.
    #[error("internal error: {0}")]
    Panicked(String),
    /// The inference worker thread exited unexpectedly.
    #[error("the inference worker stopped: {0}")]
    WorkerGone(String),
}

impl DaemonError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DaemonError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite refused an operation on the ledger file.
    #[error("ledger {path}: {source}")]
    Sqlite {
        /// The ledger file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The ledger's directory could not be created.
    #[error("ledger directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file was written by a newer s2edge (its schema version is unknown).
    #[error(
        "ledger {path}: schema version {found} is newer than this s2edge understands ({supported})"
    )]
    NewerSchema {
        /// The ledger file.
        path: PathBuf,
        /// `PRAGMA user_version` found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A row holds a value this build cannot interpret.
    #[error("ledger {path}: granule {id}: {reason}")]
    BadRow {
        /// The ledger file.
        path: PathBuf,
        /// The granule id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// No row for this granule id.
    #[error("no granule {0} in the ledger")]
    NotFound(String),
    /// The ledger's lock was poisoned by a panic in another thread.
    #[error("ledger lock poisoned")]
    Poisoned,
}

/// Why an `s2edge ledger` action failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The ledger refused.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Moving an input back failed.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
