//! The `superres` and `gan` training loops: DSen2 (L1 loss) or a DSen2-like generator
//! with LeakyReLU plus a discriminator (L1 content loss + adversarial loss), data-parallel
//! over MPI.
//!
//! Invariants: see [`super::dist`] (identical weights on every rank, one gradient
//! all-reduce per network per step, agreed stopping) and [`super::data`] (the global batch
//! is the same whatever the rank count). Rank 0 alone writes checkpoints; every rank logs
//! its progress to stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};

use super::checkpoint::{self, CheckpointState, NetState};
use super::config::{OptimizerKind, TaskKind, TrainConfig};
use super::data::{
    degrade_region_blur, enumerate_samples_aligned, epoch_order, local_positions, make_batch,
    read_scenes, split_regions, Rng, Sample, SrBands, SrBatch, SrScene,
};
use super::dist::{stop_requested, Dist};
use super::dsen2::{Discriminator, Dsen2};
use super::params::{flatten, flatten_grads, unflatten, unflatten_grads};
use super::TrainError;

/// The generator's LeakyReLU slope in the GAN.
pub const GAN_SLOPE: f32 = 0.2;

/// Training data of one rank (every rank holds the same scenes; it draws only its shard).
#[derive(Debug, Clone)]
pub struct SrData {
    /// Band layout.
    pub bands: SrBands,
    /// Degraded training regions.
    pub scenes: Vec<SrScene>,
    /// Patch positions.
    pub samples: Vec<Sample>,
    /// Patches skipped because they touch nodata (corrupt samples).
    pub skipped: usize,
}

/// Reads and degrades the training regions of every configured granule.
///
/// # Errors
/// [`TrainError::Dataset`], [`TrainError::Granule`], [`TrainError::MissingBand`],
/// [`TrainError::TooSmall`].
pub fn load_data(cfg: &TrainConfig) -> Result<SrData, TrainError> {
    let bands = SrBands::for_scale(cfg.scale);
    let mut scenes = Vec::new();
    let (natives, unreadable) = read_scenes(
        &cfg.data,
        cfg.reben_metadata.as_deref(),
        cfg.reben_split,
        &bands.all_bands(),
    )?;
    for native in &natives {
        let path = &native.path;
        let (train, _) = split_regions(path, native.width10, native.height10, &bands, cfg.holdout)?;
        let factors = if cfg.blur_factors.is_empty() {
            vec![1.0]
        } else {
            cfg.blur_factors.clone()
        };
        for factor in factors {
            let (scene, _) = degrade_region_blur(native, train, &bands, factor)?;
            if scene.width < cfg.patch || scene.height < cfg.patch {
                return Err(TrainError::TooSmall {
                    path: path.clone(),
                    reason: format!(
                        "training region is {}×{} px at the degraded grid, smaller than patch {}",
                        scene.width, scene.height, cfg.patch
                    ),
                });
            }
            scenes.push(scene);
        }
    }
    let align = if cfg.backprojection_steps > 0 {
        cfg.scale
    } else {
        1
    };
    let (samples, skipped) = enumerate_samples_aligned(&scenes, cfg.patch, align);
    Ok(SrData {
        bands,
        scenes,
        samples,
        skipped: skipped + unreadable,
    })
}

/// The optimiser of `cfg`.
pub fn make_optim(cfg: &TrainConfig) -> ModuleOptimizer {
    match cfg.optimizer {
        OptimizerKind::Adam => AdamConfig::new().init(),
        OptimizerKind::Sgd => SgdConfig::new().init(),
    }
}

/// A `[n, c, p, p]` tensor from a batch buffer.
fn tensor4(values: &[f32], n: usize, c: usize, p: usize, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values.to_vec(), [n, c, p, p]), device)
}

fn batch_tensors(b: &SrBatch, device: &Device) -> (Vec<Tensor<4>>, Tensor<4>) {
    let inputs = b
        .inputs
        .iter()
        .map(|(c, v)| tensor4(v, b.n, *c, b.patch, device))
        .collect();
    let target = tensor4(&b.target.1, b.n, b.target.0, b.patch, device);
    (inputs, target)
}

