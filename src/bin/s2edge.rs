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
use s2edge::pipeline::process::{process_granule, NoProgress, ProcessOptions, Progress};

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
    /// More log output: -v debug, -vv trace (overrides [log] level and RUST_LOG).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output: -q warnings and errors only, -qq errors only.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
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
    /// Process every granule of a list into one output directory, resumably, sharded
    /// over a Slurm job array or MPI ranks; `--merge` joins the workers' results.
    Batch {
        /// A text file with one granule path per line (`#` comments and blank lines
        /// skipped; relative paths are relative to the file).
        #[arg(long, required_unless_present = "merge")]
        list: Option<PathBuf>,
        /// The output directory: products, `collection.json`, the workers' ledgers.
        #[arg(long)]
        out: PathBuf,
        /// Models directory (overrides [paths] models).
        #[arg(long)]
        models: Option<PathBuf>,
        /// This worker's share as INDEX/COUNT (default: from SLURM_ARRAY_TASK_ID and
        /// SLURM_ARRAY_TASK_COUNT, and the MPI rank in an `mpi-batch` build).
        #[arg(long)]
        shard: Option<String>,
        /// Do not process: join the workers' ledgers and write `collection.json`.
        #[arg(long)]
        merge: bool,
        /// The collection id (default: the output directory's name).
        #[arg(long)]
        collection_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum LedgerAction {
    /// Every granule as a table (`--json`: an array of rows).
    List {
        /// Print a JSON array of rows instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One granule's row as JSON.
    Show {
        /// Granule id.
        id: String,
        /// Print the row as one line of JSON (the default output is the same row,
        /// pretty-printed).
        #[arg(long)]
        json: bool,
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
    /// Every version in the registry, with its status (`--json`: an array).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load each configured model and run one inference on the configured providers.
    Verify,
    /// Print a model version as a STAC Item with the Machine Learning Model extension.
    Stac {
        /// `NAME` (highest complete valid version) or `NAME@VERSION`.
        model: String,
        /// Write the Item to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
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

/// A failure with its exit code: 2 for configuration, 1 otherwise; a closed stdout is
/// a normal end (exit 0, nothing printed).
enum Failure {
    Config(anyhow::Error),
    Run(anyhow::Error),
    ClosedStdout,
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

/// Whether a subcommand runs without the configuration: a broken
/// `/etc/s2edge/s2edge.toml` must not stop `info`, `sample` or `models list --models DIR`.
fn needs_config(command: &Command) -> bool {
    !matches!(
        command,
        Command::Info { .. }
            | Command::Sample { .. }
            | Command::Models {
                action: ModelsAction::List { .. },
                models: Some(_),
            }
    )
}

fn main() -> ExitCode {
    s2edge::pipeline::return_large_buffers();
    let cli = Cli::parse();
    let loaded = Settings::load(cli.config.as_deref()).and_then(|s| s.validate().map(|_| s));
    let settings = match (loaded, needs_config(&cli.command)) {
        (Ok(s), _) => s,
        (Err(e), true) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        // Logging still needs its settings: the embedded defaults.
        (Err(e), false) => match default_settings() {
            Ok(s) => {
                init_logging(&s, cli.verbose, cli.quiet);
                tracing::debug!(error = %e, "configuration ignored: this command does not need it");
                return finish(dispatch(cli, s));
            }
            Err(d) => {
                eprintln!("error: {e} (and the embedded defaults: {d})");
                return ExitCode::from(2);
            }
        },
    };
    init_logging(&settings, cli.verbose, cli.quiet);
    finish(dispatch(cli, settings))
}

fn default_settings() -> Result<Settings, toml::de::Error> {
    toml::from_str(s2edge::config::DEFAULTS)
}

fn dispatch(cli: Cli, settings: Settings) -> Result<(), Failure> {
    match cli.command {
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
            ModelsAction::List { json } => models_list(&settings, models, json),
            ModelsAction::Verify => models_verify(settings, models),
            ModelsAction::Stac { model, out } => models_stac(&settings, models, &model, out),
        },
        Command::Sample { dir } => sample(&dir),
        Command::Ledger { action } => ledger(&settings, action),
        Command::Batch {
            list,
            out,
            models,
            shard,
            merge,
            collection_id,
        } => batch(
            settings,
            BatchArgs {
                list,
                out,
                models,
                shard,
                merge,
                collection_id,
            },
        ),
    }
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) | Err(Failure::ClosedStdout) => ExitCode::SUCCESS,
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

/// Whether stderr gets ANSI colours: only on a terminal, and never with `NO_COLOR` set
/// to a non-empty value (no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// The log filter: `-v`/`-q` win, then `RUST_LOG`, then `[log] level`.
fn log_filter(settings: &Settings, verbose: u8, quiet: u8) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let flag = match (verbose, quiet) {
        (0, 0) => None,
        (1, _) => Some("debug"),
        (v, _) if v >= 2 => Some("trace"),
        (_, 1) => Some("warn"),
        _ => Some("error"),
    };
    match flag {
        Some(level) => EnvFilter::new(format!("{level},ort=warn")),
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("{},ort=warn", settings.log.level))),
    }
}

fn init_logging(settings: &Settings, verbose: u8, quiet: u8) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter(settings, verbose, quiet))
        .with_writer(std::io::stderr);
    match settings.log.format {
        s2edge::config::LogFormat::Json => builder.json().init(),
        s2edge::config::LogFormat::Human => builder.with_ansi(colour()).init(),
    }
}

