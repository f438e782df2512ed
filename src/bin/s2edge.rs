//! `s2edge`: the daemon and its command-line tools. Parses arguments, loads the
//! configuration and calls the library; exit codes: 0 success, 1 failure, 2 usage or
//! configuration error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use s2edge::config::{ConfigError, Settings};
use s2edge::granule::GranuleSource;
use s2edge::model::registry::Registry;
use s2edge::model::set::ModelSet;
use s2edge::model::{init_runtime, ModelSelection};
use s2edge::pipeline::pooled::PooledSet;
use s2edge::pipeline::process::{process_granule, Models, ProcessOptions, Progress};
use s2edge::pipeline::Infer;

#[derive(Parser)]
#[command(
    name = "s2edge",
    version,
    about = "Sentinel-2 edge processing: land-cover classification and super-resolution"
)]
struct Cli {
    /// Configuration file (default: /etc/s2edge/s2edge.toml when it exists).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Process one granule and publish its product directory.
    Process {
        /// A SAFE directory or zip, a per-band GeoTIFF folder, or a BigEarthNet patch folder.
        granule: PathBuf,
        /// Where `<granule-id>/` is published.
        #[arg(long)]
        out: PathBuf,
        /// Run only one stage: `classify`, `superres` (2x and 6x), or one
        /// super-resolution model, `superres2x` (20 m bands) or `superres6x` (60 m bands).
        #[arg(long, value_enum)]
        only: Option<Stage>,
        /// Models directory (overrides [paths] models).
        #[arg(long)]
        models: Option<PathBuf>,
    },
    /// Run the ingest daemon.
    Serve,
    /// Check a configuration: values, directories, models and providers.
    Validate {
        /// Models directory (overrides [paths] models).
        #[arg(long)]
        models: Option<PathBuf>,
    },
    /// Print a granule's parsed metadata as JSON.
    Info {
        /// The granule.
        granule: PathBuf,
    },
    /// Inspect the model registry.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
        /// Models directory (overrides [paths] models).
        #[arg(long, global = true)]
        models: Option<PathBuf>,
    },
    /// Write a small synthetic granule for demos; prints its path.
    Sample {
        /// Directory to write `<id>/` into.
        dir: PathBuf,
    },
    /// Inspect and act on the daemon's ledger (works without a running daemon).
    Ledger {
        #[command(subcommand)]
        action: LedgerAction,
    },
}

#[derive(Subcommand)]
enum LedgerAction {
    /// Every granule as a table.
    List,
    /// One granule's row as JSON.
    Show {
        /// Granule id.
        id: String,
    },
    /// Process a granule again: a quarantined input moves back into ingest, a done one
    /// is marked for reprocessing.
    Requeue {
        /// Granule id.
        id: String,
    },
    /// Delete a granule's row.
    Purge {
        /// Granule id.
        id: String,
    },
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Every version in the registry, with its status.
    List,
    /// Load each configured model and run one inference on the configured providers.
    Verify,
}

#[derive(Clone, Copy, ValueEnum)]
enum Stage {
    Classify,
    Superres,
    /// Super-resolution of the 20 m bands only (the 2x model).
    Superres2x,
    /// Super-resolution of the 60 m bands only (the 6x model).
    Superres6x,
}

/// A failure with its exit code: 2 for configuration, 1 otherwise.
enum Failure {
    Config(anyhow::Error),
    Run(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e.into())
    }
}

