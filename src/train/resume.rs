//! The resumable state of a run (`resume.state` in its directory), written atomically after
//! every epoch and when training is interrupted: weights, optimiser state, schedule position,
//! early-stopping and checkpoint state, history, and the progress of an unfinished epoch.
//! Shuffles and dropout masks derive from (seed, epoch, step), so no generator state is
//! needed: a resumed run continues bit for bit as if it had never stopped.

use std::path::Path;

use super::callbacks::{EarlyStopping, SaveBest};
use super::history::EpochRecord;
use super::{EpochProgress, StepRecord};
use crate::format::{Reader, Writer, seal, unseal};
use crate::fsutil::write_atomic;
use crate::optim::OptimizerState;
use crate::optim::schedule::ReduceOnPlateau;
use crate::{Error, Result};

pub const FILE: &str = "resume.state";
const MAGIC: [u8; 8] = *b"\x89SDNrsm\n";
const VERSION: u32 = 1;

/// Everything needed to continue a run where it stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeState {
    /// The epoch to run next (1-based), and how far into it training got.
    pub epoch: usize,
    pub progress: EpochProgress,
    /// Early stopping already ended the run.
    pub finished: bool,
    /// The base learning rate (plateau scheduling lowers it) and the step counter.
    pub lr: f32,
    pub global_step: u64,
    /// ReduceOnPlateau's (best, wait), when it is on.
    pub plateau: Option<(f64, u32)>,
    pub early_best: f64,
    pub early_best_epoch: usize,
    pub early_wait: usize,
    pub early_best_params: Option<Vec<f32>>,
    pub best_state: Vec<f32>,
    pub checkpoint_best: f64,
    pub params: Vec<f32>,
    pub state: Vec<f32>,
    pub optimizer: OptimizerState,
    pub history: Vec<EpochRecord>,
    pub steps: Option<Vec<StepRecord>>,
}

impl ResumeState {
    /// Restores the callbacks' state.
    pub fn restore_callbacks(
        &self,
        early: &mut EarlyStopping,
        save_best: &mut SaveBest,
        plateau: &mut Option<ReduceOnPlateau>,
    ) {
        early.best = self.early_best;
        early.best_epoch = self.early_best_epoch;
        early.wait = self.early_wait;
        early.best_params = self.early_best_params.clone();
        save_best.best = self.checkpoint_best;
        if let (Some(p), Some((best, wait))) = (plateau.as_mut(), self.plateau) {
            (p.best, p.wait) = (best, wait);
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut w = Writer(Vec::new());
        w.u64(self.epoch as u64);
        let p = &self.progress;
        w.u64(p.next_step as u64);
        w.f64(p.loss_sum);
        w.u64(p.correct as u64);
        w.u64(p.seen as u64);
        w.f64(p.seconds);
        w.f32(p.lr);
        w.u8(u8::from(self.finished));
        w.f32(self.lr);
        w.u64(self.global_step);
        match self.plateau {
            Some((best, wait)) => {
                w.u8(1);
                w.f64(best);
                w.u32(wait);
            }
            None => w.u8(0),
        }
        w.f64(self.early_best);
        w.u64(self.early_best_epoch as u64);
        w.u64(self.early_wait as u64);
        vector(&mut w, self.early_best_params.as_deref());
        vector(&mut w, Some(&self.best_state));
        w.f64(self.checkpoint_best);
        vector(&mut w, Some(&self.params));
        vector(&mut w, Some(&self.state));
        w.u64(self.optimizer.t);
        w.u64(self.optimizer.scalars.len() as u64);
        self.optimizer.scalars.iter().for_each(|&v| w.f64(v));
        vector(&mut w, Some(&self.optimizer.slots));
        w.u64(self.history.len() as u64);
        for r in &self.history {
            w.u64(r.epoch as u64);
            for v in [r.loss, r.accuracy, r.val_loss, r.val_accuracy, r.seconds] {
                w.f64(v);
            }
            w.f32(r.lr);
        }
        match &self.steps {
            Some(steps) => {
                w.u8(1);
                w.u64(steps.len() as u64);
                for s in steps {
                    w.u64(s.step);
                    w.u64(s.epoch as u64);
                    w.f32(s.lr);
                    w.f32(s.momentum.unwrap_or(f32::NAN));
                    w.f64(s.loss);
                }
            }
            None => w.u8(0),
        }
        write_atomic(&dir.join(FILE), &seal(&MAGIC, VERSION, &w.0))
    }

    /// Reads `dir/resume.state`; `Ok(None)` when there is none yet.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Self::parse(&bytes).map(Some).map_err(|e| e.in_file(path.display().to_string()))
    }

