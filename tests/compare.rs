//! `simdnn::train::compare` on synthetic run directories with known numbers: the table and
//! the answers in `report.md` against the histories, the learning-curve SVG, the terminal
//! table, label clashes, and every error (no run, no history, malformed files, an out
//! directory that cannot be created). Imports only the public API and `tempfile`.

use std::fs;
use std::path::{Path, PathBuf};

use simdnn::train::EpochRecord;
use simdnn::train::compare::{
    Comparison, REPORT_FILE, RunRecord, SVG_FILE, compare, load_run, load_runs, write_report,
};
use simdnn::train::history::to_csv;

/// (loss, accuracy, val_loss, val_accuracy, seconds) of each epoch.
type Epochs = [(f64, f64, f64, f64, f64)];

fn records(epochs: &Epochs) -> Vec<EpochRecord> {
    epochs
        .iter()
        .enumerate()
        .map(|(i, &(loss, accuracy, val_loss, val_accuracy, seconds))| EpochRecord {
            epoch: i + 1,
            loss,
            accuracy,
            val_loss,
            val_accuracy,
            lr: 1e-4,
            seconds,
        })
        .collect()
}

/// A run directory as `simdnn train` leaves it: history.csv (written by the trainer's own
/// `to_csv`), config.json and summary.json.
fn write_run(parent: &Path, name: &str, preset: &str, epochs: &Epochs) -> PathBuf {
    let dir = parent.join(name);
    fs::create_dir_all(&dir).unwrap();
    let history = records(epochs);
    fs::write(dir.join("history.csv"), to_csv(&history)).unwrap();
    let config = serde_json::json!({ "preset": preset, "lr": 1e-4, "batch_size": 32 });
    fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let summary = serde_json::json!({
        "best_epoch": 0, "best_val_loss": 0.0, "best_val_accuracy": 0.0,
        "epochs_run": history.len(), "stopped_early": true, "train_seconds": 0.0,
        "mean_epoch_seconds": 0.0, "parameters": 273_010, "out_dir": dir,
    });
    fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    dir
}

/// The reference: best val_loss 1.5 at epoch 4 (val_accuracy 0.4712), 10 s per epoch.
const BASELINE: &Epochs = &[
    (2.1, 0.25, 2.0, 0.3001, 10.0),
    (1.8, 0.35, 1.8, 0.3802, 10.5),
    (1.6, 0.42, 1.6, 0.4403, 9.5),
    (1.45, 0.48, 1.5, 0.4712, 10.0),
    (1.3, 0.53, 1.55, 0.4654, 10.0),
    (1.2, 0.57, 1.52, 0.4698, 10.0),
];
/// Reaches 1.5 at epoch 2 (1.49), best 1.3 at epoch 4 (0.5321), 12.5 s per epoch.
const BATCHNORM: &Epochs = &[
    (1.9, 0.31, 1.7, 0.4011, 12.0),
    (1.5, 0.45, 1.49, 0.4802, 13.0),
    (1.3, 0.52, 1.45, 0.4988, 12.5),
    (1.1, 0.6, 1.3, 0.5321, 12.5),
    (0.9, 0.68, 1.35, 0.5299, 12.5),
];
/// Never reaches 1.5: best 1.65 at epoch 4 (0.4001), 8 s per epoch.
const SELU: &Epochs = &[
    (2.3, 0.2, 2.1, 0.2501, 8.0),
    (2.0, 0.28, 1.9, 0.3102, 8.0),
    (1.8, 0.33, 1.7, 0.3703, 8.0),
    (1.7, 0.37, 1.65, 0.4001, 8.0),
];

struct Fixture {
    _tmp: tempfile::TempDir,
    runs: Vec<PathBuf>,
    out: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let runs = vec![
        write_run(tmp.path(), "baseline", "8a", BASELINE),
        write_run(tmp.path(), "batchnorm", "8c", BATCHNORM),
        write_run(tmp.path(), "selu", "8d", SELU),
    ];
    let out = tmp.path().join("cmp").join("out");
    Fixture { _tmp: tmp, runs, out }
}

/// The cells of the Markdown table's row for `label`.
fn table_row(report: &str, label: &str) -> Vec<String> {
    let line = report
        .lines()
        .find(|l| l.starts_with('|') && l.split('|').nth(1).is_some_and(|c| c.trim() == label))
        .unwrap_or_else(|| panic!("no table row for {label} in:\n{report}"));
    let cells: Vec<&str> = line.split('|').collect();
    cells[1..cells.len() - 1].iter().map(|c| c.trim().to_string()).collect()
}

