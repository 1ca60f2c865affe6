//! One training run end to end, and the directory it leaves behind:
//! `config.json` (every resolved setting), `history.csv` (one line per epoch),
//! `best.simdnn` (the best model so far, written atomically whenever validation loss
//! improves) and `summary.json` (best epoch and timings).

use std::path::{Path, PathBuf};

use super::callbacks::{EarlyStopping, SaveBest, Verdict};
use super::config::TrainConfig;
use super::history::{EpochRecord, to_csv};
use super::{Event, Trainer};
use crate::data::cifar::IMAGE_BYTES;
use crate::data::{Cifar10, standardise_from};
use crate::format::{SavedModel, to_bytes};
use crate::fsutil::write_atomic;
use crate::nn::{Preprocess, Sequential};
use crate::{Error, Result};

/// What `summary.json` holds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunSummary {
    pub best_epoch: usize,
    pub best_val_loss: f64,
    pub best_val_accuracy: f64,
    pub epochs_run: usize,
    pub stopped_early: bool,
    pub train_seconds: f64,
    pub mean_epoch_seconds: f64,
    /// Trainable parameters (Keras's count).
    pub parameters: usize,
    /// Non-trainable numbers: batch norm's moving averages (Keras's count).
    pub non_trainable_parameters: usize,
    pub out_dir: PathBuf,
}

/// Trains as `cfg` says, on rayon's pool of `cfg.threads` threads, writing the run
/// directory as it goes.
pub fn train_run(cfg: &TrainConfig, on_event: &mut (dyn FnMut(Event<'_>) + Send)) -> Result<RunSummary> {
    cfg.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| Error::config("--threads", e.to_string()))?;
    pool.install(|| train_in_pool(cfg, on_event))
}

fn train_in_pool(cfg: &TrainConfig, on_event: &mut dyn FnMut(Event<'_>)) -> Result<RunSummary> {
    let data = Cifar10::open(&cfg.data_dir)?;
    let (train, val) = data.train_val(cfg.val_size)?;
    let preprocess = if cfg.standardise { standardise_from(&train)? } else { Preprocess::UNIT_SCALE };
    let model = Sequential::new(IMAGE_BYTES, &cfg.layer_specs(), cfg.seed)?;
    let out = &cfg.out_dir;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let config_json =
        serde_json::to_string_pretty(&cfg.to_json()).map_err(|e| Error::config("config", e.to_string()))?;
    write_atomic(&out.join("config.json"), config_json.as_bytes())?;

    let (parameters, non_trainable_parameters) = (model.num_params(), model.num_state());
    let optimizer = cfg.optimizer.build(parameters);
    let mut trainer = Trainer::new(model, optimizer, preprocess, train, val, cfg.batch_size, cfg.lr, cfg.seed)?;
    let mut early = EarlyStopping::new(cfg.patience, cfg.min_delta, cfg.restore_best_weights);
    let mut save_best = SaveBest::default();
    let mut history: Vec<EpochRecord> = Vec::new();
    let mut stopped_early = false;
    for epoch in 1..=cfg.epochs {
        let record = trainer.run_epoch(epoch, on_event)?;
        history.push(record.clone());
        write_atomic(&out.join("history.csv"), to_csv(&history).as_bytes())?;
        if save_best.should_save(record.val_loss) {
            save_model(&out.join("best.simdnn"), &trainer.model, &trainer.preprocess)?;
        }
        let verdict = early.update(epoch, record.val_loss, &trainer.model.params);
        on_event(Event::EpochEnd(&record));
        if verdict == Verdict::Stop {
            stopped_early = true;
            break;
        }
    }
    if let Some(best) = early.best_params() {
        trainer.model.params.copy_from_slice(best);
    }
    let best = history.iter().rfind(|r| r.epoch == early.best_epoch());
    let train_seconds: f64 = history.iter().map(|r| r.seconds).sum();
    let summary = RunSummary {
        best_epoch: early.best_epoch(),
        best_val_loss: best.map_or(f64::NAN, |r| r.val_loss),
        best_val_accuracy: best.map_or(f64::NAN, |r| r.val_accuracy),
        epochs_run: history.len(),
        stopped_early,
        train_seconds,
        mean_epoch_seconds: train_seconds / history.len().max(1) as f64,
        parameters,
        non_trainable_parameters,
        out_dir: out.clone(),
    };
    let summary_json = serde_json::to_string_pretty(&summary).map_err(|e| Error::config("summary", e.to_string()))?;
    write_atomic(&out.join("summary.json"), summary_json.as_bytes())?;
    Ok(summary)
}

/// Writes a model file atomically.
pub fn save_model(path: &Path, model: &Sequential, preprocess: &Preprocess) -> Result<()> {
    let saved = SavedModel { model: model.clone(), preprocess: preprocess.clone() };
    write_atomic(path, &to_bytes(&saved))
}

/// Reads a model file, naming it in any error.
pub fn load_model(path: &Path) -> Result<SavedModel> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    crate::format::from_bytes(&bytes).map_err(|e| e.in_file(path.display().to_string()))
}