    fn parse(bytes: &[u8]) -> Result<Self> {
        let (_, mut r) = unseal(bytes, &MAGIC, "resumable training state", VERSION)?;
        let epoch = size(&mut r)?;
        let progress = EpochProgress {
            next_step: size(&mut r)?,
            loss_sum: r.f64()?,
            correct: size(&mut r)?,
            seen: size(&mut r)?,
            seconds: r.f64()?,
            lr: r.f32()?,
        };
        let finished = r.u8()? != 0;
        let lr = r.f32()?;
        let global_step = r.u64()?;
        let plateau = if r.u8()? != 0 { Some((r.f64()?, r.u32()?)) } else { None };
        let early_best = r.f64()?;
        let early_best_epoch = size(&mut r)?;
        let early_wait = size(&mut r)?;
        let early_best_params = read_vector(&mut r)?;
        let best_state = read_vector(&mut r)?.unwrap_or_default();
        let checkpoint_best = r.f64()?;
        let params = read_vector(&mut r)?.unwrap_or_default();
        let state = read_vector(&mut r)?.unwrap_or_default();
        let t = r.u64()?;
        let n_scalars = bounded(&mut r, 8)?;
        let scalars = (0..n_scalars).map(|_| r.f64()).collect::<Result<_>>()?;
        let slots = read_vector(&mut r)?.unwrap_or_default();
        let n_history = bounded(&mut r, 8 + 5 * 8 + 4)?;
        let history = (0..n_history)
            .map(|_| {
                Ok(EpochRecord {
                    epoch: size(&mut r)?,
                    loss: r.f64()?,
                    accuracy: r.f64()?,
                    val_loss: r.f64()?,
                    val_accuracy: r.f64()?,
                    seconds: r.f64()?,
                    lr: r.f32()?,
                })
            })
            .collect::<Result<_>>()?;
        let steps = if r.u8()? != 0 {
            let n = bounded(&mut r, 8 + 8 + 4 + 4 + 8)?;
            let steps = (0..n)
                .map(|_| {
                    let (step, epoch, lr, momentum, loss) = (r.u64()?, size(&mut r)?, r.f32()?, r.f32()?, r.f64()?);
                    Ok(StepRecord { step, epoch, lr, momentum: (!momentum.is_nan()).then_some(momentum), loss })
                })
                .collect::<Result<_>>()?;
            Some(steps)
        } else {
            None
        };
        if r.remaining() != 0 {
            return Err(Error::format(format!("{} unexpected bytes at the end", r.remaining())));
        }
        Ok(ResumeState {
            epoch,
            progress,
            finished,
            lr,
            global_step,
            plateau,
            early_best,
            early_best_epoch,
            early_wait,
            early_best_params,
            best_state,
            checkpoint_best,
            params,
            state,
            optimizer: OptimizerState { t, scalars, slots },
            history,
            steps,
        })
    }
}

/// An optional f32 vector: a presence byte, a length, the values.
fn vector(w: &mut Writer, values: Option<&[f32]>) {
    match values {
        Some(v) => {
            w.u8(1);
            w.u64(v.len() as u64);
            w.f32s(v);
        }
        None => w.u8(0),
    }
}

fn read_vector(r: &mut Reader<'_>) -> Result<Option<Vec<f32>>> {
    if r.u8()? == 0 {
        return Ok(None);
    }
    let n = bounded(r, 4)?;
    r.f32s(n).map(Some)
}

fn size(r: &mut Reader<'_>) -> Result<usize> {
    usize::try_from(r.u64()?).map_err(|_| Error::format("a count does not fit this machine"))
}

/// A count of items of at least `item_bytes` each, checked against the bytes left before
/// anything is allocated for them.
fn bounded(r: &mut Reader<'_>, item_bytes: usize) -> Result<usize> {
    let n = size(r)?;
    if n.checked_mul(item_bytes).is_none_or(|b| b > r.remaining()) {
        return Err(Error::format(format!("{n} items cannot fit in the {} bytes left", r.remaining())));
    }
    Ok(n)
}
