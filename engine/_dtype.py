"""Tensor dtypes: thin named wrappers around numpy dtypes, printed as PyTorch prints them."""
import numpy as np


class dtype:
    __slots__ = ("name", "np", "is_floating_point", "itemsize")

    def __init__(self, name, np_dtype):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.is_floating_point = self.np.kind == "f"
        self.itemsize = self.np.itemsize

    def __repr__(self):
        return f"torch.{self.name}"

    def __reduce__(self):
        raise TypeError("gradviz dtypes are not picklable")


class _Unsupported(dtype):
    """A PyTorch dtype the engine names but does not compute in: using it raises a clear TypeError."""

    def __init__(self, name):
        self.name = name
        self.np = None
        self.is_floating_point = True
        self.itemsize = 2


def unsupported(d):
    return TypeError(f"gradviz.engine does not support torch.{d.name}: it computes in float32 and float64 "
                     "(and int64, int32, bool)")


float32 = dtype("float32", np.float32)
float64 = dtype("float64", np.float64)
int64 = dtype("int64", np.int64)
int32 = dtype("int32", np.int32)
bool = dtype("bool", np.bool_)  # noqa: A001 - PyTorch's name
float = float32  # noqa: A001
double = float64
long = int64
float16 = half = _Unsupported("float16")
bfloat16 = _Unsupported("bfloat16")

_BY_NP = {d.np: d for d in (float32, float64, int64, int32, bool)}


def from_numpy_dtype(np_dtype):
    try:
        return _BY_NP[np.dtype(np_dtype)]
    except KeyError:
        raise TypeError(f"gradviz.engine has no dtype for numpy {np.dtype(np_dtype)}") from None


def to_numpy_dtype(d):
    if d is None:
        return None
    if isinstance(d, _Unsupported):
        raise unsupported(d)
    if isinstance(d, dtype):
        return d.np
    raise TypeError(f"expected a dtype such as torch.float32, got {d!r}")


def category(np_dtype):
    """0 bool, 1 integer, 2 floating: the order of PyTorch's type promotion between kinds."""
    k = np_dtype.kind
    return 2 if k == "f" else 0 if k == "b" else 1
