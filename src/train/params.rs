//! Module parameters and gradients as one flat `f32` buffer, in the module's visiting
//! order: what MPI broadcasts, all-reduces and what checkpoints store.
//!
//! Invariants: the order is the derive(Module) field order, identical on every rank for
//! the same architecture; [`unflatten`] checks the total length and each tensor's element
//! count, so a buffer of another architecture is an error, never a silent misload;
//! parameters get deterministic ids (their index) so optimiser state saved by one run
//! matches the parameters of the next.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use super::TrainError;

/// Base of the deterministic parameter ids (far from burn's generated ids in practice
/// is irrelevant: ids only need to be unique within one module).
const ID_BASE: u64 = 1_000_000;

struct Collect {
    out: Vec<f32>,
    error: Option<String>,
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        match param.val().into_data().try_into_vec::<f32>() {
            Ok(v) => self.out.extend_from_slice(&v),
            Err(e) => {
                self.error.get_or_insert(format!("{e:?}"));
            }
        }
    }
}

/// All float parameters of `module`, concatenated.
///
/// # Errors
/// [`TrainError::Tensor`] when a parameter is not `f32`.
pub fn flatten<M: Module>(module: &M) -> Result<Vec<f32>, TrainError> {
    let mut c = Collect {
        out: Vec::new(),
        error: None,
    };
    module.visit(&mut c);
    match c.error {
        Some(e) => Err(TrainError::Tensor(e)),
        None => Ok(c.out),
    }
}

/// Number of float parameters of `module`.
pub fn count<M: Module>(module: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 += param.val().shape().num_elements();
        }
    }
    let mut c = Count(0);
    module.visit(&mut c);
    c.0
}

struct Load<'a> {
    src: &'a [f32],
    pos: usize,
    index: u64,
    error: Option<String>,
}

impl ModuleMapper for Load<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let id = ParamId::from(ID_BASE + self.index);
        self.index += 1;
        if self.error.is_some() || self.pos + n > self.src.len() {
            self.error
                .get_or_insert(format!("buffer too short at parameter {}", self.index));
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let data = TensorData::new(self.src[self.pos..self.pos + n].to_vec(), shape);
        self.pos += n;
        let device = tensor.device();
        let grad = tensor.is_require_grad();
        let mut fresh = Tensor::<D>::from_data(data, &device);
        if grad {
            fresh = fresh.require_grad();
        }
        Param::from_mapped_value(id, fresh, mapper)
    }
}

/// `module` with its float parameters replaced by `src` (as produced by [`flatten`]) and
/// deterministic parameter ids.
///
/// # Errors
/// [`TrainError::Tensor`] when `src` does not have exactly the module's parameter count.
pub fn unflatten<M: Module>(module: M, src: &[f32]) -> Result<M, TrainError> {
    let mut l = Load {
        src,
        pos: 0,
        index: 0,
        error: None,
    };
    let module = module.map(&mut l);
    if let Some(e) = l.error {
        return Err(TrainError::Tensor(e));
    }
    if l.pos != src.len() {
        return Err(TrainError::Tensor(format!(
            "buffer has {} values, the module {}",
            src.len(),
            l.pos
        )));
    }
    Ok(module)
}

struct GradCollect<'a> {
    grads: &'a GradientsParams,
    out: Vec<f32>,
    error: Option<String>,
}

impl ModuleVisitor for GradCollect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        match self.grads.get::<D>(param.id) {
            Some(g) => match g.into_data().try_into_vec::<f32>() {
                Ok(v) => self.out.extend_from_slice(&v),
                Err(e) => {
                    self.error.get_or_insert(format!("{e:?}"));
                }
            },
            // A parameter the loss does not reach has a zero gradient; keep its slot so
            // every rank's buffer has the same layout.
            None => self
                .out
                .extend(std::iter::repeat_n(0.0, param.val().shape().num_elements())),
        }
    }
}

/// The gradients of `module`'s parameters in [`flatten`] order (zeros where absent).
///
/// # Errors
/// [`TrainError::Tensor`] when a gradient is not `f32`.
pub fn flatten_grads<M: Module>(
    module: &M,
    grads: &GradientsParams,
) -> Result<Vec<f32>, TrainError> {
    let mut c = GradCollect {
        grads,
        out: Vec::new(),
        error: None,
    };
    module.visit(&mut c);
    match c.error {
        Some(e) => Err(TrainError::Tensor(e)),
        None => Ok(c.out),
    }
}

struct GradWrite<'a> {
    grads: GradientsParams,
    src: &'a [f32],
    pos: usize,
}

impl ModuleVisitor for GradWrite<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let shape = value.shape();
        let n = shape.num_elements();
        let end = (self.pos + n).min(self.src.len());
        let slice = &self.src[self.pos..end];
        self.pos += n;
        if slice.len() != n {
            return;
        }
        let device = match self.grads.get::<D>(param.id) {
            Some(g) => g.device(),
            // No gradient here and none anywhere (a BatchNorm running statistic, or a
            // parameter the loss never reaches): register nothing, so the optimiser
            // leaves it alone.
            None if slice.iter().all(|v| *v == 0.0) => return,
            None => value.device().inner(),
        };
        let t = Tensor::<D>::from_data(TensorData::new(slice.to_vec(), shape), &device);
        self.grads.register(param.id, t);
    }
}

/// Gradients for `module` holding the values of `src` (a [`flatten_grads`] buffer).
///
/// # Errors
/// [`TrainError::Tensor`] on a length mismatch.
pub fn unflatten_grads<M: Module>(
    module: &M,
    grads: GradientsParams,
    src: &[f32],
) -> Result<GradientsParams, TrainError> {
    let mut w = GradWrite { grads, src, pos: 0 };
    module.visit(&mut w);
    if w.pos != src.len() {
        return Err(TrainError::Tensor(format!(
            "gradient buffer has {} values, the module {}",
            src.len(),
            w.pos
        )));
    }
    Ok(w.grads)
}

/// Which entries of the [`flatten`] buffer are buffers rather than trainable parameters
/// (BatchNorm running statistics: they never require a gradient).
pub fn buffer_mask<M: Module>(module: &M) -> Vec<bool> {
    struct Mask(Vec<bool>);
    impl ModuleVisitor for Mask {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let v = param.val();
            let is_buffer = !v.is_require_grad();
            self.0
                .extend(std::iter::repeat_n(is_buffer, v.shape().num_elements()));
        }
    }
    let mut m = Mask(Vec::new());
    module.visit(&mut m);
    m.0
}