/// Writes `text` and a newline to stdout; a closed pipe (`| head`) ends the command
/// quietly ([`Failure::ClosedStdout`]).
fn emit(text: impl std::fmt::Display) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::ClosedStdout),
        r => r.context("writing to stdout").map_err(Failure::Run),
    }
}

/// Where a source checkout keeps its models, when this binary runs from one (the
/// executable lies under a checkout, or the checkout it was built from still exists).
fn checkout_models() -> Option<PathBuf> {
    let is_checkout = |d: &Path| d.join("src/bin/s2edge.rs").is_file() && d.join("models").is_dir();
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|d| is_checkout(d))
            .map(Path::to_path_buf)
    });
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"));
    from_exe
        .or_else(|| is_checkout(built_from).then(|| built_from.to_path_buf()))
        .map(|d| d.join("models"))
}

/// A configuration error when `dir` holds no model at all, saying how to point s2edge
/// at one; `None` when it holds at least one version (usable or not: then the
/// registry's own error is the informative one).
fn no_models(dir: &Path) -> Option<Failure> {
    let why = if !dir.exists() {
        "does not exist"
    } else if !dir.is_dir() {
        "is not a directory"
    } else {
        match Registry::new(dir).list() {
            Ok(l) if l.is_empty() => "holds no model versions",
            _ => return None,
        }
    };
    let mut msg = format!(
        "the models directory {} {why}; point s2edge at one with `--models DIR`, \
         `[paths] models = \"DIR\"` in the configuration, or S2EDGE__PATHS__MODELS=DIR",
        dir.display()
    );
    if let Some(m) = checkout_models().filter(|m| m.as_path() != dir) {
        msg.push_str(&format!(
            "; this binary runs from a source checkout, whose models are in {} (try `--models {}`)",
            m.display(),
            m.display()
        ));
    }
    Some(Failure::Config(anyhow::anyhow!(msg)))
}

fn models_dir(settings: &Settings, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| settings.paths.models.clone())
}

fn load_models(
    settings: &Settings,
    dir: &Path,
    selection: &ModelSelection,
) -> Result<ModelSet, Failure> {
    if let Some(f) = no_models(dir) {
        return Err(f);
    }
    tracing::debug!(models = %dir.display(), ?selection, "loading models");
    let rt = init_runtime(
        settings.runtime.onnxruntime.as_deref(),
        settings.runtime.env_options(),
    )
    .context("loading ONNX Runtime")?;
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
    let source =
        GranuleSource::open(granule).with_context(|| format!("opening {}", granule.display()))?;
    let mut set = start_models(&settings, &dir)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let options = ProcessOptions::from_settings(&settings);
    let mut bars = Bars::default();
    let report = {
        let _span = tracing::info_span!("granule", id = %source.id).entered();
        let mut models = set.models();
        process_granule(&source, &mut models, &options, out, &mut bars)
            .with_context(|| format!("processing {}", source.id))?
    };
    write_model_items(&settings, &dir, out, &report.models)?;
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
    emit(report.product.display())
}

