"""``Tensor``: a numpy array with autograd metadata (``requires_grad``, ``grad``, ``grad_fn``)."""
import collections
import numbers
import warnings

import numpy as np

from . import _dtype
from ._device import CPU, NO_CUDA, check_device
from .autograd import grad_mode
from .autograd.backward import backward as _backward
from .autograd.function import AccumulateGrad, TensorBase
from . import hooks as _hooks
from .hooks import RemovableHandle
from .ops import linalg, pointwise as pw, reduction as red, shape as sh, transformer as tf


class Size(tuple):
    def __repr__(self):
        return f"torch.Size([{', '.join(str(n) for n in self)}])"

    def numel(self):
        return int(np.prod(self))


return_types_max = collections.namedtuple("max", ["values", "indices"])
return_types_min = collections.namedtuple("min", ["values", "indices"])

_NON_LEAF_GRAD_WARNING = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad attribute won't "
    "be populated during autograd.backward(). If you indeed want the .grad field to be populated for a "
    "non-leaf Tensor, use .retain_grad() on the non-leaf Tensor.")


def _is_scalar(x):
    return isinstance(x, (numbers.Number, np.bool_)) and not isinstance(x, complex)


def _scalar_category(x):
    return 0 if isinstance(x, (bool, np.bool_)) else 1 if isinstance(x, numbers.Integral) else 2


_DEFAULT_FOR_CATEGORY = {0: np.dtype(np.bool_), 1: np.dtype(np.int64), 2: np.dtype(np.float32)}


def promote_types(da, db):
    """PyTorch's promotion between tensors of the same rank class: the higher category (bool < int
    < float) wins whatever its width (float32 with int64 is float32); within one category the
    wider type."""
    ca, cb = _dtype.category(da), _dtype.category(db)
    if ca != cb:
        return da if ca > cb else db
    return np.promote_types(da, db)


def result_dtype(a, b):
    """PyTorch's type promotion for a tensor ``a`` and a tensor or Python scalar ``b``: a Python
    scalar only lifts the category and then takes the default dtype of that category; a 0-dim
    tensor beside a dimensioned one only counts when its category is higher, and then with its own
    dtype."""
    da = a._np.dtype
    if isinstance(b, Tensor):
        db = b._np.dtype
        if da == db:
            return da
        a_dim, b_dim = a._np.ndim > 0, b._np.ndim > 0
        if a_dim != b_dim:
            dim_t, zero_t = (da, db) if a_dim else (db, da)
            cz, cd = _dtype.category(zero_t), _dtype.category(dim_t)
            return dim_t if cz <= cd else zero_t
        return promote_types(da, db)
    cs, ca = _scalar_category(b), _dtype.category(da)
    return da if cs <= ca else _DEFAULT_FOR_CATEGORY[cs]


def _broadcast_error(sa, sb):
    for i in range(1, max(len(sa), len(sb)) + 1):
        x = sa[-i] if i <= len(sa) else 1
        y = sb[-i] if i <= len(sb) else 1
        if x != y and x != 1 and y != 1:
            return RuntimeError(f"The size of tensor a ({x}) must match the size of tensor b ({y}) at "
                                f"non-singleton dimension {max(len(sa), len(sb)) - i}")
    return None


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, Size)):
        shape = shape[0]
    return tuple(int(n) for n in shape)


def _format_array(a):
    if a.dtype.kind == "f" and a.size:
        finite = a[np.isfinite(a)]
        if finite.size and np.all(finite == np.round(finite)) and np.abs(finite).max() < 1e8:
            fmt = lambda v: f"{v:.0f}." if np.isfinite(v) else str(v)  # noqa: E731
        else:
            big = finite.size and (np.abs(finite).max() >= 1e8 or 0 < np.abs(finite[finite != 0]).min(initial=1) < 1e-4)
            fmt = (lambda v: f"{v:.4e}") if big else (lambda v: f"{v:.4f}")  # noqa: E731
        return np.array2string(a, separator=", ", formatter={"float_kind": fmt}, threshold=1000, edgeitems=3,
                               max_line_width=80, prefix="tensor(")
    if a.dtype.kind == "b":
        return np.array2string(a, separator=", ", formatter={"bool": lambda v: str(bool(v))}, prefix="tensor(")
    return np.array2string(a, separator=", ", threshold=1000, prefix="tensor(")


