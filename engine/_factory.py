"""Tensor factories: ``tensor``, ``zeros``, ``ones``, ``full``, ``rand``, ``randn``, ``arange`` and friends."""
import numpy as np

from . import _dtype
from ._device import check_device
from ._random import generator
from ._tensor import Tensor, _shape_arg


def _np_dtype(dtype, default=np.float32):
    return np.dtype(default) if dtype is None else _dtype.to_numpy_dtype(dtype)


def _make(arr, requires_grad):
    t = Tensor._wrap(arr)
    if requires_grad:
        t.requires_grad = True
    return t


def _infer(data):
    """PyTorch's dtype inference: Python floats become float32, ints int64, bools bool; a numpy array
    keeps its dtype."""
    if isinstance(data, np.ndarray):
        return data.astype(data.dtype if data.dtype.kind in "fb" or data.dtype == np.int32 else np.int64, copy=True)
    arr = np.array(data)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        return arr
    raise TypeError(f"Could not infer dtype of {type(data).__name__}")


def _unwrap_nested(data):
    if isinstance(data, Tensor):
        return data._np
    if isinstance(data, (list, tuple)):
        return [_unwrap_nested(x) for x in data]
    return data


def tensor(data, dtype=None, device=None, requires_grad=False):
    check_device(device)
    arr = data._np.copy() if isinstance(data, Tensor) else _infer(_unwrap_nested(data))
    if dtype is not None:
        arr = arr.astype(_dtype.to_numpy_dtype(dtype))
    return _make(arr, requires_grad)


def as_tensor(data, dtype=None, device=None):
    check_device(device)
    if isinstance(data, Tensor) and dtype is None:
        return data
    return tensor(data, dtype=dtype)


def from_numpy(arr):
    return Tensor._wrap(arr)


def zeros(*size, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.zeros(_shape_arg(size), _np_dtype(dtype)), requires_grad)


def ones(*size, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.ones(_shape_arg(size), _np_dtype(dtype)), requires_grad)


empty = zeros


def full(size, fill_value, dtype=None, requires_grad=False, device=None):
    check_device(device)
    if dtype is None:
        dtype = _dtype.bool if isinstance(fill_value, bool) else _dtype.int64 if isinstance(fill_value, int) else None
    return _make(np.full(_shape_arg((size,)), fill_value, _np_dtype(dtype)), requires_grad)


def zeros_like(t, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.zeros(t._np.shape, _np_dtype(dtype, t._np.dtype)), requires_grad)


def ones_like(t, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.ones(t._np.shape, _np_dtype(dtype, t._np.dtype)), requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.full(t._np.shape, fill_value, _np_dtype(dtype, t._np.dtype)), requires_grad)


def rand(*size, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(generator().random(_shape_arg(size), dtype=np.float64).astype(_np_dtype(dtype)), requires_grad)


def randn(*size, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(generator().standard_normal(_shape_arg(size)).astype(_np_dtype(dtype)), requires_grad)


def rand_like(t, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return rand(t._np.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def randn_like(t, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return randn(t._np.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def randint(low, high=None, size=None, dtype=None, device=None):
    check_device(device)
    if high is None:
        low, high = 0, low
    return Tensor._wrap(generator().integers(low, high, _shape_arg((size,))).astype(_np_dtype(dtype, np.int64)))


def randperm(n, dtype=None, device=None):
    check_device(device)
    return Tensor._wrap(generator().permutation(n).astype(_np_dtype(dtype, np.int64)))


def arange(start, end=None, step=1, dtype=None, requires_grad=False, device=None):
    check_device(device)
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = _dtype.int64 if is_int else _dtype.float32
    return _make(np.arange(start, end, step).astype(_dtype.to_numpy_dtype(dtype)), requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.linspace(start, end, steps).astype(_np_dtype(dtype)), requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.eye(n, m, dtype=_np_dtype(dtype)), requires_grad)
