//! The model registry: `models/<name>/<version>/{model.onnx, model.toml}` on disk.
//!
//! Invariants (DESIGN.md "Models"):
//! - a version directory is *complete* only when `model.toml` exists. Installers write
//!   `model.onnx` first and rename the manifest in last, so a half-copied version (no
//!   manifest yet) is invisible, never "bad";
//! - a manifest's `name` and `version` must equal its directory names, else the version is
//!   refused (a copied directory must not masquerade as another model);
//! - selection is by name, optionally pinned as `name@version`. Unpinned, the highest
//!   complete version that validates (manifest parses and validates, sha256 of
//!   `model.onnx` matches) wins; a broken higher version is skipped with a warning and
//!   reported in [`Resolved::skipped`], so an operator sees why an older one runs.
//!
//! The registry reads files only; graph checks need ONNX Runtime and happen in
//! [`super::session::load`], which builds the session from the very bytes whose sha256
//! was checked ([`read_verified`]). A version that verifies but fails to load is passed
//! over by [`super::set::ModelSet::load`] for the next lower one
//! ([`Registry::resolve_below`]), so one broken version never stops a start.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::error::ModelError;
use super::manifest::{validate_name, ManifestError, ModelSpec, Task, TrainingStatus};

/// The manifest file of a version directory.
pub const MANIFEST_FILE: &str = "model.toml";
/// The graph file of a version directory.
pub const ONNX_FILE: &str = "model.onnx";

/// A model selection: `name` (highest valid version) or `name@version` (pinned).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// The model name (a directory under the models root).
    pub name: String,
    /// The pinned version, if any.
    pub version: Option<u32>,
}

impl FromStr for ModelRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, version) = match s.split_once('@') {
            Some((n, v)) => {
                let v: u32 = v.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
                    format!("{s:?}: the version after '@' must be a positive integer")
                })?;
                (n, Some(v))
            }
            None => (s, None),
        };
        validate_name(name)?;
        Ok(ModelRef {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A version that passed the file checks.
#[derive(Debug)]
pub struct Resolved {
    /// The version directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub spec: ModelSpec,
    /// The verified sha256 of `model.onnx`.
    pub sha256: String,
    /// Higher versions that were skipped, highest first, with why.
    pub skipped: Vec<Skipped>,
}

/// A complete version that failed its checks during unpinned selection.
#[derive(Debug)]
pub struct Skipped {
    /// The version number.
    pub version: u32,
    /// Why it was refused.
    pub error: ModelError,
}

/// One line of `s2edge models list`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelListing {
    /// Model name (directory).
    pub name: String,
    /// Version (directory).
    pub version: u32,
    /// The version directory.
    pub dir: PathBuf,
    /// Task, when the manifest parses.
    pub task: Option<Task>,
    /// Training status, when the manifest parses.
    pub status: Option<TrainingStatus>,
    /// Whether the manifest validates and `model.onnx` has its sha256.
    pub sha_ok: bool,
    /// Size of `model.onnx` in bytes, when present.
    pub size: Option<u64>,
    /// Why the version is unusable, if it is.
    pub problem: Option<String>,
    /// The manifest's int8 graph, when it ships one.
    pub int8: Option<Int8Listing>,
}

/// The int8 graph of a listed version (`[precision.int8]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Listing {
    /// Its measured cost, dB of SRE against the float graph.
    pub cost_db: f64,
    /// Why it would not load (unreadable, or not its digest); `None` when it would.
    pub problem: Option<String>,
}

