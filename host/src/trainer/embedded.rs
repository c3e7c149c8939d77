//! The `embedded` backend: a small byte-level transformer language model
//! trained with [candle](https://github.com/huggingface/candle) on the
//! corpus compiled into the binary ([`CORPUS`], see `corpus/README.md`),
//! for at most the job's budget, scored by the host in validation bits per
//! byte — autoresearch's loop in miniature.
//!
//! The one recipe is `char-lm`. Its config (a JSON object; every field
//! optional) chooses the model and the optimiser; the host chooses the data,
//! the splits and the measurement, so a job cannot report a score it did
//! not earn:
//!
//! | field | default | range | meaning |
//! |---|---|---|---|
//! | `d_model` | 64 | 8–512, a multiple of `heads` | width |
//! | `layers` | 2 | 1–8 | transformer blocks |
//! | `heads` | 4 | 1–16 | attention heads |
//! | `context` | 64 | 4–256 | bytes of context |
//! | `batch` | 16 | 1–256 | sequences per step |
//! | `lr` | 0.003 | (0, 1] | AdamW learning rate |
//! | `weight_decay` | 0.0 | [0, 1] | AdamW weight decay |
//! | `steps` | none | 1–1 000 000 | stop after this many steps (else at the budget) |
//! | `seed` | 0 | any u64 | initial weights and batch order |
//!
//! Training stops at `steps` or when [`TRAIN_SHARE`] of the budget is
//! used, whichever is first; the rest of the budget is for the evaluation:
//! the mean cross-entropy of the model over up to [`EVAL_BYTES`] bytes of the
//! split, in non-overlapping windows of `context` bytes, divided by ln 2.
//! With a seed and `steps` set, a job is deterministic on one machine.
//! Reported metrics: `val_bpb` (or `heldout_bpb` for the held-out split),
//! `train_loss` (nats, the last step's), `steps`, `tokens`, `params`,
//! `first_step_ms` (model setup and the first step, from the job's start).
//!
//! Device: the CPU; with the `cuda` cargo feature, the first CUDA GPU when
//! there is one (not exercised in this project's CI: no GPU).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, Optimizer, VarBuilder, VarMap};
use serde::Deserialize;

use super::{Backend, BackendKind, EvalSplit, JobContext, JobSpec, RunOutcome};
use crate::sim::rng::Rng;

/// The training text (the project's docs; see `corpus/README.md`).
pub const CORPUS: &str = include_str!("corpus/vivarium-docs.txt");
/// The one recipe this backend knows.
pub const RECIPE: &str = "char-lm";
/// Share of the budget spent training; the rest is kept for evaluation.
pub const TRAIN_SHARE: f64 = 0.8;
/// Most bytes of a split scored.
pub const EVAL_BYTES: usize = 8192;
const VOCAB: usize = 256;

/// The three slices of [`CORPUS`]: train (80 %), validation (10 %), held-out (10 %).
pub fn splits() -> (&'static [u8], &'static [u8], &'static [u8]) {
    let b = CORPUS.as_bytes();
    let a = b.len() * 8 / 10;
    let c = b.len() * 9 / 10;
    (&b[..a], &b[a..c], &b[c..])
}

/// The `char-lm` recipe's configuration (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmConfig {
    /// Width.
    pub d_model: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Bytes of context.
    pub context: usize,
    /// Sequences per step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Stop after this many steps.
    pub steps: Option<u64>,
    /// Seed of the weights and the batch order.
    pub seed: u64,
}

impl Default for LmConfig {
    fn default() -> Self {
        Self {
            d_model: 64,
            layers: 2,
            heads: 4,
            context: 64,
            batch: 16,
            lr: 3e-3,
            weight_decay: 0.0,
            steps: None,
            seed: 0,
        }
    }
}

impl LmConfig {
    /// Parse and range-check a config object; the error says which field
    /// is wrong and what it may be.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let c: LmConfig = serde_json::from_value(v.clone()).map_err(|e| {
            format!(
                "config for {RECIPE}: {e}; fields are d_model, layers, heads, context, batch, lr, \
                 weight_decay, steps, seed"
            )
        })?;
        let range = |name: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("config for {RECIPE}: {name} = {v} is out of range; use {lo} to {hi}"))
            }
        };
        range("d_model", c.d_model, 8, 512)?;
        range("layers", c.layers, 1, 8)?;
        range("heads", c.heads, 1, 16)?;
        range("context", c.context, 4, 256)?;
        range("batch", c.batch, 1, 256)?;
        if c.d_model % c.heads != 0 {
            return Err(format!(
                "config for {RECIPE}: d_model = {} is not a multiple of heads = {}",
                c.d_model, c.heads
            ));
        }
        if !(c.lr > 0.0 && c.lr <= 1.0) {
            return Err(format!("config for {RECIPE}: lr = {} is out of range; use a number in (0, 1]", c.lr));
        }
        if !(0.0..=1.0).contains(&c.weight_decay) {
            return Err(format!("config for {RECIPE}: weight_decay = {} is out of range; use 0 to 1", c.weight_decay));
        }
        if let Some(s) = c.steps {
            if !(1..=1_000_000).contains(&s) {
                return Err(format!("config for {RECIPE}: steps = {s} is out of range; use 1 to 1000000"));
            }
        }
        Ok(c)
    }
}

