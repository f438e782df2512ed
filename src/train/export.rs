//! Export: a super-resolution checkpoint → `models/<name>/<version>/` (`model.onnx` +
//! `model.toml`, DESIGN.md "Models").
//!
//! The burn network is traced twice by burn-onnx (`export_dynamic`), so batch, height and
//! width are symbolic axes and the pipeline's tiles of any size run on one graph. The
//! exporter names graph inputs and outputs after internal tensor ids; they are renamed to
//! the stable names of the manifest (`x10`, `x20`, `x60` → `y`). A back-projection layer
//! is not traced but appended as ONNX ops ([`append_backprojection`]).
//!
//! Invariants: a version appears atomically — everything is written into a staging
//! directory (ONNX first, the manifest last) which is renamed into place; the manifest is
//! built with `ModelSpec` and validated before it is written, so the daemon's loader
//! accepts it without hand editing.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use burn_onnx::export::{AxisSpec, InputSpec as AxisInputSpec, OnnxExporter};
use onnx_ir::{AttributeProto, AttributeType, Message, ModelProto, NodeProto, TensorProto};
use sha2::{Digest, Sha256};

use crate::granule::Resolution;
use crate::model::manifest::{
    InputSpec, IoMap, Normalisation, OutputSpec, ProductLevel, SuperresSpec, Task, TrainingInfo,
    TrainingStatus, UpsampleKernel, SUPPORTED_SCHEMA,
};
use crate::model::ModelSpec;

use super::backproject::BackProjection;
use super::checkpoint::CheckpointState;
use super::data::{SrBands, NORM_MEAN, NORM_STD};
use super::dsen2::Dsen2;
use super::TrainError;

/// The manifest's output name of super-resolution models.
pub const SR_OUTPUT: &str = "y";

/// Exports `model` to ONNX bytes with dynamic batch/height/width axes, graph inputs named
/// and split as the manifest's (`x10`, `x20`[, `x60`]) and the single output named `y`.
///
/// The network is traced with its inputs joined into one tensor
/// ([`Dsen2::forward_joined`]): with two graph inputs sharing the symbolic height, the
/// exporter cannot tell which input a reshape's height comes from, and the
/// back-projection layer reshapes. The one input is then split back into the manifest's
/// inputs by prepending a `Concat` ([`split_joined_input`]). The trace sizes are
/// non-square multiples of 6 with a batch above 1, so no two dynamic axes coincide.
///
/// # Errors
/// [`TrainError::Export`] when burn-onnx cannot lower the graph or the rewriting fails.
pub fn export_sr_onnx(model: &Dsen2, bands: &SrBands, name: &str) -> Result<Vec<u8>, TrainError> {
    let device = Device::flex();
    let cin: usize = bands.channels().iter().sum();
    let spec = AxisInputSpec::new([
        AxisSpec::dynamic("batch"),
        AxisSpec::Static,
        AxisSpec::dynamic("height"),
        AxisSpec::dynamic("width"),
    ]);
    let err = |e: burn_onnx::export::ExportError| TrainError::Export {
        model: name.to_string(),
        reason: format!("{e}"),
    };
    let sample = Tensor::<4>::zeros([2, cin, 24, 30], &device);
    let validation = Tensor::<4>::zeros([3, cin, 36, 42], &device);
    // The back-projection layer is not traced: burn-onnx lowers it per band as
    // single-channel ops, which ONNX Runtime's blocked (NCHWc) layout pads to 16 channels
    // each; it is appended below as grouped ops computing the same function.
    let net = model.without_backprojection();
    let onnx = OnnxExporter::new()
        .export_dynamic(&net, sample, validation, &[spec], |m: &Dsen2, x| {
            m.forward_joined(x)
        })
        .map_err(err)?;
    let joined = rename_io(onnx.as_bytes(), &[JOINED_INPUT], &[SR_OUTPUT], name)?;
    let inputs: Vec<(&str, usize)> = bands.inputs.iter().map(|(n, b)| (*n, b.len())).collect();
    let split = split_joined_input(&joined, JOINED_INPUT, &inputs, name)?;
    match (model.backprojection(), bands.inputs.last()) {
        (Some(bp), Some((observed, group))) => {
            append_backprojection(&split, bp, observed, group.len(), name)
        }
        _ => Ok(split),
    }
}

