//! The learning-rate range test (Smith 2015, "Cyclical Learning Rates for Training Neural
//! Networks", section 3.3; fastai's `lr_find` is the reference for the stopping rule, the
//! smoothing and the suggestions). Owns only the bookkeeping: which rate to try at each step,
//! when to stop, and which rates to suggest. It imports `core`, `alloc`, `libm` and
//! `crate::error`; it knows nothing of models or data: the caller takes one training step at
//! [`LrRangeTest::rate`] for each step and feeds the loss back with [`LrRangeTest::record`].
//!
//! ```
//! use simdnn::optim::lr_range::LrRangeTest;
//!
//! // Gradient descent on f(w) = 2 w^2, which diverges for rates above 0.5.
//! let mut test = LrRangeTest::new(1e-5, 10.0, 200).unwrap();
//! let mut w = 1.0f64;
//! for step in 0.. {
//!     w -= test.rate(step) as f64 * 4.0 * w;
//!     if !test.record(2.0 * w * w) {
//!         break;
//!     }
//! }
//! let s = test.suggestions().unwrap();
//! assert!(s.steepest < 0.5 && s.min_over_10 < 0.5);
//! ```

use alloc::vec::Vec;

use crate::error::{Error, Result};

/// fastai's default lowest rate.
pub const DEFAULT_MIN_LR: f32 = 1e-7;
/// fastai's default highest rate.
pub const DEFAULT_MAX_LR: f32 = 10.0;
/// Weight of the past in the exponentially smoothed loss (fastai's `AvgSmoothLoss`).
pub const SMOOTHING: f64 = 0.98;
/// The test stops when the smoothed loss exceeds this multiple of the best smoothed loss.
pub const DIVERGENCE_FACTOR: f64 = 4.0;
/// Fewest recorded points for which [`LrRangeTest::suggestions`] suggests anything.
pub const MIN_POINTS: usize = 5;

/// One LR range test: rates growing exponentially from `min_lr` to `max_lr` over `steps`
/// steps, and the losses recorded at them. Losses are assumed non-negative (cross-entropy,
/// squared error), as the divergence rule (`smoothed > 4 * best`) requires.
#[derive(Clone, Debug)]
pub struct LrRangeTest {
    min_lr: f32,
    max_lr: f32,
    steps: usize,
    /// `(rate, raw loss, smoothed loss)` per recorded step.
    points: Vec<(f32, f64, f64)>,
    /// The moving average before bias correction.
    average: f64,
    /// The lowest smoothed loss so far.
    best: f64,
    finished: bool,
}

/// The rates an [`LrRangeTest`] suggests (see [`LrRangeTest::suggestions`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Suggestions {
    /// The rate where the smoothed loss falls fastest per decade of rate.
    pub steepest: f32,
    /// The rate of the lowest smoothed loss, divided by 10.
    pub min_over_10: f32,
}

impl LrRangeTest {
    /// Rates from `min_lr` to `max_lr` (defaults [`DEFAULT_MIN_LR`] = 1e-7 and
    /// [`DEFAULT_MAX_LR`] = 10), increasing exponentially over `steps` steps (at most one epoch
    /// of mini-batches, chosen by the caller). Requires finite `0 < min_lr < max_lr` and
    /// `steps >= 2`; errors name `min_lr`, `max_lr` or `steps`.
    pub fn new(min_lr: f32, max_lr: f32, steps: usize) -> Result<Self> {
        if !(min_lr.is_finite() && min_lr > 0.0) {
            return Err(Error::config("min_lr", alloc::format!("must be a positive finite rate, got {min_lr}")));
        }
        if !(max_lr.is_finite() && max_lr > min_lr) {
            return Err(Error::config(
                "max_lr",
                alloc::format!("must be a finite rate above min_lr ({min_lr}), got {max_lr}"),
            ));
        }
        if steps < 2 {
            return Err(Error::config("steps", alloc::format!("the range test needs at least 2 steps, got {steps}")));
        }
        Ok(LrRangeTest {
            min_lr,
            max_lr,
            steps,
            points: Vec::new(),
            average: 0.0,
            best: f64::INFINITY,
            finished: false,
        })
    }

