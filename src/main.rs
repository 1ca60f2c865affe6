//! The `simdnn` command line: a thin layer over the library (every behaviour it has, the
//! library has; this file parses flags, draws progress and prints results).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use simdnn::data::Cifar10;
use simdnn::data::fetch::{FetchOptions, fetch_cifar10, is_complete};
use simdnn::format::{InputQuant, WeightType};
use simdnn::fsutil::write_atomic;
use simdnn::kernels::bf16::Bf16Kernel;
use simdnn::kernels::{Activation, Precision};
use simdnn::nn::Initializer;
use simdnn::optim::OptimizerConfig;
use simdnn::train::compare::{REPORT_FILE, SVG_FILE, write_report};
use simdnn::train::deploy::{ExportOptions, export, predict_file, single_image_latency_us};
use simdnn::train::lr_find::{LrFindSettings, range_test, write_results};
use simdnn::train::run::{
    SWEEP_FILES, check_out_dir_free, resume_run, saved_config_json, sweep, sweep_table, train_run_until,
};
use simdnn::train::{Event, Parallelism, TrainConfig, config::default_data_dir};
use simdnn::{Error, Result};

/// Training's large buffers on huge pages (see `simdnn::hugepages`).
#[global_allocator]
static ALLOCATOR: simdnn::hugepages::HugePageAlloc = simdnn::hugepages::HugePageAlloc;

