#!/usr/bin/env python3
"""The PyTorch CPU side of `tdmr bench`: the same four workloads, the same layers, batches
and sizes, timed the same way (images per second over a time budget), so the two can be
compared side by side on one machine.

    small CNN train step, 32², batch 128       conv3x3 3→32, 32→64, max-pool, 64→128,
                                               max-pool, 128→256 (batch norm + ReLU each),
                                               global average pool, linear 256→10;
                                               cross-entropy, backward, AdamW (lr 1e-3)
    ResNet-18 (CIFAR stem) train step, 32², 64 tdmr's resnet18 target (3x3 stem, no max-pool,
                                               from tdmr_targets.py) + linear; same step
    EfficientNet-Lite0 forward, 96², batch 64  the frozen foundation (reference_features.py's
                                               definition, inference batch norm)
    … forward + backward to the prompt          a 96² prompt added to every image; the mean
                                               squared feature's gradient to the prompt alone

Usage (PyTorch from PyPI, kept outside the repository; it brings CUDA libraries too and
runs on the CPU here):

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy safetensors
    /tmp/torch-venv/bin/python scripts/pytorch-bench.py --threads 2 [--budget 10] [--json out.json]

Run it with the same thread count as tdmr (`RAYON_NUM_THREADS`, or the machine's cores),
twice each side in turn, with `uptime` first, and compare ratios rather than absolute
figures: shared machines are noisy.

For the stronger baseline, keep glibc from handing PyTorch's large tensors back to the
OS after every step (otherwise each step pays page faults to get them again; tdmr's
allocator keeps its memory for the whole run). Measured on an Intel Xeon, this took
PyTorch's ResNet-18 step from 40-48 to 51-52 images/s and its Lite0 forward from
120-190 to 250-260:

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736 \
    MALLOC_TOP_PAD_=1073741824 /tmp/torch-venv/bin/python scripts/pytorch-bench.py --threads 2
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_features import features as lite0_features  # noqa: E402
from tdmr_targets import ResNet  # noqa: E402

FOUNDATION = "sample-data/foundation/efficientnet-lite0.safetensors"


class BenchCnn(nn.Module):
    def __init__(self):
        super().__init__()
        widths = [(3, 32), (32, 64), (64, 128), (128, 256)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1, bias=False) for i, o in widths)
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for _, o in widths)
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = F.relu(bn(conv(x)))
            if i in (1, 2):
                x = F.max_pool2d(x, 2, 2)
        return self.fc(x.mean((2, 3)))


class WithHead(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.feature_dim, 10)

    def forward(self, x):
        return self.fc(self.backbone(x))


def timed(step, batch, budget_s, min_iters=2):
    """Images per second of `step` (one batch) after one warm-up call."""
    step()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < budget_s:
        step()
        n += 1
    return n * batch / (time.perf_counter() - t0), n


def train_step(model, batch, size):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(batch, 3, size, size, generator=g)
    y = torch.arange(batch) % 10

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--budget", type=float, default=10.0, help="seconds per workload")
    ap.add_argument("--foundation", default=FOUNDATION)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--only", help="time only the workloads whose names contain this text (as `tdmr bench --only`)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)

    sd = {k: v.float() for k, v in load_file(args.foundation).items() if not k.endswith("num_batches_tracked")}
    for v in sd.values():
        v.requires_grad_(False)
    x96 = torch.rand(64, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    prompt = torch.zeros(1, 3, 96, 96, requires_grad=True)

    def lite0_forward():
        with torch.no_grad():
            lite0_features(sd, x96)

    def lite0_backward():
        prompt.grad = None
        lite0_features(sd, x96 + prompt).pow(2).mean().backward()
        assert prompt.grad is not None, "no gradient reached the prompt"

    workloads = [
        ("small CNN train step", 128, 32, train_step(BenchCnn(), 128, 32)),
        ("ResNet-18 (CIFAR stem) train step", 64, 32, train_step(WithHead(ResNet(18)), 64, 32)),
        ("efficientnet-lite0 forward", 64, 96, lite0_forward),
        ("efficientnet-lite0 forward + backward to the prompt", 64, 96, lite0_backward),
    ]
    print(f"PyTorch {torch.__version__}, {args.threads} threads, {args.budget:g} s per workload")
    print("| workload (PyTorch CPU) | batch | size | images/s | iterations |")
    print("|---|---:|---:|---:|---:|")
    figures = []
    for name, batch, size, step in workloads:
        if args.only and args.only not in name:
            continue
        ips, n = timed(step, batch, args.budget)
        print(f"| {name} | {batch} | {size} | {ips:.1f} | {n} |", flush=True)
        figures.append({"workload": name, "batch": batch, "size": size, "images_per_s": ips, "iterations": n})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "figures": figures}, f, indent=2)


if __name__ == "__main__":
    main()
