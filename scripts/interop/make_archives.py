"""Write the archives the scanner's interop test reads, with Python's own
zipfile, pickle and NumPy (as torch.save, np.save and np.savez would):

    make_archives.py OUT_DIR
    make_archives.py --big-torch PATH BYTES    (a zip64 checkpoint, for scripts/bench-scan.sh)

PyTorch itself is not installed: its module names are stood in for, so
that the pickle names exactly what torch.save writes for a state dict.
"""
import collections
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np


# Stand-ins named as torch's own, so pickle writes torch's imports.
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never loaded here")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage
torch._utils = utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils


class Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class Tensor:
    def __init__(self, key, shape):
        self.key, self.shape = key, shape

    def __reduce__(self):
        n = 1
        for d in self.shape:
            n *= d
        stride = tuple(
            int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape))
        )
        return (
            _rebuild_tensor_v2,
            (Storage(self.key, n), 0, self.shape, stride, False, collections.OrderedDict()),
        )


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def torch_zip(path, state, extra_reduce=None):
    buf = io.BytesIO()
    obj = collections.OrderedDict(state)
    if extra_reduce is not None:
        obj["payload"] = extra_reduce
    TorchPickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for t in state.values():
            n = int(np.prod(t.shape))
            z.writestr(f"archive/data/{t.key}", np.zeros(n, "<f4").tobytes())
        z.writestr("archive/version", "3\n")


def big_torch(path, size):
    """A PyTorch-layout checkpoint whose one storage holds `size` bytes of
    random data: a zip64 archive, as torch.save writes for large models."""
    n = size // 4
    state = {"weight": Tensor("0", (n,))}
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(collections.OrderedDict(state))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            left = n * 4
            while left:
                chunk = os.urandom(min(left, 16 << 20))
                f.write(chunk)
                left -= len(chunk)
        z.writestr("archive/version", "3\n")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def fixtures(out):
    os.makedirs(out, exist_ok=True)
    state = {f"layer{i}.weight": Tensor(str(i), (4, 3)) for i in range(6)}
    torch_zip(os.path.join(out, "model.pt"), state)
    torch_zip(os.path.join(out, "evil.pt"), state, RunsCode())
    np.save(os.path.join(out, "floats.npy"), np.arange(12, dtype="<f4").reshape(3, 4))
    np.save(
        os.path.join(out, "objects.npy"),
        np.array([{"a": 1}, None], dtype=object),
        allow_pickle=True,
    )
    np.savez(os.path.join(out, "arrays.npz"), a=np.ones(5, "<i8"), b=np.zeros((2, 2), "<f8"))
    np.savez_compressed(os.path.join(out, "packed.npz"), a=np.arange(1000, dtype="<f4"))
    np.savez(
        os.path.join(out, "objects.npz"),
        a=np.ones(3),
        b=np.array([RunsCode()], dtype=object),
    )


if sys.argv[1] == "--big-torch":
    big_torch(sys.argv[2], int(sys.argv[3]))
else:
    fixtures(sys.argv[1])