#[derive(Parser)]
#[command(name = "simdnn", version, about = "Deep dense networks on CPUs: train, evaluate and benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on CIFAR-10 (downloads the data into the default directory when it is missing).
    #[command(allow_negative_numbers = true)]
    Train(Box<TrainArgs>),
    /// Loss, accuracy, calibration and speed of a saved model on a CIFAR-10 split (MC dropout
    /// with --mc).
    #[command(allow_negative_numbers = true)]
    Eval(EvalArgs),
    /// Compare runs: learning curves (SVG) and a table answering exercise 8c's questions
    /// (convergence, model quality, training speed) for each run against the first.
    Compare {
        /// Run directories written by `simdnn train`; the first is the reference.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Where learning_curves.svg and report.md go.
        #[arg(long, default_value = "report")]
        out: PathBuf,
    },
    /// Learning-rate range test: one sweep of exponentially growing rates from the preset's
    /// initial weights, a plot and suggested rates.
    #[command(allow_negative_numbers = true)]
    LrFind {
        #[command(flatten)]
        train: Box<TrainArgs>,
        #[arg(long, default_value_t = 1e-7)]
        min_lr: f32,
        #[arg(long, default_value_t = 10.0)]
        max_lr: f32,
        /// Steps of the sweep (at most one epoch).
        #[arg(long, default_value_t = simdnn::train::lr_find::DEFAULT_STEPS)]
        steps: usize,
    },
    /// The notebook's learning-rate grid as one command: `--lr 1e-5,5e-5,1e-4` trains once per
    /// rate and tabulates the best validation accuracy and loss of each.
    #[command(allow_negative_numbers = true)]
    Sweep(Box<TrainArgs>),
    /// Write a model for deployment: batch norm folded into the dense layers, weights as f32,
    /// bf16 or int8; the file `simdnn::infer::Model::from_bytes` reads without an allocator.
    Export {
        /// A .simdnn model file.
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Dense weights as f32, bf16 (half the size), int8 (a quarter, one scale per output
        /// channel, inputs quantised to u8: integer dot products) or int8-weights (int8
        /// weights, f32 inputs).
        #[arg(long, default_value = "f32", value_parser = parse_weight_type)]
        dtype: WeightType,
        /// With --dtype int8: calibrate each layer's input range on the first N training images
        /// (without it, each input is quantised by its own range at run time).
        #[arg(long)]
        calibrate: Option<usize>,
        /// Compare both models on this directory's test split (default: $SIMDNN_DATA, else
        /// data/cifar-10-batches-bin, when it holds the data).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Micro-benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Data set management.
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("settings").multiple(true)))]
struct TrainArgs {
    /// The recipe to start from; every other flag overrides one of its settings.
    #[arg(long, group = "settings", default_value = "8a")]
    preset: String,
    /// Directory with data_batch_1..5.bin and test_batch.bin [default: $SIMDNN_DATA, else data/cifar-10-batches-bin]
    #[arg(long, group = "settings")]
    data: Option<PathBuf>,
    /// Run directory [default: runs/<preset>-<UTC time>]
    #[arg(long, group = "settings")]
    out: Option<PathBuf>,
    /// Hidden dense layers.
    #[arg(long, group = "settings")]
    depth: Option<usize>,
    /// Units per hidden layer.
    #[arg(long, group = "settings")]
    width: Option<usize>,
    /// Hidden activation: identity, relu, leaky_relu[:alpha], elu[:alpha], selu, tanh, logistic.
    #[arg(long, group = "settings", value_parser = parse_activation)]
    activation: Option<Activation>,
    /// Weight initialiser: he_normal, he_uniform, lecun_normal, lecun_uniform, glorot_normal, glorot_uniform.
    #[arg(long, group = "settings", value_parser = parse_initializer)]
    init: Option<Initializer>,
    /// Optimiser (Keras's defaults unless overridden): sgd, adam, adamw, nadam, rmsprop, adagrad.
    #[arg(long, group = "settings")]
    optimizer: Option<String>,
    /// A rate, or `auto` (run the learning-rate range test and train at its suggestion); for
    /// `sweep`, a comma-separated list.
    #[arg(long, group = "settings")]
    lr: Option<String>,
    /// Learning-rate schedule: constant | exponential:FACTOR@EPOCHS | piecewise:EPOCH=LR,... |
    /// 1cycle:MAX_RATE[,momentum] | plateau[:FACTOR@PATIENCE].
    #[arg(long, group = "settings")]
    schedule: Option<String>,
    /// Write every step's rate, momentum and loss to steps.csv in the run directory.
    #[arg(long, group = "settings")]
    step_log: bool,
    #[arg(long, group = "settings")]
    beta1: Option<f32>,
    #[arg(long, group = "settings")]
    beta2: Option<f32>,
    #[arg(long, group = "settings")]
    epsilon: Option<f32>,
    /// SGD momentum.
    #[arg(long, group = "settings")]
    momentum: Option<f32>,
    /// SGD with Nesterov momentum.
    #[arg(long, group = "settings")]
    nesterov: bool,
    /// RMSProp's decay of the mean square.
    #[arg(long, group = "settings")]
    rho: Option<f32>,
    /// AdamW's decoupled weight decay.
    #[arg(long, group = "settings")]
    weight_decay: Option<f32>,
    #[arg(long, group = "settings")]
    batch_size: Option<usize>,
    #[arg(long, group = "settings")]
    epochs: Option<usize>,
    /// Epochs without val_loss improvement before stopping.
    #[arg(long, group = "settings")]
    patience: Option<usize>,
    /// Smallest val_loss decrease that counts as an improvement.
    #[arg(long, group = "settings")]
    min_delta: Option<f64>,
    /// Keep the last epoch's weights instead of restoring the best.
    #[arg(long, group = "settings")]
    no_restore_best: bool,
    /// Training records held out for validation (the first ones, as the notebook does).
    #[arg(long, group = "settings")]
    val_size: Option<usize>,
    /// Standardise inputs per feature instead of scaling by 1/255.
    #[arg(long, group = "settings")]
    standardise: bool,
    /// Batch normalisation after the input and after every hidden dense layer (8c).
    #[arg(long, group = "settings")]
    batch_norm: bool,
    /// Rate of a dropout layer before the output layer.
    #[arg(long, group = "settings")]
    dropout: Option<f32>,
    /// Rate of an alpha-dropout layer before the output layer (for SELU networks).
    #[arg(long, group = "settings")]
    alpha_dropout: Option<f32>,
    #[arg(long, group = "settings")]
    seed: Option<u64>,
    /// Worker threads (0 or none: one per core).
    #[arg(long, group = "settings")]
    threads: Option<usize>,
    /// The dense layers' products in training: f32 (default), or bf16 (operands rounded to
    /// bf16, sums in f32: mixed precision, fast on CPUs with AVX-512 BF16).
    #[arg(long, group = "settings", value_parser = parse_precision)]
    precision: Option<Precision>,
    /// How each step is split between threads: data (each thread a slice of the batch; the
    /// default without batch norm) or tensor (each thread a block of every layer's units:
    /// less traffic between the cores, for hosts that place the vCPUs far apart; the default
    /// with batch norm, whose data-parallel steps run the batch as one slice). Tensor needs
    /// two threads or more and layers at least as wide as the thread count; otherwise the
    /// steps are data-parallel (with a warning).
    #[arg(long, group = "settings", value_parser = parse_parallel)]
    parallel: Option<Parallelism>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Continue the run in DIR from where it stopped (killed, or Ctrl-C), with the settings of
    /// its config.json (so no other settings flag goes with it).
    #[arg(long, value_name = "DIR", conflicts_with = "settings")]
    resume: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SplitName {
    Train,
    Val,
    Test,
}

#[derive(Args)]
struct EvalArgs {
    /// A .simdnn model file.
    model: PathBuf,
    #[arg(long, value_enum, default_value = "test")]
    split: SplitName,
    /// Directory with the CIFAR-10 binary files [default: $SIMDNN_DATA, else data/cifar-10-batches-bin]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Size of the validation split (`--split val` and `train`).
    #[arg(long, default_value_t = 5000)]
    val_size: usize,
    /// Worker threads (0 or none: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// MC dropout: average this many stochastic passes (dropout on, batch norm in inference
    /// mode) and report calibration too.
    #[arg(long)]
    mc: Option<usize>,
    /// Seed of the MC dropout masks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// With --mc: write each record's mean probabilities and their standard deviations as CSV.
    #[arg(long)]
    probs: Option<PathBuf>,
    /// Another model to compare with: reports the fraction of records both classify alike.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Print JSON: {"accuracy", "loss", "images_per_second", "latency_us_per_image",
    /// "model_bytes", ...; with --reference "top1_agreement"}.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Single-precision GEMM, C[m x n] = A[m x k] B[k x n]: median GFLOP/s and time per call.
    Gemm {
        #[arg(long)]
        m: usize,
        #[arg(long)]
        k: usize,
        #[arg(long)]
        n: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Read A transposed (stored k x m).
        #[arg(long)]
        transpose_a: bool,
        /// Read B transposed (stored n x k).
        #[arg(long)]
        transpose_b: bool,
        /// f32, or bf16 (operands rounded to bf16, sums in f32; one thread).
        #[arg(long, default_value = "f32", value_parser = parse_precision)]
        precision: Precision,
        /// Measurement time.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Print {"gflops": .., "us_per_call": ..}.
        #[arg(long)]
        json: bool,
    },
    /// How long a cache line takes to go from one core to another and back (median): about
    /// 50 ns where two vCPUs share a die, 300 ns or more where the host placed them apart and
    /// training runs slower. Run it next to timings it should explain.
    Cores {
        /// Measurement time.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Print {"round_trip_ns": ..}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download and unpack CIFAR-10 (binary version) into --data.
    Fetch {
        #[arg(long)]
        data: Option<PathBuf>,
        /// Archive URL [default: $SIMDNN_CIFAR10_URL, else the official one]
        #[arg(long)]
        url: Option<String>,
        /// Expected MD5 of the archive [default: $SIMDNN_CIFAR10_MD5, else the official one]
        #[arg(long)]
        md5: Option<String>,
    },
}

fn parse_rate(text: &str) -> Result<f32> {
    text.trim().parse::<f32>().map_err(|_| Error::config("--lr", format!("`{text}` is not a number (or `auto`)")))
}

fn parse_activation(s: &str) -> std::result::Result<Activation, String> {
    match Activation::parse(s) {
        Some(a) if !a.is_row_wise() => Ok(a),
        _ => Err(format!(
            "unknown activation `{s}` (accepted: identity, relu, leaky_relu[:alpha], elu[:alpha], selu, tanh, logistic)"
        )),
    }
}

fn parse_parallel(s: &str) -> std::result::Result<Parallelism, String> {
    Parallelism::parse(s).ok_or_else(|| format!("unknown parallelism `{s}` (accepted: data, tensor)"))
}

fn parse_precision(s: &str) -> std::result::Result<Precision, String> {
    Precision::parse(s).ok_or_else(|| format!("unknown precision `{s}` (accepted: {})", Precision::NAMES))
}

fn parse_initializer(s: &str) -> std::result::Result<Initializer, String> {
    Initializer::parse(s).ok_or_else(|| format!("unknown initializer `{s}` (accepted: {})", Initializer::NAMES))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => cmd_train(*args),
        Command::LrFind { train, min_lr, max_lr, steps } => {
            cmd_lr_find(&train, LrFindSettings { min_lr, max_lr, steps })
        }
        Command::Sweep(args) => cmd_sweep(*args),
        Command::Export { model, out, dtype, calibrate, data } => {
            cmd_export(&model, &out, ExportOptions { weights: dtype, calibrate }, data)
        }
        Command::Eval(args) => cmd_eval(args),
        Command::Compare { runs, out } => write_report(&runs, &out).map(|comparison| {
            print!("{}", comparison.to_terminal());
            println!("wrote {} and {}", out.join(SVG_FILE).display(), out.join(REPORT_FILE).display());
        }),
        Command::Bench(BenchCommand::Gemm { m, k, n, threads, transpose_a, transpose_b, precision, seconds, json }) => {
            cmd_bench_gemm(m, k, n, threads, transpose_a, transpose_b, precision, seconds, json)
        }
        Command::Bench(BenchCommand::Cores { seconds, json }) => cmd_bench_cores(seconds, json),
        Command::Data(DataCommand::Fetch { data, url, md5 }) => {
            let dir = data.unwrap_or_else(default_data_dir);
            fetch(&dir, url, md5)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::Interrupted { .. }) => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fetch(dir: &std::path::Path, url: Option<String>, md5: Option<String>) -> Result<()> {
    let mut opts = FetchOptions::from_env();
    if let Some(url) = url {
        opts.url = url;
    }
    if let Some(md5) = md5 {
        opts.md5 = md5.to_ascii_lowercase();
    }
    eprintln!("downloading CIFAR-10 from {} into {}", opts.url, dir.display());
    fetch_cifar10(dir, &opts)
}

fn train_config(args: &TrainArgs) -> Result<TrainConfig> {
    let mut cfg = TrainConfig::preset(&args.preset)?;
    cfg.data_dir = args.data.clone().unwrap_or(cfg.data_dir);
    cfg.out_dir = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", cfg.preset, utc_stamp())));
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = args.$field { cfg.$field = v; } )* };
    }
    set!(
        depth,
        width,
        activation,
        batch_size,
        epochs,
        patience,
        min_delta,
        val_size,
        seed,
        threads,
        dropout,
        alpha_dropout,
        precision,
        parallel
    );
    match args.lr.as_deref() {
        Some("auto") => cfg.lr_auto = true,
        Some(text) => cfg.lr = parse_rate(text)?,
        None => {}
    }
    if let Some(spec) = &args.schedule {
        cfg.schedule = spec.parse()?;
    }
    cfg.step_log |= args.step_log;
    cfg.batch_norm |= args.batch_norm;
    if args.batch_norm && args.parallel.is_none() {
        cfg.parallel = TrainConfig::default_parallel(true);
    }
    if let Some(init) = args.init {
        cfg.init = init;
    }
    if let Some(name) = &args.optimizer {
        cfg.optimizer = OptimizerConfig::keras_default(name).ok_or_else(|| {
            Error::config("--optimizer", format!("unknown optimizer `{name}` (accepted: {})", OptimizerConfig::NAMES))
        })?;
    }
    apply_optimizer_flags(&mut cfg.optimizer, args)?;
    cfg.restore_best_weights = !args.no_restore_best;
    cfg.standardise |= args.standardise;
    if cfg.precision == Precision::Bf16 && !Bf16Kernel::Avx512Bf16.available() {
        eprintln!(
            "warning: this CPU has no AVX-512 BF16: --precision bf16 multiplies with the portable kernel, slower than f32"
        );
    }
    Ok(cfg)
}