class Tensor(TensorBase):
    __slots__ = ("_np", "_vc", "_requires_grad", "_grad", "grad_fn", "_accumulator", "_leaf_hooks",
                 "_retains_grad", "__weakref__", "__dict__")

    def __init__(self, data=()):
        arr = np.asarray(data.numpy() if isinstance(data, Tensor) else data)
        if arr.dtype.kind == "f" and not isinstance(data, np.ndarray) or arr.dtype.kind in "iu":
            arr = arr.astype(np.float32)
        self._init(arr, None, False)

    def _init(self, arr, grad_fn, requires_grad):
        self._np = arr
        self._vc = [0]
        self.grad_fn = grad_fn
        self._requires_grad = requires_grad
        self._grad = None
        self._accumulator = None
        self._leaf_hooks = None
        self._retains_grad = False

    @classmethod
    def _wrap(cls, arr, grad_fn=None, requires_grad=False):
        t = object.__new__(cls)
        t._init(arr if isinstance(arr, np.ndarray) else np.asarray(arr), grad_fn, requires_grad or grad_fn is not None)
        return t

    @staticmethod
    def _result(arr, grad_fn=None):
        """A new plain Tensor (never a Parameter) holding ``arr``: how the autograd layer makes tensors."""
        return Tensor._wrap(arr, grad_fn)

    # -- autograd metadata ---------------------------------------------------------------------
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if self.grad_fn is not None:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a computed "
                "variable in a subgraph that doesn't require differentiation use var_no_grad = var.detach().")
        if value and self._np.dtype.kind != "f":
            raise RuntimeError("only Tensors of floating point and complex dtype can require gradients")
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def grad(self):
        if self._grad is None and self.grad_fn is not None and not self._retains_grad:
            warnings.warn(_NON_LEAF_GRAD_WARNING, UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError("assigned grad expected to be a Tensor or None but got grad of type "
                                f"{type(value).__name__}")
            if value.shape != self.shape:
                raise RuntimeError("assigned grad has data of a different size")
        self._grad = value

    def _edge(self):
        if self.grad_fn is not None:
            return (self.grad_fn, 0)
        if self._requires_grad:
            if self._accumulator is None:
                self._accumulator = AccumulateGrad(self)
            return (self._accumulator, 0)
        return (None, 0)

    def retain_grad(self):
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.grad_fn is not None and not self._retains_grad:
            import weakref
            self.grad_fn._retained = weakref.ref(self)
            self._retains_grad = True

    @property
    def retains_grad(self):
        return self._retains_grad

    def register_hook(self, hook):
        """``hook(grad)`` runs when this tensor's gradient is computed; it may return a new gradient."""
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            hooks = self.grad_fn._hook_list("_tensor_pre_hooks")
        else:
            if self._leaf_hooks is None:
                self._leaf_hooks = []
            hooks = self._leaf_hooks
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        _backward(self, gradient, retain_graph, create_graph, inputs=inputs)

    def detach(self):
        t = Tensor._wrap(self._np)
        t._vc = self._vc  # as in PyTorch, a detached tensor shares its version counter (unlike .data)
        return t

    def detach_(self):
        self.grad_fn = None
        self._requires_grad = False
        return self

    @property
    def data(self):
        return Tensor._wrap(self._np)

    @data.setter
    def data(self, value):
        self._np = value._np

    @property
    def _version(self):
        """How many in-place writes this tensor's storage has had (shared with its views), as
        PyTorch's: a node that saved the tensor checks it in backward."""
        return self._vc[0]

    # -- plain attributes ----------------------------------------------------------------------
    @property
    def shape(self):
        return Size(self._np.shape)

    def size(self, dim=None):
        return Size(self._np.shape) if dim is None else self._np.shape[dim]

    @property
    def ndim(self):
        return self._np.ndim

    def dim(self):
        return self._np.ndim

    def numel(self):
        return int(self._np.size)

    nelement = numel

    @property
    def dtype(self):
        return _dtype.from_numpy_dtype(self._np.dtype)

    @property
    def device(self):
        return CPU

    is_cuda = False
    is_cpu = True
    is_meta = False

    def is_floating_point(self):
        return self._np.dtype.kind == "f"

    def item(self):
        if self._np.size != 1:
            raise RuntimeError(f"a Tensor with {self._np.size} elements cannot be converted to Scalar")
        return self._np.reshape(()).item()

    def numpy(self):
        if self._requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        return self._np

    def __array__(self, dtype=None, copy=None):
        return self._np if dtype is None else self._np.astype(dtype)

    def tolist(self):
        return self._np.tolist()

    def __len__(self):
        if self._np.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._np.shape[0]

    def __iter__(self):
        if self._np.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._np.shape[0]))

    def __bool__(self):
        if self._np.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(self._np.reshape(()))

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._np.dtype.kind not in "iu" or self._np.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    __hash__ = object.__hash__

    def __repr__(self):
        body = _format_array(self._np)
        extras = []
        dt = self._np.dtype
        if dt not in (np.float32, np.int64, np.bool_) or self._np.size == 0 and dt != np.float32:
            extras.append(f"dtype={self.dtype!r}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name()}>")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # -- conversion ----------------------------------------------------------------------------
    def to(self, *args, dtype=None, device=None, **kwargs):
        for a in args:
            if isinstance(a, _dtype.dtype):
                dtype = a
            elif isinstance(a, Tensor):
                dtype = a.dtype
            else:
                check_device(a)
        check_device(device)
        if isinstance(dtype, _dtype._Unsupported):
            raise _dtype.unsupported(dtype)
        if dtype is None or dtype.np == self._np.dtype:
            return self
        return pw.ToCopyBackward0.apply(self, dtype=dtype.np)

    def float(self):
        return self.to(_dtype.float32)

    def half(self):
        raise _dtype.unsupported(_dtype.float16)

    def double(self):
        return self.to(_dtype.float64)

    def long(self):
        return self.to(_dtype.int64)

    def bool(self):
        return self.to(_dtype.bool)

    def type_as(self, other):
        return self.to(other.dtype)

    def cpu(self):
        return self

    def cuda(self, device=None, non_blocking=False):
        raise AssertionError(NO_CUDA)

    def clone(self):
        return pw.CloneBackward0.apply(self)

    def contiguous(self):
        return self if self._np.flags.c_contiguous else pw.CloneBackward0.apply(self)

    def is_contiguous(self):
        return bool(self._np.flags.c_contiguous)

    # -- arithmetic ----------------------------------------------------------------------------
    # A numpy scalar or array on the left (``np.float32(2) * x``) defers to the reflected operators
    # below instead of turning the tensor into an array, as with torch.
    __array_priority__ = 1000

    def _binary(self, other, fn, reverse=False, **kw):
        if isinstance(other, np.ndarray):
            other = Tensor._wrap(other)
        if isinstance(other, Tensor):
            a, b = (other, self) if reverse else (self, other)
        elif _is_scalar(other):
            a, b = self, other
        else:
            return NotImplemented
        dt = result_dtype(a, b)
        if fn is pw.DivBackward0 and dt.kind != "f":
            dt = np.dtype(np.float32)
        try:
            return fn.apply(a, b, dtype=dt, **kw)
        except ValueError:
            if isinstance(b, Tensor):
                err = _broadcast_error(a._np.shape, b._np.shape)
                if err is not None:
                    raise err from None
            raise

    def __add__(self, other):
        return self._binary(other, pw.AddBackward0)

    def __radd__(self, other):
        return self._binary(other, pw.AddBackward0, reverse=isinstance(other, Tensor))

    def add(self, other, alpha=1):
        return self._binary(other, pw.AddBackward0, alpha=alpha)

    def __sub__(self, other):
        return self._binary(other, pw.SubBackward0)

    def sub(self, other, alpha=1):
        return self._binary(other, pw.SubBackward0, alpha=alpha)

    def __rsub__(self, other):
        if isinstance(other, Tensor):
            return other.__sub__(self)
        if not _is_scalar(other):
            return NotImplemented
        return pw.RsubBackward1.apply(self, other, dtype=result_dtype(self, other))

    def __mul__(self, other):
        return self._binary(other, pw.MulBackward0)

    def __rmul__(self, other):
        return self._binary(other, pw.MulBackward0, reverse=isinstance(other, Tensor))

    mul = __mul__

    def __truediv__(self, other):
        return self._binary(other, pw.DivBackward0)

    div = __truediv__

    def __rtruediv__(self, other):
        if isinstance(other, Tensor):
            return other.__truediv__(self)
        if not _is_scalar(other):
            return NotImplemented
        return self.reciprocal() * other

    def reciprocal(self):
        x = self if self.is_floating_point() else self.float()
        return pw.ReciprocalBackward0.apply(x)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            return self._binary(exponent, pw.PowBackward1)
        if not _is_scalar(exponent):
            return NotImplemented
        return pw.PowBackward0.apply(self, exponent, dtype=result_dtype(self, exponent))

    pow = __pow__

    def __rpow__(self, base):
        if not _is_scalar(base):
            return NotImplemented
        return pw.PowBackward2.apply(base, self, dtype=result_dtype(self, base))

    def __neg__(self):
        return pw.NegBackward0.apply(self)

    neg = __neg__

    def __pos__(self):
        return self

    def __matmul__(self, other):
        if not isinstance(other, Tensor):
            return NotImplemented
        return matmul(self, other)

    def __rmatmul__(self, other):
        if not isinstance(other, Tensor):
            return NotImplemented
        return matmul(other, self)

    matmul = __matmul__

    def mm(self, other):
        return linalg.MmBackward0.apply(self, other)

    def bmm(self, other):
        return linalg.BmmBackward0.apply(self, other)

    def mv(self, other):
        return linalg.MvBackward0.apply(self, other)

    def dot(self, other):
        return linalg.DotBackward0.apply(self, other)

    # -- comparisons (not differentiable) -------------------------------------------------------
    def _compare(self, other, op):
        o = other._np if isinstance(other, Tensor) else other
        try:
            return Tensor._wrap(np.asarray(op(self._np, o)))
        except ValueError:
            err = _broadcast_error(self._np.shape, np.shape(o))
            raise (err or ValueError) from None

    def __eq__(self, other):
        return self._compare(other, np.equal)

    def __ne__(self, other):
        return self._compare(other, np.not_equal)

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__

    def __and__(self, other):
        return self._compare(other, np.logical_and if self._np.dtype == np.bool_ else np.bitwise_and)

    def __or__(self, other):
        return self._compare(other, np.logical_or if self._np.dtype == np.bool_ else np.bitwise_or)

    def __invert__(self):
        return Tensor._wrap(~self._np)

    def all(self, dim=None, keepdim=False):
        return Tensor._wrap(np.asarray(np.all(self._np, axis=dim, keepdims=keepdim)))

    def any(self, dim=None, keepdim=False):
        return Tensor._wrap(np.asarray(np.any(self._np, axis=dim, keepdims=keepdim)))

    def isnan(self):
        return Tensor._wrap(np.isnan(self._np))

    def isinf(self):
        return Tensor._wrap(np.isinf(self._np))

    def isfinite(self):
        return Tensor._wrap(np.isfinite(self._np))

    def equal(self, other):
        return self.shape == other.shape and bool(np.array_equal(self._np, other._np))

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return bool(np.allclose(self._np, other._np, rtol=rtol, atol=atol, equal_nan=equal_nan))

    # -- reductions ----------------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, dtype=None):
        x = self if dtype is None else self.to(dtype)
        if x._np.dtype.kind in "biu" and dtype is None:
            x = x.to(_dtype.int64)
        if dim is None:
            return red.SumBackward0.apply(x)
        return red.SumBackward1.apply(x, dim=dim, keepdim=keepdim)

    def mean(self, dim=None, keepdim=False, dtype=None):
        x = self if dtype is None else self.to(dtype)
        if x._np.dtype.kind != "f":
            raise RuntimeError("mean(): could not infer output dtype. Input dtype must be either a floating point "
                               f"or complex dtype. Got: {_dtype_title(x)}")
        if dim is None:
            return red.MeanBackward0.apply(x)
        return red.MeanBackward1.apply(x, dim=dim, keepdim=keepdim)

    def _extremum(self, dim, keepdim, whole, by_dim, result):
        if dim is None:
            return whole.apply(self)
        node_out = by_dim.apply(self, dim=dim, keepdim=keepdim)
        node = node_out.grad_fn
        idx = np.asarray(self._np.argmax(axis=dim, keepdims=keepdim) if by_dim is red.MaxBackward0
                         else self._np.argmin(axis=dim, keepdims=keepdim)) if node is None else node.indices
        return result(node_out, Tensor._wrap(np.asarray(idx, dtype=np.int64)))

    def max(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return maximum(self, dim)
        return self._extremum(dim, keepdim, red.MaxBackward1, red.MaxBackward0, return_types_max)

    def min(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return minimum(self, dim)
        return self._extremum(dim, keepdim, red.MinBackward1, red.MinBackward0, return_types_min)

    def amax(self, dim=(), keepdim=False):
        return red.AmaxBackward0.apply(self, dim=None if dim == () else dim, keepdim=keepdim)

    def amin(self, dim=(), keepdim=False):
        return red.AminBackward0.apply(self, dim=None if dim == () else dim, keepdim=keepdim)

    def argmax(self, dim=None, keepdim=False):
        out = np.argmax(self._np, axis=dim, keepdims=keepdim) if dim is not None else np.argmax(self._np)
        return Tensor._wrap(np.asarray(out, dtype=np.int64))

    def argmin(self, dim=None, keepdim=False):
        out = np.argmin(self._np, axis=dim, keepdims=keepdim) if dim is not None else np.argmin(self._np)
        return Tensor._wrap(np.asarray(out, dtype=np.int64))

    def norm(self, p="fro", dim=None, keepdim=False):
        if p not in (2, 2.0, "fro"):
            raise NotImplementedError("gradviz.engine's norm() computes the L2 norm only (p=2)")
        return red.LinalgVectorNormBackward0.apply(self, dim=dim, keepdim=keepdim)

    def softmax(self, dim):
        return red.SoftmaxBackward0.apply(self, dim=dim)

    def log_softmax(self, dim):
        return red.LogSoftmaxBackward0.apply(self, dim=dim)

    # -- unary math ----------------------------------------------------------------------------
    def _unary(self, fn):
        x = self if self._np.dtype.kind == "f" else self.float()
        return fn.apply(x)

    def exp(self):
        return self._unary(pw.ExpBackward0)

    def log(self):
        return self._unary(pw.LogBackward0)

    def sqrt(self):
        return self._unary(pw.SqrtBackward0)

    def tanh(self):
        return self._unary(pw.TanhBackward0)

    def sigmoid(self):
        return self._unary(pw.SigmoidBackward0)

    def sin(self):
        return self._unary(pw.SinBackward0)

    def cos(self):
        return self._unary(pw.CosBackward0)

    def abs(self):
        return pw.AbsBackward0.apply(self)

    __abs__ = abs

    def relu(self):
        return pw.ReluBackward0.apply(self)

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
        # A float bound clamps an integer tensor into the default float dtype, as in PyTorch.
        cat = _dtype.category(self._np.dtype)
        bound = [_scalar_category(v) for v in (min, max) if v is not None and _scalar_category(v) > cat]
        x = self if not bound else self.to(_dtype.from_numpy_dtype(_DEFAULT_FOR_CATEGORY[bound[0]]))
        return pw.ClampBackward1.apply(x, min=min, max=max)

    clip = clamp

    def square(self):
        return self ** 2

    # -- shape ---------------------------------------------------------------------------------
    def view(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], _dtype.dtype):
            raise NotImplementedError("view(dtype) is not supported by gradviz.engine")
        return sh.ViewBackward0.apply(self, shape=_shape_arg(shape), copy_ok=False)

    def reshape(self, *shape):
        # As PyTorch: a view where the strides allow one (ViewBackward0 when contiguous,
        # ReshapeAliasBackward0 otherwise), else a contiguous copy and an _unsafe_view of it.
        shape = sh.infer_shape(_shape_arg(shape), self._np.size)
        if self._np.flags.c_contiguous:
            return sh.ViewBackward0.apply(self, shape=shape)
        if sh.can_view(self._np, shape):
            return sh.ReshapeAliasBackward0.apply(self, shape=shape)
        return sh.UnsafeViewBackward0.apply(self.clone(), shape=shape)

    def view_as(self, other):
        return self.view(other.shape)

    def reshape_as(self, other):
        return self.reshape(other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        shape = self._np.shape
        s, e = sh.wrap_dim(start_dim, len(shape)), sh.wrap_dim(end_dim, len(shape))
        if not shape:
            return self.reshape(1)
        if s > e:
            raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
        if s == e:
            return self
        return self.reshape(shape[:s] + (-1,) + shape[e + 1:])

    def transpose(self, dim0, dim1):
        return sh.TransposeBackward0.apply(self, dim0=dim0, dim1=dim1)

    def t(self):
        return sh.TBackward0.apply(self)

    @property
    def T(self):
        return self.permute(*reversed(range(self._np.ndim)))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def permute(self, *dims):
        return sh.PermuteBackward0.apply(self, dims=_shape_arg(dims))

    def unsqueeze(self, dim):
        return sh.UnsqueezeBackward0.apply(self, dim=dim)

    def squeeze(self, dim=None):
        if dim is None:
            return sh.SqueezeBackward0.apply(self)
        return sh.SqueezeBackward1.apply(self, dim=dim)

    def split(self, split_size_or_sections, dim=0):
        return self._split(split_size_or_sections, dim, sh.SplitBackward0)

    def unsafe_split(self, split_size, dim=0):
        return self._split(split_size, dim, sh.UnsafeSplitBackward0)

    def chunk(self, chunks, dim=0):
        return self._chunk(chunks, dim, sh.SplitBackward0)

    def unsafe_chunk(self, chunks, dim=0):
        return self._chunk(chunks, dim, sh.UnsafeSplitBackward0)

    def _chunk(self, chunks, dim, node):
        if chunks <= 0:
            raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
        size = self._np.shape[sh.wrap_dim(dim, self.ndim)]
        return self._split(max(-(-size // chunks), 1), dim, node)

    def _split(self, sizes, dim, node):
        d = sh.wrap_dim(dim, self.ndim)
        total = self._np.shape[d]
        if isinstance(sizes, (list, tuple)):
            sizes = [int(n) for n in sizes]
            if sum(sizes) != total or any(n < 0 for n in sizes):
                raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {total} (input tensor's "
                                   f"size at dimension {dim}), but got split_sizes={sizes}")
            if node is sh.SplitBackward0:
                node = sh.SplitWithSizesBackward0
        else:
            if sizes <= 0 and total:
                raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got dimension size of "
                                   f"{total}")
            sizes = [min(sizes, total - start) for start in range(0, total, sizes)] if total else [0]
        bounds = np.cumsum([0] + sizes)
        return tuple(node.apply(self, dim=d, start=int(a), stop=int(b)) for a, b in zip(bounds[:-1], bounds[1:]))

    def expand(self, *sizes):
        return sh.ExpandBackward0.apply(self, shape=_shape_arg(sizes))

    def expand_as(self, other):
        return self.expand(other.shape)

    def masked_fill(self, mask, value):
        if isinstance(value, Tensor):
            if value.ndim:
                raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, but got tensor with "
                                   f"{value.ndim} dimension(s).")
            value = value.item()
        mask = mask._np if isinstance(mask, Tensor) else np.asarray(mask)
        try:
            return tf.MaskedFillBackward0.apply(self, mask=mask, value=value)
        except ValueError:
            err = _broadcast_error(self._np.shape, mask.shape)
            if err is None:
                raise
            raise err from None

    def tril(self, diagonal=0):
        return tf.TrilBackward0.apply(self, diagonal=diagonal)

    def triu(self, diagonal=0):
        return tf.TriuBackward0.apply(self, diagonal=diagonal)

    def __getitem__(self, key):
        return _index(self, key)

    def __setitem__(self, key, value):
        self._check_inplace()
        if isinstance(key, Tensor):
            key = key._np
        if _hooks.array_writing:
            _hooks.writing(self._np)
        self._np[key] = value._np if isinstance(value, Tensor) else value
        self._vc[0] += 1

    # -- in place (outside the graph: for initialisation, optimisers and zeroing grads) ----------
    def _check_inplace(self):
        if self._requires_grad and grad_mode.is_grad_enabled():
            if self.grad_fn is None:
                raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
            raise RuntimeError("gradviz.engine does not record in-place operations on tensors that require grad; "
                               "use the out-of-place form of this operation")

    def _set(self, values):
        self._check_inplace()
        if _hooks.array_writing:
            _hooks.writing(self._np)
        self._np[...] = values
        self._vc[0] += 1
        return self

    def _inplace(self, fn, other):
        """``self = fn(self, other)`` in place, with PyTorch's errors for shapes that do not fit."""
        o = other._np if isinstance(other, Tensor) else other
        try:
            return self._set(fn(self._np, o))
        except ValueError:
            shape = np.shape(o)
            err = _broadcast_error(self._np.shape, shape)
            if err is None:
                full = np.broadcast_shapes(self._np.shape, shape)
                err = RuntimeError(f"output with shape [{', '.join(map(str, self._np.shape))}] doesn't match the "
                                   f"broadcast shape [{', '.join(map(str, full))}]")
            raise err from None

    def zero_(self):
        return self._set(0)

    def fill_(self, value):
        return self._set(value)

    def copy_(self, src):
        return self._inplace(lambda a, b: b, src)

    def add_(self, other, alpha=1):
        return self._inplace(lambda a, b: a + (b if alpha == 1 else alpha * b), other)

    def sub_(self, other, alpha=1):
        return self.add_(other, alpha=-alpha)

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def mul_(self, other):
        return self._inplace(np.multiply, other)

    def div_(self, other):
        return self._inplace(np.true_divide, other)

    def clamp_(self, min=None, max=None):
        return self._set(np.clip(self._np, min, max))

    def uniform_(self, a=0.0, b=1.0):
        from ._random import generator
        return self._set(generator().uniform(a, b, self._np.shape))

    def normal_(self, mean=0.0, std=1.0):
        from ._random import generator
        return self._set(generator().normal(mean, std, self._np.shape))



TensorBase._from_array = staticmethod(Tensor._wrap)


def _dtype_title(t):
    return {"float32": "Float", "float64": "Double", "int64": "Long", "int32": "Int", "bool": "Bool"}[t.dtype.name]


def _index_part(p):
    """One entry of an index key: int, slice, None, Ellipsis, or an integer/bool numpy array."""
    if p is None or p is Ellipsis or isinstance(p, slice):
        return p
    if isinstance(p, Tensor):
        p = p._np
    elif isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_)):
        return int(p)
    arr = np.asarray(p)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)  # x[[]]
    if arr.dtype.kind not in "iub":
        raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
    if arr.ndim == 0 and arr.dtype.kind in "iu":
        return int(arr)
    return arr


