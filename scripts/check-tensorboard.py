#!/usr/bin/env python3
"""Load a run's TensorBoard directory with TensorBoard's own EventAccumulator and print
every method's scalar tags with their counts, and the epoch events of metrics.jsonl.

    pip install tensorboard
    python scripts/check-tensorboard.py RUN_DIR/tb

Exit status 1 when a method's `epoch/loss` count differs from its epoch events in
RUN_DIR/metrics.jsonl, 2 on bad arguments.
"""

import json
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    tb = sys.argv[1]
    metrics = os.path.join(os.path.dirname(os.path.abspath(tb)), "metrics.jsonl")
    epochs = {}
    if os.path.isfile(metrics):
        with open(metrics) as f:
            for line in f:
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if e.get("event") == "epoch":
                    epochs[e["method"]] = epochs.get(e["method"], 0) + 1
    ok = True
    for method in sorted(os.listdir(tb)):
        acc = EventAccumulator(os.path.join(tb, method), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        counts = {t: len(acc.Scalars(t)) for t in sorted(tags["scalars"])}
        print(f"{method}: " + ", ".join(f"{t} {n}" for t, n in counts.items()) + f"; text: {', '.join(t for t in tags['tensors'] if not t.startswith('_hparams_'))}")
        hp = acc.PluginTagToContent("hparams")
        if "_hparams_/session_start_info" in hp:
            start = hparams_metadata.parse_session_start_info_plugin_data(hp["_hparams_/session_start_info"])
            values = {k: v.WhichOneof("kind") for k, v in start.hparams.items()}
            ended = "_hparams_/session_end_info" in hp
            print(f"  hparams: {len(values)} keys (method = {start.hparams['method'].string_value}), session {'ended' if ended else 'open'}")
        else:
            print("  hparams: none")
            ok = False
        expected = epochs.get(method)
        if expected is not None:
            same = counts.get("epoch/loss") == expected
            ok &= same
            print(f"  epoch events in metrics.jsonl: {expected} ({'match' if same else 'MISMATCH'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
