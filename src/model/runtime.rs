//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! s2edge links ONNX Runtime dynamically (`ort` feature `load-dynamic`): the daemon builds
//! offline and the library is a deployment choice (the CPU wheel, `onnxruntime-gpu`, a
//! packaged copy next to the binary). DESIGN.md fixes the search order:
//!
//! 1. the configured `[runtime] onnxruntime` path;
//! 2. the environment variable `ORT_DYLIB_PATH`;
//! 3. where `scripts/setup.sh` installs it (`$HOME/.local/lib/s2edge/libonnxruntime.so`),
//!    or a packaged install: `<exe dir>/libonnxruntime.so*` and
//!    `<exe dir>/../lib/s2edge/libonnxruntime.so*`;
//! 4. an installed Python `onnxruntime` package (`python3`, then `./.venv/bin/python`):
//!    its `capi/libonnxruntime.so*`.
//!
//! Steps 1 and 2 are explicit choices: when one is set and names no library, resolution
//! fails naming it instead of silently loading some other build.
//!
//! Invariants: [`resolve_library`] is pure (its inputs come in a [`LibrarySearch`]), so
//! the order is testable without touching the process; [`init_runtime`] calls
//! `ort::init_from` (which returns an error, unlike `ort`'s own `ORT_DYLIB_PATH` fallback,
//! which panics) at most once per process and keeps the single ONNX Runtime environment
//! alive for the life of the process.
//!
//! The environment also fixes how intra-op threads are organised ([`ThreadPool`]): one
//! pool shared by every session, or one pool per session (the default). The choice is
//! made when the runtime loads and holds for the life of the process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::ep::ExecutionProvider as _;

use super::error::{ModelError, INSTALL_HINT};
use super::provider::ExecutionProvider;

/// The file name prefix of the ONNX Runtime library (`libonnxruntime.so`,
/// `libonnxruntime.so.1.32.0`).
const LIB_PREFIX: &str = "libonnxruntime.so";

/// How ONNX Runtime's intra-op threads are organised: `[runtime] thread_pool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadPool {
    /// One pool of `intra_threads` for the whole process, used by every session. The
    /// pipeline alternates the 2× and 6× sessions strip by strip; with one pool their
    /// runs do not hand the cores between two sets of threads (not yet measured in s2edge).
    Shared,
    /// Each session owns a pool of `intra_threads` (ONNX Runtime's own default).
    #[default]
    PerSession,
}

/// Where ONNX Runtime's CPU sessions take their working memory (activations, inputs and
/// outputs of a run): `[runtime] arena`. Fixed when the runtime loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arena {
    /// One arena for the whole process, registered with the environment and used by every
    /// CPU session. Sessions that run one after the other (the 2× and 6× models alternate
    /// strip by strip) reuse the same memory, so the peak is about the largest model's
    /// working set, not the sum of every model's.
    #[default]
    Shared,
    /// Each session owns an arena (ONNX Runtime's own default).
    PerSession,
}

/// What is fixed when the runtime loads: the threading ([`ThreadPool`], its size,
/// whether its threads spin) and the CPU memory [`Arena`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvOptions {
    /// Shared or per session.
    pub pool: ThreadPool,
    /// Intra-op threads of the pool (0 = ONNX Runtime's default, one per core).
    pub intra: usize,
    /// Whether idle pool threads busy-wait for the next operator (ONNX Runtime's
    /// default) or block. Applied to the shared pool here, to per-session pools by
    /// [`super::ProviderOptions::spinning`].
    pub spinning: bool,
    /// One CPU arena for every session, or one per session.
    pub arena: Arena,
    /// Bytes the shared arena reserves as its first region (`[runtime]
    /// arena_initial_chunk`, by default [`DEFAULT_ARENA_INITIAL_CHUNK`]); `None`: ONNX
    /// Runtime's default (1 MiB, then regions that double as it grows). Only with
    /// [`Arena::Shared`].
    pub arena_initial_chunk: Option<u64>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            pool: ThreadPool::PerSession,
            intra: 0,
            spinning: true,
            arena: Arena::default(),
            arena_initial_chunk: Some(DEFAULT_ARENA_INITIAL_CHUNK),
        }
    }
}

