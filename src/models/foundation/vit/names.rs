//! The tensor names of each ViT checkpoint layout (timm, Hugging Face ViT and DINOv2,
//! CLIP vision), with and without transformers 5's renames. Loading asks these for
//! every name, so a layout's differences live here and nowhere else.

use super::Layout;
use crate::models::prefix::Prefix;
use crate::models::weights::StrictWeights;

/// Key names of one layout.
pub(super) struct Names {
    prefix: Prefix,
    pub(super) layout: Layout,
    /// transformers 5 names (`layers.N.attention.q_proj`, `mlp.fc1`) rather than the
    /// published checkpoints' (`encoder.layer.N.attention.attention.query`, ...).
    v5: bool,
}

/// How a block stores its attention's input projections.
pub(super) enum Attention {
    /// timm: one `[3D, D]` projection, query then key then value.
    Fused(Prefix),
    /// Hugging Face and CLIP: query, key, value.
    Split([Prefix; 3]),
}

/// Whether a block scales its two residual branches (DINOv2 always; timm sometimes).
pub(super) enum LayerScale {
    Absent,
    IfPresent([String; 2]),
    Required([String; 2]),
}

/// The modules of one transformer block.
pub(super) struct BlockNames {
    pub(super) attention: Attention,
    pub(super) out: Prefix,
    pub(super) norm1: Prefix,
    pub(super) norm2: Prefix,
    pub(super) fc1: Prefix,
    pub(super) fc2: Prefix,
    pub(super) layer_scale: LayerScale,
}

/// The embedding tensors: class token, position embeddings, patch projection.
pub(super) struct EmbeddingNames {
    pub(super) cls: String,
    pub(super) pos: String,
    pub(super) patch: Prefix,
}

impl Names {
    /// The names `w` uses for `layout`: its model prefix (`vit.`, `dinov2.`,
    /// `vision_model.` or none) and whether transformers 5 wrote it.
    pub(super) fn of(w: &StrictWeights, layout: Layout) -> Names {
        let cls_under = |candidates: &[&str]| {
            candidates
                .iter()
                .map(|p| Prefix::new(p))
                .find(|p| w.contains(&p.key("embeddings.cls_token")))
                .unwrap_or_default()
        };
        let prefix = match layout {
            Layout::Timm | Layout::TimmHybrid => Prefix::root(),
            Layout::HfVit => cls_under(&["vit", ""]),
            Layout::Dinov2 => cls_under(&["dinov2", ""]),
            Layout::Clip => Prefix::new("vision_model"),
        };
        let v5 = ["layers.0.attention.q_proj.weight", "encoder.layer.0.attention.q_proj.weight"]
            .iter()
            .any(|k| w.contains(&prefix.key(k)));
        Names { prefix, layout, v5 }
    }

    pub(super) fn embeddings(&self) -> EmbeddingNames {
        let e = self.prefix.pp("embeddings");
        match self.layout {
            Layout::Timm | Layout::TimmHybrid => EmbeddingNames {
                cls: "cls_token".into(),
                pos: "pos_embed".into(),
                patch: "patch_embed.proj".into(),
            },
            Layout::HfVit | Layout::Dinov2 => EmbeddingNames {
                cls: e.key("cls_token"),
                pos: e.key("position_embeddings"),
                patch: e.pp("patch_embeddings.projection"),
            },
            Layout::Clip => EmbeddingNames {
                cls: e.key("class_embedding"),
                pos: e.pp("position_embedding").key("weight"),
                patch: e.pp("patch_embedding"),
            },
        }
    }

    /// timm's hybrid stem: a stem-only ResNetV2 is saved as a bare `conv, norm, pool`
    /// sequence, a full one under `stem.`.
    pub(super) fn hybrid_stem(&self, w: &StrictWeights) -> Prefix {
        let backbone = Prefix::new("patch_embed.backbone");
        if w.contains(&backbone.pp("stem.conv").key("weight")) {
            backbone.pp("stem")
        } else {
            backbone
        }
    }

    /// DINOv2's (unused) mask token, which the file must still hold.
    pub(super) fn mask_token(&self) -> Option<String> {
        (self.layout == Layout::Dinov2).then(|| self.prefix.pp("embeddings").key("mask_token"))
    }