/// Appends the `K` steps of [`BackProjection`] after the graph's output `y`, as ONNX ops
/// on all `channels` output bands at once:
/// - `x_obs` = the recovery taps (separable depthwise `Conv`s, stride `s`, after an edge
///   `Pad` of `s/2`) applied to the graph input `observed` (the bilinearly upsampled
///   coarse bands, which the network's residual also adds);
/// - per step, `y ← y + Resize(x_obs − D(y))`, with `D` the degradation taps (separable
///   depthwise `Conv`s, stride `s`, after an edge `Pad` of the blur radius) and `Resize`
///   linear with `half_pixel` coordinates, which is the project's bilinear upsampling with
///   replicated edges (`raster::resample::upsample`).
///
/// Every op is local and pads by edge replication exactly as the traced layer did, so the
/// receptive radius is [`BackProjection::radius`] as before.
///
/// # Errors
/// [`TrainError::Export`] when the bytes do not parse or no node produces `y`.
pub fn append_backprojection(
    bytes: &[u8],
    bp: &BackProjection,
    observed: &str,
    channels: usize,
    model: &str,
) -> Result<Vec<u8>, TrainError> {
    edit_graph(bytes, model, |graph, err| {
        let net_out = "bp_y0".to_string();
        let producer = graph
            .node
            .iter_mut()
            .flat_map(|n| n.output.iter_mut())
            .find(|o| o.as_str() == SR_OUTPUT)
            .ok_or_else(|| err(format!("no node produces {SR_OUTPUT}")))?;
        *producer = net_out.clone();
        let mut g = GraphBuilder {
            graph,
            channels,
            scale: bp.scale,
        };
        let s = bp.scale;
        let padded = g.pad(observed, s / 2, "bp_obs_pad");
        let obs = g.separable(&padded, bp.recover_taps(), "bp_obs");
        g.init_f32("bp_scales", vec![4], vec![1.0, 1.0, s as f32, s as f32]);
        let mut y = net_out;
        for k in 0..bp.steps {
            let padded = g.pad(&y, bp.blur_radius(), &format!("bp{k}_pad"));
            let degraded = g.separable(&padded, bp.degrade_taps(), &format!("bp{k}_d"));
            let residual = g.node("Sub", &[&obs, &degraded], &format!("bp{k}_res"), vec![]);
            let up = g.node(
                "Resize",
                &[&residual, "", "bp_scales"],
                &format!("bp{k}_up"),
                vec![
                    string_attr("mode", "linear"),
                    string_attr("coordinate_transformation_mode", "half_pixel"),
                ],
            );
            let out = if k + 1 == bp.steps {
                SR_OUTPUT.to_string()
            } else {
                format!("bp{k}_y")
            };
            y = g.node("Add", &[&y, &up], &out, vec![]);
        }
        Ok(())
    })
}

/// Parses an ONNX model, lets `edit` change its graph (with an error constructor naming
/// the model) and re-encodes it.
///
/// # Errors
/// [`TrainError::Export`] when the bytes do not parse, the model has no graph, `edit`
/// fails or the result does not encode.
fn edit_graph(
    bytes: &[u8],
    model: &str,
    edit: impl FnOnce(&mut onnx_ir::GraphProto, &dyn Fn(String) -> TrainError) -> Result<(), TrainError>,
) -> Result<Vec<u8>, TrainError> {
    let err = |reason: String| TrainError::Export {
        model: model.to_string(),
        reason,
    };
    let mut proto = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| err(format!("re-parsing the export: {e}")))?;
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| err("the export has no graph".into()))?;
    edit(graph, &err)?;
    proto
        .write_to_bytes()
        .map_err(|e| err(format!("re-encoding the export: {e}")))
}

/// Appends nodes and initialisers to a graph (the back-projection ops).
struct GraphBuilder<'a> {
    graph: &'a mut onnx_ir::GraphProto,
    channels: usize,
    scale: usize,
}