/// What the process knows about the loaded ONNX Runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The library that was loaded.
    pub path: PathBuf,
    /// The runtime's version (`1.32.0`), or `unknown` when the build string lacks it.
    pub version: String,
    /// ONNX Runtime's build string (git branch and commit, build flags).
    pub build_info: String,
    /// Accelerators this build was compiled with (not necessarily usable on this host:
    /// registering them can still fail on missing CUDA or TensorRT libraries).
    pub compiled_accelerators: Vec<ExecutionProvider>,
    /// The threading and CPU arena the environment was created with.
    pub env: EnvOptions,
}

/// The inputs of [`resolve_library`]: everything it would otherwise read from the process.
pub struct LibrarySearch {
    /// Step 1: the configured `[runtime] onnxruntime` (a file, or a directory holding one).
    pub configured: Option<PathBuf>,
    /// Step 2: the value of `ORT_DYLIB_PATH`, if set and non-empty.
    pub env_dylib: Option<OsString>,
    /// Step 3: `$HOME`.
    pub home: Option<PathBuf>,
    /// Step 3: the directory of the running executable.
    pub exe_dir: Option<PathBuf>,
    /// Step 4: finds installed Python `onnxruntime` package directories; called only when
    /// steps 1–3 found nothing (it spawns Python).
    pub python_packages: Box<dyn Fn() -> Vec<PathBuf>>,
}

impl LibrarySearch {
    /// The search as the running process sees it, with `configured` from the config file.
    pub fn from_process(configured: Option<&Path>) -> LibrarySearch {
        LibrarySearch {
            configured: configured.map(Path::to_path_buf),
            env_dylib: std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()),
            home: std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            exe_dir: std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            python_packages: Box::new(python_onnxruntime_dirs),
        }
    }
}

/// Finds the ONNX Runtime library in DESIGN.md's order (see the module docs).
///
/// # Errors
/// [`ModelError::RuntimeMissing`] listing every place looked at and how to install the
/// library; when the configured path or `ORT_DYLIB_PATH` is set but names no library, the
/// error names that path alone.
pub fn resolve_library(search: &LibrarySearch) -> Result<PathBuf, ModelError> {
    let missing = |searched: Vec<String>| ModelError::RuntimeMissing {
        searched,
        hint: INSTALL_HINT.to_string(),
    };
    // Steps 1 and 2 are explicit: they win or fail, never fall through.
    let explicit = [
        ("[runtime] onnxruntime", search.configured.clone()),
        (
            "ORT_DYLIB_PATH",
            search.env_dylib.as_ref().map(PathBuf::from),
        ),
    ];
    for (what, path) in explicit {
        if let Some(path) = path {
            return library_at(&path).ok_or_else(|| {
                missing(vec![format!(
                    "{} ({what}: no such library)",
                    path.display()
                )])
            });
        }
    }

    let mut searched = Vec::new();
    let mut candidates = Vec::new();
    if let Some(home) = &search.home {
        candidates.push(home.join(".local/lib/s2edge"));
    }
    if let Some(exe) = &search.exe_dir {
        candidates.push(exe.clone());
        candidates.push(exe.join("../lib/s2edge"));
    }
    for dir in candidates {
        match library_in(&dir) {
            Some(lib) => return Ok(lib),
            None => searched.push(format!("{}/{LIB_PREFIX}*", dir.display())),
        }
    }

    let packages = (search.python_packages)();
    if packages.is_empty() {
        searched.push("a Python onnxruntime package (python3, ./.venv/bin/python: none)".into());
    }
    for pkg in packages {
        let capi = pkg.join("capi");
        match library_in(&capi) {
            Some(lib) => return Ok(lib),
            None => searched.push(format!("{}/{LIB_PREFIX}*", capi.display())),
        }
    }
    Err(missing(searched))
}