#[test]
fn report_table_matches_the_histories() {
    let f = fixture();
    let comparison = write_report(&f.runs, &f.out).unwrap();
    let report = fs::read_to_string(f.out.join(REPORT_FILE)).unwrap();
    assert_eq!(report, comparison.to_markdown());
    assert!(report.starts_with("# "), "no title:\n{report}");
    let header = table_row(&report, "run");
    assert_eq!(
        header,
        [
            "run",
            "epochs",
            "best epoch",
            "best val_loss",
            "best val_accuracy",
            "Δ val_accuracy",
            "Δ val_loss",
            "epochs to ref. loss",
            "s to ref. loss",
            "s/epoch",
            "s/epoch vs ref.",
            "train s"
        ]
    );
    assert_eq!(
        table_row(&report, "baseline"),
        ["baseline", "6", "4", "1.5000", "0.4712", "+0.0000", "+0.0000", "4", "40.0", "10.00", "1.00x", "60.0"]
    );
    assert_eq!(
        table_row(&report, "batchnorm"),
        ["batchnorm", "5", "4", "1.3000", "0.5321", "+0.0609", "-0.2000", "2", "25.0", "12.50", "1.25x", "62.5"]
    );
    assert_eq!(
        table_row(&report, "selu"),
        ["selu", "4", "4", "1.6500", "0.4001", "-0.0711", "+0.1500", "never", "never", "8.00", "0.80x", "32.0"]
    );
    assert!(report.contains(&format!("]({SVG_FILE})")), "no link to the SVG:\n{report}");
}

#[test]
fn rows_are_derived_from_the_histories() {
    let f = fixture();
    let comparison = write_report(&f.runs, &f.out).unwrap();
    let labels: Vec<&str> = comparison.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["baseline", "batchnorm", "selu"]);
    for (row, epochs) in comparison.rows.iter().zip([BASELINE, BATCHNORM, SELU]) {
        let seconds: Vec<f64> = epochs.iter().map(|e| e.4).collect();
        let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
        assert!((row.mean_epoch_seconds - mean).abs() < 1e-12, "{}: {} vs {mean}", row.label, row.mean_epoch_seconds);
        assert_eq!(row.epochs_run, epochs.len());
        let (i, best) = epochs.iter().enumerate().min_by(|a, b| a.1.2.total_cmp(&b.1.2)).unwrap();
        assert_eq!(
            (row.best_epoch, row.best_val_loss, row.best_val_accuracy),
            (i + 1, best.2, best.3),
            "{}",
            row.label
        );
        assert_eq!(
            row.preset.as_deref(),
            Some(["8a", "8c", "8d"][labels.iter().position(|l| *l == row.label).unwrap()])
        );
        assert_eq!((row.stopped_early, row.parameters), (Some(true), Some(273_010)));
    }
    let reached: Vec<Option<usize>> = comparison.rows.iter().map(|r| r.epochs_to_reference_loss).collect();
    assert_eq!(reached, [Some(4), Some(2), None]);
    assert_eq!(comparison.rows[1].seconds_to_reference_loss, Some(25.0));
    assert_eq!(comparison.rows[2].seconds_to_reference_loss, None);
    let ratios: Vec<Option<f64>> = comparison.rows.iter().map(|r| r.epoch_time_ratio).collect();
    assert_eq!(ratios, [Some(1.0), Some(1.25), Some(0.8)]);
}

#[test]
fn report_answers_the_three_questions() {
    let f = fixture();
    write_report(&f.runs, &f.out).unwrap();
    let report = fs::read_to_string(f.out.join(REPORT_FILE)).unwrap();
    for question in
        ["Is the model converging faster?", "Does it produce a better model?", "How does it affect training speed?"]
    {
        assert!(report.contains(question), "missing {question:?}:\n{report}");
    }
    for expected in [
        "`batchnorm` reached `baseline`'s best validation loss (1.5000) at epoch 2, 2 epochs earlier than `baseline` (epoch 4): it converges faster",
        "`selu` never reached `baseline`'s best validation loss (1.5000) in its 4 epochs",
        "`batchnorm`'s best model (epoch 4) has validation accuracy 0.5321 and loss 1.3000, against 0.4712 and 1.5000 for `baseline` (+0.0609 accuracy, -0.2000 loss): a better model.",
        "a worse model.",
        "`batchnorm` takes 12.50 s per epoch against 10.00 s for `baseline`: 1.25x the time per epoch (25% slower)",
        "`selu` takes 8.00 s per epoch against 10.00 s for `baseline`: 0.80x the time per epoch (20% faster)",
    ] {
        assert!(report.contains(expected), "missing {expected:?} in:\n{report}");
    }
}