/// Applies --beta1, --momentum, ... to the optimiser they belong to; a flag the chosen
/// optimiser does not have is an error rather than silently ignored.
fn apply_optimizer_flags(opt: &mut OptimizerConfig, args: &TrainArgs) -> Result<()> {
    let flags = [
        ("--beta1", "beta1", args.beta1),
        ("--beta2", "beta2", args.beta2),
        ("--epsilon", "epsilon", args.epsilon),
        ("--momentum", "momentum", args.momentum),
        ("--rho", "rho", args.rho),
        ("--weight-decay", "weight_decay", args.weight_decay),
        ("--nesterov", "nesterov", args.nesterov.then_some(1.0)),
    ];
    for (flag, key, value) in flags {
        if let Some(value) = value
            && !opt.set(key, value)
        {
            return Err(Error::config(flag, "does not apply to the chosen optimizer (see --optimizer)"));
        }
    }
    Ok(())
}

/// Fetches CIFAR-10 into the configured directory when it is not there yet.
fn ensure_data(cfg: &TrainConfig) -> Result<()> {
    if !is_complete(&cfg.data_dir) {
        eprintln!("CIFAR-10 not found in {}", cfg.data_dir.display());
        fetch(&cfg.data_dir, None, None)?;
    }
    Ok(())
}

