//! Crash-safe, exactly resumable training: a run killed with SIGKILL at arbitrary moments, or
//! stopped with Ctrl-C (SIGINT), and resumed with `simdnn train --resume`, ends with
//! bit-identical weights and history to a run that was never interrupted.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::CliScratch;

/// The tests here time runs against each other: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shared scratch directory, with a data set large enough to be killed mid-epoch.
fn scratch() -> CliScratch {
    // 9,960 training records: 1,245 steps of 8 per epoch, about 0.1 s an epoch here, so
    // that kills land in every phase of a run.
    CliScratch::new(2000, 21)
}

/// A run with batch norm off, alpha dropout on (so masks matter), a schedule (so the step
/// counter matters) and bf16 products (so the precision must come back from config.json):
/// everything resuming has to restore.
fn train_args(out: &Path) -> Vec<String> {
    let flags = "train --epochs 8 --depth 3 --width 48 --batch-size 8 --val-size 40 --threads 2 --quiet --seed 3 \
                 --activation selu --init lecun_normal --standardise --alpha-dropout 0.1 --schedule 1cycle:0.02 \
                 --optimizer sgd --step-log --patience 20 --precision bf16";
    let mut args: Vec<String> = flags.split_whitespace().map(String::from).collect();
    args.extend(["--out".into(), out.display().to_string()]);
    args
}

/// [`train_args`] with tensor-parallel steps, which must come back from config.json too:
/// resumed data-parallel, the run would take other bits.
fn tensor_parallel_args(out: &Path) -> Vec<String> {
    let mut args = train_args(out);
    args.extend(["--parallel".into(), "tensor".into()]);
    args
}

/// [`train_args`] with batch norm, tensor-parallel by default: its moving averages, which the
/// steps update outside the parameters, must come back too.
fn batch_norm_args(out: &Path) -> Vec<String> {
    let mut args = train_args(out);
    args.push("--batch-norm".into());
    args
}

fn resume_args(out: &Path) -> Vec<String> {
    vec!["train".into(), "--quiet".into(), "--resume".into(), out.display().to_string()]
}

/// history.csv and steps.csv without wall-clock columns, and the model file's bytes.
fn outcome(run: &Path) -> (Vec<String>, String, Vec<u8>) {
    let history = fs::read_to_string(run.join("history.csv")).unwrap();
    let history = history.lines().map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head).to_owned()).collect();
    let steps = fs::read_to_string(run.join("steps.csv")).unwrap();
    (history, steps, fs::read(run.join("best.simdnn")).unwrap())
}

#[test]
fn killed_runs_resume_to_the_same_bits() {
    let _serial = serial();
    let s = scratch();
    let reference = s.tmp.path().join("reference");
    s.ok(&train_args(&reference));
    let expected = outcome(&reference);
    let started = std::time::Instant::now();
    s.ok(&train_args(&s.tmp.path().join("timing")));
    let full = started.elapsed().as_millis() as u64;
    let mut killed_mid_run = 0;
    // Kills from 5% to 70% of a run's length (machines are noisy: some may land outside).
    for (i, delay_ms) in [full / 20, full / 5, full * 7 / 20, full / 2, full * 7 / 10].into_iter().enumerate() {
        let run = s.tmp.path().join(format!("killed-{i}"));
        let mut child = s.spawn(&train_args(&run));
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL; the run may already have finished
        let _ = child.wait();
        let mid_run = run.join("resume.state").exists() && !run.join("summary.json").exists();
        killed_mid_run += usize::from(mid_run);
        eprintln!(
            "killed after {delay_ms} ms of {full}: {}",
            if mid_run { "mid-run" } else { "before the first epoch or after the end" }
        );
        if run.join("config.json").exists() {
            s.ok(&resume_args(&run));
        } else {
            // Killed before it wrote anything: there is nothing to resume.
            s.ok(&train_args(&run));
        }
        assert!(outcome(&run) == expected, "run killed after {delay_ms} ms differs after resuming");
    }
    assert!(killed_mid_run >= 2, "only {killed_mid_run} of 5 kills landed mid-run: the runs are too short to test");
}

#[test]
fn ctrl_c_stops_after_a_step_saves_and_resumes_exactly() {
    let _serial = serial();
    let s = scratch();
    let runs = [
        ("data", train_args as fn(&Path) -> Vec<String>),
        ("tensor", tensor_parallel_args),
        ("batch-norm", batch_norm_args),
    ];
    for (name, args) in runs {
        ctrl_c_and_resume(&s, name, args);
    }
}

