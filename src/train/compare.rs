//! Comparing training runs (exercise 8c of Géron's chapter 11: is the model converging faster?
//! does it produce a better model? how does it affect training speed?). Owns reading run
//! directories back (`history.csv`, and what `config.json` and `summary.json` add), the
//! comparison of every run against the first, and its outputs: `report.md`, an aligned
//! terminal table and `learning_curves.svg`. Every number is derived from the histories, so the
//! tables provably match the files. Imports `train::history`, `fsutil` and the crate's error,
//! plus `plotters` (SVG only, no fonts) and `serde_json`; nothing of `nn`, `optim` or `data`.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::history::{CSV_HEADER, EpochRecord, from_csv};
use crate::fsutil::write_atomic;
use crate::{Error, Result};

/// The chart [`write_report`] writes into its output directory.
pub const SVG_FILE: &str = "learning_curves.svg";
/// The report [`write_report`] writes into its output directory.
pub const REPORT_FILE: &str = "report.md";

/// One run directory, read back.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// The directory's name, made unique among the runs compared (see [`load_runs`]).
    pub label: String,
    pub dir: PathBuf,
    /// `history.csv`: at least one epoch, numbered 1, 2, 3...
    pub history: Vec<EpochRecord>,
    /// `config.json`'s "preset", when the file is there.
    pub preset: Option<String>,
    /// `summary.json`'s "stopped_early" (absent while a run is still training).
    pub stopped_early: Option<bool>,
    /// `summary.json`'s "parameters".
    pub parameters: Option<u64>,
}

/// Reads a run directory written by `simdnn train`. `history.csv` is required;
/// `config.json` and `summary.json` are optional (a run still training has no summary yet),
/// but must be valid JSON when present. Errors name the file and, for the CSV, the line.
pub fn load_run(dir: &Path) -> Result<RunRecord> {
    if !dir.exists() {
        return Err(Error::data(dir, "no such run directory"));
    }
    if !dir.is_dir() {
        return Err(Error::data(dir, "is not a directory (expected a run directory written by `simdnn train`)"));
    }
    let history_path = dir.join("history.csv");
    let text = match std::fs::read_to_string(&history_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::data(
                &history_path,
                "missing: is this a run directory written by `simdnn train`? (it writes history.csv after the first epoch)",
            ));
        }
        Err(e) => return Err(Error::io(&history_path, e)),
    };
    let history = parse_history(&text).map_err(|reason| Error::data(&history_path, reason))?;
    let config = read_json(&dir.join("config.json"))?;
    let summary = read_json(&dir.join("summary.json"))?;
    let preset = config.as_ref().and_then(|c| c.get("preset")).and_then(|p| p.as_str()).map(String::from);
    let stopped_early = summary.as_ref().and_then(|s| s.get("stopped_early")).and_then(|v| v.as_bool());
    let parameters = summary.as_ref().and_then(|s| s.get("parameters")).and_then(|v| v.as_u64());
    Ok(RunRecord { label: dir_name(dir), dir: dir.to_path_buf(), history, preset, stopped_early, parameters })
}

/// Loads every run, then makes the labels unique: a directory name shared by several runs
/// becomes "preset/name", then the path as given, then the path with "#2", "#3"...
pub fn load_runs(dirs: &[PathBuf]) -> Result<Vec<RunRecord>> {
    let mut runs = dirs.iter().map(|d| load_run(d)).collect::<Result<Vec<_>>>()?;
    let clashes = |runs: &[RunRecord], i: usize| runs.iter().filter(|r| r.label == runs[i].label).count() > 1;
    let renames: [fn(&RunRecord) -> Option<String>; 2] =
        [|r| r.preset.as_ref().map(|p| format!("{p}/{}", dir_name(&r.dir))), |r| Some(r.dir.display().to_string())];
    for rename in renames {
        let clashing: Vec<usize> = (0..runs.len()).filter(|&i| clashes(&runs, i)).collect();
        for i in clashing {
            if let Some(label) = rename(&runs[i]) {
                runs[i].label = label;
            }
        }
    }
    for i in 1..runs.len() {
        let repeats = runs[..i].iter().filter(|r| r.label == runs[i].label).count();
        if repeats > 0 {
            runs[i].label = format!("{} #{}", runs[i].label, repeats + 1);
        }
    }
    Ok(runs)
}