impl GraphBuilder<'_> {
    fn init_f32(&mut self, name: &str, dims: Vec<i64>, data: Vec<f32>) {
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.dims = dims;
        t.data_type = 1; // FLOAT
        t.float_data = data;
        self.graph.initializer.push(t);
    }

    fn init_i64(&mut self, name: &str, data: Vec<i64>) {
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.dims = vec![data.len() as i64];
        t.data_type = 7; // INT64
        t.int64_data = data;
        self.graph.initializer.push(t);
    }

    /// A node with one output named `out`; returns `out`.
    fn node(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<AttributeProto>) -> String {
        let mut n = NodeProto::new();
        n.name = format!("{out}_node");
        n.op_type = op.to_string();
        n.input = inputs.iter().map(|s| (*s).to_string()).collect();
        n.output = vec![out.to_string()];
        n.attribute = attrs;
        self.graph.node.push(n);
        out.to_string()
    }

    /// Edge padding by `p` on both spatial axes.
    fn pad(&mut self, x: &str, p: usize, out: &str) -> String {
        let p = p as i64;
        let pads = format!("{out}_pads");
        self.init_i64(&pads, vec![0, 0, p, p, 0, 0, p, p]);
        self.node("Pad", &[x, &pads], out, vec![string_attr("mode", "edge")])
    }

    /// The separable 2-D kernel `taps ⊗ taps`, depthwise over the channels, stride `s`,
    /// no padding: a vertical then a horizontal `Conv`.
    fn separable(&mut self, x: &str, taps: &[f32], out: &str) -> String {
        let (c, k, s) = (self.channels, taps.len(), self.scale as i64);
        let tiled: Vec<f32> = (0..c).flat_map(|_| taps.iter().copied()).collect();
        let (wv, wh) = (format!("{out}_wv"), format!("{out}_wh"));
        self.init_f32(&wv, vec![c as i64, 1, k as i64, 1], tiled.clone());
        self.init_f32(&wh, vec![c as i64, 1, 1, k as i64], tiled);
        let group = int_attr("group", c as i64);
        let v = self.node(
            "Conv",
            &[x, &wv],
            &format!("{out}_v"),
            vec![group.clone(), ints_attr("strides", &[s, 1])],
        );
        self.node(
            "Conv",
            &[&v, &wh],
            out,
            vec![group, ints_attr("strides", &[1, s])],
        )
    }
}

fn string_attr(name: &str, value: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = value.as_bytes().to_vec().into();
    a
}

fn int_attr(name: &str, value: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = value;
    a
}

fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = values.to_vec();
    a
}

/// The graph input of the joined trace, before it is split.
const JOINED_INPUT: &str = "x_joined";

/// Replaces graph input `joined` (`[n, Σc, h, w]`) by one input per `(name, channels)`
/// and a `Concat` along the channels that rebuilds it, so the graph takes the manifest's
/// inputs.
///
/// # Errors
/// [`TrainError::Export`] when the bytes do not parse or `joined` is not an input.
pub fn split_joined_input(
    bytes: &[u8],
    joined: &str,
    inputs: &[(&str, usize)],
    model: &str,
) -> Result<Vec<u8>, TrainError> {
    edit_graph(bytes, model, |graph, err| {
        let pos = graph
            .input
            .iter()
            .position(|i| i.name == joined)
            .ok_or_else(|| err(format!("the export has no input {joined}")))?;
        let template = graph.input.remove(pos);
        let total: usize = inputs.iter().map(|(_, c)| c).sum();
        let dims = template
            .type_
            .as_ref()
            .and_then(|t| t.tensor_type().shape.as_ref())
            .map(|s| s.dim.len())
            .unwrap_or(0);
        if dims != 4 {
            return Err(err(format!("input {joined} has rank {dims}, expected 4")));
        }
        let mut names = Vec::new();
        for (i, (name, c)) in inputs.iter().enumerate() {
            let mut vi = template.clone();
            vi.name = (*name).to_string();
            let dim = &mut vi
                .type_
                .mut_or_insert_default()
                .mut_tensor_type()
                .shape
                .mut_or_insert_default()
                .dim[1];
            dim.set_dim_value(*c as i64);
            graph.input.insert(pos + i, vi);
            names.push((*name).to_string());
        }
        let mut node = NodeProto::new();
        node.name = "split_joined_input".into();
        node.op_type = "Concat".into();
        node.input = names;
        node.output = vec![joined.to_string()];
        node.attribute.push(int_attr("axis", 1));
        graph.node.insert(0, node);
        if total == 0 {
            return Err(err("no input channels".into()));
        }
        Ok(())
    })
}