def _index(t, key):
    """PyTorch's indexing: the basic entries first, left to right (SelectBackward0, SliceBackward0,
    UnsqueezeBackward0; a full slice inside a tuple key is skipped), then one IndexBackward0 for all
    the index arrays and masks, placed as numpy places them."""
    single = not isinstance(key, tuple)
    parts = [_index_part(p) for p in ((key,) if single else key)]
    used = sum(p.ndim if isinstance(p, np.ndarray) and p.dtype == np.bool_ else
              0 if p is None or p is Ellipsis else 1 for p in parts)
    if used > t.ndim:
        raise IndexError(f"too many indices for tensor of dimension {t.ndim}")
    out, dim, arrays, ellipsis = t, 0, [], False
    for p in parts:
        if p is Ellipsis:
            dim += 0 if ellipsis else t.ndim - used
            ellipsis = True
        elif p is None:
            out = sh.UnsqueezeBackward0.apply(out, dim=dim)
            dim += 1
        elif isinstance(p, slice):
            if p.step is not None and p.step <= 0:
                raise ValueError("step must be greater than zero")
            size = out._np.shape[dim]
            if single or p.indices(size) != (0, size, 1):
                out = sh.SliceBackward0.apply(out, key=(slice(None),) * dim + (p,))
            dim += 1
        elif isinstance(p, int):
            size = out._np.shape[dim]
            if not -size <= p < size:
                raise IndexError(f"index {p} is out of bounds for dimension {dim} with size {size}")
            out = sh.SelectBackward0.apply(out, key=(slice(None),) * dim + (p,))
        else:
            arrays.append((dim, p))
            dim += p.ndim if p.dtype == np.bool_ else 1
    if arrays:
        np_key, at = [], 0
        for i, (d, p) in enumerate(arrays):
            shape = out._np.shape
            if p.dtype == np.bool_:
                for j, n in enumerate(p.shape):
                    if n != shape[d + j]:
                        raise IndexError(f"The shape of the mask {list(p.shape)} at index {j} does not match the "
                                         f"shape of the indexed tensor {list(shape)} at index {d + j}")
            elif p.size:
                bad = (p < -shape[d]) | (p >= shape[d])
                if bad.any():
                    raise IndexError(f"index {p[bad].flat[0]} is out of bounds for dimension {i} with size "
                                     f"{shape[d]}")
            np_key += [slice(None)] * (d - at) + [p]
            at = d + (p.ndim if p.dtype == np.bool_ else 1)
        out = sh.IndexBackward0.apply(out, key=tuple(np_key))
    return sh.AliasBackward0.apply(t) if out is t else out