/// A scalar tensor's value.
fn scalar(t: Tensor<1>) -> Result<f32, TrainError> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Tensor(format!("{e:?}")))?
        .first()
        .copied()
        .ok_or_else(|| TrainError::Tensor("empty loss".into()))
}

/// `log(1 + exp(x))`, stable: `relu(x) + log(1 + exp(−|x|))`.
fn softplus(x: Tensor<1>) -> Tensor<1> {
    burn::tensor::activation::relu(x.clone()) + x.abs().neg().exp().add_scalar(1.0).log()
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Steps taken in total (including resumed ones).
    pub steps: u64,
    /// Last global mean loss.
    pub loss: f32,
    /// Mean steps per second of this run.
    pub steps_per_s: f64,
    /// Fraction of step time spent in the gradient all-reduce.
    pub allreduce_fraction: f64,
    /// Whether the run stopped early on SIGTERM.
    pub interrupted: bool,
    /// Checkpoint written by rank 0.
    pub checkpoint: Option<PathBuf>,
}

/// Averages a flat gradient buffer over the ranks, with the loss and the stop flag riding
/// along in two extra slots (one collective per network per step). Returns (mean loss,
/// stop).
fn reduce(dist: &Dist, buf: &mut Vec<f32>, loss: f32) -> (f32, bool) {
    let n = buf.len();
    buf.push(loss);
    buf.push(if stop_requested() { 1.0 } else { 0.0 });
    dist.allreduce_sum(buf);
    let size = dist.size as f32;
    for v in buf[..n].iter_mut() {
        *v /= size;
    }
    let stop = buf[n + 1] > 0.0;
    let loss = buf[n] / size;
    buf.truncate(n);
    (loss, stop)
}

/// Identical initial weights: rank 0's are broadcast.
fn broadcast_init<M: Module>(dist: &Dist, module: M) -> Result<M, TrainError> {
    let mut flat = flatten(&module)?;
    dist.broadcast(&mut flat);
    unflatten(module, &flat)
}

