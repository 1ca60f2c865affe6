//! One training run end to end, and the directory it leaves behind:
//! `config.json` (every resolved setting), `history.csv` (one line per epoch),
//! `best.simdnn` (the best model so far, written atomically whenever validation loss
//! improves), `summary.json` (best epoch and timings) and `resume.state` (see [`super::resume`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::callbacks::{EarlyStopping, SaveBest, Verdict};
use super::config::TrainConfig;
use super::config::json_f32;
use super::history::{EpochRecord, to_csv};
use super::lr_find::{LR_FIND_FILES, LrFindSettings, range_test, write_results};
use super::resume::{FILE, ResumeState};
use super::{EpochOutcome, EpochProgress, Event, PhaseSeconds, Trainer, steps_csv};
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
    /// Where the time of the epochs this process ran went (a resumed run counts from the
    /// resumption).
    pub phase_seconds: PhaseSeconds,
    /// Trainable parameters (Keras's count).
    pub parameters: usize,
    /// Non-trainable numbers: batch norm's moving averages (Keras's count).
    pub non_trainable_parameters: usize,
    pub out_dir: PathBuf,
}

/// Trains as `cfg` says, on rayon's pool of `cfg.threads` threads, writing the run
/// directory as it goes. A directory that already holds a run is an error: training would
/// replace its model, history and resumable state.
pub fn train_run(cfg: &TrainConfig, on_event: &mut (dyn FnMut(Event<'_>) + Send)) -> Result<RunSummary> {
    check_no_run_in(cfg)?;
    run(cfg, None, None, on_event)
}

/// [`train_run`] that stops cleanly when `stop` is raised: after the current step, with the
/// resumable state saved, returning [`Error::Interrupted`].
pub fn train_run_until(
    cfg: &TrainConfig,
    stop: &AtomicBool,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<RunSummary> {
    check_no_run_in(cfg)?;
    run(cfg, None, Some(stop), on_event)
}

/// The files of a run directory that a new run would overwrite.
const RUN_FILES: [&str; 5] = ["config.json", "history.csv", "summary.json", "best.simdnn", FILE];

/// An error naming `--out` if `cfg.out_dir` holds a run's files, which a new run would
/// overwrite (with `--lr auto`, a range test's too).
fn check_no_run_in(cfg: &TrainConfig) -> Result<()> {
    let dir = &cfg.out_dir;
    if cfg.lr_auto {
        check_out_dir_free(dir, &LR_FIND_FILES)?;
    }
    match first_present(dir, &RUN_FILES) {
        Some(found) => Err(Error::config(
            "--out",
            format!(
                "{} already holds a run ({found}): continue it with `simdnn train --resume {}`, or choose another directory",
                dir.display(),
                dir.display()
            ),
        )),
        None => Ok(()),
    }
}

/// An error naming `--out` if `dir` holds any of `files`, which a command would overwrite.
pub fn check_out_dir_free(dir: &Path, files: &[&str]) -> Result<()> {
    match first_present(dir, files) {
        Some(found) => Err(Error::config(
            "--out",
            format!("{} already holds {found} from an earlier run; choose another directory", dir.display()),
        )),
        None => Ok(()),
    }
}

/// Whether `cfg.out_dir` holds a run (its `config.json`) of exactly `cfg`'s settings; an
/// error naming `--out` if it holds one of other settings.
fn holds_run_of(cfg: &TrainConfig) -> Result<bool> {
    if !cfg.out_dir.join("config.json").exists() {
        return Ok(false);
    }
    let mut saved = saved_config_json(&cfg.out_dir)?;
    let mut wanted = cfg.to_json();
    // Where the data and the run are is not a setting of the run.
    for json in [&mut saved, &mut wanted] {
        if let Some(map) = json.as_object_mut() {
            map.remove("data_dir");
            map.remove("out_dir");
        }
    }
    if saved != wanted {
        return Err(Error::config(
            "--out",
            format!("{} holds a run with other settings; choose another directory", cfg.out_dir.display()),
        ));
    }
    Ok(true)
}

/// The run in `dir`'s `config.json`, parsed; errors name the file.
pub fn saved_config_json(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::data(&path, format!("is not valid JSON: {e}")))
}

/// The first of `files` that exists in `dir`.
fn first_present<'f>(dir: &Path, files: &[&'f str]) -> Option<&'f str> {
    files.iter().copied().find(|f| dir.join(f).exists())
}

