"""Elementwise primitives: arithmetic with broadcasting, unary math, activations, where, casts."""
import numpy as np

from ..autograd.function import Function


def unbroadcast(grad, shape, dtype):
    """Sum ``grad`` down to ``shape``: first the leading axes broadcasting added, then the axes that
    were size 1."""
    if grad.shape != shape:
        lead = grad.ndim - len(shape)
        if lead:
            grad = grad.sum(axis=tuple(range(lead)))
        axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
        if axes:
            grad = grad.sum(axis=axes, keepdims=True)
    if grad.dtype != dtype:
        grad = grad.astype(dtype)
    return grad


def _fix_dtype(out, dtype):
    return out if dtype is None or out.dtype == dtype else out.astype(dtype)


class _Binary(Function):
    """Two operands, the second a tensor or a Python scalar; ``dtype`` is the promoted result type
    when numpy's would differ from PyTorch's."""

    def forward(self, a, b, dtype=None):
        self.a_meta = (a.shape, a.dtype)
        if isinstance(b, np.ndarray):
            self.b_meta = (b.shape, b.dtype)
        self.save_for_backward(*self.to_save(a, b))
        return _fix_dtype(self.compute(a, b), dtype)

    def to_save(self, a, b):
        return a, b

    def crossed(self, a, b):
        """What a product saves in PyTorch: each tensor operand only where the other needs its
        gradient; a Python scalar always, as a 0-d array (PyTorch wraps it in a tensor)."""
        nig = self.needs_input_grad
        if nig is None or len(nig) == 1:
            return None, b if isinstance(b, np.ndarray) else np.asarray(b, a.dtype)
        return (a if nig[1] else None), (b if nig[0] else None)

    def grads(self, grad, ga, gb):
        out = []
        if self.needs_input_grad[0]:
            out.append(unbroadcast(ga(), *self.a_meta))
        else:
            out.append(None)
        if len(self.needs_input_grad) > 1:
            out.append(unbroadcast(gb(), *self.b_meta) if self.needs_input_grad[1] else None)
        return tuple(out)


class AddBackward0(_Binary):
    def forward(self, a, b, dtype=None, alpha=1):
        self.alpha = alpha
        self.a_meta = (a.shape, a.dtype)
        if isinstance(b, np.ndarray):
            self.b_meta = (b.shape, b.dtype)
        return _fix_dtype(a + b if alpha == 1 else a + alpha * b, dtype)

    def backward(self, grad):
        return self.grads(grad, lambda: grad, lambda: grad if self.alpha == 1 else grad * self.alpha)


class SubBackward0(AddBackward0):
    def forward(self, a, b, dtype=None, alpha=1):
        return super().forward(a, b, dtype, -alpha)


class RsubBackward1(Function):
    """``scalar - tensor``."""

    def forward(self, a, scalar, dtype=None):
        self.dtype = a.dtype
        return _fix_dtype(scalar - a, dtype)

    def backward(self, grad):
        return (-grad.astype(self.dtype, copy=False),)


class MulBackward0(_Binary):
    compute = staticmethod(np.multiply)
    to_save = _Binary.crossed

    def backward(self, grad):
        a, b = self.saved_tensors
        return self.grads(grad, lambda: grad * b, lambda: grad * a)


class DivBackward0(_Binary):
    compute = staticmethod(np.true_divide)

    def to_save(self, a, b):
        return self.crossed(a, b)[0], b

    def backward(self, grad):
        a, b = self.saved_tensors
        return self.grads(grad, lambda: grad / b, lambda: -grad * a / (b * b))


class DivBackward1(Function):
    """``tensor / scalar`` as PyTorch's C++ code calls it (``cross_entropy``'s mean over class
    probabilities); Python's ``/`` wraps the scalar in a tensor and records DivBackward0."""

    def forward(self, a, scalar):
        self.scalar = scalar
        return (a / scalar).astype(a.dtype, copy=False)

    def backward(self, grad):
        return ((grad / self.scalar).astype(grad.dtype, copy=False),)


class MaximumBackward0(_Binary):
    """``maximum(a, b)``: the gradient goes to the larger operand and is halved between ties."""

    compute = staticmethod(np.maximum)

    def backward(self, grad):
        a, b = self.saved_tensors
        half, zero = grad / 2, np.zeros((), grad.dtype)
        return self.grads(grad, lambda: np.where(a > b, grad, np.where(a == b, half, zero)),
                          lambda: np.where(b > a, grad, np.where(a == b, half, zero)))


class MinimumBackward0(_Binary):
    compute = staticmethod(np.minimum)

    def backward(self, grad):
        a, b = self.saved_tensors
        half, zero = grad / 2, np.zeros((), grad.dtype)
        return self.grads(grad, lambda: np.where(a < b, grad, np.where(a == b, half, zero)),
                          lambda: np.where(b < a, grad, np.where(a == b, half, zero)))


class PowBackward0(Function):
    """``tensor ** scalar``."""

    @property
    def _saved_exponent(self):
        return self.exponent

    def forward(self, a, exponent, dtype=None):
        self.exponent = exponent
        self.save_for_backward(a)
        return _fix_dtype(np.power(a, exponent), dtype)

    def backward(self, grad):
        (a,) = self.saved_tensors
        e = self.exponent
        if e == 0:
            return (np.zeros_like(a),)
        return ((grad * e * np.power(a, e - 1)).astype(a.dtype, copy=False),)


