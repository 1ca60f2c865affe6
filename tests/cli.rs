//! The `simdnn` binary end to end, on tiny generated data sets: the run directory `train`
//! writes, determinism, `eval` agreeing with training, flag errors, `bench` and `data fetch`.
//! Every child gets `SIMDNN_DATA` and an unreachable download URL, so no test depends on the
//! real data set or the network.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::CliScratch;
use serde_json::Value;

const RECORDS_PER_FILE: usize = 60;
const VAL_SIZE: &str = "40";

/// The shared scratch directory (a tiny data set).
fn scratch() -> CliScratch {
    CliScratch::new(RECORDS_PER_FILE, 11)
}

/// `simdnn train` with the small settings of these tests into `run`.
fn train(s: &CliScratch, run: &str) -> PathBuf {
    let out = s.path(run);
    let data = s.data.to_str().unwrap();
    s.ok_output(&[
        "train",
        "--data",
        data,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "3",
        "--depth",
        "2",
        "--width",
        "16",
        "--batch-size",
        "16",
        "--val-size",
        VAL_SIZE,
        "--lr",
        "1e-3",
        "--patience",
        "2",
        "--threads",
        "1",
        "--quiet",
    ]);
    out
}

fn json_file(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()))
}

fn json_stdout(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{text}"))
}

fn number(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("`{key}` is not a number in {v}"))
}

/// history.csv's data lines, split into fields.
fn history(run: &Path) -> Vec<Vec<String>> {
    let text = fs::read_to_string(run.join("history.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds"));
    lines.map(|l| l.split(',').map(String::from).collect()).collect()
}

#[test]
fn train_writes_a_complete_run_directory() {
    let s = scratch();
    let run = train(&s, "run");

    let config = json_file(&run.join("config.json"));
    assert!((number(&config, "lr") - 1e-3).abs() <= 1e-9, "lr: {}", config["lr"]);
    assert_eq!(config["batch_size"], 16);
    assert_eq!(config["epochs"], 3);
    assert_eq!(config["val_size"], 40);
    assert_eq!(config["threads"], 1);
    assert_eq!(config["model"]["depth"], 2);
    assert_eq!(config["model"]["width"], 16);
    assert_eq!(config["optimizer"]["name"], "nadam");
    assert_eq!(config["early_stopping"]["patience"], 2);

    let rows = history(&run);
    assert!((1..=3).contains(&rows.len()), "{} epochs", rows.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), 7, "{row:?}");
        assert_eq!(row[0], (i + 1).to_string());
        let f: Vec<f64> = row[1..].iter().map(|x| x.parse().unwrap()).collect();
        let (loss, acc, val_loss, val_acc, lr, secs) = (f[0], f[1], f[2], f[3], f[4], f[5]);
        assert!(loss.is_finite() && loss > 0.0 && val_loss.is_finite() && val_loss > 0.0, "{row:?}");
        assert!((0.0..=1.0).contains(&acc) && (0.0..=1.0).contains(&val_acc), "{row:?}");
        assert_eq!(lr, 0.001);
        assert!(secs >= 0.0);
    }

    let summary = json_file(&run.join("summary.json"));
    for key in ["best_epoch", "best_val_loss", "best_val_accuracy", "epochs_run", "train_seconds", "mean_epoch_seconds"]
    {
        number(&summary, key);
    }
    assert_eq!(summary["epochs_run"], rows.len());
    let best = summary["best_epoch"].as_u64().unwrap() as usize;
    assert!((1..=rows.len()).contains(&best), "best epoch {best}");
    let val_losses: Vec<f64> = rows.iter().map(|r| r[3].parse().unwrap()).collect();
    let min = val_losses.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(number(&summary, "best_val_loss"), min);
    assert_eq!(val_losses[best - 1], min);
    assert_eq!(number(&summary, "best_val_accuracy"), rows[best - 1][4].parse::<f64>().unwrap());

    let model = simdnn::train::run::load_model(&run.join("best.simdnn")).unwrap();
    assert_eq!(model.model.input_dim(), 3072);
    assert_eq!(model.model.layers().len(), 3);
    assert_eq!(model.model.output_dim(), 10);
    // Only these files: no temporaries left behind by the atomic writes.
    let mut names: Vec<_> =
        fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["best.simdnn", "config.json", "history.csv", "resume.state", "summary.json"]);
}

