//! TensorBoard event files, written live: `RUN/tb/METHOD/events.out.tfevents.*`, one
//! TensorBoard run per method. Scalars: `step/loss` and `step/lr` per training step,
//! and per epoch `epoch/loss` with its `align`, `kd` and `ce` terms, `epoch/lr`,
//! `epoch/train_acc` and `epoch/eval_acc` (the evaluation split, where evaluated),
//! against the method's global step. The experiment goes in as a text summary.
//!
//! The messages are TensorFlow's `Event` and `Summary` protobufs, encoded with prost
//! (the structs below carry their field numbers); records are TFRecord-framed with
//! masked CRC32C checksums.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::events::Event;
use crate::{Error, Result};

/// `tensorflow.Event` (tensorflow/core/util/event.proto), the fields tdmr writes.
#[derive(Clone, PartialEq, Message)]
pub struct TfEvent {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`: a scalar (`simple_value`) or a tensor with plugin metadata.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TensorProto>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// The plugin's own protobuf, serialised (for `hparams`: [`HParamsPluginData`]).
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorboard.hparams.HParamsPluginData` (tensorboard/plugins/hparams/plugin_data.proto):
/// the session start and end a run's hyperparameters are filed under.
#[derive(Clone, PartialEq, Message)]
pub struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(message, optional, tag = "3")]
    pub session_start_info: Option<SessionStartInfo>,
    #[prost(message, optional, tag = "4")]
    pub session_end_info: Option<SessionEndInfo>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SessionStartInfo {
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, PbValue>,
    #[prost(string, tag = "4")]
    pub group_name: String,
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

#[derive(Clone, PartialEq, Message)]
pub struct SessionEndInfo {
    /// `Status.STATUS_SUCCESS` is 1.
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// `google.protobuf.Value`, the kinds a hyperparameter takes.
#[derive(Clone, PartialEq, Message)]
pub struct PbValue {
    #[prost(oneof = "PbKind", tags = "2, 3, 4")]
    pub kind: Option<PbKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PbKind {
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    Text(String),
    #[prost(bool, tag = "4")]
    Bool(bool),
}

/// `tensorflow.TensorProto`, as a scalar string (the text plugin's payload).
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    /// `DT_STRING` is 7.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShape>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `tensorflow.TensorShapeProto` with no dimensions: a scalar.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShape {}

const DT_STRING: i32 = 7;
const DT_FLOAT: i32 = 1;

/// TFRecord's checksum: CRC32C, rotated right by 15 and offset.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC (little-endian).
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The records of a TFRecord file, checksums verified.
pub fn read_records(bytes: &[u8], origin: &Path) -> Result<Vec<Vec<u8>>> {
    let bad = |at: usize, what: &str| Error::File {
        path: origin.into(),
        msg: format!("TFRecord at byte {at}: {what}"),
    };
    let (mut at, mut out) = (0, Vec::new());
    while at < bytes.len() {
        let header = bytes.get(at..at + 12).ok_or_else(|| bad(at, "truncated header"))?;
        let len_bytes = &header[..8];
        if u32::from_le_bytes(header[8..12].try_into().unwrap_or_default()) != masked_crc(len_bytes) {
            return Err(bad(at, "length checksum mismatch"));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap_or_default()) as usize;
        let data = bytes.get(at + 12..at + 12 + len).ok_or_else(|| bad(at, "truncated data"))?;
        let crc = bytes
            .get(at + 12 + len..at + 16 + len)
            .ok_or_else(|| bad(at, "truncated data checksum"))?;
        if u32::from_le_bytes(crc.try_into().unwrap_or_default()) != masked_crc(data) {
            return Err(bad(at, "data checksum mismatch"));
        }
        out.push(data.to_vec());
        at += 16 + len;
    }
    Ok(out)
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

struct MethodLog {
    file: BufWriter<File>,
    path: PathBuf,
    step: i64,
}

/// The live writer: one event file per method, opened at the method's first event.
pub struct TensorBoard {
    dir: PathBuf,
    config: String,
    methods: BTreeMap<String, MethodLog>,
}

impl TensorBoard {
    /// Event files go under `dir`; `config` (the experiment's TOML) is logged per method.
    pub fn new(dir: &Path, config: String) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(TensorBoard {
            dir: dir.to_path_buf(),
            config,
            methods: BTreeMap::new(),
        })
    }

    fn log(&mut self, method: &str) -> Result<&mut MethodLog> {
        if !self.methods.contains_key(method) {
            let dir = self.dir.join(method);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "tdmr".into());
            // A resumed run starts a new file: TensorBoard reads every file of the folder.
            let path = dir.join(format!("events.out.tfevents.{}.{host}.{}", now() as u64, std::process::id()));
            let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
            let mut log = MethodLog {
                file: BufWriter::new(file),
                path,
                step: 0,
            };
            write(
                &mut log,
                &TfEvent {
                    wall_time: now(),
                    step: 0,
                    file_version: Some("brain.Event:2".into()),
                    summary: None,
                },
            )?;
            let text = SummaryValue {
                tag: "config".into(),
                tensor: Some(TensorProto {
                    dtype: DT_STRING,
                    tensor_shape: Some(TensorShape {}),
                    string_val: vec![format!("```toml\n{}\n```", self.config).into_bytes()],
                }),
                metadata: Some(SummaryMetadata {
                    plugin_data: Some(PluginData {
                        plugin_name: "text".into(),
                        content: Vec::new(),
                    }),
                }),
                ..Default::default()
            };
            write(&mut log, &summary_event(0, vec![text]))?;
            let start = HParamsPluginData {
                version: 0,
                session_start_info: Some(SessionStartInfo {
                    hparams: hparams(&self.config, method),
                    group_name: String::new(),
                    start_time_secs: now(),
                }),
                session_end_info: None,
            };
            write(
                &mut log,
                &summary_event(0, vec![hparams_value("_hparams_/session_start_info", &start)]),
            )?;
            self.methods.insert(method.to_string(), log);
        }
        Ok(self.methods.get_mut(method).expect("inserted above"))
    }

    /// Write what `event` carries (steps and epochs; other events carry no scalar).
    pub fn observe(&mut self, event: &Event) -> Result<()> {
        match event {
            Event::Step { method, loss, lr, .. } => {
                let log = self.log(method)?;
                log.step += 1;
                let step = log.step;
                write(log, &summary_event(step, vec![scalar("step/loss", *loss), scalar("step/lr", *lr)]))
            }
            Event::Epoch {
                method,
                loss,
                lr,
                train_acc,
                test_acc,
                ..
            } => {
                let log = self.log(method)?;
                let mut values = vec![
                    scalar("epoch/loss", loss.total),
                    scalar("epoch/loss_align", loss.align),
                    scalar("epoch/loss_kd", loss.kd),
                    scalar("epoch/loss_ce", loss.ce),
                    scalar("epoch/lr", *lr),
                    scalar("epoch/train_acc", *train_acc),
                ];
                if let Some(acc) = test_acc {
                    values.push(scalar("epoch/eval_acc", *acc));
                }
                let step = log.step;
                write(log, &summary_event(step, values))?;
                log.file.flush().map_err(|e| Error::io(&log.path, e))
            }
            Event::MethodDone { method, .. } => {
                let log = self.log(method)?;
                let end = HParamsPluginData {
                    version: 0,
                    session_start_info: None,
                    session_end_info: Some(SessionEndInfo {
                        status: 1,
                        end_time_secs: now(),
                    }),
                };
                let step = log.step;
                write(log, &summary_event(step, vec![hparams_value("_hparams_/session_end_info", &end)]))?;
                log.file.flush().map_err(|e| Error::io(&log.path, e))
            }
            _ => Ok(()),
        }
    }
}

/// The experiment's keys as hyperparameters (numbers, booleans, else their TOML text),
/// with the method, so TensorBoard's HParams table holds one row per method.
pub fn hparams(config: &str, method: &str) -> BTreeMap<String, PbValue> {
    let mut flat = BTreeMap::new();
    if let Ok(t) = toml::from_str::<toml::Table>(config) {
        crate::config::live::flatten("", &toml::Value::Table(t), &mut flat);
    }
    let mut out: BTreeMap<String, PbValue> = flat
        .into_iter()
        .map(|(k, v)| {
            let kind = match (v.parse::<f64>(), v.as_str()) {
                (Ok(x), _) => PbKind::Number(x),
                (_, "true") => PbKind::Bool(true),
                (_, "false") => PbKind::Bool(false),
                _ => PbKind::Text(v.trim_matches('"').to_string()),
            };
            (k, PbValue { kind: Some(kind) })
        })
        .collect();
    out.insert(
        "method".into(),
        PbValue {
            kind: Some(PbKind::Text(method.into())),
        },
    );
    out
}

/// A summary value in the form TensorBoard's hparams plugin writes: the plugin data in
/// the metadata, and an empty float tensor.
fn hparams_value(tag: &str, data: &HParamsPluginData) -> SummaryValue {
    SummaryValue {
        tag: tag.into(),
        tensor: Some(TensorProto {
            dtype: DT_FLOAT,
            tensor_shape: Some(TensorShape {}),
            string_val: Vec::new(),
        }),
        metadata: Some(SummaryMetadata {
            plugin_data: Some(PluginData {
                plugin_name: "hparams".into(),
                content: data.encode_to_vec(),
            }),
        }),
        ..Default::default()
    }
}

fn scalar(tag: &str, v: f64) -> SummaryValue {
    SummaryValue {
        tag: tag.into(),
        simple_value: Some(v as f32),
        ..Default::default()
    }
}

fn summary_event(step: i64, value: Vec<SummaryValue>) -> TfEvent {
    TfEvent {
        wall_time: now(),
        step,
        file_version: None,
        summary: Some(Summary { value }),
    }
}

fn write(log: &mut MethodLog, event: &TfEvent) -> Result<()> {
    log.file
        .write_all(&frame(&event.encode_to_vec()))
        .map_err(|e| Error::io(&log.path, e))
}
