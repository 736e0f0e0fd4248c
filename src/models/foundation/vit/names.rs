//! The tensor names of each ViT checkpoint layout (timm, Hugging Face ViT and DINOv2,
//! CLIP vision), with and without transformers 5's renames.

use super::Layout;

/// Key names of one layout.
pub(super) struct Names {
    pub(super) prefix: String,
    pub(super) layout: Layout,
    /// transformers 5 names (`layers.N.attention.q_proj`, `mlp.fc1`) rather than the
    /// published checkpoints' (`encoder.layer.N.attention.attention.query`, ...).
    pub(super) v5: bool,
}

impl Names {
    pub(super) fn blocks(&self) -> String {
        let p = &self.prefix;
        match (self.layout, self.v5) {
            (Layout::Timm | Layout::TimmHybrid, _) => format!("{p}blocks."),
            (Layout::HfVit, true) => format!("{p}layers."),
            (Layout::HfVit | Layout::Dinov2, _) => format!("{p}encoder.layer."),
            (Layout::Clip, _) => format!("{p}encoder.layers."),
        }
    }

    pub(super) fn block(&self, i: usize, part: &str) -> String {
        format!("{}{i}.{part}", self.blocks())
    }

    /// The Hugging Face attention projections: query, key, value, output.
    pub(super) fn hf_attention(&self) -> [&'static str; 4] {
        if self.v5 {
            ["attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"]
        } else {
            [
                "attention.attention.query",
                "attention.attention.key",
                "attention.attention.value",
                "attention.output.dense",
            ]
        }
    }
}
