//! `cargo bench`: the same workloads as `tdmr bench` (images/s and peak memory, with
//! the composed-ops "before" column) on the CPU, printed as a table. Pass a workload
//! name fragment after `--` to time only those, e.g. `cargo bench -- ResNet`.

use std::path::Path;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // The same allocator setting as the binary: keep freed pages for the next step.
    // SAFETY: setting an option before any allocation-heavy work.
    unsafe { libmimalloc_sys::mi_option_set(tdmr::bench::MI_OPTION_PURGE_DELAY, -1) };
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    // One process for all: the peak-memory column includes what earlier workloads
    // left behind (`tdmr bench` runs each in its own).
    let opts = tdmr::bench::Options {
        only,
        ..Default::default()
    };
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/foundation/efficientnet-lite0.safetensors");
    let figures = tdmr::bench::run(&candle_core::Device::Cpu, &weights, candle_core::DType::F32, opts)?;
    println!("{}", tdmr::bench::Machine::here());
    print!("{}", tdmr::bench::table("cpu", &figures));
    Ok(())
}