impl From<s2edge::daemon::AdminError> for Failure {
    fn from(e: s2edge::daemon::AdminError) -> Self {
        Failure::Run(e.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Run(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()).and_then(|s| s.validate().map(|_| s))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings);
    let result = match cli.command {
        Command::Process {
            granule,
            out,
            only,
            models,
        } => process(settings, &granule, &out, only, models),
        Command::Serve => serve(settings, cli.config.clone()),
        Command::Validate { models } => validate(settings, models),
        Command::Info { granule } => info(&granule),
        Command::Models { action, models } => match action {
            ModelsAction::List => models_list(&settings, models),
            ModelsAction::Verify => models_verify(settings, models),
        },
        Command::Sample { dir } => sample(&dir),
        Command::Ledger { action } => ledger(&settings, action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("error: {}", render(&e));
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {}", render(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, each cause once: the library's messages already
/// quote their source (so they read well on their own, e.g. in a quarantine reason).
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn init_logging(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},ort=warn", settings.log.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log.format {
        s2edge::config::LogFormat::Json => builder.json().init(),
        s2edge::config::LogFormat::Human => builder.init(),
    }
}

fn models_dir(settings: &Settings, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| settings.paths.models.clone())
}

fn load_models(
    settings: &Settings,
    dir: &Path,
    selection: &ModelSelection,
) -> Result<ModelSet, Failure> {
    let rt =
        init_runtime(settings.runtime.onnxruntime.as_deref()).context("loading ONNX Runtime")?;
    tracing::info!(path = %rt.path.display(), version = %rt.version, "ONNX Runtime loaded");
    let registry = Registry::new(dir);
    let set = ModelSet::load(&registry, selection, &settings.runtime.provider_options())
        .with_context(|| format!("loading models from {}", dir.display()))?;
    Ok(set)
}

fn process(
    mut settings: Settings,
    granule: &Path,
    out: &Path,
    only: Option<Stage>,
    models: Option<PathBuf>,
) -> Result<(), Failure> {
    match only {
        Some(Stage::Classify) => settings.pipeline.superres = false,
        Some(Stage::Superres) => settings.pipeline.classify = false,
        Some(Stage::Superres2x | Stage::Superres6x) => {
            settings.pipeline.classify = false;
            settings.pipeline.superres = true;
            settings.pipeline.superres_scales = vec![if matches!(only, Some(Stage::Superres2x)) {
                2
            } else {
                6
            }];
        }
        None => {}
    }
    if !settings.pipeline.superres
        && settings.pipeline.classify_input == s2edge::config::ClassifyInput::Superres
    {
        settings.pipeline.classify_input = s2edge::config::ClassifyInput::Resampled;
    }
    let dir = models_dir(&settings, models);
    let selection = settings.model_selection()?;
    let source =
        GranuleSource::open(granule).with_context(|| format!("opening {}", granule.display()))?;
    let rt =
        init_runtime(settings.runtime.onnxruntime.as_deref()).context("loading ONNX Runtime")?;
    tracing::info!(path = %rt.path.display(), version = %rt.version, "ONNX Runtime loaded");
    let mut set = PooledSet::start(
        &Registry::new(&dir),
        &selection,
        &settings.runtime.provider_options(),
        settings.runtime.inference_workers,
    )
    .with_context(|| format!("loading models from {}", dir.display()))?;
    for s in &set.skipped {
        eprintln!("warning   skipped model version {s}");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut models = Models {
        classifier: set.classifier.as_mut().map(|m| m as &mut dyn Infer),
        superres_2x: set.superres_2x.as_mut().map(|m| m as &mut dyn Infer),
        superres_6x: set.superres_6x.as_mut().map(|m| m as &mut dyn Infer),
    };
    let options = ProcessOptions::from_settings(&settings);
    let mut bars = Bars::default();
    let report = process_granule(&source, &mut models, &options, out, &mut bars)
        .with_context(|| format!("processing {}", source.id))?;
    eprintln!("granule   {}", report.id);
    for (stage, secs) in &report.timings {
        eprintln!("  {stage:<22} {secs:>8.2} s");
    }
    if !report.patches.is_empty() {
        let p: Vec<String> = report
            .patches
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        eprintln!("patches   {}", p.join(", "));
    }
    if report.superres_pixels > 0 {
        eprintln!(
            "superres  {:.1} Mpx (10 m grid x bands)",
            report.superres_pixels as f64 / 1e6
        );
    }
    let providers: Vec<String> = report
        .providers
        .iter()
        .map(|(m, p)| format!("{m}: {p}"))
        .collect();
    eprintln!("provider  {}", providers.join(", "));
    for w in &report.warnings {
        eprintln!("warning   {w}");
    }
    println!("{}", report.product.display());
    Ok(())
}

/// One progress bar per stage, on stderr (hidden when stderr is not a terminal).
#[derive(Default)]
struct Bars {
    bar: Option<ProgressBar>,
}

impl Progress for Bars {
    fn start(&mut self, stage: &str, total: usize) {
        let bar = ProgressBar::new(total as u64);
        let style = ProgressStyle::with_template(
            "{msg:>14} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(stage.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }
    fn update(&mut self, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
    }
}

fn serve(settings: Settings, config: Option<PathBuf>) -> Result<(), Failure> {
    use s2edge::daemon::DaemonError;
    match s2edge::daemon::serve(settings, config) {
        Ok(()) => Ok(()),
        Err(
            e @ (DaemonError::Config(_)
            | DaemonError::CrossDevice { .. }
            | DaemonError::Bind { .. }),
        ) => Err(Failure::Config(e.into())),
        Err(e) => Err(Failure::Run(e.into())),
    }
}

fn ledger(settings: &Settings, action: LedgerAction) -> Result<(), Failure> {
    use s2edge::daemon::{admin, ledger::Ledger};
    let state = &settings.paths.state;
    let file = state.join(s2edge::daemon::ledger::LEDGER_FILE);
    if !file.is_file() {
        return Err(Failure::Run(anyhow::anyhow!(
            "no ledger at {} (has `s2edge serve` run with this configuration?)",
            file.display()
        )));
    }
    let l = Ledger::open_file(&file).with_context(|| format!("opening {}", file.display()))?;
    match action {
        LedgerAction::List => {
            admin::list(&l, &mut std::io::stdout().lock()).context("listing the ledger")?
        }
        LedgerAction::Show { id } => println!("{}", admin::show(&l, &id)?),
        LedgerAction::Requeue { id } => println!("{}", admin::requeue(settings, &l, &id)?),
        LedgerAction::Purge { id } => {
            if !admin::purge(&l, &id)? {
                return Err(Failure::Run(anyhow::anyhow!(
                    "no granule {id} in the ledger"
                )));
            }
            println!("{id}: purged");
        }
    }
    Ok(())
}

fn info(granule: &Path) -> Result<(), Failure> {
    let source =
        GranuleSource::open(granule).with_context(|| format!("opening {}", granule.display()))?;
    let json = serde_json::to_string_pretty(&source).context("serialising metadata")?;
    print_stdout(&json)
}

/// Prints a line to stdout; a closed pipe (`| head`) ends the output quietly.
fn print_stdout(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout").map_err(Failure::Run),
    }
}

fn sample(dir: &Path) -> Result<(), Failure> {
    let folder = s2edge::sample::write_sample(dir).context("writing the sample granule")?;
    println!("{}", folder.display());
    Ok(())
}

fn models_list(settings: &Settings, models: Option<PathBuf>) -> Result<(), Failure> {
    let dir = models_dir(settings, models);
    let listing = Registry::new(&dir)
        .list()
        .with_context(|| format!("listing {}", dir.display()))?;
    println!(
        "{:<20} {:>7} {:<9} {:<10} {:>10}  status",
        "name", "version", "task", "training", "size"
    );
    for m in listing {
        let task = m
            .task
            .map(|t| format!("{t:?}").to_lowercase())
            .unwrap_or_else(|| "?".into());
        let training = m
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "?".into());
        let size = m
            .size
            .map(|s| format!("{:.1} MB", s as f64 / 1e6))
            .unwrap_or_else(|| "-".into());
        let status = m.problem.unwrap_or_else(|| "ok".into());
        println!(
            "{:<20} {:>7} {:<9} {:<10} {:>10}  {status}",
            m.name, m.version, task, training, size
        );
    }
    Ok(())
}

fn models_verify(settings: Settings, models: Option<PathBuf>) -> Result<(), Failure> {
    let dir = models_dir(&settings, models);
    let selection = settings.model_selection()?;
    let mut set = load_models(&settings, &dir, &selection)?;
    for m in set.iter_mut() {
        let t = m
            .smoke_test()
            .with_context(|| format!("test inference of {}", m.label()))?;
        let failures: Vec<String> = m
            .provider_report
            .failures
            .iter()
            .map(|(p, why)| format!("{p} unavailable: {why}"))
            .collect();
        println!(
            "{:<24} ok  provider {:<9} sha256 {}…  status {}  test inference {:.0} ms{}",
            m.label(),
            m.provider.to_string(),
            &m.sha256[..12.min(m.sha256.len())],
            m.spec.training.status,
            t.as_secs_f64() * 1e3,
            if failures.is_empty() {
                String::new()
            } else {
                format!("  ({})", failures.join("; "))
            }
        );
    }
    Ok(())
}

fn validate(settings: Settings, models: Option<PathBuf>) -> Result<(), Failure> {
    let mut problems = Vec::new();
    let p = &settings.paths;
    for (key, dir) in [
        ("paths.ingest", &p.ingest),
        ("paths.work", &p.work),
        ("paths.output", &p.output),
        ("paths.quarantine", &p.quarantine),
        ("paths.archive", &p.archive),
        ("paths.state", &p.state),
    ] {
        if let Err(why) = check_writable_dir(dir) {
            problems.push(format!("{key} = {}: {why}", dir.display()));
        }
    }
    if let (Ok(a), Ok(b)) = (std::fs::metadata(&p.ingest), std::fs::metadata(&p.work)) {
        use std::os::unix::fs::MetadataExt;
        if a.dev() != b.dev() {
            problems.push(format!(
                "paths.work = {} is not on the filesystem of paths.ingest = {}: claims are renames",
                p.work.display(),
                p.ingest.display()
            ));
        }
    }
    let dir = models_dir(&settings, models);
    let selection = settings.model_selection()?;
    match load_models(&settings, &dir, &selection) {
        Ok(set) => {
            for m in [&set.classifier, &set.superres_2x, &set.superres_6x]
                .into_iter()
                .flatten()
            {
                println!("model {} ok on {}", m.label(), m.provider);
            }
        }
        Err(Failure::Run(e) | Failure::Config(e)) => problems.push(render(&e)),
    }
    if problems.is_empty() {
        println!("configuration ok");
        Ok(())
    } else {
        for pr in &problems {
            eprintln!("problem: {pr}");
        }
        Err(Failure::Config(anyhow::anyhow!(
            "{} problem(s) in the configuration",
            problems.len()
        )))
    }
}

/// Checks that `dir` exists (or can be created) and is writable.
fn check_writable_dir(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Err("does not exist".into());
    }
    if !dir.is_dir() {
        return Err("is not a directory".into());
    }
    let probe = dir.join(format!(".s2edge-validate-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("not writable: {e}"))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
