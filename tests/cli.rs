//! The CLI's manners (issue 10 §1): a helpful error when the models directory is absent
//! or empty, colour only on a terminal, config-free subcommands that survive a broken
//! configuration, `--json`, `-v`/`-q`, a closed stdout pipe, per-granule spans.
//!
//! Shared helpers for the other issue-10 modules (`classmap`, `stac_mlm`, `batch`,
//! `metrics_http`) live here too: a clean-environment runner and a cached sample granule.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::util;

/// The outcome of one CLI run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn context(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `s2edge` with no inherited `S2EDGE__*`, `RUST_LOG`, `NO_COLOR`, Slurm or MPI
/// variables, plus `env`.
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = util::s2edge();
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("S2EDGE__")
            || k.starts_with("SLURM_")
            || k.starts_with("OMPI_")
            || k.starts_with("PMI")
        {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG").env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `s2edge args` (see [`command`]).
pub fn run<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Run {
    let out = command(env).args(args).output().expect("run s2edge");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The synthetic sample granule, written once per test binary.
pub fn sample() -> PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = util::tempdir();
        let path = s2edge::sample::write_sample(dir.path()).expect("write the sample");
        (dir, path)
    })
    .1
    .clone()
}

/// A configuration with the tiny fixture models, one ONNX thread, and `extra` TOML.
pub fn tiny_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(
        &path,
        format!(
            "[models]\nclassifier = \"tiny-ben19\"\nsuperres_2x = \"tiny-dsen2-2x\"\n\
             superres_6x = \"tiny-dsen2-6x\"\n\n[runtime]\nintra_threads = 1\n\n{extra}"
        ),
    )
    .unwrap();
    path
}

fn broken_config(dir: &Path) -> PathBuf {
    let p = dir.join("broken.toml");
    std::fs::write(&p, "[paths\nthis is = not toml\n").unwrap();
    p
}

#[test]
fn absent_or_empty_models_dir_says_how_to_point_at_one() {
    let tmp = util::tempdir();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let checkout = util::root().join("models");
    let absent = tmp.path().join("absent");
    for (args, env, why) in [
        (
            vec![
                OsStr::new("models"),
                OsStr::new("verify"),
                OsStr::new("--models"),
                absent.as_os_str(),
            ],
            vec![],
            "does not exist",
        ),
        (
            vec![
                OsStr::new("process"),
                sample().as_os_str(),
                OsStr::new("--out"),
                tmp.path().as_os_str(),
            ],
            vec![("S2EDGE__PATHS__MODELS", empty.to_str().unwrap())],
            "holds no model versions",
        ),
    ] {
        let r = run(&args, &env);
        assert_eq!(r.code, Some(2), "{}", r.context());
        for needle in [
            why,
            "--models DIR",
            "[paths] models",
            "S2EDGE__PATHS__MODELS",
            "source checkout",
            checkout.to_str().unwrap(),
        ] {
            assert!(
                r.stderr.contains(needle),
                "{needle:?} missing: {}",
                r.context()
            );
        }
    }
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let fixtures = util::fixtures();
    let tmp = util::tempdir();
    let cfg = tiny_config(tmp.path(), "");
    let args = [
        OsStr::new("models"),
        OsStr::new("verify"),
        OsStr::new("--models"),
        fixtures.as_os_str(),
        OsStr::new("--config"),
        cfg.as_os_str(),
    ];
    // stderr a pipe: no escape codes.
    let r = run(&args, &[]);
    assert_eq!(r.code, Some(0), "{}", r.context());
    assert!(r.stderr.contains("ONNX Runtime loaded"), "{}", r.context());
    assert!(
        !r.stderr.contains('\u{1b}'),
        "ANSI in a pipe: {}",
        r.context()
    );

    // On a terminal (script(1) gives the command a pty): colour, unless NO_COLOR.
    let Some(script) = util::tool("script", "colour_only_on_a_terminal") else {
        return;
    };
    let line = format!(
        "{} models verify --models {} --config {}",
        env!("CARGO_BIN_EXE_s2edge"),
        fixtures.display(),
        cfg.display()
    );
    for (no_color, expect_ansi) in [(None, true), (Some("1"), false)] {
        let mut cmd = Command::new(&script);
        cmd.args(["-qec", &line, "/dev/null"])
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ONNX Runtime loaded"), "{text}");
        assert_eq!(
            text.contains('\u{1b}'),
            expect_ansi,
            "NO_COLOR={no_color:?}: {text}"
        );
    }
}

