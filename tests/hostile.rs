//! Hostile files: lying safetensors headers, pickles with unexpected opcodes (or ones
//! that would run code in Python), decompression bombs. Each is a one-line error that
//! names the file, never a panic or an unbounded allocation.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// `tdmr inspect FILE`: (succeeded, stderr).
fn inspect(path: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tdmr")).arg("inspect").arg(path).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn assert_one_line_error(path: &Path, what: &str) -> String {
    let (ok, err) = inspect(path);
    assert!(!ok, "{what}: accepted");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
    assert!(
        err.starts_with("error: ") && err.contains(&path.display().to_string()),
        "{what}: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    err
}

/// A safetensors file with `header` as its JSON header and `data` after it.
fn safetensors_file(dir: &Path, name: &str, header_len: Option<u64>, header: &str, data: &[u8]) -> PathBuf {
    let mut b = header_len.unwrap_or(header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    let p = dir.join(name);
    std::fs::write(&p, b).unwrap();
    p
}

#[test]
fn lying_safetensors_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // One F32 tensor `w` of `shape` whose data ends at byte `end`.
    let w = |shape: &str, end: u64| format!(r#"{{"w":{{"dtype":"F32","shape":{shape},"data_offsets":[0,{end}]}}}}"#);
    let ok = w("[2,2]", 16);
    let cases = [
        ("huge-header-length.safetensors", Some(1u64 << 60), ok.clone(), 16usize),
        ("header-past-the-end.safetensors", Some(4096), ok.clone(), 16),
        ("offsets-out-of-range.safetensors", None, w("[2,2]", 1_600_000), 16),
        ("huge-shape.safetensors", None, w("[1099511627776,1099511627776]", 16), 16),
        ("overflowing-shape.safetensors", None, w("[18446744073709551615,2]", 16), 16),
        ("shape-disagrees-with-offsets.safetensors", None, w("[3,3]", 16), 16),
        ("not-json.safetensors", None, "{\"w\": [nonsense".into(), 16),
        ("empty.safetensors", Some(0), String::new(), 0),
    ];
    for (name, len, header, data) in cases {
        let p = safetensors_file(d, name, len, &header, &vec![0u8; data]);
        let err = assert_one_line_error(&p, name);
        assert!(err.contains("not a readable safetensors file"), "{name}: {err}");
        // The training path refuses it the same way.
        let e = tdmr::models::efficientnet_lite::EfficientNetLite::load(&p, &candle_core::Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("{name} loaded"))
            .to_string();
        assert!(e.contains(name), "{e}");
    }
    // The well-formed header really is readable: the cases above fail for their lie.
    let p = safetensors_file(d, "fine.safetensors", None, &ok, &[0u8; 16]);
    assert!(inspect(&p).1.contains("no known foundation layout"));
}

/// `tests/fixtures/tiny.pth` with its pickle program replaced, written to `dir/name`.
fn pth_file_with_program(dir: &Path, name: &str, program: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pth_with_program(program)).unwrap();
    p
}

#[test]
fn pickles_with_unexpected_opcodes_or_code_are_refused_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The fixture itself reads: three tensors.
    let fixture = root().join("tests/fixtures/tiny.pth");
    let entries = tdmr::models::inspect::pickle_entries(&fixture).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = entries.into_iter().map(|e| (e.name, e.shape)).collect();
    assert!(shapes.contains(&("conv.weight".into(), vec![4, 3, 3, 3])), "{shapes:?}");
    let w = tdmr::models::weights::StrictWeights::open(&fixture, &candle_core::Device::Cpu)
        .unwrap()
        .take("fc.weight", &[2, 4])
        .unwrap();
    // Values written by scripts/make-test-pth.py: ((k·7 + 2) mod 11) / 10.
    let v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(v, (0..8).map(|k| ((k * 7 + 2) % 11) as f32 / 10.0).collect::<Vec<_>>());

    // An opcode the reader does not know (0xff), and one it does not support (INST).
    for (name, program) in [
        ("unknown-opcode.pth", b"\x80\x02\xff.".to_vec()),
        ("inst-opcode.pth", b"\x80\x02(iposix\nsystem\n.".to_vec()),
        ("empty-program.pth", Vec::new()),
    ] {
        let p = pth_file_with_program(d, name, &program);
        let err = assert_one_line_error(&p, name);
        assert!(err.contains("not a readable PyTorch checkpoint"), "{name}: {err}");
    }
    // Found by tests/fuzz.rs: `_rebuild_tensor_v2` with too few arguments, or a storage
    // tuple too short, made candle's reader index out of bounds (a panic in candle
    // 0.11.1, src/pickle.rs:628 and :633).
    for (name, program) in [
        ("short-rebuild-args.pth", &b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(K\x00K\x00K\x00tRs."[..]),
        (
            "short-storage-tuple.pth",
            &b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storageK\x00K\x00tQK\x00(K\x01t(K\x01t\x89NtRs."[..],
        ),
    ] {
        let p = pth_file_with_program(d, name, program);
        let err = assert_one_line_error(&p, name);
        assert!(err.contains("not a readable PyTorch checkpoint"), "{name}: {err}");
    }
    // `os.system("touch MARKER")` as Python would run it on load: read, never executed.
    let marker = d.join("MARKER");
    let cmd = format!("touch {}", marker.display());
    let mut program = b"\x80\x02cos\nsystem\nX".to_vec();
    program.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    program.extend_from_slice(cmd.as_bytes());
    program.extend_from_slice(b"\x85R.");
    let p = pth_file_with_program(d, "runs-code.pth", &program);
    let (ok, err) = inspect(&p);
    assert!(!ok && !err.contains("panicked"), "{err}");
    assert!(!marker.exists(), "the pickle ran code");
}

#[test]
fn decompression_bombs_are_refused_before_decoding() {
    // A real 1×1 PNG whose header is rewritten to declare 100000×100000 pixels.
    let mut buf = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(1, 1).write_to(&mut buf, image::ImageFormat::Png).unwrap();
    let mut png = buf.into_inner();
    // IHDR: 8-byte signature, 4-byte length, "IHDR", width, height ... then its CRC.
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    let path = Path::new("bomb.png");
    let e = tdmr::data::image_file::decode_rgb(&png, path, tdmr::data::image_file::DEFAULT_MAX_PIXELS)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bomb.png") && e.contains("100000×100000") && e.contains("over the cap"),
        "{e}"
    );
    // The cap is exact: a real 4×4 image decodes at 16 pixels and is refused at 15.
    let mut buf = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(4, 4).write_to(&mut buf, image::ImageFormat::Png).unwrap();
    let png = buf.into_inner();
    assert_eq!(tdmr::data::image_file::decode_rgb(&png, path, 16).unwrap().dimensions(), (4, 4));
    assert!(tdmr::data::image_file::decode_rgb(&png, path, 15).is_err());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("not-an-image.png");
    std::fs::write(&f, "hello").unwrap();
    let e = tdmr::data::image_file::load_rgb(&f, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("not-an-image.png") && e.contains("not an image"), "{e}");
}