/// Continues the run in `dir` from its `resume.state` with the settings of its
/// `config.json` (from the start when no state was saved yet); finishes with the same
/// weights and history as a run that was never interrupted.
pub fn resume_run(
    dir: &Path,
    stop: Option<&AtomicBool>,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<RunSummary> {
    let json = saved_config_json(dir)?;
    let mut cfg = TrainConfig::from_json(&json).map_err(|e| Error::data(dir.join("config.json"), e.to_string()))?;
    cfg.out_dir = dir.to_path_buf();
    let state = ResumeState::load(dir)?;
    run(&cfg, state, stop, on_event)
}

fn run(
    cfg: &TrainConfig,
    resume: Option<ResumeState>,
    stop: Option<&AtomicBool>,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<RunSummary> {
    cfg.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| Error::config("--threads", e.to_string()))?;
    pool.install(|| train_in_pool(cfg, resume, stop, on_event))
}

fn train_in_pool(
    cfg: &TrainConfig,
    resume: Option<ResumeState>,
    stop: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<RunSummary> {
    let data = Cifar10::open(&cfg.data_dir)?;
    let (train, val) = data.train_val(cfg.val_size)?;
    let preprocess = if cfg.standardise { standardise_from(&train)? } else { Preprocess::UNIT_SCALE };
    let mut model = Sequential::new(IMAGE_BYTES, &cfg.layer_specs(), cfg.seed)?;
    let out = &cfg.out_dir;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut cfg = cfg.clone();
    if resume.is_none() {
        let mut config_json = cfg.to_json();
        if cfg.lr_auto {
            // Sweep from a copy of the initial weights, then train those weights at the
            // suggestion.
            let test = range_test(&model, &cfg, &train, &preprocess, LrFindSettings::default())?;
            write_results(out, &test)?;
            let s = test.suggestions().ok_or_else(|| {
                Error::config(
                    "--lr auto",
                    "the range test stopped before it had enough points to suggest a rate: give --lr",
                )
            })?;
            (cfg.lr, cfg.lr_auto) = (s.min_over_10, false);
            config_json["lr"] = json_f32(cfg.lr);
            config_json["lr_auto"] = serde_json::json!({
                "rule": "minimum of the smoothed loss / 10",
                "min_over_10": json_f32(s.min_over_10),
                "steepest": json_f32(s.steepest),
                "sweep_points": test.points().len(),
                "sweep_file": "lr_find.csv",
            });
        }
        let text = serde_json::to_string_pretty(&config_json).map_err(|e| Error::config("config", e.to_string()))?;
        write_atomic(&out.join("config.json"), text.as_bytes())?;
    }

    let (parameters, non_trainable_parameters) = (model.num_params(), model.num_state());
    let mut optimizer = cfg.optimizer.build(parameters);
    let mismatch = |what: &str| {
        Error::format(format!("{}: the saved {what} does not fit the model in config.json", out.join(FILE).display()))
    };
    if let Some(r) = &resume {
        if r.params.len() != parameters
            || r.state.len() != non_trainable_parameters
            || r.best_state.len() != non_trainable_parameters
        {
            return Err(mismatch("weights"));
        }
        (model.params, model.state) = (r.params.clone(), r.state.clone());
        optimizer.restore(&r.optimizer).map_err(|_| mismatch("optimizer state"))?;
    }
    let mut trainer = Trainer::new(model, optimizer, preprocess, train, val, cfg.batch_size, cfg.lr, cfg.seed)?;
    trainer.precision = cfg.precision;
    trainer.parallelism = cfg.parallel;
    if let Some(why) = trainer.tensor_parallel_declined() {
        on_event(Event::Warning(format!("the steps are data-parallel, not tensor-parallel (--parallel): {why}")));
    }
    (trainer.schedule, trainer.plateau) =
        cfg.schedule.resolve(cfg.lr, cfg.epochs as u64, trainer.steps_per_epoch() as u64)?;
    if cfg.step_log {
        trainer.step_log = Some(Vec::new());
    }
    let mut early = EarlyStopping::new(cfg.patience, cfg.min_delta, cfg.restore_best_weights);
    // Batch norm's moving averages at the best epoch: restored with the weights, as Keras's
    // restore_best_weights restores non-trainable weights too.
    let mut best_state = trainer.model().state.clone();
    let mut save_best = SaveBest::default();
    let mut history: Vec<EpochRecord> = Vec::new();
    let (mut first_epoch, mut progress, mut stopped_early) = (1, EpochProgress::default(), false);
    if let Some(r) = resume {
        r.restore_callbacks(&mut early, &mut save_best, &mut trainer.plateau);
        (trainer.lr, trainer.global_step) = (r.lr, r.global_step);
        if trainer.step_log.is_some() {
            trainer.step_log = r.steps;
        }
        (best_state, history, first_epoch, progress, stopped_early) =
            (r.best_state, r.history, r.epoch, r.progress, r.finished);
    }
    let snapshot = |trainer: &Trainer<'_>,
                    early: &EarlyStopping,
                    save_best: &SaveBest,
                    best_state: &[f32],
                    history: &[EpochRecord],
                    epoch,
                    progress,
                    finished| ResumeState {
        epoch,
        progress,
        finished,
        lr: trainer.lr,
        global_step: trainer.global_step,
        plateau: trainer.plateau.map(|p| (p.best, p.wait)),
        early_best: early.best,
        early_best_epoch: early.best_epoch,
        early_wait: early.wait,
        early_best_params: early.best_params.clone(),
        best_state: best_state.to_vec(),
        checkpoint_best: save_best.best,
        params: trainer.model().params.clone(),
        state: trainer.model().state.clone(),
        optimizer: trainer.optimizer.state(),
        history: history.to_vec(),
        steps: trainer.step_log.clone(),
    };
    let mut epoch = first_epoch;
    while epoch <= cfg.epochs && !stopped_early {
        let record = match trainer.run_epoch(epoch, std::mem::take(&mut progress), stop, on_event)? {
            EpochOutcome::Finished(record) => record,
            EpochOutcome::Interrupted(at) => {
                let step = at.next_step;
                snapshot(&trainer, &early, &save_best, &best_state, &history, epoch, at, false).save(out)?;
                return Err(Error::Interrupted { dir: out.clone(), epoch, step });
            }
        };
        history.push(record.clone());
        write_atomic(&out.join("history.csv"), to_csv(&history).as_bytes())?;
        if let Some(steps) = &trainer.step_log {
            write_atomic(&out.join("steps.csv"), steps_csv(steps).as_bytes())?;
        }
        if save_best.should_save(record.val_loss) {
            save_model(&out.join("best.simdnn"), trainer.model(), &trainer.preprocess)?;
        }
        let verdict = early.update(epoch, record.val_loss, &trainer.model().params);
        if verdict == Verdict::Improved {
            best_state.copy_from_slice(&trainer.model().state);
        }
        stopped_early = verdict == Verdict::Stop;
        snapshot(
            &trainer,
            &early,
            &save_best,
            &best_state,
            &history,
            epoch + 1,
            EpochProgress::default(),
            stopped_early,
        )
        .save(out)?;
        on_event(Event::EpochEnd(&record));
        epoch += 1;
    }
    if let Some(best) = early.best_params() {
        trainer.model_mut().params.copy_from_slice(best);
        trainer.model_mut().state.copy_from_slice(&best_state);
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
        phase_seconds: trainer.phases,
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

/// A sweep's tables in its directory: one line per rate, and the same in Markdown.
pub const SWEEP_FILES: [&str; 2] = ["sweep.csv", "sweep.md"];

/// The notebook's grid search (exercise 8b) as one call: one full training run per rate,
/// each in `cfg.out_dir/lr-<rate>`, then `sweep.csv` and `sweep.md` in `cfg.out_dir`. An
/// unfinished sweep (stopped before its tables) continues: a rate whose directory holds a
/// run of the same settings resumes it, or takes its result if it finished. `stop` stops
/// the run in progress as [`train_run_until`] does.
pub fn sweep(
    cfg: &TrainConfig,
    rates: &[f32],
    stop: Option<&AtomicBool>,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Vec<(f32, RunSummary)>> {
    if rates.is_empty() {
        return Err(Error::config("--lr", "a sweep needs at least one rate (for example --lr 1e-5,1e-4,1e-3)"));
    }
    let run_at = |rate: f32| TrainConfig {
        lr: rate,
        lr_auto: false,
        out_dir: cfg.out_dir.join(format!("lr-{rate:e}")),
        ..cfg.clone()
    };
    // Checked before the first run trains, not when a later one finds its directory taken.
    check_out_dir_free(&cfg.out_dir, &SWEEP_FILES)?;
    let mut started = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        if rates[..i].contains(rate) {
            return Err(Error::config(
                "--lr",
                format!("lists {rate:e} twice (each rate trains into its own directory)"),
            ));
        }
        let run = run_at(*rate);
        let continues = holds_run_of(&run)?;
        if !continues {
            check_no_run_in(&run)?;
        }
        started.push(continues);
    }
    let mut results = Vec::new();
    for (&rate, continues) in rates.iter().zip(started) {
        let rate_run = run_at(rate);
        let summary = match (continues, stop) {
            (true, _) => resume_run(&rate_run.out_dir, stop, on_event)?,
            (false, Some(stop)) => train_run_until(&rate_run, stop, on_event)?,
            (false, None) => train_run(&rate_run, on_event)?,
        };
        results.push((rate, summary));
    }
    let mut csv = String::from("lr,best_epoch,best_val_loss,best_val_accuracy,epochs_run,mean_epoch_seconds\n");
    for (rate, s) in &results {
        csv += &format!(
            "{rate},{},{},{},{},{}\n",
            s.best_epoch, s.best_val_loss, s.best_val_accuracy, s.epochs_run, s.mean_epoch_seconds
        );
    }
    write_atomic(&cfg.out_dir.join(SWEEP_FILES[0]), csv.as_bytes())?;
    write_atomic(&cfg.out_dir.join(SWEEP_FILES[1]), sweep_table(&results).as_bytes())?;
    Ok(results)
}

/// A Markdown table of a sweep, the best rate (by validation loss) marked.
pub fn sweep_table(results: &[(f32, RunSummary)]) -> String {
    let best =
        results.iter().enumerate().min_by(|a, b| a.1.1.best_val_loss.total_cmp(&b.1.1.best_val_loss)).map(|(i, _)| i);
    let mut out = String::from(
        "| learning rate | best epoch | best val_loss | best val_accuracy | epochs run | s/epoch |\n|---|---|---|---|---|---|\n",
    );
    for (i, (rate, s)) in results.iter().enumerate() {
        let mark = if Some(i) == best { " (best)" } else { "" };
        out += &format!(
            "| {rate:e}{mark} | {} | {:.4} | {:.4} | {} | {:.2} |\n",
            s.best_epoch, s.best_val_loss, s.best_val_accuracy, s.epochs_run, s.mean_epoch_seconds
        );
    }
    out
}