#[test]
fn svg_has_both_panels_curves_and_labels() {
    let f = fixture();
    write_report(&f.runs, &f.out).unwrap();
    let svg = fs::read_to_string(f.out.join(SVG_FILE)).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    for text in ["baseline", "batchnorm", "selu", "Loss", "Accuracy", "epoch", "accuracy", "best val_loss of baseline"]
    {
        assert!(svg.contains(&format!(">\n{text}\n</text>")) || svg.contains(&format!(">{text}</text>")), "{text}");
    }
    // Per run and panel: a solid validation polyline and several dashes of training curve.
    let polylines = svg.matches("<polyline").count() + svg.matches("<path").count();
    assert!(polylines >= 3 * 2 * 2, "{polylines} lines");
    // Each run's colour is used for its curves (Tableau blue, orange, green).
    for colour in ["#1F77B4", "#FF7F0E", "#2CA02C"] {
        assert!(svg.to_uppercase().contains(colour), "colour {colour}");
    }
}

#[test]
fn terminal_table_is_aligned_and_matches() {
    let f = fixture();
    let comparison = write_report(&f.runs, &f.out).unwrap();
    let table = comparison.to_terminal();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + 3, "{table}");
    let width = lines[0].chars().count();
    assert!(lines.iter().all(|l| l.chars().count() == width), "not aligned:\n{table}");
    let selu: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(
        selu,
        ["selu", "4", "4", "1.6500", "0.4001", "-0.0711", "+0.1500", "never", "never", "8.00", "0.80x", "32.0"]
    );
    // Column starts agree between the header and every row (right-aligned numbers end together).
    let end_of_epochs = lines[0].find("epochs").unwrap() + "epochs".len();
    for l in &lines[2..] {
        assert_ne!(l.as_bytes()[end_of_epochs - 1], b' ', "{l}");
        assert_eq!(l.as_bytes()[end_of_epochs], b' ', "{l}");
    }
}

#[test]
fn reaching_the_reference_loss_exactly_counts_and_ties_take_the_first_epoch() {
    let run = |label: &str, epochs: &Epochs| RunRecord {
        label: label.into(),
        dir: PathBuf::from(label),
        history: records(epochs),
        preset: None,
        stopped_early: None,
        parameters: None,
    };
    let reference = run("a", &[(1.0, 0.5, 1.2, 0.5, 1.0), (0.9, 0.6, 1.0, 0.6, 1.0), (0.8, 0.7, 1.0, 0.65, 1.0)]);
    let other = run("b", &[(1.0, 0.5, 1.1, 0.5, 2.0), (0.9, 0.6, 1.05, 0.6, 2.0), (0.8, 0.7, 1.0, 0.62, 2.0)]);
    let Comparison { rows } = compare(&[reference, other]);
    assert_eq!((rows[0].best_epoch, rows[0].best_val_accuracy), (2, 0.6));
    assert_eq!(rows[0].epochs_to_reference_loss, Some(2));
    assert_eq!(rows[1].epochs_to_reference_loss, Some(3));
    assert_eq!(rows[1].seconds_to_reference_loss, Some(6.0));
    assert_eq!(rows[1].epoch_time_ratio, Some(2.0));
    assert!(compare(&[]).rows.is_empty());
}

#[test]
fn single_run_reports_without_comparison() {
    let f = fixture();
    let comparison = write_report(&f.runs[..1], &f.out).unwrap();
    assert_eq!(comparison.rows.len(), 1);
    let report = fs::read_to_string(f.out.join(REPORT_FILE)).unwrap();
    assert!(report.contains("nothing to compare"), "{report}");
    assert_eq!(table_row(&report, "baseline")[1], "6");
}

#[test]
fn trainer_history_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    fs::create_dir(&dir).unwrap();
    // Full-precision values as the trainer writes them; seconds are written to 4 decimals.
    let history: Vec<EpochRecord> = (1..=3)
        .map(|epoch| EpochRecord {
            epoch,
            loss: 2.318_473_625_917_364 / epoch as f64,
            accuracy: 0.1 + 0.123_456_789_012_345_67 * epoch as f64,
            val_loss: 2.25 / (epoch as f64).sqrt(),
            val_accuracy: 1.0 / 3.0 + epoch as f64 * 0.01,
            lr: 1e-4,
            seconds: 61.2345 + epoch as f64,
        })
        .collect();
    fs::write(dir.join("history.csv"), to_csv(&history)).unwrap();
    let run = load_run(&dir).unwrap();
    assert_eq!(run.history, history);
    assert_eq!(run.label, "run");
    assert_eq!((&run.preset, run.stopped_early, run.parameters), (&None, None, None));
    let row = &compare(std::slice::from_ref(&run)).rows[0];
    assert_eq!((row.best_epoch, row.epochs_to_reference_loss), (3, Some(3)));
    assert_eq!(row.best_val_loss, history[2].val_loss);
    assert_eq!(row.best_val_accuracy, history[2].val_accuracy);
}

