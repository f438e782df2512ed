//! `s2edge batch` (issue 10 §5): the same products as `process`, one ledger per worker,
//! resume, `collection.json`, Slurm-array and MPI sharding, merge.
//!
//! Granules are copies of the synthetic sample under distinct names (a per-band GeoTIFF
//! folder's id is its name), classified with the tiny fixture model (super-resolution
//! off, for speed: the batch code path does not depend on the stages).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{command, run, sample, tiny_config};
use crate::util;

/// `n` granules under `dir` and a list file naming them (relative paths, a comment).
fn granules(dir: &Path, n: usize) -> (PathBuf, Vec<String>) {
    let src = sample();
    let mut ids = Vec::new();
    let mut list = String::from("# test granules\n");
    for i in 0..n {
        let id = format!("S2A_MSIL2A_20250615T100031_N0510_R122_T33UUP_B{i}");
        let to = dir.join("in").join(&id);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
        list.push_str(&format!("in/{id}\n"));
        ids.push(id);
    }
    let file = dir.join("list.txt");
    std::fs::write(&file, list).unwrap();
    (file, ids)
}

fn batch_args<'a>(
    list: &'a Path,
    out: &'a Path,
    cfg: &'a Path,
    models: &'a Path,
) -> Vec<&'a OsStr> {
    vec![
        OsStr::new("batch"),
        OsStr::new("--list"),
        list.as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
        OsStr::new("--models"),
        models.as_os_str(),
        OsStr::new("--config"),
        cfg.as_os_str(),
    ]
}

