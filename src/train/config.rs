//! Every setting of a training run, the notebook's presets, and their validation: an
//! impossible setting is an error naming its flag, before any work starts.

use std::path::PathBuf;

use super::Parallelism;
use crate::data::cifar::{CLASSES, IMAGE_BYTES};
use crate::kernels::{Activation, Precision};
use crate::nn::{Initializer, LayerSpec};
use crate::optim::OptimizerConfig;
use crate::optim::schedule::ScheduleSpec;
use crate::{Error, Result};

/// The resolved settings of one run (written to the run's `config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub preset: String,
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
    /// Hidden dense layers.
    pub depth: usize,
    /// Units per hidden layer.
    pub width: usize,
    pub activation: Activation,
    pub init: Initializer,
    pub optimizer: OptimizerConfig,
    pub lr: f32,
    pub batch_size: usize,
    pub epochs: usize,
    pub patience: usize,
    pub min_delta: f64,
    pub restore_best_weights: bool,
    /// The first `val_size` training records validate; the rest train.
    pub val_size: usize,
    pub seed: u64,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Standardise inputs per feature (else `x / 255`).
    pub standardise: bool,
    /// Batch normalisation after the input and after every hidden dense layer, which then
    /// has no activation of its own: `BN -> (Dense -> BN -> activation) x depth` (8c).
    pub batch_norm: bool,
    /// Rate of a dropout layer before the output layer (0: none).
    pub dropout: f32,
    /// Rate of an alpha-dropout layer before the output layer (0: none).
    pub alpha_dropout: f32,
    /// How the rate changes per step or epoch (`--schedule`).
    pub schedule: ScheduleSpec,
    /// Run the learning-rate range test first and train at its suggestion (`--lr auto`).
    pub lr_auto: bool,
    /// Write every step's rate, momentum and loss to `steps.csv`.
    pub step_log: bool,
    /// How the dense layers' products multiply in training (`--precision`): f32, or bf16
    /// operands with f32 sums (mixed precision; the weights, the element-wise work, the
    /// optimiser and evaluation stay f32).
    pub precision: Precision,
    /// How each step's work is split between threads (`--parallel`).
    pub parallel: Parallelism,
}

impl TrainConfig {
    pub const PRESETS: &'static str = "8a, 8c, 8d, 8e, 8f";

    /// A preset by name, the notebook's recipes:
    /// - `8a`: Flatten -> 20 x Dense(100, ELU, He normal) -> Dense(10, softmax), Nadam at 1e-4,
    ///   batch 32, 30 epochs, early stopping with patience 10 restoring the best weights, the
    ///   first 5,000 training records validate;
    /// - `8c`: 8a with batch normalisation after the input and after every hidden dense layer
    ///   (which then has no activation; ELU follows the normalisation);
    /// - `8d`: 20 x Dense(100, SELU, LeCun normal) on standardised inputs, Nadam at 5e-4;
    /// - `8e`: 8d with AlphaDropout(0.1) before the output layer;
    /// - `8f`: 8e trained with plain SGD driven by the 1cycle schedule (max rate 0.05, batch
    ///   50, 20 epochs).
    pub fn preset(name: &str) -> Result<Self> {
        let base = Self::preset_8a();
        match name {
            "8a" => Ok(base),
            "8c" => Ok(TrainConfig {
                preset: name.into(),
                batch_norm: true,
                parallel: Self::default_parallel(true),
                ..base
            }),
            "8d" => Ok(TrainConfig {
                preset: name.into(),
                activation: Activation::Selu,
                init: Initializer::LecunNormal,
                standardise: true,
                lr: 5e-4,
                ..base
            }),
            "8e" => Ok(TrainConfig { preset: name.into(), alpha_dropout: 0.1, ..Self::preset("8d")? }),
            "8f" => Ok(TrainConfig {
                preset: name.into(),
                optimizer: OptimizerConfig::Sgd { momentum: 0.0, nesterov: false },
                lr: 1e-3,
                schedule: ScheduleSpec::OneCycle { max_rate: 0.05, momentum: false },
                batch_size: 50,
                epochs: 20,
                ..Self::preset("8e")?
            }),
            other => Err(Error::config("--preset", format!("unknown preset `{other}` (accepted: {})", Self::PRESETS))),
        }
    }