/// The configured models behind inference worker pools, after checking that the models
/// directory holds any.
fn start_models(settings: &Settings, dir: &Path) -> Result<PooledSet, Failure> {
    if let Some(f) = no_models(dir) {
        return Err(f);
    }
    let selection = settings.model_selection()?;
    tracing::debug!(models = %dir.display(), ?selection, "loading models");
    let rt = init_runtime(
        settings.runtime.onnxruntime.as_deref(),
        settings.runtime.env_options(),
    )
    .context("loading ONNX Runtime")?;
    tracing::info!(path = %rt.path.display(), version = %rt.version, "ONNX Runtime loaded");
    let set = PooledSet::start(
        &Registry::new(dir),
        &selection,
        &settings.runtime.provider_options(),
        settings.runtime.inference_workers,
    )
    .with_context(|| format!("loading models from {}", dir.display()))?;
    for s in &set.skipped {
        eprintln!("warning   skipped model version {s}");
    }
    Ok(set)
}

/// Writes the MLM Items of `used` (`name@version`) into `<out>/models/`, where the
/// products' `derived_from` links point.
fn write_model_items(
    settings: &Settings,
    dir: &Path,
    out: &Path,
    used: &[String],
) -> Result<(), Failure> {
    use s2edge::model::stac;
    let registry = Registry::new(dir);
    let providers = settings.runtime.provider_options().order;
    for label in used {
        let r: s2edge::model::ModelRef = label
            .parse()
            .map_err(|e: String| anyhow::anyhow!("model {label}: {e}"))?;
        let resolved = registry
            .resolve(&r)
            .with_context(|| format!("describing model {label}"))?;
        stac::publish_model_item(
            out,
            &resolved.spec,
            &resolved.sha256,
            &resolved.dir,
            &providers,
        )
        .with_context(|| format!("writing the STAC Item of {label}"))?;
    }
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
        LedgerAction::List { json: true } => {
            let rows = l.list().context("listing the ledger")?;
            emit(serde_json::to_string_pretty(&rows).context("serialising the ledger")?)?
        }
        LedgerAction::List { json: false } => {
            let mut buf = Vec::new();
            admin::list(&l, &mut buf).context("listing the ledger")?;
            emit(String::from_utf8_lossy(&buf).trim_end())?
        }
        LedgerAction::Show { id, json } => {
            let row = l
                .get(&id)
                .context("reading the ledger")?
                .ok_or_else(|| anyhow::anyhow!("no granule {id} in the ledger"))?;
            let text = if json {
                serde_json::to_string(&row)
            } else {
                serde_json::to_string_pretty(&row)
            };
            emit(text.context("serialising the row")?)?
        }
        LedgerAction::Requeue { id } => emit(admin::requeue(settings, &l, &id)?)?,
        LedgerAction::Purge { id } => {
            if !admin::purge(&l, &id)? {
                return Err(Failure::Run(anyhow::anyhow!(
                    "no granule {id} in the ledger"
                )));
            }
            emit(format!("{id}: purged"))?
        }
    }
    Ok(())
}

fn info(granule: &Path) -> Result<(), Failure> {
    let source =
        GranuleSource::open(granule).with_context(|| format!("opening {}", granule.display()))?;
    let json = serde_json::to_string_pretty(&source).context("serialising metadata")?;
    emit(json)
}

fn sample(dir: &Path) -> Result<(), Failure> {
    let folder = s2edge::sample::write_sample(dir).context("writing the sample granule")?;
    emit(folder.display())
}

/// One registry entry as `models list --json` prints it (README "Machine-readable
/// output"; fields are only ever added).
#[derive(serde::Serialize)]
struct ModelEntry {
    name: String,
    version: u32,
    task: Option<String>,
    training: Option<String>,
    size_bytes: Option<u64>,
    dir: PathBuf,
    usable: bool,
    problem: Option<String>,
    /// The int8 graph (`[runtime] precision = "int8"`), when the version ships one.
    #[serde(skip_serializing_if = "Option::is_none")]
    int8: Option<Int8Entry>,
}