#[test]
fn training_is_deterministic() {
    let s = scratch();
    let (a, b) = (train(&s, "a"), train(&s, "b"));
    assert_eq!(fs::read(a.join("best.simdnn")).unwrap(), fs::read(b.join("best.simdnn")).unwrap());
    let without_seconds = |rows: Vec<Vec<String>>| rows.into_iter().map(|r| r[..6].to_vec()).collect::<Vec<_>>();
    let (ha, hb) = (without_seconds(history(&a)), without_seconds(history(&b)));
    assert!(!ha.is_empty());
    assert_eq!(ha, hb);
    let (sa, sb) = (json_file(&a.join("summary.json")), json_file(&b.join("summary.json")));
    for key in ["best_epoch", "best_val_loss", "best_val_accuracy", "epochs_run"] {
        assert_eq!(sa[key], sb[key], "{key}");
    }
}

#[test]
fn eval_agrees_with_the_best_epoch() {
    let s = scratch();
    let run = train(&s, "run");
    let model = run.join("best.simdnn");
    let model = model.to_str().unwrap();
    let data = s.data.to_str().unwrap();

    let test = json_stdout(&s.ok_output(&["eval", model, "--data", data, "--split", "test", "--json"]));
    let accuracy = number(&test, "accuracy");
    assert!((0.0..=1.0).contains(&accuracy), "{test}");
    assert!(number(&test, "loss").is_finite() && number(&test, "loss") > 0.0, "{test}");
    assert_eq!(test["records"], RECORDS_PER_FILE);

    // The checkpoint holds the best epoch's weights: evaluating it on the same validation
    // split reproduces the numbers training recorded for that epoch.
    let val =
        json_stdout(&s.ok_output(&["eval", model, "--data", data, "--split", "val", "--val-size", VAL_SIZE, "--json"]));
    let summary = json_file(&run.join("summary.json"));
    assert_eq!(val["records"], 40);
    let (acc, loss) = (number(&val, "accuracy"), number(&val, "loss"));
    assert!((acc - number(&summary, "best_val_accuracy")).abs() <= 1e-6, "eval {val} vs summary {summary}");
    assert!((loss - number(&summary, "best_val_loss")).abs() <= 1e-6, "eval {val} vs summary {summary}");

    // SIMDNN_DATA is the default data directory.
    let test_again = json_stdout(&s.ok_output(&["eval", model, "--json"]));
    assert_eq!(test_again["loss"], test["loss"]);
    // The plain-text form.
    let text =
        String::from_utf8(s.ok_output(&["eval", model, "--split", "train", "--val-size", VAL_SIZE]).stdout).unwrap();
    assert!(text.contains("260 records") && text.contains("accuracy"), "{text}");
}

#[test]
fn standardised_runs_store_their_preprocessing() {
    let s = scratch();
    let out = s.path("run");
    let data = s.data.to_str().unwrap();
    let args = ["--data", data, "--epochs", "1", "--depth", "1", "--width", "8", "--batch-size", "32"];
    let mut train = vec!["train", "--out", out.to_str().unwrap(), "--val-size", VAL_SIZE, "--threads", "1"];
    train.extend_from_slice(&args);
    train.extend_from_slice(&["--standardise", "--optimizer", "adam", "--beta1", "0.8", "--quiet"]);
    s.ok_output(&train);
    let config = json_file(&out.join("config.json"));
    assert_eq!(config["model"]["preprocess"], "standardise");
    assert_eq!(config["precision"], "f32");
    assert_eq!(config["optimizer"]["name"], "adam");
    assert!((number(&config["optimizer"], "beta1") - 0.8).abs() < 1e-6, "{config}");
    let saved = simdnn::train::run::load_model(&out.join("best.simdnn")).unwrap();
    assert!(matches!(saved.preprocess, simdnn::nn::Preprocess::Standardise { .. }));
    let model = out.join("best.simdnn");
    let val = json_stdout(&s.ok_output(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        data,
        "--split",
        "val",
        "--val-size",
        VAL_SIZE,
        "--json",
    ]));
    let summary = json_file(&out.join("summary.json"));
    assert!((number(&val, "loss") - number(&summary, "best_val_loss")).abs() <= 1e-6, "{val} vs {summary}");
}