def _should_fold(a, b):
    """PyTorch's should_fold: whether matmul folds the batch dimensions of the operand with >= 3
    dimensions into one mm/mv with the other (1 or 2 dimensions)."""
    a_larger = a.ndim >= b.ndim
    t1 = a._np if a_larger else np.swapaxes(b._np, -1, -2)
    small = b if a_larger else a
    if not (t1.ndim >= 3 and small.ndim <= 2):
        return False
    if small.requires_grad:
        return True
    if a.ndim == 2:
        return False
    if t1.size == 0:
        return True
    st, n = t1.strides, t1.shape
    return all(st[i] == st[i + 1] * n[i + 1] for i in range(t1.ndim - 2))


def matmul(a, b):
    """PyTorch's matmul (``_matmul_impl``): dot, mv, mm; the batch of an N-d operand folded into an
    mm or mv with a 1-d or 2-d one; else a batched product through expand, reshape and bmm."""
    da, db = a.ndim, b.ndim
    if da == 0 or db == 0:
        raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are {da}D and {db}D")
    if da == 1 and db == 1:
        return a.dot(b)
    if da == 2 and db == 1:
        return a.mv(b)
    if da == 1 and db == 2:
        return sh.SqueezeBackward4.apply(a.unsqueeze(0).mm(b), dim=0)
    if da == 2 and db == 2:
        return a.mm(b)
    if _should_fold(a, b):
        transpose = db > da
        t1 = b.mT if transpose else a
        t2 = (a.t() if da == 2 else a) if transpose else b
        lead = tuple(t1.shape[:-1])
        folded = t1.reshape(int(np.prod(lead)), t1.shape[-1])
        if t2.ndim == 2:
            out = sh.UnsafeViewBackward0.apply(folded.mm(t2), shape=lead + (t2.shape[1],))
            return out.mT.contiguous() if transpose else out
        return sh.UnsafeViewBackward0.apply(folded.mv(t2), shape=lead)
    if da == 3 and db == 3 and a.shape[0] != b.shape[0]:
        # A batch of one that requires grad is squeezed and goes through the fold above.
        if a.shape[0] == 1 and a.requires_grad:
            return matmul(a.squeeze(0), b)
        if b.shape[0] == 1 and b.requires_grad:
            return matmul(a, b.squeeze(0))
    n, m1 = (a.shape[-2] if da > 1 else 1), a.shape[-1]
    m2, p = (b.shape[-2] if db > 1 else b.shape[0]), (b.shape[-1] if db > 1 else 1)
    batch_a, batch_b = tuple(a.shape[:-2]), tuple(b.shape[:-2])
    err = _broadcast_error(batch_a, batch_b)
    if err is not None:
        raise err
    batch = tuple(np.broadcast_shapes(batch_a, batch_b))
    bsz = int(np.prod(batch))
    a3 = a.expand(batch + (n, m1)).reshape(bsz, n, m1)
    if db == 1:
        out = a3.bmm(b.expand(batch + (m2,)).reshape(bsz, m2).unsqueeze(2)).squeeze(-1)
    else:
        out = a3.bmm(b.expand(batch + (m2, p)).reshape(bsz, m2, p))
    out_shape = batch + ((n,) if da > 1 else ()) + ((p,) if db > 1 else ())
    return sh.UnsafeViewBackward0.apply(out, shape=out_shape)


def maximum(a, b):
    return a._binary(b, pw.MaximumBackward0)


def minimum(a, b):
    return a._binary(b, pw.MinimumBackward0)


def where(condition, a, b):
    cond = condition._np if isinstance(condition, Tensor) else np.asarray(condition)
    # Type promotion as for a binary op: a Python scalar only lifts the category.
    if isinstance(a, Tensor):
        dt = result_dtype(a, b)
    elif isinstance(b, Tensor):
        dt = result_dtype(b, a)
    else:
        dt = _DEFAULT_FOR_CATEGORY[max(_scalar_category(a), _scalar_category(b))]
    if not isinstance(a, Tensor):
        a = Tensor._wrap(np.asarray(a, dtype=dt))
    if not isinstance(b, Tensor):
        b = Tensor._wrap(np.asarray(b, dtype=dt))
    try:
        return pw.WhereBackward0.apply(a, b, condition=cond, dtype=dt)
    except ValueError:
        err = _broadcast_error(cond.shape, a._np.shape) or _broadcast_error(
            np.broadcast_shapes(cond.shape, a._np.shape), b._np.shape)
        if err is None:
            raise
        raise err from None
