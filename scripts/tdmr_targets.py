"""PyTorch definitions of tdmr's exported targets, for fine-tuning further in PyTorch.

    from tdmr_targets import load_export
    model, card = load_export("runs/x/export/tdmr.safetensors")   # strict=True
    logits = model(pixels)          # pixels: [N, 3, S, S] RGB in [0, 1]

Every parameter and buffer name is the one `tdmr export` writes, so the state dict loads
with strict=True. Batch norm keeps PyTorch's semantics (momentum 0.1, eps 1e-5, unbiased
running variance) but no `num_batches_tracked` counter, which tdmr does not keep.
`scripts/check-pytorch.py` checks these definitions against tdmr's own forward pass.
"""

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.1
LN_EPS = 1e-6


class BatchNorm(nn.Module):
    """BatchNorm2d without the num_batches_tracked buffer (tdmr's checkpoint names)."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def forward(self, x):
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            training=self.training, momentum=BN_MOMENTUM, eps=BN_EPS,
        )


class ConvBn(nn.Module):
    """K x K convolution without bias (padding K // 2), dense or depthwise, then batch norm."""

    def __init__(self, cin, cout, k, stride=1, depthwise=False):
        super().__init__()
        shape = (cout, 1, k, k) if depthwise else (cout, cin, k, k)
        self.weight = nn.Parameter(torch.empty(shape))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        self.bn = BatchNorm(cout)
        self.stride, self.groups = stride, (cout if depthwise else 1)

    def forward(self, x):
        k = self.weight.shape[2]
        return self.bn(F.conv2d(x, self.weight, None, self.stride, k // 2, 1, self.groups))


class SmallCnn(nn.Module):
    WIDTHS = (32, 64, 128, 192)

    def __init__(self, in_channels=3):
        super().__init__()
        cin = in_channels
        for i, cout in enumerate(self.WIDTHS):
            setattr(self, f"conv{i}", ConvBn(cin, cout, 3))
            cin = cout
        self.feature_dim = cin

    def forward(self, x):
        n = len(self.WIDTHS)
        for i in range(n):
            x = F.relu(getattr(self, f"conv{i}")(x))
            if i + 1 < n:
                x = F.avg_pool2d(x, 2, 2)
        return x.mean((2, 3))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = ConvBn(cin, cout, 3, stride)
        self.conv2 = ConvBn(cout, cout, 3)
        self.shortcut = ConvBn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet(nn.Module):
    """CIFAR-style ResNet-8 / ResNet-18 (3x3 stem, no max-pool), widths scaled by `width`."""

    def __init__(self, depth, width=1.0, in_channels=3):
        super().__init__()
        base, stages = ((16, 32, 64), (1, 1, 1)) if depth == 8 else ((64, 128, 256, 512), (2, 2, 2, 2))
        widths = [max(4, round_half_away(c * width)) for c in base]
        self.stem = ConvBn(in_channels, widths[0], 3)
        cin = widths[0]
        for s, (cout, n) in enumerate(zip(widths, stages)):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if s > 0 and b == 0 else 1))
                cin = cout
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.depth_stages = len(stages)
        self.feature_dim = cin

    def forward(self, x):
        x = F.relu(self.stem(x))
        for s in range(self.depth_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return x.mean((2, 3))


def make_divisible(v, d=8):
    new = max(1.0, math.floor((v + d / 2) / d)) * d
    return int(new + d if new < 0.9 * v else new)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, t, stride):
        super().__init__()
        hidden = cin * t
        self.expand = ConvBn(cin, hidden, 1) if t != 1 else None
        self.depthwise = ConvBn(hidden, hidden, 3, stride, depthwise=True)
        self.project = ConvBn(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = F.relu6(self.expand(x)) if self.expand is not None else x
        y = self.project(F.relu6(self.depthwise(h)))
        return y + x if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 in its CIFAR form (stem and first two stages at stride 1)."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, width=1.0, in_channels=3):
        super().__init__()
        cin = make_divisible(32 * width)
        self.stem = ConvBn(in_channels, cin, 3)
        stages = []
        for t, c, n, s in self.SETTINGS:
            cout = make_divisible(c * width)
            blocks = []
            for r in range(n):
                blocks.append(InvertedResidual(cin, cout, t, s if r == 0 else 1))
                cin = cout
            stages.append(nn.ModuleList(blocks))
        self.features = nn.ModuleList(stages)
        last = make_divisible(1280 * max(width, 1.0))
        self.head = ConvBn(cin, last, 1)
        self.feature_dim = last

    def forward(self, x):
        x = F.relu6(self.stem(x))
        for stage in self.features:
            for block in stage:
                x = block(x)
        return F.relu6(self.head(x)).mean((2, 3))


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.heads = heads

    def forward(self, x):
        b, n, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VitTiny(nn.Module):
    """4x4 patches, depth 6, width 192, 3 heads; features are the final-normed class token."""

    PATCH, DEPTH, DIM, HEADS = 4, 6, 192, 3

    def __init__(self, image_size, in_channels=3):
        super().__init__()
        tokens = (image_size // self.PATCH) ** 2 + 1
        self.patch_embed = PatchEmbed(in_channels, self.DIM, self.PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, self.DIM))
        self.blocks = nn.ModuleList(Block(self.DIM, self.HEADS) for _ in range(self.DEPTH))
        self.norm = nn.LayerNorm(self.DIM, eps=LN_EPS)
        self.feature_dim = self.DIM

    def forward(self, x):
        t = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]


class Projector(nn.Module):
    """Into the proxy space: linear, or linear-ReLU-linear; optionally L2-normalised."""

    def __init__(self, kind, din, proxy, normalize):
        super().__init__()
        dims = [(din, proxy)] if kind == "linear" else [(din, 2 * proxy), (2 * proxy, proxy)]
        for i, (a, b) in enumerate(dims):
            setattr(self, f"fc{i}", nn.Linear(a, b))
        self.layers, self.normalize = len(dims), normalize

    def forward(self, x):
        for i in range(self.layers):
            if i > 0:
                x = F.relu(x)
            x = getattr(self, f"fc{i}")(x)
        if self.normalize:
            x = x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-12)
        return x