    /// CLIP's layer norm before the blocks.
    pub(super) fn pre_norm(&self) -> Option<Prefix> {
        (self.layout == Layout::Clip).then(|| self.prefix.pp("pre_layrnorm"))
    }

    pub(super) fn blocks(&self) -> Prefix {
        let p = &self.prefix;
        match (self.layout, self.v5) {
            (Layout::Timm | Layout::TimmHybrid, _) => p.pp("blocks"),
            (Layout::HfVit, true) => p.pp("layers"),
            (Layout::HfVit | Layout::Dinov2, _) => p.pp("encoder.layer"),
            (Layout::Clip, _) => p.pp("encoder.layers"),
        }
    }

    pub(super) fn block(&self, i: usize) -> BlockNames {
        let b = self.blocks().pp(i);
        let split = |q: &str, k: &str, v: &str| Attention::Split([b.pp(q), b.pp(k), b.pp(v)]);
        match self.layout {
            Layout::Timm | Layout::TimmHybrid => BlockNames {
                attention: Attention::Fused(b.pp("attn.qkv")),
                out: b.pp("attn.proj"),
                norm1: b.pp("norm1"),
                norm2: b.pp("norm2"),
                fc1: b.pp("mlp.fc1"),
                fc2: b.pp("mlp.fc2"),
                layer_scale: LayerScale::IfPresent([b.key("ls1.gamma"), b.key("ls2.gamma")]),
            },
            Layout::HfVit | Layout::Dinov2 => {
                let (attention, out) = if self.v5 {
                    (
                        split("attention.q_proj", "attention.k_proj", "attention.v_proj"),
                        b.pp("attention.o_proj"),
                    )
                } else {
                    (
                        split("attention.attention.query", "attention.attention.key", "attention.attention.value"),
                        b.pp("attention.output.dense"),
                    )
                };
                let dinov2 = self.layout == Layout::Dinov2;
                let (norm1, norm2) = if dinov2 {
                    (b.pp("norm1"), b.pp("norm2"))
                } else {
                    (b.pp("layernorm_before"), b.pp("layernorm_after"))
                };
                let (fc1, fc2) = if dinov2 || self.v5 {
                    (b.pp("mlp.fc1"), b.pp("mlp.fc2"))
                } else {
                    (b.pp("intermediate.dense"), b.pp("output.dense"))
                };
                let layer_scale = if dinov2 {
                    LayerScale::Required([b.key("layer_scale1.lambda1"), b.key("layer_scale2.lambda1")])
                } else {
                    LayerScale::Absent
                };
                BlockNames {
                    attention,
                    out,
                    norm1,
                    norm2,
                    fc1,
                    fc2,
                    layer_scale,
                }
            }
            Layout::Clip => BlockNames {
                attention: split("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                out: b.pp("self_attn.out_proj"),
                norm1: b.pp("layer_norm1"),
                norm2: b.pp("layer_norm2"),
                fc1: b.pp("mlp.fc1"),
                fc2: b.pp("mlp.fc2"),
                layer_scale: LayerScale::Absent,
            },
        }
    }

    /// The layer norm after the blocks.
    pub(super) fn final_norm(&self) -> Prefix {
        match self.layout {
            Layout::Timm | Layout::TimmHybrid => "norm".into(),
            Layout::HfVit | Layout::Dinov2 => self.prefix.pp("layernorm"),
            Layout::Clip => self.prefix.pp("post_layernorm"),
        }
    }

    /// Tensors that are not part of the features: classifier heads, poolers, CLIP's
    /// text tower and projections, and CLIP's position ids.
    pub(super) fn is_unused(&self, key: &str) -> bool {
        let pooler = self.prefix.pp("pooler").dotted();
        key.starts_with("head.")
            || key.starts_with("classifier.")
            || key.starts_with(&pooler)
            || key.starts_with("text_model.")
            || key.starts_with("visual_projection.")
            || key.starts_with("text_projection.")
            || key == "logit_scale"
            || (self.layout == Layout::Clip && key == self.prefix.pp("embeddings").key("position_ids"))
    }
}
