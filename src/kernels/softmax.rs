//! Row-wise softmax fused with sparse categorical cross-entropy, vectorised along each row.
//!
//! Computing the two together avoids `log(softmax)`'s cancellation: the loss of a row is
//! `log(sum exp(x - max)) + (max - x[label])`, and the gradient of the loss with respect to the
//! logits is `p - onehot(label)`. The two terms are added in f64, in that grouping: both are
//! non-negative, so a large common offset of the logits cancels exactly in `max - x[label]`
//! instead of rounding away the `log` (as `(max + log(sum)) - x[label]` in f32 did: off by
//! 4e-4 at logits near 1e4, and 0 instead of `log(n)` for `n` equal logits near 1e30), and
//! `max - x[label]` cannot overflow (it did for logits of both signs near `f32::MAX`).

use wide::f32x16;

use super::simd::{LANES, load_partial, store_partial};

/// Replaces each `n`-wide row of `logits` by its softmax. Returns the summed cross-entropy
/// against `labels` and how many rows' first arg-max equals their label.
///
/// Non-finite logits: -inf is a masked class (probability exactly 0; an infinite loss if it is
/// the label). A row holding NaN or +inf, or only -inf, gets NaN probabilities and a NaN loss
/// (so the sum is NaN); NaN never wins the arg-max.
///
/// # Panics
/// If `logits` is not `labels.len()` rows of `n`, or a label is not below `n`.
pub fn softmax_cross_entropy(logits: &mut [f32], n: usize, labels: &[u8]) -> (f64, usize) {
    assert!(
        n > 0 && logits.len() == labels.len() * n,
        "softmax: {} logits for {} rows of {n}",
        logits.len(),
        labels.len()
    );
    let mut loss = 0f64;
    let mut correct = 0;
    for (row, &label) in logits.chunks_exact_mut(n).zip(labels) {
        let label = label as usize;
        assert!(label < n, "label {label} is not below the {n} classes");
        let (max, argmax) = row_max(row);
        correct += usize::from(argmax == label);
        let logit = row[label];
        let sum = exp_shifted_in_place(row, max);
        let inv = 1.0 / sum;
        for chunk in row.chunks_mut(LANES) {
            store_partial(chunk, load_partial(chunk, 0.0) * f32x16::splat(inv));
        }
        loss += libm::logf(sum) as f64 + (max as f64 - logit as f64);
    }
    (loss, correct)
}

/// Softmax of each row in place, without a loss (for prediction).
pub fn softmax_rows(logits: &mut [f32], n: usize) {
    assert!(n > 0 && logits.len().is_multiple_of(n), "softmax: {} values are not rows of {n}", logits.len());
    for row in logits.chunks_exact_mut(n) {
        let (max, _) = row_max(row);
        let inv = 1.0 / exp_shifted_in_place(row, max);
        for chunk in row.chunks_mut(LANES) {
            store_partial(chunk, load_partial(chunk, 0.0) * f32x16::splat(inv));
        }
    }
}

/// Turns softmax outputs into the gradient of `scale * summed loss` with respect to the
/// logits: `scale * (p - onehot(label))`, in place.
pub fn softmax_cross_entropy_grad(probs: &mut [f32], n: usize, labels: &[u8], scale: f32) {
    assert!(probs.len() == labels.len() * n, "softmax grad: {} values for {} rows of {n}", probs.len(), labels.len());
    for (row, &label) in probs.chunks_exact_mut(n).zip(labels) {
        row[label as usize] -= 1.0;
        for chunk in row.chunks_mut(LANES) {
            store_partial(chunk, load_partial(chunk, 0.0) * f32x16::splat(scale));
        }
    }
}

/// The row's maximum and the index of its first occurrence (NaN never wins).
fn row_max(row: &[f32]) -> (f32, usize) {
    let mut best = (f32::NEG_INFINITY, 0);
    for (j, &x) in row.iter().enumerate() {
        if x > best.0 {
            best = (x, j);
        }
    }
    best
}

/// `row[j] = exp(row[j] - max)`; returns the sum.
fn exp_shifted_in_place(row: &mut [f32], max: f32) -> f32 {
    let mut sum = f32x16::ZERO;
    for chunk in row.chunks_mut(LANES) {
        // Padding lanes hold -inf, whose exp is 0: they add nothing to the sum.
        let e = (load_partial(chunk, f32::NEG_INFINITY) - f32x16::splat(max)).exp();
        store_partial(chunk, e);
        sum += e;
    }
    sum.reduce_add()
}