/// The last component of `dir` (of its absolute form for "." or ".."), else the path itself.
fn dir_name(dir: &Path) -> String {
    let absolute = std::fs::canonicalize(dir).ok();
    dir.file_name()
        .or_else(|| absolute.as_deref().and_then(Path::file_name))
        .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// `Ok(None)` when the file does not exist; an error naming it when it is not JSON.
fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text).map(Some).map_err(|e| Error::data(path, format!("is not valid JSON: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `history.csv` through [`from_csv`]; when that refuses the text, finds the line at fault.
fn parse_history(text: &str) -> core::result::Result<Vec<EpochRecord>, String> {
    let history = match from_csv(text) {
        Some(history) => history,
        None => {
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            if header != CSV_HEADER {
                return Err(format!("line 1: expected the header `{CSV_HEADER}`, found `{header}`"));
            }
            for (i, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
                if from_csv(&format!("{CSV_HEADER}\n{line}\n")).is_none() {
                    return Err(format!("line {}: cannot parse `{line}` (expected 7 numbers: {CSV_HEADER})", i + 2));
                }
            }
            return Err("cannot parse the history".into());
        }
    };
    if history.is_empty() {
        return Err("holds no epochs (only the header): nothing to compare".into());
    }
    // Every line is an epoch; report the line of the first one out of sequence.
    let data_lines = text.lines().enumerate().skip(1).filter(|(_, l)| !l.is_empty()).map(|(i, _)| i + 1);
    for ((expected, record), line) in (1..).zip(&history).zip(data_lines) {
        if record.epoch != expected {
            return Err(format!("line {line}: epoch {} where epoch {expected} was expected", record.epoch));
        }
    }
    Ok(history)
}

/// Every run against the first (the reference).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub rows: Vec<ComparisonRow>,
}

/// One run's numbers, all derived from its `history.csv`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ComparisonRow {
    pub label: String,
    pub dir: PathBuf,
    pub preset: Option<String>,
    pub stopped_early: Option<bool>,
    pub parameters: Option<u64>,
    /// Lines of the history.
    pub epochs_run: usize,
    /// The epoch of the lowest validation loss (the first, on a tie): the model that
    /// EarlyStopping restores and the checkpoint keeps.
    pub best_epoch: usize,
    pub best_val_loss: f64,
    /// The validation accuracy of `best_epoch`.
    pub best_val_accuracy: f64,
    /// Epochs this run needed to reach (val_loss <=) the FIRST run's best validation loss;
    /// None if it never did.
    pub epochs_to_reference_loss: Option<usize>,
    /// Wall-clock seconds of those epochs.
    pub seconds_to_reference_loss: Option<f64>,
    /// Mean of the `seconds` column.
    pub mean_epoch_seconds: f64,
    /// Sum of the `seconds` column.
    pub train_seconds: f64,
    /// `best_val_accuracy` minus the first run's.
    pub val_accuracy_delta: f64,
    /// `best_val_loss` minus the first run's.
    pub val_loss_delta: f64,
    /// `mean_epoch_seconds` over the first run's (None when the first run recorded no time).
    pub epoch_time_ratio: Option<f64>,
}

/// Compares every run against the first. Empty input gives an empty comparison.
pub fn compare(runs: &[RunRecord]) -> Comparison {
    let Some(reference) = runs.first() else { return Comparison { rows: Vec::new() } };
    let ref_best = best(&reference.history);
    let ref_mean = mean_seconds(&reference.history);
    let rows = runs
        .iter()
        .map(|run| {
            let h = &run.history;
            let b = best(h);
            let reached = h.iter().position(|r| r.val_loss <= ref_best.val_loss);
            let mean = mean_seconds(h);
            ComparisonRow {
                label: run.label.clone(),
                dir: run.dir.clone(),
                preset: run.preset.clone(),
                stopped_early: run.stopped_early,
                parameters: run.parameters,
                epochs_run: h.len(),
                best_epoch: b.epoch,
                best_val_loss: b.val_loss,
                best_val_accuracy: b.val_accuracy,
                epochs_to_reference_loss: reached.map(|i| h[i].epoch),
                seconds_to_reference_loss: reached.map(|i| h[..=i].iter().map(|r| r.seconds).sum()),
                mean_epoch_seconds: mean,
                train_seconds: h.iter().map(|r| r.seconds).sum(),
                val_accuracy_delta: b.val_accuracy - ref_best.val_accuracy,
                val_loss_delta: b.val_loss - ref_best.val_loss,
                epoch_time_ratio: (ref_mean > 0.0 && ref_mean.is_finite()).then(|| mean / ref_mean),
            }
        })
        .collect();
    Comparison { rows }
}

/// The epoch with the lowest validation loss (NaN counts as the highest; the first on a tie).
/// The history must not be empty ([`load_run`] ensures it).
fn best(history: &[EpochRecord]) -> &EpochRecord {
    let key = |r: &EpochRecord| if r.val_loss.is_nan() { f64::INFINITY } else { r.val_loss };
    history.iter().reduce(|a, b| if key(b) < key(a) { b } else { a }).unwrap_or(&EMPTY)
}

/// What [`best`] answers for an empty history (never in a loaded run).
static EMPTY: EpochRecord = EpochRecord {
    epoch: 0,
    loss: f64::NAN,
    accuracy: f64::NAN,
    val_loss: f64::NAN,
    val_accuracy: f64::NAN,
    lr: 0.0,
    seconds: 0.0,
};

fn mean_seconds(history: &[EpochRecord]) -> f64 {
    history.iter().map(|r| r.seconds).sum::<f64>() / history.len().max(1) as f64
}

/// Column headers of the table, and whether each is numeric (right-aligned).
const COLUMNS: [(&str, bool); 12] = [
    ("run", false),
    ("epochs", true),
    ("best epoch", true),
    ("best val_loss", true),
    ("best val_accuracy", true),
    ("Δ val_accuracy", true),
    ("Δ val_loss", true),
    ("epochs to ref. loss", true),
    ("s to ref. loss", true),
    ("s/epoch", true),
    ("s/epoch vs ref.", true),
    ("train s", true),
];

fn loss(x: f64) -> String {
    format!("{x:.4}")
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

impl ComparisonRow {
    /// The table cells, formatted as both tables show them.
    fn cells(&self) -> [String; 12] {
        [
            self.label.clone(),
            self.epochs_run.to_string(),
            self.best_epoch.to_string(),
            loss(self.best_val_loss),
            loss(self.best_val_accuracy),
            format!("{:+.4}", self.val_accuracy_delta),
            format!("{:+.4}", self.val_loss_delta),
            self.epochs_to_reference_loss.map_or_else(|| "never".into(), |e| e.to_string()),
            self.seconds_to_reference_loss.map_or_else(|| "never".into(), |s| format!("{s:.1}")),
            format!("{:.2}", self.mean_epoch_seconds),
            ratio(self.epoch_time_ratio),
            format!("{:.1}", self.train_seconds),
        ]
    }
}

impl Comparison {
    /// The first run, which every other is compared against.
    pub fn reference(&self) -> Option<&ComparisonRow> {
        self.rows.first()
    }

    /// The table in Markdown (columns padded so the source reads as a table too).
    pub fn markdown_table(&self) -> String {
        let escape = |s: &str| s.replace('|', "\\|");
        let header: Vec<String> = COLUMNS.iter().map(|(h, _)| h.to_string()).collect();
        let body: Vec<Vec<String>> = self.rows.iter().map(|r| r.cells().iter().map(|c| escape(c)).collect()).collect();
        let widths = widths(&header, &body);
        let line = |cells: &[String]| {
            let padded: Vec<String> =
                cells.iter().zip(&widths).zip(COLUMNS).map(|((c, &w), (_, right))| pad(c, w, right)).collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&header);
        let rule: Vec<String> = widths
            .iter()
            .zip(COLUMNS)
            .map(|(&w, (_, right))| if right { format!("{}:", "-".repeat(w - 1)) } else { "-".repeat(w) })
            .collect();
        out += &format!("| {} |\n", rule.join(" | "));
        for row in &body {
            out += &line(row);
        }
        out
    }

    /// The table as aligned plain text, for a terminal.
    pub fn to_terminal(&self) -> String {
        let header: Vec<String> = COLUMNS.iter().map(|(h, _)| h.to_string()).collect();
        let body: Vec<Vec<String>> = self.rows.iter().map(|r| r.cells().to_vec()).collect();
        let widths = widths(&header, &body);
        let line = |cells: &[String]| {
            let padded: Vec<String> =
                cells.iter().zip(&widths).zip(COLUMNS).map(|((c, &w), (_, right))| pad(c, w, right)).collect();
            format!("{}\n", padded.join("  ").trim_end())
        };
        let mut out = line(&header);
        out += &format!("{}\n", widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>().join("  "));
        for row in &body {
            out += &line(row);
        }
        out
    }

    /// The whole of `report.md`: the answers to the exercise's three questions for each run
    /// against the first, the table, and the learning curves ([`SVG_FILE`], beside it).
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("# Learning curves compared\n\n");
        let Some(r0) = self.reference() else {
            return out + "No runs.\n";
        };
        let others = &self.rows[1..];
        let _ = writeln!(
            out,
            "Exercise 8c of chapter 11: every run is compared with the first, `{}`, whose best \
             validation loss is {} at epoch {} of {}.\n",
            r0.label,
            loss(r0.best_val_loss),
            r0.best_epoch,
            r0.epochs_run
        );
        out += "Runs:\n\n";
        for r in &self.rows {
            let mut notes = Vec::new();
            if let Some(p) = &r.preset {
                notes.push(format!("preset {p}"));
            }
            if let Some(n) = r.parameters {
                notes.push(format!("{n} parameters"));
            }
            notes.push(format!("{} epochs", r.epochs_run));
            match r.stopped_early {
                Some(true) => notes.push("stopped early".into()),
                Some(false) => notes.push("ran all its epochs".into()),
                None => notes.push("no summary.json (still training?)".into()),
            }
            let _ = writeln!(out, "- `{}`: `{}` ({})", r.label, r.dir.display(), notes.join(", "));
        }
        let sections: [(&str, Sentence); 3] = [
            ("Is the model converging faster?", convergence_sentence),
            ("Does it produce a better model?", quality_sentence),
            ("How does it affect training speed?", speed_sentence),
        ];
        for (question, sentence) in sections {
            let _ = writeln!(out, "\n## {question}\n");
            if others.is_empty() {
                out += "Only one run: there is nothing to compare it with.\n";
            }
            for r in others {
                let _ = writeln!(out, "- {}", sentence(r, r0));
            }
        }
        out += "\n## Table\n\n";
        out += "Best = the epoch of the lowest validation loss (the model EarlyStopping restores); \
                Δ = this run's value minus the first run's; \"ref. loss\" = the first run's best validation \
                loss; seconds are wall-clock (training and validation), from the `seconds` column of \
                `history.csv`.\n\n";
        out += &self.markdown_table();
        let _ = write!(
            out,
            "\n## Learning curves\n\nSolid lines: validation; dashed: training; one colour per run.\n\n\
             ![Learning curves: loss and accuracy against epoch]({SVG_FILE})\n"
        );
        out
    }
}

/// One answer: a run (first argument) against the reference (second).
type Sentence = fn(&ComparisonRow, &ComparisonRow) -> String;

fn widths(header: &[String], body: &[Vec<String>]) -> Vec<usize> {
    (0..header.len())
        .map(|c| std::iter::once(header).chain(body.iter().map(Vec::as_slice)).map(|r| r[c].chars().count()).max())
        .map(|w| w.unwrap_or(0).max(3))
        .collect()
}

fn pad(cell: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(cell.chars().count()));
    if right { format!("{fill}{cell}") } else { format!("{cell}{fill}") }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

/// "Is the model converging faster?": epochs (and seconds) to reach the reference's best loss.
fn convergence_sentence(r: &ComparisonRow, r0: &ComparisonRow) -> String {
    let target = loss(r0.best_val_loss);
    let (Some(e), Some(s)) = (r.epochs_to_reference_loss, r.seconds_to_reference_loss) else {
        return format!(
            "`{}` never reached `{}`'s best validation loss ({target}) in its {}: its best was {} at \
             epoch {}, so it converges to a worse loss, or would need more epochs.",
            r.label,
            r0.label,
            plural(r.epochs_run, "epoch"),
            loss(r.best_val_loss),
            r.best_epoch
        );
    };
    let e0 = r0.epochs_to_reference_loss.unwrap_or(r0.best_epoch);
    let s0 = r0.seconds_to_reference_loss.unwrap_or(f64::NAN);
    let verdict = match e.cmp(&e0) {
        std::cmp::Ordering::Less => {
            format!("{} earlier than `{}` (epoch {e0}): it converges faster", plural(e0 - e, "epoch"), r0.label)
        }
        std::cmp::Ordering::Equal => {
            format!("the same epoch as `{}`: it converges neither faster nor slower in epochs", r0.label)
        }
        std::cmp::Ordering::Greater => {
            format!("{} later than `{}` (epoch {e0}): it converges more slowly", plural(e - e0, "epoch"), r0.label)
        }
    };
    format!(
        "`{}` reached `{}`'s best validation loss ({target}) at epoch {e}, {verdict} ({s:.1} s of training against {s0:.1} s).",
        r.label, r0.label
    )
}

/// "Does it produce a better model?": the best epochs' validation accuracy and loss.
fn quality_sentence(r: &ComparisonRow, r0: &ComparisonRow) -> String {
    let (da, dl) = (r.val_accuracy_delta, r.val_loss_delta);
    let verdict = if da == 0.0 && dl == 0.0 {
        "an equally good model".to_string()
    } else if da >= 0.0 && dl <= 0.0 {
        "a better model".to_string()
    } else if da <= 0.0 && dl >= 0.0 {
        "a worse model".to_string()
    } else if da > 0.0 {
        "mixed: a higher accuracy but a higher loss (more confident mistakes)".to_string()
    } else {
        "mixed: a lower loss but a lower accuracy".to_string()
    };
    format!(
        "`{}`'s best model (epoch {}) has validation accuracy {} and loss {}, against {} and {} for `{}` \
         ({da:+.4} accuracy, {dl:+.4} loss): {verdict}.",
        r.label,
        r.best_epoch,
        loss(r.best_val_accuracy),
        loss(r.best_val_loss),
        loss(r0.best_val_accuracy),
        loss(r0.best_val_loss),
        r0.label
    )
}

/// "How does it affect training speed?": seconds per epoch and their ratio.
fn speed_sentence(r: &ComparisonRow, r0: &ComparisonRow) -> String {
    let verdict = match r.epoch_time_ratio {
        None => format!("no ratio: `{}` recorded no time", r0.label),
        Some(x) => {
            let percent = ((x - 1.0) * 100.0).round();
            if percent == 0.0 {
                format!("{} the time per epoch, about the same speed", ratio(Some(x)))
            } else if percent > 0.0 {
                format!("{} the time per epoch ({percent:.0}% slower)", ratio(Some(x)))
            } else {
                format!("{} the time per epoch ({:.0}% faster)", ratio(Some(x)), -percent)
            }
        }
    };
    format!(
        "`{}` takes {:.2} s per epoch against {:.2} s for `{}`: {verdict}; {:.1} s of training in all \
         against {:.1} s.",
        r.label, r.mean_epoch_seconds, r0.mean_epoch_seconds, r0.label, r.train_seconds, r0.train_seconds
    )
}

/// Loads the runs, writes `out_dir/learning_curves.svg` and `out_dir/report.md` (creating
/// `out_dir`, each file atomically) and returns the comparison. Nothing is written when a run
/// cannot be read.
pub fn write_report(run_dirs: &[PathBuf], out_dir: &Path) -> Result<Comparison> {
    if run_dirs.is_empty() {
        return Err(Error::config("RUN", "compare needs at least one run directory"));
    }
    let runs = load_runs(run_dirs)?;
    let comparison = compare(&runs);
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let svg_path = out_dir.join(SVG_FILE);
    let svg = learning_curves_svg(&runs)
        .map_err(|e| Error::data(&svg_path, format!("cannot draw the learning curves: {e}")))?;
    write_atomic(&svg_path, svg.as_bytes())?;
    write_atomic(&out_dir.join(REPORT_FILE), comparison.to_markdown().as_bytes())?;
    Ok(comparison)
}

/// Tableau's ten colours, one per run (repeating after ten).
const COLOURS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// A metric drawn in one panel: its title, axis label, training and validation values.
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    train: fn(&EpochRecord) -> f64,
    val: fn(&EpochRecord) -> f64,
    legend: plotters::chart::SeriesLabelPosition,
    /// Draw the first run's best validation loss as a dotted grey line.
    reference_line: bool,
}

