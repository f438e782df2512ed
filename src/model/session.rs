//! `LoadedModel`: a verified model with its ONNX Runtime session.
//!
//! Loading refuses anything that disagrees with its manifest (DESIGN.md "Models"): the
//! sha256 of the graph it loads first (`model.onnx`, or the int8 graph that `[runtime]
//! precision` chose, [`super::precision`]; before ONNX Runtime parses a byte of it), then the
//! graph's inputs and outputs: names, element type f32, rank 4 `[N, C, H, W]` inputs whose
//! channel count is the number of bands listed, classifier outputs `[N, classes]`,
//! super-resolution outputs `[N, bands, H, W]`. Dynamic dimensions (`-1`) match anything.
//!
//! `run` takes `&mut self` because ONNX Runtime's `Session::run` does: some execution
//! provider internals are not thread-safe. A `LoadedModel` is owned by one inference
//! worker thread ([`super::worker`]); it is never shared behind a mutex.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndarray::{Array4, ArrayD};
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::error::ModelError;
use super::manifest::{ModelSpec, Task};
use super::precision::{choose, GraphChoice, Precision};
use super::provider::{build_session, ExecutionProvider, ProviderOptions, ProviderReport};
use super::registry::{read_verified, MANIFEST_FILE};
use super::runtime::environment;

/// One graph input or output as ONNX Runtime describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name in the graph.
    pub name: String,
    /// Element type (`Float32`, ...), or the kind of non-tensor value.
    pub dtype: String,
    /// Whether the element type is f32.
    pub is_f32: bool,
    /// Dimensions, `-1` where dynamic; `None` for non-tensor values.
    pub shape: Option<Vec<i64>>,
}

impl TensorInfo {
    fn from_outlet(name: &str, ty: &ValueType) -> TensorInfo {
        match ty {
            ValueType::Tensor { ty, shape, .. } => TensorInfo {
                name: name.to_string(),
                dtype: format!("{ty:?}"),
                is_f32: *ty == TensorElementType::Float32,
                shape: Some(shape.to_vec()),
            },
            other => TensorInfo {
                name: name.to_string(),
                dtype: format!("{other:?}"),
                is_f32: false,
                shape: None,
            },
        }
    }
}

/// A model whose file, manifest and graph agree, with a session ready to run.
#[derive(Debug)]
pub struct LoadedModel {
    /// The manifest.
    pub spec: ModelSpec,
    /// The version directory.
    pub dir: PathBuf,
    /// The graph the session runs (`model.onnx`, or the manifest's int8 graph), verified
    /// against its digest, and why it is not the precision asked for, if it is not.
    pub graph: GraphChoice,
    /// The execution provider the session runs on (provenance, `/healthz`).
    pub provider: ExecutionProvider,
    /// Why providers before `provider` were not used.
    pub provider_report: ProviderReport,
    /// The graph's widest feature map ([`graph_feature_width`]); super-resolution only.
    pub feature_width: Option<usize>,
    /// The provider policy it was loaded with (more sessions of it load the same way).
    pub options: ProviderOptions,
    session: Session,
}

/// Loads the model in version directory `dir` (see the module docs for the checks).
///
/// Initialises ONNX Runtime with the default search if the process has not yet (call
/// [`super::runtime::init_runtime`] first to use a configured library).
///
/// # Errors
/// [`ModelError::Manifest`], [`ModelError::Io`], [`ModelError::ShaMismatch`],
/// runtime errors, [`ModelError::AcceleratorRequired`], [`ModelError::Session`], or
/// [`ModelError::IoMismatch`] naming the input or output that differs.
pub fn load(dir: &Path, opts: &ProviderOptions) -> Result<LoadedModel, ModelError> {
    load_spec(ModelSpec::load(&dir.join(MANIFEST_FILE))?, dir, opts)
}