#[test]
fn config_free_commands_survive_a_broken_configuration() {
    let tmp = util::tempdir();
    let broken = broken_config(tmp.path());
    let fixtures = util::fixtures();
    let granule = sample();
    let out_dir = tmp.path().join("s");
    type Case<'a> = (Vec<&'a OsStr>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            vec![
                OsStr::new("info"),
                granule.as_os_str(),
                OsStr::new("--config"),
                broken.as_os_str(),
            ],
            vec![],
        ),
        (
            vec![
                OsStr::new("sample"),
                out_dir.as_os_str(),
                OsStr::new("--config"),
                broken.as_os_str(),
            ],
            vec![],
        ),
        (
            vec![
                OsStr::new("models"),
                OsStr::new("list"),
                OsStr::new("--models"),
                fixtures.as_os_str(),
                OsStr::new("--config"),
                broken.as_os_str(),
            ],
            vec![],
        ),
        (
            vec![
                OsStr::new("models"),
                OsStr::new("list"),
                OsStr::new("--models"),
                fixtures.as_os_str(),
            ],
            vec![("S2EDGE__RUNTIME__BATCH_SIZE", "not-a-number")],
        ),
    ];
    for (args, env) in &cases {
        let r = run(args, env);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.context());
        assert!(!r.stdout.is_empty(), "{args:?}: {}", r.context());
    }
    // The JSON of `info` is intact.
    let r = run(&cases[0].0, &[]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v.is_object());
    // Commands that need the configuration still refuse it, with exit code 2.
    for (args, env) in [
        (
            vec![
                OsStr::new("validate"),
                OsStr::new("--config"),
                broken.as_os_str(),
            ],
            vec![],
        ),
        (
            vec![OsStr::new("models"), OsStr::new("list")],
            vec![("S2EDGE__RUNTIME__BATCH_SIZE", "not-a-number")],
        ),
    ] {
        let r = run(&args, &env);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.context());
    }
    // -v shows why the configuration was ignored; by default it is not mentioned.
    let mut verbose = vec![OsStr::new("-v")];
    verbose.extend(cases[0].0.iter().copied());
    let r = run(&verbose, &[]);
    assert!(
        r.stderr.contains("configuration ignored"),
        "{}",
        r.context()
    );
    assert!(!run(&cases[0].0, &[])
        .stderr
        .contains("configuration ignored"));
}