#[derive(serde::Serialize)]
struct Int8Entry {
    cost_db: f64,
    usable: bool,
    problem: Option<String>,
}

fn models_list(settings: &Settings, models: Option<PathBuf>, json: bool) -> Result<(), Failure> {
    let dir = models_dir(settings, models);
    if let Some(f) = no_models(&dir).filter(|_| !dir.is_dir()) {
        return Err(f);
    }
    let listing = Registry::new(&dir)
        .list()
        .with_context(|| format!("listing {}", dir.display()))?;
    let entries: Vec<ModelEntry> = listing
        .into_iter()
        .map(|m| ModelEntry {
            int8: m.int8.map(|i| Int8Entry {
                cost_db: i.cost_db,
                usable: i.problem.is_none(),
                problem: i.problem,
            }),
            task: m.task.map(|t| format!("{t:?}").to_lowercase()),
            training: m.status.map(|s| s.to_string()),
            size_bytes: m.size,
            usable: m.problem.is_none(),
            problem: m.problem,
            dir: m.dir,
            name: m.name,
            version: m.version,
        })
        .collect();
    if json {
        return emit(serde_json::to_string_pretty(&entries).context("serialising the listing")?);
    }
    if entries.is_empty() {
        eprintln!("no model versions in {}", dir.display());
    }
    emit(format!(
        "{:<20} {:>7} {:<9} {:<10} {:>10}  status",
        "name", "version", "task", "training", "size"
    ))?;
    for m in entries {
        let size = m
            .size_bytes
            .map(|s| format!("{:.1} MB", s as f64 / 1e6))
            .unwrap_or_else(|| "-".into());
        emit(format!(
            "{:<20} {:>7} {:<9} {:<10} {:>10}  {}{}",
            m.name,
            m.version,
            m.task.as_deref().unwrap_or("?"),
            m.training.as_deref().unwrap_or("?"),
            size,
            m.problem.as_deref().unwrap_or("ok"),
            match &m.int8 {
                None => String::new(),
                Some(i) => match &i.problem {
                    None => format!("; int8 graph, cost {:.2} dB", i.cost_db),
                    Some(p) => format!("; int8 graph unusable: {p}"),
                },
            }
        ))?;
    }
    Ok(())
}