/// `simdnn args...` sent SIGINT (Ctrl-C) after `ms` milliseconds, run to its end.
fn ctrl_c_after(s: &CliScratch, args: &[String], ms: u64) -> std::process::Output {
    let child = s.spawn(args);
    std::thread::sleep(Duration::from_millis(ms));
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    child.wait_with_output().unwrap()
}

/// A run of `args`, interrupted by SIGINT and resumed, against the same run uninterrupted.
fn ctrl_c_and_resume(s: &CliScratch, name: &str, args: fn(&Path) -> Vec<String>) {
    let reference = s.tmp.path().join(format!("{name}-reference"));
    s.ok(&args(&reference));
    let run = s.tmp.path().join(format!("{name}-interrupted"));
    let out = ctrl_c_after(s, &args(&run), 300);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprintln!("the run finished before the signal arrived; only resuming a finished run is checked");
    } else {
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        assert!(stderr.contains("--resume") && stderr.contains("interrupted"), "{stderr}");
        assert!(run.join("resume.state").exists());
    }
    s.ok(&resume_args(&run));
    assert!(outcome(&run) == outcome(&reference), "{name}: the resumed run differs");
}

#[test]
fn resume_rejects_bad_state_and_extra_flags() {
    let _serial = serial();
    let s = scratch();
    let run = s.tmp.path().join("run");
    s.ok(&train_args(&run));
    // Settings come from the run's config.json only.
    let mut args = resume_args(&run);
    args.extend(["--epochs".into(), "9".into()]);
    let out = s.command(&args).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--epochs"));
    // A corrupted state is an error naming the file, never a panic.
    let state = run.join("resume.state");
    let mut bytes = fs::read(&state).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    fs::write(&state, &bytes).unwrap();
    let out = s.command(&resume_args(&run)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("resume.state") && stderr.contains("checksum"), "{stderr}");
    for len in [0, 10, 40, bytes.len() - 1] {
        fs::write(&state, &bytes[..len]).unwrap();
        let out = s.command(&resume_args(&run)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && !stderr.contains("panicked"), "{stderr}");
    }
    // A directory that is not a run.
    let out = s.command(&resume_args(s.tmp.path())).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("config.json"));
}

/// A sweep stopped by Ctrl-C continues: the same command again resumes the rate's run that
/// was stopped and trains the rest, ending as a sweep that was never stopped; a run of other
/// settings in a rate's directory is refused.
#[test]
fn an_unfinished_sweep_continues() {
    let _serial = serial();
    let s = scratch();
    let flags =
        "--epochs 6 --depth 2 --width 32 --batch-size 8 --val-size 40 --threads 2 --quiet --seed 3 --patience 20";
    let args = |head: &str, out: &Path| -> Vec<String> {
        let mut args: Vec<String> = format!("{head} {flags}").split_whitespace().map(String::from).collect();
        args.extend(["--out".into(), out.display().to_string()]);
        args
    };
    let reference = s.tmp.path().join("reference");
    s.ok(&args("sweep --lr 1e-3,1e-2", &reference));

    // The sweep stopped by Ctrl-C, then the same command again.
    let sweep = s.tmp.path().join("sweep");
    let out = ctrl_c_after(&s, &args("sweep --lr 1e-3,1e-2", &sweep), 200);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        eprintln!("the sweep finished before the signal arrived; only rerunning a finished sweep's runs is checked");
        fs::remove_file(sweep.join("sweep.csv")).unwrap();
        fs::remove_file(sweep.join("sweep.md")).unwrap();
    } else {
        assert_eq!(out.status.code(), Some(130), "{stderr}");
        assert!(stderr.contains("the same command continues it") && stderr.contains("interrupted"), "{stderr}");
        assert!(!sweep.join("sweep.csv").exists());
    }
    s.ok(&args("sweep --lr 1e-3,1e-2", &sweep));
    let table = |dir: &Path| -> Vec<String> {
        let csv = fs::read_to_string(dir.join("sweep.csv")).unwrap();
        csv.lines().map(|l| l.rsplit_once(',').map_or(l, |(head, _)| head).to_owned()).collect()
    };
    assert_eq!(table(&sweep), table(&reference));
    for rate in ["lr-1e-3", "lr-1e-2"] {
        let model = |dir: &Path| fs::read(dir.join(rate).join("best.simdnn")).unwrap();
        assert!(model(&sweep) == model(&reference), "{rate}: the continued sweep's model differs");
    }

    let other = s.tmp.path().join("other");
    s.ok(&args("train --lr 1e-3 --activation relu", &other.join("lr-1e-3")));
    let stderr = s.fails(&args("sweep --lr 1e-3,1e-2", &other));
    assert!(stderr.contains("`--out`") && stderr.contains("other settings"), "{stderr}");
    assert!(!other.join("lr-1e-2").exists(), "the sweep trained before refusing");
}