    fn preset_8a() -> Self {
        TrainConfig {
            preset: "8a".into(),
            data_dir: default_data_dir(),
            out_dir: PathBuf::new(),
            depth: 20,
            width: 100,
            activation: Activation::ELU,
            init: Initializer::HeNormal,
            optimizer: OptimizerConfig::Nadam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 },
            lr: 1e-4,
            batch_size: 32,
            epochs: 30,
            patience: 10,
            min_delta: 0.0,
            restore_best_weights: true,
            val_size: 5_000,
            seed: 42,
            threads: 0,
            standardise: false,
            batch_norm: false,
            dropout: 0.0,
            alpha_dropout: 0.0,
            schedule: ScheduleSpec::Constant,
            lr_auto: false,
            step_log: false,
            precision: Precision::F32,
            parallel: Self::default_parallel(false),
        }
    }

    /// How steps split their work unless told (`--parallel`): tensor-parallel with batch norm,
    /// whose data-parallel steps would run the batch as one slice; data-parallel otherwise.
    pub fn default_parallel(batch_norm: bool) -> Parallelism {
        if batch_norm { Parallelism::Tensor } else { Parallelism::Data }
    }

    /// The layers: `depth` hidden layers (with batch norm if asked), the dropout layers, then
    /// the softmax output.
    pub fn layer_specs(&self) -> Vec<LayerSpec> {
        let mut specs = Vec::new();
        if self.batch_norm {
            specs.push(LayerSpec::batch_norm(Activation::Identity));
        }
        for _ in 0..self.depth {
            if self.batch_norm {
                specs.push(LayerSpec::Dense { units: self.width, activation: Activation::Identity, init: self.init });
                specs.push(LayerSpec::batch_norm(self.activation));
            } else {
                specs.push(LayerSpec::Dense { units: self.width, activation: self.activation, init: self.init });
            }
        }
        if self.dropout > 0.0 {
            specs.push(LayerSpec::Dropout { rate: self.dropout });
        }
        if self.alpha_dropout > 0.0 {
            specs.push(LayerSpec::AlphaDropout { rate: self.alpha_dropout });
        }
        specs.push(LayerSpec::Dense {
            units: CLASSES,
            activation: Activation::Softmax,
            init: Initializer::GlorotUniform,
        });
        specs
    }

    /// Why this configuration breaks SELU's self-normalisation (Klambauer et al., 2017: dense
    /// layers only, LeCun normal initialisation, standardised inputs, alpha dropout only).
    /// Empty when the network does not use SELU or keeps every condition.
    pub fn selu_warnings(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.activation != Activation::Selu {
            return why;
        }
        if self.init != Initializer::LecunNormal {
            why.push(format!("the initialiser is {} (self-normalisation needs lecun_normal)", self.init.name()));
        }
        if !self.standardise {
            why.push("the inputs are scaled, not standardised (use --standardise)".into());
        }
        if self.batch_norm {
            why.push("batch normalisation replaces the fixed point SELU converges to".into());
        }
        if self.dropout > 0.0 {
            why.push("ordinary dropout shifts the mean and variance (use --alpha-dropout)".into());
        }
        why
    }

    /// Rejects settings that cannot work, naming the flag.
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::config(name, format!("must be a positive number, got {v}")))
            }
        };
        let unit = |name: &str, v: f32| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(name, format!("must be in [0, 1), got {v}")))
            }
        };
        positive("--lr", self.lr as f64)?;
        if self.lr > 10.0 {
            return Err(Error::config("--lr", format!("{} is far above any rate that trains (at most 10)", self.lr)));
        }
        let range = |name: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(name, format!("must be between {lo} and {hi}, got {v}")))
            }
        };
        range("--batch-size", self.batch_size, 1, 65_536)?;
        if self.batch_norm && self.batch_size < 2 {
            // A batch of one is its own mean: every normalised value is 0, nothing trains.
            return Err(Error::config("--batch-size", "batch norm needs at least 2 records per batch"));
        }
        range("--epochs", self.epochs, 1, 100_000)?;
        range("--depth", self.depth, 0, 1_000)?;
        range("--width", self.width, 1, 65_536)?;
        range("--val-size", self.val_size, 1, 49_999)?;
        range("--threads", self.threads, 0, 1_024)?;
        if !(self.min_delta.is_finite() && self.min_delta >= 0.0) {
            return Err(Error::config("--min-delta", format!("must be a non-negative number, got {}", self.min_delta)));
        }
        for (flag, rate) in [("--dropout", self.dropout), ("--alpha-dropout", self.alpha_dropout)] {
            if !(0.0..1.0).contains(&rate) {
                return Err(Error::config(flag, format!("must be in [0, 1), got {rate}")));
            }
        }
        if self.schedule.cycles_momentum() && !matches!(self.optimizer, OptimizerConfig::Sgd { .. }) {
            return Err(Error::config("--schedule", "momentum cycling needs --optimizer sgd"));
        }
        if self.activation.is_row_wise() {
            return Err(Error::config("--activation", "softmax is only for the output layer"));
        }
        let params = (IMAGE_BYTES + 1) as u128 * self.width as u128
            + self.depth as u128 * (self.width as u128 + 1) * self.width as u128;
        if params > 1 << 31 {
            return Err(Error::config(
                "--width",
                format!("{} hidden layers of {} units need {params} parameters (at most 2^31)", self.depth, self.width),
            ));
        }
        match self.optimizer {
            OptimizerConfig::Sgd { momentum, .. } => unit("--momentum", momentum)?,
            OptimizerConfig::Adam { beta1, beta2, epsilon } | OptimizerConfig::Nadam { beta1, beta2, epsilon } => {
                unit("--beta1", beta1)?;
                unit("--beta2", beta2)?;
                positive("--epsilon", epsilon as f64)?;
            }
            OptimizerConfig::AdamW { beta1, beta2, epsilon, weight_decay } => {
                unit("--beta1", beta1)?;
                unit("--beta2", beta2)?;
                positive("--epsilon", epsilon as f64)?;
                unit("--weight-decay", weight_decay)?;
            }
            OptimizerConfig::RmsProp { rho, epsilon } => {
                unit("--rho", rho)?;
                positive("--epsilon", epsilon as f64)?;
            }
            OptimizerConfig::AdaGrad { initial_accumulator, epsilon } => {
                if !(initial_accumulator.is_finite() && initial_accumulator >= 0.0) {
                    return Err(Error::config("--initial-accumulator", "must be a non-negative number"));
                }
                positive("--epsilon", epsilon as f64)?;
            }
        }
        Ok(())
    }

    /// The settings as JSON (the run's `config.json`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut optimizer = serde_json::Map::new();
        optimizer.insert("name".into(), self.optimizer.name().into());
        for (key, value) in self.optimizer.settings() {
            let value = if key == "nesterov" { (value != 0.0).into() } else { json_f32(value) };
            optimizer.insert(key.into(), value);
        }
        serde_json::json!({
            "preset": self.preset,
            "data_dir": self.data_dir,
            "out_dir": self.out_dir,
            "model": {
                "input": IMAGE_BYTES,
                "depth": self.depth,
                "width": self.width,
                "activation": self.activation.to_string(),
                "initializer": self.init.name(),
                "output": { "units": CLASSES, "activation": "softmax", "initializer": "glorot_uniform" },
                "preprocess": if self.standardise { "standardise" } else { "scale 1/255" },
                "batch_norm": self.batch_norm,
                "dropout": json_f32(self.dropout),
                "alpha_dropout": json_f32(self.alpha_dropout),
            },
            "loss": "sparse_categorical_crossentropy",
            "optimizer": optimizer,
            "lr": if self.lr_auto { serde_json::Value::from("auto") } else { json_f32(self.lr) },
            "schedule": self.schedule.to_string(),
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "early_stopping": {
                "monitor": "val_loss",
                "patience": self.patience,
                "min_delta": self.min_delta,
                "restore_best_weights": self.restore_best_weights,
            },
            "checkpoint": { "monitor": "val_loss", "save_best_only": true, "file": "best.simdnn" },
            "val_size": self.val_size,
            "seed": self.seed,
            "threads": self.threads,
            "step_log": self.step_log,
            "precision": self.precision.name(),
            "parallel": self.parallel.name(),
        })
    }

    /// Reads back what [`TrainConfig::to_json`] wrote (a run's `config.json`), so that a run
    /// can be resumed with exactly its settings.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let bad = |what: &str| Error::config("config.json", format!("missing or invalid `{what}`"));
        let text = |key: &str, node: &serde_json::Value| node[key].as_str().map(str::to_owned).ok_or_else(|| bad(key));
        let count = |key: &str, node: &serde_json::Value| {
            node[key].as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| bad(key))
        };
        let real = |key: &str, node: &serde_json::Value| node[key].as_f64().ok_or_else(|| bad(key));
        let flag = |key: &str, node: &serde_json::Value| node[key].as_bool().ok_or_else(|| bad(key));
        let model = &v["model"];
        let opt = &v["optimizer"];
        let name = text("name", opt)?;
        let mut optimizer = OptimizerConfig::keras_default(&name).ok_or_else(|| bad("optimizer.name"))?;
        for (key, _) in optimizer.settings() {
            let value = match &opt[key] {
                serde_json::Value::Bool(b) => f32::from(u8::from(*b)),
                other => other.as_f64().ok_or_else(|| bad(key))? as f32,
            };
            optimizer.set(key, value);
        }
        let early = &v["early_stopping"];
        let (lr, lr_auto) = match &v["lr"] {
            serde_json::Value::String(s) if s == "auto" => (Self::preset_8a().lr, true),
            other => (other.as_f64().ok_or_else(|| bad("lr"))? as f32, false),
        };
        Ok(TrainConfig {
            preset: text("preset", v)?,
            data_dir: text("data_dir", v)?.into(),
            out_dir: text("out_dir", v)?.into(),
            depth: count("depth", model)?,
            width: count("width", model)?,
            activation: Activation::parse(&text("activation", model)?).ok_or_else(|| bad("model.activation"))?,
            init: Initializer::parse(&text("initializer", model)?).ok_or_else(|| bad("model.initializer"))?,
            optimizer,
            lr,
            batch_size: count("batch_size", v)?,
            epochs: count("epochs", v)?,
            patience: count("patience", early)?,
            min_delta: real("min_delta", early)?,
            restore_best_weights: flag("restore_best_weights", early)?,
            val_size: count("val_size", v)?,
            seed: v["seed"].as_u64().ok_or_else(|| bad("seed"))?,
            threads: count("threads", v)?,
            standardise: text("preprocess", model)? == "standardise",
            batch_norm: flag("batch_norm", model)?,
            dropout: real("dropout", model)? as f32,
            alpha_dropout: real("alpha_dropout", model)? as f32,
            schedule: text("schedule", v)?.parse()?,
            lr_auto,
            step_log: v["step_log"].as_bool().unwrap_or(false),
            // Runs written before the setting existed multiplied in f32.
            precision: match v.get("precision") {
                None => Precision::F32,
                Some(p) => p.as_str().and_then(Precision::parse).ok_or_else(|| bad("precision"))?,
            },
            // Runs written before the setting existed were data-parallel.
            parallel: match v.get("parallel") {
                None => Parallelism::Data,
                Some(p) => p.as_str().and_then(Parallelism::parse).ok_or_else(|| bad("parallel"))?,
            },
        })
    }
}

/// An f32 as the JSON number it was written as (`1e-3`, not its f64 widening
/// `0.0010000000474974513`): Rust prints the shortest decimal that round-trips.
pub fn json_f32(x: f32) -> serde_json::Value {
    x.to_string().parse::<f64>().map_or(serde_json::Value::Null, serde_json::Value::from)
}

/// `$SIMDNN_DATA`, else `./data/cifar-10-batches-bin`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("SIMDNN_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("data/cifar-10-batches-bin"))
}