#[test]
fn bad_flags_are_named_without_panics() {
    let s = scratch();
    let out = s.path("run");
    let out = out.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--lr", "0"], &["--lr"]),
        (&["--lr", "nan"], &["--lr"]),
        (&["--lr=-1"], &["--lr"]),
        (&["--lr", "1e9"], &["--lr"]),
        (&["--batch-size", "0"], &["--batch-size"]),
        (&["--batch-norm", "--batch-size", "1"], &["--batch-size", "batch norm"]),
        (&["--epochs", "0"], &["--epochs"]),
        (&["--val-size", "0"], &["--val-size"]),
        (&["--val-size", "300"], &["--val-size"]), // every training record
        (&["--preset", "9z"], &["--preset", "9z", "8a"]),
        (&["--activation", "foo"], &["--activation", "foo", "relu", "elu", "selu"]),
        (&["--activation", "softmax"], &["--activation"]),
        (&["--optimizer", "foo"], &["--optimizer", "foo", "sgd", "adam", "nadam", "rmsprop", "adagrad"]),
        (&["--momentum", "0.5"], &["--momentum", "does not apply"]),
        (&["--optimizer", "sgd", "--momentum", "1.5"], &["--momentum"]),
        (&["--optimizer", "adam", "--nesterov"], &["--nesterov"]),
        (&["--init", "foo"], &["--init", "he_normal"]),
        (&["--width", "0"], &["--width"]),
        (&["--epochs", "many"], &["--epochs"]),
        (&["--precision", "fp8"], &["--precision", "fp8", "f32, bf16"]),
        (&["--parallel", "pipeline"], &["--parallel", "pipeline", "data, tensor"]),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["train", "--out", out, "--epochs", "1", "--depth", "1", "--width", "4", "--quiet"];
        args.extend_from_slice(flags);
        let stderr = s.fails(&args);
        for word in *expected {
            assert!(stderr.contains(word), "{flags:?}: stderr lacks `{word}`:\n{stderr}");
        }
        assert!(!Path::new(out).exists(), "{flags:?}: a run directory was created");
    }

    // A negative rate given with a space: clap takes `-1` for a flag. It must still fail cleanly.
    let stderr = s.fails(&["train", "--out", out, "--lr", "-1"]);
    assert!(stderr.contains("-1"), "{stderr}");
}

#[test]
fn negative_lr_with_a_space_names_the_flag() {
    let s = scratch();
    let stderr = s.fails(&["train", "--out", s.path("run").to_str().unwrap(), "--lr", "-1"]);
    assert!(stderr.contains("--lr"), "{stderr}");
}

#[test]
fn config_json_records_the_rate_as_given() {
    let s = scratch();
    let config = json_file(&train(&s, "run").join("config.json"));
    assert_eq!(config["lr"].as_f64(), Some(0.001), "{}", config["lr"]);
    assert_eq!(config["optimizer"]["beta1"].as_f64(), Some(0.9), "{}", config["optimizer"]);
}

#[test]
fn missing_data_is_named_and_nothing_is_downloaded() {
    let s = scratch();
    let out = s.path("run");
    let existed = Path::new("/nonexistent").exists();
    let stderr = s.fails(&["train", "--data", "/nonexistent", "--out", out.to_str().unwrap(), "--epochs", "1"]);
    assert!(stderr.contains("/nonexistent"), "{stderr}");
    assert!(stderr.contains("--data"), "{stderr}");
    if !existed {
        assert!(!Path::new("/nonexistent").exists(), "the failed fetch created /nonexistent");
    }
    assert!(!out.exists());

    // Eval too names the directory.
    let model = s.path("m.simdnn");
    write_model(&model);
    let stderr = s.fails(&["eval", model.to_str().unwrap(), "--data", "/nonexistent"]);
    assert!(stderr.contains("/nonexistent"), "{stderr}");
}

/// A valid model for CIFAR-10 inputs, written by the library.
fn write_model(path: &Path) {
    use simdnn::kernels::Activation;
    use simdnn::nn::{Initializer, LayerSpec, Preprocess, Sequential};
    let specs = [LayerSpec::Dense { units: 10, activation: Activation::Softmax, init: Initializer::GlorotUniform }];
    let model = Sequential::new(3072, &specs, 1).unwrap();
    simdnn::train::run::save_model(path, &model, &Preprocess::UNIT_SCALE).unwrap();
}

