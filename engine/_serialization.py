"""``torch.save`` / ``torch.load`` in a safe format: a zip of ``.npy`` arrays (read with
``allow_pickle=False``) and one JSON document for the containers around them. Only tensors,
numbers, strings, None, dtypes, devices and dicts, lists and tuples of them are stored; loading
never unpickles or runs anything, like PyTorch's ``weights_only=True``."""
import collections
import io
import json
import os
import zipfile

import numpy as np

from . import _dtype
from ._device import check_device, device
from ._tensor import Tensor

__all__ = ["save", "load"]

FORMAT = "gradviz.engine/1"
_INDEX = "gradviz-engine.json"


def _encode(obj, arrays):
    if isinstance(obj, Tensor):
        arrays.append(obj._np)
        out = {"tensor": len(arrays) - 1}
        if obj.requires_grad:
            out["requires_grad"] = True
        if type(obj).__name__ == "Parameter":
            out["parameter"] = True
        return out
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    if isinstance(obj, (np.generic,)) and obj.dtype.kind in "biuf":
        return {"value": obj.item()}
    if isinstance(obj, _dtype.dtype):
        return {"dtype": obj.name}
    if isinstance(obj, device):
        return {"device": str(obj)}
    if isinstance(obj, dict):
        items = [[_encode(k, arrays), _encode(v, arrays)] for k, v in obj.items()]
        return {"ordered_dict" if isinstance(obj, collections.OrderedDict) else "dict": items}
    if isinstance(obj, (list, tuple)):
        return {"list" if isinstance(obj, list) else "tuple": [_encode(v, arrays) for v in obj]}
    raise TypeError(f"gradviz.engine.save stores tensors, numbers, strings, None, dtypes, devices and dicts, lists "
                    f"and tuples of them (a state dict); got {type(obj).__name__}")


def save(obj, f, pickle_module=None, pickle_protocol=None, _use_new_zipfile_serialization=True):
    """Write ``obj`` (a state dict, or any nest of tensors and plain values) to a path or binary file."""
    arrays = []
    index = {"format": FORMAT, "object": _encode(obj, arrays)}
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(_INDEX, json.dumps(index))
        for i, arr in enumerate(arrays):
            with zf.open(f"{i}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(arr), allow_pickle=False)


class _Loader:
    def __init__(self, zf):
        self.zf = zf

    def array(self, i):
        with self.zf.open(f"{int(i)}.npy") as src:
            return np.lib.format.read_array(io.BytesIO(src.read()), allow_pickle=False)

    def decode(self, node):
        if not isinstance(node, dict) or len(node) < 1:
            raise ValueError(f"unexpected entry {node!r}")
        if "tensor" in node:
            t = Tensor._wrap(self.array(node["tensor"]))
            if node.get("parameter"):
                from .nn.parameter import Parameter
                return Parameter(t, requires_grad=bool(node.get("requires_grad")))
            if node.get("requires_grad"):
                t.requires_grad_(True)
            return t
        if "value" in node:
            return node["value"]
        if "dtype" in node:
            return _dtype.from_numpy_dtype(np.dtype(node["dtype"]))
        if "device" in node:
            return device(node["device"])
        if "dict" in node or "ordered_dict" in node:
            kind = dict if "dict" in node else collections.OrderedDict
            return kind((self.decode(k), self.decode(v)) for k, v in node.get("dict", node.get("ordered_dict")))
        if "list" in node:
            return [self.decode(v) for v in node["list"]]
        if "tuple" in node:
            return tuple(self.decode(v) for v in node["tuple"])
        raise ValueError(f"unexpected entry {node!r}")


def _name(f):
    return os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "the file")


def load(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None, **pickle_load_args):
    """Read what ``save`` wrote. Anything else (a pickle, a PyTorch checkpoint, any other file) is
    refused with a ValueError, and nothing in it is run."""
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        check_device(map_location)
    where = _name(f)
    refused = (f"{where} is not a file written by gradviz.engine.save: it loads only its own safe format "
               "(tensors and plain containers), never a pickle")
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError) as ex:
        if isinstance(ex, FileNotFoundError):
            raise
        raise ValueError(refused) from None
    with zf:
        names = set(zf.namelist())
        if _INDEX not in names:
            if any(n.endswith("data.pkl") for n in names):
                refused += " (this is a PyTorch checkpoint, which holds a pickle)"
            raise ValueError(refused)
        try:
            index = json.loads(zf.read(_INDEX))
            if index.get("format") != FORMAT:
                raise ValueError(f"unknown format {index.get('format')!r}")
            return _Loader(zf).decode(index["object"])
        except (ValueError, KeyError, TypeError, AttributeError) as ex:
            raise ValueError(f"{where} is damaged: {ex}") from None
