#!/usr/bin/env python3
"""Check scripts/tdmr_targets.py against tdmr: load a safetensors export into the
PyTorch definition (strict=True) and compare its probabilities with `tdmr predict` on
the run's evaluation images.

    pip install torch safetensors numpy pillow
    tdmr export RUN_DIR                       # writes RUN_DIR/export/tdmr.safetensors
    python scripts/check-pytorch.py RUN_DIR [--tdmr target/release/tdmr]

    TDMR_ZOO_OUT=/tmp/zoo cargo test --release --test onnx
    python scripts/check-pytorch.py --zoo /tmp/zoo

checks every target architecture instead: the test leaves each one's safetensors and
ONNX exports (random weights, batch norm estimated on real images) in the folder, and
the PyTorch logits are compared with ONNX Runtime's on random pixels (within 1e-4).

Exit status 0 when every probability agrees within 1e-4 (float32 rounding on logits
of magnitude ~10) and the accuracy matches,
1 when not, 2 on bad arguments or files.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tdmr_targets import load_export  # noqa: E402


def sibling(name):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_zoo(folder):
    import onnxruntime as ort

    models = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not models:
        print(f"error: {folder}: no .safetensors exports", file=sys.stderr)
        return 2
    worst = 0.0
    rng = np.random.default_rng(0)
    for name in models:
        model, card = load_export(os.path.join(folder, name))
        side = card["input"]["image_size"]
        x = rng.random((4, 3, side, side), dtype=np.float32)
        session = ort.InferenceSession(os.path.join(folder, name[: -len(".safetensors")] + ".onnx"))
        (reference,) = session.run(["logits"], {"pixels": x})
        with torch.no_grad():
            ours = model(torch.from_numpy(x)).numpy()
        diff = float(np.abs(ours - reference).max())
        worst = max(worst, diff)
        print(f"{card['target']['arch']:12} strict load ok, max |logit_torch - logit_onnx| = {diff:.2e}")
    return 0 if worst <= 1e-4 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?")
    ap.add_argument("--zoo", help="a folder of ARCH.safetensors / ARCH.onnx pairs to compare instead")
    ap.add_argument("--model", help="the .safetensors export (default RUN_DIR/export/METHOD.safetensors)")
    ap.add_argument("--method", default="tdmr")
    ap.add_argument("--tdmr", help="the tdmr binary (default: on PATH, else target/release/tdmr)")
    ap.add_argument("--data", help="the dataset folder (default: the split record's root)")
    args = ap.parse_args()
    if args.zoo:
        return check_zoo(args.zoo)
    if not args.run_dir:
        ap.error("give RUN_DIR or --zoo DIR")
    preprocess = sibling("check-onnx").preprocess

    model_path = args.model or os.path.join(args.run_dir, "export", f"{args.method}.safetensors")
    if not os.path.isfile(model_path):
        print(f"error: {model_path}: no such file (tdmr export {args.run_dir} writes it)", file=sys.stderr)
        return 2
    model, card = load_export(model_path)
    with open(os.path.join(args.run_dir, "split.json")) as f:
        split = json.load(f)
    on_validation = card["source"]["evaluated_on"].startswith("the validation")
    names = split["validation" if on_validation else "test"]
    root = args.data or split["root"]
    files = [os.path.join(root, n) for n in names]

    tdmr = args.tdmr or shutil.which("tdmr") or os.path.join(HERE, "..", "target", "release", "tdmr")
    classes = card["classes"]
    out = subprocess.run(
        [tdmr, "predict", model_path, "--json", "--top", str(len(classes)), *files],
        check=True, capture_output=True, text=True,
    ).stdout
    theirs = np.zeros((len(files), len(classes)), dtype=np.float64)
    for row, p in enumerate(json.loads(out)):
        for c in p["top"]:
            theirs[row, classes.index(c["class"])] = c["probability"]

    side, stored = card["input"]["image_size"], card["input"]["stored_side"]
    x = torch.from_numpy(np.stack([preprocess(f, stored, side) for f in files]))
    with torch.no_grad():
        ours = torch.softmax(model(x), dim=1).double().numpy()
    diff = np.abs(ours - theirs).max()
    truth = np.array([classes.index(n.split("/")[0]) for n in names])
    acc_ours = (ours.argmax(1) == truth).mean()
    acc_theirs = (theirs.argmax(1) == truth).mean()
    print(f"torch {torch.__version__}: {card['target']['arch']} loaded strictly from {model_path}")
    print(f"max |p_torch - p_tdmr| = {diff:.2e} over {len(files)} images x {len(classes)} classes")
    print(f"accuracy: PyTorch {100 * acc_ours:.2f}%, tdmr predict {100 * acc_theirs:.2f}%")
    return 0 if diff <= 1e-4 and acc_ours == acc_theirs else 1


if __name__ == "__main__":
    sys.exit(main())