/// `path` itself if it is a file, or the library inside it if it is a directory.
fn library_at(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        Some(path.to_path_buf())
    } else if path.is_dir() {
        library_in(path)
    } else {
        None
    }
}

/// `dir/libonnxruntime.so` if present, else the highest-sorting `dir/libonnxruntime.so.*`
/// (the wheel ships only the versioned name).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let exact = dir.join(LIB_PREFIX);
    if exact.is_file() {
        return Some(exact);
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&format!("{LIB_PREFIX}.")))
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    versioned.sort();
    versioned.pop()
}

/// Directories of installed Python `onnxruntime` packages, asking `python3` and then the
/// project venv relative to the working directory. Interpreters that are missing or lack
/// the package contribute nothing.
fn python_onnxruntime_dirs() -> Vec<PathBuf> {
    let mut interpreters = vec![PathBuf::from("python3")];
    let venv = PathBuf::from(".venv/bin/python");
    if venv.is_file() {
        interpreters.push(venv);
    }
    let mut dirs = Vec::new();
    for python in interpreters {
        let out = Command::new(&python)
            .args([
                "-c",
                "import onnxruntime,os;print(os.path.dirname(onnxruntime.__file__))",
            ])
            .output();
        if let Ok(out) = out {
            if out.status.success() {
                let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if dir.is_dir() && !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
    }
    dirs
}

/// The loaded runtime: its description and the process's single ONNX Runtime environment.
struct Runtime {
    info: RuntimeInfo,
    env: Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
/// Serialises initialisation: `OnceLock::get_or_try_init` is not stable.
static INIT: Mutex<()> = Mutex::new(());

/// Resolves, loads and initialises ONNX Runtime for this process.
///
/// Loading happens once. A later call returns the same [`RuntimeInfo`] when `configured`
/// is `None` or names the loaded library; asking for a *different* library is an error,
/// because a process cannot unload ONNX Runtime (restart to switch). `options` apply
/// when the runtime loads; a later call asking for other options keeps the loaded ones
/// and logs a warning.
///
/// # Errors
/// [`ModelError::RuntimeMissing`] when no library is found, [`ModelError::RuntimeInit`]
/// when it does not load (wrong file, too old for this build's API level) or the
/// environment cannot be created, or when a different library is already loaded.
pub fn init_runtime(
    configured: Option<&Path>,
    options: EnvOptions,
) -> Result<RuntimeInfo, ModelError> {
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return match configured {
            Some(p) if !same_file(p, &rt.info.path) => Err(ModelError::RuntimeInit {
                path: p.to_path_buf(),
                reason: format!(
                    "ONNX Runtime is already loaded from {} in this process; \
                     a second library cannot be loaded (restart to switch)",
                    rt.info.path.display()
                ),
            }),
            _ => {
                if options != rt.info.env {
                    tracing::warn!(
                        loaded = ?rt.info.env,
                        asked = ?options,
                        "ONNX Runtime's threads and arena are fixed when it loads; restart to change them"
                    );
                }
                Ok(rt.info.clone())
            }
        };
    }
    let path = resolve_library(&LibrarySearch::from_process(configured))?;
    let path = std::path::absolute(&path).unwrap_or(path);
    let init_err = |reason: String| ModelError::RuntimeInit {
        path: path.clone(),
        reason,
    };
    let builder = ort::init_from(&path).map_err(|e| init_err(e.to_string()))?;
    let mut builder = builder.with_name("s2edge").with_telemetry(false);
    if options.pool == ThreadPool::Shared {
        let pool = GlobalThreadPoolOptions::default()
            .with_intra_threads(options.intra)
            .and_then(|p| p.with_inter_threads(1))
            .and_then(|p| p.with_spin_control(options.spinning))
            .map_err(|e| init_err(format!("cannot configure the shared thread pool: {e}")))?;
        builder = builder.with_global_thread_pool(pool);
    }
    let env = builder.build().map_err(|e| init_err(e.to_string()))?;
    if options.arena == Arena::Shared {
        register_shared_arena(&env, options.arena_initial_chunk)
            .map_err(|e| init_err(format!("cannot register the shared CPU arena: {e}")))?;
    }
    let build_info = ort::info().to_string();
    let version = library_version(&path).unwrap_or_else(|why| {
        tracing::warn!(path = %path.display(), %why, "cannot read the ONNX Runtime version string");
        runtime_version(&build_info, &path)
    });
    let info = RuntimeInfo {
        version,
        build_info,
        compiled_accelerators: compiled_accelerators(),
        path,
        env: options,
    };
    tracing::info!(
        path = %info.path.display(),
        version = %info.version,
        accelerators = ?info.compiled_accelerators,
        env = ?info.env,
        "ONNX Runtime loaded"
    );
    let out = info.clone();
    // Cannot be set already: we hold INIT and checked above.
    let _ = RUNTIME.set(Runtime { info, env });
    Ok(out)
}

/// The loaded runtime's description, if [`init_runtime`] succeeded.
pub fn runtime_info() -> Option<RuntimeInfo> {
    RUNTIME.get().map(|rt| rt.info.clone())
}

/// The CPU arena of the loaded runtime (`None` before [`init_runtime`]): sessions built on
/// a shared one must ask for the environment's allocators.
pub(crate) fn loaded_arena() -> Option<Arena> {
    RUNTIME.get().map(|rt| rt.info.env.arena)
}

/// The largest first region ONNX Runtime's arena configuration takes (its
/// `initial_chunk_size_bytes` is a C `int`).
pub const MAX_ARENA_INITIAL_CHUNK: u64 = i32::MAX as u64;

/// The shared arena's first region when `[runtime] arena_initial_chunk` is absent:
/// 1.25 GiB, which holds the whole working set of the shipped 2× and 6× models on the
/// capped tile grid in one region. Best-fit allocation within one region keeps the pages
/// touched close to the most in use at once, where regions that double are touched
/// further as a long granule's tile shapes fragment them, so the peak is nearly the same
/// on a granule of two tiles and on a full tile (BENCHMARKS.md, "Capped tiles and one
/// arena region"). It is address space until used.
pub const DEFAULT_ARENA_INITIAL_CHUNK: u64 = 1_342_177_280;

/// Registers one CPU arena with `env` for every session that asks for the environment's
/// allocators ([`Arena::Shared`]). Without `initial_chunk` it has ONNX Runtime's default
/// configuration (it grows in powers of two; growing by exactly what is asked for
/// fragmented it, BENCHMARKS.md "One CPU arena"); with it, its first region is that many
/// bytes (BENCHMARKS.md "Where the peak is, and the arena's first region").
fn register_shared_arena(env: &Environment, initial_chunk: Option<u64>) -> Result<(), String> {
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    use ort::AsPointer;
    let mem = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )
    .map_err(|e| e.to_string())?;
    let mut cfg: *mut ort::sys::OrtArenaCfg = std::ptr::null_mut();
    if let Some(bytes) = initial_chunk {
        if bytes == 0 || bytes > MAX_ARENA_INITIAL_CHUNK {
            return Err(format!(
                "arena_initial_chunk must be 1 to {MAX_ARENA_INITIAL_CHUNK} bytes, not {bytes}"
            ));
        }
        let keys = [c"initial_chunk_size_bytes".as_ptr()];
        let values = [bytes as usize];
        // SAFETY: one key and one value, both alive for the call; on success `cfg` is an
        // arena configuration that is released below.
        unsafe {
            ort::Error::<()>::result_from_status((ort::api().CreateArenaCfgV2)(
                keys.as_ptr(),
                values.as_ptr(),
                keys.len(),
                &mut cfg,
            ))
        }
        .map_err(|e| e.to_string())?;
    }
    // SAFETY: `env` and `mem` are live objects of this runtime; `cfg` is null (the
    // defaults) or the configuration made above, which ONNX Runtime copies;
    // `result_from_status` takes the returned status and releases it.
    let registered = unsafe {
        ort::Error::<()>::result_from_status((ort::api().CreateAndRegisterAllocator)(
            env.ptr().cast_mut(),
            mem.ptr(),
            cfg,
        ))
    }
    .map_err(|e| e.to_string());
    if !cfg.is_null() {
        // SAFETY: made by CreateArenaCfgV2 above and not used after this.
        unsafe { (ort::api().ReleaseArenaCfg)(cfg) };
    }
    registered
}

/// The process's ONNX Runtime environment, initialising the runtime with the default
/// search (no configured path) if nothing did yet.
///
/// # Errors
/// As [`init_runtime`].
pub(crate) fn environment() -> Result<&'static Environment, ModelError> {
    if RUNTIME.get().is_none() {
        init_runtime(None, EnvOptions::default())?;
    }
    RUNTIME
        .get()
        .map(|rt| &rt.env)
        .ok_or_else(|| ModelError::RuntimeInit {
            path: PathBuf::new(),
            reason: "ONNX Runtime initialisation did not complete".into(),
        })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The library's own version string, `OrtGetApiBase()->GetVersionString()` (`1.32.0`).
///
/// `ort` reads it while loading but does not expose it, and its build string carries only
/// the git branch (often `HEAD`). Called after `ort::init_from` loaded the same file, so
/// this opens a second handle to an already-initialised library and closing it unloads
/// nothing.
fn library_version(path: &Path) -> Result<String, String> {
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `path` is the ONNX Runtime library `ort` has just loaded and initialised from
    // (so its initialisers have run); `OrtGetApiBase` has this signature in every ONNX
    // Runtime release, returns a pointer to a static struct, and `GetVersionString`
    // returns a static NUL-terminated string. Nothing outlives `lib` but the copied String.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| e.to_string())?;
        let get_base = lib
            .get::<GetApiBase>(b"OrtGetApiBase")
            .map_err(|e| format!("no OrtGetApiBase: {e}"))?;
        let base = get_base();
        if base.is_null() {
            return Err("OrtGetApiBase returned null".into());
        }
        let version = ((*base).GetVersionString)();
        if version.is_null() {
            return Err("GetVersionString returned null".into());
        }
        std::ffi::CStr::from_ptr(version)
            .to_str()
            .map(str::to_string)
            .map_err(|e| format!("version string is not UTF-8: {e}"))
    }
}