#[test]
fn eval_names_a_damaged_model_file() {
    let s = scratch();
    let path = s.path("model.simdnn");
    write_model(&path);
    let p = path.to_str().unwrap();
    // Sanity: the intact file evaluates.
    s.ok_output(&["eval", p, "--json"]);

    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let stderr = s.fails(&["eval", p]);
    assert!(stderr.contains(p) && stderr.contains("truncated"), "{stderr}");

    fs::write(&path, b"not a model").unwrap();
    let stderr = s.fails(&["eval", p]);
    assert!(stderr.contains(p), "{stderr}");

    let missing = s.path("missing.simdnn");
    let stderr = s.fails(&["eval", missing.to_str().unwrap()]);
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");

    // A model for another input size is refused by name, not run.
    use simdnn::kernels::Activation;
    use simdnn::nn::{Initializer, LayerSpec, Preprocess, Sequential};
    let specs = [LayerSpec::Dense { units: 10, activation: Activation::Softmax, init: Initializer::GlorotUniform }];
    let small = Sequential::new(12, &specs, 1).unwrap();
    simdnn::train::run::save_model(&path, &small, &Preprocess::UNIT_SCALE).unwrap();
    let stderr = s.fails(&["eval", p]);
    assert!(stderr.contains(p) && stderr.contains("12"), "{stderr}");
}

#[test]
fn bench_gemm_prints_json() {
    let s = scratch();
    let out = s.ok_output(&[
        "bench",
        "gemm",
        "--m",
        "8",
        "--k",
        "16",
        "--n",
        "24",
        "--threads",
        "1",
        "--seconds",
        "0.05",
        "--json",
    ]);
    let v = json_stdout(&out);
    let (gflops, us) = (number(&v, "gflops"), number(&v, "us_per_call"));
    assert!(gflops.is_finite() && gflops > 0.0, "{v}");
    assert!(us.is_finite() && us > 0.0, "{v}");
    // Bad sizes are named.
    let stderr = s.fails(&["bench", "gemm", "--m", "0", "--k", "16", "--n", "24", "--seconds", "0.05"]);
    assert!(stderr.contains("--m"), "{stderr}");
    let stderr = s.fails(&["bench", "gemm", "--m", "8", "--k", "16", "--n", "24", "--seconds", "nan"]);
    assert!(stderr.contains("--seconds"), "{stderr}");
    // The bf16 GEMM: timed on one thread, more refused by name.
    let bf16 = ["bench", "gemm", "--m", "8", "--k", "16", "--n", "24", "--precision", "bf16", "--seconds", "0.05"];
    let v = json_stdout(&s.ok_output(&[&bf16[..], &["--json"]].concat()));
    assert_eq!(v["precision"], "bf16");
    assert!(number(&v, "gflops") > 0.0, "{v}");
    let stderr = s.fails(&[&bf16[..], &["--threads", "2"]].concat());
    assert!(stderr.contains("--threads"), "{stderr}");
}

/// `--precision bf16` trains (the dense layers' products in bf16), is recorded in config.json
/// and repeats exactly; its weights differ from f32's.
#[test]
fn bf16_precision_trains_and_is_recorded() {
    let s = scratch();
    let data = s.data.to_str().unwrap();
    let run = |name: &str, precision: &str| {
        let out = s.path(name);
        let common = ["--data", data, "--epochs", "1", "--depth", "1", "--width", "8", "--val-size", VAL_SIZE];
        let mut args = vec!["train", "--out", out.to_str().unwrap(), "--precision", precision, "--quiet"];
        args.extend_from_slice(&common);
        s.ok_output(&args);
        out
    };
    let (a, b, f32_run) = (run("a", "bf16"), run("b", "bf16"), run("f", "f32"));
    assert_eq!(json_file(&a.join("config.json"))["precision"], "bf16");
    let model = |dir: &PathBuf| fs::read(dir.join("best.simdnn")).unwrap();
    assert_eq!(model(&a), model(&b), "bf16 runs differ");
    assert_ne!(model(&a), model(&f32_run), "bf16 and f32 runs are identical");
    // A model with batch norm (tensor-parallel steps by default) trains too, in bf16.
    let out = s.path("bn");
    let args = ["train", "--out", out.to_str().unwrap(), "--precision", "bf16", "--batch-norm", "--quiet"];
    s.ok_output(
        &[&args[..], &["--data", data, "--epochs", "1", "--depth", "1", "--width", "8", "--val-size", VAL_SIZE]]
            .concat(),
    );
    assert_eq!(json_file(&out.join("config.json"))["precision"], "bf16");
}