/// A models root directory.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// A registry over `root` (`models/`); nothing is read until asked.
    pub fn new(root: impl Into<PathBuf>) -> Registry {
        Registry { root: root.into() }
    }

    /// The models root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Model names (directories under the root), sorted.
    ///
    /// # Errors
    /// [`ModelError::Io`] when the root cannot be read.
    pub fn names(&self) -> Result<Vec<String>, ModelError> {
        let mut names: Vec<String> = read_dir(&self.root)?
            .into_iter()
            .filter(|(_, p)| p.is_dir())
            .filter_map(|(n, _)| validate_name(&n).ok().map(|()| n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Complete versions of `name` (those with a `model.toml`), ascending. Directories
    /// that are not positive integers, and versions without a manifest, are not versions.
    ///
    /// # Errors
    /// [`ModelError::Io`] when the model directory exists but cannot be read.
    pub fn versions(&self, name: &str) -> Result<Vec<u32>, ModelError> {
        let dir = self.root.join(name);
        // Only "does not exist" means "no versions": a models directory that cannot be
        // searched (permissions) is an I/O error naming it, not "model not found".
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(Vec::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(ModelError::Io { path: dir, source }),
        }
        let mut versions: Vec<u32> = read_dir(&dir)?
            .into_iter()
            .filter_map(|(n, p)| {
                let v: u32 = n.parse().ok().filter(|v| *v > 0)?;
                // Only canonical spellings: "01" would alias "1".
                (v.to_string() == n && p.join(MANIFEST_FILE).is_file()).then_some(v)
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Every complete version as `name@version`.
    fn available(&self) -> Vec<String> {
        let names = self.names().unwrap_or_default();
        names
            .iter()
            .flat_map(|n| {
                self.versions(n)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |v| format!("{n}@{v}"))
            })
            .collect()
    }

    /// Checks one version: manifest parses and validates, its name and version match the
    /// directories, and `model.onnx` has the manifest's sha256.
    ///
    /// # Errors
    /// [`ModelError::Manifest`], [`ModelError::ShaMismatch`], or [`ModelError::Io`].
    pub fn verify(&self, name: &str, version: u32) -> Result<(ModelSpec, String), ModelError> {
        let dir = self.root.join(name).join(version.to_string());
        let manifest = dir.join(MANIFEST_FILE);
        let spec = ModelSpec::load(&manifest)?;
        let mismatch = |field: &str, found: String, dir_says: String| ModelError::Manifest {
            path: manifest.clone(),
            reason: ManifestError::Invalid {
                field: field.into(),
                reason: format!("the manifest says {found} but the directory says {dir_says}"),
            },
        };
        if spec.name != name {
            return Err(mismatch("name", spec.name.clone(), name.to_string()));
        }
        if spec.version != version {
            return Err(mismatch(
                "version",
                spec.version.to_string(),
                version.to_string(),
            ));
        }
        let sha = verify_sha(&spec, &dir)?;
        Ok((spec, sha))
    }

    /// Selects a version of `model` (see the module docs for the rules).
    ///
    /// # Errors
    /// [`ModelError::NotFound`] when the name has no complete version (or the pinned one
    /// is not complete); a pinned version's own error; unpinned, when every complete
    /// version is broken, the highest one's error.
    pub fn resolve(&self, model: &ModelRef) -> Result<Resolved, ModelError> {
        self.resolve_below(model, None)
    }

    /// As [`Registry::resolve`], among the versions below `below` only (unpinned): the
    /// next candidate when the version `below` verified but failed to load.
    ///
    /// # Errors
    /// As [`Registry::resolve`].
    pub fn resolve_below(
        &self,
        model: &ModelRef,
        below: Option<u32>,
    ) -> Result<Resolved, ModelError> {
        let mut versions = self.versions(&model.name)?;
        if let Some(b) = below {
            versions.retain(|v| *v < b);
        }
        let not_found = || ModelError::NotFound {
            name: model.to_string(),
            searched_dir: self.root.clone(),
            available: self.available(),
        };
        let dir = |v: u32| self.root.join(&model.name).join(v.to_string());
        if let Some(pinned) = model.version {
            if !versions.contains(&pinned) {
                return Err(not_found());
            }
            let (spec, sha256) = self.verify(&model.name, pinned)?;
            return Ok(Resolved {
                dir: dir(pinned),
                spec,
                sha256,
                skipped: Vec::new(),
            });
        }
        let mut skipped = Vec::new();
        for &v in versions.iter().rev() {
            match self.verify(&model.name, v) {
                Ok((spec, sha256)) => {
                    return Ok(Resolved {
                        dir: dir(v),
                        spec,
                        sha256,
                        skipped,
                    })
                }
                Err(error) => {
                    tracing::warn!(
                        model = %model.name, version = v, %error,
                        "skipping a broken model version"
                    );
                    skipped.push(Skipped { version: v, error });
                }
            }
        }
        match skipped.into_iter().next() {
            Some(highest) => Err(highest.error),
            None => Err(not_found()),
        }
    }

    /// Resolves `model` and runs `load` on the selected version; unpinned, a version
    /// whose `load` fails (a graph that disagrees with its manifest, a corrupt protobuf,
    /// a failed test inference) is passed over for the next lower version. Returns the
    /// loaded value, its resolution, and every version passed over as
    /// `name@version: reason` (the sha256 and manifest failures of resolution included).
    ///
    /// # Errors
    /// As [`Registry::resolve`]; when no version loads, the highest one's load error.
    pub fn load_with_fallback<T>(
        &self,
        model: &ModelRef,
        mut load: impl FnMut(&Resolved) -> Result<T, ModelError>,
    ) -> Result<(T, Resolved, Vec<String>), ModelError> {
        let mut resolved = self.resolve(model)?;
        let mut skipped = Vec::new();
        let mut first_error = None;
        loop {
            for s in &resolved.skipped {
                skipped.push(format!("{}@{}: {}", model.name, s.version, s.error));
            }
            let version = resolved.spec.version;
            let error = match load(&resolved) {
                Ok(t) => return Ok((t, resolved, skipped)),
                Err(e) if model.version.is_some() => return Err(e),
                Err(e) => e,
            };
            tracing::error!(
                model = %model.name, version, %error,
                "model version refused at load; trying the next lower one"
            );
            skipped.push(format!("{}@{version}: {error}", model.name));
            first_error.get_or_insert(error);
            match self.resolve_below(model, Some(version)) {
                Ok(next) => resolved = next,
                Err(_) => {
                    return Err(first_error.unwrap_or_else(|| ModelError::NotFound {
                        name: model.to_string(),
                        searched_dir: self.root.clone(),
                        available: Vec::new(),
                    }))
                }
            }
        }
    }

    /// Every complete version of every model, for `s2edge models list`: sorted by name,
    /// then version. Broken versions are listed with their problem.
    ///
    /// # Errors
    /// [`ModelError::Io`] when the root cannot be read.
    pub fn list(&self) -> Result<Vec<ModelListing>, ModelError> {
        let mut out = Vec::new();
        for name in self.names()? {
            for version in self.versions(&name)? {
                let dir = self.root.join(&name).join(version.to_string());
                let size = fs::metadata(dir.join(ONNX_FILE)).ok().map(|m| m.len());
                let parsed = ModelSpec::load(&dir.join(MANIFEST_FILE)).ok();
                let (sha_ok, problem) = match self.verify(&name, version) {
                    Ok(_) => (true, None),
                    Err(e) => (false, Some(e.to_string())),
                };
                let int8 = parsed
                    .as_ref()
                    .and_then(|s| s.precision.int8.as_ref())
                    .map(|v| Int8Listing {
                        cost_db: v.cost_db,
                        problem: verify_file(
                            &format!("{name}@{version}"),
                            &dir,
                            &v.onnx,
                            &v.onnx_sha256,
                        )
                        .err()
                        .map(|e| e.to_string()),
                    });
                out.push(ModelListing {
                    int8,
                    task: parsed.as_ref().map(|s| s.task),
                    status: parsed.as_ref().map(|s| s.training.status),
                    name: name.clone(),
                    version,
                    dir,
                    sha_ok,
                    size,
                    problem,
                });
            }
        }
        Ok(out)
    }
}

/// Checks that `dir/model.onnx` has the manifest's digest; returns it.
///
/// # Errors
/// [`ModelError::ShaMismatch`] or [`ModelError::Io`].
pub(crate) fn verify_sha(spec: &ModelSpec, dir: &Path) -> Result<String, ModelError> {
    verify_file(&spec.label(), dir, ONNX_FILE, &spec.onnx_sha256)
}

/// Checks that `dir/file` (`model.onnx`, or a variant's graph) has the digest `expected`,
/// streaming it; returns the digest.
///
/// # Errors
/// [`ModelError::ShaMismatch`] or [`ModelError::Io`].
pub(crate) fn verify_file(
    label: &str,
    dir: &Path,
    file: &str,
    expected: &str,
) -> Result<String, ModelError> {
    let actual = sha256_file(&dir.join(file))?;
    check_digest(label, file, expected, &actual)?;
    Ok(actual)
}

/// [`ModelError::ShaMismatch`] unless `actual` is `expected`.
fn check_digest(label: &str, file: &str, expected: &str, actual: &str) -> Result<(), ModelError> {
    if actual == expected {
        return Ok(());
    }
    Err(ModelError::ShaMismatch {
        model: label.to_string(),
        file: file.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    })
}

/// Reads `dir/file` once (`model.onnx`, or a variant's graph) and checks `expected`, the
/// manifest's digest, on those bytes: ONNX Runtime then builds its session from exactly
/// the bytes that were verified, not from a second read of a file that may have changed
/// since.
///
/// # Errors
/// [`ModelError::ShaMismatch`] or [`ModelError::Io`].
pub(crate) fn read_verified(
    label: &str,
    dir: &Path,
    file: &str,
    expected: &str,
) -> Result<Vec<u8>, ModelError> {
    let path = dir.join(file);
    let bytes = fs::read(&path).map_err(|source| ModelError::Io {
        path: path.clone(),
        source,
    })?;
    check_digest(label, file, expected, &hex::encode(Sha256::digest(&bytes)))?;
    Ok(bytes)
}

/// Lower-case hex SHA-256 of a file, streamed.
///
/// # Errors
/// [`ModelError::Io`] when the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// `(file name, path)` of the entries of `dir`, skipping hidden ones and non-UTF-8 names.
fn read_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, ModelError> {
    let io = |source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if let Some(name) = entry.file_name().to_str() {
            if !name.starts_with('.') {
                out.push((name.to_string(), entry.path()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_refs_parse_and_print() {
        let r: ModelRef = "dsen2-2x@3".parse().unwrap();
        assert_eq!(r.name, "dsen2-2x");
        assert_eq!(r.version, Some(3));
        assert_eq!(r.to_string(), "dsen2-2x@3");
        let r: ModelRef = "srgan-2x".parse().unwrap();
        assert_eq!(r.version, None);
        for bad in ["x@", "x@0", "x@-1", "x@one", "@1", "../x", "X"] {
            assert!(bad.parse::<ModelRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sha256_of_a_known_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(matches!(
            sha256_file(&t.path().join("missing")),
            Err(ModelError::Io { .. })
        ));
    }

    #[test]
    fn versions_need_a_manifest_and_a_canonical_number() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("m");
        for v in ["1", "2", "3", "04", "x"] {
            std::fs::create_dir_all(m.join(v)).unwrap();
        }
        for v in ["1", "3", "04", "x"] {
            std::fs::write(m.join(v).join(MANIFEST_FILE), "").unwrap();
        }
        let reg = Registry::new(t.path());
        assert_eq!(reg.versions("m").unwrap(), vec![1, 3]);
        assert_eq!(reg.versions("absent").unwrap(), Vec::<u32>::new());
    }
}