fn cmd_lr_find(args: &TrainArgs, settings: LrFindSettings) -> Result<()> {
    let mut cfg = train_config(args)?;
    if args.out.is_none() {
        cfg.out_dir = PathBuf::from(format!("runs/lr-find-{}-{}", cfg.preset, utc_stamp()));
    }
    cfg.validate()?;
    check_out_dir_free(&cfg.out_dir, &simdnn::train::lr_find::LR_FIND_FILES)?;
    ensure_data(&cfg)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| Error::config("--threads", e.to_string()))?;
    let start = std::time::Instant::now();
    let test = pool.install(|| -> Result<_> {
        let data = Cifar10::open(&cfg.data_dir)?;
        let (train, _) = data.train_val(cfg.val_size)?;
        let preprocess =
            if cfg.standardise { simdnn::data::standardise_from(&train)? } else { simdnn::nn::Preprocess::UNIT_SCALE };
        let model = simdnn::nn::Sequential::new(simdnn::data::cifar::IMAGE_BYTES, &cfg.layer_specs(), cfg.seed)?;
        range_test(&model, &cfg, &train, &preprocess, settings)
    })?;
    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| Error::io(&cfg.out_dir, e))?;
    write_results(&cfg.out_dir, &test)?;
    println!(
        "{} steps in {:.2} s; wrote {}",
        test.points().len(),
        start.elapsed().as_secs_f64(),
        cfg.out_dir.join("lr_find.svg").display()
    );
    match test.suggestions() {
        Some(s) => println!("suggested rates: steepest descent {:.2e}, minimum / 10 {:.2e}", s.steepest, s.min_over_10),
        None => println!("too few points for a suggestion: widen --min-lr/--max-lr or add --steps"),
    }
    Ok(())
}

