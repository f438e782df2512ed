//! `s2edge batch`: bulk reprocessing of a list of granules into one output directory,
//! resumable and sharded across workers.
//!
//! - **Same products as `process`**: each granule goes through
//!   [`crate::pipeline::process::process_granule`] and appears atomically as
//!   `<out>/<granule-id>/`.
//! - **Sharding**: the list (blank lines and `#` comments skipped, duplicates dropped)
//!   is split round-robin: worker `i` of `n` takes entries `i, i + n, i + 2n, …`
//!   ([`Shard`]). The share comes from `--shard I/N`, a Slurm job array
//!   (`SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`), MPI
//!   ranks (feature `mpi-batch`, [`mpi`]), or both (an array of MPI jobs: task `t`, rank
//!   `r` of `s` is worker `t·s + r` of `count·s`).
//! - **Resume**: each worker records its granules in its own ledger,
//!   `<out>/.s2edge-batch/ledger-<i>-of-<n>.sqlite` (the daemon's SQLite ledger type):
//!   one writer per file, so workers on different nodes never contend for a lock. A
//!   rerun of the same worker skips what its ledger says is `done` and retries the rest.
//! - **Merge** ([`merge`]): once the workers are done, their ledgers are joined into
//!   `<out>/ledger.sqlite` and `<out>/collection.json` (a STAC Collection linking every
//!   product Item) is written, atomically. A single-worker run merges by itself; under
//!   MPI rank 0 merges after a barrier; a Slurm array merges in a dependent job
//!   (`s2edge batch --merge --out DIR`, see `contrib/slurm/batch.sbatch`).
//!
//! A bad granule never stops a batch: it is recorded as `failed` with its error, and the
//! worker's exit status says that some failed.

pub mod collection;
#[cfg(feature = "mpi-batch")]
pub mod mpi;

use crate::daemon::worker::error_chain;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::daemon::ledger::{GranuleState, Ledger};
use crate::daemon::LedgerError;
use crate::granule::GranuleSource;
use crate::pipeline::process::ProcessReport;
use crate::pipeline::PipelineError;

/// The directory under `--out` holding the workers' ledgers.
pub const STATE_DIR: &str = ".s2edge-batch";
/// The merged ledger under `--out`.
pub const MERGED_LEDGER: &str = "ledger.sqlite";

