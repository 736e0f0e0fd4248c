//! Property-based fuzzing of every reader of untrusted bytes: the config parser, the
//! safetensors reader, the PyTorch pickle reader (zip and opcodes) and the image
//! decoder. Each case mutates a valid seed (byte flips, insertions, a truncation) or is
//! random bytes; the property is "an Ok or an Err, never a panic". CI runs
//! `TDMR_FUZZ_CASES` (default 1000) cases per target; run 100000 locally with
//! `TDMR_FUZZ_CASES=100000 cargo test --release --test fuzz`.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::{pth_fixture, pth_with_program};
use proptest::prelude::*;
use proptest::sample::Index;
use tdmr::data::image_file::decode_rgb;
use tdmr::models::inspect::{pickle_entries, safetensors_entries};
use tdmr::models::weights::StrictWeights;

fn cases() -> u32 {
    std::env::var("TDMR_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Byte edits to a seed: overwrite, insert, remove, then maybe truncate.
#[derive(Debug, Clone)]
enum Edit {
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, u8),
}

fn edits() -> impl Strategy<Value = (Vec<Edit>, Option<Index>)> {
    let edit = prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<Index>(), 1..32u8).prop_map(|(i, n)| Edit::Remove(i, n)),
    ];
    (prop::collection::vec(edit, 0..8), prop::option::weighted(0.2, any::<Index>()))
}

fn mutate(seed: &[u8], (edits, cut): &(Vec<Edit>, Option<Index>)) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        if b.is_empty() {
            break;
        }
        match e {
            Edit::Set(i, v) => {
                let i = i.index(b.len());
                b[i] = *v;
            }
            Edit::Insert(i, bytes) => {
                let i = i.index(b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Edit::Remove(i, n) => {
                let i = i.index(b.len());
                let end = (i + *n as usize).min(b.len());
                b.drain(i..end);
            }
        }
    }
    if let Some(c) = cut {
        b.truncate(c.index(b.len() + 1));
    }
    b
}

/// Seed bytes, or random ones (a tenth of the cases).
fn input(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        9 => edits().prop_map(move |m| mutate(&seed, &m)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

fn safetensors_seed() -> Vec<u8> {
    let t = |shape: &[usize]| Tensor::ones(shape, candle_core::DType::F32, &Device::Cpu).unwrap();
    let map: std::collections::HashMap<String, Tensor> = [("a.weight", t(&[2, 3])), ("b.bias", t(&[4]))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    safetensors::serialize(&map, None).unwrap()
}

/// The pickle program inside the seed checkpoint.
fn pickle_program() -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pth_fixture())).unwrap();
    let mut f = zip.by_name("archive/data.pkl").unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut out).unwrap();
    out
}

fn image_seeds() -> Vec<Vec<u8>> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 128]));
    [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Bmp,
        image::ImageFormat::WebP,
    ]
    .into_iter()
    .map(|f| {
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, f).unwrap();
        buf.into_inner()
    })
    .collect()
}

fn write_case(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn the_seeds_are_valid_inputs() {
    assert!(tdmr::config::Experiment::parse(&common::tiny_text(), "tiny.toml", &[]).is_ok());
    assert_eq!(safetensors_entries(&safetensors_seed()).unwrap().len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let p = write_case(dir.path(), "seed.pth", &pth_with_program(&pickle_program()));
    assert_eq!(pickle_entries(&p).unwrap().len(), 3);
    for s in image_seeds() {
        assert_eq!(decode_rgb(&s, Path::new("seed"), 1 << 20).unwrap().dimensions(), (8, 8));
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_parser_never_panics(bytes in input(common::tiny_text().into_bytes())) {
        let _ = tdmr::config::Experiment::parse(&String::from_utf8_lossy(&bytes), "fuzz.toml", &[]);
    }

    #[test]
    fn safetensors_reader_never_panics(bytes in input(safetensors_seed())) {
        if let Ok(entries) = safetensors_entries(&bytes) {
            // A header that validates describes exactly the bytes that follow it.
            prop_assert!(entries.iter().all(|e| e.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_some()));
        }
        let _ = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu);
    }

    #[test]
    fn pickle_program_reader_never_panics(program in input(pickle_program())) {
        let dir = tempfile::tempdir().unwrap();
        let p = write_case(dir.path(), "case.pth", &pth_with_program(&program));
        let _ = pickle_entries(&p);
        let _ = StrictWeights::open(&p, &Device::Cpu);
    }

    #[test]
    fn pth_file_reader_never_panics(bytes in input(pth_fixture())) {
        let dir = tempfile::tempdir().unwrap();
        let p = write_case(dir.path(), "case.pth", &bytes);
        let _ = pickle_entries(&p);
        let _ = StrictWeights::open(&p, &Device::Cpu);
    }

    #[test]
    fn image_decoder_never_panics(which in 0..4usize, m in edits(), random in prop::collection::vec(any::<u8>(), 0..256), use_random in prop::bool::weighted(0.1)) {
        let bytes = if use_random { random } else { mutate(&image_seeds()[which], &m) };
        if let Ok(img) = decode_rgb(&bytes, Path::new("case"), 1 << 20) {
            prop_assert!(u64::from(img.width()) * u64::from(img.height()) <= 1 << 20);
        }
    }
}