fn parse_weight_type(s: &str) -> std::result::Result<WeightType, String> {
    WeightType::parse(s).ok_or_else(|| format!("unknown weight type `{s}` (accepted: {})", WeightType::NAMES))
}

fn cmd_export(
    model: &std::path::Path,
    out: &std::path::Path,
    options: ExportOptions,
    data: Option<PathBuf>,
) -> Result<()> {
    let dir = data.unwrap_or_else(default_data_dir);
    let data = if is_complete(&dir) { Some(Cifar10::open(&dir)?) } else { None };
    let dtype = options.weights;
    let r = export(model, out, options, data.as_ref())?;
    println!(
        "wrote {} ({dtype:?}, {} bytes = {:.3} x f32; {} layers, {} before folding batch norm); inference scratch: {} floats",
        out.display(),
        r.bytes,
        r.bytes as f64 / r.f32_bytes as f64,
        r.layers_after,
        r.layers_before,
        r.scratch_len
    );
    for e in &r.layer_errors {
        let input = match r.input_quant.iter().find(|(l, _)| *l == e.layer) {
            Some((_, InputQuant::Static(q))) => {
                format!("; u8 input, scale {:.3e}, zero point {}", q.scale, q.zero_point)
            }
            Some((_, InputQuant::Dynamic)) => String::from("; u8 input, range per image"),
            None => String::new(),
        };
        println!(
            "  layer {:>2} ({} x {}): max |error| {:.2e}, relative RMS error {:.2e}{input}",
            e.layer, e.n_in, e.n_out, e.max_abs, e.relative_rms
        );
    }
    match r.test {
        Some(t) => println!(
            "test accuracy {:.4} (f32) -> {:.4} ({dtype:?}); top-1 agreement {:.4}; ECE {:.4} -> {:.4} ({:+.4})",
            t.original.accuracy,
            t.exported.accuracy,
            t.top1_agreement,
            t.original.ece,
            t.exported.ece,
            t.exported.ece - t.original.ece
        ),
        None => println!("(no CIFAR-10 in {}: pass --data to compare the two models' accuracy)", dir.display()),
    }
    Ok(())
}

