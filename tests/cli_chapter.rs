//! The chapter's later exercises through the binary, on a tiny generated data set: schedules
//! and the per-step log, the learning-rate range test, `--lr auto`, `sweep`, `compare`, batch
//! norm and MC dropout evaluation.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::CliScratch;
use serde_json::Value;
use simdnn::optim::schedule::OneCycle;

const RECORDS_PER_FILE: usize = 60;
/// 5 x 60 records, 40 validate: 260 train, so 17 steps of 16 per epoch.
const STEPS_PER_EPOCH: u64 = 17;

/// The shared scratch directory.
fn scratch() -> CliScratch {
    CliScratch::new(RECORDS_PER_FILE, 5)
}

/// A small training run into `name` with extra flags.
fn train(s: &CliScratch, name: &str, extra: &[&str]) -> PathBuf {
    let out = s.path(name);
    let mut args = vec!["train", "--out", out.to_str().unwrap(), "--depth", "2", "--width", "16"];
    args.extend(["--val-size", "40", "--threads", "1", "--quiet"]);
    for (flag, default) in [("--epochs", "2"), ("--batch-size", "16")] {
        if !extra.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args.extend(extra);
    s.ok(&args);
    out
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect()
}

#[test]
fn one_cycle_drives_every_step_and_the_step_log_records_it() {
    let s = scratch();
    let run =
        train(&s, "run", &["--optimizer", "sgd", "--schedule", "1cycle:0.05,momentum", "--step-log", "--epochs", "3"]);
    let steps = csv_rows(&run.join("steps.csv"));
    let iterations = 3 * STEPS_PER_EPOCH;
    assert_eq!(steps.len() as u64, iterations);
    let schedule = OneCycle::new(iterations, 0.05).with_momentum();
    for (i, row) in steps.iter().enumerate() {
        let (lr, momentum): (f32, f32) = (row[2].parse().unwrap(), row[3].parse().unwrap());
        assert!((lr - schedule.lr(i as u64)).abs() <= 1e-7 * lr.max(1.0), "step {i}: lr {lr}");
        assert!((momentum - schedule.momentum(i as u64).unwrap()).abs() <= 1e-6, "step {i}: momentum {momentum}");
    }
    // history.csv's lr column is each epoch's last rate.
    let history = csv_rows(&run.join("history.csv"));
    for (e, row) in history.iter().enumerate() {
        let last = &steps[(e + 1) * STEPS_PER_EPOCH as usize - 1][2];
        assert_eq!(row[5].parse::<f32>().unwrap(), last.parse::<f32>().unwrap());
    }
    assert_eq!(json_file(&run.join("config.json"))["schedule"], "1cycle:0.05,momentum");
}

#[test]
fn bad_schedules_name_the_flag() {
    let s = scratch();
    for spec in ["1cycle", "exponential:0@5", "fast", "1cycle:0.05,momentum"] {
        let out = s.run(&["train", "--out", s.path("x").to_str().unwrap(), "--schedule", spec]);
        assert!(!out.status.success(), "{spec} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--schedule"), "{spec}: {stderr}");
    }
}

