#!/usr/bin/env python3
"""Convert a PyTorch *legacy* (pre-1.6, non-zip) checkpoint into safetensors.

Why this exists: candle's pickle reader only understands the zip format, and the
bundled EfficientNet-Lite0 checkpoint is legacy. This script needs only the Python
standard library (no torch, no numpy): the legacy format is a sequence of pickles
followed by raw storages, and safetensors is a JSON header followed by raw bytes.
Nothing in the checkpoint is executed: classes are resolved to inert stubs.

Usage: scripts/convert_legacy_pth.py IN.pth OUT.safetensors
"""
import collections
import itertools
import json
import pickle
import struct
import sys

MAGIC = 0x1950A86A20F9469CFC6C

# storage class name -> (safetensors dtype, bytes per element)
STORAGE_DTYPES = {
    "FloatStorage": ("F32", 4),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "DoubleStorage": ("F64", 8),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ByteStorage": ("U8", 1),
}


class StorageType:
    def __init__(self, name):
        if name not in STORAGE_DTYPES:
            raise ValueError(f"unsupported storage type {name}")
        self.name = name


class TensorRef:
    def __init__(self, storage_key, offset, size, stride):
        self.storage_key, self.offset, self.size, self.stride = storage_key, offset, tuple(size), tuple(stride)


def rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored):
    return TensorRef(storage, storage_offset, size, stride)


class LegacyUnpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor_v2
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind}")
        self.storages.setdefault(key, (storage_type.name, numel))
        return key


def gather(storage, width, offset, size, stride):
    out = bytearray()
    for index in itertools.product(*(range(d) for d in size)):
        at = offset + sum(i * s for i, s in zip(index, stride))
        out += storage[at * width:(at + 1) * width]
    return bytes(out)


def main(src, dst):
    storages = {}
    with open(src, "rb") as f:
        if pickle.load(f) != MAGIC:
            raise SystemExit(f"{src}: not a legacy PyTorch checkpoint (bad magic number)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        state = LegacyUnpickler(f, storages).load()
        keys = pickle.load(f)
        raw = {}
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            name, _ = storages[key]
            width = STORAGE_DTYPES[name][1]
            raw[key] = f.read(numel * width)
    header, chunks, offset = {}, [], 0
    for name, t in state.items():
        dtype, width = STORAGE_DTYPES[storages[t.storage_key][0]]
        numel = 1
        for d in t.size:
            numel *= d
        expected = []
        acc = 1
        for d in reversed(t.size):
            expected.insert(0, acc)
            acc *= d
        storage = raw[t.storage_key]
        if numel <= 1 or list(t.stride) == expected:
            data = storage[t.offset * width:(t.offset + numel) * width]
        else:
            # Some tensors were saved channels-last; safetensors wants row-major.
            data = gather(storage, width, t.offset, t.size, t.stride)
        header[name] = {"dtype": dtype, "shape": list(t.size), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header["__metadata__"] = {"source": src.rsplit("/", 1)[-1], "format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(dst, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for c in chunks:
            out.write(c)
    print(f"wrote {dst}: {len(state)} tensors, {offset} bytes of data")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