/// `--parallel tensor` trains (each thread a block of every layer's units), is recorded in
/// config.json and repeats exactly; its weights differ from data-parallel steps'. It is the
/// default with batch norm.
#[test]
fn tensor_parallel_steps_train_and_are_recorded() {
    let s = scratch();
    let data = s.data.to_str().unwrap();
    let run = |name: &str, flags: &[&str]| {
        let out = s.path(name);
        let common = ["--data", data, "--epochs", "2", "--depth", "2", "--width", "8", "--val-size", VAL_SIZE];
        let mut args = vec!["train", "--out", out.to_str().unwrap(), "--threads", "2", "--quiet"];
        args.extend_from_slice(&common);
        args.extend_from_slice(flags);
        let stderr = String::from_utf8_lossy(&s.ok_output(&args).stderr).into_owned();
        (out, stderr)
    };
    let tensor = ["--parallel", "tensor"];
    let ((a, quiet), (b, _)) = (run("a", &tensor), run("b", &tensor));
    assert!(!quiet.contains("warning"), "{quiet}");
    let (data_parallel, _) = run("d", &["--parallel", "data"]);
    assert_eq!(json_file(&a.join("config.json"))["parallel"], "tensor");
    assert_eq!(json_file(&data_parallel.join("config.json"))["parallel"], "data");
    let model = |dir: &PathBuf| fs::read(dir.join("best.simdnn")).unwrap();
    assert_eq!(model(&a), model(&b), "tensor-parallel runs differ");
    assert_ne!(model(&a), model(&data_parallel), "tensor- and data-parallel runs are identical");
    // Batch norm takes tensor-parallel steps by default (data-parallel ones would run it as
    // one slice), `--parallel data` still as one slice.
    let (bn_default, quiet) = run("bn", &["--batch-norm"]);
    assert!(!quiet.contains("warning"), "{quiet}");
    assert_eq!(json_file(&bn_default.join("config.json"))["parallel"], "tensor");
    let (bn_tensor, _) = run("bn-t", &["--batch-norm", "--parallel", "tensor"]);
    let (bn_data, _) = run("bn-d", &["--batch-norm", "--parallel", "data"]);
    assert_eq!(json_file(&bn_data.join("config.json"))["parallel"], "data");
    assert_eq!(model(&bn_default), model(&bn_tensor), "batch norm's default is not tensor-parallel");
    assert_ne!(model(&bn_tensor), model(&bn_data), "batch norm ran the same steps either way");

    // Where tensor-parallel steps cannot run (one thread, a layer narrower than the thread
    // count), the steps are data-parallel, the same as `--parallel data`, and the run says why.
    let run_with = |name: &str, flags: &[&str]| {
        let out = s.path(name);
        let common = ["--data", data, "--epochs", "1", "--depth", "2", "--val-size", VAL_SIZE, "--quiet"];
        let args = [&["train", "--out", out.to_str().unwrap()][..], &common, flags].concat();
        let stderr = String::from_utf8_lossy(&s.ok_output(&args).stderr).into_owned();
        (model(&out), stderr)
    };
    for (name, flags, why) in [
        ("one", ["--threads", "1", "--width", "8"], "they need two threads or more, and this run has 1"),
        ("narrow", ["--threads", "2", "--width", "1"], "the narrowest has 1"),
    ] {
        let (declined, stderr) = run_with(name, &[&flags[..], &["--parallel", "tensor"]].concat());
        assert!(stderr.contains("warning: the steps are data-parallel") && stderr.contains(why), "{name}: {stderr}");
        let (data_steps, quiet) = run_with(&format!("{name}-data"), &[&flags[..], &["--parallel", "data"]].concat());
        assert!(!quiet.contains("warning"), "{quiet}");
        assert_eq!(declined, data_steps, "{name}: the declined tensor-parallel run is not data-parallel");
    }
}

