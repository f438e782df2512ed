//! `s2edge ledger list|show|requeue|purge`: operator actions on the ledger, without a
//! running daemon (SQLite in WAL mode lets them run beside one).
//!
//! `requeue` puts the input back where the daemon will see it: a quarantined input
//! moves back into ingest with a marker; a `done` granule's archived input (when
//! `[ingest] after = "archive"`) moves back too, and the row is set `queued` so the
//! next delivery is processed rather than counted as a duplicate. A `queued`,
//! `processing` or `failed` granule is set `queued` with its attempts reset: a running
//! daemon notices it within a second (a job waiting out its backoff retries at once; an
//! input in `work` that no job holds is resumed).

use std::io::Write;

use serde_json::json;

use crate::config::{Readiness, Settings};

use super::claim::rename_noreplace;
use super::error::AdminError;
use super::ingest::marker_of;
use super::ledger::{GranuleRow, GranuleState, Ledger};
use super::quarantine::restore;

/// Writes the ledger as a table, one granule per line.
///
/// # Errors
/// Ledger errors; the I/O error of writing to `out`.
pub fn list(ledger: &Ledger, out: &mut dyn Write) -> Result<(), AdminError> {
    let rows = ledger.list()?;
    let io = |e| AdminError::Io {
        path: "stdout".into(),
        source: e,
    };
    writeln!(
        out,
        "{:<64} {:<11} {:>8} {:>10}  {:<24} error",
        "id", "state", "attempts", "deliveries", "updated"
    )
    .map_err(io)?;
    for r in rows {
        let err = r.last_error.as_deref().unwrap_or("").replace('\n', " ");
        let err: String = err.chars().take(80).collect();
        writeln!(
            out,
            "{:<64} {:<11} {:>8} {:>10}  {:<24} {err}",
            r.id,
            r.state.as_str(),
            r.attempts,
            r.deliveries,
            r.updated_at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        )
        .map_err(io)?;
    }
    Ok(())
}

/// The row of `id` as pretty JSON.
///
/// # Errors
/// [`super::LedgerError::NotFound`] and other ledger errors.
pub fn show(ledger: &Ledger, id: &str) -> Result<String, AdminError> {
    let row = ledger
        .get(id)?
        .ok_or_else(|| super::LedgerError::NotFound(id.to_string()))?;
    Ok(serde_json::to_string_pretty(&row)
        .unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string()))
}

/// Requeues `id` (see the module docs); returns what was done, for the operator.
///
/// # Errors
/// Ledger errors; [`AdminError::Io`] when the input cannot be moved back.
pub fn requeue(settings: &Settings, ledger: &Ledger, id: &str) -> Result<String, AdminError> {
    let row: GranuleRow = ledger
        .get(id)?
        .ok_or_else(|| super::LedgerError::NotFound(id.to_string()))?;
    let make_marker = settings.ingest.ready == Readiness::Marker;
    let msg = match row.state {
        GranuleState::Quarantined => {
            let back = restore(
                &settings.paths.quarantine,
                id,
                &settings.paths.ingest,
                make_marker,
            )
            .map_err(|e| AdminError::Io {
                path: settings.paths.quarantine.join(id),
                source: e,
            })?;
            ledger.requeue(id, None)?;
            format!("{id}: moved back to {} and queued", back.display())
        }
        GranuleState::Done => {
            ledger.requeue(id, None)?;
            let archived = row
                .source
                .file_name()
                .map(|n| settings.paths.archive.join(n))
                .filter(|p| p.exists());
            match archived {
                Some(a) => {
                    let dst = settings
                        .paths
                        .ingest
                        .join(a.file_name().unwrap_or_default());
                    rename_noreplace(&a, &dst).map_err(|e| AdminError::Io {
                        path: a.clone(),
                        source: e,
                    })?;
                    if make_marker {
                        std::fs::write(marker_of(&dst), b"").map_err(|e| AdminError::Io {
                            path: marker_of(&dst),
                            source: e,
                        })?;
                    }
                    format!(
                        "{id}: archived input moved back to {}; it will be reprocessed",
                        dst.display()
                    )
                }
                None => format!("{id}: queued; its next delivery will be reprocessed"),
            }
        }
        GranuleState::Queued | GranuleState::Processing | GranuleState::Failed => {
            ledger.requeue(id, row.work_path.as_deref())?;
            format!(
                "{id}: attempts reset; a running daemon retries it from work within a second \
                 (ending its backoff), or the next start does"
            )
        }
    };
    Ok(msg)
}

/// Deletes the row of `id`; returns whether there was one.
///
/// # Errors
/// Ledger errors.
pub fn purge(ledger: &Ledger, id: &str) -> Result<bool, AdminError> {
    Ok(ledger.purge(id)?)
}