/// The ids a ledger has `done`, read without writing (the worker may be creating the
/// file while a test polls it; the ledger's `open` would migrate it).
fn done_in(ledger: &Path) -> BTreeSet<String> {
    use rusqlite::{Connection, OpenFlags};
    let Ok(c) = Connection::open_with_flags(ledger, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return BTreeSet::new();
    };
    let Ok(mut st) = c.prepare("SELECT id FROM granules WHERE state = 'done'") else {
        return BTreeSet::new();
    };
    st.query_map([], |r| r.get::<_, String>(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// The product directories under `out` (not `models/`, not the batch state).
fn products(out: &Path) -> BTreeSet<String> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("item.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Checks `collection.json` links each of `ids` exactly once and validates it and the
/// Items it links.
fn check_collection(out: &Path, ids: &[String], test: &str) {
    let text = std::fs::read_to_string(out.join("collection.json")).unwrap();
    let c: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(c["type"], "Collection");
    let items: Vec<String> = c["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["rel"] == "item")
        .map(|l| l["href"].as_str().unwrap().to_string())
        .collect();
    let expect: Vec<String> = ids.iter().map(|id| format!("./{id}/item.json")).collect();
    let mut sorted = items.clone();
    sorted.sort();
    assert_eq!(sorted, expect, "each product linked exactly once");
    let bbox = c["extent"]["spatial"]["bbox"][0].as_array().unwrap();
    assert_eq!(bbox.len(), 4);
    assert!(c["extent"]["temporal"]["interval"][0][0].is_string());
    assert!(c["links"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["rel"] == "derived_from" && l["href"] == "./models/tiny-ben19-v1.json"));
    let Some((ok, report)) =
        crate::stac_mlm::validate("collection", &[out.join("collection.json")], test)
    else {
        return;
    };
    assert!(ok, "{report}");
    let files: Vec<PathBuf> = items.iter().map(|h| out.join(h)).collect();
    let (ok, report) = crate::stac_mlm::validate("item", &files, test).unwrap();
    assert!(ok, "{report}");
}

fn setup(test: &str, n: usize) -> Option<(tempfile::TempDir, PathBuf, Vec<String>, PathBuf)> {
    if !util::runtime(test) {
        return None;
    }
    let tmp = util::tempdir();
    let (list, ids) = granules(tmp.path(), n);
    let cfg = tiny_config(tmp.path(), "[pipeline]\nsuperres = false\n");
    Some((tmp, list, ids, cfg))
}

#[test]
fn a_single_worker_processes_the_list_resumes_and_writes_the_collection() {
    let Some((tmp, list, ids, cfg)) = setup("a_single_worker_processes_the_list", 2) else {
        return;
    };
    let out = tmp.path().join("out");
    let models = util::fixtures();
    let r = run(&batch_args(&list, &out, &cfg, &models), &[]);
    assert_eq!(r.code, Some(0), "{}", r.context());
    assert_eq!(products(&out), ids.iter().cloned().collect());
    for id in &ids {
        for f in [
            "classification.tif",
            "classification.png",
            "labels.geojson",
            "item.json",
            "quicklook.png",
        ] {
            assert!(out.join(id).join(f).is_file(), "{id}/{f}");
        }
    }
    check_collection(&out, &ids, "a_single_worker_processes_the_list");
    // A rerun processes nothing: everything is done in its ledger.
    let r = run(&batch_args(&list, &out, &cfg, &models), &[]);
    assert_eq!(r.code, Some(0), "{}", r.context());
    let worker: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(worker["report"]["processed"], serde_json::json!([]));
    assert_eq!(
        worker["report"]["already_done"].as_array().unwrap().len(),
        2
    );
    // A bad entry is recorded and reported, and does not stop the others.
    std::fs::write(&list, format!("in/{}\nin/NOT_A_GRANULE\n", ids[0])).unwrap();
    let r = run(&batch_args(&list, &out, &cfg, &models), &[]);
    assert_eq!(r.code, Some(1), "{}", r.context());
    assert!(r.stderr.contains("NOT_A_GRANULE"), "{}", r.context());
}

#[test]
fn a_slurm_array_shards_the_list_and_the_merge_joins_it() {
    let Some((tmp, list, ids, cfg)) = setup("a_slurm_array_shards_the_list", 4) else {
        return;
    };
    let out = tmp.path().join("out");
    let models = util::fixtures();
    // One process per array task, as Slurm starts them (ids 1-2 of `--array=1-2`).
    let children: Vec<_> = ["1", "2"]
        .iter()
        .map(|task| {
            command(&[
                ("SLURM_ARRAY_TASK_ID", task),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_MAX", "2"),
            ])
            .args(batch_args(&list, &out, &cfg, &models))
            .output()
            .unwrap()
        })
        .collect();
    for c in &children {
        assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    }
    let w0 = done_in(&out.join(".s2edge-batch/ledger-0-of-2.sqlite"));
    let w1 = done_in(&out.join(".s2edge-batch/ledger-1-of-2.sqlite"));
    assert_eq!(w0, [ids[0].clone(), ids[2].clone()].into_iter().collect());
    assert_eq!(w1, [ids[1].clone(), ids[3].clone()].into_iter().collect());
    assert!(
        !out.join("collection.json").exists(),
        "array tasks leave the merge to its own step"
    );
    let r = run(&["batch", "--merge", "--out", out.to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(0), "{}", r.context());
    assert_eq!(products(&out), ids.iter().cloned().collect());
    assert_eq!(
        done_in(&out.join("ledger.sqlite")),
        ids.iter().cloned().collect()
    );
    check_collection(&out, &ids, "a_slurm_array_shards_the_list");
    // An id outside the array is a configuration error.
    let r = run(
        &batch_args(&list, &out, &cfg, &models),
        &[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ],
    );
    assert_eq!(r.code, Some(2), "{}", r.context());
    assert!(
        r.stderr.contains("SLURM_ARRAY_TASK_COUNT=2"),
        "{}",
        r.context()
    );
}

#[test]
fn a_killed_worker_rerun_finishes_only_its_own_remainder() {
    let Some((tmp, list, ids, cfg)) = setup("a_killed_worker_rerun", 6) else {
        return;
    };
    let out = tmp.path().join("out");
    let models = util::fixtures();
    let mut args = batch_args(&list, &out, &cfg, &models);
    args.extend([OsStr::new("--shard"), OsStr::new("1/2")]);
    let r = run(&args, &[]);
    assert_eq!(r.code, Some(0), "{}", r.context());
    let mtime = |id: &str| {
        std::fs::metadata(out.join(id).join("item.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let other: Vec<_> = [1, 3, 5]
        .iter()
        .map(|&i| (ids[i].clone(), mtime(&ids[i])))
        .collect();

    // Worker 0/2 (granules 0, 2, 4) is killed after its first product.
    let mut args0 = batch_args(&list, &out, &cfg, &models);
    args0.extend([OsStr::new("--shard"), OsStr::new("0/2")]);
    let mut child = command(&[])
        .args(&args0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ledger0 = out.join(".s2edge-batch/ledger-0-of-2.sqlite");
    let t = Instant::now();
    while done_in(&ledger0).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "worker 0 never finished a granule"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "worker 0 ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = done_in(&ledger0);
    let mine: BTreeSet<String> = [0, 2, 4].iter().map(|&i| ids[i].clone()).collect();
    assert!(before.len() < 3 && before.is_subset(&mine), "{before:?}");
    let kept: Vec<_> = before.iter().map(|id| (id.clone(), mtime(id))).collect();

    let r = run(&args0, &[]);
    assert_eq!(r.code, Some(0), "{}", r.context());
    let worker: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    let processed: BTreeSet<String> = worker["report"]["processed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let skipped: BTreeSet<String> = worker["report"]["already_done"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        processed,
        mine.difference(&before).cloned().collect(),
        "only its remainder"
    );
    assert_eq!(skipped, before);
    for (id, t) in kept.iter().chain(&other) {
        assert_eq!(mtime(id), *t, "{id} was not rebuilt");
    }
    assert_eq!(done_in(&ledger0), mine);
    let r = run(&["batch", "--merge", "--out", out.to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(0), "{}", r.context());
    check_collection(&out, &ids, "a_killed_worker_rerun");
}

#[cfg(not(feature = "mpi-batch"))]
#[test]
fn the_default_build_refuses_to_run_as_several_mpi_ranks() {
    let tmp = util::tempdir();
    let list = tmp.path().join("list.txt");
    std::fs::write(&list, "a\n").unwrap();
    let r = run(
        &[
            "batch",
            "--list",
            list.to_str().unwrap(),
            "--out",
            tmp.path().join("o").to_str().unwrap(),
        ],
        &[("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "0")],
    );
    assert_eq!(r.code, Some(2), "{}", r.context());
    assert!(r.stderr.contains("--features mpi-batch"), "{}", r.context());
}

/// `mpirun -n 2 s2edge batch` on 4 granules: each product exactly once, one collection.
#[cfg(feature = "mpi-batch")]
#[test]
fn mpirun_two_ranks_give_each_product_once_and_one_collection() {
    let test = "mpirun_two_ranks_give_each_product_once_and_one_collection";
    let Some(mpirun) = util::tool("mpirun", test) else {
        return;
    };
    let Some((tmp, list, ids, cfg)) = setup(test, 4) else {
        return;
    };
    let out = tmp.path().join("out");
    let models = util::fixtures();
    let mut cmd = std::process::Command::new(mpirun);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--allow-run-as-root");
    }
    cmd.args(["--oversubscribe", "-n", "2", env!("CARGO_BIN_EXE_s2edge")])
        .args(batch_args(&list, &out, &cfg, &models))
        .env_remove("RUST_LOG");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("S2EDGE__") {
            cmd.env_remove(&k);
        }
    }
    let o = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let w0 = done_in(&out.join(".s2edge-batch/ledger-0-of-2.sqlite"));
    let w1 = done_in(&out.join(".s2edge-batch/ledger-1-of-2.sqlite"));
    assert_eq!(w0.len() + w1.len(), 4);
    assert!(w0.is_disjoint(&w1), "{w0:?} {w1:?}");
    assert_eq!(products(&out), ids.iter().cloned().collect());
    assert_eq!(
        done_in(&out.join("ledger.sqlite")),
        ids.iter().cloned().collect()
    );
    check_collection(&out, &ids, test);
    assert_eq!(
        stderr.matches("merged ").count(),
        1,
        "rank 0 alone merges: {stderr}"
    );
}

/// `program` without inherited s2edge, Slurm or MPI variables.
fn clean(program: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("S2EDGE") || k.starts_with("SLURM_") || k.starts_with("OMPI_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// `contrib/slurm/batch.sbatch` as Slurm would run it: one process per array task (the
/// variables set by hand), `sbatch` a stub that records the merge job it is asked to
/// submit, which the test then runs.
#[test]
fn the_sbatch_example_runs_each_share_and_submits_the_merge() {
    let test = "the_sbatch_example_runs_each_share_and_submits_the_merge";
    let Some(bash) = util::tool("bash", test) else {
        return;
    };
    let Some((tmp, list, ids, _cfg)) = setup(test, 2) else {
        return;
    };
    let out = tmp.path().join("out");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = tmp.path().join("sbatch-args");
    let stub = bin.join("sbatch");
    std::fs::write(
        &stub,
        format!("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{}'\necho 'Submitted batch job 43'\n", record.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let models = util::fixtures();
    let env = [
        ("PATH", path.as_str()),
        ("S2EDGE", env!("CARGO_BIN_EXE_s2edge")),
        ("S2EDGE__PATHS__MODELS", models.to_str().unwrap()),
        ("S2EDGE__MODELS__CLASSIFIER", "tiny-ben19"),
        ("S2EDGE__PIPELINE__SUPERRES", "false"),
        ("SLURM_ARRAY_JOB_ID", "42"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
        ("SLURM_ARRAY_TASK_MIN", "0"),
        ("SLURM_ARRAY_TASK_MAX", "1"),
        ("SLURM_CPUS_PER_TASK", "1"),
    ];
    let script = util::root().join("contrib/slurm/batch.sbatch");
    for task in ["0", "1"] {
        let mut e = env.to_vec();
        e.push(("SLURM_ARRAY_TASK_ID", task));
        let o = clean(&bash)
            .envs(e.iter().copied())
            .arg(&script)
            .arg(&list)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "task {task}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Only the last task submits the merge.
        assert_eq!(record.exists(), task == "1", "task {task}");
    }
    let args = std::fs::read_to_string(&record).unwrap();
    assert!(
        args.lines().any(|l| l == "--dependency=afterany:42"),
        "{args}"
    );
    let wrap = args
        .lines()
        .find_map(|l| l.strip_prefix("--wrap="))
        .unwrap_or_else(|| panic!("no --wrap: {args}"));
    let o = clean(&bash)
        .envs(env.iter().copied())
        .arg("-c")
        .arg(wrap)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(products(&out), ids.iter().cloned().collect());
    check_collection(&out, &ids, test);
}