/// Errors of a batch run.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The list file could not be read.
    #[error("granule list {path}: {source}")]
    List {
        /// The list file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The list holds no granule.
    #[error("granule list {0} names no granule")]
    EmptyList(PathBuf),
    /// The share of this worker is malformed or out of range.
    #[error("shard: {0}")]
    Shard(String),
    /// A ledger operation failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The output directory or the collection could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A product Item could not be read while building the collection.
    #[error("product Item {path}: {reason}")]
    Item {
        /// The `item.json`.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl BatchError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        BatchError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One worker's share of the list: entries `index, index + count, …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This worker, `0..count`.
    pub index: usize,
    /// The number of workers.
    pub count: usize,
}

impl Shard {
    /// The only worker.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// A share, checked.
    ///
    /// # Errors
    /// [`BatchError::Shard`] when `count` is 0 or `index >= count`.
    pub fn new(index: usize, count: usize) -> Result<Shard, BatchError> {
        if count == 0 || index >= count {
            return Err(BatchError::Shard(format!(
                "worker {index} of {count} does not exist (0 <= index < count)"
            )));
        }
        Ok(Shard { index, count })
    }

    /// Parses `INDEX/COUNT`.
    ///
    /// # Errors
    /// [`BatchError::Shard`] for anything else.
    pub fn parse(s: &str) -> Result<Shard, BatchError> {
        let bad = || BatchError::Shard(format!("{s:?} is not INDEX/COUNT (e.g. 0/4)"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i = i.trim().parse().map_err(|_| bad())?;
        let n = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n)
    }

    /// The Slurm job-array share from `vars` (`SLURM_ARRAY_TASK_ID`,
    /// `SLURM_ARRAY_TASK_COUNT`, `SLURM_ARRAY_TASK_MIN`); `None` outside an array.
    ///
    /// # Errors
    /// [`BatchError::Shard`] when the variables are inconsistent.
    pub fn from_slurm(vars: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>, BatchError> {
        let num = |k: &str| -> Result<Option<usize>, BatchError> {
            vars(k)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| BatchError::Shard(format!("{k}={v:?} is not a number")))
                })
                .transpose()
        };
        let (Some(id), Some(count)) = (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?)
        else {
            return Ok(None);
        };
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let index = id.checked_sub(min).ok_or_else(|| {
            BatchError::Shard(format!(
                "SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}"
            ))
        })?;
        Shard::new(index, count).map(Some).map_err(|_| {
            BatchError::Shard(format!(
                "SLURM_ARRAY_TASK_ID={id} (min {min}) is outside SLURM_ARRAY_TASK_COUNT={count}: \
                 give the array contiguous ids (e.g. --array=0-{})",
                count.saturating_sub(1)
            ))
        })
    }

    /// This share split again among `ranks` (MPI ranks inside one array task).
    pub fn split(self, rank: usize, ranks: usize) -> Result<Shard, BatchError> {
        Shard::new(self.index * ranks + rank, self.count * ranks)
    }

    /// Whether entry `i` of the list is this worker's.
    pub fn owns(self, i: usize) -> bool {
        i % self.count == self.index
    }

    /// This worker's ledger under `out`.
    pub fn ledger_path(self, out: &Path) -> PathBuf {
        out.join(STATE_DIR)
            .join(format!("ledger-{}-of-{}.sqlite", self.index, self.count))
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The world size an MPI launcher announced in the environment `vars`, if any (Open
/// MPI's `OMPI_COMM_WORLD_SIZE`, or the PMI `PMI_SIZE` of MPICH and Slurm's `srun`).
/// A build without `mpi-batch` uses it to refuse running N full copies of the batch.
pub fn launched_size(vars: impl Fn(&str) -> Option<String>) -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|k| vars(k).and_then(|v| v.trim().parse().ok()))
}

/// Reads a list file: one granule path per line, `#` comments and blank lines skipped,
/// relative paths taken relative to the list's directory, repeated paths dropped.
///
/// # Errors
/// [`BatchError::List`] when unreadable; [`BatchError::EmptyList`] when it names none.
pub fn read_list(path: &Path) -> Result<Vec<PathBuf>, BatchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BatchError::List {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let p = Path::new(line);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        if seen.insert(p.clone()) {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(BatchError::EmptyList(path.to_path_buf()));
    }
    Ok(out)
}

/// What one worker did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ShardReport {
    /// Granules processed in this run.
    pub processed: Vec<String>,
    /// Granules skipped because the ledger has them `done`.
    pub already_done: Vec<String>,
    /// Granules that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Model versions the products used (`name@version`).
    pub models: BTreeSet<String>,
}

/// The id a granule is recorded under when it cannot even be opened.
fn fallback_id(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Runs this worker's share of `list` with `process` (which publishes one product under
/// `out` and returns its report), recording each granule in the worker's ledger.
///
/// # Errors
/// Ledger and I/O errors; a granule's own failure is recorded, not returned.
pub fn run_shard(
    out: &Path,
    list: &[PathBuf],
    shard: Shard,
    process: &mut dyn FnMut(&GranuleSource) -> Result<ProcessReport, PipelineError>,
) -> Result<ShardReport, BatchError> {
    std::fs::create_dir_all(out.join(STATE_DIR))
        .map_err(|e| BatchError::io(&out.join(STATE_DIR), e))?;
    let ledger = Ledger::open_file(&shard.ledger_path(out))?;
    let mut report = ShardReport::default();
    for (_, path) in list.iter().enumerate().filter(|(i, _)| shard.owns(*i)) {
        let source = match GranuleSource::open(path) {
            Ok(s) => s,
            Err(e) => {
                let id = fallback_id(path);
                let why = format!("opening {}: {e}", path.display());
                tracing::error!(granule = %id, error = %why, "granule failed");
                ledger.claimed(&id, path, path, None)?;
                ledger.failed(&id, &why)?;
                report.failed.push((id, why));
                continue;
            }
        };
        let id = source.id.to_string();
        let span = tracing::info_span!("granule", id = %id, worker = %shard);
        let _enter = span.enter();
        if let Some(row) = ledger.get(&id)? {
            if row.state == GranuleState::Done {
                tracing::info!("already done; skipped");
                report.already_done.push(id);
                continue;
            }
        } else {
            ledger.claimed(&id, path, path, None)?;
        }
        ledger.start(&id)?;
        match process(&source) {
            Ok(r) => {
                let mut models = r.models.clone();
                models.sort();
                ledger.done(&id, &r.product, &models)?;
                report.models.extend(models);
                tracing::info!(product = %r.product.display(), "done");
                report.processed.push(id);
            }
            Err(e) => {
                let why = error_chain(&e);
                tracing::error!(error = %why, "granule failed");
                ledger.failed(&id, &why)?;
                report.failed.push((id, why));
            }
        }
    }
    Ok(report)
}

/// What the merge found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MergeReport {
    /// The worker ledgers joined.
    pub ledgers: Vec<PathBuf>,
    /// Products linked from the collection.
    pub products: usize,
    /// Granules not done (failed in every worker that had them), with the last error.
    pub not_done: Vec<(String, String)>,
    /// The collection file.
    pub collection: PathBuf,
}