class Target(nn.Module):
    """backbone -> (projector) -> head, as `tdmr export` writes it."""

    def __init__(self, card):
        super().__init__()
        t = card["target"]
        arch, width, side, c = t["arch"], t["width"], t["image_size"], t["in_channels"]
        if arch == "small-cnn":
            self.backbone = SmallCnn(c)
        elif arch in ("resnet8", "resnet18"):
            self.backbone = ResNet(8 if arch == "resnet8" else 18, width, c)
        elif arch == "mobilenetv2":
            self.backbone = MobileNetV2(width, c)
        elif arch == "vit-tiny":
            self.backbone = VitTiny(side, c)
        else:
            raise ValueError(f"unknown target architecture `{arch}`")
        d = self.backbone.feature_dim
        p = card.get("projector")
        self.projector = Projector(p["kind"], d, p["proxy_dim"], p["normalize"]) if p else None
        self.head = nn.Linear(p["proxy_dim"] if p else d, len(card["classes"]))
        self.head_scale = card["head_scale"]
        mean, std = card["input"]["mean"], card["input"]["std"]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels):
        z = self.backbone((pixels - self.mean) / self.std)
        if self.projector is not None:
            z = self.projector(z)
        return self.head(z * self.head_scale if self.head_scale != 1.0 else z)


def round_half_away(v):
    return int(math.floor(v + 0.5))


def load_export(path):
    """The model at `path` (a .safetensors export) with its card, weights loaded strictly."""
    from safetensors.torch import load_file

    with open(os.path.splitext(path)[0] + ".json") as f:
        card = json.load(f)
    model = Target(card)
    model.load_state_dict(load_file(path), strict=True)
    return model.eval(), card
