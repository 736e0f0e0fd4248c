#!/usr/bin/env python3
"""Check a tdmr ONNX export with ONNX Runtime: rerun the run's evaluation split through
the exported graph and compare the accuracy with the one the run reported.

    pip install onnxruntime numpy pillow
    tdmr export RUN_DIR --format onnx            # writes RUN_DIR/export/tdmr.onnx
    python scripts/check-onnx.py RUN_DIR [--model RUN_DIR/export/tdmr.onnx]

The images are preprocessed exactly as the model card states (and as tdmr does): the
`image` crate's Triangle resize, reimplemented below in float32 NumPy with the same
order of operations, so the pixels match tdmr's to the bit. Exit status 0 when the
accuracy matches the run's, 1 when it does not, 2 on bad arguments or files.
"""

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image


def fail(msg, status=2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(status)


def triangle_weights(src, dst):
    """For each output index along one axis: (first input index, float32 weights), as
    image::imageops::sample computes them (support 1 widened by the downscale ratio)."""
    ratio = np.float32(src) / np.float32(dst)
    sratio = max(ratio, np.float32(1.0))
    support = np.float32(1.0) * sratio
    out = []
    for o in range(dst):
        centre = (np.float32(o) + np.float32(0.5)) * ratio
        left = int(np.floor(centre - support))
        left = min(max(left, 0), src - 1)
        right = int(np.ceil(centre + support))
        right = min(max(right, left + 1), src)
        centre = centre - np.float32(0.5)
        ws = []
        for i in range(left, right):
            x = abs((np.float32(i) - centre) / sratio)
            ws.append(np.float32(1.0) - x if x < 1.0 else np.float32(0.0))
        ws = np.array(ws, dtype=np.float32)
        total = np.float32(0.0)
        for w in ws:  # summed in order, in float32, as the crate does
            total = np.float32(total + w)
        out.append((left, ws / total))
    return out


def resize(img, width, height):
    """image::imageops::resize(img, width, height, Triangle) on an HxWx3 uint8 array."""
    h, w, _ = img.shape
    if (w, h) == (width, height):
        return img.copy()
    src = img.astype(np.float32)
    tall = np.zeros((height, w, 3), dtype=np.float32)
    for y, (left, ws) in enumerate(triangle_weights(h, height)):
        acc = np.zeros((w, 3), dtype=np.float32)
        for i, wt in enumerate(ws):
            acc = acc + src[left + i] * wt
        tall[y] = acc
    out = np.zeros((height, width, 3), dtype=np.float32)
    for x, (left, ws) in enumerate(triangle_weights(w, width)):
        acc = np.zeros((height, 3), dtype=np.float32)
        for i, wt in enumerate(ws):
            acc = acc + tall[:, left + i] * wt
        out[:, x] = acc
    # Rust's f32::round: half away from zero (the values are non-negative here); the
    # fraction is taken exactly, so no x + 0.5 rounding creeps in.
    clipped = np.clip(out, np.float32(0.0), np.float32(255.0))
    whole = np.floor(clipped)
    return (whole + (clipped - whole >= np.float32(0.5))).astype(np.uint8)


def preprocess(path, stored_side, side):
    img = np.asarray(Image.open(path).convert("RGB"))
    h, w, _ = img.shape
    short = min(w, h)
    if short != stored_side and short > 0:
        scale = stored_side / short
        img = resize(img, max(1, round_half_away(w * scale)), max(1, round_half_away(h * scale)))
    img = resize(img, side, side)
    return (img.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)


def round_half_away(v):
    return int(np.floor(v + 0.5))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--model", help="the .onnx export (default RUN_DIR/export/METHOD.onnx)")
    ap.add_argument("--method", default="tdmr")
    ap.add_argument("--data", help="the dataset folder (default: the split record's root)")
    args = ap.parse_args()

    try:
        import onnxruntime as ort
    except ImportError:
        fail("onnxruntime is not installed: pip install onnxruntime")

    model = args.model or os.path.join(args.run_dir, "export", f"{args.method}.onnx")
    if not os.path.isfile(model):
        fail(f"{model}: no such file (tdmr export {args.run_dir} --format onnx writes it)")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    if "tdmr.card" not in meta:
        fail(f"{model}: no tdmr.card metadata: not a model tdmr export wrote")
    card = json.loads(meta["tdmr.card"])
    classes = json.loads(meta["classes"])
    side, stored = card["input"]["image_size"], card["input"]["stored_side"]

    split_path = os.path.join(args.run_dir, "split.json")
    with open(split_path) as f:
        split = json.load(f)
    if split["kind"] != "image-folder":
        fail(f"{split_path}: a {split['kind']} run; this check reads image folders")
    on_validation = card["source"]["evaluated_on"].startswith("the validation")
    names = split["validation" if on_validation else "test"]
    root = args.data or split["root"]
    if not os.path.isdir(root):
        fail(f"{root}: the dataset folder is not here (pass --data)")

    batch = np.stack([preprocess(os.path.join(root, n), stored, side) for n in names])
    logits, probs = session.run(["logits", "probabilities"], {"pixels": batch})
    predicted = logits.argmax(axis=1)
    truth = np.array([classes.index(n.split("/")[0]) for n in names])
    correct = int((predicted == truth).sum())
    acc = correct / len(names)
    print(f"onnxruntime {ort.__version__}, {model}")
    print(f"probabilities sum to 1 within {np.abs(probs.sum(axis=1) - 1).max():.1e}")
    split_name = "validation" if on_validation else "test"
    print(f"{split_name} accuracy {100 * acc:.2f}% ({correct}/{len(names)})")

    with open(os.path.join(args.run_dir, "summary.json")) as f:
        summary = json.load(f)
    if args.method not in summary:
        fail(f"{args.run_dir}/summary.json has no `{args.method}`")
    reported = summary[args.method]["test_acc"]
    # The run reports the fraction; compare the count it stands for.
    if round(reported * len(names)) == correct:
        print(f"matches the run's {100 * reported:.2f}%")
        return 0
    print(f"MISMATCH: the run reported {100 * reported:.2f}%", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