/// Fallback: the version from the build string (`git-branch=rel-1.32.0`), else from a versioned
/// file name (`libonnxruntime.so.1.32.0`), else `unknown`.
fn runtime_version(build_info: &str, path: &Path) -> String {
    let from_branch = build_info
        .split([',', ' '])
        .find_map(|part| part.trim().strip_prefix("git-branch=rel-"))
        .map(str::to_string);
    let from_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(&format!("{LIB_PREFIX}.")))
        .map(str::to_string);
    from_branch
        .or(from_name)
        .unwrap_or_else(|| "unknown".into())
}

fn compiled_accelerators() -> Vec<ExecutionProvider> {
    let mut out = Vec::new();
    if ort::ep::TensorRT::is_available().unwrap_or(false) {
        out.push(ExecutionProvider::TensorRt);
    }
    if ort::ep::CUDA::is_available().unwrap_or(false) {
        out.push(ExecutionProvider::Cuda);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(
        configured: Option<PathBuf>,
        env: Option<&str>,
        home: Option<PathBuf>,
        exe: Option<PathBuf>,
        python: Vec<PathBuf>,
    ) -> LibrarySearch {
        LibrarySearch {
            configured,
            env_dylib: env.map(OsString::from),
            home,
            exe_dir: exe,
            python_packages: Box::new(move || python.clone()),
        }
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn order_is_config_env_home_exe_python() {
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("cfg/libonnxruntime.so");
        let env = t.path().join("env/libonnxruntime.so.1.32.0");
        let home = t.path().join("home");
        let home_lib = home.join(".local/lib/s2edge/libonnxruntime.so");
        let exe = t.path().join("opt/bin");
        let exe_lib = t.path().join("opt/lib/s2edge/libonnxruntime.so.1.32.0");
        let py = t.path().join("site/onnxruntime");
        let py_lib = py.join("capi/libonnxruntime.so.1.32.0");
        for p in [&cfg, &env, &home_lib, &exe_lib, &py_lib] {
            touch(p);
        }
        std::fs::create_dir_all(&exe).unwrap();
        let env_s = env.to_str().unwrap();
        let all = |c: Option<PathBuf>, e: Option<&str>, h: bool, x: bool| {
            search(
                c,
                e,
                h.then(|| home.clone()),
                x.then(|| exe.clone()),
                vec![py.clone()],
            )
        };
        assert_eq!(
            resolve_library(&all(Some(cfg.clone()), Some(env_s), true, true)).unwrap(),
            cfg
        );
        assert_eq!(
            resolve_library(&all(None, Some(env_s), true, true)).unwrap(),
            env
        );
        assert_eq!(
            resolve_library(&all(None, None, true, true)).unwrap(),
            home_lib
        );
        let got = resolve_library(&all(None, None, false, true)).unwrap();
        assert_eq!(got.canonicalize().unwrap(), exe_lib.canonicalize().unwrap());
        assert_eq!(
            resolve_library(&all(None, None, false, false)).unwrap(),
            py_lib
        );
        // A configured directory is searched for the library.
        let dir = cfg.parent().unwrap().to_path_buf();
        assert_eq!(
            resolve_library(&all(Some(dir), None, false, false)).unwrap(),
            cfg
        );
    }

    #[test]
    fn explicit_paths_never_fall_through() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        touch(&home.join(".local/lib/s2edge/libonnxruntime.so"));
        let bogus = t.path().join("nope/libonnxruntime.so");
        let e = resolve_library(&search(
            Some(bogus.clone()),
            None,
            Some(home.clone()),
            None,
            vec![],
        ))
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ModelError::RuntimeMissing { .. }));
        assert!(msg.contains(bogus.to_str().unwrap()), "{msg}");
        assert!(msg.contains("[runtime] onnxruntime"), "{msg}");
        let e = resolve_library(&search(
            None,
            Some("/no/such/lib.so"),
            Some(home),
            None,
            vec![],
        ))
        .unwrap_err();
        assert!(e.to_string().contains("/no/such/lib.so"));
        assert!(e.to_string().contains("ORT_DYLIB_PATH"));
    }

    #[test]
    fn nothing_found_lists_every_place_and_the_hint() {
        let t = tempfile::tempdir().unwrap();
        let e = resolve_library(&search(
            None,
            None,
            Some(t.path().join("h")),
            Some(t.path().join("bin")),
            vec![t.path().join("py/onnxruntime")],
        ))
        .unwrap_err();
        let msg = e.to_string();
        for needle in [
            ".local/lib/s2edge",
            "bin/libonnxruntime.so*",
            "lib/s2edge",
            "py/onnxruntime/capi",
            "scripts/setup.sh",
        ] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
    }

    #[test]
    fn version_from_build_string_or_file_name() {
        let info = "ORT Build Info: git-branch=rel-1.32.0, git-commit-id=abc, build type=Release";
        assert_eq!(
            runtime_version(info, Path::new("/x/libonnxruntime.so")),
            "1.32.0"
        );
        assert_eq!(
            runtime_version("ORT Build Info", Path::new("/x/libonnxruntime.so.1.31.1")),
            "1.31.1"
        );
        assert_eq!(
            runtime_version("", Path::new("/x/libonnxruntime.so")),
            "unknown"
        );
    }
}