#[test]
fn json_listings_are_stable_and_parse() {
    // models list --json
    let fixtures = util::fixtures();
    let r = run(
        &[
            OsStr::new("models"),
            OsStr::new("list"),
            OsStr::new("--json"),
            OsStr::new("--models"),
            fixtures.as_os_str(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.context());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let arr = v.as_array().unwrap();
    let find = |name: &str| arr.iter().find(|e| e["name"] == name).unwrap().clone();
    let tiny = find("tiny-ben19");
    assert_eq!(tiny["version"], 1);
    assert_eq!(tiny["task"], "classify");
    assert_eq!(tiny["training"], "untrained");
    assert_eq!(tiny["usable"], true);
    assert!(tiny["size_bytes"].as_u64().unwrap() > 0);
    let broken = find("broken-sha");
    assert_eq!(broken["usable"], false);
    assert!(
        broken["problem"].as_str().unwrap().contains("sha256"),
        "{broken}"
    );
    for key in [
        "name",
        "version",
        "task",
        "training",
        "size_bytes",
        "dir",
        "usable",
        "problem",
    ] {
        assert!(tiny.get(key).is_some(), "{key} missing in {tiny}");
    }

    // ledger list --json / show --json, on a ledger written through the daemon's type.
    let tmp = util::tempdir();
    let state = tmp.path().join("state");
    let l = s2edge::daemon::ledger::Ledger::open_in(&state).unwrap();
    let src = tmp.path().join("in/G1");
    l.claimed("G1", &src, &src, None).unwrap();
    l.start("G1").unwrap();
    l.done("G1", &tmp.path().join("out/G1"), &["m@1".to_string()])
        .unwrap();
    l.claimed("G2", &src, &src, None).unwrap();
    drop(l);
    let env = [("S2EDGE__PATHS__STATE", state.to_str().unwrap())];
    let r = run(&["ledger", "list", "--json"], &env);
    assert_eq!(r.code, Some(0), "{}", r.context());
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let g1 = rows.iter().find(|r| r["id"] == "G1").unwrap();
    assert_eq!(g1["state"], "done");
    assert_eq!(g1["models"], serde_json::json!(["m@1"]));
    let r = run(&["ledger", "show", "G2", "--json"], &env);
    assert_eq!(r.code, Some(0), "{}", r.context());
    assert_eq!(r.stdout.lines().count(), 1, "one line: {}", r.stdout);
    let g2: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(g2["state"], "queued");
    assert_eq!(g2["attempts"], 0);
    let r = run(&["ledger", "show", "NOPE", "--json"], &env);
    assert_eq!(r.code, Some(1), "{}", r.context());
    assert!(r.stderr.contains("no granule NOPE"), "{}", r.context());
}

#[test]
fn quiet_hides_info_and_verbose_shows_debug() {
    let fixtures = util::fixtures();
    let tmp = util::tempdir();
    let cfg = tiny_config(tmp.path(), "");
    let base = [
        OsStr::new("models"),
        OsStr::new("verify"),
        OsStr::new("--models"),
        fixtures.as_os_str(),
        OsStr::new("--config"),
        cfg.as_os_str(),
    ];
    let with = |flag: &'static str| {
        let mut a = vec![OsStr::new(flag)];
        a.extend(base.iter().copied());
        run(&a, &[])
    };
    let normal = run(&base, &[]);
    let quiet = with("-q");
    let verbose = with("-v");
    for r in [&normal, &quiet, &verbose] {
        assert_eq!(r.code, Some(0), "{}", r.context());
        assert!(r.stdout.contains("tiny-ben19@1"), "{}", r.context());
    }
    assert!(normal.stderr.contains(" INFO "), "{}", normal.context());
    assert!(!quiet.stderr.contains(" INFO "), "{}", quiet.context());
    assert!(
        quiet.stderr.contains(" WARN "),
        "warnings stay: {}",
        quiet.context()
    );
    assert!(verbose.stderr.contains(" DEBUG "), "{}", verbose.context());
    assert!(!normal.stderr.contains(" DEBUG "), "{}", normal.context());
    let qq = with("-qq");
    assert!(!qq.stderr.contains(" WARN "), "{}", qq.context());
}

#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    let fixtures = util::fixtures();
    let granule = sample();
    let tmp = util::tempdir();
    for args in [
        vec![OsStr::new("info"), granule.as_os_str()],
        vec![
            OsStr::new("models"),
            OsStr::new("list"),
            OsStr::new("--models"),
            fixtures.as_os_str(),
        ],
        vec![
            OsStr::new("models"),
            OsStr::new("list"),
            OsStr::new("--json"),
            OsStr::new("--models"),
            fixtures.as_os_str(),
        ],
        vec![
            OsStr::new("models"),
            OsStr::new("stac"),
            OsStr::new("tiny-ben19"),
            OsStr::new("--models"),
            fixtures.as_os_str(),
        ],
        vec![OsStr::new("sample"), tmp.path().as_os_str()],
    ] {
        // The read end is closed before the command starts: every write gets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = command(&[])
            .args(&args)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn every_log_line_of_a_granule_carries_its_id() {
    if !util::runtime("every_log_line_of_a_granule_carries_its_id") {
        return;
    }
    let tmp = util::tempdir();
    let cfg = tiny_config(tmp.path(), "");
    let fixtures = util::fixtures();
    let granule = sample();
    let out = tmp.path().join("out");
    let r = run(
        &[
            OsStr::new("process"),
            granule.as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
            OsStr::new("--only"),
            OsStr::new("classify"),
            OsStr::new("--models"),
            fixtures.as_os_str(),
            OsStr::new("--config"),
            cfg.as_os_str(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.context());
    let span = format!("granule{{id={}}}", s2edge::sample::SAMPLE_ID);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("carry no learned information"))
        .unwrap_or_else(|| panic!("no pipeline warning: {}", r.context()));
    assert!(line.contains(&span), "{line}");
    // The product is there, and the model Items it links to.
    let item: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join(s2edge::sample::SAMPLE_ID).join("item.json")).unwrap(),
    )
    .unwrap();
    let links: Vec<&str> = item["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["rel"] == "derived_from")
        .map(|l| l["href"].as_str().unwrap())
        .collect();
    assert_eq!(links, vec!["../models/tiny-ben19-v1.json"]);
    assert!(out.join("models/tiny-ben19-v1.json").is_file());
}
