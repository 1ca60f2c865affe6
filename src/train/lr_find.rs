//! The learning-rate range test (Smith, 2015) on a real model and data set: train from a
//! copy of the initial weights while the rate grows exponentially, record the smoothed loss,
//! stop when it diverges, and suggest rates (see [`crate::optim::lr_range`] for the rules).
//! Writes `lr_find.csv` and `lr_find.svg`. The caller's model is never modified.

use std::path::Path;

use super::Trainer;
use super::config::TrainConfig;
use crate::data::Split;
use crate::fsutil::write_atomic;
use crate::nn::{Preprocess, Sequential};
use crate::optim::lr_range::{LrRangeTest, Suggestions};
use crate::{Error, Result};

/// Steps of the sweep unless asked otherwise (fastai uses 100; more points give a smoother
/// curve and still cost a small part of one 8a epoch).
pub const DEFAULT_STEPS: usize = 200;

/// The range and length of a sweep.
#[derive(Clone, Copy, Debug)]
pub struct LrFindSettings {
    pub min_lr: f32,
    pub max_lr: f32,
    /// At most one epoch of mini-batches.
    pub steps: usize,
}

impl Default for LrFindSettings {
    fn default() -> Self {
        use crate::optim::lr_range::{DEFAULT_MAX_LR, DEFAULT_MIN_LR};
        LrFindSettings { min_lr: DEFAULT_MIN_LR, max_lr: DEFAULT_MAX_LR, steps: DEFAULT_STEPS }
    }
}

/// Runs the sweep with `cfg`'s optimiser and batch size on a copy of `model`.
pub fn range_test(
    model: &Sequential,
    cfg: &TrainConfig,
    train: &Split<'_>,
    preprocess: &Preprocess,
    settings: LrFindSettings,
) -> Result<LrRangeTest> {
    let optimizer = cfg.optimizer.build(model.num_params());
    // The trainer wants a validation split; the sweep never evaluates, so the training split
    // stands in.
    let mut trainer = Trainer::new(
        model.clone(),
        optimizer,
        preprocess.clone(),
        train.clone(),
        train.clone(),
        cfg.batch_size,
        cfg.lr,
        cfg.seed,
    )?;
    trainer.precision = cfg.precision;
    let steps = settings.steps.min(trainer.steps_per_epoch());
    let mut test = LrRangeTest::new(settings.min_lr, settings.max_lr, steps).map_err(|e| match e {
        // The range test names its arguments; here they are flags.
        Error::Config { name, reason } => Error::config(format!("--{}", name.replace('_', "-")), reason),
        other => other,
    })?;
    trainer.shuffle(1);
    let _warm = crate::parallel::KeepWarm::start();
    for step in 0..steps {
        let loss = match trainer.step(1, step, test.rate(step), None) {
            Ok((loss, _, n)) => loss / n as f64,
            // A diverged step ends the sweep: that is what it is looking for.
            Err(Error::Diverged { .. }) => f64::NAN,
            Err(other) => return Err(other),
        };
        if !test.record(loss) {
            break;
        }
    }
    Ok(test)
}

/// The files [`write_results`] writes: `lr,loss,smoothed_loss` per step, and the plot.
pub const LR_FIND_FILES: [&str; 2] = ["lr_find.csv", "lr_find.svg"];

/// [`LR_FIND_FILES`] in `dir`.
pub fn write_results(dir: &Path, test: &LrRangeTest) -> Result<()> {
    use std::fmt::Write;
    let mut csv = String::from("lr,loss,smoothed_loss\n");
    for (lr, loss, smooth) in test.points() {
        let _ = writeln!(csv, "{lr},{loss},{smooth}");
    }
    write_atomic(&dir.join(LR_FIND_FILES[0]), csv.as_bytes())?;
    let svg =
        plot(test.points(), test.suggestions()).map_err(|e| Error::data(dir.join(LR_FIND_FILES[1]), e.to_string()))?;
    write_atomic(&dir.join(LR_FIND_FILES[1]), svg.as_bytes())
}

/// Smoothed and raw loss against the rate on a log axis, suggestions as vertical lines.
fn plot(
    points: &[(f32, f64, f64)],
    suggestions: Option<Suggestions>,
) -> std::result::Result<String, Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.0 as f64), hi.max(p.0 as f64)));
        let (lo, hi) = if lo < hi { (lo, hi) } else { (1e-7, 10.0) };
        let finite = points.iter().flat_map(|p| [p.1, p.2]).filter(|v| v.is_finite());
        let (y_lo, y_hi) = finite.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let (y_lo, y_hi) = if y_lo < y_hi { (y_lo, y_hi) } else { (0.0, 1.0) };
        let mut chart = ChartBuilder::on(&root)
            .caption("Learning-rate range test", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), y_lo..y_hi)?;
        chart.configure_mesh().x_desc("learning rate (log scale)").y_desc("training loss").draw()?;
        let raw = points.iter().filter(|p| p.1.is_finite()).map(|p| (p.0 as f64, p.1));
        chart
            .draw_series(LineSeries::new(raw, RGBColor(170, 170, 170)))?
            .label("loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(170, 170, 170)));
        let smooth = points.iter().filter(|p| p.2.is_finite()).map(|p| (p.0 as f64, p.2));
        chart
            .draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))?
            .label("smoothed loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        if let Some(s) = suggestions {
            for (rate, name, colour) in [(s.steepest, "steepest descent", RED), (s.min_over_10, "minimum / 10", GREEN)]
            {
                let rate = rate as f64;
                chart
                    .draw_series(LineSeries::new([(rate, y_lo), (rate, y_hi)], colour.stroke_width(2)))?
                    .label(format!("{name}: {rate:.2e}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            }
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.9)).border_style(BLACK).draw()?;
        root.present()?;
    }
    Ok(svg)
}