/// [`load`] with the manifest given rather than read from `dir` (the trainer scores a new
/// int8 graph before its manifest section exists).
///
/// # Errors
/// As [`load`], but for the manifest's.
pub fn load_spec(
    spec: ModelSpec,
    dir: &Path,
    opts: &ProviderOptions,
) -> Result<LoadedModel, ModelError> {
    let label = spec.label();
    let mut graph = choose(&spec, opts);
    let bytes = match read_verified(&label, dir, &graph.file, &graph.sha256) {
        Ok(b) => b,
        // The float graph of the same version is intact: run it rather than pass the
        // version over (a `model.onnx` that fails its check still does).
        Err(e) if graph.precision != Precision::Float32 => {
            tracing::error!(model = %label, graph = %graph.file, "{e}");
            graph = GraphChoice::float32(
                &spec,
                Some(format!(
                    "{label}: its int8 graph failed its check ({e}); running float32"
                )),
            );
            read_verified(&label, dir, &graph.file, &graph.sha256)?
        }
        Err(e) => return Err(e),
    };
    if let Some(note) = &graph.note {
        tracing::warn!(model = %label, "{note}");
    }
    if spec.is_untrained() {
        tracing::warn!(
            model = %label,
            dir = %dir.display(),
            "UNTRAINED MODEL: its outputs are placeholders, not predictions \
             (manifest [training] status = \"untrained\"); products will say so"
        );
    }
    let env = environment()?;
    let (session, report) = build_session(env, &bytes, &label, opts)?;
    // Read from the verified bytes, not the file again.
    let feature_width = if spec.task == Task::Superres {
        graph_feature_width(&bytes)
    } else {
        None
    };
    drop(bytes);
    let inputs: Vec<TensorInfo> = session
        .inputs()
        .iter()
        .map(|o| TensorInfo::from_outlet(o.name(), o.dtype()))
        .collect();
    let outputs: Vec<TensorInfo> = session
        .outputs()
        .iter()
        .map(|o| TensorInfo::from_outlet(o.name(), o.dtype()))
        .collect();
    check_io(&spec, &inputs, &outputs).map_err(|reason| ModelError::IoMismatch {
        model: label.clone(),
        reason,
    })?;
    tracing::info!(model = %label, provider = %report.used, graph = %graph.file,
        precision = %graph.precision, sha256 = %graph.sha256, "model loaded");
    Ok(LoadedModel {
        feature_width,
        options: opts.clone(),
        graph,
        spec,
        dir: dir.to_path_buf(),
        provider: report.used,
        provider_report: report,
        session,
    })
}

impl LoadedModel {
    /// As [`load`].
    ///
    /// # Errors
    /// As [`load`].
    pub fn load(dir: &Path, opts: &ProviderOptions) -> Result<LoadedModel, ModelError> {
        load(dir, opts)
    }

    /// `name@version`.
    pub fn label(&self) -> String {
        self.spec.label()
    }

    /// The graph's inputs as ONNX Runtime reports them.
    pub fn graph_inputs(&self) -> Vec<TensorInfo> {
        self.session
            .inputs()
            .iter()
            .map(|o| TensorInfo::from_outlet(o.name(), o.dtype()))
            .collect()
    }

    /// The graph's outputs as ONNX Runtime reports them.
    pub fn graph_outputs(&self) -> Vec<TensorInfo> {
        self.session
            .outputs()
            .iter()
            .map(|o| TensorInfo::from_outlet(o.name(), o.dtype()))
            .collect()
    }

