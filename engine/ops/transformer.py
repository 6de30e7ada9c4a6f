"""The primitives a transformer adds: embedding lookup, layer norm, GELU, ``masked_fill`` and
``tril``/``triu``. Whole-array numpy; erf (for the exact GELU) is computed here, as numpy has none."""
import numpy as np

from ..autograd.function import Function
from .pointwise import unbroadcast

_SQRT_PI = np.sqrt(np.pi)


def erf(x):
    """erf in float64 to about 1e-15: a series of positive terms below 3, erfc's continued fraction
    above (each a fixed number of whole-array steps, no loop over elements)."""
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    out = np.empty_like(a)
    small = a < 3
    s = a[small]
    # erf(s) = 2/sqrt(pi) exp(-s^2) sum_n (2 s^2)^n s / (1*3*...*(2n+1))
    term, total, ratio = s.copy(), s.copy(), 2 * s * s
    for n in range(1, 80):
        term = term * ratio / (2 * n + 1)
        total += term
    out[small] = 2 / _SQRT_PI * np.exp(-s * s) * total
    big = a[~small]
    # erfc(b) = exp(-b^2)/sqrt(pi) / (b + (1/2)/(b + 1/(b + (3/2)/(b + ...)))), evaluated from its tail
    tail = np.zeros_like(big)
    for k in range(60, 0, -1):
        tail = (k / 2) / (big + tail)
    out[~small] = 1 - np.exp(-big * big) / _SQRT_PI / (big + tail)
    return np.copysign(out, x)


class GeluBackward0(Function):
    """GELU, exact (``x * Phi(x)``) or with PyTorch's tanh approximation."""

    def forward(self, x, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise RuntimeError("approximate argument must be either none or tanh.")
        self.approximate = approximate
        self.save_for_backward(x)
        x64 = x.astype(np.float64)
        if approximate == "tanh":
            y = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64 ** 3)))
        else:
            y = x64 * 0.5 * (1 + erf(x64 / np.sqrt(2)))
        return y.astype(x.dtype)

    def backward(self, grad):
        (x,) = self.saved_tensors
        x64 = x.astype(np.float64)
        if self.approximate == "tanh":
            k = np.sqrt(2 / np.pi)
            t = np.tanh(k * (x64 + 0.044715 * x64 ** 3))
            d = 0.5 * (1 + t) + 0.5 * x64 * (1 - t * t) * k * (1 + 3 * 0.044715 * x64 * x64)
        else:
            d = 0.5 * (1 + erf(x64 / np.sqrt(2))) + x64 * np.exp(-0.5 * x64 * x64) / np.sqrt(2 * np.pi)
        return ((grad * d).astype(grad.dtype),)


class EmbeddingBackward0(Function):
    """Rows of ``weight`` picked by integer ``indices``; backward adds each row's gradients up
    (none for ``padding_idx``)."""

    def forward(self, weight, indices=None, padding_idx=-1):
        if indices.dtype.kind not in "iu":
            raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the following scalar "
                               f"types: Long, Int; but got torch.{_title(indices.dtype)}Tensor instead (while "
                               "checking arguments for embedding)")
        n = weight.shape[0]
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise IndexError("index out of range in self")
        self.meta, self.padding_idx = (weight.shape, weight.dtype), padding_idx
        self.save_for_backward(indices)
        return weight[indices]

    def backward(self, grad):
        (indices,) = self.saved_tensors
        shape, dtype = self.meta
        out = np.zeros(shape, dtype)
        flat = indices.reshape(-1)
        np.add.at(out, flat, grad.reshape(flat.shape[0], -1).reshape((flat.shape[0],) + shape[1:]))
        if self.padding_idx >= 0:
            out[self.padding_idx] = 0
        return (out,)


def _title(dt):
    return {"float32": "Float", "float64": "Double", "bool": "Bool"}.get(dt.name, dt.name)


class NativeLayerNormBackward0(Function):
    """Layer norm over the last ``len(normalized_shape)`` dimensions, with the biased variance."""

    saved_inputs = (0,)  # PyTorch saves the input; this saves it normalised

    def forward(self, x, weight=None, bias=None, normalized_shape=(), eps=1e-5):
        k = len(normalized_shape)
        if tuple(x.shape[x.ndim - k:]) != tuple(normalized_shape):
            raise RuntimeError(f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
                               f"[*, {', '.join(map(str, normalized_shape))}], but got input of size"
                               f"[{', '.join(map(str, x.shape))}]")
        axes = tuple(range(x.ndim - k, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        xc = x - mean
        rstd = (1.0 / np.sqrt(np.mean(xc * xc, axis=axes, keepdims=True) + eps)).astype(x.dtype)
        xhat = xc * rstd
        out = xhat * weight if weight is not None else xhat.copy()
        if bias is not None:
            out += bias
        self.axes, self.lead = axes, tuple(range(x.ndim - k))
        self.save_for_backward(xhat, rstd, weight)
        return out

    def backward(self, grad):
        xhat, rstd, weight = self.saved_tensors
        need = self.needs_input_grad
        dxhat = grad * weight if weight is not None else grad
        axes = self.axes
        grads = [(dxhat - dxhat.mean(axis=axes, keepdims=True)
                  - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)) * rstd if need[0] else None]
        if len(need) > 1:
            grads.append((grad * xhat).sum(axis=self.lead) if need[1] else None)
        if len(need) > 2:
            grads.append(grad.sum(axis=self.lead) if need[2] else None)
        return tuple(grads)


class MaskedFillBackward0(Function):
    """``x.masked_fill(mask, value)``: the mask broadcasts against ``x``; filled places get no gradient."""

    def forward(self, x, mask=None, value=0.0):
        if mask.dtype != np.bool_:
            raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype "
                               f"{_title(mask.dtype).lower()}")
        self.meta = (x.shape, x.dtype)
        self.save_for_backward(mask)
        return np.where(mask, np.asarray(value, x.dtype), x)

    def backward(self, grad):
        (mask,) = self.saved_tensors
        return (unbroadcast(np.where(mask, np.zeros((), grad.dtype), grad), *self.meta),)


class TrilBackward0(Function):
    fill = staticmethod(np.tril)

    def forward(self, x, diagonal=0):
        if x.ndim < 2:
            raise RuntimeError(f"{type(self).__name__[:4].lower()}: input tensor must have at least 2 dimensions")
        self.diagonal = diagonal
        return self.fill(x, diagonal)

    def backward(self, grad):
        return (self.fill(grad, self.diagonal),)


class TriuBackward0(TrilBackward0):
    fill = staticmethod(np.triu)


# What PyTorch calls the tensors each node saves (``grad_fn._saved_<name>``), in the order they are saved.
GeluBackward0.saved_names = ("self",)
EmbeddingBackward0.saved_names = ("indices",)
NativeLayerNormBackward0.saved_names = (None, "result2", "weight")
MaskedFillBackward0.saved_names = ("mask",)