fn cmd_sweep(args: TrainArgs) -> Result<()> {
    let rates: Vec<f32> = match args.lr.as_deref() {
        Some(list) => list
            .split(',')
            .map(|entry| {
                entry.trim().parse::<f32>().map_err(|_| {
                    Error::config("--lr", format!("`{entry}` is not a rate: give a list such as 1e-5,5e-5,1e-4"))
                })
            })
            .collect::<Result<_>>()?,
        None => {
            return Err(Error::config("--lr", "give the rates to sweep, for example --lr 1e-5,5e-5,1e-4,5e-4,1e-3"));
        }
    };
    let default_out = args.out.is_none();
    let mut cfg = train_config(&TrainArgs { lr: None, ..args })?;
    if default_out {
        cfg.out_dir = PathBuf::from(format!("runs/sweep-{}-{}", cfg.preset, utc_stamp()));
    }
    for &rate in &rates {
        TrainConfig { lr: rate, ..cfg.clone() }.validate()?;
    }
    ensure_data(&cfg)?;
    let mut on_event = |event: Event<'_>| match event {
        Event::EpochEnd(r) => println!(
            "  epoch {:>3}  val_loss {:.4}  val_accuracy {:.4}  {:.2} s",
            r.epoch, r.val_loss, r.val_accuracy, r.seconds
        ),
        Event::Warning(w) => eprintln!("  warning: {w}"),
        _ => {}
    };
    stop_on_ctrl_c();
    let results = sweep(&cfg, &rates, Some(&STOP), &mut on_event).inspect_err(|e| {
        if matches!(e, Error::Interrupted { .. }) {
            eprintln!("the sweep stopped; the same command continues it");
        }
    })?;
    print!("{}", sweep_table(&results));
    println!("wrote {}", cfg.out_dir.join(SWEEP_FILES[1]).display());
    Ok(())
}

/// Raised by Ctrl-C: training stops after the current step and saves its state.
static STOP: AtomicBool = AtomicBool::new(false);

/// The first Ctrl-C raises [`STOP`]; a second ends the process at once.
fn stop_on_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
    });
}

