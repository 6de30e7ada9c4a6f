"""Tensor factories: ``tensor``, ``zeros``, ``ones``, ``full``, ``rand``, ``randn``, ``arange`` and friends."""
import numpy as np

from . import _dtype
from ._device import check_device
from ._random import generator
from ._tensor import Tensor, _shape_arg


def _ragged_error(data):
    """PyTorch's error for nested sequences of unequal lengths (the shape comes from the first
    element at each depth), or None."""
    shape, x = [], data
    while isinstance(x, (list, tuple)):
        shape.append(len(x))
        x = x[0] if len(x) else None
    stack = [(data, 0)]
    while stack:
        x, dim = stack.pop()
        if dim == len(shape) or not isinstance(x, (list, tuple)):
            continue
        if len(x) != shape[dim]:
            return ValueError(f"expected sequence of length {shape[dim]} at dim {dim} (got {len(x)})")
        stack.extend((y, dim + 1) for y in reversed(x))
    return None


def _sized(shape, name=None):
    """``shape`` after PyTorch's check for negative sizes."""
    if any(n < 0 for n in shape):
        if name == "zeros":
            raise RuntimeError("zeros: Dimension size must be non-negative.")
        bad = next(n for n in shape if n < 0)
        raise RuntimeError(f"Trying to create tensor with negative dimension {bad}: [{', '.join(map(str, shape))}]")
    return shape


def allocation_error(ex):
    """numpy's MemoryError as PyTorch's RuntimeError."""
    shape, dt = getattr(ex, "shape", None), getattr(ex, "dtype", None)
    size = int(np.prod(shape, dtype=np.float64) * dt.itemsize) if shape is not None and dt is not None else None
    what = f"you tried to allocate {size} bytes. " if size is not None else ""
    return RuntimeError(f"[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                        f"{what}Error code 12 (Cannot allocate memory)")


def _allocating(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MemoryError as ex:
            raise allocation_error(ex) from None
    return wrapper


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
    try:
        arr = np.array(data)
    except ValueError:
        err = _ragged_error(data)
        if err is None:
            raise
        raise err from None
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


@_allocating
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


@_allocating
def zeros(*size, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.zeros(_sized(_shape_arg(size), "zeros"), _np_dtype(dtype)), requires_grad)


@_allocating
def ones(*size, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.ones(_sized(_shape_arg(size)), _np_dtype(dtype)), requires_grad)


@_allocating
def empty(*size, dtype=None, requires_grad=False, device=None, **kwargs):
    check_device(device)
    return _make(np.zeros(_sized(_shape_arg(size)), _np_dtype(dtype)), requires_grad)


@_allocating
def full(size, fill_value, dtype=None, requires_grad=False, device=None):
    check_device(device)
    if dtype is None:
        dtype = _dtype.bool if isinstance(fill_value, bool) else _dtype.int64 if isinstance(fill_value, int) else None
    return _make(np.full(_sized(_shape_arg((size,))), fill_value, _np_dtype(dtype)), requires_grad)


@_allocating
def zeros_like(t, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.zeros(t._np.shape, _np_dtype(dtype, t._np.dtype)), requires_grad)


@_allocating
def ones_like(t, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.ones(t._np.shape, _np_dtype(dtype, t._np.dtype)), requires_grad)


@_allocating
def full_like(t, fill_value, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.full(t._np.shape, fill_value, _np_dtype(dtype, t._np.dtype)), requires_grad)


@_allocating
def rand(*size, dtype=None, requires_grad=False, device=None):
    check_device(device)
    shape = _sized(_shape_arg(size))
    out = np.empty(shape, _np_dtype(dtype))  # first, so that a failed allocation names the tensor's own size
    out[...] = generator().random(shape, dtype=np.float64)
    return _make(out, requires_grad)


@_allocating
def randn(*size, dtype=None, requires_grad=False, device=None):
    check_device(device)
    shape = _sized(_shape_arg(size))
    out = np.empty(shape, _np_dtype(dtype))  # first, so that a failed allocation names the tensor's own size
    out[...] = generator().standard_normal(shape)
    return _make(out, requires_grad)


def rand_like(t, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return rand(t._np.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def randn_like(t, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return randn(t._np.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


@_allocating
def randint(low, high=None, size=None, dtype=None, device=None):
    check_device(device)
    if high is None:
        low, high = 0, low
    return Tensor._wrap(generator().integers(low, high, _sized(_shape_arg((size,)))).astype(_np_dtype(dtype, np.int64)))


@_allocating
def randperm(n, dtype=None, device=None):
    check_device(device)
    return Tensor._wrap(generator().permutation(n).astype(_np_dtype(dtype, np.int64)))


@_allocating
def arange(start, end=None, step=1, dtype=None, requires_grad=False, device=None):
    check_device(device)
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = _dtype.int64 if is_int else _dtype.float32
    return _make(np.arange(start, end, step).astype(_dtype.to_numpy_dtype(dtype)), requires_grad)


@_allocating
def linspace(start, end, steps, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.linspace(start, end, steps).astype(_np_dtype(dtype)), requires_grad)


@_allocating
def eye(n, m=None, dtype=None, requires_grad=False, device=None):
    check_device(device)
    return _make(np.eye(n, m, dtype=_np_dtype(dtype)), requires_grad)