/// The embedded backend.
#[derive(Debug, Default)]
pub struct Embedded;

impl Embedded {
    /// The backend.
    pub fn new() -> Self {
        Self
    }
}

impl Backend for Embedded {
    fn kind(&self) -> BackendKind {
        BackendKind::Embedded
    }

    fn check(&self, spec: &JobSpec) -> Result<(), String> {
        if spec.recipe != RECIPE {
            return Err(format!(
                "unknown recipe {:?}: the embedded trainer knows only {RECIPE:?} (a byte-level language model)",
                spec.recipe
            ));
        }
        if spec.script.is_some() {
            return Err(format!(
                "the embedded trainer runs no scripts; send the {RECIPE:?} config only (scripts need the \
                 operator's `command` or `ray` backend)"
            ));
        }
        LmConfig::from_json(&spec.config).map(|_| ())
    }

    fn run(&self, spec: &JobSpec, ctx: &JobContext) -> RunOutcome {
        let config = match LmConfig::from_json(&spec.config) {
            Ok(c) => c,
            Err(e) => return RunOutcome { error: Some(e), ..RunOutcome::default() },
        };
        let budget = ctx.deadline.saturating_duration_since(Instant::now());
        match train(&config, spec.eval_split, budget, &|| ctx.stop_reason().is_some(), &|k, v| ctx.report(k, v)) {
            Ok(r) => RunOutcome { error: None, metrics: r.metrics, log_tail: r.log, stopped: r.stopped },
            Err(e) => RunOutcome { error: Some(format!("training failed: {e}")), ..RunOutcome::default() },
        }
    }
}

/// What one training run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Metrics by name.
    pub metrics: BTreeMap<String, f64>,
    /// A short log.
    pub log: String,
    /// Whether `stop()` ended it (the evaluation is then skipped or cut).
    pub stopped: bool,
}

/// The device jobs run on: the first CUDA GPU with the `cuda` feature when
/// one is there, else the CPU.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    {
        if let Ok(d) = Device::cuda_if_available(0) {
            return d;
        }
    }
    Device::Cpu
}

/// Draws for weights and batches from the host's seeded generator
/// (splitmix64): candle cannot seed its CPU generator.
trait Draws {
    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32;
    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize;
}

impl Draws for Rng {
    fn symmetric(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn new(d: usize, heads: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            ln1: candle_nn::layer_norm(d, 1e-5, vb.pp("ln1"))?,
            qkv: candle_nn::linear(d, 3 * d, vb.pp("qkv"))?,
            proj: candle_nn::linear(d, d, vb.pp("proj"))?,
            ln2: candle_nn::layer_norm(d, 1e-5, vb.pp("ln2"))?,
            fc1: candle_nn::linear(d, 4 * d, vb.pp("fc1"))?,
            fc2: candle_nn::linear(4 * d, d, vb.pp("fc2"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?.reshape((b, t, 3, self.heads, hd))?;
        let qkv = qkv.permute((2, 0, 3, 1, 4))?; // 3, b, heads, t, hd
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let att = candle_nn::ops::softmax_last_dim(&att.broadcast_add(mask)?)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let x = (x + self.proj.forward(&y)?)?;
        let h = self.fc2.forward(&self.fc1.forward(&self.ln2.forward(&x)?)?.gelu()?)?;
        x + h
    }
}

struct Model {
    tok: Embedding,
    pos: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
}

impl Model {
    fn new(c: &LmConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let blocks = (0..c.layers)
            .map(|i| Block::new(c.d_model, c.heads, vb.pp(format!("block{i}"))))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            tok: candle_nn::embedding(VOCAB, c.d_model, vb.pp("tok"))?,
            pos: candle_nn::embedding(c.context, c.d_model, vb.pp("pos"))?,
            blocks,
            ln_f: candle_nn::layer_norm(c.d_model, 1e-5, vb.pp("ln_f"))?,
            head: candle_nn::linear(c.d_model, VOCAB, vb.pp("head"))?,
        })
    }

    /// Logits `(b, t, 256)` for input bytes `(b, t)`.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (_, t) = x.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, x.device())?;
        let mut h = self.tok.forward(x)?.broadcast_add(&self.pos.forward(&positions)?)?;
        for b in &self.blocks {
            h = b.forward(&h, mask)?;
        }
        self.head.forward(&self.ln_f.forward(&h)?)
    }
}