fn cmd_train(args: TrainArgs) -> Result<()> {
    let cfg = match &args.resume {
        Some(dir) => TrainConfig { out_dir: dir.clone(), ..TrainConfig::from_json(&saved_config_json(dir)?)? },
        None => train_config(&args)?,
    };
    cfg.validate()?;
    ensure_data(&cfg)?;
    stop_on_ctrl_c();
    let layers = cfg.layer_specs().len();
    eprintln!(
        "training preset {} ({} hidden x {} {}, {} layers) -> {}",
        cfg.preset,
        cfg.depth,
        cfg.width,
        cfg.activation,
        layers,
        cfg.out_dir.display()
    );
    let selu = cfg.selu_warnings();
    if !selu.is_empty() {
        eprintln!("warning: this SELU network will not self-normalise: {}", selu.join("; "));
    }
    let show_bar = !args.quiet && std::io::stderr().is_terminal();
    let epochs = cfg.epochs;
    let mut bar: Option<ProgressBar> = None;
    let mut on_event = |event: Event<'_>| match event {
        Event::EpochStart { epoch, steps } => {
            if show_bar {
                let b = ProgressBar::new(steps as u64);
                b.set_style(
                    ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                b.set_prefix(format!("{epoch}/{epochs}"));
                bar = Some(b);
            }
        }
        Event::Step { step, loss, accuracy } => {
            if let Some(b) = &bar
                && step % 64 == 0
            {
                b.set_position(step as u64);
                b.set_message(format!("loss {loss:.4} accuracy {accuracy:.4}"));
            }
        }
        Event::EpochEnd(r) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            println!(
                "epoch {:>3}/{epochs}  loss {:.4}  accuracy {:.4}  val_loss {:.4}  val_accuracy {:.4}  lr {:.2e}  {:.2} s",
                r.epoch, r.loss, r.accuracy, r.val_loss, r.val_accuracy, r.lr, r.seconds
            );
        }
        Event::Warning(w) => eprintln!("warning: {w}"),
    };
    let summary = match &args.resume {
        Some(dir) => resume_run(dir, Some(&STOP), &mut on_event)?,
        None => train_run_until(&cfg, &STOP, &mut on_event)?,
    };
    println!(
        "best epoch {} of {}: val_loss {:.4}, val_accuracy {:.4}; {:.2} s per epoch; model {}",
        summary.best_epoch,
        summary.epochs_run,
        summary.best_val_loss,
        summary.best_val_accuracy,
        summary.mean_epoch_seconds,
        summary.out_dir.join("best.simdnn").display()
    );
    let p = summary.phase_seconds;
    println!(
        "time: gradient {:.2} s, first-layer weight gradient {:.2} s, optimiser {:.2} s, validation {:.2} s",
        p.gradient, p.first_layer_weight_grad, p.optimizer, p.validation
    );
    Ok(())
}