class PowBackward1(_Binary):
    """``tensor ** tensor``."""

    compute = staticmethod(np.power)

    def backward(self, grad):
        a, b = self.saved_tensors
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.grads(grad, lambda: grad * b * np.power(a, b - 1),
                              lambda: grad * np.where(a > 0, np.power(a, b) * np.log(np.where(a > 0, a, 1)), 0))


class PowBackward2(Function):
    """``scalar ** tensor``."""

    def forward(self, base, b, dtype=None):
        out = _fix_dtype(np.power(base, b), dtype)
        self.base, self.dtype = base, b.dtype
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved_tensors
        return ((grad * out * np.log(self.base)).astype(self.dtype, copy=False),)


class _Unary(Function):
    """Saves its input (``x``) or its output (``y``) for a backward of the form grad * f'(...)."""

    saves = "x"

    def forward(self, x):
        y = self.f(x)
        self.save_for_backward(x if self.saves == "x" else y)
        return y

    def backward(self, grad):
        (v,) = self.saved_tensors
        return (self.df(grad, v),)


class NegBackward0(Function):
    def forward(self, x):
        return -x

    def backward(self, grad):
        return (-grad,)


class ExpBackward0(_Unary):
    saves = "y"
    f = staticmethod(np.exp)

    def df(self, grad, y):
        return grad * y


class LogBackward0(_Unary):
    f = staticmethod(np.log)

    def df(self, grad, x):
        return grad / x


class SqrtBackward0(_Unary):
    saves = "y"
    f = staticmethod(np.sqrt)

    def df(self, grad, y):
        return grad / (2 * y)


class AbsBackward0(_Unary):
    f = staticmethod(np.abs)

    def df(self, grad, x):
        return grad * np.sign(x)


class TanhBackward0(_Unary):
    saves = "y"
    f = staticmethod(np.tanh)

    def df(self, grad, y):
        return grad * (1 - y * y)


class SigmoidBackward0(_Unary):
    saves = "y"

    @staticmethod
    def f(x):
        # Split by sign so that exp never overflows.
        out = np.empty_like(x)
        pos = x >= 0
        out[pos] = 1 / (1 + np.exp(-x[pos]))
        e = np.exp(x[~pos])
        out[~pos] = e / (1 + e)
        return out

    def df(self, grad, y):
        return grad * y * (1 - y)


class ReluBackward0(_Unary):
    saves = "y"

    @staticmethod
    def f(x):
        return np.maximum(x, 0, dtype=x.dtype) if x.dtype.kind == "f" else np.maximum(x, 0)

    def df(self, grad, y):
        return grad * (y > 0)


class SinBackward0(_Unary):
    f = staticmethod(np.sin)

    def df(self, grad, x):
        return grad * np.cos(x)


class CosBackward0(_Unary):
    f = staticmethod(np.cos)

    def df(self, grad, x):
        return -grad * np.sin(x)


class ReciprocalBackward0(_Unary):
    saves = "y"

    @staticmethod
    def f(x):
        return 1 / x

    def df(self, grad, y):
        return -grad * y * y


class ClampBackward1(Function):
    def forward(self, x, min=None, max=None):
        self.save_for_backward(x)
        self.bounds = (min, max)
        return np.clip(x, min, max).astype(x.dtype, copy=False)

    def backward(self, grad):
        (x,) = self.saved_tensors
        lo, hi = self.bounds
        mask = np.ones(x.shape, dtype=bool)
        if lo is not None:
            mask &= x >= lo
        if hi is not None:
            mask &= x <= hi
        return (grad * mask,)


class WhereBackward0(Function):
    """``where(condition, a, b)``: the condition is a constant array, a and b tensors."""

    def forward(self, a, b, condition=None, dtype=None):
        self.save_for_backward(condition)
        self.a_meta, self.b_meta = (a.shape, a.dtype), (b.shape, b.dtype)
        return _fix_dtype(np.where(condition, a, b), dtype)

    def backward(self, grad):
        (cond,) = self.saved_tensors
        zero = np.zeros((), grad.dtype)
        return (unbroadcast(np.where(cond, grad, zero), *self.a_meta) if self.needs_input_grad[0] else None,
                unbroadcast(np.where(cond, zero, grad), *self.b_meta) if self.needs_input_grad[1] else None)


class ToCopyBackward0(Function):
    def forward(self, x, dtype=None):
        self.dtype = x.dtype
        return x.astype(dtype, copy=True)

    def backward(self, grad):
        return (grad.astype(self.dtype),)


class CloneBackward0(Function):
    def forward(self, x):
        return np.array(x, copy=True, order="C")

    def backward(self, grad):
        return (grad,)


# What PyTorch calls the tensors each node saves (``grad_fn._saved_<name>``), in the order they are saved.
for _node, _names in ((MulBackward0, ("self", "other")), (DivBackward0, ("self", "other")),
                      (MaximumBackward0, ("self", "other")), (MinimumBackward0, ("self", "other")),
                      (PowBackward0, ("self",)), (PowBackward1, ("self", "exponent")), (PowBackward2, ("result",)),
                      (ClampBackward1, ("self",)), (WhereBackward0, ("condition",))):
    _node.saved_names = _names
for _node in (ExpBackward0, SqrtBackward0, TanhBackward0, SigmoidBackward0, ReluBackward0, ReciprocalBackward0):
    _node.saved_names = ("result",)
for _node in (LogBackward0, AbsBackward0, SinBackward0, CosBackward0):
    _node.saved_names = ("self",)
