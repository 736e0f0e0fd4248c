//! ONNX graphs of the deployable models, built on the ONNX protobuf types that
//! `tract-onnx` generates with prost (no protobuf written by hand), and run through
//! tract for `tdmr predict` and the export checks.
//!
//! Each target module emits its own nodes (`Backbone::emit_onnx` and friends) onto a
//! [`Graph`]; this module holds the builder, the model wrapper and the metadata.

pub mod runtime;

use candle_core::{DType, Tensor};
use prost::Message;
use tract_onnx::pb::{
    self, attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::{Error, Result};

/// The operator set the graphs are written against (LayerNormalization is in it).
pub const OPSET: i64 = 17;
/// ONNX IR version 8 is what opset 17 shipped with (ONNX 1.12).
const IR_VERSION: i64 = 8;
/// The symbolic batch dimension of the input and outputs.
pub const BATCH: &str = "batch";
pub const INPUT: &str = "pixels";
pub const LOGITS: &str = "logits";
pub const PROBABILITIES: &str = "probabilities";
/// Metadata keys: the class names (a JSON array), the input side, the whole model card.
pub const CLASSES_KEY: &str = "classes";
pub const IMAGE_SIZE_KEY: &str = "tdmr.image_size";
pub const CARD_KEY: &str = "tdmr.card";

/// An attribute value for [`Graph::node`].
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// Stride, padding (all four sides) and groups of a convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub stride: usize,
    pub pad: usize,
    /// 1, or the channel count for a depthwise convolution.
    pub group: usize,
}

/// A graph under construction: nodes in topological order and their constant inputs.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    names: usize,
}

fn onnx_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Onnx(format!("{what}: {e}"))
}

impl Graph {
    pub fn new() -> Self {
        Graph::default()
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.names += 1;
        format!("{hint}_{}", self.names)
    }

    /// A float constant from a candle tensor, named after the parameter it came from.
    pub fn tensor(&mut self, hint: &str, t: &Tensor) -> Result<String> {
        let data: Vec<f32> = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(|e| onnx_err(hint, e))?;
        Ok(self.floats(hint, t.dims(), &data))
    }

    /// A float constant; `dims` empty for a scalar.
    pub fn floats(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, dims, DataType::Float, bytes)
    }

    /// An int64 constant; `dims` empty for a scalar.
    pub fn ints(&mut self, hint: &str, dims: &[usize], data: &[i64]) -> String {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, dims, DataType::Int64, bytes)
    }

    fn initializer(&mut self, hint: &str, dims: &[usize], data_type: DataType, raw_data: Vec<u8>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data,
            ..Default::default()
        });
        name
    }

    /// One node with one output, whose name it returns.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_into(op, inputs, attrs, &out);
        out
    }

    /// One node writing the named output `out` (a graph output).
    pub fn node_into(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>, out: &str) {
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = AttributeProto {
                    name: name.into(),
                    ..Default::default()
                };
                match a {
                    Attr::Int(i) => (p.i, p.r#type) = (i, AttributeType::Int as i32),
                    Attr::Ints(v) => (p.ints, p.r#type) = (v, AttributeType::Ints as i32),
                    Attr::Float(f) => (p.f, p.r#type) = (f, AttributeType::Float as i32),
                }
                p
            })
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
    }

    pub fn binary(&mut self, op: &str, a: &str, b: &str) -> String {
        self.node(op, &[a, b], vec![])
    }

    /// `x · wᵀ + b` on the last dimension (`w` is `[out, in]` as PyTorch stores it).
    pub fn linear(&mut self, hint: &str, x: &str, w: &Tensor, b: &Tensor) -> Result<String> {
        let wt = w.t().map_err(|e| onnx_err(hint, e))?;
        let wt = self.tensor(&format!("{hint}.weight_t"), &wt)?;
        let b = self.tensor(&format!("{hint}.bias"), b)?;
        let y = self.binary("MatMul", x, &wt);
        Ok(self.binary("Add", &y, &b))
    }

    /// Multiply by a scalar constant.
    pub fn scale(&mut self, x: &str, s: f32) -> String {
        let c = self.floats("scale", &[], &[s]);
        self.binary("Mul", x, &c)
    }

    /// `min(max(x, lo), hi)`.
    pub fn clip(&mut self, x: &str, lo: f32, hi: f32) -> String {
        let lo = self.floats("clip_min", &[], &[lo]);
        let hi = self.floats("clip_max", &[], &[hi]);
        self.node("Clip", &[x, &lo, &hi], vec![])
    }

    /// A 2-D convolution with bias.
    pub fn conv(&mut self, hint: &str, x: &str, w: &Tensor, b: &Tensor, spec: ConvSpec) -> Result<String> {
        let k = w.dim(2).map_err(|e| onnx_err(hint, e))? as i64;
        let w = self.tensor(&format!("{hint}.weight"), w)?;
        let b = self.tensor(&format!("{hint}.bias"), b)?;
        let (s, p) = (spec.stride as i64, spec.pad as i64);
        Ok(self.node(
            "Conv",
            &[x, &w, &b],
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![s, s])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
                ("group", Attr::Int(spec.group as i64)),
            ],
        ))
    }

    /// Global mean over H and W: `[B, C, H, W]` → `[B, C]`.
    pub fn global_mean(&mut self, x: &str) -> String {
        let pooled = self.node("GlobalAveragePool", &[x], vec![]);
        self.node("Flatten", &[&pooled], vec![("axis", Attr::Int(1))])
    }

    /// `x[..., index, ...]` along `axis`, that axis dropped.
    pub fn take(&mut self, x: &str, axis: i64, index: i64) -> String {
        let i = self.ints("index", &[], &[index]);
        self.node("Gather", &[x, &i], vec![("axis", Attr::Int(axis))])
    }

    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.ints("shape", &[shape.len()], shape);
        self.node("Reshape", &[x, &s], vec![])
    }

    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.node("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    /// Wrap the graph as a model: input `[batch, 3, side, side]`, the two outputs
    /// `[batch, classes]`, and `metadata` as the model's metadata properties.
    pub fn into_model(self, side: usize, classes: usize, metadata: Vec<(String, String)>) -> ModelProto {
        let info = |name: &str, dims: Vec<dimension::Value>| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .into_iter()
                            .map(|v| pb::tensor_shape_proto::Dimension {
                                value: Some(v),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let batch = || dimension::Value::DimParam(BATCH.into());
        let n = |v: usize| dimension::Value::DimValue(v as i64);
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "tdmr".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                name: "tdmr-target".into(),
                node: self.nodes,
                initializer: self.initializers,
                input: vec![info(INPUT, vec![batch(), n(3), n(side), n(side)])],
                output: vec![
                    info(LOGITS, vec![batch(), n(classes)]),
                    info(PROBABILITIES, vec![batch(), n(classes)]),
                ],
                ..Default::default()
            }),
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto { key, value })
                .collect(),
            ..Default::default()
        }
    }
}

pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// The metadata properties of an ONNX file, read with the same protobuf types.
pub fn metadata(bytes: &[u8], origin: &std::path::Path) -> Result<Vec<(String, String)>> {
    let model = ModelProto::decode(bytes).map_err(|e| Error::File {
        path: origin.into(),
        msg: format!("not an ONNX model: {e}"),
    })?;
    Ok(model.metadata_props.into_iter().map(|p| (p.key, p.value)).collect())
}
