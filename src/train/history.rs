//! Per-epoch records of a training run and their CSV form (`history.csv`).

use std::fmt::Write;

/// One epoch's metrics, as Keras's `History` records them (plus the rate and wall time).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub lr: f32,
    /// Training and validation, wall clock.
    pub seconds: f64,
}

pub const CSV_HEADER: &str = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds";

/// The history as CSV with [`CSV_HEADER`] (full precision, so it can be compared exactly).
pub fn to_csv(history: &[EpochRecord]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in history {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{:.4}",
            r.epoch, r.loss, r.accuracy, r.val_loss, r.val_accuracy, r.lr, r.seconds
        );
    }
    out
}

/// Reads back what [`to_csv`] wrote; `None` if a line does not parse.
pub fn from_csv(text: &str) -> Option<Vec<EpochRecord>> {
    let mut lines = text.lines();
    if lines.next()? != CSV_HEADER {
        return None;
    }
    lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 7 {
                return None;
            }
            Some(EpochRecord {
                epoch: f[0].parse().ok()?,
                loss: f[1].parse().ok()?,
                accuracy: f[2].parse().ok()?,
                val_loss: f[3].parse().ok()?,
                val_accuracy: f[4].parse().ok()?,
                lr: f[5].parse().ok()?,
                seconds: f[6].parse().ok()?,
            })
        })
        .collect()
}
