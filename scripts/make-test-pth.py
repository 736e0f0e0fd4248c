#!/usr/bin/env python3
"""Write tests/fixtures/tiny.pth: a PyTorch-format state dict (zip + pickle + raw
storages) made without PyTorch, for the pickle-reader tests and fuzzing.

Usage: python3 scripts/make-test-pth.py [OUT]
"""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile

# Stand-ins registered under PyTorch's names, so pickle writes the same GLOBAL opcodes
# a real torch.save would.
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks):
    raise RuntimeError("only pickled, never called")


class FloatStorage:
    pass


_rebuild_tensor_v2.__module__ = "torch._utils"
FloatStorage.__module__ = "torch"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
torch.FloatStorage = FloatStorage
torch._utils = utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils


class Storage:
    def __init__(self, key, values):
        self.key, self.values = key, values


class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
        return None


def main(out):
    tensors = collections.OrderedDict()
    storages = []
    for i, (name, shape) in enumerate([("conv.weight", (4, 3, 3, 3)), ("conv.bias", (4,)), ("fc.weight", (2, 4))]):
        n = 1
        for d in shape:
            n *= d
        s = Storage(str(i), [((k * 7 + i) % 11) / 10.0 for k in range(n)])
        storages.append(s)
        tensors[name] = Tensor(s, shape)
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(tensors)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for s in storages:
            z.writestr(f"archive/data/{s.key}", struct.pack(f"<{len(s.values)}f", *s.values))
        z.writestr("archive/version", "3\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/tiny.pth")
