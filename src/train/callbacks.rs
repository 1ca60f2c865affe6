//! Keras's EarlyStopping and ModelCheckpoint(save_best_only), as plain state machines fed one
//! epoch's monitored value at a time.

/// Stops training when the monitored loss has not improved by more than `min_delta` for
/// `patience` epochs, keeping a copy of the best weights to restore.
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    pub patience: usize,
    pub min_delta: f64,
    pub restore_best_weights: bool,
    pub(crate) best: f64,
    pub(crate) best_epoch: usize,
    pub(crate) wait: usize,
    pub(crate) best_params: Option<Vec<f32>>,
}

/// What the early-stopping rule decided at the end of an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Improved,
    Continue,
    Stop,
}

impl EarlyStopping {
    pub fn new(patience: usize, min_delta: f64, restore_best_weights: bool) -> Self {
        EarlyStopping {
            patience,
            min_delta,
            restore_best_weights,
            best: f64::INFINITY,
            best_epoch: 0,
            wait: 0,
            best_params: None,
        }
    }

    /// Feeds epoch `epoch`'s monitored value (lower is better) and the weights it produced.
    pub fn update(&mut self, epoch: usize, value: f64, params: &[f32]) -> Verdict {
        if value < self.best - self.min_delta {
            self.best = value;
            self.best_epoch = epoch;
            self.wait = 0;
            if self.restore_best_weights {
                match &mut self.best_params {
                    Some(saved) => saved.copy_from_slice(params),
                    None => self.best_params = Some(params.to_vec()),
                }
            }
            return Verdict::Improved;
        }
        self.wait += 1;
        if self.wait >= self.patience { Verdict::Stop } else { Verdict::Continue }
    }

    pub fn best(&self) -> f64 {
        self.best
    }

    /// 1-based epoch of the best value, 0 before any.
    pub fn best_epoch(&self) -> usize {
        self.best_epoch
    }

    /// The best weights seen, when restoring is enabled.
    pub fn best_params(&self) -> Option<&[f32]> {
        self.best_params.as_deref()
    }
}

/// Decides when `ModelCheckpoint(save_best_only=True)` writes: whenever the monitored loss
/// beats every earlier value.
#[derive(Clone, Debug)]
pub struct SaveBest {
    pub(crate) best: f64,
}

impl Default for SaveBest {
    fn default() -> Self {
        SaveBest { best: f64::INFINITY }
    }
}

impl SaveBest {
    pub fn should_save(&mut self, value: f64) -> bool {
        let better = value < self.best;
        if better {
            self.best = value;
        }
        better
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        let mut es = EarlyStopping::new(2, 0.0, true);
        assert_eq!(es.update(1, 1.0, &[1.0]), Verdict::Improved);
        assert_eq!(es.update(2, 0.5, &[2.0]), Verdict::Improved);
        assert_eq!(es.update(3, 0.6, &[3.0]), Verdict::Continue);
        assert_eq!(es.update(4, 0.7, &[4.0]), Verdict::Stop);
        assert_eq!(es.best_epoch(), 2);
        assert_eq!(es.best_params(), Some(&[2.0][..]));
    }

    #[test]
    fn min_delta_requires_a_real_improvement() {
        let mut es = EarlyStopping::new(1, 0.1, false);
        assert_eq!(es.update(1, 1.0, &[]), Verdict::Improved);
        assert_eq!(es.update(2, 0.95, &[]), Verdict::Stop);
        assert_eq!(es.best(), 1.0);
        assert!(es.best_params().is_none());
    }

    #[test]
    fn nan_never_improves() {
        let mut es = EarlyStopping::new(3, 0.0, false);
        es.update(1, 1.0, &[]);
        assert_eq!(es.update(2, f64::NAN, &[]), Verdict::Continue);
        let mut save = SaveBest::default();
        assert!(save.should_save(1.0));
        assert!(!save.should_save(f64::NAN));
        assert!(!save.should_save(1.0));
        assert!(save.should_save(0.9));
    }
}