/// Overwrite candle's (unseedable) initial weights with seeded ones:
/// biases 0, layer-norm gains 1, embeddings ±0.02·√3, linear weights
/// uniform in ±1/√fan_in.
fn init_weights(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let data = varmap.data().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = Rng::new(seed ^ 0x5eed_0f_7e57);
    for name in names {
        let var = &data[name];
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let values: Vec<f32> = if name.ends_with("bias") {
            vec![0.0; n]
        } else if name.contains("ln") {
            vec![1.0; n]
        } else if name.starts_with("tok") || name.starts_with("pos") {
            (0..n).map(|_| rng.symmetric() * 0.02 * 3f32.sqrt()).collect()
        } else {
            let fan_in = *shape.dims().last().unwrap_or(&1) as f32;
            (0..n).map(|_| rng.symmetric() / fan_in.sqrt()).collect()
        };
        var.set(&Tensor::from_vec(values, shape, var.device())?)?;
    }
    Ok(())
}

fn causal_mask(t: usize, dev: &Device) -> candle_core::Result<Tensor> {
    // A large negative number, not -inf: softmax of a fully masked row never
    // happens (the diagonal is kept), and -inf invites NaNs in gradients.
    let m: Vec<f32> = (0..t).flat_map(|i| (0..t).map(move |j| if j > i { -1e9 } else { 0.0 })).collect();
    Tensor::from_vec(m, (t, t), dev)
}

fn batch(data: &[u8], offsets: &[usize], t: usize, dev: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let mut xs = Vec::with_capacity(offsets.len() * t);
    let mut ys = Vec::with_capacity(offsets.len() * t);
    for &o in offsets {
        xs.extend(data[o..o + t].iter().map(|&b| b as u32));
        ys.extend(data[o + 1..o + t + 1].iter().map(|&b| b as u32));
    }
    Ok((Tensor::from_vec(xs, (offsets.len(), t), dev)?, Tensor::from_vec(ys, (offsets.len(), t), dev)?))
}

fn loss(model: &Model, x: &Tensor, y: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let logits = model.forward(x, mask)?;
    let (b, t, v) = logits.dims3()?;
    candle_nn::loss::cross_entropy(&logits.reshape((b * t, v))?, &y.reshape(b * t)?)
}