#[test]
fn bench_cores_prints_json() {
    let s = scratch();
    let v = json_stdout(&s.ok_output(&["bench", "cores", "--seconds", "0.05", "--json"]));
    let ns = number(&v, "round_trip_ns");
    // A round trip takes tens of nanoseconds at least, and far less than a millisecond even
    // where the two threads share one core (each hand-over then waits for a yield).
    assert!(ns.is_finite() && ns > 1.0 && ns < 1e6, "{v}");
    let stderr = s.fails(&["bench", "cores", "--seconds", "0"]);
    assert!(stderr.contains("--seconds"), "{stderr}");
}

#[test]
fn data_fetch_offline_points_at_the_data_flag() {
    let s = scratch();
    let dest = s.path("d");
    let stderr = s.fails(&["data", "fetch", "--data", dest.to_str().unwrap(), "--url", "http://127.0.0.1:1/x.tar.gz"]);
    assert!(stderr.contains("--data"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(!dest.exists(), "a failed fetch left {}", dest.display());
    // Nothing staged is left beside it either.
    let leftovers: Vec<_> = fs::read_dir(s.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".simdnn"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A command never writes over an earlier one's results: `train` into a directory holding a
/// run (pointing at `--resume`), `sweep` into one holding a sweep's tables or a run of other
/// settings where one of its rates' runs goes, `sweep` listing a rate twice, `lr-find` over a
/// range test. Each fails before it trains, naming the flag, and the earlier files are as
/// they were.
#[test]
fn earlier_results_are_never_overwritten() {
    let s = scratch();
    let data = s.data.to_str().unwrap();
    let run = train(&s, "run");
    let before = fs::read(run.join("best.simdnn")).unwrap();
    let stderr = s.fails(&["train", "--out", run.to_str().unwrap(), "--epochs", "1", "--depth", "1"]);
    assert!(
        stderr.contains("`--out`") && stderr.contains("already holds a run") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert_eq!(fs::read(run.join("best.simdnn")).unwrap(), before, "the earlier run's model changed");

    let small = ["--data", data, "--epochs", "1", "--depth", "1", "--width", "4", "--val-size", VAL_SIZE, "--quiet"];
    let sweep_dir = s.path("sweep");
    let sweep =
        |rates: &'static str| [&["sweep", "--out", sweep_dir.to_str().unwrap(), "--lr", rates][..], &small].concat();
    let stderr = s.fails(&sweep("1e-3,1e-3"));
    assert!(stderr.contains("`--lr`") && stderr.contains("twice"), "{stderr}");
    assert!(!sweep_dir.join("lr-1e-3").exists(), "a run trained before the duplicate was found");
    s.ok_output(&sweep("1e-3"));
    let table = fs::read(sweep_dir.join("sweep.csv")).unwrap();
    let stderr = s.fails(&sweep("1e-2"));
    assert!(stderr.contains("`--out`") && stderr.contains("sweep.csv"), "{stderr}");
    assert!(!sweep_dir.join("lr-1e-2").exists(), "a run trained into a directory holding a sweep");
    assert_eq!(fs::read(sweep_dir.join("sweep.csv")).unwrap(), table);
    // A rate's directory holds a run of other settings (an unfinished sweep of the same
    // ones continues instead: tests/resume.rs).
    fs::remove_file(sweep_dir.join("sweep.csv")).unwrap();
    fs::remove_file(sweep_dir.join("sweep.md")).unwrap();
    let other = sweep_dir.join("lr-1e-2");
    let other_args = ["train", "--out", other.to_str().unwrap(), "--lr", "1e-2", "--activation", "relu"];
    s.ok_output(&[&other_args[..], &small].concat());
    let before = fs::read(other.join("best.simdnn")).unwrap();
    let stderr = s.fails(&sweep("1e-3,1e-2,1e-1"));
    assert!(stderr.contains("lr-1e-2") && stderr.contains("other settings"), "{stderr}");
    assert!(!sweep_dir.join("lr-1e-1").exists(), "the sweep trained before finding a taken directory");
    assert_eq!(fs::read(other.join("best.simdnn")).unwrap(), before);

    let lr_find = s.path("lr-find");
    let args = [&["lr-find", "--out", lr_find.to_str().unwrap()][..], &small].concat();
    s.ok_output(&args);
    let stderr = s.fails(&args);
    assert!(stderr.contains("`--out`") && stderr.contains("lr_find.csv"), "{stderr}");
}
