//! TensorBoard event files of a real run, read back: framing, checksums, and one
//! epoch record per epoch event of `metrics.jsonl`.

mod common;

use std::collections::BTreeMap;

use prost::Message;
use tdmr::engine::run_blocking;
use tdmr::engine::run_dir::RunDir;
use tdmr::engine::tensorboard::{frame, read_records, HParamsPluginData, PbKind, TfEvent};

#[test]
fn a_run_writes_one_event_file_per_method_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let exp = tdmr::config::Experiment::parse(&common::tiny_text(), "tiny.toml", &["methods=[\"scratch\",\"tdmr\"]".into()]).unwrap();
    let run = RunDir::create(Some(&dir.path().join("run")), "tiny").unwrap();
    run_blocking(&exp, &run, None, None).unwrap();

    let epochs = common::events(&run.root, "epoch");
    let steps = common::events(&run.root, "step");
    for method in ["scratch", "tdmr-teacher", "tdmr"] {
        let folder = run.root.join("tb").join(method);
        let files: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{method}: {files:?}");
        assert!(files[0].file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."));
        let bytes = std::fs::read(&files[0]).unwrap();
        let events: Vec<TfEvent> = read_records(&bytes, &files[0])
            .unwrap()
            .iter()
            .map(|r| TfEvent::decode(r.as_slice()).unwrap())
            .collect();
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let mut tags: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
        for e in &events[1..] {
            for v in &e.summary.as_ref().unwrap().value {
                tags.entry(v.tag.clone())
                    .or_default()
                    .push((e.step, v.simple_value.unwrap_or(f32::NAN)));
            }
        }
        let mine = |list: &[serde_json::Value]| list.iter().filter(|e| e["method"] == method).cloned().collect::<Vec<_>>();
        let (my_epochs, my_steps) = (mine(&epochs), mine(&steps));
        assert_eq!(tags["epoch/loss"].len(), my_epochs.len(), "{method}");
        assert_eq!(tags["step/loss"].len(), my_steps.len(), "{method}");
        assert_eq!(tags["config"].len(), 1);
        // The figures are the events' (as f32), at the method's global step.
        for ((step, v), e) in tags["epoch/train_acc"].iter().zip(&my_epochs) {
            assert_eq!(*v, e["train_acc"].as_f64().unwrap() as f32);
            assert!(*step >= 1 && *step <= my_steps.len() as i64);
        }
        let evaluated = my_epochs.iter().filter(|e| !e["test_acc"].is_null()).count();
        assert_eq!(tags.get("epoch/eval_acc").map_or(0, Vec::len), evaluated, "{method}");
        let step_numbers: Vec<i64> = tags["step/loss"].iter().map(|(s, _)| *s).collect();
        assert_eq!(step_numbers, (1..=my_steps.len() as i64).collect::<Vec<_>>());

        // HParams: one session start carrying the method and the config's keys, typed,
        // before any scalar; one successful session end after the last.
        let plugin = |tag: &str| -> Vec<HParamsPluginData> {
            events
                .iter()
                .flat_map(|e| e.summary.iter().flat_map(|s| s.value.iter()))
                .filter(|v| v.tag == tag)
                .map(|v| {
                    let data = v.metadata.as_ref().unwrap().plugin_data.as_ref().unwrap();
                    assert_eq!(data.plugin_name, "hparams");
                    HParamsPluginData::decode(data.content.as_slice()).unwrap()
                })
                .collect()
        };
        let starts = plugin("_hparams_/session_start_info");
        assert_eq!(starts.len(), 1, "{method}");
        let hp = &starts[0].session_start_info.as_ref().unwrap().hparams;
        assert_eq!(hp["method"].kind, Some(PbKind::Text(method.into())));
        assert_eq!(hp["seed"].kind, Some(PbKind::Number(exp.seed as f64)));
        assert_eq!(hp["data.k"].kind, Some(PbKind::Number(exp.data.k as f64)));
        assert_eq!(hp["data.flip"].kind, Some(PbKind::Bool(exp.data.flip)));
        let ends = plugin("_hparams_/session_end_info");
        assert_eq!(ends.len(), 1, "{method}");
        assert_eq!(ends[0].session_end_info.as_ref().unwrap().status, 1);

        // A flipped bit anywhere in a record is caught by its checksum.
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 6] ^= 0x10;
        let err = read_records(&bad, &files[0]).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }
}

#[test]
fn tfrecord_framing_matches_the_published_checksums() {
    // CRC32C("123456789") is 0xE3069283 (RFC 3720's check value); the frame carries the
    // length, its masked CRC, the data and its masked CRC.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    let f = frame(b"abc");
    assert_eq!(f.len(), 8 + 4 + 3 + 4);
    assert_eq!(&f[..8], &3u64.to_le_bytes());
    assert_eq!(&f[12..15], b"abc");
    let records = read_records(&[f.clone(), frame(b"")].concat(), std::path::Path::new("x")).unwrap();
    assert_eq!(records, vec![b"abc".to_vec(), Vec::new()]);
    assert!(read_records(&f[..f.len() - 1], std::path::Path::new("x")).is_err());
}
