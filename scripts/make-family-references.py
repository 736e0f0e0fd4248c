#!/usr/bin/env python3
"""Write small foundation checkpoints with the real libraries' own modules (timm,
Hugging Face transformers), random weights, and the pooled features PyTorch computes
for a random input: `tests/fixtures/families/<name>.safetensors` (the checkpoint, its
state_dict exactly as the library names it) and `<name>.reference.safetensors`
(`input`, `features`). `tests/families.rs` loads each checkpoint with tdmr and compares.

    python3 -m venv /tmp/torch-venv
    /tmp/torch-venv/bin/pip install torch numpy timm transformers safetensors
    /tmp/torch-venv/bin/python scripts/make-family-references.py
"""
import math
import os

import timm
import torch
from safetensors.torch import save_file
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer
from transformers import (CLIPConfig, CLIPModel, ConvNextConfig, ConvNextForImageClassification,
                          Dinov2Config, Dinov2Model, ViTConfig, ViTForImageClassification)

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "families")


def randomize(model, seed):
    """Random weights everywhere (norm scales near 1, positive running variances), so
    no zero-initialised layer hides a mistake."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    for name, t in sd.items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            sd[name] = torch.rand(t.shape, generator=g) + 0.5
        elif t.ndim <= 1 and ("norm" in name or "bn" in name or "downsample.1" in name or name.endswith("weight")):
            sd[name] = 1.0 + 0.1 * torch.randn(t.shape, generator=g) if name.endswith("weight") else 0.1 * torch.randn(t.shape, generator=g)
        elif t.ndim >= 2:
            fan_in = t[0].numel() if t.ndim >= 2 else 1
            sd[name] = torch.randn(t.shape, generator=g) / math.sqrt(max(fan_in, 1)) * 1.5
        else:
            sd[name] = 0.3 * torch.randn(t.shape, generator=g)
    model.load_state_dict(sd)
    return model.eval()


def save(name, model, features_fn, size, seed):
    model = randomize(model, seed)
    x = torch.randn((2, 3, size, size), generator=torch.Generator().manual_seed(seed + 100))
    with torch.no_grad():
        f = features_fn(model, x)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, f"{name}.safetensors"))
    save_file({"input": x, "features": f.contiguous()}, os.path.join(OUT, f"{name}.reference.safetensors"))
    print(f"{name}: {len(sd)} tensors, features {tuple(f.shape)}")


def timm_pooled(m, x):
    return m.forward_head(m.forward_features(x), pre_logits=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    save("timm-resnet18", ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10, stem_width=8, channels=(8, 16, 32, 64)),
         timm_pooled, 64, 1)
    save("timm-resnet50", ResNet(Bottleneck, [3, 4, 6, 3], num_classes=10, stem_width=8, channels=(8, 16, 32, 64)),
         timm_pooled, 64, 2)
    save("timm-convnext-tiny", ConvNeXt(depths=(3, 3, 9, 3), dims=(8, 16, 32, 64), num_classes=10),
         timm_pooled, 64, 3)
    save("timm-vit-patch16", VisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=1,
                                               num_classes=10), timm_pooled, 64, 4)
    save("timm-vit-tiny-r-s16-p8", timm.create_model("vit_tiny_r_s16_p8_224", pretrained=False, img_size=64,
                                                     embed_dim=64, depth=2, num_heads=1, num_classes=10),
         timm_pooled, 64, 5)
    save("hf-vit-patch16", ViTForImageClassification(ViTConfig(hidden_size=64, num_hidden_layers=2,
                                                              num_attention_heads=1, intermediate_size=256,
                                                              image_size=64, patch_size=16, num_labels=10)),
         lambda m, x: m.vit(x).last_hidden_state[:, 0], 64, 6)
    save("hf-dinov2", Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                                               mlp_ratio=4, image_size=56, patch_size=14)),
         lambda m, x: m(x).pooler_output, 56, 7)
    clip = CLIPConfig(
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1,
                           image_size=64, patch_size=32),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1,
                         vocab_size=100, max_position_embeddings=16),
        projection_dim=16)
    save("hf-clip-vit-patch32", CLIPModel(clip), lambda m, x: m.vision_model(x).pooler_output, 64, 8)
    save("hf-convnext-tiny", ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16, 32, 64],
                                                                           depths=[3, 3, 9, 3], num_labels=10)),
         lambda m, x: m.convnext(x).pooler_output, 64, 9)


if __name__ == "__main__":
    main()
