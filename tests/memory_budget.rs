//! 2,000 images of 128×128 in an ImageFolder under a 1 GiB memory budget: the decoded
//! images stay in memory, and the run's peak resident memory stays within the budget
//! plus what the same run needs with no images in memory at all (models, activations,
//! the process). Measured by the real binary, which reports its peak (VmHWM).

mod common;

use std::path::Path;

use image::{Rgb, RgbImage};

fn make_folder(root: &Path, classes: usize, per_class: usize, side: u32) {
    for c in 0..classes {
        let dir = root.join(format!("class{c:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = RgbImage::from_fn(side, side, |x, y| {
                let v = ((x * (c as u32 + 1) + y * 3 + i as u32) % 64) as u8 * 4;
                Rgb([v, 255 - v, (c * 20) as u8])
            });
            img.save(dir.join(format!("{i:04}.png"))).unwrap();
        }
    }
}

/// Run the tiny scratch experiment on `data` with `budget_mb`; (peak MiB, resident
/// bytes of decoded images, images left on disk).
fn run(data: &Path, out: &Path, budget_mb: u64) -> (f64, u64, u64) {
    let config = out.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            r#"
name = "memory"
seed = 0
device = "cpu"
methods = ["scratch"]
[data]
kind = "image-folder"
path = {data:?}
k = 2
views = 2
stored_side = 128
memory_budget_mb = {budget_mb}
eval_every = 100
[foundation]
path = {weights:?}
[target]
image_size = 32
[distill]
batch_size = 20
[[distill.stages]]
name = "task"
epochs = 1
lr = 1e-3
weights = {{ ce = 1.0 }}
"#,
            data = data.display().to_string(),
            weights = common::root().join(common::WEIGHTS).display().to_string()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tdmr"))
        .args(["run", config.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let peak: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak resident memory: "))
        .and_then(|l| l.trim_end_matches(" MiB").parse().ok())
        .unwrap_or_else(|| panic!("no peak memory line in:\n{stdout}"));
    let loaded = &common::events(out, "data-loaded")[0];
    (
        peak,
        loaded["resident_bytes"].as_u64().unwrap(),
        loaded["on_disk"].as_u64().unwrap(),
    )
}

#[test]
fn two_thousand_images_stay_within_a_one_gib_budget() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    make_folder(&data, 10, 200, 128);
    let (bare, bare_resident, bare_disk) = run(&data, &dir.path().join("none"), 0);
    assert_eq!((bare_resident, bare_disk), (0, 2000));
    let (peak, resident, disk) = run(&data, &dir.path().join("gib"), 1024);
    assert_eq!((resident, disk), (2000 * 128 * 128 * 3, 0), "every image fits in 1 GiB");
    let resident_mib = resident as f64 / (1024.0 * 1024.0);
    eprintln!(
        "peak resident memory: {peak:.0} MiB with a 1024 MiB budget ({resident_mib:.0} MiB of decoded images), {bare:.0} MiB with none in memory"
    );
    assert!(
        peak < bare + 1024.0,
        "peak {peak:.0} MiB over the budget plus the bare run's {bare:.0} MiB"
    );
    // And not far above what the decoded images account for (decoding buffers aside).
    assert!(
        peak < bare + resident_mib + 128.0,
        "peak {peak:.0} MiB, bare {bare:.0} MiB, images {resident_mib:.0} MiB"
    );
}