type DrawResult = core::result::Result<(), Box<dyn std::error::Error>>;

/// Two panels side by side (loss, accuracy) against epoch: per run, validation solid and
/// training dashed in the run's colour; a legend of run labels in each panel. Text is SVG
/// `<text>`, so no font files are needed.
pub fn learning_curves_svg(runs: &[RunRecord]) -> core::result::Result<String, Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1400, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled("Learning curves (solid: validation, dashed: training)", ("sans-serif", 24))?;
        let (left, right) = root.split_horizontally(700);
        let panels = [
            Panel {
                title: "Loss",
                y_desc: "loss (cross-entropy)",
                train: |r| r.loss,
                val: |r| r.val_loss,
                legend: SeriesLabelPosition::UpperRight,
                reference_line: true,
            },
            Panel {
                title: "Accuracy",
                y_desc: "accuracy",
                train: |r| r.accuracy,
                val: |r| r.val_accuracy,
                legend: SeriesLabelPosition::LowerRight,
                reference_line: false,
            },
        ];
        for (area, panel) in [left, right].iter().zip(&panels) {
            draw_panel(area, runs, panel)?;
        }
        root.present()?;
    }
    Ok(svg)
}

fn draw_panel<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    runs: &[RunRecord],
    panel: &Panel,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    let last_epoch = runs.iter().filter_map(|r| r.history.last()).map(|r| r.epoch).max().unwrap_or(1);
    let x_max = i32::try_from(last_epoch).unwrap_or(i32::MAX).max(2);
    let values = runs.iter().flat_map(|r| &r.history).flat_map(|r| [(panel.train)(r), (panel.val)(r)]);
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, v| Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v)))))
        .unwrap_or((0.0, 1.0));
    let pad = if hi > lo { (hi - lo) * 0.05 } else { hi.abs().max(1.0) * 0.05 };
    let (y_lo, y_hi) = (if lo >= 0.0 { (lo - pad).max(0.0) } else { lo - pad }, hi + pad);

    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(1i32..x_max, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(panel.y_desc)
        .x_labels((x_max as usize).min(12))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .light_line_style(TRANSPARENT)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    if let Some(first) = runs.first().filter(|_| panel.reference_line) {
        let target = best(&first.history).val_loss;
        if target.is_finite() {
            let grey = RGBColor(90, 90, 90).stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new([(1, target), (x_max, target)], 2, 3, grey))?
                .label(format!("best val_loss of {}", first.label))
                .legend(move |(x, y)| plotters::element::DashedPathElement::new(vec![(x, y), (x + 24, y)], 2, 3, grey));
        }
    }
    for (i, run) in runs.iter().enumerate() {
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        let colour = RGBColor(r, g, b);
        let points = |f: fn(&EpochRecord) -> f64| -> Vec<(i32, f64)> {
            run.history
                .iter()
                .filter(|e| f(e).is_finite())
                .map(|e| (i32::try_from(e.epoch).unwrap_or(i32::MAX), f(e)))
                .collect()
        };
        chart.draw_series(DashedLineSeries::new(points(panel.train), 6, 4, colour.stroke_width(1)))?;
        chart
            .draw_series(LineSeries::new(points(panel.val), colour.stroke_width(2)).point_size(2))?
            .label(run.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(panel.legend.clone())
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .draw()?;
    Ok(())
}