#[test]
fn bad_range_test_settings_name_their_flag() {
    let s = scratch();
    let out_dir = s.path("x");
    let common = ["lr-find", "--out", out_dir.to_str().unwrap(), "--depth", "2", "--width", "16", "--val-size", "40"];
    for (flags, flag) in [
        (["--min-lr", "1", "--max-lr", "0.1"], "`--max-lr`"),
        (["--min-lr", "0", "--max-lr", "1"], "`--min-lr`"),
        (["--steps", "1", "--max-lr", "1"], "`--steps`"),
    ] {
        let out = s.run(&[&common[..], &flags].concat());
        assert!(!out.status.success(), "{flags:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("invalid setting {flag}")), "{flags:?}: {stderr}");
    }
}

#[test]
fn lr_find_writes_the_sweep_and_lr_auto_trains_at_its_suggestion() {
    let s = scratch();
    let dir = s.path("lrf");
    let stdout = s.ok(&[
        "lr-find",
        "--out",
        dir.to_str().unwrap(),
        "--depth",
        "2",
        "--width",
        "16",
        "--batch-size",
        "8",
        "--val-size",
        "40",
    ]);
    assert!(stdout.contains("steps in"), "{stdout}");
    let points = csv_rows(&dir.join("lr_find.csv"));
    assert!(points.len() >= 5, "{} points", points.len());
    let rates: Vec<f64> = points.iter().map(|r| r[0].parse().unwrap()).collect();
    let ratio = rates[1] / rates[0];
    assert!(rates.windows(2).all(|w| (w[1] / w[0] / ratio - 1.0).abs() < 1e-3), "rates grow exponentially");
    assert!((rates[0] - 1e-7).abs() < 1e-12);
    let svg = fs::read_to_string(dir.join("lr_find.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("learning rate"));

    let run = train(&s, "auto", &["--lr", "auto", "--batch-size", "8", "--epochs", "1"]);
    let config = json_file(&run.join("config.json"));
    let chosen = config["lr"].as_f64().unwrap();
    assert_eq!(config["lr_auto"]["min_over_10"].as_f64().unwrap(), chosen);
    assert!(run.join("lr_find.csv").exists());
    let history = csv_rows(&run.join("history.csv"));
    assert!((history[0][5].parse::<f64>().unwrap() - chosen).abs() <= 1e-6 * chosen);
}

#[test]
fn sweep_trains_once_per_rate_and_tabulates() {
    let s = scratch();
    let out = s.path("sweep");
    let args =
        ["sweep", "--out", out.to_str().unwrap(), "--lr", "1e-3,1e-2", "--epochs", "1", "--depth", "1", "--width", "8"];
    let stdout = s.ok(&[&args[..], &["--val-size", "40", "--threads", "1"]].concat());
    assert!(stdout.contains("(best)"), "{stdout}");
    let table = fs::read_to_string(out.join("sweep.md")).unwrap();
    assert_eq!(table.lines().filter(|l| l.starts_with("| 1e-")).count(), 2, "{table}");
    for rate in ["1e-3", "1e-2"] {
        let summary = json_file(&out.join(format!("lr-{rate}")).join("summary.json"));
        assert!(table.contains(&format!("{:.4}", summary["best_val_loss"].as_f64().unwrap())), "{table}");
    }
    assert_eq!(csv_rows(&out.join("sweep.csv")).len(), 2);
}

#[test]
fn batch_norm_runs_compare_and_mc_dropout_evaluates() {
    let s = scratch();
    let plain = train(&s, "plain", &[]);
    let bn = train(&s, "bn", &["--batch-norm"]);
    let report = s.path("report");
    let stdout = s.ok(&["compare", plain.to_str().unwrap(), bn.to_str().unwrap(), "--out", report.to_str().unwrap()]);
    assert!(stdout.contains("bn"), "{stdout}");
    assert!(report.join("learning_curves.svg").exists() && report.join("report.md").exists());
    assert!(json_file(&bn.join("summary.json"))["non_trainable_parameters"].as_u64().unwrap() > 0);

    let selu = train(
        &s,
        "selu",
        &["--activation", "selu", "--init", "lecun_normal", "--standardise", "--alpha-dropout", "0.1"],
    );
    let model = selu.join("best.simdnn");
    let probs = s.path("probs.csv");
    let out = s.ok(&["eval", model.to_str().unwrap(), "--mc", "5", "--json", "--probs", probs.to_str().unwrap()]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    for key in ["accuracy", "nll", "ece", "mean_entropy"] {
        assert!(v[key].as_f64().is_some_and(f64::is_finite), "{key} in {v}");
    }
    // One line per test record (60) plus the header; 10 means and 10 deviations each.
    let text = fs::read_to_string(&probs).unwrap();
    assert_eq!(text.lines().count(), RECORDS_PER_FILE + 1);
    assert_eq!(text.lines().nth(1).unwrap().split(',').count(), 2 + 20);
    // The same seed gives the same numbers.
    let again: Value =
        serde_json::from_str(s.ok(&["eval", model.to_str().unwrap(), "--mc", "5", "--json"]).trim()).unwrap();
    for key in ["accuracy", "nll", "ece", "mean_entropy"] {
        assert_eq!(again[key], v[key], "{key}");
    }
    // A SELU network without its conditions is warned about.
    let warn = s.run(&[
        "train",
        "--out",
        s.path("w").to_str().unwrap(),
        "--activation",
        "selu",
        "--epochs",
        "1",
        "--depth",
        "1",
        "--width",
        "8",
        "--val-size",
        "40",
    ]);
    assert!(String::from_utf8_lossy(&warn.stderr).contains("will not self-normalise"));
}

#[test]
fn diverging_training_stops_with_the_epoch_step_and_a_lower_rate() {
    let s = scratch();
    let out = s.path("diverged");
    let args = ["train", "--out", out.to_str().unwrap(), "--epochs", "3", "--depth", "8", "--width", "64"];
    let bad = ["--val-size", "40", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "10", "--activation", "relu"];
    let run = s.run(&[&args[..], &bad].concat());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(stderr.contains("diverged at epoch 1, step") && stderr.contains("--lr 1e0"), "{stderr}");
    // No checkpoint of a diverged model is written.
    assert!(!out.join("best.simdnn").exists());
}

#[test]
fn export_quantises_and_eval_reports_deployment_figures() {
    let s = scratch();
    let run = train(&s, "bn", &["--batch-norm"]);
    let model = run.join("best.simdnn");
    let mut sizes = Vec::new();
    let exports: [(&str, &[&str]); 5] =
        [("f32", &[]), ("bf16", &[]), ("int8-weights", &[]), ("int8", &[]), ("int8", &["--calibrate", "50"])];
    for (i, (dtype, extra)) in exports.into_iter().enumerate() {
        let out = s.path(&format!("m-{i}-{dtype}.simdnn"));
        let args = ["export", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dtype", dtype];
        let stdout = s.ok(&[&args[..], extra].concat());
        assert!(stdout.contains("relative RMS error") && stdout.contains("top-1 agreement"), "{stdout}");
        if dtype == "int8" {
            // The first layer takes the image bytes (scale 1/255, zero point 0); the others
            // are calibrated or take each input's range.
            assert!(stdout.contains("u8 input, scale 3.922e-3, zero point 0"), "{stdout}");
            let later = if extra.is_empty() { "u8 input, range per image" } else { "zero point" };
            assert!(stdout.lines().filter(|l| l.contains(later)).count() >= 2, "{stdout}");
        }
        sizes.push(fs::metadata(&out).unwrap().len() as f64);
        let json: Value = serde_json::from_str(
            s.ok(&["eval", out.to_str().unwrap(), "--json", "--reference", model.to_str().unwrap()]).trim(),
        )
        .unwrap();
        for key in ["accuracy", "loss", "images_per_second", "latency_us_per_image", "model_bytes", "top1_agreement"] {
            assert!(json[key].as_f64().is_some_and(|v| v.is_finite() && v >= 0.0), "{key} in {json}");
        }
        assert_eq!(json["model_bytes"].as_f64().unwrap(), sizes[sizes.len() - 1]);
        if dtype == "f32" {
            // Folding batch norm changes nothing: the same predictions.
            assert_eq!(json["top1_agreement"].as_f64(), Some(1.0));
        }
    }
    assert!(sizes[1] < 0.55 * sizes[0] && sizes[2] < 0.3 * sizes[0] && sizes[3] < 0.3 * sizes[0], "{sizes:?}");
    let calibrate_bf16 = ["export", model.to_str().unwrap(), "--out", "y", "--dtype", "bf16", "--calibrate", "9"];
    let bad = s.run(&calibrate_bf16);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--calibrate"));
    let bad = s.run(&["export", model.to_str().unwrap(), "--out", s.path("x").to_str().unwrap(), "--dtype", "int4"]);
    assert!(
        !bad.status.success()
            && String::from_utf8_lossy(&bad.stderr).contains("accepted: f32, bf16, int8, int8-weights")
    );
}