#[test]
fn clashing_directory_names_get_distinct_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_run(&tmp.path().join("a"), "run", "8a", BASELINE);
    let b = write_run(&tmp.path().join("b"), "run", "8b", SELU);
    let c = write_run(&tmp.path().join("c"), "run", "8b", SELU);
    let labels = |dirs: &[PathBuf]| -> Vec<String> { load_runs(dirs).unwrap().into_iter().map(|r| r.label).collect() };
    assert_eq!(labels(&[a.clone(), b.clone()]), ["8a/run", "8b/run"]);
    assert_eq!(labels(&[b.clone(), c.clone()]), [b.display().to_string(), c.display().to_string()]);
    assert_eq!(labels(&[a.clone(), a.clone()]), [a.display().to_string(), format!("{} #2", a.display())]);
    let other = write_run(tmp.path(), "other", "8a", BASELINE);
    assert_eq!(labels(&[a, other]), ["run", "other"]);
}

/// The error's message, which must name `path`.
fn error_naming(result: simdnn::Result<Comparison>, path: &Path) -> String {
    let message = result.expect_err("should fail").to_string();
    assert!(message.contains(&path.display().to_string()), "{message:?} does not name {}", path.display());
    message
}

#[test]
fn no_runs_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let message = write_report(&[], tmp.path()).expect_err("should fail").to_string();
    assert!(message.contains("at least one run"), "{message}");
}

#[test]
fn missing_run_or_history_names_the_path() {
    let f = fixture();
    let gone = f.runs[0].parent().unwrap().join("gone");
    let message = error_naming(write_report(&[f.runs[0].clone(), gone.clone()], &f.out), &gone);
    assert!(message.contains("no such run directory"), "{message}");
    let file = f.runs[0].join("config.json");
    let message = error_naming(write_report(std::slice::from_ref(&file), &f.out), &file);
    assert!(message.contains("not a directory"), "{message}");
    fs::remove_file(f.runs[1].join("history.csv")).unwrap();
    let message = error_naming(write_report(&f.runs, &f.out), &f.runs[1].join("history.csv"));
    assert!(message.contains("missing"), "{message}");
    assert!(!f.out.exists(), "nothing is written when a run cannot be read");
}

#[test]
fn malformed_history_names_the_line() {
    let f = fixture();
    let path = f.runs[2].join("history.csv");
    let good = fs::read_to_string(&path).unwrap();
    let cases = [
        (good.replacen("2,2,0.28", "2,2,zero", 1), "line 3"),
        (good.replacen("val_loss", "vloss", 1), "line 1"),
        (format!("{good}5,1,0.5,1.6\n"), "line 6"),
        (good.replacen("\n3,", "\n7,", 1), "line 4: epoch 7 where epoch 3 was expected"),
        (good.lines().next().unwrap().to_string() + "\n", "no epochs"),
        (String::new(), "line 1"),
    ];
    for (text, expected) in cases {
        fs::write(&path, &text).unwrap();
        let message = error_naming(write_report(&f.runs, &f.out), &path);
        assert!(message.contains(expected), "{message:?} lacks {expected:?} for\n{text}");
    }
}

#[test]
fn malformed_json_names_the_file() {
    let f = fixture();
    let path = f.runs[1].join("config.json");
    fs::write(&path, "{\"preset\": ").unwrap();
    let message = error_naming(write_report(&f.runs, &f.out), &path);
    assert!(message.contains("not valid JSON"), "{message}");
    // Without config.json and summary.json (a run still training) the run still loads.
    fs::remove_file(&path).unwrap();
    fs::remove_file(f.runs[1].join("summary.json")).unwrap();
    let comparison = write_report(&f.runs, &f.out).unwrap();
    assert_eq!((comparison.rows[1].preset.as_deref(), comparison.rows[1].stopped_early), (None, None));
}

#[test]
fn unwritable_out_dir_names_the_path() {
    let f = fixture();
    // A directory under a regular file cannot be created, even by root.
    let file = f.runs[0].parent().unwrap().join("a-file");
    fs::write(&file, "not a directory").unwrap();
    let out = file.join("out");
    error_naming(write_report(&f.runs, &out), &out);
    // An existing report in the way (a directory named report.md) is reported too.
    fs::create_dir_all(f.out.join(REPORT_FILE).join("x")).unwrap();
    error_naming(write_report(&f.runs, &f.out), &f.out.join(REPORT_FILE));
}