fn cmd_eval(args: EvalArgs) -> Result<()> {
    let bytes = std::fs::read(&args.model).map_err(|e| Error::io(&args.model, e))?;
    let dir = args.data.unwrap_or_else(default_data_dir);
    let data = Cifar10::open(&dir)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::config("--threads", e.to_string()))?;
    let split = match args.split {
        SplitName::Test => data.test_records(),
        SplitName::Val => data.train_val(args.val_size)?.1,
        SplitName::Train => data.train_val(args.val_size)?.0,
    };
    if let Some(samples) = args.mc {
        if samples == 0 || samples > 10_000 {
            return Err(Error::config("--mc", format!("must be between 1 and 10000, got {samples}")));
        }
        // The in-place parser reads the layer list without copying the weights.
        let model = simdnn::infer::Model::from_bytes(&bytes).map_err(|e| Error::data(&args.model, e.to_string()))?;
        if !model.has_dropout() {
            eprintln!("warning: {} has no dropout layer: every MC sample is the same", args.model.display());
        }
        let start = std::time::Instant::now();
        let pred = pool.install(|| predict_file(&args.model, &bytes, &split, samples, args.seed))?;
        let seconds = start.elapsed().as_secs_f64();
        let m = pred.calibration();
        if let Some(path) = &args.probs {
            write_atomic(path, pred.to_csv().as_bytes())?;
        }
        if args.json {
            let json = serde_json::json!({
                "accuracy": m.accuracy, "loss": m.nll, "nll": m.nll, "ece": m.ece, "mean_entropy": m.mean_entropy,
                "samples": samples, "records": split.len(), "seconds": seconds,
            });
            println!("{json}");
        } else {
            println!(
                "{} records, MC dropout x{samples}: accuracy {:.4}, NLL {:.4}, ECE {:.4}, mean entropy {:.4} nats ({seconds:.3} s)",
                split.len(),
                m.accuracy,
                m.nll,
                m.ece,
                m.mean_entropy
            );
        }
        return Ok(());
    }
    let start = std::time::Instant::now();
    let pred = pool.install(|| predict_file(&args.model, &bytes, &split, 0, 0))?;
    let seconds = start.elapsed().as_secs_f64();
    let m = pred.calibration();
    let latency_us = single_image_latency_us(&bytes, &split, &args.model)?;
    let agreement = match &args.reference {
        Some(path) => {
            let reference = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let other = pool.install(|| predict_file(path, &reference, &split, 0, 0))?;
            Some(pred.top1_agreement(&other))
        }
        None => None,
    };
    if args.json {
        let mut json = serde_json::json!({
            "accuracy": m.accuracy, "loss": m.nll, "ece": m.ece, "records": split.len(), "seconds": seconds,
            "images_per_second": split.len() as f64 / seconds, "latency_us_per_image": latency_us,
            "model_bytes": bytes.len(),
        });
        if let Some(a) = agreement {
            json["top1_agreement"] = a.into();
        }
        println!("{json}");
    } else {
        println!(
            "{} records: loss {:.4}, accuracy {:.4}, ECE {:.4} ({seconds:.3} s, {:.0} images/s); one image on one thread: {latency_us:.1} us; model {} bytes",
            split.len(),
            m.nll,
            m.accuracy,
            m.ece,
            split.len() as f64 / seconds,
            bytes.len()
        );
        if let Some(a) = agreement {
            println!(
                "top-1 agreement with {}: {a:.4}",
                args.reference.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn cmd_bench_gemm(
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
    ta: bool,
    tb: bool,
    precision: Precision,
    seconds: f64,
    json: bool,
) -> Result<()> {
    for (flag, v) in [("--m", m), ("--k", k), ("--n", n), ("--threads", threads)] {
        if v == 0 || v > 1 << 16 {
            return Err(Error::config(flag, format!("must be between 1 and 65536, got {v}")));
        }
    }
    if (m * k + k * n + m * n) > 1 << 28 {
        return Err(Error::config("--m/--k/--n", "the matrices would need more than 1 GiB"));
    }
    check_bench_seconds(seconds)?;
    if precision == Precision::Bf16 && threads > 1 {
        return Err(Error::config("--threads", "the bf16 GEMM runs on one thread (training splits its work itself)"));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::config("--threads", e.to_string()))?;
    let t = pool.install(|| simdnn::bench::gemm_timing(m, k, n, ta, tb, precision, seconds));
    let precision = precision.name();
    if json {
        println!(
            "{}",
            serde_json::json!({ "m": m, "k": k, "n": n, "threads": threads, "precision": precision, "gflops": t.gflops, "us_per_call": t.us_per_call })
        );
    } else {
        println!(
            "gemm m={m} k={k} n={n} threads={threads} {precision}: {:.1} GFLOP/s, {:.2} us per call (median)",
            t.gflops, t.us_per_call
        );
    }
    Ok(())
}

fn check_bench_seconds(seconds: f64) -> Result<()> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 600.0) {
        return Err(Error::config("--seconds", "must be between 0 and 600"));
    }
    Ok(())
}

fn cmd_bench_cores(seconds: f64, json: bool) -> Result<()> {
    check_bench_seconds(seconds)?;
    let ns = simdnn::bench::core_round_trip_ns(seconds);
    if json {
        println!("{}", serde_json::json!({ "round_trip_ns": ns }));
    } else {
        println!(
            "core-to-core round trip: {ns:.0} ns (median of samples of {} round trips)",
            simdnn::bench::ROUND_TRIPS
        );
    }
    Ok(())
}

/// `YYYYMMDD-HHMMSS` in UTC, for default run directory names.
fn utc_stamp() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}