/// Renames the graph inputs (in order) and outputs (in order) of an ONNX model, and every
/// node reference to them.
///
/// # Errors
/// [`TrainError::Export`] when the bytes do not parse or the counts differ.
pub fn rename_io(
    bytes: &[u8],
    inputs: &[&str],
    outputs: &[&str],
    model: &str,
) -> Result<Vec<u8>, TrainError> {
    edit_graph(bytes, model, |graph, err| {
        let initializers: std::collections::HashSet<String> =
            graph.initializer.iter().map(|t| t.name.clone()).collect();
        let runtime: Vec<usize> = (0..graph.input.len())
            .filter(|&i| !initializers.contains(&graph.input[i].name))
            .collect();
        if runtime.len() != inputs.len() || graph.output.len() != outputs.len() {
            return Err(err(format!(
                "graph has {} inputs and {} outputs, expected {} and {}",
                runtime.len(),
                graph.output.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        let mut map = Vec::new();
        for (&i, new) in runtime.iter().zip(inputs) {
            map.push((graph.input[i].name.clone(), (*new).to_string()));
            graph.input[i].name = (*new).to_string();
        }
        for (o, new) in graph.output.iter_mut().zip(outputs) {
            map.push((o.name.clone(), (*new).to_string()));
            o.name = (*new).to_string();
        }
        for node in graph.node.iter_mut() {
            for s in node.input.iter_mut().chain(node.output.iter_mut()) {
                if let Some((_, new)) = map.iter().find(|(old, _)| old == s) {
                    *s = new.clone();
                }
            }
        }
        for vi in graph.value_info.iter_mut() {
            if let Some((_, new)) = map.iter().find(|(old, _)| *old == vi.name) {
                vi.name = new.clone();
            }
        }
        Ok(())
    })
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The manifest of a super-resolution export.
pub fn sr_manifest(
    name: &str,
    version: u32,
    sha: &str,
    bands: &SrBands,
    receptive_radius: u32,
    training: TrainingInfo,
) -> ModelSpec {
    let mut inputs = Vec::new();
    for (n, group) in &bands.inputs {
        let grid = group.first().map_or(Resolution::R10, |b| b.resolution());
        inputs.push((
            (*n).to_string(),
            InputSpec {
                bands: group.clone(),
                grid,
                upsample: (grid != Resolution::R10).then_some(UpsampleKernel::Bilinear),
            },
        ));
    }
    let nch: usize = bands.channels().iter().sum();
    ModelSpec {
        schema: SUPPORTED_SCHEMA,
        name: name.to_string(),
        version,
        task: Task::Superres,
        onnx_sha256: sha.to_string(),
        product_level: ProductLevel::L1C,
        inputs: IoMap(inputs),
        outputs: IoMap(vec![(
            SR_OUTPUT.to_string(),
            OutputSpec {
                bands: bands.outputs.clone(),
                grid: Some(Resolution::R10),
            },
        )]),
        normalisation: Normalisation {
            mean: vec![NORM_MEAN; nch],
            std: vec![NORM_STD; nch],
        },
        superres: Some(SuperresSpec {
            scale: bands.scale as u32,
            receptive_radius: Some(receptive_radius),
        }),
        classify: None,
        training,
        precision: Default::default(),
    }
}

/// The product level of the granules a model was trained on: L1C or L2A when all agree,
/// `any` when they differ; L1C when none can be opened (synthetic test data).
pub fn training_level(data: &[String]) -> ProductLevel {
    use crate::granule::{GranuleSource, ProductLevel as Level};
    let levels: Vec<ProductLevel> = data
        .iter()
        .filter_map(|p| GranuleSource::open(Path::new(p)).ok())
        .map(|g| match g.metadata.level {
            Level::L1C => ProductLevel::L1C,
            Level::L2A => ProductLevel::L2A,
            Level::Unknown => ProductLevel::Any,
        })
        .collect();
    match levels.first() {
        None => ProductLevel::L1C,
        Some(first) if levels.iter().all(|l| l == first) => *first,
        Some(_) => ProductLevel::Any,
    }
}

/// Training provenance of a checkpoint (metrics filled in by `eval`).
pub fn training_info(st: &CheckpointState, notes: Option<String>) -> TrainingInfo {
    TrainingInfo {
        status: TrainingStatus::Trained,
        data: st.data.join(", "),
        steps: st.step,
        ranks: st.ranks as u32,
        metrics: toml::Table::new(),
        notes,
    }
}

/// Validates `spec` and writes it as `dir/model.toml`: under a temporary name first, then
/// renamed, so a reader never sees half a manifest (and a new version appears last).
///
/// # Errors
/// [`TrainError::Export`] for an invalid manifest, [`TrainError::Io`].
pub fn write_manifest_in(dir: &Path, spec: &ModelSpec) -> Result<(), TrainError> {
    spec.validate().map_err(|e| TrainError::Export {
        model: spec.name.clone(),
        reason: format!("manifest: {e}"),
    })?;
    let text = toml::to_string(spec).map_err(|e| TrainError::Export {
        model: spec.name.clone(),
        reason: format!("manifest: {e}"),
    })?;
    let header = "# Written by s2edge-train export -- do not edit; re-export instead.\n";
    let tmp = dir.join("model.toml.tmp");
    std::fs::write(&tmp, format!("{header}{text}")).map_err(|e| TrainError::io(&tmp, e))?;
    let p = dir.join("model.toml");
    std::fs::rename(&tmp, &p).map_err(|e| TrainError::io(&p, e))
}

/// A version directory being built: `models/<name>/.<version>.staging`.
#[derive(Debug)]
pub struct Staging {
    /// The staging directory.
    pub dir: PathBuf,
    /// The final directory.
    pub dest: PathBuf,
}

impl Staging {
    /// Creates an empty staging directory for `models_dir/<name>/<version>`.
    ///
    /// # Errors
    /// [`TrainError::Io`].
    pub fn new(models_dir: &Path, name: &str, version: u32) -> Result<Staging, TrainError> {
        let parent = models_dir.join(name);
        let dir = parent.join(format!(".{version}.staging"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        Ok(Staging {
            dest: parent.join(version.to_string()),
            dir,
        })
    }

    /// Writes `model.onnx`.
    ///
    /// # Errors
    /// [`TrainError::Io`].
    pub fn write_onnx(&self, bytes: &[u8]) -> Result<(), TrainError> {
        let p = self.dir.join("model.onnx");
        std::fs::write(&p, bytes).map_err(|e| TrainError::io(&p, e))
    }

    /// Validates and writes `model.toml` (temporary name, then renamed: last).
    ///
    /// # Errors
    /// [`TrainError::Export`] for an invalid manifest, [`TrainError::Io`].
    pub fn write_manifest(&self, spec: &ModelSpec) -> Result<(), TrainError> {
        write_manifest_in(&self.dir, spec)
    }

    /// Renames the staging directory into place, replacing an existing version.
    ///
    /// # Errors
    /// [`TrainError::Io`].
    pub fn publish(self) -> Result<PathBuf, TrainError> {
        let old = self.dest.with_extension("old");
        if self.dest.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
            }
            std::fs::rename(&self.dest, &old).map_err(|e| TrainError::io(&self.dest, e))?;
        }
        std::fs::rename(&self.dir, &self.dest).map_err(|e| TrainError::io(&self.dest, e))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
        }
        Ok(self.dest)
    }
}

/// Exports the super-resolution checkpoint `ckpt` as `cfg.models_dir/<name>/<version>/`.
/// With `eval_data`, the staged model is scored through the pipeline on that granule's
/// held-out region (next to both baselines) and the metrics go into the manifest.
///
/// # Errors
/// Checkpoint, export, evaluation and I/O errors.
pub fn export_superres(
    cfg: &super::TrainConfig,
    ckpt: &Path,
    eval_data: Option<&Path>,
    notes: Option<String>,
) -> Result<(PathBuf, Option<super::eval::EvalReport>), TrainError> {
    export_superres_with(
        cfg,
        ckpt,
        eval_data,
        notes,
        &super::eval::EvalOptions::default(),
    )
}

/// [`export_superres`] with the evaluation's options (e.g. the linear baseline fitted on
/// other granules, for metrics on a scene the model never saw).
///
/// # Errors
/// As [`export_superres`].
pub fn export_superres_with(
    cfg: &super::TrainConfig,
    ckpt: &Path,
    eval_data: Option<&Path>,
    notes: Option<String>,
    eval: &super::eval::EvalOptions,
) -> Result<(PathBuf, Option<super::eval::EvalReport>), TrainError> {
    let device = Device::flex();
    let (st, model) = super::sr::load_model(ckpt, &device)?;
    let bands = SrBands::for_scale(st.scale);
    let bytes = export_sr_onnx(&model, &bands, &cfg.name)?;
    let sha = sha256_hex(&bytes);
    let stage = Staging::new(&cfg.models_dir, &cfg.name, cfg.version)?;
    stage.write_onnx(&bytes)?;
    let mut info = training_info(&st, notes);
    let mut spec = sr_manifest(
        &cfg.name,
        cfg.version,
        &sha,
        &bands,
        model.receptive_radius(),
        info.clone(),
    );
    spec.product_level = training_level(&st.data);
    stage.write_manifest(&spec)?;
    let mut report = None;
    if let Some(data) = eval_data {
        let mut loaded = crate::model::session::LoadedModel::load(&stage.dir, &Default::default())?;
        let r =
            super::eval::evaluate_loaded_with(&mut loaded, &bands, data, cfg.holdout, 512, eval)?;
        info.metrics = r.to_table();
        spec.training = info;
        stage.write_manifest(&spec)?;
        report = Some(r);
    }
    Ok((stage.publish()?, report))
}
