//! Checkpoints: `<checkpoint_dir>/latest/` holds the flat weights of each network
//! (`<net>.f32`, little-endian), each optimiser's state (`<net>.optim.bpk`, burnpack) and
//! `state.toml` (step, architecture, loss).
//!
//! Invariants: only rank 0 writes; a checkpoint is built in a temporary sibling directory
//! and renamed into place, so `latest/` is always complete (a crash mid-write leaves the
//! previous one); parameter ids are deterministic ([`super::params`]), so optimiser state
//! reloads onto a fresh module.

use std::path::{Path, PathBuf};

use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use super::TrainError;

/// `state.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimiser steps taken.
    pub step: u64,
    /// The task (`superres`, `gan`, `classify`).
    pub task: String,
    /// The model name it will be exported as.
    pub name: String,
    /// Scale (super-resolution) or 0.
    pub scale: usize,
    /// Residual blocks (super-resolution) or 0.
    pub blocks: usize,
    /// Features (super-resolution) or 0.
    pub features: usize,
    /// Ranks that trained it.
    pub ranks: usize,
    /// Global batch.
    pub batch: usize,
    /// Last global mean loss.
    pub loss: f32,
    /// Data it was trained on.
    pub data: Vec<String>,
    /// Band subset (classify).
    #[serde(default)]
    pub bands: Vec<String>,
}

/// One network's weights and optimiser to save.
pub struct NetState<'a> {
    /// File stem (`generator`, `discriminator`, `model`).
    pub name: &'a str,
    /// Flat weights.
    pub weights: &'a [f32],
    /// Its optimiser.
    pub optim: &'a ModuleOptimizer,
}

/// The directory of the current checkpoint.
pub fn latest(dir: &Path) -> PathBuf {
    dir.join("latest")
}

/// Writes a checkpoint atomically (see the module docs).
///
/// # Errors
/// [`TrainError::Io`] or [`TrainError::Checkpoint`].
pub fn save(
    dir: &Path,
    state: &CheckpointState,
    nets: &[NetState<'_>],
) -> Result<PathBuf, TrainError> {
    save_with(dir, state, nets, None)
}

/// Super-resolution architecture details beyond `state.toml` (`superres.toml`; absent in
/// checkpoints of versions before the back-projection layer, which means none).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrArch {
    /// Back-projection steps inside the graph.
    #[serde(default)]
    pub backprojection_steps: usize,
    /// The GAN generator's LeakyReLU slope (absent: [`super::sr::GAN_SLOPE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_slope: Option<f32>,
}

/// [`save`], with the super-resolution details `sr` written into the same atomic
/// checkpoint.
///
/// # Errors
/// As [`save`].
pub fn save_with(
    dir: &Path,
    state: &CheckpointState,
    nets: &[NetState<'_>],
    sr: Option<&SrArch>,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let tmp = dir.join(format!(".tmp-{}-{}", state.step, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    for net in nets {
        let p = tmp.join(format!("{}.f32", net.name));
        let bytes: Vec<u8> = net.weights.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, bytes).map_err(|e| TrainError::io(&p, e))?;
        let o = tmp.join(format!("{}.optim.bpk", net.name));
        net.optim.save(&o).map_err(|e| TrainError::Checkpoint {
            path: o.clone(),
            reason: format!("{e:?}"),
        })?;
    }
    let text = toml::to_string(state).map_err(|e| TrainError::Checkpoint {
        path: tmp.clone(),
        reason: e.to_string(),
    })?;
    let sp = tmp.join("state.toml");
    std::fs::write(&sp, text).map_err(|e| TrainError::io(&sp, e))?;
    if let Some(sr) = sr {
        let text = toml::to_string(sr).map_err(|e| TrainError::Checkpoint {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
        let p = tmp.join(SR_ARCH_FILE);
        std::fs::write(&p, text).map_err(|e| TrainError::io(&p, e))?;
    }
    let dest = latest(dir);
    let old = dir.join(".old");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    if dest.exists() {
        std::fs::rename(&dest, &old).map_err(|e| TrainError::io(&dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| TrainError::io(&dest, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    Ok(dest)
}

/// The file of [`SrArch`] in a checkpoint.
const SR_ARCH_FILE: &str = "superres.toml";

/// Reads `superres.toml` of checkpoint `ckpt`; absent means the defaults (no
/// back-projection), as every checkpoint written before it existed.
///
/// # Errors
/// [`TrainError::Checkpoint`] when present but unreadable.
pub fn load_sr_arch(ckpt: &Path) -> Result<SrArch, TrainError> {
    let p = ckpt.join(SR_ARCH_FILE);
    if !p.exists() {
        return Ok(SrArch::default());
    }
    let text = std::fs::read_to_string(&p).map_err(|e| TrainError::Checkpoint {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: p,
        reason: e.to_string(),
    })
}

/// Reads `state.toml` of the checkpoint directory `ckpt` (a `latest/`).
///
/// # Errors
/// [`TrainError::Checkpoint`] when absent or unreadable.
pub fn load_state(ckpt: &Path) -> Result<CheckpointState, TrainError> {
    let p = ckpt.join("state.toml");
    let text = std::fs::read_to_string(&p).map_err(|e| TrainError::Checkpoint {
        path: ckpt.to_path_buf(),
        reason: format!("cannot read state.toml: {e}"),
    })?;
    toml::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: p,
        reason: e.to_string(),
    })
}

/// Reads the flat weights of network `name` from checkpoint `ckpt`.
///
/// # Errors
/// [`TrainError::Checkpoint`] when absent or of a length that is not a whole number of
/// floats.
pub fn load_weights(ckpt: &Path, name: &str) -> Result<Vec<f32>, TrainError> {
    let p = ckpt.join(format!("{name}.f32"));
    let bytes = std::fs::read(&p).map_err(|e| TrainError::Checkpoint {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    if bytes.len() % 4 != 0 {
        return Err(TrainError::Checkpoint {
            path: p,
            reason: format!("{} bytes is not a whole number of f32", bytes.len()),
        });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// `optim` with the state saved for network `name` in `ckpt`.
///
/// # Errors
/// [`TrainError::Checkpoint`].
pub fn load_optim(
    ckpt: &Path,
    name: &str,
    optim: ModuleOptimizer,
) -> Result<ModuleOptimizer, TrainError> {
    let p = ckpt.join(format!("{name}.optim.bpk"));
    if !p.is_file() {
        return Err(TrainError::Checkpoint {
            path: p,
            reason: "optimiser state missing".into(),
        });
    }
    optim.load(&p).map_err(|e| TrainError::Checkpoint {
        path: p,
        reason: format!("{e:?}"),
    })
}
