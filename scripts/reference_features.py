#!/usr/bin/env python3
"""Reference outputs of EfficientNet-Lite0 computed with PyTorch, for `tests/reference.rs`.

Builds EfficientNet-Lite0 with plain PyTorch layers (TF "SAME" padding, batch-norm eps
1e-3, ReLU6, no squeeze-excite), loads the original legacy `.pth` with `torch.load`
(independently of `convert_legacy_pth.py`), and writes a deterministic input batch with
its pooled features and ImageNet logits to `sample-data/foundation/reference-lite0.safetensors`.

It also stores two natural photographs from scikit-image's sample data (`chelsea.png`,
a cat, and `coffee.png`, a cup of coffee; BSD-3-Clause), centre-cropped and resized to
224×224 in [0, 1], with PyTorch's ImageNet logits for them: the pretrained net must
recognise them (ImageNet classes 281-285 are cats, 967 is espresso).

Usage (PyTorch from PyPI, kept outside the repository):
    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy safetensors pillow
    pip download --no-deps scikit-image && unzip scikit_image-*.whl 'skimage/data/*'
    /tmp/torch-venv/bin/python scripts/reference_features.py efficientnet-lite0-57934424.pth skimage/data
"""
import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

REPEATS = [1, 2, 2, 3, 3, 4, 1]
STRIDES = [1, 2, 2, 2, 1, 2, 1]


def same_pad(x, k, s):
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
    pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-3)


def features(sd, x):
    x = F.conv2d(same_pad(x, 3, 2), sd["_conv_stem.weight"], stride=2)
    x = F.relu6(bn(x, sd, "_bn0"))
    strides = [s if r == 0 else 1 for n, s in zip(REPEATS, STRIDES) for r in range(n)]
    for i, s in enumerate(strides):
        p = f"_blocks.{i}"
        inp = x
        if p + "._expand_conv.weight" in sd:
            x = F.relu6(bn(F.conv2d(x, sd[p + "._expand_conv.weight"]), sd, p + "._bn0"))
        w = sd[p + "._depthwise_conv.weight"]
        x = F.conv2d(same_pad(x, w.shape[-1], s), w, stride=s, groups=w.shape[0])
        x = F.relu6(bn(x, sd, p + "._bn1"))
        x = bn(F.conv2d(x, sd[p + "._project_conv.weight"]), sd, p + "._bn2")
        if s == 1 and inp.shape == x.shape:
            x = x + inp
    x = F.relu6(bn(F.conv2d(x, sd["_conv_head.weight"]), sd, "_bn1"))
    return x.mean((2, 3))


def photo(path):
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((224, 224), Image.BILINEAR)
    return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(224, 224, 3).permute(2, 0, 1).float() / 255


def main(pth, photos, out="sample-data/foundation/reference-lite0.safetensors"):
    sd = torch.load(pth, map_location="cpu", weights_only=False)
    sd = {k: v.float() for k, v in sd.items()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 72, 72, generator=g)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    images = torch.stack([photo(f"{photos}/chelsea.png"), photo(f"{photos}/coffee.png")])
    with torch.no_grad():
        f = features(sd, x)
        logits = F.linear(f, sd["_fc.weight"], sd["_fc.bias"])
        photo_logits = F.linear(features(sd, (images - mean) / std), sd["_fc.weight"], sd["_fc.bias"])
    tensors = {"input": x, "features": f, "logits": logits, "photos": images, "photo_logits": photo_logits}
    save_file({k: v.contiguous() for k, v in tensors.items()}, out)
    print(f"wrote {out}: features {tuple(f.shape)}, photo top-1 {photo_logits.argmax(1).tolist()}")


if __name__ == "__main__":
    main(*sys.argv[1:])