/// Joins the workers' ledgers into `<out>/ledger.sqlite` and writes
/// `<out>/collection.json` (see the module docs). Run it once the workers have finished.
///
/// # Errors
/// Ledger, I/O and Item errors.
pub fn merge(out: &Path, collection_id: &str) -> Result<MergeReport, BatchError> {
    let state = out.join(STATE_DIR);
    let mut ledgers: Vec<PathBuf> = match std::fs::read_dir(&state) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ledger-") && n.ends_with(".sqlite"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(BatchError::io(&state, e)),
    };
    ledgers.sort();
    // The best row per id: done beats not done, then the latest change.
    let mut best: std::collections::BTreeMap<String, crate::daemon::ledger::GranuleRow> =
        std::collections::BTreeMap::new();
    for file in &ledgers {
        let l = Ledger::open_file(file)?;
        for row in l.list()? {
            let better = match best.get(&row.id) {
                None => true,
                Some(old) => {
                    let rank = |r: &crate::daemon::ledger::GranuleRow| {
                        (r.state == GranuleState::Done, r.updated_at)
                    };
                    rank(&row) > rank(old)
                }
            };
            if better {
                best.insert(row.id.clone(), row);
            }
        }
    }
    let merged_path = out.join(MERGED_LEDGER);
    // Rebuilt from the workers' ledgers each time, so a merge can be rerun.
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", merged_path.display()));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BatchError::io(&p, e)),
        }
    }
    let merged = Ledger::open_file(&merged_path)?;
    let mut report = MergeReport {
        ledgers: ledgers.clone(),
        collection: out.join(collection::FILE),
        ..MergeReport::default()
    };
    let mut items = Vec::new();
    for (id, row) in &best {
        merged.claimed(id, &row.source, &row.source, row.ready_at)?;
        merged.start(id)?;
        match (&row.state, &row.product) {
            (GranuleState::Done, Some(product)) => {
                merged.done(id, product, &row.models)?;
                items.push((id.clone(), out.join(id).join("item.json")));
            }
            _ => {
                let why = row
                    .last_error
                    .clone()
                    .unwrap_or_else(|| format!("left {}", row.state.as_str()));
                merged.failed(id, &why)?;
                report.not_done.push((id.clone(), why));
            }
        }
    }
    report.products = items.len();
    collection::write_collection(out, collection_id, &items)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        assert!(Shard::parse("4/4").is_err());
        assert!(Shard::parse("x").is_err());
        let shards: Vec<Shard> = (0..3).map(|i| Shard::new(i, 3).unwrap()).collect();
        for i in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.owns(i)).count(), 1);
        }
        let s = Shard::new(1, 2).unwrap().split(1, 3).unwrap();
        assert_eq!(s, Shard { index: 4, count: 6 });
    }

    #[test]
    fn slurm_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Shard::from_slurm(env(&[])).unwrap(), None);
        let s = Shard::from_slurm(env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ]))
        .unwrap();
        assert_eq!(s, Some(Shard { index: 2, count: 4 }));
        assert!(Shard::from_slurm(env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]))
        .is_err());
    }

    #[test]
    fn list_files_skip_comments_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "# granules\n a\n\n/abs/b\na\n").unwrap();
        let l = read_list(&list).unwrap();
        assert_eq!(l, vec![dir.path().join("a"), PathBuf::from("/abs/b")]);
        std::fs::write(&list, "# nothing\n").unwrap();
        assert!(matches!(read_list(&list), Err(BatchError::EmptyList(_))));
    }
}