fn models_stac(
    settings: &Settings,
    models: Option<PathBuf>,
    model: &str,
    file: Option<PathBuf>,
) -> Result<(), Failure> {
    use s2edge::model::stac;
    let dir = models_dir(settings, models);
    if let Some(f) = no_models(&dir) {
        return Err(f);
    }
    let r: s2edge::model::ModelRef = model
        .parse()
        .map_err(|e: String| Failure::Config(anyhow::anyhow!("model {model}: {e}")))?;
    let resolved = Registry::new(&dir)
        .resolve(&r)
        .with_context(|| format!("resolving {model}"))?;
    let providers = settings.runtime.provider_options().order;
    let facts =
        stac::ModelFacts::from_dir(&resolved.spec, &resolved.sha256, &resolved.dir, &providers);
    let text =
        serde_json::to_string_pretty(&stac::model_item(&facts)).context("serialising the Item")?;
    match file {
        Some(f) => {
            std::fs::write(&f, format!("{text}\n"))
                .with_context(|| format!("writing {}", f.display()))?;
            emit(f.display())
        }
        None => emit(text),
    }
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
        emit(format!(
            "{:<24} ok  provider {:<9} {:<7} {} sha256 {}…  status {}  test inference {:.0} ms{}",
            m.label(),
            m.provider.to_string(),
            m.graph.precision.to_string(),
            m.graph.file,
            &m.graph.sha256[..12.min(m.graph.sha256.len())],
            m.spec.training.status,
            t.as_secs_f64() * 1e3,
            if failures.is_empty() {
                String::new()
            } else {
                format!("  ({})", failures.join("; "))
            }
        ))?;
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
                emit(format!("model {} ok on {}", m.label(), m.provider))?;
            }
        }
        Err(Failure::Run(e) | Failure::Config(e)) => problems.push(render(&e)),
        Err(Failure::ClosedStdout) => return Err(Failure::ClosedStdout),
    }
    if problems.is_empty() {
        emit("configuration ok")
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

/// The arguments of `s2edge batch`.
struct BatchArgs {
    list: Option<PathBuf>,
    out: PathBuf,
    models: Option<PathBuf>,
    shard: Option<String>,
    merge: bool,
    collection_id: Option<String>,
}

fn batch(settings: Settings, a: BatchArgs) -> Result<(), Failure> {
    use s2edge::batch::{self, Shard};
    let env = |k: &str| std::env::var(k).ok();
    let config = |e: batch::BatchError| Failure::Config(e.into());
    let collection_id = a.collection_id.clone().unwrap_or_else(|| {
        std::path::absolute(&a.out)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "s2edge-batch".into())
    });
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let merge = |out: &Path| -> Result<(), Failure> {
        let r = batch::merge(out, &collection_id).context("merging the workers' results")?;
        eprintln!(
            "merged    {} ledger(s): {} products in {}, {} not done",
            r.ledgers.len(),
            r.products,
            r.collection.display(),
            r.not_done.len()
        );
        out_json(&serde_json::json!({ "merge": r }))
    };
    if a.merge {
        return merge(&a.out);
    }
    let Some(list_file) = &a.list else {
        return Err(Failure::Config(anyhow::anyhow!("--list FILE is required")));
    };
    let list = batch::read_list(list_file).map_err(config)?;
    let mut shard = match &a.shard {
        Some(s) => Shard::parse(s).map_err(config)?,
        None => Shard::from_slurm(env)
            .map_err(config)?
            .unwrap_or(Shard::ALL),
    };
    #[cfg(feature = "mpi-batch")]
    let world = match batch::launched_size(env) {
        Some(_) => Some(batch::mpi::World::init().map_err(config)?),
        None => None,
    };
    #[cfg(feature = "mpi-batch")]
    if let Some(w) = &world {
        shard = shard.split(w.rank(), w.size()).map_err(config)?;
    }
    #[cfg(not(feature = "mpi-batch"))]
    if let Some(n) = batch::launched_size(env).filter(|n| *n > 1) {
        return Err(Failure::Config(anyhow::anyhow!(
            "started as one of {n} MPI ranks, but this s2edge was built without MPI: every \
             rank would process the whole list; rebuild with `--features mpi-batch`, or shard \
             with a Slurm job array or --shard INDEX/COUNT"
        )));
    }
    let _ = &mut shard;
    let dir = models_dir(&settings, a.models.clone());
    let mut set = start_models(&settings, &dir)?;
    let options = ProcessOptions::from_settings(&settings);
    let report = batch::run_shard(&a.out, &list, shard, &mut |source| {
        let mut models = set.models();
        process_granule(source, &mut models, &options, &a.out, &mut NoProgress)
    })
    .context("running the batch")?;
    let used: Vec<String> = report.models.iter().cloned().collect();
    write_model_items(&settings, &dir, &a.out, &used)?;
    eprintln!(
        "worker    {shard}: {} processed, {} already done, {} failed",
        report.processed.len(),
        report.already_done.len(),
        report.failed.len()
    );
    for (id, why) in &report.failed {
        eprintln!("failed    {id}: {why}");
    }
    let failed = report.failed.len();
    out_json(&serde_json::json!({ "worker": shard.to_string(), "report": report }))?;
    #[cfg(feature = "mpi-batch")]
    let merges = match &world {
        Some(w) => {
            // Also the barrier: rank 0 merges only once every rank's ledger is final.
            let total = w.sum(failed as u64);
            if total > 0 && w.rank() == 0 {
                eprintln!("batch     {total} granule(s) failed over all ranks");
            }
            w.rank() == 0
        }
        None => shard.count == 1,
    };
    #[cfg(not(feature = "mpi-batch"))]
    let merges = shard.count == 1;
    if merges {
        merge(&a.out)?;
    }
    if failed > 0 {
        return Err(Failure::Run(anyhow::anyhow!(
            "{failed} granule(s) of worker {shard} failed (recorded in its ledger; a rerun retries them)"
        )));
    }
    Ok(())
}

/// One line of JSON on stdout.
fn out_json(v: &serde_json::Value) -> Result<(), Failure> {
    emit(serde_json::to_string(v).context("serialising")?)
}