/// Trains `superres` or `gan` per `cfg`. `resume` continues from the checkpoint in
/// `cfg.checkpoint_dir`.
///
/// # Errors
/// Data errors (reported collectively, see [`Dist::agree`]), [`TrainError::EmptyShard`],
/// checkpoint errors, [`TrainError::Diverged`].
pub fn train(cfg: &TrainConfig, dist: &Dist, resume: bool) -> Result<TrainOutcome, TrainError> {
    let device = Device::flex().autodiff();
    device.seed(cfg.seed);
    let data = dist.agree(load_data(cfg))?;
    let local_batch = cfg.local_batch(dist.size)?;
    let n = data.samples.len();
    if n < cfg.batch {
        return Err(TrainError::EmptyShard {
            samples: n,
            ranks: dist.size,
            local_batch,
        });
    }
    if dist.is_root() && data.skipped > 0 {
        super::dist::log_line(&format!(
            "s2edge-train: skipped {} patches that touch nodata",
            data.skipped
        ));
    }
    let channels = data.bands.channels();
    let gan = cfg.task == TaskKind::Gan;
    let slope = if gan {
        cfg.generator_slope.unwrap_or(GAN_SLOPE)
    } else {
        0.0
    };
    let mut model = broadcast_init(
        dist,
        Dsen2::new(&channels, cfg.blocks, cfg.features, slope, &device)
            .with_backprojection(cfg.scale, cfg.backprojection_steps),
    )?;
    let disc_in = channels.first().copied().unwrap_or(0) + channels.last().copied().unwrap_or(0);
    let mut disc = if gan {
        Some(broadcast_init(
            dist,
            Discriminator::new(disc_in, cfg.features, &device),
        )?)
    } else {
        None
    };
    if let (Some(from), false) = (cfg.init_from.as_ref(), resume) {
        let loaded = (|| -> Result<Vec<f32>, TrainError> {
            if from.join("model.onnx").is_file() {
                return weights_from_onnx(&from.join("model.onnx"), cfg.blocks);
            }
            let st = checkpoint::load_state(from)?;
            if st.scale != cfg.scale || st.blocks != cfg.blocks || st.features != cfg.features {
                return Err(TrainError::Checkpoint {
                    path: from.clone(),
                    reason: format!(
                        "init_from is scale {} blocks {} features {}, the configuration asks for {} {} {}",
                        st.scale, st.blocks, st.features, cfg.scale, cfg.blocks, cfg.features
                    ),
                });
            }
            let file = if st.task == "gan" {
                "generator"
            } else {
                "model"
            };
            checkpoint::load_weights(from, file)
        })();
        let w = dist.agree(loaded)?;
        model = unflatten(model, &w)?;
        if dist.is_root() {
            super::dist::log_line(&format!(
                "s2edge-train: network initialised from {}",
                from.display()
            ));
        }
    }
    let mut optim = make_optim(cfg);
    let mut optim_d = make_optim(cfg);
    let gname = if gan { "generator" } else { "model" };
    let mut start = 0u64;
    let ckdir = checkpoint::latest(&cfg.checkpoint_dir);
    if resume {
        let loaded = (|| -> Result<_, TrainError> {
            let st = checkpoint::load_state(&ckdir)?;
            if st.scale != cfg.scale
                || st.blocks != cfg.blocks
                || st.features != cfg.features
                || st.task != task_name(cfg.task)
            {
                return Err(TrainError::Checkpoint {
                    path: ckdir.clone(),
                    reason: format!(
                        "checkpoint is {} scale {} blocks {} features {}, the configuration asks for {} {} {} {}",
                        st.task, st.scale, st.blocks, st.features, task_name(cfg.task), cfg.scale, cfg.blocks, cfg.features
                    ),
                });
            }
            let w = checkpoint::load_weights(&ckdir, gname)?;
            let o = checkpoint::load_optim(&ckdir, gname, make_optim(cfg))?;
            let dw = if gan {
                Some((
                    checkpoint::load_weights(&ckdir, "discriminator")?,
                    checkpoint::load_optim(&ckdir, "discriminator", make_optim(cfg))?,
                ))
            } else {
                None
            };
            Ok((st.step, w, o, dw))
        })();
        let (step, w, o, dw) = dist.agree(loaded)?;
        model = unflatten(model, &w)?;
        optim = o;
        if let (Some(d), Some((w, o))) = (disc.take(), dw) {
            disc = Some(unflatten(d, &w)?);
            optim_d = o;
        }
        start = step;
        if dist.is_root() {
            super::dist::log_line(&format!(
                "s2edge-train: resumed from {} at step {step}",
                ckdir.display()
            ));
        }
    }

    let steps_per_epoch = (n / cfg.batch).max(1);
    let mut last_loss = f32::NAN;
    let mut reduce_time = 0f64;
    let t_run = Instant::now();
    let mut window = Instant::now();
    let mut interrupted = false;
    let mut last_ckpt = None;
    let mut step = start;
    let mut order_epoch = u64::MAX;
    let mut order = Vec::new();
    while step < cfg.steps {
        let epoch = step / steps_per_epoch as u64;
        if epoch != order_epoch {
            order = epoch_order(n, cfg.seed, epoch, cfg.shuffle);
            order_epoch = epoch;
        }
        let in_epoch = (step % steps_per_epoch as u64) as usize;
        let pos = local_positions(in_epoch, dist.rank, dist.size, local_batch);
        let picked: Vec<Sample> = pos.clone().map(|p| data.samples[order[p]]).collect();
        let codes: Vec<u8> = pos
            .map(|p| {
                if cfg.augment {
                    Rng::new(
                        cfg.seed ^ (epoch << 32) ^ (p as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
                    )
                    .below(8) as u8
                } else {
                    0
                }
            })
            .collect();
        let batch = make_batch(&data.scenes, &picked, &codes, cfg.patch);
        let (inputs, target) = batch_tensors(&batch, &device);
        let guide = inputs.first().cloned();

        if let (Some(d), Some(guide)) = (disc.as_ref(), guide.clone()) {
            // Discriminator step: real = target, fake = detached generator output.
            let fake = model.forward(inputs.clone()).detach();
            let real_logits = d.forward(Tensor::cat(vec![guide.clone(), target.clone()], 1));
            let fake_logits = d.forward(Tensor::cat(vec![guide, fake], 1));
            let loss_d = (softplus(real_logits.neg()) + softplus(fake_logits)).mean();
            let lv = scalar(loss_d.clone())?;
            let gp = GradientsParams::from_grads(loss_d.backward(), d);
            let mut buf = flatten_grads(d, &gp)?;
            let t = Instant::now();
            let _ = reduce(dist, &mut buf, lv);
            reduce_time += t.elapsed().as_secs_f64();
            let gp = unflatten_grads(d, gp, &buf)?;
            if let Some(d) = disc.take() {
                disc = Some(optim_d.step(cfg.lr_at(step), d, gp));
            }
        }

        let pred = model.forward(inputs);
        let mut loss = (pred.clone() - target).abs().mean();
        if let (Some(d), Some(guide)) = (disc.as_ref(), guide) {
            let logits = d.forward(Tensor::cat(vec![guide, pred], 1));
            loss = loss
                + softplus(logits.neg())
                    .mean()
                    .mul_scalar(cfg.adversarial_weight);
        }
        let lv = scalar(loss.clone())?;
        // Only the generator's gradients: the discriminator's are discarded here.
        let gp = GradientsParams::from_grads(loss.backward(), &model);
        let mut buf = flatten_grads(&model, &gp)?;
        let t = Instant::now();
        let (global_loss, stop) = reduce(dist, &mut buf, lv);
        reduce_time += t.elapsed().as_secs_f64();
        let gp = unflatten_grads(&model, gp, &buf)?;
        model = optim.step(cfg.lr_at(step), model, gp);
        step += 1;
        last_loss = global_loss;
        if !global_loss.is_finite() {
            return Err(TrainError::Diverged {
                step,
                loss: global_loss,
            });
        }
        if step % cfg.log_every.max(1) == 0 || step == cfg.steps || stop {
            let dt = window.elapsed().as_secs_f64();
            let k = cfg.log_every.max(1) as f64;
            super::dist::log_line(&format!(
                "s2edge-train[rank {}/{}] step {step}/{} loss {global_loss:.5} ({:.2} steps/s, allreduce {:.1}% of step time)",
                dist.rank,
                dist.size,
                cfg.steps,
                k / dt.max(1e-9),
                100.0 * reduce_time / t_run.elapsed().as_secs_f64().max(1e-9)
            ));
            window = Instant::now();
        }
        let interval = cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0;
        if stop || interval {
            if dist.is_root() {
                last_ckpt = Some(write_checkpoint(
                    cfg,
                    dist,
                    step,
                    last_loss,
                    &model,
                    &optim,
                    disc.as_ref(),
                    &optim_d,
                )?);
            }
            dist.barrier();
        }
        if stop {
            interrupted = true;
            if dist.is_root() {
                super::dist::log_line(&format!(
                    "s2edge-train: stop requested, checkpointed at step {step}"
                ));
            }
            break;
        }
    }
    if !interrupted && dist.is_root() {
        last_ckpt = Some(write_checkpoint(
            cfg,
            dist,
            step,
            last_loss,
            &model,
            &optim,
            disc.as_ref(),
            &optim_d,
        )?);
    }
    if cfg.dump_weights {
        dump_weights(&cfg.checkpoint_dir, dist.rank, &flatten(&model)?)?;
    }
    dist.barrier();
    let secs = t_run.elapsed().as_secs_f64();
    Ok(TrainOutcome {
        steps: step,
        loss: last_loss,
        steps_per_s: (step - start) as f64 / secs.max(1e-9),
        allreduce_fraction: reduce_time / secs.max(1e-9),
        interrupted,
        checkpoint: last_ckpt,
    })
}

/// The flat weights (in [`super::params::flatten`] order) of a DSen2 exported by
/// `s2edge-train export`, read from its named initialisers (`head.weight`, `head.bias`,
/// `blocks.<i>.conv<j>.weight|bias`, `tail.weight`, `tail.bias`): a shipped model version
/// can seed a new one (`init_from = "models/dsen2-2x/2"`). The caller's `unflatten` checks
/// the sizes against the configured architecture.
///
/// # Errors
/// [`TrainError::Checkpoint`] when the file does not parse or lacks an initialiser.
pub fn weights_from_onnx(path: &Path, blocks: usize) -> Result<Vec<f32>, TrainError> {
    use onnx_ir::{Message, ModelProto};
    let bad = |reason: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let proto = ModelProto::parse_from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
    let graph = proto.graph.as_ref().ok_or_else(|| bad("no graph".into()))?;
    let mut names = vec!["head.weight".to_string(), "head.bias".to_string()];
    for b in 0..blocks {
        for c in ["conv1", "conv2"] {
            names.push(format!("blocks.{b}.{c}.weight"));
            names.push(format!("blocks.{b}.{c}.bias"));
        }
    }
    names.push("tail.weight".into());
    names.push("tail.bias".into());
    let mut out = Vec::new();
    for n in &names {
        let t = graph
            .initializer
            .iter()
            .find(|t| &t.name == n)
            .ok_or_else(|| bad(format!("no initialiser {n}")))?;
        if !t.float_data.is_empty() {
            out.extend_from_slice(&t.float_data);
        } else {
            out.extend(
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
    }
    Ok(out)
}

/// The task's name in checkpoints.
pub fn task_name(t: TaskKind) -> String {
    match t {
        TaskKind::Superres => "superres",
        TaskKind::Gan => "gan",
        TaskKind::Classify => "classify",
    }
    .to_string()
}

#[allow(clippy::too_many_arguments)]
fn write_checkpoint(
    cfg: &TrainConfig,
    dist: &Dist,
    step: u64,
    loss: f32,
    model: &Dsen2,
    optim: &ModuleOptimizer,
    disc: Option<&Discriminator>,
    optim_d: &ModuleOptimizer,
) -> Result<PathBuf, TrainError> {
    let state = CheckpointState {
        step,
        task: task_name(cfg.task),
        name: cfg.name.clone(),
        scale: cfg.scale,
        blocks: cfg.blocks,
        features: cfg.features,
        ranks: dist.size,
        batch: cfg.batch,
        loss,
        data: cfg.data.iter().map(|p| p.display().to_string()).collect(),
        bands: Vec::new(),
    };
    let w = flatten(model)?;
    let dw = match disc {
        Some(d) => Some(flatten(d)?),
        None => None,
    };
    let mut nets = vec![NetState {
        name: if disc.is_some() { "generator" } else { "model" },
        weights: &w,
        optim,
    }];
    if let Some(dw) = dw.as_deref() {
        nets.push(NetState {
            name: "discriminator",
            weights: dw,
            optim: optim_d,
        });
    }
    checkpoint::save_with(
        &cfg.checkpoint_dir,
        &state,
        &nets,
        Some(&checkpoint::SrArch {
            backprojection_steps: cfg.backprojection_steps,
            generator_slope: (cfg.task == TaskKind::Gan)
                .then(|| cfg.generator_slope.unwrap_or(GAN_SLOPE)),
        }),
    )
}

/// Writes this rank's flat weights to `<dir>/weights.rank<r>.f32` (tests compare ranks).
///
/// # Errors
/// [`TrainError::Io`].
pub fn dump_weights(dir: &Path, rank: usize, w: &[f32]) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let p = dir.join(format!("weights.rank{rank}.f32"));
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&p, bytes).map_err(|e| TrainError::io(&p, e))
}

/// Rebuilds the trained network of checkpoint `ckpt` on `device` (no autodiff).
///
/// # Errors
/// [`TrainError::Checkpoint`] when the checkpoint is not a super-resolution one or its
/// weights do not fit.
pub fn load_model(ckpt: &Path, device: &Device) -> Result<(CheckpointState, Dsen2), TrainError> {
    let st = checkpoint::load_state(ckpt)?;
    let arch = checkpoint::load_sr_arch(ckpt)?;
    let (slope, file) = match st.task.as_str() {
        "superres" => (0.0, "model"),
        "gan" => (arch.generator_slope.unwrap_or(GAN_SLOPE), "generator"),
        other => {
            return Err(TrainError::Checkpoint {
                path: ckpt.to_path_buf(),
                reason: format!("task {other} is not a super-resolution checkpoint"),
            })
        }
    };
    let bands = SrBands::for_scale(st.scale);
    let model = Dsen2::new(&bands.channels(), st.blocks, st.features, slope, device)
        .with_backprojection(st.scale, arch.backprojection_steps);
    let w = checkpoint::load_weights(ckpt, file)?;
    let model = unflatten(model, &w).map_err(|e| TrainError::Checkpoint {
        path: ckpt.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((st, model))
}