    /// The number of steps the test would take without stopping early.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The rate to train step `step` (from 0) at: `min * (max/min)^(step/(steps-1))`, so
    /// `rate(0) = min_lr` and `rate(steps - 1) = max_lr`; steps past the last give `max_lr`.
    pub fn rate(&self, step: usize) -> f32 {
        if step >= self.steps - 1 {
            return self.max_lr;
        }
        let (min, max) = (self.min_lr as f64, self.max_lr as f64);
        (min * libm::pow(max / min, step as f64 / (self.steps - 1) as f64)) as f32
    }

    /// The rate of the next step to take, or `None` once the test has stopped.
    pub fn next_rate(&self) -> Option<f32> {
        if self.finished { None } else { Some(self.rate(self.points.len())) }
    }

    /// Whether the test has stopped (the last [`LrRangeTest::record`] returned false).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Record the loss of the step just taken at `rate(step)`, where `step` is the number of
    /// losses recorded before; returns false when the test should stop: the exponentially
    /// smoothed loss (beta 0.98, bias-corrected as fastai:
    /// `avg = 0.98 * avg + 0.02 * loss`, `smoothed = avg / (1 - 0.98^(step + 1))`) exceeds 4x
    /// the best smoothed loss seen, or the loss is not finite, or all steps are done.
    /// A non-finite loss is not recorded as a point; once stopped, further losses are ignored
    /// (and false is returned again).
    pub fn record(&mut self, loss: f64) -> bool {
        if self.finished {
            return false;
        }
        if !loss.is_finite() {
            self.finished = true;
            return false;
        }
        let step = self.points.len();
        self.average = SMOOTHING * self.average + (1.0 - SMOOTHING) * loss;
        let smoothed = self.average / (1.0 - libm::pow(SMOOTHING, (step + 1) as f64));
        self.points.push((self.rate(step), loss, smoothed));
        if smoothed < self.best {
            self.best = smoothed;
        }
        if !smoothed.is_finite() || smoothed > DIVERGENCE_FACTOR * self.best || self.points.len() >= self.steps {
            self.finished = true;
            return false;
        }
        true
    }

    /// `(rate, raw loss, smoothed loss)` for every recorded step, in order (for plotting the
    /// loss against the rate on a log axis).
    pub fn points(&self) -> &[(f32, f64, f64)] {
        &self.points
    }

    /// The suggested rates, from the smoothed losses; `None` with fewer than [`MIN_POINTS`] (5)
    /// points.
    ///
    /// - `min_over_10`: the rate of the lowest smoothed loss (the first, if several are equal),
    ///   divided by 10: a rate safely below where the loss stops improving.
    /// - `steepest`: the rate at the point of steepest descent of the smoothed loss `s` against
    ///   `log10(rate)`, by central difference `(s[i+1] - s[i-1]) / (log10 r[i+1] - log10 r[i-1])`
    ///   over the points `i` from `max(1, n/10)` (skipping the first 10%, where the bias-corrected
    ///   average is still settling) to the minimum (points after it, where the loss is rising,
    ///   are ignored), `n` being the number of points. If the minimum lies inside the skipped
    ///   start, all interior points `1..=n-2` are considered; if none descends, this is the
    ///   point where the loss rises least.
    pub fn suggestions(&self) -> Option<Suggestions> {
        let n = self.points.len();
        if n < MIN_POINTS {
            return None;
        }
        let smoothed = |i: usize| self.points[i].2;
        let mut i_min = 0;
        for i in 1..n {
            if smoothed(i) < smoothed(i_min) {
                i_min = i;
            }
        }
        let (mut lo, mut hi) = ((n / 10).max(1), i_min.min(n - 2));
        if lo > hi {
            (lo, hi) = (1, n - 2);
        }
        // Rates are exactly exponential in the step, so log10(r[i+1]) - log10(r[i-1]) is the
        // same positive constant for every i (computed from the formula, not from the rounded
        // f32 rates, so it is never zero).
        let dx = 2.0 * libm::log10(self.max_lr as f64 / self.min_lr as f64) / (self.steps - 1) as f64;
        let mut steepest = lo;
        let mut steepest_slope = f64::INFINITY;
        for i in lo..=hi {
            let slope = (smoothed(i + 1) - smoothed(i - 1)) / dx;
            if slope < steepest_slope {
                steepest_slope = slope;
                steepest = i;
            }
        }
        Some(Suggestions { steepest: self.points[steepest].0, min_over_10: self.points[i_min].0 / 10.0 })
    }
}
