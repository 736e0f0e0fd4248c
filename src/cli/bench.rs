//! `tdmr bench`: images/s of the workloads that dominate a run, each in its own process.

use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,
    /// Foundation precision for its workloads: f32, or bf16 (CUDA).
    #[arg(long, default_value = "f32")]
    pub(crate) precision: String,
    /// The foundation checkpoint to time.
    #[arg(long, default_value = "sample-data/foundation/efficientnet-lite0.safetensors")]
    pub(crate) weights: PathBuf,
    /// Print the figures as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Seconds to time each workload after its warm-up.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) budget: f64,
    /// Skip the "before" column (the same workloads on the composed candle ops).
    #[arg(long)]
    pub(crate) no_before: bool,
    /// Time only the workloads whose names contain this text (e.g. `ResNet`).
    #[arg(long)]
    pub(crate) only: Option<String>,
    /// Time every workload in this process instead of one process each (their peak
    /// memory figures then include what earlier workloads left behind).
    #[arg(long)]
    pub(crate) in_process: bool,
    /// Run tdmr's own kernels on no wider a vector path than this: scalar, avx2 or
    /// avx512 (default: the widest this CPU has), to compare the paths.
    #[arg(long)]
    pub(crate) isa: Option<tdmr::ops::isa::Isa>,
    /// Run the convolutions' f32 GEMMs on these micro-kernels: fma, avx512 or crate
    /// (default: AVX-512 where the CPU has it, except on AMD Zen 4, else FMA).
    #[arg(long)]
    pub(crate) gemm: Option<tdmr::ops::gemm_kernels::GemmKernels>,
    /// Time only the workload at this index (what each child process is asked for).
    #[arg(long, hide = true)]
    pub(crate) workload: Option<usize>,
}

pub(crate) fn bench(mut args: BenchArgs) -> anyhow::Result<()> {
    args.weights = tdmr::resources::find(&args.weights);
    let (device, why) = tdmr::engine::session::select_device(&args.device)?;
    if let Some(why) = why {
        eprintln!("{why}");
    }
    let dtype = match args.precision.as_str() {
        "f32" => candle_core::DType::F32,
        "bf16" if !device.is_cpu() => candle_core::DType::BF16,
        "bf16" => anyhow::bail!("--precision bf16 is for CUDA; the CPU computes in f32"),
        other => anyhow::bail!("--precision {other}: expected f32 or bf16"),
    };
    let name = if device.is_cpu() { "cpu" } else { "cuda" };
    if let Some(isa) = args.isa {
        let detected = tdmr::ops::isa::Isa::detected();
        if isa > detected {
            eprintln!("--isa {isa}: this CPU's widest path is {detected}; using {detected}");
        }
        tdmr::ops::isa::limit(Some(isa));
    }
    if let Some(kernels) = args.gemm {
        tdmr::ops::gemm_kernels::choose(Some(kernels)).map_err(|e| anyhow::anyhow!("--gemm: {e}"))?;
    }
    let figures = if args.in_process || args.workload.is_some() {
        let opts = tdmr::bench::Options {
            budget_s: args.budget,
            before: !args.no_before,
            only: args.only.clone(),
            workload: args.workload,
        };
        tdmr::bench::run(&device, &args.weights, dtype, opts)?
    } else {
        bench_each_in_its_own_process(&args)?
    };
    let machine = tdmr::bench::Machine::here();
    if args.json {
        println!("{}", serde_json::json!({ "device": name, "machine": machine, "figures": figures }));
    } else {
        println!("{machine}");
        print!("{}", tdmr::bench::table(name, &figures));
    }
    Ok(())
}

/// `tdmr bench` once per workload, each in a fresh process, so every peak-memory figure
/// is that workload's alone (memory freed by the allocator is not handed back at once).
pub(crate) fn bench_each_in_its_own_process(args: &BenchArgs) -> anyhow::Result<Vec<tdmr::bench::Figure>> {
    let exe = std::env::current_exe()?;
    let mut figures = Vec::new();
    for i in 0..tdmr::bench::WORKLOADS {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "--json", "--device", &args.device, "--precision", &args.precision])
            .arg("--weights")
            .arg(&args.weights)
            .args(["--budget", &args.budget.to_string(), "--workload", &i.to_string()]);
        if args.no_before {
            cmd.arg("--no-before");
        }
        if let Some(only) = &args.only {
            cmd.args(["--only", only]);
        }
        if let Some(isa) = args.isa {
            cmd.args(["--isa", isa.name()]);
        }
        if let Some(kernels) = args.gemm {
            cmd.args(["--gemm", kernels.name()]);
        }
        let out = cmd.stderr(std::process::Stdio::inherit()).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            anyhow::bail!("bench workload {i} failed ({})", out.status);
        }
        let last = text.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(last).map_err(|e| anyhow::anyhow!("bench workload {i}: {e}: {last}"))?;
        figures.extend(serde_json::from_value::<Vec<tdmr::bench::Figure>>(v["figures"].clone())?);
    }
    Ok(figures)
}