    /// Runs one batch. `inputs` are the manifest's inputs by name, already normalised,
    /// each `[N, C, H, W]`; returns the manifest's outputs by name, in manifest order.
    ///
    /// # Errors
    /// [`ModelError::Inference`] when an input is missing, extra, or has the wrong
    /// channel count or batch size, or ONNX Runtime fails (an out-of-memory failure is
    /// transient, see [`ModelError::is_transient`]).
    pub fn run(
        &mut self,
        inputs: Vec<(String, Array4<f32>)>,
    ) -> Result<Vec<(String, ArrayD<f32>)>, ModelError> {
        let label = self.spec.label();
        let fail = |reason: String| ModelError::Inference {
            model: label.clone(),
            reason,
        };
        check_run_inputs(&self.spec, &inputs).map_err(&fail)?;
        // [N, C, H, W] of the first input, for the debug line (Copy: nothing allocated).
        let shape = inputs.first().map(|(_, a)| a.dim());
        let mut feed: Vec<(String, SessionInputValue<'static>)> = Vec::with_capacity(inputs.len());
        for (name, array) in inputs {
            let tensor = Tensor::from_array(array)
                .map_err(|e| fail(format!("input {name}: cannot create a tensor: {e}")))?;
            feed.push((name, SessionInputValue::from(tensor)));
        }
        let started = std::time::Instant::now();
        let outputs = self.session.run(feed);
        let seconds = started.elapsed().as_secs_f64();
        super::observe::notify(&super::observe::BatchEvent {
            model: &self.spec.name,
            version: self.spec.version,
            provider: self.provider,
            size: shape.map_or(0, |s| s.0),
            seconds,
            ok: outputs.is_ok(),
        });
        tracing::debug!(model = %label, ?shape, seconds, "batch run");
        let outputs = outputs.map_err(|e| fail(e.to_string()))?;
        let mut out = Vec::with_capacity(self.spec.outputs.len());
        for name in self.spec.outputs.names() {
            let value = outputs
                .get(name)
                .ok_or_else(|| fail(format!("the graph produced no output {name}")))?;
            let array = value
                .try_extract_array::<f32>()
                .map_err(|e| fail(format!("output {name}: {e}")))?;
            out.push((name.to_string(), array.to_owned()));
        }
        Ok(out)
    }

    /// Runs one zero-filled batch of one (a classifier patch, or a small super-resolution
    /// tile) and checks the outputs are finite with the expected shapes. Used by
    /// `s2edge models verify` and before a hot-swapped model goes live. Returns the run
    /// time.
    ///
    /// # Errors
    /// [`ModelError::Inference`] when the run fails or an output is wrong.
    pub fn smoke_test(&mut self) -> Result<Duration, ModelError> {
        let label = self.spec.label();
        let graph = self.graph_inputs();
        let side = match (&self.spec.task, &self.spec.classify) {
            (Task::Classify, Some(c)) => c.patch as usize,
            // Divisible by 2 and 6, larger than small receptive radii.
            _ => 24,
        };
        let inputs: Vec<(String, Array4<f32>)> = self
            .spec
            .inputs
            .iter()
            .map(|(name, spec)| {
                // A graph with fixed spatial dimensions gets exactly those.
                let fixed = graph
                    .iter()
                    .find(|g| g.name == name)
                    .and_then(|g| g.shape.clone())
                    .unwrap_or_default();
                let dim = |i: usize| {
                    fixed
                        .get(i)
                        .copied()
                        .filter(|d| *d > 0)
                        .map_or(side, |d| d as usize)
                };
                let shape = (1, spec.bands.len(), dim(2), dim(3));
                (name.to_string(), Array4::<f32>::zeros(shape))
            })
            .collect();
        let (h, w) = inputs
            .first()
            .map(|(_, a)| (a.shape()[2], a.shape()[3]))
            .unwrap_or((side, side));
        let start = Instant::now();
        let outputs = self.run(inputs)?;
        let elapsed = start.elapsed();
        let fail = |reason: String| ModelError::Inference {
            model: label.clone(),
            reason: format!("smoke test: {reason}"),
        };
        for (name, array) in &outputs {
            let expected: Vec<usize> = match (&self.spec.classify, self.spec.outputs.get(name)) {
                (Some(c), _) => vec![1, c.classes.len()],
                (None, Some(o)) => vec![1, o.bands.len(), h, w],
                (None, None) => continue,
            };
            if array.shape() != expected.as_slice() {
                return Err(fail(format!(
                    "output {name} has shape {:?}, expected {expected:?}",
                    array.shape()
                )));
            }
            if let Some(bad) = array.iter().find(|v| !v.is_finite()) {
                return Err(fail(format!("output {name} contains {bad}")));
            }
            if self.spec.task == Task::Classify && array.iter().any(|p| !(0.0..=1.0).contains(p)) {
                return Err(fail(format!(
                    "output {name} is not a probability in [0, 1]: the sigmoid must be inside the graph"
                )));
            }
        }
        Ok(elapsed)
    }
}

/// Compares the graph's inputs and outputs with the manifest; the error names the tensor
/// and what differs.
pub(crate) fn check_io(
    spec: &ModelSpec,
    inputs: &[TensorInfo],
    outputs: &[TensorInfo],
) -> Result<(), String> {
    let names = |ts: &[TensorInfo]| {
        ts.iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, input) in spec.inputs.iter() {
        let graph = inputs.iter().find(|t| t.name == name).ok_or_else(|| {
            format!(
                "manifest input {name:?} is not a graph input (graph inputs: {})",
                names(inputs)
            )
        })?;
        let what = format!("input {name:?}");
        let shape = tensor_shape(graph, &what)?;
        check_rank(shape, 4, &what, "[N, C, H, W]")?;
        check_dim(
            shape,
            1,
            input.bands.len(),
            &what,
            "channels (bands listed)",
        )?;
        if let Some(c) = &spec.classify {
            check_dim(shape, 2, c.patch as usize, &what, "rows (classify.patch)")?;
            check_dim(
                shape,
                3,
                c.patch as usize,
                &what,
                "columns (classify.patch)",
            )?;
        }
    }
    for graph in inputs {
        if spec.inputs.get(&graph.name).is_none() {
            return Err(format!(
                "graph input {:?} is not in the manifest (manifest inputs: {})",
                graph.name,
                spec.inputs.names().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for (name, output) in spec.outputs.iter() {
        let graph = outputs.iter().find(|t| t.name == name).ok_or_else(|| {
            format!(
                "manifest output {name:?} is not a graph output (graph outputs: {})",
                names(outputs)
            )
        })?;
        let what = format!("output {name:?}");
        let shape = tensor_shape(graph, &what)?;
        match &spec.classify {
            Some(c) => {
                check_rank(shape, 2, &what, "[N, classes]")?;
                check_dim(shape, 1, c.classes.len(), &what, "classes")?;
            }
            None => {
                check_rank(shape, 4, &what, "[N, bands, H, W]")?;
                check_dim(
                    shape,
                    1,
                    output.bands.len(),
                    &what,
                    "channels (bands listed)",
                )?;
            }
        }
    }
    Ok(())
}

fn tensor_shape<'a>(t: &'a TensorInfo, what: &str) -> Result<&'a [i64], String> {
    if !t.is_f32 {
        return Err(format!(
            "{what}: element type is {}, expected f32 (Float32)",
            t.dtype
        ));
    }
    t.shape
        .as_deref()
        .ok_or_else(|| format!("{what}: not a tensor ({})", t.dtype))
}

fn check_rank(shape: &[i64], rank: usize, what: &str, layout: &str) -> Result<(), String> {
    if shape.len() == rank {
        Ok(())
    } else {
        Err(format!(
            "{what}: rank {} (shape {shape:?}), expected {rank}: {layout}",
            shape.len()
        ))
    }
}

fn check_dim(
    shape: &[i64],
    axis: usize,
    expected: usize,
    what: &str,
    meaning: &str,
) -> Result<(), String> {
    match shape.get(axis) {
        Some(d) if *d < 0 || *d as usize == expected => Ok(()),
        Some(d) => Err(format!(
            "{what}: dimension {axis} is {d} but the manifest implies {expected} {meaning}"
        )),
        None => Err(format!("{what}: has no dimension {axis}")),
    }
}

/// Checks a batch against the manifest before ONNX Runtime sees it, for clearer errors.
fn check_run_inputs(spec: &ModelSpec, inputs: &[(String, Array4<f32>)]) -> Result<(), String> {
    for (name, _) in inputs {
        if spec.inputs.get(name).is_none() {
            return Err(format!("{name:?} is not an input of this model"));
        }
    }
    let mut batch = None;
    for (name, input) in spec.inputs.iter() {
        let mut given = inputs.iter().filter(|(n, _)| n == name);
        let (_, array) = given
            .next()
            .ok_or_else(|| format!("input {name:?} is missing"))?;
        if given.next().is_some() {
            return Err(format!("input {name:?} is given twice"));
        }
        let s = array.shape();
        if s[1] != input.bands.len() {
            return Err(format!(
                "input {name:?} has {} channels, the manifest lists {} bands",
                s[1],
                input.bands.len()
            ));
        }
        match batch {
            None => batch = Some(s[0]),
            Some(n) if n != s[0] => {
                return Err(format!(
                    "input {name:?} has batch size {}, other inputs {n}",
                    s[0]
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The widest feature map of a convolutional graph: the largest output-channel count
/// (first dimension) of its rank-4 initializers, i.e. its convolution weights. Used to
/// size super-resolution batches from a memory budget (`pipeline::budget`). `None` when
/// the bytes are not an ONNX model or it has no rank-4 initializer.
///
/// Reads the protobuf wire format directly: `ModelProto.graph` (field 7),
/// `GraphProto.initializer` (field 5), `TensorProto.dims` (field 1, packed or not).
pub fn graph_feature_width(onnx: &[u8]) -> Option<usize> {
    let graph = pb_fields(onnx)?
        .into_iter()
        .find_map(|(f, v)| (f == 7).then_some(v).and_then(PbValue::bytes))?;
    let mut widest: Option<usize> = None;
    for (f, v) in pb_fields(graph)? {
        let Some(tensor) = (f == 5).then_some(v).and_then(PbValue::bytes) else {
            continue;
        };
        let mut dims = Vec::new();
        for (tf, tv) in pb_fields(tensor)? {
            if tf != 1 {
                continue;
            }
            match tv {
                PbValue::Varint(d) => dims.push(d),
                PbValue::Bytes(packed) => {
                    let mut at = 0;
                    while at < packed.len() {
                        dims.push(pb_varint(packed, &mut at)?);
                    }
                }
                PbValue::Fixed => {}
            }
        }
        if dims.len() == 4 {
            let w = usize::try_from(dims[0]).ok()?;
            widest = Some(widest.map_or(w, |x| x.max(w)));
        }
    }
    widest
}

/// One protobuf field value.
enum PbValue<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> PbValue<'a> {
    fn bytes(self) -> Option<&'a [u8]> {
        match self {
            PbValue::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

fn pb_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The top-level fields of one protobuf message; `None` on malformed input.
fn pb_fields(buf: &[u8]) -> Option<Vec<(u64, PbValue<'_>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let key = pb_varint(buf, &mut at)?;
        let value = match key & 7 {
            0 => PbValue::Varint(pb_varint(buf, &mut at)?),
            1 => {
                at = at.checked_add(8).filter(|e| *e <= buf.len())?;
                PbValue::Fixed
            }
            2 => {
                let len = usize::try_from(pb_varint(buf, &mut at)?).ok()?;
                let end = at.checked_add(len).filter(|e| *e <= buf.len())?;
                let b = &buf[at..end];
                at = end;
                PbValue::Bytes(b)
            }
            5 => {
                at = at.checked_add(4).filter(|e| *e <= buf.len())?;
                PbValue::Fixed
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_width_of_the_shipped_graphs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| std::fs::read(root.join(p)).unwrap();
        assert_eq!(
            graph_feature_width(&read("models/dsen2-2x/1/model.onnx")),
            Some(32)
        );
        assert_eq!(
            graph_feature_width(&read("tests/fixtures/models/tiny-dsen2-6x/1/model.onnx")),
            Some(8)
        );
        assert_eq!(graph_feature_width(b"not a model"), None);
        assert_eq!(graph_feature_width(&[]), None);
    }

    const SPEC: &str = r#"
schema = 1
name = "t"
version = 1
task = "superres"
onnx_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[inputs]
x10 = { bands = ["B02","B03","B04","B08"], grid = "10m" }
x20 = { bands = ["B05","B06","B07","B8A","B11","B12"], grid = "20m", upsample = "bilinear" }
[outputs]
y = { bands = ["B05","B06","B07","B8A","B11","B12"], grid = "10m" }
[normalisation]
mean = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
[superres]
scale = 2
receptive_radius = 4
[training]
status = "untrained"
data = "none"
"#;

    fn t(name: &str, shape: &[i64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype: "Float32".into(),
            is_f32: true,
            shape: Some(shape.to_vec()),
        }
    }

    #[test]
    fn io_check_names_what_differs() {
        let spec = ModelSpec::parse(SPEC).unwrap();
        let ins = [t("x10", &[-1, 4, -1, -1]), t("x20", &[-1, 6, -1, -1])];
        let outs = [t("y", &[-1, 6, -1, -1])];
        assert_eq!(check_io(&spec, &ins, &outs), Ok(()));

        let e = check_io(&spec, &[ins[0].clone(), t("x20", &[-1, 5, -1, -1])], &outs).unwrap_err();
        assert!(
            e.contains("\"x20\"") && e.contains("dimension 1 is 5"),
            "{e}"
        );

        let e = check_io(&spec, &[ins[0].clone(), t("x2O", &[-1, 6, -1, -1])], &outs).unwrap_err();
        assert!(
            e.contains("manifest input \"x20\" is not a graph input"),
            "{e}"
        );

        let e = check_io(
            &spec,
            &[ins[0].clone(), ins[1].clone(), t("extra", &[1])],
            &outs,
        )
        .unwrap_err();
        assert!(e.contains("graph input \"extra\""), "{e}");

        let mut int = ins[0].clone();
        int.is_f32 = false;
        int.dtype = "Int64".into();
        let e = check_io(&spec, &[int, ins[1].clone()], &outs).unwrap_err();
        assert!(e.contains("Int64"), "{e}");

        let e = check_io(&spec, &ins, &[t("y", &[-1, 6, -1])]).unwrap_err();
        assert!(e.contains("output \"y\": rank 3"), "{e}");
    }

    #[test]
    fn run_inputs_are_checked_before_ort() {
        let spec = ModelSpec::parse(SPEC).unwrap();
        let a = |c, n| Array4::<f32>::zeros((n, c, 8, 8));
        let ok = vec![("x10".to_string(), a(4, 2)), ("x20".to_string(), a(6, 2))];
        assert_eq!(check_run_inputs(&spec, &ok), Ok(()));
        let e = check_run_inputs(&spec, &ok[..1]).unwrap_err();
        assert!(e.contains("\"x20\" is missing"), "{e}");
        let e =
            check_run_inputs(&spec, &[ok[0].clone(), ("x20".to_string(), a(6, 3))]).unwrap_err();
        assert!(e.contains("batch size 3"), "{e}");
        let e =
            check_run_inputs(&spec, &[ok[0].clone(), ("x20".to_string(), a(5, 2))]).unwrap_err();
        assert!(e.contains("5 channels"), "{e}");
    }
}