/// Train `config` for at most `budget` (minus the evaluation's share),
/// stopping early when `stop()` says so, then score it on `split`.
/// `report` receives progress (`steps`, `train_loss`) while training.
pub fn train(
    config: &LmConfig,
    split: EvalSplit,
    budget: Duration,
    stop: &dyn Fn() -> bool,
    report: &dyn Fn(&str, f64),
) -> candle_core::Result<TrainReport> {
    let started = Instant::now();
    let train_until = started + budget.mul_f64(TRAIN_SHARE);
    let dev = device();
    let (train_data, val, held) = splits();
    let eval_data = match split {
        EvalSplit::Validation => val,
        EvalSplit::HeldOut => held,
    };
    let t = config.context;
    let varmap = VarMap::new();
    let model = Model::new(config, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    init_weights(&varmap, config.seed)?;
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW { lr: config.lr, weight_decay: config.weight_decay, ..Default::default() },
    )?;
    let mask = causal_mask(t, &dev)?;
    let mut rng = Rng::new(config.seed);
    let mut steps = 0u64;
    let mut last_loss;
    let mut log = String::new();
    let mut first_step_ms = f64::NAN;
    let mut stopped = false;
    loop {
        let offsets: Vec<usize> = (0..config.batch).map(|_| rng.below(train_data.len() - t - 1)).collect();
        let (x, y) = batch(train_data, &offsets, t, &dev)?;
        let l = loss(&model, &x, &y, &mask)?;
        opt.backward_step(&l)?;
        last_loss = l.to_scalar::<f32>()? as f64;
        steps += 1;
        if steps == 1 {
            first_step_ms = started.elapsed().as_secs_f64() * 1e3;
            log.push_str(&format!("first step after {first_step_ms:.1} ms\n"));
        }
        report("steps", steps as f64);
        report("train_loss", last_loss);
        if steps.is_power_of_two() {
            log.push_str(&format!("step {steps}: train loss {last_loss:.4}\n"));
        }
        if !last_loss.is_finite() {
            log.push_str(&format!("step {steps}: the loss is not finite; stopping (lower lr)\n"));
            break;
        }
        if stop() {
            stopped = true;
            break;
        }
        if config.steps.is_some_and(|s| steps >= s) || Instant::now() >= train_until {
            break;
        }
    }

    // Evaluation: non-overlapping windows of the split, in batches.
    let windows: Vec<usize> = (0..).map(|i| i * t).take_while(|&o| o + t < eval_data.len() && o < EVAL_BYTES).collect();
    let mut total = 0.0f64;
    let mut count = 0usize;
    for chunk in windows.chunks(32) {
        if stop() {
            stopped = true;
            break;
        }
        let (x, y) = batch(eval_data, chunk, t, &dev)?;
        let l = loss(&model, &x, &y, &mask)?.to_scalar::<f32>()? as f64;
        total += l * (chunk.len() * t) as f64;
        count += chunk.len() * t;
    }
    let mut metrics = BTreeMap::from([
        ("steps".to_string(), steps as f64),
        ("tokens".to_string(), (steps as usize * config.batch * t) as f64),
        ("params".to_string(), params as f64),
        ("train_loss".to_string(), last_loss),
        ("first_step_ms".to_string(), first_step_ms),
    ]);
    if count > 0 && count == windows.len() * t {
        let bpb = total / count as f64 / std::f64::consts::LN_2;
        // A diverged model has no score: bpb is left out and the job fails
        // to be scored (graders treat a missing bpb as the worst).
        if bpb.is_finite() {
            let name = match split {
                EvalSplit::Validation => "val_bpb",
                EvalSplit::HeldOut => "heldout_bpb",
            };
            metrics.insert(name.to_string(), bpb);
            log.push_str(&format!("{name} {bpb:.4} over {count} bytes after {steps} steps\n"));
        }
    } else {
        log.push_str("evaluation cut off by the budget\n");
    }
    metrics.retain(|_, v| v.is_finite());
    Ok(TrainReport { metrics, log, stopped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: serde_json::Value) -> Result<LmConfig, String> {
        LmConfig::from_json(&v)
    }

    #[test]
    fn config_ranges_are_checked_with_the_allowed_values() {
        assert_eq!(cfg(serde_json::json!({})).unwrap(), LmConfig::default());
        assert_eq!(
            cfg(serde_json::json!({"layers": 9})).unwrap_err(),
            "config for char-lm: layers = 9 is out of range; use 1 to 8"
        );
        assert!(cfg(serde_json::json!({"d_model": 30, "heads": 4})).unwrap_err().contains("not a multiple"));
        assert!(cfg(serde_json::json!({"lr": 0.0})).unwrap_err().contains("(0, 1]"));
        assert!(cfg(serde_json::json!({"width": 3})).unwrap_err().contains("unknown field `width`"));
    }

    #[test]
    fn splits_cover_the_corpus_without_overlap() {
        let (a, b, c) = splits();
        assert_eq!(a.len() + b.len() + c.len(), CORPUS.len());
        assert!(b.len() > EVAL_BYTES / 2 && c.len() > EVAL_BYTES / 2);
    }

    #[test]
    fn training_lowers_bits_per_byte_and_is_deterministic() {
        let small = |steps| LmConfig {
            d_model: 32,
            layers: 1,
            heads: 2,
            context: 32,
            batch: 8,
            lr: 1e-2,
            steps: Some(steps),
            ..LmConfig::default()
        };
        let run = |c: &LmConfig| {
            let mut m =
                train(c, EvalSplit::Validation, Duration::from_secs(60), &|| false, &|_, _| {}).unwrap().metrics;
            m.remove("first_step_ms"); // a timing
            m
        };
        let untrained = run(&small(1));
        let trained = run(&small(60));
        let again = run(&small(60));
        // An untrained byte model is near uniform: about 8 bits per byte.
        assert!((untrained["val_bpb"] - 8.0).abs() < 0.5, "{untrained:?}");
        assert!(trained["val_bpb"] < untrained["val_bpb"] - 2.0, "{trained:?}");
        assert_eq!(trained, again, "same seed and steps, same result");
        assert_eq!(trained["steps"], 60.0);
        let held = train(&small(60), EvalSplit::HeldOut, Duration::from_secs(60), &|| false, &|_, _| {}).unwrap();
        assert!(held.metrics.contains_key("heldout_bpb") && !held.metrics.contains_key("val_bpb"));
    }

    #[test]
    fn stop_ends_training_at_once() {
        let c = LmConfig { d_model: 16, layers: 1, heads: 1, context: 16, batch: 2, ..LmConfig::default() };
        let r = train(&c, EvalSplit::Validation, Duration::from_secs(60), &|| true, &|_, _| {}).unwrap();
        assert_eq!(r.metrics["steps"], 1.0);
        assert!(!r.metrics.contains_key("val_bpb"), "evaluation is skipped once stopped");
        assert!(r.stopped);
    }
}
